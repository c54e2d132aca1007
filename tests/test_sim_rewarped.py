"""rewarped through RewarpedVecEnv: gradients, the DFlex Hopper fix, episode semantics, non-finite states, numpy face, RPO.

Warp compiles its kernels on first use (about a minute on 2 cores, cached in ~/.cache/warp): the tests share a few
module-scoped envs of two tasks (DFlex Cartpole and Hopper), whose kernels are the same Featherstone modules; the
hand and soft-body test adds a few modules.
"""

import math
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch as th
from extras import require_extra

require_extra("rewarped", "rewarped")
import gymnasium as gym  # noqa: E402
from stable_baselines3.common.evaluation import evaluate_policy  # noqa: E402

from sb3_rpo import RPO, make_diff_vec_env  # noqa: E402
from sb3_rpo.sims.rewarped import TASKS, RewarpedVecEnv, fixed_dflex_hopper  # noqa: E402

UNFIXED_HOPPER = "rewarped.envs.dflex.hopper:Hopper"


@pytest.fixture(scope="module")
def cartpole():
    return make_diff_vec_env("RewarpedDFlexCartpole-v0", n_envs=2, seed=0)


@pytest.fixture(scope="module")
def short_cartpole():
    """Episodes of 5 steps: truncation, final_obs and episode statistics within a few steps."""
    return make_diff_vec_env("RewarpedDFlexCartpole-v0", n_envs=2, seed=0, max_episode_steps=5)


@pytest.fixture(scope="module")
def hopper():
    return make_diff_vec_env("RewarpedDFlexHopper-v0", n_envs=3, seed=0)


@pytest.fixture(scope="module")
def unfixed_hopper():
    """rewarped 1.3.3's own DFlex Hopper, through the adapter."""
    return RewarpedVecEnv(num_envs=3, seed=0, task=UNFIXED_HOPPER)


def rollout(env, actions: th.Tensor, seed: int) -> th.Tensor:
    """Sum of the rewards of a window from the initial states of ``seed``."""
    env.seed(seed)
    env.diff_reset()
    total = th.zeros(())
    for a in actions:
        total = total + env.diff_step(a)[1].sum()
    return total


def test_module_imports_no_simulator():
    code = "import sys, sb3_rpo; assert 'warp' not in sys.modules and 'rewarped' not in sys.modules; print('ok')"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "ok"


def test_registry_spaces_and_arguments(cartpole):
    ids = [row[0] for row in TASKS]
    for env_id in ("RewarpedDFlexCartpole-v0", "RewarpedDFlexHopper-v0", "RewarpedDFlexAnt-v0", "RewarpedDFlexHumanoid-v0"):
        assert env_id in ids
    assert cartpole.observation_space.shape == (5,) and cartpole.action_space.shape == (1,)
    assert np.all(cartpole.action_space.low == -1) and np.all(cartpole.action_space.high == 1)
    row = next(row for row in TASKS if row[0] == "RewarpedDFlexCartpole-v0")
    assert cartpole.max_episode_steps == row[2] == 240
    with pytest.raises(TypeError, match="float32"):
        make_diff_vec_env("RewarpedDFlexCartpole-v0", dtype=th.float64)
    with pytest.raises(ValueError, match="render_mode"):
        RewarpedVecEnv(render_mode="rgb_array")
    cartpole.diff_reset()
    with pytest.raises(TypeError, match="dtype"):
        cartpole.diff_step(th.zeros(2, 1, dtype=th.float64))
    with pytest.raises(ValueError, match="shape"):
        cartpole.diff_step(th.zeros(3, 1))


