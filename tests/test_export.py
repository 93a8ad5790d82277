"""kerasce.export: SavedModels readable by plain TensorFlow, and writes that are all-or-nothing."""

import json
import os
import shutil
import signal
import sys
import textwrap
import time

import keras
import numpy as np
import pytest
import tensorflow as tf

from kerasce.export import atomic_directory, export_saved_model, save_keras_atomic, write_json_atomic


def tiny_model(bias: float) -> keras.Model:
    model = keras.Sequential(
        [keras.Input((3,)), keras.layers.Dense(2, bias_initializer=keras.initializers.Constant(bias))]
    )
    return model


def export_tiny(path, bias: float, **kwargs):
    model = tiny_model(bias)
    fn = lambda x: {"probabilities": tf.nn.softmax(model(x)), "logits": model(x)}
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
def test_export_killed_midway_keeps_the_previous_good_export(tmp_path, zygote):
    export_tiny(tmp_path / "export", 0.5)
    marker = tmp_path / "marker"
    script = tmp_path / "killed_export.py"
    script.write_text(KILLED_EXPORT)
    proc = zygote.start(script, str(tmp_path / "export"), str(marker))  # forked: no TensorFlow import of its own
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
    with pytest.raises(ValueError, match="`path` must be a directory or a path"), atomic_directory(tmp_path / "export"):
        pass


def test_keras_file_and_json_are_written_atomically(tmp_path):
    model = tiny_model(0.0)
    path = save_keras_atomic(model, tmp_path / "model.keras")
    reloaded = keras.saving.load_model(path)
    np.testing.assert_allclose(reloaded(np.ones((1, 3))), model(np.ones((1, 3))))
    with pytest.raises(ValueError, match="`path` must end in '.keras'. Received: path="):
        save_keras_atomic(model, tmp_path / "model.h5")
    write_json_atomic(tmp_path / "metrics.json", {"b": np.float32(0.5), "a": np.int64(3), "c": np.arange(2)})
    assert json.loads((tmp_path / "metrics.json").read_text()) == {"a": 3, "b": 0.5, "c": [0, 1]}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json", "model.keras"]


# --- Durability and the swap itself -------------------------------------------------------------------------

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/fd, renameat2")


def _renameat2_works(tmp_path) -> bool:
    import kerasce.export

    a, b = tmp_path / "probe_a", tmp_path / "probe_b"
    a.mkdir()
    b.mkdir()
    (a / "x").write_text("a")
    swapped = kerasce.export._exchange_directories(a, b)
    shutil.rmtree(a)
    shutil.rmtree(b)
    return swapped


class FileSystemLog:
    """Records, in order, every fsync (by the path its descriptor names) and every rename of the export."""

    def __init__(self, monkeypatch):
        import kerasce.export

        self.events: list[tuple[str, str, str]] = []
        real_fsync, real_replace = os.fsync, os.replace
        real_exchange = kerasce.export._exchange_directories

        def fsync(fd):
            self.events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}"), ""))
            return real_fsync(fd)

        def replace(src, dst, *args, **kwargs):
            result = real_replace(src, dst, *args, **kwargs)
            self.events.append(("rename", str(src), str(dst)))
            return result

        def exchange(a, b):
            swapped = real_exchange(a, b)
            if swapped:
                self.events.append(("rename", str(a), str(b)))
            return swapped

        monkeypatch.setattr(os, "fsync", fsync)
        monkeypatch.setattr(os, "replace", replace)
        monkeypatch.setattr(kerasce.export, "_exchange_directories", exchange)

    def swap_index(self, dest) -> int:
        """Index of the rename that put something at `dest` (the last one: a fallback renames twice)."""
        renames = [i for i, (kind, _, dst) in enumerate(self.events) if kind == "rename" and dst == str(dest)]
        assert renames, f"no rename onto {dest}: {self.events}"
        return renames[-1]

    def fsynced(self, events) -> set[str]:
        return {path for kind, path, _ in events if kind == "fsync"}


@linux_only
@pytest.mark.parametrize("case", ["first export", "exchange", "two renames"])
def test_export_is_fsynced_before_the_swap_and_the_parent_after_it(tmp_path, monkeypatch, case):
    """Files, directories and the parent are fsynced before the swap; the parent again after it.

    Mutations tried: dropping `_fsync_path(dest.parent)` after the swap -> red (parent not synced after);
    dropping `_fsync_tree(new)` -> red (files not synced).
    """
    import kerasce.export

    dest = (tmp_path / "export").absolute()
    if case != "first export":
        export_tiny(dest, 0.0)
    if case == "two renames":
        monkeypatch.setattr(kerasce.export, "_exchange_directories", lambda a, b: False)
    log = FileSystemLog(monkeypatch)
    export_tiny(dest, 1.0, write_extras=lambda d: (d / "metrics.json").write_text("{}"))
    monkeypatch.undo()

    swap = log.swap_index(dest)
    new_dir = log.events[swap][1]
    before, after = log.fsynced(log.events[:swap]), log.fsynced(log.events[swap + 1 :])
    expected = {
        os.path.join(new_dir, os.path.relpath(os.path.join(root, name), dest))
        for root, dirs, files in os.walk(dest)
        for name in dirs + files
    } | {new_dir}
    assert expected - before == set(), "every file and directory of the export is fsynced before the swap"
    assert {"saved_model.pb", "metrics.json", "variables"} <= {os.path.basename(p) for p in expected}
    assert str(tmp_path) in before, "the parent (holding the new directory's entry) is fsynced before the swap"
    assert str(tmp_path) in after, "the parent directory is fsynced after the swap, making the rename durable"


