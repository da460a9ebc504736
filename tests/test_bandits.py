"""Tests for hsd3_learn.models.bandits: helpers, the Bandit API of every strategy, and learning behaviour."""

import math

import numpy as np
import pytest

from hsd3_learn.models.bandits import (
    BANDITS,
    Agent57Bandit,
    Bandit,
    DiscountedUCBBandit,
    EpsGreedyBandit,
    SlidingWindowUCBBandit,
    ThompsonBandit,
    UCBBandit,
    UniformBandit,
    argmax_lowest,
    make_bandit,
    masked_mean,
    mix_with_uniform,
    one_hot,
    ucb_scores,
)

N_ARMS = 5


def feed(bandit: Bandit, steps: int, reward_seed: int, means: np.ndarray | None = None) -> list[int]:
    """Play ``steps`` rounds with Gaussian rewards from a separate seeded generator; return the arms."""
    env = np.random.default_rng(reward_seed)
    means = np.linspace(-1.0, 1.0, bandit.n_arms) if means is None else means
    actions = []
    for _ in range(steps):
        action = bandit.sample_action()
        bandit.update(action, means[action] + env.normal())
        actions.append(action)
    return actions


# ----------------------------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------------------------


def test_argmax_lowest_breaks_ties_towards_lowest_index():
    assert argmax_lowest(np.array([0.0, 2.0, 1.0, 2.0])) == 1
    assert argmax_lowest(np.array([np.inf, 3.0, np.inf])) == 0
    assert isinstance(argmax_lowest(np.zeros(3)), int)


def test_one_hot_and_mix_with_uniform():
    np.testing.assert_array_equal(one_hot(4, 2), [0.0, 0.0, 1.0, 0.0])
    mixed = mix_with_uniform(one_hot(4, 2), 0.2)
    np.testing.assert_allclose(mixed, [0.05, 0.05, 0.85, 0.05])
    np.testing.assert_allclose(mix_with_uniform(one_hot(4, 0), 1.0), np.full(4, 0.25))


def test_masked_mean_is_zero_without_data():
    means = masked_mean(np.array([3.0, 0.0, -1.0]), np.array([2.0, 0.0, 0.5]))
    np.testing.assert_allclose(means, [1.5, 0.0, -2.0])


def test_ucb_scores_formula_and_untried_arms():
    means = np.array([1.0, 0.5, 0.0])
    counts = np.array([4.0, 1.0, 0.0])
    scores = ucb_scores(means, counts, beta=2.0, bonus_numerator=math.log(5))
    expected = [1.0 + 2.0 * math.sqrt(math.log(5) / 4), 0.5 + 2.0 * math.sqrt(math.log(5) / 1)]
    np.testing.assert_allclose(scores[:2], expected)
    assert scores[2] == np.inf
    zero_beta = ucb_scores(means, counts, beta=0.0, bonus_numerator=1.0)
    assert not np.isnan(zero_beta).any() and zero_beta[2] == np.inf


# ----------------------------------------------------------------------------------------------
# The Bandit API, for every registered strategy
# ----------------------------------------------------------------------------------------------

ALL_NAMES = sorted(BANDITS)


@pytest.mark.parametrize("name", ALL_NAMES)
def test_initial_state_shapes_and_dist(name):
    bandit = make_bandit(name, N_ARMS, seed=0)
    assert isinstance(bandit, BANDITS[name])
    assert bandit.q.shape == (N_ARMS,) and bandit.q.dtype == np.float64
    assert bandit.n.shape == (N_ARMS,) and bandit.n.dtype == np.int64
    assert bandit.t == 0
    probs = bandit.dist()
    assert probs.shape == (N_ARMS,)
    assert (probs >= 0).all() and probs.sum() == pytest.approx(1.0)


