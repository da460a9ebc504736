"""Goal spaces of HSD-3: the few body features a skill learns to control, their ranges and their normalisation.

A goal space is a short vector of interpretable features (``bodyfeet``: root height, position and orientation, feet
positions relative to the body). Pre-training teaches the low-level policy to move any *subset* of them to a goal;
HSD-3's high level then picks a subset and a goal in it every few steps. Goals live in a normalised space where
every feature's [min, max] range maps to [-1, 1]:

    project(s) = psi * s + offset,   psi = 2 / (max - min),   offset = -2 min / (max - min) - 1
    backproject(g) = (g - offset) / psi

| robot | features (index: name [min, max]) |
|---|---|
| walker | 0: rootz [0.95, 1.5], 1: rootx (delta) [-3, 3], 2: rooty (pitch) [-1.3, 1.3] |
| | 3, 4 / 5, 6: left / right foot x [-0.72, 0.99], z [-1.3, 0] relative to the torso, torso frame |
| humanoid(pc) | 0, 1: root x, y (delta) [-3, 3], 2: root z [0.95, 1.5] |
| | 3: twist about z [-1.57, 1.57], 4: swing y [-1.57, 1.57], 5: swing x [-0.5, 0.5] of the torso |
| | 6-8 / 9-11: left / right foot x, y [-1, 1], z [-1, 0.2] relative to the pelvis, turned by its twist |

*Delta* features (the root's horizontal position) get goals relative to where the robot is, since an absolute x is
meaningless on an endless floor; *twist* features are angles, so differences wrap around at +-pi. Feature subsets
are named like the original: groups joined by ``,`` and features inside a group by ``+`` (walker ``"0,3+4"``: root
height and left foot).

Differences from the original ``hucc`` (``goal_spaces.py``, ``features.py``, ``ctrlgs.py``):

1. One :class:`GoalSpace` object per robot holds names, ranges, extraction and (back)projection, instead of global
   tables plus featurizer classes plus env methods; ``psi`` is a vector, not a diagonal matrix (same map).
2. ``psi`` is ``2 / (max - min)`` without hucc's ``+ 1e-7``, so range endpoints map to exactly -1 and +1 (hucc's
   values differ by ~1e-7 relative).
3. The twist/swing decomposition is written out with quaternion algebra instead of scipy's ``Rotation`` (same
   angles to 1e-15).
4. ``bodyfeet-relz``: the height ray restarts 1 um below each robot geom it hits (bisk restarts on the hit point,
   which can cycle forever between two robot geoms the ray grazes at one point, as the walker's feet at y = 0);
   with no surface below, the torso's world height is returned (bisk: 0 or the height above the last robot hit).

Kept from the original although it looks odd: the humanoid's feet offsets are rotated *by* the pelvis twist, not by
its inverse, so they turn with twice the heading instead of staying in the heading frame (the same at heading 0;
twist goals stay within +-pi/2). Skills trained with hucc, e.g. its released ``humanoidpc.pt``, expect exactly this.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from itertools import combinations
from typing import TYPE_CHECKING

import mujoco
import numpy as np

from hsd3_learn.utils import sorted_nicely_sep

if TYPE_CHECKING:
    from envs.base import BiskEnv

__all__ = [
    "FEATURE_DIMS",
    "GOAL_SPACE_KINDS",
    "GoalSpace",
    "enumerate_subsets",
    "goal_space",
    "height_above_ground",
    "humanoid_bodyfeet",
    "parse_subset",
    "subset_mask",
    "task_map",
    "twist_angle",
    "twist_swing_angles",
    "walker_bodyfeet",
    "wrap_angle",
]

_RAY_STEP = 1e-6  # m: how far below a robot geom's surface the height ray restarts

#: kinds of goal space; ``-relz`` measures the root height from the surface below (Stairs)
GOAL_SPACE_KINDS = ("bodyfeet", "bodyfeet-relz")

#: the feature groups pre-training combines into subsets (``#`` between groups, ``+`` inside one)
FEATURE_DIMS: dict[str, str] = {
    "walker": "0#1#2#3+4#5+6",
    "humanoid": "0+3#2+3#3+4#3+6+7+8#3+9+10+11",
    "humanoidpc": "0+3#2+3#3+4#3+6+7+8#3+9+10+11",
}


# ------------------------------------------------------------------------------------------------ feature extraction


def _body(model: mujoco.MjModel, name: str) -> int:
    return mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, name)


def _qpos_adr(model: mujoco.MjModel, joint: str) -> int:
    return int(model.jnt_qposadr[mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_JOINT, joint)])


def walker_bodyfeet(model: mujoco.MjModel, data: mujoco.MjData) -> np.ndarray:
    """Walker features [7]: rootz, rootx, rooty, then each foot's (x, z) offset from the torso in the torso frame."""
    out = np.empty(7)
    for k, joint in enumerate(("rootz", "rootx", "rooty")):
        out[k] = data.qpos[_qpos_adr(model, joint)]
    torso = _body(model, "torso")
    offset = np.empty(3)
    for k, side in enumerate(("left", "right")):
        # R^T (foot - torso): the world offset expressed along the torso's axes (the columns of its xmat)
        mujoco.mju_mulMatTVec3(offset, data.xmat[torso], data.xpos[_body(model, f"{side}_foot")] - data.xpos[torso])
        out[3 + 2 * k], out[4 + 2 * k] = offset[0], offset[2]  # the walker is planar: y is constant
    return out


