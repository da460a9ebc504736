"""Tests for hsd3_learn.agents.sac and the agent registry: hand-computed losses, schedule, learning, checkpoints."""

import math
from functools import partial

import numpy as np
import pytest
import torch
from gymnasium import spaces
from torch import nn

from hsd3_learn.agents import AGENTS, SACAgent, SACConfig, make_agent
from hsd3_learn.agents.sac import actor_loss, critic_loss, critic_target, polyak_update, temperature_loss

OBS = spaces.Box(-1.0, 1.0, (3,), np.float32)
ACT = spaces.Box(-1.0, 1.0, (2,), np.float32)
SMALL = {"pi": {"name": "pi_d2rl_256", "n_layers": 2}, "q": {"name": "qd_d2rl_256", "n_layers": 2}}


def tiny_agent(num_envs: int = 2, obs_space=OBS, action_space=ACT, **overrides) -> SACAgent:
    """A fast SAC: small nets, short warm-up, a few updates per round."""
    cfg = {"device": "cpu", "batch_size": 16, "rpbuf_size": 256, "warmup_samples": 8, "randexp_samples": 8,
           "samples_per_update": 4, "num_updates": 2, **SMALL, **overrides}
    return SACAgent(obs_space, action_space, num_envs, cfg)


def step(agent: SACAgent, obs: torch.Tensor, reward: torch.Tensor | None = None,
         terminated: torch.Tensor | None = None, truncated: torch.Tensor | None = None) -> dict[str, float]:
    """One vector-env step with the agent's exploring action and the same next observation."""
    n = obs.shape[0]
    action = agent.action(obs, explore=True)
    reward = action[:, 0] if reward is None else reward
    terminated = torch.zeros(n, dtype=torch.bool) if terminated is None else terminated
    truncated = torch.zeros(n, dtype=torch.bool) if truncated is None else truncated
    return agent.observe(obs, action, reward, terminated, truncated, obs)


def params(module: nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in module.parameters()]


class FakeWriter:
    """Records ``add_scalar`` calls like a TensorBoard ``SummaryWriter`` would receive them."""

    def __init__(self) -> None:
        self.scalars: list[tuple[str, float, int]] = []

    def add_scalar(self, tag: str, value: float, step: int) -> None:
        self.scalars.append((tag, value, step))


# ------------------------------------------------------------------------------------------------ config


def test_config_defaults_are_walker_sac():
    cfg = SACConfig()
    assert (cfg.gamma, cfg.polyak, cfg.batch_size, cfg.rpbuf_size) == (0.99, 0.995, 256, 1_000_000)
    assert (cfg.samples_per_update, cfg.num_updates, cfg.warmup_samples, cfg.randexp_samples) == (50, 50, 1000, 1000)
    assert (cfg.init_alpha, cfg.lr_pi, cfg.lr_q, cfg.lr_alpha, cfg.clip_grad_norm) == (0.1, 3e-4, 3e-4, 1e-4, 0.0)
    assert (cfg.pi, cfg.q, cfg.target_entropy) == ("pi_d2rl_256", "qd_d2rl_256", None)


@pytest.mark.parametrize("field, value, message", [
    ("gamma", 1.5, r"gamma must lie in \[0, 1\]"),
    ("polyak", -0.1, r"polyak must lie in \[0, 1\]"),
    ("batch_size", 0, "batch_size must be a positive int"),
    ("num_updates", 2.5, "num_updates must be a positive int"),
    ("warmup_samples", -1, "warmup_samples must be a non-negative int"),
    ("init_alpha", 0.0, "init_alpha must be positive"),
    ("lr_q", -1e-3, "lr_q must be positive"),
    ("clip_grad_norm", -1.0, "clip_grad_norm must be >= 0"),
])
def test_config_rejects_bad_values(field, value, message):
    with pytest.raises(ValueError, match=message):
        SACConfig(**{field: value})


# ------------------------------------------------------------------------------------------------ pure losses


def test_critic_target_by_hand():
    # y0 = 1 + 0.5 * 1 * (4 - 0.5 * 2) = 2.5; y1 terminated: y1 = r1 = 2
    target = critic_target(torch.tensor([1.0, 2.0]), torch.tensor([True, False]), 0.5, torch.tensor([4.0, 100.0]),
                           torch.tensor([2.0, 7.0]), 0.5)
    assert torch.equal(target, torch.tensor([2.5, 2.0]))
    with pytest.raises(ValueError, match=r"reward and next_q_min must both be \[B\]; got \(2,\) and \(2, 1\)"):
        critic_target(torch.zeros(2), torch.ones(2), 0.9, torch.zeros(2, 1), torch.zeros(2), 0.1)


