"""Issue 14: the fused critic ensemble against independent networks, and the update against the per-critic loop."""

import copy

import numpy as np
import pytest
import torch as th
from extras import require_extra
from stable_baselines3.common.utils import polyak_update
from torch import nn

from benchmarks.iteration_speed import LoopedCriticEnsemble, looped_critic_fit
from sb3_rpo import RPO, make_diff_vec_env
from sb3_rpo.rpo.policies import CriticEnsemble, _mlp


def independent_mlps(ensemble: CriticEnsemble, obs_dim: int, net_arch: list[int], layer_norm: bool) -> nn.ModuleList:
    """``n_critics`` ordinary MLPs (SB3's create_mlp) holding copies of the ensemble's member weights."""
    nets = nn.ModuleList(_mlp(obs_dim, 1, net_arch, nn.SiLU, layer_norm) for _ in range(ensemble.n_critics)).double()
    with th.no_grad():
        for i, net in enumerate(nets):
            linears = [m for m in net if isinstance(m, nn.Linear)]
            norms = [m for m in net if isinstance(m, nn.LayerNorm)]
            for layer, linear in enumerate(linears):
                linear.weight.copy_(ensemble.weights[layer][i])
                linear.bias.copy_(ensemble.biases[layer][i, 0])
            for layer, norm in enumerate(norms):
                norm.weight.copy_(ensemble.norm_weights[layer][i, 0])
                norm.bias.copy_(ensemble.norm_biases[layer][i, 0])
    return nets


def member_grads(ensemble: CriticEnsemble, i: int) -> list[th.Tensor]:
    grads = []
    for layer in range(len(ensemble.weights)):
        grads += [ensemble.weights[layer].grad[i], ensemble.biases[layer].grad[i, 0]]
        if ensemble.layer_norm and layer < len(ensemble.norm_weights):
            grads += [ensemble.norm_weights[layer].grad[i, 0], ensemble.norm_biases[layer].grad[i, 0]]
    return grads


def mlp_grads(net: nn.Sequential) -> list[th.Tensor]:
    """Gradients in the ensemble's order: per layer weight, bias, then the LayerNorm's gain and bias."""
    return [p.grad for p in net.parameters()]


@pytest.mark.parametrize("layer_norm, n_critics, net_arch", [(True, 2, [16, 8]), (False, 3, [8]), (True, 1, [])])
def test_fused_ensemble_equals_independent_mlps(layer_norm, n_critics, net_arch):
    th.manual_seed(0)
    ensemble = CriticEnsemble(5, net_arch, nn.SiLU, layer_norm, n_critics).double()
    with th.no_grad():  # non-trivial LayerNorm gains and biases, so that they are checked
        for p in ensemble.parameters():
            p.add_(0.3 * th.randn_like(p))
    nets = independent_mlps(ensemble, 5, net_arch, layer_norm)
    obs = th.randn(11, 5, dtype=th.float64)
    values = ensemble(obs)
    expected = th.stack([net(obs).squeeze(-1) for net in nets])
    assert values.shape == (n_critics, 11)
    np.testing.assert_allclose(values.detach().numpy(), expected.detach().numpy(), rtol=1e-12, atol=1e-13)

    weights = th.randn(n_critics, 11, dtype=th.float64)  # a different loss weight per member and sample
    (weights * values).sum().backward()
    (weights * expected).sum().backward()
    for i, net in enumerate(nets):
        for fused, reference in zip(member_grads(ensemble, i), mlp_grads(net), strict=True):
            assert th.count_nonzero(reference) > 0
            np.testing.assert_allclose(fused.numpy(), reference.numpy(), rtol=1e-11, atol=1e-13)


def test_default_init_is_nn_linear_per_member():
    """Same seed, same weights as a loop of nn.Linear-based MLPs: the hyperparameters tuned on them still fit."""
    th.manual_seed(3)
    ensemble = CriticEnsemble(4, [32, 32], nn.SiLU, True, 2)
    th.manual_seed(3)
    nets = [_mlp(4, 1, [32, 32], nn.SiLU, True) for _ in range(2)]
    for i, net in enumerate(nets):
        linears = [m for m in net if isinstance(m, nn.Linear)]
        for layer, linear in enumerate(linears):
            assert th.equal(ensemble.weights[layer][i], linear.weight)
            assert th.equal(ensemble.biases[layer][i, 0], linear.bias)
    for layer in range(2):
        assert th.equal(ensemble.norm_weights[layer], th.ones(2, 1, 32))
        assert th.equal(ensemble.norm_biases[layer], th.zeros(2, 1, 32))


def test_orthogonal_init():
    th.manual_seed(0)
    ensemble = CriticEnsemble(6, [16, 16], nn.Tanh, True, 3)
    ensemble.orthogonal_init_(hidden_gain=np.sqrt(2), output_gain=0.5)
    for layer, weight in enumerate(ensemble.weights):
        gain = 0.5 if layer == len(ensemble.weights) - 1 else np.sqrt(2)
        for member in weight:
            small = min(member.shape)
            gram = member @ member.T if member.shape[0] == small else member.T @ member
            np.testing.assert_allclose(gram.detach().numpy(), gain**2 * np.eye(small), atol=1e-5)
        assert not th.equal(weight[0], weight[1])  # every member drawn on its own
    for bias in ensemble.biases:
        assert th.count_nonzero(bias) == 0


