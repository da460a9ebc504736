"""Command-line entry point of HSD-3's downstream training runs (hucc's ``train.py``), configured with Hydra.

    python -m hsd3_learn.train -cn walker_sac profile=laptop env.task=Hurdles
    python -m hsd3_learn.train -cn walker_sac profile=tiny seed=3 device=cpu

``-cn`` names an experiment in ``hsd3_learn/config`` (``walker_sac``, ``humanoid_sac``); ``profile`` scales it
(``tiny``: seconds, ``laptop``: about an hour on a 2-core CPU, ``paper``: the original budget, the default); any
other key is overridden as ``key=value``. The run directory is the current directory: running the same command
again there resumes from ``checkpoint.pt``. ``-m`` sweeps (``-m seed=0,1,2``) run each job in
``multirun/<experiment>/<overrides>/``. What a run does and writes is described in :mod:`hsd3_learn.training`.

Bad input fails with one line on stderr and exit status 1 before training starts: an unknown experiment, profile
or config key, a malformed override, an unknown task, robot or agent, an invalid agent option. Hydra's own
messages for bad overrides span several lines, so single runs compose the config once with Hydra's compose API
first and reformat its error; sweeps (``-m``) keep Hydra's messages.

Differences from hucc's ``train.py``: Hydra 1.3 (``version_base="1.3"``) with the config inside the package, no
visdom, no Slurm defaults (add ``hydra/launcher=submitit_slurm`` where hydra-submitit-launcher is installed).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import hydra
from hydra import compose, initialize_config_dir
from hydra._internal.utils import get_args_parser  # the parser @hydra.main itself uses (no public equivalent)
from hydra.errors import HydraException, MissingConfigException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException

__all__ = ["CONFIG_DIR", "DEFAULT_CONFIG", "DEFAULT_PRETRAIN_CONFIG", "PRETRAIN_SUFFIX", "absolute_input_paths",
           "check_command_line", "experiment_kind", "experiments", "main", "one_line", "one_line_errors"]

#: the Hydra config directory inside the installed package
CONFIG_DIR = Path(__file__).resolve().parent / "config"
#: the experiment run when ``-cn`` is not given
DEFAULT_CONFIG = "walker_sac"
#: the pre-training experiment run when ``-cn`` is not given
DEFAULT_PRETRAIN_CONFIG = "walker_pretrain"
_NOT_EXPERIMENTS = {"common"}


#: experiments whose name ends with this are run by ``python -m hsd3_learn.pretrain``
PRETRAIN_SUFFIX = "_pretrain"
#: who runs each kind of experiment (:func:`experiment_kind`)
_RUN_BY = {"train": "python -m hsd3_learn.train", "pretrain": "python -m hsd3_learn.pretrain"}


def experiment_kind(name: str) -> str:
    """``"pretrain"`` for ``*_pretrain`` configs, ``"train"`` for the others."""
    return "pretrain" if name.endswith(PRETRAIN_SUFFIX) else "train"


def experiments(pretraining: bool = False, kind: str | None = None) -> list[str]:
    """The experiment names ``-cn`` accepts: the top-level YAML files of :data:`CONFIG_DIR` except shared ones;
    the downstream ones (``hsd3_learn.train``) or, with ``pretraining``, the ``*_pretrain`` ones; ``kind``
    (train, pretrain) overrides ``pretraining``."""
    kind = kind or ("pretrain" if pretraining else "train")
    names = (path.stem for path in CONFIG_DIR.glob("*.yaml") if path.stem not in _NOT_EXPERIMENTS)
    return sorted(name for name in names if experiment_kind(name) == kind)


def one_line(err: BaseException, pretraining: bool = False, kind: str | None = None) -> str:
    """An error message on one line: Hydra's config-search-path listing and OmegaConf's key details dropped.
    ``pretraining`` or ``kind`` say which experiments an unknown experiment is listed against."""
    if isinstance(err, MissingConfigException):
        if err.options:  # an unknown option of a config group, e.g. profile=huge
            group, _, option = str(err.missing_cfg_file).rpartition("/")
            return f"unknown {group} {option!r}; valid: {', '.join(err.options)}"
        return f"unknown experiment {err.missing_cfg_file!r}; valid: {', '.join(experiments(pretraining, kind))}"
    lines: list[str] = []
    options: list[str] | None = None  # Hydra's tab-indented list of a group's options, after "Available options:"
    for line in str(err).splitlines():
        if line.startswith("Config search path"):
            break
        if options is not None and line.startswith("\t"):
            options.append(line.strip())
            lines[-1] = f"{lines[-1].split(' Available options:')[0]} Available options: {', '.join(options)}"
        elif line.strip() == "Available options:" and lines:
            options = []
            lines[-1] += " Available options:"
        elif line.strip() and not line.startswith((" ", "\t", "See https://hydra.cc")):
            lines.append(line.strip())
    if isinstance(err.__cause__, OmegaConfBaseException):
        lines.append(str(err.__cause__).splitlines()[0])
    return " ".join(lines) or type(err).__name__


def check_command_line(argv: Sequence[str], pretraining: bool = False, prog: str | None = None,
                       default_config: str | None = None, config_dir: str | os.PathLike = CONFIG_DIR) -> None:
    """Compose the config of a single run from the command line once, so that a bad override fails with one line
    (``SystemExit``) instead of Hydra's multi-line report, and so does an experiment of another entry point
    (``*_pretrain`` ones belong to ``hsd3_learn.pretrain``). Sweeps and Hydra's informational flags are left to
    Hydra, and so are runs with another config path.

    ``default_config`` is the entry point's config when ``-cn`` is not given (default: ``walker_pretrain`` with
    ``pretraining``, else ``walker_sac``); its kind (:func:`experiment_kind`) is the kind the entry point runs.
    ``prog`` names the entry point in messages (default: ``hsd3_learn.pretrain`` or ``hsd3_learn.train``).
    ``config_dir`` is the entry point's Hydra config directory; an entry point with a directory of its own (the
    SPiRL ones, ``hsd3_learn/spirl/config``) runs ``default_config`` only.
    """
    default_config = default_config or (DEFAULT_PRETRAIN_CONFIG if pretraining else DEFAULT_CONFIG)
    kind = experiment_kind(default_config)
    prog = prog or ("hsd3_learn.pretrain" if kind == "pretrain" else "hsd3_learn.train")
    args = get_args_parser().parse_args(list(argv))
    if (args.multirun or args.help or args.hydra_help or args.info or args.cfg or args.shell_completion
            or args.config_path or args.config_dir or args.experimental_rerun):
        return
    config_name = args.config_name or default_config
    _check_experiment(config_name, default_config, Path(config_dir), prog)
    with initialize_config_dir(config_dir=str(config_dir), version_base="1.3"):
        try:
            compose(config_name=config_name, overrides=args.overrides, return_hydra_config=True)
        except (HydraException, OmegaConfBaseException) as err:
            message = (_unknown_key_message(err, config_name, _group_choices(args.overrides, Path(config_dir)))
                       or one_line(err, kind=kind))
            raise SystemExit(f"{prog}: error: {message}") from None


@contextmanager
def one_line_errors(prog: str) -> Iterator[None]:
    """Around preparing a run: bad input (``ValueError``, ``TypeError``, ``FileNotFoundError``, OmegaConf errors)
    becomes ``SystemExit`` with one line ``<prog>: error: <message>`` (stderr, exit status 1)."""
    try:
        yield
    except (ValueError, TypeError, FileNotFoundError, OmegaConfBaseException) as err:
        raise SystemExit(f"{prog}: error: {one_line(err)}") from None


def _check_experiment(config_name: str, default_config: str, config_dir: Path, prog: str) -> None:
    """Refuse (``SystemExit``) an experiment that another entry point runs, or, in a config directory of its own,
    any config but the entry point's."""
    if config_dir.resolve() != CONFIG_DIR:
        if config_name != default_config:
            raise SystemExit(f"{prog}: error: {prog} runs the {default_config!r} config only; got -cn {config_name}")
        return
    kind = experiment_kind(default_config)
    if (CONFIG_DIR / f"{config_name}.yaml").is_file() and experiment_kind(config_name) != kind:
        raise SystemExit(f"{prog}: error: {config_name!r} is run by {_RUN_BY[experiment_kind(config_name)]}; "
                         f"{prog} runs {', '.join(experiments(kind=kind))}")


