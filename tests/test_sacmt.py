"""Tests for hsd3_learn.agents.sacmt: hand-computed losses, step flags, bootstrapping, per-task alphas, schedule,
checkpoints, and a short run on the real walker PretrainingEnv."""

import math
from functools import partial

import numpy as np
import pytest
import torch
from gymnasium import spaces
from torch import nn

from hsd3_learn.agents import AGENTS, make_agent
from hsd3_learn.agents.sac import temperature_loss
from hsd3_learn.agents.sacmt import (SACMTAgent, SACMTConfig, per_task_temperature_loss, reachability_loss,
                                     reachability_target, step_flags, task_ids)
from hsd3_learn.envs.pretraining import PretrainingEnv
from hsd3_learn.envs.vector import TorchVectorEnv, make_vector_env

N_TASK = 3
OBS = spaces.Dict({
    "desired_goal": spaces.Box(-np.inf, np.inf, (N_TASK,), np.float32),
    "gs_observation": spaces.Box(-np.inf, np.inf, (N_TASK,), np.float32),
    "observation": spaces.Box(-np.inf, np.inf, (4,), np.float32),
    "task": spaces.Box(0.0, 1.0, (N_TASK,), np.float32),
})
ACT = spaces.Box(-1.0, 1.0, (2,), np.float32)
SMALL = {"pi": {"name": "pi_d2rl_d_256", "n_layers": 2}, "q": {"name": "qd_d2rl_d_256", "n_layers": 2},
         "reachability": {"name": "q_d2rl_d_256", "n_layers": 2}}
MASKS = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 1.0]])


def tiny_agent(num_envs: int = 2, obs_space=OBS, **overrides) -> SACMTAgent:
    """A fast SAC-MT: small nets, short warm-up, a few updates per round."""
    cfg = {"device": "cpu", "batch_size": 16, "rpbuf_size": 256, "warmup_samples": 8, "randexp_samples": 8,
           "samples_per_update": 4, "num_updates": 2, **SMALL, **overrides}
    return SACMTAgent(obs_space, ACT, num_envs, cfg)


def fake_obs(n: int = 2, task: torch.Tensor = MASKS, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"desired_goal": torch.randn(n, N_TASK, generator=g) * task[:n],
            "gs_observation": torch.randn(n, N_TASK, generator=g),
            "observation": torch.randn(n, 4, generator=g), "task": task[:n].clone()}


def fake_info(n: int = 2, reached=None, last=None, time=None) -> dict[str, np.ndarray]:
    """A gymnasium vector info without ended envs."""
    info = {"reached_goal": np.array(reached if reached is not None else [False] * n),
            "last_step_of_task": np.array(last if last is not None else [False] * n),
            "time": np.array(time if time is not None else [1] * n)}
    return {**info, **{f"_{k}": np.ones(n, bool) for k in info}}


def step(agent: SACMTAgent, obs: dict, terminated=None, truncated=None, info=None, next_obs=None) -> dict:
    """One vector-env step with the agent's exploring action; reward = first action entry."""
    n = agent.num_envs
    action = agent.action(obs, explore=True)
    terminated = torch.zeros(n, dtype=torch.bool) if terminated is None else torch.tensor(terminated)
    truncated = torch.zeros(n, dtype=torch.bool) if truncated is None else torch.tensor(truncated)
    return agent.observe(obs, action, action[:, 0], terminated, truncated, obs if next_obs is None else next_obs,
                         fake_info(n) if info is None else info)


def fill(agent: SACMTAgent, n_steps: int) -> list[dict]:
    return [step(agent, fake_obs(agent.num_envs, seed=i)) for i in range(n_steps)]


# ------------------------------------------------------------------------------------------------ config


def test_config_defaults_are_walker_pretrain():
    cfg = SACMTConfig()
    assert cfg.gamma == pytest.approx(1 - 1 / 72) and cfg.polyak == 0.995
    assert (cfg.batch_size, cfg.rpbuf_size, cfg.samples_per_update, cfg.num_updates) == (256, 3_000_000, 1000, 50)
    assert (cfg.warmup_samples, cfg.randexp_samples, cfg.init_alpha, cfg.target_entropy) == (10_000, 10_000, 0.1, None)
    assert (cfg.lr_pi, cfg.lr_q, cfg.lr_reachability, cfg.lr_alpha, cfg.clip_grad_norm) == (1e-4, 1e-4, 1e-4, 1e-4, 0.0)
    assert (cfg.per_task_alpha, cfg.update_reachability) == (False, True)
    assert (cfg.pi, cfg.q, cfg.reachability) == ("pi_d2rl_d_1024", "qd_d2rl_d_1024", "q_d2rl_d_1024")


