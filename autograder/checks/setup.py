"""Checks for notebook 00_setup: the warm-up (``env_seeds``) and the Hydra questions.

The warm-up is compared with ``hsd3_learn.utils.env_seeds``. The Hydra answers are checked by composing: an override
list is composed with the notebook's ``conf/`` folder and the resulting config is compared key by key with the one the
reference overrides give; functions that read configs are compared with a reference composition; the optimizer built
with ``instantiate`` is compared with ``hsd3_learn.utils.make_optim`` on the same module, including one update step.

Composing for the reference never disturbs the notebook's own Hydra setup: the global Hydra state is saved and
restored around it, so the student's functions may rely on the ``initialize_config_dir`` call the notebook made.
"""

from __future__ import annotations

import contextlib
import copy
import random
import re
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from autograder.core import CheckFailed, assert_close, assert_equal, cases, check, describe, run_student
from hsd3_learn import utils as ref

__all__ = ["env_seeds", "eval_config", "hsd3_overrides", "make_optimizer", "run_dir_of", "video_dir_override"]

# --------------------------------------------------------------------------------------------------------------
# Warm-up


def _env_seed_cases(seed: int, edge_cases: bool) -> list[tuple[Any, int]]:
    """(seed, n_envs) pairs: two fixed ones and a few drawn from ``seed``."""
    rng = random.Random(seed)
    out: list[tuple[Any, int]] = [(0, 4), (7, 1)]
    out += [(rng.randrange(0, 100_000), rng.randint(1, 12)) for _ in range(3)]
    if edge_cases:
        out += [(np.int64(rng.randrange(1000)), 3), (2**31 - 1, 2), (rng.randrange(1000), 50)]
    return out


def _env_seeds_hint(got: list, expected: list[int]) -> str:
    """Advice for the usual mistakes: one seed for all, counting from 1, NumPy integers."""
    if len(set(got)) == 1 and len(expected) > 1:
        return "every env got the same seed, so all of them would play the same episodes; env i gets seed + i"
    if got == [s + 1 for s in expected]:
        return "env 0 gets the seed itself: range(n_envs) starts at 0"
    return "env i gets seed + i, for i = 0 .. n_envs - 1"


@check("env_seeds")
def env_seeds(student: Callable[[Any, int], list[int]], seeds: Any = None, edge_cases: bool = False) -> str:
    """Seeds of a vector env's environments: same values as the reference, as a list of Python ints."""
    n = 0
    for case_seed in cases(seeds, [0, 1]):
        for seed, n_envs in _env_seed_cases(case_seed, edge_cases):
            case = f"env_seeds({seed!r}, {n_envs})"
            expected = ref.env_seeds(seed, n_envs)
            got = run_student(student, seed, n_envs, what="env_seeds", case=case)
            if not isinstance(got, list):
                raise CheckFailed(f"env_seeds returned a {type(got).__name__}, expected a list\n  case: {case}\n"
                                  "  hint: wrap the values in a list (a list comprehension gives one)")
            assert_equal("env_seeds length", len(got), n_envs, case=case, hint="one seed per environment")
            assert_equal("env_seeds values", [int(s) if isinstance(s, (int, np.integer)) else s for s in got],
                         expected, case=case, hint=_env_seeds_hint(got, expected))
            wrong_type = [type(s).__name__ for s in got if type(s) is not int]
            if wrong_type:
                raise CheckFailed(f"env_seeds returned {wrong_type[0]} values, expected Python ints\n  case: {case}\n"
                                  "  hint: gymnasium's reset(seed=...) only accepts a Python int; use int(seed)")
            n += 1
    if edge_cases:
        try:
            student(0, 0)
        except ValueError:
            pass
        except NotImplementedError:
            raise
        else:
            raise CheckFailed("env_seeds(0, 0) should raise ValueError (a vector env needs at least one env)")
    return f"{n} cases"


# --------------------------------------------------------------------------------------------------------------
# Composing with Hydra


def _config_dir(conf_dir: str | Path) -> Path:
    """The notebook's ``conf/`` folder, absolute; a clear error when it is not where the notebook expects it."""
    path = Path(conf_dir).resolve()
    if not (path / "config.yaml").exists():
        raise FileNotFoundError(f"no config.yaml in {path}: the conf/ folder must sit next to the notebook")
    return path


