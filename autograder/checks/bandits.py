"""Checks for notebook 02_bandits: the Bandit base class, the seven strategies HSD-Bandit can use, your own bandit.

Every check builds the student's bandit and the reference from ``hsd3_learn.models.bandits`` with the same
arguments and seed, feeds both the same seeded sequence of (arm, reward) updates, and compares after every update:
``dist()``, ``scores()`` and the strategy's statistics up to 1e-12, counts and ring buffers exactly,
``best_action()`` exactly. Sampling is compared through statistics: the frequencies of many draws against the
probabilities they should follow, reproducibility from the seed, and replay after a ``state_dict`` round trip.

One mistake costs one grade: what a class inherits from an earlier exercise is taken from the reference while its
own exercise is checked. Updates and draws of the strategies go through the reference ``Bandit.update`` and
``Bandit.sample_action`` (the student's ``_observe`` hooks still run); D-UCB and SW-UCB sit on the reference's
``UCBBandit`` parts (``scores``, ``bonus_numerator``, and the ``_observe`` their ``super()`` call reaches); Agent57
is checked on states loaded from the reference. Only ``UCBBandit.scores`` calls the student's ``ucb_scores``,
because writing that call is part of the exercise.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable
from typing import Any

import numpy as np

from autograder.core import CheckFailed, assert_close, assert_equal, cases, check, run_student
from hsd3_learn.models import bandits as ref

__all__ = [
    "agent57_bandit",
    "bandit_base",
    "discounted_ucb_bandit",
    "eps_greedy_bandit",
    "own_bandit",
    "sliding_window_ucb_bandit",
    "thompson_bandit",
    "ucb_bandit",
    "ucb_scores",
    "uniform_bandit",
]

EXACT = 1e-12  # deterministic quantities: the same arithmetic as the reference, up to rounding
DRAWS = 6000  # draws per frequency test; 5 standard errors of a frequency are then at most 0.032
FLOAT_HINT = "return float64 arrays, counts too (np.bincount gives int64: .astype(np.float64))"
REFERENCE_DRAWS = 200_000  # draws for the reference's Thompson probabilities (standard error <= 0.0011)


# ----------------------------------------------------------------------------------------------
# Shared helpers
# ----------------------------------------------------------------------------------------------


def _updates(seed: int, n_arms: int, steps: int, *, untried_arm: bool = False,
             tied: bool = False) -> list[tuple[int, float]]:
    """A seeded (arm, reward) sequence; rewards include negative values, ``tied`` makes many equal means."""
    rng = np.random.default_rng(seed)
    pool = n_arms - 1 if untried_arm and n_arms > 1 else n_arms
    actions = rng.integers(pool, size=steps)
    rewards = rng.integers(0, 2, size=steps).astype(float) if tied else rng.normal(0.5, 2.0, size=steps)
    return [(int(a), float(r)) for a, r in zip(actions, rewards)]


def _isolated(student_cls: type, **reference_methods: Callable[..., Any]) -> type:
    """The student's class with the methods of earlier exercises replaced by the reference's."""
    return type(student_cls.__name__, (student_cls,), dict(reference_methods))


REFERENCE_BASE = {"update": ref.Bandit.update, "sample_action": ref.Bandit.sample_action}


def _construct(cls: type, args: dict[str, Any], case: str) -> Any:
    return run_student(cls, **args, what=f"{cls.__name__}(...)", case=case)


def _case(cls_name: str, args: dict[str, Any], seed: int, step: int) -> str:
    shown = ", ".join(f"{k}={v!r}" for k, v in args.items())
    return f"{cls_name}({shown}), update sequence seed={seed}, after {step} updates"


def _as_array(name: str, value: Any, case: str) -> np.ndarray:
    if not isinstance(value, np.ndarray):
        raise CheckFailed(f"{name}: expected a numpy array, got {type(value).__name__}\n  case: {case}")
    return value


def _compare_dist(student: Any, reference: Any, case: str, hint: str) -> None:
    """``dist()`` against the reference; the hint is sharpened when the result is not a distribution."""
    got = _as_array("dist()", run_student(student.dist, what="dist()", case=case), case)
    expected = reference.dist()
    if got.shape == expected.shape and np.all(np.isfinite(got)) and abs(float(got.sum()) - 1.0) > 1e-9:
        hint = f"dist() must sum to 1, yours sums to {float(got.sum()):.6g}; " + hint
    elif got.shape == expected.shape and int(np.argmax(got)) != int(np.argmax(expected)):
        hint = (f"the most likely arm should be {int(np.argmax(expected))}, yours is {int(np.argmax(got))} "
                "(ties go to the lowest index); " + hint)
    assert_close("dist()", got, expected, atol=EXACT, case=case,
                 hints={"shape": "dist() returns one probability per arm: shape [N]", "values": hint})


def _compare_best_action(student: Any, reference: Any, case: str) -> None:
    got = run_student(student.best_action, what="best_action()", case=case)
    assert_equal("best_action()", got, reference.best_action(), case=case,
                 hint="the arm with the highest value_estimates(); ties go to the lowest index")


def _compare_pair(method: str, labels: tuple[str, str], got: Any, expected: tuple[np.ndarray, np.ndarray],
                  case: str, hint: str) -> None:
    """A pair of [N] arrays such as ``arm_statistics()`` -> (means, counts) or ``posterior()`` -> (mean, std)."""
    if not isinstance(got, (tuple, list)) or len(got) != 2:
        raise CheckFailed(f"{method}: expected a pair ({', '.join(labels)}) of [N] arrays, got "
                          f"{type(got).__name__}\n  case: {case}")
    for label, value, reference in zip(labels, got, expected):
        assert_close(f"{method} {label}", _as_array(f"{method} {label}", value, case), reference, atol=EXACT,
                     case=case, hints={"values": hint, "dtype": FLOAT_HINT})


def _round_trip(student: Any, make_student: Callable[[], Any], reference: Any, case: str) -> None:
    """``state_dict`` of the student into a fresh student, and the reference's state as well: same dist()."""
    for source, label in ((student.state_dict(), "your state_dict()"), (reference.state_dict(), "the reference's")):
        clone = make_student()
        try:
            clone.load_state_dict(source)
        except (ValueError, TypeError) as err:
            raise CheckFailed(f"load_state_dict({label}) failed: {err}\n  case: {case}\n"
                              "  hint: keep the strategy's statistics in the attributes named in _state_keys") from err
        _compare_dist(clone, reference, f"{case}, after load_state_dict({label})",
                      "every statistic dist() reads must be restored by load_state_dict (listed in _state_keys)")


