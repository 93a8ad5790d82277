"""The agent's SavedModel deploys: its `serving_default` and `sample` signatures convert to TFLite and to ONNX
(tf2onnx, opset 17, run by onnxruntime) and give the SavedModel's numbers; masked actions are never chosen.

The ONNX conversion runs tf2onnx's command line, as docs/deploy.md shows it.
"""

import subprocess
import sys
import warnings

import gymnasium
import keras
import numpy as np
import pytest
import tensorflow as tf

import kerasce
from kerasce.rl import ReinforceAgent
from kerasce.rl.batch import Batch

SIGNATURES = ["serving_default", "sample"]
OBS_DIM, NUM_ACTIONS, CALLS, ROWS = 4, 3, 300, 4


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    """A masked agent's export (inputs ``observations`` float32 [B, 4], ``action_mask`` int8 [B, 3])."""
    agent = ReinforceAgent((OBS_DIM,), NUM_ACTIONS, use_action_mask=True, seed=0)
    path = agent.export_policy(tmp_path_factory.mktemp("export") / "1")
    return agent, path


@pytest.fixture(scope="module")
def saved(export):
    return tf.saved_model.load(str(export[1]))


def _inputs(seed, rows=ROWS):
    rng = np.random.default_rng(seed)
    observations = (rng.normal(size=(rows, OBS_DIM)) * 2).astype(np.float32)
    mask = (rng.random((rows, NUM_ACTIONS)) < 0.6).astype(np.int8)
    mask[np.arange(rows), rng.integers(0, NUM_ACTIONS, rows)] = 1  # at least one valid action per row
    return observations, mask


def _tflite_runner(path, signature):
    """``run(**inputs) -> {output name: array}`` of ``signature`` converted to TFLite."""
    converter = tf.lite.TFLiteConverter.from_saved_model(str(path), signature_keys=[signature])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tf.lite.Interpreter's notice that it moves to ai_edge_litert
        interpreter = tf.lite.Interpreter(model_content=converter.convert())
    return interpreter.get_signature_runner(signature)


def _onnx_runner(path, signature, tmp_path):
    """``run(**inputs) -> {output name: array}`` of ``signature`` converted by tf2onnx's command line."""
    import onnxruntime

    out = tmp_path / f"{signature}.onnx"
    command = [sys.executable, "-m", "tf2onnx.convert", "--saved-model", str(path), "--signature_def", signature]
    subprocess.run([*command, "--opset", "17", "--output", str(out)], check=True, capture_output=True)
    session = onnxruntime.InferenceSession(str(out))
    names = [o.name for o in session.get_outputs()]
    run = lambda **inputs: dict(zip(names, session.run(names, inputs)))
    run.input_types = {i.name: (i.type, *i.shape[1:]) for i in session.get_inputs()}  # type: ignore[attr-defined]  # the names and dtypes kept
    return run


def _masked_runner(run):
    return lambda observations, mask: run(observations=observations, action_mask=mask)


@pytest.fixture(scope="module", params=["tflite", pytest.param("onnx", marks=pytest.mark.slow)])
def converted(request, export, tmp_path_factory):
    """``{signature: run(observations, mask) -> {"action", "probabilities"}}`` of one converted format."""
    path = export[1]
    if request.param == "tflite":
        return {s: _masked_runner(_tflite_runner(path, s)) for s in SIGNATURES}
    runners = {s: _onnx_runner(path, s, tmp_path_factory.mktemp("onnx")) for s in SIGNATURES}
    for run in runners.values():
        assert run.input_types == {
            "observations": ("tensor(float)", OBS_DIM),
            "action_mask": ("tensor(int8)", NUM_ACTIONS),
        }
    return {s: _masked_runner(run) for s, run in runners.items()}


@pytest.mark.parametrize("signature", SIGNATURES)
def test_converted_probabilities_match_the_saved_model(converted, saved, signature):
    """Probabilities within 1e-6 of the SavedModel's; the greedy action is the same, and valid."""
    for seed in range(5):
        observations, mask = _inputs(seed, rows=16)
        want = saved.signatures[signature](observations=tf.constant(observations), action_mask=tf.constant(mask))
        got = converted[signature](observations, mask)
        np.testing.assert_allclose(got["probabilities"], want["probabilities"].numpy(), atol=1e-6)
        assert got["action"].dtype == np.int64 and got["action"].shape == (16,)
        if signature == "serving_default":
            np.testing.assert_array_equal(got["action"], want["action"].numpy())
        assert mask[np.arange(16), got["action"]].all()