@contextlib.contextmanager
def _isolated_hydra(conf_dir: Path) -> Iterator[None]:
    """Initialise Hydra on ``conf_dir`` for a moment, then put back whatever global Hydra state was there before."""
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.initialize import get_gh_backup, restore_gh_from_backup

    backup = get_gh_backup()
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(conf_dir), version_base="1.3"):
            yield
    finally:
        restore_gh_from_backup(backup)


def _compose(conf_dir: Path, overrides: Sequence[str]) -> Any:
    """``compose(config_name="config", overrides=...)`` on ``conf_dir`` without touching the caller's Hydra."""
    from hydra import compose

    with _isolated_hydra(conf_dir):
        return compose(config_name="config", overrides=list(overrides))


def _compose_answer(conf_dir: Path, overrides: Sequence[str], what: str) -> Any:
    """Compose the student's overrides; a Hydra error becomes a failure that quotes Hydra's own message."""
    try:
        return _compose(conf_dir, overrides)
    except Exception as err:  # Hydra raises several exception types; its message says what is wrong
        lines = [line for line in str(err).splitlines() if line.strip()][:4]
        raise CheckFailed("\n".join([f"{what}: composing with overrides {list(overrides)} failed",
                                     f"  {type(err).__name__}: " + "\n    ".join(lines),
                                     f"  hint: {_composition_hint(overrides, str(err))}"])) from None


NEW_KEYS = ("env.args.hurdle_height", "video_dir")  # the keys the exercises add, which need a '+'


def _composition_hint(overrides: Sequence[str], message: str) -> str:
    """Advice for the composition errors students meet most."""
    if any(o.startswith("+agent=") or o.startswith("+env=") for o in overrides):
        return "the defaults list already chooses an agent and an env: pick another option without '+' (agent=hsd3)"
    not_there = re.search(r"Could not override '([^']+)'", message)
    if not_there and not_there.group(1) in NEW_KEYS:
        return f"{not_there.group(1)} is a new key: add it with a leading '+'"
    if not_there:
        return (f"the composed config has no key {not_there.group(1)}; find the full path with "
                "print(OmegaConf.to_yaml(compose(config_name='config', overrides=['agent=hsd3']))). "
                "A '+' would add a new key that nothing reads")
    if "Could not find" in message:
        return "that option is not in the config group; the error lists the available ones"
    return "compose the same overrides in the notebook to see the whole error"


def _flat(cfg: Any) -> dict[str, Any]:
    """A composed config as {"dotted.key": value}, interpolations resolved, ``???`` left as the string."""
    from omegaconf import OmegaConf

    out: dict[str, Any] = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, dict) and node:
            for key, value in node.items():
                walk(value, f"{prefix}.{key}" if prefix else str(key))
        else:
            out[prefix] = node

    walk(OmegaConf.to_container(cfg, resolve=True), "")
    return out


def _string_list(value: Any, what: str) -> list[str]:
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise CheckFailed(f"{what} should return a list of override strings such as 'seed=3'; got {describe(value)}")
    return list(value)


def _extra_overrides(seed: int) -> list[str]:
    """Overrides a user might add on the command line, drawn from ``seed`` (for combining with an answer)."""
    rng = random.Random(seed)
    extra = [f"seed={rng.randrange(100)}"]
    if rng.random() < 0.5:
        extra.append(f"env.task={rng.choice(['hurdles', 'limbo', 'stairs', 'gaps'])}")
    if rng.random() < 0.5:
        extra.append(f"env.eval_envs={rng.choice([10, 20, 50])}")
    return extra


# --------------------------------------------------------------------------------------------------------------
# Exercise 2: overrides

HSD3_OVERRIDES = ["agent=hsd3", "agent.optim.hi.pi_task.lr=1e-4", "env.train_envs=5", "+env.args.hurdle_height=0.25"]

_KEY_HINTS = {
    "agent.name": "choose the config group option with agent=hsd3 (no '+': the defaults list already has an agent)",
    "agent.optim.hi.pi_task.lr": "the full path of the subset policy's learning rate is agent.optim.hi.pi_task.lr",
    "env.train_envs": "the number of training environments is env.train_envs",
    "env.args.hurdle_height": "hurdle_height is a new key under env.args: add it with +env.args.hurdle_height=0.25",
}


