"""Floor: the empty arena. No task reward; the robot's playground and the base of HSD-3's pre-training env."""

from __future__ import annotations

from envs.base import BiskEnv

__all__ = ["Floor"]


class Floor(BiskEnv):
    """An empty floor: ``info["score"]`` is always 0; falls still end the episode with -1."""
