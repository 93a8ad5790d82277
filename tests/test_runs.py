"""kerasce.cli.runs: flag checks and their messages, the run record of a backup, the quiet TensorFlow start."""

import argparse
import json
import os
import subprocess
import sys
import textwrap

import pytest

from kerasce.cli import runs
from kerasce.cli.runs import RunConfigMismatch, open_backup

CONFIG = {
    "dataset": "digits",
    "epochs": 15,
    "learning_rate": 0.002,
    "seed": 0,
    "image_size": None,
    "download": False,
    "export_dir": "out/a",
    "fresh": False,
}
MAY_CHANGE = ("export_dir", "fresh")


def _with_state(backup):
    backup.state_dir.mkdir(parents=True, exist_ok=True)
    (backup.state_dir / "checkpoint").write_text("weights")
    return backup


@pytest.mark.parametrize(
    "convert, text, value",
    [
        (runs.positive_int, "3", 3),
        (runs.non_negative_int, "0", 0),
        (runs.positive_float, "1e-3", 1e-3),
        (runs.finite_float, "-100", -100.0),
        (runs.positive_float, "inf", None),
        (runs.positive_int, "0", None),
        (runs.positive_int, "1.5", None),
        (runs.non_negative_int, "-1", None),
        (runs.positive_float, "0", None),
        (runs.positive_float, "-1", None),
        (runs.finite_float, "nan", None),
        (runs.finite_float, "x", None),
    ],
)
def test_flag_types_accept_sensible_values_and_reject_the_rest(convert, text, value):
    if value is None:
        with pytest.raises(argparse.ArgumentTypeError, match="must be"):
            convert(text)
    else:
        assert convert(text) == value


def test_strategy_names_match_kerasce_distribute():
    from kerasce.distribute import STRATEGIES

    assert runs.STRATEGIES == STRATEGIES


def test_a_new_backup_records_the_run_and_is_not_a_resume(tmp_path):
    backup = open_backup(tmp_path / "b", CONFIG, may_change=MAY_CHANGE)
    assert not backup.resuming and backup.state_dir == tmp_path / "b" / "state"
    record = json.loads((tmp_path / "b" / "run.json").read_text())
    assert record["config"] == CONFIG and record["started"] == backup.started
    assert backup.started.endswith(" UTC")


def test_the_same_flags_resume_and_may_change_flags_may_differ(tmp_path):
    first = _with_state(open_backup(tmp_path / "b", CONFIG, may_change=MAY_CHANGE))
    again = open_backup(tmp_path / "b", {**CONFIG, "export_dir": "elsewhere"}, may_change=MAY_CHANGE)
    assert again.resuming and again.started == first.started
    assert again.resume_line("after epoch 3 of 15") == (
        f"resuming {tmp_path / 'b'} after epoch 3 of 15 (started {first.started})"
    )


@pytest.mark.parametrize(
    "change, differences, resume",
    [
        ({"learning_rate": -1.0}, "--learning-rate 0.002 -> -1.0", "--learning-rate 0.002"),
        ({"seed": 1, "epochs": 20}, "--epochs 15 -> 20, --seed 0 -> 1", "--epochs 15 --seed 0"),
        ({"image_size": [32, 32]}, "--image-size (unset) -> 32 32", "(without --image-size)"),
        ({"download": True}, "--download off -> on", "(without --download)"),
        ({"dataset": "my photos"}, "--dataset digits -> my photos", "--dataset digits"),
        ({"new_flag": 3}, "--new-flag (not recorded) -> 3", "(without --new-flag)"),
    ],
)
def test_other_flags_are_refused_naming_each_difference(tmp_path, change, differences, resume):
    """Mutation tried: `differences = []` in `open_backup` -> red."""
    _with_state(open_backup(tmp_path / "b", CONFIG, may_change=MAY_CHANGE))
    with pytest.raises(RunConfigMismatch) as error:
        open_backup(tmp_path / "b", {**CONFIG, **change}, may_change=MAY_CHANGE)
    message = str(error.value)
    assert message.startswith("`--backup-dir` must hold a backup made with this run's flags. Received: ")
    assert f"Received: {tmp_path / 'b'}, made with other flags ({differences}); it is not resumed." in message
    assert f"To resume it, run again with {resume}; to start fresh, add --fresh" in message
    assert f"or delete {tmp_path / 'b'}" in message
    assert (tmp_path / "b" / "state" / "checkpoint").read_text() == "weights"  # nothing was touched
    assert isinstance(error.value, ValueError)  # the examples print ValueErrors as one `error: ...` line


PRESET = {"baseline": True, "hidden_units": (64, 64), "ent_coef": 0.001}


