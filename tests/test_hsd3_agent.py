"""Tests for hsd3_learn.agents.hsd3: low-level checkpoints, subset selection, the high-to-low interface (hand-checked
translations), the all-subset evaluation, and the HSD-3 agent acting and learning on walker Hurdles."""

import dataclasses
import json
import math
import shutil
from functools import partial

import numpy as np
import pytest
import torch
from gymnasium import spaces

import envs
from hsd3_learn.agents import AGENTS, make_agent
from hsd3_learn.agents.hsd3 import (GOAL_SPACE_KEY, HiToLoInterface, HSD3Agent, HSD3Config, LowLevelGoal,
                                    all_subgoal_heads, evaluate_subsets, high_level_critic_loss, load_low_level,
                                    low_level_observation_space, make_hsd3_env, q_all_subsets, save_low_level,
                                    select_subsets, side_file)
from hsd3_learn.agents.hsd3_math import critic_target, expected_policy_terms
from hsd3_learn.envs import FEATURE_DIMS, enumerate_subsets, task_map
from hsd3_learn.envs.vector import TorchVectorEnv, make_vector_env
from hsd3_learn.models.factory import make_model

LO_MODEL = {"name": "pi_d2rl_d_256", "n_layers": 1}
SUBSETS = enumerate_subsets(FEATURE_DIMS["walker"])  # 31
TASK_MAP = task_map(FEATURE_DIMS["walker"])  # identity over 7 features
CPERF = {s: 1.0 if len(s.split(",")) <= 2 else 0.5 for s in SUBSETS}  # 15 subsets of rank <= 2 are "controllable"
INTERVAL = 5
N_ENVS = 2
N_STEPS = 60


def small(name: str) -> dict:
    return {"name": name, "n_layers": 2}


def agent_cfg(lo_path, **overrides) -> dict:
    """A fast HSD-3: small nets, short warm-up and random phase, a few updates per round."""
    return {"device": "cpu", "lo": {"init_from": str(lo_path)}, "batch_size": 16, "rpbuf_size": 1000,
            "warmup_samples": 20, "randexp_samples": 30, "samples_per_update": 10, "num_updates": 2,
            "pi_task": small("pi_d2rl_discrete_d_256"), "pi_subgoal": small("pi_d2rl_mt_d_256"),
            "q": small("qd_d2rl_flattsg_d_256"), **overrides}


@pytest.fixture(scope="module")
def lo_path(tmp_path_factory):
    """A tiny random walker skill over all 31 subsets, saved with save_low_level."""
    torch.manual_seed(0)
    pi = make_model(LO_MODEL, low_level_observation_space("walker", TASK_MAP), spaces.Box(-1, 1, (6,), np.float32))
    path = tmp_path_factory.mktemp("lo") / "checkpoint-lo.pt"
    save_low_level(path, pi, "walker", SUBSETS, TASK_MAP, CPERF, model=LO_MODEL)
    return path


@pytest.fixture(scope="module")
def env_spaces():
    env = make_hsd3_env("Hurdles", "walker")
    return env.observation_space, env.action_space


def fake_obs(obs_space: spaces.Dict, n: int, seed: int = 0) -> dict:
    """Random observations of ``obs_space`` with time 0."""
    gen = torch.Generator().manual_seed(seed)
    obs = {k: torch.randn(n, *s.shape, generator=gen) for k, s in obs_space.spaces.items()}
    obs["time"] = torch.zeros(n, 1)
    return obs


# ------------------------------------------------------------------------------------------ low-level checkpoints


def test_low_level_checkpoint_round_trip_and_side_file(lo_path):
    info = json.loads(side_file(lo_path).read_text())
    assert side_file(lo_path).name == "checkpoint-lo_abs.json"
    assert info["subsets"] == SUBSETS and "0,3+4" in info["subsets"] and len(info["subsets"]) == 31
    assert info["task_map"] == {str(f): f for f in range(7)} and info["cperf"]["0,1,2"] == 0.5
    lo = load_low_level(lo_path)
    assert (lo.robot, lo.subsets, lo.task_map, lo.cperf, lo.model) == ("walker", SUBSETS, TASK_MAP, CPERF, LO_MODEL)
    assert not lo.pi.training and not any(p.requires_grad for p in lo.pi.parameters())
    torch.manual_seed(0)
    original = make_model(LO_MODEL, low_level_observation_space("walker", TASK_MAP), spaces.Box(-1, 1, (6,)))
    for (name, a), (_, b) in zip(original.state_dict().items(), lo.pi.state_dict().items()):
        assert torch.equal(a, b), name


