"""SAPO (issue 10): the squashed entropy estimate, the soft-return BPTT identity, the temperature, the class."""

import math

import numpy as np
import pytest
import torch as th
from test_rpo_exactness import N_ENVS, N_STEPS, bptt_gradient, perturbed  # and its EndingPendulum-v0 (ends both ways)

from sb3_rpo import RPO, SAPO, make_diff_vec_env
from sb3_rpo.rpo.policies import squashed_entropy_estimate


# ---------------------------------------------------------------------------------------- entropy estimate
def test_squashed_entropy_matches_quadrature_and_collapses_when_saturated():
    """The estimate's mean is the squashed distribution's entropy; saturated, it is far below the Gaussian's."""
    th.manual_seed(0)
    log_scale = math.log(2.0)  # a Box of half-width 2, as Pendulum's
    grid = th.linspace(-60, 60, 400_001, dtype=th.float64)
    for mu, log_std in [(0.3, -0.5), (4.0, 2.0)]:
        std = math.exp(log_std)
        mean_t = th.full((200_000, 1), mu, dtype=th.float64)
        std_t = th.full_like(mean_t, std)
        samples = squashed_entropy_estimate(mean_t, std_t, th.randn_like(mean_t), th.tensor(log_scale))
        estimate, standard_error = samples.mean().item(), samples.std().item() / math.sqrt(samples.numel())
        # Entropy of y = 2 tanh(x), x ~ N(mu, std^2): H_gauss + E[log(1 - tanh^2 x)] + log 2, by quadrature.
        density = th.exp(-0.5 * ((grid - mu) / std) ** 2) / (std * math.sqrt(2 * math.pi))
        log_det = -2 * (grid.abs() + th.log1p(th.exp(-2 * grid.abs())) - math.log(2.0))  # log(1 - tanh^2) = -2 log cosh
        expected = log_std + 0.5 * math.log(2 * math.pi * math.e) + th.trapezoid(density * log_det, grid).item() + log_scale
        assert abs(estimate - expected) < 4 * standard_error + 1e-3
    gaussian = 2.0 + 0.5 * math.log(2 * math.pi * math.e)  # 3.42: grows without bound with sigma
    assert expected < math.log(4.0)  # below the uniform distribution on (-2, 2)
    assert expected < gaussian - 3.0


# ---------------------------------------------------------------------------------------- SAPO = BPTT of the soft return
def make_sapo(**kwargs):
    env = make_diff_vec_env("EndingPendulum-v0", n_envs=N_ENVS, seed=3, dtype=th.float64)
    kwargs = {"n_steps": N_STEPS, "seed": 0, "device": "cpu", "policy_kwargs": dict(net_arch=[16, 16]), **kwargs}
    return perturbed(SAPO("MlpPolicy", env, ent_coef="auto_0.3", **kwargs), env)


def soft_bptt_gradient(model, env, obs):
    """Plain BPTT of sum_k gamma^k (r_k + alpha E_k) + gamma^H V, step by step, with an independent entropy formula."""
    alpha, low, high = model.ent_coef_value, model.policy.action_low, model.policy.action_high
    target, scale = model.target_entropy, abs(model.target_entropy - math.log(2.0))  # Pendulum's Box: [-2, 2]

    def soft_entropy(mean, std, noise):
        x = mean + std * noise  # the entropy's fresh sample
        log_density = th.distributions.Normal(mean, std).log_prob(x) - th.log1p(-(th.tanh(x) ** 2)) - th.log((high - low) / 2)
        return alpha * (-log_density.sum(-1) - target) / (2 * scale)

    return bptt_gradient(model, env, obs, bonus=soft_entropy)


def sapo_step_gradient(model, env, mutate=None):
    buffer, _ = model.rollout_window(env)
    batch = next(buffer.policy_batches())
    if mutate is not None:
        batch = mutate(batch)
    loss, stats = model.policy_loss(batch, model.ent_coef_value)
    return th.autograd.grad(loss, list(model.policy.actor.parameters())), stats