@pytest.mark.parametrize("field, value, message", [
    ("gamma", 1.5, r"gamma must lie in \[0, 1\]"),
    ("batch_size", 0, "batch_size must be a positive int"),
    ("warmup_samples", -1, "warmup_samples must be a non-negative int"),
    ("lr_reachability", 0.0, "lr_reachability must be positive"),
    ("clip_grad_norm", -1.0, "clip_grad_norm must be >= 0"),
    ("per_task_alpha", 1, "per_task_alpha must be a bool"),
])
def test_config_rejects_bad_values(field, value, message):
    with pytest.raises(ValueError, match=message):
        SACMTConfig(**{field: value})


# ------------------------------------------------------------------------------------------------ pure functions


def test_reachability_target_by_hand():
    reached = torch.tensor([1.0, 0.0, 0.0, 1.0])
    last = torch.tensor([True, False, True, False])
    next_r = torch.tensor([0.5, 0.25, 0.75, 2.0])
    # reached + (1 - last) * next_r: 1 + 0, 0 + 0.25, 0 + 0, 1 + 2 (no discount)
    assert torch.equal(reachability_target(reached, last, next_r), torch.tensor([1.0, 0.25, 0.0, 3.0]))
    with pytest.raises(ValueError, match="must both be"):
        reachability_target(reached, last[:3], next_r)


def test_reachability_loss_by_hand():
    r = torch.tensor([0.5, 1.0, 0.0], requires_grad=True)
    target = torch.tensor([1.0, 1.0, 0.5])
    loss, info = reachability_loss(r, target)
    assert loss.item() == pytest.approx((0.25 + 0.0 + 0.25) / 3)
    loss.backward()
    assert torch.allclose(r.grad, 2 * (r.detach() - target) / 3)
    assert info["reachability_mean"].item() == pytest.approx(0.5)
    assert info["reachability_target_mean"].item() == pytest.approx(2.5 / 3)
    with pytest.raises(ValueError, match="must both be"):
        reachability_loss(r.unsqueeze(1), target)


def test_task_ids_read_the_mask_as_a_binary_number():
    masks = torch.tensor([[0, 0, 0], [1, 0, 0], [0, 1, 1], [1, 1, 1], [0, 1, 1]], dtype=torch.float32)
    assert task_ids(masks).tolist() == [0, 1, 6, 7, 6]
    with pytest.raises(ValueError, match="T <= 16"):
        task_ids(torch.zeros(2, 17))


def test_per_task_temperature_loss_gives_each_present_task_its_own_gradient():
    log_alpha = torch.log(torch.tensor([0.1, 0.2, 0.4, 0.8])).requires_grad_()
    task_id = torch.tensor([1, 3, 1, 3, 3])
    log_prob = torch.tensor([-1.0, 2.0, -3.0, 0.0, 1.0])
    loss, info = per_task_temperature_loss(log_alpha, task_id, log_prob, target_entropy=-2.0)
    # task 1: -0.2 * mean(-1 - 2, -3 - 2) = 0.8; task 3: -0.8 * mean(0, -2, -1) = 0.8
    assert loss.item() == pytest.approx(0.8 + 0.8)
    loss.backward()
    assert log_alpha.grad.tolist() == pytest.approx([0.0, 0.8, 0.0, 0.8])  # d/dlog_alpha = loss term; 0 when absent
    assert info["alpha"].item() == pytest.approx(0.5)  # mean over the tasks present
    shared = torch.tensor([math.log(0.1)], requires_grad=True)
    loss_1, _ = per_task_temperature_loss(shared, torch.zeros(5, dtype=torch.long), log_prob, -2.0)
    loss_sac, _ = temperature_loss(shared[0], log_prob, -2.0)
    assert loss_1.item() == pytest.approx(loss_sac.item())


