"""Multi-armed bandits that choose a goal-space subset per episode in HSD-Bandit (HSDB).

In the HSD-Bandit baseline of HSD-3 (Gehring et al. 2021, section 5) a bandit replaces the high-level
policy over goal-space subsets: each arm is one subset, and at the end of an episode the bandit is told
which arm was used and the episode return (``info['reward_acc']``). Evaluation plays ``best_action()``.
The same classes are the subject of the course notebook ``02_bandits``.

A strategy is defined by ``dist()``, the probability of each of the N arms right now;
``sample_action()`` draws from it with the bandit's own generator, so the policy and the distribution
reported for it can never disagree (ThompsonBandit samples its posterior directly instead).

Strategies (Sutton & Barto 2018, ch. 2, for the stationary ones):
- ``UniformBandit``: every arm with probability 1/N.
- ``EpsGreedyBandit``: the greedy arm, or a uniform one with probability eps.
- ``UCBBandit``: UCB1 (Auer et al. 2002), score ``q + beta * sqrt(log t / n)``.
- ``DiscountedUCBBandit``: D-UCB (Garivier & Moulines 2011), statistics discounted by gamma per pull.
- ``SlidingWindowUCBBandit``: SW-UCB (Garivier & Moulines 2011), statistics over the last pulls only.
- ``Agent57Bandit``: the meta-controller of Agent57 (Badia et al. 2020, appendix E), sliding-window
  UCB with bonus ``beta * sqrt(1 / n_window)`` mixed with epsilon-greedy exploration.
- ``ThompsonBandit``: Gaussian Thompson sampling (Agrawal & Goyal 2013).

Differences from ``hucc/models/bandits.py``:
- numpy and a per-bandit ``np.random.Generator`` instead of torch's global RNG: runs reproduce from a seed.
- ``dist()`` is the exact sampling distribution, not a softmax of the estimates: it can be checked
  against samples.
- Greedy ties go to the lowest index, not a random one: deterministic and easy to test.
- ``beta='auto'`` tracks the largest absolute reward, not the largest reward: it stays positive
  when returns are negative.
- D-UCB scores ``discounted mean + beta * bonus``, not ``sum / (count + 1) + 2 * beta * bonus``, and the
  sliding-window estimate is the plain window mean, not ``sum / (count + 1)``: one score formula for
  every UCB variant.
- Agent57Bandit mixes in epsilon from the first pull (hucc first pulled each arm once): a single
  formula for ``dist()``; untried arms still come first in its greedy part.
- ThompsonBandit uses a conjugate Normal model with a stated prior and known noise (hucc used a fixed
  prior mean 1 with precision 1e-3): the model is explicit and tunable.
- Every bandit keeps the lifetime mean ``q``, count ``n`` and step ``t``, and has ``state_dict()`` so
  an agent checkpoint can include it.
"""

from __future__ import annotations

import copy
import math
import operator
from abc import ABC, abstractmethod
from typing import Any

import numpy as np

__all__ = [
    "Agent57Bandit",
    "BANDITS",
    "Bandit",
    "DiscountedUCBBandit",
    "EpsGreedyBandit",
    "SlidingWindowUCBBandit",
    "ThompsonBandit",
    "UCBBandit",
    "UniformBandit",
    "argmax_lowest",
    "make_bandit",
    "masked_mean",
    "mix_with_uniform",
    "one_hot",
    "ucb_scores",
]

Seed = int | np.random.Generator | None

# Monte Carlo draws used by ThompsonBandit.dist(); the standard error of each probability is <= 0.005.
THOMPSON_DIST_SAMPLES = 10_000


# ----------------------------------------------------------------------------------------------
# Shared helpers
# ----------------------------------------------------------------------------------------------


def argmax_lowest(values: np.ndarray) -> int:
    """Index of the largest of ``values: [N]``; ties go to the lowest index (np.argmax keeps the first)."""
    return int(np.argmax(values))


def one_hot(n_arms: int, index: int) -> np.ndarray:
    """[N] distribution with all mass on ``index``: the policy of a deterministic strategy."""
    probs = np.zeros(n_arms)
    probs[index] = 1.0
    return probs


def mix_with_uniform(probs: np.ndarray, eps: float) -> np.ndarray:
    """[N] ``(1 - eps) * probs + eps / N``: epsilon-greedy exploration written as a distribution."""
    return (1.0 - eps) * probs + eps / probs.shape[0]


