"""Pre-training pieces: the curriculum, controllability estimates, per-subset rollouts, configs and checks."""

from __future__ import annotations

import math
import re

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from hsd3_learn.agents import SACMTAgent
from hsd3_learn.agents.hsd3_interface import load_low_level
from hsd3_learn.agents.sacmt import SACMTConfig
from hsd3_learn.envs.goal_spaces import FEATURE_DIMS, enumerate_subsets, goal_space, task_map
from hsd3_learn.pretraining import (Curriculum, check_pretraining_config, estimate_controllability,
                                    evaluate_subsets, grow_subsets, make_pretraining_envs, prepare_pretraining,
                                    pretrain, subset_rank)
from hsd3_learn.train import CONFIG_DIR, experiments

WALKER = FEATURE_DIMS["walker"]


def compose_config(name: str = "walker_pretrain", *overrides: str):
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose(config_name=name, overrides=list(overrides))


# ------------------------------------------------------------------------------------------------ curriculum


def test_subset_rank_counts_feature_groups():
    assert [subset_rank(s) for s in ("0", "3+4", "0,3+4", "0,1,2,3+4,5+6")] == [1, 1, 2, 5]


def test_curriculum_with_ctrl_eps_1_adds_one_rank_per_evaluation_up_to_all_31_walker_subsets():
    subsets = enumerate_subsets(WALKER, rank_max=1)
    assert subsets == ["0", "1", "2", "3+4", "5+6"]
    cperf = {s: 0.0 for s in subsets}  # nothing controllable yet: ctrl_eps 1 still grows
    sizes = [len(subsets)]
    while new := grow_subsets(subsets, cperf, WALKER, eps=1.0):
        assert {subset_rank(s) for s in new} == {max(map(subset_rank, subsets)) + 1}
        subsets = subsets + list(new)
        cperf.update(new)
        sizes.append(len(subsets))
    assert sizes == [5, 15, 25, 30, 31]
    assert sorted(subsets) == sorted(enumerate_subsets(WALKER))


def test_curriculum_needs_every_part_controllable_and_estimates_the_product():
    subsets = ["0", "1", "2", "3+4", "5+6"]
    cperf = {"0": 0.9, "1": 0.8, "2": 0.95, "3+4": 0.5, "5+6": 0.99}
    new = grow_subsets(subsets, cperf, WALKER, eps=0.2)  # parts need cperf >= 0.8
    assert list(new) == ["0,1", "0,2", "0,5+6", "1,2", "1,5+6", "2,5+6"]  # 3+4 (0.5) blocks its pairs
    assert new["0,1"] == pytest.approx(0.72) and new["2,5+6"] == pytest.approx(0.95 * 0.99)
    assert list(grow_subsets(subsets, cperf, WALKER, eps=0.2, max_new=2)) == ["0,1", "0,2"]
    assert grow_subsets(subsets, cperf, WALKER, eps=0.2, rank_max=1) == {}
    # rank 3 needs all three pairs: 0,1,2 has them, 0,1,5+6 lacks nothing either, 0,1,3+4 lacks 0,3+4
    pairs = subsets + list(new)
    cperf.update(new)
    rank3 = grow_subsets(pairs, cperf, WALKER, eps=0.5)
    assert "0,1,2" in rank3 and "0,1,3+4" not in rank3
    assert rank3["0,1,2"] == pytest.approx(cperf["0,1"] * cperf["0,2"] * cperf["1,2"])


def test_curriculum_state_round_trips_through_plain_values():
    cur = Curriculum(["0", "1"], {"0": 0.5}, 3)
    state = cur.state_dict()
    other = Curriculum([])
    other.load_state_dict(state)
    assert (other.subsets, other.cperf, other.n_evals) == (["0", "1"], {"0": 0.5}, 3)
    state["subsets"].append("2")
    assert cur.subsets == ["0", "1"]  # a copy


# ------------------------------------------------------------------------------------------------ estimates


@pytest.fixture(scope="module")
def small_setup():
    cfg = compose_config("walker_pretrain", "profile=tiny", "device=cpu", "env.num_envs=2", "eval.num_envs=2")
    subsets = enumerate_subsets(WALKER)
    envs = make_pretraining_envs(cfg, 2, subsets, "cpu")
    eval_envs = make_pretraining_envs(cfg, 2, subsets, "cpu", evaluation=True)
    options = {k: v for k, v in OmegaConf.to_container(cfg.agent, resolve=True).items() if k != "name"}
    agent = SACMTAgent(envs.single_observation_space, envs.single_action_space, 2, options)
    yield cfg, envs, eval_envs, agent
    envs.close()
    eval_envs.close()


def fill(agent, envs, steps: int) -> None:
    obs, _ = envs.reset(seed=0)
    for _ in range(steps):
        action = agent.action(obs, explore=True)
        next_obs, reward, terminated, truncated, info = envs.step(action)
        agent.observe(obs, action, reward, terminated, truncated, info.get("final_obs", next_obs), info)
        obs = next_obs


