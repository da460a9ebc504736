"""Limbo, HurdlesLimbo, Gaps and Stairs: spaces, seeding, course layout, scoring, penalties, falls and heights.

Scoring tests teleport the robot (root x, height and pitch in qpos) next to an obstacle and step once; fall tests
switch contacts off first, so that the placed pose stays where it was put.
"""

from __future__ import annotations

import math
import warnings

import gymnasium as gym
import mujoco
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import envs
from envs.tasks.course import N_OBSTACLES
from envs.tasks.gaps import COURSE_START, Gaps
from envs.tasks.hurdles_limbo import BAR, HURDLE, HurdlesLimbo
from envs.tasks.limbo import (BAR_RADIUS, BAR_RGBA, TOUCHED_RGBA, Limbo, LimboBars, bar_undersides, check_flag,
                              min_bar_height)
from envs.tasks.stairs import N_STEPS, STAIRS_GROUP, Stairs, stair_boxes

TASKS = ["Limbo", "HurdlesLimbo", "Gaps", "Stairs"]
ROBOTS = list(envs.ROBOTS)
TASK_KEY = {"Limbo": ("next_bar", 3), "HurdlesLimbo": ("next_obstacle", 4), "Gaps": ("next_gap_platform", 3),
            "Stairs": ("next_steps", 3)}
N_FEATURES = {"walker": 60, "halfcheetah": 60, "humanoid": 151, "humanoidpc": 151}
STANDING_Z = {"walker": 1.3, "halfcheetah": 0.7, "humanoid": 1.3, "humanoidpc": 1.3}
ROOT_Z_FEATURE = {"walker": 0, "halfcheetah": 1, "humanoid": 2, "humanoidpc": 2}  # index in "observation"
# A fallen pose per robot: (torso height above the ground, pitch); the cheetah only counts as fallen upside down.
FALLEN = {"walker": (0.5, 0.0), "halfcheetah": (0.1, math.pi), "humanoid": (0.5, 0.0), "humanoidpc": (0.5, 0.0)}
combos = pytest.mark.parametrize("task,robot", [(t, r) for t in TASKS for r in ROBOTS])


def place(env: gym.Env, x: float | None = None, z: float | None = None, pitch: float | None = None) -> None:
    """Teleport the robot's root (world x, height, pitch about y) and stop it."""
    u = env.unwrapped
    m, d = u.model, u.data
    if u.robot.planar:
        for joint, value in (("rootx", x), ("rootz", z), ("rooty", pitch)):
            if value is not None:
                d.qpos[m.jnt_qposadr[m.joint(joint).id]] = value
    else:
        adr = m.jnt_qposadr[m.joint("root").id]
        if x is not None:
            d.qpos[adr] = x
        if z is not None:
            d.qpos[adr + 2] = z
        if pitch is not None:
            d.qpos[adr + 3 : adr + 7] = [math.cos(pitch / 2), 0.0, math.sin(pitch / 2), 0.0]
    d.qvel[:] = 0.0
    mujoco.mj_forward(m, d)


def no_contacts(env: gym.Env) -> None:
    env.unwrapped.model.opt.disableflags |= mujoco.mjtDisableBit.mjDSBL_CONTACT


def step0(env: gym.Env) -> tuple[dict, float, bool, bool, dict]:
    return env.step(np.zeros(env.action_space.shape))


def ground_under_first_obstacle(env: gym.Env) -> float:
    """Height of the surface just past the first obstacle (step 0 of the stairs; elsewhere the floor, z = 0)."""
    return env.unwrapped.options["step_height"] if isinstance(env.unwrapped, Stairs) else 0.0


# ---------------------------------------------------------------------------------------------------- spaces, API


@combos
def test_spaces_step_and_check_env(task: str, robot: str) -> None:
    env = envs.make(task, robot)
    assert env._max_episode_steps == 1000 and gym.spec(envs.env_id(task, robot)).max_episode_steps == 1000
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # gymnasium warns about the unbounded Box limits
        check_env(env.unwrapped, skip_render_check=True)
    key, size = TASK_KEY[task]
    assert set(env.observation_space.spaces) == {"observation", key}
    obs, info = env.reset(seed=0)
    assert obs["observation"].shape == (N_FEATURES[robot],) and obs[key].shape == (size,)
    assert obs in env.observation_space and info == {}
    env.action_space.seed(0)
    obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
    assert obs in env.observation_space and obs["observation"].dtype == np.float32
    assert isinstance(reward, float) and isinstance(terminated, bool) and truncated is False
    assert set(info) == {"score", "fell_over"}