def humanoid_bodyfeet(model: mujoco.MjModel, data: mujoco.MjData) -> np.ndarray:
    """Humanoid features [12]: root xyz, twist tz and swing sy, sx of the torso, feet xyz relative to the pelvis."""
    out = np.empty(12)
    root = _qpos_adr(model, "root")  # free joint: position xyz, then orientation quaternion (w, x, y, z)
    out[:3] = data.qpos[root : root + 3]
    out[3:6] = twist_swing_angles(data.qpos[root + 3 : root + 7])
    pelvis = _body(model, "pelvis")
    # Feet offsets are rotated about z by the pelvis twist; as in hucc, by the twist itself, not its inverse.
    heading = twist_angle(data.xquat[pelvis])
    cos, sin = math.cos(heading), math.sin(heading)
    for k, side in enumerate(("left", "right")):
        dx, dy, dz = (data.xpos[_body(model, f"{side}_foot")] - data.xpos[pelvis]).tolist()
        out[6 + 3 * k : 9 + 3 * k] = (cos * dx - sin * dy, sin * dx + cos * dy, dz)
    return out


def twist_angle(quat: np.ndarray) -> float:
    """Angle in [-pi, pi) of the twist about world z contained in the orientation ``quat`` (w, x, y, z).

    The twist is the quaternion's (w, z) part, normalised; a half-turn about a horizontal axis (w = z = 0) has no
    defined twist and gets 0.
    """
    w, z = float(quat[0]), float(quat[3])
    if math.hypot(w, z) < 1e-12:
        return 0.0
    return wrap_angle(2.0 * math.atan2(z, w))


def twist_swing_angles(quat: np.ndarray) -> tuple[float, float, float]:
    """Split an orientation (w, x, y, z) into a twist about world z and a swing; return (twist, swing_y, swing_x).

    q = swing * twist: the twist angle is in [-pi, pi); the swing ``q * twist^-1`` is read as extrinsic y-z-x Euler
    angles (scipy's ``"yzx"``), of which the y and x angles are kept. Plain floats: this runs every env step.
    """
    w, x, y, z = (float(v) for v in quat)
    norm = math.sqrt(w * w + x * x + y * y + z * z)
    q = (w / norm, x / norm, y / norm, z / norm)
    twist = twist_angle(q)
    inverse_twist = (math.cos(twist / 2), 0.0, 0.0, -math.sin(twist / 2))
    swing_y, _, swing_x = _euler_yzx(_quat_multiply(q, inverse_twist))
    return twist, swing_y, swing_x


