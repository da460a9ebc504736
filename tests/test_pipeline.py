"""The tiny pipeline from the README: pre-train skills, then train SAC, HSD-3, HSD-Bandit and SD from them; signals
and reruns resume; bad low-level checkpoints and wrong entry points fail with one line before training."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from hsd3_learn.agents.hsd3 import HSD3Config
from hsd3_learn.agents.hsd3_interface import load_low_level
from hsd3_learn.agents.hsdb import HSDBConfig
from hsd3_learn.train import CONFIG_DIR, check_command_line
from hsd3_learn.training import AUTO_ADAPTATIONS, EvalLog, auto_adapt, check_config

ROOT = Path(__file__).resolve().parents[1]


def run_cli(module: str, cwd: Path, experiment: str, *overrides: str, wait: bool = True):
    command = [sys.executable, "-m", f"hsd3_learn.{module}", "-cn", experiment, "profile=tiny", "device=cpu",
               "threads=1", *overrides]
    env = {**os.environ, "MUJOCO_GL": "egl", "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if not wait:
        return proc
    stdout, stderr = proc.communicate(timeout=180)
    return proc.returncode, stdout, stderr


def counters(run_dir: Path) -> dict[str, int]:
    return torch.load(run_dir / "checkpoint.pt", weights_only=True)["counters"]


def eval_samples(run_dir: Path, name: str = "eval.csv") -> list[int]:
    from hsd3_learn.pretraining import PRETRAIN_COLUMNS

    columns = PRETRAIN_COLUMNS if name == "pretrain_eval.csv" else None
    log = EvalLog(run_dir / name, columns) if columns else EvalLog(run_dir / name)
    return [int(row["samples"]) for row in log.rows()]


def stop_after_first_checkpoint(proc: subprocess.Popen, run_dir: Path) -> tuple[str, str]:
    """SIGTERM a run as soon as it has written a checkpoint; its stdout and stderr after a clean exit."""
    deadline = time.monotonic() + 120
    while not (run_dir / "checkpoint.pt").exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr
    return stdout, stderr


@pytest.fixture(scope="module")
def skills(tmp_path_factory) -> Path:
    """The README's first command at the tiny profile: a low-level checkpoint and its side file."""
    run_dir = tmp_path_factory.mktemp("pretrain")
    rc, stdout, stderr = run_cli("pretrain", run_dir, "walker_pretrain")
    assert rc == 0, stderr
    assert "curriculum: 10 new subsets of rank 2, 15 in all" in stdout
    assert "samples/s" in stderr  # the progress bar
    return run_dir / "checkpoint-lo.pt"


def test_pretraining_writes_skills_with_the_whole_curriculum(skills):
    run_dir = skills.parent
    side = json.loads((run_dir / "checkpoint-lo_abs.json").read_text())
    assert len(side["subsets"]) == 31 and set(side["cperf"]) == set(side["subsets"])
    assert eval_samples(run_dir, "pretrain_eval.csv") == [0, 250, 500, 750, 1000]
    low = load_low_level(skills)
    assert low.robot == "walker" and len(low.subsets) == 31
    assert {"config.yaml", "checkpoint.pt", "subsets.csv", "tb"} <= {p.name for p in run_dir.iterdir()}


@pytest.mark.parametrize("experiment", ["walker_sac", "walker_hsd3", "walker_hsdb", "walker_sd"])
def test_each_downstream_agent_trains_from_the_pretrained_skills(skills, tmp_path, experiment):
    lo = [] if experiment == "walker_sac" else [f"lo.init_from={skills}"]
    rc, stdout, stderr = run_cli("train", tmp_path, experiment, *lo)
    assert rc == 0, stderr
    assert eval_samples(tmp_path) == [0, 500, 1000]
    state = counters(tmp_path)
    assert state["n_samples"] == 1000 and state["n_updates"] > 0
    config = OmegaConf.load(tmp_path / "config.yaml")
    assert config.agent.name == {"walker_sac": "sac", "walker_hsd3": "hsd3"}.get(experiment, "hsdb")
    if experiment != "walker_sac":
        assert config.agent.lo.init_from == str(skills)


