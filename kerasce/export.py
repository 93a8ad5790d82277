"""Atomic exports: a SavedModel, a `.keras` file or a JSON file appears whole or not at all.

Everything is written into a temporary path beside the destination and then renamed into place, so an
export that fails or is killed half-way leaves the previous good export untouched (and no half-written
files where a user would look). One writer serves the classifiers and the agent.

Durability: a rename is atomic against a killed process, but after a power loss the file system may hold
the new name pointing at data that never reached the disk. So every file and directory of the new export
is fsynced before the swap, and the parent directory (whose entries the swap changes) right after it.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import json
import os
import shutil
import sys
import tempfile
import uuid
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import keras

from kerasce.backend import require_tensorflow

if TYPE_CHECKING:
    import tensorflow as tf

__all__ = ["atomic_directory", "export_saved_model", "save_keras_atomic", "write_json_atomic"]

_RENAME_EXCHANGE = 2  # linux/fs.h


def _exchange_directories(a: Path, b: Path) -> bool:
    """Atomically swaps two paths with Linux's renameat2(RENAME_EXCHANGE); False where unsupported."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd = -100
    result = renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), _RENAME_EXCHANGE)
    return result == 0


def _fsync_path(path: Path) -> None:
    """fsyncs one file or directory (a directory's fsync makes its entries, e.g. a rename, durable)."""
    is_dir = path.is_dir()
    if is_dir and os.name == "nt":
        return  # Windows cannot open a directory for fsync; NTFS journals the rename itself
    fd = os.open(path, os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if is_dir else 0))
    try:
        os.fsync(fd)
    except OSError:
        if not is_dir:
            raise
        # Some file systems refuse fsync on a directory (EINVAL); nothing more can be done there.
    finally:
        os.close(fd)


def _fsync_tree(root: Path) -> None:
    """fsyncs every file and directory under `root` (deepest first), then `root` itself."""
    for directory, _, files in os.walk(root, topdown=False):
        for name in files:
            _fsync_path(Path(directory, name))
        _fsync_path(Path(directory))


def _remove_old_copy(path: Path) -> None:
    """Deletes the previous export after a successful swap; a failure here is only a warning.

    The new export is already in place, so reporting the whole export as failed would be wrong (and a
    caller that retried or rolled back would undo a good export). The leftover is a hidden sibling.
    """
    try:
        shutil.rmtree(path)
    except OSError as error:
        warnings.warn(
            f"The export succeeded, but its previous copy could not be removed ({error}); delete {path} by hand.",
            RuntimeWarning,
            stacklevel=2,
        )