def test_load_low_level_errors_are_one_line(lo_path, tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_low_level(tmp_path / "nothing.pt")
    lonely = tmp_path / "lonely.pt"
    shutil.copy(lo_path, lonely)
    with pytest.raises(FileNotFoundError, match="No goal space subsets selected.*lonely_abs.json"):
        load_low_level(lonely)
    with pytest.raises(ValueError, match="does not fit model.*unexpected keys"):
        load_low_level(lo_path, model={"name": "pi_d2rl_d_256", "n_layers": 2})
    with pytest.raises(ValueError, match="shape mismatches.*weight \\(256, 73\\) vs \\(512, 73\\)"):
        load_low_level(lo_path, model={"name": "pi_d2rl_d_512", "n_layers": 1})
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(2)}, foreign)
    shutil.copy(side_file(lo_path), side_file(foreign))
    with pytest.raises(ValueError, match="not a low-level checkpoint"):
        load_low_level(foreign)
    foreign.write_bytes(b"garbage")
    with pytest.raises(ValueError, match="cannot read low-level checkpoint"):
        load_low_level(foreign)


def test_save_low_level_rejects_bad_inputs(tmp_path):
    obs_space = low_level_observation_space("walker", TASK_MAP)
    pi = make_model(LO_MODEL, obs_space, spaces.Box(-1, 1, (6,)))
    with pytest.raises(ValueError, match="feature 9 of subset '9'"):
        save_low_level(tmp_path / "a.pt", pi, "walker", ["0", "9"], TASK_MAP)
    with pytest.raises(ValueError, match="cperf lacks the subsets \\['1'\\]"):
        save_low_level(tmp_path / "a.pt", pi, "walker", ["0", "1"], TASK_MAP, {"0": 1.0})
    with pytest.raises(ValueError, match="positions 0..T-1"):
        save_low_level(tmp_path / "a.pt", pi, "walker", ["0"], {0: 1})
    five_actions = make_model(LO_MODEL, obs_space, spaces.Box(-1, 1, (5,)))
    with pytest.raises(ValueError, match="actions \\[B, 6\\]"):
        save_low_level(tmp_path / "a.pt", five_actions, "walker", ["0"], TASK_MAP)
    with pytest.raises(ValueError, match="no goal space for robot 'halfcheetah'"):
        save_low_level(tmp_path / "a.pt", pi, "halfcheetah", ["0"], TASK_MAP)
    assert not list(tmp_path.iterdir())  # nothing half-written


def test_select_subsets_filters_by_controllability_and_rank_and_sorts():
    assert select_subsets(SUBSETS, CPERF, eps=1.0) == SUBSETS
    chosen = select_subsets(list(reversed(SUBSETS)), CPERF, eps=0.1)
    assert chosen[:6] == ["0", "1", "2", "3+4", "5+6", "0,1"] and len(chosen) == 15
    assert select_subsets(SUBSETS, None, rank_min=5) == ["0,1,2,3+4,5+6"]
    assert select_subsets(SUBSETS, CPERF, eps=1.0, rank_min=2, rank_max=2) == SUBSETS[5:15]
    with pytest.raises(ValueError, match="No goal space subsets selected.*>= 0.9.*rank in \\[3, 5\\]"):
        select_subsets(SUBSETS, CPERF, eps=0.1, rank_min=3, rank_max=5)


# ------------------------------------------------------------------------------------------------------ interface


@pytest.fixture(scope="module")
def iface(lo_path, env_spaces):
    return HiToLoInterface(env_spaces[0], load_low_level(lo_path), ["0", "1", "3+4"])


