"""Learning check over every embedded task: RPO (and optionally SHAC) with the hyperparameters of
``hyperparams/<algo>.yml``, trained through the rl-zoo3 command line, against random actions.

    python benchmarks/learning_all_tasks.py                       # RPO, every task, 1 seed
    python benchmarks/learning_all_tasks.py --algos rpo shac --seeds 3 --envs DiffAcrobot-v0

Each run is ``python -m sb3_rpo.zoo train --algo <algo> --env <id> --seed <s> --eval-freq <n_timesteps/10>``
(10 deterministic evaluation episodes, 10 evaluations per run); the table reports the return of uniform
random actions, the first and the last evaluation (mean +- std over seeds) and the wall-clock time.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import yaml

from sb3_rpo import make_diff_vec_env
from sb3_rpo.envs import EMBEDDED_ENV_IDS

HYPERPARAMS = Path(__file__).resolve().parents[1] / "hyperparams"


def random_return(env_id: str, episodes: int = 10, seed: int = 0) -> float:
    """Mean undiscounted return of uniform random actions (the numpy face, one batch of ``episodes`` envs)."""
    env = make_diff_vec_env(env_id, n_envs=episodes, seed=seed)
    env.action_space.seed(seed)
    env.reset()
    returns: dict[int, float] = {}
    while len(returns) < episodes:
        actions = np.stack([env.action_space.sample() for _ in range(episodes)])
        _, _, dones, infos = env.step(actions)
        for i in np.flatnonzero(dones):
            returns.setdefault(int(i), infos[i]["episode"]["r"])
    return float(np.mean(list(returns.values())))


def train(algo: str, env_id: str, seed: int, n_timesteps: int, folder: Path) -> tuple[np.ndarray, np.ndarray, float]:
    """One zoo run; returns evaluation timesteps, mean returns and wall-clock seconds."""
    command = [
        sys.executable,
        "-m",
        "sb3_rpo.zoo",
        "train",
        "--algo",
        algo,
        "--env",
        env_id,
        "--seed",
        str(seed),
        "-f",
        str(folder),
        "--eval-freq",
        str(n_timesteps // 10),
        "--eval-episodes",
        "10",
        "--n-eval-envs",
        "10",
        "--device",
        "cpu",
        "--num-threads",
        "1",  # small networks: more threads only contend for the cores
        "--log-interval",
        "-1",
    ]
    start = time.time()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    elapsed = time.time() - start
    run_dir = max((folder / algo).glob(f"{env_id}_*"), key=lambda p: int(p.name.rsplit("_", 1)[1]))
    data = np.load(run_dir / "evaluations.npz")
    return data["timesteps"], data["results"].mean(axis=1), elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--envs", nargs="+", default=list(EMBEDDED_ENV_IDS))
    parser.add_argument("--algos", nargs="+", default=["rpo"])
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--folder", type=Path, default=Path("logs/learning_all_tasks"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/learning_all_tasks.json"))
    args = parser.parse_args()

    rows = []
    for env_id in args.envs:
        baseline = random_return(env_id)
        for algo in args.algos:
            n_timesteps = int(float(yaml.safe_load((HYPERPARAMS / f"{algo}.yml").read_text())[env_id]["n_timesteps"]))
            runs = [train(algo, env_id, seed, n_timesteps, args.folder) for seed in range(args.seeds)]
            first, last = np.array([r[1][0] for r in runs]), np.array([r[1][-1] for r in runs])
            rows.append(
                dict(
                    env=env_id,
                    algo=algo,
                    n_timesteps=n_timesteps,
                    random=baseline,
                    seeds=args.seeds,
                    first_eval_step=int(runs[0][0][0]),
                    first=first.tolist(),
                    last=last.tolist(),
                    minutes=[round(r[2] / 60, 2) for r in runs],
                )
            )
            print(f"{env_id} {algo}: random {baseline:.1f}, first {first.mean():.1f}, last {last.mean():.1f}", flush=True)

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(rows, indent=2))
    print("\n| task | algo | env steps | random actions | first evaluation | final evaluation | minutes per run |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for r in rows:
        first, last = np.array(r["first"]), np.array(r["last"])
        print(
            f"| {r['env']} | {r['algo']} | {r['n_timesteps']:,} | {r['random']:.1f} | {first.mean():.1f} "
            f"(at {r['first_eval_step']:,}) | {last.mean():.1f} +- {last.std():.1f} | {np.mean(r['minutes']):.1f} |"
        )


if __name__ == "__main__":
    main()
