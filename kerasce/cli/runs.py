"""What kerasce's command lines share: flag checks, a quiet TensorFlow start, and resumable runs.

Importing this module does not import TensorFlow (it costs ~5 s), so a script can parse and check its flags,
answer ``--help`` or reject a bad value at once, and only then import TensorFlow.

**A resumed run is the same run.** A run's backup directory holds two things:

* ``run.json``: the run record, written (atomically) when the run starts: every flag of the command line
  and the time the run started;
* ``state/``: whatever the trainer checkpoints there (Keras ``BackupAndRestore`` files, an agent checkpoint).

When the backup holds state, a new run with the same flags resumes it (and says so in one line); a run
whose flags differ is refused with a message listing each difference (old -> new) and how to either resume
(rerun with the recorded flags) or start fresh (``--fresh``, or delete the directory). Flags that only
say where output goes, how much is printed or when to stop may change between a run and its resume: each
script names them (``may_change``); every other flag, including ones added later, must match. A start that
fails before the trainer has written any state (an unknown dataset or env, a refused label) removes what
opening the backup created (:meth:`RunBackup.removed_if_unused`).

Bad flag values read as Keras words its argument errors (:class:`ArgumentParser`):
``error: `--epochs` must be an integer >= 1. Received: --epochs=0``.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import json
import math
import os
import re
import shlex
import shutil
import sys
import tempfile
from collections.abc import Collection, Iterator, Mapping
from pathlib import Path
from typing import Any, NoReturn

__all__ = [
    "RECORD_FILE",
    "STATE_DIR",
    "STRATEGIES",
    "ArgumentParser",
    "HelpFormatter",
    "RunBackup",
    "RunConfigMismatch",
    "finite_float",
    "non_negative_int",
    "open_backup",
    "positive_float",
    "positive_int",
    "quiet_tensorflow_startup",
]

RECORD_FILE = "run.json"
STATE_DIR = "state"
# The names `kerasce.distribute.get_strategy` accepts, here too so that `--strategy` is checked without
# importing TensorFlow (a test keeps the two equal).
STRATEGIES = ("default", "mirrored", "multiworker")


# ------------------------------------------------------------------------------------------------------------
# Flag values (argparse `type=` callables: a bad value is argparse's one-line `error: argument --x: ...`, exit 2)
# ------------------------------------------------------------------------------------------------------------


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """``--help`` shows each flag's default (``(default: 64)``), keeps the description's line breaks, and adds
    nothing where there is no value to show (``None``, an off switch) or the help already names the default.
    """

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or action.default is False or "default" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


def _integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer. Received: {text!r}") from None


def positive_int(text: str) -> int:
    """An integer >= 1 (epochs, batch size, envs, updates)."""
    value = _integer(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1. Received: {value}")
    return value


def non_negative_int(text: str) -> int:
    """An integer >= 0 (seeds: NumPy and Keras refuse negative ones)."""
    value = _integer(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0. Received: {value}")
    return value


def finite_float(text: str) -> float:
    """A finite number (no nan / inf), e.g. a target return, which may be negative."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number. Received: {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number. Received: {text}")
    return value


def positive_float(text: str) -> float:
    """A finite number > 0 (learning rate, time budget)."""
    value = finite_float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a number > 0. Received: {text}")
    return value


# argparse's words for a bad value ("argument --epochs: <what the type callable raised>"), and for a bad choice.
_BAD_VALUE = re.compile(r"argument (?:\S+/)?(--?[\w-]+): must be (.*)\. Received: (.*)", re.S)
_BAD_CHOICE = re.compile(r"argument (?:\S+/)?(--?[\w-]+): invalid choice: (.*) \(choose from (.*)\)", re.S)