def _quat_multiply(a: Sequence[float], b: Sequence[float]) -> tuple[float, float, float, float]:
    """Hamilton product a * b of quaternions (w, x, y, z): the rotation b, then a."""
    aw, ax, ay, az = a
    bw, bx, by, bz = b
    return (aw * bw - ax * bx - ay * by - az * bz, aw * bx + ax * bw + ay * bz - az * by,
            aw * by - ax * bz + ay * bw + az * bx, aw * bz + ax * by - ay * bx + az * bw)


def _euler_yzx(quat: Sequence[float]) -> tuple[float, float, float]:
    """Extrinsic y-z-x Euler angles (a, b, c) of a unit quaternion, R = Rx(c) Rz(b) Ry(a), b in [-pi/2, pi/2]."""
    w, x, y, z = quat
    r00, r01, r02 = 1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)  # rotation matrix entries
    r11, r21 = 1 - 2 * (x * x + z * z), 2 * (y * z + w * x)
    r20, r22 = 2 * (x * z - w * y), 1 - 2 * (x * x + y * y)
    b = math.asin(min(1.0, max(-1.0, -r01)))  # R[0, 1] = -sin(b)
    if abs(r01) > 1.0 - 1e-9:  # gimbal lock: only a + c or a - c is defined; put it all in a (as scipy)
        return math.atan2(-r20, r22), b, 0.0
    return math.atan2(r02, r00), b, math.atan2(r21, r11)


def height_above_ground(model: mujoco.MjModel, data: mujoco.MjData, body: int) -> float:
    """Height (m) of ``body`` above the first non-robot surface straight below it (``-relz`` goal spaces).

    A downward ray from the body's origin passes through the robot's own geoms (those under the same root body):
    after each robot hit it restarts just below the hit point with that body excluded. The small step past the
    hit matters where the ray only grazes two geoms at one point (the walker's feet touch the plane y = 0).
    Geoms with alpha 0 are invisible to rays. Without any surface below, the world height is returned.
    """
    robot_root = model.body_rootid[body]
    point = data.xpos[body].copy()
    down = np.array([0.0, 0.0, -1.0])
    geom = np.zeros(1, dtype=np.int32)
    exclude = body
    for _ in range(model.ngeom):
        distance = mujoco.mj_ray(model, data, point, down, None, True, exclude, geom)
        if distance < 0:
            break
        hit_body = model.geom_bodyid[geom[0]]
        if model.body_rootid[hit_body] != robot_root:
            return float(data.xpos[body, 2] - (point[2] - distance))
        point[2] -= distance + _RAY_STEP
        exclude = hit_body
    return float(data.xpos[body, 2])


def wrap_angle(angle: np.ndarray | float) -> np.ndarray | float:
    """Angles (a float or an array) wrapped to [-pi, pi)."""
    return (angle + math.pi) % (2 * math.pi) - math.pi


# ------------------------------------------------------------------------------------------------------ goal space


