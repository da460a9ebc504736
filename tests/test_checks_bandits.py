"""Tests for autograder/checks/bandits.py: every check passes on the reference, catches realistic mistakes with a
useful message, lets the student's NotImplementedError through, and writes nothing to stderr.

Student code is built the way the notebook builds it: the library module's source executed in one namespace (so
``super()`` and module-level helpers resolve inside that namespace), with text replaced to make the mistakes.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from autograder.checks import bandits as check
from autograder.core import CheckFailed
from hsd3_learn.models import bandits as ref

SOURCE = Path(ref.__file__).read_text()


def notebook(*replacements: tuple[str, str]) -> dict[str, Any]:
    """The library source executed like the notebook's cells, with each (old, new) text replaced once."""
    source = SOURCE
    for old, new in replacements:
        assert source.count(old) == 1, f"not exactly one occurrence of {old!r}"
        source = source.replace(old, new)
    namespace: dict[str, Any] = {"__name__": "notebook"}
    exec(compile(source, "<notebook>", "exec"), namespace)
    return namespace


def stub(old: str) -> tuple[str, str]:
    """Replace ``old`` (whole lines) by the released notebook's stub, at the same indentation."""
    indent = re.match(r"\s*", old).group(0)
    return old, f"{indent}raise NotImplementedError()"


def assert_quiet(capfd: pytest.CaptureFixture[str]) -> str:
    """Nothing on stderr; returns stdout."""
    out, err = capfd.readouterr()
    assert err == ""
    return out


def assert_fails(capfd: pytest.CaptureFixture[str], run: Any, *fragments: str) -> None:
    """The check raises CheckFailed whose message contains every fragment, and stays off stderr."""
    with pytest.raises(CheckFailed) as info:
        run()
    for fragment in fragments:
        assert fragment in str(info.value), str(info.value)
    assert_quiet(capfd)


# Regions the notebook blanks (the released notebook replaces each by a stub).
UPDATE = """        self.t += 1
        self.n[action] += 1
        self.q[action] += (reward - self.q[action]) / self.n[action]"""
SAMPLE = "        return int(self.rng.choice(self.n_arms, p=self.dist()))"
UNIFORM_DIST = "        return np.full(self.n_arms, 1.0 / self.n_arms)"
EPS_DIST = "        return mix_with_uniform(one_hot(self.n_arms, self.best_action()), self.eps)"
UCB_SCORES = """    scores = np.full(means.shape, np.inf)
    tried = counts > 0
    scores[tried] = means[tried] + beta * np.sqrt(bonus_numerator / counts[tried])
    return scores"""
AUTO_BETA = """        if self.beta_setting == "auto":
            self.beta = max(self.beta, abs(reward))"""
UCB1_NUMERATOR = "        return math.log(max(float(counts.sum()), 1.0))"
SCORES = """        means, counts = self.arm_statistics()
        return ucb_scores(means, counts, self.beta, self.bonus_numerator(counts))"""
DISCOUNT = """        self.discounted_sums *= self.gamma
        self.discounted_counts *= self.gamma
        self.discounted_sums[action] += reward
        self.discounted_counts[action] += 1.0"""
DISCOUNTED_STATS = "        return masked_mean(self.discounted_sums, self.discounted_counts), self.discounted_counts"
WINDOW_WRITE = "        slot = (self.t - 1) % self.window  # overwrites the oldest pull once the window is full"
WINDOW_STATS = """        filled = self.window_actions >= 0
        actions = self.window_actions[filled]
        counts = np.bincount(actions, minlength=self.n_arms).astype(np.float64)"""
AGENT57_NUMERATOR = "        return 1.0"
AGENT57_DIST = "        return mix_with_uniform(super().dist(), self.eps)"
POSTERIOR = """        precision = prior_precision + data_precision
        mean = (prior_precision * self.prior_mean + data_precision * self.q) / precision
        return mean, 1.0 / np.sqrt(precision)"""
THOMPSON_SAMPLE = """        mean, std = self.posterior()
        return argmax_lowest(self.rng.normal(mean, std))"""