@combos
def test_same_seed_same_episode_and_new_seed_new_course(task: str, robot: str) -> None:
    env = envs.make(task, robot)
    actions = np.random.default_rng(0).uniform(-1, 1, (8, *env.action_space.shape))

    def episode(seed: int) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
        obs, _ = env.reset(seed=seed)
        course, shown = env.unwrapped.course_x.copy(), env.unwrapped.data.mocap_pos.copy()
        trace = [np.concatenate(list(obs.values()))]
        for action in actions:
            obs, reward, *_ = env.step(action)
            trace.append(np.concatenate([*obs.values(), [reward]]))
        return trace, course, shown

    first, course, shown = episode(5)
    again, course_again, shown_again = episode(5)
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    assert np.array_equal(course, course_again) and np.array_equal(shown, shown_again)
    _, other_course, other_shown = episode(6)
    assert not np.allclose(course, other_course) and not np.allclose(shown, other_shown)


@pytest.mark.parametrize("task,options,error", [
    ("Limbo", {"min_height": -1.0}, ValueError), ("Limbo", {"min_height": "low"}, ValueError),
    ("Limbo", {"notouch": "yes"}, TypeError), ("Limbo", {"min_hieght": 1.0}, ValueError),
    ("HurdlesLimbo", {"max_hurdle_height": 0.05}, ValueError), ("HurdlesLimbo", {"fixed_height": 1}, TypeError),
    ("Gaps", {"max_size": 0.3}, ValueError), ("Gaps", {"min_gap": 0.5, "max_gap": 0.2}, ValueError),
    ("Gaps", {"min_gap": "wide"}, TypeError), ("Stairs", {"step_height": 0.0}, ValueError),
    ("Stairs", {"step_length_min": 1.0, "step_length_max": 0.5}, ValueError),
])
def test_bad_options_raise_one_clear_error(task: str, options: dict, error: type) -> None:
    with pytest.raises(error):
        envs.make(task, "walker", **options)


def test_gaps_platforms_for_humanoids_start_at_one_metre() -> None:
    with pytest.raises(ValueError, match="humanoid"):
        envs.make("Gaps", "humanoid", max_size=0.8)
    envs.make("Gaps", "walker", max_size=0.8)


# ------------------------------------------------------------------------------------------------- course layout


@pytest.mark.parametrize("robot", ROBOTS)
def test_limbo_bars_are_capsules_across_the_corridor_at_the_robots_height(robot: str) -> None:
    env = envs.make("Limbo", robot)
    env.reset(seed=1)
    u = env.unwrapped
    low = 1.2 if robot == "walker" else 1.0
    assert u.bars.undersides.min() >= low and u.bars.undersides.max() <= low + 0.3
    gaps = np.diff(np.concatenate([[1.0], u.course_x]))
    assert len(u.course_x) == N_OBSTACLES and gaps.min() >= 3 and gaps.max() <= 6
    slot = u.bars.window.geom_ids[0]
    assert u.model.geom_type[slot] == mujoco.mjtGeom.mjGEOM_CAPSULE
    np.testing.assert_allclose(u.model.geom_size[slot, :2], [BAR_RADIUS, 8.0])
    np.testing.assert_allclose(np.abs(u.data.geom_xmat[slot].reshape(3, 3)[:, 2]), [0, 1, 0], atol=1e-9)  # along y
    np.testing.assert_allclose(u.data.mocap_pos[u.bars.window.mocap_ids[0]],
                               [u.course_x[0], 0, u.bars.undersides[0] + BAR_RADIUS])


def test_min_bar_height_and_undersides() -> None:
    assert min_bar_height("walker", "auto") == 1.2 and min_bar_height("humanoidpc", "auto") == 1.0
    assert min_bar_height("halfcheetah", "auto") == 1.0 and min_bar_height("walker", 0.9) == 0.9
    with pytest.raises(ValueError):
        min_bar_height("walker", True)
    rng = np.random.default_rng(0)
    b = bar_undersides(rng, 1000, 1.0, False)
    assert b.min() >= 1.0 and b.max() <= 1.3 and b.std() > 0.05
    assert np.array_equal(bar_undersides(rng, 3, 1.1, True), [1.1, 1.1, 1.1])
    assert check_flag("x", np.bool_(True)) is True
    with pytest.raises(TypeError):
        check_flag("x", 0)