@pytest.mark.parametrize("name", ALL_NAMES)
def test_update_keeps_running_mean_and_counts(name):
    bandit = make_bandit(name, 3, seed=0)
    for action, reward in [(0, 1.0), (2, -4.0), (0, 3.0), (np.int64(2), np.float32(2.0))]:
        bandit.update(action, reward)
    np.testing.assert_allclose(bandit.q, [2.0, 0.0, -1.0])
    np.testing.assert_array_equal(bandit.n, [2, 0, 2])
    assert bandit.t == 4


@pytest.mark.parametrize("name", ALL_NAMES)
def test_dist_draws_nothing_from_the_bandit_generator(name):
    bandit = make_bandit(name, N_ARMS, seed=1)
    feed(bandit, 20, reward_seed=2)
    before = bandit.rng.bit_generator.state
    first = bandit.dist()
    assert bandit.rng.bit_generator.state == before
    np.testing.assert_array_equal(bandit.dist(), first)
    assert first.sum() == pytest.approx(1.0)


@pytest.mark.parametrize("name", ALL_NAMES)
def test_dist_matches_sampling_frequencies(name):
    bandit = make_bandit(name, N_ARMS, seed=3)
    feed(bandit, 12, reward_seed=4)
    draws = 4000
    counts = np.bincount([bandit.sample_action() for _ in range(draws)], minlength=N_ARMS)
    # Binomial std of a frequency is <= 0.008 for 4000 draws; the tolerance is about 4 std.
    np.testing.assert_allclose(counts / draws, bandit.dist(), atol=0.035)


@pytest.mark.parametrize("name", ALL_NAMES)
def test_sample_and_best_action_are_ints_in_range(name):
    bandit = make_bandit(name, N_ARMS, seed=5)
    actions = feed(bandit, 30, reward_seed=6)
    assert all(isinstance(a, int) and 0 <= a < N_ARMS for a in actions)
    best = bandit.best_action()
    assert isinstance(best, int)
    assert best == int(np.argmax(bandit.value_estimates()))
    assert bandit.value_estimates().shape == (N_ARMS,)


@pytest.mark.parametrize("name", ALL_NAMES)
def test_same_seed_reproduces_the_same_run(name):
    first = make_bandit(name, N_ARMS, seed=7)
    second = make_bandit(name, N_ARMS, seed=7)
    assert feed(first, 60, reward_seed=8) == feed(second, 60, reward_seed=8)
    np.testing.assert_array_equal(first.q, second.q)


@pytest.mark.parametrize("name", ALL_NAMES)
def test_state_dict_round_trip_continues_identically(name):
    original = make_bandit(name, N_ARMS, seed=9)
    feed(original, 40, reward_seed=10)
    state = original.state_dict()
    continued = feed(original, 40, reward_seed=11)
    state_copy_after_run = original.state_dict()

    restored = make_bandit(name, N_ARMS, seed=12345)
    restored.load_state_dict(state)
    assert feed(restored, 40, reward_seed=11) == continued
    for key, value in state_copy_after_run.items():
        if key != "rng":
            np.testing.assert_array_equal(getattr(restored, key), value)
    assert restored.rng.bit_generator.state == original.rng.bit_generator.state


@pytest.mark.parametrize("name", ALL_NAMES)
def test_state_dict_is_a_copy(name):
    bandit = make_bandit(name, N_ARMS, seed=0)
    state = bandit.state_dict()
    bandit.update(0, 5.0)
    assert state["t"] == 0 and state["q"][0] == 0.0


@pytest.mark.parametrize("name", ALL_NAMES)
def test_reset_forgets_statistics(name):
    bandit = make_bandit(name, N_ARMS, seed=0)
    fresh = make_bandit(name, N_ARMS, seed=0)
    feed(bandit, 30, reward_seed=1)
    bandit.reset()
    for key in fresh.state_dict():
        if key != "rng":
            np.testing.assert_array_equal(getattr(bandit, key), getattr(fresh, key))
    np.testing.assert_array_equal(bandit.dist(), fresh.dist())


@pytest.mark.parametrize("name", ALL_NAMES)
def test_repr_names_class_and_parameters(name):
    text = repr(make_bandit(name, N_ARMS))
    assert text.startswith(BANDITS[name].__name__ + "(") and f"n_arms={N_ARMS}" in text


