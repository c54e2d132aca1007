"""SAPO (issue 10): the squashed entropy estimate, the soft-return BPTT identity, the temperature, the class."""

import math

import numpy as np
import pytest
import torch as th

from sb3_rpo import SAPO, make_diff_vec_env, register_diff_env
from sb3_rpo.envs.pendulum import DiffPendulum
from sb3_rpo.rpo.policies import squashed_entropy_estimate


class SoftEndingPendulum(DiffPendulum):
    """Pendulum whose episodes terminate when spinning fast, and are truncated after 7 steps."""

    max_episode_steps = 7

    def terminated(self, state: th.Tensor) -> th.Tensor:
        return state[:, 1].abs() > 1.6


register_diff_env("SoftEndingPendulum-v0", SoftEndingPendulum, register_gym=False)
N_ENVS, N_STEPS = 6, 12


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
    env = make_diff_vec_env("SoftEndingPendulum-v0", n_envs=N_ENVS, seed=3, dtype=th.float64)
    kwargs = {"n_steps": N_STEPS, "seed": 0, "device": "cpu", "policy_kwargs": dict(net_arch=[16, 16]), **kwargs}
    model = SAPO("MlpPolicy", env, ent_coef="auto_0.3", **kwargs)
    model.policy.obs_normalizer.update(th.randn(50, 3, dtype=th.float64) * 2 + 0.5)
    with th.no_grad():
        for p in model.policy.critic_target.parameters():
            p.add_(0.1 * th.randn_like(p))
    model._last_obs_t = env.diff_reset().detach()
    return model, env


def soft_bptt_gradient(model, env, obs):
    """Plain BPTT of sum_k gamma^k (r_k + alpha E_k) + gamma^H V, step by step, with an independent entropy formula."""
    policy, gamma, alpha = model.policy, model.gamma, model.ent_coef_value
    low, high = policy.action_low, policy.action_high
    target, scale = model.target_entropy, abs(model.target_entropy - math.log(2.0))  # Pendulum's Box: [-2, 2]
    objective, running, discount = 0.0, [0.0] * env.num_envs, [1.0] * env.num_envs
    ended = {"terminated": 0, "truncated": 0}
    for k in range(model.n_steps):
        mean, std = policy.actor(policy.normalize(obs))
        actions = mean + std * th.randn_like(mean)
        x = mean + std * th.randn_like(mean)  # the entropy's fresh sample
        log_density = th.distributions.Normal(mean, std).log_prob(x) - th.log1p(-(th.tanh(x) ** 2)) - th.log((high - low) / 2)
        entropy = -log_density.sum(-1)
        soft = alpha * (entropy - target) / (2 * scale)
        obs, rewards, terminated, truncated, info = env.diff_step(policy.to_env_action(actions))
        for i in range(env.num_envs):
            running[i] = running[i] + discount[i] * (rewards[i] + soft[i])
            discount[i] *= gamma
            if terminated[i] or truncated[i] or k == model.n_steps - 1:
                final = policy.normalize(info["final_obs"][i : i + 1])
                bootstrap = 0.0 if terminated[i] else policy.values(final, target=True).mean()
                objective = objective + running[i] + discount[i] * bootstrap
            if terminated[i] or truncated[i]:
                ended["terminated" if terminated[i] else "truncated"] += 1
                running[i], discount[i] = 0.0, 1.0
    loss = -objective / (model.n_steps * env.num_envs)
    return th.autograd.grad(loss, list(policy.actor.parameters())), ended


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
