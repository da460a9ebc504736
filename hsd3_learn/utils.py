"""Small utilities every other module of HSD-3 leans on.

What lives here, in the order the course teaches it:

- ``make_optim``: build optimizers for a nested model (``model.hi.q`` gets ``optim.hi.q``) from Hydra configs.
- ``dim_select``: batched gathers, e.g. "the Q value of the chosen subset of each row" or "the policy head of
  each row's task".
- ``sorted_nicely`` / ``sorted_nicely_sep``: natural sorting of feature-subset names such as ``"3+4,10"``.
- ``PreemptionHook``: checkpoint when the cluster sends SIGUSR1/SIGTERM, then hand the signal on.
- ``seed_everything``, ``env_seeds``, ``resolve_device``, ``atomic_save``: reproducibility and safe files.

Differences from the original ``hucc.utils``:

1. ``make_optim`` returns nested ``dict``s instead of ``SimpleNamespace`` so that checkpointing can iterate them.
2. Fused Adam comes from ``torch.optim.Adam(fused=True)`` on CUDA instead of apex's ``FusedAdam``.
3. ``dim_select`` is one gather-based rule covering the three cases hucc special-cased, and fails with a message
   listing them instead of "can't dim_select".
4. ``sorted_nicely`` compares letters case-insensitively (``"X3"`` sorts between ``"x2"`` and ``"x10"``).
5. The signal hook defers the checkpoint to a safe point of the training loop by default (checkpointing from
   inside a signal handler could save a half-applied optimizer step); ``immediate=True`` gives hucc's behaviour.
"""

from __future__ import annotations

import os
import random
import re
import signal
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from types import FrameType
from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = [
    "atomic_save",
    "dim_select",
    "env_seeds",
    "fused_kwargs",
    "make_optim",
    "PreemptionHook",
    "resolve_device",
    "seed_everything",
    "sorted_nicely",
    "sorted_nicely_sep",
]

# Optimizers that accept ``fused=True`` on CUDA in torch 2.x.
_FUSABLE = {"torch.optim.Adam", "torch.optim.AdamW", "torch.optim.SGD"}


# --------------------------------------------------------------------------------------------------------------
# Optimizers


def _to_container(cfg: Any) -> Any:
    """OmegaConf node -> plain dict/list (so that plain dicts and Hydra configs are handled alike)."""
    try:
        from omegaconf import DictConfig, ListConfig, OmegaConf
    except ImportError:  # pragma: no cover - hydra-core is a hard dependency
        return cfg
    if isinstance(cfg, (DictConfig, ListConfig)):
        return OmegaConf.to_container(cfg, resolve=True)
    return cfg


def fused_kwargs(target: str, kwargs: dict[str, Any], all_on_cuda: bool, fuse: bool = True) -> dict[str, Any]:
    """Optimizer kwargs with ``fused=True`` added when it helps: Adam/AdamW/SGD, every parameter on CUDA.

    An explicit ``fused`` or ``foreach`` in the config wins. hucc's own ``fuse:`` key is understood and removed.
    """
    kwargs = dict(kwargs)
    fuse = bool(kwargs.pop("fuse", fuse))
    if fuse and all_on_cuda and target in _FUSABLE and "fused" not in kwargs and "foreach" not in kwargs:
        kwargs["fused"] = True
    return kwargs


def _build_optimizer(cfg: dict, module: nn.Module, path: str, fuse: bool) -> torch.optim.Optimizer | None:
    """One ``_target_`` config -> an optimizer over ``module``'s trainable parameters (None if it has none)."""
    from hydra.utils import get_class

    params = [p for p in module.parameters() if p.requires_grad]
    if not params:
        return None
    target = cfg["_target_"]
    try:
        optim_cls = get_class(target)
    except Exception as err:  # hydra raises several types; the message is what matters
        raise ValueError(f"optim.{path}: cannot import optimizer class {target!r} ({err})") from None
    options = {k: v for k, v in cfg.items() if k != "_target_"}
    return optim_cls(params, **fused_kwargs(target, options, all(p.is_cuda for p in params), fuse))


