"""SPiRL's offline dataset on the Walker: task-agnostic walking from HSD-3's skills, stored as shards and served
as windows of H steps.

SPiRL learns its skills and skill prior from demonstrations, never from the downstream task (spirl-spec sections 2
and 7). Here the demonstrations come from HSD-3's pre-trained goal-reaching skill: :func:`iter_episodes` rolls it
out in :class:`~hsd3_learn.envs.pretraining.PretrainingEnv`, which draws a random feature subset and goal for
every goal, so the robot walks, crouches and moves its feet in every direction the skill knows. Action noise
(sigma 0.1-0.3, clipped to [-1, 1]) widens the data around the skill's own behaviour.

An :class:`Episode` (T actions) holds::

    observations [T+1, S]  the robot's proprioceptive state (the env's ``observation``: walker S = 59, no world x)
    actions      [T, A]    in [-1, 1] (walker A = 6)
    terminals    [T]       True only on a last step that fell; an episode cut by a length cap has none
    subsets      [T]       (optional) the name of the subset whose goal each action pursued, e.g. "0,3+4"

**Files** (:func:`write_shards`): ``episodes-00000.npz``, ... (``np.savez_compressed``; every shard concatenates
its episodes: ``observations [sum T+1, S]``, ``actions [sum T, A]``, ``terminals [sum T]``, ``lengths [E]`` = T of
each episode, optionally ``subsets [sum T]``) and ``stats.json``, written last, so that its presence marks a
complete dataset: the shard names, the sizes, the per-dimension ``obs_mean``/``obs_std`` of every stored state
(std floored at ``min_std``: near-constant dimensions would otherwise blow up) and, under ``metadata``, what the
collection was run with (robot, low-level checkpoint, seed, noise, ...).

**Windows** (:class:`SkillDataset`): a sample is ``states [H+1, S]`` = s_t..s_{t+H} and ``actions [H, A]`` =
a_t..a_{t+H-1} from one episode; windows never cross an episode's end, and episodes shorter than H+1 states are
dropped. Episodes, not windows, are split into training and validation, so no validation window overlaps a
training one.

Differences from clvrai/spirl (HDF5 files, one per demo, ``data_loader.py``):

1. Compressed ``.npz`` shards of many episodes instead of one HDF5 file per demo: no h5py dependency, fewer files.
2. States are normalised with the dataset's mean and std (the original does not; MuJoCo velocities need it).
3. Every window is equally likely (the original picked a demo, then a crop, favouring windows of short demos).
4. Validation uses fixed, non-overlapping windows of the held-out episodes, the same ones at every evaluation.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import zipfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from torch import Tensor

from hsd3_learn.agents.hsd3_interface import LowLevelCheckpoint
from hsd3_learn.envs.goal_spaces import subset_mask
from hsd3_learn.envs.pretraining import PretrainingEnv
from hsd3_learn.envs.vector import TorchVectorEnv, make_vector_env

__all__ = ["DATASET_FORMAT", "MIN_STD", "STATS_FILE", "DatasetStats", "Episode", "SkillDataset",
           "collect_episodes", "compute_stats", "dataset_is_complete", "iter_episodes", "load_episodes",
           "make_collection_envs", "read_stats", "skill_actions", "write_shards"]

#: the ``format`` entry of ``stats.json``
DATASET_FORMAT = "hsd3_learn.spirl.dataset/1"
#: the file that describes a dataset; written last, so it marks a complete one
STATS_FILE = "stats.json"
#: the floor of the per-dimension observation std
MIN_STD = 0.01
_SHARD_GLOB = "episodes-*.npz"


# --------------------------------------------------------------------------------------------------------------
# Episodes


@dataclass
class Episode:
    """One episode of T >= 1 steps (shapes in the module docstring); checked on creation."""

    observations: np.ndarray  # [T+1, S] float32
    actions: np.ndarray  # [T, A] float32
    terminals: np.ndarray  # [T] bool, True at most on the last step
    subsets: np.ndarray | None = None  # [T] str, or None

    def __post_init__(self) -> None:
        self.observations = np.asarray(self.observations, dtype=np.float32)
        self.actions = np.asarray(self.actions, dtype=np.float32)
        self.terminals = np.asarray(self.terminals, dtype=bool)
        obs, act, term = self.observations.shape, self.actions.shape, self.terminals.shape
        if len(obs) != 2 or len(act) != 2 or act[0] < 1 or obs[0] != act[0] + 1 or term != (act[0],):
            raise ValueError(f"an episode needs observations [T+1, S], actions [T, A] and terminals [T] with T >= 1; "
                             f"got {obs}, {act} and {term}")
        if self.terminals[:-1].any():
            raise ValueError(f"only the last step of an episode can be terminal; steps "
                             f"{np.flatnonzero(self.terminals[:-1]).tolist()} are")
        if self.subsets is not None:
            self.subsets = np.asarray(self.subsets, dtype=str)
            if self.subsets.shape != term:
                raise ValueError(f"subsets must name one subset per step, [T] = {term}; got {self.subsets.shape}")

    @property
    def n_steps(self) -> int:
        """T, the number of actions."""
        return len(self.actions)


class _EpisodeBuilder:
    """The steps of one running episode, gathered one transition at a time."""

    def __init__(self, first_observation: np.ndarray) -> None:
        self.observations = [first_observation]
        self.actions: list[np.ndarray] = []
        self.subsets: list[str] = []
        self.terminal = False

    def add(self, action: np.ndarray, subset: str, next_observation: np.ndarray, terminal: bool) -> None:
        self.actions.append(action)
        self.subsets.append(subset)
        self.observations.append(next_observation)
        self.terminal = terminal

    def finish(self) -> Episode:
        terminals = np.zeros(len(self.actions), dtype=bool)
        terminals[-1] = self.terminal
        return Episode(np.stack(self.observations), np.stack(self.actions), terminals, np.array(self.subsets))


# --------------------------------------------------------------------------------------------------------------
# Collection


def _make_one(robot: str, subsets: list[str], episode_steps: int) -> gym.Env:
    return gym.wrappers.TimeLimit(PretrainingEnv(robot, subsets=subsets), max_episode_steps=episode_steps)


def make_collection_envs(robot: str, subsets: Sequence[str], episode_steps: int, num_envs: int = 1,
                         device: str | torch.device = "cpu") -> TorchVectorEnv:
    """``num_envs`` pre-training envs (random goals of ``subsets``, the skill's input as observation) whose
    episodes are also cut after ``episode_steps`` steps; same-step auto-reset."""
    make_one = partial(_make_one, robot, list(subsets), episode_steps)
    return TorchVectorEnv(make_vector_env([make_one] * num_envs), device=device)


@torch.no_grad()
def skill_actions(pi: torch.nn.Module, obs: Mapping[str, Tensor], action_noise: float, stochastic: bool,
                  generator: torch.Generator) -> Tensor:
    """The skill's actions [N, A] for the pre-training observations ``obs``, plus Gaussian noise, in [-1, 1].

    The skill acts greedily (``tanh`` of its mean) or, with ``stochastic``, samples ``tanh(mu + sigma * eps)``;
    then ``action_noise`` * N(0, 1) is added and the result clipped. Noise comes from ``generator`` (CPU).
    """
    dist = pi({key: obs[key] for key in ("desired_goal", "observation", "task")})
    loc = dist.base_dist.loc
    if stochastic:
        eps = torch.randn(loc.shape, generator=generator).to(loc.device)
        action = torch.tanh(loc + dist.base_dist.scale * eps)
    else:
        action = torch.tanh(loc)
    noise = torch.randn(loc.shape, generator=generator).to(loc.device)
    return (action + action_noise * noise).clamp(-1.0, 1.0)


def _check_collection_args(n_steps: int, action_noise: float, episode_steps: int, num_envs: int) -> None:
    for name, value in (("n_steps", n_steps), ("episode_steps", episode_steps), ("num_envs", num_envs)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name} must be a positive integer; got {value!r}")
    if isinstance(action_noise, bool) or not isinstance(action_noise, (int, float)) or not action_noise >= 0:
        raise ValueError(f"action_noise must be a number >= 0 (the std of the Gaussian added to actions); "
                         f"got {action_noise!r}")


def iter_episodes(low_level: LowLevelCheckpoint, n_steps: int, action_noise: float = 0.2, seed: int = 0,
                  subsets: Sequence[str] | None = None, episode_steps: int = 1000, num_envs: int = 1,
                  stochastic: bool = False, on_steps: Callable[[int], None] | None = None) -> Iterator[Episode]:
    """Roll out the skill of ``low_level`` until ``n_steps`` actions are taken in all, yielding each episode as
    it ends (a fall, the env's 100th goal, or ``episode_steps`` actions); the episodes still running at the end
    are cut there, without a terminal.

    ``subsets`` (default: the skill's own) are the goal subsets the envs draw from; env i is seeded with
    ``seed + i`` and the action noise with ``seed``. ``on_steps(k)`` is told of every k new actions (a progress
    bar). The subset of each step is read off the observation's ``task`` mask.
    """
    _check_collection_args(n_steps, action_noise, episode_steps, num_envs)
    names = list(low_level.subsets if subsets is None else subsets)
    subset_of_mask = {subset_mask(name, low_level.task_map).tobytes(): name for name in names}
    device = next(low_level.pi.parameters()).device
    envs = make_collection_envs(low_level.robot, names, episode_steps, num_envs, device)
    generator = torch.Generator().manual_seed(seed)
    try:
        obs, _ = envs.reset(seed=seed)
        running = [_EpisodeBuilder(row.cpu().numpy()) for row in obs["observation"]]
        collected = 0
        while collected < n_steps:
            actions = skill_actions(low_level.pi, obs, action_noise, stochastic, generator)
            next_obs, _, terminated, truncated, info = envs.step(actions)
            last_obs = info.get("final_obs", next_obs)["observation"].cpu().numpy()
            tasks, actions = obs["task"].cpu().numpy(), actions.cpu().numpy()
            n_new = min(num_envs, n_steps - collected)
            for i in range(n_new):
                subset = subset_of_mask[tasks[i].tobytes()]
                running[i].add(actions[i], subset, last_obs[i], bool(terminated[i]))
                if terminated[i] or truncated[i]:
                    yield running[i].finish()
                    running[i] = _EpisodeBuilder(next_obs["observation"][i].cpu().numpy())
            collected += n_new
            if on_steps is not None:
                on_steps(n_new)
            obs = next_obs
        for episode in running:
            if episode.actions:
                yield episode.finish()
    finally:
        envs.close()


def collect_episodes(low_level: LowLevelCheckpoint, n_steps: int, action_noise: float = 0.2, seed: int = 0,
                     subsets: Sequence[str] | None = None, episode_steps: int = 1000, num_envs: int = 1,
                     stochastic: bool = False) -> list[Episode]:
    """All episodes of :func:`iter_episodes` as a list: exactly ``n_steps`` actions in all."""
    return list(iter_episodes(low_level, n_steps, action_noise, seed, subsets, episode_steps, num_envs, stochastic))


# --------------------------------------------------------------------------------------------------------------
# Statistics and files


@dataclass(frozen=True)
class DatasetStats:
    """What ``stats.json`` says about a dataset: the state normalisation and the rest of its entries."""

    obs_mean: np.ndarray  # [S] float32
    obs_std: np.ndarray  # [S] float32, >= the floor it was computed with
    info: dict[str, Any]  # every entry of stats.json: shards, obs_dim, action_dim, n_episodes, n_steps, ...

    def normalize(self, states: Tensor) -> Tensor:
        """``(states - mean) / std`` for states [..., S] on any device; the RL phase reuses it on env states."""
        mean = torch.as_tensor(self.obs_mean, device=states.device, dtype=states.dtype)
        std = torch.as_tensor(self.obs_std, device=states.device, dtype=states.dtype)
        return (states - mean) / std


class _Moments:
    """Running per-dimension sums of states, to get the mean and std without holding every state."""

    def __init__(self) -> None:
        self.count = 0
        self.total: np.ndarray | float = 0.0
        self.total_sq: np.ndarray | float = 0.0

    def add(self, states: np.ndarray) -> None:
        states = states.astype(np.float64)
        self.count += len(states)
        self.total = self.total + states.sum(0)
        self.total_sq = self.total_sq + np.square(states).sum(0)

    def mean_std(self, min_std: float) -> tuple[np.ndarray, np.ndarray]:
        mean = self.total / self.count
        var = np.maximum(self.total_sq / self.count - np.square(mean), 0.0)
        return mean.astype(np.float32), np.maximum(np.sqrt(var), min_std).astype(np.float32)


def compute_stats(episodes: Iterable[Episode], min_std: float = MIN_STD) -> tuple[np.ndarray, np.ndarray]:
    """Per-dimension mean [S] and std [S] (population std, floored at ``min_std``) of every state of ``episodes``."""
    moments = _Moments()
    for episode in episodes:
        moments.add(episode.observations)
    if moments.count == 0:
        raise ValueError("compute_stats needs at least one episode")
    return moments.mean_std(min_std)


def _atomic_write(path: Path, write: Callable[[Any], None], mode: str = "wb") -> None:
    """Call ``write(file)`` on a temp file next to ``path``, then rename it over ``path``."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode) as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _write_shard(path: Path, episodes: Sequence[Episode]) -> None:
    arrays = {"observations": np.concatenate([e.observations for e in episodes]),
              "actions": np.concatenate([e.actions for e in episodes]),
              "terminals": np.concatenate([e.terminals for e in episodes]),
              "lengths": np.array([e.n_steps for e in episodes], dtype=np.int64)}
    if all(e.subsets is not None for e in episodes):
        arrays["subsets"] = np.concatenate([e.subsets for e in episodes])
    _atomic_write(path, lambda f: np.savez_compressed(f, **arrays))


def write_shards(episodes: Iterable[Episode], directory: str | os.PathLike, episodes_per_shard: int = 100,
                 metadata: Mapping[str, Any] | None = None, min_std: float = MIN_STD) -> DatasetStats:
    """Write ``episodes`` (any iterable, consumed once: a running collection streams to disk) as shards of
    ``episodes_per_shard`` episodes plus ``stats.json`` with the normalisation and ``metadata`` (JSON values).

    A dataset already in ``directory`` is replaced: its ``stats.json`` goes first, so an interrupted write never
    looks complete. Every episode must have the first one's state and action sizes.
    """
    if isinstance(episodes_per_shard, bool) or not isinstance(episodes_per_shard, int) or episodes_per_shard < 1:
        raise ValueError(f"episodes_per_shard must be a positive integer; got {episodes_per_shard!r}")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / STATS_FILE).unlink(missing_ok=True)
    for old in directory.glob(_SHARD_GLOB):
        old.unlink()
    shards: list[str] = []
    pending: list[Episode] = []
    moments, n_episodes, n_steps, n_terminals, dims = _Moments(), 0, 0, 0, None

    def flush() -> None:
        shards.append(f"episodes-{len(shards):05d}.npz")
        _write_shard(directory / shards[-1], pending)
        pending.clear()

    for episode in episodes:
        episode_dims = (episode.observations.shape[1], episode.actions.shape[1])
        if dims is not None and episode_dims != dims:
            raise ValueError(f"episode {n_episodes} has (state, action) dims {episode_dims}; the first had {dims}")
        dims = episode_dims
        moments.add(episode.observations)
        n_episodes, n_steps = n_episodes + 1, n_steps + episode.n_steps
        n_terminals += int(episode.terminals[-1])
        pending.append(episode)
        if len(pending) == episodes_per_shard:
            flush()
    if dims is None:
        raise ValueError(f"no episodes to write to {str(directory)!r}")
    if pending:
        flush()
    mean, std = moments.mean_std(min_std)
    info = {"format": DATASET_FORMAT, "shards": shards, "obs_dim": dims[0], "action_dim": dims[1],
            "n_episodes": n_episodes, "n_steps": n_steps, "n_terminals": n_terminals, "min_std": min_std,
            "obs_mean": mean.tolist(), "obs_std": std.tolist(), "metadata": dict(metadata or {})}
    _atomic_write(directory / STATS_FILE, lambda f: json.dump(info, f, indent=1), mode="w")
    return DatasetStats(mean, std, info)


def _no_dataset(directory: Path, reason: str) -> FileNotFoundError:
    return FileNotFoundError(f"no SPiRL dataset in {str(directory)!r}: {reason}; collect one with python -m "
                             "hsd3_learn.spirl.collect lo.init_from=...")


def read_stats(directory: str | os.PathLike) -> DatasetStats:
    """The :class:`DatasetStats` of the dataset in ``directory``; one-line errors if there is none."""
    directory = Path(directory)
    if not directory.is_dir():
        raise _no_dataset(directory, "the directory does not exist")
    path = directory / STATS_FILE
    if not path.is_file():
        raise _no_dataset(directory, f"{STATS_FILE} is missing (empty, or the collection did not finish)")
    try:
        info = json.loads(path.read_text())
        if info.get("format") != DATASET_FORMAT:
            raise ValueError(f"format {info.get('format')!r}")
        mean, std = np.asarray(info["obs_mean"], np.float32), np.asarray(info["obs_std"], np.float32)
    except (json.JSONDecodeError, ValueError, KeyError, TypeError, AttributeError) as err:
        raise ValueError(f"{str(path)!r} is not a SPiRL dataset description (format {DATASET_FORMAT!r} with "
                         f"obs_mean and obs_std): {err}") from None
    return DatasetStats(mean, std, info)


def dataset_is_complete(directory: str | os.PathLike) -> bool:
    """Whether ``directory`` holds a readable ``stats.json`` and every shard it lists."""
    try:
        stats = read_stats(directory)
    except (FileNotFoundError, ValueError):
        return False
    return all((Path(directory) / name).is_file() for name in stats.info.get("shards", []))


def _read_shard(path: Path, obs_dim: int, action_dim: int) -> list[Episode]:
    """The episodes of one shard, checked against the dataset's dims."""
    if not path.is_file():
        raise _no_dataset(path.parent, f"the shard {path.name} listed in {STATS_FILE} is missing")
    try:
        with np.load(path, allow_pickle=False) as shard:
            arrays = {key: shard[key] for key in shard.files}
    except (OSError, ValueError, zipfile.BadZipFile) as err:
        raise ValueError(f"cannot read shard {str(path)!r}: truncated or not an .npz file ({err})") from None
    missing = [key for key in ("observations", "actions", "terminals", "lengths") if key not in arrays]
    if missing:
        raise ValueError(f"shard {str(path)!r} lacks the arrays {missing} (write shards with write_shards)")
    obs, actions, lengths = arrays["observations"], arrays["actions"], arrays["lengths"]
    if obs.ndim != 2 or actions.ndim != 2 or (obs.shape[1], actions.shape[1]) != (obs_dim, action_dim):
        raise ValueError(f"shard {str(path)!r} has states of shape {obs.shape} and actions of shape "
                         f"{actions.shape}; the dataset has {obs_dim} state and {action_dim} action dims")
    episodes, first_state, first_action = [], 0, 0
    for length in lengths.tolist():
        subsets = arrays["subsets"][first_action:first_action + length] if "subsets" in arrays else None
        episodes.append(Episode(obs[first_state:first_state + length + 1],
                                actions[first_action:first_action + length],
                                arrays["terminals"][first_action:first_action + length], subsets))
        first_state, first_action = first_state + length + 1, first_action + length
    return episodes


def load_episodes(directory: str | os.PathLike) -> list[Episode]:
    """Every episode of the dataset in ``directory``, in the order they were written."""
    stats = read_stats(directory)
    info = stats.info
    episodes = [episode for name in info["shards"]
                for episode in _read_shard(Path(directory) / name, info["obs_dim"], info["action_dim"])]
    if not episodes:
        raise _no_dataset(Path(directory), "it has no episodes")
    return episodes


# --------------------------------------------------------------------------------------------------------------
# Windows


def _split_episodes(n_episodes: int, val_fraction: float, split_seed: int) -> tuple[list[int], list[int]]:
    """Episode indices for training and validation: a seeded permutation, the first part validates."""
    if isinstance(val_fraction, bool) or not isinstance(val_fraction, (int, float)) or not 0 <= val_fraction < 1:
        raise ValueError(f"val_fraction must lie in [0, 1); got {val_fraction!r}")
    n_val = max(1, round(val_fraction * n_episodes)) if val_fraction > 0 else 0
    if n_val >= n_episodes:
        raise ValueError(f"val_fraction={val_fraction} of {n_episodes} episode(s) leaves none for training; "
                         "collect more episodes or set val_fraction=0")
    order = np.random.default_rng(split_seed).permutation(n_episodes)
    return sorted(order[n_val:].tolist()), sorted(order[:n_val].tolist())


@dataclass
class _Windows:
    """Episodes concatenated into flat tensors, plus where each window of H steps starts in them."""

    states: Tensor  # [sum T+1, S]
    actions: Tensor  # [sum T, A]
    state_starts: Tensor  # [W] long
    action_starts: Tensor  # [W] long

    def gather(self, index: Tensor, horizon: int) -> dict[str, Tensor]:
        """Windows ``index`` [B]: states [B, H+1, S] and actions [B, H, A]."""
        steps = torch.arange(horizon + 1, device=self.states.device)
        index = index.to(self.states.device)
        states = self.states[self.state_starts[index, None] + steps]
        actions = self.actions[self.action_starts[index, None] + steps[:-1]]
        return {"states": states, "actions": actions}


def _windows(episodes: Sequence[Episode], horizon: int, stride: int, stats: DatasetStats | None,
             device: torch.device) -> _Windows:
    """Every window start t = 0, stride, 2*stride, ... <= T - H of each episode with T >= H actions."""
    kept = [e for e in episodes if e.n_steps >= horizon]
    state_starts, action_starts, first_state, first_action = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)], 0, 0
    for episode in kept:
        starts = np.arange(0, episode.n_steps - horizon + 1, stride)
        state_starts.append(first_state + starts)
        action_starts.append(first_action + starts)
        first_state, first_action = first_state + episode.n_steps + 1, first_action + episode.n_steps
    states = torch.as_tensor(np.concatenate([e.observations for e in kept] or [np.zeros((0, 0), np.float32)]))
    actions = torch.as_tensor(np.concatenate([e.actions for e in kept] or [np.zeros((0, 0), np.float32)]))
    if stats is not None and kept:
        states = stats.normalize(states)
    return _Windows(states.to(device), actions.to(device), torch.as_tensor(np.concatenate(state_starts), device=device),
                    torch.as_tensor(np.concatenate(action_starts), device=device))


