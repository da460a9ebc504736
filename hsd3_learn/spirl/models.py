"""SPiRL's skill models: a skill VAE over H-step action windows plus a learned skill prior p(z | s_0).

SPiRL (Pertsch et al., CoRL 2020) learns skills offline from task-agnostic walking data before any RL: an
encoder q(z | window) compresses H consecutive actions into a latent skill z (nz dims), a decoder turns z back
into actions, and a prior network p(z | s_0) learns which skills the data used in state s_0. The RL phase then
acts in z-space (one z every H steps) and is regularised towards the prior (spirl-spec sections 2-4). Three
variants share the prior and the encoder's shape and differ in the decoder:

- :class:`SPiRLModel` (v1, ``"spirl"``): an autoregressive LSTM decodes an open-loop plan of H actions from z
  alone (step input ``[a_{t-1}^pred, z]``, learned initial input and hidden state).
- :class:`SPiRLClModel` (SPiRL-cl, ``"spirl_cl"``): a closed-loop MLP ``a_t = dec(s_t, z)`` applied at every step,
  trained with the dataset's states (teacher forcing); its encoder reads ``(a_t, s_t)`` per step.
- :class:`SkillCriticModel` (Skill-Critic, ``"skill_critic"``): a time-indexed closed-loop MLP
  ``(mu_t, log_std_t) = dec(s_t, z, onehot(k))``, k = 0..H-1, so the low level knows how far into the skill it is.

Offline loss of one batch of windows (states [B, H+1, S], actions [B, H, A]), z ~ q reparameterised::

    total = rec + beta * KL(q || N(0, I)) + prior_loss
    rec = 0.5 * mean_{B,H,A} (dec(z) - a)^2             (unit-variance Gaussian NLL up to a constant)
    KL  = mean_{B, nz} KL_analytic                      (per latent dim, not summed)
    prior_loss = mean_{B, nz} -log p(z.detach() | s_0)  ("nll", default) or KL(q.detach() || p) ("kl")

Every term is a per-element mean, as in the original (its ``Loss`` averaged every element). Hence beta weighs
the *per-dimension* KL against the *per-element* reconstruction: beta = sigma_a^2 * nz / (H * A) recovers the
true ELBO for actions with noise sigma_a (derivation at :class:`SkillPriorConfig`). The posterior is stop-gradient
for the prior either way, so the prior never shapes the skills. The RL phase instead needs the *full* KL between
policy and prior (summed over dims): :func:`mc_kl` returns that.

Decoded actions are not squashed (as the original); the environment or the agent clips them to [-1, 1].

**Skill model checkpoint** (:func:`save_skill_model`, :func:`load_skill_model`): one torch file, written
atomically and read with ``weights_only=True``::

    {"format": "hsd3_learn.spirl.skill_model/1", "kind": "spirl" | "spirl_cl" | "skill_critic",
     "config": asdict(SkillPriorConfig), "model": state_dict, "stats": None or {name: tensor or number}}

``stats`` carries whatever the caller needs to reuse the model (e.g. the observation normalisation).

Differences from ``clvrai/spirl`` (``SkillPriorMdl``, ``ClSPiRLMdl``) and ``CeHao1/skill-critic``
(``TimeIndexCDSPiRLMDL``):

1. LayerNorm instead of BatchNorm1d in every MLP (spirl-spec section 7): no running statistics, so a single state
   at RL time goes through exactly the function trained offline, and the HL policy copied from the prior needs no
   frozen BN statistics.
2. The encoder runs one ``nn.LSTM`` over the window instead of an ``LSTMCell`` loop: the same recurrence, one call.
3. The prior is one diagonal Gaussian network (no GMM or flow prior, no ensemble): every shipped config uses it.
4. v1 has no ``cond_decode`` option (decoder initial input and hidden state are learned constants), the setting
   of every v1 config; closed-loop conditioning is what SPiRL-cl and Skill-Critic are for.
5. Default beta 2e-3, not kitchen's 5e-4: the ELBO-consistent value for the walker's 6 actions and noise about
   0.1 (kitchen's 5e-4 over 9 actions corresponds to noise about 0.07).
6. Own checkpoint format (above), loaded strictly, with one-line errors for foreign or truncated files.

As in Skill-Critic's code, its encoder reads the actions only (SPiRL-cl's reads actions and states), and its
log-std head gets no offline gradient (only the mean enters the MSE): it stays at its initialisation, and the RL
phase adds a fixed ``manual_log_sigma`` offset to it.
"""

