# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 02 · Bandits: choosing a goal space per episode
#
# HSD-3 gives its high-level policy a choice of *which* goal-space features to control (the root height, a
# foot's position, ...). The paper's simplest baseline, **HSD-Bandit**, replaces that learned choice by a
# multi-armed bandit: one arm per goal-space subset, one pull per episode. In this notebook you write the bandits
# of `hsd3_learn/models/bandits.py`, exactly as they are there, then compare them on toy problems:
#
# | exercise | what it is for | points |
# |---|---|---|
# | 1. `Bandit` | the running mean per arm, and sampling from `dist()` | 2 |
# | 2. `UniformBandit` | how HSD-Bandit trains, and the baseline every strategy must beat | 1 |
# | 3. `EpsGreedyBandit` | the greedy arm, plus a fixed share of random pulls | 1 |
# | 4. `ucb_scores` | optimism: mean plus a bonus that shrinks with every pull | 1 |
# | 5. `UCBBandit` | UCB1, with `beta='auto'` for episode returns of unknown scale | 2 |
# | 6. `DiscountedUCBBandit` | UCB that forgets old rewards gradually | 2 |
# | 7. `SlidingWindowUCBBandit` | UCB on the last W pulls only | 2 |
# | 8. `Agent57Bandit` | the bandit in HSD-Bandit's config | 1 |
# | 9. `ThompsonBandit` | sample a plausible world, act greedily in it | 2 |
# | 10. your own bandit | design a strategy, make it a valid `Bandit`, beat Uniform | 2 |
#
# **How the exercises work.** Each exercise cell holds the real library code with a few lines replaced by
# `raise NotImplementedError()`. The hint above the gap says what to compute, which call helps and about how many
# lines it takes. Run the check cell right below: it runs your class and the reference implementation on the same
# seeded sequence of updates and prints `PASS ...` or tells you which output differs, after which update, and by
# how much. Each check uses the reference for what an earlier exercise provides, so one mistake costs one grade.
# Everything is numpy; no torch in this notebook.
#
# Time: about 2 hours. Prerequisites: `00_setup` (`01_utils` is not needed).

# %% kind="readonly" id="setup"
# Provided (read-only): imports used by the library code below and by the checks.
from __future__ import annotations

import copy
import math
import operator
import warnings
from abc import ABC, abstractmethod
from typing import Any

import matplotlib.pyplot as plt
import numpy as np

from autograder.checks import bandits as check
from hsd3_learn.models.bandits import (  # provided: argument checks and constants of the library module
    THOMPSON_DIST_SAMPLES,
    Seed,
    _check_beta,
    _check_float,
    _check_int,
    _make_rng,
)

warnings.filterwarnings("ignore")

# %% [markdown]
# ## Bandits in HSD-3
#
# A **multi-armed bandit** is the simplest decision problem with exploration: there are $N$ arms; pulling arm
# $i$ gives a random reward with unknown mean $\mu_i$; you pull one arm at a time and want a high total reward.
# There is no state: what you learn about an arm is all you can learn.
#
# In **HSD-Bandit** (HSD-3 paper, section 5; `hucc/agents/hsdb.py`) each arm is one goal-space subset, for the
# walker one of the 31 non-empty subsets of {root height, root x, torso pitch, left foot, right foot}. The loop
# around the bandit, per episode:
#
# ```python
# arm = bandit.sample_action()                 # which goal space this episode (HSD-Bandit: uniform, see below)
# ... the high level sets subgoals in that goal space, the pre-trained low level reaches them ...
# bandit.update(arm, info["reward_acc"])       # the reward of the arm is the episode return
# # evaluation:
# arm = bandit.best_action()                   # the goal space with the best estimated return
# ```
#
# Three facts shape the code you are about to write:
#
# - **Training draws subsets uniformly** (the first episodes cycle through all arms); HSD-Bandit never calls
#   `sample_action()`. What the strategy learns matters through `best_action()`, the arm evaluation uses.
# - HSD-Bandit's walker config (`walker_hsdb`) uses `Agent57Bandit(beta='auto', window=500, eps=0.5)`. Its
#   `best_action()` trusts each arm's mean return over the **last 500 episodes**, not its lifetime mean, because
#   the problem is **non-stationary**: the high-level policy keeps learning, so the return of every subset
#   changes over training.
# - The reward is an episode return, whose scale (tens? thousands?) depends on the task. Exploration bonuses that
#   assume rewards of size 1 are then too small or too large; `beta='auto'` rescales them.
#
# ### Regret
#
# A strategy is judged by its **regret**: how much reward it lost against always pulling the best arm,
#
# $$R_T = \sum_{t=1}^{T} \left(\mu^\ast - \mu_{a_t}\right), \qquad \mu^\ast = \max_i \mu_i . \tag{1}$$
#
# (This is the *pseudo-regret*: it uses the true means, not the noisy rewards, so it measures the choices only.)
# Uniform pulls lose $\mu^\ast - \bar\mu$ every step, so their regret grows linearly in $T$; a good strategy
# explores less and less, and its regret flattens out (UCB1's grows like $\log T$). The experiments at the end of
# the notebook plot exactly this.
#
# ### The interface
#
# Every bandit keeps, for $N$ arms:
#
# | attribute | shape | meaning |
# |---|---|---|
# | `q` | `[N]` float64 | running mean reward of each arm (0 for untried arms) |
# | `n` | `[N]` int64 | pulls of each arm |
# | `t` | int | pulls in total |
# | `rng` | `np.random.Generator` | the bandit's own random generator, seeded by the constructor |
#
# and a strategy is defined by **`dist()`**, the `[N]` probability of each arm right now. `sample_action()` draws
# from it, so the policy and the distribution you can inspect, plot and test never disagree. `update()` records a
# reward and then calls the hook `_observe(action, reward)`, where a strategy keeps extra statistics.
# `state_dict()` saves `q`, `n`, `t`, the generator state and whatever else a strategy lists in `_state_keys`, so
# that an agent checkpoint restores the bandit exactly.
#
# Four small helpers are provided. Read them: the strategies are built from them.

