"""Tests for hsd3_learn.spirl.data and hsd3_learn.spirl.collect: windows that never cross episode ends, the
train/validation split, normalisation statistics, shards on disk, one-line errors, a real collection from an
untrained skill, and the command line (collect, rerun, bad checkpoint) in a subprocess."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from gymnasium import spaces
from hydra import compose, initialize_config_dir

from hsd3_learn.agents.hsd3_interface import load_low_level, low_level_observation_space, save_low_level
from hsd3_learn.envs import FEATURE_DIMS, enumerate_subsets, task_map
from hsd3_learn.models.blocks import TanhNormal
from hsd3_learn.models.factory import make_model
from hsd3_learn.spirl.collect import (CONFIG_DIR, CONFIG_NAME, PROG, check_collect_config, collection_settings,
                                    prepare_collection)
from hsd3_learn.spirl.data import (MIN_STD, STATS_FILE, DatasetStats, Episode, SkillDataset, collect_episodes,
                                   compute_stats, dataset_is_complete, iter_episodes, load_episodes,
                                   make_collection_envs, read_stats, skill_actions, write_shards)
from hsd3_learn.train import CONFIG_DIR as HSD3_CONFIG_DIR
from hsd3_learn.train import check_command_line, experiments

ROOT = Path(__file__).resolve().parents[1]
LO_MODEL = {"name": "pi_d2rl_d_256", "n_layers": 1}
TASK_MAP = task_map(FEATURE_DIMS["walker"])
SUBSETS = enumerate_subsets(FEATURE_DIMS["walker"])
H = 4


def synthetic_episode(episode_id: int, n_steps: int, terminal: bool = False) -> Episode:
    """States [T+1, 3] = (episode id, t, noise) and actions [T, 2] = (episode id, t): windows can be traced back."""
    t = np.arange(n_steps + 1, dtype=np.float32)
    rng = np.random.default_rng(episode_id)
    observations = np.stack([np.full_like(t, episode_id), t, rng.normal(size=n_steps + 1)], axis=1)
    actions = np.stack([np.full(n_steps, episode_id, np.float32), t[:-1]], axis=1)
    terminals = np.zeros(n_steps, dtype=bool)
    terminals[-1] = terminal
    return Episode(observations, actions, terminals, np.array([f"{episode_id % 3}"] * n_steps))


LENGTHS = [10, 3, 25, 4, 7, 30, 2, 12, 18, 9]  # episodes 1 and 6 are shorter than H, 3 has exactly one window


@pytest.fixture
def episodes() -> list[Episode]:
    return [synthetic_episode(i, n, terminal=i % 2 == 0) for i, n in enumerate(LENGTHS)]


def assert_one_line(excinfo: pytest.ExceptionInfo) -> str:
    message = str(excinfo.value)
    assert message and "\n" not in message, message
    return message


# ------------------------------------------------------------------------------------------------ windows


def test_windows_come_from_one_episode_are_contiguous_and_cover_every_start(episodes):
    data = SkillDataset(episodes, horizon=H, val_fraction=0.2, normalize=False, seed=1)
    batch = data.sample(2000)
    states, actions = batch["states"], batch["actions"]
    assert states.shape == (2000, H + 1, 3) and actions.shape == (2000, H, 2)
    ids, start = states[:, :, 0], states[:, 0, 1]
    assert torch.all(ids == ids[:, :1]) and torch.all(actions[:, :, 0] == ids[:, :1])  # one episode per window
    assert torch.equal(states[:, :, 1], start[:, None] + torch.arange(H + 1))  # contiguous states
    assert torch.equal(actions[:, :, 1], states[:, :-1, 1])  # a_t goes with s_t
    lengths = torch.tensor(LENGTHS, dtype=torch.float32)[ids[:, 0].long()]
    assert torch.all(start + H <= lengths)  # never past the episode's last state
    starts = {(int(i), int(t)) for i, t in zip(ids[:, 0], start)}
    expected = {(i, t) for i in data.train_episodes for t in range(LENGTHS[i] - H + 1)}
    assert starts == expected and data.n_train_windows == len(expected)


def test_short_episodes_are_dropped_and_a_horizon_long_episode_gives_one_window():
    episodes = [synthetic_episode(0, H - 1), synthetic_episode(1, H), synthetic_episode(2, H + 2)]
    data = SkillDataset(episodes, horizon=H, val_fraction=0.0, normalize=False)
    assert data.n_train_windows == 1 + 3
    ids = set(data.sample(500)["states"][:, 0, 0].tolist())
    assert ids == {1.0, 2.0}


def test_split_is_disjoint_deterministic_and_independent_of_the_sampling_seed(episodes):
    a = SkillDataset(episodes, horizon=H, val_fraction=0.3, seed=0, split_seed=5)
    b = SkillDataset(episodes, horizon=H, val_fraction=0.3, seed=9, split_seed=5)
    c = SkillDataset(episodes, horizon=H, val_fraction=0.3, split_seed=6)
    assert a.train_episodes == b.train_episodes and a.val_episodes == b.val_episodes and len(a.val_episodes) == 3
    assert not set(a.train_episodes) & set(a.val_episodes)
    assert sorted(a.train_episodes + a.val_episodes) == list(range(len(episodes)))
    assert (a.val_episodes != c.val_episodes) or (a.train_episodes != c.train_episodes)
    assert not torch.equal(a.sample(8)["states"], b.sample(8)["states"])
    again = SkillDataset(episodes, horizon=H, val_fraction=0.3, seed=0, split_seed=5)
    assert torch.equal(again.sample(8)["actions"], SkillDataset(episodes, horizon=H, val_fraction=0.3, seed=0,
                                                                split_seed=5).sample(8)["actions"])


def test_validation_batches_are_fixed_non_overlapping_windows_of_held_out_episodes(episodes):
    data = SkillDataset(episodes, horizon=H, val_fraction=0.5, normalize=False, split_seed=2)
    first, second = list(data.validation_batches(3)), list(data.validation_batches(3))
    assert len(first) == -(-data.n_val_windows // 3) and all(len(b["states"]) <= 3 for b in first)
    assert all(torch.equal(x["states"], y["states"]) for x, y in zip(first, second))
    states = torch.cat([b["states"] for b in first])
    starts = [(int(s[0, 0]), int(s[0, 1])) for s in states]
    expected = [(i, t) for i in data.val_episodes for t in range(0, LENGTHS[i] - H + 1, H)]
    assert starts == expected and {i for i, _ in starts} <= set(data.val_episodes)
    assert len(list(data.validation_batches(3, max_batches=1))) == 1


# ------------------------------------------------------------------------------------------------ statistics


def test_stats_are_the_mean_and_floored_std_of_every_state(episodes):
    mean, std = compute_stats(episodes)
    states = np.concatenate([e.observations for e in episodes]).astype(np.float64)
    np.testing.assert_allclose(mean, states.mean(0), rtol=1e-5)
    np.testing.assert_allclose(std, np.maximum(states.std(0), MIN_STD), rtol=1e-5)
    constant = [Episode(np.ones((3, 2)), np.zeros((2, 1)), np.zeros(2))]
    mean, std = compute_stats(constant, min_std=0.5)
    np.testing.assert_array_equal(mean, [1, 1])
    np.testing.assert_array_equal(std, [0.5, 0.5])
    stats = DatasetStats(np.array([1.0, 2.0, 3.0], np.float32), np.array([2.0, 4.0, 1.0], np.float32), {})
    assert torch.equal(stats.normalize(torch.tensor([[3.0, 2.0, 0.0]])), torch.tensor([[1.0, 0.0, -3.0]]))


def test_normalised_windows_use_the_given_stats(episodes):
    raw = SkillDataset(episodes, horizon=H, normalize=False, seed=3).sample(16)
    stats = DatasetStats(*compute_stats(episodes), {})
    normalised = SkillDataset(episodes, horizon=H, stats=stats, seed=3).sample(16)
    torch.testing.assert_close(normalised["states"], stats.normalize(raw["states"]))
    assert torch.equal(normalised["actions"], raw["actions"])  # actions stay in their own units


# ------------------------------------------------------------------------------------------------ files


def test_shards_round_trip_with_stats_and_metadata(episodes, tmp_path):
    stats = write_shards(episodes, tmp_path / "ds", episodes_per_shard=3, metadata={"seed": 7, "robot": "walker"})
    files = sorted(p.name for p in (tmp_path / "ds").iterdir())
    assert files == [f"episodes-0000{i}.npz" for i in range(4)] + [STATS_FILE]  # no temp files left
    info = json.loads((tmp_path / "ds" / STATS_FILE).read_text())
    assert (info["n_episodes"], info["n_steps"], info["n_terminals"]) == (10, sum(LENGTHS), 5)
    assert (info["obs_dim"], info["action_dim"], info["metadata"]) == (3, 2, {"seed": 7, "robot": "walker"})
    loaded = load_episodes(tmp_path / "ds")
    for a, b in zip(episodes, loaded, strict=True):
        for name in ("observations", "actions", "terminals", "subsets"):
            np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    read = read_stats(tmp_path / "ds")
    np.testing.assert_array_equal(read.obs_mean, stats.obs_mean)
    np.testing.assert_array_equal(read.obs_std, stats.obs_std)
    data = SkillDataset.load(tmp_path / "ds", horizon=H, seed=4)
    direct = SkillDataset(episodes, horizon=H, stats=read, seed=4)
    assert torch.equal(data.sample(5)["states"], direct.sample(5)["states"])
    assert dataset_is_complete(tmp_path / "ds")
    write_shards(episodes[:2], tmp_path / "ds", episodes_per_shard=3)  # a rewrite replaces the old shards
    assert sorted(p.name for p in (tmp_path / "ds").iterdir()) == ["episodes-00000.npz", STATS_FILE]
    (tmp_path / "ds" / "episodes-00000.npz").unlink()
    assert not dataset_is_complete(tmp_path / "ds")


def test_bad_datasets_fail_with_one_line(episodes, tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist; collect one") as err:
        load_episodes(tmp_path / "nowhere")
    assert_one_line(err)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="stats.json is missing") as err:
        SkillDataset.load(tmp_path / "empty")
    assert_one_line(err)
    write_shards(episodes[:3], tmp_path / "ds", episodes_per_shard=2)
    np.savez_compressed(tmp_path / "ds" / "episodes-00001.npz", observations=np.zeros((5, 4), np.float32),
                        actions=np.zeros((4, 2), np.float32), terminals=np.zeros(4, bool), lengths=np.array([4]))
    with pytest.raises(ValueError, match=r"episodes-00001.npz.*states of shape \(5, 4\).*3 state and 2 action") as err:
        load_episodes(tmp_path / "ds")
    assert_one_line(err)
    np.savez_compressed(tmp_path / "ds" / "episodes-00001.npz", observations=np.zeros((5, 3), np.float32))
    with pytest.raises(ValueError, match=r"lacks the arrays \['actions', 'terminals', 'lengths'\]") as err:
        load_episodes(tmp_path / "ds")
    assert_one_line(err)
    (tmp_path / "ds" / "episodes-00001.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="cannot read shard") as err:
        load_episodes(tmp_path / "ds")
    assert_one_line(err)
    (tmp_path / "ds" / STATS_FILE).write_text("{not json")
    with pytest.raises(ValueError, match="is not a SPiRL dataset description") as err:
        read_stats(tmp_path / "ds")
    assert_one_line(err)
    assert not dataset_is_complete(tmp_path / "ds")


@pytest.mark.parametrize("make, error, match", [
    (lambda e: SkillDataset(e, horizon=40), ValueError, "horizon 40 needs episodes of at least 41 states; the "
                                                        "longest of the 10 episodes has 31"),
    (lambda e: SkillDataset(e, horizon=0), ValueError, "horizon must be a positive integer"),
    (lambda e: SkillDataset([], horizon=H), ValueError, "at least one episode"),
    (lambda e: SkillDataset(e[:1], val_fraction=0.1), ValueError, "leaves none for training"),
    (lambda e: SkillDataset(e, val_fraction=1.0), ValueError, r"val_fraction must lie in \[0, 1\)"),
    (lambda e: SkillDataset([e[1], e[2]], horizon=5, val_fraction=0.5, split_seed=3), ValueError,
     "no training episode has the 6 states"),  # split_seed 3 holds out the long episode
    (lambda e: SkillDataset(e, horizon=H).sample(0), ValueError, "batch_size must be a positive integer"),
    (lambda e: next(SkillDataset(e, horizon=H, val_fraction=0).validation_batches(4)), ValueError,
     "no validation windows"),
    (lambda e: Episode(np.zeros((3, 2)), np.zeros((3, 1)), np.zeros(3)), ValueError, r"observations \[T\+1, S\]"),
    (lambda e: Episode(np.zeros((3, 2)), np.zeros((2, 1)), [True, False]), ValueError, "only the last step"),
    (lambda e: Episode(np.zeros((3, 2)), np.zeros((2, 1)), [False, False], ["0"]), ValueError, "one subset per step"),
    (lambda e: compute_stats([]), ValueError, "at least one episode"),
])
def test_bad_inputs_fail_with_one_line(episodes, make, error, match):
    with pytest.raises(error, match=match) as err:
        make(episodes)
    assert_one_line(err)


def test_write_shards_rejects_bad_input(episodes, tmp_path):
    with pytest.raises(ValueError, match="no episodes to write") as err:
        write_shards(iter([]), tmp_path)
    assert_one_line(err)
    odd = Episode(np.zeros((3, 2)), np.zeros((2, 2)), np.zeros(2))
    with pytest.raises(ValueError, match=r"episode 1 has \(state, action\) dims \(2, 2\); the first had \(3, 2\)"):
        write_shards([episodes[0], odd], tmp_path)
    with pytest.raises(ValueError, match="episodes_per_shard must be a positive integer"):
        write_shards(episodes, tmp_path, episodes_per_shard=0)
    assert not dataset_is_complete(tmp_path)


# ------------------------------------------------------------------------------------------------ collection


@pytest.fixture(scope="module")
def lo_path(tmp_path_factory) -> Path:
    """An untrained walker skill over all 31 subsets, saved as pre-training would."""
    torch.manual_seed(0)
    pi = make_model(LO_MODEL, low_level_observation_space("walker", TASK_MAP), spaces.Box(-1, 1, (6,), np.float32))
    path = tmp_path_factory.mktemp("lo") / "checkpoint-lo.pt"
    save_low_level(path, pi, "walker", SUBSETS, TASK_MAP, model=LO_MODEL)
    return path


def test_skill_actions_add_clipped_noise_to_the_mean_or_a_sample():
    loc = torch.tensor([[0.0, 0.5, -3.0]])
    pi = lambda obs: TanhNormal(loc, torch.full_like(loc, 0.1))  # noqa: E731
    obs = {"desired_goal": None, "observation": None, "task": None}
    gen = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    assert torch.equal(skill_actions(pi, obs, 0.0, False, gen()), torch.tanh(loc))
    noisy = skill_actions(pi, obs, 10.0, False, gen())
    assert noisy.abs().max() == 1.0 and torch.equal(noisy, skill_actions(pi, obs, 10.0, False, gen()))
    expected = torch.tanh(loc + 0.1 * torch.randn(loc.shape, generator=gen()))
    torch.testing.assert_close(skill_actions(pi, obs, 0.0, True, gen()), expected)


def test_collection_from_an_untrained_skill(lo_path):
    low = load_low_level(lo_path)
    episodes = collect_episodes(low, 250, action_noise=0.2, seed=3, episode_steps=30, num_envs=2)
    assert sum(e.n_steps for e in episodes) == 250
    for e in episodes:
        assert e.observations.shape == (e.n_steps + 1, 59) and e.actions.shape == (e.n_steps, 6)
        assert e.n_steps <= 30 and np.all(np.abs(e.actions) <= 1.0) and set(e.subsets) <= set(SUBSETS)
        assert e.terminals[-1] or e.n_steps == 30 or e is episodes[-1] or e is episodes[-2]  # falls, caps, cuts
    assert any(e.terminals[-1] for e in episodes)  # an untrained walker falls
    again = collect_episodes(low, 250, action_noise=0.2, seed=3, episode_steps=30, num_envs=2)
    assert all(np.array_equal(a.observations, b.observations) and np.array_equal(a.actions, b.actions)
               for a, b in zip(episodes, again, strict=True))
    other = collect_episodes(low, 250, action_noise=0.2, seed=4, episode_steps=30, num_envs=2)
    assert not np.array_equal(other[0].actions[:5], episodes[0].actions[:5])
    counted = []
    only = list(iter_episodes(low, 40, subsets=["0"], num_envs=1, on_steps=counted.append))
    assert sum(counted) == 40 and {s for e in only for s in e.subsets} == {"0"}
    with pytest.raises(ValueError, match="action_noise must be a number >= 0"):
        collect_episodes(low, 10, action_noise=-0.1)
    with pytest.raises(ValueError, match="n_steps must be a positive integer"):
        collect_episodes(low, 0)


def test_collection_envs_cut_episodes_at_the_cap():
    envs = make_collection_envs("walker", ["0"], episode_steps=3, num_envs=1)
    envs.reset(seed=0)
    truncated = [bool(envs.step(np.zeros((1, 6), np.float32))[3][0]) for _ in range(3)]
    envs.close()
    assert truncated == [False, False, True]


# ------------------------------------------------------------------------------------------------ command line


def run_collect(cwd: Path, *overrides: str) -> tuple[int, str, str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MUJOCO_GL": "egl", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", PROG, "profile=tiny", *overrides], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)
    return proc.returncode, proc.stdout, proc.stderr


def compose_collect(*overrides: str):
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose(config_name=CONFIG_NAME, overrides=list(overrides))


def test_cli_collects_the_tiny_dataset_once_then_finds_it_done(lo_path, tmp_path):
    rc, stdout, stderr = run_collect(tmp_path, f"lo.init_from={lo_path}")
    assert rc == 0, stderr
    assert "wrote dataset/" in stdout and "step/s" in stderr  # the summary and the progress bar
    info = read_stats(tmp_path / "dataset").info
    assert (info["n_steps"], info["obs_dim"], info["action_dim"]) == (600, 59, 6)
    assert info["metadata"]["lo.init_from"] == str(lo_path) and info["metadata"]["action_noise"] == 0.2
    assert len(info["shards"]) == -(-info["n_episodes"] // 4)
    stamp = (tmp_path / "dataset" / STATS_FILE).stat().st_mtime_ns
    rc, stdout, stderr = run_collect(tmp_path, f"lo.init_from={lo_path}")
    assert rc == 0 and "already holds the complete dataset" in stdout and "nothing to do" in stdout, stderr
    assert (tmp_path / "dataset" / STATS_FILE).stat().st_mtime_ns == stamp
    cfg = compose_collect("profile=tiny", f"lo.init_from={lo_path}", "seed=1")
    with pytest.raises(ValueError, match=r"collected with other settings \(seed: 0 -> 1\)"):
        prepare_collection(cfg, tmp_path)


def test_cli_bad_low_level_fails_with_one_line(tmp_path):
    rc, stdout, stderr = run_collect(tmp_path, "lo.init_from=nowhere/checkpoint-lo.pt")
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert rc != 0 and len(lines) == 1, stderr
    assert lines[0].startswith(f"{PROG}: error: low-level checkpoint") and "does not exist" in lines[0]
    assert not (tmp_path / "dataset").exists()


def test_collect_config_profiles_and_checks(lo_path):
    sizes = {p: compose_collect(f"profile={p}", "lo.init_from=x") for p in ("tiny", "laptop", "paper")}
    assert [sizes[p].n_steps for p in ("tiny", "laptop", "paper")] == [600, 200_000, 1_000_000]
    assert (sizes["paper"].action_noise, sizes["paper"].episode_steps, sizes["paper"].out_dir) == (0.2, 1000, "dataset")
    assert collection_settings(sizes["tiny"])["n_steps"] == 600
    with pytest.raises(ValueError, match="missing config values: lo.init_from"):
        check_collect_config(compose_collect("profile=tiny"))
    with pytest.raises(ValueError, match="robot='humanoid' but the low-level checkpoint"):
        prepare_collection(compose_collect("profile=tiny", f"lo.init_from={lo_path}", "robot=humanoid"), lo_path.parent)


def test_spirl_configs_live_in_their_own_directory_with_their_own_profiles():
    assert CONFIG_DIR != HSD3_CONFIG_DIR and not list(HSD3_CONFIG_DIR.rglob("*collect*"))
    assert "collect" not in experiments() + experiments(pretraining=True)
    check = lambda *argv: check_command_line(list(argv), prog=PROG, default_config=CONFIG_NAME,  # noqa: E731
                                             config_dir=CONFIG_DIR)
    with pytest.raises(SystemExit, match=f"{PROG}: error: {PROG} runs the 'collect' config only; got -cn walker_sac"):
        check("-cn", "walker_sac")
    with pytest.raises(SystemExit, match="unknown profile 'huge'; valid: laptop, paper, tiny"):
        check("profile=huge")
    with pytest.raises(SystemExit, match="unknown key 'max_samples'"):
        check("profile=tiny", "max_samples=5")  # HSD-3's profile keys are not merged any more
    check("profile=tiny", "lo.init_from=x")
    tiny = compose_collect("profile=tiny", "lo.init_from=x")
    assert "max_samples" not in tiny and "env" not in tiny
