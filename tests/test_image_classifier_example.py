"""The classifier command line (kerasce.cli.classify, run as examples/image_classifier.py) end to end: resume
after SIGKILL, exports that plain TensorFlow reproduces, failed starts that leave nothing behind.

The SavedModel is checked in a fresh Python process in which importing kerasce is made impossible (kerasce
is installed editable, so it would otherwise be importable everywhere): the metric in metrics.json must
follow from the exported probabilities alone.
"""

import csv
import importlib.util
import itertools
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tensorflow_datasets as tfds
from helpers.kerasce_free import run_without_kerasce
from PIL import Image
from scipy.stats import rankdata

import kerasce.datasets  # noqa: F401  (registers the builders for tfds.load below)
from kerasce.cli import classify
from kerasce.launch import tf_configs

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "image_classifier.py"
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1"}

# Serves the test images through the SavedModel with TensorFlow only and saves the probabilities.
SERVE = r"""
import sys
import numpy as np
import tensorflow as tf

export_dir, data_path, out_path = sys.argv[1:4]
images = np.load(data_path)["images"]
serve = tf.saved_model.load(export_dir).signatures["serving_default"]
np.save(out_path, serve(images=tf.constant(images))["probabilities"].numpy())
"""


def _run_example(*flags, check=True):
    return subprocess.run(
        [sys.executable, str(EXAMPLE), *flags], env=ENV, capture_output=True, text=True, timeout=300, check=check
    )


def _fork_example(zygote, *flags, check=True):
    """`_run_example` for runs that import TensorFlow: a fresh process forked from tests/helpers/zygote.py's, which has
    imported it already (about 7 s of CPU less per run)."""
    result = zygote.run(EXAMPLE, *flags, env=ENV, timeout=300)
    if check and result.returncode != 0:
        raise subprocess.CalledProcessError(result.returncode, result.args, result.stdout, result.stderr)
    return result


def _serve_without_kerasce(zygote, export_dir, images, tmp_path):
    np.savez(tmp_path / "test_images.npz", images=images)
    out = tmp_path / "probabilities.npy"
    run_without_kerasce(zygote, SERVE, export_dir, tmp_path / "test_images.npz", out, cwd=tmp_path)
    return np.load(out)


def _test_split(name, data_dir):
    examples = list(tfds.as_numpy(tfds.load(name, split="test", data_dir=str(data_dir))))
    label_key = "labels" if name == "multi_digits" else "label"
    return np.stack([ex["image"] for ex in examples]), np.stack([ex[label_key] for ex in examples])


def _assert_log_matches_the_console(path, stdout, epochs):
    """training_log.csv holds each epoch once, numbered as the console numbers them ("Epoch 3/6" -> 3), without
    empty columns, and the losses the console printed (4 decimals) for the epochs of this run.

    Mutation tried: Keras's CSVLogger in place of TrainingLog in `classify._train` -> red (epochs from 0,
    val_ columns of NA).
    """
    with open(path, newline="") as f:
        header, *rows = list(csv.reader(f))
    assert header == ["epoch", "accuracy", "loss"]
    assert [int(row[0]) for row in rows] == list(range(1, epochs + 1))
    printed = re.findall(r"^Epoch (\d+)/\d+\n.* - loss: ([\d.]+)$", stdout, flags=re.M)
    assert printed, stdout[-2000:]
    for epoch, loss in printed:
        assert float(rows[int(epoch) - 1][2]) == pytest.approx(float(loss), abs=5e-5)


def _mean_auc(labels, scores):
    """Mean over labels of the Mann–Whitney AUC: (rank sum of positives − P(P+1)/2) / (P·N), ties averaged."""
    aucs = []
    for k in range(labels.shape[1]):
        positive = labels[:, k].astype(bool)
        p, n = positive.sum(), (~positive).sum()
        if p and n:
            aucs.append((rankdata(scores[:, k])[positive].sum() - p * (p + 1) / 2) / (p * n))
    return float(np.mean(aucs))