# %% kind="readonly" id="provided_helpers"
# @library hsd3_learn.models.bandits:argmax_lowest
# @library hsd3_learn.models.bandits:one_hot
# @library hsd3_learn.models.bandits:mix_with_uniform
# @library hsd3_learn.models.bandits:masked_mean

# %% [markdown]
# ## 1. The base class: running means and sampling
#
# After pulling arm $a$ and receiving reward $r$, the statistics of arm $a$ change; no other arm's do:
#
# $$t \leftarrow t + 1, \qquad n_a \leftarrow n_a + 1, \qquad q_a \leftarrow q_a + \frac{r - q_a}{n_a} . \tag{2}$$
#
# The last update is the **incremental mean**: after $n$ rewards $q$ is exactly their average (check it for
# $n = 1$: $q = 0 + (r - 0) / 1 = r$), without storing the rewards. Counting the pull *before* dividing matters.
#
# `sample_action()` draws one arm from `dist()` with the bandit's **own** generator `self.rng`, never with
# `np.random`: so a bandit built with `seed=0` makes the same choices on every run, and a checkpoint (which saves
# the generator state) continues with the same draws.
#
# **Exercise 1.** Complete `update` (the three lines of equation 2) and `sample_action` (one line; return a Python
# `int`).
#
# *Check:* a bandit with a fixed test `dist()` gets 25 seeded updates (negative rewards included, one arm never
# pulled); `t`, `n` must match the reference exactly and `q` to 1e-12 after every update. Then 6000 draws of
# `sample_action()` must follow `dist()` (each frequency within 0.032, five standard errors, of its probability),
# two bandits with the same seed must draw the same arms whatever `np.random` does, and draws must replay after a
# `state_dict()` round trip.

# %% kind="solution" id="bandit_base"
# @library hsd3_learn.models.bandits:Bandit
# @blank lines self.t += 1 ... self.q[action] += (reward | Count the pull (t and n[action] grow by one), then move q[action] towards the reward by (reward - q[action]) / n[action], equation 2. 3 lines.
# @blank method sample_action | Draw one arm index with probabilities self.dist(): self.rng.choice(self.n_arms, p=...); return it as an int. 1 line.

# %% kind="tests" id="check_bandit_base" points=2
# Check: q, n, t after every seeded update; frequencies, seeding and replay of sample_action().
check.bandit_base(Bandit)
### BEGIN HIDDEN TESTS
check.bandit_base(Bandit, seeds=range(10, 14), edge_cases=True)
### END HIDDEN TESTS

# %% [markdown]
# ## 2. `UniformBandit`: the baseline
#
# $$\pi(i) = \frac{1}{N} \quad \text{for every arm } i . \tag{3}$$
#
# This is how HSD-Bandit trains, and what the SD baseline (a single, all-feature goal space) uses. It learns
# nothing while it plays, but its `q` still estimates every arm, and `best_action()` (provided by the base class)
# picks the highest one at evaluation.
#
# **Exercise 2.** Complete `dist()`: an `[N]` float array of $1/N$.
#
# *Check:* `dist()` against the reference to 1e-12 for 2, 5 and 10 arms, before and after every update, and
# `best_action()` exactly; then a `state_dict()` round trip.

# %% kind="solution" id="uniform_bandit"
# @library hsd3_learn.models.bandits:UniformBandit
# @blank method dist | An [N] array filled with 1 / N (np.full). 1 line.

# %% kind="tests" id="check_uniform_bandit" points=1
check.uniform_bandit(UniformBandit)
### BEGIN HIDDEN TESTS
check.uniform_bandit(UniformBandit, seeds=range(10, 13), edge_cases=True)
### END HIDDEN TESTS

