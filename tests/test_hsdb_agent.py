"""Tests for hsd3_learn.agents.hsdb: HSD-Bandit and SD on walker Hurdles with a tiny random skill: episode subsets,
the bandit's updates, greedy evaluation, the pure losses, learning and checkpoints."""

import math
from functools import partial

import numpy as np
import pytest
import torch
from gymnasium import spaces

from hsd3_learn.agents import AGENTS, make_agent
from hsd3_learn.agents.hsd3 import low_level_observation_space, make_hsd3_env, save_low_level
from hsd3_learn.agents.hsd3_math import masked_log_prob
from hsd3_learn.agents.hsdb import (BanditState, HSDBAgent, HSDBConfig, bandit_critic_loss, bandit_policy_loss,
                                    bandit_temperature_loss, sample_subgoals, sd_subsets)
from hsd3_learn.envs import FEATURE_DIMS, task_map
from hsd3_learn.envs.vector import TorchVectorEnv, make_vector_env
from hsd3_learn.models.bandits import Agent57Bandit, UniformBandit
from hsd3_learn.models.factory import make_model

LO_MODEL = {"name": "pi_d2rl_d_256", "n_layers": 1}
TASK_MAP = task_map(FEATURE_DIMS["walker"])
SUBSETS = ["0", "1", "3+4"]  # K = 3 arms
N_ENVS = 2
N_STEPS = 80


def small(name: str) -> dict:
    return {"name": name, "n_layers": 2}


def agent_cfg(lo_path, **overrides) -> dict:
    """A fast HSD-Bandit: small nets, short warm-up and random phase, a few updates per round."""
    return {"device": "cpu", "lo": {"init_from": str(lo_path)}, "batch_size": 16, "rpbuf_size": 1000,
            "warmup_samples": 20, "randexp_samples": 30, "samples_per_update": 10, "num_updates": 2,
            "pi_subgoal": small("pi_d2rl_mt_d_256"), "q": small("qd_d2rl_d_256"), **overrides}


@pytest.fixture(scope="module")
def lo_path(tmp_path_factory):
    """A tiny random walker skill over three subsets, saved with save_low_level."""
    torch.manual_seed(0)
    pi = make_model(LO_MODEL, low_level_observation_space("walker", TASK_MAP), spaces.Box(-1, 1, (6,), np.float32))
    path = tmp_path_factory.mktemp("lo") / "checkpoint-lo.pt"
    save_low_level(path, pi, "walker", SUBSETS, TASK_MAP, model=LO_MODEL)
    return path


@pytest.fixture(scope="module")
def env_spaces():
    env = make_hsd3_env("Hurdles", "walker")
    return env.observation_space, env.action_space


def make_venv() -> TorchVectorEnv:
    return TorchVectorEnv(make_vector_env([partial(make_hsd3_env, "Hurdles", "walker", ["reward_acc"])] * N_ENVS))


def record_bandit_updates(agent: HSDBAgent) -> list[tuple[int, float]]:
    """Wrap the agent's bandit so that every update is also appended to the returned list."""
    calls, update = [], agent.bandit.update

    def recording(action: int, reward: float) -> None:
        calls.append((action, reward))
        update(action, reward)

    agent.bandit.update = recording
    return calls


@pytest.fixture(scope="module")
def trained(lo_path, env_spaces):
    """A small HSD-Bandit trained for 80 steps of 2 walker Hurdles envs, passing the step info to observe."""
    torch.manual_seed(0)
    agent = HSDBAgent(*env_spaces, N_ENVS, agent_cfg(lo_path))
    calls = record_bandit_updates(agent)
    venv = make_venv()
    obs, _ = venv.reset(seed=0)
    records = []
    for _ in range(N_STEPS):
        action = agent.action(obs, explore=True)
        context = agent.last_context
        next_obs, reward, terminated, truncated, info = venv.step(action)
        metrics = agent.observe(obs, action, reward, terminated, truncated, info.get("final_obs", next_obs), info)
        records.append({"time": obs["time"][:, 0].clone(), "task": context.task.clone(), "reward": reward,
                        "done": terminated | truncated, "metrics": metrics})
        obs = next_obs
    return agent, records, calls, obs


