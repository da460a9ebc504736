"""Tests for hsd3_learn.spirl.agents and hsd3_learn.spirl.skill_critic: configs, observations, squashing, the KL and temperature losses, hand-checked
high- and low-level targets, high-level transitions (early close, truncation), Skill-Critic's stored k, checkpoints,
and short act/observe loops of every agent on a scripted fake vector env and on the real walker."""

import math

import numpy as np
import pytest
import torch
from gymnasium import spaces
from torch import distributions as D

from hsd3_learn.agents.base import make_config
from hsd3_learn.agents.sac import critic_target, temperature_loss
from hsd3_learn.spirl.agents import (STATS_KEYS, DoubleCritic, NoPriorAgent, NoPriorConfig, SkillAgentConfig,
                                     SkillSpaceAgent, SkillTransitions, SPiRLAgent, SPiRLConfig, agent_observation,
                                     divergence_temperature_loss, prior_initialised_net, skill_state, squash,
                                     squashed_log_prob)
from hsd3_learn.spirl.data import DatasetStats
from hsd3_learn.spirl.models import Predictor, make_skill_model, save_skill_model
from hsd3_learn.spirl.skill_critic import SkillCriticAgent, SkillCriticConfig, low_level_target

S, A, H, NZ = 5, 3, 4, 2  # skill state, actions, skill length, latent dims
N_JOINTS = S + 1  # the env's joints observation: the skill state plus a world x at index 1
KEPT = [0, 2, 3, 4, 5]
N_ENVS = 2
OBS_SPACE = spaces.Dict({"next_hurdle": spaces.Box(-np.inf, np.inf, (2,), np.float32),
                         "observation": spaces.Box(-np.inf, np.inf, (N_JOINTS,), np.float32),
                         "time": spaces.Box(0.0, np.inf, (1,), np.float32)})
ACTION_SPACE = spaces.Box(-1.0, 1.0, (A,), np.float32)
OBS_DIM = S + 2
AGENTS = {"no_prior": (NoPriorAgent, "spirl"), "spirl": (SPiRLAgent, "spirl"), "spirl_cl": (SPiRLAgent, "spirl_cl"),
          "skill_critic": (SkillCriticAgent, "skill_critic")}


def skill_stats() -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(5)
    return {"obs_mean": torch.randn(S, generator=gen), "obs_std": torch.rand(S, generator=gen) + 0.5,
            "kept_observation_entries": torch.tensor(KEPT)}


@pytest.fixture(scope="module")
def skill_paths(tmp_path_factory):
    """One tiny skill model per kind (S 5, A 3, H 4, nz 2), saved with the normalisation and kept entries."""
    directory = tmp_path_factory.mktemp("skills")
    paths = {}
    for kind in ("spirl", "spirl_cl", "skill_critic"):
        torch.manual_seed(1)
        cfg = dict(state_dim=S, action_dim=A, H=H, nz=NZ, nz_enc=8, nz_mid=16, n_layers=1, lstm_width=8,
                   prior_layers=1, prior_width=16)
        model = make_skill_model(kind, cfg)
        paths[kind] = directory / f"{kind}.pt"
        save_skill_model(paths[kind], model, kind, model.cfg, skill_stats())
    return paths


def small_cfg(path, **overrides) -> dict:
    return {"skill_model": str(path), "device": "cpu", "batch_size": 8, "rpbuf_size": 1000, "warmup_samples": 0,
            "q_width": 16, "q_layers": 1, **overrides}


def make(name: str, skill_paths, **overrides) -> SkillSpaceAgent:
    cls, kind = AGENTS[name]
    extra = {"pi_width": 16, "pi_layers": 1, "randexp_samples": 0} if cls is NoPriorAgent else {}
    if cls is SkillCriticAgent:
        extra = {"ll_batch_size": 8, "ll_rpbuf_size": 1000, "warm_start_samples": 0}
    return cls(OBS_SPACE, ACTION_SPACE, N_ENVS, small_cfg(skill_paths[kind], **{**extra, **overrides}))


