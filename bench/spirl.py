"""SPiRL learning benchmark: no-prior, SPiRL, SPiRL-cl and Skill-Critic against flat SAC on walker Hurdles (laptop).

Evaluation score over env steps at the ``laptop`` profile, plus a check that the learned skill priors already walk.

    python bench/spirl.py --lo PATH/checkpoint-lo.pt       # one seed of each method, 2 runs at a time
    python bench/spirl.py --report-only                    # rebuild the CSV, table and plot from the runs
    python bench/spirl.py --report-only --conditions "8 runs at a time"   # ... saying how they were run
    python bench/spirl.py --rollouts-only                  # only the prior-rollout check on trained skill models

Steps (every run goes through the project's own command lines, each in its own directory below ``--workdir``):

1. low-level skills: ``--lo``, or pre-training as bench/learning.py does it (``pretrain/``);
2. the offline dataset: ``python -m hsd3_learn.spirl.collect profile=laptop lo.init_from=LO`` (``collect/``);
3. the skill models the methods need: ``python -m hsd3_learn.spirl.train_prior model=M data.dir=... profile=laptop
   threads=1`` (``prior_<M>/``), ``--jobs`` at a time;
4. the prior-rollout check (:func:`prior_check`): each agent, built for its skill model but never trained, explores
   on walker Floor, so its skills are samples of the prior; a reference arm samples skills uniformly instead (the
   no-prior agent's random start). PASS: the walker moves forward (mean dx > 0.5 m) and lasts at least half of the
   time limit in at least half of the episodes. Writes ``spirl-prior-rollouts.csv`` (one row per episode) and
   ``.txt`` (the table);
5. the runs, all capped at ``--samples`` env steps: SAC with bench/learning.py's own command (so a finished SAC run
   directory of that benchmark can be reused), the skill agents with ``python -m hsd3_learn.spirl.train agent=A
   prior.init_from=... profile=laptop``. The no-prior agent reads the SPiRL-cl model: it differs from SPiRL-cl only
   by the prior. The runs that update at every env step (SAC, Skill-Critic) start first;
6. the report, to ``--out``: ``spirl-<task>.csv`` (one row per run and evaluation), ``spirl-<task>.png`` (score and
   episode length over env steps, mean over seeds, range shaded) and ``spirl-<task>.txt`` (the table printed at the
   end: every method at each evaluation, its ratio to SAC, wall-clock minutes, budgets and commands).

Rerunning the same command in the same work directory resumes every step, and a finished step is only read. Wall
clock is recorded per run in ``wall_seconds.txt``. Nothing here is asserted; it prints what it measured.
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

BENCH = Path(__file__).resolve().parent
# This folder holds a script named envs.py, which would shadow the task package: keep it off the import path and
# load the sibling bench/learning.py by its file name instead.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != BENCH]

import numpy as np  # noqa: E402
import torch  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from envs import TASKS  # noqa: E402
from hsd3_learn.envs.vector import TorchVectorEnv  # noqa: E402
from hsd3_learn.spirl.agents import SkillSpaceAgent  # noqa: E402
from hsd3_learn.spirl.train import CONFIG_DIR, CONFIG_NAME, make_spirl_agent, with_time_wrapper  # noqa: E402
from hsd3_learn.training import make_vector_envs, set_threads  # noqa: E402
from hsd3_learn.utils import seed_everything  # noqa: E402


def _load_learning() -> ModuleType:
    """bench/learning.py as a module: its run helpers (pre-training, parallel runs, eval.csv, plots) are shared."""
    spec = importlib.util.spec_from_file_location("learning", BENCH / "learning.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


learning = _load_learning()

ROOT = BENCH.parent
#: method -> the skill model its runs read (flat SAC reads none); also the order of the report's columns
SKILL_MODEL_OF = {"sac": None, "no_prior": "spirl_cl", "spirl": "spirl", "spirl_cl": "spirl_cl",
                  "skill_critic": "skill_critic"}
METHODS = tuple(SKILL_MODEL_OF)
#: skill model kinds, in the order they are trained and checked
SKILL_MODELS = ("spirl", "spirl_cl", "skill_critic")
#: methods that update at every env step, hence run longest: started first
SLOW_METHODS = ("sac", "skill_critic")
#: the prior-rollout check passes with a mean forward displacement above MIN_DX metres and at least MIN_SURVIVING
#: of the episodes lasting half of the time limit or longer
MIN_DX, MIN_SURVIVING = 0.5, 0.5
#: the arms of the check: arm -> the agent that acts (None: the agent of the skill model's own kind)
ARMS = {"prior": None, "uniform": "no_prior"}
Runs = dict[tuple[str, int], tuple[list[str], Path]]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The options, checked: a bad value stops with one line naming the option and what it takes."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, default=ROOT / "bench_runs" / "spirl",
                        help="where the runs live (default: bench_runs/spirl, ignored by git)")
    parser.add_argument("--out", type=Path, default=BENCH / "results", help="where results are written")
    parser.add_argument("--lo", type=Path, default=None, help="existing low-level checkpoint (skip pre-training)")
    parser.add_argument("--task", default="Hurdles", help="walker task of the runs (default Hurdles)")
    parser.add_argument("--seeds", default="0", help="comma-separated seeds (default 0)")
    parser.add_argument("--samples", type=int, default=100_000, help="env steps per run, every method (100000)")
    parser.add_argument("--jobs", type=int, default=2, help="runs at a time, one torch thread each (default 2)")
    parser.add_argument("--methods", default=",".join(METHODS), help=f"comma-separated subset of {','.join(METHODS)}")
    parser.add_argument("--rollout-episodes", type=int, default=10,
                        help="episodes per arm of the prior-rollout check (default 10; 0 skips the check)")
    parser.add_argument("--conditions", default=None,
                        help="with --report-only: how the runs were made (how many at a time, on what), for the "
                             "report's first line; without it that line says the concurrency was not recorded")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--report-only", action="store_true",
                      help="train nothing: rebuild the CSV, table and plot from the runs in --workdir")
    mode.add_argument("--rollouts-only", action="store_true",
                      help="train nothing: run the prior-rollout check on the skill models in --workdir")
    args = parser.parse_args(argv)
    try:
        args.seed_list = [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError:
        parser.error(f"--seeds takes comma-separated integers, e.g. 0,1; got {args.seeds!r}")
    args.method_list = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in args.method_list if m not in METHODS]
    if unknown or not args.method_list:
        parser.error(f"--methods takes names from {', '.join(METHODS)}; got {args.methods!r}")
    if args.task not in TASKS:
        parser.error(f"--task takes one of {', '.join(TASKS)}; got {args.task!r}")
    if args.samples < 1 or args.jobs < 1 or not args.seed_list or min(args.seed_list) < 0:
        parser.error("--samples and --jobs must be positive and --seeds must name at least one non-negative seed")
    if args.rollout_episodes < 0:
        parser.error(f"--rollout-episodes must be 0 (no check) or positive; got {args.rollout_episodes}")
    if args.conditions is not None and not args.report_only:
        parser.error("--conditions describes runs made earlier, so it goes with --report-only only")
    if args.rollouts_only and not args.rollout_episodes:
        parser.error("--rollouts-only needs --rollout-episodes of at least 1")
    return args


# --------------------------------------------------------------------------------------------------------------
# Commands


def needed_models(methods: list[str]) -> list[str]:
    """The skill models the methods read, in :data:`SKILL_MODELS` order."""
    return [model for model in SKILL_MODELS if model in {SKILL_MODEL_OF[m] for m in methods}]


def prior_path(workdir: Path, model: str) -> Path:
    """Where ``python -m hsd3_learn.spirl.train_prior`` leaves the skill model of kind ``model``."""
    return (workdir / f"prior_{model}" / "checkpoint-prior.pt").resolve()


def collect_command(workdir: Path, lo: Path) -> Runs:
    """The dataset collection with the low-level skills ``lo``, as a one-run mapping for learning.train_all."""
    command = [sys.executable, "-m", "hsd3_learn.spirl.collect", "profile=laptop", f"lo.init_from={lo.resolve()}"]
    return {("collect", 0): (command, workdir / "collect")}


def prior_commands(workdir: Path, models: list[str]) -> Runs:
    """The skill-model trainings on the collected dataset, keyed ``(prior_<model>, 0)`` (train_prior's seed is 0)."""
    dataset = (workdir / "collect" / "dataset").resolve()
    return {(f"prior_{model}", 0): ([sys.executable, "-m", "hsd3_learn.spirl.train_prior", f"model={model}",
                                     f"data.dir={dataset}", "profile=laptop", "threads=1"], workdir / f"prior_{model}")
            for model in models}


def skill_run_command(args: argparse.Namespace, method: str, seed: int) -> list[str]:
    """The training command of a skill-space agent: its skill model, then the same budget options as SAC's."""
    return [sys.executable, "-m", "hsd3_learn.spirl.train", f"agent={method}",
            f"prior.init_from={prior_path(args.workdir, SKILL_MODEL_OF[method])}", "profile=laptop",
            f"env.task={args.task}", f"seed={seed}", f"max_samples={args.samples}", "threads=1"]


def run_commands(args: argparse.Namespace) -> Runs:
    """The command line and run directory of every (method, seed), the slow methods first within each seed; SAC's
    are bench/learning.py's own (SAC reads no skills, so its ``lo`` is unused)."""
    sac_runs = learning.run_commands(argparse.Namespace(**{**vars(args), "method_list": ["sac"]}), Path("unused"))
    order = sorted(args.method_list, key=lambda m: m not in SLOW_METHODS)
    return {(method, seed): sac_runs[(method, seed)] if method == "sac" else
            (skill_run_command(args, method, seed), args.workdir / f"{method}_seed{seed}")
            for seed in args.seed_list for method in order}


# --------------------------------------------------------------------------------------------------------------
# Prior-rollout check


@dataclass
class RolloutArm:
    """The exploring episodes of one arm of the prior-rollout check, each array [E]."""

    model: str  # the skill model's kind
    arm: str  # a key of ARMS
    limit: int  # the time limit in steps
    lengths: np.ndarray  # [E] steps until the fall or the limit
    fell: np.ndarray  # [E] bool: the episode terminated (the walker fell)
    dx: np.ndarray  # [E] metres: the root's world x at the end minus at the start

    def summary(self) -> dict[str, float]:
        """Mean length over the limit, the share of episodes without a fall and of those lasting half the limit,
        mean and min dx."""
        return {"length/limit": float(self.lengths.mean() / self.limit), "no_fall": float(1 - self.fell.mean()),
                "half_limit": float((2 * self.lengths >= self.limit).mean()), "dx_mean": float(self.dx.mean()),
                "dx_min": float(self.dx.min())}

    @property
    def passes(self) -> bool:
        """Moves forward (mean dx > MIN_DX) and lasts half the limit in at least MIN_SURVIVING of the episodes."""
        summary = self.summary()
        return summary["dx_mean"] > MIN_DX and summary["half_limit"] >= MIN_SURVIVING


def rollout_config(agent: str, skill_path: Path, num_envs: int, max_episode_steps: int | None = None,
                   task: str = "Floor") -> DictConfig:
    """The laptop config ``python -m hsd3_learn.spirl.train`` composes for ``agent`` on this skill model and task,
    for ``num_envs`` envs on the CPU, with the ``time`` wrapper the agents need."""
    overrides = [f"agent={agent}", "profile=laptop", f"prior.init_from={Path(skill_path).resolve()}",
                 f"env.task={task}", f"env.num_envs={num_envs}", "device=cpu",
                 f"env.max_episode_steps={max_episode_steps or 'null'}"]
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(config_name=CONFIG_NAME, overrides=overrides)
    cfg.env.wrappers = with_time_wrapper(list(cfg.env.wrappers))
    return cfg


def world_x_entry(kept_entries: torch.Tensor, n_joints: int) -> int:
    """The entry of the env's ``observation`` [n_joints] that the skill state leaves out: the walker's root x in
    world coordinates (the pre-training env hides it; the planar walker has no world y)."""
    hidden = sorted(set(range(n_joints)) - {int(i) for i in kept_entries})
    if len(hidden) != 1:
        raise ValueError(f"the prior-rollout check needs exactly one observation entry outside the skill state (the "
                         f"walker's world x); got {hidden} of {n_joints}")
    return hidden[0]


def rollout(agent: SkillSpaceAgent, envs: TorchVectorEnv, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One exploring episode per env (env i reset with seed ``seed + i``), without ``observe``: the agent stores and
    learns nothing, so its skills keep coming from its initial policy. Returns lengths, fell (bool) and dx, each
    [E]; steps of envs that already finished (and auto-reset) are ignored."""
    n_envs = envs.num_envs
    x_entry = world_x_entry(agent.kept_entries, envs.single_observation_space["observation"].shape[0])
    obs, _ = envs.reset(seed=seed)
    start_x = obs["observation"][:, x_entry].cpu().numpy()
    end_x, lengths = start_x.copy(), np.zeros(n_envs, dtype=np.int64)
    fell, running = np.zeros(n_envs, dtype=bool), np.ones(n_envs, dtype=bool)
    while running.any():
        obs, _, terminated, truncated, info = envs.step(agent.action(obs, explore=True))
        last = info.get("final_obs", obs)["observation"][:, x_entry].cpu().numpy()
        end_x = np.where(running, last, end_x)
        lengths += running
        fell |= running & terminated.cpu().numpy()
        running &= ~(terminated | truncated).cpu().numpy()
    return lengths, fell, end_x - start_x


def rollout_arm(model: str, arm: str, skill_path: Path, episodes: int, seed: int = 0,
                max_episode_steps: int | None = None) -> RolloutArm:
    """One arm of the check on walker Floor: the prior arm acts with the agent of the model's kind, whose policy
    is the prior; the uniform arm with the no-prior agent, whose skills are uniform in [-r, r]^nz until it has
    seen ``randexp_samples`` env steps (it sees none here)."""
    cfg = rollout_config(ARMS[arm] or model, skill_path, episodes, max_episode_steps)
    seed_everything(seed)
    envs = make_vector_envs(cfg.env, cfg.env.num_envs, "cpu")
    try:
        agent = make_spirl_agent(cfg.agent, envs)
        lengths, fell, dx = rollout(agent, envs, seed)
    finally:
        envs.close()
    limit = cfg.env.max_episode_steps or TASKS[cfg.env.task][1]
    return RolloutArm(model, arm, int(limit), lengths, fell, dx)


def prior_check(skill_paths: dict[str, Path], episodes: int, seed: int = 0,
                max_episode_steps: int | None = None) -> list[RolloutArm]:
    """Both arms of every skill model in ``skill_paths`` (kind -> checkpoint-prior.pt), on one torch thread."""
    set_threads(1)
    return [rollout_arm(model, arm, path, episodes, seed, max_episode_steps)
            for model, path in skill_paths.items() for arm in ARMS]


def dataset_behaviour(dataset_dir: Path) -> dict[str, float]:
    """What the priors learned from, on the check's scale: the collected episodes' mean length over the longest
    (the collection's time limit), the share without a fall and of those lasting half that limit."""
    from hsd3_learn.spirl.data import load_episodes

    episodes = load_episodes(dataset_dir)
    lengths = np.array([episode.n_steps for episode in episodes])
    fell = np.array([bool(episode.terminals[-1]) for episode in episodes])
    limit = int(lengths.max())
    return {"episodes": len(episodes), "limit": limit, "length/limit": float(lengths.mean() / limit),
            "no_fall": float(1 - fell.mean()), "half_limit": float((2 * lengths >= limit).mean())}


def rollout_table(arms: list[RolloutArm], data: dict[str, float] | None = None) -> str:
    """The check's table (one row per model and arm) and one PASS/FAIL line per model, judged on its prior arm;
    ``data`` (:func:`dataset_behaviour`) adds the collected episodes for comparison."""
    lines = [f"prior-rollout check: walker Floor, {len(arms[0].lengths)} exploring episodes per arm (env i seeded "
             f"with i), time limit {arms[0].limit} steps, no learning (observe is never called)",
             "prior: skills sampled from the skill prior (the agent's policy before any update); uniform: skills "
             "uniform in [-r, r]^nz, r = max_action_range (the no-prior agent's random start), both through the "
             "same decoder", "",
             f"{'model':<13}{'arm':<9}{'length/limit':>13}{'no fall':>10}{'half limit':>12}{'dx mean':>10}"
             f"{'dx min':>10}  check"]
    for arm in arms:
        s = arm.summary()
        lines.append(f"{arm.model:<13}{arm.arm:<9}{s['length/limit']:>13.2f}{s['no_fall']:>10.2f}"
                     f"{s['half_limit']:>12.2f}{s['dx_mean']:>10.2f}{s['dx_min']:>10.2f}  "
                     f"{'PASS' if arm.passes else 'FAIL'}")
    if data is not None:
        lines.append(f"{'dataset':<13}{'data':<9}{data['length/limit']:>13.2f}{data['no_fall']:>10.2f}"
                     f"{data['half_limit']:>12.2f}{'n/a':>10}{'n/a':>10}  (the {data['episodes']} collected "
                     f"episodes, limit {data['limit']}; no world x is stored)")
    lines.append("")
    for arm in (a for a in arms if a.arm == "prior"):
        s = arm.summary()
        lines.append(f"{arm.model}: {'PASS' if arm.passes else 'FAIL'} (mean dx {s['dx_mean']:.2f} m, needs > "
                     f"{MIN_DX}; {100 * s['half_limit']:.0f} % of episodes last >= {arm.limit // 2} steps, needs >= "
                     f"{100 * MIN_SURVIVING:.0f} %)")
    return "\n".join(lines)


def write_rollouts(arms: list[RolloutArm], stem: Path, data: dict[str, float] | None = None) -> str:
    """``<stem>.csv`` (one row per episode) and ``<stem>.txt`` (:func:`rollout_table`); returns the table."""
    with open(stem.with_suffix(".csv"), "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["model", "arm", "episode", "length", "limit", "fell", "dx"])
        for arm in arms:
            for i, (length, fell, dx) in enumerate(zip(arm.lengths, arm.fell, arm.dx)):
                writer.writerow([arm.model, arm.arm, i, int(length), arm.limit, int(fell), f"{dx:.4f}"])
    text = rollout_table(arms, data)
    stem.with_suffix(".txt").write_text(text + "\n")
    return text


# --------------------------------------------------------------------------------------------------------------
# Report


def reported_rows(rows: list[dict], methods: list[str]) -> tuple[list[dict], list[str]]:
    """The rows of the methods that have evaluations, restricted to the seeds all of them have (the table compares
    equal seeds), and those methods in ``methods`` order."""
    present = [m for m in methods if any(r["method"] == m for r in rows)]
    seeds = set.intersection(*[{r["seed"] for r in rows if r["method"] == m} for m in present])
    return [r for r in rows if r["method"] in present and r["seed"] in seeds], present


def ratio_to_sac(value: float, sac: float) -> str:
    """``value / sac`` with two decimals, or ``n/a`` where SAC's value is not positive."""
    return f"{value / sac:.2f}" if sac > 0 else "n/a"


def comparison_table(points: list[int], values: dict[str, np.ndarray], digits: int) -> list[str]:
    """Per evaluation: each method's mean over seeds ([seeds, points] arrays), then each other method's ratio to
    SAC when SAC is among them."""
    others = [m for m in values if m != "sac"] if "sac" in values else []
    lines = [f"{'samples':>9}" + "".join(f"{m:>14}" for m in values) + "".join(f"{m + '/sac':>18}" for m in others)]
    for j, point in enumerate(points):
        means = {m: float(v[:, j].mean()) for m, v in values.items()}
        lines.append(f"{point:>9}" + "".join(f"{means[m]:>14.{digits}f}" for m in values)
                     + "".join(f"{ratio_to_sac(means[m], means['sac']):>18}" for m in others))
    return lines


def report(args: argparse.Namespace, points: list[int], scores: dict[str, np.ndarray],
           lengths: dict[str, np.ndarray], walls: dict[tuple[str, int], float], runs: Runs,
           missing: list[tuple[str, int]]) -> str:
    """The printed table: mean score and episode length of every method per evaluation with its ratio to SAC, the
    wall clock of every step, the budgets and the commands."""
    if args.report_only:  # the runs were made by an earlier invocation or by hand: --jobs says nothing about them
        conditions = args.conditions or "runs made earlier (how many at a time was not recorded)"
    else:
        conditions = f"{args.jobs} runs at a time, 1 torch thread each, on {os.cpu_count()} CPU cores"
    lines = [f"SPiRL family vs flat SAC: walker {args.task}, profile=laptop, max_samples={args.samples} per run, "
             f"seeds {args.seeds}, {conditions}",
             "score = sum of info['score'] over an episode (hurdles cleared; falls do not subtract), mean of 10 "
             "deterministic episodes per evaluation, then mean over seeds; x/sac: the ratio of means (n/a: SAC 0)", ""]
    lines += ["score:", *comparison_table(points, scores, 3), "",
              f"episode length ({TASKS[args.task][1]} = no fall):", *comparison_table(points, lengths, 1), ""]
    for method, values in scores.items():
        area = np.trapezoid(values.mean(0), points) / max(points[-1] - points[0], 1)
        lines.append(f"{method}: mean score over the run (area under the curve / steps) {area:.3f}, final "
                     f"{values[:, -1].mean():.3f}, final episode length {lengths[method][:, -1].mean():.1f}")
    lines += ["", "wall clock (sharing the cores):"]
    lines += [f"  {f'{name} seed {seed}' if name in METHODS else name}: {wall / 60:.1f} min"
              for (name, seed), wall in walls.items()]
    if missing:
        lines += ["", "not in the table (no evaluations yet, or a seed the other methods lack): "
                  + ", ".join(f"{m} seed {s}" for m, s in missing)]
    lines += ["", f"low-level skills: {low_level_path(args)}",
              "commands (python -m ..., each in its run directory; rerunning one resumes it):"]
    lines += [f"  {' '.join(command[1:])}   (in {run_dir})" for command, run_dir in runs.values()]
    return "\n".join(lines)


def low_level_path(args: argparse.Namespace) -> Path:
    """The low-level checkpoint the dataset is collected with: ``--lo`` or the one pre-trained in the workdir."""
    return args.lo or args.workdir / "pretrain" / "checkpoint-lo.pt"


def all_commands(args: argparse.Namespace) -> Runs:
    """Collection, skill models and runs, in the order they run (pre-training is bench/learning.py's)."""
    models = needed_models(args.method_list)
    stages = {**collect_command(args.workdir, low_level_path(args)), **prior_commands(args.workdir, models)}
    return {**(stages if models else {}), **run_commands(args)}


def write_report(args: argparse.Namespace) -> str:
    """Read every run's eval.csv and write ``spirl-<task>.csv``, ``.txt`` and ``.png`` to ``--out``."""
    runs = run_commands(args)
    rows = learning.read_curves({k: v for k, v in runs.items() if (v[1] / "eval.csv").is_file()})
    if not rows:
        raise SystemExit(f"no run in {args.workdir} has evaluations yet; run this script without --report-only")
    rows, methods = reported_rows(rows, args.method_list)
    stem = args.out / f"spirl-{args.task.lower()}"
    with open(stem.with_suffix(".csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    points, scores = learning.summarize(rows, methods)
    lengths = learning.summarize(rows, methods, "length_mean")[1]
    reported = {(r["method"], r["seed"]) for r in rows}
    commands = all_commands(args)
    walls = learning.read_walls({("pretrain", 0): ([], args.workdir / "pretrain"), **commands})
    text = report(args, points, scores, lengths, walls, commands, [key for key in runs if key not in reported])
    stem.with_suffix(".txt").write_text(text + "\n")
    learning.plot(stem.with_suffix(".png"), args.task, points, scores, lengths)
    return text


# --------------------------------------------------------------------------------------------------------------
# Main


def low_level_skills(args: argparse.Namespace) -> Path:
    """``--lo`` if it exists, else pre-trained skills in ``<workdir>/pretrain`` (resumed if interrupted)."""
    if args.lo is not None:
        if not args.lo.is_file():
            raise SystemExit(f"--lo {args.lo} does not exist; leave it out to pre-train here")
        return args.lo
    return learning.pretrain(args.workdir)[0]


def run_prior_check(args: argparse.Namespace, models: list[str]) -> None:
    """The prior-rollout check on the trained skill models; prints its table and writes its files to ``--out``."""
    paths = {model: prior_path(args.workdir, model) for model in models}
    absent = [str(path) for path in paths.values() if not path.is_file()]
    if absent:
        raise SystemExit(f"no skill model at {', '.join(absent)}; run this script without --rollouts-only first")
    dataset = args.workdir / "collect" / "dataset"
    data = dataset_behaviour(dataset) if dataset.is_dir() else None
    text = write_rollouts(prior_check(paths, args.rollout_episodes), args.out / "spirl-prior-rollouts", data)
    print(text, flush=True)


def main(argv: list[str] | None = None) -> None:
    """Steps 1-6 of the module docstring, or only the report or only the check."""
    args = parse_args(argv)
    args.workdir.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    models = needed_models(args.method_list)
    if args.rollouts_only:
        run_prior_check(args, models or list(SKILL_MODELS))
        return
    if not args.report_only:
        if models:
            learning.train_all(collect_command(args.workdir, low_level_skills(args)), 1)
            learning.train_all(prior_commands(args.workdir, models), args.jobs)
            if args.rollout_episodes:
                run_prior_check(args, models)
        learning.train_all(run_commands(args), args.jobs)
    print(write_report(args))
    print(f"wrote {args.out / f'spirl-{args.task.lower()}'}.csv, .txt and .png")


if __name__ == "__main__":
    main()
