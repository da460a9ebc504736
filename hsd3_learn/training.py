"""The training loop of HSD-3's downstream runs, for any agent: vector envs from a config, the loop, deterministic
evaluation, logging, and checkpoints that a rerun resumes from.

``python -m hsd3_learn.train`` (:mod:`hsd3_learn.train`) composes a Hydra config and calls :func:`prepare_run` and
:func:`train`; notebooks can call the pieces directly. What a run does, in order:

1. :func:`prepare_run` checks the config (unknown task, robot or agent names fail with one line), seeds
   everything, builds the training and evaluation vector envs (:func:`make_vector_envs`) and the agent
   (:func:`make_run_agent`), and resumes from ``checkpoint.pt`` when the run directory has one.
2. :func:`train_loop` steps the training envs with exploring actions and hands every transition to the agent,
   which runs its updates when they are due. With same-step auto-reset the observation a finished episode ended
   in is ``info["final_obs"]``; the step returns the next episode's first observation.
3. Every ``eval.interval`` samples, and at the start and the end, :func:`evaluate` plays one deterministic
   episode in each evaluation env (env i seeded with i) and scores it by the sum of ``info["score"]``, the task's
   sparse reward without the fall penalty. Results go to TensorBoard (``eval/``), ``eval.csv`` and the progress bar.
4. Every ``checkpoint.interval`` samples, at the end, and when SIGTERM/SIGUSR1 arrive, the agent is saved
   atomically (counters, networks, optimizers, RNG states, optionally the replay buffer).

Files in the run directory: ``checkpoint.pt``, ``config.yaml`` (the resolved config, seed included), ``eval.csv``,
``tb/`` (TensorBoard events: ``train/``, ``eval/``, ``health/`` scalars and the config as text) and, with
``eval.video``, ``videos/eval_<samples>.mp4``.

Differences from hucc's ``train.py``:

1. One loop for every agent through ``action(obs, explore)`` / ``observe(...)``; hucc passed the env and extra
   values to ``agent.action``/``agent.step`` and reset finished envs itself (``reset_if_done``).
2. A rerun of the same command in the same directory resumes from the latest checkpoint, whatever wrote it;
   ``eval.csv`` loses the rows after it and TensorBoard hides later events (``purge_step``), so a crash leaves no
   duplicates. hucc resumed only after its SIGUSR1 handler had written ``training_state.json``, with the replay
   buffer in a separate file, and logged evaluations after the restored sample count twice.
3. The training envs of a resumed run start new episodes, reset with seed ``seed + n_samples``: the simulator state
   is not checkpointed, and reusing ``seed`` would replay the first episodes.
4. Evaluations and checkpoints happen when ``n_samples`` crosses a multiple of their interval (hucc required
   ``n_samples % interval == 0``, which never holds when the number of envs does not divide the interval), and a
   final evaluation at the end is not repeated when the last interval evaluation fell on the same sample.
5. Evaluation reports score, undiscounted return and episode length (mean/min/max); hucc also logged the discounted
   return and std, and videos went to visdom instead of MP4 files.
6. Signals are handled at a safe point between steps (``PreemptionHook`` in deferred mode), and the process then
   exits normally; hucc checkpointed inside the SIGUSR1 handler.
7. ``auto_adapt`` (hucc's ``auto_adapt_config``) changes only goal-space agents' settings (:data:`AUTO_ADAPTATIONS`)
   and logs what it changed; no state-count diagnostics (``dump_state_counts``).
"""

from __future__ import annotations

import csv
import logging
import os
import time
from collections.abc import Callable, Collection, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from envs import task_class
from envs.gallery import save_episode_video
from envs.robots import get_robot
from hsd3_learn.agents import AGENTS, Agent, make_agent
from hsd3_learn.agents.hsd3_interface import GOAL_SPACE_KEY, make_hsd3_env
from hsd3_learn.envs.vector import TorchVectorEnv, make_vector_env
from hsd3_learn.envs.wrappers import make_env
from hsd3_learn.utils import PreemptionHook, resolve_device, seed_everything

