"""Tests for hsd3_learn.train and hsd3_learn.training: config profiles, evaluation, the loop's schedule, files of a
run, and the command line end to end (tiny runs in a subprocess: finish, resume, SIGTERM, one-line errors)."""

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

import envs
from hsd3_learn.agents import Agent, SACConfig, make_agent
from hsd3_learn.agents.base import make_config
from hsd3_learn.render import read_video
from hsd3_learn.train import CONFIG_DIR, check_command_line, experiments, one_line
from hsd3_learn.training import (EVAL_COLUMNS, EpisodeStats, EvalLog, EvalResult, Schedule, check_config, eval_mode,
                                 evaluate, is_due, make_run_agent, make_vector_envs, prepare_run, record_video,
                                 step_info_values, train, train_loop)
from hsd3_learn.utils import PreemptionHook

ROOT = Path(__file__).resolve().parents[1]


def compose_config(name: str = "walker_sac", *overrides: str):
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose(config_name=name, overrides=list(overrides))


def env_config(**overrides):
    cfg = {"task": "Hurdles", "robot": "walker", "num_envs": 1, "vector": "sync", "max_episode_steps": 20,
           "wrappers": [], **overrides}
    return OmegaConf.create(cfg)


class ZeroAgent(Agent):
    """Acts with zeros and records what the loop hands it; ``on_observe(agent)`` runs after every step."""

    def __init__(self, num_envs: int, n_actions: int, on_observe=None) -> None:
        super().__init__(torch.device("cpu"))
        self.num_envs, self.n_actions, self.on_observe = num_envs, n_actions, on_observe
        self.acted_on, self.observed = [], []

    def action(self, obs, explore):
        self.acted_on.append(obs["observation"].clone())
        return torch.zeros(obs["observation"].shape[0], self.n_actions)

    def observe(self, obs, action, reward, terminated, truncated, next_obs, info=None):
        self.observed.append((terminated | truncated, next_obs["observation"].clone()))
        self.n_samples += self.num_envs
        self.n_steps += 1
        if self.on_observe is not None:
            self.on_observe(self)
        return {}

    def update(self):
        return {}


# ------------------------------------------------------------------------------------------------ configs


def test_paper_profile_is_the_original_walker_sac():
    cfg = compose_config("walker_sac", "profile=paper")
    assert (cfg.max_samples, cfg.env.task, cfg.env.robot, cfg.env.num_envs) == (10_000_000, "Hurdles", "walker", 1)
    assert (cfg.eval.interval, cfg.eval.num_envs, cfg.checkpoint.interval) == (50_000, 50, 50_000)
    agent = cfg.agent
    assert (agent.batch_size, agent.rpbuf_size, agent.samples_per_update, agent.num_updates) == (256, 10**6, 50, 50)
    assert (agent.warmup_samples, agent.randexp_samples, agent.init_alpha, agent.polyak) == (1000, 1000, 0.1, 0.995)
    assert (agent.lr_pi, agent.lr_q, agent.lr_alpha, agent.gamma) == (3e-4, 3e-4, 1e-4, 0.99)
    assert (agent.pi, agent.q) == ("pi_d2rl_256", "qd_d2rl_256")
    assert compose_config("walker_sac") == cfg  # paper is the default profile


def test_humanoid_paper_profile_overrides_the_walker_values():
    cfg = compose_config("humanoid_sac")
    assert (cfg.max_samples, cfg.env.robot, cfg.env.num_envs, cfg.eval.interval) == (10**8, "humanoidpc", 5, 200_000)
    agent = cfg.agent
    assert (agent.batch_size, agent.rpbuf_size, agent.samples_per_update, agent.num_updates) == (512, 2e6, 500, 50)
    assert (agent.warmup_samples, agent.randexp_samples) == (10_000, 10_000)


@pytest.mark.parametrize("name", ["walker_sac", "humanoid_sac"])
@pytest.mark.parametrize("profile", ["tiny", "laptop", "paper"])
def test_every_profile_composes_to_a_complete_valid_config(name, profile):
    cfg = compose_config(name, f"profile={profile}")
    assert not OmegaConf.missing_keys(cfg)
    check_config(cfg)
    options = {k: v for k, v in OmegaConf.to_container(cfg.agent, resolve=True).items() if k != "name"}
    assert isinstance(make_config(SACConfig, options), SACConfig)
    assert cfg.agent.rpbuf_size % cfg.env.num_envs == 0


