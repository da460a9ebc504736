"""Goal spaces: features of known poses, twist/swing angles, ranges and (back)projection, feature subsets."""

from __future__ import annotations

import math

import mujoco
import numpy as np
import pytest

from envs.tasks.floor import Floor
from envs.tasks.hurdles import Hurdles
from hsd3_learn.envs.goal_spaces import (FEATURE_DIMS, enumerate_subsets, goal_space, height_above_ground,
                                         humanoid_bodyfeet, parse_subset, subset_mask, task_map, twist_angle,
                                         twist_swing_angles, walker_bodyfeet, wrap_angle)

WALKER_SUBSETS = [
    "0", "1", "2", "3+4", "5+6",
    "0,1", "0,2", "0,3+4", "0,5+6", "1,2", "1,3+4", "1,5+6", "2,3+4", "2,5+6", "3+4,5+6",
    "0,1,2", "0,1,3+4", "0,1,5+6", "0,2,3+4", "0,2,5+6", "0,3+4,5+6", "1,2,3+4", "1,2,5+6", "1,3+4,5+6",
    "2,3+4,5+6",
    "0,1,2,3+4", "0,1,2,5+6", "0,1,3+4,5+6", "0,2,3+4,5+6", "1,2,3+4,5+6",
    "0,1,2,3+4,5+6",
]


def _pose(env: Floor, **qpos: float) -> None:
    """Put the robot in its initial pose (no noise, no velocity), set some joints, update the kinematics."""
    m, d = env.model, env.data
    d.qpos[:] = env.init_qpos
    d.qvel[:] = 0.0
    for joint, value in qpos.items():
        d.qpos[m.joint(joint).qposadr[0]] = value
    mujoco.mj_kinematics(m, d)


@pytest.fixture(scope="module")
def walker() -> Floor:
    env = Floor(robot="walker")
    env.reset(seed=0)
    return env


@pytest.fixture(scope="module")
def humanoid() -> Floor:
    env = Floor(robot="humanoid")
    env.reset(seed=0)
    return env