class FakeVectorEnv:
    """N scripted envs with same-step auto-reset: reward = the episode's step count after the step, a time limit of
    ``episode_steps`` and, per env, an optional step at which its first episode terminates."""

    def __init__(self, episode_steps: int = 6, terminate_at: dict[int, int] | None = None, seed: int = 0) -> None:
        self.gen = torch.Generator().manual_seed(seed)
        self.episode_steps = episode_steps
        self.terminate_at = dict(terminate_at or {})
        self.t = torch.zeros(N_ENVS, dtype=torch.long)

    def _obs(self) -> dict[str, torch.Tensor]:
        return {"next_hurdle": torch.randn(N_ENVS, 2, generator=self.gen),
                "observation": torch.randn(N_ENVS, N_JOINTS, generator=self.gen),
                "time": self.t.float()[:, None].clone()}

    def reset(self) -> dict[str, torch.Tensor]:
        self.t.zero_()
        return self._obs()

    def step(self, action: torch.Tensor):
        assert action.shape == (N_ENVS, A) and action.abs().max() <= 1.0
        self.t += 1
        reward = self.t.float()
        terminated = torch.tensor([self.terminate_at.get(i) == int(self.t[i]) for i in range(N_ENVS)])
        truncated = (self.t >= self.episode_steps) & ~terminated
        final = self._obs()
        ended = terminated | truncated
        for i in ended.nonzero().flatten().tolist():
            self.terminate_at.pop(i, None)
        self.t[ended] = 0
        fresh = self._obs()
        obs = {key: torch.where(ended.view(-1, *[1] * (v.ndim - 1)), fresh[key], v) for key, v in final.items()}
        return obs, reward, terminated, truncated, {"final_obs": final} if ended.any() else {}


def run(agent: SkillSpaceAgent, env: FakeVectorEnv, obs, n_steps: int, log: list | None = None):
    """``n_steps`` exploring steps as hsd3_learn.training.train_step does them; optionally logs each step.
    Returns the next observation and the metrics of the last step that updated."""
    metrics = {}
    for _ in range(n_steps):
        action = agent.action(obs, explore=True)
        context = agent.contexts.streams["explore"]
        next_obs, reward, terminated, truncated, info = env.step(action)
        final = info.get("final_obs", next_obs)
        metrics = agent.observe(obs, action, reward, terminated, truncated, final, info) or metrics
        if log is not None:
            log.append({"obs": obs, "final": final, "context": context, "action": action})
        obs = next_obs
    return obs, metrics


def constant_critic(critic: DoubleCritic, value: float) -> None:
    """Both Q heads output ``value`` everywhere."""
    with torch.no_grad():
        for net in critic.nets:
            net.net[-1].weight.zero_()
            net.net[-1].bias.fill_(value)


def perturb(module: torch.nn.Module, scale: float, seed: int = 3) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn(p.shape, generator=gen))


# --------------------------------------------------------------------------------------------------------------
# Configs and construction


def test_config_defaults_follow_the_spec_and_bad_values_fail():
    cfg = SPiRLConfig()
    assert (cfg.gamma, cfg.polyak, cfg.batch_size, cfg.lr_pi, cfg.lr_q, cfg.lr_alpha) == (0.99, 0.995, 256, 3e-4,
                                                                                          3e-4, 3e-4)
    assert (cfg.warmup_samples, cfg.randexp_samples, cfg.init_log_alpha, cfg.max_action_range) == (5000, 0, 0.0, 2.0)
    assert (cfg.q_width, cfg.q_layers, cfg.n_mc_samples, cfg.updates_per_transition) == (256, 5, 10, 1)
    assert 1.0 <= cfg.target_divergence <= 5.0
    assert NoPriorConfig().randexp_samples == 5000 and NoPriorConfig().target_entropy is None
    sc = SkillCriticConfig()
    assert (sc.ll_log_sigma_offset, sc.ll_target_divergence, sc.ll_gamma) == (-3.0, 100.0, 0.99)
    for cls, bad in ((SkillAgentConfig, {"gamma": 1.5}), (SPiRLConfig, {"n_mc_samples": 0}),
                     (NoPriorConfig, {"pi_layers": -1}), (SkillCriticConfig, {"ll_batch_size": 0}),
                     (SkillCriticConfig, {"warm_start_samples": -1}), (SPiRLConfig, {"lr_q": 0.0})):
        with pytest.raises(ValueError, match=f"{cls.__name__}.{next(iter(bad))}"):
            cls(**bad)
    with pytest.raises(ValueError, match="unknown keys"):
        make_config(SPiRLConfig, {"target_kl": 1.0})