def _arm(value: Any, n_arms: int, case: str) -> int:
    try:
        arm = operator.index(value)
    except TypeError:
        raise CheckFailed(f"sample_action() must return an int arm index, got {type(value).__name__}\n"
                          f"  case: {case}") from None
    if not 0 <= arm < n_arms:
        raise CheckFailed(f"sample_action() returned {arm}, outside [0, {n_arms - 1}]\n  case: {case}")
    return arm


def _draw(bandit: Any, count: int, case: str) -> list[int]:
    return [_arm(run_student(bandit.sample_action, what="sample_action()", case=case), bandit.n_arms, case)
            for _ in range(count)]


def _frequency_tolerance(draws: int, reference_draws: int | None = None) -> float:
    """Five standard errors of a frequency in the worst case p = 1/2 (plus those of a sampled reference)."""
    tolerance = 5 * 0.5 / math.sqrt(draws)
    return tolerance + (5 * 0.5 / math.sqrt(reference_draws) if reference_draws else 0.0)


def _compare_frequencies(bandit: Any, probs: np.ndarray, case: str, hint: str,
                         reference_draws: int | None = None) -> None:
    """``DRAWS`` calls of ``sample_action()`` on a fixed state against the probabilities they should follow."""
    state = _snapshot(bandit)
    draws = _draw(bandit, DRAWS, case)
    frequencies = np.bincount(draws, minlength=bandit.n_arms) / DRAWS
    assert_close(f"frequencies of {DRAWS} sample_action() draws vs the arm probabilities", frequencies, probs,
                 atol=_frequency_tolerance(DRAWS, reference_draws), case=case, hint=hint)
    for key, value in _snapshot(bandit).items():
        if not np.array_equal(value, state[key]):
            raise CheckFailed(f"sample_action() changed the bandit's {key}\n  case: {case}\n"
                              "  hint: drawing an arm must not touch the statistics; only update() does")


def _snapshot(bandit: Any) -> dict[str, np.ndarray]:
    return {key: np.array(getattr(bandit, key), copy=True) for key in ("q", "n", "t")}


def _compare_reproducible(make: Callable[[], Any], case: str) -> None:
    """Same seed -> same draws whatever the global RNG does; a state_dict round trip replays the draws."""
    first, second = make(), make()
    global_state = np.random.get_state()
    try:
        np.random.seed(1)
        draws_first = _draw(first, 30, case)
        np.random.seed(2)
        draws_second = _draw(second, 30, case)
    finally:
        np.random.set_state(global_state)  # leave the notebook's global generator as it was
    assert_equal("draws of two bandits built with the same seed", draws_second, draws_first, case=case,
                 hint="draw with self.rng, the bandit's own generator, not np.random")
    state = first.state_dict()
    before = _draw(first, 20, case)
    first.load_state_dict(state)
    assert_equal("draws after load_state_dict(state_dict()) (they should replay)", _draw(first, 20, case), before,
                 case=case, hint="draw with self.rng: its state is part of state_dict(), so draws replay after loading")


