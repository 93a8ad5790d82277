"""Forward + backward time of kerasce's losses vs Keras's built-ins and the backend's own ops, on one backend.

Every variant is a compiled step computing the mean loss and its gradient with respect to the logits, in
each mode of the backend (`_backends.py`): TensorFlow ``graph`` (``tf.function``) and ``xla``
(``jit_compile=True``); JAX ``jit``; torch ``eager`` and ``compile``. The columns: kerasce, the Keras
built-in on the same backend, and the backend's own ops (``tf.nn``, Optax, ``torch.nn.functional``).
Variants are timed interleaved (many rounds, order alternating) in one process; a ratio is the median of
the per-round ratios (`_timing.py`: pairing cancels the machine's slow drifts). Targets: kerasce / Keras
<= 1.0; kerasce / Optax <= 1.1; kerasce / F <= 1.2. A row that misses one says so.

A second table times the focal loss (γ = 2) against Keras's focal built-ins (one-hot labels for Keras,
made outside the timed step); a third times the per-pixel case, ids [8, 128, 128] and 21 classes, and
gives the peak memory of one step, each variant in its own process (see `measure_peak_memory`).
The figures go to benchmarks/results/losses-<backend>/ (`_results.py`).

    KERAS_BACKEND is set from --backend; run with a Python that has that framework (Optax too for jax):
    python benchmarks/losses.py --backend jax [--rounds 30] [--calls 50] [--skip-plain] [--skip-focal]
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import statistics
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from kerasce.cli.runs import HelpFormatter, non_negative_int, positive_int

BACKENDS = ("tensorflow", "jax", "torch")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument(
        "--backend", choices=BACKENDS, default=os.environ.get("KERAS_BACKEND", "tensorflow"), help="Keras backend"
    )
    parser.add_argument("--rounds", type=positive_int, default=30, help="interleaved rounds (median taken over them)")
    parser.add_argument("--calls", type=positive_int, default=50, help="calls per variant per round")
    parser.add_argument("--seed", type=non_negative_int, default=0, help="seed of the random logits and labels")
    parser.add_argument("--skip-plain", action="store_true", help="skip the plain cross-entropy table")
    parser.add_argument("--skip-focal", action="store_true", help="skip the focal table")
    parser.add_argument("--skip-pixel", action="store_true", help="skip the per-pixel time and memory table")
    parser.add_argument(
        "--threads",
        type=positive_int,
        help="OpenMP threads (torch's intra-op threads; default: one per core). 1 on a machine whose other cores "
        "are busy: a parallel region then waits for a descheduled thread, in multiples of the scheduler tick",
    )
    parser.add_argument("--memory-variant", help=argparse.SUPPRESS)  # internal: one memory measurement
    return parser.parse_args()


if __name__ == "__main__":
    # --help and bad flags answer here, before any framework import; Keras reads KERAS_BACKEND once.
    _args = parse_args()
    os.environ["KERAS_BACKEND"] = _args.backend
    if _args.threads:  # read by torch's OpenMP when it is imported
        os.environ["OMP_NUM_THREADS"] = str(_args.threads)

import keras  # noqa: E402
import numpy as np  # noqa: E402
from _backends import Backend, load  # noqa: E402
from _results import save_result  # noqa: E402
from _timing import paired_ratio, time_interleaved  # noqa: E402

import kerasce  # noqa: E402
from kerasce import losses  # noqa: E402

GAMMA = 2.0
PIXEL_SHAPE, PIXEL_CLASSES = (8, 128, 128), 21
KERAS_TARGET = 1.0


def tensor(values, dtype: str):
    return keras.ops.convert_to_tensor(np.asarray(values).astype(dtype))


def plain_cases(backend: Backend, rng: np.random.Generator):
    """(name, logits, {variant: (loss_fn, labels)}) for each plain cross-entropy case."""
    ref = backend.reference
    for batch, classes in [(4096, 10), (1024, 1000)]:
        ids = rng.integers(0, classes, size=batch)
        logits = tensor(rng.normal(size=(batch, classes)), "float32")
        yield (
            f"sparse softmax {batch}x{classes}",
            logits,
            {
                "kerasce": (losses.SoftmaxCrossEntropy(), tensor(ids, "int32")),
                "keras": (keras.losses.SparseCategoricalCrossentropy(from_logits=True), tensor(ids, "int32")),
                ref: (backend.sparse_ce, tensor(ids, backend.ids_dtype)),
            },
        )
    labels = tensor(rng.uniform(size=(4096, 80)) < 0.1, "float32")
    logits = tensor(rng.normal(size=(4096, 80)), "float32")
    variants = {
        "kerasce": (losses.SigmoidCrossEntropy(), labels),
        "keras": (keras.losses.BinaryCrossentropy(from_logits=True), labels),
        ref: (backend.sigmoid_ce, labels),
    }
    yield "multi-label sigmoid 4096x80", logits, variants


def focal_cases(rng: np.random.Generator):
    """(name, logits, {variant: (loss_fn, labels)}) for each focal case, γ = 2.

    "kerasce" takes the class ids, "keras" the one-hot labels (CategoricalFocalCrossentropy has no sparse
    form; alpha=1 is no class weighting, like kerasce without class_weight), "plain" is kerasce's
    cross-entropy on the same ids: the cost of the focal factor itself.
    """
    keras_focal = keras.losses.CategoricalFocalCrossentropy(alpha=1.0, gamma=GAMMA, from_logits=True)
    for batch, classes in [(4096, 10), (1024, 1000)]:
        ids = rng.integers(0, classes, size=batch)
        logits = tensor(rng.normal(size=(batch, classes)) * 2, "float32")
        variants = {
            "kerasce": (losses.SoftmaxCrossEntropy(focal_gamma=GAMMA), tensor(ids, "int32")),
            "keras": (keras_focal, tensor(np.eye(classes)[ids], "float32")),
            "plain": (losses.SoftmaxCrossEntropy(), tensor(ids, "int32")),
        }
        yield f"focal sparse {batch}x{classes}", logits, variants
    labels = tensor(rng.uniform(size=(4096, 80)) < 0.1, "float32")
    logits = tensor(rng.normal(size=(4096, 80)) * 2, "float32")
    keras_binary = keras.losses.BinaryFocalCrossentropy(
        apply_class_balancing=True, alpha=0.25, gamma=GAMMA, from_logits=True
    )
    variants = {
        "kerasce": (losses.SigmoidCrossEntropy(focal_gamma=GAMMA, alpha=0.25), labels),
        "keras": (keras_binary, labels),
        "plain": (losses.SigmoidCrossEntropy(), labels),
    }
    yield "sigmoid focal 4096x80 (alpha=0.25)", logits, variants


def time_variants(backend: Backend, logits, variants: dict, args: argparse.Namespace, agree: tuple) -> dict:
    """``{mode: {variant: per-round ms}}``, every (mode, variant) step interleaved in one `time_interleaved`.

    The variants named in ``agree = (names, rtol)`` must give the same loss, or the timing compares
    different work.
    """
    steps = {}
    for mode in backend.modes:
        values = {}
        for variant, (fn, labels) in variants.items():
            steps[f"{mode} {variant}"] = functools.partial(backend.make_step(fn, mode), labels, logits)
            values[variant] = float(keras.ops.convert_to_numpy(steps[f"{mode} {variant}"]()[0]))
        names, rtol = agree
        for variant in names:
            np.testing.assert_allclose(values[variant], values[names[0]], rtol=rtol, err_msg=f"{mode} {variant}")
    samples = time_interleaved(steps, args.rounds, args.calls, wait=backend.wait)
    return {mode: {v: samples[f"{mode} {v}"] for v in variants} for mode in backend.modes}


def summarise(case: str, mode: str, samples: dict, targets: dict[str, float | None]) -> dict:
    """One table row: median ms per variant, kerasce / each other variant (median and quartiles), misses."""
    ratios = {f"kerasce/{v}": paired_ratio(samples["kerasce"], samples[v]) for v in samples if v != "kerasce"}
    missed = [
        f"kerasce/{v} {ratios[f'kerasce/{v}'][0]:.3f} > {target}"
        for v, target in targets.items()
        if target is not None and ratios[f"kerasce/{v}"][0] > target
    ]
    return {
        "case": case,
        "mode": mode,
        "ms": {v: statistics.median(s) for v, s in samples.items()},
        "ratios": {name: dict(zip(("median", "q1", "q3"), r)) for name, r in ratios.items()},
        "missed": missed,
    }


def print_table(title: str, rows: list[dict]) -> None:
    variants = list(rows[0]["ms"])
    ratio_names = list(rows[0]["ratios"])
    header = (
        f"{title:<36} {'mode':<8} "
        + " ".join(f"{v + ' ms':>11}" for v in variants)
        + " "
        + " ".join(f"{r:>14}" for r in ratio_names)
        + "  targets"
    )
    print()
    print(header)
    print("-" * len(header))
    for row in rows:
        cells = " ".join(f"{row['ms'][v]:>11.3f}" for v in variants)
        ratios = " ".join(f"{row['ratios'][r]['median']:>14.3f}" for r in ratio_names)
        verdict = "MISSED " + ", ".join(row["missed"]) if row["missed"] else "met"
        print(f"{row['case']:<36} {row['mode']:<8} {cells} {ratios}  {verdict}")


def run_table(backend: Backend, title: str, cases, targets: dict, args: argparse.Namespace, agree: tuple) -> list:
    rows: list[dict] = []
    for name, logits, variants in cases:
        samples = time_variants(backend, logits, variants, args, agree)
        rows.extend(summarise(name, mode, samples[mode], targets) for mode in backend.modes)
    print_table(title, rows)
    return rows


# --------------------------------------------------------------------------------------------------
# Per-pixel case: time and peak memory
# --------------------------------------------------------------------------------------------------


def pixel_variants(backend: Backend) -> dict:
    """name -> loss_fn(ids, logits); "one-hot" variants make the [8, 128, 128, 21] labels inside the step,
    as a model fed ids must for Keras's focal loss."""
    kerasce_focal = losses.SoftmaxCrossEntropy(focal_gamma=GAMMA)
    keras_focal = keras.losses.CategoricalFocalCrossentropy(alpha=1.0, gamma=GAMMA, from_logits=True)
    kerasce_plain = losses.SoftmaxCrossEntropy()
    keras_sparse = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    ops = keras.ops
    return {
        "kerasce focal, ids": kerasce_focal,
        "keras CategoricalFocal, one-hot": lambda y, z: keras_focal(ops.one_hot(y, PIXEL_CLASSES), z),
        "kerasce focal, one-hot": lambda y, z: kerasce_focal(ops.one_hot(y, PIXEL_CLASSES), z),
        "kerasce plain CE, ids": kerasce_plain,
        "keras SCCE, ids": keras_sparse,
        f"{backend.reference} CE, ids": lambda y, z: backend.sparse_ce(ops.cast(y, backend.ids_dtype), z),
    }


