"""Hand-computed cases for HSD-3's high-level math (``hsd3_learn.agents.hsd3_math``)."""

import math

import numpy as np
import pytest
import torch

from hsd3_learn.agents.hsd3_math import (BackprojectionTables, DyneStaging, SubsetExpectation, backproject_subgoal,
                                         backprojection_tables, critic_target, desired_goal, dyne_aggregate,
                                         expected_policy_terms, front_pack, masked_log_prob, policy_loss,
                                         subgoal_temperature_loss, subset_masks, subset_temperature_loss,
                                         update_bp_subgoal)
from hsd3_learn.envs.goal_spaces import goal_space

T = torch.tensor


def close(actual: torch.Tensor, expected, atol: float = 1e-6) -> None:
    torch.testing.assert_close(actual, torch.as_tensor(expected, dtype=actual.dtype), atol=atol, rtol=0)


# ------------------------------------------------------------------------------------------------ masks, log-probs


def test_subset_masks_mark_each_subsets_positions():
    close(subset_masks([[0], [1, 2], [2, 0]], 3), [[1, 0, 0], [0, 1, 1], [1, 0, 1]])


@pytest.mark.parametrize("subsets", [[], [[]], [[0, 0]], [[3]], [[-1]]])
def test_subset_masks_reject_bad_subsets(subsets):
    with pytest.raises(ValueError, match="subset"):
        subset_masks(subsets, 3)


def test_masked_log_prob_averages_active_dims_only():
    log_p = T([[-1.0, -2.0, -3.0],
               [-0.5, -math.inf, -1.5],
               [-1.0, -2.0, -3.0]], requires_grad=True)
    mask = T([[1.0, 0.0, 1.0], [1.0, 0.0, 1.0], [1.0, 1.0, 1.0]])
    out = masked_log_prob(log_p, mask)
    # (-1 - 3) / 2 = -2; (-0.5 - 1.5) / 2 = -1 (the -inf is masked); (-1 - 2 - 3) / 3 = -2
    close(out, [-2.0, -1.0, -2.0])
    out.sum().backward()
    close(log_p.grad, [[0.5, 0.0, 0.5], [0.5, 0.0, 0.5], [1 / 3, 1 / 3, 1 / 3]])


def test_masked_log_prob_broadcasts_one_mask_and_checks_shapes():
    close(masked_log_prob(T([[-1.0, -4.0], [-2.0, -6.0]]), T([0.0, 1.0])), [-4.0, -6.0])
    with pytest.raises(ValueError, match="last"):
        masked_log_prob(torch.zeros(2, 3), torch.ones(2))


# ---------------------------------------------------------------------------------------------------------- losses

# Shared hand-computed case, K = 2 subsets, B = 2 states:
#   row 0: pi_f = (0.25, 0.75), Q = (1, 2), log pi_g = (-1, 0.5), alpha_c = (0.5, 2), alpha_d = 0.1
#     value = 0.25 (1 - 0.5 * -1) + 0.75 (2 - 2 * 0.5) = 0.375 + 0.75 = 1.125
#     H = -(0.25 ln 0.25 + 0.75 ln 0.75) = 0.5623351; bonus = 0.1 (H - ln 2) = -0.0130812
#   row 1: pi_f = (0.5, 0.5), Q = 0, log pi_g = 0 -> value 0, H = ln 2, bonus 0
PROBS = T([[0.25, 0.75], [0.5, 0.5]])
Q = T([[1.0, 2.0], [0.0, 0.0]])
LOG_PI_G = T([[-1.0, 0.5], [0.0, 0.0]])
ALPHA_C = T([0.5, 2.0])
H0 = -(0.25 * math.log(0.25) + 0.75 * math.log(0.75))
BONUS0 = 0.1 * (H0 - math.log(2))


def test_expected_policy_terms_is_the_exact_subset_expectation():
    terms = expected_policy_terms(PROBS, Q, LOG_PI_G, ALPHA_C, 0.1)
    close(terms.value, [1.125, 0.0])
    close(terms.entropy, [H0, math.log(2)])
    close(terms.entropy_bonus, [BONUS0, 0.0])
    assert BONUS0 < 0  # relative to uniform: never positive


