"""SimHash state counting (Tang et al. 2017, "#Exploration") for the unique-states diagnostic.

Continuous states are never visited twice exactly, so #Exploration counts *hash codes*: a fixed Gaussian projection A
[K, D] maps a state x to the K-bit code sign(A x), and nearby states share a code. Each code is counted in several
hash tables of prime size (code mod p); a count is the minimum over tables, which undoes most collisions.
In HSD-3 (hucc, `dump_state_counts > 0`) this is only a diagnostic: the agent logs `Train/UniqueStates` to see how
much of the state space it reaches. It is not used as an exploration bonus.

Deliberate differences from the original hucc `HashingCountReward`:
- A bit is 1 where (A x) > 0, else 0, and a code's bucket is sum_j bit_j * (2^j mod p) mod p in int64, i.e. exactly
  code mod p (hucc multiplied sign() values in {-1, 0, 1} by float32 weights, whose sums above 2^24 are rounded).
- `inc` counts a state once per occurrence in the batch (hucc's indexed `+= 1` counted repeats in a batch once),
  so a batched `inc` equals one-at-a-time `inc`.
- Counts are int64 (hucc's float32 tables stop counting exactly at 2^24).
- The projection comes from a seeded generator, and saving goes through `state_dict` instead of pickling `__dict__`.
- The count-based bonus (`predict`) is left out, since HSD-3 never uses it; `unique_states` is provided instead.
"""

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

__all__ = ["HashingCounter"]

DEFAULT_BUCKET_SIZES = (999931, 999953, 999959, 999961, 999979, 999983)


class HashingCounter:
    """Approximate visit counts of states via SimHash codes in T hash tables."""

    def __init__(
        self,
        obs_dim: int,
        key_dim: int = 32,
        bucket_sizes: Sequence[int] | None = None,
        seed: int = 0,
        device: str | torch.device | None = None,
    ) -> None:
        """The projection A [key_dim, obs_dim] is drawn from N(0, 1) with `seed`, so equal seeds hash alike."""
        if not isinstance(obs_dim, int) or obs_dim <= 0:
            raise ValueError(f"obs_dim must be a positive int, got {obs_dim!r}")
        if not isinstance(key_dim, int) or key_dim <= 0:
            raise ValueError(f"key_dim must be a positive int, got {key_dim!r}")
        sizes = tuple(DEFAULT_BUCKET_SIZES if bucket_sizes is None else bucket_sizes)
        if len(sizes) == 0 or any(not isinstance(p, int) or p <= 0 for p in sizes):
            raise ValueError(f"bucket_sizes must be a non-empty sequence of positive ints, got {bucket_sizes!r}")
        self._obs_dim = obs_dim
        self._bucket_sizes = sizes
        self._device = torch.device(device if device is not None else "cpu")
        generator = torch.Generator().manual_seed(seed)
        self._projection = torch.randn(key_dim, obs_dim, generator=generator).to(self._device)
        # bit_weights[j, t] = 2^j mod p_t, so sum_j bit_j * bit_weights[j, t] = code mod p_t (after one more mod).
        weights = [[pow(2, j, p) for p in sizes] for j in range(key_dim)]
        self._bit_weights = torch.tensor(weights, dtype=torch.int64, device=self._device)
        self._moduli = torch.tensor(sizes, dtype=torch.int64, device=self._device)
        self._counts = torch.zeros(len(sizes), max(sizes), dtype=torch.int64, device=self._device)

    @property
    def obs_dim(self) -> int:
        """Length D of the states this counter hashes."""
        return self._obs_dim

    @property
    def key_dim(self) -> int:
        """Number of bits K in a SimHash code."""
        return self._projection.shape[0]

    @property
    def bucket_sizes(self) -> tuple[int, ...]:
        """Size of each hash table (primes by default)."""
        return self._bucket_sizes

    def _buckets(self, obs: Tensor) -> Tensor:
        """States [B, D] -> bucket index of each state's code in each table [B, T]."""
        if not isinstance(obs, Tensor) or obs.dim() != 2 or obs.shape[1] != self._obs_dim:
            shape = tuple(obs.shape) if isinstance(obs, Tensor) else type(obs).__name__
            raise ValueError(f"obs must be a tensor of shape [B, {self._obs_dim}], got {shape}")
        projected = obs.to(self._device, self._projection.dtype) @ self._projection.T  # [B, K]
        bits = (projected > 0).long()  # [B, K]
        weighted = (bits.unsqueeze(2) * self._bit_weights).sum(dim=1)  # [B, T]
        return weighted % self._moduli

    def inc(self, obs: Tensor) -> None:
        """Count one visit for every row of obs [B, D] (repeated rows count repeatedly)."""
        buckets = self._buckets(obs)
        tables = torch.arange(len(self._bucket_sizes), device=self._device).expand_as(buckets)
        ones = torch.ones_like(buckets)
        self._counts.index_put_((tables, buckets), ones, accumulate=True)

    def count(self, obs: Tensor) -> Tensor:
        """Estimated visit counts [B] (int64) of the states obs [B, D]: the minimum over tables."""
        buckets = self._buckets(obs)
        tables = torch.arange(len(self._bucket_sizes), device=self._device)
        return self._counts[tables, buckets].min(dim=1).values

    def unique_states(self) -> int:
        """Estimated number of distinct codes seen: the non-empty buckets of the first table.

        Codes that collide in that table are merged, so this is a lower bound (tight while it is far below p_0).
        """
        return int((self._counts[0] > 0).sum())

    def state_dict(self) -> dict[str, Any]:
        """Projection and counts (tensors shared, not copied)."""
        return {"projection": self._projection, "bucket_sizes": list(self._bucket_sizes), "counts": self._counts}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore projection and counts saved from a counter of the same obs_dim, key_dim and bucket_sizes."""
        projection, counts = state["projection"], state["counts"]
        if tuple(projection.shape) != tuple(self._projection.shape):
            raise ValueError(
                f"load_state_dict: projection shape {tuple(projection.shape)} does not match "
                f"[key_dim, obs_dim] = {tuple(self._projection.shape)}"
            )
        if tuple(state["bucket_sizes"]) != self._bucket_sizes or counts.shape != self._counts.shape:
            raise ValueError(
                f"load_state_dict: bucket_sizes {list(state['bucket_sizes'])} do not match {list(self._bucket_sizes)}"
            )
        self._projection = projection.to(self._device, torch.float32, copy=True)
        self._counts = counts.to(self._device, torch.int64, copy=True)