# ----------------------------------------------------------------------------------------------
# The notebook as released: every stub raises, every check lets NotImplementedError through
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("run", "region"), [
    (lambda ns: check.bandit_base(ns["Bandit"]), UPDATE),
    (lambda ns: check.bandit_base(ns["Bandit"]), SAMPLE),
    (lambda ns: check.uniform_bandit(ns["UniformBandit"]), UNIFORM_DIST),
    (lambda ns: check.eps_greedy_bandit(ns["EpsGreedyBandit"]), EPS_DIST),
    (lambda ns: check.ucb_scores(ns["ucb_scores"]), UCB_SCORES),
    (lambda ns: check.ucb_bandit(ns["UCBBandit"]), AUTO_BETA),
    (lambda ns: check.ucb_bandit(ns["UCBBandit"]), UCB1_NUMERATOR),
    (lambda ns: check.ucb_bandit(ns["UCBBandit"]), SCORES),
    (lambda ns: check.discounted_ucb_bandit(ns["DiscountedUCBBandit"]), DISCOUNT),
    (lambda ns: check.discounted_ucb_bandit(ns["DiscountedUCBBandit"]), DISCOUNTED_STATS),
    (lambda ns: check.sliding_window_ucb_bandit(ns["SlidingWindowUCBBandit"]), WINDOW_WRITE),
    (lambda ns: check.sliding_window_ucb_bandit(ns["SlidingWindowUCBBandit"]), WINDOW_STATS),
    (lambda ns: check.agent57_bandit(ns["Agent57Bandit"]), AGENT57_NUMERATOR),
    (lambda ns: check.agent57_bandit(ns["Agent57Bandit"]), AGENT57_DIST),
    (lambda ns: check.thompson_bandit(ns["ThompsonBandit"]), POSTERIOR),
    (lambda ns: check.thompson_bandit(ns["ThompsonBandit"]), THOMPSON_SAMPLE),
])
def test_not_implemented_passes_through(capfd, run, region):
    with pytest.raises(NotImplementedError):
        run(notebook(stub(region)))
    assert_quiet(capfd)


def test_later_exercises_do_not_depend_on_earlier_stubs(capfd):
    """One mistake costs one grade: with the base class, ucb_scores and UCBBandit unfinished, the strategies that
    build on them still pass (UCBBandit.scores is the one place that calls the student's ucb_scores)."""
    ns = notebook(stub(UPDATE), stub(SAMPLE), stub(UCB_SCORES), stub(AUTO_BETA), stub(UCB1_NUMERATOR), stub(SCORES),
                  stub(WINDOW_STATS))
    check.uniform_bandit(ns["UniformBandit"])
    check.eps_greedy_bandit(ns["EpsGreedyBandit"])
    check.discounted_ucb_bandit(ns["DiscountedUCBBandit"], seeds=[3], edge_cases=True)  # includes beta='auto'
    check.agent57_bandit(ns["Agent57Bandit"])
    check.thompson_bandit(ns["ThompsonBandit"], seeds=[3])
    assert assert_quiet(capfd).count("PASS") == 5


# ----------------------------------------------------------------------------------------------
# Reference and notebook-built classes pass, visible and hidden settings
# ----------------------------------------------------------------------------------------------


CHECKED = [
    ("bandit_base", "Bandit"),
    ("uniform_bandit", "UniformBandit"),
    ("eps_greedy_bandit", "EpsGreedyBandit"),
    ("ucb_scores", "ucb_scores"),
    ("ucb_bandit", "UCBBandit"),
    ("discounted_ucb_bandit", "DiscountedUCBBandit"),
    ("sliding_window_ucb_bandit", "SlidingWindowUCBBandit"),
    ("agent57_bandit", "Agent57Bandit"),
    ("thompson_bandit", "ThompsonBandit"),
]


@pytest.mark.parametrize(("check_name", "name"), CHECKED)
def test_reference_passes_visible_and_hidden(capfd, check_name, name):
    run = getattr(check, check_name)
    run(getattr(ref, name))
    run(notebook()[name], seeds=range(10, 12), edge_cases=True)
    out = assert_quiet(capfd)
    assert out.count("PASS") == 2


class Softmax(ref.Bandit):
    """The notebook's solution of exercise 10: Boltzmann exploration after trying every arm once."""

    def dist(self) -> np.ndarray:
        untried = self.n == 0
        if untried.any():
            return untried / untried.sum()
        weights = np.exp((self.q - self.q.max()) / 0.2)
        return weights / weights.sum()


def test_own_bandit_accepts_valid_bandits(capfd):
    check.own_bandit(Softmax)
    check.own_bandit(notebook()["ThompsonBandit"], seeds=range(10, 12))  # overrides sample_action; dist by sampling
    out = assert_quiet(capfd)
    assert out.count("PASS your bandit") == 2 and "Uniform's" in out


# ----------------------------------------------------------------------------------------------
# Realistic mistakes are caught, with messages that point at them
# ----------------------------------------------------------------------------------------------