def test_policy_loss_hand_computed_and_gradients():
    probs, q = PROBS.clone().requires_grad_(), Q.clone().requires_grad_()
    alpha_c = ALPHA_C.clone().requires_grad_()
    loss, info = policy_loss(probs, q, LOG_PI_G, alpha_c, T(0.1))
    # L = mean_b [sum_f pi_f (alpha_c log pi_g - Q) - alpha_d (H - ln 2)] = (-(1.125 + BONUS0) + 0) / 2
    close(loss, -(1.125 + BONUS0) / 2)
    close(info["q"], (0.25 * 1 + 0.75 * 2 + 0.0) / 2)
    close(info["subset_entropy"], (H0 + math.log(2)) / 2)
    close(info["subgoal_entropy"], -(0.25 * -1 + 0.75 * 0.5) / 2)
    loss.backward()
    close(q.grad, -PROBS / 2)  # dL/dQ_f = -pi_f / B
    # dL/dpi_f at row 1 (Q = log pi_g = 0): -alpha_d dH/dpi_f = alpha_d (ln pi_f + 1) / B
    close(probs.grad[1], 0.1 * (math.log(0.5) + 1) / 2 * torch.ones(2))
    assert alpha_c.grad is None  # temperatures are constants in the policy loss


def test_policy_loss_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match=r"\[B, K\]"):
        policy_loss(PROBS, Q[:, :1], LOG_PI_G, ALPHA_C, 0.1)
    with pytest.raises(ValueError, match="alpha_c"):
        policy_loss(PROBS, Q, LOG_PI_G, T([1.0, 1.0, 1.0]), 0.1)


def test_critic_target_bootstraps_from_the_next_state_value():
    next_terms = expected_policy_terms(PROBS, Q.requires_grad_(), LOG_PI_G, ALPHA_C, 0.1)
    y = critic_target(T([1.0, 0.5]), T([0.9, 0.0]), next_terms)
    # y0 = 1 + 0.9 (1.125 + BONUS0) = 2.0007269; y1 = 0.5 + 0 (terminal: discount 0)
    close(y, [1.0 + 0.9 * (1.125 + BONUS0), 0.5])
    assert not y.requires_grad
    with pytest.raises(ValueError, match=r"\[B\]"):
        critic_target(T([1.0]), T([0.9, 0.0]), next_terms)


def test_subgoal_temperature_loss_hand_computed():
    log_alpha_c = ALPHA_C.log().requires_grad_()
    loss, info = subgoal_temperature_loss(log_alpha_c, LOG_PI_G[:1], PROBS[:1], target_entropy_factor=1.0)
    # gap_f = -log pi_g - (-1) = (2, 0.5); L = 0.25 * 0.5 * 2 + 0.75 * 2 * 0.5 = 1.0
    close(loss, 1.0)
    close(info["alpha_c"], 1.25)
    loss.backward()
    close(log_alpha_c.grad, [0.25, 0.75])  # pi_f alpha_c gap_f: entropies above target -> alphas shrink


def test_subgoal_temperature_grows_when_entropy_is_below_target():
    log_alpha_c = torch.zeros(3, requires_grad=True)
    probs = T([[0.5, 0.5, 0.0]])
    log_pi_g = T([[2.0, 3.0, 5.0]])  # per-dim entropies -2, -3, -5: all below the target -1
    loss, _ = subgoal_temperature_loss(log_alpha_c, log_pi_g, probs)
    loss.backward()
    close(log_alpha_c.grad, [0.5 * -1.0, 0.5 * -2.0, 0.0])  # a subset pi_f never picks keeps its temperature
    with torch.no_grad():
        log_alpha_c -= 0.1 * log_alpha_c.grad
    assert log_alpha_c[0] > 0 and log_alpha_c[1] > log_alpha_c[0] and log_alpha_c[2] == 0
    with pytest.raises(ValueError, match="log_alpha_c"):
        subgoal_temperature_loss(torch.zeros(2), log_pi_g, probs)