@pytest.mark.slow
def test_killed_run_resumes_and_its_export_reproduces_without_kerasce(tmp_path, zygote):
    data_dir, export_dir, backup_dir = tmp_path / "tfds", tmp_path / "export", tmp_path / "backup"
    flags = [
        "--epochs",
        "6",
        "--data-dir",
        str(data_dir),
        "--export-dir",
        str(export_dir),
        "--backup-dir",
        str(backup_dir),
    ]

    first = zygote.start(EXAMPLE, *flags, env=ENV)
    metadata, deadline = backup_dir / "state" / "training_metadata.json", time.monotonic() + 240
    try:
        while time.monotonic() < deadline and first.poll() is None:
            try:
                if json.loads(metadata.read_text())["epoch"] >= 2:
                    break
            except (OSError, ValueError, KeyError):
                pass
            time.sleep(0.02)
    finally:
        first.kill()  # SIGKILL: no clean-up, no exception handlers
        first.wait()
    assert first.returncode == -9, "the first run should have been killed mid-training"
    assert not export_dir.exists()

    second = _fork_example(zygote, *flags)
    epochs_seen = [int(e) for e in re.findall(r"^Epoch (\d+)/6$", second.stdout, flags=re.M)]
    assert epochs_seen and epochs_seen[0] >= 3 and epochs_seen[-1] == 6, second.stdout[-2000:]
    assert f"resuming {backup_dir} after epoch {epochs_seen[0] - 1} of 6 (started " in second.stdout
    assert f"trained {len(epochs_seen)} epoch(s) in this run" in second.stdout
    assert not backup_dir.exists(), "the backup is deleted once training has finished"

    files = {p.name for p in export_dir.iterdir()}
    assert {"saved_model.pb", "variables", "metrics.json", "confusion_matrix.png", "model.keras"} <= files
    _assert_log_matches_the_console(export_dir / "training_log.csv", second.stdout, epochs=6)
    with Image.open(export_dir / "confusion_matrix.png") as plot:
        assert plot.format == "PNG" and min(plot.size) > 300
    metrics = json.loads((export_dir / "metrics.json").read_text())
    assert metrics["dataset"] == "digits" and metrics["num_test"] == 355 and not metrics["multilabel"]

    images, labels = _test_split("digits", data_dir)
    probabilities = _serve_without_kerasce(zygote, export_dir, images, tmp_path)
    assert probabilities.shape == (355, 10)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
    accuracy = np.mean(probabilities.argmax(axis=1) == labels)
    assert metrics["test_accuracy"] == pytest.approx(accuracy, abs=1e-12)
    assert accuracy > 0.8


@pytest.mark.slow
def test_multilabel_export_reproduces_f1_and_auc_without_kerasce(tmp_path, zygote):
    """metrics.json's micro-F1 and mean AUC follow from the exported probabilities alone, up to float32.

    The tolerance is derived (see `_mean_auc_tolerance`), not a guess: with no near-tie it is 1e-12.
    Mutations tried in `export_image_classifier`: serving `tf.nn.softmax(logits)` instead of the sigmoid
    -> red (AUC); serving the probabilities with the labels rotated -> red (AUC, F1).
    """
    data_dir, export_dir = tmp_path / "tfds", tmp_path / "export"
    _fork_example(
        zygote,
        "--dataset",
        "multi_digits",
        "--epochs",
        "1",
        "--data-dir",
        str(data_dir),
        "--export-dir",
        str(export_dir),
        "--backup-dir",
        str(tmp_path / "backup"),
    )
    metrics = json.loads((export_dir / "metrics.json").read_text())
    assert metrics["multilabel"] and set(metrics) >= {"test_micro_f1", "test_mean_auc"}
    with Image.open(export_dir / "per_label_scores.png") as plot:
        assert plot.format == "PNG"

    images, labels = _test_split("multi_digits", data_dir)
    probabilities = _serve_without_kerasce(zygote, export_dir, images, tmp_path)
    assert probabilities.shape == (1000, 10) and probabilities.min() >= 0 and probabilities.max() <= 1
    f1_low, f1_high = _micro_f1_range(labels, probabilities)
    assert f1_low - 1e-12 <= metrics["test_micro_f1"] <= f1_high + 1e-12
    auc, tolerance = _mean_auc(labels, probabilities), _mean_auc_tolerance(labels, probabilities)
    assert metrics["test_mean_auc"] == pytest.approx(auc, abs=tolerance)
    # Negative control: the tolerance still tells a wrong export apart (outputs of the wrong labels).
    shuffled = probabilities[:, np.roll(np.arange(probabilities.shape[1]), 1)]
    assert abs(_mean_auc(labels, shuffled) - metrics["test_mean_auc"]) > 100 * tolerance