FEATURES = torch.tensor([[1.2, 2.0, 0.1, 0.1, -1.0, 0.2, -0.9]]).repeat(3, 1)  # rootz, rootx, rooty, feet


def translated(iface) -> LowLevelGoal:
    """Subsets {rootz}, {rootx (delta)}, {left foot} with subgoals 0.5, 0.5 and (0, -1)."""
    subgoal = torch.zeros(3, 7)
    subgoal[0, 0], subgoal[1, 1], subgoal[2, 3], subgoal[2, 4] = 0.5, 0.5, 0.0, -1.0
    subgoal[0, 5] = 0.9  # outside the subset: ignored
    return iface.translate(FEATURES, torch.tensor([0, 1, 2]), subgoal)


def test_interface_translation_by_hand(iface):
    goal = translated(iface)
    expected = torch.zeros(3, 7)
    expected[0, 0] = 0.95 + 0.75 * 0.55 - 1.2  # rootz: 0.5 of [0.95, 1.5] is 1.3625
    expected[1, 1] = 1.5  # rootx: 0.5 of [-3, 3] is 1.5 m ahead of where the robot is
    expected[2, 3], expected[2, 4] = -0.72 + 0.5 * 1.71 - 0.1, -1.3 - (-1.0)  # foot px 0.135, pz -1.3
    torch.testing.assert_close(goal.desired_goal, expected)
    torch.testing.assert_close(goal.task, torch.tensor([[1.0, 0, 0, 0, 0, 0, 0], [0, 1, 0, 0, 0, 0, 0],
                                                        [0, 0, 0, 1, 1, 0, 0]]))
    assert iface.action_space["task"].n == 3 and iface.action_space["subgoal"].shape == (7,)
    torch.testing.assert_close(iface.masks, goal.task)


def test_interface_keeps_the_absolute_target_inside_the_interval(iface):
    goal = translated(iface)
    targets = FEATURES + goal.desired_goal
    features = FEATURES
    for delta in ([0.05, 0.3, 0.0, 0.1, -0.1, 0.0, 0.0], [-0.02, 0.2, 0.1, -0.3, 0.2, 0.1, 0.0]):
        new_features = features + torch.tensor(delta)
        goal = iface.carry_goal(features, new_features, goal)
        features = new_features
        torch.testing.assert_close((features + goal.desired_goal) * goal.task, targets * goal.task)
        assert torch.all(goal.desired_goal[goal.task == 0] == 0)
    torch.testing.assert_close(goal.desired_goal[1, 1], torch.tensor(1.5 - 0.5))  # 0.5 m walked of 1.5


def test_interface_observations(iface, env_spaces):
    obs = fake_obs(env_spaces[0], 3)
    obs["observation"] = torch.arange(60.0).repeat(3, 1)
    goal = translated(iface)
    lo = iface.observation_lo(obs["observation"], goal)
    assert list(lo) == ["desired_goal", "observation", "task"]  # the pre-training env's key order
    torch.testing.assert_close(lo["observation"][0], torch.cat([torch.arange(1.0), torch.arange(2.0, 60.0)]))
    hi = iface.observation_hi(obs, torch.tensor([0, 3, 4]))
    assert GOAL_SPACE_KEY not in hi and set(hi) == {"next_hurdle", "observation", "time"}
    assert hi["time"].tolist() == [[0.0], [3.0], [4.0]]
    action = iface.act(obs["observation"], goal)
    assert action.shape == (3, 6) and torch.all(action.abs() < 1)
    torch.testing.assert_close(action, torch.tanh(iface.lo.pi(lo).loc))


def test_interface_random_actions_are_masked_and_bad_spaces_fail(iface, lo_path, env_spaces):
    task, subgoal = iface.random_action(200)
    assert set(task.tolist()) == {0, 1, 2}
    assert torch.all(subgoal * (1 - iface.masks[task]) == 0) and torch.all(subgoal.abs() <= 1)
    assert subgoal[task == 2][:, 3:5].std() > 0.4  # uniform in [-1, 1]: std 0.58
    plain = envs.make("Hurdles", "walker").observation_space
    with pytest.raises(ValueError, match="observation key 'time'.*make_hsd3_env"):
        HiToLoInterface(plain, load_low_level(lo_path), ["0"])
    lo = load_low_level(lo_path)
    wider = spaces.Dict({**lo.obs_space.spaces, "observation": spaces.Box(-np.inf, np.inf, (60,))})
    with pytest.raises(ValueError, match="checkpoint reads.*pre-training layout gives"):
        HiToLoInterface(env_spaces[0], dataclasses.replace(lo, obs_space=wider), ["0"])


