"""Learning benchmark: HSD-3 against flat SAC on walker Hurdles at the ``laptop`` profile, over env steps.

    python bench/learning.py                       # pre-train, then 2 seeds of each, 4 runs at a time (~1.5 h)
    python bench/learning.py --lo PATH/checkpoint-lo.pt --seeds 0,1,2 --jobs 3

Steps (every run goes through the project's own command lines, so this is what a student would run):

1. unless ``--lo`` names existing skills, pre-train once: ``python -m hsd3_learn.pretrain -cn walker_pretrain
   profile=laptop`` in ``<workdir>/pretrain``;
2. for each seed, ``python -m hsd3_learn.train -cn walker_sac`` and ``-cn walker_hsd3`` at ``profile=laptop`` on
   the task, both capped at ``--samples`` env steps so that the comparison is at equal steps, ``--jobs`` runs at a
   time with one torch thread each;
3. reads every run's ``eval.csv`` (10 deterministic episodes per evaluation) and writes, to ``--out``:
   ``learning-<task>.csv`` (one row per run and evaluation), ``learning-<task>.png`` (mean score and mean episode
   length over seeds, the range of seeds shaded) and ``learning-<task>.txt`` (the table printed at the end: both methods side by side
   and their ratio at each evaluation, wall-clock times and the budgets).

Runs resume: rerunning the same command in the same work directory finishes what an interruption left, and a
finished run is only read (``--report-only`` rebuilds the outputs without starting any run). Wall-clock times are
recorded per run in ``wall_seconds.txt``. Nothing here is asserted; it prints what it measured.
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
METHODS = {"sac": "walker_sac", "hsd3": "walker_hsd3"}
#: seconds of wall clock per invocation, one line each, in every run directory
WALL_FILE = "wall_seconds.txt"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, default=ROOT / "bench_runs" / "learning",
                        help="where the runs live (default: bench_runs/learning, ignored by git)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results", help="where results are written")
    parser.add_argument("--lo", type=Path, default=None, help="existing low-level checkpoint (skip pre-training)")
    parser.add_argument("--task", default="Hurdles", help="walker task (default Hurdles)")
    parser.add_argument("--seeds", default="0,1", help="comma-separated seeds (default 0,1)")
    parser.add_argument("--samples", type=int, default=100_000, help="env steps per run, both methods (100000)")
    parser.add_argument("--jobs", type=int, default=4, help="runs at a time, one torch thread each (default 4)")
    parser.add_argument("--methods", default="hsd3,sac", help="comma-separated subset of hsd3,sac")
    parser.add_argument("--report-only", action="store_true",
                        help="train nothing: rebuild the CSV, table and plot from the runs in --workdir")
    args = parser.parse_args(argv)
    args.seed_list = [int(s) for s in args.seeds.split(",") if s.strip()]
    args.method_list = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in args.method_list if m not in METHODS]
    if unknown or not args.method_list:
        parser.error(f"--methods takes names from {', '.join(METHODS)}; got {args.methods!r}")
    if args.samples < 1 or args.jobs < 1 or not args.seed_list:
        parser.error("--samples and --jobs must be positive and --seeds must name at least one seed")
    return args


def _env() -> dict[str, str]:
    """One thread per run: several runs share the cores, and oversubscribed thread pools spin."""
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


def pretrain(workdir: Path) -> tuple[Path, float]:
    """Pre-train walker skills at the laptop profile (resuming if interrupted); the checkpoint and wall seconds."""
    run_dir = workdir / "pretrain"
    run_dir.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "hsd3_learn.pretrain", "-cn", "walker_pretrain", "profile=laptop", "threads=1"]
    print("pre-training:", " ".join(command[1:]), f"(in {run_dir})", flush=True)
    start = time.perf_counter()
    with open(run_dir / "stdout.log", "a") as log:
        subprocess.run(command, cwd=run_dir, env=_env(), stdout=log, stderr=subprocess.STDOUT, check=True)
    walls = run_dir / WALL_FILE  # one line per invocation: an interrupted run's parts add up
    with walls.open("a") as f:
        f.write(f"{time.perf_counter() - start:.1f}\n")
    return run_dir / "checkpoint-lo.pt", sum(float(x) for x in walls.read_text().split())


def run_commands(args: argparse.Namespace, lo: Path) -> dict[tuple[str, int], tuple[list[str], Path]]:
    """The command line and run directory of every (method, seed)."""
    runs = {}
    for seed in args.seed_list:
        for method in args.method_list:
            command = [sys.executable, "-m", "hsd3_learn.train", "-cn", METHODS[method], "profile=laptop",
                       f"env.task={args.task}", f"seed={seed}", f"max_samples={args.samples}", "threads=1"]
            if method != "sac":
                command.append(f"lo.init_from={lo.resolve()}")
            runs[(method, seed)] = (command, args.workdir / f"{method}_seed{seed}")
    return runs


def train_all(runs: dict[tuple[str, int], tuple[list[str], Path]], jobs: int) -> dict[tuple[str, int], float]:
    """Run the training commands, ``jobs`` at a time; wall seconds of each run (over all invocations). A failed
    run stops the benchmark."""
    pending = list(runs.items())
    active: dict[tuple[str, int], tuple[subprocess.Popen, float]] = {}
    while pending or active:
        while pending and len(active) < jobs:
            key, (command, run_dir) = pending.pop(0)
            run_dir.mkdir(parents=True, exist_ok=True)
            print(f"start {key[0]} seed {key[1]}:", " ".join(command[1:]), flush=True)
            log = open(run_dir / "stdout.log", "a")  # noqa: SIM115 (closed with the process below)
            proc = subprocess.Popen(command, cwd=run_dir, env=_env(), stdout=log, stderr=subprocess.STDOUT)
            proc.log = log  # type: ignore[attr-defined]
            active[key] = (proc, time.perf_counter())
        time.sleep(5)
        for key, (proc, start) in list(active.items()):
            if proc.poll() is None:
                continue
            proc.log.close()  # type: ignore[attr-defined]
            del active[key]
            if proc.returncode != 0:
                for other, _ in active.values():
                    other.terminate()
                raise SystemExit(f"{key[0]} seed {key[1]} failed (exit {proc.returncode}); see "
                                 f"{runs[key][1] / 'stdout.log'}")
            elapsed = time.perf_counter() - start
            with (runs[key][1] / WALL_FILE).open("a") as f:  # an interrupted run's invocations add up
                f.write(f"{elapsed:.1f}\n")
            print(f"done {key[0]} seed {key[1]} in {elapsed / 60:.1f} min", flush=True)
    return read_walls(runs)


def read_walls(runs: dict[tuple[str, int], tuple[list[str], Path]]) -> dict[tuple[str, int], float]:
    """Wall seconds of each run over all invocations of this script (runs without a record are left out)."""
    walls = {}
    for key, (_, run_dir) in runs.items():
        if (run_dir / WALL_FILE).is_file():
            walls[key] = sum(float(x) for x in (run_dir / WALL_FILE).read_text().split())
    return walls


def read_curves(runs: dict[tuple[str, int], tuple[list[str], Path]]) -> list[dict[str, float | str]]:
    """One row per run and evaluation from the runs' eval.csv files."""
    rows = []
    for (method, seed), (_, run_dir) in runs.items():
        with open(run_dir / "eval.csv", newline="") as f:
            for row in csv.DictReader(f):
                rows.append({"method": method, "seed": seed, "samples": int(float(row["samples"])),
                             "score_mean": float(row["score_mean"]), "return_mean": float(row["return_mean"]),
                             "length_mean": float(row["length_mean"])})
    return rows