@dataclass(frozen=True, eq=False)
class GoalSpace:
    """The goal space of one robot: feature names, [min, max] ranges, extraction and normalisation ([F] features)."""

    robot: str
    kind: str
    names: tuple[str, ...]
    low: np.ndarray  # [F] raw value mapped to -1
    high: np.ndarray  # [F] raw value mapped to +1
    delta_feats: tuple[int, ...]  # goals for these are relative to the current value
    twist_feats: tuple[int, ...]  # angles: differences wrap around
    height_feature: int  # the root height, measured from the ground below in ``-relz`` spaces
    extract: Callable[[mujoco.MjModel, mujoco.MjData], np.ndarray]

    def __post_init__(self) -> None:
        if not np.all(self.high > self.low):
            raise ValueError(f"every feature range needs max > min; got min {self.low}, max {self.high}")
        for f in self.twist_feats:  # wrapping differences at the projected +-pi assumes offset 0
            if self.low[f] != -self.high[f]:
                raise ValueError(f"twist feature {f} needs a symmetric range; got [{self.low[f]}, {self.high[f]}]")

    @property
    def dim(self) -> int:
        """Number of features F."""
        return len(self.names)

    @cached_property
    def psi(self) -> np.ndarray:
        """Scale [F] of the projection to [-1, 1]: 2 / (max - min)."""
        return 2.0 / (self.high - self.low)

    @cached_property
    def offset(self) -> np.ndarray:
        """Shift [F] of the projection: -2 min / (max - min) - 1."""
        return -2.0 * self.low / (self.high - self.low) - 1.0

    def features(self, env: BiskEnv) -> np.ndarray:
        """Raw features [F] of the robot in ``env`` (float64)."""
        values = self.extract(env.model, env.data)
        if self.kind.endswith("-relz"):
            values[self.height_feature] = height_above_ground(env.model, env.data, env.torso_id)
        return values

    def project(self, values: np.ndarray, feats: Sequence[int] | None = None) -> np.ndarray:
        """Raw values [..., K] of features ``feats`` (default: all F) -> normalised values [..., K]."""
        idx = self._indices(feats)
        return np.asarray(values) * self.psi[idx] + self.offset[idx]

    def backproject(self, goal: np.ndarray, feats: Sequence[int] | None = None) -> np.ndarray:
        """Normalised values [..., K] of features ``feats`` (default: all F) -> raw values [..., K]."""
        idx = self._indices(feats)
        return (np.asarray(goal) - self.offset[idx]) / self.psi[idx]

    def projected_difference(self, goal: np.ndarray, current: np.ndarray, feats: Sequence[int]) -> np.ndarray:
        """``goal - current`` [..., K], both normalised, for features ``feats``; twist entries wrapped at +-psi pi."""
        diff = np.array(goal, dtype=np.float64) - np.asarray(current)
        for i, f in enumerate(feats):
            if f in self.twist_feats:
                half_turn = self.psi[f] * np.pi  # the projection of pi (twist ranges are symmetric: offset 0)
                diff[..., i] = np.remainder(diff[..., i] + half_turn, 2 * half_turn) - half_turn
        return diff

    def _indices(self, feats: Sequence[int] | None) -> np.ndarray | slice:
        if feats is None:
            return slice(None)
        idx = np.asarray(feats, dtype=np.intp)
        if idx.ndim != 1 or not all(0 <= f < self.dim for f in idx.tolist()):
            raise ValueError(f"feature indices must be a list of ints in [0, {self.dim}); got {feats!r}")
        return idx


_WALKER_RANGES = (
    ("rootz", 0.95, 1.50),  # 0.9 is a fall
    ("rootx", -3.00, 3.00),
    ("rooty", -1.30, 1.30),  # 1.4 is a fall
    ("left_foot:px", -0.72, 0.99),
    ("left_foot:pz", -1.30, 0.00),
    ("right_foot:px", -0.72, 0.99),
    ("right_foot:pz", -1.30, 0.00),
)
_HUMANOID_RANGES = (
    ("root:px", -3.00, 3.00),
    ("root:py", -3.00, 3.00),
    ("root:pz", 0.95, 1.50),  # 0.9 is a fall
    ("root:tz", -1.57, 1.57),  # stay within +-pi/2: no turning around
    ("root:sy", -1.57, 1.57),
    ("root:sx", -0.50, 0.50),
    ("left_foot:px", -1.00, 1.00),
    ("left_foot:py", -1.00, 1.00),
    ("left_foot:pz", -1.00, 0.20),
    ("right_foot:px", -1.00, 1.00),
    ("right_foot:py", -1.00, 1.00),
    ("right_foot:pz", -1.00, 0.20),
)
_ROBOTS = {  # robot -> (ranges, delta features, twist features, height feature, extractor)
    "walker": (_WALKER_RANGES, (1,), (), 0, walker_bodyfeet),
    "humanoid": (_HUMANOID_RANGES, (0, 1), (3,), 2, humanoid_bodyfeet),
    "humanoidpc": (_HUMANOID_RANGES, (0, 1), (3,), 2, humanoid_bodyfeet),
}