def test_hurdles_limbo_alternates_and_reports_true_heights() -> None:
    env = envs.make("HurdlesLimbo", "walker", max_hurdle_height=0.4)
    obs, _ = env.reset(seed=2)
    u = env.unwrapped
    assert np.array_equal(u.kinds[:4], [HURDLE, BAR, HURDLE, BAR])
    np.testing.assert_allclose(u.hurdles.pos[:, 0], u.course_x[HURDLE::2])
    np.testing.assert_allclose(u.bars.window.pos[:, 0], u.course_x[BAR::2])
    # The reported hurdle height is the visible top of the box standing on the floor (bisk reported h + 0.02).
    slot, mocap = u.hurdles.geom_ids[0], u.hurdles.mocap_ids[0]
    top = u.data.mocap_pos[mocap, 2] + u.model.geom_size[slot, 2]
    assert u.data.mocap_pos[mocap, 2] - u.model.geom_size[slot, 2] == pytest.approx(0.0)
    assert obs["next_obstacle"][[0, 2, 3]] == pytest.approx([HURDLE, top, 1.0])
    assert obs["next_obstacle"][1] == pytest.approx(u.course_x[0] - u.torso_x(), abs=1e-5)
    tops = u.heights[HURDLE::2]
    assert tops.min() >= 0.16 and tops.max() <= 1.5 * 0.4 + 0.01
    place(env, x=u.course_x[0] + 0.5)
    obs, *_ = step0(env)
    bar_top = u.data.mocap_pos[u.bars.window.mocap_ids[0], 2] + BAR_RADIUS
    assert obs["next_obstacle"][[0, 2, 3]] == pytest.approx([BAR, bar_top, 1.0])
    assert bar_top == pytest.approx(u.bars.undersides[0] + 2 * BAR_RADIUS)


@pytest.mark.parametrize("robot", ["walker", "humanoid"])
def test_gaps_course_alternates_lava_and_platforms(robot: str) -> None:
    env = envs.make("Gaps", robot)
    obs, _ = env.reset(seed=3)
    u = env.unwrapped
    assert "floor" not in {u.model.geom(i).name for i in range(u.model.ngeom)}
    lava_x, lava_half = u.lava.pos[:, 0], u.lava.size[:, 0]
    gap_starts, platform_starts = lava_x - lava_half, u.course_x
    assert gap_starts[0] == pytest.approx(COURSE_START)
    gaps = platform_starts - gap_starts
    sizes = gap_starts[1:] - platform_starts[:-1]
    assert gaps.min() >= 0.2 and gaps.max() <= 0.7
    assert sizes.min() >= (1.0 if robot == "humanoid" else 0.5) and sizes.max() <= 2.5
    assert np.allclose(u.lava.pos[:, 2] + u.lava.size[:, 2], -0.05)
    for parity, window in enumerate(u.platforms):
        np.testing.assert_allclose(window.pos[:, 0] - window.size[:, 0], platform_starts[parity::2])
        assert np.allclose(window.pos[:, 2] + window.size[:, 2], 0.0)
    x = u.torso_x()
    assert obs["next_gap_platform"] == pytest.approx([COURSE_START - x, platform_starts[0] - x, 1.0], abs=1e-5)


def _covered(u: Gaps, lo: float, hi: float) -> bool:
    """Whether the shown platforms, lava and base platform leave no hole in [lo, hi]."""
    m, d = u.model, u.data
    spans = [(-8.0, COURSE_START)]
    for window in (*u.platforms, u.lava):
        centre, half = d.mocap_pos[window.mocap_ids, 0], m.geom_size[window.geom_ids, 0]
        spans += list(zip(centre - half, centre + half))
    reach = lo
    for start, end in sorted(spans):
        if start > reach + 1e-9:
            break
        reach = max(reach, end)
    return reach >= hi


def test_gaps_windows_leave_no_hole_near_the_robot() -> None:
    """Shortest platforms and gaps are the worst case: the windows then cover the least distance."""
    env = envs.make("Gaps", "walker", max_size=0.5, min_gap=0.2, max_gap=0.2)
    env.reset(seed=4)
    u = env.unwrapped
    for x in np.linspace(0.0, 60.0, 97):
        place(env, x=x)
        u.task_reward()  # moves the windows along
        assert _covered(u, x - 2.3, x + 1.7), x


