"""The action distributions of `kerasce.rl.spaces` against float64 NumPy / SciPy references.

Each claim was checked with a mutation of the code that must turn it red; the docstrings list them.
"""

import gymnasium
import keras
import numpy as np
import pytest
import tensorflow as tf
from scipy import special, stats
from scripted_envs import CopyShiftedBitsEnv, DictKeyEnv, MatchDialsEnv, ReachTargetEnv

from kerasce.losses import gaussian_entropy, gaussian_nll
from kerasce.rl.envs import action_mask_source, as_vector_env, observation_action_mask
from kerasce.rl.networks import build_encoder, build_policy_network, flat_body
from kerasce.rl.spaces import (
    Bernoulli,
    Categorical,
    DiagGaussian,
    MultiCategorical,
    action_distribution,
    flat_observation_size,
    flatten_observations,
    observation_entries,
)

B = 64
NVEC = [3, 2, 4]
LOW, HIGH = np.array([-2.0, 0.0, -1.0], np.float32), np.array([2.0, 1.0, 3.0], np.float32)


def _params(dist, scale=1.5, seed=0):
    return (np.random.default_rng(seed).normal(size=(B, dist.param_size)) * scale).astype(np.float32)


def _np(x):
    return np.asarray(keras.ops.convert_to_numpy(x), np.float64)


def _blocks(params):
    edges = np.cumsum([0, *NVEC])
    return [params[:, edges[k] : edges[k + 1]] for k in range(len(NVEC))]


# float64 references written from the docstrings' formulas, with SciPy's distributions.
def _ref_log_prob(dist, params, raw):
    p = params.astype(np.float64)
    if isinstance(dist, Categorical):
        return np.take_along_axis(special.log_softmax(p, -1), raw[:, None], -1)[:, 0]
    if isinstance(dist, Bernoulli):
        return stats.bernoulli.logpmf(raw, special.expit(p)).sum(-1)
    if isinstance(dist, MultiCategorical):
        return sum(special.log_softmax(z, -1)[np.arange(B), raw[:, k]] for k, z in enumerate(_blocks(p)))
    d = dist.action_shape[0]
    u = raw.astype(np.float64)
    gaussian = stats.norm.logpdf(u, p[:, :d], np.exp(p[:, d:])).sum(-1)
    if dist.bounds == "clip":
        return gaussian
    # change of variables a = low + (tanh(u) + 1)(high - low)/2: da/du = (high - low) / (2 cosh²u)
    return gaussian - (np.log((HIGH - LOW) / 2) - 2 * np.log(np.cosh(u))).sum(-1)


def _ref_entropy(dist, params):
    p = params.astype(np.float64)
    if isinstance(dist, Categorical):
        return stats.entropy(special.softmax(p, -1), axis=-1)
    if isinstance(dist, Bernoulli):
        return stats.bernoulli.entropy(special.expit(p)).sum(-1)
    if isinstance(dist, MultiCategorical):
        return sum(stats.entropy(special.softmax(z, -1), axis=-1) for z in _blocks(p))
    d = dist.action_shape[0]
    return stats.norm.entropy(scale=np.exp(p[:, d:])).sum(-1)


def _ref_mode(dist, params):
    p = params.astype(np.float64)
    if isinstance(dist, Categorical):
        return p.argmax(-1) + dist.start
    if isinstance(dist, Bernoulli):
        return (special.expit(p) > 0.5).astype(int)
    if isinstance(dist, MultiCategorical):
        return np.stack([z.argmax(-1) for z in _blocks(p)], -1) + dist.start
    mean = p[:, : dist.action_shape[0]]
    return np.clip(mean, LOW, HIGH) if dist.bounds == "clip" else LOW + (np.tanh(mean) + 1) * (HIGH - LOW) / 2


DISTRIBUTIONS = {
    "categorical": lambda: action_distribution(gymnasium.spaces.Discrete(5, start=2)),
    "bernoulli": lambda: action_distribution(gymnasium.spaces.MultiBinary(6)),
    "multicategorical": lambda: action_distribution(gymnasium.spaces.MultiDiscrete(NVEC, start=[0, 1, 0])),
    "gaussian-clip": lambda: action_distribution(gymnasium.spaces.Box(LOW, HIGH, dtype=np.float32)),
    "gaussian-tanh": lambda: action_distribution(gymnasium.spaces.Box(LOW, HIGH, dtype=np.float32), bounds="tanh"),
}


