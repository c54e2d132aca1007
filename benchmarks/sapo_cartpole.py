"""SAPO and RPO with ent_coef="auto" on rewarped's DFlex Cartpole (GitHub issue 10).

python benchmarks/sapo_cartpole.py --algo sapo --seed 0    # one run (~10-20 min on one core), its own JSON
python benchmarks/sapo_cartpole.py --launch                # every missing run, two processes at a time
python benchmarks/sapo_cartpole.py --report                # the table of the finished runs

Settings (the issue's): 64 envs, 32-step windows, 500k env steps, 2 critics, no target network (tau=1),
state-dependent std, ent_coef="auto". SAPO: sb3_rpo.SAPO's defaults (the authors' code). RPO: RPO's defaults
plus those settings. Evaluation: 16 episodes (one per env of an eval env seeded 1000 + seed), deterministic
(tanh(mu)) and stochastic. Reference on this task and budget: the authors' SAPO about -520, zero action -1818.
Each run writes benchmarks/results/sapo_cartpole/<algo>_seed<k>.json with the commit it ran on.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "benchmarks" / "results" / "sapo_cartpole"
ENV_ID = "RewarpedDFlexCartpole-v0"
ALGOS, SEEDS = ("sapo", "rpo"), (0, 1, 2)
N_ENVS, N_STEPS, TIMESTEPS, N_EVAL = 64, 32, 500_000, 16


def commit() -> str:
    """The commit the run's code comes from (a COMMIT file for an exported tree, e.g. `git archive HEAD`)."""
    if (ROOT / "COMMIT").exists():
        return (ROOT / "COMMIT").read_text().strip()
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "sb3_rpo"], cwd=ROOT, capture_output=True, text=True).stdout
    return head + ("+dirty" if dirty.strip() else "")


def evaluate(model, seed: int, deterministic: bool) -> dict:
    import torch as th
    from stable_baselines3.common.evaluation import evaluate_policy

    from sb3_rpo import make_diff_vec_env

    env = make_diff_vec_env(ENV_ID, n_envs=N_EVAL, seed=1000 + seed)
    observations = []
    returns, _ = evaluate_policy(
        model,
        env,
        n_eval_episodes=N_EVAL,
        deterministic=deterministic,
        return_episode_rewards=True,
        callback=lambda local, _: observations.append(np.array(local["observations"])),
    )
    env.close()
    policy = model.policy
    with th.no_grad():
        obs = th.as_tensor(np.concatenate(observations), dtype=policy.dtype)
        mean, std = policy.actor(policy.normalize(obs))
        noise = th.randn_like(mean)
        entropy = policy.entropy_estimate(mean, std, noise)
    return {
        "mean_return": float(np.mean(returns)),
        "std_return": float(np.std(returns)),
        "returns": [float(r) for r in returns],
        "median_abs_tanh_mu": float(th.tanh(mean).abs().median()),
        "mean_log_std": float(th.log(std).mean()),
        "max_log_std": float(th.log(std).max()),
        "min_log_std": float(th.log(std).min()),
        "squashed_entropy": float(entropy.mean()),
        "gaussian_entropy": float((th.log(std) + 0.5 * np.log(2 * np.pi * np.e)).sum(-1).mean()),
    }


