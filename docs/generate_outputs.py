"""
Run the commands that docs/zoo.md and docs/tuning.md print, and write their outputs into those pages.

    python docs/generate_outputs.py [--only NAME ...] [--workdir DIR]

Every output block of the two pages follows a ``<!-- output: NAME -->`` marker; this script runs NAME's
command (which the page must print verbatim, or the script stops) in one working folder, in the order
below (later commands read the logs of earlier ones), and replaces the block with what it printed. The text
is trimmed by fixed rules only: the working folder and the Python installation are shortened to ``.`` and
``<site-packages>``, every verbose table but the last two of a command is left out (``[...]`` marks the cut),
and SB3's notice about an installed old ``gym`` package (brought by the rewarped extra) is dropped. Times
and fps are those of the machine and its load at that moment.
"""

from __future__ import annotations

import argparse
import os
import re
import site
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "docs" / "zoo.md", ROOT / "docs" / "tuning.md"]
ZOO = "python -m sb3_rpo.zoo"
TUNE = f"{ZOO} train --algo rpo --env DiffPendulum-v0 -n 8192 -optimize"
STUDY = "--storage logs/tuning/rpo-pendulum.log --study-name rpo-pendulum"
INSPECT = """import optuna

storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend("logs/tuning/rpo-pendulum.log"))
study = optuna.load_study(study_name="rpo-pendulum", storage=storage)
for t in study.trials:
    print(t.number, t.state.name, None if t.value is None else round(t.value, 1), t.user_attrs.get("worker"))
print("best", study.best_trial.number, study.best_value)
"""

# name -> command, as the page prints it (a python block for "inspect_study")
COMMANDS: dict[str, str] = {
    "train_rpo": f"{ZOO} train --algo rpo --env DiffPendulum-v0 --seed 0",
    "train_shac": f"{ZOO} train --algo shac --env DiffPendulum-v0 --seed 0",
    "train_ppo": f"""{ZOO} train --algo ppo --env DiffPendulum-v0 --seed 0 -n 100000 --num-threads 1 \\
    -params n_envs:4 n_steps:1024 gae_lambda:0.95 gamma:0.9 n_epochs:10 learning_rate:1e-3 use_sde:True sde_sample_freq:4""",
    "enjoy": f"{ZOO} enjoy --algo rpo --env DiffPendulum-v0 -f logs --no-render -n 1000 --load-best",
    "plots": f"""{ZOO} plot -a rpo -e DiffPendulum-v0 -f logs -w 20 -o rpo_train.png
{ZOO} all_plots -a rpo shac ppo -e DiffPendulum-v0 -f logs --no-display -o pendulum_results \\
    --png pendulum_evals.png""",
    "tune": f"""{TUNE} --n-trials 4 \\
    --n-evaluations 2 {STUDY} --no-optim-plots --seed 1""",
    "tune_workers": f"""CMD="{TUNE} --n-trials 2 \\
    --n-evaluations 2 {STUDY} --no-optim-plots"
$CMD --seed 2 > worker1.txt 2>&1 &
$CMD --seed 3 > worker2.txt 2>&1
wait
grep -h "finished with value" worker1.txt worker2.txt""",
    "inspect_study": INSPECT,
    "trial_id": f"""{ZOO} train --algo rpo --env DiffPendulum-v0 {STUDY} \\
    --trial-id 1 -n 20000 --eval-freq 10000 --seed 0""",
}

TABLE_EDGE = re.compile(r"^-{5,}$")
NOISE = ("Gym has been unmaintained", "Please upgrade to Gymnasium", "See the migration guide at https://gymnasium")


def clean(text: str, workdir: Path) -> str:
    for folder in {*site.getsitepackages(), site.getusersitepackages()}:
        text = text.replace(folder, "<site-packages>")
    text = text.replace(str(workdir) + "/", "").replace(str(workdir), ".").replace(str(ROOT), "<repo>")
    lines = [line.rstrip() for line in text.splitlines() if not line.startswith(NOISE)]
    # Keep the last two verbose tables (SB3's logger: a dashed line, rows, a dashed line; RPO's last two are the
    # last iteration's rollout/ and train/ rows); the earlier ones become "[...]".
    tables: list[tuple[int, int]] = []
    start = None
    for i, line in enumerate(lines):
        if TABLE_EDGE.match(line):
            if start is None:
                start = i
            else:
                tables.append((start, i + 1))
                start = None
    for start, end in reversed(tables[:-2]):
        lines[start:end] = ["[...]"]
    lines = [line for i, line in enumerate(lines) if not (line == "[...]" and i > 0 and lines[i - 1] == "[...]")]
    return "\n".join(lines).strip() + "\n"


def run(name: str, workdir: Path) -> str:
    command = COMMANDS[name]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    argv = [sys.executable, "-c", command] if name == "inspect_study" else ["bash", "-c", command]
    result = subprocess.run(argv, cwd=workdir, env=env, capture_output=True, text=True)
    output = result.stdout + result.stderr if name != "tune_workers" else result.stdout
    (workdir / f"{name}.output.txt").write_text(output)  # untrimmed, for reference
    if result.returncode != 0:
        raise RuntimeError(f"{name} failed ({result.returncode}):\n{output}")
    return clean(output, workdir)


def write(name: str, output: str) -> None:
    marker = f"<!-- output: {name} -->\n"
    for page in PAGES:
        text = page.read_text()
        if marker in text:
            before, after = text.split(marker, 1)
            block_end = after.index("```\n", after.index("```text\n") + 8) + 4
            page.write_text(f"{before}{marker}```text\n{output}```\n{after[block_end:]}")
            return
    raise ValueError(f"no {marker.strip()} in {', '.join(p.name for p in PAGES)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="+", choices=list(COMMANDS), help="run these (their inputs must be in --workdir)")
    parser.add_argument("--workdir", default=None, help="working folder (default: a new temporary one)")
    args = parser.parse_args()
    pages = "".join(page.read_text() for page in PAGES)
    for name, command in COMMANDS.items():
        if command not in pages:
            raise SystemExit(f"the docs no longer print the command of {name!r}:\n{command}")
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="sb3_rpo_docs_")).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    for name in args.only or COMMANDS:
        print(f"[{name}] in {workdir}", flush=True)
        write(name, run(name, workdir))


if __name__ == "__main__":
    main()