# The metrics in metrics.json come from `predict` (batch 64); the test serves the SavedModel (batch 1000).
# The same float32 network then differs in the last bits: measured up to 7.5e-8 (64 of 10,000 values), a
# few float32 ulps (2**-23 ≈ 1.2e-7 at 1.0). PROBABILITY_SLACK allows 8 ulps.
PROBABILITY_SLACK = 8 * 2.0**-23


def _mean_auc_tolerance(labels, scores, slack=PROBABILITY_SLACK):
    """How far the mean AUC may move when every score moves by at most `slack`.

    A positive/negative pair changes its term of the Mann–Whitney AUC (1, ½ for a tie, 0) only when the two
    scores are within 2·slack of each other, and then by at most 1/(P·N). So the bound is the mean over
    labels of (such close pairs) / (P·N): zero when no pair is that close. A wrong export moves the AUC
    by far more (see the negative control and the mutations in the test's docstring).
    """
    bounds = []
    for k in range(labels.shape[1]):
        positive = labels[:, k].astype(bool)
        p, n = positive.sum(), (~positive).sum()
        if p and n:
            gaps = np.abs(scores[positive, k][:, None] - scores[~positive, k][None, :])
            bounds.append((gaps <= 2 * slack).sum() / (p * n))
    return float(np.mean(bounds)) + 1e-12  # + the float64 rounding of the mean itself


def _micro_f1_range(labels, scores, slack=PROBABILITY_SLACK):
    """Lowest and highest micro-F1 at threshold 0.5 when the scores within `slack` of 0.5 may fall either way."""
    truth = labels.astype(bool)
    ambiguous = np.argwhere(np.abs(scores - 0.5) <= slack)
    assert len(ambiguous) <= 12, f"{len(ambiguous)} probabilities within {slack:.1e} of 0.5"
    results = []
    for choice in itertools.product([False, True], repeat=len(ambiguous)):
        predicted = scores > 0.5
        for (i, k), value in zip(ambiguous, choice):
            predicted[i, k] = value
        tp, fp, fn = (predicted & truth).sum(), (predicted & ~truth).sum(), (~predicted & truth).sum()
        results.append(2 * tp / (2 * tp + fp + fn))
    return min(results), max(results)


def _example_module():
    spec = importlib.util.spec_from_file_location("image_classifier_example", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--epochs", "0"], "`--epochs` must be an integer >= 1. Received: --epochs=0"),
        (["--epochs", "two"], "`--epochs` must be an integer. Received: --epochs='two'"),
        (["--batch-size", "-1"], "`--batch-size` must be an integer >= 1. Received: --batch-size=-1"),
        (["--learning-rate", "-1"], "`--learning-rate` must be a number > 0. Received: --learning-rate=-1"),
        (["--learning-rate", "0"], "`--learning-rate` must be a number > 0. Received: --learning-rate=0"),
        (["--learning-rate", "nan"], "`--learning-rate` must be a finite number. Received: --learning-rate=nan"),
        (["--seed", "-1"], "`--seed` must be an integer >= 0. Received: --seed=-1"),
        (["--image-size", "0", "8"], "`--image-size` must be an integer >= 1. Received: --image-size=0"),
        (
            ["--strategy", "tpu"],
            "`--strategy` must be one of 'default', 'mirrored', 'multiworker'. Received: --strategy='tpu'",
        ),
    ],
)
def test_bad_flags_exit_with_a_message(flags, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        classify.parse_args(flags)
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].endswith(f"error: {message}")