@pytest.mark.parametrize(
    "mutation",
    [None, "undiscounted_entropy", "no_direct_entropy"],
)
def test_sapo_step_equals_bptt_of_the_soft_return(mutation):
    """With the temperature frozen, the policy gradient is BPTT's, in float64; the mutations must break it."""
    model, env = make_sapo()
    snap = (env.state.clone(), env.elapsed_steps.clone(), env.episode_returns.clone(), env.generator.get_state())
    rng, obs0 = th.get_rng_state(), model._last_obs_t
    mutate = {
        None: None,
        # today's RPO auto mode: the direct term as an undiscounted mean
        "undiscounted_entropy": lambda b: b._replace(discounts=th.ones_like(b.discounts)),
        "no_direct_entropy": lambda b: b._replace(entropy_noise=None),
    }[mutation]
    sapo_grads, stats = sapo_step_gradient(model, env, mutate)

    env.state, env.elapsed_steps, env.episode_returns = snap[0].clone(), snap[1].clone(), snap[2].clone()
    env.generator.set_state(snap[3])
    th.set_rng_state(rng)
    bptt_grads, ended = soft_bptt_gradient(model, env, obs0)
    assert ended["terminated"] > 0 and ended["truncated"] > 0, "the window must cross both kinds of episode end"
    close = [np.allclose(a.numpy(), b.numpy(), rtol=1e-10, atol=1e-13) for a, b in zip(sapo_grads, bptt_grads, strict=True)]
    if mutation is None:
        assert all(th.count_nonzero(g) > 0 for g in bptt_grads)
        assert all(close), [float((a - b).abs().max()) for a, b in zip(sapo_grads, bptt_grads, strict=True)]
        assert stats["max_ratio"].item() == pytest.approx(1.0, abs=1e-12) and stats["kl"].item() == pytest.approx(
            0.0, abs=1e-12
        )
    else:
        assert not all(close)


# ---------------------------------------------------------------------------------------- temperature
SMALL = dict(n_envs=4, n_steps=8, n_critic_iterations=2, device="cpu", seed=0)


def test_temperature_learning_rate_loss_and_no_clipping():
    model = RPO("MlpPolicy", "DiffPendulum-v0", ent_coef="auto_0.5", ent_coef_learning_rate=0.02, max_grad_norm=1e-8, **SMALL)
    assert model.ent_coef_optimizer.param_groups[0]["lr"] == 0.02
    assert model.ent_coef_optimizer.param_groups[0]["betas"] == (0.7, 0.95)
    model.learn(4 * 8)
    # One Adam step (per window) of SAPO's loss alpha * (mean H - target): the first Adam step moves log(alpha)
    # by lr * sign(gradient), whatever max_grad_norm (here tiny) does to the actor's and critics' gradients.
    assert model.log_ent_coef.item() == pytest.approx(math.log(0.5) - 0.02, abs=1e-6)
    assert model.rollout_buffer.entropies.mean().item() > model.target_entropy  # the direction of that step


def test_float_ent_coef_is_exact_in_a_float64_model():
    env = make_diff_vec_env("DiffPendulum-v0", n_envs=4, dtype=th.float64)
    model = RPO("MlpPolicy", env, ent_coef=0.05, **{k: v for k, v in SMALL.items() if k != "n_envs"})
    assert model.ent_coef_value.dtype == th.float64 and model.ent_coef_value.item() == 0.05
    auto = RPO("MlpPolicy", env, ent_coef="auto_0.05", **{k: v for k, v in SMALL.items() if k != "n_envs"})
    assert auto.log_ent_coef.dtype == th.float64 and auto.ent_coef_value.item() == pytest.approx(0.05, abs=1e-16)


def test_temperature_and_its_optimizer_are_saved(tmp_path):
    model = SAPO("MlpPolicy", "DiffPendulum-v0", ent_coef_learning_rate=0.01, **SMALL).learn(4 * 8 * 3)
    model.save(tmp_path / "sapo")
    loaded = SAPO.load(tmp_path / "sapo", env=make_diff_vec_env("DiffPendulum-v0", n_envs=4), device="cpu")
    assert th.equal(model.log_ent_coef, loaded.log_ent_coef) and model.log_ent_coef.item() != 0.0
    a, b = model.ent_coef_optimizer.state_dict(), loaded.ent_coef_optimizer.state_dict()
    assert th.equal(a["state"][0]["exp_avg"], b["state"][0]["exp_avg"]) and b["param_groups"][0]["lr"] == 0.01
    obs = np.random.default_rng(0).normal(size=(5, 3)).astype(np.float32)
    np.testing.assert_array_equal(model.predict(obs, deterministic=True)[0], loaded.predict(obs, deterministic=True)[0])
    loaded.learn(4 * 8, reset_num_timesteps=False)


