"""
How far the MuJoCo FD adapter's dynamics (Euler by default, no warm start) are from gymnasium's official v5 envs (RK4).

For each task, one episode of the official env under uniform random actions (seeded), and:

* one-step error: from every official state, one step of the adapter with the same action; the largest
  difference in qpos and in qvel over the episode, and the median;
* open-loop drift: the adapter's own trajectory under the same actions from the same initial state; the first
  step where its qpos differs from the official one by more than 0.01, and both episode returns (the adapter's
  episode ends where its own termination says).

    python benchmarks/mujoco_fd_drift.py --out benchmarks/results/mujoco_fd_drift.json
    python benchmarks/mujoco_fd_drift.py --integrator official --out benchmarks/results/mujoco_fd_drift_official.json

With ``--integrator official`` the adapter runs gymnasium's own integrator; what remains is the warm start of MuJoCo's
constraint solver, which the official env keeps and the adapter switches off (a step must be a function of the state).
"""

import argparse
import json
import warnings

import gymnasium as gym
import numpy as np
import torch as th

from sb3_rpo import make_diff_vec_env
from sb3_rpo.sims.mujoco_fd import TASKS


def measure(env_id: str, seed: int, integrator: str) -> dict:
    env = make_diff_vec_env(env_id, n_envs=1, seed=seed, dtype=th.float64, n_threads=1, integrator=integrator)
    official = gym.make(env_id.replace("MujocoFD", ""))
    official.reset(seed=seed)
    official.action_space.seed(seed)
    data = official.unwrapped.data
    nq, nv = env.nq, env.nv

    def state_now() -> th.Tensor:
        aux = th.zeros(1, env.aux_dim, dtype=th.float64)
        return th.cat([th.as_tensor(np.concatenate([data.qpos, data.qvel]))[None], aux], dim=-1)

    env.diff_reset()
    env.state = state_now()
    own_state, own_alive, own_return, official_return = env.state.clone(), True, 0.0, 0.0
    qpos_errors, qvel_errors, diverged_at, steps = [], [], None, 0
    with th.no_grad():
        for step in range(env.max_episode_steps):
            action = official.action_space.sample()
            actions = th.as_tensor(action, dtype=th.float64)[None]
            one_step = env.dynamics(state_now(), actions)  # the adapter from the official state
            if own_alive:
                own_next = env.dynamics(own_state, actions)
                own_return += env.reward(own_state, actions, own_next).item()
                own_alive = not bool(env.terminated(own_next)) and bool(th.isfinite(own_next).all())
                own_state = own_next
            _, reward, terminated, truncated, _ = official.step(action)
            official_return += float(reward)
            steps += 1
            qpos_errors.append(np.abs(one_step[0, :nq].numpy() - data.qpos).max())
            qvel_errors.append(np.abs(one_step[0, nq : nq + nv].numpy() - data.qvel).max())
            if diverged_at is None and np.abs(own_state[0, :nq].numpy() - data.qpos).max() > 0.01:
                diverged_at = step + 1
            if terminated or truncated:
                break
    env.close()
    return {
        "env_id": env_id,
        "episode_steps": steps,
        "one_step_qpos_error_max": float(np.max(qpos_errors)),
        "one_step_qpos_error_median": float(np.median(qpos_errors)),
        "one_step_qvel_error_max": float(np.max(qvel_errors)),
        "one_step_qvel_error_median": float(np.median(qvel_errors)),
        "open_loop_steps_to_0.01": diverged_at,
        "official_return": official_return,
        "adapter_return_same_actions": own_return,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--integrator", default="euler", choices=["euler", "implicitfast", "rk4", "official"])
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    th.set_num_threads(1)
    warnings.filterwarnings("ignore", module="gymnasium")
    rows = []
    print(
        "| task | episode steps | one-step qpos error (median / max) | one-step qvel error (median / max) |"
        " open-loop steps to 0.01 | return official / adapter (same actions) |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    for env_id, *_ in TASKS:
        r = measure(env_id, args.seed, args.integrator)
        rows.append(r)
        print(
            f"| {env_id} | {r['episode_steps']} | {r['one_step_qpos_error_median']:.1e} / {r['one_step_qpos_error_max']:.1e} |"
            f" {r['one_step_qvel_error_median']:.1e} / {r['one_step_qvel_error_max']:.1e} | {r['open_loop_steps_to_0.01']} |"
            f" {r['official_return']:.1f} / {r['adapter_return_same_actions']:.1f} |",
            flush=True,
        )
    if args.out:
        with open(args.out, "w") as file:
            json.dump(rows, file, indent=1)


if __name__ == "__main__":
    main()