@pytest.mark.parametrize(
    "now, differences",
    [
        ({**PRESET, "ent_coef": 0.01}, "ent_coef 0.001 -> 0.01"),
        ({"baseline": True, "hidden_units": (64, 64)}, "ent_coef 0.001 -> (not recorded)"),
        ({**PRESET, "hidden_units": (32,), "gamma": 0.9}, "gamma (not recorded) -> 0.9, hidden_units 64 64 -> 32"),
    ],
)
def test_other_settings_with_the_same_flags_are_refused_naming_each_difference(tmp_path, now, differences):
    """A preset edited between a run and its resume (mutation tried: no settings comparison -> red)."""
    _with_state(open_backup(tmp_path / "b", CONFIG, may_change=MAY_CHANGE, settings=PRESET))
    assert json.loads((tmp_path / "b" / "run.json").read_text())["settings"]["hidden_units"] == [64, 64]
    resumed = open_backup(tmp_path / "b", CONFIG, may_change=MAY_CHANGE, settings=dict(PRESET))  # tuples as lists
    assert resumed.resuming
    with pytest.raises(RunConfigMismatch) as error:
        open_backup(tmp_path / "b", CONFIG, may_change=MAY_CHANGE, settings=now)
    message = str(error.value)
    assert f"Received: {tmp_path / 'b'}, made with other settings ({differences}) under the same flags" in message
    assert "To resume it, restore those settings; to start fresh, add --fresh" in message
    assert (tmp_path / "b" / "state" / "checkpoint").read_text() == "weights"


def test_fresh_discards_the_backup(tmp_path):
    _with_state(open_backup(tmp_path / "b", CONFIG, may_change=MAY_CHANGE))
    backup = open_backup(tmp_path / "b", {**CONFIG, "seed": 5}, may_change=MAY_CHANGE, fresh=True)
    assert not backup.resuming and not backup.state_dir.exists()
    assert json.loads((tmp_path / "b" / "run.json").read_text())["config"]["seed"] == 5


def test_without_state_a_run_with_other_flags_simply_starts(tmp_path):
    # Killed before its first checkpoint: nothing to lose, nothing to resume.
    open_backup(tmp_path / "b", CONFIG, may_change=MAY_CHANGE)
    backup = open_backup(tmp_path / "b", {**CONFIG, "seed": 5}, may_change=MAY_CHANGE)
    assert not backup.resuming and backup.config["seed"] == 5


@pytest.mark.parametrize("record", [None, "{not json", '{"config": {}}'])
def test_state_without_a_readable_record_is_refused(tmp_path, record):
    (tmp_path / "b" / "state").mkdir(parents=True)
    (tmp_path / "b" / "state" / "checkpoint").write_text("weights")
    if record is not None:
        (tmp_path / "b" / "run.json").write_text(record)
    with pytest.raises(RunConfigMismatch, match="no readable run record .*it is not resumed.*--fresh"):
        open_backup(tmp_path / "b", CONFIG)


def test_a_file_in_place_of_the_backup_directory_is_an_error(tmp_path):
    (tmp_path / "b").write_text("x")
    with pytest.raises(ValueError, match=r"`directory` must be a directory or a path that does not exist yet"):
        open_backup(tmp_path / "b", CONFIG)


def test_discard_removes_the_whole_backup(tmp_path):
    backup = _with_state(open_backup(tmp_path / "b", CONFIG))
    backup.discard()
    assert not (tmp_path / "b").exists()


def test_a_failed_start_removes_what_opening_the_backup_created(tmp_path):
    """Mutation tried: `created = None` in `open_backup` -> red (the directories stay)."""
    with pytest.raises(KeyError), open_backup(tmp_path / "new" / "b", CONFIG).removed_if_unused():
        raise KeyError("unknown dataset")
    assert list(tmp_path.iterdir()) == []  # "new" too: opening the backup created it


def test_a_failure_after_the_first_checkpoint_keeps_the_backup(tmp_path):
    """Mutation tried: not checking for state before removing -> red."""
    with pytest.raises(KeyError), open_backup(tmp_path / "b", CONFIG).removed_if_unused() as backup:
        _with_state(backup)
        raise KeyError("killed in epoch 2")
    assert open_backup(tmp_path / "b", CONFIG).resuming