def test_relative_low_level_paths_are_read_from_where_the_command_started(skills, tmp_path):
    (tmp_path / "lo").mkdir()
    for name in ("checkpoint-lo.pt", "checkpoint-lo_abs.json"):
        (tmp_path / "lo" / name).write_bytes((skills.parent / name).read_bytes())
    rc, stdout, stderr = run_cli("train", tmp_path, "walker_hsd3", "lo.init_from=lo/checkpoint-lo.pt",
                                 "max_samples=100", "seed=0,1", "-m")
    assert rc == 0, stderr
    jobs = sorted(p for p in (tmp_path / "multirun" / "walker_hsd3").iterdir() if p.is_dir())
    assert len(jobs) == 2 and all(counters(job)["n_samples"] == 100 for job in jobs)


def test_hsd3_run_stopped_by_sigterm_resumes_and_finishes(skills, tmp_path):
    proc = run_cli("train", tmp_path, "walker_hsd3", f"lo.init_from={skills}", "max_samples=2000", wait=False)
    stdout, stderr = stop_after_first_checkpoint(proc, tmp_path)
    assert "stopped by a signal" in stdout
    stopped_at = counters(tmp_path)["n_samples"]
    assert 250 <= stopped_at < 2000

    rc, stdout, stderr = run_cli("train", tmp_path, "walker_hsd3", f"lo.init_from={skills}", "max_samples=2000")
    assert rc == 0, stderr
    assert f"resuming from checkpoint.pt at {stopped_at} samples" in stdout
    assert counters(tmp_path)["n_samples"] == 2000 and eval_samples(tmp_path) == list(range(0, 2001, 500))


def test_pretraining_stopped_by_sigterm_resumes_with_its_curriculum(tmp_path):
    proc = run_cli("pretrain", tmp_path, "walker_pretrain", wait=False)
    stdout, stderr = stop_after_first_checkpoint(proc, tmp_path)
    stopped_at = counters(tmp_path)["n_samples"]
    assert 250 <= stopped_at < 1000 and "stopped by a signal" in stdout
    subsets = len(json.loads((tmp_path / "checkpoint-lo_abs.json").read_text())["subsets"])

    rc, stdout, stderr = run_cli("pretrain", tmp_path, "walker_pretrain")
    assert rc == 0, stderr
    assert f"resuming from checkpoint.pt at {stopped_at} samples" in stdout
    assert eval_samples(tmp_path, "pretrain_eval.csv") == [0, 250, 500, 750, 1000]
    final = json.loads((tmp_path / "checkpoint-lo_abs.json").read_text())["subsets"]
    assert len(final) == 31 >= subsets  # the curriculum went on from where it stopped, not from rank 1


@pytest.mark.parametrize("overrides, message", [
    ((), "missing config values: lo.init_from"),
    (("lo.init_from=nowhere/checkpoint-lo.pt",), "low-level checkpoint"),
    (("lo.init_from=nowhere/checkpoint-lo.pt",), "does not exist"),
])
def test_missing_low_level_fails_with_one_line_before_training(tmp_path, overrides, message):
    rc, stdout, stderr = run_cli("train", tmp_path, "walker_hsd3", *overrides)
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert rc != 0 and len(lines) == 1 and message in lines[0], stderr
    assert lines[0].startswith("hsd3_learn.train: error:")
    assert not (tmp_path / "checkpoint.pt").exists() and not (tmp_path / "eval.csv").exists()


def test_mismatched_low_level_fails_with_one_line(skills, tmp_path):
    (tmp_path / "checkpoint-lo.pt").write_bytes(skills.read_bytes())
    rc, _, stderr = run_cli("train", tmp_path, "walker_hsd3", "lo.init_from=checkpoint-lo.pt")
    assert rc != 0 and "side file" in stderr and len(stderr.strip().splitlines()) == 1, stderr
    (tmp_path / "checkpoint-lo_abs.json").write_bytes((skills.parent / "checkpoint-lo_abs.json").read_bytes())
    rc, _, stderr = run_cli("train", tmp_path, "walker_hsd3", "lo.init_from=checkpoint-lo.pt",
                            "lo.model=pi_d2rl_d_1024")
    assert rc != 0 and "does not fit model" in stderr and len(stderr.strip().splitlines()) == 1, stderr
    assert not (tmp_path / "eval.csv").exists()


def test_each_entry_point_refuses_the_others_experiments():
    with pytest.raises(SystemExit, match="'walker_pretrain' is run by python -m hsd3_learn.pretrain"):
        check_command_line(["-cn", "walker_pretrain"])
    with pytest.raises(SystemExit, match="'walker_hsd3' is run by python -m hsd3_learn.train"):
        check_command_line(["-cn", "walker_hsd3"], pretraining=True)
    with pytest.raises(SystemExit, match="unknown experiment 'nope'; valid: humanoid_pretrain, walker_pretrain"):
        check_command_line(["-cn", "nope"], pretraining=True)
    check_command_line(["-cn", "walker_pretrain", "profile=tiny"], pretraining=True)


