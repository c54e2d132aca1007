"""
How far the window gradients of the MuJoCo FD adapter can be trusted: for each task and window length, the gradient
that RPO uses (a directional derivative of the window's return plus a random linear function of the observations, with
respect to the actions) against central differences of the whole window, in float64, terminations switched off.

Where contacts switch on and off, the window objective is not smooth at the scale of any finite difference: the
central differences themselves stop converging (the two steps eps disagree), and the chained Jacobians grow.

    python benchmarks/mujoco_fd_gradients.py --out benchmarks/results/mujoco_fd_gradients.json
    python benchmarks/mujoco_fd_gradients.py --forward-differences --out benchmarks/results/mujoco_fd_gradients_forward.json
    python benchmarks/mujoco_fd_gradients.py --table benchmarks/results/mujoco_fd_gradients{,_forward}.json --docs

``--forward-differences`` checks the adapter built with ``fd_centered=False`` (MuJoCo's one-sided differences, half
the cost of the Jacobians) against the same central differences of the whole window.
"""

import argparse
import json

import torch as th
from docs_tables import write_between

from sb3_rpo import make_diff_vec_env
from sb3_rpo.common.gradcheck import check_window_gradient
from sb3_rpo.sims.mujoco_fd import TASKS


def measure(env_id: str, window: int, n_envs: int, seed: int, fd_centered: bool = True) -> dict:
    env = make_diff_vec_env(env_id, n_envs=n_envs, seed=seed, dtype=th.float64, n_threads=1, fd_centered=fd_centered)
    env.diff_reset()
    check = check_window_gradient(env, window, seed=seed)
    env.close()
    return {
        "env_id": env_id,
        "window": window,
        "fd_centered": fd_centered,
        "analytic": check.analytic,
        "central_1e-5": check.numerical[1e-5],
        "central_1e-7": check.numerical[1e-7],
        "rel_error": check.rel_error(1e-5),
        "fd_self_disagreement": abs(check.numerical[1e-5] - check.numerical[1e-7]) / max(abs(check.numerical[1e-5]), 1e-12),
        "gradient_norm": check.gradient_norm,
    }


def comparison_table(centered_path: str, forward_path: str) -> str:
    """Markdown: the relative error of the centered and of the forward-difference adapter, task by task and window."""
    with open(centered_path) as file:
        centered = {(row["env_id"], row["window"]): row for row in json.load(file)}
    with open(forward_path) as file:
        forward = json.load(file)
    lines = [
        "| task | window | rel. error, centered | rel. error, forward differences | FD 1e-5 vs 1e-7 |",
        "|---|---:|---:|---:|---:|",
    ]
    for row in forward:
        base = centered[(row["env_id"], row["window"])]
        lines.append(
            f"| {row['env_id']} | {row['window']} | {base['rel_error']:.1e} | {row['rel_error']:.1e} "
            f"| {row['fd_self_disagreement']:.1e} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--windows", type=int, nargs="+", default=[1, 4, 8, 16, 32])
    parser.add_argument("--n-envs", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--forward-differences", action="store_true", help="the adapter with fd_centered=False")
    parser.add_argument("--out", default=None)
    parser.add_argument("--table", nargs=2, metavar=("CENTERED_JSON", "FORWARD_JSON"), help="only print the comparison")
    parser.add_argument("--docs", action="store_true", help="with --table: write it into docs/performance.md")
    args = parser.parse_args()
    if args.table:
        table = comparison_table(*args.table)
        print(table)
        if args.docs:
            write_between("performance.md", "fd accuracy table", table)
        return
    th.set_num_threads(1)
    rows = []
    print(f"{'task':36s} {'T':>3s} {'rel. error':>10s} {'FD 1e-5 vs 1e-7':>16s} {'|grad|':>10s}")
    for env_id, *_ in TASKS:
        for window in args.windows:
            row = measure(env_id, window, args.n_envs, args.seed, fd_centered=not args.forward_differences)
            rows.append(row)
            errors = f"{row['rel_error']:10.1e} {row['fd_self_disagreement']:16.1e}"
            print(f"{env_id:36s} {window:3d} {errors} {row['gradient_norm']:10.2e}")
    if args.out:
        with open(args.out, "w") as file:
            json.dump(rows, file, indent=1)


if __name__ == "__main__":
    main()