# ---------------------------------------------------------------------------------------- the SAPO class
def test_sapo_is_the_shared_update_with_the_authors_defaults():
    model = SAPO("MlpPolicy", "DiffPendulum-v0", n_envs=4, device="cpu")
    assert (model.n_epochs, model.batch_size, model.kl_coef, model.clip_low, model.clip_high) == (1, None, 0.0, None, None)
    assert model.normalize_entropy and model.log_ent_coef.item() == 0.0 and model.tau == 1.0 and model.max_grad_norm == 0.5
    assert model.target_entropy == pytest.approx(-0.5 + math.log(2.0))  # -dim(A)/2 for (-1, 1), Pendulum's Box is [-2, 2]
    assert model.lr_schedule(1.0) == pytest.approx(2e-3) and model.lr_schedule(0.0) == pytest.approx(1e-5)
    assert model.critic_lr_schedule(1.0) == pytest.approx(5e-4) and model.critic_lr_schedule(0.0) == pytest.approx(1e-5)
    policy = model.policy
    assert policy.actor.state_dependent_std and policy.values(th.zeros(5, 3)).shape == (2, 5)
    assert [m.out_features for m in policy.actor.latent if isinstance(m, th.nn.Linear)] == [128, 64, 32]
    assert isinstance(policy.actor.latent[2], th.nn.SiLU) and isinstance(policy.actor.latent[1], th.nn.LayerNorm)
    weight = policy.actor.latent[0].weight  # orthogonal with gain 1: orthonormal rows (out 128 > in 3: columns)
    np.testing.assert_allclose((weight.T @ weight).detach().numpy(), np.eye(3), atol=1e-5)
    assert policy.actor.optimizer.param_groups[0]["weight_decay"] == 0.0
    with pytest.raises(TypeError, match="SAPO fixes kl_coef, n_epochs.*use RPO"):
        SAPO("MlpPolicy", "DiffPendulum-v0", n_epochs=3, kl_coef=0.1)
    # policy_kwargs are merged over SAPO's
    small = SAPO("MlpPolicy", "DiffPendulum-v0", n_envs=4, device="cpu", policy_kwargs=dict(net_arch=[16]))
    assert small.policy.actor.state_dependent_std and small.policy.values(th.zeros(5, 3)).shape == (2, 5)


def test_sapo_learns_pendulum_a_little():
    eval_env = make_diff_vec_env("DiffPendulum-v0", n_envs=8, seed=100)
    model = SAPO("MlpPolicy", "DiffPendulum-v0", n_envs=16, seed=0, device="cpu", policy_kwargs=dict(net_arch=[64, 64]))
    from stable_baselines3.common.evaluation import evaluate_policy

    before, _ = evaluate_policy(model, eval_env, n_eval_episodes=8)
    model.learn(16 * 32 * 20)
    after, _ = evaluate_policy(model, eval_env, n_eval_episodes=8)
    assert after > before + 200, (before, after)
    assert all(th.isfinite(p).all() for p in model.policy.parameters())


# ---------------------------------------------------------------------------------------- episode continuity
def test_learn_continues_from_the_envs_real_state_after_evaluation():
    from stable_baselines3.common.evaluation import evaluate_policy

    model = RPO("MlpPolicy", "DiffPendulum-v0", **SMALL).learn(4 * 8)
    env = model.get_env()
    evaluate_policy(model, env, n_eval_episodes=1)  # steps (and resets) the training env
    expected = env.observation(env.state).clone()
    starts = []
    model.rollout_window = (lambda original: lambda e: starts.append(model._last_obs_t.clone()) or original(e))(
        model.rollout_window
    )
    model.learn(4 * 8, reset_num_timesteps=False)
    assert th.equal(starts[0], expected)