__all__ = ["AUTO_ADAPTATIONS", "EVAL_COLUMNS", "EpisodeStats", "EvalLog", "EvalResult", "RunSetup", "Schedule",
           "TrainResult", "auto_adapt", "check_config", "eval_mode", "evaluate", "is_due", "make_run_agent",
           "make_task_env", "make_vector_envs", "open_run", "prepare_run", "record_video", "set_threads",
           "step_info_values", "train", "train_loop", "train_step"]

log = logging.getLogger(__name__)

EVAL_CSV = "eval.csv"
CONFIG_FILE = "config.yaml"
TENSORBOARD_DIR = "tb"
VIDEO_DIR = "videos"
#: the columns of eval.csv: the sample count, then :meth:`EvalResult.summary`
EVAL_COLUMNS = ("samples", "score_mean", "score_min", "score_max", "return_mean", "return_min", "return_max",
                "length_mean", "length_min", "length_max")


# --------------------------------------------------------------------------------------------------------------
# Config and environments


@dataclass(frozen=True)
class Schedule:
    """When things happen, in samples (env steps summed over the training envs)."""

    max_samples: int  # training stops once this many samples were collected
    eval_interval: int  # evaluate whenever n_samples crosses a multiple of this
    checkpoint_interval: int  # checkpoint whenever n_samples crosses a multiple of this

    def __post_init__(self) -> None:
        for name in ("max_samples", "eval_interval", "checkpoint_interval"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"Schedule.{name} must be a positive integer (in samples); got {value!r}")

    @classmethod
    def from_config(cls, cfg: DictConfig) -> Schedule:
        """The schedule of a run config (``max_samples``, ``eval.interval``, ``checkpoint.interval``)."""
        return cls(cfg.max_samples, cfg.eval.interval, cfg.checkpoint.interval)


def is_due(n_samples: int, last: int, interval: int) -> bool:
    """Whether a multiple of ``interval`` lies in ``(last, n_samples]``; ``last = -1`` makes 0 due."""
    return n_samples // interval > last // interval