from __future__ import annotations

import math
import os
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor, nn
from torch import distributions as D
from torch.nn import functional as F

from hsd3_learn.agents.base import UNREADABLE_ERRORS
from hsd3_learn.utils import atomic_save

__all__ = ["LOG_SIGMA_MAX", "LOG_SIGMA_MIN", "MC_KL_LIMIT", "PRIOR_OBJECTIVES", "SKILL_MODELS", "SKILL_MODEL_FORMAT",
           "AutoregressiveDecoder", "Predictor", "SPiRLClModel", "SPiRLModel", "SkillCriticModel", "SkillEncoder",
           "SkillLossTerms", "SkillModel", "SkillModelCheckpoint", "SkillPriorConfig", "detached_gaussian",
           "diag_gaussian", "gaussian_from_params", "gaussian_kl", "kl_to_standard_normal", "load_skill_model",
           "make_skill_model", "mc_kl", "save_skill_model"]

#: log-sigma range of every Gaussian of the skill model (the original's clamp)
LOG_SIGMA_MIN = -10.0
LOG_SIGMA_MAX = 2.0
#: Monte-Carlo KL estimates are clamped to [-MC_KL_LIMIT, MC_KL_LIMIT] (the original's NaN guard)
MC_KL_LIMIT = 100.0
#: how the prior is fitted to the (detached) posterior
PRIOR_OBJECTIVES = ("nll", "kl")
#: the ``format`` entry of skill-model checkpoints
SKILL_MODEL_FORMAT = "hsd3_learn.spirl.skill_model/1"
LEAKY_SLOPE = 0.2


# --------------------------------------------------------------------------------------------------------------
# Building blocks


class Predictor(nn.Module):
    """SPiRL's MLP: Linear + LeakyReLU, ``n_layers`` blocks of Linear + LayerNorm + LeakyReLU(0.2), Linear head.

    ``n_layers + 2`` linear layers in all, xavier-normal weights and zero biases. The input layer has no norm and
    the head no activation, as in the original; an input layer without activation would just merge with the next.
    """

    def __init__(self, in_dim: int, out_dim: int, width: int, n_layers: int) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Linear(in_dim, width), nn.LeakyReLU(LEAKY_SLOPE)]
        for _ in range(n_layers):
            layers += [nn.Linear(width, width), nn.LayerNorm(width), nn.LeakyReLU(LEAKY_SLOPE)]
        layers.append(nn.Linear(width, out_dim))
        self.net = nn.Sequential(*layers)
        for layer in self.net:
            if isinstance(layer, nn.Linear):
                nn.init.xavier_normal_(layer.weight)
                nn.init.zeros_(layer.bias)

    def forward(self, x: Tensor) -> Tensor:
        """[..., in_dim] -> [..., out_dim]."""
        return self.net(x)


def diag_gaussian(mu: Tensor, log_sigma: Tensor) -> D.Independent:
    """Diagonal Gaussian over the last dim, log sigma clamped to [-10, 2] so sigma never under- or overflows."""
    sigma = log_sigma.clamp(LOG_SIGMA_MIN, LOG_SIGMA_MAX).exp()
    return D.Independent(D.Normal(mu, sigma), 1)


def gaussian_from_params(params: Tensor) -> D.Independent:
    """A network's [B, 2 nz] output read as ``(mu, log_sigma)`` halves -> Gaussian over [B, nz]."""
    mu, log_sigma = params.chunk(2, dim=-1)
    return diag_gaussian(mu, log_sigma)


def detached_gaussian(dist: D.Independent) -> D.Independent:
    """The same Gaussian cut from the graph: the target the prior is fitted to, without moving the encoder."""
    return D.Independent(D.Normal(dist.mean.detach(), dist.stddev.detach()), 1)


def kl_to_standard_normal(q: D.Independent) -> Tensor:
    """Analytic KL(q || N(0, I)) **averaged over the latent dims** (the original's scale): [B, nz] -> [B].

    Per dim: ``0.5 * (mu^2 + sigma^2 - 1) - log sigma``.
    """
    mu, sigma = q.mean, q.stddev
    return (0.5 * (mu.square() + sigma.square() - 1.0) - sigma.log()).mean(dim=-1)


