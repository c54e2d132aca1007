"""RPO's gradients against plain BPTT, noise regeneration, the clip band and the window targets."""

import numpy as np
import pytest
import torch as th

from sb3_rpo import RPO, SHAC, make_diff_vec_env, register_diff_env
from sb3_rpo.common.buffers import PolicySamples
from sb3_rpo.envs.pendulum import DiffPendulum
from sb3_rpo.rpo.rpo import td_lambda_targets, window_objective
from sb3_rpo.shac.shac import SHAC_DEFAULTS, SHAC_POLICY_KWARGS, SHAC_SETTINGS


class EndingPendulum(DiffPendulum):
    """Pendulum whose episodes terminate when spinning fast, and are truncated after 7 steps."""

    max_episode_steps = 7

    def terminated(self, state: th.Tensor) -> th.Tensor:
        return state[:, 1].abs() > 1.6


register_diff_env("EndingPendulum-v0", EndingPendulum, register_gym=False)

N_ENVS, N_STEPS = 6, 12


def snapshot(env):
    return (env.state.clone(), env.elapsed_steps.clone(), env.episode_returns.clone(), env.generator.get_state())


def restore(env, snap):
    env.state, env.elapsed_steps, env.episode_returns = snap[0].clone(), snap[1].clone(), snap[2].clone()
    env.generator.set_state(snap[3])


def make_model(**kwargs):
    env = make_diff_vec_env("EndingPendulum-v0", n_envs=N_ENVS, seed=3, dtype=th.float64)
    kwargs = {
        "n_steps": N_STEPS,
        "n_epochs": 1,
        "seed": 0,
        "device": "cpu",
        "policy_kwargs": dict(net_arch=[16, 16]),
        **kwargs,
    }
    return perturbed(RPO("MlpPolicy", env, **kwargs), env)


def perturbed(model, env):
    """``model`` with non-trivial observation statistics and target critics, so that both enter the comparison."""
    model.policy.obs_normalizer.update(th.randn(50, 3, dtype=th.float64) * 2 + 0.5)
    with th.no_grad():
        for p in model.policy.critic_target.parameters():
            p.add_(0.1 * th.randn_like(p))
    model._last_obs_t = env.diff_reset().detach()
    return model, env


def bptt_gradient(model, env, obs, bonus=None):
    """
    The actor gradient by plain backpropagation through time of the window return, written step by step (no buffer):
    SHAC's; with ``bonus(mean, std, noise)``, a reward term of each step from the rollout's second (entropy) noise:
    SAPO's soft return (tests/test_sapo.py).
    """
    policy, gamma = model.policy, model.gamma
    objective = 0.0
    running = [0.0] * env.num_envs
    discount = [1.0] * env.num_envs
    ended = {"terminated": 0, "truncated": 0}
    for k in range(model.n_steps):
        mean, std = policy.actor(policy.normalize(obs))
        actions = mean + std * th.randn_like(mean)
        noise = th.randn_like(mean)  # the rollout's entropy noise, drawn in any case: the noise streams stay aligned
        extra = th.zeros(env.num_envs, dtype=mean.dtype) if bonus is None else bonus(mean, std, noise)
        obs, rewards, terminated, truncated, info = env.diff_step(policy.to_env_action(actions))
        for i in range(env.num_envs):
            running[i] = running[i] + discount[i] * (rewards[i] + extra[i])
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


def test_one_epoch_equals_bptt():
    model, env = make_model()
    snap, rng = snapshot(env), th.get_rng_state()
    obs0 = model._last_obs_t

    buffer, _ = model.rollout_window(env)
    loss, stats = model.policy_loss(next(buffer.policy_batches()), th.tensor(0.0, dtype=th.float64))
    rpo_grads = th.autograd.grad(loss, list(model.policy.actor.parameters()))

    restore(env, snap)
    th.set_rng_state(rng)
    bptt_grads, ended = bptt_gradient(model, env, obs0)
    assert ended["terminated"] > 0 and ended["truncated"] > 0, "the window must cross both kinds of episode end"
    for g_rpo, g_bptt in zip(rpo_grads, bptt_grads, strict=True):
        assert th.count_nonzero(g_bptt) > 0
        np.testing.assert_allclose(g_rpo.numpy(), g_bptt.numpy(), rtol=1e-10, atol=1e-13)
    assert stats["max_ratio"].item() == pytest.approx(1.0, abs=1e-12)
    assert stats["kl"].item() == pytest.approx(0.0, abs=1e-12)
    assert stats["effective_sample_ratio"].item() == 1.0


def test_regenerated_noise_equals_rollout_noise():
    model, env = make_model()
    th.manual_seed(123)
    buffer, _ = model.rollout_window(env)
    th.manual_seed(123)
    # per step: the action's noise, then the entropy estimate's
    noise = th.stack([th.randn(2, N_ENVS, 1, dtype=th.float64)[0] for _ in range(N_STEPS)])
    mean, std = model.policy.actor(buffer.observations.flatten(0, 1))
    regenerated = ((buffer.actions.flatten(0, 1) - mean) / std).reshape(noise.shape)
    np.testing.assert_allclose(regenerated.detach().numpy(), noise.numpy(), rtol=1e-10, atol=1e-12)


