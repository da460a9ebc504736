"""Command-line entry point of SPiRL's offline phase: train a skill model and its skill prior on a collected dataset.

    python -m hsd3_learn.spirl.train_prior model=spirl_cl data.dir=runs/collect/dataset profile=laptop
    python -m hsd3_learn.spirl.train_prior model=skill_critic data.dir=/data/walker profile=tiny seed=1

The config is ``hsd3_learn/spirl/config/train_prior.yaml``; ``model`` picks the variant of
:mod:`hsd3_learn.spirl.models` (``spirl``, ``spirl_cl``, ``skill_critic``), ``profile`` the budget (``tiny``: 50
steps, ``laptop``: 2e4, ``paper``: 1e5, the default), and any key is overridden as ``key=value``. The run directory
is the current directory. What a run does:

1. :func:`prepare_prior_training` loads ``data.dir`` as windows of ``skill.H`` steps
   (:class:`hsd3_learn.spirl.data.SkillDataset`, states normalised with the dataset's statistics), builds the model
   and Adam, and resumes from ``checkpoint.pt`` when the run directory has one;
2. :func:`train_prior` takes ``max_steps`` Adam steps on random batches of ``batch_size`` windows, logging the loss
   terms to TensorBoard (``train/``), validating every ``eval.interval`` steps on the fixed held-out windows
   (``eval/`` and ``val.csv``: one row per validation with ``samples``, the windows trained on so far, ``step``
   and the loss terms), and checkpointing every ``checkpoint.interval`` steps, at the end and on
   SIGTERM/SIGUSR1 (then it exits cleanly; rerunning the command resumes);
3. at the end it writes ``checkpoint-prior.pt`` with :func:`hsd3_learn.spirl.models.save_skill_model` and the
   stats the agents of :mod:`hsd3_learn.spirl.agents` read: ``obs_mean``, ``obs_std`` (the dataset's) and
   ``kept_observation_entries`` (which entries of the task envs' joint vector the dataset's states keep).

Bad input fails with one line on stderr before any training, as in :mod:`hsd3_learn.train`.

Differences from clvrai/spirl's ``train.py``: one loop over random windows for a step budget instead of epochs
over a data loader (the dataset fits in memory); validation draws the same latent samples every time (a fixed
seed), so its curve shows the model, not the sampling noise; no gradient clipping or learning-rate schedule (the
original's defaults use neither).
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from hsd3_learn.spirl.collect import CONFIG_DIR
from hsd3_learn.train import absolute_input_paths, check_command_line, one_line_errors

__all__ = ["CONFIG_DIR", "CONFIG_NAME", "LOSS_TERMS", "PROG", "PriorResult", "PriorRun", "check_prior_config", "main",
           "prepare_prior_training", "skill_stats", "train_prior", "validate"]

#: the entry point's name in messages
PROG = "hsd3_learn.spirl.train_prior"
#: the config in :data:`hsd3_learn.spirl.collect.CONFIG_DIR`
CONFIG_NAME = "train_prior"
#: the loss terms of :meth:`hsd3_learn.spirl.models.SkillModel.loss`, logged and written to ``val.csv``
LOSS_TERMS = ("loss", "rec", "kl", "prior_loss", "mse")
VAL_CSV = "val.csv"
CONFIG_FILE = "config.yaml"
TENSORBOARD_DIR = "tb"

# Named explicitly: run as ``python -m``, this module's __name__ is "__main__", whose lines Hydra's config hides.
log = logging.getLogger("hsd3_learn.spirl.train_prior")


def check_prior_config(cfg: DictConfig) -> None:
    """One-line errors for a config training cannot run: missing values, an unknown model kind, bad step counts,
    batch sizes or learning rate."""
    from hsd3_learn.spirl.models import SKILL_MODELS

    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        raise ValueError(f"missing config values: {', '.join(missing)}; set them on the command line, e.g. "
                         f"{missing[0]}=...")
    if cfg.model not in SKILL_MODELS:
        raise ValueError(f"unknown model {cfg.model!r}; valid: {', '.join(SKILL_MODELS)}")
    for key in ("max_steps", "batch_size", "eval.interval", "eval.batch_size", "checkpoint.interval"):
        value = OmegaConf.select(cfg, key)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{key} must be a positive integer; got {value!r}")
    if isinstance(cfg.lr, bool) or not isinstance(cfg.lr, (int, float)) or not cfg.lr > 0:
        raise ValueError(f"lr must be a positive number; got {cfg.lr!r}")


def skill_stats(dataset: Any, robot: str) -> dict[str, Any]:
    """What the agents need beside the model: the dataset's state statistics [S] and the entries [S] of the task
    envs' joint vector that the dataset's states keep (the pre-training env drops the robot's world position)."""
    import numpy as np

    from hsd3_learn.envs.pretraining import PretrainingEnv

    env = PretrainingEnv(robot)
    kept = np.asarray(env.kept_observation_entries, dtype=np.int64)
    env.close()
    if len(kept) != dataset.obs_dim:
        raise ValueError(f"the dataset's states have {dataset.obs_dim} dims but the {robot} pre-training env's "
                         f"observation has {len(kept)}; was it collected with python -m hsd3_learn.spirl.collect?")
    return {"obs_mean": dataset.stats.obs_mean, "obs_std": dataset.stats.obs_std, "kept_observation_entries": kept}


@dataclass
class PriorRun:
    """Everything :func:`train_prior` needs, built by :func:`prepare_prior_training`."""

    cfg: DictConfig
    run_dir: Path
    dataset: Any  # a SkillDataset
    model: Any  # a SkillModel
    optimizer: Any  # torch.optim.Adam over the model's parameters
    stats: dict[str, Any]  # skill_stats of the dataset
    writer: Any  # a SummaryWriter on tb/
    val_log: Any  # an EvalLog on val.csv
    step: int  # gradient steps taken so far, over all runs of this directory
    last_val: int  # the step of the last validation in val.csv, -1 if none


def _load_dataset(cfg: DictConfig) -> tuple[Any, str]:
    """The windows of ``data.dir`` and the robot it was collected on, or a one-line error."""
    from hsd3_learn.spirl.data import SkillDataset, read_stats

    robot = read_stats(cfg.data.dir).info.get("metadata", {}).get("robot")
    if not isinstance(robot, str):
        raise ValueError(f"data.dir {cfg.data.dir!r}: stats.json names no robot in its metadata; collect the "
                         "dataset with python -m hsd3_learn.spirl.collect")
    dataset = SkillDataset.load(cfg.data.dir, horizon=cfg.skill.H, val_fraction=cfg.data.val_fraction,
                                seed=cfg.seed, split_seed=cfg.data.split_seed, device=cfg.device)
    if dataset.n_val_windows == 0:
        raise ValueError(f"data.dir {cfg.data.dir!r} leaves no validation windows of {cfg.skill.H} steps; raise "
                         "data.val_fraction or collect more episodes")
    return dataset, robot


def _checkpoint_state(run: PriorRun) -> dict[str, Any]:
    import torch

    return {"kind": run.cfg.model, "step": run.step, "model": run.model.state_dict(),
            "optimizer": run.optimizer.state_dict(), "torch_rng": torch.get_rng_state(),
            "data_rng": run.dataset.generator.get_state()}


def _resume(run: PriorRun, path: Path) -> None:
    """Load model, optimizer, step and RNG states from the run's checkpoint."""
    import torch

    state = torch.load(path, map_location=run.dataset.device, weights_only=True)
    if state["kind"] != run.cfg.model:
        raise ValueError(f"{path} holds a {state['kind']!r} model, not model={run.cfg.model}; use another run "
                         "directory")
    run.model.load_state_dict(state["model"])
    run.optimizer.load_state_dict(state["optimizer"])
    torch.set_rng_state(state["torch_rng"].cpu())
    run.dataset.generator.set_state(state["data_rng"].cpu())
    run.step = int(state["step"])
    log.info("resuming from %s at step %d", path, run.step)


def prepare_prior_training(cfg: DictConfig, run_dir: str | os.PathLike = ".") -> PriorRun:
    """Check the config, load the dataset, build model and Adam, resume from ``checkpoint.pt`` in ``run_dir`` if
    there is one, and open ``val.csv`` and TensorBoard; bad input fails here, with one-line errors."""
    import torch
    from torch.utils.tensorboard import SummaryWriter

    from hsd3_learn.spirl.models import SkillPriorConfig, make_skill_model
    from hsd3_learn.training import EvalLog, set_threads
    from hsd3_learn.utils import resolve_device, seed_everything

    check_prior_config(cfg)
    cfg.device = str(resolve_device(cfg.device))
    set_threads(cfg.threads)
    seed_everything(cfg.seed)
    dataset, robot = _load_dataset(cfg)
    stats = skill_stats(dataset, robot)
    skill = SkillPriorConfig(state_dim=dataset.obs_dim, action_dim=dataset.action_dim,
                             **OmegaConf.to_container(cfg.skill, resolve=True))
    model = make_skill_model(cfg.model, skill).to(dataset.device)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    val_log = EvalLog(run_dir / VAL_CSV, columns=("samples", "step", *LOSS_TERMS))
    run = PriorRun(cfg, run_dir, dataset, model, optimizer, stats, None, val_log, 0, -1)
    checkpoint = run_dir / cfg.checkpoint.path
    if checkpoint.exists():
        _resume(run, checkpoint)
    run.last_val = val_log.truncate(run.step * cfg.batch_size)
    run.last_val = run.last_val // cfg.batch_size if run.last_val >= 0 else -1
    run.writer = SummaryWriter(str(run_dir / TENSORBOARD_DIR), purge_step=run.step + 1 if run.step else None)
    (run_dir / CONFIG_FILE).write_text(OmegaConf.to_yaml(cfg, resolve=True))
    return run


def validate(model: Any, dataset: Any, batch_size: int, max_batches: int | None = None,
             seed: int = 0) -> dict[str, float]:
    """The loss terms (:data:`LOSS_TERMS`) averaged over the fixed validation windows, weighted by batch size.

    The posterior samples come from a generator seeded with ``seed``, so every validation draws the same ones, and
    the training RNG is left as it was.
    """
    import torch

    totals, n_windows = dict.fromkeys(LOSS_TERMS, 0.0), 0
    was_training = model.training
    model.eval()
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(seed)
        for batch in dataset.validation_batches(batch_size, max_batches):
            _, terms = model.loss(batch)
            size = len(batch["actions"])
            n_windows += size
            for key in LOSS_TERMS:
                totals[key] += terms[key] * size
    model.train(was_training)
    return {key: value / n_windows for key, value in totals.items()}


@dataclass
class PriorResult:
    """How a run ended."""

    finished: bool  # False when a signal stopped it
    step: int  # gradient steps taken so far, over all runs of this directory
    last_val: dict[str, float] | None  # the latest validation of this process, if any


def _log_scalars(run: PriorRun, prefix: str, values: Mapping[str, float]) -> None:
    for key, value in values.items():
        run.writer.add_scalar(f"{prefix}{key}", value, run.step)


def _validate_and_log(run: PriorRun, bar: Any) -> dict[str, float]:
    cfg = run.cfg
    summary = validate(run.model, run.dataset, cfg.eval.batch_size, cfg.eval.max_batches, cfg.seed)
    _log_scalars(run, "eval/", summary)
    run.val_log.append(run.step * cfg.batch_size, {"step": run.step, **summary})
    run.last_val = run.step
    log.info("validation at step %d: loss %.4f (mse %.4f, kl %.3f, prior %.3f)", run.step, summary["loss"],
             summary["mse"], summary["kl"], summary["prior_loss"])
    bar.set_postfix(val_loss=f"{summary['loss']:.4f}")
    return summary


def _train_step(run: PriorRun) -> dict[str, float]:
    """One Adam step on a random batch of training windows; returns its loss terms."""
    loss, terms = run.model.loss(run.dataset.sample(run.cfg.batch_size))
    run.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    run.optimizer.step()
    run.step += 1
    return terms


def _save_checkpoint(run: PriorRun) -> None:
    from hsd3_learn.utils import atomic_save

    atomic_save(_checkpoint_state(run), run.run_dir / run.cfg.checkpoint.path)
    log.info("checkpoint at step %d: %s", run.step, run.run_dir / run.cfg.checkpoint.path)


def _save_prior(run: PriorRun) -> None:
    from hsd3_learn.spirl.models import save_skill_model

    path = run.run_dir / run.cfg.prior_path
    save_skill_model(path, run.model, run.cfg.model, run.model.cfg, stats=run.stats)
    log.info("wrote the skill model %s (step %d)", path, run.step)


def _loop(run: PriorRun, bar: Any, latest: dict[str, Any], hook: Any) -> bool:
    """Steps until ``max_steps`` (True) or a signal (False), validating and checkpointing when due."""
    from hsd3_learn.training import is_due

    cfg = run.cfg
    last_checkpoint = run.step
    if run.last_val < 0:
        latest["val"] = _validate_and_log(run, bar)
    while run.step < cfg.max_steps:
        _log_scalars(run, "train/", _train_step(run))
        bar.update(1)
        if is_due(run.step, run.last_val, cfg.eval.interval) or run.step == cfg.max_steps:
            latest["val"] = _validate_and_log(run, bar)
        if is_due(run.step, last_checkpoint, cfg.checkpoint.interval):
            _save_checkpoint(run)
            last_checkpoint = run.step
        if hook.checkpoint_if_requested():
            return False
    return True


def train_prior(run: PriorRun, progress: bool = True) -> PriorResult:
    """Train a prepared run to ``max_steps`` under a progress bar (stderr), checkpointing on SIGTERM/SIGUSR1,
    then write the final checkpoint and ``checkpoint-prior.pt``; closes TensorBoard at the end."""
    from tqdm import tqdm

    from hsd3_learn.utils import PreemptionHook

    cfg, latest = run.cfg, {}
    done_before = run.step >= cfg.max_steps
    if done_before:
        log.info("the run already took %d steps (max_steps %d); raise max_steps to train on", run.step,
                 cfg.max_steps)
    bar = tqdm(total=cfg.max_steps, initial=min(run.step, cfg.max_steps), unit="step", dynamic_ncols=True,
               disable=not progress, desc="training")
    try:
        with PreemptionHook(lambda: _save_checkpoint(run)) as hook:
            finished = _loop(run, bar, latest, hook)
        if finished and not (done_before and (run.run_dir / cfg.prior_path).exists()):
            _save_checkpoint(run)
            _save_prior(run)
    finally:
        bar.close()
        run.writer.close()
    if not finished:
        log.info("stopped by a signal at step %d; rerun the same command to resume", run.step)
    return PriorResult(finished, run.step, latest.get("val"))


@hydra.main(config_path=str(CONFIG_DIR), config_name=CONFIG_NAME, version_base="1.3")
def run(cfg: DictConfig) -> None:
    """One training run in the current directory: prepare (one-line errors), then train until done or signalled."""
    with one_line_errors(PROG):
        absolute_input_paths(cfg, keys=("data.dir",))
        setup = prepare_prior_training(cfg)
    train_prior(setup)


def main() -> None:
    """``python -m hsd3_learn.spirl.train_prior``: check the command line, then hand it to Hydra."""
    check_command_line(sys.argv[1:], prog=PROG, default_config=CONFIG_NAME, config_dir=CONFIG_DIR)
    run()


if __name__ == "__main__":
    main()