def masked_mean(sums: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """[N] ``sums / counts`` per arm, and 0 for arms without data (the same default as a fresh ``q``)."""
    means = np.zeros(sums.shape)
    np.divide(sums, counts, out=means, where=counts > 0)
    return means


def ucb_scores(
    means: np.ndarray, counts: np.ndarray, beta: float, bonus_numerator: float
) -> np.ndarray:
    """[N] upper confidence bounds ``mean + beta * sqrt(bonus_numerator / count)``.

    Untried arms (count 0) score +inf, so they are pulled first, lowest index first. They are
    written separately so that ``beta = 0`` never produces ``0 * inf = nan``.
    """
    scores = np.full(means.shape, np.inf)
    tried = counts > 0
    scores[tried] = means[tried] + beta * np.sqrt(bonus_numerator / counts[tried])
    return scores


def _make_rng(seed: Seed) -> np.random.Generator:
    """The bandit's generator; a Generator passed in is shared, not copied."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer, np.random.Generator, type(None))):
        raise TypeError(f"seed must be an int, a np.random.Generator or None, got {type(seed).__name__}")
    if isinstance(seed, (int, np.integer)) and seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed}")
    return np.random.default_rng(seed)


def _check_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int >= {minimum}, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value}")
    return int(value)


def _check_float(
    name: str, value: Any, low: float = -math.inf, high: float = math.inf, low_open: bool = False
) -> float:
    """``value`` as a finite float in [low, high] (or (low, high] with ``low_open``)."""
    interval = f"{'(' if low_open else '['}{low}, {high}]"
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a number in {interval}, got {type(value).__name__}")
    value = float(value)
    inside = low < value <= high if low_open else low <= value <= high
    if not (math.isfinite(value) and inside):
        raise ValueError(f"{name} must be a finite number in {interval}, got {value}")
    return value


def _check_beta(beta: float | str) -> float | str:
    if beta == "auto":
        return beta
    if isinstance(beta, str):
        raise ValueError(f"beta must be a non-negative number or 'auto', got {beta!r}")
    return _check_float("beta", beta, low=0.0)


# ----------------------------------------------------------------------------------------------
# Base class
# ----------------------------------------------------------------------------------------------


class Bandit(ABC):
    """A bandit over ``n_arms`` arms with lifetime statistics and its own random generator.

    State: ``q: [N] float64`` running mean reward per arm (0 for untried arms), ``n: [N] int64`` pulls
    per arm and ``t`` total pulls. Subclasses set their own parameters before calling
    ``super().__init__``, because ``__init__`` calls ``reset()``, which may read them. Attributes named
    in ``_state_keys`` are what ``state_dict()`` saves.
    """

    _state_keys: tuple[str, ...] = ("q", "n", "t")

    def __init__(self, n_arms: int, *, seed: Seed = None) -> None:
        self.n_arms = _check_int("n_arms", n_arms, 1)
        self.rng = _make_rng(seed)
        self.reset()

    def reset(self) -> None:
        """Forget all statistics; the generator keeps going, so a reset bandit does not replay old draws."""
        self.q = np.zeros(self.n_arms)
        self.n = np.zeros(self.n_arms, dtype=np.int64)
        self.t = 0

    def update(self, action: int, reward: float) -> None:
        """Record that arm ``action`` returned ``reward`` (in HSDB: one episode's return)."""
        action = self._check_action(action)
        try:
            reward = float(reward)
        except (TypeError, ValueError):
            raise TypeError(f"reward must be a real number, got {type(reward).__name__}") from None
        if not math.isfinite(reward):
            raise ValueError(f"reward must be finite, got {reward}")
        self.t += 1
        self.n[action] += 1
        self.q[action] += (reward - self.q[action]) / self.n[action]
        self._observe(action, reward)

    def _observe(self, action: int, reward: float) -> None:
        """Hook for strategy-specific statistics, called by ``update`` after ``q``, ``n`` and ``t``."""

    def _check_action(self, action: Any) -> int:
        try:
            action = operator.index(action)
        except TypeError:
            raise TypeError(f"action must be an int, got {type(action).__name__}") from None
        if not 0 <= action < self.n_arms:
            raise ValueError(f"action must be in [0, {self.n_arms - 1}], got {action}")
        return action

    def value_estimates(self) -> np.ndarray:
        """[N] the value estimate this strategy trusts; the lifetime mean ``q`` unless overridden."""
        return self.q

    def best_action(self) -> int:
        """Greedy arm w.r.t. ``value_estimates()`` (ties: lowest index); HSDB plays it at evaluation."""
        return argmax_lowest(self.value_estimates())

    @abstractmethod
    def dist(self) -> np.ndarray:
        """[N] probability of each arm under ``sample_action()`` right now; sums to 1, draws nothing."""

    def sample_action(self) -> int:
        """Draw an arm from ``dist()`` with the bandit's generator: the exploration policy."""
        return int(self.rng.choice(self.n_arms, p=self.dist()))

    def state_dict(self) -> dict[str, Any]:
        """A deep copy of the statistics and the generator state, for checkpoints."""
        state = {key: copy.deepcopy(getattr(self, key)) for key in self._state_keys}
        state["rng"] = copy.deepcopy(self.rng.bit_generator.state)
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore ``state_dict()`` output, so the bandit continues exactly where it was saved."""
        expected = set(self._state_keys) | {"rng"}
        if set(state) != expected:
            raise ValueError(f"state keys must be {sorted(expected)}, got {sorted(state)}")
        for key in self._state_keys:
            current = getattr(self, key)
            if isinstance(current, np.ndarray):
                value = np.array(state[key], dtype=current.dtype)
                if value.shape != current.shape:
                    raise ValueError(f"state[{key!r}] must have shape {current.shape}, got {value.shape}")
            else:
                value = type(current)(state[key])
            setattr(self, key, value)
        self.rng.bit_generator.state = copy.deepcopy(state["rng"])

    def _params(self) -> dict[str, Any]:
        """Constructor parameters shown by ``repr``."""
        return {"n_arms": self.n_arms}

    def __repr__(self) -> str:
        args = ", ".join(f"{name}={value!r}" for name, value in self._params().items())
        return f"{type(self).__name__}({args})"


# ----------------------------------------------------------------------------------------------
# Stationary strategies
# ----------------------------------------------------------------------------------------------


class UniformBandit(Bandit):
    """Samples every arm with probability 1/N; ``best_action`` is the arm with the highest mean.

    This is how HSDB trains (it never calls ``sample_action``), and the baseline the others must beat.
    """

    def dist(self) -> np.ndarray:
        """[N] all 1/N."""
        return np.full(self.n_arms, 1.0 / self.n_arms)


class EpsGreedyBandit(Bandit):
    """Plays the highest-mean arm, or with probability ``eps`` a uniformly random one."""

    def __init__(self, n_arms: int, eps: float = 0.1, *, seed: Seed = None) -> None:
        self.eps = _check_float("eps", eps, 0.0, 1.0)
        super().__init__(n_arms, seed=seed)

    def dist(self) -> np.ndarray:
        """[N] ``1 - eps + eps/N`` on the greedy arm, ``eps/N`` elsewhere."""
        return mix_with_uniform(one_hot(self.n_arms, self.best_action()), self.eps)

    def _params(self) -> dict[str, Any]:
        return {**super()._params(), "eps": self.eps}


class UCBBandit(Bandit):
    """UCB1: play the arm with the highest ``mean + beta * sqrt(log(total) / count)``; untried arms first.

    ``beta='auto'`` sets beta to the largest absolute reward seen so far. The bonus assumes rewards of
    unit scale, but HSDB's rewards are episode returns whose scale is unknown in advance and differs
    per task; scaling the bonus by the largest return seen keeps exploration comparable to the rewards.
    Variants change only ``arm_statistics`` (and Agent57 ``bonus_numerator``).
    """

    _state_keys = Bandit._state_keys + ("beta",)

    def __init__(self, n_arms: int, beta: float | str = 1.0, *, seed: Seed = None) -> None:
        self.beta_setting = _check_beta(beta)
        super().__init__(n_arms, seed=seed)

    def reset(self) -> None:
        """Forget all statistics, including the automatic beta."""
        super().reset()
        self.beta = 0.0 if self.beta_setting == "auto" else self.beta_setting

    def _observe(self, action: int, reward: float) -> None:
        if self.beta_setting == "auto":
            self.beta = max(self.beta, abs(reward))

    def arm_statistics(self) -> tuple[np.ndarray, np.ndarray]:
        """([N] mean, [N] count) the confidence bounds are built from: here the lifetime ``q`` and ``n``."""
        return self.q, self.n

    def bonus_numerator(self, counts: np.ndarray) -> float:
        """``log(total count)`` as in UCB1, from ``counts: [N]`` (floored at 1 pull so it is never -inf)."""
        return math.log(max(float(counts.sum()), 1.0))

    def scores(self) -> np.ndarray:
        """[N] upper confidence bound of each arm (+inf for untried arms)."""
        means, counts = self.arm_statistics()
        return ucb_scores(means, counts, self.beta, self.bonus_numerator(counts))

    def value_estimates(self) -> np.ndarray:
        """[N] the mean from ``arm_statistics``, without the exploration bonus."""
        return self.arm_statistics()[0]

    def dist(self) -> np.ndarray:
        """[N] one-hot on the highest score (ties: lowest index)."""
        return one_hot(self.n_arms, argmax_lowest(self.scores()))

    def _params(self) -> dict[str, Any]:
        return {**super()._params(), "beta": self.beta_setting}


# ----------------------------------------------------------------------------------------------
# Non-stationary strategies: forget old rewards so a change of the best arm is noticed
# ----------------------------------------------------------------------------------------------


class DiscountedUCBBandit(UCBBandit):
    """D-UCB: UCB on counts and reward sums that decay by ``gamma`` at every pull.

    An arm's weight halves after about ``log(0.5) / log(gamma)`` pulls (7 for 0.9), so the estimates
    follow a moving best arm; the total count in the bonus is the discounted one as well.
    """

    _state_keys = UCBBandit._state_keys + ("discounted_sums", "discounted_counts")

    def __init__(
        self, n_arms: int, beta: float | str = 1.0, gamma: float = 0.9, *, seed: Seed = None
    ) -> None:
        self.gamma = _check_float("gamma", gamma, 0.0, 1.0, low_open=True)
        super().__init__(n_arms, beta, seed=seed)

    def reset(self) -> None:
        """Forget all statistics, including the discounted ones."""
        super().reset()
        self.discounted_sums = np.zeros(self.n_arms)
        self.discounted_counts = np.zeros(self.n_arms)

    def _observe(self, action: int, reward: float) -> None:
        super()._observe(action, reward)
        self.discounted_sums *= self.gamma
        self.discounted_counts *= self.gamma
        self.discounted_sums[action] += reward
        self.discounted_counts[action] += 1.0

    def arm_statistics(self) -> tuple[np.ndarray, np.ndarray]:
        """([N] discounted mean, [N] discounted count)."""
        return masked_mean(self.discounted_sums, self.discounted_counts), self.discounted_counts

    def _params(self) -> dict[str, Any]:
        return {**super()._params(), "gamma": self.gamma}


class SlidingWindowUCBBandit(UCBBandit):
    """SW-UCB: UCB on the last ``window`` pulls only; older rewards are forgotten completely.

    The pulls live in a ring buffer; the total in the bonus is ``min(t, window)``.
    """

    _state_keys = UCBBandit._state_keys + ("window_actions", "window_rewards")

    def __init__(
        self, n_arms: int, beta: float | str = 1.0, window: int = 500, *, seed: Seed = None
    ) -> None:
        self.window = _check_int("window", window, 1)
        super().__init__(n_arms, beta, seed=seed)

    def reset(self) -> None:
        """Empty the window (action -1 marks an empty slot)."""
        super().reset()
        self.window_actions = np.full(self.window, -1, dtype=np.int64)
        self.window_rewards = np.zeros(self.window)

    def _observe(self, action: int, reward: float) -> None:
        super()._observe(action, reward)
        slot = (self.t - 1) % self.window  # overwrites the oldest pull once the window is full
        self.window_actions[slot] = action
        self.window_rewards[slot] = reward

    def arm_statistics(self) -> tuple[np.ndarray, np.ndarray]:
        """([N] mean, [N] count) over the pulls in the window."""
        filled = self.window_actions >= 0
        actions = self.window_actions[filled]
        counts = np.bincount(actions, minlength=self.n_arms).astype(np.float64)
        sums = np.bincount(actions, weights=self.window_rewards[filled], minlength=self.n_arms)
        return masked_mean(sums, counts), counts

    def _params(self) -> dict[str, Any]:
        return {**super()._params(), "window": self.window}


class Agent57Bandit(SlidingWindowUCBBandit):
    """Agent57's meta-controller: sliding-window UCB with bonus ``beta * sqrt(1 / n_window)``, and a
    uniformly random arm with probability ``eps``. The original HSDB config: beta auto, window 500, eps 0.5.
    """

    def __init__(
        self,
        n_arms: int,
        beta: float | str = "auto",
        window: int = 500,
        eps: float = 0.5,
        *,
        seed: Seed = None,
    ) -> None:
        self.eps = _check_float("eps", eps, 0.0, 1.0)
        super().__init__(n_arms, beta, window, seed=seed)

    def bonus_numerator(self, counts: np.ndarray) -> float:
        """1: Agent57 drops UCB1's ``log(total)`` from the bonus."""
        return 1.0

    def dist(self) -> np.ndarray:
        """[N] the sliding-window UCB choice mixed with uniform by ``eps``."""
        return mix_with_uniform(super().dist(), self.eps)

    def _params(self) -> dict[str, Any]:
        return {**super()._params(), "eps": self.eps}


# ----------------------------------------------------------------------------------------------
# Bayesian strategy
# ----------------------------------------------------------------------------------------------


class ThompsonBandit(Bandit):
    """Gaussian Thompson sampling: draw one plausible mean per arm from its posterior, play the largest.

    Model: each arm's mean reward has prior ``Normal(prior_mean, prior_std^2)``, and rewards are that
    mean plus Gaussian noise of known std ``noise_std``. The posterior is then Normal with
    ``precision = 1 / prior_std^2 + n / noise_std^2`` and
    ``mean = (prior_mean / prior_std^2 + n * q / noise_std^2) / precision``, so it needs only ``q`` and
    ``n``. For episode returns set ``prior_std`` and ``noise_std`` to the return scale.
    """

    def __init__(
        self,
        n_arms: int,
        prior_mean: float = 0.0,
        prior_std: float = 1.0,
        *,
        seed: Seed = None,
        noise_std: float = 1.0,
    ) -> None:
        self.prior_mean = _check_float("prior_mean", prior_mean)
        self.prior_std = _check_float("prior_std", prior_std, low=0.0, low_open=True)
        self.noise_std = _check_float("noise_std", noise_std, low=0.0, low_open=True)
        super().__init__(n_arms, seed=seed)

    def posterior(self) -> tuple[np.ndarray, np.ndarray]:
        """([N] mean, [N] std) of the Normal posterior over each arm's mean reward."""
        prior_precision = 1.0 / self.prior_std**2
        data_precision = self.n / self.noise_std**2
        precision = prior_precision + data_precision
        mean = (prior_precision * self.prior_mean + data_precision * self.q) / precision
        return mean, 1.0 / np.sqrt(precision)

    def value_estimates(self) -> np.ndarray:
        """[N] posterior mean."""
        return self.posterior()[0]

    def sample_action(self) -> int:
        """Draw a mean per arm from the posterior and play the largest."""
        mean, std = self.posterior()
        return argmax_lowest(self.rng.normal(mean, std))

    def dist(self) -> np.ndarray:
        """[N] Monte Carlo estimate of P(arm's draw is the largest), from ``THOMPSON_DIST_SAMPLES`` draws.

        The draws come from a generator seeded with the pull counts, so the answer depends only on
        the current state and the bandit's own generator is left untouched.
        """
        mean, std = self.posterior()
        estimate_rng = np.random.default_rng(self.n.tolist())
        draws = estimate_rng.normal(mean, std, size=(THOMPSON_DIST_SAMPLES, self.n_arms))
        wins = np.bincount(draws.argmax(axis=1), minlength=self.n_arms)
        return wins / THOMPSON_DIST_SAMPLES

    def _params(self) -> dict[str, Any]:
        return {
            **super()._params(),
            "prior_mean": self.prior_mean,
            "prior_std": self.prior_std,
            "noise_std": self.noise_std,
        }


# ----------------------------------------------------------------------------------------------
# Registry
# ----------------------------------------------------------------------------------------------

BANDITS: dict[str, type[Bandit]] = {
    "uniform": UniformBandit,
    "eps_greedy": EpsGreedyBandit,
    "ucb": UCBBandit,
    "discounted_ucb": DiscountedUCBBandit,
    "sliding_window_ucb": SlidingWindowUCBBandit,
    "agent57": Agent57Bandit,
    "thompson": ThompsonBandit,
}


def make_bandit(name: str, n_arms: int, **kwargs: Any) -> Bandit:
    """Build the bandit registered as ``name`` (a key of ``BANDITS``), e.g. from ``cfg.agent.bandit_d``."""
    if name not in BANDITS:
        raise ValueError(f"unknown bandit {name!r}; valid names: {', '.join(BANDITS)}")
    return BANDITS[name](n_arms, **kwargs)