def gaussian_kl(p: D.Independent, q: D.Independent) -> Tensor:
    """Analytic KL(p || q) of two diagonal Gaussians, averaged over the latent dims: [B]."""
    return D.kl_divergence(p.base_dist, q.base_dist).mean(dim=-1)


def mc_kl(p_dist: D.Distribution, q_dist: D.Distribution, n_samples: int) -> Tensor:
    """Monte-Carlo KL(p || q) = E_{x~p}[log p(x) - log q(x)] over ``n_samples`` draws, clamped to [-100, 100].

    The RL phase's divergence between policy and prior: works for any pair with the same event shape (e.g. a
    Gaussian against a Gaussian mixture), is the *full* KL over the event (log-probs sum over dims), and keeps the
    gradient to p's parameters when p can ``rsample``. Returns p's batch shape.
    """
    if isinstance(n_samples, bool) or not isinstance(n_samples, int) or n_samples < 1:
        raise ValueError(f"mc_kl needs n_samples >= 1 (an int); got {n_samples!r}")
    if p_dist.event_shape != q_dist.event_shape:
        raise ValueError(f"mc_kl needs distributions over the same event shape; got {tuple(p_dist.event_shape)} "
                         f"and {tuple(q_dist.event_shape)}")
    x = p_dist.rsample((n_samples,)) if p_dist.has_rsample else p_dist.sample((n_samples,))
    estimate = (p_dist.log_prob(x) - q_dist.log_prob(x)).mean(dim=0)
    return estimate.clamp(-MC_KL_LIMIT, MC_KL_LIMIT)


class SkillEncoder(nn.Module):
    """q(z | window): Linear embed -> LSTM -> Linear to ``nz_enc`` per step; the last step -> (mu, log sigma).

    Reading the whole window before emitting z is what makes z a summary of the skill, not of one step.
    """

    def __init__(self, in_dim: int, lstm_width: int, nz_enc: int, nz: int) -> None:
        super().__init__()
        self.embed = nn.Linear(in_dim, lstm_width)
        self.lstm = nn.LSTM(lstm_width, lstm_width, batch_first=True)
        self.output = nn.Linear(lstm_width, nz_enc)
        self.head = nn.Linear(nz_enc, 2 * nz)

    def forward(self, window: Tensor) -> Tensor:
        """[B, T, in_dim] -> [B, 2 nz] Gaussian parameters of q."""
        per_step, _ = self.lstm(self.embed(window))
        return self.head(self.output(per_step[:, -1]))


class AutoregressiveDecoder(nn.Module):
    """SPiRL v1's decoder: an LSTM cell fed ``[a_{t-1}^pred, z]`` that emits a_t, from learned initial values.

    It sees neither states nor dataset actions: the plan is open loop and depends on z alone.
    """

    def __init__(self, nz: int, action_dim: int, lstm_width: int) -> None:
        super().__init__()
        self.embed = nn.Linear(action_dim + nz, lstm_width)
        self.cell = nn.LSTMCell(lstm_width, lstm_width)
        self.output = nn.Linear(lstm_width, action_dim)
        self.initial_action = nn.Parameter(torch.zeros(action_dim))
        self.initial_hidden = nn.Parameter(torch.zeros(2, lstm_width))  # (h_0, c_0)

    def forward(self, z: Tensor, steps: int) -> Tensor:
        """z [B, nz] -> actions [B, steps, A]; each step feeds back the previous prediction."""
        batch = z.shape[0]
        action = self.initial_action.expand(batch, -1)
        h, c = (state.expand(batch, -1) for state in self.initial_hidden)
        actions = []
        for _ in range(steps):
            h, c = self.cell(self.embed(torch.cat([action, z], dim=-1)), (h, c))
            action = self.output(h)
            actions.append(action)
        return torch.stack(actions, dim=1)


# --------------------------------------------------------------------------------------------------------------
# Configuration


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


