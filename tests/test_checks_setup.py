"""The checks of notebook 00_setup: they pass on the reference answers, fail with a useful message on realistic
mistakes, let the student's NotImplementedError through, write nothing to stderr, and leave the notebook's own
Hydra setup as they found it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch import nn

from autograder.checks import setup as check
from autograder.core import CheckFailed
from hsd3_learn.utils import env_seeds

CONF_DIR = Path(__file__).resolve().parents[1] / "solutions" / "00_setup" / "conf"


@pytest.fixture
def notebook_hydra() -> Iterator[None]:
    """Hydra initialised globally on conf/, as the notebook's read-only cell does; cleared afterwards."""
    GlobalHydra.instance().clear()
    initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3")
    yield
    GlobalHydra.instance().clear()


# The notebook's solutions, and realistic mistakes ------------------------------------------------------------


def hsd3_overrides() -> list[str]:
    return ["agent=hsd3", "agent.optim.hi.pi_task.lr=1e-4", "env.train_envs=5", "+env.args.hurdle_height=0.25"]


def run_dir_of(overrides: list[str]) -> str:
    return compose(config_name="config", overrides=overrides).run_dir


def run_dir_of_own_context(overrides: list[str]) -> str:
    """Another correct answer: a student who initialises Hydra inside the function."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="config", overrides=overrides).run_dir


def video_dir_override() -> str:
    return "+video_dir=${run_dir}/videos"


def eval_config() -> Any:
    return OmegaConf.create({"checkpoint": "???", "episodes": 50, "video": True})


def make_optimizer(optim_cfg: Any, module: nn.Module) -> torch.optim.Optimizer:
    return instantiate(optim_cfg, params=[p for p in module.parameters() if p.requires_grad])


def not_implemented(*args: Any, **kwargs: Any) -> Any:
    raise NotImplementedError()


# (a) the reference answers pass --------------------------------------------------------------------------------

PASSING: list[tuple[str, Callable[..., None]]] = [
    ("env_seeds", lambda: check.env_seeds(env_seeds, seeds=range(5), edge_cases=True)),
    ("hsd3_overrides", lambda: check.hsd3_overrides(hsd3_overrides, CONF_DIR, seeds=range(4), edge_cases=True)),
    ("run_dir_of", lambda: check.run_dir_of(run_dir_of, CONF_DIR, seeds=range(4))),
    ("video_dir_override", lambda: check.video_dir_override(video_dir_override, CONF_DIR, seeds=range(3))),
    ("eval_config", lambda: check.eval_config(eval_config, seeds=range(3))),
    ("make_optimizer", lambda: check.make_optimizer(make_optimizer, seeds=range(3), edge_cases=True)),
]


@pytest.mark.parametrize("name, run", PASSING, ids=[name for name, _ in PASSING])
def test_reference_answers_pass_quietly(notebook_hydra: None, capfd: pytest.CaptureFixture, name: str,
                                        run: Callable[[], None]) -> None:
    run()
    out, err = capfd.readouterr()
    assert out.startswith(f"PASS {name}") and err == ""


def test_run_dir_of_passes_when_the_student_initialises_hydra_in_the_function() -> None:
    GlobalHydra.instance().clear()
    check.run_dir_of(run_dir_of_own_context, CONF_DIR)


def test_checks_leave_the_notebooks_hydra_setup_in_place(notebook_hydra: None) -> None:
    check.hsd3_overrides(hsd3_overrides, CONF_DIR)
    check.run_dir_of(run_dir_of, CONF_DIR)
    assert GlobalHydra.instance().is_initialized()
    assert compose(config_name="config", overrides=["seed=4"]).run_dir == "runs/walker-hurdles/sac/seed4"


def test_a_missing_conf_folder_is_named(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="conf/ folder must sit next to the notebook"):
        check.hsd3_overrides(hsd3_overrides, tmp_path)


# (b) realistic mistakes fail with a useful message ------------------------------------------------------------

FAILING: list[tuple[str, Callable[[], None], str]] = [
    ("env_seeds: one seed for all", lambda: check.env_seeds(lambda s, n: [int(s)] * n), "same seed"),
    ("env_seeds: counting from 1", lambda: check.env_seeds(lambda s, n: [int(s) + i + 1 for i in range(n)]),
     "range(n_envs) starts at 0"),
    ("env_seeds: a range", lambda: check.env_seeds(lambda s, n: range(int(s), int(s) + n)), "expected a list"),
    ("env_seeds: NumPy ints", lambda: check.env_seeds(lambda s, n: [np.int64(s) + i for i in range(n)],
                                                     edge_cases=True), "only accepts a Python int"),
    ("hsd3_overrides: short key", lambda: check.hsd3_overrides(
        lambda: ["agent=hsd3", "agent.lr=1e-4", "env.train_envs=5", "+env.args.hurdle_height=0.25"], CONF_DIR),
     "the composed config has no key agent.lr"),
    ("hsd3_overrides: no + for a new key", lambda: check.hsd3_overrides(
        lambda: ["agent=hsd3", "agent.optim.hi.pi_task.lr=1e-4", "env.train_envs=5", "env.args.hurdle_height=0.25"],
        CONF_DIR), "env.args.hurdle_height is a new key: add it with a leading '+'"),
    ("hsd3_overrides: + for a group", lambda: check.hsd3_overrides(
        lambda: ["+agent=hsd3", "agent.optim.hi.pi_task.lr=1e-4", "env.train_envs=5", "+env.args.hurdle_height=0.25"],
        CONF_DIR), "pick another option without '+'"),
    ("hsd3_overrides: wrong learning rate", lambda: check.hsd3_overrides(
        lambda: ["agent=hsd3", "agent.optim.hi.q.lr=1e-4", "env.train_envs=5", "+env.args.hurdle_height=0.25"],
        CONF_DIR), "agent.optim.hi.pi_task.lr: expected 0.0001, got 0.0003"),
    ("hsd3_overrides: one missing", lambda: check.hsd3_overrides(
        lambda: ["agent=hsd3", "agent.optim.hi.pi_task.lr=1e-4", "+env.args.hurdle_height=0.25"], CONF_DIR),
     "env.train_envs: expected 5, got 1"),
    ("hsd3_overrides: everything changed", lambda: check.hsd3_overrides(
        lambda: ["seed=1", "env.task=limbo", "agent.gamma=0.9", "agent.batch_size=1", "agent.polyak=0.9"], CONF_DIR),
     "... and"),
    ("hsd3_overrides: not a list", lambda: check.hsd3_overrides(lambda: "agent=hsd3", CONF_DIR),
     "list of override strings"),
    ("run_dir_of: raw text", lambda: check.run_dir_of(
        lambda o: OmegaConf.to_container(compose(config_name="config", overrides=o))["run_dir"], CONF_DIR),
     "resolves the ${...} parts"),
    ("run_dir_of: overrides ignored", lambda: check.run_dir_of(
        lambda o: compose(config_name="config").run_dir, CONF_DIR), "pass the overrides to compose"),
    ("video_dir_override: no +", lambda: check.video_dir_override(lambda: "video_dir=${run_dir}/videos", CONF_DIR),
     "video_dir is a new key"),
    ("video_dir_override: a copy", lambda: check.video_dir_override(
        lambda: "+video_dir=runs/walker-hurdles/sac/seed0/videos", CONF_DIR), "not an interpolation"),
    ("video_dir_override: no slash", lambda: check.video_dir_override(lambda: "+video_dir=${run_dir}videos",
                                                                      CONF_DIR), "followed by /videos"),
    ("eval_config: null", lambda: check.eval_config(
        lambda: OmegaConf.create({"checkpoint": None, "episodes": 50, "video": True})), "a mandatory value is"),
    ("eval_config: a default path", lambda: check.eval_config(
        lambda: OmegaConf.create({"checkpoint": "checkpoint.pt", "episodes": 50, "video": True})), "'???'"),
    ("eval_config: a dict", lambda: check.eval_config(
        lambda: {"checkpoint": "???", "episodes": 50, "video": True}), "OmegaConf.create"),
    ("eval_config: key left out", lambda: check.eval_config(
        lambda: OmegaConf.create({"episodes": 50, "video": True})), "eval_config() keys"),
    ("make_optimizer: frozen parameters included", lambda: check.make_optimizer(
        lambda cfg, module: instantiate(cfg, params=module.parameters())), "pass only the trainable ones"),
    ("make_optimizer: lr hard-coded", lambda: check.make_optimizer(
        lambda cfg, module: torch.optim.Adam([p for p in module.parameters() if p.requires_grad], lr=3e-4)),
     "take lr and the other hyperparameters from the config"),
    ("make_optimizer: always Adam", lambda: check.make_optimizer(
        lambda cfg, module: torch.optim.Adam([p for p in module.parameters() if p.requires_grad], lr=cfg["lr"])),
     "optimizer class: expected 'SGD', got 'Adam'"),
    ("make_optimizer: the config returned", lambda: check.make_optimizer(lambda cfg, module: cfg),
     "should return a torch.optim.Optimizer"),
    ("make_optimizer: params left out", lambda: check.make_optimizer(lambda cfg, module: instantiate(cfg)),
     "make_optimizer raised InstantiationException"),
]


@pytest.mark.parametrize("name, run, message", FAILING, ids=[name for name, _, _ in FAILING])
def test_mistakes_fail_with_a_useful_message(notebook_hydra: None, capfd: pytest.CaptureFixture, name: str,
                                             run: Callable[[], None], message: str) -> None:
    with pytest.raises(CheckFailed) as failure:
        run()
    assert message in str(failure.value), str(failure.value)
    assert capfd.readouterr().err == ""


# (c) the student's NotImplementedError passes through -------------------------------------------------------

UNFILLED: list[tuple[str, Callable[[], None]]] = [
    ("env_seeds", lambda: check.env_seeds(not_implemented, edge_cases=True)),
    ("hsd3_overrides", lambda: check.hsd3_overrides(not_implemented, CONF_DIR)),
    ("run_dir_of", lambda: check.run_dir_of(not_implemented, CONF_DIR)),
    ("video_dir_override", lambda: check.video_dir_override(not_implemented, CONF_DIR)),
    ("eval_config", lambda: check.eval_config(not_implemented)),
    ("make_optimizer", lambda: check.make_optimizer(not_implemented)),
]


@pytest.mark.parametrize("name, run", UNFILLED, ids=[name for name, _ in UNFILLED])
def test_not_implemented_passes_through(capfd: pytest.CaptureFixture, name: str, run: Callable[[], None]) -> None:
    with pytest.raises(NotImplementedError):
        run()
    assert capfd.readouterr() == ("", "")
