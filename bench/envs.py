"""Environment throughput, each figure next to its reference as a ratio from the same run.

1. walker Hurdles ``env.step`` against the physics bound of the same compiled model: raw ``mj_step`` x frame_skip
   with the same random actions, resetting (``mj_resetData`` + the initial pose) whenever the robot falls. Target:
   the env reaches at least 0.85 of its bound.
2. our halfcheetah Floor against gymnasium's HalfCheetah-v5 (same robot; ours integrates with RK4 as the original
   did, gymnasium with Euler): each env's steps/s over its own physics bound. Target: ours >= gymnasium's.
3. humanoidpc Hurdles steps/s, and SyncVectorEnv vs AsyncVectorEnv with 2 and 8 walker Hurdles envs.

    python bench/envs.py            # about a minute on 2 cores
    python bench/envs.py --steps 5000 --skip-vector
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

# This script shares its name with the package it measures: keep its own folder off the import path.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import gymnasium as gym
import mujoco
import numpy as np

import envs


def env_rate(env: gym.Env, steps: int, seed: int = 0) -> tuple[float, int]:
    """(env steps per second with random actions, number of resets), resetting when an episode ends."""
    env.reset(seed=seed)
    rng = np.random.default_rng(seed)
    actions = rng.uniform(-1, 1, size=(steps, *env.action_space.shape)).astype(np.float32)
    resets = 0
    start = time.perf_counter()
    for action in actions:
        _, _, terminated, truncated, _ = env.step(action)
        if terminated or truncated:
            env.reset()
            resets += 1
    return steps / (time.perf_counter() - start), resets


def physics_bound(model: mujoco.MjModel, frame_skip: int, steps: int, fell: Callable[[mujoco.MjData], bool],
                  reset: Callable[[mujoco.MjData], None], seed: int = 0) -> tuple[float, int]:
    """Raw ``mj_step`` x frame_skip on ``model`` with random actions, resetting on a fall: the most an env can do."""
    data = mujoco.MjData(model)
    reset(data)
    rng = np.random.default_rng(seed)
    actions = rng.uniform(-1, 1, size=(steps, model.nu))
    resets = 0
    start = time.perf_counter()
    for action in actions:
        data.ctrl[:] = action
        mujoco.mj_step(model, data, nstep=frame_skip)
        if fell(data):
            reset(data)
            resets += 1
    return steps / (time.perf_counter() - start), resets


def our_bound(env: gym.Env, steps: int) -> tuple[float, int]:
    """The physics bound of one of our envs: its own compiled model, obstacles in place, its fall rule."""
    inner = env.unwrapped
    inner.reset(seed=0)
    pitch = inner._pitch_adr

    def fell(d: mujoco.MjData) -> bool:
        return inner.robot.fell_over(float(d.xpos[inner.torso_id, 2]), float(d.qpos[pitch]) if pitch is not None else 0.0,
                                     float(d.xmat[inner.torso_id, 8]))

    noise = np.random.default_rng(1)

    def reset(d: mujoco.MjData) -> None:  # the env's initial-state distribution, without its Python bookkeeping
        mujoco.mj_resetData(inner.model, d)
        d.qpos[:] = inner.init_qpos
        d.qpos[inner._qpos_idx] += noise.uniform(-0.1, 0.1, len(inner._qpos_idx))
        d.qvel[inner._qvel_idx] = 0.1 * noise.standard_normal(len(inner._qvel_idx))
        d.mocap_pos[:] = inner.data.mocap_pos
        mujoco.mj_forward(inner.model, d)

    return physics_bound(inner.model, inner.frame_skip, steps, fell, reset)


def gymnasium_cheetah(steps: int) -> tuple[float, float]:
    """(env steps/s, bound steps/s) of gymnasium's HalfCheetah-v5, the bound being raw mj_step x its frame skip."""
    env = gym.make("HalfCheetah-v5")
    rate, _ = env_rate(env, steps)
    inner = env.unwrapped

    def reset(d: mujoco.MjData) -> None:
        mujoco.mj_resetData(inner.model, d)

    bound, _ = physics_bound(inner.model, inner.frame_skip, steps, lambda d: False, reset)
    env.close()
    return rate, bound