# ------------------------------------------------------------------------------------- all-subset evaluation


@pytest.fixture(scope="module")
def agent(lo_path, env_spaces):
    return HSD3Agent(*env_spaces, N_ENVS, agent_cfg(lo_path))


def test_all_heads_and_q_all_subsets_match_per_subset_calls(agent, env_spaces):
    obs = agent.iface.observation_hi(fake_obs(env_spaces[0], 4), torch.zeros(4))
    n_subsets = agent.iface.n_subsets
    heads = all_subgoal_heads(agent.model.pi_subgoal, obs)
    subgoals = torch.rand(4, n_subsets, 7)
    q = q_all_subsets(agent.model.q, obs, subgoals)
    assert heads.loc.shape == (4, n_subsets, 7) and q.shape == (4, n_subsets)
    for f in (0, 7, 30):
        task = torch.full((4,), f)
        torch.testing.assert_close(heads.loc[:, f], agent.model.pi_subgoal({**obs, "task": task}).loc)
        per_subset = agent.model.q(obs, {"task": task, "subgoal": subgoals[:, f]}).min(dim=-1).values
        torch.testing.assert_close(q[:, f], per_subset)


def test_evaluate_subsets_and_critic_loss_by_hand(agent, env_spaces):
    model, masks = agent.model, agent.iface.masks
    obs = agent.iface.observation_hi(fake_obs(env_spaces[0], 5, seed=1), torch.tensor([0, 1, 2, 3, 4]))
    next_obs = agent.iface.observation_hi(fake_obs(env_spaces[0], 5, seed=2), torch.zeros(5))
    ev = evaluate_subsets(model.pi_task, model.pi_subgoal, model.q, obs, masks)
    torch.testing.assert_close(ev.subset_probs.sum(dim=-1), torch.ones(5))
    assert torch.all(ev.subgoals * (1 - masks) == 0) and torch.isfinite(ev.subgoal_log_probs).all()
    batch = {**{f"obs/{k}": v for k, v in obs.items()}, **{f"next_obs/{k}": v for k, v in next_obs.items()},
             "task": torch.tensor([0, 3, 5, 7, 30]), "subgoal": torch.rand(5, 7) * masks[[0, 3, 5, 7, 30]],
             "reward": torch.tensor([0.0, 1.0, -1.0, 0.5, 0.0]), "discount": torch.tensor([0.99, 0.0, 0.5, 1.0, 0.9])}
    alpha_c, alpha_d = torch.linspace(0.5, 1.5, 31), torch.tensor(0.7)
    torch.manual_seed(3)
    future = evaluate_subsets(model.pi_task, model.pi_subgoal, agent.target_q, next_obs, masks)
    value = (future.subset_probs * (future.q - alpha_c * future.subgoal_log_probs)).sum(-1)
    bonus = alpha_d * (future.subset_entropy - math.log(31))
    target = batch["reward"] + batch["discount"] * (value + bonus)
    q = model.q(obs, {"task": batch["task"], "subgoal": batch["subgoal"]})
    expected = ((q - target[:, None]) ** 2).mean(dim=0).sum()
    torch.manual_seed(3)
    loss, info = high_level_critic_loss(batch, model, agent.target_q, masks, alpha_c, alpha_d)
    torch.testing.assert_close(loss, expected)
    torch.testing.assert_close(info["target_mean"], target.mean())
    terms = expected_policy_terms(future.subset_probs, future.q, future.subgoal_log_probs, alpha_c, alpha_d)
    torch.testing.assert_close(critic_target(batch["reward"], batch["discount"], terms), target)


# -------------------------------------------------------------------------------------------------- config