def test_gradient_matches_rewarped_and_finite_differences(cartpole):
    """d(sum of rewards over 8 steps)/d(actions): equal to rewarped's own backward, and to central differences."""
    window, seed = 8, 3
    actions = 0.3 * th.randn(window, 2, 1, generator=th.Generator().manual_seed(0))
    leaf = actions.clone().requires_grad_(True)
    (grad,) = th.autograd.grad(rollout(cartpole, leaf, seed), leaf)
    assert grad.abs().min() > 0

    # rewarped's own step and backward on the same task, from the same initial states.
    cartpole.seed(seed)
    cartpole.diff_reset()
    raw_leaf = actions.clone().requires_grad_(True)
    raw_total = sum(cartpole.task.step(a)[1].sum() for a in raw_leaf)
    (raw_grad,) = th.autograd.grad(raw_total, raw_leaf)
    th.testing.assert_close(grad, raw_grad, rtol=1e-6, atol=1e-6)

    # Central differences: warp is float32, so a step of 1e-2 balances truncation and rounding (measured: 0.1%
    # of the largest component; 1e-3 gives 0.8%, 3e-4 2%).
    eps = 1e-2
    numerical = th.zeros_like(grad)
    with th.no_grad():
        for i in range(actions.numel()):
            step = th.zeros_like(actions).view(-1)
            step[i] = eps
            step = step.view_as(actions)
            numerical.view(-1)[i] = (rollout(cartpole, actions + step, seed) - rollout(cartpole, actions - step, seed)) / (
                2 * eps
            )
    assert (numerical - grad).abs().max() < 1e-2 * grad.abs().max()
    assert th.nn.functional.cosine_similarity(numerical.view(-1), grad.view(-1), dim=0) > 0.9999


def test_detach_state_cuts_the_graph(cartpole):
    cartpole.seed(0)
    cartpole.diff_reset()
    first = th.zeros(2, 1, requires_grad=True)
    cartpole.diff_step(first)
    second = th.zeros(2, 1, requires_grad=True)
    _, reward, *_ = cartpole.diff_step(second)
    assert th.autograd.grad(reward.sum(), first, retain_graph=True)[0].abs().sum() > 0
    cartpole.detach_state()
    third = th.zeros(2, 1, requires_grad=True)
    obs, reward, *_ = cartpole.diff_step(third)
    grad_first, grad_third = th.autograd.grad((reward.sum() + obs.sum()), [first, third], allow_unused=True)
    assert grad_first is None and grad_third.abs().sum() > 0


def test_seeding_is_reproducible_and_leaves_global_rng_alone(cartpole):
    cartpole.seed(7)
    a = cartpole.diff_reset()
    cartpole.seed(7)
    b = cartpole.diff_reset()
    cartpole.seed(8)
    c = cartpole.diff_reset()
    th.testing.assert_close(a, b)
    assert not th.allclose(a, c)
    state = th.random.get_rng_state()
    cartpole.diff_reset()
    cartpole.diff_step(th.zeros(2, 1))
    assert th.equal(state, th.random.get_rng_state())


def test_truncation_final_obs_and_episode_stats(short_cartpole):
    """rewarped's Cartpole writes terminated=True at its time limit: the adapter reports a truncation."""
    env = short_cartpole
    env.seed(0)
    env.diff_reset()
    actions = th.full((5, 2, 1), 0.2, requires_grad=True)
    total = th.zeros(2)
    for t in range(5):
        obs, reward, terminated, truncated, info = env.diff_step(actions[t])
        total = total + reward.detach()
        if t < 4:
            assert not (terminated | truncated).any()
            th.testing.assert_close(info["final_obs"], obs)
    assert env.task.terminated_buf.all(), "rewarped 1.3.3 flags the time limit as a termination"
    assert truncated.all() and not terminated.any()
    assert th.equal(info["episode_length"], th.tensor([5, 5]))
    th.testing.assert_close(info["episode_return"], total)
    assert not th.allclose(info["final_obs"], obs), "obs is the first observation of the next episode"
    # final_obs carries the gradient of the episode that ended; the new episode's first obs does not.
    grad_final = th.autograd.grad(info["final_obs"].sum(), actions, retain_graph=True)[0]
    grad_obs = th.autograd.grad(obs.sum(), actions, allow_unused=True)[0]
    assert grad_final[4].abs().sum() > 0
    assert grad_obs is None or grad_obs.abs().sum() == 0
    # Counters restart.
    obs, _, terminated, truncated, info = env.diff_step(th.zeros(2, 1))
    assert th.equal(info["episode_length"], th.tensor([1, 1]))