def test_controllability_is_a_mean_reachability_in_0_1_per_subset_and_reproducible(small_setup):
    cfg, envs, _, agent = small_setup
    gs, tmap = goal_space("walker"), task_map(WALKER)
    assert estimate_controllability(SACMTAgent(envs.single_observation_space, envs.single_action_space, 2,
                                               {"pi": "pi_d2rl_d_256", "q": "qd_d2rl_d_256",
                                                "reachability": "q_d2rl_d_256", "device": "cpu"}),
                                    ["0"], gs, tmap, 8) == {}  # empty buffer: nothing to estimate
    fill(agent, envs, 60)
    names = ["0", "1", "0,3+4"]
    first = estimate_controllability(agent, names, gs, tmap, 16, torch.Generator().manual_seed(0))
    again = estimate_controllability(agent, names, gs, tmap, 16, torch.Generator().manual_seed(0))
    assert list(first) == names and first == again
    assert all(0.0 <= value <= 1.0 for value in first.values())
    # A reachability net that always says 0.7 (before clamping: 1.7 clamps to 1) gives exactly that.
    with torch.no_grad():
        last = list(agent.model.reachability.parameters())[-1]
        saved = [p.clone() for p in agent.model.reachability.parameters()]
        for p in agent.model.reachability.parameters():
            p.zero_()
        last.fill_(0.7)
        assert estimate_controllability(agent, names, gs, tmap, 16) == pytest.approx({n: 0.7 for n in names})
        last.fill_(1.7)
        assert estimate_controllability(agent, names, gs, tmap, 16) == pytest.approx({n: 1.0 for n in names})
        for p, value in zip(agent.model.reachability.parameters(), saved):
            p.copy_(value)


def test_subset_rollouts_score_reached_goals_one_goal_per_episode(small_setup):
    _, _, eval_envs, agent = small_setup
    results = evaluate_subsets(agent, eval_envs, ["0", "2"], episodes=3)
    assert set(results) == {"0", "2"} and all(0.0 <= v <= 1.0 for v in results.values())
    assert results == evaluate_subsets(agent, eval_envs, ["0", "2"], episodes=3)  # deterministic, seeded
    assert eval_envs.call("subsets") == ({"2": 1.0}, {"2": 1.0})  # the envs were set to each subset in turn


# ------------------------------------------------------------------------------------------------ configs


def test_pretrain_experiments_and_paper_values():
    assert experiments(pretraining=True) == ["humanoid_pretrain", "walker_pretrain"]
    cfg = compose_config("walker_pretrain")
    assert (cfg.max_samples, cfg.env.num_envs, cfg.eval.interval, cfg.env.task) == (5 * 10**7, 20, 100_000,
                                                                                  "Pretraining")
    agent = cfg.agent
    assert (agent.name, agent.batch_size, agent.rpbuf_size, agent.samples_per_update, agent.num_updates) == (
        "sacmt", 256, 3 * 10**6, 1000, 50)
    assert agent.gamma == pytest.approx(1 - 1 / 72, abs=1e-6) and agent.per_task_alpha is False
    assert (agent.pi, agent.q, agent.reachability) == ("pi_d2rl_d_1024", "qd_d2rl_d_1024", "q_d2rl_d_1024")
    p = cfg.pretrain
    assert (p.feature_rank, p.ctrl_eps, p.precision, p.max_steps, p.hard_reset_interval) == (1, 1.0, 0.1, 72, 100)
    human = compose_config("humanoid_pretrain")
    assert (human.max_samples, human.env.robot, human.agent.batch_size, human.agent.samples_per_update) == (
        2.5e8, "humanoidpc", 1024, 5000)


@pytest.mark.parametrize("name", ["walker_pretrain", "humanoid_pretrain"])
@pytest.mark.parametrize("profile", ["tiny", "laptop", "paper"])
def test_pretrain_profiles_compose_to_valid_configs(name, profile):
    cfg = compose_config(name, f"profile={profile}")
    check_pretraining_config(cfg)
    options = {k: v for k, v in OmegaConf.to_container(cfg.agent, resolve=True).items() if k != "name"}
    assert isinstance(SACMTConfig(**options), SACMTConfig)
    assert cfg.agent.rpbuf_size % cfg.env.num_envs == 0 and cfg.env.max_episode_steps is None


@pytest.mark.parametrize("override, message", [
    ("agent.name=sac", "pre-training trains agent 'sacmt'"),
    ("env.robot=halfcheetah", "needs a robot with a goal space"),
    ("env.task=Hurdles", "runs env.task=Pretraining"),
    ("pretrain.eval_episodes=0", "pretrain.eval_episodes must be a positive integer"),
    ("pretrain.ctrl_eps=2", "pretrain.ctrl_eps must lie in [0, 1]"),
    ("env.max_episode_steps=10", "env.max_episode_steps must stay null"),
])
def test_bad_pretraining_configs_fail_with_one_line(override, message):
    cfg = compose_config("walker_pretrain", "profile=tiny", override)
    with pytest.raises(ValueError, match=re.escape(message)):
        check_pretraining_config(cfg)


# ------------------------------------------------------------------------------------------------ a whole run


def test_in_process_tiny_pretraining_writes_a_low_level_hsd3_can_load(tmp_path):
    cfg = compose_config("walker_pretrain", "profile=tiny", "device=cpu", "max_samples=500")
    setup = prepare_pretraining(cfg, tmp_path)
    result = pretrain(setup, progress=False)
    assert result.finished and result.n_samples == 500
    low = load_low_level(tmp_path / "checkpoint-lo.pt")
    # Evaluations at 0, 250 and 500 grew the curriculum twice: ranks 1-3.
    assert len(low.subsets) == 25 and max(map(subset_rank, low.subsets)) == 3
    assert low.cperf is not None and all(0.0 <= v <= 1.0 for v in low.cperf.values())
    assert low.task_map == task_map(WALKER) and low.model == {"name": "pi_d2rl_d_256", "n_layers": 1}
    rows = setup.eval_log.rows()
    assert [r["samples"] for r in rows] == [0, 250, 500] and [r["n_subsets"] for r in rows] == [5, 15, 25]
    assert rows[0]["success_mean"] != "" and rows[1]["success_mean"] == ""  # rollouts at first and last only
    assert rows[2]["success_mean"] != "" and not math.isnan(rows[2]["cperf_mean"])
    per_subset = setup.subset_log.rows()
    assert len(per_subset) == 5 + 15 + 25 and {r["subset"] for r in per_subset} == set(low.subsets)
