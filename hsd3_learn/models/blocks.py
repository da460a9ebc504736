"""Network building blocks of HSD-3: distribution heads, D2RL trunks, fused double-Q critics and glue.

Every model in HSD-3 is put together from the small pieces below (the factory in
:mod:`hsd3_learn.models.factory` names the combinations):

- **Heads** turn an embedding into a ``torch.distributions`` object. Continuous actions use a Gaussian squashed by
  ``tanh`` (SAC, Haarnoja et al. 2018, appendix C):

  .. math:: u \\sim \\mathcal N(\\mu, \\sigma^2),\\quad a = \\tanh u,\\quad
            \\log \\pi(a) = \\log \\mathcal N(u; \\mu, \\sigma^2) - \\log(1 - \\tanh^2 u)

  HSD-3's high level also needs a categorical head (the feature subset, pi_f) and one Gaussian head per subset
  (the subgoal, pi_g).
- **Trunks**: the D2RL skip network (Sinha et al. 2020) feeds the raw input into every hidden layer.
- **Critics**: two D2RL Q-functions fused into one module with grouped (block-diagonal) linear layers, so a
  double-Q evaluation is one batched matmul per layer. Its last layer starts at zero, so Q = 0 at the start.
- **Glue**: flatten a ``Dict`` observation, split the task index off an observation, expand (task, subgoal) into
  the outer product the HSD-3 critic reads, bilinear layers for task-conditioned ensembles, run modules in
  parallel, squeeze a trailing dimension.

Shapes use B batch, A action dims, H hidden width, K tasks/subsets/heads, G subgoal dims, D input features.

Differences from the original ``hucc.models.blocks``:

1. Log-probs of :class:`TanhNormal` are per dimension ``[B, A]`` (callers sum), as in hucc; ``.mean`` is
   ``tanh(mu)`` through a small subclass instead of a monkey-patched property.
2. ``GroupedLinear`` is a batched matmul (``torch.baddbmm``) over ``[K, D, H]`` weights rather than one
   block-diagonal matrix; the result is identical and it needs K times less memory.
3. Heads with several tasks accept the task as an index ``[B]`` or a one-hot ``[B, K]``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import gymnasium as gym
import torch
from torch import distributions as D
from torch import nn
from torch.nn import functional as F

from hsd3_learn.spaces import th_flatten

__all__ = [
    "BilinearSkipNetwork",
    "CategoricalFromEmbedding",
    "EinsumBilinear",
    "EmbedDiscreteSkill",
    "ExpandTaskSubgoal",
    "FlattenSpace",
    "GaussianFromEmbedding",
    "GaussianFromMuLogStd",
    "GroupedLinear",
    "MultiHeadGaussianFromEmbedding",
    "Parallel",
    "SkipDoubleQNetwork",
    "SkipNetwork",
    "SplitTaskInput",
    "SqueezeLastDim",
    "TanhNormal",
    "task_index",
]

LOG_STD_MIN = -5.0
LOG_STD_MAX = 2.0


# --------------------------------------------------------------------------------------------------------------
# Distribution heads


class TanhNormal(D.TransformedDistribution):
    """``tanh(u)`` with ``u ~ Normal(loc, scale)``; actions live in (-1, 1).

    ``log_prob`` is per dimension (same shape as the action), including the tanh correction. Use ``rsample()``
    for the reparameterised policy gradient; the transform caches the pre-tanh value of the last sample, so the
    log-prob of that sample is exact even where ``tanh`` saturates.
    """

    def __init__(self, loc: torch.Tensor, scale: torch.Tensor) -> None:
        super().__init__(D.Normal(loc, scale), [D.TanhTransform(cache_size=1)], validate_args=False)

    def expand(self, batch_shape: torch.Size, _instance: TanhNormal | None = None) -> TanhNormal:
        """The same distribution broadcast to ``batch_shape`` (e.g. to repeat a policy over K subsets)."""
        batch_shape = torch.Size(batch_shape)
        return TanhNormal(self.base_dist.loc.expand(batch_shape), self.base_dist.scale.expand(batch_shape))

    @property
    def loc(self) -> torch.Tensor:
        """Mean of the Gaussian before squashing, ``mu``."""
        return self.base_dist.loc

    @property
    def mean(self) -> torch.Tensor:
        """``tanh(mu)``: the deterministic action (not the true mean of the squashed distribution)."""
        return torch.tanh(self.base_dist.loc)


def _tanh_normal(mu: torch.Tensor, log_std: torch.Tensor, log_std_min: float, log_std_max: float) -> TanhNormal:
    return TanhNormal(mu, log_std.clamp(log_std_min, log_std_max).exp())


class GaussianFromEmbedding(nn.Module):
    """Embedding ``[B, D]`` -> :class:`TanhNormal` over ``[B, A]``, with separate mean and log-std layers.

    The log-std is clamped to ``[log_std_min, log_std_max]`` (hucc: [-5, 2]) so the policy can neither collapse
    to a point nor explode.
    """

    def __init__(self, n_in: int, n_out: int, log_std_min: float = LOG_STD_MIN, log_std_max: float = LOG_STD_MAX):
        super().__init__()
        self.mu = nn.Linear(n_in, n_out)
        self.log_std = nn.Linear(n_in, n_out)
        self.log_std_min = log_std_min
        self.log_std_max = log_std_max

    def forward(self, emb: torch.Tensor) -> TanhNormal:
        return _tanh_normal(self.mu(emb), self.log_std(emb), self.log_std_min, self.log_std_max)

    def extra_repr(self) -> str:
        return f"log_std_range=({self.log_std_min}, {self.log_std_max})"


class GaussianFromMuLogStd(nn.Module):
    """``[B, 2A]`` holding ``[mu, log_std]`` (e.g. from one linear layer) -> :class:`TanhNormal` over ``[B, A]``."""

    def __init__(self, log_std_min: float = LOG_STD_MIN, log_std_max: float = LOG_STD_MAX):
        super().__init__()
        self.log_std_min = log_std_min
        self.log_std_max = log_std_max

    def forward(self, mu_log_std: torch.Tensor) -> TanhNormal:
        if mu_log_std.shape[-1] % 2 != 0:
            raise ValueError(f"GaussianFromMuLogStd: last dim must be even (mu and log_std); got {mu_log_std.shape}")
        mu, log_std = mu_log_std.chunk(2, dim=-1)
        return _tanh_normal(mu, log_std, self.log_std_min, self.log_std_max)

    def extra_repr(self) -> str:
        return f"log_std_range=({self.log_std_min}, {self.log_std_max})"


class CategoricalFromEmbedding(nn.Module):
    """Embedding ``[B, D]`` -> ``Categorical`` over ``K`` choices (HSD-3's pi_f picks a feature subset)."""

    def __init__(self, n_in: int, n_out: int):
        super().__init__()
        self.logits = nn.Linear(n_in, n_out)

    def forward(self, emb: torch.Tensor) -> D.Categorical:
        return D.Categorical(logits=self.logits(emb))


def task_index(task: torch.Tensor, n_tasks: int | None = None) -> torch.Tensor:
    """A task given as an index (integer ``[B]`` or ``[B, 1]``) or a one-hot ``[B, K]`` -> an index ``[B]`` (int64)."""
    if not task.is_floating_point() and (task.ndim == 1 or (task.ndim == 2 and task.shape[1] == 1)):
        return task.reshape(-1).long()
    if task.ndim != 2:
        raise ValueError(f"task must be an index [B] (integer) or a one-hot [B, K]; got {tuple(task.shape)}")
    if n_tasks is not None and task.shape[1] != n_tasks:
        raise ValueError(f"task one-hot has {task.shape[1]} entries; expected {n_tasks}")
    return task.argmax(dim=-1)


class MultiHeadGaussianFromEmbedding(nn.Module):
    """Embedding ``[B, D]`` -> one :class:`TanhNormal` head per task (HSD-3's pi_g: one head per subset).

    ``forward(emb, task)`` returns the head of each row's task, ``[B, A]``; ``forward(emb)`` returns all heads,
    ``[B, K, A]``, which the exact expectation over subsets can use without repeating the batch.
    """

    def __init__(
        self,
        n_in: int,
        n_out: int,
        n_heads: int,
        log_std_min: float = LOG_STD_MIN,
        log_std_max: float = LOG_STD_MAX,
    ):
        super().__init__()
        self.n_out = n_out
        self.n_heads = n_heads
        self.mu = nn.Linear(n_in, n_heads * n_out)
        self.log_std = nn.Linear(n_in, n_heads * n_out)
        self.log_std_min = log_std_min
        self.log_std_max = log_std_max

    def forward(self, emb: torch.Tensor, task: torch.Tensor | None = None) -> TanhNormal:
        mu = self.mu(emb).view(-1, self.n_heads, self.n_out)
        log_std = self.log_std(emb).view(-1, self.n_heads, self.n_out)
        if task is not None:
            pick = task_index(task, self.n_heads).view(-1, 1, 1).expand(-1, 1, self.n_out)
            mu = mu.gather(1, pick).squeeze(1)
            log_std = log_std.gather(1, pick).squeeze(1)
        return _tanh_normal(mu, log_std, self.log_std_min, self.log_std_max)

    def extra_repr(self) -> str:
        return f"n_heads={self.n_heads}, n_out={self.n_out}, log_std_range=({self.log_std_min}, {self.log_std_max})"


# --------------------------------------------------------------------------------------------------------------
# Trunks and critics


class SkipNetwork(nn.Module):
    """D2RL trunk: ``x [B, D]`` -> ``[B, H]``; every layer after the first also sees the raw input.

    ``y_1 = relu(W_1 x)``, ``y_{l+1} = relu(W_{l+1} [y_l, x])``. The dense skips make deeper (4-layer) networks
    train well in RL (Sinha et al. 2020, "D2RL").
    """

    def __init__(self, n_in: int, n_hid: int, n_layers: int = 4):
        super().__init__()
        if n_layers < 1:
            raise ValueError(f"SkipNetwork needs n_layers >= 1; got {n_layers}")
        self.layers = nn.ModuleList(
            [nn.Linear(n_in, n_hid)] + [nn.Linear(n_in + n_hid, n_hid) for _ in range(n_layers - 1)]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.layers[0](x))
        for layer in self.layers[1:]:
            y = F.relu(layer(torch.cat([y, x], dim=-1)))
        return y


class GroupedLinear(nn.Module):
    """K independent linear layers applied at once: ``[B, K, D]`` -> ``[B, K, H]``.

    Equivalent to one linear layer with a block-diagonal weight; each group is initialised like ``nn.Linear``.
    """

    def __init__(self, n_in: int, n_out: int, groups: int):
        super().__init__()
        self.n_in, self.n_out, self.groups = n_in, n_out, groups
        bound = 1.0 / math.sqrt(n_in)
        self.weight = nn.Parameter(torch.empty(groups, n_in, n_out).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(groups, 1, n_out).uniform_(-bound, bound))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # [K, B, D] @ [K, D, H] + [K, 1, H] -> [K, B, H]
        return torch.baddbmm(self.bias, x.transpose(0, 1), self.weight).transpose(0, 1)

    def extra_repr(self) -> str:
        return f"in_features={self.n_in}, out_features={self.n_out}, groups={self.groups}"


class SkipDoubleQNetwork(nn.Module):
    """Several Q-functions fused into one module: ``x [B, D]`` -> ``[B, n_critics]`` (default 2: Q1, Q2).

    Each critic is a D2RL network (``skip=True``) or a plain ReLU MLP (``skip=False``) followed by a scalar
    output; the groups never mix. The output layer starts at exactly zero (weights and bias).
    """

    def __init__(self, n_in: int, n_hid: int, n_layers: int = 4, n_critics: int = 2, skip: bool = True):
        super().__init__()
        self.skip = skip
        self.n_critics = n_critics
        width_after_first = n_hid + n_in if skip else n_hid
        self.layers = nn.ModuleList(
            [GroupedLinear(n_in, n_hid, n_critics)]
            + [GroupedLinear(width_after_first, n_hid, n_critics) for _ in range(n_layers - 1)]
        )
        self.out = GroupedLinear(n_hid, 1, n_critics)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xs = x.unsqueeze(1).expand(-1, self.n_critics, -1)  # [B, K, D]
        y = F.relu(self.layers[0](xs))
        for layer in self.layers[1:]:
            y = F.relu(layer(torch.cat([y, xs], dim=-1) if self.skip else y))
        return self.out(y).squeeze(-1)

    def extra_repr(self) -> str:
        return f"n_critics={self.n_critics}, skip={self.skip}"


class EinsumBilinear(nn.Module):
    """Bilinear layer ``y_o = x1^T W_o x2 + b_o``: ``[B, D1]``, ``[B, D2]`` -> ``[B, H]``.

    With ``x2`` a one-hot task vector this is a separate linear layer per task (``W[:, :, k]``), which is how the
    Switching Ensemble baseline conditions its networks on the active ensemble member.
    """

    def __init__(self, n_in1: int, n_in2: int, n_out: int, bias: bool = True):
        super().__init__()
        bound = 1.0 / math.sqrt(n_in1)
        self.weight = nn.Parameter(torch.empty(n_out, n_in1, n_in2).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(n_out).uniform_(-bound, bound)) if bias else None

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        y = torch.einsum("bi,oij,bj->bo", x1, self.weight, x2)
        return y + self.bias if self.bias is not None else y

    def extra_repr(self) -> str:
        n_out, n_in1, n_in2 = self.weight.shape
        return f"in1_features={n_in1}, in2_features={n_in2}, out_features={n_out}, bias={self.bias is not None}"


class BilinearSkipNetwork(nn.Module):
    """D2RL trunk whose layers are bilinear in (features, task one-hot): ``[B, D]``, ``[B, K]`` -> ``[B, H]``."""

    def __init__(self, n_in: int, n_task: int, n_hid: int, n_layers: int = 4):
        super().__init__()
        self.layers = nn.ModuleList(
            [EinsumBilinear(n_in, n_task, n_hid)]
            + [EinsumBilinear(n_in + n_hid, n_task, n_hid) for _ in range(n_layers - 1)]
        )

    def forward(self, x: torch.Tensor, task: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.layers[0](x, task))
        for layer in self.layers[1:]:
            y = F.relu(layer(torch.cat([y, x], dim=-1), task))
        return y


# --------------------------------------------------------------------------------------------------------------
# Glue


class FlattenSpace(nn.Module):
    """A batch of values of a gymnasium space (``Dict`` included) -> ``[B, flatdim]``."""

    def __init__(self, space: gym.Space):
        super().__init__()
        self.space = space

    def forward(self, x: torch.Tensor | Mapping[str, torch.Tensor]) -> torch.Tensor:
        return th_flatten(self.space, x)

    def extra_repr(self) -> str:
        return f"space={self.space}"


class SplitTaskInput(nn.Module):
    """Dict observation -> (the observation without ``key``, the task index ``[B]``).

    HSD-3's subgoal policy must not see the subset as an input feature: the subset picks its output head.
    """

    def __init__(self, key: str = "task"):
        super().__init__()
        self.key = key

    def forward(self, obs: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        if self.key not in obs:
            raise ValueError(f"SplitTaskInput: observation has no {self.key!r} key; keys: {sorted(obs)}")
        rest = {k: v for k, v in obs.items() if k != self.key}
        return rest, task_index(obs[self.key])

    def extra_repr(self) -> str:
        return f"key={self.key!r}"


class ExpandTaskSubgoal(nn.Module):
    """HSD-3 critic input for the action: ``vec(onehot(task) ⊗ subgoal)``, ``[B]``/``[B, K]`` and ``[B, G]`` -> ``[B, K*G]``.

    Each subset writes its subgoal into its own slice, so one critic can tell "x = 0.5 under subset {x}" from
    "x = 0.5 under subset {x, z}".
    """

    def __init__(self, n_tasks: int, n_subgoal: int, task_key: str = "task", subgoal_key: str = "subgoal"):
        super().__init__()
        self.n_tasks, self.n_subgoal = n_tasks, n_subgoal
        self.task_key, self.subgoal_key = task_key, subgoal_key

    def forward(self, action: Mapping[str, torch.Tensor]) -> torch.Tensor:
        subgoal = action[self.subgoal_key]
        onehot = F.one_hot(task_index(action[self.task_key], self.n_tasks), self.n_tasks).to(subgoal.dtype)
        outer = onehot.unsqueeze(-1) * subgoal.unsqueeze(-2)  # [B, K, G]
        return outer.flatten(start_dim=1)

    def extra_repr(self) -> str:
        return f"n_tasks={self.n_tasks}, n_subgoal={self.n_subgoal}"


class EmbedDiscreteSkill(nn.Module):
    """Replace a one-hot skill ``obs[key]`` ``[B, K]`` by a learned continuous code ``tanh(W onehot)`` ``[B, E]``.

    DIAYN-C trains its policy on this code; afterwards the high level outputs the E-dim code directly.
    """

    def __init__(self, n_skills: int, n_out: int, key: str = "task"):
        super().__init__()
        self.key = key
        self.n_skills = n_skills
        self.embed = nn.Linear(n_skills, n_out, bias=False)

    def forward(self, obs: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        onehot = F.one_hot(task_index(obs[self.key], self.n_skills), self.n_skills).to(self.embed.weight.dtype)
        return {**obs, self.key: torch.tanh(self.embed(onehot))}

    def extra_repr(self) -> str:
        return f"key={self.key!r}"


class Parallel(nn.Module):
    """Apply several modules to the same input and return their outputs as a tuple."""

    def __init__(self, *modules: nn.Module):
        super().__init__()
        self.branches = nn.ModuleList(modules)

    def forward(self, *inputs: object) -> tuple:
        return tuple(branch(*inputs) for branch in self.branches)


class SqueezeLastDim(nn.Module):
    """``[..., 1]`` -> ``[...]`` (a single Q-value per row)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.squeeze(-1)