def test_critic_loss_and_health_by_hand():
    q = torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]], requires_grad=True)
    target = torch.tensor([0.0, 3.0, 3.0])
    loss, info = critic_loss(q, target)
    # residuals target - q: critic 0 (-1, 0, -2), critic 1 (-2, -1, -3); MSEs 5/3 and 14/3
    assert loss.item() == pytest.approx(19 / 3)
    assert info["q_mean"].item() == pytest.approx(3.5) and info["target_mean"].item() == pytest.approx(2.0)
    # Var(residual) = 2/3 for both critics, Var(target) = 2
    assert info["residual_variance"].item() == pytest.approx(1 / 3)
    loss.backward()
    assert torch.allclose(q.grad, 2 * (q.detach() - target.unsqueeze(1)) / 3)
    assert all(not value.requires_grad for value in info.values())
    with pytest.raises(ValueError, match=r"q must be \[B, n_critics\] and target \[B\]; got \(3, 2\) and \(3, 1\)"):
        critic_loss(q, target.unsqueeze(1))


def test_actor_loss_by_hand():
    log_prob = torch.tensor([2.0, -4.0], requires_grad=True)
    q_min = torch.tensor([1.0, 3.0], requires_grad=True)
    loss, info = actor_loss(q_min, log_prob, 0.5)
    assert loss.item() == pytest.approx(-2.5)  # mean(0.5*2 - 1, 0.5*(-4) - 3) = mean(0, -5)
    assert info["entropy"].item() == pytest.approx(1.0)
    loss.backward()
    assert torch.equal(log_prob.grad, torch.tensor([0.25, 0.25]))  # alpha / B
    assert torch.equal(q_min.grad, torch.tensor([-0.5, -0.5]))  # -1 / B
    with pytest.raises(ValueError, match=r"q_min and log_prob must both be \[B\]"):
        actor_loss(torch.zeros(2, 1), torch.zeros(2), 0.1)


def test_temperature_loss_by_hand():
    log_alpha = torch.tensor(math.log(2.0), requires_grad=True)
    log_prob = torch.tensor([1.0, 3.0], requires_grad=True)
    loss, info = temperature_loss(log_alpha, log_prob, target_entropy=-1.0)
    assert loss.item() == pytest.approx(-2.0)  # -2 * mean(1 - 1, 3 - 1)
    assert info["alpha"].item() == pytest.approx(2.0)
    loss.backward()
    assert log_alpha.grad.item() == pytest.approx(-2.0)  # entropy below target -> raise alpha
    assert log_prob.grad is None
    with pytest.raises(ValueError, match="log_alpha must be 0-d and log_prob"):
        temperature_loss(torch.zeros(1), torch.zeros(2), -1.0)


def test_polyak_update_exact():
    target, source = nn.Linear(1, 2), nn.Linear(1, 2)
    with torch.no_grad():
        target.weight.copy_(torch.tensor([[1.0], [2.0]]))
        target.bias.copy_(torch.tensor([0.0, -4.0]))
        source.weight.copy_(torch.tensor([[3.0], [6.0]]))
        source.bias.copy_(torch.tensor([4.0, 4.0]))
    polyak_update(target, source, 0.75)
    assert torch.equal(target.weight, torch.tensor([[1.5], [3.0]]))
    assert torch.equal(target.bias, torch.tensor([1.0, -2.0]))
    assert torch.equal(source.weight, torch.tensor([[3.0], [6.0]]))
    with pytest.raises(ValueError, match=r"polyak must lie in \[0, 1\]"):
        polyak_update(target, source, 1.5)
    with pytest.raises(ValueError, match="same shapes"):
        polyak_update(target, nn.Linear(2, 2), 0.5)


# ------------------------------------------------------------------------------------------------ construction


def test_registry_builds_sac_and_lists_valid_names():
    assert AGENTS["sac"] is SACAgent and set(AGENTS) >= {"sac", "sacmt", "hsd3"}
    agent = make_agent("sac", OBS, ACT, 2, {"device": "cpu", "rpbuf_size": 64, **SMALL})
    assert isinstance(agent, SACAgent) and agent.buffer.interleave == 2
    assert agent.target_entropy == -2.0 and agent.alpha.item() == pytest.approx(0.1)
    with pytest.raises(ValueError, match="unknown agent 'sca'; valid agents: .*sac"):
        make_agent("sca", OBS, ACT)