# ------------------------------------------------------------------------------------------------ configs


def compose_config(name: str, *overrides: str):
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose(config_name=name, overrides=list(overrides))


@pytest.mark.parametrize("task, key, value", [(task, *change) for task, change in AUTO_ADAPTATIONS.items()])
def test_auto_adapt_changes_only_goal_space_agents_on_their_tasks(task, key, value):
    cfg = compose_config("walker_hsd3", f"env.task={task}", "lo.init_from=x")
    assert auto_adapt(cfg) == [f"agent.{key}={value}"] and OmegaConf.select(cfg.agent, key) == value
    assert auto_adapt(cfg) == []  # already adapted
    off = compose_config("walker_hsd3", f"env.task={task}", "lo.init_from=x", "auto_adapt=false")
    assert auto_adapt(off) == [] and OmegaConf.select(off.agent, key) != value
    hurdles = compose_config("walker_hsdb", "env.task=Hurdles", "lo.init_from=x")
    assert auto_adapt(hurdles) == []
    sac = compose_config("walker_sac", f"env.task={task}")
    assert auto_adapt(sac) == []


def test_stairs_run_uses_heights_above_the_steps(skills, tmp_path):
    rc, stdout, stderr = run_cli("train", tmp_path, "walker_hsd3", f"lo.init_from={skills}", "env.task=Stairs",
                                 "max_samples=100")
    assert rc == 0, stderr
    assert "auto_adapt for Stairs: agent.goal_space.features=bodyfeet-relz" in stdout
    assert OmegaConf.load(tmp_path / "config.yaml").agent.goal_space.features == "bodyfeet-relz"


def test_hsd3_paper_values_and_lo_group():
    cfg = compose_config("walker_hsd3", "lo.init_from=x")
    agent = cfg.agent
    assert (cfg.max_samples, cfg.env.num_envs, cfg.eval.interval, cfg.auto_adapt) == (10**7, 1, 50_000, True)
    assert (agent.action_interval, agent.batch_size, agent.samples_per_update, agent.num_updates) == (5, 256, 50, 50)
    assert (agent.lr_pi_task, agent.lr_pi_subgoal, agent.lr_q, agent.target_entropy_factor_d) == (3e-4, 3e-4, 1e-4,
                                                                                                   0.5)
    assert (agent.pi_task, agent.pi_subgoal, agent.q) == ("pi_d2rl_discrete_d_256", "pi_d2rl_mt_d_256",
                                                          "qd_d2rl_flattsg_d_256")
    assert agent.lo.init_from == "x" and agent.goal_space.from_lo_eps == 1.0
    human = compose_config("humanoid_hsd3", "lo.init_from=x").agent
    assert (human.batch_size, human.rpbuf_size, human.samples_per_update, human.lr_pi_task) == (512, 2e6, 500, 1e-4)
    hsdb = compose_config("walker_hsdb", "lo.init_from=x")
    assert (hsdb.env.num_envs, hsdb.agent.bandit, hsdb.agent.warmup_samples, hsdb.agent.q) == (10, "agent57", 31_000,
                                                                                             "qd_d2rl_d_256")
    sd = compose_config("walker_sd", "lo.init_from=x").agent
    assert (sd.bandit, sd.bandit_kwargs, list(sd.subsets)) == ("uniform", None, ["0+1+2+3+4+5+6"])


@pytest.mark.parametrize("name", ["walker_hsd3", "walker_hsdb", "walker_sd", "humanoid_hsd3", "humanoid_hsdb",
                                  "humanoid_sd"])
@pytest.mark.parametrize("profile", ["tiny", "laptop", "paper"])
def test_hierarchical_profiles_compose_to_valid_configs(name, profile):
    cfg = compose_config(name, f"profile={profile}", "lo.init_from=x")
    check_config(cfg)
    options = {k: v for k, v in OmegaConf.to_container(cfg.agent, resolve=True).items() if k != "name"}
    assert isinstance((HSDBConfig if cfg.agent.name == "hsdb" else HSD3Config)(**options), HSD3Config)
    assert cfg.agent.rpbuf_size % cfg.env.num_envs == 0
