"""Reparameterization Proximal Policy Optimization (RPO), Zhong et al. 2025 (arXiv 2508.06214)."""

from __future__ import annotations

import time
import warnings
from typing import Any, ClassVar, TypeVar

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.buffers import RolloutBuffer
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.on_policy_algorithm import OnPolicyAlgorithm
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.type_aliases import GymEnv, MaybeCallback, Schedule
from stable_baselines3.common.utils import FloatSchedule, get_device, polyak_update, update_learning_rate
from stable_baselines3.common.vec_env import VecEnv, VecEnvWrapper, VecNormalize

from sb3_rpo.common.buffers import DiffRolloutBuffer, PolicySamples
from sb3_rpo.common.diff_vec_env import DiffVecEnv
from sb3_rpo.common.persistence import ExactResumeMixin
from sb3_rpo.common.registry import is_diff_env_id, list_diff_envs, make_diff_vec_env
from sb3_rpo.common.schedules import linear_schedule
from sb3_rpo.rpo.policies import RPOPolicy, gaussian_kl, gaussian_log_prob

SelfRPO = TypeVar("SelfRPO", bound="RPO")
# The specification (docs/rpo.md): lr 5e-4, decayed to ~1e-5 over training.
DEFAULT_LEARNING_RATE = linear_schedule(5e-4)


def _is_positive_float(text: str) -> bool:
    try:
        return float(text) > 0
    except ValueError:
        return False


def window_objective(
    rewards: th.Tensor, next_values: th.Tensor, terminated: th.Tensor, dones: th.Tensor, gamma: float
) -> th.Tensor:
    """
    Per-env window return R = sum_k gamma^k r_k + gamma^H V(s_H) of a (n_steps, n_envs) window.

    An episode that ends inside the window closes its segment with a bootstrap (0 on termination,
    ``next_values`` of the final observation on truncation) and the discount restarts after the reset.
    ``next_values[k]`` is the value of the observation reached at step k (before any reset).
    """
    n_steps = rewards.shape[0]
    discount = th.ones_like(rewards[0])
    running = th.zeros_like(rewards[0])
    total = th.zeros_like(rewards[0])
    for k in range(n_steps):
        running = running + discount * rewards[k]
        discount = discount * gamma
        bootstrap = th.where(terminated[k], th.zeros_like(next_values[k]), next_values[k])
        closes = dones[k] if k < n_steps - 1 else th.ones_like(dones[k])
        total = total + th.where(closes, running + discount * bootstrap, th.zeros_like(running))
        running = th.where(dones[k], th.zeros_like(running), running)
        discount = th.where(dones[k], th.ones_like(discount), discount)
    return total


def td_lambda_targets(
    rewards: th.Tensor, next_values: th.Tensor, terminated: th.Tensor, dones: th.Tensor, gamma: float, gae_lambda: float
) -> th.Tensor:
    """
    TD(lambda) critic targets inside one window, shape (n_steps, n_envs).

    G_k = r_k + gamma * [(1 - lambda) V_k + lambda G_{k+1}], cut to r_k + gamma V_k where the episode
    ends and at the window's last step (V_k = 0 on termination).
    """
    targets = th.empty_like(rewards)
    for k in reversed(range(rewards.shape[0])):
        bootstrap = th.where(terminated[k], th.zeros_like(next_values[k]), next_values[k])
        if k == rewards.shape[0] - 1:
            continuation = bootstrap
        else:
            blended = (1 - gae_lambda) * bootstrap + gae_lambda * targets[k + 1]
            continuation = th.where(dones[k], bootstrap, blended)
        targets[k] = rewards[k] + gamma * continuation
    return targets


_NO_GRADIENT_CAUSES = (
    "Likely causes: the task computes them with .item(), numpy or .detach(), under torch.no_grad(), or from a simulator "
    "that torch cannot differentiate (wrap it in a sb3_rpo.JacobianVecEnv with its Jacobians or vjp). "
    "sb3_rpo.common.gradcheck.check_window_gradient compares the gradient with finite differences."
)