def _rotation_y(angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


# -------------------------------------------------------------------------------------------------------- walker


def test_walker_standing_straight(walker: Floor) -> None:
    _pose(walker, rootx=0.7)
    # torso at z 1.3; feet bodies sit 0.3 + 0.7 + 0.25 = 1.25 m below the torso and 0.06 m forward (walker.xml)
    np.testing.assert_allclose(goal_space("walker").features(walker), [1.3, 0.7, 0.0, 0.06, -1.25, 0.06, -1.25],
                               atol=1e-12)
    assert goal_space("walker").names == ("rootz", "rootx", "rooty", "left_foot:px", "left_foot:pz",
                                          "right_foot:px", "right_foot:pz")


def test_walker_pitch_rotates_the_world_but_not_the_torso_frame(walker: Floor) -> None:
    _pose(walker, rooty=0.3)
    features = walker_bodyfeet(walker.model, walker.data)
    np.testing.assert_allclose(features, [1.3, 0.0, 0.3, 0.06, -1.25, 0.06, -1.25], atol=1e-12)
    world = walker.data.body("left_foot").xpos - walker.data.body("torso").xpos
    np.testing.assert_allclose(world[[0, 2]], (_rotation_y(0.3) @ [0.06, 0.0, -1.25])[[0, 2]], atol=1e-12)


def test_walker_pitched_torso_with_vertical_legs_sees_its_feet_rotated(walker: Floor) -> None:
    # Lean the torso 0.3 rad and swing both hips back by as much: the legs hang straight down in the world, so in
    # the torso frame the feet = hip (0, -0.3) + R_y(-0.3) (leg vector (0.06, -0.95)).
    _pose(walker, rooty=0.3, left_hip=0.3, right_hip=0.3)
    foot = np.array([0.0, 0.0, -0.3]) + _rotation_y(-0.3) @ [0.06, 0.0, -0.95]
    np.testing.assert_allclose(walker_bodyfeet(walker.model, walker.data), [1.3, 0, 0.3, foot[0], foot[2], foot[0],
                                                                              foot[2]], atol=1e-12)
    world = walker.data.body("right_foot").xpos - walker.data.body("torso").xpos
    assert world[0] == pytest.approx(0.06 - 0.3 * math.sin(0.3), abs=1e-12)  # hip moved back, leg vertical


def test_walker_relz_measures_the_height_above_an_obstacle() -> None:
    env = Hurdles(robot="walker")
    env.reset(seed=3)
    relz = goal_space("walker", "bodyfeet-relz")
    _pose(env, rootx=float(env.course_x[0]))  # torso right above the first hurdle (the legs are skipped)
    features = relz.features(env)
    assert features[0] == pytest.approx(1.3 - env.tops[0], abs=1e-9)
    np.testing.assert_allclose(features[1:], goal_space("walker").features(env)[1:])
    _pose(env, rootx=float(env.course_x[0]) - 1.0)  # over the flat floor
    assert height_above_ground(env.model, env.data, env.torso_id) == pytest.approx(1.3, abs=1e-9)
    # Lifted so that the ray grazes both feet (radius 0.05 at y = +-0.05) before it reaches the hurdle.
    _pose(env, rootx=float(env.course_x[0]), rootz=1.9)
    assert height_above_ground(env.model, env.data, env.torso_id) == pytest.approx(1.9 - env.tops[0], abs=1e-5)


# ------------------------------------------------------------------------------------------------------ humanoid


def test_twist_swing_of_simple_rotations() -> None:
    yaw, pitch, roll = 0.5, 0.4, -0.3
    twist_only = [math.cos(yaw / 2), 0, 0, math.sin(yaw / 2)]
    np.testing.assert_allclose(twist_swing_angles(twist_only), [yaw, 0, 0], atol=1e-12)
    pitch_after_yaw = [math.cos(pitch / 2) * math.cos(yaw / 2), math.sin(pitch / 2) * math.sin(yaw / 2),
                       math.sin(pitch / 2) * math.cos(yaw / 2), math.cos(pitch / 2) * math.sin(yaw / 2)]  # Ry * Rz
    np.testing.assert_allclose(twist_swing_angles(pitch_after_yaw), [yaw, pitch, 0], atol=1e-12)
    np.testing.assert_allclose(twist_swing_angles([math.cos(roll / 2), math.sin(roll / 2), 0, 0]), [0, 0, roll],
                               atol=1e-12)
    np.testing.assert_allclose(twist_swing_angles(-np.array(pitch_after_yaw)), [yaw, pitch, 0], atol=1e-12)


@pytest.mark.parametrize("quat, expected", [  # expected from scipy's Rotation, as hucc computes them
    ([0.001257, 0.305295, -0.280148, -0.910116], [-3.138830370099, -0.600107203532, -0.543084807695]),
    ([-0.262948, -0.573495, 0.034783, 0.775082], [-2.487457202622, -1.168953178427, 0.253959659915]),
    ([-0.493548, -0.622166, 0.491177, 0.35786], [-1.254716517819, -1.745242118318, 0.281744202998]),
    ([0.9, 0.1, -0.3, 0.2], [0.437337891748, -0.556951327383, 0.322733838249]),  # not normalised
])
def test_twist_swing_matches_scipy(quat: list[float], expected: list[float]) -> None:
    np.testing.assert_allclose(twist_swing_angles(quat), expected, atol=1e-11)


def test_twist_swing_without_twist_in_gimbal_lock() -> None:
    # A half-turn about (1, 1, 0): no twist (w = z = 0), and a swing of R = [[0, 1, 0], [1, 0, 0], [0, 0, -1]] whose
    # middle y-z-x angle is -pi/2, where only a + c is defined: scipy's convention puts it all into the y angle.
    twist, swing_y, swing_x = twist_swing_angles([0.0, math.sqrt(0.5), math.sqrt(0.5), 0.0])
    assert (twist, abs(swing_y), swing_x) == (0.0, pytest.approx(math.pi), 0.0)


def test_twist_angle_edge_cases() -> None:
    assert twist_angle([0.0, 1.0, 0.0, 0.0]) == 0.0  # half-turn about x: no twist
    assert twist_angle([0.0, 0.0, 0.0, 1.0]) == pytest.approx(-math.pi)  # half-turn about z, wrapped to [-pi, pi)
    np.testing.assert_allclose(wrap_angle(np.array([3 * math.pi / 2, -math.pi, math.pi])), [-math.pi / 2, -math.pi,
                                                                                            -math.pi])


def test_humanoid_standing(humanoid: Floor) -> None:
    _pose(humanoid)
    features = goal_space("humanoid").features(humanoid)
    np.testing.assert_allclose(features[:6], [0, 0, 1.3, 0, 0, 0], atol=1e-12)
    # feet: thigh y +-0.1, shin y -+0.01, down 0.04 + 0.403 + 0.39 = 0.833 (the pelvis leans back 0.008 rad)
    np.testing.assert_allclose(features[6:], [0.0067, 0.09, -0.833, 0.0067, -0.09, -0.833], atol=2e-4)


def test_humanoid_yaw_gives_twist_and_rotates_the_feet_by_it(humanoid: Floor) -> None:
    _pose(humanoid)
    feet_straight = humanoid_bodyfeet(humanoid.model, humanoid.data)[6:].reshape(2, 3)
    yaw = 0.5
    humanoid.data.qpos[3:7] = [math.cos(yaw / 2), 0, 0, math.sin(yaw / 2)]
    humanoid.data.qpos[0:2] = [1.0, -2.0]
    mujoco.mj_kinematics(humanoid.model, humanoid.data)
    features = humanoid_bodyfeet(humanoid.model, humanoid.data)
    np.testing.assert_allclose(features[:6], [1.0, -2.0, 1.3, yaw, 0, 0], atol=1e-12)
    # hucc rotates the world offset (already turned by the yaw) by the pelvis twist once more: 2 x yaw in total
    c, s = math.cos(2 * yaw), math.sin(2 * yaw)
    rotated = feet_straight @ np.array([[c, s, 0], [-s, c, 0], [0, 0, 1]])
    np.testing.assert_allclose(features[6:].reshape(2, 3), rotated, atol=1e-12)


def test_humanoid_relz_replaces_the_root_height(humanoid: Floor) -> None:
    _pose(humanoid)
    humanoid.data.qpos[2] = 1.1
    mujoco.mj_kinematics(humanoid.model, humanoid.data)
    features = goal_space("humanoidpc", "bodyfeet-relz").features(humanoid)
    assert features[2] == pytest.approx(1.1, abs=1e-9)


# ---------------------------------------------------------------------------------------------------- projection


@pytest.mark.parametrize("robot", ["walker", "humanoid"])
def test_projection_maps_ranges_to_unit_interval(robot: str) -> None:
    space = goal_space(robot)
    np.testing.assert_allclose(space.project(space.low), -np.ones(space.dim), atol=1e-12)
    np.testing.assert_allclose(space.project(space.high), np.ones(space.dim), atol=1e-12)
    np.testing.assert_allclose(space.psi, 2 / (space.high - space.low))
    np.testing.assert_allclose(space.offset, -2 * space.low / (space.high - space.low) - 1)
    values = np.random.default_rng(0).normal(size=(5, space.dim))
    np.testing.assert_allclose(space.backproject(space.project(values)), values, atol=1e-12)


def test_projection_of_a_feature_subset() -> None:
    space = goal_space("walker")
    # rootz [0.95, 1.5] and left foot z [-1.3, 0]: midpoints map to 0
    np.testing.assert_allclose(space.project([1.225, -0.65], [0, 4]), [0.0, 0.0], atol=1e-12)
    np.testing.assert_allclose(space.backproject([[1.0, -1.0]], [0, 4]), [[1.5, -1.3]], atol=1e-12)
    assert space.project([0.0], [1])[0] == pytest.approx(0.0)
    with pytest.raises(ValueError, match="feature indices"):
        space.project([0.0], [7])


def test_ranges_and_special_features() -> None:
    walker, humanoid = goal_space("walker"), goal_space("humanoidpc")
    np.testing.assert_allclose(walker.low, [0.95, -3, -1.3, -0.72, -1.3, -0.72, -1.3])
    np.testing.assert_allclose(walker.high, [1.5, 3, 1.3, 0.99, 0, 0.99, 0])
    np.testing.assert_allclose(humanoid.low, [-3, -3, 0.95, -1.57, -1.57, -0.5, -1, -1, -1, -1, -1, -1])
    np.testing.assert_allclose(humanoid.high, [3, 3, 1.5, 1.57, 1.57, 0.5, 1, 1, 0.2, 1, 1, 0.2])
    assert (walker.delta_feats, walker.twist_feats) == ((1,), ())
    assert (humanoid.delta_feats, humanoid.twist_feats) == ((0, 1), (3,))


def test_projected_difference_wraps_twist() -> None:
    space = goal_space("humanoid")
    psi = space.psi[3]
    diff = space.projected_difference(np.array([psi * 3.0, 0.5]), np.array([psi * -3.0, 0.25]), [3, 2])
    np.testing.assert_allclose(diff, [psi * (6.0 - 2 * math.pi), 0.25], atol=1e-12)


def test_unknown_robot_or_kind() -> None:
    with pytest.raises(ValueError, match="valid robots: walker, humanoid, humanoidpc"):
        goal_space("halfcheetah")
    with pytest.raises(ValueError, match="valid: bodyfeet, bodyfeet-relz"):
        goal_space("walker", "joints")


# ------------------------------------------------------------------------------------------------------- subsets


def test_walker_subsets_in_original_order() -> None:
    assert enumerate_subsets(FEATURE_DIMS["walker"]) == WALKER_SUBSETS
    assert enumerate_subsets("0#1#2#4+3#6-5", rank_max=1) == ["0", "1", "2", "3+4", "5+6"]
    assert enumerate_subsets(FEATURE_DIMS["walker"], rank_max=2, rank_min=2) == WALKER_SUBSETS[5:15]


def test_humanoid_subsets_and_task_map() -> None:
    subsets = enumerate_subsets(FEATURE_DIMS["humanoid"])
    assert len(subsets) == 31
    assert subsets[:6] == ["0+3", "2+3", "3+4", "3+6+7+8", "3+9+10+11", "0+3,2+3"]
    assert subsets[-1] == "0+3,2+3,3+4,3+6+7+8,3+9+10+11"
    assert task_map(FEATURE_DIMS["humanoid"]) == {0: 0, 2: 1, 3: 2, 4: 3, 6: 4, 7: 5, 8: 6, 9: 7, 10: 8, 11: 9}
    assert task_map(FEATURE_DIMS["walker"]) == {i: i for i in range(7)}


def test_parse_subset_and_mask() -> None:
    assert parse_subset("0+3,2+3") == [0, 3, 2]
    tmap = task_map(FEATURE_DIMS["humanoid"])
    mask = subset_mask("0+3,3+9+10+11", tmap)
    assert mask.dtype == np.float32
    np.testing.assert_array_equal(mask, [1, 0, 1, 0, 0, 0, 0, 1, 1, 1])
    with pytest.raises(ValueError, match="not in the task map"):
        subset_mask("1", tmap)
    with pytest.raises(ValueError, match="subset is ints"):
        parse_subset("0,x")


def test_bad_feature_dims() -> None:
    with pytest.raises(ValueError, match="feature_dims"):
        enumerate_subsets("0#a")
    with pytest.raises(ValueError, match="rank_min"):
        enumerate_subsets("0#1", rank_max=0)