def test_shac_is_rpo_with_one_epoch():
    kwargs = dict(n_steps=8, seed=1, device="cpu", policy_kwargs=dict(net_arch=[16]), n_envs=4)
    shac = SHAC("MlpPolicy", "DiffPendulum-v0", **kwargs).learn(64)
    # RPO with SHAC's update and DiffRL's defaults, which SHAC sets
    policy_kwargs = {**SHAC_POLICY_KWARGS, **kwargs.pop("policy_kwargs")}
    rpo = RPO("MlpPolicy", "DiffPendulum-v0", **SHAC_SETTINGS, **SHAC_DEFAULTS, policy_kwargs=policy_kwargs, **kwargs).learn(
        64
    )
    for p_shac, p_rpo in zip(shac.policy.parameters(), rpo.policy.parameters(), strict=True):
        assert th.equal(p_shac, p_rpo)
    assert (shac.n_epochs, shac.kl_coef, shac.clip_low, shac.clip_high) == (1, 0.0, None, None)
    with pytest.raises(TypeError, match="SHAC fixes kl_coef, n_epochs.*use RPO"):
        SHAC("MlpPolicy", "DiffPendulum-v0", n_epochs=3, kl_coef=0.1)


def test_samples_outside_clip_band_get_no_gradient():
    model, _ = make_model(kl_coef=0.0, clip_low=0.2, clip_high=0.2)
    obs = th.randn(3, 3, dtype=th.float64)
    with th.no_grad():
        mean, std = model.policy.actor(model.policy.normalize(obs))
    actions = mean + std * th.randn_like(mean)
    log_prob = -((actions - mean) ** 2 / (2 * std**2) + th.log(std) + 0.5 * np.log(2 * np.pi)).sum(-1)
    # rho = exp(log_prob - old_log_prob): 1 (inside), 1.5 (above 1 + 0.2), 0.5 (below 1 - 0.2).
    old_log_prob = log_prob - th.log(th.tensor([1.0, 1.5, 0.5], dtype=th.float64))
    grads = th.randn_like(actions)

    def actor_grad(i):
        batch = PolicySamples(
            obs[i : i + 1], actions[i : i + 1], grads[i : i + 1], mean[i : i + 1], std[i : i + 1], old_log_prob[i : i + 1]
        )
        loss, stats = model.policy_loss(batch, th.tensor(0.0, dtype=th.float64))
        return th.cat([g.flatten() for g in th.autograd.grad(loss, list(model.policy.actor.parameters()))]), stats

    inside, stats_in = actor_grad(0)
    assert inside.abs().sum() > 0 and stats_in["effective_sample_ratio"] == 1.0
    for i in (1, 2):
        outside, stats_out = actor_grad(i)
        assert th.count_nonzero(outside) == 0
        assert stats_out["effective_sample_ratio"] == 0.0


def test_rpo_epochs_reuse_the_cached_gradient_with_kl():
    """Later epochs see rho != 1 and a positive KL; the first step is the SHAC step."""
    model, env = make_model(n_epochs=4, kl_coef=0.2, learning_rate=1e-2)
    buffer, _ = model.rollout_window(env)
    batch = next(buffer.policy_batches())
    zero = th.tensor(0.0, dtype=th.float64)
    for epoch in range(4):
        loss, stats = model.policy_loss(batch, zero)
        if epoch == 0:
            assert stats["kl"].item() == 0.0 and stats["max_ratio"].item() == pytest.approx(1.0)
        else:
            assert stats["kl"].item() > 0.0 and stats["max_ratio"].item() != pytest.approx(1.0)
        model._finite_step(loss, model.policy.actor.optimizer, list(model.policy.actor.parameters()))


def test_td_lambda_targets_hand_computed():
    gamma, lam = 0.9, 0.5
    # One env, 4 steps: truncation at step 1 (bootstrap V=10), termination at step 2 (bootstrap 0).
    rewards = th.tensor([[1.0], [2.0], [3.0], [4.0]])
    next_values = th.tensor([[5.0], [10.0], [7.0], [6.0]])
    terminated = th.tensor([[False], [False], [True], [False]])
    dones = th.tensor([[False], [True], [True], [False]])
    targets = td_lambda_targets(rewards, next_values, terminated, dones, gamma, lam)
    g3 = 4.0 + 0.9 * 6.0  # last step of the window: bootstrap from V
    g2 = 3.0 + 0.0  # terminated: no bootstrap
    g1 = 2.0 + 0.9 * 10.0  # truncated: bootstrap from the final observation's value
    g0 = 1.0 + 0.9 * ((1 - lam) * 5.0 + lam * g1)
    np.testing.assert_allclose(targets[:, 0].numpy(), [g0, g1, g2, g3], rtol=1e-6)

    objective = window_objective(rewards, next_values, terminated, dones, gamma)
    segments = (1.0 + 0.9 * 2.0 + 0.81 * 10.0) + 3.0 + (4.0 + 0.9 * 6.0)
    assert objective.item() == pytest.approx(segments)