# ----------------------------------------------------------------------------------------------
# 1. The base class
# ----------------------------------------------------------------------------------------------


def _probe_dist(self: Any) -> np.ndarray:
    """A state-dependent, never one-hot distribution, so that sampling can be checked against it."""
    logits = np.clip(self.q, -3.0, 3.0)
    weights = np.exp(logits - logits.max())
    return 0.8 * weights / weights.sum() + 0.2 / self.n_arms


@check("Bandit")
def bandit_base(student_cls: type, seeds: Any = None, edge_cases: bool = False) -> str:
    """``update`` (q, n, t after every update) and ``sample_action`` (frequencies, seeding, replay)."""
    probe = type("Bandit", (student_cls,), {"dist": _probe_dist})
    reference_probe = type("Bandit", (ref.Bandit,), {"dist": _probe_dist})
    n_updates = 0
    for seed in cases(seeds, [0, 1]):
        n_arms = 1 if edge_cases and seed % 3 == 0 else 3 + seed % 4
        sequence = _updates(seed, n_arms, 25, untried_arm=True, tied=edge_cases and seed % 2 == 1)
        case = _case("Bandit", {"n_arms": n_arms}, seed, 0)
        student = _construct(probe, {"n_arms": n_arms, "seed": seed}, case)
        reference = reference_probe(n_arms, seed=seed)
        for step, (arm, reward) in enumerate(sequence, 1):
            case = _case("Bandit", {"n_arms": n_arms}, seed, step) + f"; last update({arm}, {reward:.4g})"
            run_student(student.update, arm, reward, what="update()", case=case)
            reference.update(arm, reward)
            assert_equal("t (total pulls)", student.t, reference.t, case=case, hint="t grows by one per update")
            assert_close("n (pulls per arm)", student.n, reference.n, atol=0, case=case,
                         hint="n[action] grows by one per update; other arms keep their count")
            hint = "incremental mean: after counting the pull, move q[action] by (reward - q[action]) / n[action]"
            if not np.all(np.isfinite(student.q)):
                hint = "q is not finite: count the pull (n[action] += 1) before dividing by n[action]"
            assert_close("q (mean reward per arm)", student.q, reference.q, atol=EXACT, case=case, hint=hint)
            n_updates += 1
        _compare_frequencies(student, reference.dist(), case,
                             "draw from self.dist() with self.rng.choice(self.n_arms, p=...)")
        _compare_reproducible(lambda: probe(n_arms, seed=seed + 100), case)
    return f"{n_updates} updates match; sampling follows dist(), is seeded and replays"


# ----------------------------------------------------------------------------------------------
# 2-3. Uniform and epsilon-greedy
# ----------------------------------------------------------------------------------------------


def _run_strategy(student_cls: type, reference_cls: type, args: dict[str, Any], seed: int,
                  sequence: list[tuple[int, float]], compare: Callable[[Any, Any, str], None],
                  prepared: type | None = None) -> int:
    """Build both bandits, compare before and after every update, then a state_dict round trip.

    ``prepared`` is the class actually built (the student's class with reference parts); by default the student's
    class with the reference ``update`` and ``sample_action``.
    """
    cls = prepared or _isolated(student_cls, **REFERENCE_BASE)
    name = student_cls.__name__
    student = _construct(cls, {**args, "seed": seed}, _case(name, args, seed, 0))
    reference = reference_cls(**args, seed=seed)
    compare(student, reference, _case(name, args, seed, 0))
    for step, (arm, reward) in enumerate(sequence, 1):
        case = _case(name, args, seed, step) + f"; last update({arm}, {reward:.4g})"
        run_student(student.update, arm, reward, what="update()", case=case)
        reference.update(arm, reward)
        compare(student, reference, case)
    _round_trip(student, lambda: cls(**args, seed=seed + 1), reference, _case(name, args, seed, len(sequence)))
    return len(sequence) + 1


@check("UniformBandit")
def uniform_bandit(student_cls: type, seeds: Any = None, edge_cases: bool = False) -> str:
    """``dist()`` is 1/N for every arm, before and after updates; ``best_action`` follows the means."""

    def compare(student: Any, reference: Any, case: str) -> None:
        _compare_dist(student, reference, case, "every arm has probability 1/N: np.full(N, 1 / N)")
        _compare_best_action(student, reference, case)

    states = 0
    for seed in cases(seeds, [0, 1]):
        for n_arms in [2, 5, 10] + ([1, 31] if edge_cases else []):
            sequence = _updates(seed, n_arms, 12, untried_arm=edge_cases)
            states += _run_strategy(student_cls, ref.UniformBandit, {"n_arms": n_arms}, seed, sequence, compare)
    return f"dist() and best_action() match in {states} states"