def test_bandit_base_catches_mistakes(capfd):
    fixed_step = notebook((UPDATE, UPDATE.replace("/ self.n[action]", "* 0.1")))["Bandit"]
    assert_fails(capfd, lambda: check.bandit_base(fixed_step), "q (mean reward per arm)", "incremental mean")
    divide_first = notebook((UPDATE, """        self.q[action] += (reward - self.q[action]) / self.n[action]
        self.t += 1
        self.n[action] += 1"""))["Bandit"]
    assert_fails(capfd, lambda: check.bandit_base(divide_first), "q is not finite", "before dividing")
    no_total = notebook((UPDATE, UPDATE.replace("        self.t += 1\n", "")))["Bandit"]
    assert_fails(capfd, lambda: check.bandit_base(no_total), "t (total pulls): expected 1, got 0")
    uniform_draws = notebook((SAMPLE, "        return int(self.rng.integers(self.n_arms))"))["Bandit"]
    assert_fails(capfd, lambda: check.bandit_base(uniform_draws), "frequencies of 6000 sample_action() draws")
    global_rng = notebook((SAMPLE, "        return int(np.random.choice(self.n_arms, p=self.dist()))"))["Bandit"]
    assert_fails(capfd, lambda: check.bandit_base(global_rng), "same seed", "self.rng")


def test_uniform_and_eps_greedy_catch_mistakes(capfd):
    ones = notebook((UNIFORM_DIST, "        return np.ones(self.n_arms)"))["UniformBandit"]
    assert_fails(capfd, lambda: check.uniform_bandit(ones), "dist()", "must sum to 1")
    no_spread = notebook((EPS_DIST, """        probs = np.full(self.n_arms, self.eps / self.n_arms)
        probs[self.best_action()] = 1.0 - self.eps
        return probs"""))["EpsGreedyBandit"]
    assert_fails(capfd, lambda: check.eps_greedy_bandit(no_spread), "dist()", "must sum to 1")
    most_pulled = notebook((EPS_DIST, "        return mix_with_uniform(one_hot(self.n_arms, int(np.argmax(self.n))), "
                                      "self.eps)"))["EpsGreedyBandit"]
    assert_fails(capfd, lambda: check.eps_greedy_bandit(most_pulled), "the most likely arm should be")


def test_ucb_scores_catches_mistakes(capfd):
    floored = notebook((UCB_SCORES, "    return means + beta * np.sqrt(bonus_numerator / np.maximum(counts, 1))"))
    assert_fails(capfd, lambda: check.ucb_scores(floored["ucb_scores"]), "ucb_scores", "must score +inf")
    nan_for_beta_0 = notebook((UCB_SCORES, "    return means + beta * np.sqrt(bonus_numerator / counts)"))
    assert_fails(capfd, lambda: check.ucb_scores(nan_for_beta_0["ucb_scores"]), "nan appears")
    no_sqrt = notebook((UCB_SCORES, UCB_SCORES.replace("np.sqrt(bonus_numerator / counts[tried])",
                                                       "bonus_numerator / counts[tried]")))
    assert_fails(capfd, lambda: check.ucb_scores(no_sqrt["ucb_scores"]), "max abs error", "sqrt")
    in_place = notebook((UCB_SCORES, """    scores = means
    scores[counts == 0] = np.inf
    tried = counts > 0
    scores[tried] = means[tried] + beta * np.sqrt(bonus_numerator / counts[tried])
    return scores"""))
    assert_fails(capfd, lambda: check.ucb_scores(in_place["ucb_scores"]), "changed its inputs in place")


def test_ucb_bandit_catches_mistakes(capfd):
    signed = notebook((AUTO_BETA, AUTO_BETA.replace("abs(reward)", "reward")))["UCBBandit"]
    assert_fails(capfd, lambda: check.ucb_bandit(signed, seeds=[0], edge_cases=True), "beta", "largest |reward|")
    unfloored = notebook((UCB1_NUMERATOR, "        return math.log(float(counts.sum()) + 1e-300)"))["UCBBandit"]
    assert_fails(capfd, lambda: check.ucb_bandit(unfloored), "bonus_numerator([0", "floored at 1")
    no_bonus = notebook((SCORES, SCORES.replace("self.beta", "0.0")))["UCBBandit"]
    assert_fails(capfd, lambda: check.ucb_bandit(no_bonus), "scores()", "ucb_scores(")


def test_discounted_ucb_catches_mistakes(capfd):
    add_then_decay = notebook((DISCOUNT, """        self.discounted_sums[action] += reward
        self.discounted_counts[action] += 1.0
        self.discounted_sums *= self.gamma
        self.discounted_counts *= self.gamma"""))["DiscountedUCBBandit"]
    assert_fails(capfd, lambda: check.discounted_ucb_bandit(add_then_decay), "discounted_sums", "then add")
    only_pulled = notebook((DISCOUNT, """        self.discounted_sums[action] *= self.gamma
        self.discounted_counts[action] *= self.gamma
        self.discounted_sums[action] += reward
        self.discounted_counts[action] += 1.0"""))
    assert_fails(capfd, lambda: check.discounted_ucb_bandit(only_pulled["DiscountedUCBBandit"]), "discounted_sums")
    lifetime = notebook((DISCOUNTED_STATS, "        return self.q, self.discounted_counts"))["DiscountedUCBBandit"]
    assert_fails(capfd, lambda: check.discounted_ucb_bandit(lifetime), "arm_statistics() means", "masked_mean")