def test_subset_temperature_loss_hand_computed_and_sign():
    log_alpha_d = T(math.log(0.1), requires_grad=True)
    entropy = T([H0, math.log(2)])
    loss, info = subset_temperature_loss(log_alpha_d, entropy, n_subsets=2)
    # target = 0.5 ln 2; L = 0.1 ((H0 + ln 2) / 2 - 0.5 ln 2) = 0.0281167
    close(loss, 0.1 * ((H0 + math.log(2)) / 2 - 0.5 * math.log(2)))
    close(info["alpha_d"], 0.1)
    loss.backward()
    assert log_alpha_d.grad > 0  # entropy above target: alpha_d shrinks

    log_alpha_d = torch.zeros((), requires_grad=True)
    loss, _ = subset_temperature_loss(log_alpha_d, T([0.1, 0.2]), n_subsets=2)
    loss.backward()
    close(log_alpha_d.grad, 0.15 - 0.5 * math.log(2))  # below target: negative, so descent grows alpha_d
    assert log_alpha_d.grad < 0
    with pytest.raises(ValueError, match="0-dim"):
        subset_temperature_loss(torch.zeros(1), T([0.1]), n_subsets=2)


# ------------------------------------------------------------------------------------------- subgoal translation

# Goal space with F = 4 raw features: 0 height [0, 2] (psi 1, offset -1), 1 x delta [-3, 3] (psi 1/3, offset 0),
# 2 unused [-1, 1], 3 twist [-1.5, 1.5] (psi 2/3, offset 0). Task map: positions (0, 1, 2) = features (0, 1, 3).
# Subsets as positions: [0] (height) and [2, 1] (twist, then x: packed in that order).
PSI = np.array([1.0, 1 / 3, 1.0, 2 / 3])
OFFSET = np.array([-1.0, 0.0, 0.0, 0.0])
TASK_FEATURES = [0, 1, 3]
SUBSETS = [[0], [2, 1]]
SUBGOAL = T([[-1.0, 0.7, 0.3],    # subset 0: only position 0 (-1) counts
             [0.2, 1.0, -1.0]])   # subset 1: packed (position 2, position 1) = (-1, 1)
SUBSET = T([0, 1])
CURRENT = T([[0.5, 10.0, 0.2, 0.1],
             [1.0, -2.0, 0.0, 3.0]])


def tables() -> BackprojectionTables:
    return backprojection_tables(SUBSETS, TASK_FEATURES, PSI, OFFSET)


def test_backprojection_tables_layout():
    tab = tables()
    close(tab.positions, [[0, -1], [2, 1]])
    close(tab.psi_inv, [[[1, 0, 0, 0], [0, 0, 0, 0]],
                        [[0, 0, 0, 1.5], [0, 3, 0, 0]]])
    close(tab.offset_inv, [1.0, 0.0, 0.0, 0.0])  # -offset / psi
    with pytest.raises(ValueError, match="task_features"):
        backprojection_tables(SUBSETS, [0, 1, 4], PSI, OFFSET)


def test_front_pack_moves_subset_entries_to_the_front():
    close(front_pack(SUBGOAL, SUBSET, tables().positions), [[-1.0, 0.0], [-1.0, 1.0]])


def test_backproject_subgoal_hand_computed():
    tab = tables()
    goal = backproject_subgoal(SUBGOAL, SUBSET, tab.positions, tab.psi_inv, tab.offset_inv, CURRENT,
                               delta_features=[1])
    # row 0: height -1 -> min 0; x (not chosen) midpoint 0 + current 10; others midpoints 0
    # row 1: twist -1 -> -1.5; x +1 -> 3 + current -2 = 1; height (not chosen) midpoint 1
    close(goal, [[0.0, 10.0, 0.0, 0.0], [1.0, 1.0, 0.0, -1.5]])