def set_threads(threads: int | None) -> None:
    """Use ``threads`` torch CPU threads (None: leave torch's default). Runs sharing the cores of one machine
    should use 1 each: more threads than free cores make torch's thread pool spin and every update many times
    slower."""
    if threads is None:
        return
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads must be a positive integer or null (torch's default); got {threads!r}")
    torch.set_num_threads(threads)


def check_config(cfg: DictConfig, agents: Collection[str] = AGENTS) -> None:
    """Fail with one line on a missing value or an unknown task, robot or agent (one of the names ``agents``),
    before anything is built."""
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        raise ValueError(f"missing config values: {', '.join(missing)}; set them on the command line, e.g. "
                         f"{missing[0]}=...")
    task_class(cfg.env.task)
    get_robot(cfg.env.robot)
    if cfg.agent.name not in agents:
        raise ValueError(f"unknown agent {cfg.agent.name!r}; valid agents: {', '.join(sorted(agents))}")
    for key in ("env.num_envs", "eval.num_envs", "eval.video_steps"):
        value = OmegaConf.select(cfg, key)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{key} must be a positive integer; got {value!r}")
    Schedule.from_config(cfg)


def _env_kwargs(env_cfg: DictConfig, **extra: Any) -> dict[str, Any]:
    """Keyword arguments of :func:`make_env` for one env of ``env_cfg`` (task's own time limit if none is set)."""
    kwargs: dict[str, Any] = {"wrappers": list(env_cfg.wrappers), **extra}
    if env_cfg.max_episode_steps is not None:
        kwargs["max_episode_steps"] = int(env_cfg.max_episode_steps)
    return kwargs


def make_task_env(env_cfg: DictConfig, agent_cfg: Mapping[str, Any] | None = None, **extra: Any) -> gym.Env:
    """One env of a run: ``env_cfg.task`` for ``env_cfg.robot`` with ``env_cfg.wrappers``; for agents that read the
    goal space (HSD-3, HSD-Bandit) also the episode step and the raw goal-space features of
    ``agent_cfg.goal_space`` (:func:`make_hsd3_env`). ``extra`` goes to the task (e.g. ``render_mode``)."""
    kwargs = _env_kwargs(env_cfg, **extra)
    agent_cls = AGENTS.get(agent_cfg["name"]) if agent_cfg is not None else None
    if agent_cls is not None and agent_cls.reads_goal_space:
        gs = agent_cfg.get("goal_space") or {}
        return make_hsd3_env(env_cfg.task, env_cfg.robot, goal_space_kind=gs.get("features", "bodyfeet"),
                             key=gs.get("key", GOAL_SPACE_KEY), **kwargs)
    return make_env(env_cfg.task, env_cfg.robot, **kwargs)


def make_vector_envs(env_cfg: DictConfig, num_envs: int, device: str | torch.device = "cpu",
                     agent_cfg: Mapping[str, Any] | None = None) -> TorchVectorEnv:
    """``num_envs`` envs of :func:`make_task_env`, vectorised (``env_cfg.vector``: sync or async) with same-step
    auto-reset, speaking torch on ``device``."""
    make_one = partial(make_task_env, env_cfg, agent_cfg)
    return TorchVectorEnv(make_vector_env([make_one] * num_envs, kind=env_cfg.vector), device=device)


#: hucc's ``auto_adapt_config``: task -> (agent config key, value) that HSD-3 and HSD-Bandit need there
AUTO_ADAPTATIONS: dict[str, tuple[str, Any]] = {
    "Stairs": ("goal_space.features", "bodyfeet-relz"),  # heights above the steps, not above z = 0
    "PoleBalance": ("action_interval", 1),  # the pole needs a decision at every step
}


def auto_adapt(cfg: DictConfig) -> list[str]:
    """With ``auto_adapt: true`` and a goal-space agent, apply :data:`AUTO_ADAPTATIONS` for ``env.task`` to
    ``cfg.agent`` in place; returns the changes as ``key=value`` strings (logged by the run)."""
    if not cfg.get("auto_adapt", False) or cfg.env.task not in AUTO_ADAPTATIONS:
        return []
    agent_cls = AGENTS.get(cfg.agent.name)
    if agent_cls is None or not agent_cls.reads_goal_space:
        return []
    key, value = AUTO_ADAPTATIONS[cfg.env.task]
    if OmegaConf.select(cfg.agent, key) == value:
        return []
    OmegaConf.update(cfg.agent, key, value, merge=False)
    return [f"agent.{key}={value}"]


def make_run_agent(agent_cfg: Mapping[str, Any], envs: TorchVectorEnv, writer: SummaryWriter | None = None) -> Agent:
    """The agent named ``agent_cfg["name"]``, for one env's spaces and ``envs.num_envs`` envs; the other keys are
    its config."""
    options = OmegaConf.to_container(agent_cfg, resolve=True) if isinstance(agent_cfg, DictConfig) else dict(agent_cfg)
    name = options.pop("name")
    return make_agent(name, envs.single_observation_space, envs.single_action_space, envs.num_envs, options,
                      writer=writer)


# --------------------------------------------------------------------------------------------------------------
# Evaluation


@dataclass
class EvalResult:
    """One finished episode per evaluation env: score, undiscounted return and length, each [E]."""

    scores: np.ndarray  # [E] sum of info["score"] over the episode
    returns: np.ndarray  # [E] sum of rewards over the episode
    lengths: np.ndarray  # [E] steps in the episode

    def summary(self) -> dict[str, float]:
        """Mean, min and max of each quantity over episodes, keyed like ``score_mean`` (the eval.csv columns)."""
        out: dict[str, float] = {}
        for name, values in (("score", self.scores), ("return", self.returns), ("length", self.lengths)):
            out.update({f"{name}_mean": float(values.mean()), f"{name}_min": float(values.min()),
                        f"{name}_max": float(values.max())})
        return out


def step_info_values(info: Mapping[str, Any], key: str, ended: np.ndarray) -> np.ndarray:
    """``info[key]`` of the step just taken, for every env: [N].

    With same-step auto-reset, an env whose episode ended this step reports its reset info in ``info`` and the
    info of its last step in ``info["final_info"]``; ``ended`` [N] (bool) says which envs that is.
    """
    values, found = np.zeros(len(ended)), np.zeros(len(ended), dtype=bool)
    for source, rows in ((info, ~ended), (info.get("final_info", {}), ended)):
        if key in source:
            mask = np.asarray(source[f"_{key}"], dtype=bool) & rows
            values[mask] = np.asarray(source[key], dtype=np.float64)[mask]
            found |= mask
    if not found.all():
        raise ValueError(f"the step info of envs {np.flatnonzero(~found).tolist()} has no {key!r}; evaluation scores "
                         "episodes by it")
    return values


@contextmanager
def eval_mode(agent: Agent) -> Iterator[Agent]:
    """Put the agent in evaluation mode for the block and restore its previous mode afterwards."""
    was_training = agent.training
    agent.eval()
    try:
        yield agent
    finally:
        if was_training:
            agent.train()


def evaluate(agent: Agent, envs: TorchVectorEnv, seed: int = 0, score_key: str = "score") -> EvalResult:
    """One episode per env with deterministic actions, env i reset with seed ``seed + i``: [E] scores (the episode
    sums of ``info[score_key]``), returns and lengths.

    All envs start together and the batch is stepped until every episode has ended; steps of envs that already
    finished (and auto-reset) are ignored. The agent should be in evaluation mode (:func:`eval_mode`).
    """
    n_envs = envs.num_envs
    scores, returns = np.zeros(n_envs), np.zeros(n_envs)
    lengths = np.zeros(n_envs, dtype=np.int64)
    running = np.ones(n_envs, dtype=bool)
    obs, _ = envs.reset(seed=seed)
    while running.any():
        obs, reward, terminated, truncated, info = envs.step(agent.action(obs, explore=False))
        ended = (terminated | truncated).cpu().numpy()
        returns += np.where(running, reward.cpu().numpy(), 0.0)
        scores += np.where(running, step_info_values(info, score_key, ended), 0.0)
        lengths += running
        running &= ~ended
    return EvalResult(scores, returns, lengths)


def _batch_of_one(obs: Any, device: torch.device) -> Any:
    """One env's observation (array or dict of arrays) -> a batch of one as float32 tensors [1, ...]."""
    if isinstance(obs, Mapping):
        return {key: _batch_of_one(value, device) for key, value in obs.items()}
    return torch.as_tensor(np.asarray(obs), dtype=torch.float32, device=device).unsqueeze(0)


def record_video(agent: Agent, env_cfg: DictConfig, path: str | os.PathLike, steps: int,
                 agent_cfg: Mapping[str, Any] | None = None) -> Path:
    """An MP4 of one deterministic episode (env seed 0, at most ``steps`` steps) of the task in ``env_cfg``, in
    the envs of ``agent_cfg`` (see :func:`make_task_env`)."""
    env = make_task_env(env_cfg, agent_cfg, render_mode="rgb_array")

    def policy(obs: Any) -> np.ndarray:
        return agent.action(_batch_of_one(obs, agent.device), explore=False)[0].cpu().numpy()

    try:
        return save_episode_video(env, None, path, steps, policy=policy, seed=0)
    finally:
        env.close()


class EvalLog:
    """``eval.csv``: one row per evaluation (:data:`EVAL_COLUMNS`, or ``columns`` starting with ``samples``),
    appended and flushed as evaluations finish. Values read back as floats, except in ``text_columns`` and empty
    cells (strings)."""

    def __init__(self, path: str | os.PathLike, columns: tuple[str, ...] = EVAL_COLUMNS,
                 text_columns: tuple[str, ...] = ()) -> None:
        if not columns or columns[0] != "samples" or not set(text_columns) <= set(columns[1:]):
            raise ValueError(f"EvalLog columns must start with 'samples' and hold the text columns; got {columns!r}, "
                             f"{text_columns!r}")
        self.path = Path(path)
        self.columns = tuple(columns)
        self.text_columns = frozenset(text_columns)

    def rows(self) -> list[dict[str, float]]:
        """The rows written so far (empty when the file does not exist)."""
        if not self.path.exists():
            return []
        with self.path.open(newline="") as f:
            reader = csv.DictReader(f)
            if tuple(reader.fieldnames or ()) != self.columns:
                raise ValueError(f"{self.path} has columns {reader.fieldnames}, not {list(self.columns)}; move it "
                                 "away or use another run directory")
            return [{key: value if key in self.text_columns or value == "" else float(value)
                     for key, value in row.items()} for row in reader]

    def truncate(self, n_samples: int) -> int:
        """Drop the rows after ``n_samples`` (evaluations the checkpoint being resumed did not see); returns the
        sample count of the last remaining evaluation, or -1 if none is left."""
        rows = self.rows()
        kept = [row for row in rows if row["samples"] <= n_samples]
        if len(kept) < len(rows):
            tmp = self.path.with_name(f".{self.path.name}.tmp")
            self._write(tmp, kept, "w")
            os.replace(tmp, self.path)
        return int(kept[-1]["samples"]) if kept else -1

    def append(self, n_samples: int, summary: Mapping[str, float | str]) -> None:
        """Add the row of an evaluation at ``n_samples`` (the header first, for a new file)."""
        self.extend(n_samples, [summary])

    def extend(self, n_samples: int, summaries: list[Mapping[str, float | str]]) -> None:
        """Add several rows of one evaluation at ``n_samples`` (e.g. one per subset)."""
        self._write(self.path, [{"samples": n_samples, **summary} for summary in summaries], "a")

    def _write(self, path: Path, rows: list[Mapping[str, float | str]], mode: str) -> None:
        new = mode == "w" or not path.exists() or path.stat().st_size == 0
        with path.open(mode, newline="") as f:
            writer = csv.DictWriter(f, fieldnames=self.columns)
            if new:
                writer.writeheader()
            writer.writerows({key: row[key] for key in self.columns} for row in rows)



# --------------------------------------------------------------------------------------------------------------
# The loop


class EpisodeStats:
    """Return and length of each training env's current episode, reported when episodes end."""

    def __init__(self, n_envs: int) -> None:
        self.returns = torch.zeros(n_envs)
        self.lengths = torch.zeros(n_envs, dtype=torch.long)

    def update(self, reward: torch.Tensor, ended: torch.Tensor) -> dict[str, float]:
        """Add one step (reward, ended: [N]); the mean return and length of the episodes that ended, or ``{}``."""
        ended = ended.cpu()
        self.returns += reward.cpu()
        self.lengths += 1
        if not ended.any():
            return {}
        metrics = {"episode_return": self.returns[ended].mean().item(),
                   "episode_length": self.lengths[ended].float().mean().item()}
        self.returns[ended] = 0.0
        self.lengths[ended] = 0
        return metrics


def train_step(agent: Agent, envs: TorchVectorEnv, obs: Any, episodes: EpisodeStats) -> Any:
    """One exploring vector-env step, handed to the agent; returns the observation to act on next."""
    action = agent.action(obs, explore=True)
    next_obs, reward, terminated, truncated, info = envs.step(action)
    # Same-step auto-reset: for envs that just ended, next_obs already starts the next episode; the observation
    # this action led to is info["final_obs"] (that is what the replay buffer must store).
    agent.observe(obs, action, reward, terminated, truncated, info.get("final_obs", next_obs), info)
    finished = episodes.update(reward, terminated | truncated)
    if finished:
        agent.log_scalars("train/", finished)
    return next_obs


def train_loop(agent: Agent, envs: TorchVectorEnv, schedule: Schedule, evaluate_fn: Callable[[], None],
               checkpoint_fn: Callable[[], None], hook: PreemptionHook, last_eval: int = -1,
               reset_seed: int | None = None, progress: tqdm | None = None) -> bool:
    """Train until ``agent.n_samples`` reaches ``schedule.max_samples``; True when done, False when a signal stopped
    the run (after ``hook`` saved a checkpoint).

    ``evaluate_fn`` runs when n_samples crosses a multiple of the eval interval (also at 0) and once at the end;
    ``last_eval`` is the sample count of the latest evaluation already done (-1: none). ``checkpoint_fn`` runs
    at checkpoint-interval crossings and at the end. Evaluation comes first, so a checkpoint always follows every
    evaluation it knows of (see :meth:`EvalLog.truncate`).
    """
    obs, _ = envs.reset(seed=reset_seed)
    episodes = EpisodeStats(envs.num_envs)
    last_checkpoint = agent.n_samples
    since = (time.perf_counter(), agent.n_samples)  # throughput is measured between evaluations, without them
    while True:
        n_samples = agent.n_samples
        if is_due(n_samples, last_eval, schedule.eval_interval) or (n_samples >= schedule.max_samples > last_eval):
            if n_samples > since[1]:
                rate = (n_samples - since[1]) / (time.perf_counter() - since[0])
                agent.log_scalars("health/", {"samples_per_second": rate})
            evaluate_fn()
            last_eval, since = n_samples, (time.perf_counter(), n_samples)
        if n_samples >= schedule.max_samples:
            break
        if is_due(n_samples, last_checkpoint, schedule.checkpoint_interval):
            checkpoint_fn()
            last_checkpoint = n_samples
        if hook.checkpoint_if_requested():
            return False
        obs = train_step(agent, envs, obs, episodes)
        if progress is not None:
            progress.update(agent.n_samples - n_samples)
    if last_checkpoint != agent.n_samples:
        checkpoint_fn()
    return True


# --------------------------------------------------------------------------------------------------------------
# A whole run


@dataclass
class RunSetup:
    """Everything :func:`train` needs, built by :func:`prepare_run`."""

    cfg: DictConfig
    run_dir: Path
    agent: Agent
    envs: TorchVectorEnv
    eval_envs: TorchVectorEnv
    writer: SummaryWriter
    eval_log: EvalLog
    last_eval: int  # sample count of the last evaluation in eval.csv, -1 if none
    resumed: bool

    @property
    def checkpoint_path(self) -> Path:
        """Where the run's checkpoint is written and resumed from."""
        return self.run_dir / self.cfg.checkpoint.path

    def close(self) -> None:
        """Close the envs and flush TensorBoard."""
        self.envs.close()
        self.eval_envs.close()
        self.writer.close()


@dataclass
class TrainResult:
    """How a run ended."""

    finished: bool  # False when a signal stopped it
    n_samples: int  # samples collected so far, over all runs of this directory
    last_eval: dict[str, float] | None  # the summary of the latest evaluation of this process, if any


#: builds a run's agent from ``cfg.agent`` for the training envs (default: :func:`make_run_agent`)
AgentFactory = Callable[[DictConfig, TorchVectorEnv], Agent]


def _agent_for_run(cfg: DictConfig, run_dir: Path, train_envs: TorchVectorEnv,
                   extend: Callable[[Agent], None] | None = None,
                   make_agent_fn: AgentFactory | None = None) -> tuple[Agent, bool]:
    """The run's agent (``extend`` adds run state to it first), loaded from the run's checkpoint when there is
    one; also whether it was."""
    agent = (make_agent_fn or make_run_agent)(cfg.agent, train_envs)
    if extend is not None:
        extend(agent)
    checkpoint = run_dir / cfg.checkpoint.path
    if not checkpoint.exists():
        return agent, False
    agent.load_checkpoint(checkpoint)
    log.info("resuming from %s at %d samples", checkpoint, agent.n_samples)
    return agent, True


def prepare_run(cfg: DictConfig, run_dir: str | os.PathLike = ".") -> RunSetup:
    """Check the config, seed, build envs and agent, resume from the checkpoint in ``run_dir`` if there is one
    (creating the directory if needed), and write the resolved config. Bad input fails here, with one-line errors,
    before any training."""
    check_config(cfg)
    for change in auto_adapt(cfg):
        log.info("auto_adapt for %s: %s", cfg.env.task, change)
    device = resolve_device(cfg.device)
    set_threads(cfg.get("threads"))
    seed_everything(cfg.seed)
    train_envs = make_vector_envs(cfg.env, cfg.env.num_envs, device, cfg.agent)
    eval_envs = make_vector_envs(cfg.env, cfg.eval.num_envs, device, cfg.agent)
    return open_run(cfg, Path(run_dir), train_envs, eval_envs, EvalLog(Path(run_dir) / EVAL_CSV))


def open_run(cfg: DictConfig, run_dir: Path, train_envs: TorchVectorEnv, eval_envs: TorchVectorEnv,
             eval_log: EvalLog, extend: Callable[[Agent], None] | None = None,
             make_agent_fn: AgentFactory | None = None) -> RunSetup:
    """The shared second half of preparing a run: the agent (``make_agent_fn(cfg.agent, train_envs)``, default
    :func:`make_run_agent`; resumed if ``run_dir`` has a checkpoint; ``extend`` attaches extra run state to it
    before loading), ``eval_log`` cut back to the checkpoint, TensorBoard and ``config.yaml``. Closes the envs if
    anything fails."""
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        agent, resumed = _agent_for_run(cfg, run_dir, train_envs, extend, make_agent_fn)
        last_eval = eval_log.truncate(agent.n_samples)
    except BaseException:
        train_envs.close()
        eval_envs.close()
        raise
    # On resume, hide the events a crash left after the checkpoint: they are about to be logged again.
    writer = SummaryWriter(str(run_dir / TENSORBOARD_DIR), purge_step=agent.n_samples + 1 if resumed else None)
    agent.writer = writer
    config_yaml = OmegaConf.to_yaml(cfg, resolve=True)
    (run_dir / CONFIG_FILE).write_text(config_yaml)
    writer.add_text("config", f"```yaml\n{config_yaml}```", agent.n_samples)
    writer.add_text("seed", str(cfg.seed), agent.n_samples)
    return RunSetup(cfg, run_dir, agent, train_envs, eval_envs, writer, eval_log, last_eval, resumed)


def _evaluate_and_log(setup: RunSetup, progress: tqdm | None) -> dict[str, float]:
    """Evaluate, then log to TensorBoard, eval.csv, the log and the progress bar (and record a video)."""
    agent, cfg = setup.agent, setup.cfg
    with eval_mode(agent):
        summary = evaluate(agent, setup.eval_envs).summary()
        if cfg.eval.video:
            video = setup.run_dir / VIDEO_DIR / f"eval_{agent.n_samples:09d}.mp4"
            record_video(agent, cfg.env, video, cfg.eval.video_steps, cfg.agent)
    agent.log_scalars("eval/", summary)
    setup.eval_log.append(agent.n_samples, summary)
    log.info("eval at %d samples: score %.3f (min %.3f, max %.3f), return %.3f", agent.n_samples,
             summary["score_mean"], summary["score_min"], summary["score_max"], summary["return_mean"])
    if progress is not None:
        progress.set_postfix(eval_score=f"{summary['score_mean']:.3f}")
    return summary


def train(setup: RunSetup, progress: bool = True,
          evaluate_run: Callable[[RunSetup, tqdm | None], dict[str, float]] | None = None) -> TrainResult:
    """Run the loop of a prepared run with a progress bar (stderr), checkpointing on SIGTERM/SIGUSR1; closes the
    setup at the end. ``evaluate_run(setup, bar)`` evaluates and logs (default: the task evaluation of
    :func:`evaluate`; pre-training passes its own) and returns a summary."""
    evaluate_run = evaluate_run or _evaluate_and_log
    cfg, agent = setup.cfg, setup.agent
    schedule = Schedule.from_config(cfg)
    latest: dict[str, dict[str, float]] = {}

    def save() -> None:
        agent.save_checkpoint(setup.checkpoint_path, include_buffer=cfg.checkpoint.include_buffer)
        log.info("checkpoint at %d samples: %s", agent.n_samples, setup.checkpoint_path)

    def evaluate_now() -> None:
        latest["summary"] = evaluate_run(setup, bar)

    if agent.n_samples >= schedule.max_samples:
        log.info("the run already has %d samples (max_samples %d); raise max_samples to train on", agent.n_samples,
                 schedule.max_samples)
    bar = tqdm(total=schedule.max_samples, initial=min(agent.n_samples, schedule.max_samples), unit="samples",
               unit_scale=True, dynamic_ncols=True, disable=not progress)
    reset_seed = cfg.seed + agent.n_samples if setup.resumed else cfg.seed
    try:
        with PreemptionHook(save) as hook:
            finished = train_loop(agent, setup.envs, schedule, evaluate_now, save, hook, setup.last_eval, reset_seed,
                                  bar)
    finally:
        bar.close()
        setup.close()
    if not finished:
        log.info("stopped by a signal at %d samples; rerun the same command to resume", agent.n_samples)
    return TrainResult(finished, agent.n_samples, latest.get("summary"))