# %% [markdown]
# ## 3. `EpsGreedyBandit`: exploit, with a fixed share of exploration
#
# Pull the arm with the highest mean; but with probability $\varepsilon$ pull a uniformly random one instead (which
# may be the greedy arm too). As a distribution:
#
# $$\pi(i) = (1 - \varepsilon)\,\mathbb{1}\!\left[i = \arg\max_j q_j\right] + \frac{\varepsilon}{N} . \tag{4}$$
#
# Ties in $\arg\max$ go to the lowest index (`best_action()` does that), which makes the bandit deterministic and
# testable. The weakness of $\varepsilon$-greedy: it keeps exploring at the same rate forever, also arms it
# already knows are bad, so its regret still grows linearly, only more slowly than Uniform's.
#
# **Exercise 3.** Complete `dist()` with the helpers `one_hot` and `mix_with_uniform`.
#
# *Check:* `dist()` against the reference to 1e-12, before and after each of 20 seeded updates, for
# $\varepsilon \in \{0.1, 0.37\}$ (hidden: 0, 1, and ties between arms).

# %% kind="solution" id="eps_greedy_bandit"
# @library hsd3_learn.models.bandits:EpsGreedyBandit
# @blank method dist | All mass on self.best_action() (one_hot), then mixed with the uniform distribution by self.eps (mix_with_uniform). 1 line.

# %% kind="tests" id="check_eps_greedy_bandit" points=1
check.eps_greedy_bandit(EpsGreedyBandit)
### BEGIN HIDDEN TESTS
check.eps_greedy_bandit(EpsGreedyBandit, seeds=range(10, 14), edge_cases=True)
### END HIDDEN TESTS

# %% [markdown]
# ## 4. Upper confidence bounds
#
# **Optimism in the face of uncertainty**: score every arm by how good it *could plausibly* be, and pull the
# best score. An arm pulled $n_i$ times has a mean whose uncertainty shrinks like $1/\sqrt{n_i}$, so
#
# $$U_i = \bar r_i + \beta \sqrt{\frac{c}{n_i}} \quad (n_i > 0), \qquad U_i = +\infty \quad (n_i = 0) . \tag{5}$$
#
# An arm is pulled either because its mean is high (exploitation) or because it was rarely pulled (exploration),
# and the bonus of an arm shrinks only when *that* arm is pulled. All UCB variants below share this formula and
# differ in what they feed it: the means $\bar r$ and counts $n$ (lifetime, discounted or windowed), the numerator
# $c$, and $\beta$.
#
# Shapes: `means: [N]`, `counts: [N]` (ints, or floats for discounted counts), `beta` and `bonus_numerator`
# scalars; returns `[N]`.
#
# Untried arms get $+\infty$, so they are pulled first (lowest index first). Write them *separately*: computing
# $\beta \sqrt{c / 0}$ and fixing it afterwards gives `inf`, or `nan` when $\beta = 0$ ($0 \cdot \infty$), plus a
# numpy warning.
#
# **Exercise 4.** Complete `ucb_scores`.
#
# *Check:* against the reference to 1e-12 on seeded means and counts (integer and fractional, some zero), with
# $\beta \in \{0, 0.7, 2\}$ and several numerators; untried arms must be $+\infty$, never `nan`; the inputs must
# not change.

# %% kind="solution" id="ucb_scores"
# @library hsd3_learn.models.bandits:ucb_scores
# @blank body | Start from np.full(means.shape, np.inf); for the tried arms (a boolean mask counts > 0) write mean + beta * sqrt(bonus_numerator / count), indexing means and counts with the same mask. About 4 lines.

# %% kind="tests" id="check_ucb_scores" points=1
check.ucb_scores(ucb_scores)
### BEGIN HIDDEN TESTS
check.ucb_scores(ucb_scores, seeds=range(10, 14), edge_cases=True)
### END HIDDEN TESTS

# %% [markdown]
# ## 5. `UCBBandit`: UCB1
#
# UCB1 (Auer et al. 2002) uses the lifetime statistics $\bar r_i = q_i$, $n_i$ and the numerator
# $c = \log t$ with $t = \sum_j n_j$ the total number of pulls (floored at one pull, so that $\log 0$ never
# appears):
#
# $$U_i = q_i + \beta \sqrt{\frac{\log \max(t, 1)}{n_i}}, \qquad
# \pi = \text{one-hot}\left(\arg\max_i U_i\right) . \tag{6}$$
#
# $\log t$ grows without bound, so every arm is tried again now and then, but more and more rarely.
#
# **`beta='auto'`.** The bonus in equation 6 is sized for rewards of scale 1. An episode return may be 0.3 or
# 3000; with $\beta = 1$ the bonus would be far too large or negligible. With `beta='auto'` the bandit sets
# $\beta$ to the largest **absolute** reward seen so far (0 before any update),
#
# $$\beta_t = \max_{s \le t} |r_s| , \tag{7}$$
#
# which scales exploration with the returns. (hucc took the largest reward, which goes wrong when all returns are
# negative.)
#
# The class is written so that the variants in exercises 6 to 8 only override small methods: `arm_statistics()`
# returns the `([N] means, [N] counts)` pair to score (here `q` and `n`), `bonus_numerator(counts)` returns $c$,
# and `scores()` combines them with `ucb_scores`. `dist()`, `value_estimates()` and `reset()` are given.
#
# **Exercise 5.** Complete `_observe` (equation 7, only when `self.beta_setting == "auto"`), `bonus_numerator` and
# `scores`.
#
# *Check:* after each of 25 seeded updates, for `beta=1.0` and `beta='auto'` (hidden: 0, all-negative rewards,
# one arm): `beta`, `bonus_numerator` (for the current counts and for all-zero counts) and `scores()` to 1e-12,
# `dist()` and `best_action()`. `scores()` calls your `ucb_scores`, so pass exercise 4 first.