def test_backproject_subgoal_range_endpoints_walker():
    space = goal_space("walker")
    subsets = [list(range(7))]
    tab = backprojection_tables(subsets, list(range(7)), space.psi, space.offset, dtype=torch.float64)
    current = torch.zeros(2, 7, dtype=torch.float64)
    current[:, 1] = 5.0  # the walker's current x
    subgoal = torch.stack([-torch.ones(7), torch.ones(7)]).double()
    goal = backproject_subgoal(subgoal, T([0, 0]), tab.positions, tab.psi_inv, tab.offset_inv, current,
                               delta_features=space.delta_feats)
    expected = torch.from_numpy(np.stack([space.low, space.high]))  # -1 -> min, +1 -> max
    expected[:, 1] += 5.0
    close(goal, expected, atol=1e-12)
    close(goal[:, 1], [-3.0 + 5.0, 3.0 + 5.0], atol=1e-12)  # x: relative to where the walker is
    close(goal[:, 0], [0.95, 1.5], atol=1e-12)


def test_desired_goal_masks_and_wraps_twist():
    bproj = T([[0.0, 10.0, 0.0, 0.0], [1.0, 1.0, 0.0, -1.5]])
    masks = subset_masks(SUBSETS, 3)  # over the task map: [1, 0, 0] and [0, 1, 1]
    goal = desired_goal(bproj, CURRENT, TASK_FEATURES, masks[SUBSET], twist_features=[3])
    # row 0: (0 - 0.5, 10 - 10, 0 - 0.1) * (1, 0, 0) = (-0.5, 0, 0)
    # row 1: (1 - 1, 1 + 2, -1.5 - 3) * (0, 1, 1); -4.5 wraps to -4.5 + 2 pi = 1.7831853
    close(goal, [[-0.5, 0.0, 0.0], [0.0, 3.0, -4.5 + 2 * math.pi]])
    unwrapped = desired_goal(bproj, CURRENT, TASK_FEATURES, masks[SUBSET])
    close(unwrapped[1, 2], -4.5)
    with pytest.raises(ValueError, match="mask"):
        desired_goal(bproj, CURRENT, TASK_FEATURES, masks[:1])


def test_update_bp_subgoal_keeps_the_absolute_target():
    masks = subset_masks(SUBSETS, 3)[SUBSET]
    goal = T([[-0.5, 0.0, 0.0], [0.0, 3.0, -4.5 + 2 * math.pi]])
    now = T([[0.7, 10.4, 0.0, 3.0], [1.0, -1.0, 0.0, -3.0]])
    new = update_bp_subgoal(CURRENT, now, goal, masks, TASK_FEATURES, twist_features=[3])
    # row 0: (0.5 - 0.7) - 0.5 = -0.7 -> target 0.7 - 0.7 = 0 as before (0.5 - 0.5)
    # row 1: x (-2 + 1) + 3 = 2 -> target -1 + 2 = 1 as before; twist (3 + 3) + 1.7831853 = 7.7831853 wraps to 1.5,
    #        and -3 + 1.5 = -1.5 is the backprojected twist target
    close(new, [[-0.7, 0.0, 0.0], [0.0, 2.0, 1.5]], atol=1e-5)

    gen = torch.Generator().manual_seed(3)
    prev, now = torch.randn(4, 4, generator=gen), torch.randn(4, 4, generator=gen)
    goal = torch.randn(4, 3, generator=gen)
    mask = torch.ones(4, 3)
    new = update_bp_subgoal(prev, now, goal, mask, TASK_FEATURES)
    close(now[:, TASK_FEATURES] + new, prev[:, TASK_FEATURES] + goal, atol=1e-6)  # s + g constant


# ------------------------------------------------------------------------------------------ DynE dense transitions


def test_dyne_aggregate_sums_to_the_next_decision_or_episode_end():
    # gamma 0.5, interval 3, rewards 1, 2, 4 in every column; one env per case:
    rewards = T([[1.0] * 4, [2.0] * 4, [4.0] * 4])
    terminals = T([[False, False, False, False],
                   [False, False, True, False],
                   [False, False, False, False]])
    decisions = T([[True, False, True, False],
                   [False, False, False, True],
                   [False, True, True, False]])
    sums = dyne_aggregate(rewards, terminals, decisions, gamma=0.5)
    # env 0, a full interval from its decision: 1 + 0.5 * 2 + 0.25 * 4 = 3, gamma^3 = 0.125
    # env 1, from offset 1 (next decision at row 2): 1 + 0.5 * 2 = 2, gamma^2
    # env 2, terminal at row 1: 1 + 0.5 * 2 = 2, discount 0
    # env 3, timeout at row 0 (row 1 starts a new episode): 1, gamma^1 = 0.5 (not terminal: bootstrap)
    close(sums.reward, [3.0, 2.0, 2.0, 1.0])
    close(sums.discount, [0.125, 0.25, 0.0, 0.5])
    close(sums.last, [2, 1, 1, 0])