def summarize(rows: list[dict], methods: list[str], column: str = "score_mean") -> tuple[list[int],
                                                                                        dict[str, np.ndarray]]:
    """The evaluation points all runs share and, per method, ``column`` [seeds, points]."""
    points = sorted(set.intersection(*[{r["samples"] for r in rows if r["method"] == m and r["seed"] == s}
                                       for m in methods for s in {r["seed"] for r in rows}]))
    scores = {}
    for method in methods:
        seeds = sorted({r["seed"] for r in rows if r["method"] == method})
        table = {(r["seed"], r["samples"]): r[column] for r in rows if r["method"] == method}
        scores[method] = np.array([[table[(s, p)] for p in points] for s in seeds])
    return points, scores


def report(args: argparse.Namespace, points: list[int], scores: dict[str, np.ndarray], walls: dict,
           pretrain_wall: float | None, lengths: dict[str, np.ndarray] | None = None) -> str:
    """The printed table: mean score of each method per evaluation, the ratio HSD-3 / SAC, the mean episode length
    (falls end episodes early), and the budgets."""
    lines = [f"walker {args.task}, profile=laptop, max_samples={args.samples} per run, seeds {args.seeds}, "
             f"{args.jobs} runs at a time, 1 torch thread each, on {os.cpu_count()} CPU cores",
             "score = sum of info['score'] over an episode (hurdles cleared; falls do not subtract), mean of 10 "
             "deterministic episodes per evaluation, then mean over seeds", ""]
    header = f"{'samples':>9} " + " ".join(f"{m + ' mean':>10} {m + ' range':>15}" for m in scores)
    if "hsd3" in scores and "sac" in scores:
        header += f" {'hsd3/sac':>9}"
    lines.append(header)
    for j, point in enumerate(points):
        line = f"{point:>9} "
        for values in scores.values():
            line += f" {values[:, j].mean():>9.3f} [{values[:, j].min():>6.2f},{values[:, j].max():>6.2f}]"
        if "hsd3" in scores and "sac" in scores:
            sac = scores["sac"][:, j].mean()
            line += f" {scores['hsd3'][:, j].mean() / sac:>9.2f}" if sac > 0 else f" {'n/a':>9}"
        lines.append(line)
    if lengths:
        lines += ["", "episode length (1000 = no fall), mean over seeds of the mean of 10 episodes:",
                  f"{'samples':>9} " + " ".join(f"{m:>10}" for m in lengths)]
        lines += [f"{point:>9} " + " ".join(f"{values[:, j].mean():>10.1f}" for values in lengths.values())
                  for j, point in enumerate(points)]
    lines.append("")
    for values, method in zip(scores.values(), scores):
        area = np.trapezoid(values.mean(0), points) / max(points[-1] - points[0], 1)
        lines.append(f"{method}: mean score over the run (area under the curve / steps) {area:.3f}, final "
                     f"{values[:, -1].mean():.3f}")
    if pretrain_wall is not None:
        lines.append(f"pre-training wall clock: {pretrain_wall / 60:.1f} min (one torch thread)")
    for (method, seed), wall in sorted(walls.items()):
        lines.append(f"{method} seed {seed}: {wall / 60:.1f} min wall clock (sharing the cores)")
    return "\n".join(lines)