def test_constructor_rejects_bad_spaces_models_and_env_counts():
    with pytest.raises(ValueError, match="needs a 1-D Box action space"):
        tiny_agent(action_space=spaces.Discrete(3))
    with pytest.raises(ValueError, match="needs finite action bounds"):
        tiny_agent(action_space=spaces.Box(-np.inf, np.inf, (2,)))
    with pytest.raises(ValueError, match=r"q must be a fused double critic returning \[B, 2\]"):
        tiny_agent(q="q_d2rl_256")
    with pytest.raises(ValueError, match="num_envs must be a positive int"):
        tiny_agent(num_envs=0)
    with pytest.raises(ValueError, match="unknown keys"):
        SACAgent(OBS, ACT, 1, {"lr": 1e-3})


# ------------------------------------------------------------------------------------------------ acting


def test_random_exploration_then_policy_samples_within_asymmetric_bounds():
    bounds = spaces.Box(np.array([0.0, -2.0], np.float32), np.array([1.0, 2.0], np.float32))
    low, width = torch.tensor([0.0, -2.0]), torch.tensor([1.0, 4.0])
    agent = tiny_agent(num_envs=512, action_space=bounds, randexp_samples=512, rpbuf_size=1024)
    obs = torch.zeros(512, 3)
    torch.manual_seed(5)
    uniform = agent.action(obs, explore=True)
    torch.manual_seed(5)
    assert torch.allclose(uniform, low + width * torch.rand(512, 2), atol=1e-6)
    assert uniform.shape == (512, 2) and (uniform >= low).all() and (uniform <= low + width).all()
    step(agent, obs)
    assert agent.n_samples == 512  # exploration phase over: actions now come from the policy
    torch.manual_seed(5)
    sampled = agent.action(obs, explore=True)
    torch.manual_seed(5)
    assert torch.allclose(sampled, low + width * (agent.model.pi(obs).sample() + 1) / 2, atol=1e-6)
    assert (sampled > low).all() and (sampled < low + width).all()


def test_deterministic_action_is_tanh_of_the_mean_even_while_exploring_randomly():
    bounds = spaces.Box(np.array([0.0, -2.0], np.float32), np.array([1.0, 2.0], np.float32))
    agent = tiny_agent(action_space=bounds)
    obs = torch.randn(2, 3)
    assert agent.n_samples < agent.cfg.randexp_samples
    action = agent.action(obs, explore=False)
    expected = torch.tanh(agent.model.pi(obs).loc) * torch.tensor([0.5, 2.0]) + torch.tensor([0.5, 0.0])
    assert torch.allclose(action, expected)
    assert torch.equal(agent.action(obs, explore=False), action)


def test_dict_observations_are_flattened_in_key_order():
    obs_space = spaces.Dict({"b": spaces.Box(-1, 1, (2,)), "a": spaces.Box(-1, 1, (1,))})
    agent = tiny_agent(obs_space=obs_space)
    obs = {"a": torch.tensor([[1.0], [2.0]]), "b": torch.tensor([[3.0, 4.0], [5.0, 6.0]])}
    assert torch.equal(agent.flatten_obs(obs), torch.tensor([[1.0, 3.0, 4.0], [2.0, 5.0, 6.0]]))
    assert agent.action(obs, explore=True).shape == (2, 2)


# ------------------------------------------------------------------------------------------------ learning


def test_update_schedule_warmup_then_every_samples_per_update():
    agent = tiny_agent(num_envs=2, warmup_samples=6, samples_per_update=4, num_updates=3)
    obs = torch.zeros(2, 3)
    history = []
    for _ in range(9):
        metrics = step(agent, obs)
        history.append((agent.n_samples, agent.n_updates, bool(metrics)))
    # first round once 6 transitions are stored, then every 4 samples
    assert history == [(2, 0, False), (4, 0, False), (6, 3, True), (8, 3, False), (10, 6, True), (12, 6, False),
                       (14, 9, True), (16, 9, False), (18, 12, True)]
    assert agent.n_steps == 9


