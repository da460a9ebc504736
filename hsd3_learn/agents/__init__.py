"""HSD-3's agents and their registry: ``make_agent("sac", obs_space, action_space, num_envs, cfg)``.

Every agent derives from :class:`~hsd3_learn.agents.base.Agent` (counters, checkpoints, TensorBoard scalars) and
is driven by the same loop: ``action(obs, explore)``, then ``observe(obs, action, reward, terminated, truncated,
next_obs)`` after each vector-env step.

Difference from ``hucc.agents``: an unknown name fails with one line listing the valid names (hucc raised a bare
``KeyError``), and the effective observation/action-space hooks are not part of the registry.
"""

from __future__ import annotations

from typing import Any

from hsd3_learn.agents.base import Agent
from hsd3_learn.agents.hsd3 import HSD3Agent
from hsd3_learn.agents.hsdb import HSDBAgent
from hsd3_learn.agents.sac import SACAgent, SACConfig
from hsd3_learn.agents.sacmt import SACMTAgent

__all__ = ["AGENTS", "Agent", "SACAgent", "SACConfig", "make_agent"]

#: agent name (the ``agent.name`` of a config) -> class
AGENTS: dict[str, type[Agent]] = {"hsd3": HSD3Agent, "hsdb": HSDBAgent, "sac": SACAgent, "sacmt": SACMTAgent}


def make_agent(name: str, *args: Any, **kwargs: Any) -> Agent:
    """Build the agent registered as ``name``; the other arguments go to its constructor."""
    if name not in AGENTS:
        raise ValueError(f"unknown agent {name!r}; valid agents: {', '.join(sorted(AGENTS))}")
    return AGENTS[name](*args, **kwargs)
