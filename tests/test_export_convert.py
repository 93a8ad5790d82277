"""The agent's SavedModel deploys: its `serving_default` and `sample` signatures convert to TFLite and to ONNX
(tf2onnx, opset 17, run by onnxruntime) and give the SavedModel's numbers; masked actions are never chosen.

The ONNX conversion runs tf2onnx's command line, as docs/deploy.md shows it.
"""

import subprocess
import sys
import warnings

import gymnasium
import numpy as np
import pytest
import tensorflow as tf

import kerasce
from kerasce.export import export_saved_model
from kerasce.rl import ReinforceAgent
from kerasce.rl.networks import build_policy_network
from kerasce.rl.spaces import action_distribution

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
    run.input_types = {i.name: (i.type, i.shape[1]) for i in session.get_inputs()}  # the names and dtypes kept
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


def _space_export(path, space):
    """serving_default: ``action`` = the mode (env format) and ``params``; sample: a drawn env action."""
    dist = action_distribution(space)
    policy = build_policy_network(gymnasium.spaces.Box(-1, 1, (OBS_DIM,), np.float32), dist, seed=0)

    def serve(observations):
        params = policy(observations)
        return {"action": dist.mode(params), "params": params}

    def sample(observations):
        params = policy(observations)
        return {"action": dist.to_env(dist.sample(params)), "params": params}

    specs = [tf.TensorSpec((None, OBS_DIM), tf.float32, name="observations")]
    return export_saved_model(path, policy, serve, specs, extra_endpoints={"sample": (sample, specs)})


def _run_converted(fmt, path, signature, tmp_path):
    run = _tflite_runner(path, signature) if fmt == "tflite" else _onnx_runner(path, signature, tmp_path)
    return lambda observations: run(observations=observations)


@pytest.mark.parametrize("fmt", ["tflite", pytest.param("onnx", marks=pytest.mark.slow)])
@pytest.mark.parametrize("space_name", sorted(ACTION_SPACES))
def test_every_action_space_converts(space_name, fmt, tmp_path):
    """The mode and the sampler of each distribution convert: the same params (1e-6) and greedy action as
    the SavedModel, sampled actions inside the action space and drawn anew at every call.

    Mutations tried: `_argmax` as `keras.ops.argmax` -> red (TFLite: `BitwiseAnd` not supported; ONNX:
    an invalid `Bitcast` node); `_uniform` / `_normal` / `_categorical` through `keras.random` with a
    SeedGenerator -> red (stateless random ops: neither TFLite nor ONNX has them).
    """
    space = ACTION_SPACES[space_name]
    path = _space_export(tmp_path / "policy", space)
    saved = tf.saved_model.load(str(path))
    observations = _inputs(11, rows=32)[0]
    greedy = _run_converted(fmt, path, "serving_default", tmp_path)(observations)
    want = saved.signatures["serving_default"](observations=tf.constant(observations))
    np.testing.assert_allclose(greedy["params"], want["params"].numpy(), atol=1e-6)
    np.testing.assert_allclose(greedy["action"], want["action"].numpy(), atol=1e-6)
    sample = _run_converted(fmt, path, "sample", tmp_path)
    draws = [np.asarray(sample(observations)["action"]) for _ in range(5)]
    assert all(space.contains(a.astype(space.dtype)) for draw in draws for a in draw)
    assert any(not np.array_equal(draws[0], d) for d in draws[1:])