def test_construction_errors_are_one_line(skill_paths):
    with pytest.raises(ValueError, match="needs skill_model"):
        SPiRLAgent(OBS_SPACE, ACTION_SPACE, N_ENVS, {"device": "cpu"})
    no_time = spaces.Dict({"observation": OBS_SPACE["observation"]})
    with pytest.raises(ValueError, match="'time'"):
        SPiRLAgent(no_time, ACTION_SPACE, N_ENVS, small_cfg(skill_paths["spirl"]))
    interval = spaces.Dict({**OBS_SPACE.spaces, "time": spaces.Box(0.0, 4.0, (1,), np.float32)})
    with pytest.raises(ValueError, match="without an interval"):
        SPiRLAgent(interval, ACTION_SPACE, N_ENVS, small_cfg(skill_paths["spirl"]))
    too_small = spaces.Dict({**OBS_SPACE.spaces, "observation": spaces.Box(-1, 1, (4,), np.float32)})
    with pytest.raises(ValueError, match="kept_observation_entries"):
        SPiRLAgent(too_small, ACTION_SPACE, N_ENVS, small_cfg(skill_paths["spirl"]))
    with pytest.raises(ValueError, match="needs a 'skill_critic' skill model"):
        SkillCriticAgent(OBS_SPACE, ACTION_SPACE, N_ENVS, small_cfg(skill_paths["spirl_cl"]))
    with pytest.raises(ValueError, match="action space of 3 dims"):
        SPiRLAgent(OBS_SPACE, spaces.Box(-1, 1, (6,), np.float32), N_ENVS, small_cfg(skill_paths["spirl"]))
    with pytest.raises(ValueError, match="num_envs"):
        SPiRLAgent(OBS_SPACE, ACTION_SPACE, 0, small_cfg(skill_paths["spirl"]))
    with pytest.raises(TypeError):
        SkillSpaceAgent(OBS_SPACE, ACTION_SPACE, N_ENVS, small_cfg(skill_paths["spirl"]))  # abstract
    discrete = spaces.Dict({**OBS_SPACE.spaces, "mode": spaces.Discrete(3)})
    with pytest.raises(ValueError, match="Box entries only"):
        SPiRLAgent(discrete, ACTION_SPACE, N_ENVS, small_cfg(skill_paths["spirl"]))


def test_a_skill_model_without_stats_reads_the_observation_as_is(tmp_path):
    model = make_skill_model("spirl_cl", dict(state_dim=N_JOINTS, action_dim=A, H=H, nz=NZ, nz_enc=8, nz_mid=16,
                                              n_layers=1, lstm_width=8, prior_layers=1, prior_width=16))
    save_skill_model(tmp_path / "plain.pt", model, "spirl_cl", model.cfg)
    agent = SPiRLAgent(OBS_SPACE, ACTION_SPACE, N_ENVS, small_cfg(tmp_path / "plain.pt"))
    obs = FakeVectorEnv().reset()
    assert agent.stats is None and agent.kept_entries.tolist() == list(range(N_JOINTS))
    expected = torch.cat([obs["observation"], obs["next_hurdle"]], dim=-1)
    torch.testing.assert_close(agent.agent_observation(obs), expected)


def test_agent_observation_is_the_normalised_kept_state_then_the_task_features(skill_paths):
    agent = make("spirl", skill_paths)
    obs = FakeVectorEnv().reset()
    stats = skill_stats()
    state = (obs["observation"][:, KEPT] - stats["obs_mean"]) / stats["obs_std"]
    expected = torch.cat([state, obs["next_hurdle"]], dim=-1)
    torch.testing.assert_close(agent.agent_observation(obs), expected)
    dataset_stats = DatasetStats(stats["obs_mean"].numpy(), stats["obs_std"].numpy(), {})
    torch.testing.assert_close(skill_state(obs["observation"], torch.tensor(KEPT), dataset_stats), state)
    torch.testing.assert_close(skill_state(obs["observation"], torch.tensor(KEPT), None), obs["observation"][:, KEPT])
    torch.testing.assert_close(agent_observation(obs, torch.tensor(KEPT), dataset_stats, ["next_hurdle"]), expected)
    assert agent.obs_dim == OBS_DIM and agent.task_keys == ["next_hurdle"]
    assert set(STATS_KEYS) == set(skill_stats())