def test_stair_boxes_go_up_across_and_down() -> None:
    lengths = np.random.default_rng(0).uniform(0.5, 1.0, N_STEPS)
    pos, size, centres = stair_boxes(lengths, 0.2)
    starts, ends = pos[:, 0] - size[:, 0], pos[:, 0] + size[:, 0]
    assert starts[0] == pytest.approx(3.0) and np.allclose(starts[1:], ends[:-1])  # no holes, no overlaps
    tops = pos[:, 2] + size[:, 2]
    assert np.allclose(pos[:, 2] - size[:, 2], 0.0)
    np.testing.assert_allclose(tops, 0.2 * np.array([*range(1, 11), 10, *range(10, 0, -1)]))
    assert 2 * size[10, 0] == pytest.approx(6.0)
    np.testing.assert_allclose(2 * np.delete(size[:, 0], 10), lengths)
    np.testing.assert_allclose(centres, np.delete(pos[:, 0], 10))


def test_stairs_are_rebuilt_each_episode_and_only_they_are_in_their_group() -> None:
    env = envs.make("Stairs", "walker", step_height=0.15)
    env.reset(seed=0)
    u = env.unwrapped
    ids = u.boxes.geom_ids
    assert set(np.flatnonzero(u.model.geom_group == STAIRS_GROUP)) == set(ids)
    assert mujoco.MjvOption().geomgroup[STAIRS_GROUP] == 1  # drawn by default
    first = u.model.geom_size[ids, 0].copy()
    env.reset(seed=1)
    assert not np.allclose(first, u.model.geom_size[ids, 0])
    np.testing.assert_allclose(u.data.mocap_pos[u.boxes.mocap_ids, 2] + u.model.geom_size[ids, 2],
                               0.15 * np.array([*range(1, 11), 10, *range(10, 0, -1)]))


def _robot_touches(env: gym.Env, geoms: np.ndarray) -> bool:
    u = env.unwrapped
    robot = np.isin(u.model.geom_bodyid, u._robot_body_ids())
    pairs = u.data.contact.geom
    return bool(np.any((robot[pairs[:, 0]] & np.isin(pairs[:, 1], geoms))
                       | (robot[pairs[:, 1]] & np.isin(pairs[:, 0], geoms))))


def test_window_bounding_boxes_follow_the_obstacles() -> None:
    """The midphase reads each slot body's box (``bvh_aabb``), compiled for the small parked geom."""
    u = envs.make("Limbo", "walker").unwrapped
    u.reset(seed=0)
    bars = u.model.bvh_aabb[u.model.body_bvhadr[u.model.geom_bodyid[u.bars.window.geom_ids]]]
    np.testing.assert_allclose(bars[:, 3:], np.tile([BAR_RADIUS, 8.0 + BAR_RADIUS, BAR_RADIUS], (6, 1)))
    u = envs.make("Gaps", "walker").unwrapped
    u.reset(seed=0)
    ids = u.lava.geom_ids
    np.testing.assert_allclose(u.model.bvh_aabb[u.model.body_bvhadr[u.model.geom_bodyid[ids]], 3:],
                               u.model.geom_size[ids])