def test_config_defaults_are_walker_hsd3_and_bad_values_fail(lo_path, env_spaces):
    cfg = HSD3Config()
    assert (cfg.action_interval, cfg.gamma, cfg.polyak, cfg.batch_size, cfg.rpbuf_size) == (5, 0.99, 0.995, 256,
                                                                                              1_000_000)
    assert (cfg.samples_per_update, cfg.num_updates, cfg.warmup_samples, cfg.randexp_samples) == (50, 50, 1000, 1000)
    assert (cfg.init_alpha_c, cfg.init_alpha_d, cfg.target_entropy_factor_c, cfg.target_entropy_factor_d) == \
        (1.0, 1.0, 1.0, 0.5)
    assert (cfg.lr_pi_task, cfg.lr_pi_subgoal, cfg.lr_q, cfg.lr_alpha_c, cfg.lr_alpha_d) == (3e-4, 3e-4, 1e-4, 1e-4,
                                                                                              1e-4)
    assert (cfg.pi_task, cfg.pi_subgoal, cfg.q) == ("pi_d2rl_discrete_d_256", "pi_d2rl_mt_d_256",
                                                    "qd_d2rl_flattsg_d_256")
    assert (cfg.goal_space.key, cfg.goal_space.from_lo_eps, cfg.goal_space.rank_max) == ("_goal_space", 1.0, 99)
    assert HSD3Config(lo={"init_from": "x.pt"}).lo.init_from == "x.pt"
    with pytest.raises(ValueError, match="action_interval must be a positive int"):
        HSD3Config(action_interval=0)
    with pytest.raises(ValueError, match="LowLevelConfig: unknown keys \\['path'\\]"):
        HSD3Config(lo={"path": "x.pt"})
    with pytest.raises(ValueError, match="needs lo.init_from"):
        HSD3Agent(*env_spaces, 1, {"device": "cpu"})
    with pytest.raises(ValueError, match="pi_subgoal must be a multi-head policy"):
        HSD3Agent(*env_spaces, 1, agent_cfg(lo_path, pi_subgoal="pi_bilinear_d2rl_d_256"))
    with pytest.raises(ValueError, match="action space of 6 dims"):
        HSD3Agent(env_spaces[0], spaces.Box(-1, 1, (4,)), 1, agent_cfg(lo_path))


def test_registry_and_subset_selection_from_config(lo_path, env_spaces):
    assert AGENTS["hsd3"] is HSD3Agent
    built = make_agent("hsd3", *env_spaces, 1, agent_cfg(lo_path, goal_space={"from_lo_eps": 0.1}))
    assert built.iface.n_subsets == 15 and built.log_alpha_c.shape == (15,)
    assert built.model.pi_subgoal.head.n_heads == 15 and not any(p.requires_grad for p in built.iface.lo.parameters())


# ------------------------------------------------------------------------------------------ acting and learning


def make_venv() -> TorchVectorEnv:
    return TorchVectorEnv(make_vector_env([partial(make_hsd3_env, "Hurdles", "walker")] * N_ENVS))


def run(agent: HSD3Agent, venv: TorchVectorEnv, n_steps: int, seed: int = 0) -> tuple[list[dict], dict]:
    """Train for ``n_steps`` vector steps; record what the agent saw and decided at each step."""
    obs, _ = venv.reset(seed=seed)
    records = []
    for _ in range(n_steps):
        action = agent.action(obs, explore=True)
        context = agent.last_context
        next_obs, reward, terminated, truncated, info = venv.step(action)
        metrics = agent.observe(obs, action, reward, terminated, truncated, info.get("final_obs", next_obs))
        records.append({"time": obs["time"][:, 0].clone(), "context": context, "action": action,
                        "done": terminated | truncated, "metrics": metrics})
        obs = next_obs
    return records, obs


@pytest.fixture(scope="module")
def trained(lo_path, env_spaces):
    """A small agent trained for 60 steps of 2 walker Hurdles envs."""
    torch.manual_seed(0)
    agent = HSD3Agent(*env_spaces, N_ENVS, agent_cfg(lo_path))
    lo_before = [p.clone() for p in agent.iface.lo.parameters()]
    venv = make_venv()
    records, obs = run(agent, venv, N_STEPS)
    return agent, records, obs, lo_before, venv