def test_converted_sample_never_chooses_a_masked_action_and_draws_from_the_probabilities(converted):
    """300 calls of the converted `sample`: every action valid, and the frequencies of each row's actions
    within 5 standard errors of its probabilities (a frozen or wrong random draw would fail).

    Mutations tried (in `ReinforceAgent.export_policy`): `sample` without the mask -> red; `sample` as the
    argmax -> red.
    """
    observations, mask = _inputs(7)
    counts = np.zeros((ROWS, NUM_ACTIONS))
    for _ in range(CALLS):
        out = converted["sample"](observations, mask)
        assert mask[np.arange(ROWS), out["action"]].all()
        counts[np.arange(ROWS), out["action"]] += 1
    probabilities = converted["serving_default"](observations, mask)["probabilities"].astype(np.float64)
    tolerance = 5 * np.sqrt(probabilities * (1 - probabilities) / CALLS) + 1e-9
    assert (np.abs(counts / CALLS - probabilities) <= tolerance).all(), (counts / CALLS, probabilities)
    assert (counts > 0).sum() > ROWS  # some row drew more than one action


def test_serve_is_serving_default_and_the_keras_model_returns_logits(export, saved, tmp_path):
    """docs/deploy.md's claims: the third signature `serve` gives what `serving_default` gives; the Keras
    file of the agent returns logits (``-inf`` where masked), whose softmax is the SavedModel's
    `probabilities`; the export sits in a ``<base>/<version>/`` directory as TF Serving expects.

    Mutation tried: `serving_default`'s probabilities from the unmasked logits -> red.
    """
    agent, path = export
    observations, mask = _inputs(3, rows=8)
    want = saved.signatures["serving_default"](observations=tf.constant(observations), action_mask=tf.constant(mask))
    served = saved.signatures["serve"](observations=tf.constant(observations), action_mask=tf.constant(mask))
    for key in ["action", "probabilities"]:
        np.testing.assert_array_equal(served[key].numpy(), want[key].numpy())
    agent.save(tmp_path / "agent.keras")
    logits = np.asarray(kerasce.load_model(tmp_path / "agent.keras")((observations, mask)), np.float64)
    assert np.isneginf(logits[mask == 0]).all() and np.isfinite(logits[mask == 1]).all()
    z = np.where(mask == 1, logits, -np.inf)
    softmax = np.exp(z - z.max(-1, keepdims=True))
    np.testing.assert_allclose(softmax / softmax.sum(-1, keepdims=True), want["probabilities"].numpy(), atol=1e-6)
    assert path.name == "1" and (path / "saved_model.pb").is_file()


# --------------------------------------------------------------------------------------------------
# The distributions of every action space, exported from kerasce.rl.spaces' pieces, convert too
# --------------------------------------------------------------------------------------------------

ACTION_SPACES = {
    "discrete": gymnasium.spaces.Discrete(3, start=1),
    "multibinary": gymnasium.spaces.MultiBinary(4),
    "multidiscrete": gymnasium.spaces.MultiDiscrete([3, 2]),
    "box": gymnasium.spaces.Box(-2.0, 1.0, (2,), np.float32),
}


def _trained_agent(space, observation_space=None, **options):
    """An agent for ``space`` after three updates on random steps (trained weights, not the initial ones)."""
    observation_space = observation_space or gymnasium.spaces.Box(-1, 1, (OBS_DIM,))
    env = gymnasium.vector.SyncVectorEnv([lambda: _SpacesEnv(observation_space, space)])  # no env checker
    agent = ReinforceAgent.from_env(env, seed=0, **options)
    rng = np.random.default_rng(0)
    for _ in range(3):
        x = rng.normal(size=(64, *agent.observation_shape)).astype(np.float32)
        params = keras.ops.convert_to_numpy(agent.policy(x))
        actions = agent.distribution.np_sample(params, rng)
        masks = np.ones((64, agent.num_actions), bool) if agent.use_action_mask else None
        agent.update(Batch(x, actions, rng.normal(size=64).astype(np.float32), masks))
    return agent


class _SpacesEnv(gymnasium.Env):
    """An env of the given spaces (from_env reads them; never stepped)."""

    def __init__(self, observation_space, action_space):
        self.observation_space, self.action_space = observation_space, action_space


def _run_converted(fmt, path, signature, tmp_path):
    run = _tflite_runner(path, signature) if fmt == "tflite" else _onnx_runner(path, signature, tmp_path)
    return lambda observations: run(observations=observations)