def test_a_bad_flag_leaves_nothing_behind(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the default export and backup would go to ./saved_models
    with pytest.raises(SystemExit) as exit_info:
        classify.run(["--epochs", "0", "--backup-dir", str(tmp_path / "b")])
    assert exit_info.value.code == 2 and list(tmp_path.iterdir()) == []


def test_unknown_dataset_fails_before_training_and_leaves_nothing_behind(tmp_path, capsys):
    """Mutation tried: `backup.removed_if_unused()` dropped from `classify.main` -> red (x.backup stays)."""
    with pytest.raises(SystemExit) as exit_info:
        classify.run(["--dataset", "digitz", "--export-dir", str(tmp_path / "x")])
    message = str(exit_info.value.code)
    assert message.startswith("error: `name` must be a TFDS dataset name") and "\n" not in message
    assert "Received: name='digitz'. Close matches: digits" in message
    assert list(tmp_path.iterdir()) == [], "no export, no backup directory"


@pytest.mark.slow
def test_dataset_needing_a_download_is_a_one_line_error_offline(tmp_path, zygote):
    start = time.monotonic()
    result = _fork_example(
        zygote, "--dataset", "mnist", "--data-dir", str(tmp_path), "--export-dir", str(tmp_path / "x"), check=False
    )
    assert result.returncode == 1
    last_line = result.stderr.strip().splitlines()[-1]
    assert last_line.startswith("error: dataset 'mnist' is not prepared in ") and "--download" in last_line
    assert "Traceback" not in result.stderr
    assert time.monotonic() - start < 60  # no network attempt


@pytest.mark.slow
def test_two_worker_processes_train_and_only_the_chief_exports(tmp_path, zygote):
    export_dir = tmp_path / "export"
    workers = [
        zygote.start(
            EXAMPLE,
            "--strategy",
            "multiworker",
            "--epochs",
            "1",
            "--data-dir",
            str(tmp_path / f"tfds{i}"),
            "--export-dir",
            str(export_dir),
            env={**ENV, "TF_CONFIG": config},
        )
        for i, config in enumerate(tf_configs(2))
    ]
    outputs = [w.communicate(timeout=300) for w in workers]
    for worker, (out, err) in zip(workers, outputs):
        assert worker.returncode == 0, err[-3000:]
        assert "2 replica(s)" in out and "trained 1 epoch(s) in this run" in out
    assert "exported SavedModel" in outputs[0][0] and "exported SavedModel" not in outputs[1][0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export", "tfds0", "tfds1"]  # no backups left
    assert (export_dir / "metrics.json").exists()


def _tiny_image_folder(root):
    """2 classes × 3 grayscale 8×8 PNGs under `root`."""
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        (root / name).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8)).save(root / name / f"{i}.png")
    return root


def _folder_run(tmp_path):
    """Flags of a 2-epoch run on a tiny image folder, and its export and backup directories."""
    root = _tiny_image_folder(tmp_path / "photos")
    export_dir, backup_dir = tmp_path / "export", tmp_path / "backup"
    flags = ["--dataset", str(root), "--epochs", "2", "--batch-size", "4"]
    return [*flags, "--export-dir", str(export_dir), "--backup-dir", str(backup_dir)], export_dir, backup_dir


def _killed_while_exporting(flags):
    """Runs the command line once, killed (KeyboardInterrupt) once trained, when the export starts."""
    import kerasce.classifiers

    def killed(*args, **kwargs):
        raise KeyboardInterrupt("killed while exporting")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(kerasce.classifiers, "export_image_classifier", killed)
        with pytest.raises(KeyboardInterrupt):
            _example_module().main(flags)


@pytest.mark.slow
def test_folder_dataset_given_as_dot_exports_beside_other_exports(tmp_path, monkeypatch):
    # `--dataset .` names the export after the current folder, not ".": an export into saved_models/ itself
    # would replace the whole folder (the atomic swap), deleting every other export.
    example = _example_module()
    monkeypatch.setattr(example, "REPO", tmp_path)  # default exports go to tmp_path/saved_models/<slug>
    sibling = tmp_path / "saved_models" / "digits"
    sibling.mkdir(parents=True)
    (sibling / "metrics.json").write_text("{}")
    monkeypatch.chdir(_tiny_image_folder(tmp_path / "photos"))

    example.main(["--dataset", ".", "--epochs", "1", "--batch-size", "4"])

    assert (sibling / "metrics.json").read_text() == "{}", "another dataset's export must survive"
    assert sorted(p.name for p in (tmp_path / "saved_models").iterdir()) == ["digits", "photos"]
    assert (tmp_path / "saved_models" / "photos" / "saved_model.pb").exists()