@pytest.mark.parametrize("task", ["Limbo", "Gaps", "Stairs"])
def test_humanoid_meets_obstacles_far_from_their_centre(task: str) -> None:
    """Humanoid feet have two geoms each, so their contacts go through the midphase and its bounding boxes."""
    env = envs.make(task, "humanoid", **({"fixed_size": True} if task == "Gaps" else {}))
    env.reset(seed=0)
    u = env.unwrapped
    if task == "Limbo":  # the torso against the first bar, 5 m to the side of the bar's centre
        bar_z = u.data.mocap_pos[u.bars.window.mocap_ids[0], 2]
        place(env, x=u.course_x[0] - 0.1, z=bar_z)
        u.data.qpos[u.model.jnt_qposadr[u.model.joint("root").id] + 1] = 5.0
        mujoco.mj_forward(u.model, u.data)
        geoms = u.bars.window.geom_ids
    elif task == "Gaps":  # feet 1 m behind the centre of the first 2.5 m platform
        place(env, x=u.course_x[0] + 0.25, z=STANDING_Z["humanoid"] - 0.1)
        geoms = u.platforms[0].geom_ids
    else:  # feet 2.7 m before the centre of the 6 m landing
        landing_start = u.boxes.pos[N_STEPS // 2, 0] - 3.0
        place(env, x=landing_start + 0.3, z=2.0 + STANDING_Z["humanoid"] - 0.1)
        geoms = u.boxes.geom_ids
        assert u.torso_height() == pytest.approx(STANDING_Z["humanoid"] - 0.1)
    assert _robot_touches(env, geoms)


# ---------------------------------------------------------------------------------------------------- scoring

FIRST_PASS = {"Limbo": ({}, 0.5, 0.0), "HurdlesLimbo": ({}, 0.5, 0.0), "Gaps": ({"fixed_size": True}, 1.2, 0.0),
              "Stairs": ({}, 0.05, 0.4)}  # options, x past the first obstacle, height added to stand clear of it


@combos
def test_passing_the_first_obstacle_scores_exactly_once(task: str, robot: str) -> None:
    options, ahead, lift = FIRST_PASS[task]
    env = envs.make(task, robot, **options)
    env.reset(seed=0)
    u = env.unwrapped
    key = TASK_KEY[task][0]
    x0 = u.course_x[0]
    place(env, x=x0 + ahead, z=STANDING_Z[robot] + lift)
    obs, reward, _, _, info = step0(env)
    assert info["score"] == 1.0 and reward == 1.0 and u.torso_x() > x0
    assert sum(step0(env)[4]["score"] for _ in range(3)) == 0.0
    place(env, x=x0 - 0.5)  # back before it: the obstacle ahead is no longer new ...
    obs, *_, info = step0(env)
    assert info["score"] == 0.0 and obs[key][-1] == 0.0
    place(env, x=x0 + ahead)  # ... and passing it again scores nothing
    obs, *_, info = step0(env)
    assert info["score"] == 0.0 and obs[key][-1] == 1.0


@pytest.mark.parametrize("task,expected", [("Limbo", [1.0, 2.0]), ("HurdlesLimbo", [HURDLE, 10.0, 0.1]),
                                           ("Gaps", [1.0, 1.0]), ("Stairs", [10.0, 20.0])])
def test_passing_the_whole_course_at_once(task: str, expected: list) -> None:
    env = envs.make(task, "walker")
    env.reset(seed=0)
    no_contacts(env)
    u = env.unwrapped
    place(env, x=u.course_x[-1] + 0.5)
    obs, reward, _, _, info = step0(env)
    assert info["score"] == reward == len(u.course_x) == (N_STEPS if task == "Stairs" else N_OBSTACLES)
    assert obs[TASK_KEY[task][0]] == pytest.approx([*expected, 1.0])


def test_limbo_and_stairs_observations_point_at_the_next_obstacle() -> None:
    env = envs.make("Limbo", "humanoid")
    obs, _ = env.reset(seed=7)
    u = env.unwrapped
    assert obs["next_bar"] == pytest.approx([u.course_x[0] - u.torso_x(), u.bars.undersides[0] + 0.2, 1.0], abs=1e-5)
    env = envs.make("Stairs", "halfcheetah")
    obs, _ = env.reset(seed=7)
    u = env.unwrapped
    x = u.torso_x()
    assert obs["next_steps"] == pytest.approx([u.course_x[0] - x, u.course_x[1] - x, 1.0], abs=1e-5)
    no_contacts(env)
    place(env, x=u.course_x[-1] - 0.01)
    obs, *_ = step0(env)
    assert obs["next_steps"] == pytest.approx([u.course_x[-1] - u.torso_x(), 10.0, 1.0], abs=1e-5)


@pytest.mark.parametrize("task,option", [("Limbo", "min_height"), ("HurdlesLimbo", "min_bar_height")])
@pytest.mark.parametrize("robot", ROBOTS)
def test_notouch_costs_one_per_bar_touched_and_paints_it_red(task: str, option: str, robot: str) -> None:
    """Bars at torso height; the torso placed 10 cm before the first bar's axis touches it."""
    scores = {}
    for notouch in (True, False):
        env = envs.make(task, robot, notouch=notouch, fixed_height=True, **{option: STANDING_Z[robot] - BAR_RADIUS})
        env.reset(seed=0)
        u = env.unwrapped
        first_bar = 0 if task == "Limbo" else 1
        place(env, x=u.course_x[first_bar] - 0.1, z=STANDING_Z[robot])
        scores[notouch] = [step0(env)[4]["score"] for _ in range(3)]
        colour = u.model.geom_rgba[u.bars.window.geom_ids[0]]
        assert u.torso_x() < u.course_x[first_bar]
        assert np.allclose(colour, TOUCHED_RGBA if notouch else BAR_RGBA)
        assert u.bars.touched[0] == notouch and not u.bars.touched[1:].any()
    passed = float(task == "HurdlesLimbo")  # the hurdle before the bar
    assert scores[False] == [passed, 0.0, 0.0]
    assert scores[True] == [passed - 1.0, 0.0, 0.0]
    env.reset(seed=0)
    assert np.allclose(u.model.geom_rgba[u.bars.window.geom_ids], BAR_RGBA)


def test_limbo_bars_keep_their_colour_as_the_window_moves() -> None:
    env = envs.make("Limbo", "walker")
    env.reset(seed=0)
    u = env.unwrapped
    bars: LimboBars = u.bars
    bars.touched[3] = True
    for x in (0.0, u.course_x[5], u.course_x[9]):
        bars.sync(x)
        shown_x = u.data.mocap_pos[bars.window.mocap_ids, 0]
        red = np.all(u.model.geom_rgba[bars.window.geom_ids] == np.float32(TOUCHED_RGBA), axis=1)
        assert np.array_equal(red, np.isclose(shown_x, u.course_x[3]))


# ------------------------------------------------------------------------------------------------------- lava

@pytest.mark.parametrize("robot", ROBOTS)
def test_gaps_lava_contact_ends_the_episode_with_minus_one(robot: str) -> None:
    env = envs.make("Gaps", robot, min_gap=2.0, max_gap=2.0)  # gaps wide enough for the cheetah
    env.reset(seed=0)
    u = env.unwrapped
    for _ in range(3):  # standing on the base platform is fine
        assert step0(env)[2] is False
    assert not u.touched_lava
    env.reset(seed=0)
    place(env, x=COURSE_START + 1.0, z=STANDING_Z[robot] - 0.15)  # feet 10 cm into the first gap's lava
    _, reward, terminated, _, info = step0(env)
    assert u.touched_lava and terminated and reward == -1.0 and info == {"score": -1.0, "fell_over": False}


# ---------------------------------------------------------------------------------------------------- falls

@combos
def test_a_fall_ends_with_minus_one_and_the_score_keeps_the_pass(task: str, robot: str) -> None:
    env = envs.make(task, robot)
    env.reset(seed=0)
    no_contacts(env)
    u = env.unwrapped
    height, pitch = FALLEN[robot]
    place(env, x=u.course_x[0] + 0.05, z=ground_under_first_obstacle(env) + height, pitch=pitch)
    _, reward, terminated, _, info = step0(env)
    assert reward == -1.0 and terminated and info == {"score": 1.0, "fell_over": True}


@pytest.mark.parametrize("robot", ROBOTS)
def test_stairs_measure_height_from_the_surface_below(robot: str) -> None:
    env = envs.make("Stairs", robot)
    env.reset(seed=0)
    no_contacts(env)
    u = env.unwrapped
    landing_x = u.boxes.pos[N_STEPS // 2, 0]
    place(env, x=0.0, z=1.7)
    assert u.torso_height() == pytest.approx(1.7)  # over the floor
    place(env, x=u.course_x[0], z=1.7)
    assert u.torso_height() == pytest.approx(1.5)  # over the first step, 0.2 m high
    place(env, x=landing_x, z=2.0 + STANDING_Z[robot], pitch=0.0)
    assert u.torso_height() == pytest.approx(STANDING_Z[robot])
    obs, reward, terminated, _, _ = step0(env)
    assert not terminated and obs["observation"][ROOT_Z_FEATURE[robot]] == pytest.approx(u.torso_height(), abs=1e-5)
    assert u.data.xpos[u.torso_id, 2] > 2.0 + STANDING_Z[robot] - 0.01
    height, pitch = FALLEN[robot]
    place(env, x=landing_x, z=2.0 + height, pitch=pitch)  # lying on the landing, 2 m above the floor
    _, reward, terminated, _, info = step0(env)
    assert reward == -1.0 and terminated and info["fell_over"]


def test_the_same_pose_high_up_is_no_fall_without_stairs() -> None:
    env = envs.make("Limbo", "walker")
    env.reset(seed=0)
    no_contacts(env)
    place(env, x=0.0, z=2.0 + FALLEN["walker"][0])
    assert step0(env)[2] is False


def test_task_classes_are_registered() -> None:
    for task, cls in (("Limbo", Limbo), ("HurdlesLimbo", HurdlesLimbo), ("Gaps", Gaps), ("Stairs", Stairs)):
        assert envs.task_class(task) is cls and envs.TASKS[task][1] == 1000
        assert isinstance(gym.make(envs.env_id(task, "walker")).unwrapped, cls)