def test_step_flags_plain_and_with_same_step_final_info():
    plain = step_flags(fake_info(3, reached=[True, False, False], last=[True, False, True], time=[4, 0, 71]), 3)
    assert plain["reached_goal"].tolist() == [True, False, False]
    assert plain["last_step_of_task"].tolist() == [True, False, True]
    assert plain["start_state"].tolist() == [False, True, False]
    # env 1 ended: its entries in info are reset defaults, its step info lies in final_info
    info = fake_info(2, reached=[True, False], last=[True, False], time=[5, 0])
    info["_reached_goal"] = info["_time"] = np.array([True, False])
    info["final_info"] = {"reached_goal": np.array([False, False]), "last_step_of_task": np.array([False, True]),
                          "time": np.array([0, 71])}
    info["_final_info"] = np.array([False, True])
    merged = step_flags(info, 2)
    assert merged["last_step_of_task"].tolist() == [True, True] and merged["start_state"].tolist() == [False, False]
    # every env ended: the step keys exist only in final_info
    only_final = {"final_info": info["final_info"], "_final_info": np.array([True, True]),
                  "subset": np.array(["0", "1"])}
    assert step_flags(only_final, 2)["start_state"].tolist() == [True, False]
    with pytest.raises(ValueError, match="info lacks 'time'"):
        step_flags({"reached_goal": np.zeros(2), "last_step_of_task": np.zeros(2)}, 2)
    with pytest.raises(ValueError, match="one entry per env"):
        step_flags(fake_info(3), 2)


# ------------------------------------------------------------------------------------------------ construction


def test_registry_builds_sacmt_networks_that_ignore_gs_observation():
    assert AGENTS["sacmt"] is SACMTAgent
    agent = make_agent("sacmt", OBS, ACT, 2, {"device": "cpu", **SMALL})
    assert list(agent.net_obs_space.spaces) == ["desired_goal", "observation", "task"]
    assert set(agent.model) == {"pi", "q", "reachability"} and set(agent.target) == {"q", "reachability"}
    assert all(not p.requires_grad for p in agent.target.parameters())
    assert agent.log_alpha.shape == (1,) and agent.alpha.item() == pytest.approx(0.1)
    assert agent.target_entropy == -2.0
    obs = fake_obs()
    other = {**obs, "gs_observation": obs["gs_observation"] + 100.0}
    assert torch.equal(agent.action(obs, explore=False), agent.action(other, explore=False))


def test_constructor_rejects_bad_spaces_models_and_env_counts():
    with pytest.raises(ValueError, match="needs a Dict observation space"):
        tiny_agent(obs_space=spaces.Box(-1, 1, (3,)))
    no_task = spaces.Dict({k: v for k, v in OBS.spaces.items() if k != "task"})
    with pytest.raises(ValueError, match="needs a 'task' mask"):
        tiny_agent(obs_space=no_task)
    long_task = spaces.Dict({**OBS.spaces, "task": spaces.Box(0, 1, (17,))})
    with pytest.raises(ValueError, match="at most 16 entries"):
        tiny_agent(obs_space=long_task, per_task_alpha=True)
    with pytest.raises(ValueError, match=r"q must be a fused double critic"):
        tiny_agent(q={"name": "q_d2rl_d_256", "n_layers": 2})
    with pytest.raises(ValueError, match=r"reachability must be a single critic"):
        tiny_agent(reachability={"name": "qd_d2rl_d_256", "n_layers": 2})
    with pytest.raises(ValueError, match="num_envs must be a positive int"):
        tiny_agent(num_envs=0)
    with pytest.raises(ValueError, match="unknown keys"):
        tiny_agent(alpha=0.1)


def test_without_update_reachability_there_is_no_reachability_network():
    agent = tiny_agent(update_reachability=False)
    assert set(agent.model) == {"pi", "q"} and set(agent.target) == {"q"} and "reachability" not in agent.optim
    metrics = fill(agent, 4)[-1]
    assert metrics and not any("reachability" in name for name in metrics)


# ------------------------------------------------------------------------------------------------ storing


def test_falls_are_terminal_soft_resets_and_timeouts_are_not():
    agent = tiny_agent(num_envs=3, warmup_samples=1000, rpbuf_size=240)
    tasks = torch.tensor([[1.0, 0, 0], [0, 1, 1], [1, 1, 1]])
    obs, next_obs = fake_obs(3, tasks, seed=1), fake_obs(3, tasks.flip(0), seed=2)  # next goal after soft reset
    # env 0: soft reset after reaching its goal; env 1: truncated after the 100th goal; env 2: fell
    info = fake_info(3, reached=[True, False, False], last=[True, True, True], time=[3, 71, 0])
    step(agent, obs, terminated=[False, False, True], truncated=[False, True, False], info=info, next_obs=next_obs)
    row = agent.buffer.get_batch_back(3)
    assert row["not_done"].tolist() == [True, True, False]
    assert row["reached_goal"].tolist() == [True, False, False]
    assert row["last_step_of_task"].tolist() == [True, True, True]
    assert row["start_state"].tolist() == [False, False, True]
    assert torch.equal(row["next_obs_task"], next_obs["task"])  # stored as returned: the new goal's task
    assert torch.equal(row["obs_task"], obs["task"]) and torch.equal(row["gs_observation"], obs["gs_observation"])
    assert "next_obs_gs_observation" not in row