def _config_difference(got: dict[str, Any], expected: dict[str, Any]) -> tuple[list[str], str]:
    """One line per differing key, and the hint for the first one."""
    keys = sorted(set(got) | set(expected), key=lambda k: (k not in _KEY_HINTS, k))
    lines, first = [], None
    for key in keys:
        if got.get(key, "<missing>") == expected.get(key, "<missing>") and (key in got) == (key in expected):
            continue
        if key not in got:
            lines.append(f"  {key}: expected {expected[key]!r}, but the key is missing")
        elif key not in expected:
            lines.append(f"  {key}: not expected, got {got[key]!r}")
        else:
            lines.append(f"  {key}: expected {expected[key]!r}, got {got[key]!r}")
        first = first or key
    return lines, _KEY_HINTS.get(first or "", "only the four settings asked for should change")


@check("hsd3_overrides")
def hsd3_overrides(student: Callable[[], list[str]], conf_dir: str | Path, seeds: Any = None,
                   edge_cases: bool = False) -> str:
    """The composed config equals the reference's, also with other command-line overrides added after."""
    conf = _config_dir(conf_dir)
    answer = _string_list(run_student(student, what="hsd3_overrides()", case="no arguments"), "hsd3_overrides()")
    variants = [[]] + [_extra_overrides(s) for s in cases(seeds, [0])]
    if edge_cases:
        variants.append(["seed=1", "env.time_limit=500"])
    for extra in variants:
        got = _flat(_compose_answer(conf, answer + extra, "hsd3_overrides()"))
        expected = _flat(_compose(conf, HSD3_OVERRIDES + extra))
        if got != expected:
            lines, hint = _config_difference(got, expected)
            shown = lines[:4] + ([f"  ... and {len(lines) - 4} more keys"] if len(lines) > 4 else [])
            raise CheckFailed("\n".join([f"hsd3_overrides: the composed config differs in {len(lines)} key(s)",
                                         f"  case: your overrides followed by {extra}", *shown, f"  hint: {hint}"]))
    if edge_cases:
        reordered = _flat(_compose_answer(conf, answer[::-1], "hsd3_overrides() in reverse order"))
        if reordered != _flat(_compose(conf, HSD3_OVERRIDES)):
            raise CheckFailed("hsd3_overrides: the result depends on the order of the overrides\n"
                              "  hint: give each key once; Hydra applies the config group choices before the values")
    return f"{len(answer)} overrides, composed config matches in {len(variants)} combinations"


# --------------------------------------------------------------------------------------------------------------
# Exercises 3 and 4: interpolation

_RUN_DIR_CASES = [[], ["agent=hsd3", "seed=3"], ["env.task=limbo"]]


def _random_run_overrides(seed: int) -> list[str]:
    rng = random.Random(1000 + seed)
    return [f"agent={rng.choice(['sac', 'hsd3'])}", *_extra_overrides(seed)]


@check("run_dir_of")
def run_dir_of(student: Callable[[list[str]], str], conf_dir: str | Path, seeds: Any = None) -> str:
    """``run_dir`` after composing with the given overrides, resolved, for fixed and random override lists."""
    conf = _config_dir(conf_dir)
    override_lists = _RUN_DIR_CASES + [_random_run_overrides(s) for s in cases(seeds, [0, 1])]
    default = str(_compose(conf, []).run_dir)
    for overrides in override_lists:
        expected = str(_compose(conf, overrides).run_dir)
        got = run_student(student, list(overrides), what="run_dir_of", case=f"overrides {overrides}")
        hint = "compose(config_name='config', overrides=overrides) and read .run_dir from the result"
        if isinstance(got, str) and "${" in got:
            hint = "that is the raw text; reading cfg.run_dir (attribute access) resolves the ${...} parts"
        elif got == default and expected != default:
            hint = "this is the run_dir without overrides: pass the overrides to compose"
        assert_equal(f"run_dir_of({overrides})", got, expected, hint=hint)
    return f"{len(override_lists)} override lists"