@pytest.fixture(params=sorted(DISTRIBUTIONS))
def dist(request):
    return DISTRIBUTIONS[request.param]()


def test_action_distribution_per_space():
    assert isinstance(DISTRIBUTIONS["categorical"](), Categorical)
    assert isinstance(DISTRIBUTIONS["bernoulli"](), Bernoulli)
    assert isinstance(DISTRIBUTIONS["multicategorical"](), MultiCategorical)
    gaussian = DISTRIBUTIONS["gaussian-clip"]()
    assert isinstance(gaussian, DiagGaussian) and gaussian.bounds == "clip" and gaussian.param_size == 6


@pytest.mark.parametrize(
    "space",
    [gymnasium.spaces.Text(5), gymnasium.spaces.Box(0, 3, (2,), np.int64), gymnasium.spaces.MultiBinary([2, 2])],
)
def test_unsupported_action_space_names_itself_and_the_supported_ones(space):
    with pytest.raises(ValueError, match=r"`action_space` must be one of .*Discrete.*MultiBinary.*Received") as info:
        action_distribution(space)
    assert type(space).__name__ in str(info.value)


def test_log_prob_matches_scipy(dist):
    """log π(a|s) of sampled actions = the SciPy log-pmf / log-pdf (with the tanh change of variables).

    Mutations tried: `gaussian_nll` without `+ _HALF_LOG_2PI` -> red (gaussian-*); `gaussian_nll` with
    `keras.ops.mean` instead of `sum` -> red; `Bernoulli.neg_log_prob` without `* K` (the loss's mean
    over bits) -> red; `DiagGaussian` tanh term dropped -> red (gaussian-tanh); the tanh term with
    `+ u` instead of `- u` -> red; `log_half_range` left out -> red (gaussian-tanh).
    """
    params = _params(dist)
    raw = dist.np_sample(params, np.random.default_rng(1))
    np.testing.assert_allclose(_np(dist.log_prob(params, raw)), _ref_log_prob(dist, params, raw), rtol=2e-5, atol=1e-4)
    np.testing.assert_allclose(_np(dist.neg_log_prob(params, raw)), -_ref_log_prob(dist, params, raw), atol=1e-4)


def test_entropy_matches_scipy(dist):
    """Mutations tried: `gaussian_entropy` without the ½ -> red; Bernoulli entropy `softplus(z) + z σ(z)`
    -> red; `MultiCategorical.entropy` of the first block only -> red."""
    params = _params(dist)
    np.testing.assert_allclose(_np(dist.entropy(params)), _ref_entropy(dist, params), rtol=1e-5, atol=1e-5)


def test_mode_is_the_most_likely_action_in_env_format(dist):
    """`mode` (keras.ops) and `np_mode` (NumPy) give the greedy action as the env takes it.

    Mutations tried: `Categorical.to_env` without `+ start` -> red; `DiagGaussian.to_env` tanh without the
    rescale -> red; `Bernoulli.raw_mode` `params < 0` -> red.
    """
    params = _params(dist)
    np.testing.assert_allclose(_np(dist.mode(params)), _ref_mode(dist, params), atol=1e-5)
    np.testing.assert_allclose(dist.np_mode(params).astype(np.float64), _ref_mode(dist, params), atol=1e-5)


def test_env_actions_are_in_the_action_space(dist):
    space = {
        Categorical: lambda: gymnasium.spaces.Discrete(5, start=2),
        Bernoulli: lambda: gymnasium.spaces.MultiBinary(6),
        MultiCategorical: lambda: gymnasium.spaces.MultiDiscrete(NVEC, start=[0, 1, 0]),
        DiagGaussian: lambda: gymnasium.spaces.Box(LOW, HIGH, dtype=np.float32),
    }[type(dist)]()
    params = _params(dist, scale=4.0)
    for actions in [dist.np_to_env(dist.np_sample(params, np.random.default_rng(2))), dist.np_mode(params)]:
        assert all(space.contains(a) for a in actions)