def test_a_failure_never_removes_a_directory_that_was_there(tmp_path):
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "notes.txt").write_text("mine")
    with pytest.raises(KeyError), open_backup(tmp_path / "b", CONFIG).removed_if_unused():
        raise KeyError("unknown dataset")
    assert (tmp_path / "b" / "notes.txt").read_text() == "mine"
    with open_backup(tmp_path / "c", CONFIG).removed_if_unused():
        pass  # no failure: nothing removed
    assert (tmp_path / "c" / "run.json").is_file()


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--epochs", "0"], "error: `--epochs` must be an integer >= 1. Received: --epochs=0"),
        (["--epochs", "2.5"], "error: `--epochs` must be an integer. Received: --epochs='2.5'"),
        (["--size", "3", "-1"], "error: `--size` must be an integer >= 1. Received: --size=-1"),
        (["--rate", "inf"], "error: `--rate` must be a finite number. Received: --rate=inf"),
        (["-r", "x"], "error: `--rate` must be a number. Received: --rate='x'"),  # the long name
        (["--mode", "tpu"], "error: `--mode` must be one of 'a', 'b'. Received: --mode='tpu'"),
        (["--other"], "error: unrecognized arguments: --other"),
    ],
)
def test_bad_flag_values_follow_the_message_template(argv, message, capsys):
    """Keras's template, "`arg` must be .... Received: arg=...", from argparse's own wording."""
    parser = runs.ArgumentParser(prog="x")
    parser.add_argument("--epochs", type=runs.positive_int, default=1)
    parser.add_argument("--size", type=runs.positive_int, nargs=2)
    parser.add_argument("-r", "--rate", type=runs.finite_float)
    parser.add_argument("--mode", choices=("a", "b"), default="a")
    with pytest.raises(SystemExit) as exit_info:
        parser.parse_args(argv)
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == f"x: {message}"


# Lines TensorFlow 2.21 printed on this CPU-only machine with TF_CPP_MIN_LOG_LEVEL=2 (copied from a terminal).
ABSL = "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"
NO_DRIVER = (
    "I0000 00:00:1795637065.429805    6518 cudart_stub.cc:31] Could not find cuda drivers on your "
    "machine, GPU will not be used.\n"
)
CUINIT = (
    "E0000 00:00:1795637070.676655    6518 cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error: "
    "Failed call to cuInit: UNKNOWN ERROR (303)\n"
)


@pytest.mark.parametrize(
    "captured, kept",
    [
        (ABSL + NO_DRIVER + ABSL + NO_DRIVER + CUINIT, ""),
        (ABSL + "a real warning\n" + NO_DRIVER + CUINIT + "Traceback ...\n", "a real warning\nTraceback ...\n"),
        (ABSL + CUINIT, CUINIT),  # a CUDA driver is installed: its failure is the GPU user's one clue
        ("WARNING: something else before absl\n", "WARNING: something else before absl\n"),
    ],
)
def test_startup_filter_drops_exactly_the_known_noise(captured, kept):
    assert runs._filter_startup_noise(captured) == kept


def _python(code, env_update):
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    env.update(env_update)
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], env=env, capture_output=True, text=True, timeout=300, check=False
    )


QUIET_START = """
    import os, sys
    from kerasce.cli.runs import quiet_tensorflow_startup
    with quiet_tensorflow_startup():
        import tensorflow as tf
        tf.config.list_physical_devices()
        os.write(2, b"a message of the program's own\\n")
    print(len(tf.config.list_physical_devices("GPU")), os.environ["TF_CPP_MIN_LOG_LEVEL"])
"""


# A plain TensorFlow import, in a fresh process with every log line shown: the reference of both tests below
# (its GPU count; the CUDA start-up lines this machine prints, if any). Both tests run on one pytest-xdist
# worker (pyproject: --dist loadgroup), which starts it once.
PLAIN_IMPORT = "import tensorflow as tf; print(len(tf.config.list_physical_devices('GPU')))"
SHARES_PLAIN_IMPORT = pytest.mark.xdist_group("runs-plain-import")


@pytest.fixture(scope="module")
def plain_import():
    result = _python(PLAIN_IMPORT, {"TF_CPP_MIN_LOG_LEVEL": "0"})
    assert result.returncode == 0, result.stderr[-3000:]
    return result


@SHARES_PLAIN_IMPORT
@pytest.mark.slow
def test_tensorflow_starts_quietly_and_other_messages_survive(plain_import):
    """In a fresh process: none of the known start-up lines reach stderr, other output does, GPUs stay visible.

    Mutation tried: `yield` without the fd capture in `quiet_tensorflow_startup` -> red on this CPU machine
    (the absl and CUDA lines come back).
    """
    result = _python(QUIET_START, {})
    assert result.returncode == 0, result.stderr[-3000:]
    assert "absl::InitializeLog" not in result.stderr and "cuda drivers" not in result.stderr
    assert "cuInit" not in result.stderr
    assert "a message of the program's own" in result.stderr
    assert result.stdout.split()[1] == "2"  # the default level, set before TensorFlow was imported
    # Nothing hidden from a GPU user: the GPU count equals that of a plain import (the log level changes no device).
    assert result.stdout.split()[0] == plain_import.stdout.strip()


@SHARES_PLAIN_IMPORT
@pytest.mark.slow
def test_tf_cpp_min_log_level_0_shows_everything(plain_import):
    result = _python(QUIET_START, {"TF_CPP_MIN_LOG_LEVEL": "0"})
    assert result.returncode == 0 and "a message of the program's own" in result.stderr
    if "cuda drivers" not in plain_import.stderr:
        pytest.skip("this machine prints no CUDA start-up lines")
    assert "cuda drivers" in result.stderr
