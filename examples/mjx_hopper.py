"""Train RPO on brax's MJX Hopper (MuJoCo XLA, gradients through jax.vjp), briefly, on a CPU.

    pip install "sb3-rpo[mjx]"
    python examples/mjx_hopper.py                        # 100k env steps, 32 envs: ~3 min of XLA compilation + training
    python examples/mjx_hopper.py --env MJXAnt-v0 --timesteps 50000

XLA compiles the reset, the step and the step's vjp once per batch size (about 2 min for the hopper on a CPU
core; a persistent cache, ``JAX_COMPILATION_CACHE_DIR=...``, makes later runs start in seconds). The evaluation
uses the training env's batch size, so that it reuses the compiled programs.
"""

import argparse
import time

import torch as th
from stable_baselines3.common.evaluation import evaluate_policy

from sb3_rpo import RPO, make_diff_vec_env

# As for MuJoCo's Hopper (hyperparams/rpo.yml, MujocoFDHopper-v5): short windows, contact gradients grow with them.
HYPERPARAMS = dict(n_steps=8, learning_rate=1e-3, policy_kwargs=dict(net_arch=[64, 64]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", default="MJXHopper-v0")
    parser.add_argument("--timesteps", type=int, default=100_000)
    parser.add_argument("--n-envs", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    th.set_num_threads(1)

    start = time.time()
    env = make_diff_vec_env(args.env, n_envs=args.n_envs, seed=args.seed)
    model = RPO("MlpPolicy", env, seed=args.seed, device="cpu", **HYPERPARAMS)
    eval_env = make_diff_vec_env(args.env, n_envs=args.n_envs, seed=args.seed + 1000)  # same shape: no new compile
    before, _ = evaluate_policy(model, eval_env, n_eval_episodes=args.n_envs, deterministic=True)
    setup = time.time() - start
    print(f"RPO on {args.env}: {args.n_envs} envs x {model.n_steps}-step windows; setup and XLA compilation {setup:.0f} s")
    print(f"mean return of the untrained policy ({args.n_envs} episodes): {before:.1f}")

    start = time.time()
    model.learn(args.timesteps)
    elapsed = time.time() - start
    after, std = evaluate_policy(model, eval_env, n_eval_episodes=args.n_envs, deterministic=True)
    print(f"trained for {model.num_timesteps} env steps in {elapsed:.0f} s ({model.num_timesteps / elapsed:.0f} steps/s)")
    print(f"mean return of the trained policy ({args.n_envs} deterministic episodes): {after:.1f} +/- {std:.1f}")


if __name__ == "__main__":
    main()