def test_observe_stores_truncation_as_non_terminal_and_returns_mean_metrics():
    agent = tiny_agent(num_envs=2, warmup_samples=4, samples_per_update=4)
    agent.writer = FakeWriter()
    step(agent, torch.zeros(2, 3), terminated=torch.tensor([True, False]), truncated=torch.tensor([False, True]))
    metrics = step(agent, torch.ones(2, 3), reward=torch.tensor([1.0, 2.0]))
    stored = agent.buffer.get_batch_back(4)
    assert stored["terminated"].tolist() == [True, False, False, False]
    assert stored["reward"][2:].tolist() == [1.0, 2.0] and stored["obs"].shape == (4, 3)
    assert set(metrics) == {"train/loss_q", "train/loss_pi", "train/loss_alpha", "health/q_mean",
                            "health/target_mean", "health/residual_variance", "health/entropy", "health/alpha",
                            "health/grad_norm_q", "health/grad_norm_pi"}
    assert all(isinstance(value, float) and math.isfinite(value) for value in metrics.values())
    assert agent.writer.scalars == [(tag, value, 4) for tag, value in metrics.items()]


def test_same_seed_twice_gives_the_same_training_run():
    def run() -> tuple[list[torch.Tensor], dict[str, float]]:
        torch.manual_seed(7)
        agent = tiny_agent(warmup_samples=4, randexp_samples=4)
        metrics = {}
        for t in range(6):
            metrics = step(agent, torch.full((2, 3), t / 6)) or metrics
        return params(agent.model), metrics

    (params_a, metrics_a), (params_b, metrics_b) = run(), run()
    assert metrics_a == metrics_b and all(torch.equal(a, b) for a, b in zip(params_a, params_b))


def test_observe_rejects_wrong_shapes():
    agent = tiny_agent(num_envs=2)
    obs, flags = torch.zeros(2, 3), torch.zeros(2, dtype=torch.bool)
    with pytest.raises(ValueError, match=r"action must be \[N=2, A=2\]; got \(2, 1\)"):
        agent.observe(obs, torch.zeros(2, 1), torch.zeros(2), flags, flags, obs)
    with pytest.raises(ValueError, match=r"reward must be \[N=2\]; got \(2, 1\)"):
        agent.observe(obs, torch.zeros(2, 2), torch.zeros(2, 1), flags, flags, obs)


def filled_agent(**overrides) -> SACAgent:
    agent = tiny_agent(warmup_samples=1000, **overrides)  # no automatic updates
    for _ in range(8):
        step(agent, torch.randn(2, 3), terminated=torch.rand(2) < 0.3)
    return agent


def test_target_network_changes_only_through_polyak():
    agent = filled_agent(polyak=0.75)
    with torch.no_grad():  # make the critic's output layer non-zero so that the average is visible
        for p in agent.model.q.parameters():
            p.add_(0.01 * torch.randn_like(p))
    old_target = params(agent.target_q)
    batch = agent.buffer.get_batch(16)
    agent._critic_step(batch)
    agent._actor_step(batch["obs"])
    assert all(torch.equal(a, b) for a, b in zip(old_target, params(agent.target_q)))
    agent.update()
    for old, new, source in zip(old_target, params(agent.target_q), params(agent.model.q)):
        assert torch.allclose(new, 0.75 * old + 0.25 * source)
    assert all(not p.requires_grad for p in agent.target_q.parameters())


def test_actor_step_gives_no_gradient_to_critic_or_target_and_critic_step_none_to_policy():
    agent = filled_agent()
    batch = agent.buffer.get_batch(16)
    q_before = params(agent.model.q)
    agent._actor_step(batch["obs"])
    assert all(p.grad is None for p in agent.model.q.parameters())
    assert all(p.grad is None for p in agent.target_q.parameters())
    assert all(p.grad is not None for p in agent.model.pi.parameters())
    assert all(torch.equal(a, b) for a, b in zip(q_before, params(agent.model.q)))
    assert all(p.requires_grad for p in agent.model.q.parameters())  # unfrozen afterwards
    agent.optim["pi"].zero_grad()
    agent._critic_step(batch)
    assert all(p.grad is None for p in agent.model.pi.parameters())
    assert all(p.grad is None for p in agent.target_q.parameters())


def test_clip_grad_norm_bounds_the_gradient_and_reports_the_unclipped_norm():
    agent = filled_agent(clip_grad_norm=1e-3)
    metrics = agent._critic_step(agent.buffer.get_batch(16))
    grads = [p.grad for p in agent.model.q.parameters()]
    assert torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads])) <= 1e-3 * 1.0001
    assert metrics["health/grad_norm_q"] > 1e-3


def test_temperature_rises_when_entropy_is_below_target():
    agent = filled_agent(target_entropy=100.0, lr_alpha=0.1)
    before = agent.alpha.item()
    agent.update()
    assert agent.alpha.item() > before