# --------------------------------------------------------------------------------------------------------------
# Policies, divergences and losses


def test_squashed_log_prob_is_the_density_of_z():
    base = D.Normal(torch.randn(4, 3), torch.rand(4, 3) + 0.3)
    u = base.sample() * 2
    z = squash(u, 2.0)
    assert z.abs().max() < 2.0
    torch.testing.assert_close(z, 2.0 * torch.tanh(u / 2.0))
    small = torch.tensor([1e-3, -1e-3])
    torch.testing.assert_close(squash(small, 2.0), small, atol=1e-9, rtol=1e-6)  # slope 1: the prior's draws pass
    reference = D.TransformedDistribution(base, [D.AffineTransform(0.0, 0.5), D.TanhTransform(),
                                                 D.AffineTransform(0.0, 2.0)])
    expected = reference.log_prob(z).sum(-1)
    torch.testing.assert_close(squashed_log_prob(D.Independent(base, 1), u, 2.0), expected, atol=1e-4, rtol=1e-4)
    assert torch.isfinite(squashed_log_prob(D.Independent(base, 1), torch.full((4, 3), 30.0), 2.0)).all()


def test_spirl_policy_starts_as_the_prior_and_sees_the_task_features(skill_paths):
    agent = make("spirl", skill_paths)
    x = agent.agent_observation(FakeVectorEnv().reset())
    policy, prior = agent.policy(x), agent.skill.model.prior(x[:, :S])
    torch.testing.assert_close(policy.mean, prior.mean)
    torch.testing.assert_close(policy.stddev, prior.stddev)
    assert all(p.requires_grad for p in agent.policy.parameters())
    assert not any(p.requires_grad for p in agent.skill.model.parameters())
    widened = prior_initialised_net(Predictor(S, 4, 8, 1), 2)
    assert widened.net[0].in_features == S + 2 and torch.all(widened.net[0].weight[:, S:] == 0)
    features = x.clone()
    features[:, S:] += 1.0
    perturb(agent.policy.net.net[0], 0.1)  # once trained, the task features matter
    assert not torch.allclose(agent.policy(x).mean, agent.policy(features).mean)


def test_spirl_divergence_is_the_kl_to_the_prior(skill_paths):
    agent = make("spirl", skill_paths, n_mc_samples=20000)
    perturb(agent.policy.net.net[-1], 0.3)
    x = agent.agent_observation(FakeVectorEnv().reset())
    dist = agent.policy(x)
    analytic = D.kl_divergence(dist.base_dist, agent.skill.model.prior(x[:, :S]).base_dist).sum(-1)
    assert analytic.min() > 0.1
    estimate = agent.divergence(x, dist, dist.rsample())
    torch.testing.assert_close(estimate, analytic, atol=0.05, rtol=0.03)
    estimate.sum().backward()
    assert agent.policy.net.net[-1].weight.grad.abs().sum() > 0  # the MC estimate keeps the policy's gradient


def test_no_prior_divergence_is_the_log_density_and_the_target_is_minus_the_target_entropy(skill_paths):
    agent = make("no_prior", skill_paths)
    x = agent.agent_observation(FakeVectorEnv().reset())
    dist = agent.policy(x)
    u = dist.sample()
    torch.testing.assert_close(agent.divergence(x, dist, u), squashed_log_prob(dist, u, 2.0))
    assert agent.target_divergence == NZ
    assert make("no_prior", skill_paths, target_entropy=-1.5).target_divergence == 1.5


def test_divergence_temperature_loss_moves_alpha_towards_the_target():
    for divergence, direction in ((torch.tensor([4.0, 6.0]), 1.0), (torch.tensor([0.5, 1.5]), -1.0)):
        log_alpha = torch.tensor(0.0, requires_grad=True)
        optim = torch.optim.Adam([log_alpha], lr=0.1)
        loss, info = divergence_temperature_loss(log_alpha, divergence, 3.0)
        assert info["alpha"] == 1.0 and loss.item() == pytest.approx(3.0 - divergence.mean().item())
        loss.backward()
        optim.step()
        assert math.copysign(1.0, log_alpha.item()) == direction
    # with D = log pi and delta = -target entropy it is SAC's temperature loss, value and gradient
    log_prob, log_alpha = torch.tensor([-1.0, 0.5, 2.0]), torch.tensor(0.3, requires_grad=True)
    ours, _ = divergence_temperature_loss(log_alpha, log_prob, 2.0)
    sacs, _ = temperature_loss(log_alpha, log_prob, -2.0)
    torch.testing.assert_close(ours, sacs)
    assert torch.autograd.grad(ours, log_alpha)[0] == torch.autograd.grad(sacs, log_alpha)[0]
    with pytest.raises(ValueError, match="divergence \\[B\\]"):
        divergence_temperature_loss(log_alpha, log_prob[None], 2.0)