def episodes(records: list[dict]) -> list[dict]:
    """Per env, the finished episodes in the order they ended: their subsets per step and return."""
    finished, current = [], [{"tasks": [], "return": 0.0} for _ in range(N_ENVS)]
    for record in records:
        for env in range(N_ENVS):
            current[env]["tasks"].append(int(record["task"][env]))
            current[env]["return"] += float(record["reward"][env])
            if record["done"][env]:
                finished.append(current[env])
                current[env] = {"tasks": [], "return": 0.0}
    return finished


# -------------------------------------------------------------------------------------------------- config and SD


def test_sd_subsets_is_one_subset_of_all_features():
    assert sd_subsets("walker") == ["0+1+2+3+4+5+6"]
    assert sd_subsets("humanoid") == ["0+2+3+4+6+7+8+9+10+11"]
    with pytest.raises(ValueError, match="no goal space for robot 'ant'"):
        sd_subsets("ant")


def test_config_defaults_are_walker_hsdb_and_bad_values_fail():
    cfg = HSDBConfig()
    assert (cfg.warmup_samples, cfg.randexp_samples, cfg.q, cfg.pi_subgoal) == (31_000, 31_000, "qd_d2rl_d_256",
                                                                                "pi_d2rl_mt_d_256")
    assert (cfg.lr_pi_subgoal, cfg.lr_q, cfg.action_interval, cfg.init_alpha_c) == (3e-4, 3e-4, 5, 1.0)
    assert (cfg.bandit, cfg.bandit_kwargs, cfg.subsets) == ("agent57", {"beta": "auto", "window": 500, "eps": 0.5},
                                                            None)
    with pytest.raises(ValueError, match="bandit 'ucb2' is unknown; valid bandits: uniform"):
        HSDBConfig(bandit="ucb2")
    with pytest.raises(ValueError, match="do not fit bandit 'uniform'.*bandit_kwargs: null"):
        HSDBConfig(bandit="uniform")
    with pytest.raises(ValueError, match="subsets must be None or a non-empty list"):
        HSDBConfig(subsets="0+1")
    with pytest.raises(ValueError, match="action_interval must be a positive int"):
        HSDBConfig(action_interval=0)


def test_sd_agent_has_one_subset_and_the_uniform_bandit(lo_path, env_spaces):
    assert AGENTS["hsdb"] is HSDBAgent
    agent = make_agent("hsdb", *env_spaces, 1, agent_cfg(lo_path, bandit="uniform", bandit_kwargs={},
                                                         subsets=sd_subsets("walker")))
    assert agent.iface.subsets == ["0+1+2+3+4+5+6"] and agent.iface.n_subsets == 1
    assert torch.equal(agent.iface.masks, torch.ones(1, 7)) and agent.log_alpha_c.shape == (1,)
    assert isinstance(agent.bandit, UniformBandit) and set(agent.optim) == {"pi_subgoal", "q", "alpha_c"}
    assert "pi_task" not in agent.model and agent.model.pi_subgoal.head.n_heads == 1


def test_hsdb_agent_reads_subsets_from_the_low_level(lo_path, env_spaces):
    agent = HSDBAgent(*env_spaces, N_ENVS, agent_cfg(lo_path))
    assert agent.iface.subsets == SUBSETS and isinstance(agent.bandit, Agent57Bandit)
    assert (agent.bandit.window, agent.bandit.eps, agent.bandit.beta_setting) == (500, 0.5, "auto")
    with pytest.raises(ValueError, match="pi_subgoal must be a multi-head policy"):
        HSDBAgent(*env_spaces, 1, agent_cfg(lo_path, pi_subgoal="pi_bilinear_d2rl_d_256"))


# ------------------------------------------------------------------------------------------------- pure losses