@pytest.mark.parametrize("u", [-40.0, -8.0, 0.3, 8.0, 40.0])
def test_tanh_correction_is_finite_and_exact_for_large_u(u):
    """``log(1 - tanh²u) = 2(log 2 - u - softplus(-2u))``: the naive form is -inf for |u| > ~9 in float32;
    the stable one matches the float64 closed form ``2 log 2 - 2|u| - 2 log(1 + e^{-2|u|})``."""
    dist = DiagGaussian([-1.0], [1.0], bounds="tanh")
    params = np.zeros((1, 2), np.float32)
    raw = np.array([[u]], np.float32)
    log_1m_tanh2 = 2 * np.log(2) - 2 * abs(u) - 2 * np.log1p(np.exp(-2 * abs(u)))
    want = stats.norm.logpdf(u) - log_1m_tanh2
    got = _np(dist.log_prob(params, raw))[0]
    assert np.isfinite(got)
    np.testing.assert_allclose(got, want, rtol=1e-5)


@pytest.mark.parametrize("bounds", ["clip", "tanh"])
def test_tanh_density_integrates_to_one_over_the_bounds(bounds):
    """exp(log π(a)) over the env's interval [low, high] integrates to 1 for tanh (a density of the env
    action); for clip it is the density of the unclipped u (integrates to 1 over the real line).

    Mutations tried: the tanh correction dropped -> red; `log_half_range` dropped -> red.
    """
    low, high = -0.5, 3.0
    dist = DiagGaussian([low], [high], bounds=bounds)
    mean, log_std = 0.4, np.log(0.8)
    if bounds == "tanh":
        a = np.linspace(low, high, 200_001)[1:-1]
        u = np.arctanh(2 * (a - low) / (high - low) - 1)
        x = a
    else:
        x = u = np.linspace(-8.0, 8.0, 200_001)
    params = np.tile(np.array([[mean, log_std]], np.float32), (u.size, 1))
    density = np.exp(_np(dist.log_prob(params, u[:, None].astype(np.float32))))
    np.testing.assert_allclose(np.trapezoid(density, x), 1.0, atol=2e-3)


def _sgd_update(dist, observations, raw, returns, learning_rate=0.1):
    """One SGD step of a linear policy ``params = x W + b`` on ``mean_b G_b (−log π(a_b|s_b))``."""
    dims = observations.shape[1]
    kernel = keras.Variable(np.random.default_rng(5).normal(size=(dims, dist.param_size)).astype(np.float32) * 0.5)
    bias = keras.Variable(np.random.default_rng(6).normal(size=dist.param_size).astype(np.float32) * 0.5)
    start = [kernel.numpy().astype(np.float64), bias.numpy().astype(np.float64)]
    with tf.GradientTape() as tape:
        params = keras.ops.matmul(observations, kernel) + bias
        loss = keras.ops.mean(dist.policy_gradient_loss(params, raw, returns))
    keras.optimizers.SGD(learning_rate).apply_gradients(zip(tape.gradient(loss, [kernel, bias]), [kernel, bias]))
    return start, [kernel.numpy(), bias.numpy()]


def _ref_d_params(dist, params, raw):
    """d(−log π)/d params per example, closed form."""
    if isinstance(dist, Categorical):
        return special.softmax(params, -1) - np.eye(dist.param_size)[raw]
    if isinstance(dist, Bernoulli):
        return special.expit(params) - raw
    if isinstance(dist, MultiCategorical):
        return np.concatenate(
            [special.softmax(z, -1) - np.eye(n)[raw[:, k]] for k, (n, z) in enumerate(zip(NVEC, _blocks(params)))], -1
        )
    d = dist.action_shape[0]
    mean, var = params[:, :d], np.exp(2 * params[:, d:])
    # d/dμ = (μ - u)/σ², d/dlog σ = 1 - (u - μ)²/σ²; the tanh term depends on u only (no gradient)
    return np.concatenate([(mean - raw) / var, 1 - (raw - mean) ** 2 / var], -1)