class SkillDataset:
    """Random windows of ``horizon`` (H) steps for training SPiRL's skill model, fixed ones for validating it.

    ``episodes`` are split by episode (``val_fraction`` of them, chosen with ``split_seed``, validate); episodes
    with fewer than H+1 states are dropped. With ``normalize``, states are standardised with ``stats`` (default:
    computed from ``episodes``). :meth:`sample` draws training windows with a generator seeded with ``seed``.
    Load a collected dataset with :meth:`load`.
    """

    def __init__(self, episodes: Sequence[Episode], horizon: int = 10, val_fraction: float = 0.1,
                 stats: DatasetStats | None = None, normalize: bool = True, seed: int = 0, split_seed: int = 0,
                 device: str | torch.device = "cpu") -> None:
        if isinstance(horizon, bool) or not isinstance(horizon, int) or horizon < 1:
            raise ValueError(f"horizon must be a positive integer; got {horizon!r}")
        if not episodes:
            raise ValueError("SkillDataset needs at least one episode")
        longest = max(e.n_steps for e in episodes)
        if longest < horizon:
            raise ValueError(f"horizon {horizon} needs episodes of at least {horizon + 1} states; the longest of the "
                             f"{len(episodes)} episodes has {longest + 1}")
        if stats is None:
            stats = DatasetStats(*compute_stats(episodes), {})
        self.horizon, self.stats, self.device = horizon, stats, torch.device(device)
        self.obs_dim, self.action_dim = episodes[0].observations.shape[1], episodes[0].actions.shape[1]
        self.train_episodes, self.val_episodes = _split_episodes(len(episodes), val_fraction, split_seed)
        norm = stats if normalize else None
        self._train = _windows([episodes[i] for i in self.train_episodes], horizon, 1, norm, self.device)
        self._val = _windows([episodes[i] for i in self.val_episodes], horizon, horizon, norm, self.device)
        if self.n_train_windows == 0:
            raise ValueError(f"no training episode has the {horizon + 1} states a window needs; lower the horizon "
                             "or collect longer episodes")
        self.generator = torch.Generator().manual_seed(seed)

    @classmethod
    def load(cls, directory: str | os.PathLike, horizon: int = 10, val_fraction: float = 0.1, normalize: bool = True,
             seed: int = 0, split_seed: int = 0, device: str | torch.device = "cpu") -> SkillDataset:
        """The dataset written by :func:`write_shards` in ``directory``, normalised with its own stats."""
        return cls(load_episodes(directory), horizon, val_fraction, read_stats(directory), normalize, seed,
                   split_seed, device)

    @property
    def n_train_windows(self) -> int:
        """Distinct training windows (every start of every training episode)."""
        return len(self._train.state_starts)

    @property
    def n_val_windows(self) -> int:
        """Fixed validation windows (non-overlapping, H steps apart)."""
        return len(self._val.state_starts)

    def sample(self, batch_size: int) -> dict[str, Tensor]:
        """``batch_size`` (B) training windows, uniformly with replacement: states [B, H+1, S], actions [B, H, A]."""
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer; got {batch_size!r}")
        index = torch.randint(self.n_train_windows, (batch_size,), generator=self.generator)
        return self._train.gather(index, self.horizon)

    def validation_batches(self, batch_size: int, max_batches: int | None = None) -> Iterator[dict[str, Tensor]]:
        """The validation windows in order, ``batch_size`` at a time (the last batch may be smaller), at most
        ``max_batches`` batches: the same batches on every call."""
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer; got {batch_size!r}")
        if self.n_val_windows == 0:
            raise ValueError(f"no validation windows: val_fraction is 0 or every validation episode has fewer than "
                             f"{self.horizon + 1} states")
        n_batches = math.ceil(self.n_val_windows / batch_size)
        for b in range(n_batches if max_batches is None else min(n_batches, max_batches)):
            index = torch.arange(b * batch_size, min((b + 1) * batch_size, self.n_val_windows))
            yield self._val.gather(index, self.horizon)