def test_critic_loss_by_hand_uses_the_stored_subset(lo_path, env_spaces):
    agent = HSDBAgent(*env_spaces, N_ENVS, agent_cfg(lo_path))
    gen = torch.Generator().manual_seed(1)
    obs = {k: torch.randn(5, *s.shape, generator=gen) for k, s in agent.iface.observation_space_hi.spaces.items()}
    next_obs = {**{k: torch.randn(5, *v.shape[1:], generator=gen) for k, v in obs.items()}, "time": torch.zeros(5, 1)}
    task, masks, alpha_c = torch.tensor([0, 1, 2, 2, 0]), agent.iface.masks, torch.tensor([0.5, 1.0, 2.0])
    batch = {**{f"obs/{k}": v for k, v in obs.items()}, **{f"next_obs/{k}": v for k, v in next_obs.items()},
             "task": task, "subgoal": torch.rand(5, 7) * masks[task],
             "reward": torch.tensor([0.0, 1.0, -1.0, 0.5, 0.0]), "discount": torch.tensor([0.99, 0.0, 0.5, 1.0, 0.9])}
    torch.manual_seed(3)
    dist = agent.model.pi_subgoal({**next_obs, "task": task})
    raw = dist.rsample()
    log_prob = masked_log_prob(dist.log_prob(raw), masks[task])
    next_q = agent.target_q(next_obs, {"task": task, "subgoal": raw * masks[task]}).min(dim=-1).values
    target = batch["reward"] + batch["discount"] * (next_q - alpha_c[task] * log_prob)
    q = agent.model.q(obs, {"task": task, "subgoal": batch["subgoal"]})
    torch.manual_seed(3)
    loss, info = bandit_critic_loss(batch, agent.model, agent.target_q, masks, alpha_c)
    torch.testing.assert_close(loss, ((q - target[:, None]) ** 2).mean(dim=0).sum())
    torch.testing.assert_close(info["target_mean"], target.mean())
    # The policy loss and the temperature: only the subsets in the batch move their alpha_c.
    torch.manual_seed(4)
    subgoal, log_prob = sample_subgoals(agent.model.pi_subgoal, obs, task, masks)
    assert torch.all(subgoal * (1 - masks[task]) == 0) and log_prob.shape == (5,)
    torch.manual_seed(4)
    loss_pi, info_pi = bandit_policy_loss(obs, task, agent.model.pi_subgoal, agent.model.q, masks, alpha_c)
    q_pi = agent.model.q(obs, {"task": task, "subgoal": subgoal}).min(dim=-1).values
    torch.testing.assert_close(loss_pi, (alpha_c[task] * log_prob - q_pi).mean())
    torch.testing.assert_close(info_pi["log_prob"], log_prob.detach())
    log_alpha = torch.zeros(3, requires_grad=True)
    loss_c, _ = bandit_temperature_loss(log_alpha, log_prob.detach(), torch.tensor([0, 0, 2, 2, 0]))
    loss_c.backward()
    assert log_alpha.grad[1] == 0 and log_alpha.grad[0] != 0 and log_alpha.grad[2] != 0
    torch.testing.assert_close(loss_c, ((-log_prob.detach() + 1.0) * 1.0).mean())


# ------------------------------------------------------------------------------------------ acting and learning


def test_subset_is_fixed_per_episode_and_first_episodes_cycle_the_arms(trained):
    agent, records, _, _ = trained
    finished = episodes(records)
    assert len(finished) >= 4  # the random skill falls: several episodes per env
    for episode in finished:
        assert len(set(episode["tasks"])) == 1, episode["tasks"]
    starts = [int(r["task"][env]) for t, r in enumerate(records) for env in range(N_ENVS)
              if t == 0 or records[t - 1]["done"][env]]
    assert starts[:3] == [0, 1, 2]  # arm i for the i-th training episode, then uniform
    assert agent.n_subset_draws == len(starts) and len(set(starts)) == 3