@check("video_dir_override")
def video_dir_override(student: Callable[[], str], conf_dir: str | Path, seeds: Any = None) -> str:
    """A new key ``video_dir`` that always equals ``run_dir + "/videos"``, whatever else is overridden."""
    from omegaconf import OmegaConf

    conf = _config_dir(conf_dir)
    answer = run_student(student, what="video_dir_override()", case="no arguments")
    if not isinstance(answer, str):
        raise CheckFailed(f"video_dir_override() should return one override string; got {describe(answer)}")
    variants = [[], ["agent=hsd3", "seed=5"]] + [_random_run_overrides(s) for s in cases(seeds, [0])]
    for extra in variants:
        cfg = _compose_answer(conf, [answer, *extra], "video_dir_override()")
        if "video_dir" not in cfg:
            raise CheckFailed(f"video_dir_override: the composed config has no top-level key video_dir\n"
                              f"  case: overrides [{answer!r}, *{extra}]\n  hint: the override starts with +video_dir=")
        raw = OmegaConf.to_container(cfg, resolve=False)["video_dir"]
        if not (isinstance(raw, str) and "${run_dir}" in raw):
            raise CheckFailed(f"video_dir_override: video_dir is the fixed value {raw!r}, not an interpolation\n"
                              "  hint: write ${run_dir} in the value so that it follows seed, agent and env changes")
        assert_equal("video_dir", str(cfg.video_dir), f"{cfg.run_dir}/videos", case=f"extra overrides {extra}",
                     hint="the value is ${run_dir} followed by /videos")
    return f"video_dir follows run_dir in {len(variants)} combinations"


# --------------------------------------------------------------------------------------------------------------
# Exercise 5: a mandatory value

EVAL_CONFIG = {"checkpoint": "???", "episodes": 50, "video": True}


@check("eval_config")
def eval_config(student: Callable[[], Any], seeds: Any = None) -> str:
    """Keys and values as asked, ``checkpoint`` mandatory: reading it raises, supplying it works."""
    from omegaconf import DictConfig, OmegaConf
    from omegaconf.errors import MissingMandatoryValue

    cfg = run_student(student, what="eval_config()", case="no arguments")
    if not isinstance(cfg, DictConfig):
        raise CheckFailed(f"eval_config() should return an OmegaConf DictConfig; got {describe(cfg)}\n"
                          "  hint: OmegaConf.create({...}) turns a dict into one")
    assert_equal("eval_config() keys", sorted(cfg.keys()), sorted(EVAL_CONFIG))
    if OmegaConf.to_container(cfg)["checkpoint"] is None:
        raise CheckFailed("eval_config: checkpoint is None (null), which is a valid value and reads without error\n"
                          "  hint: a mandatory value is the string '???'")
    if not OmegaConf.is_missing(cfg, "checkpoint"):
        raise CheckFailed(f"eval_config: checkpoint is {cfg.checkpoint!r}, but it must be left for the user to supply\n"
                          "  hint: mark it mandatory with '???'")
    try:
        cfg.checkpoint
    except MissingMandatoryValue:
        pass
    else:
        raise CheckFailed("eval_config: reading cfg.checkpoint should raise MissingMandatoryValue")
    assert_equal("eval_config().episodes", cfg.episodes, EVAL_CONFIG["episodes"])
    assert_equal("eval_config().video", cfg.video, EVAL_CONFIG["video"])
    for seed in cases(seeds, [0]):
        path = f"runs/walker-hurdles/hsd3/seed{seed}/checkpoint.pt"
        merged = OmegaConf.merge(cfg, OmegaConf.from_dotlist([f"checkpoint={path}"]))
        assert_equal("checkpoint after supplying it", merged.checkpoint, path)
        assert_equal("missing keys after supplying checkpoint", sorted(OmegaConf.missing_keys(merged)), [])
    return "checkpoint is mandatory, the other values match"


# --------------------------------------------------------------------------------------------------------------
# Exercise 6: instantiate