class RPO(ExactResumeMixin, OnPolicyAlgorithm):
    """
    Reparameterization Proximal Policy Optimization (RPO, "Reparameterization PPO", Zhong et al. 2025),
    not to be confused with "Robust Policy Optimization".

    Each iteration runs an ``n_steps`` window through a differentiable simulator (SHAC-style, with a
    learned critic bootstrapping the window's end), backpropagates the window return once, caches the
    action-gradients g = dR/da of every sample, and reuses them for ``n_epochs`` PPO-like epochs whose
    surrogate is w * <g, a(theta)> with the action rebuilt from regenerated noise, importance weights
    w clipped to a band (samples outside it give no gradient) and a KL(pi_old || pi_theta) penalty.
    The critics are then fit to TD(lambda) targets and the target critics updated by Polyak averaging.
    With ``n_epochs=1`` this is exactly SHAC (see :class:`sb3_rpo.SHAC`), and with ``ent_coef="auto"`` and
    SAPO's entropy normalization exactly SAPO (:class:`sb3_rpo.SAPO`): BPTT of the soft window return.

    Paper: https://arxiv.org/abs/2508.06214 ; specification of this implementation: ``docs/rpo.md``.

    :param policy: The policy model to use (``"MlpPolicy"`` or a subclass of :class:`RPOPolicy`)
    :param env: A :class:`sb3_rpo.DiffVecEnv`, or the id of a registered differentiable env
        (see :func:`sb3_rpo.list_diff_envs`), built with ``n_envs`` environments on the model's device
    :param learning_rate: Actor learning rate, a float (constant) or a schedule of the remaining progress (1 -> 0);
        default 5e-4 decaying linearly to 1e-5 (:func:`sb3_rpo.linear_schedule`)
    :param critic_learning_rate: Critic learning rate, a float or a schedule; None uses ``learning_rate``
    :param n_steps: Window length H: simulation steps per environment and per iteration, through
        which gradients are backpropagated
    :param n_epochs: Number of policy epochs M over each window's cached samples (1 gives SHAC)
    :param batch_size: Minibatch size of the policy epochs; None uses the whole window (n_steps * n_envs)
    :param gamma: Discount factor
    :param gae_lambda: lambda of the TD(lambda) critic targets
    :param ent_coef: Entropy coefficient. "Entropy" is always that of the action distribution the env sees
        (the tanh-squashed Gaussian mapped affinely to the Box), estimated per sample from one fresh noise as
        SAPO does (:func:`sb3_rpo.rpo.policies.squashed_entropy_estimate`). A float is a fixed bonus on the mean
        entropy in the policy loss. ``"auto"`` (or ``"auto_<init>"``, e.g. ``"auto_0.1"``; init 1) learns a
        temperature alpha towards ``target_entropy`` and adds alpha * entropy to the rewards of the window
        return and of the critic targets (SAPO's soft return): the policy step is then BPTT of the soft return
    :param target_entropy: Target of ``ent_coef="auto"``, in nats of the env's action distribution; ``"auto"``
        is SAPO's -dim(A) / 2 for actions in (-1, 1), moved by the Box's scale: -dim(A) / 2 + sum(log((high - low) / 2))
    :param ent_coef_learning_rate: Learning rate of the temperature (a float or a schedule), Adam with betas
        (0.7, 0.95) on log(alpha), SAPO's values; its gradient is not clipped
    :param normalize_entropy: Reward alpha * E with SAPO's normalization E = (H - target) / (2 |target'|) instead
        of alpha * H, where target' = target - sum(log((high - low) / 2)) is the target for actions in (-1, 1)
        (SAPO: E = (H + |target|) / (2 |target|)); the temperature loss is then scaled by |target'| as SAPO's
    :param kl_coef: Weight of the KL(pi_old || pi_theta) penalty (0 disables it)
    :param clip_low: Lower half-width of the importance-weight band: samples with rho < 1 - clip_low give
        no gradient (None: no lower bound)
    :param clip_high: Upper half-width of the band: samples with rho > 1 + clip_high give no gradient
        (None: no upper bound)
    :param tau: Target-critic update coefficient, target <- (1 - tau) * target + tau * critic
        (SHAC's alpha = 0.2 is tau = 0.8)
    :param n_critic_iterations: Passes over the window's samples to fit the critics per iteration
    :param n_critic_batches: Minibatches per critic pass
    :param max_grad_norm: Maximum norm of the actor's and the critics' gradients
    :param n_envs: Number of environments built when ``env`` is an id (ignored for an env instance)
    :param stats_window_size: Window size of the rollout logging (episodes)
    :param tensorboard_log: The log location for tensorboard (if None, no logging)
    :param policy_kwargs: Additional arguments to be passed to the policy on creation (see :class:`RPOPolicy`)
    :param verbose: Verbosity level: 0 no output, 1 info messages, 2 debug messages
    :param seed: Seed for the pseudo random generators (torch, numpy, the environment)
    :param device: Device (cpu, cuda, ...) on which the code should be run; "auto" uses cuda if possible
    :param _init_setup_model: Whether or not to build the network at the creation of the instance
    """

    policy_aliases: ClassVar[dict[str, type[BasePolicy]]] = {"MlpPolicy": RPOPolicy}
    policy: RPOPolicy
    env: DiffVecEnv | None  # type: ignore[assignment]

    def __init__(
        self,
        policy: str | type[RPOPolicy],
        env: DiffVecEnv | str | None,
        learning_rate: float | Schedule = DEFAULT_LEARNING_RATE,
        critic_learning_rate: float | Schedule | None = None,
        n_steps: int = 32,
        n_epochs: int = 5,
        batch_size: int | None = None,
        gamma: float = 0.99,
        gae_lambda: float = 0.95,
        ent_coef: float | str = 0.0,
        target_entropy: float | str = "auto",
        ent_coef_learning_rate: float | Schedule = 5e-3,
        normalize_entropy: bool = False,
        kl_coef: float = 0.2,
        clip_low: float | None = 0.8,
        clip_high: float | None = 1.0,
        tau: float = 0.8,
        n_critic_iterations: int = 16,
        n_critic_batches: int = 4,
        max_grad_norm: float = 1.0,
        n_envs: int = 64,
        stats_window_size: int = 100,
        tensorboard_log: str | None = None,
        policy_kwargs: dict[str, Any] | None = None,
        verbose: int = 0,
        seed: int | None = None,
        device: th.device | str = "auto",
        _init_setup_model: bool = True,
    ):
        if is_diff_env_id(env):
            env = make_diff_vec_env(env, n_envs=n_envs, seed=seed, device=get_device(device))  # type: ignore[arg-type]
        if env is not None:
            self._check_env(env)
        super().__init__(
            policy,
            env,  # type: ignore[arg-type]
            learning_rate=learning_rate,
            n_steps=n_steps,
            gamma=gamma,
            gae_lambda=gae_lambda,
            ent_coef=ent_coef,  # type: ignore[arg-type]
            vf_coef=0.0,
            max_grad_norm=max_grad_norm,
            use_sde=False,
            sde_sample_freq=-1,
            stats_window_size=stats_window_size,
            tensorboard_log=tensorboard_log,
            monitor_wrapper=False,
            policy_kwargs=policy_kwargs,
            verbose=verbose,
            seed=seed,
            device=device,
            _init_setup_model=False,
            supported_action_spaces=(spaces.Box,),
        )
        self.critic_learning_rate = critic_learning_rate
        self.n_epochs = n_epochs
        self.batch_size = batch_size
        self.target_entropy = target_entropy
        self.ent_coef_learning_rate = ent_coef_learning_rate
        self.normalize_entropy = normalize_entropy
        self.kl_coef = kl_coef
        self.clip_low = clip_low
        self.clip_high = clip_high
        self.tau = tau
        self.n_critic_iterations = n_critic_iterations
        self.n_critic_batches = n_critic_batches
        self.skipped_updates = 0
        self.log_ent_coef: th.Tensor | None = None
        self.ent_coef_optimizer: th.optim.Optimizer | None = None
        self._last_obs_t: th.Tensor | None = None
        self._rollout_values: th.Tensor | None = None  # critics' values of the window, for explained_variance
        self._gradient_path_checked = False
        self._validate_arguments()
        if _init_setup_model:
            self._setup_model()

    # ------------------------------------------------------------------ setup
    def _validate_arguments(self) -> None:
        """Refuse, at construction and with what to do, the arguments that would crash deep inside or train silently wrong."""
        for name in ("n_steps", "n_epochs", "n_critic_batches"):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        if not isinstance(self.n_critic_iterations, (int, np.integer)) or self.n_critic_iterations < 0:
            raise ValueError(f"n_critic_iterations must be an integer >= 0 (0: no critic fit), got {self.n_critic_iterations}")
        if self.batch_size is not None and (not isinstance(self.batch_size, (int, np.integer)) or self.batch_size < 1):
            raise ValueError(f"batch_size must be an integer >= 1, or None for the whole window, got {self.batch_size!r}")
        for name in ("gamma", "gae_lambda"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)!r}")
        if not 0.0 < self.tau <= 1.0:
            raise ValueError(f"tau must be in (0, 1] (1 copies the critics into the targets), got {self.tau!r}")
        if self.kl_coef < 0:
            raise ValueError(f"kl_coef must be >= 0 (0 disables the KL penalty), got {self.kl_coef!r}")
        if not self.max_grad_norm > 0:
            raise ValueError(f"max_grad_norm must be > 0 (use float('inf') for no clipping), got {self.max_grad_norm!r}")
        if self.clip_low is not None and not 0.0 <= self.clip_low < 1.0:
            raise ValueError(
                f"clip_low must be in [0, 1) (samples with ratio < 1 - clip_low give no gradient), got {self.clip_low!r}; "
                "use clip_low=None for no lower bound."
            )
        if self.clip_high is not None and not self.clip_high >= 0.0:
            raise ValueError(f"clip_high must be >= 0, got {self.clip_high!r}; use clip_high=None for no upper bound.")
        if isinstance(self.ent_coef, str):
            init = self.ent_coef.removeprefix("auto_") if self.ent_coef.startswith("auto_") else None
            if self.ent_coef != "auto" and not (init is not None and _is_positive_float(init)):
                raise ValueError(
                    f"ent_coef must be a float, 'auto' or 'auto_<init>' with an initial value > 0 (e.g. 'auto_0.1'), "
                    f"got {self.ent_coef!r}"
                )
        if self.env is not None and self.batch_size is not None:
            window = self.n_steps * self.env.num_envs
            if window % self.batch_size:
                warnings.warn(
                    f"batch_size={self.batch_size} does not divide the window (n_steps * n_envs = {self.n_steps} x "
                    f"{self.env.num_envs} = {window}): after every {window // self.batch_size} full minibatches there "
                    f"will be a truncated one of size {window % self.batch_size}. Choose a batch_size that divides {window}.",
                    stacklevel=3,
                )

    @staticmethod
    def _check_env(env: Any) -> None:
        """Refuse, with what to do instead, every env RPO cannot backpropagate through."""
        if isinstance(env, str):
            raise ValueError(
                f"{env!r} is not a registered differentiable environment. RPO backpropagates through the simulator, "
                f"so it needs a DiffVecEnv; registered ids: {', '.join(list_diff_envs())}. "
                "For a non-differentiable gymnasium env use a model-free algorithm such as PPO or SAC."
            )
        inner = env
        while isinstance(inner, VecEnvWrapper):
            if isinstance(inner, VecNormalize):
                raise ValueError(
                    "VecNormalize would cut the gradient path through the simulator. Pass the DiffVecEnv itself: "
                    "RPO normalizes observations inside the graph (policy_kwargs=dict(normalize_obs=True), the default)."
                )
            inner = inner.venv
        if not isinstance(env, DiffVecEnv):
            kind = "a VecEnv wrapper" if isinstance(env, VecEnvWrapper) else f"a {type(env).__name__}"
            raise TypeError(
                f"RPO needs a differentiable environment (sb3_rpo.DiffVecEnv), got {kind}. Use "
                "sb3_rpo.make_diff_vec_env(env_id, n_envs) or a registered id string, or wrap your simulator with "
                "sb3_rpo.DiffTaskVecEnv / JacobianVecEnv. Episode statistics are built in: no Monitor/VecMonitor needed."
            )
        if not isinstance(env.action_space, spaces.Box):
            raise TypeError(
                f"RPO needs a continuous Box action space (a reparameterized Gaussian), got {env.action_space}. "
                "For discrete actions use PPO."
            )
        if not np.all(np.isfinite(env.action_space.low)) or not np.all(np.isfinite(env.action_space.high)):
            raise ValueError("RPO squashes actions into the Box bounds: the action space needs finite low and high.")
        if not isinstance(env.observation_space, spaces.Box) or len(env.observation_space.shape) != 1:
            raise TypeError(
                f"RPO needs a flat Box observation space, got {env.observation_space}. "
                "Concatenate dict/image observations into one vector in the environment's observation()."
            )

    def set_env(self, env: GymEnv, force_reset: bool = True) -> None:
        self._check_env(env)
        super().set_env(env, force_reset=force_reset)
        self._last_obs_t = None
        self._adapt_to_env_dtype(env)  # type: ignore[arg-type]

    def _adapt_to_env_dtype(self, env: DiffVecEnv) -> None:
        """Run the policy, its optimizers' state and the temperature in ``env.dtype``, as ``load(..., env=env)`` does."""
        if getattr(self, "policy", None) is None or self.policy.dtype == env.dtype:  # no policy yet: built in env.dtype
            return
        self.policy.to(dtype=env.dtype)  # in place: the optimizers keep their parameters
        optimizers = [self.policy.actor.optimizer, self.policy.critic.optimizer]
        if self.log_ent_coef is not None and self.ent_coef_optimizer is not None:
            self.log_ent_coef.data = self.log_ent_coef.data.to(env.dtype)
            optimizers.append(self.ent_coef_optimizer)
        for optimizer in optimizers:
            for state in optimizer.state.values():
                for key, value in state.items():
                    if key != "step" and th.is_tensor(value) and value.is_floating_point():
                        state[key] = value.to(env.dtype)

    def _setup_model(self) -> None:
        self._setup_lr_schedule()
        self.critic_lr_schedule = FloatSchedule(
            self.learning_rate if self.critic_learning_rate is None else self.critic_learning_rate
        )
        self.set_random_seed(self.seed)
        self.rollout_buffer = None  # type: ignore[assignment]  # a DiffRolloutBuffer per window
        self.policy = self.policy_class(  # type: ignore[assignment]
            self.observation_space,
            self.action_space,
            self.lr_schedule,
            critic_lr_schedule=self.critic_lr_schedule,
            **self.policy_kwargs,
        )
        dtype = self.env.dtype if self.env is not None else th.float32
        self.policy = self.policy.to(device=self.device, dtype=dtype)

        self._setup_temperature(dtype)

    def _setup_temperature(self, dtype: th.dtype) -> None:
        """The target entropy, its scale, and for ``ent_coef="auto"`` the learned log-temperature and its optimizer."""
        low, high = self.action_space.low.astype(np.float64), self.action_space.high.astype(np.float64)  # type: ignore[union-attr]
        log_scale = float(np.log((high - low) / 2).sum())
        if self.target_entropy == "auto":
            self.target_entropy = -float(np.prod(self.action_space.shape)) / 2 + log_scale  # type: ignore[assignment]
        # |target'|: SAPO's |target| for actions in (-1, 1), the scale of its entropy normalization
        self._entropy_scale = abs(float(self.target_entropy) - log_scale) if self.normalize_entropy else 1.0
        if self._entropy_scale == 0.0:
            raise ValueError(
                "normalize_entropy divides by |target_entropy - sum(log((high - low) / 2))|, which is 0 here: "
                "choose another target_entropy or normalize_entropy=False."
            )
        self.ent_coef_lr_schedule = FloatSchedule(self.ent_coef_learning_rate)
        if isinstance(self.ent_coef, str):
            if not self.ent_coef.startswith("auto"):
                raise ValueError(f"ent_coef must be a float, 'auto' or 'auto_<init>', got {self.ent_coef!r}")
            init = float(self.ent_coef.split("_")[1]) if "_" in self.ent_coef else 1.0
            if init <= 0:
                raise ValueError(f"The initial entropy coefficient of {self.ent_coef!r} must be > 0")
            self.log_ent_coef = th.log(th.ones(1, device=self.device, dtype=dtype) * init).requires_grad_(True)
            self.ent_coef_optimizer = th.optim.Adam([self.log_ent_coef], lr=self.ent_coef_lr_schedule(1), betas=(0.7, 0.95))

    def _excluded_save_params(self) -> list[str]:
        return [
            *super()._excluded_save_params(),
            "_last_obs_t",
            "_rollout_values",
            "_timings",
            "log_ent_coef",
            "ent_coef_optimizer",
        ]

    def _get_torch_save_params(self) -> tuple[list[str], list[str]]:
        state_dicts = ["policy", "policy.actor.optimizer", "policy.critic.optimizer"]
        if self.ent_coef_optimizer is None:
            return state_dicts, []
        return [*state_dicts, "ent_coef_optimizer"], ["log_ent_coef"]

    def _setup_learn(
        self,
        total_timesteps: int,
        callback: MaybeCallback = None,
        reset_num_timesteps: bool = True,
        tb_log_name: str = "run",
        progress_bar: bool = False,
    ) -> tuple[int, BaseCallback]:
        resets = reset_num_timesteps or self._last_obs is None  # SB3's rule: then its _setup_learn resets the env
        total_timesteps, callback = super()._setup_learn(
            total_timesteps, callback, reset_num_timesteps, tb_log_name, progress_bar
        )
        # The first window starts from the env's real state: after that one reset, or where the episodes are now
        # (also after the env was stepped outside learn(), or given to set_env / load with force_reset=False).
        assert self.env is not None
        obs = self.env.diff_observation()
        if obs is None and not resets and self._last_obs_t is not None:
            obs = self._last_obs_t  # an env that cannot tell: the last window's end
        if obs is None:
            if not resets:  # a new env never reset
                self._last_obs, self._last_episode_starts = self.env.reset(), np.ones((self.env.num_envs,), dtype=bool)
            obs = self.env.diff_observation()
            if obs is None:
                obs = th.as_tensor(self._last_obs, device=self.env.device).to(self.env.dtype)
        self._last_obs_t = obs.detach()
        self._last_obs = obs.detach().cpu().numpy().astype(np.float32)  # type: ignore[assignment]
        return total_timesteps, callback

    @property
    def ent_coef_value(self) -> th.Tensor:
        """Current entropy coefficient (alpha): the learned temperature in auto mode, else the fixed float."""
        if self.log_ent_coef is not None:
            return self.log_ent_coef.detach().exp()[0]
        return th.tensor(float(self.ent_coef), device=self.device, dtype=self.policy.dtype)

    def soft_entropy(self, entropy: th.Tensor, alpha: th.Tensor) -> th.Tensor:
        """The entropy term alpha * E added to each reward in auto mode (E = H, or SAPO's normalization)."""
        if self.normalize_entropy:
            entropy = (entropy - self.target_entropy) / (2 * self._entropy_scale)
        return alpha * entropy

    # ------------------------------------------------------------------ steps 1-2: rollout, one backward pass, cache
    def rollout_window(self, env: DiffVecEnv) -> tuple[DiffRolloutBuffer, list[dict[str, Any]]]:
        """
        Simulate one window with the graph recorded, backpropagate the window return once, and cache
        the action-gradients with everything the epochs and the critic need.

        :return: the buffer and, per step, the environment's outputs for SB3's bookkeeping
        """
        policy, timings = self.policy, {}
        assert self._last_obs_t is not None
        env.detach_state()  # 1. the window starts here: no gradient reaches earlier states
        obs = self._last_obs_t
        alpha = self.ent_coef_value if self.log_ent_coef is not None else None  # read once: frozen for the window
        discount = th.ones(env.num_envs, device=self.device, dtype=policy.dtype)  # gamma^(k - segment start)
        steps: list[dict[str, Any]] = []
        start = time.perf_counter()
        for _ in range(self.n_steps):
            norm_obs = policy.normalize(obs)  # statistics frozen for this iteration
            mean, std = policy.actor(norm_obs)
            actions = mean + std * th.randn_like(mean)  # a = f_theta(eps; s), pre-squash
            # Entropy of the env's action distribution at s_k, from a fresh noise (SAPO's estimate), differentiable.
            entropy_noise = th.randn_like(mean)
            entropy = policy.entropy_estimate(mean, std, entropy_noise)
            next_obs, rewards, terminated, truncated, info = env.diff_step(policy.to_env_action(actions).to(env.device))
            env_rewards = rewards.to(self.device, policy.dtype)
            # soft return of ent_coef="auto" (SAPO); callbacks and episode statistics see the env's rewards
            rewards = env_rewards if alpha is None else env_rewards + self.soft_entropy(entropy, alpha)
            steps.append(
                dict(
                    raw_obs=obs,
                    norm_obs=norm_obs,
                    actions=actions,
                    mean=mean,
                    std=std,
                    entropy_noise=entropy_noise,
                    entropy=entropy,
                    discount=discount,
                    rewards=rewards,
                    env_rewards=env_rewards,
                    terminated=terminated,
                    truncated=truncated,
                    info=info,
                    next_obs=next_obs,
                )
            )
            done = (terminated | truncated).to(self.device)
            discount = th.where(done, th.ones_like(discount), discount * self.gamma)
            obs = next_obs
        self._last_obs_t = obs.detach()
        env.report_nonfinite()  # what the guards counted in this window: one host sync, one warning
        stack = lambda key: th.stack([step[key] for step in steps])  # noqa: E731
        rewards, terminated = stack("rewards"), stack("terminated").to(self.device)
        dones = terminated | stack("truncated").to(self.device)
        final_obs = th.stack([step["info"]["final_obs"] for step in steps]).to(self.device)
        next_values = policy.values(policy.normalize(final_obs.flatten(0, 1)), target=True).unflatten(1, rewards.shape)
        objective = window_objective(rewards, next_values.mean(0), terminated, dones, self.gamma).sum()
        timings["forward"] = time.perf_counter() - start

        # 2. One backward pass: g_k = dR/da_k through dynamics, rewards, later actions and the terminal critic.
        start = time.perf_counter()
        if not self._gradient_path_checked:
            self._check_gradient_path(env, objective, steps)
        actions_in = [step["actions"] for step in steps]
        action_grads = th.autograd.grad(objective, actions_in, allow_unused=True, materialize_grads=True)
        timings["backward"] = time.perf_counter() - start
        if not self._gradient_path_checked:  # once: one host sync
            self._gradient_path_checked = True
            if not bool(th.stack(action_grads).any()):
                warnings.warn(
                    f"RPO: every action-gradient of the first window is exactly zero: nothing in {type(env).__name__}'s "
                    f"rewards or observations depends on the actions. {_NO_GRADIENT_CAUSES}",
                    stacklevel=4,
                )

        with th.no_grad():
            # Critic targets of the env's rewards; those of the entropy term follow in train(), with the stepped alpha.
            entropies = stack("entropy").detach()
            env_rewards = stack("env_rewards").detach()
            targets = td_lambda_targets(env_rewards, next_values.min(0).values, terminated, dones, self.gamma, self.gae_lambda)
            soft = self.soft_entropy(entropies, th.ones((), dtype=entropies.dtype, device=entropies.device))  # E_k
            entropy_targets = td_lambda_targets(soft, th.zeros_like(soft), terminated, dones, self.gamma, self.gae_lambda)
            mean_old, std_old, actions = stack("mean"), stack("std"), stack("actions")
            buffer = DiffRolloutBuffer(
                observations=stack("norm_obs").detach(),
                raw_observations=stack("raw_obs").detach(),
                actions=actions.detach(),
                action_grads=th.stack(action_grads),
                old_mean=mean_old.detach(),
                old_std=std_old.detach(),
                old_log_prob=gaussian_log_prob(actions, mean_old, std_old).detach(),
                rewards=rewards.detach(),
                dones=dones,
                returns=targets.detach(),
                entropy_noise=stack("entropy_noise"),
                discounts=stack("discount"),
                entropies=entropies,
                entropy_returns=entropy_targets,
            )
        self._timings = timings
        return buffer, steps

    def _check_gradient_path(self, env: DiffVecEnv, objective: th.Tensor, steps: list[dict[str, Any]]) -> None:
        """Say, once, when the window's rewards (warning) or everything (error) has no autograd path to the actions."""
        name = type(env).__name__
        rewards_path = any(step["env_rewards"].requires_grad for step in steps)
        obs_path = any(step["info"]["final_obs"].requires_grad for step in steps)
        if not objective.requires_grad or not (rewards_path or obs_path):
            raise RuntimeError(
                f"RPO backpropagates the window return to the actions, but {name} returned rewards and observations "
                f"with no autograd graph: no gradient can reach the actions. {_NO_GRADIENT_CAUSES}"
            )
        if not rewards_path:
            warnings.warn(
                f"RPO: the rewards of {name} have no autograd path to the actions (they do not require grad): the "
                f"actor learns only through the critic's bootstrap. {_NO_GRADIENT_CAUSES}",
                stacklevel=4,
            )

    def collect_rollouts(
        self, env: VecEnv, callback: BaseCallback, rollout_buffer: RolloutBuffer, n_rollout_steps: int
    ) -> bool:
        """Run :meth:`rollout_window`, then SB3's per-step bookkeeping (callbacks, episode statistics)."""
        assert isinstance(env, DiffVecEnv) and n_rollout_steps == self.n_steps
        self.policy.set_training_mode(False)
        callback.on_rollout_start()
        self.rollout_buffer, steps = self.rollout_window(env)  # type: ignore[assignment]

        # The policy is the same during the whole window, so callbacks can see its steps after the fact:
        # one host transfer per window instead of one per step.
        buffer: DiffRolloutBuffer = self.rollout_buffer  # type: ignore[assignment]
        rollout_buffer = buffer  # type: ignore[assignment]  # PPO's callback local: the window's buffer
        with th.no_grad():
            env_actions = self.policy.to_env_action(buffer.actions.flatten(0, 1)).unflatten(0, buffer.rewards.shape)
            # V(s_k) of the critics' mean before this iteration's fit: PPO's `values`, and train/explained_variance
            self._rollout_values = (
                self.policy.values(buffer.observations.flatten(0, 1)).mean(0).unflatten(0, buffer.rewards.shape)
            )
        all_obs = th.stack([step["next_obs"] for step in steps]).detach().cpu().numpy().astype(np.float32)
        all_rewards = th.stack([step["env_rewards"] for step in steps]).detach().cpu().numpy()
        all_dones = buffer.dones.cpu().numpy()
        all_actions = buffer.actions.cpu().numpy()
        all_clipped_actions = env_actions.cpu().numpy().astype(env.action_space.dtype)
        for k, step in enumerate(steps):
            new_obs, rewards, dones = all_obs[k], all_rewards[k], all_dones[k]
            # The names of PPO's locals: `actions` is the pre-squash Gaussian sample, `clipped_actions` the env's action.
            n_steps, obs_tensor, actions, clipped_actions = (
                k,
                buffer.raw_observations[k],
                all_actions[k],
                all_clipped_actions[k],
            )
            values, log_probs = self._rollout_values[k].unsqueeze(-1), buffer.old_log_prob[k]
            infos = env.sb3_infos(step["info"], step["terminated"], step["truncated"]) if dones.any() else [{}] * env.num_envs
            self.num_timesteps += env.num_envs
            callback.update_locals(locals())
            if not callback.on_step():
                return False
            self._update_info_buffer(infos, dones)
        self._last_obs, self._last_episode_starts = new_obs, dones
        callback.update_locals(locals())
        callback.on_rollout_end()
        return True

    # ------------------------------------------------------------------ step 3: policy epochs on cached gradients
    def policy_loss(self, batch: PolicySamples, ent_coef: th.Tensor) -> tuple[th.Tensor, dict[str, th.Tensor]]:
        """
        Negative RPO objective of a minibatch: -(L_surr - kl_coef * L_KL + L_ent).

        L_ent is ``ent_coef`` times the mean entropy estimate for a float ``ent_coef``. In auto mode the
        entropy is in the window's rewards, so g = dR/da already carries its dependence through later states;
        L_ent is then its direct dependence on theta at the sample's own state: the mean of
        gamma^(k - segment start) * alpha * E_k(theta), with the rollout's entropy noise, so that one epoch on
        the whole batch is exactly BPTT of the soft window return.
        """
        mean, std = self.policy.actor(batch.observations)
        # Regenerated noise: eps_hat equals the rollout's noise at theta_old, and a_hat(theta) equals a there.
        noise = ((batch.actions - mean) / std).detach()
        actions = mean + std * noise
        log_ratio = (gaussian_log_prob(batch.actions, mean, std) - batch.old_log_prob).clamp(-20.0, 20.0)
        ratio = th.exp(log_ratio)
        # RPG clipping: samples outside [1 - clip_low, 1 + clip_high] give no gradient, whatever their sign.
        in_band = th.ones_like(ratio, dtype=th.bool)
        if self.clip_low is not None:
            in_band &= ratio >= 1.0 - self.clip_low
        if self.clip_high is not None:
            in_band &= ratio <= 1.0 + self.clip_high
        weight = (ratio * in_band).detach()
        surrogate = (weight * (batch.action_grads * actions).sum(-1)).mean()  # theta-gradient: w (da/dtheta)^T g
        kl = gaussian_kl(batch.old_mean, batch.old_std, mean, std).mean()
        loss = -(surrogate - self.kl_coef * kl)
        stats = {"kl": kl.detach(), "max_ratio": ratio.max().detach(), "effective_sample_ratio": in_band.float().mean()}
        if batch.entropy_noise is not None:
            entropy = self.policy.entropy_estimate(mean, std, batch.entropy_noise)
            if self.log_ent_coef is not None:
                assert batch.discounts is not None
                loss = loss - (batch.discounts * self.soft_entropy(entropy, ent_coef)).mean()
            else:
                loss = loss - ent_coef * entropy.mean()
        return loss, stats

    def _finite_step(
        self, loss: th.Tensor, optimizer: th.optim.Optimizer, params: list[th.nn.Parameter], max_norm: float | None = None
    ) -> th.Tensor | None:
        """
        Backpropagate ``loss`` and step, unless the loss or a gradient is non-finite (then count and skip).

        :param max_norm: The gradient-norm clip; None uses ``max_grad_norm`` (pass ``inf`` for no clipping)
        """
        optimizer.zero_grad(set_to_none=True)
        if th.isfinite(loss):
            loss.backward()
            grad_norm = th.nn.utils.clip_grad_norm_(params, self.max_grad_norm if max_norm is None else max_norm)
            if th.isfinite(grad_norm):
                optimizer.step()
                return grad_norm
        optimizer.zero_grad(set_to_none=True)
        self.skipped_updates += 1
        return None

    def fit_critics(self, buffer: DiffRolloutBuffer) -> list[th.Tensor]:
        """
        Step 4: ``n_critic_iterations`` passes of ``n_critic_batches`` minibatches fitting every critic of the
        ensemble to the TD(lambda) targets, the whole (fused) ensemble in one optimizer step per minibatch.

        :return: the loss of each minibatch (the sum over critics of their mean squared errors), as tensors
        """
        critic = self.policy.critic
        params, losses = list(critic.parameters()), []
        for batch in buffer.critic_batches(self.n_critic_batches, self.n_critic_iterations):
            critic_loss = (critic(batch.observations) - batch.returns).square().mean(-1).sum()
            self._finite_step(critic_loss, critic.optimizer, params)
            losses.append(critic_loss.detach())
        return losses

    def train(self) -> None:
        """
        One RPO update from the window that :meth:`collect_rollouts` simulated and differentiated
        (steps 1-2 of the algorithm): policy epochs, temperature (auto mode), critic fit, target update,
        observation statistics.
        """
        buffer: DiffRolloutBuffer = self.rollout_buffer  # type: ignore[assignment]
        policy = self.policy
        policy.set_training_mode(True)
        self._update_learning_rate(policy.actor.optimizer)
        critic_lr = self.critic_lr_schedule(self._current_progress_remaining)
        update_learning_rate(policy.critic.optimizer, critic_lr)
        if self.ent_coef_optimizer is not None:
            update_learning_rate(self.ent_coef_optimizer, self.ent_coef_lr_schedule(self._current_progress_remaining))
        actor_params = list(policy.actor.parameters())
        logs: dict[str, list[th.Tensor]] = {}  # tensors: one host transfer per iteration, not per step

        # 3. Policy epochs over the cached window (skipped whole if the simulator gave non-finite gradients).
        start = time.perf_counter()
        grads_finite = bool(th.isfinite(buffer.action_grads).all())
        if not grads_finite:
            self.skipped_updates += 1
        for _ in range(self.n_epochs if grads_finite else 0):
            for batch in buffer.policy_batches(self.batch_size):
                loss, stats = self.policy_loss(batch, self.ent_coef_value)
                grad_norm = self._finite_step(loss, policy.actor.optimizer, actor_params)
                if grad_norm is not None:
                    logs.setdefault("actor_grad_norm", []).append(grad_norm)
                logs.setdefault("actor_loss", []).append(loss.detach())
                for key, value in stats.items():
                    logs.setdefault(key, []).append(value)
        epochs_time = time.perf_counter() - start

        if self.ent_coef_optimizer is not None and self.log_ent_coef is not None:
            # 3b. Temperature: one step per window after the policy's (SAPO's order and loss), on the rollout's
            # entropy estimates: alpha * |target'| * (mean H - target); not clipped by max_grad_norm (as SAC; the
            # published SAPO clips it at 0.5, which Adam's normalization mostly undoes).
            # Soft critic targets: TD(lambda) is linear in the rewards, so those of r + alpha * E are the targets
            # of r plus alpha times those of E, with the stepped alpha as SAPO's.
            ent_loss = self.log_ent_coef.exp() * self._entropy_scale * (buffer.entropies.mean() - self.target_entropy)
            self._finite_step(ent_loss.sum(), self.ent_coef_optimizer, [self.log_ent_coef], max_norm=float("inf"))  # type: ignore[list-item]
            buffer.returns = buffer.returns + self.ent_coef_value * buffer.entropy_returns
        logs["entropy"] = [buffer.entropies.mean()]  # of the env's action distribution, what auto mode targets

        # 4. Critic: fit every critic of the ensemble to the TD(lambda) targets, then the Polyak target update.
        start = time.perf_counter()
        if bool(th.isfinite(buffer.returns).all()):
            logs["critic_loss"] = self.fit_critics(buffer)
            polyak_update(policy.critic.parameters(), policy.critic_target.parameters(), self.tau)
        else:
            self.skipped_updates += 1
        critic_time = time.perf_counter() - start

        # 5. Observation statistics: updated only now, so the next window sees a new fixed affine map.
        policy.obs_normalizer.update(buffer.raw_observations)

        logs.update(self._policy_and_critic_diagnostics(buffer))

        self._n_updates += 1
        for key, values in logs.items():
            self.logger.record(f"train/{key}", th.stack(values).double().mean().item())
        self.logger.record("train/action_grad_norm", buffer.action_grads.norm(dim=-1).mean().item())
        self.logger.record("train/skipped_updates", self.skipped_updates)
        self.logger.record("train/ent_coef", self.ent_coef_value.item())
        self.logger.record("train/critic_learning_rate", critic_lr)
        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")
        for key, seconds in {**self._timings, "policy_epochs": epochs_time, "critic": critic_time}.items():
            self.logger.record(f"time/{key}_s", seconds)

    @th.no_grad()
    def _policy_and_critic_diagnostics(self, buffer: DiffRolloutBuffer) -> dict[str, list[th.Tensor]]:
        """PPO's ``train/std`` (after the update) and ``train/explained_variance`` (critics before the fit, on the targets)."""
        _, std = self.policy.actor(buffer.observations.flatten(0, 1))
        diagnostics = {"std": [std.mean()]}
        if self._rollout_values is not None:  # set by collect_rollouts for this window
            targets = buffer.returns.flatten()
            residual_var, target_var = (targets - self._rollout_values.flatten()).var(), targets.var()
            diagnostics["explained_variance"] = [th.where(target_var > 0, 1 - residual_var / target_var, th.nan)]
            self._rollout_values = None
        return diagnostics

    def learn(
        self: SelfRPO,
        total_timesteps: int,
        callback: MaybeCallback = None,
        log_interval: int = 1,
        tb_log_name: str = "RPO",
        reset_num_timesteps: bool = True,
        progress_bar: bool = False,
    ) -> SelfRPO:
        super().learn(total_timesteps, callback, log_interval, tb_log_name, reset_num_timesteps, progress_bar)
        # SB3 dumps before train(): write the last iteration's train/ and time/ values too.
        if log_interval is not None and self.logger.name_to_value:
            self.logger.dump(step=self.num_timesteps)
        return self