def test_observe_requires_info_and_checks_shapes():
    agent = tiny_agent()
    obs = fake_obs()
    action = agent.action(obs, explore=True)
    flags = torch.zeros(2, dtype=torch.bool)
    with pytest.raises(ValueError, match="needs the step's info"):
        agent.observe(obs, action, torch.zeros(2), flags, flags, obs)
    with pytest.raises(ValueError, match=r"action must be \[N=2, A=2\]"):
        agent.observe(obs, action[:1], torch.zeros(2), flags, flags, obs, fake_info())
    with pytest.raises(ValueError, match=r"terminated must be \[N=2\]"):
        agent.observe(obs, action, torch.zeros(2), flags[:1], flags, obs, fake_info())
    with pytest.raises(ValueError, match="observation lacks keys"):
        agent.action({"observation": obs["observation"]}, explore=False)


# ------------------------------------------------------------------------------------------------ learning


def test_update_schedule_warmup_then_every_samples_per_update():
    agent = tiny_agent(num_envs=2, warmup_samples=8, samples_per_update=6, num_updates=3)
    ran = [bool(m) for m in fill(agent, 10)]
    # samples: 2, 4, 6 (buffer < 8), 8 (8 since last update) -> update; then 14 and 20 (every 6)
    assert ran == [False, False, False, True, False, False, True, False, False, True]
    assert agent.n_updates == 9 and agent.n_samples == 20 and agent.n_steps == 10


def test_metrics_are_finite_and_namespaced():
    metrics = fill(tiny_agent(), 4)[-1]
    expected = {"train/loss_q", "train/loss_pi", "train/loss_alpha", "train/loss_reachability", "health/alpha",
                "health/entropy", "health/q_mean", "health/reachability_mean", "health/grad_norm_reachability"}
    assert expected <= set(metrics) and all(math.isfinite(v) for v in metrics.values())


def test_per_task_alpha_gives_one_alpha_per_distinct_task_mask():
    agent = tiny_agent(per_task_alpha=True, num_updates=5)
    assert agent.log_alpha.shape == (2 ** N_TASK,)
    init = agent.log_alpha[0].item()
    fill(agent, 4)
    seen = task_ids(MASKS).tolist()  # [1, 6]
    for k in range(2 ** N_TASK):
        assert (agent.log_alpha[k].item() != init) == (k in seen)
    assert torch.equal(agent.alpha_for(MASKS), agent.alpha[seen])
    shared = tiny_agent(num_updates=5)
    fill(shared, 4)
    assert torch.equal(shared.alpha_for(MASKS), shared.alpha.expand(2))


def test_reachability_learns_a_one_step_goal_and_targets_move_only_by_polyak():
    agent = tiny_agent(num_updates=1, lr_reachability=1e-3, polyak=0.5)
    always = fake_info(2, reached=[True, True], last=[True, True])  # target = 1 exactly
    obs = fake_obs()
    for _ in range(4):
        step(agent, obs, info=always)
    action = agent.buffer.get_batch_back(2)["action"]
    before = agent.model.reachability(agent.network_obs(obs), action).detach()
    target_before = [p.clone() for p in agent.target.reachability.parameters()]
    model_before = [p.clone() for p in agent.model.reachability.parameters()]
    agent.update()
    for t_old, m_old, t_new, m_new in zip(target_before, model_before, agent.target.reachability.parameters(),
                                          agent.model.reachability.parameters()):
        assert torch.allclose(t_new, 0.5 * t_old + 0.5 * m_new)
    for _ in range(60):
        agent.update()
    after = agent.model.reachability(agent.network_obs(obs), action).detach()
    assert (after - 1).abs().max() < 0.5 * (before - 1).abs().min()


def test_reachability_step_bootstraps_from_the_target_net_until_the_goal_ends(monkeypatch):
    import hsd3_learn.agents.sacmt as sacmt

    agent = tiny_agent(warmup_samples=1000)
    # env 0 reaches its goal and the goal ends; env 1 neither: targets 1 and Rbar(s', a')
    for _ in range(4):
        step(agent, fake_obs(), info=fake_info(2, reached=[True, False], last=[True, False]))
    with torch.no_grad():  # Rbar = 0.25 everywhere: zero weights, output bias 0.25
        for p in agent.target.reachability.parameters():
            p.zero_()
        agent.target.reachability.net[1].bias.fill_(0.25)
    calls = []

    def spy(reached_goal, last_step_of_task, next_reachability):
        target = reachability_target(reached_goal, last_step_of_task, next_reachability)
        calls.append((reached_goal, next_reachability, target))
        return target

    monkeypatch.setattr(sacmt, "reachability_target", spy)
    agent.update()
    (reached, next_r, target), = calls
    assert torch.allclose(next_r, torch.full_like(next_r, 0.25))
    assert torch.equal(target, torch.where(reached, 1.0, 0.25))


