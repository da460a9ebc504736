"""Replay buffer: the off-policy memory shared by SAC, SAC-MT and HSD-3.

Every off-policy agent in HSD-3 stores transitions (observation, action, reward, next observation, done, ...) in one
ring of preallocated tensors and samples minibatches from it. With a vector env of I environments each step adds I
rows at once, and the buffer keeps them interleaved: env i of step t lands at row t*I + i (modulo the capacity), so
stepping by I rows walks along one environment's trajectory (used by `get_trajs`).

Rows are addressed in two ways. A *logical* index counts valid rows in insertion order (0 = oldest); a *physical*
index is the slot in the storage tensors. The ring keeps `start` (physical slot of the oldest row) and `size`
(number of valid rows); logical index j lives at physical slot (start + j) % capacity.

Deliberate differences from the original hucc `ReplayBuffer`:
- Row shapes are kept exactly as put (hucc stored rows of shape (1,) as [max]): no silent reshaping to remember.
- Every put checks keys, row shapes and dtypes against the first put: a mismatch is an error, not corrupted memory.
- `put` appends any whole number of env steps in one vectorised write; `put_row` is the one-step special case.
- `get_batch_where` also takes an explicit boolean mask, and the unused `priority_key` is gone.
- Sampling takes an optional `torch.Generator` so tests and experiments are reproducible; indices are drawn on the
  generator's device (the CPU without one) and then moved to the storage, so a seed picks the same rows on any device.
- `save`/`load` go through `state_dict` with an atomic write and a `weights_only` load (hucc pickled `__dict__`),
  so a job killed mid-save never leaves a truncated file and loading runs no pickled code.
- `clear()` empties the ring but keeps the allocated storage (and therefore its keys, shapes and dtypes).
"""

import os
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from hsd3_learn.utils import atomic_save

__all__ = ["ReplayBuffer"]