def test_laptop_and_tiny_profiles_scale_the_paper_down():
    paper, laptop, tiny = (compose_config("walker_sac", f"profile={p}") for p in ("paper", "laptop", "tiny"))
    assert tiny.max_samples < laptop.max_samples < paper.max_samples
    assert laptop.agent.pi.n_layers == laptop.agent.q.n_layers == 2
    assert laptop.agent.samples_per_update / laptop.agent.num_updates == 1.0  # the paper's update-to-data ratio
    assert (tiny.max_samples, tiny.env.num_envs, tiny.eval.num_envs, tiny.env.max_episode_steps) == (1000, 2, 2, 50)


def test_experiments_and_hydra_settings():
    assert experiments() == ["humanoid_hsd3", "humanoid_hsdb", "humanoid_sac", "humanoid_sd", "walker_hsd3",
                             "walker_hsdb", "walker_sac", "walker_sd"]
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(config_name="walker_sac", overrides=["profile=tiny"], return_hydra_config=True)
    assert (cfg.hydra.run.dir, cfg.hydra.output_subdir, cfg.hydra.job.chdir) == (".", None, True)
    assert list(cfg.hydra.job_logging.handlers) == ["console"]  # no log file in the run directory


def test_every_yaml_key_has_a_comment():
    files = sorted(CONFIG_DIR.rglob("*.yaml"))
    assert len(files) >= 7
    for path in files:
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if re.match(r"^\s*[\w.]+:", line) and "#" not in line:
                raise AssertionError(f"{path.name}:{number} has no comment: {line!r}")


# ------------------------------------------------------------------------------------------------ pieces


def test_is_due_and_schedule_checks():
    assert is_due(0, -1, 10) and not is_due(9, 0, 10) and is_due(12, 9, 10) and not is_due(21, 20, 10)
    with pytest.raises(ValueError, match="max_samples must be a positive integer"):
        Schedule(0, 10, 10)
    with pytest.raises(ValueError, match="eval_interval"):
        Schedule(10, 2.5, 10)


def test_check_config_names_what_is_wrong():
    cfg = compose_config("walker_sac", "profile=tiny")
    for key, value, message in [("env.task", "Nope", "unknown task 'Nope'; valid tasks: Floor"),
                                ("env.robot", "cat", "unknown robot 'cat'; valid robots: walker"),
                                ("agent.name", "nope", "unknown agent 'nope'; valid agents: .*sac"),
                                ("env.num_envs", 0, "env.num_envs must be a positive integer"),
                                ("max_samples", "???", "missing config values: max_samples")]:
        bad = cfg.copy()
        OmegaConf.update(bad, key, value)
        with pytest.raises(ValueError, match=message):
            check_config(bad)