@dataclass
class SkillPriorConfig:
    """Sizes and loss weights of a skill model (kitchen values of spirl-spec section 2 unless noted).

    ``beta`` = 2e-3 (kitchen: 5e-4). The true ELBO for actions with Gaussian noise sigma_a, divided by the H * A
    action elements and multiplied by sigma_a^2, is ``rec + sigma_a^2 * nz / (H * A) * KL_mean``. For the
    walker (A = 6, H = nz = 10) and sigma_a = 0.1 that is 1.7e-3; kitchen's 5e-4 over 9 actions matches
    sigma_a = 0.07. Larger beta gives smoother, less precise skills; smaller lets q drift from N(0, I).
    """

    state_dim: int  # S, the walker's proprioceptive observation: 59
    action_dim: int  # A, the walker: 6
    H: int = 10  # skill length in env steps
    nz: int = 10  # latent skill dims
    nz_enc: int = 128  # per-step output of the encoder LSTM
    nz_mid: int = 128  # width of the closed-loop decoder MLPs
    n_layers: int = 5  # LayerNorm blocks of the decoder MLPs
    lstm_width: int = 128  # hidden size of the encoder and v1 decoder LSTMs
    prior_layers: int = 6  # LayerNorm blocks of the prior MLP (8 linears in all)
    prior_width: int = 128
    beta: float = 2e-3  # weight of KL(q || N(0, I)) (per-dim mean)
    prior_objective: str = "nll"  # "nll": -log p(z_q | s0); "kl": KL(q || p); posterior detached either way

    def __post_init__(self) -> None:
        """Reject sizes and weights that would fail later or silently train nothing."""
        for name in ("state_dim", "action_dim", "H", "nz", "nz_enc", "nz_mid", "lstm_width", "prior_width"):
            if not _is_int(getattr(self, name)) or getattr(self, name) < 1:
                raise ValueError(f"SkillPriorConfig.{name} must be a positive int; got {getattr(self, name)!r}")
        for name in ("n_layers", "prior_layers"):
            if not _is_int(getattr(self, name)) or getattr(self, name) < 0:
                raise ValueError(f"SkillPriorConfig.{name} must be a non-negative int; got {getattr(self, name)!r}")
        beta = self.beta
        if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not math.isfinite(beta) or beta < 0:
            raise ValueError(f"SkillPriorConfig.beta must be a finite number >= 0; got {beta!r}")
        if self.prior_objective not in PRIOR_OBJECTIVES:
            raise ValueError(f"SkillPriorConfig.prior_objective must be one of {', '.join(PRIOR_OBJECTIVES)}; "
                             f"got {self.prior_objective!r}")

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> SkillPriorConfig:
        """Build from a dict (a checkpoint, a Hydra node); unknown keys fail with the valid ones."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"SkillPriorConfig has no fields {unknown}; valid fields: {', '.join(sorted(known))}")
        missing = sorted({"state_dim", "action_dim"} - set(values))
        if missing:
            raise ValueError(f"SkillPriorConfig needs {missing} (the state and action sizes)")
        return cls(**values)


# --------------------------------------------------------------------------------------------------------------
# The models


class SkillLossTerms(NamedTuple):
    """The pieces of the offline loss of one batch (scalars), plus the posterior and its sample for inspection."""

    rec: Tensor  # 0.5 * mse
    kl: Tensor  # KL(q || N(0, I)), mean over batch and latent dims
    prior: Tensor  # prior loss (nll or kl), posterior detached
    mse: Tensor  # mean squared reconstruction error over batch x time x action dims
    posterior: D.Independent  # q(z | window), batch [B], event [nz]
    z: Tensor  # [B, nz] the reparameterised sample the decoder reconstructed from


def _check_last_dim(name: str, x: Tensor, size: int) -> None:
    if x.shape[-1] != size:
        raise ValueError(f"{name} must have {size} features in its last dim; got shape {tuple(x.shape)}")


class SkillModel(nn.Module, ABC):
    """What the three variants share: the encoder q(z | window), the prior p(z | s_0) and the offline loss.

    A subclass sets ``kind`` (its factory name), ``encoder_sees_states`` and builds ``self.decoder``; it
    implements :meth:`reconstruct`, the decoder's action means for a window given z.
    """

    kind: str
    encoder_sees_states: bool

    def __init__(self, cfg: SkillPriorConfig) -> None:
        super().__init__()
        if not isinstance(cfg, SkillPriorConfig):
            raise TypeError(f"{type(self).__name__} needs a SkillPriorConfig; got {type(cfg).__name__}")
        self.cfg = cfg
        encoder_in = cfg.action_dim + (cfg.state_dim if self.encoder_sees_states else 0)
        self.encoder = SkillEncoder(encoder_in, cfg.lstm_width, cfg.nz_enc, cfg.nz)
        self.prior_net = Predictor(cfg.state_dim, 2 * cfg.nz, cfg.prior_width, cfg.prior_layers)

    def encode(self, states: Tensor, actions: Tensor) -> D.Independent:
        """q(z | window) over [B, nz] from actions [B, T, A] and states [B, T(+1), S] (first T used, or ignored)."""
        _check_last_dim("actions", actions, self.cfg.action_dim)
        window = actions
        if self.encoder_sees_states:
            _check_last_dim("states", states, self.cfg.state_dim)
            window = torch.cat([actions, states[:, : actions.shape[1]]], dim=-1)
        return gaussian_from_params(self.encoder(window))

    def prior(self, state0: Tensor) -> D.Independent:
        """The learned skill prior p(z | s_0) over [B, nz] for first states [B, S]."""
        _check_last_dim("state0", state0, self.cfg.state_dim)
        return gaussian_from_params(self.prior_net(state0))

    @abstractmethod
    def reconstruct(self, states: Tensor, z: Tensor) -> Tensor:
        """Decoded action means [B, H, A] for skills z [B, nz] starting in windows with states [B, H(+1), S]."""

    def prior_loss(self, posterior: D.Independent, z: Tensor, state0: Tensor) -> Tensor:
        """Fit p(z | s_0) to the posterior without moving it: per-dim mean NLL of z.detach(), or KL(q.detach() || p)."""
        prior = self.prior(state0)
        if self.cfg.prior_objective == "nll":
            return -prior.base_dist.log_prob(z.detach()).mean()
        return gaussian_kl(detached_gaussian(posterior), prior).mean()

    def loss_terms(self, batch: Mapping[str, Tensor]) -> SkillLossTerms:
        """Every term of the offline loss for ``{"states": [B, H+1, S], "actions": [B, H, A]}``."""
        states, actions = self._checked_batch(batch)
        posterior = self.encode(states, actions)
        z = posterior.rsample()
        mse = F.mse_loss(self.reconstruct(states, z), actions)
        kl = kl_to_standard_normal(posterior).mean()
        prior = self.prior_loss(posterior, z, states[:, 0])
        return SkillLossTerms(rec=0.5 * mse, kl=kl, prior=prior, mse=mse, posterior=posterior, z=z)

    def loss(self, batch: Mapping[str, Tensor]) -> tuple[Tensor, dict[str, float]]:
        """``rec + beta * kl + prior`` (to minimise) and its terms as floats: loss, rec, kl, prior_loss, mse."""
        terms = self.loss_terms(batch)
        total = terms.rec + self.cfg.beta * terms.kl + terms.prior
        values = torch.stack([total, terms.rec, terms.kl, terms.prior, terms.mse]).detach().tolist()
        return total, dict(zip(("loss", "rec", "kl", "prior_loss", "mse"), values))

    def _checked_batch(self, batch: Mapping[str, Tensor]) -> tuple[Tensor, Tensor]:
        """``states`` [B, H+1, S] and ``actions`` [B, H, A] of a batch, or a one-line error saying what is wrong."""
        cfg = self.cfg
        if not isinstance(batch, Mapping) or not {"states", "actions"} <= set(batch):
            raise ValueError("a skill-model batch is a dict with 'states' [B, H+1, S] and 'actions' [B, H, A]; got "
                             f"{list(batch) if isinstance(batch, Mapping) else type(batch).__name__}")
        states, actions = batch["states"], batch["actions"]
        b = actions.shape[0] if actions.dim() == 3 else None
        if b is None or tuple(actions.shape) != (b, cfg.H, cfg.action_dim) or \
                tuple(states.shape) != (b, cfg.H + 1, cfg.state_dim):
            raise ValueError(f"batch needs states [B, {cfg.H + 1}, {cfg.state_dim}] and actions [B, {cfg.H}, "
                             f"{cfg.action_dim}]; got {tuple(states.shape)} and {tuple(actions.shape)}")
        return states, actions


class SPiRLModel(SkillModel):
    """SPiRL v1: encoder over actions, open-loop autoregressive LSTM decoder from z alone."""

    kind = "spirl"
    encoder_sees_states = False

    def __init__(self, cfg: SkillPriorConfig) -> None:
        super().__init__(cfg)
        self.decoder = AutoregressiveDecoder(cfg.nz, cfg.action_dim, cfg.lstm_width)

    def decode_plan(self, z: Tensor, steps: int | None = None) -> Tensor:
        """The open-loop plan [B, steps, A] of skills z [B, nz] (default H steps); RL pops one action per step."""
        _check_last_dim("z", z, self.cfg.nz)
        steps = self.cfg.H if steps is None else steps
        if not _is_int(steps) or steps < 1:
            raise ValueError(f"decode_plan needs steps >= 1 (an int); got {steps!r}")
        return self.decoder(z, int(steps))

    def reconstruct(self, states: Tensor, z: Tensor) -> Tensor:
        """The H-step plan; states are not used (open loop)."""
        return self.decode_plan(z, self.cfg.H)


def _expand_over_time(z: Tensor, steps: int) -> Tensor:
    """[B, nz] -> [B, steps, nz]: one skill for every step of its window."""
    return z.unsqueeze(1).expand(-1, steps, -1)


class SPiRLClModel(SkillModel):
    """SPiRL-cl: encoder over (a_t, s_t), closed-loop MLP decoder a_t = dec(s_t, z) at every step."""

    kind = "spirl_cl"
    encoder_sees_states = True

    def __init__(self, cfg: SkillPriorConfig) -> None:
        super().__init__(cfg)
        self.decoder = Predictor(cfg.state_dim + cfg.nz, cfg.action_dim, cfg.nz_mid, cfg.n_layers)

    def decode_step(self, state: Tensor, z: Tensor) -> Tensor:
        """The action [..., A] for states [..., S] under skills [..., nz] (any matching leading dims)."""
        _check_last_dim("state", state, self.cfg.state_dim)
        _check_last_dim("z", z, self.cfg.nz)
        return self.decoder(torch.cat([state, z], dim=-1))

    def reconstruct(self, states: Tensor, z: Tensor) -> Tensor:
        """Teacher forcing: the decoder sees the dataset's s_0..s_{H-1}, not states its own actions would reach."""
        steps = self.cfg.H
        return self.decode_step(states[:, :steps], _expand_over_time(z, steps))


