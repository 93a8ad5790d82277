"""examples/reinforce_cartpole.py end to end: trains, and writes every promised file."""

import importlib.util
import json
import os

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

EXAMPLE = os.path.join(os.path.dirname(__file__), "..", "..", "examples", "reinforce_cartpole.py")


@pytest.mark.slow
def test_example_solves_cartpole_and_exports(tmp_path):
    spec = importlib.util.spec_from_file_location("reinforce_cartpole_example", EXAMPLE)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    export_dir = tmp_path / "reinforce_cartpole"
    metrics = example.main(["--export-dir", str(export_dir), "--quiet", "--max-seconds", "60"])

    saved = json.loads((export_dir / "metrics.json").read_text())
    assert saved == json.loads(json.dumps(metrics))
    for key in ("solved", "episodes", "env_steps", "train_seconds", "mean_return_100", "collect_steps_per_second"):
        assert key in saved
    assert saved["solved"] is True and saved["mean_return_100"] >= 475
    assert saved["target_return"] == 475  # CartPole-v1's reward_threshold by default
    with Image.open(export_dir / "learning_curve.png") as png:
        assert png.size[0] > 300
    with Image.open(export_dir / "greedy_episode.gif") as gif:
        assert gif.n_frames > 10
    serve = tf.saved_model.load(str(export_dir)).signatures["serving_default"]
    out = serve(tf.zeros((3, 4), tf.float32))
    assert out["action"].dtype == tf.int64 and out["action"].shape == (3,)
    np.testing.assert_allclose(out["probabilities"].numpy().sum(-1), 1.0, rtol=1e-6)