def _optim_configs(seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    return [
        {"_target_": "torch.optim.Adam", "lr": rng.choice([3e-4, 1e-4, 1e-3])},
        {"_target_": "torch.optim.SGD", "lr": rng.choice([0.1, 0.01]), "momentum": 0.9},
        {"_target_": "torch.optim.AdamW", "lr": 1e-3, "weight_decay": rng.choice([0.0, 0.01])},
    ]


def _network(seed: int, freeze_first: bool) -> nn.Module:
    """A small policy-like network; with ``freeze_first`` its first layer is frozen, like a pre-trained part."""
    g = torch.Generator().manual_seed(seed)
    sizes = [3 + seed % 4, 8 + seed % 5, 2 + seed % 3]
    net = nn.Sequential(nn.Linear(sizes[0], sizes[1]), nn.Tanh(), nn.Linear(sizes[1], sizes[2]))
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)
    if freeze_first:
        net[0].requires_grad_(False)
    return net


def _describe_optimizer(optim: Any, module: nn.Module, what: str) -> tuple[str, list[str], dict[str, Any]]:
    """(class name, names of the parameters it updates, hyperparameters) of an optimizer."""
    if not isinstance(optim, torch.optim.Optimizer):
        raise CheckFailed(f"{what} should return a torch.optim.Optimizer; got {describe(optim)}\n"
                          "  hint: instantiate(optim_cfg, params=...) builds the object named by _target_")
    names = {id(p): n for n, p in module.named_parameters()}
    owned = sorted(names.get(id(p), "<not in the module>") for g in optim.param_groups for p in g["params"])
    hyper = {k: v for k, v in optim.defaults.items() if k in ("lr", "momentum", "weight_decay", "betas", "eps")}
    return type(optim).__name__, owned, hyper


def _one_step(optim: torch.optim.Optimizer, module: nn.Module, seed: int) -> list[torch.Tensor]:
    """One update on a fixed loss; returns the parameters afterwards."""
    x = torch.randn(5, module[0].in_features, generator=torch.Generator().manual_seed(seed))
    optim.zero_grad()
    module(x).pow(2).mean().backward()
    optim.step()
    return [p.detach().clone() for p in module.parameters()]


@check("make_optimizer")
def make_optimizer(student: Callable[[Any, nn.Module], Any], seeds: Any = None, edge_cases: bool = False) -> str:
    """Class, hyperparameters and parameters of the optimizer as in ``make_optim``; weights after one step."""
    from omegaconf import OmegaConf

    n = 0
    for seed in cases(seeds, [0, 1]):
        for cfg in _optim_configs(seed):
            for freeze_first, as_dict in [(True, False), (False, False)] + ([(True, True)] if edge_cases else []):
                case = (f"seed={seed}, config {cfg} as {'a dict' if as_dict else 'a DictConfig'}, "
                        f"first layer {'frozen' if freeze_first else 'trainable'}")
                net_ref, net_student = _network(seed, freeze_first), _network(seed, freeze_first)
                optim_cfg = dict(cfg) if as_dict else OmegaConf.create(cfg)
                expected_optim = ref.make_optim(copy.deepcopy(optim_cfg), net_ref, fuse=False)
                got_optim = run_student(student, optim_cfg, net_student, what="make_optimizer", case=case)
                got = _describe_optimizer(got_optim, net_student, "make_optimizer")
                expected = _describe_optimizer(expected_optim, net_ref, "reference")
                frozen = {n for n, p in net_student.named_parameters() if not p.requires_grad}
                assert_equal("optimizer class", got[0], expected[0], case=case,
                             hint="build the class the config's _target_ names: instantiate(optim_cfg, params=...)")
                assert_equal("parameters the optimizer updates", got[1], expected[1], case=case,
                             hint="a frozen parameter (requires_grad=False) is in the optimizer: pass only the "
                                  "trainable ones" if frozen & set(got[1]) else "pass every trainable parameter")
                assert_equal("optimizer hyperparameters", got[2], expected[2], case=case,
                             hint="take lr and the other hyperparameters from the config (instantiate passes them)")
                after_ref = _one_step(expected_optim, net_ref, seed)
                after_student = _one_step(got_optim, net_student, seed)
                for (name, _), a, b in zip(net_ref.named_parameters(), after_student, after_ref):
                    assert_close(f"{name} after one step", a, b, atol=1e-7, case=case)
                n += 1
    return f"{n} optimizers, same parameters and the same first step"
