"""``ProgressBar``: the fraction of learn's budget, the training mean and the last greedy evaluation, in
place on a terminal and as plain lines elsewhere.

Each claim was checked with a mutation of the code that must turn it red; the docstrings list them.
"""

import io
import re

import pytest

from kerasce.rl import EvalCallback, ProgressBar, ReinforceAgent


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def _fields(line):
    match = re.search(r"\] +(\d+)%  ([\d,]+)/([\d,]+) (env steps|updates|s) .* mean_return_100 ([\d.]+)", line)
    assert match, line
    percent, done, limit, unit, mean = match.groups()
    return int(percent), int(done.replace(",", "")), int(limit.replace(",", "")), unit, float(mean)


def test_plain_lines_toward_the_env_step_budget_with_the_mean_and_the_evaluation(scripted_vec_env):
    """Not a terminal: one line per update (interval 0), each the env steps done of ``total_timesteps``, the
    training mean of the logs, the last evaluation. Mutations tried: the fraction of updates when
    ``total_timesteps`` is set -> red; the evaluation left out -> red; a line without a newline -> red."""
    stream = io.StringIO()
    agent = ReinforceAgent((2,), 2, seed=0, num_envs=3)
    callbacks = [ProgressBar(interval=0.0, stream=stream), EvalCallback(lambda: _scripted(), episodes=3, eval_every=1)]
    agent.learn(scripted_vec_env([1, 2, 3]), total_timesteps=24, callbacks=callbacks)
    lines = stream.getvalue().splitlines()
    assert len(lines) == agent.updates == 4  # 6 kept steps per update of 3 episodes (lengths 1, 2, 3)
    for k, line in enumerate(lines, 1):
        assert _fields(line) == (
            round(100 * min(6 * k / 24, 1)),
            6 * k,
            24,
            "env steps",
            round(agent.training_log[k - 1]["mean_return_100"], 1),
        )
        assert line.endswith(f"eval {agent.training_log[k - 1]['eval_return_mean']:.1f}")


def _scripted():
    from scripted_envs import ScriptedEnv

    return ScriptedEnv(length=2)


def test_on_a_terminal_one_line_redrawn_toward_max_updates(scripted_vec_env):
    """A terminal: each update redraws the line (carriage return), a newline at the end. Mutation tried:
    writing ``\\n`` on a terminal too -> red."""
    stream = _Terminal()
    ReinforceAgent((2,), 2, seed=0).learn(
        scripted_vec_env([1, 2]), max_updates=3, callbacks=[ProgressBar(stream=stream)]
    )
    text = stream.getvalue()
    assert text.count("\r") == 3 and text.count("\n") == 1 and text.endswith("\n")
    assert [_fields(part)[:4] for part in text.rstrip("\n").split("\r")[1:]] == [
        (33, 1, 3, "updates"),
        (67, 2, 3, "updates"),
        (100, 3, 3, "updates"),
    ]


@pytest.mark.parametrize("kwargs", [{"width": 0}, {"interval": -1}])
def test_bad_arguments_are_refused(kwargs):
    with pytest.raises(ValueError, match="must be >="):
        ProgressBar(**kwargs)