def test_same_seed_twice_gives_the_same_training_run():
    def run() -> list[dict]:
        torch.manual_seed(3)
        return fill(tiny_agent(per_task_alpha=True), 6)

    assert run() == run()


def test_checkpoint_round_trip_restores_every_module_optimizer_and_alpha(tmp_path):
    agent = tiny_agent(per_task_alpha=True)
    fill(agent, 6)
    path = tmp_path / "sacmt.pt"
    agent.save_checkpoint(path)
    torch.manual_seed(123)
    fresh = tiny_agent(per_task_alpha=True)
    fresh.load_checkpoint(path)
    for name in ("model", "target"):
        for (key, a), b in zip(getattr(agent, name).state_dict().items(), getattr(fresh, name).state_dict().values()):
            assert torch.equal(a, b), f"{name}.{key}"
    assert {"reachability", "q", "pi", "alpha"} == set(fresh.optim)
    for key in agent.optim:
        assert fresh.optim[key].state_dict()["state"].keys() == agent.optim[key].state_dict()["state"].keys()
        states = zip(agent.optim[key].state_dict()["state"].values(), fresh.optim[key].state_dict()["state"].values())
        assert all(torch.equal(a[k], b[k]) for a, b in states for k in a)
    assert torch.equal(fresh.log_alpha, agent.log_alpha)
    assert fresh.optim["alpha"].param_groups[0]["params"][0] is fresh.log_alpha  # loaded in place
    assert len(fresh.buffer) == len(agent.buffer)
    assert (fresh.n_updates, fresh.n_samples) == (agent.n_updates, agent.n_samples)
    # both continue identically (same RNG state, same buffer, same optimizer moments)
    torch.manual_seed(7)
    expected = agent.update()
    torch.manual_seed(7)
    assert {k: v.item() for k, v in fresh.update().items()} == {k: v.item() for k, v in expected.items()}


def test_train_and_eval_switch_all_networks():
    agent = tiny_agent()
    agent.eval()
    assert not any(m.training for m in agent.model.modules()) and not any(m.training for m in agent.target.modules())
    agent.train()
    assert all(m.training for m in agent.model.modules())


# ------------------------------------------------------------------------------------------------ real env


def test_runs_on_the_walker_pretraining_env_through_torch_vector_env():
    make = partial(PretrainingEnv, "walker", max_steps=4, hard_reset_interval=3)
    venv = TorchVectorEnv(make_vector_env([make] * 2))
    agent = SACMTAgent(venv.single_observation_space, venv.single_action_space, 2,
                       {"device": "cpu", "batch_size": 16, "rpbuf_size": 64, "warmup_samples": 16,
                        "randexp_samples": 8, "samples_per_update": 8, "num_updates": 2, **SMALL})
    obs, _ = venv.reset(seed=0)
    all_metrics, soft_resets = [], 0
    for _ in range(16):
        action = agent.action(obs, explore=True)
        next_obs, reward, terminated, truncated, info = venv.step(action)
        all_metrics.append(agent.observe(obs, action, reward, terminated, truncated, info.get("final_obs", next_obs),
                                         info))
        soft_resets += int(np.sum(info.get("SoftReset", 0)))
        obs = next_obs
    venv.close()
    metrics = [m for m in all_metrics if m]
    assert len(metrics) == 3 and agent.n_updates == 6
    assert all(math.isfinite(v) for m in metrics for v in m.values())
    rows = agent.buffer.get_batch_back(32)
    per_env = {key: rows[key].view(16, 2) for key in ("start_state", "last_step_of_task", "not_done")}
    # goals of 4 steps (nothing is reached or falls in 16 steps from rest): starts at steps 0, 4, 8, 12
    assert per_env["start_state"][:, 0].nonzero().flatten().tolist() == [0, 4, 8, 12]
    assert per_env["last_step_of_task"][:, 0].nonzero().flatten().tolist() == [3, 7, 11, 15]
    assert soft_resets > 0 and bool(per_env["not_done"].all())  # soft resets and the truncation after 3 goals