# %% kind="solution" id="ucb_bandit"
# @library hsd3_learn.models.bandits:UCBBandit
# @blank method _observe | Only when self.beta_setting == "auto": beta becomes the larger of itself and abs(reward). 2 lines.
# @blank method bonus_numerator | UCB1's numerator: the log of the total count counts.sum(), floored at 1 so it is never log(0) (math.log, max). 1 line.
# @blank method scores | Get (means, counts) from self.arm_statistics() and return ucb_scores(...) with self.beta and self.bonus_numerator(counts). 2 lines.

# %% kind="tests" id="check_ucb_bandit" points=2
check.ucb_bandit(UCBBandit)
### BEGIN HIDDEN TESTS
check.ucb_bandit(UCBBandit, seeds=range(10, 14), edge_cases=True)
### END HIDDEN TESTS

# %% [markdown]
# ## 6. `DiscountedUCBBandit`: forget gradually
#
# When the means change over time (in HSD-Bandit: as the high-level policy learns), lifetime means lag behind:
# after 1000 pulls of an arm, one new reward moves its mean by 1/1000. **Discounted UCB** (Garivier & Moulines
# 2011) weights a reward that is $k$ pulls old by $\gamma^k$. At every pull of arm $a$ with reward $r$, **all**
# arms decay, then the pulled arm gets the new data:
#
# $$S_i \leftarrow \gamma S_i + r\,\mathbb{1}[i = a], \qquad C_i \leftarrow \gamma C_i + \mathbb{1}[i = a], \qquad
# \bar r_i = \frac{S_i}{C_i} . \tag{8}$$
#
# $S$ (`discounted_sums`) and $C$ (`discounted_counts`) are `[N]` float arrays. The scores use $\bar r_i$, $C_i$
# and $c = \log \sum_j C_j$ (the inherited `bonus_numerator`). Because $\sum_j C_j \to 1 / (1 - \gamma)$, the
# counts never grow large: the bandit keeps exploring at a steady rate, which is the price of tracking change. A
# weight halves every $\log 0.5 / \log \gamma$ pulls: 7 for $\gamma = 0.9$, 69 for $\gamma = 0.99$.
#
# **Exercise 6.** Complete the discounting in `_observe` (after the provided `super()._observe`, which keeps
# `beta='auto'` working) and `arm_statistics()` (use `masked_mean`, which gives 0 for arms without data).
#
# *Check:* after each of 25 seeded updates, for $(\beta, \gamma) \in \{(1, 0.9), (0.5, 0.7)\}$ (hidden:
# $\gamma = 1$, which must equal the lifetime statistics, $\gamma = 0.1$, `beta='auto'`): `discounted_sums`,
# `discounted_counts` and `arm_statistics()` to 1e-12, then `dist()` and `best_action()`; then a `state_dict()`
# round trip. What the class inherits from `UCBBandit` (scores, bonus numerator, automatic beta) is the
# reference's, so only this exercise is tested.

# %% kind="solution" id="discounted_ucb_bandit"
# @library hsd3_learn.models.bandits:DiscountedUCBBandit
# @blank lines self.discounted_sums *= self.gamma ... self.discounted_counts[action] += 1.0 | Decay both arrays by self.gamma (every arm, in place), then add the reward to the pulled arm's sum and 1 to its count, equation 8. 4 lines.
# @blank method arm_statistics | The discounted mean (masked_mean of the sums and counts) and the discounted counts, as a tuple. 1 line.

# %% kind="tests" id="check_discounted_ucb_bandit" points=2
check.discounted_ucb_bandit(DiscountedUCBBandit)
### BEGIN HIDDEN TESTS
check.discounted_ucb_bandit(DiscountedUCBBandit, seeds=range(10, 14), edge_cases=True)
### END HIDDEN TESTS

