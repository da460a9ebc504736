"""HSD-3's skill pre-training run: SAC-MT on :class:`~hsd3_learn.envs.pretraining.PretrainingEnv` with the rank
curriculum, controllability estimates, per-subset evaluations and the low-level checkpoint HSD-3 reads.

``python -m hsd3_learn.pretrain -cn walker_pretrain`` (:mod:`hsd3_learn.pretrain`) composes a config and calls
:func:`prepare_pretraining` and :func:`pretrain`. The loop, checkpoints, resume and signals are those of
:mod:`hsd3_learn.training`; what differs is the evaluation, which at every ``eval.interval`` samples:

1. estimates the **controllability** of every current subset (hsd3-spec section 3, ``eval_mode: reachability``):
   for ``pretrain.ctrl_states`` start states from the replay buffer (``start_state``: the first state of a goal)
   and goals g ~ U[-1, 1]^k in the subset's normalised features (delta features offset by the state), the mean
   of ``clamp(R(s, g, pi_mean(s, g)), 0, 1)`` with the reachability network R;
2. at the first and the final evaluation only, **rolls out** ``pretrain.eval_episodes`` goals per subset
   (one goal per episode, the deterministic policy) and records the fraction of goals reached;
3. advances the **curriculum**: the run starts with the subsets of ``pretrain.feature_rank`` feature groups; each
   evaluation adds the subsets of one more group whose every sub-subset of the current rank is
   ``ctrl_eps``-controllable (cperf >= 1 - ctrl_eps), at most ``max_new_tasks`` of them. With the shipped
   ``ctrl_eps: 1`` that is every subset: walker ranks 2-5 join at the first four evaluations, 31 subsets in all;
4. writes the low-level checkpoint ``pretrain.lo_path`` (``checkpoint-lo.pt``) and its side file
   ``checkpoint-lo_abs.json`` (task map, subsets, controllability) with
   :func:`~hsd3_learn.agents.hsd3_interface.save_low_level`, so HSD-3 can start from any evaluation's skills.

Files in the run directory, besides those of :mod:`hsd3_learn.training` (``checkpoint.pt``, ``config.yaml``,
``tb/``): ``checkpoint-lo.pt`` + ``checkpoint-lo_abs.json``, ``pretrain_eval.csv`` (one row per evaluation) and
``subsets.csv`` (one row per subset and evaluation).

Differences from hucc's ``pretrain.py``:

1. One process steps the envs and learns (hucc: an actor and a learner process on two GPUs, the actor one
   update behind).
2. The rollout evaluation plays one goal per episode in envs with ``hard_reset_interval: 1`` and scores reached
   goals; hucc played whole evaluation episodes of its pre-training env and averaged the potential reward.
3. The curriculum state (subsets, controllability) is part of the resumable checkpoint.
4. Only the ``uniform`` task weighting and the ``reachability`` controllability estimate of the shipped configs
   (hucc also had learning-progress weightings and a Q-based estimate, both off by default).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from itertools import combinations
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from hsd3_learn.agents import SACMTAgent
from hsd3_learn.agents.hsd3_interface import save_low_level
from hsd3_learn.agents.hsd3_math import desired_goal
from hsd3_learn.agents.sacmt import GS_OBSERVATION
from hsd3_learn.envs.goal_spaces import (FEATURE_DIMS, GoalSpace, enumerate_subsets, goal_space, parse_subset,
                                         subset_mask, task_map)
from hsd3_learn.envs.pretraining import PretrainingEnv
from hsd3_learn.envs.vector import TorchVectorEnv, make_vector_env
from hsd3_learn.envs.wrappers import apply_wrappers
from hsd3_learn.training import (EvalLog, RunSetup, TrainResult, eval_mode, evaluate, open_run, set_threads,
                                 train)
from hsd3_learn.utils import resolve_device, seed_everything, sorted_nicely_sep

__all__ = ["PRETRAIN_COLUMNS", "SUBSET_COLUMNS", "Curriculum", "PretrainingSetup", "check_pretraining_config",
           "estimate_controllability", "evaluate_subsets", "grow_subsets", "make_pretraining_envs",
           "prepare_pretraining", "pretrain", "subset_rank"]

log = logging.getLogger(__name__)

PRETRAIN_CSV = "pretrain_eval.csv"
SUBSETS_CSV = "subsets.csv"
#: columns of pretrain_eval.csv; success_mean is empty at evaluations without rollouts
PRETRAIN_COLUMNS = ("samples", "n_subsets", "max_rank", "cperf_mean", "cperf_min", "success_mean")
#: columns of subsets.csv, one row per subset and evaluation
SUBSET_COLUMNS = ("samples", "subset", "rank", "cperf", "success")


# --------------------------------------------------------------------------------------------------------------
# The curriculum


def subset_rank(subset: str) -> int:
    """Number of feature groups in a subset name: ``"0,3+4"`` -> 2."""
    return len(subset.split(","))


def grow_subsets(subsets: Sequence[str], cperf: Mapping[str, float], feature_dims: str, eps: float,
                 rank_max: int = 99, max_new: int = 1000) -> dict[str, float]:
    """The subsets of one more feature group than the largest in ``subsets`` whose every sub-subset of that rank
    is present with controllability >= 1 - ``eps`` (hucc's ``update_fdist``), with their initial estimate: the
    product of those controllabilities. At most ``max_new``, in natural order; ``{}`` once ``rank_max`` or all
    groups are reached."""
    rank = max(subset_rank(s) for s in subsets)
    if rank >= rank_max:
        return {}
    present = set(subsets)
    new: dict[str, float] = {}
    for name in enumerate_subsets(feature_dims, rank_max=rank + 1, rank_min=rank + 1):
        parts = [",".join(sub) for sub in combinations(name.split(","), rank)]
        if name not in present and all(part in present and cperf.get(part, 0.0) >= 1.0 - eps for part in parts):
            new[name] = math.prod(cperf.get(part, 0.0) for part in parts)
    names = sorted_nicely_sep(list(new))[:max_new]
    return {name: new[name] for name in names}


@dataclass
class Curriculum:
    """The task distribution of pre-training: the current subsets and their latest controllability estimates."""

    subsets: list[str]
    cperf: dict[str, float] = field(default_factory=dict)
    n_evals: int = 0  # evaluations done so far

    def state_dict(self) -> dict[str, Any]:
        """Plain values only (agent checkpoints load with ``weights_only``)."""
        return {"subsets": list(self.subsets), "cperf": dict(self.cperf), "n_evals": self.n_evals}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a :meth:`state_dict`."""
        self.subsets = list(state["subsets"])
        self.cperf = {str(k): float(v) for k, v in state["cperf"].items()}
        self.n_evals = int(state["n_evals"])


# --------------------------------------------------------------------------------------------------------------
# Controllability and rollouts


@torch.no_grad()
def estimate_controllability(agent: SACMTAgent, subsets: Sequence[str], gs: GoalSpace, tmap: Mapping[int, int],
                             n_states: int, generator: torch.Generator | None = None) -> dict[str, float]:
    """Mean clamped reachability of random goals from replayed goal-start states, per subset (module docstring).

    Needs a reachability network (``update_reachability``) and a buffer with ``start_state`` rows; returns
    ``{}`` before the buffer has any.
    """
    if "reachability" not in agent.model or len(agent.buffer) == 0:
        return {}
    try:
        batch = agent.buffer.get_batch_where(n_states, "start_state", generator=generator)
    except ValueError:  # no goal has started yet
        return {}
    device = agent.device
    features = batch[GS_OBSERVATION].to(device, torch.float64)  # [B, F] raw goal-space features
    observation = batch["obs_observation"].to(device)
    psi = torch.as_tensor(gs.psi, device=device)
    offset = torch.as_tensor(gs.offset, device=device)
    task_features = sorted(tmap, key=tmap.__getitem__)
    n = features.shape[0]
    result = {}
    for name in subsets:
        feats = torch.as_tensor(parse_subset(name), device=device)
        goal = torch.rand(n, len(feats), device=device, dtype=torch.float64, generator=generator) * 2 - 1
        delta = torch.as_tensor([f in gs.delta_feats for f in parse_subset(name)], device=device)
        current = features[:, feats] * psi[feats] + offset[feats]
        goal = torch.where(delta, goal + current, goal)
        target = features.clone()
        target[:, feats] = (goal - offset[feats]) / psi[feats]
        mask = torch.as_tensor(subset_mask(name, tmap), device=device).expand(n, -1)
        obs = {"desired_goal": desired_goal(target, features, task_features, mask.double(), gs.twist_feats).float(),
               "observation": observation, "task": mask}
        action = agent.action(obs, explore=False)
        reach = agent.model.reachability(agent.network_obs(obs), action).clamp(0.0, 1.0)
        result[name] = float(reach.mean())
    return result


def evaluate_subsets(agent: SACMTAgent, envs: TorchVectorEnv, subsets: Sequence[str],
                     episodes: int) -> dict[str, float]:
    """The fraction of ``episodes`` goals of each subset reached by the deterministic policy in ``envs``
    (pre-training envs with one goal per episode), played in rounds of ``envs.num_envs``; env i of round r is
    reset with seed ``r * num_envs + i``."""
    results = {}
    n_envs = envs.num_envs
    for name in subsets:
        envs.call("set_subsets", [name])
        reached: list[float] = []
        for round_ in range(math.ceil(episodes / n_envs)):
            reached.extend(evaluate(agent, envs, seed=round_ * n_envs, score_key="reached_goal").scores.tolist())
        results[name] = float(np.mean(reached[:episodes]))
    return results


# --------------------------------------------------------------------------------------------------------------
# Setup


def _pretraining_options(cfg: DictConfig) -> dict[str, Any]:
    """Keyword arguments of :class:`PretrainingEnv` from ``cfg.pretrain``."""
    p = cfg.pretrain
    return {"feature_dims": p.feature_dims, "precision": p.precision, "max_steps": p.max_steps,
            "hard_reset_interval": p.hard_reset_interval, "ctrl_cost": p.ctrl_cost,
            "fallover_penalty": p.fallover_penalty}


def _make_one(robot: str, wrappers: Sequence[str], subsets: Sequence[str], options: Mapping[str, Any]) -> gym.Env:
    return apply_wrappers(PretrainingEnv(robot, subsets=list(subsets), **options), wrappers)


def make_pretraining_envs(cfg: DictConfig, num_envs: int, subsets: Sequence[str], device: str | torch.device,
                          evaluation: bool = False) -> TorchVectorEnv:
    """``num_envs`` pre-training envs of ``cfg.env.robot`` on ``subsets``; evaluation envs play one goal per
    episode (``hard_reset_interval: 1``)."""
    options = _pretraining_options(cfg)
    if evaluation:
        options["hard_reset_interval"] = 1
    make_one = partial(_make_one, cfg.env.robot, list(cfg.env.wrappers), list(subsets), options)
    return TorchVectorEnv(make_vector_env([make_one] * num_envs, kind=cfg.env.vector), device=device)


def check_pretraining_config(cfg: DictConfig) -> None:
    """One-line errors for a config pre-training cannot run: missing values, another agent or robot, bad options."""
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        raise ValueError(f"missing config values: {', '.join(missing)}; set them on the command line, e.g. "
                         f"{missing[0]}=...")
    if cfg.agent.name != "sacmt":
        raise ValueError(f"pre-training trains agent 'sacmt'; got agent.name={cfg.agent.name!r}")
    if cfg.env.robot not in FEATURE_DIMS:
        raise ValueError(f"pre-training needs a robot with a goal space; got env.robot={cfg.env.robot!r}, valid: "
                         f"{', '.join(FEATURE_DIMS)}")
    if cfg.env.task != "Pretraining":
        raise ValueError(f"pre-training runs env.task=Pretraining; got {cfg.env.task!r} (downstream tasks are "
                         "trained with python -m hsd3_learn.train)")
    p = cfg.pretrain
    for key in ("feature_rank", "rank_max", "max_new_tasks", "ctrl_states", "eval_episodes"):
        value = p[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"pretrain.{key} must be a positive integer; got {value!r}")
    if not 0.0 <= p.ctrl_eps <= 1.0:
        raise ValueError(f"pretrain.ctrl_eps must lie in [0, 1]; got {p.ctrl_eps!r}")
    if cfg.env.max_episode_steps is not None:
        raise ValueError("env.max_episode_steps must stay null in pre-training: episodes end after "
                         "pretrain.hard_reset_interval goals")
    for key in ("env.num_envs", "eval.num_envs"):
        value = OmegaConf.select(cfg, key)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{key} must be a positive integer; got {value!r}")


@dataclass
class PretrainingSetup(RunSetup):
    """A :class:`RunSetup` with the curriculum and the per-subset log."""

    curriculum: Curriculum
    subset_log: EvalLog
    goal_space: GoalSpace
    task_map: dict[int, int]
    feature_dims: str

    @property
    def lo_path(self) -> Path:
        """Where the low-level checkpoint is written."""
        return self.run_dir / self.cfg.pretrain.lo_path


def prepare_pretraining(cfg: DictConfig, run_dir: str | os.PathLike = ".") -> PretrainingSetup:
    """Check the config, seed, build envs and agent, resume from ``run_dir``'s checkpoint if there is one (with
    the curriculum where it was), write the resolved config. Bad input fails here with one line."""
    check_pretraining_config(cfg)
    run_dir = Path(run_dir)
    device = resolve_device(cfg.device)
    set_threads(cfg.get("threads"))
    seed_everything(cfg.seed)
    feature_dims = cfg.pretrain.feature_dims or FEATURE_DIMS[cfg.env.robot]
    first = [s for s in enumerate_subsets(feature_dims) if subset_rank(s) <= cfg.pretrain.feature_rank]
    curriculum = Curriculum(first)
    train_envs = make_pretraining_envs(cfg, cfg.env.num_envs, first, device)
    eval_envs = make_pretraining_envs(cfg, cfg.eval.num_envs, first, device, evaluation=True)

    def attach_curriculum(agent: Any) -> None:
        agent.curriculum = curriculum
        agent.set_checkpoint_attr("curriculum")

    setup = open_run(cfg, run_dir, train_envs, eval_envs, EvalLog(run_dir / PRETRAIN_CSV, PRETRAIN_COLUMNS),
                     attach_curriculum)
    subset_log = EvalLog(run_dir / SUBSETS_CSV, SUBSET_COLUMNS, text_columns=("subset",))
    subset_log.truncate(setup.agent.n_samples)
    train_envs.call("set_subsets", curriculum.subsets)
    fields = {name: getattr(setup, name) for name in setup.__dataclass_fields__}
    return PretrainingSetup(**fields, curriculum=curriculum, subset_log=subset_log,
                            goal_space=goal_space(cfg.env.robot), task_map=task_map(feature_dims),
                            feature_dims=feature_dims)


# --------------------------------------------------------------------------------------------------------------
# Evaluation step and run


def _evaluate_pretraining(setup: PretrainingSetup, progress: tqdm | None) -> dict[str, float]:
    """Controllability, rollouts (first and final evaluation), curriculum step, logs and the low-level checkpoint."""
    cfg, agent, cur = setup.cfg, setup.agent, setup.curriculum
    p = cfg.pretrain
    final = agent.n_samples >= cfg.max_samples
    generator = torch.Generator(device=agent.device).manual_seed(cfg.seed + agent.n_samples)
    with eval_mode(agent):
        measured = estimate_controllability(agent, cur.subsets, setup.goal_space, setup.task_map, p.ctrl_states,
                                            generator)
        rollouts = (evaluate_subsets(agent, setup.eval_envs, cur.subsets, p.eval_episodes)
                    if cur.n_evals == 0 or final else {})
    cur.cperf.update(measured)
    rows = [{"subset": name, "rank": subset_rank(name), "cperf": measured.get(name, ""),
             "success": rollouts.get(name, "")} for name in cur.subsets]
    setup.subset_log.extend(agent.n_samples, rows)
    for name in cur.subsets:
        if name in measured:
            agent.log_scalars("eval/", {f"cperf/{name}": measured[name]})
        if name in rollouts:
            agent.log_scalars("eval/", {f"success/{name}": rollouts[name]})
    values = [measured[name] for name in cur.subsets if name in measured]
    summary = {"n_subsets": float(len(cur.subsets)), "max_rank": float(max(map(subset_rank, cur.subsets))),
               "cperf_mean": float(np.mean(values)) if values else math.nan,
               "cperf_min": float(np.min(values)) if values else math.nan,
               "success_mean": float(np.mean(list(rollouts.values()))) if rollouts else math.nan}
    agent.log_scalars("eval/", {k: v for k, v in summary.items() if not math.isnan(v)})
    setup.eval_log.append(agent.n_samples, {**{k: ("" if math.isnan(v) else v) for k, v in summary.items()},
                                            "n_subsets": len(cur.subsets), "max_rank": int(summary["max_rank"])})
    save_low_level(setup.lo_path, agent.model.pi, cfg.env.robot, cur.subsets, setup.task_map,
                   {name: cur.cperf.get(name, 0.0) for name in cur.subsets} if cur.cperf else None,
                   OmegaConf.to_container(cfg.agent.pi, resolve=True) if OmegaConf.is_config(cfg.agent.pi)
                   else cfg.agent.pi)
    log.info("eval at %d samples: %d subsets (rank <= %d), controllability %.3f%s", agent.n_samples,
             len(cur.subsets), summary["max_rank"], summary["cperf_mean"],
             f", goals reached {summary['success_mean']:.3f}" if rollouts else "")
    cur.n_evals += 1
    if not final:
        new = grow_subsets(cur.subsets, cur.cperf, setup.feature_dims, p.ctrl_eps, p.rank_max, p.max_new_tasks)
        if new:
            cur.cperf.update(new)
            cur.subsets = sorted_nicely_sep(cur.subsets + list(new))
            setup.envs.call("set_subsets", cur.subsets)
            log.info("curriculum: %d new subsets of rank %d, %d in all", len(new), subset_rank(next(iter(new))),
                     len(cur.subsets))
    if progress is not None:
        progress.set_postfix(subsets=len(cur.subsets), ctrl=f"{summary['cperf_mean']:.3f}")
    return summary


def pretrain(setup: PretrainingSetup, progress: bool = True) -> TrainResult:
    """Train until ``max_samples`` or a signal (then checkpoint); the low-level checkpoint is rewritten at every
    evaluation. Closes the setup at the end."""
    return train(setup, progress, evaluate_run=_evaluate_pretraining)