class ReplayBuffer:
    """A ring of preallocated tensors, one per key, each of shape [capacity, *row_shape]."""

    def __init__(self, capacity: int, interleave: int = 1, device: str | torch.device | None = None) -> None:
        """`interleave` is the number of envs I stepped together; storage is created lazily by the first put."""
        if not isinstance(capacity, int) or capacity <= 0:
            raise ValueError(f"capacity must be a positive int, got {capacity!r}")
        if not isinstance(interleave, int) or interleave <= 0:
            raise ValueError(f"interleave must be a positive int, got {interleave!r}")
        if capacity % interleave != 0:
            raise ValueError(f"capacity ({capacity}) must be a multiple of interleave ({interleave})")
        self._capacity = capacity
        self._interleave = interleave
        self._device = torch.device(device) if device is not None else None
        self._storage: dict[str, Tensor] = {}
        self._start = 0
        self._size = 0

    # ----------------------------------------------------------------- properties

    @property
    def capacity(self) -> int:
        """Maximum number of rows; older rows are overwritten beyond it."""
        return self._capacity

    @property
    def interleave(self) -> int:
        """Rows added per env step (the number of envs I)."""
        return self._interleave

    @property
    def device(self) -> torch.device | None:
        """Where the storage lives; None until the first put when no device was given."""
        return self._device

    def __len__(self) -> int:
        """Number of valid rows."""
        return self._size

    def keys(self) -> list[str]:
        """The stored keys in first-put order (empty before the first put)."""
        return list(self._storage.keys())

    def clear(self) -> None:
        """Forget all rows; the storage (and its keys, shapes, dtypes) is kept for reuse."""
        self._start = 0
        self._size = 0

    # ------------------------------------------------------------------ insertion

    def put_row(self, row: Mapping[str, Tensor]) -> None:
        """Add one env step: every value is [I, *row_shape], one row per env."""
        for key, value in row.items():
            if isinstance(value, Tensor) and (value.dim() == 0 or value.shape[0] != self._interleave):
                raise ValueError(
                    f"put_row: '{key}' must have leading dim interleave={self._interleave}, "
                    f"got shape {tuple(value.shape)}"
                )
        self.put(row)

    def put(self, batch: Mapping[str, Tensor]) -> None:
        """Add k env steps at once: every value is [k*I, *row_shape], step-major (env fastest)."""
        n_rows = self._check_batch(batch)
        if not self._storage:
            self._allocate(batch)
        n_kept = min(n_rows, self._capacity)  # a batch longer than the ring keeps only its newest rows
        cursor = self._start + self._size
        first_kept = cursor + n_rows - n_kept
        positions = (first_kept + torch.arange(n_kept)) % self._capacity
        positions = positions.to(self._device)
        for key, value in batch.items():
            self._storage[key][positions] = value[n_rows - n_kept :].to(self._device)
        total = self._size + n_rows
        if total > self._capacity:
            self._start = (self._start + total - self._capacity) % self._capacity
        self._size = min(total, self._capacity)

    def _allocate(self, batch: Mapping[str, Tensor]) -> None:
        """Create zeroed storage whose dtypes and row shapes come from the first batch."""
        if self._device is None:
            self._device = next(iter(batch.values())).device
        for key, value in batch.items():
            shape = (self._capacity, *value.shape[1:])
            self._storage[key] = torch.zeros(shape, dtype=value.dtype, device=self._device)

    def _check_batch(self, batch: Mapping[str, Tensor]) -> int:
        """Validate a batch against the interleave and the existing storage; return its number of rows."""
        if not isinstance(batch, Mapping) or len(batch) == 0:
            raise ValueError("put expects a non-empty mapping of key -> Tensor")
        n_rows = None
        for key, value in batch.items():
            if not isinstance(value, Tensor):
                raise TypeError(f"put: '{key}' must be a torch.Tensor, got {type(value).__name__}")
            if value.dim() == 0:
                raise ValueError(f"put: '{key}' needs a leading row dim, got a scalar tensor")
            if n_rows is None:
                n_rows = value.shape[0]
            elif value.shape[0] != n_rows:
                raise ValueError(f"put: '{key}' has {value.shape[0]} rows but other keys have {n_rows}")
        if n_rows % self._interleave != 0:
            raise ValueError(f"put: row count {n_rows} must be a multiple of interleave={self._interleave}")
        if self._storage:
            self._check_matches_storage(batch)
        return n_rows

    def _check_matches_storage(self, batch: Mapping[str, Tensor]) -> None:
        """Later puts must repeat the keys, row shapes and dtypes of the first put."""
        if set(batch.keys()) != set(self._storage.keys()):
            raise ValueError(f"put: keys {sorted(batch.keys())} differ from stored keys {sorted(self._storage)}")
        for key, value in batch.items():
            stored = self._storage[key]
            if value.shape[1:] != stored.shape[1:]:
                raise ValueError(
                    f"put: '{key}' row shape expected {tuple(stored.shape[1:])}, got {tuple(value.shape[1:])}"
                )
            if value.dtype != stored.dtype:
                raise ValueError(f"put: '{key}' dtype expected {stored.dtype}, got {value.dtype}")

    # ------------------------------------------------------------------- sampling

    def _physical(self, logical: Tensor) -> Tensor:
        """Storage slots (on the storage device) of logical indices of any shape S, on any device."""
        return (self._start + logical.to(self._device)) % self._capacity

    def _gather(self, logical: Tensor) -> dict[str, Tensor]:
        """Rows at logical indices of any shape S -> {key: [*S, *row_shape]}."""
        physical = self._physical(logical)
        return {key: stored[physical] for key, stored in self._storage.items()}

    def _random_indices(self, high: int, size: tuple[int, ...], generator: torch.Generator | None) -> Tensor:
        """Uniform ints in [0, high) of shape `size`, on the storage device.

        They are drawn on the generator's device (a generator only draws on its own device), or on the CPU without
        one, so the same seed picks the same rows whether the storage lives on the CPU or a GPU.
        """
        draw_device = generator.device if generator is not None else torch.device("cpu")
        indices = torch.randint(high, size, generator=generator, device=draw_device)
        return indices.to(self._device)

    def _require_rows(self, what: str, needed: int = 1) -> None:
        if self._size < needed:
            raise ValueError(f"{what}: needs at least {needed} valid rows, buffer has {self._size}")

    @staticmethod
    def _check_count(what: str, n: int) -> None:
        if not isinstance(n, int) or n <= 0:
            raise ValueError(f"{what}: n must be a positive int, got {n!r}")

    def get_batch(self, n: int, generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """n rows drawn uniformly with replacement from the valid rows -> {key: [n, *row_shape]}.

        Indices are drawn on `generator`'s device (the CPU without a generator), then moved to the storage device.
        """
        self._check_count("get_batch", n)
        self._require_rows("get_batch")
        return self._gather(self._random_indices(self._size, (n,), generator))

    def get_batch_where(
        self, n: int, where: str | Tensor, generator: torch.Generator | None = None
    ) -> dict[str, Tensor]:
        """Like `get_batch`, but only from rows whose flag is true.

        `where` names a boolean key with one element per row (e.g. SAC-MT's `start_state`), or is a bool mask [len]
        over the valid rows in insertion order. Indices are drawn as in `get_batch`.
        """
        self._check_count("get_batch_where", n)
        self._require_rows("get_batch_where")
        mask = self._where_mask(where)
        candidates = mask.nonzero().squeeze(1)
        if candidates.numel() == 0:
            raise ValueError("get_batch_where: no valid row is flagged true")
        choice = self._random_indices(candidates.numel(), (n,), generator)
        return self._gather(candidates[choice])

    def _where_mask(self, where: str | Tensor) -> Tensor:
        """A bool mask [len] on the storage device over the valid rows in insertion order."""
        if isinstance(where, str):
            if where not in self._storage:
                raise ValueError(f"get_batch_where: unknown key '{where}', stored keys are {self.keys()}")
            stored = self._storage[where]
            if stored.dtype != torch.bool or stored[0].numel() != 1:
                raise ValueError(
                    f"get_batch_where: key '{where}' must hold one bool per row, "
                    f"got dtype {stored.dtype} with row shape {tuple(stored.shape[1:])}"
                )
            # Only the flag column is read, and only at the valid slots: the other keys may be large.
            physical = self._physical(torch.arange(self._size))
            return stored[physical].reshape(self._size)
        if not isinstance(where, Tensor) or where.dtype != torch.bool or where.shape != (self._size,):
            raise ValueError(f"get_batch_where: where must be a key or a bool tensor of shape ({self._size},)")
        return where.to(self._device)

    def get_trajs(self, n: int, length: int, generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """n windows of `length` consecutive steps of one env each -> {key: [n, length, *row_shape]}.

        Window starts are uniform over the valid rows that leave room for the whole window, so a window never runs
        past the newest row into the oldest one (the ring's overwrite point). Episode ends are not respected.
        Start indices are drawn as in `get_batch`.
        """
        self._check_count("get_trajs", n)
        if not isinstance(length, int) or length <= 0:
            raise ValueError(f"get_trajs: length must be a positive int, got {length!r}")
        span = (length - 1) * self._interleave
        self._require_rows(f"get_trajs(length={length})", span + 1)
        first = self._random_indices(self._size - span, (n, 1), generator)
        logical = first + torch.arange(length, device=self._device) * self._interleave
        return self._gather(logical)

    def get_batch_back(self, n: int) -> dict[str, Tensor]:
        """The n most recently inserted rows, oldest first -> {key: [n, *row_shape]}."""
        self._check_count("get_batch_back", n)
        self._require_rows(f"get_batch_back({n})", n)
        return self._gather(torch.arange(self._size - n, self._size))

    def pop_front(self, n_rows: int) -> None:
        """Drop the n_rows oldest rows (e.g. to discard stale on-policy data)."""
        if not isinstance(n_rows, int) or not 0 <= n_rows <= self._size:
            raise ValueError(f"pop_front: n_rows must be an int in [0, {self._size}], got {n_rows!r}")
        self._start = (self._start + n_rows) % self._capacity
        self._size -= n_rows

    # ---------------------------------------------------------------- persistence

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue exactly where this buffer stopped (storage is shared, not copied)."""
        return {
            "capacity": self._capacity,
            "interleave": self._interleave,
            "device": str(self._device) if self._device is not None else None,
            "start": self._start,
            "size": self._size,
            "storage": dict(self._storage),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore rows and ring position; capacity and interleave must match this buffer."""
        if state["capacity"] != self._capacity or state["interleave"] != self._interleave:
            raise ValueError(
                f"load_state_dict: state has capacity={state['capacity']}, interleave={state['interleave']}; "
                f"this buffer has capacity={self._capacity}, interleave={self._interleave}"
            )
        storage = state["storage"]
        if self._device is None and storage:
            self._device = next(iter(storage.values())).device
        self._storage = {key: value.to(self._device, copy=True) for key, value in storage.items()}
        self._start = int(state["start"])
        self._size = int(state["size"])

    def save(self, path: str | os.PathLike) -> None:
        """Write the buffer to `path` atomically (a crash mid-save keeps the previous file)."""
        atomic_save(self.state_dict(), path)

    @classmethod
    def load(cls, path: str | os.PathLike, device: str | torch.device | None = None) -> "ReplayBuffer":
        """Read a saved buffer; `device` overrides the device it was saved from."""
        state = torch.load(path, map_location="cpu", weights_only=True)
        buffer = cls(state["capacity"], state["interleave"], device=device or state["device"])
        buffer.load_state_dict(state)
        return buffer