def test_step_info_values_reads_final_info_for_envs_that_ended():
    ended = np.array([False, True, True])
    info = {"score": np.array([1.0, 0.0, 0.0]), "_score": np.array([True, False, False]),
            "final_info": {"score": np.array([0.0, 2.0, 3.0]), "_score": np.array([False, True, True])}}
    np.testing.assert_array_equal(step_info_values(info, "score", ended), [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match=r"envs \[1, 2\] has no 'score'"):
        step_info_values({k: v for k, v in info.items() if k != "final_info"}, "score", ended)


def test_evaluate_is_deterministic_and_env_i_uses_seed_i():
    env_cfg = env_config(task="PoleBalance", max_episode_steps=40)
    venv = make_vector_envs(env_cfg, 3)
    agent = make_agent("sac", venv.single_observation_space, venv.single_action_space, 3,
                       {"device": "cpu", "rpbuf_size": 300, "pi": {"name": "pi_d2rl_256", "n_layers": 1},
                        "q": {"name": "qd_d2rl_256", "n_layers": 1}})
    with eval_mode(agent):
        first, second = evaluate(agent, venv), evaluate(agent, venv)
    assert agent.training
    for name in ("scores", "returns", "lengths"):
        np.testing.assert_array_equal(getattr(first, name), getattr(second, name))
    for seed in range(3):  # the same policy in a single env reset with seed i gives episode i
        env = envs.make("PoleBalance", "walker", max_episode_steps=40)
        obs, _ = env.reset(seed=seed)
        score = ret = length = 0
        done = False
        while not done:
            batch = {key: torch.as_tensor(value).unsqueeze(0) for key, value in obs.items()}
            obs, reward, terminated, truncated, info = env.step(agent.action(batch, explore=False)[0].numpy())
            score, ret, length, done = score + info["score"], ret + reward, length + 1, terminated or truncated
        env.close()
        assert (first.scores[seed], first.returns[seed], first.lengths[seed]) == pytest.approx((score, ret, length))
    assert first.scores.max() > 0
    summary = first.summary()
    assert summary["score_mean"] == pytest.approx(first.scores.mean()) and summary["length_max"] == first.lengths.max()
    assert set(summary) == set(EVAL_COLUMNS) - {"samples"}
    venv.close()


def test_episode_stats_report_episodes_as_they_end():
    stats = EpisodeStats(2)
    assert stats.update(torch.tensor([1.0, 2.0]), torch.tensor([False, False])) == {}
    assert stats.update(torch.tensor([3.0, 4.0]), torch.tensor([True, False])) == {"episode_return": 4.0,
                                                                                  "episode_length": 2.0}
    assert stats.update(torch.tensor([5.0, 6.0]), torch.tensor([True, True])) == {"episode_return": 8.5,
                                                                                  "episode_length": 2.0}


def test_eval_log_appends_truncates_and_rejects_foreign_files(tmp_path):
    log = EvalLog(tmp_path / "eval.csv")
    assert log.truncate(100) == -1 and log.rows() == []
    result = EvalResult(np.array([1.0, 3.0]), np.array([0.0, 2.0]), np.array([5, 7]))
    for n in (0, 50, 100):
        log.append(n, result.summary())
    assert [row["samples"] for row in log.rows()] == [0, 50, 100]
    assert log.rows()[0]["score_max"] == 3.0
    assert log.truncate(60) == 50
    assert [row["samples"] for row in log.rows()] == [0, 50]
    (tmp_path / "other.csv").write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="has columns"):
        EvalLog(tmp_path / "other.csv").rows()


def test_vector_envs_from_config_async_with_wrappers():
    venv = make_vector_envs(env_config(vector="async", wrappers=["reward_acc"]), 2)
    try:
        obs, info = venv.reset(seed=0)
        _, reward, *_, info = venv.step(torch.zeros(2, 6))
        assert obs["observation"].shape == (2, 60) and "reward_acc" in info
        np.testing.assert_allclose(info["reward_acc"], reward.numpy())
    finally:
        venv.close()


def test_make_run_agent_takes_the_name_from_the_config():
    venv = make_vector_envs(env_config(), 2)
    agent = make_run_agent(compose_config("walker_sac", "profile=tiny", "device=cpu").agent, venv)
    assert type(agent).__name__ == "SACAgent" and agent.num_envs == 2 and agent.cfg.batch_size == 32
    with pytest.raises(ValueError, match="SACConfig: unknown keys"):
        make_run_agent({"name": "sac", "bogus": 1}, venv)
    venv.close()


def test_record_video_plays_one_deterministic_episode(tmp_path):
    agent = ZeroAgent(1, 6)
    path = record_video(agent, env_config(), tmp_path / "v" / "eval.mp4", steps=4)
    assert len(read_video(path)) == 5  # the reset frame and 4 steps
    assert len(agent.acted_on) == 4 and agent.acted_on[0].shape == (1, 60)  # a batch of one per step


# ------------------------------------------------------------------------------------------------ the loop


