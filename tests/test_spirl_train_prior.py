"""Tests for hsd3_learn.spirl.train_prior: a few steps of every skill-model kind on a tiny synthetic dataset, the
skill-model file the agents read, resuming (bitwise), signals, one-line errors, the configs, and the command line
(tiny run, rerun, bad data.dir) in a subprocess."""

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir

from hsd3_learn.envs.pretraining import PretrainingEnv
from hsd3_learn.spirl.agents import STATS_KEYS
from hsd3_learn.spirl.data import Episode, SkillDataset, read_stats, write_shards
from hsd3_learn.spirl.models import load_skill_model
from hsd3_learn.spirl.train_prior import (CONFIG_DIR, CONFIG_NAME, LOSS_TERMS, PROG, check_prior_config,
                                          prepare_prior_training, skill_stats, train_prior, validate)
from hsd3_learn.train import check_command_line

ROOT = Path(__file__).resolve().parents[1]
S, A = 59, 6  # the walker's pre-training observation and action sizes


def random_episode(rng: np.random.Generator, n_steps: int) -> Episode:
    return Episode(rng.normal(size=(n_steps + 1, S)).astype(np.float32),
                   rng.uniform(-1, 1, size=(n_steps, A)).astype(np.float32), np.zeros(n_steps, bool))


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    """Ten random 20-step walker episodes, written as collection would."""
    rng = np.random.default_rng(0)
    path = tmp_path_factory.mktemp("data") / "dataset"
    write_shards([random_episode(rng, 20) for _ in range(10)], path, episodes_per_shard=4,
                 metadata={"robot": "walker"})
    return path


def compose_prior(*overrides: str):
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose(config_name=CONFIG_NAME, overrides=list(overrides))


def tiny_cfg(data_dir: Path, model: str = "spirl", *overrides: str):
    return compose_prior("profile=tiny", f"model={model}", f"data.dir={data_dir}", "max_steps=6", "eval.interval=3",
                         "checkpoint.interval=4", *overrides)


def parameters(model: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.parameters()]


# ------------------------------------------------------------------------------------------------ training


@pytest.mark.parametrize("kind", ["spirl", "spirl_cl", "skill_critic"])
def test_each_kind_trains_and_writes_the_skill_model_the_agents_read(data_dir, tmp_path, kind):
    run = prepare_prior_training(tiny_cfg(data_dir, kind), tmp_path)
    before = parameters(run.model)
    result = train_prior(run, progress=False)
    assert result.finished and result.step == 6 and set(result.last_val) == set(LOSS_TERMS)
    assert all(np.isfinite(v) for v in result.last_val.values())
    assert any(not torch.equal(a, b) for a, b in zip(before, run.model.parameters()))
    saved = load_skill_model(tmp_path / "checkpoint-prior.pt")
    assert saved.kind == kind and (saved.config.state_dim, saved.config.action_dim, saved.config.H) == (S, A, 4)
    assert set(saved.stats) == set(STATS_KEYS)
    stats = read_stats(data_dir)
    np.testing.assert_array_equal(saved.stats["obs_mean"].numpy(), stats.obs_mean)
    np.testing.assert_array_equal(saved.stats["obs_std"].numpy(), stats.obs_std)
    np.testing.assert_array_equal(saved.stats["kept_observation_entries"].numpy(),
                                  PretrainingEnv("walker").kept_observation_entries)
    for a, b in zip(saved.model.parameters(), run.model.parameters()):
        assert torch.equal(a, b.detach())
    rows = run.val_log.rows()
    assert [row["step"] for row in rows] == [0, 3, 6] and [row["samples"] for row in rows] == [0, 48, 96]
    assert rows[-1]["loss"] == pytest.approx(result.last_val["loss"])
    assert {"checkpoint.pt", "config.yaml", "val.csv", "tb"} <= {p.name for p in tmp_path.iterdir()}