def test_high_level_target_by_hand(skill_paths):
    # the pure form: y = R + gamma * (1 - d) * (min Q' - alpha * D)
    y = critic_target(torch.tensor([1.0, 2.0]), torch.tensor([True, False]), 0.5, torch.tensor([3.0, 4.0]),
                      torch.tensor([1.0, 1.0]), 2.0)
    torch.testing.assert_close(y, torch.tensor([1.5, 2.0]))
    agent = make("spirl", skill_paths, n_mc_samples=20000)
    constant_critic(agent.target_q, 5.0)
    with torch.no_grad():
        agent.log_alpha.fill_(math.log(0.5))
    batch = {"reward": torch.tensor([1.0, -2.0, 0.5]), "terminated": torch.tensor([False, True, False]),
             "next_obs": torch.randn(3, OBS_DIM)}
    # at the start the policy is the prior: D = 0 and y = R + gamma (1 - d) * 5
    torch.testing.assert_close(agent.high_level_target(batch), torch.tensor([1.0 + 0.99 * 5, -2.0, 0.5 + 0.99 * 5]),
                               atol=1e-4, rtol=0)
    perturb(agent.policy.net.net[-1], 0.3)
    with torch.no_grad():
        dist = agent.policy(batch["next_obs"])
        kl = D.kl_divergence(dist.base_dist, agent.skill.model.prior(batch["next_obs"][:, :S]).base_dist).sum(-1)
    expected = batch["reward"] + 0.99 * (~batch["terminated"]) * (5.0 - 0.5 * kl)
    torch.testing.assert_close(agent.high_level_target(batch), expected, atol=0.03, rtol=0.01)


def test_low_level_target_by_hand():
    reward, not_done = torch.tensor([1.0, 1.0, 2.0, 0.0]), torch.tensor([True, True, False, True])
    boundary = torch.tensor([False, True, True, False])
    y = low_level_target(reward, not_done, 0.5, boundary, torch.full((4,), 10.0), torch.full((4,), -4.0),
                         torch.tensor([1.0, 2.0, 3.0, 4.0]), 0.5)
    torch.testing.assert_close(y, torch.tensor([1 + 0.5 * (10 - 0.5), 1 + 0.5 * (-4 - 1.0), 2.0, 0.5 * (10 - 2.0)]))
    with pytest.raises(ValueError, match="boundary"):
        low_level_target(reward, not_done, 0.5, boundary[:2], reward, reward, reward, 0.5)


def test_skill_critic_target_uses_the_high_level_value_exactly_at_k_zero(skill_paths):
    agent = make("skill_critic", skill_paths, ll_gamma=0.9, n_mc_samples=5000)
    constant_critic(agent.ll_target_q, 10.0)
    constant_critic(agent.target_q, -4.0)
    k = torch.tensor([0, 1, H - 2, H - 1, H - 1])
    batch = {"reward": torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0]), "terminated": torch.tensor([False] * 4 + [True]),
             "next_obs": torch.randn(5, OBS_DIM), "z": torch.randn(5, NZ), "k": k}
    # pi_L starts as the frozen decoder: D_L = 0; k' = 0 only for the rows with k = H - 1
    expected = torch.tensor([1 + 0.9 * 10, 2 + 0.9 * 10, 3 + 0.9 * 10, 4 + 0.9 * -4, 5.0])
    torch.testing.assert_close(agent.low_level_critic_target(batch), expected)
    perturb(agent.ll_policy.decoder.net[-1], 0.02)
    with torch.no_grad():
        agent.log_alpha_ll.fill_(math.log(0.1))
        next_k, state = (k + 1) % H, batch["next_obs"][:, :S]
        kl = D.kl_divergence(agent.ll_policy(state, batch["z"], next_k).base_dist,
                             agent.ll_reference(state, batch["z"], next_k).base_dist).sum(-1)
    assert kl.min() > 0.5
    expected = expected - 0.9 * 0.1 * kl * (~batch["terminated"])
    torch.testing.assert_close(agent.low_level_critic_target(batch), expected, atol=0.05, rtol=0.02)