# %% [markdown]
# ## 7. `SlidingWindowUCBBandit`: forget outright
#
# **Sliding-window UCB** (Garivier & Moulines 2011) keeps only the last $W$ pulls: a reward counts fully while it
# is in the window and not at all afterwards. With $a_s, r_s$ the arm and reward of pull $s$:
#
# $$C_i = \sum_{s = t - W + 1}^{t} \mathbb{1}[a_s = i], \qquad
# \bar r_i = \frac{1}{C_i} \sum_{s = t - W + 1}^{t} r_s\,\mathbb{1}[a_s = i], \qquad c = \log \min(t, W) . \tag{9}$$
#
# The pulls live in a **ring buffer** of two `[W]` arrays, `window_actions` (int64, $-1$ marks an empty slot) and
# `window_rewards`: pull number $t$ (counting from 1) goes to slot $(t - 1) \bmod W$, overwriting the pull $W$
# steps older. `update()` has already incremented `self.t` when `_observe` runs. The counts in the window add up
# to $\min(t, W)$, so the inherited `bonus_numerator` gives equation 9's $c$ for free.
#
# **Exercise 7.** Complete the ring-buffer write in `_observe` and `arm_statistics()`. `np.bincount(actions,
# minlength=N)` counts how often each arm appears; with `weights=rewards` it sums their rewards instead. Return
# float64 counts, as D-UCB does.
#
# *Check:* after each of 30 seeded updates, for $(\beta, W) \in \{(1, 7), (0.5, 3)\}$ (the window wraps; hidden:
# $W = 1$ and a window that never fills): `window_actions` and `window_rewards` exactly, `arm_statistics()` to
# 1e-12, `dist()` and `best_action()`; then a `state_dict()` round trip.

# %% kind="solution" id="sliding_window_ucb_bandit"
# @library hsd3_learn.models.bandits:SlidingWindowUCBBandit
# @blank lines slot = (self.t - 1) ... self.window_rewards[slot] = reward | The slot of this pull is (self.t - 1) % self.window; store the action and the reward there. 3 lines.
# @blank method arm_statistics | Keep the filled slots (window_actions >= 0); per-arm counts (as float64) and reward sums with np.bincount(..., minlength=self.n_arms), the sums with weights=; means with masked_mean. About 5 lines.

# %% kind="tests" id="check_sliding_window_ucb_bandit" points=2
check.sliding_window_ucb_bandit(SlidingWindowUCBBandit)
### BEGIN HIDDEN TESTS
check.sliding_window_ucb_bandit(SlidingWindowUCBBandit, seeds=range(10, 14), edge_cases=True)
### END HIDDEN TESTS

# %% [markdown]
# ## 8. `Agent57Bandit`: HSD-Bandit's choice
#
# Agent57 (Badia et al. 2020, appendix E) chose among its exploration settings with a **meta-controller**: a
# sliding-window UCB whose bonus has no $\log$ term, mixed with $\varepsilon$-greedy exploration,
#
# $$U_i = \bar r^{W}_i + \beta \sqrt{\frac{1}{C_i}}, \qquad
# \pi(i) = (1 - \varepsilon)\,\mathbb{1}\!\left[i = \arg\max_j U_j\right] + \frac{\varepsilon}{N} , \tag{10}$$
#
# with $\bar r^W$ and $C$ the window statistics of equation 9. HSD-Bandit uses it with `beta='auto'`,
# `window=500`, `eps=0.5`. Since HSD-Bandit trains with uniform draws, what it really uses is `best_action()`:
# the arm with the best mean return among the last 500 episodes.
#
# **Exercise 8.** Complete `bonus_numerator` and `dist()` (use the sliding-window UCB choice of the parent class,
# `super().dist()`).
#
# *Check:* on the reference's state after each of 20 seeded updates (loaded with `load_state_dict`, so that
# only this exercise is tested), for two settings (hidden: $\varepsilon \in \{0, 1\}$, $W = 1$):
# `bonus_numerator` exactly, `dist()` to 1e-12, `best_action()` exactly.

# %% kind="solution" id="agent57_bandit"
# @library hsd3_learn.models.bandits:Agent57Bandit
# @blank method bonus_numerator | The bonus is beta * sqrt(1 / count): a constant numerator. 1 line.
# @blank method dist | The parent's one-hot UCB choice (super().dist()) mixed with uniform by self.eps. 1 line.

# %% kind="tests" id="check_agent57_bandit" points=1
check.agent57_bandit(Agent57Bandit)
### BEGIN HIDDEN TESTS
check.agent57_bandit(Agent57Bandit, seeds=range(10, 14), edge_cases=True)
### END HIDDEN TESTS

# %% [markdown]
# ## 9. `ThompsonBandit`: act greedily in a sampled world
#
# Thompson sampling keeps a **posterior** over each arm's mean, draws one plausible mean per arm, and pulls the
# arm whose draw is largest. An arm is pulled with exactly the probability that it is the best one, given the data.
#
# The model here: the mean of arm $i$ has prior $\mathcal N(\mu_0, \sigma_0^2)$ (`prior_mean`, `prior_std`), and a
# reward is that mean plus Gaussian noise of known std $\sigma$ (`noise_std`). The posterior after $n_i$ rewards
# with average $q_i$ is Gaussian, and precisions (inverse variances) add:
#
# $$\lambda_i = \frac{1}{\sigma_0^2} + \frac{n_i}{\sigma^2}, \qquad
# m_i = \frac{\mu_0 / \sigma_0^2 + n_i q_i / \sigma^2}{\lambda_i}, \qquad s_i = \frac{1}{\sqrt{\lambda_i}},
# \qquad \theta_i \sim \mathcal N(m_i, s_i^2), \quad a = \arg\max_i \theta_i . \tag{11}$$
#
# The posterior mean $m_i$ is a precision-weighted average of the prior mean and the data; it needs only `q` and
# `n`. `posterior()` returns `([N] mean, [N] std)`.
#
# Thompson sampling is the one strategy that does not sample from `dist()`: the probability of "my draw is the
# largest" has no closed form for $N > 2$. So `sample_action()` is overridden, and the provided `dist()` estimates
# those probabilities from 10,000 draws of a generator seeded by the counts (so it is deterministic and leaves
# `self.rng` alone).
#
# **Exercise 9.** Complete `posterior()` and `sample_action()`.
#
# *Check:* `posterior()` to 1e-12 after each of 20 seeded updates, for two priors and noise levels (hidden: a
# broad prior with small noise, one arm), with `dist()` and `best_action()`. Then, on a state after 4 updates,
# the frequencies of 6000 draws must match the probability of each arm being best under the reference posterior
# (within 0.038: five standard errors of both estimates), draws must be reproducible from the seed and replay
# after a `state_dict()` round trip.