def pixel_problem(seed: int):
    rng = np.random.default_rng(seed)
    ids = tensor(rng.integers(0, PIXEL_CLASSES, size=PIXEL_SHAPE), "int32")
    logits = tensor(rng.normal(size=PIXEL_SHAPE + (PIXEL_CLASSES,)) * 2, "float32")
    return ids, logits


def _proc_status_kb(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def measure_peak_memory(backend: Backend, variant: str, seed: int) -> None:
    """Child process: peak resident memory added by one forward + backward step per mode, MiB (prints JSON).

    Method (Linux): per mode, the step is compiled and run once; then three times over, the process's
    peak-RSS mark is reset (``echo 5 > /proc/self/clear_refs``), the step is run, and the peak (VmHWM)
    minus the resident size before (VmRSS) is taken; the median is printed. The parent starts the child
    with ``MALLOC_MMAP_THRESHOLD_`` fixed at 64 KiB, so every tensor buffer is its own mmap, returned to the
    system when freed: the peak is what the step holds at once, not what malloc kept from earlier; and with
    TensorFlow's oneDNN off, whose allocator pools large buffers. On CPU no backend reports its own peak
    (TensorFlow's ``get_memory_info`` is for GPUs).
    """
    ids, logits = pixel_problem(seed)
    peaks = {}
    for mode in backend.modes:
        step = backend.make_step(pixel_variants(backend)[variant], mode)
        backend.wait(step(ids, logits))
        samples = []
        for _ in range(3):
            before = _proc_status_kb("VmRSS")
            with open("/proc/self/clear_refs", "w") as clear:
                clear.write("5")
            backend.wait(step(ids, logits))
            samples.append((_proc_status_kb("VmHWM") - before) / 1024)
        peaks[mode] = statistics.median(samples)
    print(json.dumps(peaks))


def peak_memory(backend: Backend, variant: str, seed: int) -> dict[str, float]:
    """``{mode: peak MiB}`` of `variant`: from the compiler (JAX), else measured in a child process
    (`measure_peak_memory`)."""
    if backend.compiled_memory is not None:
        ids, logits = pixel_problem(seed)
        loss_fn = pixel_variants(backend)[variant]
        return {mode: backend.compiled_memory(loss_fn, ids, logits) for mode in backend.modes}
    # With oneDNN on, TensorFlow's CPU allocator keeps large buffers in a pool of its own: the resident size
    # would not move during the step (measured: 12.7 MiB vs 110.7 MiB for Keras's focal loss in graph mode).
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "TF_ENABLE_ONEDNN_OPTS": "0"}
    env["PYTHONPATH"] = os.pathsep.join(sys.path)
    argv = [sys.executable, __file__, "--backend", backend.name, "--memory-variant", variant, "--seed", str(seed)]
    out = subprocess.run(argv, capture_output=True, text=True, env=env)
    if out.returncode != 0:
        raise RuntimeError(f"peak memory of {variant!r} failed ({out.returncode}):\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def pixel_table(backend: Backend, args: argparse.Namespace) -> list[dict]:
    ids, logits = pixel_problem(args.seed)
    variants = {name: (fn, ids) for name, fn in pixel_variants(backend).items()}
    short = argparse.Namespace(rounds=max(3, args.rounds // 3), calls=max(2, args.calls // 10))
    focal = [name for name in variants if "focal" in name]
    samples = time_variants(backend, logits, variants, short, agree=(focal, 1e-4))
    method = "XLA's temporaries + outputs" if backend.compiled_memory else "resident memory added by one step"
    rows = []
    for name in variants:
        peaks = peak_memory(backend, name, args.seed)
        for mode in backend.modes:
            ms = statistics.median(samples[mode][name])
            rows.append({"variant": name, "mode": mode, "ms": ms, "peak_mib": peaks[mode], "peak_from": method})
    keras_peak = {r["mode"]: r["peak_mib"] for r in rows if r["variant"] == "keras CategoricalFocal, one-hot"}
    print(
        f"\nper-pixel, ids {list(PIXEL_SHAPE)}, {PIXEL_CLASSES} classes, focal γ = {GAMMA:g}: one [8, 128, 128, 21] "
        f"float32 tensor is {np.prod(PIXEL_SHAPE) * PIXEL_CLASSES * 4 / 2**20:.1f} MiB; peak: {method}"
    )
    header = f"{'variant':<34} {'mode':<8} {'ms':>8} {'peak MiB':>9} {'peak / keras focal':>19}"
    print(header)
    print("-" * len(header))
    for r in rows:
        ratio = r["peak_mib"] / keras_peak[r["mode"]]
        print(f"{r['variant']:<34} {r['mode']:<8} {r['ms']:>8.2f} {r['peak_mib']:>9.1f} {ratio:>19.2f}")
    return rows


def kerasce_source() -> dict[str, str]:
    """Where the timed kerasce came from (it may be another checkout, through PYTHONPATH)."""
    folder = Path(kerasce.__file__).resolve().parent
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=folder, capture_output=True, text=True)
    return {"path": str(folder), "commit": head.stdout.strip(), "version": kerasce.__version__}


def main() -> None:
    args = parse_args()
    backend = load(args.backend)
    if args.memory_variant:
        measure_peak_memory(backend, args.memory_variant, args.seed)
        return
    source = kerasce_source()
    print(
        f"backend {backend.name} ({backend.versions}), keras {keras.__version__}, python {platform.python_version()}, "
        f"{os.cpu_count()} CPUs; kerasce from {source['path']} ({source['commit']}); "
        f"rounds={args.rounds}, calls={args.calls}"
    )
    targets = {"keras": KERAS_TARGET, backend.reference: backend.reference_target}
    figures: dict = {"backend": backend.name, "kerasce": source, "targets": targets}
    rng = np.random.default_rng(args.seed)
    if not args.skip_plain:
        cases = plain_cases(backend, rng)
        figures["plain"] = run_table(backend, "case", cases, targets, args, agree=(["kerasce", *targets], 2e-5))
    if not args.skip_focal:
        focal_targets = {"keras": KERAS_TARGET, "plain": None}
        agree = (["kerasce", "keras"], 1e-4)  # "plain" is another loss: the cost of the focal factor
        figures["focal"] = run_table(backend, "case (gamma=2)", focal_cases(rng), focal_targets, args, agree)
    if not args.skip_pixel:
        figures["pixel"] = pixel_table(backend, args)
    print(f"\nsaved {save_result('losses-' + backend.name, figures)}")


if __name__ == "__main__":
    main()