@check("EpsGreedyBandit")
def eps_greedy_bandit(student_cls: type, seeds: Any = None, edge_cases: bool = False) -> str:
    """``dist()`` = (1 - eps) on the greedy arm plus eps spread uniformly, after every update."""

    def compare(student: Any, reference: Any, case: str) -> None:
        _compare_dist(student, reference, case,
                      "(1 - eps) on best_action() plus eps / N on every arm: mix_with_uniform(one_hot(...), eps)")

    states = 0
    for seed in cases(seeds, [0, 1]):
        n_arms = 3 + seed % 4
        configs = [0.1, 0.37] + ([0.0, 1.0] if edge_cases else [])
        for eps in configs:
            sequence = _updates(seed, n_arms, 20, untried_arm=edge_cases, tied=edge_cases and eps == 0.1)
            states += _run_strategy(student_cls, ref.EpsGreedyBandit, {"n_arms": n_arms, "eps": eps}, seed,
                                    sequence, compare)
    return f"dist() matches in {states} states"


# ----------------------------------------------------------------------------------------------
# 4-5. UCB1
# ----------------------------------------------------------------------------------------------


@check("ucb_scores")
def ucb_scores(student: Callable[..., np.ndarray], seeds: Any = None, edge_cases: bool = False) -> str:
    """Scores for integer and fractional (discounted) counts, several beta and numerators; inputs unchanged."""
    inputs = []
    for seed in cases(seeds, [0, 1]):
        rng = np.random.default_rng(seed)
        n_arms = 4 + seed % 5
        means = rng.normal(size=n_arms)
        int_counts = rng.integers(0, 6, size=n_arms)
        int_counts[seed % n_arms] = 0
        float_counts = rng.uniform(0.0, 3.0, size=n_arms)
        float_counts[(seed + 1) % n_arms] = 0.0
        for counts in (int_counts, float_counts):
            for beta in (0.0, 0.7, 2.0):
                for numerator in (math.log(max(float(counts.sum()), 1.0)), 1.0, 0.0):
                    inputs.append((f"seed={seed}", means, counts, beta, numerator))
    if edge_cases:
        inputs += [
            ("no arm tried yet", np.zeros(3), np.zeros(3, dtype=np.int64), 1.0, 0.0),
            ("one arm", np.array([0.3]), np.array([4]), 1.5, math.log(4)),
            ("huge counts", np.array([1.0, 2.0]), np.array([10**9, 10**9]), 2.0, math.log(2 * 10**9)),
            ("beta 0 and untried arms", np.array([-1.0, 5.0, 0.0]), np.array([3, 0, 1]), 0.0, math.log(4)),
        ]
    for label, means, counts, beta, numerator in inputs:
        case = f"{label}, means [N={means.shape[0]}], counts {counts.tolist()}, beta={beta}, " \
               f"bonus_numerator={numerator:.4g}"
        means_in, counts_in = means.copy(), counts.copy()
        got = run_student(student, means_in, counts_in, beta, numerator, what="ucb_scores", case=case)
        expected = ref.ucb_scores(means, counts, beta, numerator)
        got = _as_array("ucb_scores", got, case)
        hint = "tried arms: mean + beta * sqrt(bonus_numerator / count); untried arms (count 0): +inf"
        if got.shape == expected.shape and np.isnan(got).any():
            hint = ("nan appears (0 * inf or 0 / 0): fill untried arms with +inf and compute the bonus for tried arms "
                    "only")
        elif got.shape == expected.shape and not np.all(np.isinf(got[counts == 0])):
            hint = "arms with count 0 must score +inf, so that every arm is pulled once first"
        assert_close("ucb_scores", got, expected, atol=EXACT, case=case,
                     hints={"shape": "one score per arm: [N]", "values": hint})
        if not (np.array_equal(means_in, means) and np.array_equal(counts_in, counts)):
            raise CheckFailed(f"ucb_scores changed its inputs in place\n  case: {case}\n"
                              "  hint: write into a new array (np.full) instead of the means or counts")
    return f"{len(inputs)} inputs"