def test_fused_critic_update_equals_the_loop():
    model = RPO(
        "MlpPolicy",
        make_diff_vec_env("DiffPendulum-v0", n_envs=4, seed=0, dtype=th.float64),
        n_steps=10,
        n_critic_iterations=3,
        n_critic_batches=3,  # 40 samples: batches of 14, 14 and 12
        seed=0,
        device="cpu",
        policy_kwargs=dict(net_arch=[16, 16]),
    )
    model._setup_learn(1000)
    buffer, _ = model.rollout_window(model.env)
    critic = model.policy.critic
    nets = independent_mlps(critic, 3, [16, 16], True)
    target = copy.deepcopy(critic)
    before = [p.clone() for p in critic.parameters()]

    th.manual_seed(7)
    losses = model.fit_critics(buffer)
    reference = LoopedCriticEnsemble(3, [16, 16], nn.SiLU, True, 3)  # the benchmark's "before", on the same weights
    reference.members = nets
    lr = critic.optimizer.param_groups[0]["lr"]
    optimizer = th.optim.AdamW(nets.parameters(), **{**model.policy.optimizer_kwargs, "lr": lr})
    th.manual_seed(7)
    looped_critic_fit(model, reference, optimizer, buffer)
    assert len(losses) == 3 * 3
    assert all(not th.allclose(p, q) for p, q in zip(critic.parameters(), before, strict=True))
    fitted = independent_mlps(critic, 3, [16, 16], True)
    for net, reference in zip(fitted, nets, strict=True):
        for p, q in zip(net.parameters(), reference.parameters(), strict=True):
            np.testing.assert_allclose(p.detach().numpy(), q.detach().numpy(), rtol=1e-9, atol=1e-11)

    # Polyak over the stacked tensors is Polyak over every member's tensors.
    reference_target = independent_mlps(target, 3, [16, 16], True)
    polyak_update(critic.parameters(), target.parameters(), 0.8)
    polyak_update(nets.parameters(), reference_target.parameters(), 0.8)
    for net, reference in zip(independent_mlps(target, 3, [16, 16], True), reference_target, strict=True):
        for p, q in zip(net.parameters(), reference.parameters(), strict=True):
            np.testing.assert_allclose(p.detach().numpy(), q.detach().numpy(), rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("integrator", ["euler", "official"])
def test_mujoco_skips_the_state_jacobian_of_a_windows_first_step(integrator):
    """The first step's dx'/dx (its state is detached) is not computed, and the action-gradients do not change."""
    require_extra("mujoco", "mujoco")
    results = []
    for state_requires_grad in (False, True):
        env = make_diff_vec_env("MujocoFDAnt-v5", n_envs=2, seed=0, dtype=th.float64, n_threads=1, integrator=integrator)
        env.diff_reset()
        if state_requires_grad:  # what every step computed before: the whole Jacobian
            env.state = env.state.clone().requires_grad_(True)
        skipped, sim_step = [], env.sim_step

        def spy(state, action, sim_step=sim_step, env=env, skipped=skipped):
            skipped.append(env.skip_state_derivatives)
            return sim_step(state, action)

        env.sim_step = spy
        actions = [th.full((2, 8), 0.1 * (k + 1), dtype=th.float64, requires_grad=True) for k in range(3)]
        total = 0.0
        for a in actions:
            obs, rewards, *_ = env.diff_step(a)
            total = total + rewards.sum() + obs.sum()
        results.append(th.autograd.grad(total, actions))
        assert skipped == [not state_requires_grad, False, False]
        env.close()
    for skipping, full in zip(*results, strict=True):
        assert th.count_nonzero(full) > 0
        th.testing.assert_close(skipping, full, rtol=1e-12, atol=1e-14)


def test_compile_task_replaces_the_step_functions_and_keeps_the_gradients():
    """The opt-in compile helper (here with dynamo's eager backend: the wiring, not inductor's code, which
    benchmarks/compile_task.py checks) gives the eager env's window and gradients."""
    from sb3_rpo.common.compile import STEP_FUNCTIONS, compile_task

    grads = []
    for compiled in (False, True):
        env = make_diff_vec_env("DiffPendulum-v0", n_envs=3, seed=0, dtype=th.float64)
        if compiled:
            assert compile_task(env, backend="eager") is env
            assert all(name in vars(env) for name in STEP_FUNCTIONS)
        env.diff_reset()
        actions = [th.full((3, 1), 0.2 * (k - 1), dtype=th.float64, requires_grad=True) for k in range(3)]
        total = sum(env.diff_step(a)[1].sum() for a in actions)
        grads.append(th.autograd.grad(total, actions))
    for eager, compiled in zip(*grads, strict=True):
        assert th.count_nonzero(eager) > 0
        th.testing.assert_close(compiled, eager, rtol=1e-13, atol=0)
    with pytest.raises(TypeError, match="needs a DiffTaskVecEnv"):
        compile_task(object())


def test_critic_batches_cover_every_pass_and_sample():
    """Each of the passes is a permutation of the window, in minibatches of the old sizes; no pass, no batch."""
    model = RPO("MlpPolicy", "DiffPendulum-v0", n_envs=2, n_steps=5, seed=0, device="cpu", policy_kwargs=dict(net_arch=[8]))
    model._setup_learn(100)
    buffer, _ = model.rollout_window(model.env)
    buffer.returns = th.arange(10, dtype=buffer.returns.dtype).reshape(5, 2)  # each sample's index, to follow it
    batches = list(buffer.critic_batches(n_batches=3, n_passes=2))
    assert [len(batch.returns) for batch in batches] == [4, 4, 2] * 2
    for p in range(2):
        seen = th.cat([batch.returns for batch in batches[3 * p : 3 * p + 3]])
        assert sorted(seen.long().tolist()) == list(range(10))
    assert list(buffer.critic_batches(n_batches=3, n_passes=0)) == []
    assert len(list(buffer.critic_batches(n_batches=1, n_passes=4))) == 4
