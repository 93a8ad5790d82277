"""examples/reinforce_cartpole.py end to end: trains, and writes every promised file."""

import csv
import importlib.util
import json
import os
import re
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

EXAMPLE = os.path.join(os.path.dirname(__file__), "..", "..", "examples", "reinforce_cartpole.py")


@pytest.mark.slow
def test_example_solves_cartpole_and_exports(tmp_path):
    example = load_example()
    export_dir = tmp_path / "reinforce_cartpole"
    metrics = example.main(["--export-dir", str(export_dir), "--quiet", "--max-seconds", "60"])

    saved = json.loads((export_dir / "metrics.json").read_text(), parse_constant=reject_non_strict_json)
    assert saved == json.loads(json.dumps(metrics))
    for key in (
        "solved",
        "episodes",
        "env_steps",
        "train_seconds",
        "mean_return_100",
        "collect_steps_per_second",
        "eval_return_mean",
        "eval_return_std",
        "eval_episodes",
        "eval_seed",
        "eval_update",
    ):
        assert key in saved
    assert saved["solved"] is True and saved["mean_return_100"] >= 475
    assert saved["eval_return_mean"] >= 475 and saved["eval_episodes"] == 20  # solved = greedy play too
    with open(export_dir / "training_log.csv") as f:
        assert len(f.read().splitlines()) == saved["updates"] + 1
    assert saved["target_return"] == 475  # CartPole-v1's reward_threshold by default
    with Image.open(export_dir / "learning_curve.png") as png:
        assert png.size[0] > 300
    with Image.open(export_dir / "greedy_episode.gif") as gif:
        assert gif.n_frames > 10
    serve = tf.saved_model.load(str(export_dir)).signatures["serving_default"]
    out = serve(tf.zeros((3, 4), tf.float32))
    assert out["action"].dtype == tf.int64 and out["action"].shape == (3,)
    np.testing.assert_allclose(out["probabilities"].numpy().sum(-1), 1.0, rtol=1e-6)


def reject_non_strict_json(constant):
    raise ValueError(f"metrics.json is not strict JSON: {constant}")


def load_example():
    spec = importlib.util.spec_from_file_location("reinforce_cartpole_example", EXAMPLE)
    assert spec is not None and spec.loader is not None
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    return example


@pytest.mark.parametrize(
    "env_id, slug",
    [("CartPole-v1", "cartpole_v1"), ("LunarLander-v3", "lunarlander_v3"), ("ALE/Pong-v5", "ale_pong_v5")],
)
def test_env_slug(env_id, slug):
    assert load_example().env_slug(env_id) == slug


@pytest.mark.slow
def test_default_export_dir_is_named_after_the_env_and_metrics_are_strict_json(tmp_path, monkeypatch):
    # One update, 4 episodes: metrics.json must still be strict JSON (parse_constant rejects NaN and Infinity).
    from kerasce.rl import presets

    monkeypatch.chdir(tmp_path)
    # No --max-seconds: the env's budget from the presets module (mutation tried: the flag's default ignored).
    monkeypatch.setitem(presets.MAX_SECONDS, "Acrobot-v1", 77.0)
    load_example().main(
        ["--env", "Acrobot-v1", "--max-updates", "1", "--quiet", "--num-envs", "4", "--eval-episodes", "2"]
    )
    export_dir = tmp_path / "saved_models" / "reinforce_acrobot_v1"
    saved = json.loads((export_dir / "metrics.json").read_text(), parse_constant=reject_non_strict_json)
    assert saved["solved"] is False and saved["eval_episodes"] == 2 and saved["updates"] == 1
    assert saved["max_seconds"] == 77.0
    assert sorted(p.name for p in (tmp_path / "saved_models").iterdir()) == ["reinforce_acrobot_v1"]