def test_folder_dataset_without_a_name_is_rejected_before_training(tmp_path, monkeypatch):
    example = _example_module()
    monkeypatch.setattr(example, "REPO", tmp_path)
    with pytest.raises(ValueError, match="`--export-dir` must be given for dataset '/'.*Received: --dataset=/"):
        example.main(["--dataset", "/"])
    assert not (tmp_path / "saved_models").exists()


@pytest.mark.slow
def test_backup_outlives_a_failed_export_and_the_rerun_only_exports(tmp_path, capsys):
    # Keras deletes its backup when fit ends: a kill between there and the export would lose the training.
    flags, export_dir, backup_dir = _folder_run(tmp_path)
    _killed_while_exporting(flags)
    assert json.loads((backup_dir / "state" / "training_metadata.json").read_text())["epoch"] == 2
    assert not export_dir.exists()

    capsys.readouterr()
    _example_module().main(flags)
    assert "trained 0 epoch(s) in this run" in capsys.readouterr().out  # resumed after the last epoch
    assert (export_dir / "saved_model.pb").exists()
    assert not backup_dir.exists(), "the backup is deleted once the export is written"


def test_help_and_flag_errors_answer_without_importing_tensorflow(tmp_path):
    """`--help` and a bad flag exit before TensorFlow is imported (it costs ~5 s); --help shows defaults.

    Mutation tried: moving `import tensorflow` back to the top of the example -> red.
    """
    probe = (
        f"import importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('example', {str(EXAMPLE)!r})\n"
        f"module = importlib.util.module_from_spec(spec); spec.loader.exec_module(module)\n"
        f"module.parse_args(['--epochs', '3', '--learning-rate', '0.01'])\n"
        f"print(sorted(m for m in ('tensorflow', 'keras', 'tensorflow_datasets') if m in sys.modules))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], env=ENV, capture_output=True, text=True, timeout=120, check=True
    )
    assert result.stdout.strip() == "[]"

    start = time.monotonic()
    help_text = _run_example("--help").stdout
    bad = _run_example("--learning-rate", "-1", check=False)
    seconds = time.monotonic() - start
    assert "(default: 15)" in help_text and "(default: 0.002)" in help_text and "--fresh" in help_text
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    last_line = bad.stderr.strip().splitlines()[-1]
    assert last_line.endswith("error: `--learning-rate` must be a number > 0. Received: --learning-rate=-1")
    assert seconds < 5, f"two runs took {seconds:.1f} s: TensorFlow was imported?"  # ~0.1 s each here


@pytest.mark.slow
def test_a_backup_made_with_other_flags_is_not_resumed(tmp_path, capsys, zygote):
    """An interrupted run's backup is refused by a run with other flags, resumed by the
    same flags (saying so in one line), and discarded by `--fresh`.

    Mutation tried: comparing no flags in `kerasce.cli.runs.open_backup` (`differences = []`) -> red (the
    run with another learning rate resumes the backup).
    """
    flags, export_dir, backup_dir = _folder_run(tmp_path)
    _killed_while_exporting(flags)
    state = {p.name: p.read_bytes() for p in (backup_dir / "state").iterdir()}
    assert json.loads((backup_dir / "run.json").read_text())["config"]["learning_rate"] == 0.002

    # Other flags (another learning rate and seed), from the command line: refused.
    other = _fork_example(zygote, *flags, "--learning-rate", "0.01", "--seed", "3", check=False)
    assert other.returncode == 1, other.stdout[-2000:]
    message = other.stderr.strip().splitlines()[-1]
    assert message.startswith(
        "error: `--backup-dir` must hold a backup made with this run's flags. "
        f"Received: {backup_dir}, made with other flags "
        f"(--learning-rate 0.002 -> 0.01, --seed 0 -> 3); it is not resumed."
    )
    assert "run again with --learning-rate 0.002 --seed 0" in message and "--fresh" in message
    assert "Epoch 1/2" not in other.stdout and not export_dir.exists()
    assert {p.name: p.read_bytes() for p in (backup_dir / "state").iterdir()} == state, "backup untouched"

    # The same flags: resumed after the last finished epoch, in one line.
    capsys.readouterr()
    _example_module().main(flags)
    out = capsys.readouterr().out
    resumes = [line for line in out.splitlines() if line.startswith("resuming")]
    assert len(resumes) == 1 and re.fullmatch(
        rf"resuming {re.escape(str(backup_dir))} after epoch 2 of 2 \(started \d{{4}}-\d\d-\d\d [\d:]{{8}} UTC\)",
        resumes[0],
    ), resumes
    assert "trained 0 epoch(s) in this run" in out
    assert (export_dir / "saved_model.pb").exists() and not backup_dir.exists()


