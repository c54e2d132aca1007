"""
The README's Quick start, timed with one torch thread and with torch's default thread count, side by side.

The snippet is read from README.md (the first ``python`` block of "## Quick start") and run as written in a
fresh interpreter, once as is (it sets ``torch.set_num_threads(1)``) and once without that line, alternating
over ``--repeats`` rounds. Results: ``benchmarks/results/quick_start_threads.json`` (wall time of each run,
from the interpreter's start to its end, imports included).

    python benchmarks/quick_start_threads.py [--repeats 1]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch as th

ROOT = Path(__file__).resolve().parents[1]
THREAD_LINE = re.compile(r"^torch\.set_num_threads\(1\).*$", re.M)


def quick_start_snippet() -> str:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Quick start", 1)[1]
    return section.split("```python\n", 1)[1].split("```", 1)[0]


def run(code: str) -> float:
    with tempfile.TemporaryDirectory() as folder:  # the snippet saves its model in the working directory
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        env.pop("OMP_NUM_THREADS", None)  # torch's default must be torch's own
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], cwd=folder, env=env, check=True, capture_output=True)
        return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "quick_start_threads.json"))
    args = parser.parse_args()
    snippet = quick_start_snippet()
    assert THREAD_LINE.search(snippet), "the Quick start no longer sets torch.set_num_threads(1)"
    variants = {"one_thread": snippet, "torch_default": THREAD_LINE.sub("", snippet)}
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(args.repeats):
        for name, code in variants.items():
            times[name].append(run(code))
            print(f"{name}: {times[name][-1]:.1f} s", flush=True)
    result = {
        "command": "python benchmarks/quick_start_threads.py" + (f" --repeats {args.repeats}" if args.repeats != 1 else ""),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {th.__version__}",
        "torch_default_threads": th.get_num_threads(),
        "wall_s": times,
        "ratio_default_over_one": sum(times["torch_default"]) / sum(times["one_thread"]),
    }
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