def test_hopper_observation_reward_and_termination_are_fixed(hopper, unfixed_hopper):
    """rewarped 1.3.3's Hopper observes all 12 coordinates (declares 11): reward and termination read shifted indices."""
    assert unfixed_hopper.task.num_obs == 11 and unfixed_hopper.observation_space.shape == (12,)
    assert hopper.observation_space.shape == (11,) and hopper.action_space.shape == (3,)
    assert hopper.max_episode_steps == next(row[2] for row in TASKS if row[0] == "RewarpedDFlexHopper-v0") == 1000
    assert issubclass(hopper.task_class, fixed_dflex_hopper())

    def evaluate(env, joint_q: list[list[float]], joint_qd: list[list[float]]):
        """Reward and termination that the task computes for given states (no physics step)."""
        task = env.task
        with th.no_grad():
            task.state.assign("joint_q", th.tensor(joint_q).flatten())
            task.state.assign("joint_qd", th.tensor(joint_qd).flatten())
            task.actions = th.zeros(3, 3)
            task.compute_observations()
            task.compute_reward()
        return task.rew_buf.clone(), task.terminated_buf.clone()

    # joint_q = [x, height, angle, thigh, leg, foot]: fallen (height -0.6) / moved back (x -0.6) / upright and moving.
    joint_q = [[0.0, -0.6, 0.0, 0.0, 0.0, 0.0], [-0.6, 0.0, 0.0, 0.0, 0.0, 0.0], [0.3, 0.1, 0.2, -0.1, -0.2, 0.1]]
    joint_qd = [[0.0] * 6, [0.0] * 6, [1.5, 0.0, 0.0, 0.0, 0.0, 0.0]]
    rew, term = evaluate(hopper, joint_q, joint_qd)
    assert term.tolist() == [True, False, False]

    # DiffRL's reward: forward velocity + height reward + angle reward (zero actions).
    def diffrl_reward(q, qd):
        height_diff = min(max(q[1] - (-0.45 + 0.15), -1.0), 0.3)
        height_reward = -200.0 * height_diff**2 if height_diff < 0 else height_diff
        return qd[0] + height_reward + 1.0 - q[2] ** 2 / (math.pi / 6) ** 2

    expected = th.tensor([diffrl_reward(q, qd) for q, qd in zip(joint_q, joint_qd, strict=True)])
    th.testing.assert_close(rew, expected, rtol=1e-5, atol=1e-4)

    rew_unfixed, term_unfixed = evaluate(unfixed_hopper, joint_q, joint_qd)
    assert term_unfixed.tolist() == [False, True, False], "the unfixed task takes x for the height"
    assert not th.allclose(rew_unfixed, expected, atol=1e-2)


def test_unfixed_hopper_diverges_and_the_adapter_contains_it(hopper):
    """
    Zero actions, 4 envs, 80 steps: rewarped's own Hopper goes NaN and stays NaN (it never terminates). Through the
    adapter, the fixed Hopper's observations and rewards stay finite: the states that still blow up (a Featherstone
    instability that the observation fix does not remove) are reported as non-finite, terminated and reset.
    Terminations on falls are checked state by state in the test above.
    """
    from rewarped.envs.dflex.hopper import Hopper

    raw = Hopper(num_envs=4, device="cpu")
    with th.random.fork_rng():
        th.manual_seed(0)
        raw.reset()
        nan_steps = 0
        for _ in range(80):
            with th.no_grad():
                obs, *_ = raw.step(th.zeros(4, 3))
            nan_steps += int(th.isnan(obs).any(dim=-1).sum())
    assert nan_steps > 0 and th.isnan(obs).any(), "rewarped's own Hopper keeps its NaN states"

    env = make_diff_vec_env("RewarpedDFlexHopper-v0", n_envs=4, seed=0)
    env.diff_reset()
    nonfinite = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        for _ in range(80):
            with th.no_grad():
                obs, reward, terminated, _, info = env.diff_step(th.zeros(4, 3))
            assert th.isfinite(obs).all() and th.isfinite(reward).all() and th.isfinite(info["final_obs"]).all()
            assert not (info["nonfinite"] & ~terminated).any()
            assert (info["episode_length"][info["nonfinite"]] >= 1).all()
            nonfinite += int(info["nonfinite"].sum())
    assert nonfinite > 0 and env.nonfinite_count == nonfinite