def test_learn_resets_once_and_last_obs_is_the_windows_start():
    env = make_diff_vec_env("DiffPendulum-v0", n_envs=4, seed=0)
    calls = []
    env.diff_reset = (lambda original: lambda: calls.append(1) or original())(env.diff_reset)
    model = RPO("MlpPolicy", env, **{k: v for k, v in SMALL.items() if k != "n_envs"})
    model._setup_learn(4 * 8)
    assert len(calls) == 1
    np.testing.assert_array_equal(model._last_obs, model._last_obs_t.numpy())
    np.testing.assert_array_equal(model._last_obs_t.numpy(), env.observation(env.state).numpy())


def test_set_env_and_load_without_reset_continue_the_episodes(tmp_path):
    model = RPO("MlpPolicy", "DiffPendulum-v0", **SMALL).learn(4 * 8)
    env = model.get_env()
    assert env.elapsed_steps.tolist() == [8] * 4
    model.set_env(env, force_reset=False)
    model.learn(4 * 8, reset_num_timesteps=False)
    assert env.elapsed_steps.tolist() == [16] * 4
    model.save(tmp_path / "m")
    loaded = RPO.load(tmp_path / "m", env=env, force_reset=False, device="cpu")
    loaded.learn(4 * 8, reset_num_timesteps=False)
    assert env.elapsed_steps.tolist() == [24] * 4
    model.set_env(env)  # force_reset=True (SB3's default): new episodes
    model.learn(4 * 8, reset_num_timesteps=False)
    assert env.elapsed_steps.tolist() == [8] * 4


# ---------------------------------------------------------------------------------------- defaults and parameterization
@pytest.mark.parametrize("state_dependent_std", [False, True])
def test_log_std_has_no_dead_zone(state_dependent_std):
    """A log-std started above the bound (3, clipped into (-5, 2)) still has a gradient and moves."""
    from sb3_rpo.rpo.policies import LOG_STD_MAX, LOG_STD_MIN

    kwargs = dict(net_arch=[16], log_std_init=3.0, state_dependent_std=state_dependent_std)
    model = RPO("MlpPolicy", "DiffPendulum-v0", learning_rate=1e-2, policy_kwargs=kwargs, **SMALL)
    obs = th.randn(10, 3)
    _, std = model.policy.actor(obs)
    before = std.log().detach().clone()
    assert before.min() > LOG_STD_MIN and before.max() < LOG_STD_MAX
    assert before.mean() > 1.9
    model.learn(4 * 8 * 10)
    after = model.policy.actor(obs)[1].log().detach()
    assert (after - before).abs().max() > 1e-3
    # the soft clamp keeps every value inside the bounds with a non-zero slope
    raw = th.linspace(-50, 50, 101, requires_grad=True)
    from sb3_rpo.rpo.policies import bound_log_std

    bounded = bound_log_std(raw)
    (slope,) = th.autograd.grad(bounded.sum(), raw)
    assert bounded.min() > LOG_STD_MIN - 1e-6 and bounded.max() < LOG_STD_MAX + 1e-6 and (slope[40:61] > 0).all()
    assert model.policy.actor.raw_log_std_init == pytest.approx(
        float(th.atanh(th.tensor(0.99))) * 3.5 - 1.5, rel=1e-6
    )  # log_std_init outside the bounds starts 1% inside them


def test_no_silent_weight_decay_and_orthogonal_init_gains():
    model = RPO("MlpPolicy", "DiffPendulum-v0", **SMALL)
    for optimizer in (model.policy.actor.optimizer, model.policy.critic.optimizer):
        assert optimizer.param_groups[0]["weight_decay"] == 0.0
    kwargs = dict(net_arch=[16, 16], optimizer_kwargs=dict(betas=(0.9, 0.999), weight_decay=0.01))
    asked = RPO("MlpPolicy", "DiffPendulum-v0", policy_kwargs=kwargs, **SMALL)
    assert asked.policy.actor.optimizer.param_groups[0]["weight_decay"] == 0.01  # when the user asks for it
    policy = RPO("MlpPolicy", "DiffPendulum-v0", policy_kwargs=dict(net_arch=[16, 16], ortho_init=True), **SMALL).policy
    first = policy.actor.latent[0].weight.detach()  # (16, 3): orthogonal columns of norm sqrt(2) (SB3's hidden gain)
    np.testing.assert_allclose((first.T @ first).numpy(), 2 * np.eye(3), atol=1e-5)
    assert policy.actor.mu.weight.norm().item() == pytest.approx(0.01, rel=1e-4)  # SB3's action head gain
    # every critic matrix (per member) is orthogonal with SB3's hidden or value-layer gain, every bias 0
    gains = []
    for name, param in policy.critic.named_parameters():
        if "bias" in name:
            assert not param.any()
        elif param.dim() >= 2 and not bool((param == 1).all()):  # (a fused ensemble may hold LayerNorm gains in 2-D)
            for w in param.detach().reshape(-1, *param.shape[-2:]):
                gram = w @ w.T if w.shape[0] <= w.shape[1] else w.T @ w
                gain = gram.diagonal().mean().sqrt().item()
                np.testing.assert_allclose(gram.numpy(), gain**2 * np.eye(len(gram)), atol=1e-5)
                gains.append(round(gain, 4))
    assert set(gains) == {round(math.sqrt(2), 4), 1.0}
    assert th.equal(policy.critic.state_dict()["weights.0"], policy.critic_target.state_dict()["weights.0"])