@pytest.mark.parametrize("fmt", ["tflite", pytest.param("onnx", marks=pytest.mark.slow)])
@pytest.mark.parametrize("space_name", sorted(ACTION_SPACES))
def test_every_action_space_converts(space_name, fmt, tmp_path):
    """A trained agent's export per action space converts: the same distribution parameters (1e-6) and greedy
    action as the SavedModel, the greedy action in the env's format inside the space, sampled actions inside
    the action space and drawn anew at every call.

    Mutations tried: `_argmax` as `keras.ops.argmax` -> red (TFLite: `BitwiseAnd` not supported; ONNX:
    an invalid `Bitcast` node); `_uniform` / `_normal` / `_categorical` through `keras.random` with a
    SeedGenerator -> red (stateless random ops: neither TFLite nor ONNX has them); the export's ``action`` as
    the raw mode (no `to_env`: no ``start``, no clipping) -> red (outside the space).
    """
    space = ACTION_SPACES[space_name]
    path = _trained_agent(space).export_policy(tmp_path / "policy")
    saved = tf.saved_model.load(str(path))
    observations = _inputs(11, rows=32)[0] * 3  # beyond the bounds for the Box's mean too
    greedy = _run_converted(fmt, path, "serving_default", tmp_path)(observations)
    want = saved.signatures["serving_default"](observations=tf.constant(observations))
    assert set(greedy) == set(want)
    for name in want:
        np.testing.assert_allclose(greedy[name], want[name].numpy(), atol=1e-6)
    assert all(space.contains(a.astype(space.dtype)) for a in want["action"].numpy())
    sample = _run_converted(fmt, path, "sample", tmp_path)
    draws = [np.asarray(sample(observations)["action"]) for _ in range(5)]
    assert all(space.contains(a.astype(space.dtype)) for draw in draws for a in draw)
    assert any(not np.array_equal(draws[0], d) for d in draws[1:])


DICT_SPACE = gymnasium.spaces.Dict(
    {
        "key": gymnasium.spaces.Discrete(3),
        "noise": gymnasium.spaces.Box(-1.0, 1.0, (2,), np.float32),
        "action_mask": gymnasium.spaces.MultiBinary(3),
    }
)


@pytest.mark.parametrize("fmt", ["tflite", pytest.param("onnx", marks=pytest.mark.slow)])
def test_dict_observation_export_takes_one_input_per_key_and_the_mask(fmt, tmp_path):
    """A ``Dict`` observation space's export: inputs ``key`` int64 [B], ``noise`` float32 [B, 2] (named by the
    key; ``action_mask`` is the mask input, int8 [B, 3]); converted, the same probabilities and greedy action,
    and masked actions are never drawn. Mutation tried: the export without the encoder (the flat body's input
    ``observations``) -> red (no named inputs)."""
    path = _trained_agent(gymnasium.spaces.Discrete(3), DICT_SPACE).export_policy(tmp_path / "policy")
    saved = tf.saved_model.load(str(path)).signatures["serving_default"]
    specs = saved.structured_input_signature[1]
    assert {k: (v.dtype, tuple(v.shape)) for k, v in specs.items()} == {
        "key": (tf.int64, (None,)),
        "noise": (tf.float32, (None, 2)),
        "action_mask": (tf.int8, (None, 3)),
    }
    rng = np.random.default_rng(3)
    inputs = {
        "key": rng.integers(0, 3, 64).astype(np.int64),
        "noise": rng.uniform(-1, 1, (64, 2)).astype(np.float32),
        "action_mask": (rng.random((64, 3)) < 0.5).astype(np.int8),
    }
    inputs["action_mask"][np.arange(64), inputs["key"]] = 1  # type: ignore[index]
    want = saved(**{k: tf.constant(v) for k, v in inputs.items()})
    runner = _tflite_runner if fmt == "tflite" else lambda *a: _onnx_runner(*a, tmp_path)  # type: ignore[call-arg]
    serving = runner(path, "serving_default")
    if fmt == "onnx":
        assert serving.input_types == {
            "key": ("tensor(int64)",),
            "noise": ("tensor(float)", 2),
            "action_mask": ("tensor(int8)", 3),
        }
    got = serving(**inputs)
    np.testing.assert_allclose(got["probabilities"], want["probabilities"].numpy(), atol=1e-6)
    np.testing.assert_array_equal(got["action"], want["action"].numpy())
    sample = runner(path, "sample")
    for _ in range(20):
        drawn = np.asarray(sample(**inputs)["action"])
        assert inputs["action_mask"][np.arange(64), drawn].all()  # type: ignore[index]