def plot(path: Path, task: str, points: list[int], scores: dict[str, np.ndarray],
         lengths: dict[str, np.ndarray]) -> None:
    """Mean score and mean episode length over seeds against env steps, the range of seeds shaded."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, values_of, label in ((axes[0], scores, "evaluation score (mean of 10 episodes)"),
                                 (axes[1], lengths, "episode length (1000: no fall)")):
        for method, values in values_of.items():
            ax.plot(points, values.mean(0), label=f"{method.upper()} ({len(values)} seeds)")
            ax.fill_between(points, values.min(0), values.max(0), alpha=0.2)
        ax.set_xlabel("env steps")
        ax.set_ylabel(label)
        ax.legend()
    fig.suptitle(f"walker {task}, laptop profile")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    args.workdir.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    pretrain_wall = None
    lo = args.lo
    walls_file = args.workdir / "pretrain" / WALL_FILE
    if args.report_only:
        lo = lo or args.workdir / "pretrain" / "checkpoint-lo.pt"
        if walls_file.is_file():
            pretrain_wall = sum(float(x) for x in walls_file.read_text().split())
    elif "hsd3" in args.method_list and (lo is None or not lo.is_file()):
        if lo is not None:
            raise SystemExit(f"--lo {lo} does not exist; leave it out to pre-train here")
        lo, pretrain_wall = pretrain(args.workdir)
    runs = run_commands(args, lo or Path("unused"))
    walls = read_walls(runs) if args.report_only else train_all(runs, args.jobs)
    rows = read_curves(runs)
    stem = args.out / f"learning-{args.task.lower()}"
    with open(stem.with_suffix(".csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    points, scores = summarize(rows, args.method_list)
    lengths = summarize(rows, args.method_list, "length_mean")[1]
    text = report(args, points, scores, walls, pretrain_wall, lengths)
    stem.with_suffix(".txt").write_text(text + "\n")
    plot(stem.with_suffix(".png"), args.task, points, scores, lengths)
    print(text)
    print(f"wrote {stem}.csv, .txt and .png")


if __name__ == "__main__":
    main()