@pytest.mark.slow
def test_set_overrides_preset_settings_and_unknown_ones_are_refused(tmp_path):
    example = load_example()
    flags = ["--quiet", "--max-updates", "1", "--num-envs", "4", "--eval-episodes", "2"]
    with pytest.raises(ValueError, match=r"a ReinforceAgent setting, one of \[.*Received: --set hiden_units"):
        example.main([*flags, "--export-dir", str(tmp_path / "a"), "--set", "hiden_units=(8,)"])
    metrics = example.main(
        [*flags, "--export-dir", str(tmp_path / "b"), "--set", "hidden_units=(8,)", "ent_coef=0.05", "baseline=True"]
    )
    assert metrics["settings"]["hidden_units"] == [8] and metrics["settings"]["ent_coef"] == 0.05
    assert metrics["settings"]["baseline"] is True and metrics["settings"]["num_envs"] == 4


def _example_process(zygote, *flags: str, env: dict | None = None):
    """The example in a fresh process, forked from tests/helpers/zygote.py's (which has imported TensorFlow already:
    about 7 s of CPU less per process)."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", **(env or {}))
    return zygote.start(EXAMPLE, "--quiet", *flags, env=env)


@pytest.mark.slow
def test_run_killed_mid_training_resumes_as_the_same_run(tmp_path, zygote):
    import signal
    import time

    # 20 updates: the example checkpoints every 10, so the kill lands between the checkpoints of 10 and 20.
    flags = ["--max-updates", "20", "--target-return", "1e9", "--max-seconds", "600"]
    reference = _example_process(zygote, *flags, "--export-dir", str(tmp_path / "reference"))
    killed_dir, backup = tmp_path / "killed", tmp_path / "killed.backup"
    first = _example_process(zygote, *flags, "--export-dir", str(killed_dir))
    deadline = time.monotonic() + 240
    try:
        while first.poll() is None and time.monotonic() < deadline:
            try:  # the checkpoint of update 10 is there: kill before update 20's
                if json.loads((backup / "state" / "state.json").read_text())["updates"] >= 10:
                    break
            except (OSError, ValueError, KeyError):
                pass
            time.sleep(0.02)
    finally:
        os.kill(first.pid, signal.SIGKILL)
        first.communicate()
    assert first.returncode == -signal.SIGKILL, "the first run should have been killed mid-training"
    assert not killed_dir.exists()
    checkpointed = json.loads((backup / "state" / "state.json").read_text())["updates"]
    assert checkpointed == 10

    second = _example_process(zygote, *flags, "--export-dir", str(killed_dir))
    out, err = second.communicate(timeout=300)
    assert second.returncode == 0, err[-3000:]
    assert f"resuming {backup} at update {checkpointed} (started " in out
    # Only the updates after the checkpoint are trained again (a deterministic restart from scratch
    # would reach the same final state, so this is what shows that the work was not redone).
    assert f"20 updates ({20 - checkpointed} in this run)" in out
    assert not backup.exists(), "the backup is deleted once training has ended"
    assert reference.wait(timeout=300) == 0, reference.communicate()[1][-3000:]

    # Same run: same counters and curve, and the same final policy (optimizer state and step count kept).
    got = json.loads((killed_dir / "metrics.json").read_text())
    want = json.loads((tmp_path / "reference" / "metrics.json").read_text())
    for key in (
        "updates",
        "episodes",
        "env_steps",
        "mean_return_100",
        "greedy_episode_return",
        "eval_return_mean",
        "eval_seed",
        "eval_update",
    ):
        assert got[key] == want[key], key
    assert got["updates"] == 20
    observations = tf.constant(np.random.default_rng(0).normal(size=(64, 4)), tf.float32)
    probabilities = [
        tf.saved_model.load(str(d)).signatures["serving_default"](observations)["probabilities"].numpy()
        for d in (killed_dir, tmp_path / "reference")
    ]
    np.testing.assert_allclose(probabilities[0], probabilities[1], rtol=1e-6, atol=1e-7)
    # The CSV log of the resumed run holds every update once, counted from 1 as printed, and no empty column.
    with open(killed_dir / "training_log.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(row["update"]) for row in rows] == list(range(1, 21))
    assert all(row[key] not in ("", "NA") for row in rows for key in row)


@pytest.mark.slow
def test_two_worker_processes_train_and_only_the_chief_exports(tmp_path, zygote):
    from kerasce.launch import tf_configs

    export_dir = tmp_path / "export"
    workers = [
        _example_process(
            zygote,
            "--strategy",
            "multiworker",
            "--max-updates",
            "3",
            "--export-dir",
            str(export_dir),
            env={"TF_CONFIG": config},
        )
        for config in tf_configs(2)
    ]
    outputs = [w.communicate(timeout=300) for w in workers]
    for worker, (out, err) in zip(workers, outputs):
        assert worker.returncode == 0, err[-3000:]
        assert "3 updates (3 in this run)" in out
    assert "wrote" in outputs[0][0] and "wrote" not in outputs[1][0]  # worker 0 is the chief
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export"]  # no backups or worker copies left
    serve = tf.saved_model.load(str(export_dir)).signatures["serving_default"]
    assert serve(tf.zeros((2, 4), tf.float32))["action"].shape == (2,)


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--num-envs", "0"], "`--num-envs` must be an integer >= 1. Received: --num-envs=0"),
        (["--max-updates", "0"], "`--max-updates` must be an integer >= 1. Received: --max-updates=0"),
        (["--max-seconds", "-5"], "`--max-seconds` must be a number > 0. Received: --max-seconds=-5"),
        (["--max-seconds", "0"], "`--max-seconds` must be a number > 0. Received: --max-seconds=0"),
        (["--seed", "-1"], "`--seed` must be an integer >= 0. Received: --seed=-1"),
        (["--target-return", "nan"], "`--target-return` must be a finite number. Received: --target-return=nan"),
        (["--strategy", "tpu"], "`--strategy` must be one of"),
        (["--set", "ent_coef"], "--set: expected KEY=VALUE with a Python literal VALUE"),
        (["--set", "gamma=0.9", "ent_coef=lots"], "got 'ent_coef=lots'"),
    ],
)
def test_bad_flags_exit_with_a_message(flags, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        load_example().parse_args(flags)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_help_and_flag_errors_answer_without_importing_tensorflow():
    """Mutation tried: moving `import tensorflow` back to the top of the example -> red."""
    probe = (
        f"import importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('example', {EXAMPLE!r})\n"
        f"module = importlib.util.module_from_spec(spec); spec.loader.exec_module(module)\n"
        f"module.parse_args(['--num-envs', '8', '--max-updates', '3'])\n"
        f"print(sorted(m for m in ('tensorflow', 'keras', 'gymnasium') if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True)
    assert result.stdout.strip() == "[]"

    start = time.monotonic()
    help_text = subprocess.run(
        [sys.executable, EXAMPLE, "--help"], capture_output=True, text=True, timeout=120, check=True
    ).stdout
    bad = subprocess.run(
        [sys.executable, EXAMPLE, "--max-seconds", "0"], capture_output=True, text=True, timeout=120, check=False
    )
    seconds = time.monotonic() - start
    assert "(default: 10)" in help_text and "MAX_SECONDS[env], else 120)" in help_text and "--fresh" in help_text
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert (
        bad.stderr.strip()
        .splitlines()[-1]
        .endswith("error: `--max-seconds` must be a number > 0. Received: --max-seconds=0")
    )
    assert seconds < 5, f"two runs took {seconds:.1f} s: TensorFlow was imported?"  # ~0.1 s each here


def killed_while_exporting(monkeypatch, flags):
    """Runs the example with `flags` until it exports, and kills it there: the backup stays, nothing is exported."""
    from kerasce.rl import ReinforceAgent

    def killed(*args, **kwargs):
        raise KeyboardInterrupt("killed while exporting")

    with monkeypatch.context() as patch:
        patch.setattr(ReinforceAgent, "export_policy", killed)
        with pytest.raises(KeyboardInterrupt):
            load_example().main(flags)


@pytest.mark.slow
def test_a_backup_made_with_other_flags_is_not_resumed(tmp_path, monkeypatch, capsys):
    """A backup is refused by a run with other flags, resumed (in one line) by the same flags, even with a
    larger --max-updates (a stopping flag may change), and discarded by --fresh.

    Mutation tried: comparing no flags in `kerasce.cli.runs.open_backup` (`differences = []`) -> red.
    """
    from kerasce.cli.runs import RunConfigMismatch

    export_dir, backup = tmp_path / "export", tmp_path / "export.backup"
    flags = ["--quiet", "--num-envs", "8", "--target-return", "1e9", "--export-dir", str(export_dir)]

    killed_while_exporting(monkeypatch, [*flags, "--max-updates", "10"])
    assert json.loads((backup / "state" / "state.json").read_text())["updates"] == 10
    state = {p.relative_to(backup): p.read_bytes() for p in (backup / "state").rglob("*") if p.is_file()}

    with pytest.raises(RunConfigMismatch) as mismatch:
        load_example().main([*flags, "--max-updates", "10", "--seed", "1", "--num-envs", "4"])
    assert (
        f"Received: {backup}, made with other flags (--num-envs 8 -> 4, --seed 0 -> 1); it is not "
        f"resumed. To resume it, run again with --num-envs 8 --seed 0; to start fresh, add --fresh"
    ) in str(mismatch.value)
    assert {
        p.relative_to(backup): p.read_bytes() for p in (backup / "state").rglob("*") if p.is_file()
    } == state and not export_dir.exists()

    # The same flags after the env's preset was edited: another run, refused as well.
    from kerasce.rl import presets

    with monkeypatch.context() as patch, pytest.raises(RunConfigMismatch, match=r"other settings \(ent_coef"):
        patch.setitem(presets.PRESETS, "CartPole-v1", {"ent_coef": 0.05})
        load_example().main([*flags, "--max-updates", "10"])

    capsys.readouterr()
    load_example().main([*flags, "--max-updates", "12"])
    out = capsys.readouterr().out
    resumes = [line for line in out.splitlines() if line.startswith("resuming")]
    assert len(resumes) == 1 and re.fullmatch(
        rf"resuming {re.escape(str(backup))} at update 10 \(started \d{{4}}-\d\d-\d\d [\d:]{{8}} UTC\)", resumes[0]
    ), resumes
    assert "12 updates (2 in this run)" in out
    assert (export_dir / "metrics.json").exists() and not backup.exists()

    killed_while_exporting(monkeypatch, [*flags, "--max-updates", "10"])
    capsys.readouterr()
    load_example().main([*flags, "--max-updates", "3", "--seed", "1", "--fresh"])
    out = capsys.readouterr().out
    assert "resuming" not in out and "3 updates (3 in this run)" in out


def test_an_unknown_env_leaves_no_directory_behind(tmp_path, monkeypatch):
    """A start that fails (a typo in --env) writes nothing: no backup, no export (mutation tried: building
    the agent after `open_backup`, as before -> red, `reinforce_cartpol_v1.backup/` left behind)."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match="unknown gymnasium env id 'CartPol-v1'"):
        load_example().main(["--env", "CartPol-v1", "--quiet"])
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_a_resumed_run_says_where_it_stands_and_a_reached_target_trains_no_more(tmp_path, monkeypatch, capsys):
    """A run killed after training to its target but before its export: the rerun says it resumes at that
    update and that the target is already reached, trains nothing and exports (mutation tried: no check of
    the restored row in `kerasce.cli.reinforce.resume` -> red). A failed start after the backup was opened
    (here: training fails) leaves no backup behind either (mutation tried: no `discard_unstarted` -> red)."""
    from kerasce.rl import ReinforceAgent

    export_dir, backup = tmp_path / "export", tmp_path / "export.backup"
    flags = ["--quiet", "--num-envs", "8", "--target-return", "1", "--export-dir", str(export_dir)]

    killed_while_exporting(monkeypatch, flags)
    updates = json.loads((backup / "state" / "state.json").read_text())["updates"]
    assert updates == 13  # 8 episodes per update: the 100-episode window is full after 13
    capsys.readouterr()
    load_example().main(flags)
    out = capsys.readouterr().out
    assert f"resuming {backup} at update 13 (started " in out
    assert "target already reached at update 13: no more training, exporting" in out
    assert "13 updates (0 in this run)" in out and (export_dir / "metrics.json").exists() and not backup.exists()

    def broken(*args, **kwargs):
        raise ValueError("training failed")

    with monkeypatch.context() as patch:
        patch.setattr(ReinforceAgent, "learn", broken)
        with pytest.raises(ValueError, match="training failed"):
            load_example().main([*flags, "--export-dir", str(tmp_path / "other")])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export"]