class SkillCriticModel(SkillModel):
    """Skill-Critic: encoder over actions, time-indexed closed-loop decoder (s_t, z, onehot(k)) -> (mu, log_std).

    The log-std head is untrained offline (see the module docstring); the RL phase adds ``manual_log_sigma``.
    """

    kind = "skill_critic"
    encoder_sees_states = False

    def __init__(self, cfg: SkillPriorConfig) -> None:
        super().__init__(cfg)
        self.decoder = Predictor(cfg.state_dim + cfg.nz + cfg.H, 2 * cfg.action_dim, cfg.nz_mid, cfg.n_layers)

    def decode_step(self, state: Tensor, z: Tensor, k: Tensor) -> tuple[Tensor, Tensor]:
        """Mean and raw (unclamped) log-std [..., A] of the action at step ``k`` [...] (ints in 0..H-1) of skill z."""
        _check_last_dim("state", state, self.cfg.state_dim)
        _check_last_dim("z", z, self.cfg.nz)
        if k.dtype not in (torch.int32, torch.int64):
            raise TypeError(f"the step index k must be an integer tensor; got {k.dtype}")
        if bool(((k < 0) | (k >= self.cfg.H)).any()):
            raise ValueError(f"the step index k must lie in 0..{self.cfg.H - 1}; got values "
                             f"{int(k.min())}..{int(k.max())}")
        step = F.one_hot(k.long(), self.cfg.H).to(state.dtype)
        mean, log_std = self.decoder(torch.cat([state, z, step], dim=-1)).chunk(2, dim=-1)
        return mean, log_std

    def reconstruct(self, states: Tensor, z: Tensor) -> Tensor:
        """Teacher-forced means at k = 0..H-1; only the mean is trained (MSE)."""
        steps = self.cfg.H
        k = torch.arange(steps, device=z.device).expand(z.shape[0], -1)
        mean, _ = self.decode_step(states[:, :steps], _expand_over_time(z, steps), k)
        return mean