def test_observation_normalizer_epsilon_and_optional_clip():
    from sb3_rpo.rpo.policies import RunningObsNormalizer

    normalizer = RunningObsNormalizer((2,))
    assert normalizer.epsilon == 1e-5 and normalizer.clip is None
    normalizer.update(th.tensor([[0.0, 0.0], [0.0, 0.0]]))  # zero variance
    assert normalizer(th.tensor([[1.0, -1.0]])).abs().max() < 400  # 1 / sqrt(var + 1e-5)
    clipped = RunningObsNormalizer((2,), clip=5.0)
    clipped.update(th.tensor([[0.0, 0.0], [0.0, 0.0]]))
    assert clipped(th.tensor([[1.0, -1.0]])).tolist() == [[5.0, -5.0]]
    model = RPO("MlpPolicy", "DiffPendulum-v0", policy_kwargs=dict(normalize_obs_kwargs=dict(clip=10.0)), **SMALL)
    assert model.policy.obs_normalizer.clip == 10.0


def test_linear_schedules_end_at_the_floor():
    from sb3_rpo import SHAC, linear_schedule

    schedule = linear_schedule(1e-3)
    assert schedule(1.0) == 1e-3 and schedule(0.0) == pytest.approx(1e-5) and schedule(0.5) == pytest.approx(5.05e-4)
    assert linear_schedule(1e-6)(0.0) == 1e-6  # never above its start
    lrs = []
    model = SHAC("MlpPolicy", "DiffPendulum-v0", **SMALL)
    model.train = (lambda original: lambda: lrs.append(model.lr_schedule(model._current_progress_remaining)) or original())(
        model.train
    )
    model.learn(4 * 8 * 4)
    assert lrs[0] < 2e-3 and lrs[-1] == pytest.approx(1e-5) and min(lrs) > 0
    assert model.critic_lr_schedule(0.0) == pytest.approx(1e-5)


def test_shac_has_diffrls_defaults():
    from sb3_rpo import SHAC

    model = SHAC("MlpPolicy", "DiffPendulum-v0", n_envs=4, device="cpu")
    policy = model.policy
    assert model.lr_schedule(1.0) == pytest.approx(2e-3) and model.lr_schedule(0.0) == pytest.approx(1e-5)
    assert model.critic_lr_schedule(1.0) == pytest.approx(2e-4) and model.critic_lr_schedule(0.0) == pytest.approx(1e-5)
    assert (model.tau, model.max_grad_norm, model.n_epochs) == (0.8, 1.0, 1)
    assert isinstance(policy.actor.optimizer, th.optim.Adam) and not isinstance(policy.actor.optimizer, th.optim.AdamW)
    group = policy.actor.optimizer.param_groups[0]
    assert group["betas"] == (0.7, 0.95) and group["weight_decay"] == 0.0
    assert policy.values(th.zeros(5, 3)).shape == (1, 5)  # one critic, plus its target copy
    assert isinstance(policy.actor.latent[2], th.nn.ELU) and not policy.actor.state_dependent_std
    assert policy.actor(th.zeros(1, 3))[1].log().item() == pytest.approx(-1.0, abs=1e-6)
    mu = policy.actor.mu.weight.detach()  # orthogonal with gain sqrt(2), as every DiffRL layer
    assert mu.norm().item() == pytest.approx(math.sqrt(2), rel=1e-4)