def test_high_level_decides_every_interval_per_env_and_keeps_targets(trained):
    _, records, _, _, _ = trained
    since = torch.zeros(N_ENVS, dtype=torch.long)
    for t, record in enumerate(records):
        context = record["context"]
        expected = torch.zeros(N_ENVS, dtype=torch.long) if t == 0 else torch.where(
            (record["time"] == 0) | (since + 1 >= INTERVAL), 0, since + 1)
        assert torch.equal(context.since, expected), t
        since = expected
        if t > 0:
            previous = records[t - 1]["context"]
            kept = context.since > 0
            assert torch.equal(context.task[kept], previous.task[kept])
            assert torch.equal(context.subgoal[kept], previous.subgoal[kept])
            target = (context.features + context.desired_goal) * context.task_mask
            previous_target = (previous.features + previous.desired_goal) * previous.task_mask
            torch.testing.assert_close(target[kept], previous_target[kept])
    assert any(r["done"].any() for r in records)  # the random skill falls: new episodes restart the interval
    decided = torch.stack([r["context"].since == 0 for r in records])
    assert decided[:INTERVAL * 4:INTERVAL].all() and not decided[1:INTERVAL].any()
    assert torch.all(torch.stack([r["action"].abs() for r in records]) < 1)


def test_dyne_transitions_are_stored_for_every_step(trained):
    agent, _, _, _, _ = trained
    assert len(agent.buffer) == N_ENVS * (N_STEPS - INTERVAL + 1)
    rows = agent.buffer.get_batch(500, generator=torch.Generator().manual_seed(0))
    assert set(rows["obs/time"].view(-1).tolist()) == {0.0, 1.0, 2.0, 3.0, 4.0}
    assert torch.all(rows["next_obs/time"] == 0) and not any(k.endswith(GOAL_SPACE_KEY) for k in rows)
    # Falls are terminal (discount 0); every other transition runs to the end of its interval.
    ended = rows["discount"] == 0
    assert ended.any() and not ended.all()
    steps = INTERVAL - rows["obs/time"].view(-1)
    torch.testing.assert_close(rows["discount"][~ended], 0.99 ** steps[~ended])
    # Hurdles pays 0 until the fall's -1, j steps into the transition: the reward sum is -gamma^j, j < c.
    fall_step = (torch.log(-rows["reward"][ended]) / math.log(0.99)).round()
    torch.testing.assert_close(rows["reward"][ended], -(0.99 ** fall_step))
    assert fall_step.min() >= 0 and fall_step.max() < INTERVAL
    assert torch.all(rows["subgoal"] * (1 - agent.iface.masks[rows["task"]]) == 0)


def test_updates_run_with_finite_losses_and_the_low_level_never_changes(trained):
    agent, records, _, lo_before, _ = trained
    metrics = [r["metrics"] for r in records if r["metrics"]]
    assert agent.n_updates == 2 * len(metrics) > 0
    for name in ("train/loss_q", "train/loss_pi", "train/loss_alpha_c", "train/loss_alpha_d", "health/alpha_c",
                 "health/alpha_d", "health/subset_entropy", "health/residual_variance", "health/grad_norm_pi_task"):
        assert all(math.isfinite(m[name]) for m in metrics), name
    assert metrics[-1]["health/alpha_c"] != 1.0 and metrics[-1]["health/alpha_d"] != 1.0
    for before, after in zip(lo_before, agent.iface.lo.parameters()):
        assert torch.equal(before, after) and not after.requires_grad
    lo_params = {id(p) for p in agent.iface.lo.parameters()}
    assert all(id(p) not in lo_params for opt in agent.optim.values() for g in opt.param_groups for p in g["params"])