def make_optim(optim_cfg: Any, model: nn.Module, fuse: bool = True, _path: str = "") -> Any:
    """Build optimizers for ``model`` from a config tree that mirrors its ``ModuleDict`` tree.

    A config node with ``_target_`` (e.g. ``{_target_: torch.optim.Adam, lr: 3e-4}``) becomes an optimizer over
    that submodule's trainable parameters; a node without it is recursed into, key by key, alongside the
    corresponding child of ``model``. Submodules without a config entry get no optimizer (they are frozen, like
    HSD-3's low-level policy), and so do submodules without trainable parameters (the result is ``None``).

    Args:
        optim_cfg: dict or OmegaConf ``DictConfig``; keys must name children of ``model``.
        model: the module (usually an ``nn.ModuleDict``) the config describes.
        fuse: use ``fused=True`` for Adam/AdamW/SGD when every parameter is on CUDA (ignored on CPU). The decision
            is made here, so move the model to its device *before* building its optimizers.

    Returns:
        An optimizer, ``None``, or a nested ``dict`` of them with the config's keys.
    """
    cfg = _to_container(optim_cfg)
    where = f"optim.{_path}" if _path else "optim"
    if not isinstance(cfg, Mapping):
        raise TypeError(f"{where} must be a mapping (an optimizer with _target_, or a dict of them); got {cfg!r}")
    if "_target_" in cfg:
        return _build_optimizer(dict(cfg), model, _path or "<root>", fuse)
    children = dict(model.named_children())
    optims: dict[str, Any] = {}
    for key, sub_cfg in cfg.items():
        if key not in children:
            raise ValueError(
                f"{where}.{key} has no matching submodule in the model; valid keys: {sorted(children)}"
            )
        sub_path = f"{_path}.{key}" if _path else str(key)
        optims[key] = make_optim(sub_cfg, children[key], fuse=fuse, _path=sub_path)
    return optims


# --------------------------------------------------------------------------------------------------------------
# Batched selection


def dim_select(input: torch.Tensor, dim: int, index: torch.Tensor) -> torch.Tensor:
    """Pick one (or K) entries along ``dim`` separately for every batch element, differentiably.

    Three layouts are supported (B batch, N choices, A features, T time, K picks per row):

    1. ``index.shape == input.shape[:dim]`` (``dim >= 1``): one pick per row, ``dim`` is removed.
       ``[B, N]`` with ``[B]`` at dim 1 -> ``[B]`` (Q of the chosen subset);
       ``[B, N, A]`` with ``[B]`` at dim 1 -> ``[B, A]`` (the policy head of each row's task).
    2. ``index.shape == input.shape[:dim] + (K,)``: K picks per row, ``dim`` becomes K.
       ``[B, T, A]`` with ``[B, K]`` at dim 1 -> ``[B, K, A]``.
    3. ``dim == 0`` and ``index.shape == input.shape[1:1 + index.ndim]``: pick along the leading axis per row.
       ``[T, B, A]`` with ``[B]`` at dim 0 -> ``[B, A]`` (the step each env is at).

    Returns:
        The selected entries; gradients flow into ``input``.
    """
    if index.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8, torch.int8):
        raise TypeError(f"dim_select: index must be an integer tensor; got dtype {index.dtype}")
    dim = dim % input.ndim
    index = index.long()
    lead = tuple(input.shape[:dim])
    if dim >= 1 and tuple(index.shape) == lead:
        return _gather_per_row(input, dim, index.unsqueeze(-1)).squeeze(dim)
    if dim >= 1 and index.ndim == dim + 1 and tuple(index.shape[:dim]) == lead:
        return _gather_per_row(input, dim, index)
    if dim == 0 and 0 < index.ndim < input.ndim and tuple(index.shape) == tuple(input.shape[1 : 1 + index.ndim]):
        moved = input.movedim(0, index.ndim)  # [*index.shape, N, rest]
        return _gather_per_row(moved, index.ndim, index.unsqueeze(-1)).squeeze(index.ndim)
    raise ValueError(
        f"dim_select: cannot select input {tuple(input.shape)} at dim {dim} with index {tuple(index.shape)}; "
        f"index must have shape input.shape[:dim]={lead}, input.shape[:dim]+(K,), or (dim 0) input.shape[1:1+k]"
    )


def _gather_per_row(input: torch.Tensor, dim: int, index: torch.Tensor) -> torch.Tensor:
    """``gather`` along ``dim`` with ``index`` [*lead, K] broadcast over the trailing dims of ``input``."""
    trailing = input.shape[dim + 1 :]
    index = index.reshape(*index.shape, *([1] * len(trailing))).expand(*index.shape, *trailing)
    return input.gather(dim, index)


# --------------------------------------------------------------------------------------------------------------
# Natural sorting