def test_repr_lists_strategy_parameters():
    assert repr(EpsGreedyBandit(3, eps=0.2)) == "EpsGreedyBandit(n_arms=3, eps=0.2)"
    assert repr(Agent57Bandit(3)) == "Agent57Bandit(n_arms=3, beta='auto', window=500, eps=0.5)"
    assert "gamma=0.9" in repr(DiscountedUCBBandit(3))
    assert "noise_std=1.0" in repr(ThompsonBandit(3))


# ----------------------------------------------------------------------------------------------
# Errors
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ALL_NAMES)
@pytest.mark.parametrize(
    "action, reward, error",
    [
        (-1, 0.0, ValueError),
        (N_ARMS, 0.0, ValueError),
        (1.0, 0.0, TypeError),
        ("0", 0.0, TypeError),
        (0, float("nan"), ValueError),
        (0, float("inf"), ValueError),
        (0, "high", TypeError),
        (0, None, TypeError),
    ],
)
def test_update_rejects_bad_arms_and_rewards(name, action, reward, error):
    bandit = make_bandit(name, N_ARMS)
    with pytest.raises(error, match="action|reward"):
        bandit.update(action, reward)
    assert bandit.t == 0


@pytest.mark.parametrize(
    "name, kwargs, error, match",
    [
        ("uniform", {"n_arms": 0}, ValueError, "n_arms"),
        ("uniform", {"n_arms": 2.0}, TypeError, "n_arms"),
        ("uniform", {"n_arms": 2, "seed": -1}, ValueError, "seed"),
        ("uniform", {"n_arms": 2, "seed": "a"}, TypeError, "seed"),
        ("eps_greedy", {"n_arms": 2, "eps": 1.5}, ValueError, "eps"),
        ("eps_greedy", {"n_arms": 2, "eps": True}, TypeError, "eps"),
        ("ucb", {"n_arms": 2, "beta": -1.0}, ValueError, "beta"),
        ("ucb", {"n_arms": 2, "beta": "max"}, ValueError, "beta"),
        ("ucb", {"n_arms": 2, "beta": float("inf")}, ValueError, "beta"),
        ("discounted_ucb", {"n_arms": 2, "gamma": 0.0}, ValueError, "gamma"),
        ("discounted_ucb", {"n_arms": 2, "gamma": 1.5}, ValueError, "gamma"),
        ("sliding_window_ucb", {"n_arms": 2, "window": 0}, ValueError, "window"),
        ("agent57", {"n_arms": 2, "eps": -0.1}, ValueError, "eps"),
        ("thompson", {"n_arms": 2, "prior_std": 0.0}, ValueError, "prior_std"),
        ("thompson", {"n_arms": 2, "noise_std": -1.0}, ValueError, "noise_std"),
        ("thompson", {"n_arms": 2, "prior_mean": float("nan")}, ValueError, "prior_mean"),
    ],
)
def test_constructors_reject_bad_parameters(name, kwargs, error, match):
    with pytest.raises(error, match=match):
        make_bandit(name, **kwargs)


def test_make_bandit_unknown_name_lists_valid_names():
    with pytest.raises(ValueError, match="unknown bandit 'ucb2'.*uniform.*thompson"):
        make_bandit("ucb2", 3)


def test_make_bandit_passes_keyword_arguments():
    bandit = make_bandit("sliding_window_ucb", 4, beta="auto", window=7, seed=0)
    assert isinstance(bandit, SlidingWindowUCBBandit) and bandit.window == 7 and bandit.beta_setting == "auto"


def test_load_state_dict_rejects_wrong_keys_and_shapes():
    bandit = SlidingWindowUCBBandit(3, window=10)
    state = bandit.state_dict()
    with pytest.raises(ValueError, match="state keys"):
        bandit.load_state_dict({k: v for k, v in state.items() if k != "beta"})
    with pytest.raises(ValueError, match="window_actions"):
        SlidingWindowUCBBandit(3, window=20).load_state_dict(state)