# %% kind="solution" id="thompson_bandit"
# @library hsd3_learn.models.bandits:ThompsonBandit
# @blank method posterior | Prior precision 1 / prior_std**2 and data precision n / noise_std**2 add up; the mean is their weighted average of prior_mean and q; the std is 1 / sqrt(precision) (np.sqrt), equation 11. About 5 lines.
# @blank method sample_action | One draw per arm from Normal(mean, std) of the posterior with self.rng.normal, then the index of the largest draw (argmax_lowest). 2 lines.

# %% kind="tests" id="check_thompson_bandit" points=2
check.thompson_bandit(ThompsonBandit)
### BEGIN HIDDEN TESTS
check.thompson_bandit(ThompsonBandit, seeds=range(10, 12), edge_cases=True)
### END HIDDEN TESTS

# %% [markdown]
# ## 10. Your own bandit
#
# Design a strategy of your own as a subclass of `Bandit`. Some ideas, from simple to more involved:
#
# - **Boltzmann (softmax) exploration:** $\pi(i) \propto \exp(q_i / \tau)$ with a temperature $\tau$: good arms
#   are pulled more, bad arms rarely but never with probability zero. Subtract $\max_j q_j$ before `np.exp` to
#   avoid overflow.
# - **Decaying $\varepsilon$-greedy:** $\varepsilon_t = \min(1, c N / t)$ explores a lot at first and less later.
# - **KL-UCB or Bayes-UCB:** tighter confidence bounds than equation 5 (a quantile of the Thompson posterior is a
#   Bayes-UCB score).
#
# The rules (the check tests each one):
#
# 1. `MyBandit(10, seed=s)` must work: give every parameter you add to `__init__` a default, set it *before*
#    `super().__init__(n_arms, seed=seed)` (which calls `reset()`), and keep `seed` keyword-only.
# 2. `dist()` returns an `[N]` array of non-negative probabilities that sum to 1 (within 1e-9), and
#    `sample_action()` follows it: keep the provided one, or, if you override it as Thompson sampling does, make
#    `dist()` report its probabilities (6000 draws, each frequency within 0.032).
# 3. Draws use `self.rng` only: two bandits with the same seed choose the same arms.
# 4. Extra statistics go into `reset()` and their names into `_state_keys`, so that a `state_dict()` round trip
#    restores the same `dist()` and the same next choices.
# 5. It must learn: on 5 seeded 10-armed problems (means $\sim \mathcal N(0, 1)$, reward noise $\mathcal N(0, 1)$,
#    1000 steps) its mean regret must be at most **0.75 times Uniform's** (Uniform: about 1500).
#
# **Exercise 10.** Write `MyBandit`. The skeleton asks for `dist()`; add any other method your strategy needs.

# %% kind="solution" id="my_bandit"
class MyBandit(Bandit):
    """Your strategy (describe it here). ``MyBandit(n_arms, seed=...)`` must work."""

    def dist(self) -> np.ndarray:
        """[N] probability of each arm under ``sample_action()`` right now; sums to 1."""
        ### BEGIN SOLUTION
        # Boltzmann exploration with temperature 0.2, after every arm has been tried once (uniformly among the
        # untried ones, so the first N pulls cover all arms).
        untried = self.n == 0
        if untried.any():
            return untried / untried.sum()
        temperature = 0.2
        weights = np.exp((self.q - self.q.max()) / temperature)  # shifted by the max: exp never overflows
        return weights / weights.sum()
        ### END SOLUTION

# %% kind="tests" id="check_my_bandit" points=2
# Check: a valid Bandit (dist, sampling, seeding, state_dict) whose regret is at most 0.75 x Uniform's.
check.own_bandit(MyBandit)
### BEGIN HIDDEN TESTS
check.own_bandit(MyBandit, seeds=range(10, 15))
### END HIDDEN TESTS