#: factory name -> model class
SKILL_MODELS: dict[str, type[SkillModel]] = {"spirl": SPiRLModel, "spirl_cl": SPiRLClModel,
                                              "skill_critic": SkillCriticModel}


def _checked_kind(kind: Any) -> str:
    if kind not in SKILL_MODELS:
        raise ValueError(f"unknown skill model kind {kind!r}; valid kinds: {', '.join(SKILL_MODELS)}")
    return kind


def make_skill_model(kind: str, cfg: SkillPriorConfig | Mapping[str, Any]) -> SkillModel:
    """A fresh ``"spirl"``, ``"spirl_cl"`` or ``"skill_critic"`` model from a config or a dict of its fields."""
    if isinstance(cfg, Mapping):
        cfg = SkillPriorConfig.from_mapping(cfg)
    if not isinstance(cfg, SkillPriorConfig):
        raise TypeError(f"make_skill_model needs a SkillPriorConfig or a dict of its fields; got {type(cfg).__name__}")
    return SKILL_MODELS[_checked_kind(kind)](cfg)


# --------------------------------------------------------------------------------------------------------------
# Checkpoints


@dataclass
class SkillModelCheckpoint:
    """What :func:`load_skill_model` returns: the model (eval mode) and what it was saved with."""

    model: SkillModel
    kind: str
    config: SkillPriorConfig
    stats: dict[str, Any] | None