@pytest.mark.parametrize(
    "cls, positional",
    [
        (UniformBandit, ()),
        (EpsGreedyBandit, (0.1,)),
        (UCBBandit, (1.0,)),
        (DiscountedUCBBandit, (1.0, 0.9)),
        (SlidingWindowUCBBandit, (1.0, 500)),
        (Agent57Bandit, ("auto", 500, 0.5)),
        (ThompsonBandit, (0.0, 1.0)),
    ],
)
def test_seed_is_keyword_only(cls, positional):
    with pytest.raises(TypeError, match="positional"):
        cls(3, *positional, 0)
    bandit, reference = cls(3, *positional, seed=4), cls(3, *positional, seed=4)
    assert feed(bandit, 20, reward_seed=0) == feed(reference, 20, reward_seed=0)


def test_thompson_noise_std_is_keyword_only():
    with pytest.raises(TypeError, match="positional"):
        ThompsonBandit(3, 0.0, 1.0, 2.0)
    assert ThompsonBandit(3, 0.0, 1.0, noise_std=2.0, seed=0).noise_std == 2.0


def test_make_bandit_passes_seed_by_keyword():
    first, second = make_bandit("agent57", 3, eps=0.2, seed=5), Agent57Bandit(3, eps=0.2, seed=5)
    assert feed(first, 30, reward_seed=1) == feed(second, 30, reward_seed=1)


def test_shared_generator_is_used():
    bandit = UniformBandit(4, seed=np.random.default_rng(0))
    reference = UniformBandit(4, seed=0)
    assert [bandit.sample_action() for _ in range(20)] == [reference.sample_action() for _ in range(20)]


# ----------------------------------------------------------------------------------------------
# Strategy-specific behaviour
# ----------------------------------------------------------------------------------------------


def test_uniform_dist_and_best_action():
    bandit = UniformBandit(4)
    np.testing.assert_allclose(bandit.dist(), np.full(4, 0.25))
    for action, reward in [(0, 1.0), (1, 3.0), (2, 3.0)]:
        bandit.update(action, reward)
    assert bandit.best_action() == 1
    np.testing.assert_allclose(bandit.dist(), np.full(4, 0.25))


def test_eps_greedy_dist():
    bandit = EpsGreedyBandit(4, eps=0.2)
    bandit.update(2, 1.0)
    np.testing.assert_allclose(bandit.dist(), [0.05, 0.05, 0.85, 0.05])
    greedy = EpsGreedyBandit(4, eps=0.0)
    greedy.update(3, 1.0)
    assert all(greedy.sample_action() == 3 for _ in range(20))


@pytest.mark.parametrize("cls", [UCBBandit, DiscountedUCBBandit, SlidingWindowUCBBandit])
def test_ucb_family_tries_untried_arms_first_in_index_order(cls):
    bandit = cls(4, seed=0)
    tried = []
    for reward in [5.0, -3.0, 0.0, 1.0]:
        tried.append(bandit.sample_action())
        bandit.update(tried[-1], reward)
    assert tried == [0, 1, 2, 3]


def test_ucb_scores_by_hand():
    bandit = UCBBandit(2, beta=0.5)
    for action, reward in [(0, 1.0), (1, 0.0), (0, 0.0)]:
        bandit.update(action, reward)
    expected = [0.5 + 0.5 * math.sqrt(math.log(3) / 2), 0.0 + 0.5 * math.sqrt(math.log(3) / 1)]
    np.testing.assert_allclose(bandit.scores(), expected)
    np.testing.assert_array_equal(bandit.dist(), one_hot(2, int(np.argmax(expected))))
    means, counts = bandit.arm_statistics()
    np.testing.assert_allclose(means, [0.5, 0.0])
    assert bandit.bonus_numerator(counts) == pytest.approx(math.log(3))
    assert bandit.best_action() == 0