# --------------------------------------------------------------------------------------------------------------
# Acting and transitions


def test_high_level_transitions_sum_the_skills_rewards_and_close_at_episode_ends(skill_paths):
    # H = 4, time limit 6; env 1's first episode terminates at its step 3
    agent = make("spirl", skill_paths, warmup_samples=10**6)
    env, log = FakeVectorEnv(episode_steps=6, terminate_at={1: 3}), []
    run(agent, env, env.reset(), 10, log)
    since = torch.stack([entry["context"].since for entry in log])
    assert since[:, 0].tolist() == [0, 1, 2, 3, 0, 1, 0, 1, 2, 3]
    assert since[:, 1].tolist() == [0, 1, 2, 0, 1, 2, 3, 0, 1, 0]
    rows = agent.buffer.get_batch_back(len(agent.buffer))
    # (closing step, env, reward sum, terminated, decision step): sorted by closing step, then env
    expected = [(2, 1, 6.0, True, 0), (3, 0, 10.0, False, 0), (5, 0, 11.0, False, 4), (6, 1, 10.0, False, 3),
                (8, 1, 11.0, False, 7), (9, 0, 10.0, False, 6)]
    assert len(agent.buffer) == len(expected)
    for row, (step, env_index, reward, terminated, start) in enumerate(expected):
        assert rows["reward"][row].item() == reward and rows["terminated"][row].item() == terminated
        torch.testing.assert_close(rows["z"][row], log[start]["context"].z[env_index])
        torch.testing.assert_close(rows["obs"][row], agent.agent_observation(log[start]["obs"])[env_index])
        torch.testing.assert_close(rows["next_obs"][row], agent.agent_observation(log[step]["final"])[env_index])
    # the truncated skills (closing steps 5 and 8) bootstrap from the final observation: not terminal
    assert log[5]["final"]["time"][0].item() == 6 and not rows["terminated"][2]


def test_skill_transitions_staging_alone():
    staging = SkillTransitions(torch.device("cpu"))
    obs, z = torch.arange(4.0).view(2, 2), torch.ones(2, 1)
    none = torch.tensor([False, False])
    assert staging.push(torch.tensor([True, True]), obs, z, torch.tensor([1.0, 2.0]), obs, none, none) is None
    rows = staging.push(none, obs + 10, z * 3, torch.tensor([3.0, 4.0]), obs + 20, torch.tensor([False, True]),
                        torch.tensor([False, True]))
    assert rows["reward"].tolist() == [6.0] and rows["terminated"].tolist() == [True]
    torch.testing.assert_close(rows["obs"], obs[1:])
    torch.testing.assert_close(rows["next_obs"], obs[1:] + 20)
    torch.testing.assert_close(rows["z"], z[1:])
    copy = SkillTransitions(torch.device("cpu"))
    copy.load_state_dict(staging.state_dict())
    torch.testing.assert_close(copy.reward_sum, torch.tensor([4.0, 6.0]))


def test_v1_plays_its_open_loop_plan_and_cl_decodes_each_step(skill_paths):
    for name in ("spirl", "spirl_cl"):
        agent = make(name, skill_paths, warmup_samples=10**6)
        env, log = FakeVectorEnv(episode_steps=50), []
        run(agent, env, env.reset(), H, log)
        z = log[0]["context"].z
        model = agent.skill.model
        for k, entry in enumerate(log):
            torch.testing.assert_close(entry["context"].z, z)
            if name == "spirl":
                expected = model.decode_plan(z)[:, k]
            else:
                expected = model.decode_step(agent.agent_observation(entry["obs"])[:, :S], z)
            torch.testing.assert_close(entry["action"], expected.clamp(-1, 1))