def _compare_ucb_core(student: Any, reference: Any, case: str) -> None:
    """beta, bonus_numerator, scores, dist and best_action of a UCB bandit."""
    beta = student.beta
    if isinstance(beta, bool) or not isinstance(beta, (int, float, np.integer, np.floating)):
        raise CheckFailed(f"beta: expected a number, got {beta!r}\n  case: {case}\n"
                          "  hint: with beta='auto', self.beta holds the current number (reset() sets it to 0.0)")
    assert_close("beta", float(beta), reference.beta, atol=EXACT, case=case,
                 hint="beta='auto': the largest |reward| seen so far (0 before any update); "
                      "a numeric beta never changes")
    for counts in (reference.n.copy(), np.zeros(reference.n_arms, dtype=np.int64)):
        got = run_student(student.bonus_numerator, counts, what="bonus_numerator(counts)", case=case)
        assert_close(f"bonus_numerator({counts.tolist()})", got, reference.bonus_numerator(counts), atol=EXACT,
                     case=case, hint="UCB1: log of the total count, floored at 1 pull (log 1 = 0, never -inf)")
    got = _as_array("scores()", run_student(student.scores, what="scores()", case=case), case)
    assert_close("scores()", got, reference.scores(), atol=EXACT, case=case,
                 hint="ucb_scores(means, counts, self.beta, self.bonus_numerator(counts)) with "
                      "(means, counts) = self.arm_statistics(); if check.ucb_scores fails, fix that first")
    _compare_dist(student, reference, case, "one-hot on the highest score (provided dist())")
    _compare_best_action(student, reference, case)


@check("UCBBandit")
def ucb_bandit(student_cls: type, seeds: Any = None, edge_cases: bool = False) -> str:
    """beta (numeric and 'auto'), bonus_numerator, scores, dist and best_action after every update."""
    states = 0
    for seed in cases(seeds, [0, 1]):
        n_arms = 3 + seed % 4
        configs = [{"beta": 1.0}, {"beta": "auto"}] + ([{"beta": 0.0}, {"beta": "auto", "negative": True},
                                                         {"beta": 0.5, "n_arms": 1}] if edge_cases else [])
        for config in configs:
            arms = config.get("n_arms", n_arms)
            sequence = _updates(seed, arms, 25, untried_arm=edge_cases)
            if config.get("negative"):
                sequence = [(a, -abs(r) - 0.5) for a, r in sequence]
            states += _run_strategy(student_cls, ref.UCBBandit, {"n_arms": arms, "beta": config["beta"]}, seed,
                                    sequence, _compare_ucb_core)
    return f"beta, bonus_numerator, scores and dist() match in {states} states"


# ----------------------------------------------------------------------------------------------
# 6-8. Non-stationary UCB variants
# ----------------------------------------------------------------------------------------------


def _observe_reference_ucb(self: Any, action: int, reward: float) -> None:
    """The reference ``UCBBandit._observe`` (automatic beta); it calls no ``super()``, so it can sit anywhere."""
    ref.UCBBandit._observe(self, action, reward)


def _on_reference_ucb(student_cls: type) -> type:
    """The student's UCB variant on top of the reference's UCB parts.

    A class named ``UCBBandit`` holding the reference ``_observe``, ``scores`` and ``bonus_numerator`` is put
    between the student's class and the student's ``UCBBandit`` (C3 order: student class, shim, student UCB), so
    that the ``super()._observe`` in the student's ``_observe`` reaches the reference code too.
    """
    parent = next((k for k in student_cls.__mro__[1:] if k.__name__ == "UCBBandit"), None)
    if parent is None:
        raise CheckFailed(f"{student_cls.__name__} must subclass UCBBandit (as the provided class line does)")
    shim = type("UCBBandit", (parent,), {"_observe": _observe_reference_ucb, "scores": ref.UCBBandit.scores,
                                         "bonus_numerator": ref.UCBBandit.bonus_numerator})
    return type(student_cls.__name__, (student_cls, shim), dict(REFERENCE_BASE))


@check("DiscountedUCBBandit")
def discounted_ucb_bandit(student_cls: type, seeds: Any = None, edge_cases: bool = False) -> str:
    """Discounted sums and counts, arm_statistics, dist and best_action after every update."""

    def compare(student: Any, reference: Any, case: str) -> None:
        hint = "every pull: multiply all sums and counts by gamma, then add the reward and 1 to the pulled arm"
        assert_close("discounted_sums", student.discounted_sums, reference.discounted_sums, atol=EXACT,
                     case=case, hint=hint)
        assert_close("discounted_counts", student.discounted_counts, reference.discounted_counts, atol=EXACT,
                     case=case, hint=hint)
        got = run_student(student.arm_statistics, what="arm_statistics()", case=case)
        _compare_pair("arm_statistics()", ("means", "counts"), got, reference.arm_statistics(), case,
                      "(masked_mean(discounted_sums, discounted_counts), discounted_counts)")
        _compare_dist(student, reference, case, "UCB on the discounted statistics")
        _compare_best_action(student, reference, case)

    states = 0
    for seed in cases(seeds, [0, 1]):
        n_arms = 3 + seed % 4
        configs = [(1.0, 0.9), (0.5, 0.7)] + ([(1.0, 1.0), (2.0, 0.1), ("auto", 0.8)] if edge_cases else [])
        for beta, gamma in configs:
            sequence = _updates(seed, n_arms, 25, untried_arm=edge_cases)
            states += _run_strategy(student_cls, ref.DiscountedUCBBandit,
                                    {"n_arms": n_arms, "beta": beta, "gamma": gamma}, seed, sequence, compare,
                                    _on_reference_ucb(student_cls))
    return f"statistics and dist() match in {states} states"