def poison_first_env(task) -> None:
    """
    Make env 0's velocities NaN, as a blow-up of the physics would. The NaN goes into a fresh copy of the state
    arrays (as rewarped's reset allocates one): warp's tape still reads the previous step's output arrays in the
    backward pass. The other envs keep their graph.
    """
    import warp as wp

    fresh = task.model.state()
    for name, array in vars(task.state_0).items():
        if isinstance(array, wp.array):
            getattr(fresh, name).assign(array)
    task.state_0 = fresh
    joint_qd = task.state_tensors[1]
    rows = joint_qd.view(task.num_envs, -1)
    first = th.arange(task.num_envs).unsqueeze(-1) == 0
    task.state.assign("joint_qd", th.where(first, th.full_like(rows, float("nan")), rows).view_as(joint_qd))


def test_nonfinite_state_is_reset_and_other_gradients_survive(hopper):
    """
    A NaN injected into env 0 mid-window: env 0 is reported and reset, the window's gradient stays finite, and the
    gradients of envs 1 and 2 are those of the same window without the NaN (the adapter's partial reset keeps their
    graph; rewarped's own reset cuts it for every environment).
    """
    window, inject_at, seed = 6, 3, 5
    actions = 0.2 * th.randn(window, 3, 3, generator=th.Generator().manual_seed(1))

    def run(inject: bool, rewarped_reset: bool = False):
        """Gradients of the window's return and of its rewards from inject_at on, and the step outputs."""
        hopper.seed(seed)
        hopper.diff_reset()
        leaf = actions.clone().requires_grad_(True)
        total, late, infos = th.zeros(()), th.zeros(()), []
        for t in range(window):
            if inject and t == inject_at:
                poison_first_env(hopper.task)
            if rewarped_reset and t == inject_at:
                hopper.task.reset(env_ids=th.tensor([0]))
            obs, reward, terminated, _, info = hopper.diff_step(leaf[t])
            infos.append((obs, reward, terminated, info))
            total = total + reward.sum()
            late = late + (reward.sum() if t >= inject_at else 0)
        grad = th.autograd.grad(total, leaf, retain_graph=True)[0]
        return grad, th.autograd.grad(late, leaf)[0], infos

    clean_grad, clean_late, _ = run(inject=False)
    count = hopper.nonfinite_count
    with pytest.warns(UserWarning, match="non-finite"):
        grad, late, infos = run(inject=True)
    obs, reward, terminated, info = infos[inject_at]
    assert info["nonfinite"].tolist() == [True, False, False] and terminated[0]
    assert reward[0] == 0 and th.isfinite(obs).all() and th.isfinite(info["final_obs"]).all()
    assert info["episode_length"][0] == inject_at + 1
    assert hopper.nonfinite_count == count + 1
    assert infos[inject_at + 1][3]["episode_length"][0] == 1, "env 0 restarted"
    assert th.isfinite(grad).all() and th.isfinite(late).all()
    assert grad[inject_at, 0].abs().sum() == 0, "the NaN step gives no gradient"
    th.testing.assert_close(grad[:, 1:], clean_grad[:, 1:], rtol=1e-4, atol=1e-5)
    # The rewards after the reset still reach envs 1 and 2's earlier actions.
    assert late[:inject_at, 1:].abs().min() > 0
    th.testing.assert_close(late[:, 1:], clean_late[:, 1:], rtol=1e-4, atol=1e-5)

    # The same reset done by rewarped itself (WarpEnv.reset(env_ids)) cuts that gradient for every environment.
    _, cut_late, _ = run(inject=False, rewarped_reset=True)
    assert cut_late[:inject_at].abs().sum() == 0