def test_train_loop_schedule_final_obs_and_signal():
    venv = make_vector_envs(env_config(max_episode_steps=4), 3)
    agent = ZeroAgent(3, 6)
    evals, checkpoints = [], []
    with PreemptionHook(lambda: checkpoints.append(("signal", agent.n_samples))) as hook:
        done = train_loop(agent, venv, Schedule(60, 25, 20), lambda: evals.append(agent.n_samples),
                          lambda: checkpoints.append(agent.n_samples), hook, reset_seed=0)
    assert done
    assert evals == [0, 27, 51, 60]  # at 0, whenever a multiple of 25 is crossed, and at the end
    assert checkpoints == [21, 42, 60]
    # On steps where episodes ended, the agent got the final observation, not the next episode's first one.
    for (ended, next_obs), next_acted_on in zip(agent.observed, agent.acted_on[1:]):
        assert torch.equal(next_obs[~ended], next_acted_on[~ended])
        assert not ended.any() or not torch.equal(next_obs[ended], next_acted_on[ended])
    assert [int(ended.sum()) for ended, _ in agent.observed] == [0, 0, 0, 3] * 5  # 4-step episodes, 20 steps

    def send_sigterm(agent: ZeroAgent) -> None:
        if agent.n_steps == 4:
            os.kill(os.getpid(), signal.SIGTERM)

    agent, evals, checkpoints = ZeroAgent(3, 6, send_sigterm), [], []
    with PreemptionHook(lambda: checkpoints.append(("signal", agent.n_samples))) as hook:
        done = train_loop(agent, venv, Schedule(60, 25, 20), lambda: evals.append(agent.n_samples),
                          lambda: checkpoints.append(agent.n_samples), hook, last_eval=0)
    assert not done and evals == [] and checkpoints == [("signal", 12)]  # eval at 0 was done before
    venv.close()


def test_in_process_run_without_buffer_and_with_videos(tmp_path):
    cfg = compose_config("walker_sac", "profile=tiny", "device=cpu", "max_samples=200", "eval.interval=100",
                         "checkpoint.include_buffer=false", "eval.video=true", "eval.video_steps=3")
    result = train(prepare_run(cfg, tmp_path), progress=False)
    assert result.finished and result.n_samples == 200 and set(result.last_eval) == set(EVAL_COLUMNS[1:])
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert "buffer" not in state["attrs"] and "model" in state["attrs"]
    assert sorted(p.name for p in (tmp_path / "videos").iterdir()) == [
        "eval_000000000.mp4", "eval_000000100.mp4", "eval_000000200.mp4"]
    assert OmegaConf.load(tmp_path / "config.yaml").agent.device == "cpu"


def test_same_seed_twice_gives_the_same_run(tmp_path):
    states = []
    for name in ("a", "b"):
        cfg = compose_config("walker_sac", "profile=tiny", "device=cpu", "max_samples=200", "eval.interval=100")
        train(prepare_run(cfg, tmp_path / name), progress=False)
        states.append(torch.load(tmp_path / name / "checkpoint.pt", weights_only=True)["attrs"]["model"])
    assert (tmp_path / "a" / "eval.csv").read_text() == (tmp_path / "b" / "eval.csv").read_text()
    assert states[0].keys() == states[1].keys()
    assert all(torch.equal(states[0][key], states[1][key]) for key in states[0])


# ------------------------------------------------------------------------------------------------ command line


def test_check_command_line_reformats_hydra_errors_to_one_line():
    for argv, message in [(["profile=huge"], "unknown profile 'huge'; valid: laptop, paper, tiny"),
                          (["-cn", "nope"], "unknown experiment 'nope'; valid: humanoid_hsd3, humanoid_hsdb, humanoid_sac"),
                          (["env.taks=1"], "unknown key 'env.taks'; valid keys under env: task, robot"),
                          (["env.task=["], "no viable alternative")]:
        with pytest.raises(SystemExit) as err:
            check_command_line(argv)
        assert message in str(err.value.code) and "\n" not in str(err.value.code)
    check_command_line(["-cn", "humanoid_sac", "profile=tiny", "hydra.run.dir=."])
    check_command_line(["-m", "seed=0,1"])  # sweeps are left to Hydra
    assert one_line(ValueError("first\n    full_key: x\nsecond")) == "first second"