@pytest.mark.slow
def test_fresh_discards_a_backup_made_with_other_flags(tmp_path, capsys):
    flags, export_dir, backup_dir = _folder_run(tmp_path)
    _killed_while_exporting(flags)
    capsys.readouterr()
    _example_module().main([*flags, "--learning-rate", "0.01", "--fresh"])
    out = capsys.readouterr().out
    assert "resuming" not in out and "trained 2 epoch(s) in this run" in out
    assert (export_dir / "saved_model.pb").exists() and not backup_dir.exists()


@pytest.mark.slow
def test_a_label_the_loss_refuses_is_a_one_line_error_and_leaves_nothing_behind(tmp_path, monkeypatch):
    """A training label outside [0, 2) (a 2-class folder, labels shifted by one): the run ends with the loss's
    own message as its one line, not TensorFlow's op trace, and no backup directory is left.

    Mutation tried: `check_failures_first()` dropped around `fit` in `classify._train` -> red (the error is
    TensorFlow's "Graph execution error:", not a ValueError).
    """
    import dataclasses

    from kerasce import datasets, losses

    load = datasets.load_image_dataset

    def shifted_labels(*args, **kwargs):
        data = load(*args, **kwargs)
        return dataclasses.replace(data, train=data.train.map(lambda x, y: (x, y + 1)))

    monkeypatch.setattr(datasets, "load_image_dataset", shifted_labels)
    flags = _folder_run(tmp_path)[0]
    with pytest.raises(SystemExit) as exit_info:
        classify.run(flags)
    message = str(exit_info.value.code)
    with pytest.raises(Exception) as eager:  # the same check, called directly: its text without TensorFlow's
        losses.softmax_cross_entropy(np.array([2]), np.zeros((1, 2), np.float32))
    check_text = str(eager.value).split(" Got ")[0]
    assert message.startswith(f"error: {check_text}") and "\n" not in message, message[:500]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["photos"], "no backup, no export"


@pytest.mark.slow
def test_the_examples_api_tour_trains_and_its_export_serves_the_score(tmp_path):
    """`train_and_export` (the library calls the example shows): its score is what the SavedModel, loaded with
    plain TensorFlow, gets on the test split read from TFDS."""
    import tensorflow as tf

    score = _example_module().train_and_export(
        "digits", epochs=2, export_dir=tmp_path / "export", data_dir=str(tmp_path / "tfds")
    )
    images, labels = _test_split("digits", tmp_path / "tfds")
    serve = tf.saved_model.load(str(tmp_path / "export")).signatures["serving_default"]
    probabilities = serve(images=tf.constant(images))["probabilities"].numpy()
    assert score == pytest.approx(np.mean(probabilities.argmax(axis=1) == labels), abs=1e-12)
    assert score > 0.5  # 10 classes: chance is 0.1


def test_the_command_line_runs_as_a_module():
    """`python -m kerasce.cli.classify`: its own name in --help and in a bad flag's message."""
    help_text = subprocess.run(
        [sys.executable, "-m", "kerasce.cli.classify", "--help"], env=ENV, capture_output=True, text=True, check=True
    ).stdout
    assert help_text.startswith("usage: python -m kerasce.cli.classify") and "(default: 64)" in help_text
    bad = subprocess.run(
        [sys.executable, "-m", "kerasce.cli.classify", "--epochs", "0"], env=ENV, capture_output=True, text=True
    )
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines()[-1] == (
        "python -m kerasce.cli.classify: error: `--epochs` must be an integer >= 1. Received: --epochs=0"
    )