def _natural_key(text: str) -> list:
    """``"f10"`` -> ``["f", 10, ""]`` so that numbers compare as numbers."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", str(text))]


def sorted_nicely(items: Iterable[str]) -> list[str]:
    """Sort strings the way a human would: ``["x2", "x10", "x1"]`` -> ``["x1", "x2", "x10"]``."""
    return sorted(items, key=_natural_key)


def sorted_nicely_sep(items: Iterable[str], sep: str = ",") -> list[str]:
    """Sort by the number of ``sep``-separated parts first, then naturally.

    HSD-3 orders feature subsets by rank this way: ``"0", "1", "3+4", "0,1", "0,3+4", "0,1,2"``.
    """
    return sorted(items, key=lambda s: (len(str(s).split(sep)), _natural_key(s)))


# --------------------------------------------------------------------------------------------------------------
# Preemption


class PreemptionHook:
    """Checkpoint when SIGUSR1/SIGTERM arrive (Slurm preemption, ``kill``), then pass the signal on.

    By default the handler only records the signal; the training loop calls :meth:`checkpoint_if_requested` at
    a safe point (between updates), which saves and then calls the previously installed Python handler, so
    handlers installed by Hydra, submitit or the user keep working; the loop then ends and the process exits
    cleanly. With ``immediate=True`` the checkpoint runs inside the handler itself, as hucc did (for loops that
    cannot poll), and a default previous handler is honoured: the process terminates right after saving.

    Use as a context manager so the previous handlers come back afterwards::

        with PreemptionHook(lambda: agent.save("checkpoint.pt")) as hook:
            while training:
                step()
                if hook.checkpoint_if_requested():
                    break  # exit cleanly; rerunning the command resumes
    """

    def __init__(
        self,
        checkpoint_fn: Callable[[], Any],
        signals: Sequence[int] = (signal.SIGUSR1, signal.SIGTERM),
        immediate: bool = False,
    ) -> None:
        if not callable(checkpoint_fn):
            raise TypeError(f"PreemptionHook: checkpoint_fn must be callable; got {type(checkpoint_fn).__name__}")
        self.checkpoint_fn = checkpoint_fn
        self.signals = tuple(signals)
        self.immediate = immediate
        self.requested: int | None = None  # the signal number received, if any
        self._previous: dict[int, Any] = {}

    def install(self) -> PreemptionHook:
        """Register the handler for every signal, remembering what was there before (a second call does nothing)."""
        if self._previous:
            return self
        for signum in self.signals:
            self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def uninstall(self) -> None:
        """Restore the handlers that were installed before :meth:`install`."""
        for signum, previous in self._previous.items():
            signal.signal(signum, previous if previous is not None else signal.SIG_DFL)
        self._previous.clear()

    def __enter__(self) -> PreemptionHook:
        return self.install()

    def __exit__(self, *exc: object) -> None:
        self.uninstall()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.requested = signum
        if self.immediate:
            self._checkpoint_and_chain(frame)

    def checkpoint_if_requested(self) -> bool:
        """If a signal came in, checkpoint, call the previous handler and return True (time to stop)."""
        if self.requested is None:
            return False
        self._checkpoint_and_chain(None)
        return True

    def _checkpoint_and_chain(self, frame: FrameType | None) -> None:
        """Save, then hand the signal to whoever had it before.

        A Python handler is called. The default action (terminate) is carried out in immediate mode, by restoring
        it and re-sending the signal; in deferred mode the caller stops the loop itself and exits cleanly.
        """
        signum = self.requested
        assert signum is not None
        self.checkpoint_fn()
        previous = self._previous.get(signum)
        if callable(previous):
            previous(signum, frame)
        elif previous == signal.SIG_DFL and self.immediate:
            self.uninstall()
            os.kill(os.getpid(), signum)


# --------------------------------------------------------------------------------------------------------------
# Reproducibility, devices, files


def seed_everything(seed: int, deterministic: bool = False) -> np.random.Generator:
    """Seed Python, NumPy and torch (all devices) from one number; return a NumPy generator for the caller.

    ``deterministic=True`` also asks torch for deterministic kernels (slower on GPU; needed for bitwise
    reproducible CUDA runs). Environments are seeded separately with :func:`env_seeds`.
    """
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer; got {seed!r}")
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds every CUDA device
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
    return np.random.default_rng(seed)


def env_seeds(seed: int, n_envs: int) -> list[int]:
    """Seeds for the envs of a vector env: ``seed + i`` for env ``i``, as in hucc (eval envs use ``seed=0``)."""
    if n_envs < 1:
        raise ValueError(f"n_envs must be >= 1; got {n_envs}")
    return [int(seed) + i for i in range(n_envs)]


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; anything else is passed to ``torch.device``."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError:
        raise ValueError(f"unknown device {device!r}; use 'auto', 'cpu', 'cuda' or 'cuda:N'") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available; use 'auto' or 'cpu'")
    return resolved


def atomic_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` to a temp file next to ``path``, then rename: a crash never leaves a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    umask = os.umask(0)
    os.umask(umask)
    try:
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the permissions a plain open() would
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