def _replace_directory(new: Path, dest: Path) -> None:
    """Puts directory `new` at `dest`, replacing what was there, then deletes the old content.

    `new` (files and directories) and the parent directory are fsynced first, the parent again after the
    rename: only then does the swap survive a power loss, not just a killed process.
    """
    _fsync_tree(new)
    _fsync_path(dest.parent)  # `new`'s own entry in the parent
    if not dest.exists():
        os.replace(new, dest)
        _fsync_path(dest.parent)
        return
    if _exchange_directories(new, dest):  # one atomic step: dest is never missing
        _fsync_path(dest.parent)
        _remove_old_copy(new)  # `new` now holds the old export
        return
    # Elsewhere: two renames. Between them `dest` is briefly absent; the old copy is kept until the end.
    old = dest.with_name(f".{dest.name}.old-{uuid.uuid4().hex[:8]}")
    os.replace(dest, old)
    try:
        os.replace(new, dest)
    except BaseException:
        os.replace(old, dest)  # put the previous export back
        raise
    _fsync_path(dest.parent)
    _remove_old_copy(old)


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike) -> Iterator[Path]:
    """Yields a fresh temporary directory that replaces `path` when the block exits without error.

    Write a whole export into the yielded directory (SavedModel, metrics, plots). If the block raises,
    or the process dies, `path` keeps its previous content and the temporary directory is removed (or,
    after a kill, left as a hidden ``.<name>.tmp-*`` sibling).

    Args:
        path: The directory to create or replace.

    Yields:
        The temporary directory (same parent as `path`, so the final rename stays on one file system).
    """
    dest = Path(path).absolute()
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.exists() and not dest.is_dir():
        raise ValueError(
            f"`path` must be a directory or a path that does not exist yet. Received: path={dest} (a file)"
        )
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.tmp-", dir=dest.parent))
    # mkdtemp makes the directory private (0700); an export gets the usual permissions (0777 - umask).
    tmp.chmod(0o777 & ~_umask())
    try:
        yield tmp
        _replace_directory(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _umask() -> int:
    """The process's umask: read from /proc on Linux (setting it to read it would race with threads)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    umask = os.umask(0o022)
    os.umask(umask)
    return umask


def export_saved_model(
    path: str | os.PathLike,
    model: keras.Model,
    fn: Callable[..., dict[str, tf.Tensor]],
    input_signature: Sequence[tf.TensorSpec],
    *,
    write_extras: Callable[[Path], None] | None = None,
    extra_endpoints: dict[str, tuple[Callable[..., dict[str, tf.Tensor]], Sequence[tf.TensorSpec]]] | None = None,
) -> Path:
    """Writes a SavedModel whose ``serving_default`` (and ``serve``) signature is `fn`, atomically.

    The SavedModel needs only TensorFlow to load (``tf.saved_model.load(path).signatures
    ["serving_default"]``): no Keras, no kerasce.

    Args:
        path: Export directory, created or replaced as a whole.
        model: The Keras model whose variables `fn` uses (tracked into the SavedModel).
        fn: A function of the input tensors that returns a dict of named output tensors.
        input_signature: One ``tf.TensorSpec`` per argument of `fn` (use ``None`` for the batch size).
        write_extras: Optional callback given the temporary export directory before it is renamed into
            place, to add files that belong to the same export (``metrics.json``, plots); they appear
            together with the SavedModel or not at all.
        extra_endpoints: Optional further signatures, ``{name: (fn, input_signature)}``.

    Returns:
        The export directory.

    Raises:
        RuntimeError: Keras runs on another backend than TensorFlow.
    """
    require_tensorflow("kerasce.export.export_saved_model")
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(name="serve", fn=fn, input_signature=list(input_signature))
    for name, (extra_fn, extra_signature) in (extra_endpoints or {}).items():
        archive.add_endpoint(name=name, fn=extra_fn, input_signature=list(extra_signature))
    with atomic_directory(path) as tmp:
        archive.write_out(str(tmp), verbose=False)  # "serve" is aliased as "serving_default"
        if write_extras is not None:
            write_extras(tmp)
    return Path(path)


def _atomic_file(path: str | os.PathLike, write: Callable[[Path], object], suffix: str = "") -> Path:
    """Runs `write(tmp_file)` on a temporary file beside `path`, then renames it over `path`."""
    dest = Path(path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.tmp-{uuid.uuid4().hex[:8]}{suffix}")
    try:
        write(tmp)
        _fsync_path(tmp)  # the data is on disk before the name points at it
        os.replace(tmp, dest)
        _fsync_path(dest.parent)  # and the rename itself is durable
    finally:
        if tmp.exists():
            tmp.unlink()
    return dest


def save_keras_atomic(model: keras.Model, path: str | os.PathLike) -> Path:
    """``model.save(path)`` for a ``.keras`` file, written to a temporary file and renamed into place."""
    if not str(path).endswith(".keras"):
        raise ValueError(f"`path` must end in '.keras'. Received: path={path!r}")
    return _atomic_file(path, lambda tmp: model.save(tmp), suffix=".keras")


def write_json_atomic(path: str | os.PathLike, obj: Any) -> Path:
    """Writes `obj` as JSON (sorted keys, indented) atomically."""
    text = json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n"
    return _atomic_file(path, lambda tmp: tmp.write_text(text))


def _json_default(value: Any) -> Any:
    """NumPy and TensorFlow scalars/arrays in metrics become plain JSON numbers and lists."""
    if hasattr(value, "numpy"):
        value = value.numpy()
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")