@check("SlidingWindowUCBBandit")
def sliding_window_ucb_bandit(student_cls: type, seeds: Any = None, edge_cases: bool = False) -> str:
    """The ring buffer (exactly), arm_statistics over the window, dist and best_action after every update."""

    def compare(student: Any, reference: Any, case: str) -> None:
        hint = "slot = (self.t - 1) % self.window (update has counted the pull already); store action and reward"
        assert_close("window_actions", student.window_actions, reference.window_actions, atol=0, case=case,
                     hint=hint)
        assert_close("window_rewards", student.window_rewards, reference.window_rewards, atol=0, case=case,
                     hint=hint)
        got = run_student(student.arm_statistics, what="arm_statistics()", case=case)
        _compare_pair("arm_statistics()", ("means", "counts"), got, reference.arm_statistics(), case,
                      "only filled slots (action >= 0); counts and reward sums per arm with np.bincount(..., "
                      "minlength=N), means with masked_mean")
        _compare_dist(student, reference, case, "UCB on the statistics of the window")
        _compare_best_action(student, reference, case)

    states = 0
    for seed in cases(seeds, [0, 1]):
        n_arms = 3 + seed % 4
        configs = [(1.0, 7), (0.5, 3)] + ([(1.0, 1), (2.0, 100), ("auto", 5)] if edge_cases else [])
        for beta, window in configs:
            sequence = _updates(seed, n_arms, 30, untried_arm=edge_cases)
            states += _run_strategy(student_cls, ref.SlidingWindowUCBBandit,
                                    {"n_arms": n_arms, "beta": beta, "window": window}, seed, sequence, compare,
                                    _on_reference_ucb(student_cls))
    return f"window, statistics and dist() match in {states} states"


@check("Agent57Bandit")
def agent57_bandit(student_cls: type, seeds: Any = None, edge_cases: bool = False) -> str:
    """bonus_numerator, dist and best_action on the reference's state (loaded) after every update."""
    cls = _isolated(student_cls, **REFERENCE_BASE, scores=ref.UCBBandit.scores,
                    arm_statistics=ref.SlidingWindowUCBBandit.arm_statistics)
    states = 0
    for seed in cases(seeds, [0, 1]):
        n_arms = 3 + seed % 4
        configs = [("auto", 7, 0.5), (1.0, 5, 0.2)] + ([(0.5, 1, 0.0), (1.0, 4, 1.0)] if edge_cases else [])
        for beta, window, eps in configs:
            args = {"n_arms": n_arms, "beta": beta, "window": window, "eps": eps}
            reference = ref.Agent57Bandit(**args, seed=seed)
            student = _construct(cls, {**args, "seed": seed}, _case(student_cls.__name__, args, seed, 0))
            sequence = _updates(seed, n_arms, 20, untried_arm=edge_cases)
            for step in range(len(sequence) + 1):
                if step:
                    reference.update(*sequence[step - 1])
                case = _case(student_cls.__name__, args, seed, step) + " (state loaded from the reference)"
                run_student(student.load_state_dict, reference.state_dict(), what="load_state_dict()", case=case)
                got = run_student(student.bonus_numerator, reference.n.copy(), what="bonus_numerator()", case=case)
                assert_close("bonus_numerator(counts)", got, 1.0, atol=0, case=case,
                             hint="Agent57's bonus is beta * sqrt(1 / n_window): the numerator is 1, no log")
                _compare_dist(student, reference, case,
                              "the sliding-window UCB choice (super().dist()) mixed with uniform by eps")
                _compare_best_action(student, reference, case)
                states += 1
    return f"bonus and dist() match in {states} states"


# ----------------------------------------------------------------------------------------------
# 9. Thompson sampling
# ----------------------------------------------------------------------------------------------