class ArgumentParser(argparse.ArgumentParser):
    """argparse's parser with kerasce's message for a bad flag value, and ``--help`` showing the defaults.

    A value that a flag's type or choices refuse reads ``error: `--epochs` must be an integer >= 1. Received:
    --epochs=0`` (exit status 2), as Keras words its own argument errors.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        if match := _BAD_VALUE.fullmatch(message):
            flag, expected, value = match.groups()
            message = f"`{flag}` must be {expected}. Received: {flag}={value}"
        elif match := _BAD_CHOICE.fullmatch(message):
            flag, value, choices = match.groups()
            message = f"`{flag}` must be one of {choices}. Received: {flag}={value}"
        super().error(message)


# ------------------------------------------------------------------------------------------------------------
# The run record
# ------------------------------------------------------------------------------------------------------------


class RunConfigMismatch(ValueError):
    """The backup was made by a run with other flags (or by an unknown writer): it is not resumed."""


@dataclasses.dataclass(frozen=True)
class RunBackup:
    """An opened backup directory.

    Attributes:
        directory: The backup directory (holds ``run.json`` and ``state/``).
        state_dir: Where the trainer reads and writes its checkpoints (``directory / "state"``).
        config: The run's flags, as recorded in ``run.json``.
        started: When the run was first started (UTC, ``YYYY-mm-dd HH:MM:SS UTC``).
        resuming: True when ``state_dir`` holds state from an earlier start of this same run.
        created: The outermost directory that opening the backup created (`directory` or one of its
            parents), or None when `directory` existed already.
    """

    directory: Path
    state_dir: Path
    config: dict[str, Any]
    started: str
    resuming: bool
    created: Path | None = None

    def resume_line(self, progress: str) -> str:
        """The one line a resumed run prints, e.g. ``resuming <dir> after epoch 3 of 15 (started <time>)``."""
        return f"resuming {self.directory} {progress} (started {self.started})"

    def discard(self) -> None:
        """Deletes the backup (the run is over: trained and exported)."""
        shutil.rmtree(self.directory, ignore_errors=True)

    @contextlib.contextmanager
    def removed_if_unused(self) -> Iterator[RunBackup]:
        """On an exception inside the block, deletes what opening the backup created, unless the trainer has
        written state into it since: a start that fails (an unknown dataset or env, a bad label in the first
        step) leaves no directory behind, while a run killed after its first checkpoint stays resumable."""
        try:
            yield self
        except BaseException:
            if self.created is not None and not _has_state(self.state_dir):
                shutil.rmtree(self.created, ignore_errors=True)
            raise


_UNSET = object()


def open_backup(
    directory: str | os.PathLike,
    config: Mapping[str, Any],
    *,
    may_change: Collection[str] = (),
    fresh: bool = False,
    settings: Mapping[str, Any] | None = None,
) -> RunBackup:
    """Opens `directory` for the run described by `config`: resumes the same run, or starts a new one.

    * ``fresh``: the directory is deleted first.
    * No state in ``state/`` (nothing to lose): ``run.json`` is (re)written for this run.
    * State and a record whose flags equal `config` (ignoring `may_change`): the run is resumed.
    * State and other flags or `settings`, or state without a readable record: :class:`RunConfigMismatch`.

    Args:
        directory: The backup directory (created if needed).
        config: The flags that define the run: ``vars(args)`` with names as in the namespace
            (``learning_rate`` for ``--learning-rate``); values must be JSON-serialisable (paths are
            recorded as strings).
        may_change: Names in `config` that may differ between a run and its resume (where output goes,
            verbosity, a time or update budget that only moves the stopping point).
        fresh: Discard any existing backup.
        settings: What else defines the run and does not come from a flag, resolved (e.g. the env's preset
            from ``kerasce.rl.presets``); recorded beside the flags. A backup made with other settings is
            not resumed either: a preset edited since would otherwise change a run halfway.

    Returns:
        The opened :class:`RunBackup`.

    Raises:
        RunConfigMismatch: The backup holds state from a run with other flags (the message lists each
            difference, old -> new, and how to resume or start fresh), or state without a readable record.
        ValueError: `directory` exists and is not a directory.
    """
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise ValueError(
            f"`directory` must be a directory or a path that does not exist yet. Received: directory={directory} "
            "(a file)."
        )
    if fresh:
        shutil.rmtree(directory, ignore_errors=True)
    created = _outermost_missing(directory)
    flags: dict[str, Any] = json.loads(json.dumps(dict(config), default=str))  # as run.json holds them
    resolved: dict[str, Any] = json.loads(json.dumps(dict(settings or {}), default=str))
    record_path, state_dir = directory / RECORD_FILE, directory / STATE_DIR
    if not _has_state(state_dir):
        # Nothing to resume: a new run (a start killed before its first checkpoint is simply restarted).
        started = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
        _write_record(record_path, {"config": flags, "settings": resolved, "started": started})
        return RunBackup(directory, state_dir, flags, started, resuming=False, created=created)

    try:
        record = json.loads(record_path.read_text())
        recorded, started = dict(record["config"]), str(record["started"])
        recorded_settings = dict(record.get("settings", {}))
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise RunConfigMismatch(
            f"`--backup-dir` must hold a backup with its run record to be resumed. Received: {directory}, which "
            f"holds training state but no readable run record ({RECORD_FILE}: {error}), so it cannot be checked "
            f"to belong to this run; it is not resumed. To start fresh, add --fresh (discards the backup) or "
            f"delete {directory}."
        ) from None
    differences = [
        key
        for key in sorted(set(recorded) | set(flags))
        if key not in may_change and recorded.get(key, _UNSET) != flags.get(key, _UNSET)
    ]
    if differences:
        changes = ", ".join(
            f"{_flag(k)} {_show(recorded.get(k, _UNSET))} -> {_show(flags.get(k, _UNSET))}" for k in differences
        )
        resume = " ".join(_as_flags(k, recorded.get(k, _UNSET)) for k in differences)
        raise RunConfigMismatch(
            f"`--backup-dir` must hold a backup made with this run's flags. Received: {directory}, made with "
            f"other flags ({changes}); it is not resumed. To resume it, run again with {resume}; to start "
            f"fresh, add --fresh (discards the backup) or delete {directory}."
        )
    changed = [
        f"{key} {_show(recorded_settings.get(key, _UNSET))} -> {_show(resolved.get(key, _UNSET))}"
        for key in sorted(set(recorded_settings) | set(resolved))
        if recorded_settings.get(key, _UNSET) != resolved.get(key, _UNSET)
    ]
    if changed:
        raise RunConfigMismatch(
            f"`--backup-dir` must hold a backup made with this run's settings. Received: {directory}, made with "
            f"other settings ({', '.join(changed)}) under the same flags: they come from the code (e.g. a preset "
            f"in kerasce.rl.presets), not from a flag; it is not resumed. To resume it, restore those settings; "
            f"to start fresh, add --fresh (discards the backup) or delete {directory}."
        )
    return RunBackup(directory, state_dir, recorded, started, resuming=True)


def _has_state(state_dir: Path) -> bool:
    return state_dir.is_dir() and any(state_dir.iterdir())


def _outermost_missing(directory: Path) -> Path | None:
    """The outermost of `directory` and its parents that does not exist yet (None: `directory` exists)."""
    missing = None
    for path in (directory.absolute(), *directory.absolute().parents):
        if path.exists():
            return missing
        missing = path
    return missing


def _write_record(path: Path, record: dict[str, Any]) -> None:
    from kerasce.export import write_json_atomic  # imports TensorFlow: only once the run has started

    write_json_atomic(path, record)


def _flag(key: str) -> str:
    return "--" + key.replace("_", "-")


def _show(value: Any) -> str:
    """A recorded value as the message shows it."""
    if value is _UNSET:
        return "(not recorded)"
    if value is None:
        return "(unset)"
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, list):
        return " ".join(map(str, value))
    return str(value)


def _as_flags(key: str, value: Any) -> str:
    """The command-line words that give `key` the recorded `value`."""
    if value is _UNSET or value is None or value is False:
        return f"(without {_flag(key)})"
    if value is True:
        return _flag(key)
    words = value if isinstance(value, list) else [value]
    return " ".join([_flag(key), *(shlex.quote(str(w)) for w in words)])


# ------------------------------------------------------------------------------------------------------------
# A quiet TensorFlow start
# ------------------------------------------------------------------------------------------------------------

# What TensorFlow prints on a machine without CUDA drivers even with TF_CPP_MIN_LOG_LEVEL=2: absl's C++
# logging is not initialised while TensorFlow loads, and before that absl writes every message to stderr
# whatever the level (TF_CPP_MIN_LOG_LEVEL is not consulted; no environment variable changes it).
_ABSL_PREAMBLE = re.compile(r"WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR")
_NO_CUDA_DRIVER = re.compile(
    r"I\d{4} [\d:. ]+\d+ cudart_stub\.cc:\d+\] Could not find cuda drivers on your machine, "
    r"GPU will not be used\."
)
# Only dropped when the line above says there is no driver at all; with a driver installed, a failing
# cuInit is the one clue a GPU user has, and it is kept.
_CUINIT_FAILED = re.compile(r"E\d{4} [\d:. ]+\d+ cuda_platform\.cc:\d+\] failed call to cuInit: .*")


def _filter_startup_noise(text: str) -> str:
    lines = text.splitlines(keepends=True)
    no_driver = any(_NO_CUDA_DRIVER.fullmatch(line.rstrip("\n")) for line in lines)
    noise = [_ABSL_PREAMBLE, _NO_CUDA_DRIVER] + ([_CUINIT_FAILED] if no_driver else [])
    return "".join(line for line in lines if not any(p.fullmatch(line.rstrip("\n")) for p in noise))


@contextlib.contextmanager
def quiet_tensorflow_startup() -> Iterator[None]:
    """Import TensorFlow (and start its devices) inside this block: its start-up noise is filtered out.

    Sets ``TF_CPP_MIN_LOG_LEVEL=2`` (INFO and WARNING of TensorFlow's C++ logging) unless already set,
    and, because that variable does not reach the messages absl prints before its logging is initialised,
    captures file descriptor 2 during the block and writes back everything except these exact lines:

    * ``WARNING: All log messages before absl::InitializeLog() is called are written to STDERR``;
    * ``... cudart_stub.cc:...] Could not find cuda drivers on your machine, GPU will not be used.``;
    * ``... cuda_platform.cc:...] failed call to cuInit: ...``, only when the line above was printed too
      (no CUDA driver installed: no GPU to report on).

    GPUs are never hidden (``CUDA_VISIBLE_DEVICES`` is left alone). Other output written during the block
    (warnings, errors) is written back when it ends, in order; if the process dies inside the block, what
    it wrote there is lost. With ``TF_CPP_MIN_LOG_LEVEL=0`` nothing is filtered.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if os.environ["TF_CPP_MIN_LOG_LEVEL"] == "0":
        yield
        return
    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no stderr to filter (closed descriptor)
        yield
        return
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            kept = _filter_startup_noise(capture.read().decode(errors="replace"))
            if kept:
                sys.stderr.write(kept)
                sys.stderr.flush()
