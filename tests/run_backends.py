"""Runs the tests once per Keras backend, each backend in its own pytest process (as Keras's own CI does).

    python tests/run_backends.py -n 2                    # JAX: the backend-neutral tests; then TensorFlow: all
    python tests/run_backends.py --backend torch -n 2    # torch: the backend-neutral tests (needs torch)

Keras reads ``KERAS_BACKEND`` once, when it is imported, so one process tests one backend (and training
with torch after TensorFlow has loaded crashes). The backend-neutral tests (the losses, the optimizer
wrapper) run on every backend; everything else needs TensorFlow and runs in the TensorFlow process. The
arguments after the runner's own go to every pytest run. The output ends with each run's closing pytest
line, TensorFlow's last; the exit status is the first failing run's.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BACKEND_NEUTRAL = ("tests/test_losses*.py", "tests/test_optimizers*.py")
TESTS = {
    "jax": (*BACKEND_NEUTRAL, "tests/test_distribute_jax.py"),
    "torch": BACKEND_NEUTRAL,
    "tensorflow": ("tests",),  # pyproject's testpaths: the whole suite
}
# torch's OpenMP threads spin while they wait: with pytest-xdist's workers on few cores, calls slow down 30x.
BACKEND_ENV = {"torch": {"OMP_WAIT_POLICY": "PASSIVE"}}


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False
    )
    parser.add_argument(
        "--backend",
        nargs="+",
        choices=list(TESTS),
        default=["jax", "tensorflow"],
        help="backends to test, in this order (default: %(default)s)",
    )
    return parser.parse_known_args(argv)


def test_files(backend: str) -> list[str]:
    """The backend's test files and folders, relative to the repository root; a pattern matching nothing is
    an error (a renamed test file must not drop out of a backend's run unnoticed)."""
    found = []
    for pattern in TESTS[backend]:
        matches = sorted(str(p.relative_to(ROOT)) for p in ROOT.glob(pattern))
        if not matches:
            raise SystemExit(f"`TESTS[{backend!r}]` names {pattern!r}, which matches no file under {ROOT}.")
        found.extend(matches)
    return found


def run(backend: str, pytest_args: list[str]) -> tuple[int, str]:
    """Runs pytest on `backend`, its output streamed; returns its exit status and its closing line."""
    command = [sys.executable, "-m", "pytest", *test_files(backend), *pytest_args]
    env = {**os.environ, **BACKEND_ENV.get(backend, {}), "KERAS_BACKEND": backend}
    print(f"+ KERAS_BACKEND={backend} {shlex.join(['python', *command[1:]])}", flush=True)
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    closing = "(no output)"
    for line in process.stdout or ():
        sys.stdout.write(line)
        closing = line.strip() or closing
    sys.stdout.flush()
    return process.wait(), closing


def main(argv: list[str]) -> int:
    args, pytest_args = parse_args(argv)
    results = [(backend, *run(backend, pytest_args)) for backend in args.backend]
    print()
    for backend, _, closing in results:
        print(f"KERAS_BACKEND={backend}: {closing}")
    return next((status for _, status, _ in results if status != 0), 0)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