def test_a_resumed_run_ends_where_an_uninterrupted_one_does(data_dir, tmp_path):
    straight = prepare_prior_training(tiny_cfg(data_dir, "spirl_cl", "max_steps=8"), tmp_path / "a")
    train_prior(straight, progress=False)
    first = prepare_prior_training(tiny_cfg(data_dir, "spirl_cl", "max_steps=5"), tmp_path / "b")
    train_prior(first, progress=False)
    second = prepare_prior_training(tiny_cfg(data_dir, "spirl_cl", "max_steps=8"), tmp_path / "b")
    assert second.step == 5 and second.last_val == 5  # the final validation of the first run
    result = train_prior(second, progress=False)
    assert result.step == 8
    for a, b in zip(straight.model.parameters(), second.model.parameters()):
        assert torch.equal(a, b)
    assert [row["step"] for row in second.val_log.rows()] == [0, 3, 5, 6, 8]
    with pytest.raises(ValueError, match="holds a 'spirl_cl' model, not model=spirl"):
        prepare_prior_training(tiny_cfg(data_dir, "spirl", "max_steps=8"), tmp_path / "b")


def test_a_signal_checkpoints_and_stops_cleanly(data_dir, tmp_path):
    run = prepare_prior_training(tiny_cfg(data_dir), tmp_path)
    sample = run.dataset.sample

    def sample_then_signal(batch_size: int) -> dict:
        if run.step == 2:
            os.kill(os.getpid(), signal.SIGUSR1)
        return sample(batch_size)

    run.dataset.sample = sample_then_signal
    result = train_prior(run, progress=False)
    assert not result.finished and result.step == 3 and not (tmp_path / "checkpoint-prior.pt").exists()
    assert torch.load(tmp_path / "checkpoint.pt", weights_only=True)["step"] == 3


def test_validation_is_deterministic_and_leaves_the_training_rng_alone(data_dir, tmp_path):
    run = prepare_prior_training(tiny_cfg(data_dir, "skill_critic"), tmp_path)
    state = torch.get_rng_state()
    first = validate(run.model, run.dataset, 2, max_batches=2, seed=1)
    assert torch.equal(torch.get_rng_state(), state) and run.model.training
    assert validate(run.model, run.dataset, 2, max_batches=2, seed=1) == first
    assert validate(run.model, run.dataset, 2, max_batches=2, seed=2)["loss"] != first["loss"]


# ------------------------------------------------------------------------------------------------ errors, configs


def test_bad_configs_and_datasets_fail_with_one_line(data_dir, tmp_path):
    with pytest.raises(ValueError, match="missing config values: data.dir, model"):
        check_prior_config(compose_prior("profile=tiny"))
    with pytest.raises(ValueError, match="unknown model 'spirl_v2'; valid: spirl, spirl_cl, skill_critic"):
        check_prior_config(tiny_cfg(data_dir, "spirl_v2"))
    with pytest.raises(ValueError, match="max_steps must be a positive integer; got 0"):
        check_prior_config(tiny_cfg(data_dir, "spirl", "max_steps=0"))
    with pytest.raises(ValueError, match="lr must be a positive number; got -0.1"):
        check_prior_config(tiny_cfg(data_dir, "spirl", "lr=-0.1"))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        prepare_prior_training(tiny_cfg(tmp_path / "nowhere"), tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="stats.json is missing"):
        prepare_prior_training(tiny_cfg(tmp_path / "empty"), tmp_path)
    rng = np.random.default_rng(1)
    write_shards([random_episode(rng, 20) for _ in range(4)], tmp_path / "norobot", metadata={})
    with pytest.raises(ValueError, match="names no robot"):
        prepare_prior_training(tiny_cfg(tmp_path / "norobot"), tmp_path)
    short = [Episode(np.zeros((21, 3), np.float32), np.zeros((20, A), np.float32), np.zeros(20, bool))] * 4
    write_shards(short, tmp_path / "other", metadata={"robot": "walker"})
    with pytest.raises(ValueError, match="states have 3 dims but the walker pre-training env's observation has 59"):
        prepare_prior_training(tiny_cfg(tmp_path / "other"), tmp_path)
    with pytest.raises(ValueError, match="no validation windows"):
        prepare_prior_training(tiny_cfg(data_dir, "spirl", "data.val_fraction=0"), tmp_path)
    assert not (tmp_path / "checkpoint.pt").exists() and not (tmp_path / "config.yaml").exists()