# %% [markdown]
# ## Experiment 1: regret on a stationary problem
#
# Every strategy plays 20 seeded 10-armed problems for 1000 steps: arm means $\mu_i \sim \mathcal N(0, 1)$,
# rewards $\mu_i + \mathcal N(0, 1)$. The noise of all problems is drawn up front as one `[S, T, N]` array, so
# all strategies see exactly the same rewards for the same choices. We plot the cumulative regret (equation 1),
# mean $\pm$ one standard deviation over the seeds. (About 5 seconds.)

# %%
def play(bandit: Bandit, means: np.ndarray, noise: np.ndarray) -> np.ndarray:
    """One run: means [T, N] (the arm means at each step), noise [T, N]. Returns the regret of every step, [T]."""
    regret = np.empty(noise.shape[0])
    for t in range(noise.shape[0]):
        arm = bandit.sample_action()
        bandit.update(arm, means[t, arm] + noise[t, arm])
        regret[t] = means[t].max() - means[t, arm]
    return regret


def cumulative_regret(make: Any, means: np.ndarray, noise: np.ndarray) -> np.ndarray:
    """[S, T] cumulative regret of ``make(seed)`` on S problems: means [S, T, N], noise [S, T, N]."""
    return np.stack([play(make(s), means[s], noise[s]).cumsum() for s in range(noise.shape[0])])


def plot_bands(ax: Any, curves: dict[str, np.ndarray]) -> None:
    """Mean +- one standard deviation over seeds of each [S, T] curve."""
    for name, curve in curves.items():
        mean, std = curve.mean(axis=0), curve.std(axis=0)
        steps = np.arange(1, curve.shape[1] + 1)
        ax.plot(steps, mean, label=name)
        ax.fill_between(steps, mean - std, mean + std, alpha=0.2)


N_ARMS, STEPS, SEEDS = 10, 1000, 20
problems = np.random.default_rng(2021)
arm_means = np.repeat(problems.normal(size=(SEEDS, 1, N_ARMS)), STEPS, axis=1)  # [S, T, N], constant over time
reward_noise = problems.normal(size=(SEEDS, STEPS, N_ARMS))  # [S, T, N]

stationary = {
    "Uniform": lambda s: UniformBandit(N_ARMS, seed=s),
    "eps-greedy (0.1)": lambda s: EpsGreedyBandit(N_ARMS, eps=0.1, seed=s),
    "UCB1 (beta 1)": lambda s: UCBBandit(N_ARMS, beta=1.0, seed=s),
    "UCB1 (beta auto)": lambda s: UCBBandit(N_ARMS, beta="auto", seed=s),
    "D-UCB (0.99)": lambda s: DiscountedUCBBandit(N_ARMS, beta=1.0, gamma=0.99, seed=s),
    "SW-UCB (200)": lambda s: SlidingWindowUCBBandit(N_ARMS, beta=1.0, window=200, seed=s),
    "Agent57 (HSD-Bandit's)": lambda s: Agent57Bandit(N_ARMS, beta="auto", window=500, eps=0.5, seed=s),
    "Thompson": lambda s: ThompsonBandit(N_ARMS, seed=s),
    "yours": lambda s: MyBandit(N_ARMS, seed=s),
}
regrets = {name: cumulative_regret(make, arm_means, reward_noise) for name, make in stationary.items()}

fig, ax = plt.subplots(figsize=(8, 4.5))
plot_bands(ax, regrets)
ax.set_xlabel("step t"), ax.set_ylabel("cumulative regret $R_t$")
ax.set_title(f"{N_ARMS}-armed Gaussian bandits, {SEEDS} seeds (mean $\\pm$ std)")
ax.legend(loc="upper left", fontsize=8, ncol=2)
plt.show()
for name, curve in sorted(regrets.items(), key=lambda item: item[1][:, -1].mean()):
    print(f"{name:24s} R_1000 = {curve[:, -1].mean():7.1f} +- {curve[:, -1].std():6.1f}")

# %% [markdown]
# What to see:
#
# - **Uniform** and **Agent57 with HSD-Bandit's settings** grow linearly: Uniform never exploits, and
#   $\varepsilon = 0.5$ keeps half of all pulls random. (HSD-Bandit does not mind: it trains with uniform draws
#   anyway and only needs good estimates for `best_action()`.)
# - **$\varepsilon$-greedy** grows linearly too, with a much smaller slope: a tenth of its pulls stay random
#   forever, and a greedy choice made on a few noisy rewards can stick to a second-best arm.
# - **UCB1 ($\beta = 1$)** and **Thompson sampling** flatten out: their exploration fades as the estimates
#   firm up. Both are sized for the noise of this problem (std 1).
# - **UCB1 with `beta='auto'`** explores much more: $\beta$ becomes the largest |reward| seen (about 5 here),
#   five times the bonus that fits the noise. That is the price of not knowing the reward scale in advance.
# - **D-UCB and SW-UCB** keep exploring at a steady rate because they forget: on a problem that never changes,
#   forgetting only costs.

