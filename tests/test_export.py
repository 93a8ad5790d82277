"""kerasce.export: SavedModels readable by plain TensorFlow, and writes that are all-or-nothing."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import keras
import numpy as np
import pytest
import tensorflow as tf

from kerasce.export import atomic_directory, export_saved_model, save_keras_atomic, write_json_atomic


def tiny_model(bias: float) -> keras.Model:
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, bias_initializer=keras.initializers.Constant(bias))])
    return model


def export_tiny(path, bias: float, **kwargs):
    model = tiny_model(bias)
    fn = lambda x: {"probabilities": tf.nn.softmax(model(x)), "logits": model(x)}  # noqa: E731
    return model, export_saved_model(path, model, fn, [tf.TensorSpec([None, 3], tf.float32)], **kwargs)


def test_saved_model_serves_named_outputs_with_plain_tensorflow(tmp_path):
    model, path = export_tiny(tmp_path / "export", 0.5)
    loaded = tf.saved_model.load(str(path))
    assert {"serving_default", "serve"} <= set(loaded.signatures)
    x = np.random.default_rng(0).normal(size=(4, 3)).astype(np.float32)
    out = loaded.signatures["serving_default"](tf.constant(x))
    np.testing.assert_allclose(out["logits"].numpy(), model(x).numpy(), rtol=1e-6)
    np.testing.assert_allclose(out["probabilities"].numpy(), tf.nn.softmax(model(x)).numpy(), rtol=1e-6)


def test_export_replaces_previous_export_and_leaves_no_temporaries(tmp_path):
    export_tiny(tmp_path / "export", 0.0)
    (tmp_path / "export" / "stale.txt").write_text("from the old export")
    _, path = export_tiny(tmp_path / "export", 1.0, write_extras=lambda d: (d / "metrics.json").write_text("{}"))
    assert not (path / "stale.txt").exists()
    assert (path / "metrics.json").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export"]
    bias = tf.saved_model.load(str(path)).signatures["serving_default"](tf.zeros([1, 3]))["logits"]
    np.testing.assert_allclose(bias.numpy(), [[1.0, 1.0]])


def test_two_rename_fallback_replaces_the_export_where_renameat2_is_missing(tmp_path, monkeypatch):
    import kerasce.export

    export_tiny(tmp_path / "export", 0.0)
    monkeypatch.setattr(kerasce.export, "_exchange_directories", lambda a, b: False)
    _, path = export_tiny(tmp_path / "export", 2.0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export"]  # old copy and temp dir removed
    served = tf.saved_model.load(str(path)).signatures["serving_default"](tf.zeros([1, 3]))
    np.testing.assert_allclose(served["logits"].numpy(), [[2.0, 2.0]])


def test_fallback_puts_the_previous_export_back_if_the_second_rename_fails(tmp_path, monkeypatch):
    import kerasce.export

    export_tiny(tmp_path / "export", 0.5)
    monkeypatch.setattr(kerasce.export, "_exchange_directories", lambda a, b: False)
    real_replace, calls = os.replace, []

    def failing_second_rename(src, dst):
        calls.append((src, dst))
        if len(calls) == 2:
            raise OSError("rename failed (simulated)")
        return real_replace(src, dst)

    monkeypatch.setattr(kerasce.export.os, "replace", failing_second_rename)
    with pytest.raises(OSError, match="simulated"):
        export_tiny(tmp_path / "export", 9.0)
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export"]
    served = tf.saved_model.load(str(tmp_path / "export")).signatures["serving_default"](tf.zeros([1, 3]))
    np.testing.assert_allclose(served["logits"].numpy(), [[0.5, 0.5]])


def test_export_failing_halfway_keeps_the_previous_good_export(tmp_path):
    export_tiny(tmp_path / "export", 0.25)

    def fail_after_the_saved_model_is_written(directory):
        assert (directory / "saved_model.pb").exists()  # the new SavedModel is complete in the temp dir
        raise OSError("disk full (simulated)")

    with pytest.raises(OSError, match="simulated"):
        export_tiny(tmp_path / "export", 9.0, write_extras=fail_after_the_saved_model_is_written)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export"]
    served = tf.saved_model.load(str(tmp_path / "export")).signatures["serving_default"](tf.zeros([1, 3]))
    np.testing.assert_allclose(served["logits"].numpy(), [[0.25, 0.25]])


KILLED_EXPORT = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    import tensorflow as tf, keras
    from kerasce.export import export_saved_model
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, bias_initializer="ones")])
    def hang(directory):
        Path(sys.argv[2]).write_text(str(directory))  # the SavedModel is written; now die mid-export
        time.sleep(600)
    export_saved_model(sys.argv[1], model, lambda x: {"logits": model(x)}, [tf.TensorSpec([None, 3])],
                       write_extras=hang)
    """
)


@pytest.mark.slow
def test_export_killed_midway_keeps_the_previous_good_export(tmp_path):
    export_tiny(tmp_path / "export", 0.5)
    marker = tmp_path / "marker"
    script = tmp_path / "killed_export.py"
    script.write_text(KILLED_EXPORT)
    proc = subprocess.Popen([sys.executable, str(script), str(tmp_path / "export"), str(marker)])
    try:
        deadline = time.time() + 120
        while not marker.exists():
            if proc.poll() is not None or time.time() > deadline:
                raise RuntimeError(f"exporter exited early or hung (returncode {proc.returncode})")
            time.sleep(0.1)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    served = tf.saved_model.load(str(tmp_path / "export")).signatures["serving_default"](tf.zeros([1, 3]))
    np.testing.assert_allclose(served["logits"].numpy(), [[0.5, 0.5]])  # the old export, whole


def test_export_directory_gets_ordinary_permissions(tmp_path):
    umask = os.umask(0o022)
    try:
        _, path = export_tiny(tmp_path / "export", 0.0)
    finally:
        os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o755  # not mkdtemp's private 0700


def test_atomic_directory_rejects_a_file_in_the_way(tmp_path):
    (tmp_path / "export").write_text("not a directory")
    with pytest.raises(ValueError, match="is not a directory"):
        with atomic_directory(tmp_path / "export"):
            pass


def test_keras_file_and_json_are_written_atomically(tmp_path):
    model = tiny_model(0.0)
    path = save_keras_atomic(model, tmp_path / "model.keras")
    reloaded = keras.saving.load_model(path)
    np.testing.assert_allclose(reloaded(np.ones((1, 3))), model(np.ones((1, 3))))
    with pytest.raises(ValueError, match="ending in '.keras'"):
        save_keras_atomic(model, tmp_path / "model.h5")
    write_json_atomic(tmp_path / "metrics.json", {"b": np.float32(0.5), "a": np.int64(3), "c": np.arange(2)})
    assert json.loads((tmp_path / "metrics.json").read_text()) == {"a": 3, "b": 0.5, "c": [0, 1]}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json", "model.keras"]