def _checked_stats(stats: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """Plain values only (the file loads with ``weights_only``); numpy arrays become tensors."""
    if stats is None:
        return None
    if not isinstance(stats, Mapping) or not all(isinstance(key, str) for key in stats):
        raise TypeError(f"stats must be None or a dict with str keys; got {type(stats).__name__}")
    checked = {}
    for key, value in stats.items():
        if isinstance(value, np.ndarray):
            value = torch.as_tensor(value)
        if isinstance(value, Tensor):
            value = value.detach().cpu()
        elif not isinstance(value, (int, float, str, bool)):
            raise TypeError(f"stats[{key!r}] must be a tensor, an array or a number; got {type(value).__name__}")
        checked[key] = value
    return checked


def save_skill_model(path: str | os.PathLike, model: SkillModel, kind: str, cfg: SkillPriorConfig,
                     stats: Mapping[str, Any] | None = None) -> None:
    """Write ``model`` (built by ``make_skill_model(kind, cfg)``) and optional ``stats`` atomically to ``path``."""
    _checked_kind(kind)
    if not isinstance(model, SkillModel) or model.kind != kind or model.cfg != cfg:
        raise ValueError(f"save_skill_model got a {type(model).__name__} that was not built by "
                         f"make_skill_model({kind!r}, cfg) with this cfg")
    state = {"format": SKILL_MODEL_FORMAT, "kind": kind, "config": asdict(cfg),
             "model": {name: value.detach().cpu() for name, value in model.state_dict().items()},
             "stats": _checked_stats(stats)}
    atomic_save(state, path)


def _read_skill_file(path: Path) -> dict[str, Any]:
    """The checkpoint dict, with one-line errors for missing, unreadable or foreign files."""
    if not path.is_file():
        raise FileNotFoundError(f"skill model {str(path)!r} does not exist; save_skill_model writes it")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except UNREADABLE_ERRORS as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(f"cannot read skill model {str(path)!r}: truncated or not a torch file ({reason})") from None
    if not isinstance(state, Mapping) or state.get("format") != SKILL_MODEL_FORMAT:
        raise ValueError(f"{str(path)!r} is not a skill model (format {SKILL_MODEL_FORMAT!r}, written by "
                         "save_skill_model)")
    return dict(state)


def load_skill_model(path: str | os.PathLike, device: str | torch.device = "cpu") -> SkillModelCheckpoint:
    """Rebuild a model saved by :func:`save_skill_model` on ``device``, in eval mode; tensor stats move along.

    Weights load strictly: a missing or unexpected key or a shape mismatch fails with one line.
    """
    path = Path(path)
    state = _read_skill_file(path)
    kind = _checked_kind(state["kind"])
    cfg = SkillPriorConfig.from_mapping(state["config"])
    model = make_skill_model(kind, cfg)
    weights, expected = state["model"], model.state_dict()
    mismatched = sorted(set(weights) ^ set(expected)) + sorted(
        name for name in set(weights) & set(expected) if weights[name].shape != expected[name].shape)
    if mismatched:
        raise ValueError(f"skill model {str(path)!r} does not fit a {kind!r} model with its config: "
                         f"mismatched keys {mismatched[:3]}")
    model.load_state_dict(weights)
    stats = state["stats"]
    if stats is not None:
        stats = {key: value.to(device) if isinstance(value, Tensor) else value for key, value in stats.items()}
    return SkillModelCheckpoint(model=model.to(device).eval(), kind=kind, config=cfg, stats=stats)