def test_bandit_gets_one_update_per_finished_episode_with_its_arm_and_return(trained):
    agent, records, calls, _ = trained
    finished = episodes(records)
    assert len(calls) == len(finished) == agent.bandit.t
    for (arm, reward), episode in zip(sorted(calls), sorted((e["tasks"][-1], e["return"]) for e in finished)):
        assert arm == episode[0] and reward == pytest.approx(episode[1], abs=1e-6)
    assert all(reward == pytest.approx(-1.0) for _, reward in calls)  # Hurdles: a fall pays -1, nothing else
    running = [float(agent.episode_return[env]) for env in range(N_ENVS)]
    assert running == pytest.approx([0.0, 0.0])  # no reward since the last falls


def test_tracked_returns_are_used_without_info(lo_path, env_spaces):
    agent = HSDBAgent(*env_spaces, N_ENVS, agent_cfg(lo_path, warmup_samples=1000))
    calls = record_bandit_updates(agent)
    obs = make_venv().reset(seed=1)[0]
    flags = torch.zeros(N_ENVS, dtype=torch.bool)
    for t in range(3):
        obs = {**obs, "time": torch.full((N_ENVS, 1), float(t))}
        action = agent.action(obs, explore=True)
        agent.observe(obs, action, torch.tensor([0.5, 1.0]), flags, torch.tensor([False, t == 2]), obs)
    assert calls == [(1, 3.0)] and agent.episode_return.tolist() == [1.5, 0.0]


def test_updates_run_with_finite_losses(trained):
    agent, records, _, _ = trained
    metrics = [r["metrics"] for r in records if r["metrics"]]
    assert agent.n_updates == 2 * len(metrics) > 0
    for name in ("train/loss_q", "train/loss_pi", "train/loss_alpha_c", "health/alpha_c", "health/q_pi",
                 "health/subgoal_entropy", "health/residual_variance", "health/grad_norm_pi_subgoal"):
        assert all(math.isfinite(m[name]) for m in metrics), name
    assert metrics[-1]["health/alpha_c"] != 1.0


def test_evaluation_plays_the_bandits_best_arm(trained):
    agent, _, _, obs = trained
    state = BanditState(agent.bandit).state_dict()
    for _ in range(3):
        agent.bandit.update(2, 5.0)
    assert agent.bandit.best_action() == 2
    fresh = {**obs, "time": torch.zeros(N_ENVS, 1)}
    agent.action(fresh, explore=False)
    context = agent.last_context
    assert context.task.tolist() == [2, 2]
    obs_hi = agent.iface.observation_hi(fresh, torch.zeros(N_ENVS))
    mean = agent.model.pi_subgoal({**obs_hi, "task": context.task}).mean * agent.iface.masks[2]
    torch.testing.assert_close(context.subgoal, mean)
    BanditState(agent.bandit).load_state_dict(state)  # leave the shared fixture as it was


def test_checkpoint_round_trip_restores_the_bandit_and_next_actions(trained, lo_path, env_spaces, tmp_path):
    agent, _, _, obs = trained
    agent.action(obs, explore=True)  # back on the training stream
    agent.save_checkpoint(tmp_path / "hsdb.pt")
    bandit = BanditState(agent.bandit).state_dict()
    starts = {**obs, "time": torch.tensor([[0.0], [1.0]])}  # env 0 starts a new episode: a new subset draw
    expected = [agent.action(starts, explore=True), agent.action({**obs, "time": obs["time"] + 2}, explore=True)]
    expected_tasks = agent.last_context.task.clone()
    restored = HSDBAgent(*env_spaces, N_ENVS, agent_cfg(lo_path))
    restored.load_checkpoint(tmp_path / "hsdb.pt")
    for key, value in BanditState(restored.bandit).state_dict().items():
        assert (torch.equal(value, bandit[key]) if isinstance(value, torch.Tensor) else value == bandit[key]), key
    assert restored.bandit.best_action() == agent.bandit.best_action() and restored.bandit.t > 0
    got = [restored.action(starts, explore=True), restored.action({**obs, "time": obs["time"] + 2}, explore=True)]
    for a, b in zip(expected, got):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert torch.equal(restored.last_context.task, expected_tasks)
    assert restored.n_subset_draws == agent.n_subset_draws
