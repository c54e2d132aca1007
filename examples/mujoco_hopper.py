"""Train RPO on MuJoCo's Hopper through finite-difference Jacobians, then evaluate it on gymnasium's official Hopper-v5.

    pip install "sb3-rpo[mujoco]"
    python examples/mujoco_hopper.py                    # 100k env steps, a few minutes on a laptop CPU
    python examples/mujoco_hopper.py --algo shac --timesteps 200000

The policy trains on MujocoFDHopper-v5 (gymnasium's Hopper-v5 model, reward and termination, Euler integrator,
gradients from mjd_transitionFD) and is evaluated on gymnasium's own Hopper-v5 (RK4): what it learned transfers.
"""

import argparse
import os
import time

import torch as th
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.evaluation import evaluate_policy

from sb3_rpo import RPO, SHAC, make_diff_vec_env


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--algo", default="rpo", choices=["rpo", "shac"])
    parser.add_argument("--timesteps", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)), help="MuJoCo threads (Jacobians)")
    args = parser.parse_args()
    th.set_num_threads(1)  # small networks: one torch thread; the cores go to MuJoCo's finite differences

    env = make_diff_vec_env("MujocoFDHopper-v5", n_envs=32, seed=args.seed, n_threads=args.threads)
    algo = RPO if args.algo == "rpo" else SHAC
    model = algo("MlpPolicy", env, n_steps=8, learning_rate=3e-4, seed=args.seed, verbose=0)
    official = make_vec_env("Hopper-v5", n_envs=1, seed=args.seed + 1000)

    before, _ = evaluate_policy(model, official, n_eval_episodes=5, deterministic=True)
    print(f"{args.algo.upper()} on MujocoFDHopper-v5, {env.num_envs} envs, {env.n_threads} MuJoCo thread(s)")
    print(f"untrained policy on gymnasium's Hopper-v5 (5 episodes): {before:.1f}")
    start = time.time()
    model.learn(args.timesteps, progress_bar=True)
    elapsed = time.time() - start
    after, std = evaluate_policy(model, official, n_eval_episodes=5, deterministic=True)
    print(f"trained for {model.num_timesteps} env steps in {elapsed:.0f} s ({model.num_timesteps / elapsed:.0f} steps/s)")
    print(f"trained policy on gymnasium's Hopper-v5 (5 deterministic episodes): {after:.1f} +/- {std:.1f}")


if __name__ == "__main__":
    main()
