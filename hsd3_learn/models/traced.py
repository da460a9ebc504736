"""Lazily traced modules: record a network's graph on its first call, replay the recording afterwards.

HSD-3 evaluates the same critics and the frozen low-level policy millions of times with identical structure.
``torch.jit.trace`` runs the module once on example inputs, records the tensor operations, and returns a graph that
skips Python's per-op overhead on later calls (hucc's ``trace: true`` option). Because the graph is what *happened*
on the example, anything that depends on data is frozen:

- ``if x.sum() > 0:`` takes the branch of the first call forever;
- Python numbers computed from tensors (``x.max().item()``) become constants;
- outputs must be tensors (or tuples/dicts of tensors): a module returning a ``torch.distributions`` object cannot
  be traced, so HSD-3 traces critics and the deterministic low level only.

Three ways to run a model, and when to use which:

====================  ================================  ===============================================
mode                  cost                              use for
====================  ================================  ===============================================
eager                 Python overhead per op            anything; debugging; models returning distributions
``TracedModule``      one trace (~0.1-1 s)              fixed-structure MLPs called many times (critics)
``torch.compile``     compilation (10-60 s), recompiles large models on GPU; data-dependent control flow
                      on new shapes                     is handled by graph breaks instead of being frozen
====================  ================================  ===============================================

``bench/traced.py`` measures the three on a ``qd_d2rl_d_256`` critic.

TorchScript (``torch.jit``) is deprecated in recent torch releases in favour of ``torch.compile`` and
``torch.export``; tracing still works and is instructive, and this wrapper silences the deprecation notice so that
notebooks stay quiet. If tracing is ever removed, ``TracedModule`` is the one place to switch to ``torch.compile``.

Differences from hucc: the first call is protected by a lock, so several threads (e.g. vector-env workers
sharing a policy) can call a fresh ``TracedModule`` safely; ``state_dict`` and parameters are those of the wrapped
module, so checkpoints do not change when tracing is switched on or off.
"""

from __future__ import annotations

import threading
import warnings
from typing import Any

import torch
from torch import nn

__all__ = ["TracedModule"]


class TracedModule(nn.Module):
    """Wrap ``module``; trace it on the first call and reuse the trace for every later call.

    The trace shares parameters with ``module`` (training the original updates the trace). Batch sizes may change
    between calls; the structure of the inputs (dict keys, number of arguments, ranks) must not. Call
    :meth:`retrace` after changing something the trace froze (e.g. ``train()``/``eval()`` with dropout).
    """

    def __init__(self, module: nn.Module):
        super().__init__()
        if not isinstance(module, nn.Module):
            raise TypeError(f"TracedModule wraps an nn.Module; got {type(module).__name__}")
        self.module = module
        # Kept out of nn.Module's registry (plain __dict__ entry): the trace shares the wrapped module's
        # parameters and must not show up a second time in parameters() or state_dict().
        self.__dict__["_traced"] = None
        self._lock = threading.Lock()
        self.register_state_dict_post_hook(self._drop_module_level)
        self.register_load_state_dict_pre_hook(self._add_module_level)

    @property
    def is_traced(self) -> bool:
        """Whether the first call has happened (and the trace exists)."""
        return self._traced is not None

    def retrace(self) -> None:
        """Forget the trace; the next call records a new one."""
        with self._lock:
            self.__dict__["_traced"] = None

    def forward(self, *inputs: Any) -> Any:
        traced = self._traced
        if traced is None:
            with self._lock:
                if self._traced is None:  # another thread may have traced while we waited
                    self.__dict__["_traced"] = self._trace(inputs)
                traced = self._traced
        return traced(*inputs)

    def _trace(self, inputs: tuple) -> Any:
        if not inputs:
            raise ValueError("TracedModule needs at least one tensor input to trace with")
        with warnings.catch_warnings():
            # Tracer warnings ("converting a tensor to a Python boolean...") are the documented limits above.
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            # torch >= 2.9 marks TorchScript deprecated; it still works, see the module docstring.
            warnings.filterwarnings("ignore", message=r"`torch\.jit\.trace", category=DeprecationWarning)
            try:
                return torch.jit.trace(self.module, inputs, strict=False, check_trace=False)
            except RuntimeError as err:
                raise TypeError(
                    f"cannot trace {type(self.module).__name__}: inputs and outputs must be tensors or dicts/tuples "
                    f"of tensors ({str(err).splitlines()[0]})"
                ) from None

    # Checkpoints hold the wrapped module's tensors under the same names as without tracing: drop the
    # "module." level on save and add it back on load (also when a parent module saves or loads us).
    @staticmethod
    def _drop_module_level(module: nn.Module, state_dict: dict[str, Any], prefix: str, local_metadata: Any) -> None:
        for key in [k for k in state_dict if k.startswith(prefix + "module.")]:
            state_dict[prefix + key[len(prefix) + len("module.") :]] = state_dict.pop(key)

    @staticmethod
    def _add_module_level(module: nn.Module, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
        for key in [k for k in state_dict if k.startswith(prefix)]:
            state_dict[prefix + "module." + key[len(prefix) :]] = state_dict.pop(key)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_traced"] = None  # traces and locks are not picklable; re-trace after unpickling
        state["_lock"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def extra_repr(self) -> str:
        return f"traced={self.is_traced}"