def goal_space(robot: str, kind: str = "bodyfeet") -> GoalSpace:
    """The goal space of ``robot`` (walker, humanoid, humanoidpc); ``kind`` is bodyfeet or bodyfeet-relz."""
    if robot not in _ROBOTS:
        raise ValueError(f"no goal space for robot {robot!r}; valid robots: {', '.join(_ROBOTS)}")
    if kind not in GOAL_SPACE_KINDS:
        raise ValueError(f"unknown goal space {kind!r}; valid: {', '.join(GOAL_SPACE_KINDS)}")
    ranges, delta, twist, height, extract = _ROBOTS[robot]
    names, low, high = zip(*ranges)
    return GoalSpace(robot=robot, kind=kind, names=tuple(names), low=np.array(low), high=np.array(high),
                     delta_feats=delta, twist_feats=twist, height_feature=height, extract=extract)


# --------------------------------------------------------------------------------------------------- feature subsets


def _feature_groups(feature_dims: str) -> list[str]:
    """``"0#3+4"`` -> ``["0", "3+4"]`` (features inside a group sorted numerically)."""
    groups = []
    for group in str(feature_dims).split("#"):
        if not re.fullmatch(r"\d+([+-]\d+)*", group):
            raise ValueError(f"feature_dims must look like '0#1#3+4' (groups of ints); got {feature_dims!r}")
        groups.append("+".join(str(i) for i in sorted(int(f) for f in re.split(r"[+-]", group))))
    return groups


def enumerate_subsets(feature_dims: str, rank_max: int = 99, rank_min: int = 1) -> list[str]:
    """All combinations of ``rank_min`` to ``rank_max`` feature groups, sorted by rank then naturally.

    Walker ``"0#1#2#3+4#5+6"`` gives 31 subsets: ``"0", "1", "2", "3+4", "5+6", "0,1", ..., "0,1,2,3+4,5+6"``.
    """
    if rank_min < 1 or rank_max < rank_min:
        raise ValueError(f"need 1 <= rank_min <= rank_max; got rank_min={rank_min}, rank_max={rank_max}")
    groups = _feature_groups(feature_dims)
    subsets = [",".join(comb) for rank in range(rank_min, min(rank_max, len(groups)) + 1)
               for comb in combinations(groups, rank)]
    return sorted_nicely_sep(subsets)


def task_map(feature_dims: str) -> dict[int, int]:
    """Feature index -> position in the task mask: the sorted union of all features (walker 7, humanoid 10)."""
    features = sorted({int(f) for group in _feature_groups(feature_dims) for f in group.split("+")})
    return {f: i for i, f in enumerate(features)}


def parse_subset(subset: str) -> list[int]:
    """The features of a subset name in order of appearance, each once: ``"0+3,2+3"`` -> ``[0, 3, 2]``."""
    parts = str(subset).replace("+", ",").split(",")
    if not all(p.isdigit() for p in parts):
        raise ValueError(f"a subset is ints joined by ',' and '+', e.g. '0,3+4'; got {subset!r}")
    return list(dict.fromkeys(int(p) for p in parts))


def subset_mask(subset: str, task_map: Mapping[int, int]) -> np.ndarray:
    """Multi-hot mask [T] (float32) over the task map of the features in ``subset``."""
    mask = np.zeros(len(task_map), dtype=np.float32)
    for f in parse_subset(subset):
        if f not in task_map:
            raise ValueError(f"feature {f} of subset {subset!r} is not in the task map {sorted(task_map)}")
        mask[task_map[f]] = 1.0
    return mask