def run_cli(cwd: Path, *overrides: str, wait: bool = True, flags: tuple[str, ...] = ()):
    command = [sys.executable, "-m", "hsd3_learn.train", *flags, "-cn", "walker_sac", "profile=tiny", "device=cpu",
               *overrides]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MUJOCO_GL": "egl", "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if not wait:
        return proc
    stdout, stderr = proc.communicate(timeout=120)
    return proc.returncode, stdout, stderr


def eval_samples(run_dir: Path) -> list[int]:
    return [int(row["samples"]) for row in EvalLog(run_dir / "eval.csv").rows()]


def counters(run_dir: Path) -> dict[str, int]:
    return torch.load(run_dir / "checkpoint.pt", weights_only=True)["counters"]


def test_cli_tiny_run_writes_its_files_and_a_rerun_resumes(tmp_path):
    rc, stdout, stderr = run_cli(tmp_path, "max_samples=500")
    assert rc == 0, stderr
    assert counters(tmp_path)["n_samples"] == 500 and eval_samples(tmp_path) == [0, 500]
    assert "samples/s" in stderr and "eval_score" in stderr  # the progress bar
    config = OmegaConf.load(tmp_path / "config.yaml")
    assert (config.seed, config.max_samples, config.agent.batch_size) == (0, 500, 32)
    assert len(list((tmp_path / "tb").glob("events.out.tfevents.*"))) == 1
    assert not (tmp_path / ".hydra").exists() and not list(tmp_path.glob("*.log"))
    updates = counters(tmp_path)["n_updates"]

    rc, stdout, stderr = run_cli(tmp_path)  # the tiny budget, 1000 samples
    assert rc == 0, stderr
    assert "resuming from checkpoint.pt at 500 samples" in stdout
    assert counters(tmp_path)["n_samples"] == 1000 and counters(tmp_path)["n_updates"] > updates
    assert eval_samples(tmp_path) == [0, 500, 1000]
    assert len(list((tmp_path / "tb").glob("events.out.tfevents.*"))) == 2

    rc, stdout, stderr = run_cli(tmp_path)  # the same command again: nothing left to do
    assert rc == 0, stderr
    assert "already has 1000 samples" in stdout and eval_samples(tmp_path) == [0, 500, 1000]


def test_cli_sigterm_checkpoints_and_a_rerun_finishes(tmp_path):
    proc = run_cli(tmp_path, "max_samples=3000", wait=False)
    deadline = time.monotonic() + 90
    while not (tmp_path / "checkpoint.pt").exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr
    assert "stopped by a signal" in stdout
    stopped_at = counters(tmp_path)["n_samples"]
    assert 250 <= stopped_at < 3000
    assert all(n <= stopped_at for n in eval_samples(tmp_path))

    rc, stdout, stderr = run_cli(tmp_path, "max_samples=3000")
    assert rc == 0, stderr
    assert counters(tmp_path)["n_samples"] == 3000
    assert eval_samples(tmp_path) == list(range(0, 3001, 500))


def test_cli_sweep_runs_each_job_in_its_own_directory(tmp_path):
    rc, stdout, stderr = run_cli(tmp_path, "max_samples=100", "seed=0,1", flags=("-m",))
    assert rc == 0, stderr
    for seed in (0, 1):
        job = tmp_path / "multirun" / "walker_sac" / f"device=cpu,max_samples=100,profile=tiny,seed={seed}"
        assert counters(job)["n_samples"] == 100 and eval_samples(job) == [0, 100]
        assert OmegaConf.load(job / "config.yaml").seed == seed
    assert not (tmp_path / "checkpoint.pt").exists()


@pytest.mark.parametrize("override, message", [
    ("env.task=Nope", "unknown task 'Nope'; valid tasks: Floor, Hurdles"),
    ("env.robot=cat", "unknown robot 'cat'; valid robots: walker"),
    ("agent.name=nope", "unknown agent 'nope'; valid agents:"),
    ("profile=huge", "unknown profile 'huge'; valid: laptop, paper, tiny"),
])
def test_cli_bad_names_fail_with_one_line_before_training(tmp_path, override, message):
    rc, stdout, stderr = run_cli(tmp_path, override)
    assert rc != 0
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0] and lines[0].startswith("hsd3_learn.train: error:"), stderr
    assert list(tmp_path.iterdir()) == []