def test_greedy_acting_is_deterministic_and_leaves_the_training_skills_alone(skill_paths):
    agent = make("spirl_cl", skill_paths, warmup_samples=10**6)
    env = FakeVectorEnv(episode_steps=50)
    obs, _ = run(agent, env, env.reset(), 2)
    explore = agent.contexts.streams["explore"]
    eval_obs = FakeVectorEnv(seed=9).reset()
    first, second = agent.action(eval_obs, explore=False), agent.action(eval_obs, explore=False)
    torch.testing.assert_close(agent.contexts.streams["greedy"].z, squash(agent.policy(
        agent.agent_observation(eval_obs)).mean, 2.0))
    torch.testing.assert_close(first, second)  # time 0 again: a new (greedy, same) skill
    assert agent.contexts.streams["explore"] is explore
    run(agent, env, obs, 1)
    assert agent.contexts.streams["explore"].since.tolist() == [2, 2]


def test_randexp_draws_uniform_skills(skill_paths):
    agent = make("no_prior", skill_paths, randexp_samples=100, warmup_samples=10**6)
    agent.action(FakeVectorEnv().reset(), explore=True)
    z = agent.contexts.streams["explore"].z
    assert z.abs().max() <= 2.0
    x = agent.agent_observation(FakeVectorEnv().reset())
    assert not torch.allclose(z.abs(), squash(agent.policy(x).mean, 2.0).abs())


def test_skill_critic_stores_the_k_and_the_unclipped_action_it_acted_with(skill_paths):
    agent = make("skill_critic", skill_paths, warmup_samples=10**6)
    with torch.no_grad():
        agent.ll_policy.decoder.net[-1].bias[:A] += 3.0  # means beyond the bounds: clipping shows
    env, log = FakeVectorEnv(episode_steps=6, terminate_at={1: 3}), []
    run(agent, env, env.reset(), 7, log)
    rows = agent.ll_buffer.get_batch_back(len(agent.ll_buffer))
    acted_k = torch.stack([entry["context"].since for entry in log]).flatten()
    assert rows["k"].tolist() == acted_k.tolist()
    assert acted_k.view(7, 2)[:, 1].tolist() == [0, 1, 2, 0, 1, 2, 3]  # a new skill after the terminal
    raw = torch.stack([entry["context"].action for entry in log]).flatten(0, 1)
    torch.testing.assert_close(rows["action"], raw)
    assert raw.max() > 1.0 and torch.stack([e["action"] for e in log]).max() <= 1.0
    assert rows["terminated"].view(7, 2)[2].tolist() == [False, True]


def test_observe_requires_an_exploring_action_and_checks_shapes(skill_paths):
    agent = make("spirl", skill_paths)
    obs = FakeVectorEnv().reset()
    step = (torch.zeros(N_ENVS), torch.zeros(N_ENVS, dtype=torch.bool), torch.zeros(N_ENVS, dtype=torch.bool))
    with pytest.raises(ValueError, match="preceding action"):
        agent.observe(obs, torch.zeros(N_ENVS, A), *step, obs)
    agent.action(obs, explore=True)
    with pytest.raises(ValueError, match="action must be"):
        agent.observe(obs, torch.zeros(N_ENVS, A + 1), *step, obs)
    with pytest.raises(ValueError, match="reward must be"):
        agent.observe(obs, torch.zeros(N_ENVS, A), torch.zeros(3), *step[1:], obs)


# --------------------------------------------------------------------------------------------------------------
# Learning and checkpoints


@pytest.mark.parametrize("name", list(AGENTS))
def test_short_loop_learns_and_checkpoints_round_trip(name, skill_paths, tmp_path):
    agent = make(name, skill_paths, warmup_samples=8)
    policy_before = [p.clone() for p in agent.policy.parameters()]
    env = FakeVectorEnv(episode_steps=7, terminate_at={0: 5})
    _, metrics = run(agent, env, env.reset(), 14)
    assert agent.n_samples == 28 and agent.n_updates > 0
    for key in ("train/loss_q", "train/loss_pi", "train/loss_alpha", "health/alpha", "health/q_mean"):
        assert math.isfinite(metrics[key])
    assert ("health/entropy" if name == "no_prior" else "health/kl_prior") in metrics
    assert any(not torch.equal(a, b) for a, b in zip(policy_before, agent.policy.parameters()))
    path = tmp_path / "checkpoint.pt"
    agent.save_checkpoint(path)
    obs = env.reset()
    expected = agent.action(obs, explore=True)
    fresh = make(name, skill_paths, warmup_samples=8)
    fresh.load_checkpoint(path)
    torch.testing.assert_close(fresh.action(obs, explore=True), expected)
    assert (fresh.n_samples, fresh.n_updates, len(fresh.buffer)) == (agent.n_samples, agent.n_updates,
                                                                     len(agent.buffer))