def test_skill_stats_pair_the_dataset_statistics_with_the_kept_entries(data_dir):
    dataset = SkillDataset.load(data_dir, horizon=4)
    stats = skill_stats(dataset, "walker")
    assert set(stats) == set(STATS_KEYS) and stats["obs_mean"] is dataset.stats.obs_mean
    kept = stats["kept_observation_entries"]
    assert kept.dtype == np.int64 and len(kept) == S and len(set(kept.tolist())) == S and kept.max() == S


def test_profiles_and_command_line_checks():
    steps = [compose_prior(f"profile={p}", "model=spirl", "data.dir=x").max_steps for p in ("tiny", "laptop", "paper")]
    assert steps == [50, 20_000, 100_000]
    paper = compose_prior("model=spirl", "data.dir=x")
    assert (paper.lr, paper.batch_size, paper.skill.H) == (1e-3, 128, 10) and "max_samples" not in paper
    check = lambda *argv: check_command_line(list(argv), prog=PROG, default_config=CONFIG_NAME,  # noqa: E731
                                             config_dir=CONFIG_DIR)
    with pytest.raises(SystemExit, match=f"{PROG}: error: unknown key 'skill.width'"):
        check("model=spirl", "skill.width=3")
    with pytest.raises(SystemExit, match="unknown profile 'huge'; valid: laptop, paper, tiny"):
        check("profile=huge")
    with pytest.raises(SystemExit, match="runs the 'train_prior' config only; got -cn collect"):
        check("-cn", "collect")
    check("profile=tiny", "model=spirl", "data.dir=x")


def test_every_spirl_yaml_key_has_a_comment():
    files = sorted(CONFIG_DIR.rglob("*.yaml"))
    assert len(files) >= 22  # collect, train_prior and train with their groups
    for path in files:
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if re.match(r"^\s*[\w.]+:", line) and "#" not in line:
                raise AssertionError(f"{path.name}:{number} has no comment: {line!r}")


# ------------------------------------------------------------------------------------------------ command line


def run_cli(cwd: Path, *overrides: str) -> tuple[int, str, str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MUJOCO_GL": "egl", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", PROG, "profile=tiny", *overrides], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)
    return proc.returncode, proc.stdout, proc.stderr


def test_cli_trains_at_the_tiny_profile_then_finds_the_run_done(data_dir, tmp_path):
    (tmp_path / "ds").symlink_to(data_dir)
    rc, stdout, stderr = run_cli(tmp_path, "model=spirl_cl", "data.dir=ds")  # relative to the launch directory
    assert rc == 0, stderr
    assert "wrote the skill model" in stdout and "step/s" in stderr  # the log and the progress bar
    assert load_skill_model(tmp_path / "checkpoint-prior.pt").kind == "spirl_cl"
    assert (tmp_path / "val.csv").read_text().count("\n") == 1 + 3  # header, steps 0, 25, 50
    stamp = (tmp_path / "checkpoint-prior.pt").stat().st_mtime_ns
    rc, stdout, stderr = run_cli(tmp_path, "model=spirl_cl", "data.dir=ds")
    assert rc == 0 and "already took 50 steps" in stdout, stderr
    assert (tmp_path / "checkpoint-prior.pt").stat().st_mtime_ns == stamp


def test_cli_bad_data_dir_fails_with_one_line(tmp_path):
    rc, stdout, stderr = run_cli(tmp_path, "model=spirl", "data.dir=nowhere")
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert rc != 0 and len(lines) == 1, stderr
    assert lines[0].startswith(f"{PROG}: error: ") and "does not exist" in lines[0]
    assert not (tmp_path / "checkpoint.pt").exists()