@linux_only
@pytest.mark.parametrize("writer", ["json", "keras"])
def test_atomic_files_are_fsynced_before_the_rename_and_the_parent_after_it(tmp_path, monkeypatch, writer):
    """Mutation tried: dropping `_fsync_path(tmp)` in `_atomic_file` -> red."""
    log = FileSystemLog(monkeypatch)
    if writer == "json":
        dest = write_json_atomic(tmp_path / "metrics.json", {"a": 1})
    else:
        dest = save_keras_atomic(tiny_model(0.0), tmp_path / "model.keras")
    monkeypatch.undo()
    swap = log.swap_index(dest)
    assert log.events[swap][1] in log.fsynced(log.events[:swap])
    assert str(tmp_path) in log.fsynced(log.events[swap + 1 :])


@pytest.mark.parametrize("exchange", [True, False], ids=["exchange", "two renames"])
def test_failing_to_delete_the_old_copy_is_a_warning_and_the_new_export_stays(tmp_path, monkeypatch, exchange):
    """Mutation tried: `shutil.rmtree(new)` without the try/warn in `_remove_old_copy` -> red (OSError)."""
    import kerasce.export

    export_tiny(tmp_path / "export", 0.5)
    if not exchange:
        monkeypatch.setattr(kerasce.export, "_exchange_directories", lambda a, b: False)
    elif not _renameat2_works(tmp_path):
        pytest.skip("renameat2(RENAME_EXCHANGE) is not supported here")
    real_rmtree = shutil.rmtree

    def rmtree(path, *args, **kwargs):
        if os.path.basename(path).startswith(".export."):  # the previous copy, after the swap
            raise PermissionError(13, "Permission denied (simulated)", str(path))
        return real_rmtree(path, *args, **kwargs)

    monkeypatch.setattr(shutil, "rmtree", rmtree)
    with pytest.warns(RuntimeWarning, match="export succeeded, but its previous copy could not be removed"):
        _, path = export_tiny(tmp_path / "export", 3.0)
    monkeypatch.undo()
    served = tf.saved_model.load(str(path)).signatures["serving_default"](tf.zeros([1, 3]))
    np.testing.assert_allclose(served["logits"].numpy(), [[3.0, 3.0]])
    leftovers = [p.name for p in tmp_path.iterdir() if p.name != "export"]
    assert len(leftovers) == 1 and leftovers[0].startswith(".export."), leftovers  # the old copy, named


@linux_only
def test_the_destination_is_never_missing_or_partial_during_the_swap(tmp_path, monkeypatch):
    """Observes the destination around every file-system call the export makes: always a whole export.

    Mutation tried: replacing the exchange in `_replace_directory` by
    `shutil.rmtree(dest); os.replace(new, dest)` -> red ("missing after rmtree"). The two-rename fallback
    (platforms without renameat2) leaves the destination briefly absent by design and is not covered here.
    """
    import kerasce.export

    if not _renameat2_works(tmp_path):
        pytest.skip("renameat2(RENAME_EXCHANGE) is not supported here")
    dest = tmp_path / "export"
    export_tiny(dest, 0.5)
    states: list[str] = []

    def observe(label):
        whole = (dest / "saved_model.pb").is_file() and (dest / "variables").is_dir()
        states.append(f"{'whole' if whole else 'missing'} after {label}")

    def watched(name, real):
        def call(*args, **kwargs):
            observe(f"before {name}")
            result = real(*args, **kwargs)
            observe(name)
            return result

        return call

    for module, name in [
        (os, "replace"),
        (os, "rename"),
        (os, "rmdir"),
        (os, "remove"),
        (os, "unlink"),
        (shutil, "rmtree"),
        (shutil, "move"),
        (kerasce.export, "_exchange_directories"),
    ]:
        monkeypatch.setattr(module, name, watched(name, getattr(module, name)))
    export_tiny(dest, 2.0)
    monkeypatch.undo()

    assert any("_exchange_directories" in s for s in states), states
    assert all(s.startswith("whole") for s in states), [s for s in states if not s.startswith("whole")]
    served = tf.saved_model.load(str(dest)).signatures["serving_default"](tf.zeros([1, 3]))
    np.testing.assert_allclose(served["logits"].numpy(), [[2.0, 2.0]])