def test_skill_critic_stages(skill_paths):
    agent = make("skill_critic", skill_paths, warmup_samples=4, warm_start_samples=20)
    ll_policy, ll_q = [[p.clone() for p in m.parameters()] for m in (agent.ll_policy, agent.ll_q)]
    env = FakeVectorEnv(episode_steps=50)
    obs, metrics = run(agent, env, env.reset(), 9)
    assert agent.stage == "warm_start" and agent.n_updates > 0
    assert "train/loss_q_ll" in metrics and "train/loss_pi_ll" not in metrics
    assert all(torch.equal(a, b) for a, b in zip(ll_policy, agent.ll_policy.parameters()))
    assert any(not torch.equal(a, b) for a, b in zip(ll_q, agent.ll_q.parameters()))
    assert agent.log_alpha_ll.item() == 0.0
    agent.action(obs, explore=True)  # warm start: the LL acts with its mean
    context = agent.contexts.streams["explore"]
    x = agent.agent_observation(obs)
    torch.testing.assert_close(context.action, agent.ll_policy(x[:, :S], context.z, context.since).mean)
    _, metrics = run(agent, env, obs, 9)
    assert agent.stage == "hybrid"
    for key in ("train/loss_pi_ll", "train/loss_alpha_ll", "health/kl_decoder", "health/alpha_ll"):
        assert math.isfinite(metrics[key])
    assert any(not torch.equal(a, b) for a, b in zip(ll_policy, agent.ll_policy.parameters()))
    assert agent.log_alpha_ll.item() != 0.0


def test_same_seed_twice_gives_the_same_run(skill_paths):
    results = []
    for _ in range(2):
        torch.manual_seed(4)
        agent = make("spirl", skill_paths, warmup_samples=4)
        env = FakeVectorEnv(episode_steps=5)
        run(agent, env, env.reset(), 10)
        results.append(torch.cat([p.flatten() for p in agent.policy.parameters()]))
    torch.testing.assert_close(results[0], results[1], rtol=0, atol=0)


def test_real_walker_floor_with_two_envs(tmp_path):
    from hsd3_learn.envs.pretraining import PretrainingEnv
    from hsd3_learn.envs.vector import TorchVectorEnv, make_vector_env
    from hsd3_learn.envs.wrappers import make_env
    from hsd3_learn.training import EpisodeStats, train_step

    kept = torch.as_tensor(PretrainingEnv("walker").kept_observation_entries)
    model = make_skill_model("spirl_cl", dict(state_dim=59, action_dim=6, H=H, nz=NZ, nz_enc=8, nz_mid=16,
                                              n_layers=1, lstm_width=8, prior_layers=1, prior_width=16))
    path = tmp_path / "walker_skill.pt"
    save_skill_model(path, model, "spirl_cl", model.cfg, {"obs_mean": torch.zeros(59), "obs_std": torch.ones(59),
                                                          "kept_observation_entries": kept})
    envs = TorchVectorEnv(make_vector_env([lambda: make_env("Floor", "walker", ["time"])] * 2))
    try:
        agent = SPiRLAgent(envs.single_observation_space, envs.single_action_space, 2,
                           small_cfg(path, warmup_samples=8))
        assert agent.obs_dim == 59 and agent.kept_entries.tolist() == kept.tolist()
        obs, _ = envs.reset(seed=0)
        episodes = EpisodeStats(2)
        for _ in range(12):
            obs = train_step(agent, envs, obs, episodes)
        assert agent.n_samples == 24 and len(agent.buffer) >= 4 and agent.n_updates > 0
    finally:
        envs.close()


def test_skill_critic_low_level_buffer_holds_whole_vector_steps(skill_paths):
    cfg = small_cfg(skill_paths["skill_critic"], ll_batch_size=8, ll_rpbuf_size=1000, warm_start_samples=0)
    agent = SkillCriticAgent(OBS_SPACE, ACTION_SPACE, 3, cfg)  # 1000 is no multiple of 3 envs
    assert agent.ll_buffer.capacity == 1002