# %% [markdown]
# ## Experiment 2: the best arm switches
#
# Now the problem changes halfway. Five arms with means $(0.8, 0.6, 0.4, 0.2, 0.0)$ and reward noise of std 0.5
# for 1000 steps; then arm 0 drops to 0.2 and arm 4 jumps to 1.0. In HSD-Bandit this is what happens when the
# high-level policy learns to use a goal space that was useless before. All UCB variants use $\beta = 0.3$, which
# fits the noise. Left: cumulative regret; right: the fraction of pulls that go to the currently best arm (mean over
# 20 seeds, smoothed over 50 steps). (About 7 seconds.)

# %%
SWITCH_STEPS, SWITCH_SEEDS = 2000, 20
before, after = np.array([0.8, 0.6, 0.4, 0.2, 0.0]), np.array([0.2, 0.6, 0.4, 0.2, 1.0])
switch_means = np.where(np.arange(SWITCH_STEPS)[:, None] < SWITCH_STEPS // 2, before, after)  # [T, N]
switch_means = np.broadcast_to(switch_means, (SWITCH_SEEDS, *switch_means.shape))  # [S, T, N]
switch_noise = 0.5 * np.random.default_rng(57).normal(size=switch_means.shape)  # [S, T, N]
arms = before.shape[0]

non_stationary = {
    "eps-greedy (0.1)": lambda s: EpsGreedyBandit(arms, eps=0.1, seed=s),
    "UCB1": lambda s: UCBBandit(arms, beta=0.3, seed=s),
    "Thompson": lambda s: ThompsonBandit(arms, noise_std=0.5, seed=s),
    "D-UCB (0.99)": lambda s: DiscountedUCBBandit(arms, beta=0.3, gamma=0.99, seed=s),
    "SW-UCB (200)": lambda s: SlidingWindowUCBBandit(arms, beta=0.3, window=200, seed=s),
    "Agent57 (200, 0.1)": lambda s: Agent57Bandit(arms, beta=0.3, window=200, eps=0.1, seed=s),
}
switch_regrets = {name: cumulative_regret(make, switch_means, switch_noise) for name, make in non_stationary.items()}

fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
plot_bands(left, switch_regrets)
kernel = np.ones(50) / 50
for name, curve in switch_regrets.items():
    optimal = np.diff(curve, axis=1, prepend=0.0) == 0.0  # [S, T] pulls with zero regret: the best arm
    right.plot(np.convolve(optimal.mean(axis=0), kernel, mode="valid"), label=name)
for ax in (left, right):
    ax.axvline(SWITCH_STEPS // 2, color="gray", linestyle="--")
    ax.set_xlabel("step t")
left.set_ylabel("cumulative regret $R_t$"), left.legend(fontsize=8)
right.set_ylabel("fraction of pulls on the best arm"), right.set_ylim(0, 1.02)
fig.suptitle(f"the best arm switches at t = {SWITCH_STEPS // 2} ({SWITCH_SEEDS} seeds)")
plt.show()
for name, curve in switch_regrets.items():
    print(f"{name:20s} regret before the switch {curve[:, SWITCH_STEPS // 2 - 1].mean():6.1f}, "
          f"after {curve[:, -1].mean() - curve[:, SWITCH_STEPS // 2 - 1].mean():6.1f}")

# %% [markdown]
# What to see:
#
# - Before the switch, the stationary strategies (**UCB1**, **Thompson**) are the best; the forgetful ones pay for
#   their steady exploration.
# - After the switch, **UCB1, Thompson and $\varepsilon$-greedy** keep pulling arm 0: its lifetime mean still
#   remembers 1000 good pulls, and the new best arm was written off as the worst long ago. Their regret climbs
#   steeply for hundreds of steps, and by the end of the run only some of the seeds have found arm 4.
# - **D-UCB, SW-UCB and Agent57** notice within about a window (or a few half-lives) and move to arm 4: their
#   curves bend back, and the fraction of optimal pulls returns to where it was.
#
# The window (or $\gamma$) trades the two phases against each other: a long memory estimates a fixed problem well,
# a short one follows change quickly. Try $W = 50$ and $W = 1000$, or $\gamma = 0.9$, and watch which phase pays.

# %% [markdown]
# ## Summary
#
# - A bandit is defined by `dist()`: sampling, testing and plotting all use the same distribution. Statistics are
#   updated incrementally, and each bandit owns its seeded generator, which its `state_dict()` saves.
# - Regret measures the cost of exploring. Uniform and fixed-$\varepsilon$ exploration grow it linearly; UCB1 and
#   Thompson sampling let exploration fade and flatten it.
# - UCB scores are mean plus a bonus that shrinks with an arm's own count; untried arms come first. `beta='auto'`
#   sizes the bonus by the largest |reward| seen, for returns of unknown scale.
# - Non-stationary problems need forgetting: discounted or windowed statistics follow a switch that lifetime
#   means miss for hundreds of steps.
# - HSD-Bandit picks a goal-space subset per episode: it trains with uniform draws, learns each subset's return,
#   and evaluates with `best_action()` of an Agent57 bandit whose window follows the improving policy.
#
# Next: `03_blocks`, the networks of HSD-3's high and low level.
