"""examples/image_classifier.py end to end: resume after SIGKILL, exports that plain TensorFlow reproduces.

The SavedModel is checked in a fresh Python process in which importing kerasce is made impossible (kerasce
is installed editable, so it would otherwise be importable everywhere): the metric in metrics.json must
follow from the exported probabilities alone.
"""

import importlib.util
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
from PIL import Image
from scipy.stats import rankdata

from kerasce_free import run_without_kerasce

import kerasce.datasets  # noqa: F401  (registers the builders for tfds.load below)

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
    return subprocess.run([sys.executable, str(EXAMPLE), *flags], env=ENV, capture_output=True, text=True,
                          timeout=300, check=check)


def _serve_without_kerasce(export_dir, images, tmp_path):
    np.savez(tmp_path / "test_images.npz", images=images)
    out = tmp_path / "probabilities.npy"
    run_without_kerasce(SERVE, export_dir, tmp_path / "test_images.npz", out, cwd=tmp_path)
    return np.load(out)


def _test_split(name, data_dir):
    examples = list(tfds.as_numpy(tfds.load(name, split="test", data_dir=str(data_dir))))
    label_key = "labels" if name == "multi_digits" else "label"
    return np.stack([ex["image"] for ex in examples]), np.stack([ex[label_key] for ex in examples])


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
def test_killed_run_resumes_and_its_export_reproduces_without_kerasce(tmp_path):
    data_dir, export_dir, backup_dir = tmp_path / "tfds", tmp_path / "export", tmp_path / "backup"
    flags = ["--epochs", "6", "--data-dir", str(data_dir), "--export-dir", str(export_dir),
             "--backup-dir", str(backup_dir)]

    first = subprocess.Popen([sys.executable, str(EXAMPLE), *flags], env=ENV,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    metadata, deadline = backup_dir / "training_metadata.json", time.monotonic() + 240
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

    second = _run_example(*flags)
    epochs_seen = [int(e) for e in re.findall(r"^Epoch (\d+)/6$", second.stdout, flags=re.M)]
    assert epochs_seen and epochs_seen[0] >= 3 and epochs_seen[-1] == 6, second.stdout[-2000:]
    assert f"trained {len(epochs_seen)} epoch(s) in this run" in second.stdout
    assert not backup_dir.exists(), "the backup is deleted once training has finished"

    files = {p.name for p in export_dir.iterdir()}
    assert {"saved_model.pb", "variables", "metrics.json", "confusion_matrix.png", "model.keras"} <= files
    with Image.open(export_dir / "confusion_matrix.png") as plot:
        assert plot.format == "PNG" and min(plot.size) > 300
    metrics = json.loads((export_dir / "metrics.json").read_text())
    assert metrics["dataset"] == "digits" and metrics["num_test"] == 355 and not metrics["multilabel"]

    images, labels = _test_split("digits", data_dir)
    probabilities = _serve_without_kerasce(export_dir, images, tmp_path)
    assert probabilities.shape == (355, 10)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
    accuracy = np.mean(probabilities.argmax(axis=1) == labels)
    assert metrics["test_accuracy"] == pytest.approx(accuracy, abs=1e-12)
    assert accuracy > 0.8


@pytest.mark.slow
def test_multilabel_export_reproduces_f1_and_auc_without_kerasce(tmp_path):
    data_dir, export_dir = tmp_path / "tfds", tmp_path / "export"
    _run_example("--dataset", "multi_digits", "--epochs", "1", "--data-dir", str(data_dir),
                 "--export-dir", str(export_dir), "--backup-dir", str(tmp_path / "backup"))
    metrics = json.loads((export_dir / "metrics.json").read_text())
    assert metrics["multilabel"] and set(metrics) >= {"test_micro_f1", "test_mean_auc"}
    with Image.open(export_dir / "per_label_scores.png") as plot:
        assert plot.format == "PNG"

    images, labels = _test_split("multi_digits", data_dir)
    probabilities = _serve_without_kerasce(export_dir, images, tmp_path)
    assert probabilities.shape == (1000, 10) and probabilities.min() >= 0 and probabilities.max() <= 1
    predicted, truth = probabilities > 0.5, labels.astype(bool)
    tp, fp, fn = (predicted & truth).sum(), (predicted & ~truth).sum(), (~predicted & truth).sum()
    assert metrics["test_micro_f1"] == pytest.approx(2 * tp / (2 * tp + fp + fn), abs=1e-12)
    assert metrics["test_mean_auc"] == pytest.approx(_mean_auc(labels, probabilities), abs=1e-9)


def _example_module():
    spec = importlib.util.spec_from_file_location("image_classifier_example", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--epochs", "0"], "--epochs: expected an integer >= 1, got 0"),
        (["--batch-size", "-1"], "--batch-size: expected an integer >= 1, got -1"),
        (["--strategy", "tpu"], "argument --strategy: invalid choice: 'tpu'"),
    ],
)
def test_bad_flags_exit_with_a_message(flags, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        _example_module().parse_args(flags)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_unknown_dataset_fails_before_training(tmp_path):
    with pytest.raises(ValueError, match="unknown dataset 'digitz'.*Close matches: digits"):
        _example_module().main(["--dataset", "digitz", "--export-dir", str(tmp_path / "x")])
    assert not (tmp_path / "x").exists()


@pytest.mark.slow
def test_dataset_needing_a_download_is_a_one_line_error_offline(tmp_path):
    start = time.monotonic()
    result = _run_example("--dataset", "mnist", "--data-dir", str(tmp_path), "--export-dir", str(tmp_path / "x"),
                          check=False)
    assert result.returncode == 1
    last_line = result.stderr.strip().splitlines()[-1]
    assert last_line.startswith("error: dataset 'mnist' is not prepared in ") and "--download" in last_line
    assert "Traceback" not in result.stderr
    assert time.monotonic() - start < 60  # no network attempt


@pytest.mark.slow
def test_two_worker_processes_train_and_only_the_chief_exports(tmp_path):
    from cluster import tf_configs

    export_dir = tmp_path / "export"
    workers = [
        subprocess.Popen([sys.executable, str(EXAMPLE), "--strategy", "multiworker", "--epochs", "1",
                          "--data-dir", str(tmp_path / f"tfds{i}"), "--export-dir", str(export_dir)],
                         env={**ENV, "TF_CONFIG": config}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
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


@pytest.mark.slow
def test_folder_dataset_given_as_dot_exports_beside_other_exports(tmp_path, monkeypatch):
    # `--dataset .` once exported into saved_models/ itself: the atomic swap replaced the whole folder.
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
    with pytest.raises(ValueError, match="cannot name the default export directory after dataset '/'.*--export-dir"):
        example.main(["--dataset", "/"])
    assert not (tmp_path / "saved_models").exists()


@pytest.mark.slow
def test_backup_outlives_a_failed_export_and_the_rerun_only_exports(tmp_path, monkeypatch, capsys):
    # Keras deletes its backup when fit ends; a kill between there and the export lost the training.
    example = _example_module()
    root = _tiny_image_folder(tmp_path / "photos")
    export_dir, backup_dir = tmp_path / "export", tmp_path / "backup"
    flags = ["--dataset", str(root), "--epochs", "2", "--batch-size", "4", "--export-dir", str(export_dir),
             "--backup-dir", str(backup_dir)]

    def killed(*args, **kwargs):
        raise KeyboardInterrupt("killed while exporting")

    monkeypatch.setattr(example, "export_image_classifier", killed)
    with pytest.raises(KeyboardInterrupt):
        example.main(flags)
    assert json.loads((backup_dir / "training_metadata.json").read_text())["epoch"] == 2
    assert not export_dir.exists()

    monkeypatch.undo()
    capsys.readouterr()
    _example_module().main(flags)
    assert "trained 0 epoch(s) in this run" in capsys.readouterr().out  # resumed after the last epoch
    assert (export_dir / "saved_model.pb").exists()
    assert not backup_dir.exists(), "the backup is deleted once the export is written"
