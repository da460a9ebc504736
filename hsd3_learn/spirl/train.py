"""Command-line entry point of SPiRL's reinforcement-learning phase, configured with Hydra.

    python -m hsd3_learn.spirl.train agent=spirl_cl env.task=Hurdles prior.init_from=/path/to/checkpoint-prior.pt
    python -m hsd3_learn.spirl.train agent=skill_critic prior.init_from=runs/sc/checkpoint-prior.pt profile=laptop

The config is ``hsd3_learn/spirl/config/train.yaml``. ``agent`` is required and picks the learner (:data:`AGENTS`):
``no_prior`` (SAC with an entropy bonus in skill space, any skill model), ``spirl`` and ``spirl_cl`` (the policy
starts as the skill prior and stays close to it; they need a ``spirl`` or ``spirl_cl`` skill model) and
``skill_critic`` (also fine-tunes the low level; needs a ``skill_critic`` model). ``prior.init_from`` is the
``checkpoint-prior.pt`` that ``python -m hsd3_learn.spirl.train_prior`` wrote; ``profile`` scales the run (``tiny``:
seconds, ``laptop``: 1e5 env steps, ``paper``: 1e6, the default).

Everything else is HSD-3's downstream training (:mod:`hsd3_learn.training`): any ``envs`` task (``env.task``,
walker by default), the run directory is the current directory and a rerun there resumes from ``checkpoint.pt``,
deterministic evaluations go to ``eval.csv`` and TensorBoard, SIGTERM/SIGUSR1 checkpoint and stop. The agents start
a skill where ``obs["time"]`` is 0, so the run adds the ``time`` wrapper to ``env.wrappers`` when it is missing.
Bad input fails with one line on stderr before training: a missing or unreadable ``prior.init_from``, a skill
model of the wrong kind for the agent, a skill model of another robot, unknown agents, tasks or keys.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import hydra
from omegaconf import DictConfig, OmegaConf

from hsd3_learn.train import absolute_input_paths, check_command_line, one_line_errors

if TYPE_CHECKING:
    from hsd3_learn.agents.base import Agent
    from hsd3_learn.envs.vector import TorchVectorEnv
    from hsd3_learn.training import RunSetup

__all__ = ["AGENTS", "CONFIG_DIR", "CONFIG_NAME", "PROG", "SKILL_KINDS", "main", "make_spirl_agent",
           "prepare_spirl_run", "with_time_wrapper"]

#: the entry point's name in messages
PROG = "hsd3_learn.spirl.train"
#: the Hydra config directory of the SPiRL entry points
CONFIG_DIR = Path(__file__).resolve().parent / "config"
#: the config in :data:`CONFIG_DIR`
CONFIG_NAME = "train"
#: agent name -> (module, class); imported when a run starts, so a bad command line fails before torch loads
AGENTS: dict[str, tuple[str, str]] = {
    "no_prior": ("hsd3_learn.spirl.agents", "NoPriorAgent"),
    "spirl": ("hsd3_learn.spirl.agents", "SPiRLAgent"),
    "spirl_cl": ("hsd3_learn.spirl.agents", "SPiRLAgent"),
    "skill_critic": ("hsd3_learn.spirl.skill_critic", "SkillCriticAgent"),
}
#: agent name -> the skill-model kind it needs (None: any kind)
SKILL_KINDS: dict[str, str | None] = {"no_prior": None, "spirl": "spirl", "spirl_cl": "spirl_cl",
                                      "skill_critic": "skill_critic"}

# Named explicitly: run as ``python -m``, this module's __name__ is "__main__", whose lines Hydra's config hides.
log = logging.getLogger("hsd3_learn.spirl.train")


def _agent_classes() -> dict[str, type[Agent]]:
    """:data:`AGENTS` with the classes imported."""
    import importlib

    return {name: getattr(importlib.import_module(module), cls) for name, (module, cls) in AGENTS.items()}


def with_time_wrapper(wrappers: list[str]) -> list[str]:
    """``wrappers`` with ``time`` first when it has no ``time`` entry; a counting ``time:N`` is refused (the agents
    need the episode step, not a step modulo N)."""
    names = [str(w) for w in wrappers]
    if any(name.startswith("time:") for name in names):
        raise ValueError(f"env.wrappers: the skill agents need 'time' without an interval (the episode step); "
                         f"got {names}")
    return names if "time" in names else ["time", *names]


def _check_skill_model(cfg: DictConfig) -> None:
    """One-line errors for a missing, unreadable or wrong-kind ``prior.init_from``."""
    from hsd3_learn.spirl.models import load_skill_model

    path = Path(cfg.prior.init_from)
    if not path.is_file():
        raise FileNotFoundError(f"prior.init_from: no file {str(path)!r}; python -m hsd3_learn.spirl.train_prior "
                                "writes checkpoint-prior.pt in its run directory")
    kind, needed = load_skill_model(path).kind, SKILL_KINDS[cfg.agent.name]
    if needed is not None and kind != needed:
        fitting = [name for name, k in SKILL_KINDS.items() if k in (kind, None)]
        raise ValueError(f"agent={cfg.agent.name} needs a {needed!r} skill model, but {str(path)!r} is a {kind!r} "
                         f"one; train one with model={needed}, or use agent={' or agent='.join(fitting)}")


def make_spirl_agent(agent_cfg: DictConfig, envs: TorchVectorEnv) -> Agent:
    """The agent named ``agent_cfg.name`` for one env's spaces and ``envs.num_envs`` envs; the other keys are its
    config (the ``open_run`` agent factory of the SPiRL runs)."""
    options = OmegaConf.to_container(agent_cfg, resolve=True)
    name = options.pop("name")
    return _agent_classes()[name](envs.single_observation_space, envs.single_action_space, envs.num_envs, options)


def prepare_spirl_run(cfg: DictConfig, run_dir: str | os.PathLike = ".") -> RunSetup:
    """Check the config and the skill model, seed, build the envs (with the ``time`` wrapper) and the agent, resume
    from the checkpoint in ``run_dir`` if there is one, and write the resolved config; bad input fails here."""
    from hsd3_learn.training import EVAL_CSV, EvalLog, check_config, make_vector_envs, open_run, set_threads
    from hsd3_learn.utils import resolve_device, seed_everything

    if OmegaConf.is_missing(cfg.prior, "init_from"):  # before check_config: the agent's skill_model points at it
        raise ValueError("missing config value: prior.init_from; set it on the command line, e.g. "
                         "prior.init_from=runs/prior/checkpoint-prior.pt")
    check_config(cfg, agents=AGENTS)
    cfg.env.wrappers = with_time_wrapper(list(cfg.env.wrappers))
    _check_skill_model(cfg)
    device = resolve_device(cfg.device)
    set_threads(cfg.get("threads"))
    seed_everything(cfg.seed)
    train_envs = make_vector_envs(cfg.env, cfg.env.num_envs, device)
    eval_envs = make_vector_envs(cfg.env, cfg.eval.num_envs, device)
    return open_run(cfg, Path(run_dir), train_envs, eval_envs, EvalLog(Path(run_dir) / EVAL_CSV),
                    make_agent_fn=make_spirl_agent)


@hydra.main(config_path=str(CONFIG_DIR), config_name=CONFIG_NAME, version_base="1.3")
def run(cfg: DictConfig) -> None:
    """One training run in the current directory: prepare (one-line errors), then train until done or signalled."""
    from hsd3_learn.training import train

    with one_line_errors(PROG):
        absolute_input_paths(cfg, keys=("prior.init_from",))
        setup = prepare_spirl_run(cfg)
    train(setup)


def main() -> None:
    """``python -m hsd3_learn.spirl.train``: check the command line, then hand it to Hydra."""
    check_command_line(sys.argv[1:], prog=PROG, default_config=CONFIG_NAME, config_dir=CONFIG_DIR)
    run()


if __name__ == "__main__":
    main()
