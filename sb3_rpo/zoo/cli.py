"""Command line of ``python -m sb3_rpo.zoo`` and ``sb3-rpo-zoo``: rl-zoo3's scripts with RPO, SHAC and SAPO added."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import warnings
from collections.abc import Callable
from typing import Any

from rl_zoo3.utils import get_saved_hyperparams
from stable_baselines3.common.utils import get_device

from sb3_rpo.zoo import DIFF_ALGOS, ZooExperimentManager

PROG = "sb3-rpo-zoo"


def _one_thread_on_cpu() -> None:
    """
    Add ``--num-threads 1`` to a command of a differentiable algorithm on CPU that does not set it: their
    networks are small, and torch's default thread count made the docs' commands up to 10x slower.
    """
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    parser.add_argument("--algo", default="ppo")
    parser.add_argument("--num-threads", type=int, default=None)
    parser.add_argument("--device", default="auto")
    args = parser.parse_known_args(sys.argv[1:])[0]
    if args.algo in DIFF_ALGOS and args.num_threads is None and get_device(args.device).type == "cpu":
        sys.argv += ["--num-threads", "1"]


def train() -> None:
    """rl-zoo3's ``train`` (every flag), with :class:`ZooExperimentManager` building the experiment."""
    import rl_zoo3.train

    _one_thread_on_cpu()

    rl_zoo3.train.ExperimentManager = ZooExperimentManager  # type: ignore[misc]  # train() reads this module global
    rl_zoo3.train.train()


def _saved_hyperparams_without_vecnormalize(
    stats_path: str, norm_reward: bool = False, test_mode: bool = False
) -> tuple[dict[str, Any], str | None]:
    hyperparams, path = get_saved_hyperparams(stats_path, norm_reward=norm_reward, test_mode=test_mode)
    # RPO's `normalize` is the policy's in-graph normalization, saved inside the model: no vecnormalize.pkl.
    hyperparams["normalize"] = False
    return hyperparams, path


def enjoy() -> None:
    """rl-zoo3's ``enjoy``: load a model and run episodes on the environment's numpy (gymnasium) face."""
    import rl_zoo3.enjoy

    _one_thread_on_cpu()
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    parser.add_argument("--algo", default="ppo")
    if parser.parse_known_args(sys.argv[1:])[0].algo in DIFF_ALGOS:
        rl_zoo3.enjoy.get_saved_hyperparams = _saved_hyperparams_without_vecnormalize
    rl_zoo3.enjoy.enjoy()


def _saving_figures(run: Callable[[], None], option: str) -> Callable[[], None]:
    """``run`` (an rl-zoo3 plotting script) with ``option FILE``: draw headless and save the figures to FILE."""

    def wrapped() -> None:
        parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
        parser.add_argument(option, dest="png", default=None)
        args, rest = parser.parse_known_args(sys.argv[1:])
        sys.argv = [sys.argv[0], *rest]
        if args.png is not None:
            import matplotlib

            matplotlib.use("Agg")  # headless: the scripts' final plt.show() becomes a no-op
        from matplotlib import pyplot as plt

        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*non-interactive.*")
            run()
        if args.png is not None:
            figures = plt.get_fignums()
            for number in figures:  # one figure per environment for all_plots
                root, ext = os.path.splitext(args.png)
                path = args.png if len(figures) == 1 else f"{root}_{number}{ext or '.png'}"
                plt.figure(number).savefig(path, bbox_inches="tight")  # the axis labels may lie outside the figure
                print(f"Saved {path}")

    return wrapped


def _rl_zoo3_plots(name: str) -> Callable[[], None]:
    # Imported on use: the plotting stack (seaborn, scipy...) would slow every train and enjoy start.
    return lambda: getattr(importlib.import_module("rl_zoo3.plots"), name)()


COMMANDS = {
    "train": train,
    "enjoy": enjoy,
    # plot_train (training episode returns from monitor.csv) with -o FILE to save the figure
    "plot": _saving_figures(_rl_zoo3_plots("plot_train"), "-o"),
    "plot_train": _rl_zoo3_plots("plot_train"),
    "plot_from_file": _rl_zoo3_plots("plot_from_file"),
    # evaluation curves of several algorithms side by side; --png FILE saves them (its -o is a .pkl)
    "all_plots": _saving_figures(_rl_zoo3_plots("all_plots"), "--png"),
}


USAGE = f"""usage: {PROG} {{{",".join(COMMANDS)}}} [rl-zoo3 arguments]

rl-zoo3's scripts with the algorithms 'rpo', 'shac' and 'sapo' added; '{PROG} <command> -h' lists the arguments.
On CPU, train and enjoy of {", ".join(DIFF_ALGOS)} use one torch thread unless --num-threads says otherwise.
plot is plot_train with '-o FILE' to save the figure; all_plots takes '--png FILE' to save its figures."""


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in COMMANDS:
        asked = bool(argv) and argv[0] in ("-h", "--help")
        print(USAGE, file=sys.stdout if asked else sys.stderr)
        sys.exit(0 if asked else 2)
    sys.argv = [f"{PROG} {argv[0]}", *argv[1:]]  # argparse's usage line then reads "sb3-rpo-zoo train ..."
    COMMANDS[argv[0]]()