def test_ucb_auto_beta_is_largest_absolute_reward():
    bandit = UCBBandit(3, beta="auto")
    assert bandit.beta == 0.0
    for action, reward in [(0, 2.0), (1, -7.0), (2, 3.0)]:
        bandit.update(action, reward)
    assert bandit.beta == 7.0
    fixed = UCBBandit(3, beta=0.25)
    fixed.update(0, 100.0)
    assert fixed.beta == 0.25


def test_discounted_ucb_statistics_by_hand():
    bandit = DiscountedUCBBandit(2, gamma=0.5)
    for action, reward in [(0, 4.0), (1, 2.0), (0, 1.0)]:
        bandit.update(action, reward)
    # arm 0: sums 4*0.25 + 1 = 2, counts 0.25 + 1 = 1.25; arm 1: sums 2*0.5 = 1, counts 0.5.
    np.testing.assert_allclose(bandit.discounted_sums, [2.0, 1.0])
    np.testing.assert_allclose(bandit.discounted_counts, [1.25, 0.5])
    means, counts = bandit.arm_statistics()
    np.testing.assert_allclose(means, [1.6, 2.0])
    assert bandit.bonus_numerator(counts) == pytest.approx(math.log(1.75))
    assert bandit.best_action() == 1 and int(np.argmax(bandit.q)) == 0


def test_discounted_ucb_without_discount_is_plain_ucb():
    plain, undiscounted = UCBBandit(4, seed=0), DiscountedUCBBandit(4, gamma=1.0, seed=0)
    assert feed(plain, 80, reward_seed=1) == feed(undiscounted, 80, reward_seed=1)
    np.testing.assert_allclose(plain.scores(), undiscounted.scores())


def test_sliding_window_keeps_only_the_last_pulls():
    bandit = SlidingWindowUCBBandit(3, window=3)
    for action, reward in [(0, 10.0), (1, 1.0), (2, 2.0), (1, 3.0), (2, 4.0)]:
        bandit.update(action, reward)
    means, counts = bandit.arm_statistics()
    np.testing.assert_allclose(counts, [0.0, 1.0, 2.0])
    np.testing.assert_allclose(means, [0.0, 3.0, 3.0])
    assert bandit.scores()[0] == np.inf
    assert bandit.best_action() == 1


def test_sliding_window_longer_than_the_run_is_plain_ucb():
    plain, windowed = UCBBandit(4, seed=0), SlidingWindowUCBBandit(4, window=1000, seed=0)
    assert feed(plain, 80, reward_seed=1) == feed(windowed, 80, reward_seed=1)


def test_agent57_bonus_and_eps_mixing():
    bandit = Agent57Bandit(2, beta=1.0, window=10, eps=0.4)
    for action, reward in [(0, 1.0), (0, 1.0), (0, 1.0), (0, 1.0), (1, 0.6)]:
        bandit.update(action, reward)
    np.testing.assert_allclose(bandit.scores(), [1.0 + math.sqrt(1 / 4), 0.6 + 1.0])
    np.testing.assert_allclose(bandit.dist(), [0.2, 0.8])
    assert bandit.best_action() == 0


def test_agent57_defaults_match_the_hsdb_config():
    bandit = Agent57Bandit(3)
    assert (bandit.beta_setting, bandit.window, bandit.eps) == ("auto", 500, 0.5)


def test_thompson_posterior_by_hand():
    bandit = ThompsonBandit(2, prior_mean=1.0, prior_std=2.0, noise_std=2.0)
    mean, std = bandit.posterior()
    np.testing.assert_allclose(mean, [1.0, 1.0])
    np.testing.assert_allclose(std, [2.0, 2.0])
    for reward in [3.0, 5.0]:
        bandit.update(0, reward)
    mean, std = bandit.posterior()
    precision = 1 / 2.0**2 + 2 / 2.0**2  # prior + two rewards of noise std 2
    np.testing.assert_allclose(mean, [(1.0 / 4 + 2 * 4.0 / 4) / precision, 1.0])
    assert mean[0] == pytest.approx(3.0)
    np.testing.assert_allclose(std, [1 / math.sqrt(precision), 2.0])
    np.testing.assert_allclose(bandit.value_estimates(), mean)


