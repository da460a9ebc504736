"""Command-line entry point that collects SPiRL's offline dataset on the Walker, configured with Hydra.

    python -m hsd3_learn.spirl.collect lo.init_from=/path/to/checkpoint-lo.pt profile=laptop
    python -m hsd3_learn.spirl.collect lo.init_from=runs/pretrain/checkpoint-lo.pt profile=tiny seed=1

The config is ``hsd3_learn/spirl/config/collect.yaml``; ``profile`` sets the size (``tiny``: 600 steps,
``laptop``: 2e5, ``paper``: 1e6, the default), and any key is overridden as ``key=value``. The run directory is the
current directory: the skill of ``lo.init_from`` (written by ``python -m hsd3_learn.pretrain``) is rolled out with
action noise in the pre-training env (:func:`hsd3_learn.spirl.data.iter_episodes`) and the episodes stream into
``dataset/`` (:func:`hsd3_learn.spirl.data.write_shards`) under a progress bar. Running the same command again
finds the complete dataset and exits without redoing it; other settings over an existing dataset fail instead
of mixing two datasets. Bad input fails with one line on stderr before any work, as in :mod:`hsd3_learn.train`.

Differences from clvrai/spirl: the original ships its datasets (teleoperation, scripted or waypoint-controller
demos) and has no collection script; here the demonstrator is HSD-3's own pre-trained skill (spirl-spec
section 7: the behaviour must already walk, random actions teach no locomotion).
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from hsd3_learn.train import absolute_input_paths, check_command_line, one_line_errors

__all__ = ["CONFIG_DIR", "CONFIG_NAME", "PROG", "CollectionPlan", "check_collect_config", "collect",
           "collection_settings", "main", "prepare_collection"]

#: the entry point's name in messages
PROG = "hsd3_learn.spirl.collect"
#: the Hydra config directory of the SPiRL entry points
CONFIG_DIR = Path(__file__).resolve().parent / "config"
#: the config in :data:`CONFIG_DIR`
CONFIG_NAME = "collect"

# Named explicitly: run as ``python -m``, this module's __name__ is "__main__", whose lines Hydra's config hides.
log = logging.getLogger("hsd3_learn.spirl.collect")


def check_collect_config(cfg: DictConfig) -> None:
    """One-line errors for a config collection cannot run: missing values, no out_dir (the robot is checked
    against the skill's in :func:`prepare_collection`)."""
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        raise ValueError(f"missing config values: {', '.join(missing)}; set them on the command line, e.g. "
                         f"{missing[0]}=...")
    if not isinstance(cfg.out_dir, str) or not cfg.out_dir:
        raise ValueError(f"out_dir must be a directory name; got {cfg.out_dir!r}")


def collection_settings(cfg: DictConfig) -> dict[str, Any]:
    """What decides the dataset's content (recorded in ``stats.json`` as metadata, compared on reruns)."""
    keys = ("robot", "lo.init_from", "lo.model", "subsets", "seed", "action_noise", "stochastic", "n_steps",
            "episode_steps", "num_envs")
    return {key: OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value
            for key, value in ((key, OmegaConf.select(cfg, key)) for key in keys)}


@dataclass
class CollectionPlan:
    """A checked collection: its config, where it writes, what it records, and the skill (None when done)."""

    cfg: DictConfig
    out_dir: Path
    settings: dict[str, Any]
    low_level: Any  # a LowLevelCheckpoint, or None when ``out_dir`` already holds this dataset


def _settings_change(old: dict[str, Any], new: dict[str, Any]) -> str:
    return ", ".join(f"{key}: {old.get(key)!r} -> {new[key]!r}" for key in new if old.get(key) != new[key])


def prepare_collection(cfg: DictConfig, run_dir: str | os.PathLike = ".") -> CollectionPlan:
    """Check the config, look for a finished dataset in ``run_dir``, then load the skill; bad input fails here."""
    from hsd3_learn.agents.hsd3_interface import load_low_level
    from hsd3_learn.spirl.data import dataset_is_complete, read_stats
    from hsd3_learn.training import set_threads

    check_collect_config(cfg)
    out_dir = Path(run_dir) / cfg.out_dir
    settings = collection_settings(cfg)
    if dataset_is_complete(out_dir):
        change = _settings_change(read_stats(out_dir).info.get("metadata", {}), settings)
        if change:
            raise ValueError(f"{cfg.out_dir}/ already holds a dataset collected with other settings ({change}); "
                             "remove it or collect in another directory")
        return CollectionPlan(cfg, out_dir, settings, None)
    set_threads(cfg.threads)
    low_level = load_low_level(cfg.lo.init_from, cfg.lo.model)
    if low_level.robot != cfg.robot:
        raise ValueError(f"robot={cfg.robot!r} but the low-level checkpoint {cfg.lo.init_from!r} is a "
                         f"{low_level.robot!r} skill; set robot={low_level.robot}")
    return CollectionPlan(cfg, out_dir, settings, low_level)


def collect(plan: CollectionPlan, progress: bool = True) -> None:
    """Roll out the skill and write the dataset (nothing when the plan found it done), logging a summary."""
    from tqdm import tqdm

    from hsd3_learn.spirl.data import iter_episodes, read_stats, write_shards

    cfg = plan.cfg
    if plan.low_level is None:
        info = read_stats(plan.out_dir).info
        log.info("%s/ already holds the complete dataset (%d episodes, %d steps); nothing to do", cfg.out_dir,
                 info["n_episodes"], info["n_steps"])
        return
    subsets = None if cfg.subsets is None else list(cfg.subsets)
    with tqdm(total=cfg.n_steps, unit="step", disable=not progress, desc="collecting") as bar:
        episodes = iter_episodes(plan.low_level, cfg.n_steps, cfg.action_noise, cfg.seed, subsets, cfg.episode_steps,
                                 cfg.num_envs, cfg.stochastic, on_steps=bar.update)
        stats = write_shards(episodes, plan.out_dir, cfg.episodes_per_shard, plan.settings)
    info = stats.info
    log.info("wrote %s/: %d episodes (%d ended by a fall), %d steps, %d shards", cfg.out_dir, info["n_episodes"],
             info["n_terminals"], info["n_steps"], len(info["shards"]))


@hydra.main(config_path=str(CONFIG_DIR), config_name=CONFIG_NAME, version_base="1.3")
def run(cfg: DictConfig) -> None:
    """One collection in the current directory: prepare (one-line errors), then collect."""
    with one_line_errors(PROG):
        absolute_input_paths(cfg)
        plan = prepare_collection(cfg)
    collect(plan)


def main() -> None:
    """``python -m hsd3_learn.spirl.collect``: check the command line, then hand it to Hydra."""
    check_command_line(sys.argv[1:], prog=PROG, default_config=CONFIG_NAME, config_dir=CONFIG_DIR)
    run()


if __name__ == "__main__":
    main()