def _win_probabilities(mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """[N] P(arm's posterior draw is the largest), from many draws of the reference posterior."""
    draws = np.random.default_rng(0).normal(mean, std, size=(REFERENCE_DRAWS, mean.shape[0]))
    return np.bincount(draws.argmax(axis=1), minlength=mean.shape[0]) / REFERENCE_DRAWS


@check("ThompsonBandit")
def thompson_bandit(student_cls: type, seeds: Any = None, edge_cases: bool = False) -> str:
    """posterior (mean, std) after every update; sample_action's frequencies, seeding and replay."""

    def compare(student: Any, reference: Any, case: str) -> None:
        got = run_student(student.posterior, what="posterior()", case=case)
        _compare_pair("posterior()", ("mean", "std"), got, reference.posterior(), case,
                      "precision = 1/prior_std^2 + n/noise_std^2; mean = (prior_mean/prior_std^2 + "
                      "n*q/noise_std^2) / precision; std = 1/sqrt(precision), a std, not a variance")
        _compare_dist(student, reference, case, "dist() is provided; it uses your posterior()")
        _compare_best_action(student, reference, case)

    states = 0
    frequencies = 0
    for seed in cases(seeds, [0, 1]):
        n_arms = 3 + seed % 3
        configs = [(0.0, 1.0, 1.0), (1.5, 0.3, 2.5)] + ([(-2.0, 10.0, 0.1)] if edge_cases else [])
        for prior_mean, prior_std, noise_std in configs:
            args = {"n_arms": n_arms, "prior_mean": prior_mean, "prior_std": prior_std, "noise_std": noise_std}
            sequence = _updates(seed, n_arms, 20, untried_arm=edge_cases)
            states += _run_strategy(student_cls, ref.ThompsonBandit, args, seed, sequence, compare,
                                    _isolated(student_cls, update=ref.Bandit.update))
        # Sampling on an uncertain state: a few updates, so that several arms have a fair chance.
        args = {"n_arms": n_arms, "prior_mean": 0.0, "prior_std": 1.0, "noise_std": 1.0}
        cls = _isolated(student_cls, update=ref.Bandit.update)
        student = _construct(cls, {**args, "seed": seed}, _case(student_cls.__name__, args, seed, 0))
        reference = ref.ThompsonBandit(**args, seed=seed)
        for arm, reward in _updates(seed, n_arms, 4):
            student.update(arm, reward)
            reference.update(arm, reward)
        case = _case(student_cls.__name__, args, seed, 4)
        _compare_frequencies(student, _win_probabilities(*reference.posterior()), case,
                             "draw one value per arm from Normal(mean, std) with self.rng and play the largest "
                             "(argmax_lowest); playing the posterior mean would be greedy", REFERENCE_DRAWS)
        _compare_reproducible(lambda: _replayed(cls, args, seed), case)
        frequencies += 1
    if edge_cases:
        single = _construct(_isolated(student_cls, update=ref.Bandit.update), {"n_arms": 1, "seed": 0}, "n_arms=1")
        assert_equal("draws with a single arm", _draw(single, 5, "n_arms=1"), [0] * 5, case="n_arms=1")
    return f"posterior matches in {states} states; sampling follows P(best) in {frequencies} states"


def _replayed(cls: type, args: dict[str, Any], seed: int) -> Any:
    bandit = cls(**args, seed=seed + 100)
    for arm, reward in _updates(seed, args["n_arms"], 4):
        bandit.update(arm, reward)
    return bandit


# ----------------------------------------------------------------------------------------------
# 10. Your own bandit
# ----------------------------------------------------------------------------------------------

OWN_ARMS = 10
OWN_STEPS = 1000
OWN_PROBLEMS = 5
OWN_REGRET_RATIO = 0.75  # the bandit must cut Uniform's regret by at least a quarter


def _problem(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A 10-armed Gaussian problem: means ~ N(0, 1), rewards = mean + N(0, 1) noise, [T, N] drawn up front."""
    rng = np.random.default_rng(1000 + seed)
    return rng.normal(size=OWN_ARMS), rng.normal(size=(OWN_STEPS, OWN_ARMS))


def _defined_by_base(cls: type, name: str) -> bool:
    """True when ``name`` comes from the notebook's ``Bandit`` base class, not from the strategy itself."""
    for klass in cls.__mro__:
        if name in vars(klass):
            return klass.__name__ == "Bandit"
    return False


def _play(bandit: Any, means: np.ndarray, noise: np.ndarray, steps: int, case: str) -> tuple[list[int], float]:
    """Let the bandit choose ``steps`` arms on a problem; returns the arms and the regret."""
    arms = []
    for t in range(steps):
        arm = _arm(run_student(bandit.sample_action, what="sample_action()", case=case), OWN_ARMS, case)
        run_student(bandit.update, arm, float(means[arm] + noise[t, arm]), what="update()", case=case)
        arms.append(arm)
    return arms, float(steps * means.max() - means[arms].sum())


@check("your bandit")
def own_bandit(student_cls: type, seeds: Any = None) -> str:
    """A valid Bandit (dist is a distribution that sample_action follows, seeded, round trips) that beats Uniform."""
    required = ("dist", "update", "sample_action", "best_action", "state_dict", "load_state_dict")
    if not all(callable(getattr(student_cls, name, None)) for name in required):
        raise CheckFailed(f"{student_cls.__name__} must subclass Bandit (it needs {', '.join(required)})")
    cls = _isolated(student_cls, **{name: method for name, method in REFERENCE_BASE.items()
                                    if _defined_by_base(student_cls, name)})
    name = f"{student_cls.__name__}({OWN_ARMS}, seed=...)"

    def make(seed: int) -> Any:
        try:
            return cls(OWN_ARMS, seed=seed)
        except TypeError as err:
            raise CheckFailed(f"{name} raised TypeError: {err}\n  hint: give every constructor parameter you add "
                              "a default, and keep seed as a keyword argument") from err

    problem_seeds = cases(seeds, range(OWN_PROBLEMS))
    regrets, uniform_regrets = [], []
    for seed in problem_seeds:
        means, noise = _problem(seed)
        bandit = make(seed)
        case = f"{name}, 10-armed problem seed={seed}"
        regret = 0.0
        for start in range(0, OWN_STEPS, 100):
            _check_distribution(bandit, f"{case}, after {start} updates")
            if seed == problem_seeds[0] and start == 100:  # still exploring: several arms have a fair chance
                probs = run_student(bandit.dist, what="dist()", case=case).copy()
                _compare_frequencies(bandit, probs, f"{case}, after {start} updates", "sample_action() must draw "
                                     "from dist(): keep the provided Bandit.sample_action, or make dist() report "
                                     "what your sample_action does")
            regret += _play(bandit, means, noise[start:start + 100], 100, case)[1]
        regrets.append(regret)
        uniform_regrets.append(OWN_STEPS * float(means.max() - means.mean()))
    means, noise = _problem(problem_seeds[0])
    twice = [_play(make(problem_seeds[0]), means, noise, 200, name)[0] for _ in range(2)]
    assert_equal("arms chosen by two bandits with the same seed", twice[1], twice[0], case=name,
                 hint="draw with self.rng (seeded by the constructor), not np.random or random")
    _round_trip_own(make, means, noise, name)
    mean_regret, uniform = float(np.mean(regrets)), float(np.mean(uniform_regrets))
    if mean_regret > OWN_REGRET_RATIO * uniform:
        raise CheckFailed(f"your bandit: mean regret {mean_regret:.1f} over {len(regrets)} problems of {OWN_STEPS} "
                          f"steps > {OWN_REGRET_RATIO:g} x Uniform's {uniform:.1f} = {OWN_REGRET_RATIO * uniform:.1f}\n"
                          "  hint: exploit what you learn: put more probability on arms with higher estimates")
    return f"a valid bandit; regret {mean_regret:.1f} vs Uniform's {uniform:.1f} ({mean_regret / uniform:.0%})"


def _check_distribution(bandit: Any, case: str) -> None:
    probs = _as_array("dist()", run_student(bandit.dist, what="dist()", case=case), case)
    if probs.shape != (OWN_ARMS,):
        raise CheckFailed(f"dist(): shape should be [{OWN_ARMS}], got {list(probs.shape)}\n  case: {case}")
    if not (np.all(np.isfinite(probs)) and np.all(probs >= 0)):
        raise CheckFailed(f"dist() has negative or non-finite entries: {np.round(probs, 4).tolist()}\n  case: {case}")
    if abs(float(probs.sum()) - 1.0) > 1e-9:
        raise CheckFailed(f"dist() sums to {float(probs.sum()):.9g}, not 1\n  case: {case}")
    arm = run_student(bandit.best_action, what="best_action()", case=case)
    if not isinstance(arm, (int, np.integer)) or not 0 <= arm < OWN_ARMS:
        raise CheckFailed(f"best_action() should be an arm index in [0, {OWN_ARMS - 1}], got {arm!r}\n  case: {case}")


def _round_trip_own(make: Callable[[int], Any], means: np.ndarray, noise: np.ndarray, case: str) -> None:
    """Save after 100 steps, load into a fresh bandit: the same dist() and the same next 50 arms."""
    original = make(0)
    _play(original, means, noise, 100, case)
    clone = make(7)
    try:
        clone.load_state_dict(original.state_dict())
    except (ValueError, TypeError) as err:
        raise CheckFailed(f"load_state_dict(state_dict()) failed: {err}\n  case: {case}\n"
                          "  hint: list extra statistics in _state_keys") from err
    case = f"{case}, after a state_dict round trip at step 100"
    assert_close("dist() after load_state_dict", run_student(clone.dist, what="dist()", case=case),
                 original.dist(), atol=EXACT, case=case,
                 hint="every statistic dist() reads must be listed in _state_keys so that state_dict() saves it")
    assert_equal("the next 50 arms after load_state_dict", _play(clone, means, noise[100:], 50, case)[0],
                 _play(original, means, noise[100:], 50, case)[0], case=case,
                 hint="save every statistic in _state_keys and draw with self.rng")