def test_adapter_contains_natural_nans_with_finite_gradients(unfixed_hopper):
    """rewarped's own Hopper under zero actions, five 16-step gradient windows: NaNs occur, gradients stay finite."""
    env = unfixed_hopper
    env.seed(0)
    env.diff_reset()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        for _ in range(5):
            env.detach_state()
            leaf = th.zeros(16, 3, 3, requires_grad=True)
            total = th.zeros(())
            for a in leaf:
                obs, reward, _, _, info = env.diff_step(a)
                assert th.isfinite(obs).all() and th.isfinite(reward).all()
                total = total + reward.sum() + info["final_obs"].sum()
            (grad,) = th.autograd.grad(total, leaf)
            assert th.isfinite(grad).all()
    assert env.nonfinite_count > 0


def test_numpy_face(short_cartpole):
    env = short_cartpole
    env.seed(0)
    obs = env.reset()
    assert obs.dtype == np.float32 and obs.shape == (2, 5)
    for _ in range(5):
        obs, rewards, dones, infos = env.step(np.zeros((2, 1), dtype=np.float32))
    assert rewards.dtype == np.float32 and dones.all()
    for info in infos:
        assert info["TimeLimit.truncated"] and info["episode"]["l"] == 5 and np.isfinite(info["episode"]["r"])
        assert info["terminal_observation"].shape == (5,)

    class Zero:
        def predict(self, observation, state=None, episode_start=None, deterministic=False):
            return np.zeros((len(observation), 1), dtype=np.float32), None

    mean, _ = evaluate_policy(Zero(), env, n_eval_episodes=4)
    assert np.isfinite(mean)
    single = gym.make("RewarpedDFlexCartpole-v0")
    first, _ = single.reset(seed=0)
    assert first.shape == (5,)
    assert np.isfinite(single.step(single.action_space.sample())[1])


def test_rpo_trains_on_hopper():
    env = make_diff_vec_env("RewarpedDFlexHopper-v0", n_envs=4, seed=0, max_episode_steps=32)
    model = RPO("MlpPolicy", env, n_steps=8, policy_kwargs=dict(net_arch=[32]), n_critic_iterations=2, seed=0, device="cpu")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the non-finite warnings of the Hopper's blow-ups
        model.learn(256)
    assert model.num_timesteps == 256
    assert all(th.isfinite(p).all() for p in model.policy.parameters())
    assert len(model.ep_info_buffer) >= 4
    assert all(np.isfinite(ep["r"]) and 1 <= ep["l"] <= 32 for ep in model.ep_info_buffer)


@pytest.mark.parametrize(
    "env_id, obs_dim, act_dim",
    [("RewarpedAllegroHand-v0", 72, 16), ("RewarpedSoftJumper-v0", 8 + 1 + 3 + 3 + 2 * 204 * 3 + 222, 222)],
)
def test_other_rewarped_tasks_step_and_differentiate(env_id, obs_dim, act_dim):
    """A hand (dict observation, its "obs" entry) and a soft body (every entry flattened): spaces, a window, gradients."""
    if env_id == "RewarpedAllegroHand-v0":
        require_extra("hydra", "rewarped")  # rewarped's hand tasks read IsaacGymEnvs' configs with hydra
    env = make_diff_vec_env(env_id, n_envs=2, seed=0)
    assert env.observation_space.shape == (obs_dim,) and env.action_space.shape == (act_dim,)
    env.diff_reset()
    leaf = (0.5 * th.randn(3, 2, act_dim, generator=th.Generator().manual_seed(0))).requires_grad_(True)
    total = th.zeros(())
    for a in leaf:
        obs, reward, *_ = env.diff_step(a)
        assert obs.shape == (2, obs_dim) and th.isfinite(obs).all() and th.isfinite(reward).all()
        total = total + reward.sum()
    (grad,) = th.autograd.grad(total, leaf)
    assert th.isfinite(grad).all() and grad.abs().sum() > 0