def run(algo: str, seed: int) -> None:
    import torch as th
    from stable_baselines3.common.callbacks import BaseCallback

    from sb3_rpo import RPO, SAPO, make_diff_vec_env

    th.set_num_threads(1)
    env = make_diff_vec_env(ENV_ID, n_envs=N_ENVS, seed=seed)
    common = dict(n_steps=N_STEPS, seed=seed, device="cpu")
    if algo == "sapo":
        model = SAPO("MlpPolicy", env, **common)
    else:
        model = RPO(
            "MlpPolicy", env, ent_coef="auto", tau=1.0, policy_kwargs=dict(n_critics=2, state_dependent_std=True), **common
        )

    curve: list[dict] = []

    class Curve(BaseCallback):
        """Every 10 iterations: the training episodes' return and what train() logged the iteration before."""

        def _on_rollout_start(self) -> None:
            logged = self.model.logger.name_to_value
            if self.model._n_updates % 10 == 0 and "train/entropy" in logged:
                episodes = [info["r"] for info in self.model.ep_info_buffer]
                curve.append(
                    {
                        "timesteps": self.model.num_timesteps,
                        "ep_rew_mean": float(np.mean(episodes)) if episodes else None,
                        **{key[6:]: float(logged[key]) for key in ("train/entropy", "train/ent_coef") if key in logged},
                    }
                )

        def _on_step(self) -> bool:
            return True

    start = time.time()
    model.learn(TIMESTEPS, callback=Curve())
    train_s = time.time() - start
    result = {
        "algo": algo,
        "seed": seed,
        "env": ENV_ID,
        "commit": commit(),
        "command": f"python benchmarks/sapo_cartpole.py --algo {algo} --seed {seed}",
        "settings": dict(n_envs=N_ENVS, n_steps=N_STEPS, timesteps=TIMESTEPS, n_eval_episodes=N_EVAL),
        "train_s": train_s,
        "num_timesteps": model.num_timesteps,
        "final_ent_coef": float(model.ent_coef_value),
        "target_entropy": float(model.target_entropy),
        "skipped_updates": model.skipped_updates,
        "deterministic": evaluate(model, seed, deterministic=True),
        "stochastic": evaluate(model, seed, deterministic=False),
        "curve": curve,
    }
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / f"{algo}_seed{seed}.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=1))
    os.replace(tmp, path)
    print(
        f"{algo} seed {seed}: deterministic {result['deterministic']['mean_return']:.1f}, "
        f"stochastic {result['stochastic']['mean_return']:.1f} in {train_s:.0f} s -> {path}"
    )


def launch(parallel: int) -> None:
    missing = [(a, s) for s in SEEDS for a in ALGOS if not (OUT / f"{a}_seed{s}.json").exists()]
    running: list[subprocess.Popen] = []
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}  # this tree's sb3_rpo
    OUT.mkdir(parents=True, exist_ok=True)
    while missing or running:
        running = [p for p in running if p.poll() is None]
        while missing and len(running) < parallel:
            algo, seed = missing.pop(0)
            cmd = [sys.executable, __file__, "--algo", algo, "--seed", str(seed), "--out", str(OUT)]
            with open(OUT / f"{algo}_seed{seed}.log", "w") as log:  # the child keeps its own handle
                running.append(subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT))
        time.sleep(5)


def report() -> None:
    rows = []
    for path in sorted(OUT.glob("*.json")):
        r = json.loads(path.read_text())
        d, s = r["deterministic"], r["stochastic"]
        rows.append(
            f"| {r['algo']} | {r['seed']} | {d['mean_return']:.0f} | {s['mean_return']:.0f} | {d['mean_log_std']:.2f} "
            f"({d['min_log_std']:.2f}..{d['max_log_std']:.2f}) | {d['squashed_entropy']:.2f} | {d['median_abs_tanh_mu']:.2f} "
            f"| {r['final_ent_coef']:.3g} | {r['train_s'] / 60:.0f} | {r['commit'][:8]} |"
        )
    print(
        "| algo | seed | deterministic | stochastic | log-std mean (min..max) | entropy | median abs tanh mu | alpha "
        "| train min | commit |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    print("\n".join(rows))
    print()
    for algo in ALGOS:
        runs = [json.loads(path.read_text()) for path in sorted(OUT.glob(f"{algo}_seed*.json"))]
        if runs:
            det = [r["deterministic"]["mean_return"] for r in runs]
            sto = [r["stochastic"]["mean_return"] for r in runs]
            print(
                f"{algo}: {len(runs)} seeds, deterministic {np.mean(det):.0f} +/- {np.std(det):.0f}, "
                f"stochastic {np.mean(sto):.0f} +/- {np.std(sto):.0f} (mean +/- std over seeds)"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--algo", choices=ALGOS)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--launch", action="store_true", help="run every missing (algo, seed), --parallel at a time")
    parser.add_argument("--parallel", type=int, default=2)
    parser.add_argument("--report", action="store_true")
    parser.add_argument("--timesteps", type=int, default=TIMESTEPS, help="(smoke runs only) env steps")
    parser.add_argument("--out", type=Path, default=OUT, help="(smoke runs only) results folder")
    args = parser.parse_args()
    globals()["OUT"] = args.out
    if args.launch:
        launch(args.parallel)
    elif args.report:
        report()
    else:
        globals()["TIMESTEPS"] = args.timesteps
        run(args.algo, args.seed)


if __name__ == "__main__":
    main()