def test_greedy_acting_is_deterministic_and_leaves_the_training_envs_alone(trained, env_spaces):
    agent, _, obs, _, _ = trained
    explore_context = agent.contexts.streams["explore"]
    fresh = {**obs, "time": torch.zeros(N_ENVS, 1)}
    first = agent.action(fresh, explore=False)
    context = agent.last_context
    second = agent.action(fresh, explore=False)
    torch.testing.assert_close(first, second)
    obs_hi = agent.iface.observation_hi(fresh, torch.zeros(N_ENVS))
    assert torch.equal(context.task, agent.model.pi_task(obs_hi).logits.argmax(dim=-1))
    mean = agent.model.pi_subgoal({**obs_hi, "task": context.task}).mean * agent.iface.masks[context.task]
    torch.testing.assert_close(context.subgoal, mean)
    assert agent.contexts.streams["explore"] is explore_context


def test_checkpoint_round_trip_gives_identical_next_actions(trained, lo_path, env_spaces, tmp_path):
    agent, _, obs, _, _ = trained
    agent.action(obs, explore=True)  # back on the training stream, mid-interval for some envs
    agent.save_checkpoint(tmp_path / "hsd3.pt")
    expected = [agent.action({**obs, "time": obs["time"] + 1}, explore=True) for _ in range(3)]
    metrics = agent.update()
    restored = HSD3Agent(*env_spaces, N_ENVS, agent_cfg(lo_path))
    restored.load_checkpoint(tmp_path / "hsd3.pt")
    assert restored.staging.n_steps == agent.staging.n_steps and len(restored.buffer) == len(agent.buffer)
    got = [restored.action({**obs, "time": obs["time"] + 1}, explore=True) for _ in range(3)]
    for a, b in zip(expected, got):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    torch.testing.assert_close(restored.update()["train/loss_q"], metrics["train/loss_q"])


def test_observe_requires_an_action_and_checks_shapes(lo_path, env_spaces):
    agent = HSD3Agent(*env_spaces, N_ENVS, agent_cfg(lo_path))
    obs = fake_obs(env_spaces[0], N_ENVS)
    flags = torch.zeros(N_ENVS, dtype=torch.bool)
    with pytest.raises(ValueError, match="preceding action\\(\\) call"):
        agent.observe(obs, torch.zeros(N_ENVS, 6), torch.zeros(N_ENVS), flags, flags, obs)
    action = agent.action(obs, explore=True)
    with pytest.raises(ValueError, match="reward must be \\[N=2\\]"):
        agent.observe(obs, action, torch.zeros(N_ENVS, 1), flags, flags, obs)
    with pytest.raises(ValueError, match="action must be \\[N=2, A=6\\]"):
        agent.observe(obs, action[:, :3], torch.zeros(N_ENVS), flags, flags, obs)


def test_terminal_ends_the_transition_with_discount_zero(lo_path, env_spaces):
    agent = HSD3Agent(*env_spaces, N_ENVS, agent_cfg(lo_path, warmup_samples=1000))
    obs = fake_obs(env_spaces[0], N_ENVS)
    for t in range(INTERVAL):
        obs = {**obs, "time": torch.full((N_ENVS, 1), float(t))}
        action = agent.action(obs, explore=True)
        terminated = torch.tensor([t == 1, False])
        agent.observe(obs, action, torch.ones(N_ENVS), terminated, torch.zeros(N_ENVS, dtype=torch.bool), obs)
    rows = agent.buffer.get_batch_back(N_ENVS)
    torch.testing.assert_close(rows["reward"], torch.tensor([1.0 + 0.99, sum(0.99 ** j for j in range(5))]))
    torch.testing.assert_close(rows["discount"], torch.tensor([0.0, 0.99 ** 5]))


def test_same_seed_twice_gives_the_same_run(lo_path, env_spaces):
    runs = []
    for _ in range(2):
        torch.manual_seed(7)
        agent = HSD3Agent(*env_spaces, N_ENVS, agent_cfg(lo_path, randexp_samples=10))
        records, _ = run(agent, make_venv(), 25, seed=3)
        runs.append((torch.stack([r["action"] for r in records]), agent.log_alpha_c.detach().clone()))
    torch.testing.assert_close(runs[0][0], runs[1][0], rtol=0, atol=0)
    torch.testing.assert_close(runs[0][1], runs[1][1], rtol=0, atol=0)