def test_policy_gradient_of_one_update_equals_the_closed_form(dist):
    """REINFORCE: one SGD step on mean_b[G_b · (−log π(a_b|s_b))] moves a linear policy by
    −lr xᵀ (G ⊙ d(−log π)/d params)/B, the closed-form gradient (softmax − one-hot, σ − a, Gaussian score).

    Mutations tried: the returns left out (`return nll`) -> red; `Bernoulli` with the mean over
    bits (no `* K`) -> red; `MultiCategorical.neg_log_prob` of the first block only -> red;
    `gaussian_nll` with `exp(log_std)` instead of `exp(-log_std)` -> red.
    """
    rng = np.random.default_rng(4)
    observations = rng.normal(size=(B, 3)).astype(np.float32)
    returns = rng.normal(size=B).astype(np.float32) * 2.0
    kernel0 = np.random.default_rng(5).normal(size=(3, dist.param_size)).astype(np.float32) * 0.5
    bias0 = np.random.default_rng(6).normal(size=dist.param_size).astype(np.float32) * 0.5
    raw = dist.np_sample(observations @ kernel0 + bias0, rng)
    (kernel, bias), (new_kernel, new_bias) = _sgd_update(dist, observations, raw, returns)
    x = observations.astype(np.float64)
    d_params = returns[:, None] * _ref_d_params(dist, x @ kernel + bias, raw) / B
    np.testing.assert_allclose(new_kernel, kernel - 0.1 * x.T @ d_params, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(new_bias, bias - 0.1 * d_params.sum(0), rtol=1e-4, atol=1e-5)


def test_policy_gradient_loss_rejects_returns_of_another_shape():
    dist = DISTRIBUTIONS["bernoulli"]()
    with pytest.raises(ValueError, match=r"`returns` must have shape \[B\]"):
        dist.policy_gradient_loss(_params(dist), np.zeros((B, 6)), np.zeros((B, 1)))


def _draws(dist, params, n, sampler):
    rows = np.repeat(params, n, axis=0)
    if sampler == "numpy":
        return dist.np_sample(rows, np.random.default_rng(3))
    seed = 3 if sampler == "keras" else None  # None: TensorFlow's stateful random ops, in a traced function
    draw = tf.function(lambda p: dist.sample(p, seed=seed))
    return np.asarray(draw(tf.constant(rows)))


@pytest.mark.parametrize("sampler", ["numpy", "keras", "stateful"])
def test_sample_frequencies_match_the_probabilities(dist, sampler):
    """Empirical frequencies (discrete) / mean and std (Gaussian) of 20,000 draws from one row of params,
    within 5 standard errors.

    Mutations tried: `Bernoulli.np_sample` with `>` instead of `<` -> red; `DiagGaussian.np_sample` with
    `exp(params[:, d:] / 2)` -> red; `DiagGaussian.sample` without `exp` -> red; MultiCategorical's
    NumPy sampler using block 0's logits for every block -> red; its keras sampler with one int seed for
    every dimension (correlated draws) -> red (the joint frequencies).
    """
    n = 20_000
    params = _params(dist, scale=1.0)[:1]
    draws = _draws(dist, params, n, sampler)
    p = params[0].astype(np.float64)
    if isinstance(dist, DiagGaussian):
        d = dist.action_shape[0]
        mean, std = p[:d], np.exp(p[d:])
        assert (np.abs(draws.mean(0) - mean) <= 5 * std / np.sqrt(n)).all(), (draws.mean(0), mean)
        assert (np.abs(draws.std(0) - std) <= 5 * std / np.sqrt(2 * n)).all(), (draws.std(0), std)
        return
    if isinstance(dist, Categorical):
        columns = [(draws, special.softmax(p))]
    elif isinstance(dist, Bernoulli):
        columns = [(draws[:, k], np.array([1 - special.expit(p[k]), special.expit(p[k])])) for k in range(6)]
    else:
        blocks = [special.softmax(z[0]) for z in _blocks(params.astype(np.float64))]
        columns = [(draws[:, k], probs) for k, probs in enumerate(blocks)]
        # the dimensions are independent: the joint of the first two is the product of their marginals
        columns.append((draws[:, 0] * NVEC[1] + draws[:, 1], np.outer(blocks[0], blocks[1]).reshape(-1)))
    for values, probs in columns:
        freq = np.bincount(values, minlength=probs.size) / n
        tolerance = 5 * np.sqrt(probs * (1 - probs) / n) + 1e-12
        assert (np.abs(freq - probs) <= tolerance).all(), (freq, probs)


@pytest.mark.parametrize("name", ["categorical", "multicategorical"])
def test_masked_actions_are_never_chosen(name):
    """Masks (``[B, P]``, the params' layout): never sampled, never greedy, log-probabilities and entropies
    over the valid actions only.

    Mutation tried: `MultiCategorical.np_sample` ignoring the mask -> red.
    """
    dist = DISTRIBUTIONS[name]()
    rng = np.random.default_rng(7)
    params = _params(dist, scale=3.0)
    mask = rng.random(params.shape) < 0.5
    for block in _blocks(mask) if name == "multicategorical" else [mask]:
        block[np.arange(B), rng.integers(0, block.shape[1], B)] = True
    env_start = np.asarray(dist.start)  # type: ignore[attr-defined]
    flat = np.cumsum([0, *NVEC])[:-1] if name == "multicategorical" else 0
    for _ in range(20):
        index = dist.np_sample(params, rng, mask) + flat
        assert np.take_along_axis(mask, index.reshape(B, -1), -1).all()
    greedy = dist.np_mode(params, mask) - env_start + flat
    assert np.take_along_axis(mask, greedy.reshape(B, -1), -1).all()
    masked = np.where(mask, params, -np.inf)
    np.testing.assert_allclose(_np(dist.entropy(dist.mask_params(params, mask))), _ref_entropy(dist, masked), atol=1e-5)


def test_masks_are_refused_where_the_space_has_none():
    for name in ["bernoulli", "gaussian-clip"]:
        dist = DISTRIBUTIONS[name]()
        with pytest.raises(ValueError, match="`action_mask` must be None"):
            dist.np_sample(_params(dist), np.random.default_rng(0), np.ones((B, dist.param_size), bool))


def test_gaussian_loss_functions_match_scipy():
    """`kerasce.losses.gaussian_nll` / `gaussian_entropy` with a ``[D]`` log-std broadcast over the batch."""
    rng = np.random.default_rng(8)
    a, mean = rng.normal(size=(B, 3)), rng.normal(size=(B, 3))
    log_std = rng.normal(size=3) * 0.5
    np.testing.assert_allclose(
        _np(gaussian_nll(a, mean.astype(np.float32), log_std)),
        -stats.norm.logpdf(a, mean, np.exp(log_std)).sum(-1),
        rtol=1e-5,
    )
    np.testing.assert_allclose(
        _np(gaussian_entropy(log_std)), stats.norm.entropy(scale=np.exp(log_std)).sum(), rtol=1e-6
    )


def test_tanh_needs_finite_bounds():
    with pytest.raises(ValueError, match="`bounds` must be 'clip' for a Box with infinite bounds"):
        action_distribution(gymnasium.spaces.Box(-np.inf, np.inf, (2,), np.float32), bounds="tanh")
    with pytest.raises(ValueError, match="`bounds` must be one of"):
        action_distribution(gymnasium.spaces.Box(-1, 1, (2,), np.float32), bounds="squash")


# --------------------------------------------------------------------------------------------------
# Observations
# --------------------------------------------------------------------------------------------------

DICT_SPACE = gymnasium.spaces.Dict(
    {
        "position": gymnasium.spaces.Box(-1.0, 1.0, (2, 2), np.float32),
        "room": gymnasium.spaces.Discrete(3, start=1),
        "action_mask": gymnasium.spaces.MultiBinary(4),
        "pair": gymnasium.spaces.Tuple([gymnasium.spaces.Discrete(2), gymnasium.spaces.Box(0.0, 1.0, (1,))]),
    }
)


def test_observation_entries_name_dict_keys_and_leave_out_the_action_mask():
    names = [name for name, _, _ in observation_entries(DICT_SPACE)]
    assert names == ["pair.0", "pair.1", "position", "room"]  # gymnasium sorts Dict keys
    assert observation_entries(gymnasium.spaces.Box(0, 1, (3,)))[0][0] == "observations"
    assert flat_observation_size(DICT_SPACE) == 2 + 1 + 4 + 3


def test_flatten_observations_is_one_hot_and_flattened_in_entry_order():
    batch = {
        "position": np.arange(8, dtype=np.float32).reshape(2, 2, 2),
        "room": np.array([1, 3]),
        "action_mask": np.ones((2, 4), np.int8),
        "pair": (np.array([1, 0]), np.array([[0.5], [0.25]], np.float32)),
    }
    want = np.array(
        [
            [0, 1, 0.5, 0, 1, 2, 3, 1, 0, 0],
            [1, 0, 0.25, 4, 5, 6, 7, 0, 0, 1],
        ],
        np.float32,
    )
    got = flatten_observations(DICT_SPACE, batch)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize(
    "space, where",
    [
        (gymnasium.spaces.Text(4), ""),
        (
            gymnasium.spaces.Dict({"image": gymnasium.spaces.Box(0, 1, (2,)), "mission": gymnasium.spaces.Text(4)}),
            "'mission'",
        ),
    ],
)
def test_unsupported_observation_space_names_itself(space, where):
    with pytest.raises(
        ValueError, match=r"`observation_space` must be one of .*Received: observation_space=.*Text"
    ) as info:
        observation_entries(space)
    assert where in str(info.value)


def _dict_batch(n=5, seed=0):
    space = gymnasium.vector.utils.batch_space(DICT_SPACE, n)
    space.seed(seed)
    return space.sample()


def _named_inputs(batch):
    """The vector env's batch as the encoder's named inputs, indexed by hand from the entry paths."""
    named = {}
    for name, path, _ in observation_entries(DICT_SPACE):
        x = batch
        for key in path:
            x = x[key]
        named[name] = x
    return named


def test_encoder_takes_one_named_input_per_entry_and_equals_the_numpy_flattening():
    """The Keras encoder (what the network runs) and `flatten_observations` (what the NumPy sampler runs)
    agree; the action mask is no input.

    Mutation tried: `OneHot.call` without `- self.start` -> red.
    """
    encoder = build_encoder(DICT_SPACE)
    assert sorted(encoder.input) == ["pair.0", "pair.1", "position", "room"]
    batch = _dict_batch()
    np.testing.assert_array_equal(_np(encoder(_named_inputs(batch))), flatten_observations(DICT_SPACE, batch))


@pytest.mark.parametrize(
    "name, state_dependent_std", [(name, False) for name in sorted(DISTRIBUTIONS)] + [("gaussian-tanh", True)]
)
def test_policy_network_outputs_the_distributions_params(name, state_dependent_std, tmp_path):
    """``[B, P]`` params; a Gaussian's log σ starts at `log_std_init`, the same for every state unless
    state-dependent (then its own trainable kernel); the model saves to ``.keras`` and loads back."""
    space = gymnasium.spaces.Box(LOW, HIGH, dtype=np.float32)
    options = {"state_dependent_std": state_dependent_std, "log_std_init": -0.7} if "gaussian" in name else {}
    dist = action_distribution(space, **options) if options else DISTRIBUTIONS[name]()
    policy = build_policy_network(DICT_SPACE, dist, hidden_units=(8,), seed=0)
    batch = _dict_batch()
    inputs = _named_inputs(batch)
    params = _np(policy(inputs))
    assert params.shape == (5, dist.param_size)
    if options:
        d = dist.action_shape[0]
        if state_dependent_std:
            assert np.ptp(params[:, d:], axis=0).max() > 0  # depends on the state (Glorot kernel)
            np.testing.assert_allclose(policy.get_layer("body").layers[-1].bias.numpy(), [0] * d + [-0.7] * d)
        else:
            np.testing.assert_allclose(params[:, d:], -0.7, rtol=1e-6)
    # what collection runs: the flat body on NumPy-flattened observations, the same params
    flat = flatten_observations(DICT_SPACE, batch)
    np.testing.assert_allclose(_np(flat_body(policy)(flat)), params, rtol=1e-6, atol=1e-6)
    policy.save(tmp_path / "policy.keras")
    np.testing.assert_allclose(_np(keras.models.load_model(tmp_path / "policy.keras")(inputs)), params, rtol=1e-6)


def test_state_independent_log_std_is_one_trainable_vector():
    dist = action_distribution(gymnasium.spaces.Box(LOW, HIGH, dtype=np.float32))
    policy = build_policy_network(gymnasium.spaces.Box(-1, 1, (4,), np.float32), dist, hidden_units=(), seed=0)
    log_std = policy.get_layer("log_std").log_std
    assert log_std.trainable and tuple(log_std.shape) == (3,)
    x = np.random.default_rng(0).normal(size=(4, 4)).astype(np.float32)
    with tf.GradientTape() as tape:
        loss = keras.ops.mean(dist.neg_log_prob(policy(x), np.zeros((4, 3), np.float32)))
    # d/dlog σ of mean_b[Σ_d (u - μ)²/(2σ²) + log σ] = mean_b[1 - (u - μ)²/σ²] at σ = 1
    mean = x @ policy.layers[0].kernel.numpy() + policy.layers[0].bias.numpy()
    np.testing.assert_allclose(tape.gradient(loss, log_std).numpy(), (1 - mean**2).mean(0), rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------------------------------
# The pieces together: REINFORCE with each distribution reaches each test env's known optimum
# --------------------------------------------------------------------------------------------------


def _rollout(env, dist, params_of, rng, masked, greedy=False, seed=0):
    """One episode per sub-env (the test envs have a fixed length): flat observations, raw actions, masks
    ``[T, N, ...]`` and rewards ``[T, N]``."""
    space = env.single_observation_space
    observations, infos = env.reset(seed=seed)
    rows = {"x": [], "a": [], "m": [], "r": []}  # type: ignore[var-annotated]
    for _ in range(env.envs[0].unwrapped.length):
        x = flatten_observations(space, observations)
        mask = action_mask_source(env)(observations, infos) if masked else None
        params = params_of(x).numpy()
        raw = dist.np_mode(params, mask) if greedy else dist.np_sample(params, rng, mask)
        observations, rewards, _, _, infos = env.step(raw if greedy else dist.np_to_env(raw))
        rows["x"].append(x), rows["a"].append(raw), rows["r"].append(rewards)  # type: ignore[func-returns-value]
        rows["m"].append(np.ones((env.num_envs, dist.param_size), bool) if mask is None else mask)
    return {k: np.asarray(v) for k, v in rows.items()}


def _reinforce(env_class, updates, **options):
    """Plain REINFORCE (returns-to-go normalised per batch, Adam 0.01, 32 envs): the greedy mean return after."""
    env = as_vector_env(env_class(), num_envs=32)
    dist = action_distribution(env.single_action_space, **options)
    masked = dist.supports_mask and action_mask_source(env) is observation_action_mask
    policy = build_policy_network(env.single_observation_space, dist, hidden_units=(32,), seed=0)
    body = flat_body(policy)  # the Dense stack on flat observations
    optimizer, rng = keras.optimizers.Adam(0.01), np.random.default_rng(0)
    params_of = tf.function(body)

    @tf.function
    def update(x, actions, returns, mask):
        with tf.GradientTape() as tape:
            params = dist.mask_params(body(x), mask) if masked else body(x)
            loss = keras.ops.mean(dist.policy_gradient_loss(params, actions, returns))
        optimizer.apply_gradients(zip(tape.gradient(loss, body.trainable_variables), body.trainable_variables))

    for i in range(updates):
        batch = _rollout(env, dist, params_of, rng, masked, seed=1000 * i)
        returns = np.cumsum(batch["r"][::-1], axis=0)[::-1]
        returns = (returns - returns.mean()) / (returns.std() + 1e-8)
        flat = [np.concatenate(batch[k]) for k in ("x", "a", "m")]
        update(flat[0], flat[1].astype(dist.action_dtype), np.concatenate(returns).astype(np.float32), flat[2])
    return _rollout(env, dist, params_of, rng, masked, greedy=True, seed=10**6)["r"].sum(0).mean()


@pytest.mark.slow  # trains 5 small policies, ~30 s
@pytest.mark.parametrize(
    "env_class, updates, options, at_least",
    [
        (CopyShiftedBitsEnv, 150, {}, 7.5),  # optimum 8, random 4
        (MatchDialsEnv, 150, {}, 7.5),  # optimum 8, random 8/3
        (ReachTargetEnv, 300, {}, -0.15),  # optimum about -0.04 (targets beyond the bounds), random about -10
        (ReachTargetEnv, 300, {"bounds": "tanh"}, -0.5),
        (DictKeyEnv, 100, {}, 5.7),  # optimum 6, random valid action 3; masks from the Dict observation
    ],
    ids=["multibinary", "multidiscrete", "box-clip", "box-tanh", "dict-masked"],
)
def test_reinforce_with_each_distribution_reaches_the_known_optimum(env_class, updates, options, at_least):
    """Mutation tried: `policy_gradient_loss` without the returns (`return nll`: maximum likelihood of its
    own samples) -> red for every env."""
    assert _reinforce(env_class, updates, **options) >= at_least