def _group_choices(overrides: Sequence[str], config_dir: Path) -> list[str]:
    """The overrides that choose an option of a config group (``agent=spirl``, ``profile=tiny``): a key without a
    dot naming a folder of ``config_dir``."""
    keys = (override.split("=", 1)[0] for override in overrides)
    return [override for override, key in zip(overrides, keys)
            if "=" in override and "." not in key and (config_dir / key).is_dir()]


def _unknown_key_message(err: BaseException, config_name: str, choices: Sequence[str] = ()) -> str | None:
    """For an override of a key the config does not have: the valid keys next to it (None for other errors).

    Must run inside ``initialize_config_dir``: it composes the experiment with the command line's config-group
    ``choices`` only (a group such as SPiRL's ``agent`` may be required) to list the keys.
    """
    cause = err.__cause__
    if not isinstance(cause, (ConfigAttributeError, ConfigKeyError)) or not cause.full_key:
        return None
    parent, _, _ = cause.full_key.rpartition(".")
    try:
        config = compose(config_name=config_name, overrides=list(choices))
    except (HydraException, OmegaConfBaseException):
        return None
    node = OmegaConf.select(config, parent) if parent else config
    if not isinstance(node, DictConfig):
        return None
    where = f"under {parent}" if parent else "at the top level"
    return (f"unknown key {cause.full_key!r}; valid keys {where}: {', '.join(map(str, node))} "
            f"(add a new key with +{cause.full_key}=...)")


@hydra.main(config_path="config", config_name=DEFAULT_CONFIG, version_base="1.3")
def run(cfg: DictConfig) -> None:
    """One training run in the current directory: prepare (one-line errors), then train until done or signalled."""
    # Imported here so that a bad command line fails in a fraction of a second, before torch and MuJoCo load.
    from hsd3_learn.training import prepare_run, train

    with one_line_errors("hsd3_learn.train"):
        absolute_input_paths(cfg)
        setup = prepare_run(cfg)
    train(setup)


def absolute_input_paths(cfg: DictConfig, keys: Sequence[str] = ("lo.init_from",)) -> None:
    """Make the input paths at ``keys`` (default: ``lo.init_from``) absolute relative to where the command was
    started: sweeps run each job in its own directory (``hydra.job.chdir``), where a relative path would no longer
    point at the file."""
    for key in keys:
        path = OmegaConf.select(cfg, key)
        if isinstance(path, str) and path and not Path(path).is_absolute():
            OmegaConf.update(cfg, key, hydra.utils.to_absolute_path(path), merge=False)


def main() -> None:
    """``python -m hsd3_learn.train``: check the command line, then hand it to Hydra."""
    check_command_line(sys.argv[1:])
    run()


if __name__ == "__main__":
    main()
