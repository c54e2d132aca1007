"""Train RPO on rewarped's DFlex Cartpole (swing-up) on the CPU, through warp's gradients.

pip install "sb3-rpo[rewarped]"
python examples/rewarped_cartpole.py                               # about a minute on one CPU core
python examples/rewarped_cartpole.py --env RewarpedDFlexAnt-v0 --timesteps 100000
python examples/rewarped_cartpole.py --device cuda --n-envs 256    # where warp has a GPU

The first run compiles warp's kernels (about a minute on 2 cores, cached in ~/.cache/warp).
"""

import argparse
import time

import torch as th
from stable_baselines3.common.evaluation import evaluate_policy

from sb3_rpo import RPO, make_diff_vec_env


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", default="RewarpedDFlexCartpole-v0")
    parser.add_argument("--timesteps", type=int, default=40_000)
    parser.add_argument("--n-envs", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--save", default="rpo_rewarped", help="where to save the trained model (.zip)")
    args = parser.parse_args()
    th.set_num_threads(1)  # small networks; warp runs its CPU kernels on one core anyway

    env = make_diff_vec_env(args.env, n_envs=args.n_envs, seed=args.seed, device=args.device)
    eval_env = make_diff_vec_env(args.env, n_envs=8, seed=args.seed + 1000, device=args.device)
    model = RPO(
        "MlpPolicy",
        env,
        n_steps=32,
        n_epochs=5,
        learning_rate=2e-3,
        policy_kwargs=dict(net_arch=[64, 64], log_std_init=-0.5),
        seed=args.seed,
        device=args.device,
    )
    before, _ = evaluate_policy(model, eval_env, n_eval_episodes=8, deterministic=True)
    print(f"RPO on {args.env}: {args.n_envs} envs x 32-step windows, device {model.device}")
    print(f"mean return of the untrained policy (8 episodes): {before:.1f}")
    start = time.time()
    model.learn(args.timesteps, progress_bar=True)
    elapsed = time.time() - start
    after, std = evaluate_policy(model, eval_env, n_eval_episodes=8, deterministic=True)
    print(f"trained for {model.num_timesteps} env steps in {elapsed:.0f} s ({model.num_timesteps / elapsed:.0f} steps/s)")
    print(f"mean return of the trained policy (8 deterministic episodes): {after:.1f} +/- {std:.1f}")
    model.save(args.save)
    print(f"saved to {args.save}.zip")


if __name__ == "__main__":
    main()
