"""HSD-3's high-level math as pure functions: the losses over a factorised action, subgoal translation, DynE sums.

HSD-3 (Gehring et al., "Hierarchical Skills for Efficient Exploration", NeurIPS 2021, arXiv:2110.10809, Sec. 4.2)
controls a frozen goal-reaching skill with a high-level SAC agent whose action is a pair: a feature subset f ~ pi_f
(categorical over K subsets) and a subgoal c_f ~ pi_g(.|s, f) (tanh-Gaussian, one head per subset, G dims of which
subset f uses |f|). Everything below is the algebra of that agent, on tensors, without networks, so that each piece
can be unit-tested and re-derived in a notebook. The equations (the numbering is this module's; hsd3-spec §4 states
them as hucc computes them):

    (E1) log pi_g(c|s,f) = sum_i m_fi log p_i / sum_i m_fi                     masked mean over f's active dims
    (E2) V(s) = sum_f pi_f(f|s) [Q(s,f,c_f) - alpha_c[f] log pi_g(c_f|s,f)] + alpha_d [H(pi_f(.|s)) - log K]
    (E3) L_pi = -V(s), with Q = min(Q1, Q2) of the online critic               pi_f and pi_g trained jointly
    (E4) y = R + gamma^(k+1) (1 - terminal) V(s'), with Q = min of the target critic
    (E5) L_alpha_c = sum_f pi_f(f|s) alpha_c[f] (-log pi_g(c_f|s,f) - H_c),   H_c = -factor_c (-1 per active dim)
    (E6) L_alpha_d = alpha_d (H(pi_f(.|s)) - H_d),                             H_d = factor_d log K (0.5 log K)
    (E7) goal = [backproject(c_f) (+ s for delta features) - s][task map] * mask,   twist differences wrapped
    (E8) R = sum_{j<=k} gamma^j r_{t+j},  k <= c - 1: the step before the next decision, or the first terminal step

(E2) is the exact expectation over subsets; the policy loss (E3) and the critic target (E4) share it through
:func:`expected_policy_terms`. The subset entropy bonus is relative to the uniform distribution, so it is never
positive. All batch losses are averaged over B.

**Subgoal layout.** A subgoal is a vector [G] indexed by *position*: the positions of subset f are ``subsets[f]``
(a list of ints < G), every other entry is ignored (masked to 0). Positions are task-map positions (the order of
the low-level ``task`` mask, hucc's ``task_map``); ``task_features[p]`` is the goal-space feature (index into the
raw features [F]) at position p. For the walker both are the identity and G = T = F = 7; for the humanoid T = 10
positions cover features 0, 2, 3, 4, 6-11, and G = T = 10 is enough. Back-projection first packs subset f's entries
to the front in the subset's order ([B, R], R = largest subset size, zero padded), as hucc does; row r of the
per-subset table ``psi_inv[f]`` then maps packed entry r to raw feature ``task_features[subsets[f][r]]``.

**DynE updates** (hucc's ``dyne_updates``, named after Whitney et al., ICLR 2020): a ring of the last ``interval``
steps of every env emits, once full, one transition per env step, starting at the oldest step (whatever its offset
in the action interval) and running to the next decision, so every step's state becomes a training state for the
high level.

Differences from the original ``hucc/agents/hsd3.py`` (``HiToLoInterface``, ``HSD3Agent``):

1. The subset expectation (E2) is one function used by both the policy loss and the target (hucc inlines it twice).
2. Only the exact expectation over subsets (``expectation_d: full``, the shipped default); hucc's sampled-subset
   estimator (``expectation_d: N``) is left out.
3. :func:`masked_log_prob` ignores masked dims even if their log-prob is not finite (hucc multiplies by the mask,
   so an infinite log-prob outside the subset would give NaN).
4. Front-packing gathers through a [K, R] position table instead of a Python loop over the batch (same result);
   hucc's ``delta_actions`` and ``mask_gsfeats`` options (off in every shipped config) are left out.
5. DynE transitions come from :class:`DyneStaging`, which stages ``interval`` steps and carries any per-step
   tensors along (hucc stages ``max(2, interval)`` rows of a ``ReplayBuffer``; the transitions are the same). The
   end of an episode by timeout is seen, as in hucc, through the next step being a decision (``time`` restarts at 0).

Kept from hucc although it looks odd: both temperature losses are linear in alpha = exp(log alpha), not in log alpha
(SB3's choice); the gradient differs by the positive factor alpha, so the direction is the same.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "BackprojectionTables",
    "DyneStaging",
    "DyneSums",
    "StagedTransition",
    "SubsetExpectation",
    "backproject_subgoal",
    "backprojection_tables",
    "critic_target",
    "desired_goal",
    "dyne_aggregate",
    "expected_policy_terms",
    "front_pack",
    "masked_log_prob",
    "policy_loss",
    "subgoal_temperature_loss",
    "subset_masks",
    "subset_temperature_loss",
    "update_bp_subgoal",
]


# ------------------------------------------------------------------------------------------------ subsets and masks


def _check_subsets(subsets: Sequence[Sequence[int]], n_dims: int) -> None:
    """One-line error unless ``subsets`` is a non-empty list of non-empty lists of distinct ints in [0, n_dims)."""
    if len(subsets) == 0:
        raise ValueError("subsets must be a non-empty list of position lists, e.g. [[0], [1, 2]]; got []")
    for subset in subsets:
        positions = [int(p) for p in subset]
        if not positions or len(set(positions)) != len(positions) or not all(0 <= p < n_dims for p in positions):
            raise ValueError(f"each subset must hold distinct positions in [0, {n_dims}); got {list(subset)!r}")


def subset_masks(subsets: Sequence[Sequence[int]], n_dims: int) -> Tensor:
    """Multi-hot masks [K, n_dims] (float32): row f has 1 at the positions of subset f (hucc's ``action_mask_hi``).

    With ``n_dims = G`` this masks subgoals; with ``n_dims = T`` it is the low-level ``task`` input of each subset.
    """
    _check_subsets(subsets, n_dims)
    masks = torch.zeros(len(subsets), n_dims)
    for f, subset in enumerate(subsets):
        masks[f, list(subset)] = 1.0
    return masks


def masked_log_prob(log_prob_per_dim: Tensor, mask: Tensor) -> Tensor:
    """(E1) Mean log-prob over the active dims of a subgoal: [..., G] with mask [..., G] (broadcastable) -> [...].

    pi_g has one Gaussian over all G dims, but only the subset's dims reach the low level, so only they count.
    Dividing by the number of active dims keeps subsets of different sizes on one scale, which is why the subgoal
    temperature's target is per dim. Masked dims are ignored even if their log-prob is inf or NaN. Every mask row
    needs at least one active dim (subsets are never empty).
    """
    if log_prob_per_dim.shape[-1:] != mask.shape[-1:]:
        raise ValueError(f"log_prob_per_dim {tuple(log_prob_per_dim.shape)} and mask {tuple(mask.shape)} "
                         "must agree in their last (subgoal) dim")
    active = mask != 0
    weighted = torch.where(active, log_prob_per_dim * mask, torch.zeros_like(log_prob_per_dim))
    return weighted.sum(dim=-1) / mask.sum(dim=-1)


# ---------------------------------------------------------------------------------------------------------- losses


class SubsetExpectation(NamedTuple):
    """The two parts of the soft value (E2) of a batch of states; ``value + entropy_bonus`` is V(s)."""

    value: Tensor  # [B] sum_f pi_f (Q_f - alpha_c[f] log pi_g(c_f|s,f))
    entropy_bonus: Tensor  # [B] alpha_d (H(pi_f) - log K), <= 0
    entropy: Tensor  # [B] H(pi_f(.|s)), for logging and the subset temperature


def expected_policy_terms(subset_probs: Tensor, q: Tensor, subgoal_log_probs: Tensor, alpha_c: Tensor,
                          alpha_d: Tensor | float) -> SubsetExpectation:
    """(E2) The exact expectation over subsets shared by the policy loss and the critic target.

    Every state is evaluated with *every* subset f and that subset's own sampled subgoal c_f, so the discrete
    choice needs no sampling or score-function gradient: gradients reach pi_f through ``subset_probs`` and pi_g
    through ``q`` and ``subgoal_log_probs`` (reparameterised samples). The temperatures are constants here
    (detached).

    Args:
        subset_probs: pi_f(f|s) [B, K].
        q: Q(s, f, c_f) [B, K], the minimum over the two critics.
        subgoal_log_probs: log pi_g(c_f|s, f) [B, K], masked means from :func:`masked_log_prob`.
        alpha_c: subgoal temperature of each subset [K].
        alpha_d: subset temperature (a scalar or 0-dim tensor).
    """
    if not (subset_probs.ndim == 2 and q.shape == subset_probs.shape == subgoal_log_probs.shape):
        raise ValueError(f"subset_probs, q and subgoal_log_probs must all be [B, K]; got {tuple(subset_probs.shape)}, "
                         f"{tuple(q.shape)}, {tuple(subgoal_log_probs.shape)}")
    n_subsets = subset_probs.shape[1]
    if alpha_c.shape != (n_subsets,):
        raise ValueError(f"alpha_c must be [K] = [{n_subsets}]; got {tuple(alpha_c.shape)}")
    alpha_c = alpha_c.detach()
    alpha_d = alpha_d.detach() if isinstance(alpha_d, Tensor) else torch.tensor(float(alpha_d))
    value = (subset_probs * (q - alpha_c * subgoal_log_probs)).sum(dim=-1)
    entropy = -torch.special.xlogy(subset_probs, subset_probs).sum(dim=-1)
    bonus = alpha_d * (entropy - math.log(n_subsets))
    return SubsetExpectation(value=value, entropy_bonus=bonus, entropy=entropy)


def policy_loss(subset_probs: Tensor, q: Tensor, subgoal_log_probs: Tensor, alpha_c: Tensor,
                alpha_d: Tensor | float) -> tuple[Tensor, dict[str, Tensor]]:
    """(E3) Joint loss of pi_f and pi_g, averaged over B:

        L = sum_f pi_f(f|s) (alpha_c[f] log pi_g(c_f|s,f) - Q(s,f,c_f)) - alpha_d (H(pi_f(.|s)) - log K)

    Arguments as in :func:`expected_policy_terms` (``q`` from the online critic with frozen weights). Returns the
    scalar loss and detached 0-dim logging values: ``policy_loss``, ``q`` (E_f Q), ``subset_entropy`` (H(pi_f)) and
    ``subgoal_entropy`` (E_f of -log pi_g, per active dim).
    """
    terms = expected_policy_terms(subset_probs, q, subgoal_log_probs, alpha_c, alpha_d)
    loss = -(terms.value + terms.entropy_bonus).mean()
    with torch.no_grad():
        info = {
            "policy_loss": loss.detach(),
            "q": (subset_probs * q).sum(dim=-1).mean(),
            "subset_entropy": terms.entropy.mean(),
            "subgoal_entropy": -(subset_probs * subgoal_log_probs).sum(dim=-1).mean(),
        }
    return loss, info


def critic_target(reward: Tensor, discount: Tensor, next_terms: SubsetExpectation) -> Tensor:
    """(E4) Soft TD target [B] of the high-level critic; no gradient flows through it.

    Args:
        reward: the discounted reward sum of the transition [B] (DynE, :func:`dyne_aggregate`).
        discount: gamma^(k+1) (1 - terminal) [B]; 0 after a terminal, not after a timeout.
        next_terms: :func:`expected_policy_terms` at the next state, with the *target* critic's Q and fresh
            actions from the current policies.
    """
    if reward.ndim != 1 or discount.shape != reward.shape or next_terms.value.shape != reward.shape:
        raise ValueError(f"reward, discount and next_terms must all be [B]; got {tuple(reward.shape)}, "
                         f"{tuple(discount.shape)}, {tuple(next_terms.value.shape)}")
    return (reward + discount * (next_terms.value + next_terms.entropy_bonus)).detach()


def subgoal_temperature_loss(log_alpha_c: Tensor, subgoal_log_probs: Tensor, subset_probs: Tensor,
                             target_entropy_factor: float = 1.0) -> tuple[Tensor, dict[str, Tensor]]:
    """(E5) Loss of the per-subset subgoal temperatures alpha_c = exp(log_alpha_c) [K].

        L = 1/B sum_b sum_f pi_f(f|s_b) alpha_c[f] (-log pi_g(c_f|s_b,f) - H_c),   H_c = -target_entropy_factor

    ``subgoal_log_probs`` [B, K] are the masked *means* of (E1), so the target is per active dim: a subset with |f|
    dims aims at a summed entropy of -factor * |f| (hucc's "-1 per active dim"). Each alpha_c[f] is weighted by how
    often pi_f picks f, so a subset the policy never uses keeps its temperature. The gradient w.r.t. alpha_c[f] is
    negative when the entropy is below the target, so gradient descent raises alpha_c[f] then. Inputs other than
    ``log_alpha_c`` are detached. Info: ``alpha_c`` (mean over K), ``alpha_c_loss``.
    """
    if subgoal_log_probs.ndim != 2 or subset_probs.shape != subgoal_log_probs.shape:
        raise ValueError(f"subgoal_log_probs and subset_probs must both be [B, K]; got "
                         f"{tuple(subgoal_log_probs.shape)} and {tuple(subset_probs.shape)}")
    if log_alpha_c.shape != subgoal_log_probs.shape[1:]:
        raise ValueError(f"log_alpha_c must be [K] = [{subgoal_log_probs.shape[1]}]; got {tuple(log_alpha_c.shape)}")
    entropy_gap = -subgoal_log_probs.detach() + target_entropy_factor  # -log pi_g - H_c
    loss = (subset_probs.detach() * log_alpha_c.exp() * entropy_gap).sum(dim=-1).mean()
    return loss, {"alpha_c": log_alpha_c.detach().exp().mean(), "alpha_c_loss": loss.detach()}


def subset_temperature_loss(log_alpha_d: Tensor, subset_entropy: Tensor, n_subsets: int,
                            target_entropy_factor: float = 0.5) -> tuple[Tensor, dict[str, Tensor]]:
    """(E6) Loss of the subset temperature alpha_d = exp(log_alpha_d) (a 0-dim tensor).

        L = alpha_d (1/B sum_b H(pi_f(.|s_b)) - H_d),   H_d = target_entropy_factor * log K

    ``subset_entropy`` [B] is H(pi_f) per state (:attr:`SubsetExpectation.entropy`), detached here. Gradient descent
    raises alpha_d while the mean entropy is below the target. Info: ``alpha_d``, ``alpha_d_loss``.
    """
    if log_alpha_d.ndim != 0 or subset_entropy.ndim != 1:
        raise ValueError(f"log_alpha_d must be 0-dim and subset_entropy [B]; got {tuple(log_alpha_d.shape)} and "
                         f"{tuple(subset_entropy.shape)}")
    if n_subsets < 1:
        raise ValueError(f"n_subsets must be >= 1; got {n_subsets}")
    target = target_entropy_factor * math.log(n_subsets)
    loss = log_alpha_d.exp() * (subset_entropy.detach().mean() - target)
    return loss, {"alpha_d": log_alpha_d.detach().exp(), "alpha_d_loss": loss.detach()}


# ------------------------------------------------------------------------------------------- subgoal translation


class BackprojectionTables(NamedTuple):
    """Per-subset tables that turn a normalised subgoal into raw goal features (see "Subgoal layout" above)."""

    positions: Tensor  # [K, R] long: subgoal position of subset f's r-th feature; -1 pads short subsets
    psi_inv: Tensor  # [K, R, F]: row r is e_{feature} / psi[feature] for that entry, zero rows for padding
    offset_inv: Tensor  # [F]: -offset / psi, so that raw = g / psi + offset_inv


def backprojection_tables(subsets: Sequence[Sequence[int]], task_features: Sequence[int],
                          psi: Sequence[float] | np.ndarray, offset: Sequence[float] | np.ndarray,
                          dtype: torch.dtype = torch.float32) -> BackprojectionTables:
    """Build :class:`BackprojectionTables` for ``subsets`` (lists of positions, see the module docstring).

    ``psi`` and ``offset`` [F] are the goal space's normalisation (``GoalSpace.psi``/``.offset``: proj(s) =
    psi * s + offset maps [min, max] to [-1, 1]); ``task_features`` [T] gives the raw feature at each position.
    """
    psi_arr, offset_arr = np.asarray(psi, dtype=np.float64), np.asarray(offset, dtype=np.float64)
    n_features = psi_arr.shape[0]
    if psi_arr.shape != (n_features,) or offset_arr.shape != psi_arr.shape or np.any(psi_arr == 0):
        raise ValueError(f"psi and offset must be [F] with psi != 0; got {psi_arr.shape} and {offset_arr.shape}")
    if not all(0 <= int(f) < n_features for f in task_features):
        raise ValueError(f"task_features must be feature indices in [0, {n_features}); got {list(task_features)!r}")
    _check_subsets(subsets, len(task_features))
    max_rank = max(len(s) for s in subsets)
    positions = torch.full((len(subsets), max_rank), -1, dtype=torch.long)
    psi_inv = torch.zeros(len(subsets), max_rank, n_features, dtype=torch.float64)
    for f, subset in enumerate(subsets):
        for r, position in enumerate(subset):
            feature = int(task_features[position])
            positions[f, r] = int(position)
            psi_inv[f, r, feature] = 1.0 / psi_arr[feature]
    offset_inv = torch.from_numpy(-offset_arr / psi_arr)
    return BackprojectionTables(positions, psi_inv.to(dtype), offset_inv.to(dtype))


def front_pack(subgoal: Tensor, subset: Tensor, positions: Tensor) -> Tensor:
    """Move each row's subset entries to the front: subgoal [B, G], subset [B] (long), positions [K, R] -> [B, R].

    Entry r of row b is ``subgoal[b, positions[subset[b], r]]``, 0 where the subset has fewer than R features.
    """
    if subgoal.ndim != 2 or subset.shape != subgoal.shape[:1] or positions.ndim != 2:
        raise ValueError(f"need subgoal [B, G], subset [B] and positions [K, R]; got {tuple(subgoal.shape)}, "
                         f"{tuple(subset.shape)}, {tuple(positions.shape)}")
    row_positions = positions.to(subgoal.device)[subset.long()]  # [B, R]
    valid = row_positions >= 0
    packed = subgoal.gather(1, row_positions.clamp(min=0))
    return torch.where(valid, packed, torch.zeros_like(packed))


def backproject_subgoal(subgoal: Tensor, subset: Tensor, positions: Tensor, psi_inv: Tensor, offset_inv: Tensor,
                        current_features: Tensor, delta_features: Sequence[int]) -> Tensor:
    """(E7, first half) Normalised subgoals [B, G] in [-1, 1] of subsets [B] -> absolute raw goal features [B, F].

    The subset's entries are front-packed (:func:`front_pack`), mapped through ``psi_inv[subset]`` [B, R, F] and
    shifted by ``offset_inv`` [F], so -1 and +1 land on the feature's [min, max]. Delta features (root x, y) are
    goals relative to where the robot is: their current raw value ``current_features`` [B, F] is added. Features
    outside the subset come out as their range midpoint (``offset_inv``) and are masked later.
    """
    if current_features.ndim != 2 or current_features.shape[0] != subgoal.shape[0]:
        raise ValueError(f"current_features must be [B, F] with B = {subgoal.shape[0]}; got "
                         f"{tuple(current_features.shape)}")
    if psi_inv.shape[:2] != positions.shape or psi_inv.shape[2:] != current_features.shape[1:]:
        raise ValueError(f"psi_inv must be [K, R, F] = {tuple(positions.shape) + tuple(current_features.shape[1:])}; "
                         f"got {tuple(psi_inv.shape)}")
    packed = front_pack(subgoal, subset, positions)  # [B, R]
    goal = torch.einsum("br,brf->bf", packed, psi_inv.to(packed)[subset.long()]) + offset_inv.to(packed)
    delta = list(delta_features)
    if delta:
        goal[:, delta] = goal[:, delta] + current_features[:, delta]
    return goal


def _wrap_angle(angle: Tensor) -> Tensor:
    """Angles wrapped to [-pi, pi)."""
    return torch.remainder(angle + math.pi, 2 * math.pi) - math.pi


def _twist_positions(task_features: Sequence[int], twist_features: Sequence[int]) -> list[int]:
    """Positions p whose feature ``task_features[p]`` is a twist (an angle whose differences wrap)."""
    twists = {int(f) for f in twist_features}
    return [p for p, f in enumerate(task_features) if int(f) in twists]


def desired_goal(backprojected: Tensor, current_features: Tensor, task_features: Sequence[int], mask: Tensor,
                 twist_features: Sequence[int] = ()) -> Tensor:
    """(E7, second half) The low level's ``desired_goal`` [B, T]: what is left to go, in raw units, over the task map.

        goal[b, p] = (backprojected - current)[b, task_features[p]] * mask[b, p],  twist entries wrapped to [-pi, pi)

    Args:
        backprojected: absolute raw goals [B, F] from :func:`backproject_subgoal`.
        current_features: raw goal-space features now [B, F].
        task_features: the raw feature at each position [T].
        mask: the chosen subset's task mask [B, T] (rows of :func:`subset_masks` with ``n_dims = T``).
        twist_features: raw feature indices of angles (humanoid: 3), matched through ``task_features``.
    """
    if backprojected.shape != current_features.shape or mask.shape != (backprojected.shape[0], len(task_features)):
        raise ValueError(f"need backprojected and current_features [B, F] and mask [B, T={len(task_features)}]; got "
                         f"{tuple(backprojected.shape)}, {tuple(current_features.shape)}, {tuple(mask.shape)}")
    index = torch.as_tensor(list(task_features), dtype=torch.long, device=backprojected.device)
    to_go = (backprojected - current_features)[:, index]
    twist = _twist_positions(task_features, twist_features)
    if twist:
        to_go[:, twist] = _wrap_angle(to_go[:, twist])
    return to_go * mask


def update_bp_subgoal(prev_features: Tensor, now_features: Tensor, goal: Tensor, mask: Tensor,
                      task_features: Sequence[int], twist_features: Sequence[int] = ()) -> Tensor:
    """Carry a ``desired_goal`` [B, T] one step forward inside the action interval, keeping its absolute target.

        goal <- ((s_prev - s_now)[task_features] + goal) * mask,   twist entries wrapped

    The low level sees the goal relative to the current state; the high level chose an absolute target, so s + g
    stays constant while the robot moves. ``prev_features``/``now_features`` are raw features [B, F], ``mask``
    [B, T] the subset's task mask.
    """
    if prev_features.shape != now_features.shape or goal.shape != mask.shape or \
            goal.shape != (prev_features.shape[0], len(task_features)):
        raise ValueError(f"need prev/now features [B, F] and goal, mask [B, T={len(task_features)}]; got "
                         f"{tuple(prev_features.shape)}, {tuple(now_features.shape)}, {tuple(goal.shape)}, "
                         f"{tuple(mask.shape)}")
    index = torch.as_tensor(list(task_features), dtype=torch.long, device=goal.device)
    updated = (prev_features - now_features)[:, index] + goal
    twist = _twist_positions(task_features, twist_features)
    if twist:
        updated[:, twist] = _wrap_angle(updated[:, twist])
    return updated * mask


# ------------------------------------------------------------------------------------------ DynE dense transitions


class DyneSums(NamedTuple):
    """What one staged window contributes to the transition starting at its first step (per env, [N])."""

    reward: Tensor  # [N] sum_{j<=last} gamma^j r_j
    discount: Tensor  # [N] gamma^(last+1), 0 if step ``last`` was terminal
    last: Tensor  # [N] long: window row of the last step summed; its next observation is the bootstrap state


def dyne_aggregate(rewards: Tensor, terminals: Tensor, decisions: Tensor, gamma: float) -> DyneSums:
    """(E8) n-step reward and discount of the transition that starts at row 0 of a window of T steps.

    Row 0 is any step of an action interval. The transition runs while the same high-level action is in force:
    it stops at the last step before the next *decision* (``decisions[j]``: the high level chose anew at step j;
    the first step of every episode is one, so a timeout also ends the sum), at the first terminal, or at row T-1.
    With last step k: reward = sum_{j<=k} gamma^j r_j, discount = gamma^(k+1), or 0 if step k was terminal (a
    timeout is not terminal: its final observation is bootstrapped from). ``decisions[0]`` is not read.

    Args:
        rewards: r [T, N] (T = the action interval in HSD-3, N envs).
        terminals: [T, N] bool, true where the episode ended in a terminal state (a fall), not a timeout.
        decisions: [T, N] bool, true where the high level picked a new action at that step.
        gamma: per-step discount in [0, 1].
    """
    if rewards.ndim != 2 or rewards.shape[0] < 1 or terminals.shape != rewards.shape or \
            decisions.shape != rewards.shape:
        raise ValueError(f"rewards, terminals and decisions must all be [T, N] with T >= 1; got "
                         f"{tuple(rewards.shape)}, {tuple(terminals.shape)}, {tuple(decisions.shape)}")
    if not 0.0 <= gamma <= 1.0:
        raise ValueError(f"gamma must be in [0, 1]; got {gamma}")
    n_rows = rewards.shape[0]
    terminals = terminals.bool()
    ends = terminals.clone()  # ends[j]: step j is the last one of this transition
    ends[:-1] |= decisions[1:].bool()
    ends[-1] = True
    last = (ends.long().cumsum(dim=0) == 0).sum(dim=0)  # rows before the first end = index of the first end
    rows = torch.arange(n_rows, device=rewards.device)
    powers = torch.pow(gamma, rows.to(rewards.dtype))
    included = rows[:, None] <= last[None, :]
    reward = torch.where(included, rewards * powers[:, None], torch.zeros_like(rewards)).sum(dim=0)
    ended_terminal = terminals.gather(0, last[None, :]).squeeze(0)
    discount = torch.pow(gamma, (last + 1).to(rewards.dtype)) * (~ended_terminal).to(rewards.dtype)
    return DyneSums(reward=reward, discount=discount, last=last)


class StagedTransition(NamedTuple):
    """One DynE transition per env, emitted by :meth:`DyneStaging.push` (steps counted by push, from 0)."""

    start: int  # the step the transition starts at (the same for every env)
    last: Tensor  # [N] long: the last step summed, per env; its next observation is the bootstrap state
    reward: Tensor  # [N] discounted reward sum
    discount: Tensor  # [N] gamma^(last - start + 1), 0 after a terminal
    first: dict[str, Tensor]  # the tensors pushed at step ``start``, e.g. obs (with time = offset) and action
    final: dict[str, Tensor]  # per env n, the tensors pushed at step ``last[n]``, e.g. next_obs


class DyneStaging:
    """Ring of the last ``interval`` env steps of ``num_envs`` envs that emits one DynE transition per step.

    Call :meth:`push` once per env step with the reward, the terminal flag, whether the high level decided at this
    step, and any per-step tensors to carry along (``obs``, ``action``, ``next_obs``: [N, ...] each). After the
    first ``interval - 1`` steps every push returns the transition starting at the oldest staged step, summed by
    :func:`dyne_aggregate`; the oldest step is then dropped. With interval c the transition of step t is complete
    by step t + c - 1 because a decision (or an episode end) comes at most c steps after it.
    """

    def __init__(self, num_envs: int, interval: int, gamma: float) -> None:
        if num_envs < 1 or interval < 1:
            raise ValueError(f"num_envs and interval must be >= 1; got num_envs={num_envs}, interval={interval}")
        if not 0.0 <= gamma <= 1.0:
            raise ValueError(f"gamma must be in [0, 1]; got {gamma}")
        self.num_envs, self.interval, self.gamma = num_envs, interval, float(gamma)
        self.n_steps = 0  # steps pushed so far
        self._rows: dict[str, Tensor] = {}  # name -> [interval, N, ...]; reward, terminal, decision and data

    def push(self, reward: Tensor, terminal: Tensor, decision: Tensor, **data: Tensor) -> StagedTransition | None:
        """Stage one step: reward, terminal, decision [N] (+ data [N, ...]); return a transition once full."""
        step = {"reward": reward, "terminal": terminal.bool(), "decision": decision.bool(), **data}
        self._store(step)
        self.n_steps += 1
        if self.n_steps < self.interval:
            return None
        start = self.n_steps - self.interval
        slots = (start + torch.arange(self.interval)) % self.interval  # oldest first
        slots = slots.to(reward.device)
        window = {name: rows[slots] for name, rows in self._rows.items()}
        sums = dyne_aggregate(window["reward"], window["terminal"], window["decision"], self.gamma)
        envs = torch.arange(self.num_envs, device=reward.device)
        first = {name: window[name][0] for name in data}
        final = {name: window[name][sums.last, envs] for name in data}
        return StagedTransition(start=start, last=start + sums.last, reward=sums.reward, discount=sums.discount,
                                first=first, final=final)

    def _store(self, step: dict[str, Tensor]) -> None:
        """Write one step's tensors [N, ...] into their ring slot, allocating the rings on the first push."""
        if self._rows and set(step) != set(self._rows):
            raise ValueError(f"push the same tensors every step; staged {sorted(self._rows)}, got {sorted(step)}")
        for name, value in step.items():
            if value.shape[:1] != (self.num_envs,):
                raise ValueError(f"{name} must have num_envs = {self.num_envs} rows; got shape {tuple(value.shape)}")
            if name not in self._rows:
                self._rows[name] = torch.zeros((self.interval, *value.shape), dtype=value.dtype, device=value.device)
            elif self._rows[name].shape[1:] != value.shape:
                raise ValueError(f"{name} changed shape from {tuple(self._rows[name].shape[1:])} to "
                                 f"{tuple(value.shape)}")
            self._rows[name][self.n_steps % self.interval] = value.detach()