def test_thompson_dist_matches_two_arm_closed_form():
    bandit = ThompsonBandit(2, seed=0)
    for action, reward in [(0, 0.5), (1, 0.0), (1, 0.3)]:
        bandit.update(action, reward)
    mean, std = bandit.posterior()
    z = (mean[1] - mean[0]) / math.hypot(std[0], std[1])
    p_arm1 = 0.5 * (1 + math.erf(z / math.sqrt(2)))
    np.testing.assert_allclose(bandit.dist(), [1 - p_arm1, p_arm1], atol=0.02)


# ----------------------------------------------------------------------------------------------
# Learning behaviour on seeded problems
# ----------------------------------------------------------------------------------------------


def cumulative_regret(bandit: Bandit, means: np.ndarray, steps: int, reward_seed: int) -> float:
    """Sum over steps of (best mean - mean of the arm played), with unit Gaussian reward noise."""
    env = np.random.default_rng(reward_seed)
    regret = 0.0
    for _ in range(steps):
        action = bandit.sample_action()
        bandit.update(action, means[action] + env.normal())
        regret += means.max() - means[action]
    return regret


def test_stationary_ten_armed_regret():
    seeds = range(4)
    regrets = {name: 0.0 for name in ALL_NAMES}
    for seed in seeds:
        means = np.random.default_rng(100 + seed).normal(size=10)
        for name in ALL_NAMES:
            bandit = make_bandit(name, 10, seed=seed)
            regrets[name] += cumulative_regret(bandit, means, 2000, reward_seed=200 + seed) / len(seeds)
    uniform = regrets["uniform"]
    assert regrets["ucb"] < 0.25 * uniform, regrets
    assert regrets["thompson"] < 0.25 * uniform, regrets
    for name in ALL_NAMES:
        if name != "uniform":
            assert regrets[name] < uniform, (name, regrets)


def fraction_on_new_best_arm(bandit: Bandit, steps: int, reward_seed: int) -> float:
    """Arm 0 is best (mean 1) for the first half, then drops to 0 and arm 1 (mean 0.5) is best.

    Returns how often arm 1 is played in the last quarter. Plain UCB keeps trusting arm 0's long
    average; forgetting strategies notice the change.
    """
    env = np.random.default_rng(reward_seed)
    before, after = np.array([1.0, 0.0, 0.0]), np.array([0.0, 0.5, 0.0])
    late_actions = []
    for step in range(steps):
        means = before if step < steps // 2 else after
        action = bandit.sample_action()
        bandit.update(action, means[action] + 0.5 * env.normal())
        if step >= 3 * steps // 4:
            late_actions.append(action)
    return float(np.mean(np.array(late_actions) == 1))


def test_non_stationary_forgetting_bandits_follow_the_switch():
    seeds = range(3)
    bandits = {
        "ucb": lambda s: UCBBandit(3, beta=0.5, seed=s),
        "discounted_ucb": lambda s: DiscountedUCBBandit(3, beta=0.5, gamma=0.99, seed=s),
        "sliding_window_ucb": lambda s: SlidingWindowUCBBandit(3, beta=0.5, window=200, seed=s),
        # A small eps: with eps = 0.5 the uniform half alone caps arm 1 at 2/3 of the late pulls.
        "agent57": lambda s: Agent57Bandit(3, beta=0.5, window=200, eps=0.05, seed=s),
    }
    fractions = {
        name: np.mean([fraction_on_new_best_arm(make(s), 2000, reward_seed=300 + s) for s in seeds])
        for name, make in bandits.items()
    }
    for name in ("discounted_ucb", "sliding_window_ucb", "agent57"):
        assert fractions[name] > 0.75, fractions
        assert fractions[name] > fractions["ucb"] + 0.3, fractions