def vector_rate(kind: str, n: int, steps: int) -> float:
    """Env steps per second (summed over envs) of a gymnasium vector env of walker Hurdles."""
    fns = [lambda: envs.make("Hurdles", "walker") for _ in range(n)]
    if kind == "sync":
        venv = gym.vector.SyncVectorEnv(fns)
    else:
        venv = gym.vector.AsyncVectorEnv(fns, context="forkserver")
    venv.reset(seed=0)
    venv.action_space.seed(0)
    rounds = max(steps // n, 1)
    start = time.perf_counter()
    for _ in range(rounds):
        venv.step(venv.action_space.sample())
    rate = rounds * n / (time.perf_counter() - start)
    venv.close()
    return rate


def paired(env: gym.Env, steps: int, rounds: int) -> tuple[float, float, int, int]:
    """Env and bound measured in alternating rounds; the best round of each (least disturbed by other load)."""
    env_rates, bound_rates, resets, bound_resets = [], [], 0, 0
    for r in range(rounds):
        rate, n = env_rate(env, steps // rounds, seed=r)
        bound, m = our_bound(env, steps // rounds)
        env_rates.append(rate)
        bound_rates.append(bound)
        resets, bound_resets = resets + n, bound_resets + m
    return max(env_rates), max(bound_rates), resets, bound_resets


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20000, help="env steps per measurement")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds; the best of each side is kept")
    parser.add_argument("--skip-vector", action="store_true", help="skip the vector-env comparison")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    print(f"mujoco {mujoco.__version__}, gymnasium {gym.__version__}, {platform.processor() or platform.machine()}, "
          f"{args.steps} steps per figure in {args.rounds} alternating rounds (best round kept), one process")
    failures = []

    walker = envs.make("Hurdles", "walker")
    rate, bound, resets, bound_resets = paired(walker, args.steps, args.rounds)
    ratio = rate / bound
    print(f"\n1. walker Hurdles: env {rate:,.0f} steps/s ({resets} resets) vs physics bound {bound:,.0f} steps/s "
          f"({bound_resets} resets): {ratio:.2f} of the bound (target >= 0.85)")
    if ratio < 0.85:
        failures.append(f"walker Hurdles at {ratio:.2f} of its bound")

    cheetah = envs.make("Floor", "halfcheetah")
    ours, ours_bound, _, _ = paired(cheetah, args.steps, args.rounds)
    theirs, theirs_bound = gymnasium_cheetah(args.steps)
    ours_ratio, theirs_ratio = ours / ours_bound, theirs / theirs_bound
    print(f"\n2. halfcheetah: ours (RK4) {ours:,.0f} steps/s = {ours_ratio:.2f} of its bound {ours_bound:,.0f}; "
          f"gymnasium HalfCheetah-v5 (Euler) {theirs:,.0f} steps/s = {theirs_ratio:.2f} of its bound "
          f"{theirs_bound:,.0f}; ours/gymnasium efficiency {ours_ratio / theirs_ratio:.2f} (target >= 1)")
    if ours_ratio < theirs_ratio:
        failures.append(f"halfcheetah efficiency {ours_ratio:.2f} < gymnasium's {theirs_ratio:.2f}")

    humanoid = envs.make("Hurdles", "humanoidpc")
    rate, bound, resets, _ = paired(humanoid, args.steps // 2, args.rounds)
    print(f"\n3. humanoidpc Hurdles: env {rate:,.0f} steps/s ({resets} resets), {rate / bound:.2f} of its bound "
          f"{bound:,.0f}")
    if not args.skip_vector:
        single, _ = env_rate(envs.make("Hurdles", "walker"), args.steps // 2)
        print(f"   vector envs of walker Hurdles (env steps/s summed over envs; single env {single:,.0f}):")
        for n in (2, 8):
            sync, asyn = vector_rate("sync", n, args.steps // 2), vector_rate("async", n, args.steps // 2)
            print(f"   n={n}: sync {sync:,.0f} ({sync / single:.2f}x single), async {asyn:,.0f} "
                  f"({asyn / single:.2f}x single), async/sync {asyn / sync:.2f}")

    print("\nall targets met" if not failures else "\nTARGETS MISSED: " + "; ".join(failures))
    raise SystemExit(1 if failures else 0)


if __name__ == "__main__":
    main()