def test_sac_pushes_a_bandit_action_towards_plus_one():
    """One-step episodes with reward = first action dim: SAC must learn to push that dim to +1."""
    agent = tiny_agent(num_envs=8, action_space=spaces.Box(-1, 1, (1,)), batch_size=32, rpbuf_size=4096,
                       warmup_samples=64, randexp_samples=64, samples_per_update=8, num_updates=8)
    probe = torch.randn(16, 3)
    start = agent.action(probe, explore=False).mean().item()
    done = torch.ones(8, dtype=torch.bool)
    while agent.n_updates < 160:
        step(agent, torch.randn(8, 3), terminated=done)
    final = agent.action(probe, explore=False)
    assert start < 0.5 and final.min().item() > 0.8


# ------------------------------------------------------------------------------------------------ checkpoints


def test_checkpoint_round_trip_gives_identical_agents(tmp_path):
    agent = tiny_agent(warmup_samples=8, samples_per_update=4, num_updates=2, randexp_samples=0)
    for _ in range(6):
        step(agent, torch.randn(2, 3))
    assert agent.n_updates == 4
    agent.save_checkpoint(tmp_path / "sac.pt")
    saved_log_alpha = agent.log_alpha.detach().clone()
    obs = torch.ones(2, 3)  # drawn from no generator: the RNG is still in its saved state
    expected_action = agent.action(obs, explore=True)
    expected_metrics = agent.update()

    torch.manual_seed(123)
    fresh = tiny_agent(warmup_samples=8, samples_per_update=4, num_updates=2, randexp_samples=0)
    fresh.load_checkpoint(tmp_path / "sac.pt")
    assert (fresh.n_samples, fresh.n_steps, fresh.n_updates, fresh._samples_since_update) == (12, 6, 4, 0)
    assert torch.equal(fresh.log_alpha, saved_log_alpha) and len(fresh.buffer) == 12
    assert torch.equal(fresh.action(obs, explore=True), expected_action)
    metrics = fresh.update()
    assert all(torch.equal(metrics[key], expected_metrics[key]) for key in metrics)
    for name in ("model", "target_q"):
        for (key, a), b in zip(getattr(agent, name).state_dict().items(), getattr(fresh, name).state_dict().values()):
            assert torch.equal(a, b), f"{name}.{key}"
    for name in ("pi", "q", "alpha"):
        a, b = agent.optim[name].state_dict()["state"], fresh.optim[name].state_dict()["state"]
        assert all(torch.equal(a[i][k], b[i][k]) for i in a for k in a[i])


def test_checkpoint_without_buffer_and_corrupt_file(tmp_path):
    agent = filled_agent()
    agent.save_checkpoint(tmp_path / "small.pt", include_buffer=False)
    fresh = tiny_agent()
    fresh.load_checkpoint(tmp_path / "small.pt")
    assert len(fresh.buffer) == 0 and fresh.n_samples == 16
    data = (tmp_path / "small.pt").read_bytes()
    (tmp_path / "bad.pt").write_bytes(data[:100])
    with pytest.raises(ValueError, match="truncated or not a torch file"):
        fresh.load_checkpoint(tmp_path / "bad.pt")


def test_train_and_eval_switch_all_networks():
    agent = tiny_agent()
    agent.eval()
    assert not agent.model.training and not agent.model.pi.training and not agent.target_q.training
    agent.train()
    assert agent.model.q.training and agent.target_q.training


# ------------------------------------------------------------------------------------------------ real env


def test_runs_on_walker_hurdles_dict_observations():
    import envs
    from hsd3_learn.envs.vector import TorchVectorEnv, make_vector_env

    venv = TorchVectorEnv(make_vector_env([partial(envs.make, "Hurdles", "walker")] * 2))
    agent = tiny_agent(num_envs=2, obs_space=venv.single_observation_space, action_space=venv.single_action_space,
                       warmup_samples=8, randexp_samples=4, samples_per_update=4, num_updates=1)
    obs, _ = venv.reset(seed=0)
    logged = []
    for _ in range(6):
        action = agent.action(obs, explore=True)
        assert action.shape == (2, 6) and action.abs().max() <= 1
        next_obs, reward, terminated, truncated, info = venv.step(action)
        metrics = agent.observe(obs, action, reward, terminated, truncated, info.get("final_obs", next_obs))
        logged.append(bool(metrics))
        obs = next_obs
    venv.close()
    assert logged == [False, False, False, True, False, True] and agent.n_updates == 2
    assert agent.buffer.get_batch(4)["obs"].shape == (4, 63)  # next_hurdle (3) + observation (60)
    assert all(math.isfinite(v) for v in metrics.values())