def test_dyne_aggregate_checks_inputs():
    with pytest.raises(ValueError, match=r"\[T, N\]"):
        dyne_aggregate(torch.zeros(3, 2), torch.zeros(3, 1, dtype=torch.bool), torch.zeros(3, 2), 0.9)
    with pytest.raises(ValueError, match="gamma"):
        dyne_aggregate(torch.zeros(3, 2), torch.zeros(3, 2), torch.zeros(3, 2), 1.5)


def test_dyne_staging_scripted_two_envs_interval_three():
    # gamma 0.5; env 0 decides at t = 0, 3, 6 with rewards t + 1; env 1 (rewards 10 (t + 1)) falls at t = 1, starts
    # anew at t = 2, times out at t = 3 (not terminal) and starts again at t = 4.
    staging = DyneStaging(num_envs=2, interval=3, gamma=0.5)
    decisions = [(1, 1), (0, 0), (0, 1), (1, 0), (0, 1), (0, 0), (1, 0)]
    terminals = [(0, 0), (0, 1), (0, 0), (0, 0), (0, 0), (0, 0), (0, 0)]
    out = []
    for t in range(7):
        obs = T([[t, 0.0], [t, 1.0]])
        out.append(staging.push(T([t + 1.0, 10.0 * (t + 1)]), T(terminals[t]).bool(), T(decisions[t]).bool(),
                                obs=obs, next_obs=obs + 0.5))
    assert out[0] is None and out[1] is None
    expected = [  # (start, last per env, reward per env, discount per env)
        (0, [2, 1], [1 + 0.5 * 2 + 0.25 * 3, 10 + 0.5 * 20], [0.125, 0.0]),  # env 1 falls at t = 1
        (1, [2, 1], [2 + 0.5 * 3, 20], [0.25, 0.0]),
        (2, [2, 3], [3, 30 + 0.5 * 40], [0.5, 0.25]),  # env 1 times out at t = 3: bootstrapped
        (3, [5, 3], [4 + 0.5 * 5 + 0.25 * 6, 40], [0.125, 0.5]),
        (4, [5, 6], [5 + 0.5 * 6, 50 + 0.5 * 60 + 0.25 * 70], [0.25, 0.125]),
    ]
    for transition, (start, last, reward, discount) in zip(out[2:], expected):
        assert transition.start == start
        close(transition.last, last)
        close(transition.reward, reward)
        close(transition.discount, discount)
        close(transition.first["obs"], [[start, 0.0], [start, 1.0]])
        close(transition.final["next_obs"], [[last[0] + 0.5, 0.5], [last[1] + 0.5, 1.5]])


def test_dyne_staging_interval_one_and_bad_pushes():
    staging = DyneStaging(num_envs=2, interval=1, gamma=0.9)
    out = staging.push(T([1.0, 2.0]), T([False, True]), T([True, True]), obs=torch.zeros(2, 3))
    close(out.reward, [1.0, 2.0])
    close(out.discount, [0.9, 0.0])
    with pytest.raises(ValueError, match="same tensors"):
        staging.push(T([1.0, 2.0]), T([False, False]), T([True, True]))
    with pytest.raises(ValueError, match="num_envs"):
        staging.push(T([1.0]), T([False]), T([True]), obs=torch.zeros(1, 3))
    with pytest.raises(ValueError, match="interval"):
        DyneStaging(num_envs=2, interval=0, gamma=0.9)


def test_critic_target_adds_value_and_entropy_bonus():
    terms = SubsetExpectation(value=T([1.0]), entropy_bonus=T([-0.5]), entropy=T([0.1]))
    close(critic_target(T([0.0]), T([1.0]), terms), [0.5])
