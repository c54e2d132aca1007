"""Train RPO (Reparameterization PPO) on an embedded differentiable task, evaluate it, and save it.

python examples/train_rpo.py                       # DiffPendulum-v0, about a minute on a laptop CPU
python examples/train_rpo.py --algo shac           # the SHAC baseline: these envs, window and lr, DiffRL's other defaults
python examples/train_rpo.py --env DiffCartPoleSwingUp-v0 --timesteps 300000
"""

import argparse
import time

import torch as th
from stable_baselines3.common.evaluation import evaluate_policy

from sb3_rpo import RPO, SHAC, list_diff_envs, make_diff_vec_env

# RPO's Pendulum entry of before the benchmarks' tuning study (`DiffPendulum-v0 before tuning` in hyperparams/rpo.yml,
# replaced there by the study's best trial: docs/benchmarks.md); a reasonable start elsewhere.
HYPERPARAMS = dict(n_envs=16, n_steps=32, n_epochs=10, learning_rate=3e-3, policy_kwargs=dict(log_std_init=-0.5))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", default="DiffPendulum-v0", choices=list_diff_envs())
    parser.add_argument("--algo", default="rpo", choices=["rpo", "shac"])
    parser.add_argument("--timesteps", type=int, default=50_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--save", default="rpo_model", help="where to save the trained model (.zip)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (small networks: 1 is fastest)")
    args = parser.parse_args()
    th.set_num_threads(args.threads)

    kwargs = dict(HYPERPARAMS)
    if args.algo == "shac":
        kwargs.pop("n_epochs")
    algo = RPO if args.algo == "rpo" else SHAC
    model = algo("MlpPolicy", args.env, seed=args.seed, device=args.device, verbose=0, **kwargs)
    eval_env = make_diff_vec_env(args.env, n_envs=10, seed=args.seed + 1000, device=model.device)

    before, _ = evaluate_policy(model, eval_env, n_eval_episodes=10, deterministic=True)
    print(f"{args.algo.upper()} on {args.env}: {model.n_envs} envs x {model.n_steps}-step windows, device {model.device}")
    print(f"mean return of the untrained policy (10 episodes): {before:.1f}")
    start = time.time()
    model.learn(args.timesteps, progress_bar=True)
    elapsed = time.time() - start
    after, std = evaluate_policy(model, eval_env, n_eval_episodes=10, deterministic=True)
    print(f"trained for {model.num_timesteps} env steps in {elapsed:.1f} s ({model.num_timesteps / elapsed:.0f} steps/s)")
    print(f"mean return of the trained policy (10 deterministic episodes): {after:.1f} +/- {std:.1f}")
    model.save(args.save)
    print(f"saved to {args.save}.zip; reload with {algo.__name__}.load('{args.save}')")


if __name__ == "__main__":
    main()