def test_sliding_window_catches_mistakes(capfd):
    off_by_one = notebook((WINDOW_WRITE, "        slot = self.t % self.window"))["SlidingWindowUCBBandit"]
    assert_fails(capfd, lambda: check.sliding_window_ucb_bandit(off_by_one), "window_actions", "(self.t - 1)")
    int_counts = notebook((WINDOW_STATS, WINDOW_STATS.replace(".astype(np.float64)", "")))["SlidingWindowUCBBandit"]
    assert_fails(capfd, lambda: check.sliding_window_ucb_bandit(int_counts), "arm_statistics() counts: dtype differs",
                 "float64")
    empty_slots = notebook((WINDOW_STATS, """        actions = self.window_actions
        filled = actions == actions
        counts = np.bincount(actions, minlength=self.n_arms).astype(np.float64)"""))["SlidingWindowUCBBandit"]
    assert_fails(capfd, lambda: check.sliding_window_ucb_bandit(empty_slots), "arm_statistics() raised ValueError")


def test_agent57_catches_mistakes(capfd):
    log_bonus = notebook((AGENT57_NUMERATOR, "        return super().bonus_numerator(counts)"))["Agent57Bandit"]
    assert_fails(capfd, lambda: check.agent57_bandit(log_bonus), "bonus_numerator(counts)", "no log")
    no_mixing = notebook((AGENT57_DIST, "        return super().dist()"))["Agent57Bandit"]
    assert_fails(capfd, lambda: check.agent57_bandit(no_mixing), "dist()", "mixed with uniform by eps")


def test_thompson_catches_mistakes(capfd):
    variance = notebook((POSTERIOR, POSTERIOR.replace("1.0 / np.sqrt(precision)", "1.0 / precision")))
    assert_fails(capfd, lambda: check.thompson_bandit(variance["ThompsonBandit"]), "posterior() std",
                 "not a variance")
    greedy = notebook((THOMPSON_SAMPLE, "        return argmax_lowest(self.posterior()[0])"))["ThompsonBandit"]
    assert_fails(capfd, lambda: check.thompson_bandit(greedy), "frequencies", "greedy")
    global_rng = notebook((THOMPSON_SAMPLE, THOMPSON_SAMPLE.replace("self.rng.normal", "np.random.normal")))
    assert_fails(capfd, lambda: check.thompson_bandit(global_rng["ThompsonBandit"]), "same seed", "self.rng")


def test_own_bandit_catches_mistakes(capfd):
    assert_fails(capfd, lambda: check.own_bandit(ref.UniformBandit, seeds=[0, 1]), "mean regret", "0.75 x Uniform")

    class Unnormalised(Softmax):
        def dist(self) -> np.ndarray:
            return super().dist() * 2

    assert_fails(capfd, lambda: check.own_bandit(Unnormalised), "dist() sums to 2")

    class Inconsistent(Softmax):
        def sample_action(self) -> int:
            return self.best_action()

    assert_fails(capfd, lambda: check.own_bandit(Inconsistent), "frequencies", "draw from dist()")

    class Unsaved(Softmax):
        def reset(self) -> None:
            super().reset()
            self.temperature = 1.0

        def _observe(self, action: int, reward: float) -> None:
            self.temperature *= 0.99

        def dist(self) -> np.ndarray:
            weights = np.exp((self.q - self.q.max()) / self.temperature)
            return weights / weights.sum()

    assert_fails(capfd, lambda: check.own_bandit(Unsaved), "after load_state_dict", "_state_keys")

    class NeedsArgument(Softmax):
        def __init__(self, n_arms: int, temperature: float, *, seed: Any = None) -> None:
            super().__init__(n_arms, seed=seed)

    assert_fails(capfd, lambda: check.own_bandit(NeedsArgument), "TypeError", "default")

    class GlobalRandom(Softmax):
        def sample_action(self) -> int:
            return int(np.random.choice(self.n_arms, p=self.dist()))

    assert_fails(capfd, lambda: check.own_bandit(GlobalRandom), "same seed")


def test_own_bandit_lets_not_implemented_through(capfd):
    class Unfinished(ref.Bandit):
        def dist(self) -> np.ndarray:
            raise NotImplementedError()

    with pytest.raises(NotImplementedError):
        check.own_bandit(Unfinished)
    assert_quiet(capfd)
