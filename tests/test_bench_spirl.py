"""bench/spirl.py without training: option errors, the commands it would run, --report-only on hand-made eval.csv
files, and the prior-rollout check on random-weight walker skill models (short episodes)."""

import csv
import importlib.util
import sys
from pathlib import Path

import mujoco
import numpy as np
import pytest
import torch

from hsd3_learn.envs.pretraining import PretrainingEnv
from hsd3_learn.envs.wrappers import make_env
from hsd3_learn.spirl.models import make_skill_model, save_skill_model
from hsd3_learn.training import make_vector_envs
from test_bench_learning import write_eval  # the fabricated eval.csv of a finished run

ROOT = Path(__file__).resolve().parents[1]
LIMIT = 30  # episode steps of the rollout tests


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", ROOT / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass looks its module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def spirl():
    return load_script("spirl")


@pytest.fixture(scope="module")
def walker_skills(tmp_path_factory):
    """One random-weight walker skill model per kind (S 59, A 6, H 4, nz 2) with the stats train_prior saves."""
    env = PretrainingEnv("walker")
    kept = torch.as_tensor(env.kept_observation_entries)
    env.close()
    stats = {"obs_mean": torch.zeros(len(kept)), "obs_std": torch.ones(len(kept)), "kept_observation_entries": kept}
    directory = tmp_path_factory.mktemp("walker_skills")
    paths = {}
    for kind in ("spirl", "spirl_cl", "skill_critic"):
        torch.manual_seed(3)
        model = make_skill_model(kind, dict(state_dim=len(kept), action_dim=6, H=4, nz=2, nz_enc=8, nz_mid=16,
                                            n_layers=1, lstm_width=8, prior_layers=1, prior_width=16))
        paths[kind] = directory / f"{kind}.pt"
        save_skill_model(paths[kind], model, kind, model.cfg, stats)
    return paths



# ---------------------------------------------------------------------------------------------------- options


@pytest.mark.parametrize("argv", [["--methods", "hiro"], ["--methods", ","], ["--seeds", "a"], ["--seeds", "-1"],
                                  ["--samples", "0"], ["--jobs", "0"], ["--task", "Moon"],
                                  ["--rollout-episodes", "-1"], ["--rollouts-only", "--rollout-episodes", "0"],
                                  ["--report-only", "--rollouts-only"], ["--conditions", "8 at a time"]])
def test_bad_options_stop_with_a_usage_error(spirl, argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        spirl.parse_args(argv)
    assert exit_info.value.code == 2 and "error:" in capsys.readouterr().err


def test_defaults_are_every_method_one_seed_two_jobs(spirl):
    args = spirl.parse_args([])
    assert args.method_list == ["sac", "no_prior", "spirl", "spirl_cl", "skill_critic"]
    assert args.seed_list == [0] and args.jobs == 2 and args.samples == 100_000 and args.rollout_episodes == 10
    assert spirl.needed_models(["sac"]) == [] and spirl.needed_models(["no_prior"]) == ["spirl_cl"]
    assert spirl.needed_models(["skill_critic", "spirl", "no_prior"]) == ["spirl", "spirl_cl", "skill_critic"]


def test_missing_skills_or_skill_models_stop_before_any_work(spirl, tmp_path):
    with pytest.raises(SystemExit, match="does not exist"):
        spirl.main(["--workdir", str(tmp_path / "work"), "--out", str(tmp_path / "out"), "--lo",
                    str(tmp_path / "none.pt"), "--methods", "spirl"])
    assert not (tmp_path / "work" / "collect").exists()
    with pytest.raises(SystemExit, match="no skill model"):
        spirl.main(["--workdir", str(tmp_path / "work"), "--out", str(tmp_path / "out"), "--rollouts-only"])


# ---------------------------------------------------------------------------------------------------- commands


def test_commands_of_every_step_and_method(spirl, tmp_path):
    args = spirl.parse_args(["--workdir", str(tmp_path), "--samples", "500", "--seeds", "0,3", "--task", "Limbo"])
    runs = spirl.run_commands(args)
    assert list(runs)[:5] == [("sac", 0), ("skill_critic", 0), ("no_prior", 0), ("spirl", 0), ("spirl_cl", 0)]
    assert len(runs) == 10
    learning_args = spirl.learning.parse_args(["--workdir", str(tmp_path), "--samples", "500", "--seeds", "0,3",
                                               "--task", "Limbo", "--methods", "sac"])
    learning_runs = spirl.learning.run_commands(learning_args, tmp_path / "lo.pt")
    python = sys.executable
    for (method, seed), (command, run_dir) in runs.items():
        assert run_dir == tmp_path / f"{method}_seed{seed}"
        if method == "sac":
            assert (command, run_dir) == learning_runs[("sac", seed)]
            assert command == [python, "-m", "hsd3_learn.train", "-cn", "walker_sac", "profile=laptop",
                               "env.task=Limbo", f"seed={seed}", "max_samples=500", "threads=1"]
            continue
        model = "spirl_cl" if method == "no_prior" else method
        assert command == [python, "-m", "hsd3_learn.spirl.train", f"agent={method}",
                           f"prior.init_from={tmp_path.resolve()}/prior_{model}/checkpoint-prior.pt", "profile=laptop",
                           "env.task=Limbo", f"seed={seed}", "max_samples=500", "threads=1"]
    [(key, (command, run_dir))] = spirl.collect_command(tmp_path, tmp_path / "lo.pt").items()
    assert key == ("collect", 0) and run_dir == tmp_path / "collect"
    assert command == [python, "-m", "hsd3_learn.spirl.collect", "profile=laptop",
                       f"lo.init_from={(tmp_path / 'lo.pt').resolve()}"]
    priors = spirl.prior_commands(tmp_path, ["spirl", "skill_critic"])
    assert priors[("prior_skill_critic", 0)] == (
        [python, "-m", "hsd3_learn.spirl.train_prior", "model=skill_critic",
         f"data.dir={tmp_path.resolve()}/collect/dataset", "profile=laptop", "threads=1"],
        tmp_path / "prior_skill_critic")
    assert list(priors) == [("prior_spirl", 0), ("prior_skill_critic", 0)]


# ---------------------------------------------------------------------------------------------------- report


def test_report_only_writes_the_csv_table_and_plot_with_ratios_to_sac(spirl, tmp_path):
    work, out = tmp_path / "work", tmp_path / "out"
    write_eval(work / "sac_seed0", [0.0, 1.0, 2.0], [20, 100, 200])
    write_eval(work / "no_prior_seed0", [0.0, 0.0, 1.0], [100, 200, 300])
    write_eval(work / "spirl_seed0", [0.0, 2.0, 3.0], [40, 400, 1000])
    write_eval(work / "spirl_cl_seed0", [0.0, 3.0, 4.0], [10, 50, 100])
    write_eval(work / "spirl_seed1", [5.0, 5.0, 5.0], [1000, 1000, 1000])  # a seed the others lack: left out
    (work / "sac_seed0" / "wall_seconds.txt").write_text("60\n60\n")
    (work / "prior_spirl").mkdir()
    (work / "prior_spirl" / "wall_seconds.txt").write_text("30\n")
    spirl.main(["--workdir", str(work), "--out", str(out), "--report-only", "--seeds", "0,1"])
    rows = list(csv.DictReader((out / "spirl-hurdles.csv").open()))
    assert len(rows) == 12 and {r["seed"] for r in rows} == {"0"}
    assert list(rows[0]) == ["method", "seed", "samples", "score_mean", "return_mean", "length_mean"]
    text = (out / "spirl-hurdles.txt").read_text()
    score_part, length_part = text.split("\nscore:\n")[1].split("\nepisode length (")
    scores = {line.split()[0]: line.split() for line in score_part.splitlines() if line.strip()[:1].isdigit()}
    header = score_part.strip().splitlines()[0].split()
    assert header == ["samples", "sac", "no_prior", "spirl", "spirl_cl", "no_prior/sac", "spirl/sac", "spirl_cl/sac"]
    assert scores["10"] == ["10", "1.000", "0.000", "2.000", "3.000", "0.00", "2.00", "3.00"]
    assert scores["0"][-3:] == ["n/a", "n/a", "n/a"]  # no ratio against a zero SAC score
    lengths = {line.split()[0]: line.split() for line in length_part.splitlines() if line.strip()[:1].isdigit()}
    assert lengths["0"] == ["0", "20.0", "100.0", "40.0", "10.0", "5.00", "2.00", "0.50"]
    assert "sac seed 0: 2.0 min" in text and "prior_spirl: 0.5 min" in text and "spirl seed 0:" not in text
    missing = next(line for line in text.splitlines() if line.startswith("not in the table"))
    assert "skill_critic seed 0" in missing and "spirl seed 1" in missing and "sac seed 0" not in missing
    assert f"low-level skills: {work / 'pretrain' / 'checkpoint-lo.pt'}" in text
    assert "hsd3_learn.spirl.train agent=no_prior prior.init_from=" in text
    assert "hsd3_learn.spirl.train_prior model=skill_critic" in text and "hsd3_learn.spirl.collect" in text
    assert (out / "spirl-hurdles.png").stat().st_size > 1000
    assert "how many at a time was not recorded" in text.splitlines()[0]  # --jobs says nothing about earlier runs


def test_report_only_states_the_given_run_conditions(spirl, tmp_path):
    work, out = tmp_path / "work", tmp_path / "out"
    write_eval(work / "sac_seed0", [0.0, 1.0], [20, 100])
    spirl.main(["--workdir", str(work), "--out", str(out), "--report-only", "--jobs", "5",
                "--conditions", "8 runs at a time on 2 cores"])
    first = (out / "spirl-hurdles.txt").read_text().splitlines()[0]
    assert first.endswith("seeds 0, 8 runs at a time on 2 cores") and "5 runs" not in first


def test_report_only_without_evaluations_says_so(spirl, tmp_path):
    with pytest.raises(SystemExit, match="no run .* has evaluations"):
        spirl.main(["--workdir", str(tmp_path), "--out", str(tmp_path / "out"), "--report-only"])


def test_ratio_and_reported_rows(spirl):
    assert spirl.ratio_to_sac(3.0, 2.0) == "1.50" and spirl.ratio_to_sac(3.0, 0.0) == "n/a"
    rows = [{"method": m, "seed": s, "samples": 0} for m, s in (("sac", 0), ("sac", 1), ("spirl", 1))]
    kept, methods = spirl.reported_rows(rows, ["spirl", "sac", "skill_critic"])
    assert methods == ["spirl", "sac"] and kept == rows[1:]


# ---------------------------------------------------------------------------------------------------- rollouts


def test_world_x_entry_is_the_walker_root_x_of_mujoco(spirl):
    kept = torch.as_tensor(PretrainingEnv("walker").kept_observation_entries)
    env = make_env("Floor", "walker")
    obs, _ = env.reset(seed=0)
    entry = spirl.world_x_entry(kept, obs["observation"].shape[0])
    model, data = env.unwrapped.model, env.unwrapped.data
    rootx = model.jnt_qposadr[mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_JOINT, "rootx")]
    for _ in range(5):
        obs, *_ = env.step(np.full(6, 0.5))
        assert obs["observation"][entry] == pytest.approx(data.qpos[rootx], abs=1e-6)
    with pytest.raises(ValueError, match="exactly one"):
        spirl.world_x_entry(kept[1:], obs["observation"].shape[0])


@pytest.mark.parametrize("kind", ["spirl", "spirl_cl", "skill_critic"])
def test_rollout_measures_episodes_and_learns_nothing(spirl, walker_skills, kind):
    cfg = spirl.rollout_config(kind, walker_skills[kind], 3, LIMIT)
    assert cfg.env.task == "Floor" and "time" in cfg.env.wrappers and cfg.agent.name == kind
    envs = make_vector_envs(cfg.env, cfg.env.num_envs, "cpu")
    agent = spirl.make_spirl_agent(cfg.agent, envs)
    lengths, fell, dx = spirl.rollout(agent, envs, seed=0)
    envs.close()
    assert lengths.shape == fell.shape == dx.shape == (3,) and fell.dtype == bool
    assert np.all((lengths >= 1) & (lengths <= LIMIT)) and np.all(lengths[~fell] == LIMIT)  # a fall or the limit
    assert np.all(np.isfinite(dx)) and np.all(np.abs(dx) < 5.0)
    assert agent.n_samples == 0 and agent.n_updates == 0 and len(agent.buffer) == 0
    if kind == "skill_critic":
        assert len(agent.ll_buffer) == 0


def test_prior_check_has_both_arms_per_model_and_writes_its_files(spirl, walker_skills, tmp_path):
    arms = spirl.prior_check({"spirl_cl": walker_skills["spirl_cl"]}, episodes=2, seed=1, max_episode_steps=LIMIT)
    assert [(a.model, a.arm) for a in arms] == [("spirl_cl", "prior"), ("spirl_cl", "uniform")]
    for arm in arms:
        assert arm.limit == LIMIT and arm.lengths.shape == (2,) and set(arm.fell.tolist()) <= {False, True}
        summary = arm.summary()
        assert 0 < summary["length/limit"] <= 1 and 0 <= summary["no_fall"] <= 1
        assert summary["dx_min"] <= summary["dx_mean"]
    again = spirl.prior_check({"spirl_cl": walker_skills["spirl_cl"]}, episodes=2, seed=1, max_episode_steps=LIMIT)
    assert all(np.array_equal(a.dx, b.dx) for a, b in zip(arms, again))  # seeded
    text = spirl.write_rollouts(arms, tmp_path / "rollouts")
    rows = list(csv.DictReader((tmp_path / "rollouts.csv").open()))
    assert len(rows) == 4 and {r["arm"] for r in rows} == {"prior", "uniform"}
    assert (tmp_path / "rollouts.txt").read_text() == text + "\n" and text.count("spirl_cl: ") == 1


def test_pass_needs_forward_motion_and_half_the_limit_in_half_the_episodes(spirl):
    def arm(lengths, dx, name="prior"):
        lengths = np.array(lengths)
        return spirl.RolloutArm("spirl", name, 100, lengths, lengths < 100, np.array(dx, dtype=float))

    walking = arm([100, 50, 10, 20], [1.0, 1.0, 0.5, 0.0])  # mean dx 0.625, half the episodes last >= 50 steps
    assert walking.passes and walking.summary() == pytest.approx(
        {"length/limit": 0.45, "no_fall": 0.25, "half_limit": 0.5, "dx_mean": 0.625, "dx_min": 0.0})
    assert not arm([100, 49, 10, 20], [1.0, 1.0, 0.5, 0.0]).passes  # one episode short of half the limit
    assert not arm([100, 100, 100, 100], [0.5, 0.5, 0.5, 0.5]).passes  # stands still: dx must exceed 0.5
    text = spirl.rollout_table([walking, arm([10, 10, 10, 10], [0.0] * 4, "uniform")])
    assert "spirl: PASS (mean dx 0.62 m" in text and text.count("FAIL") == 1


def test_dataset_behaviour_reads_the_collected_episodes(spirl, tmp_path):
    from hsd3_learn.spirl.data import Episode, write_shards

    def episode(steps: int, fell: bool) -> Episode:
        terminals = np.zeros(steps, dtype=bool)
        terminals[-1] = fell
        return Episode(np.zeros((steps + 1, 3)), np.zeros((steps, 2)), terminals)

    write_shards([episode(10, False), episode(4, True), episode(6, True), episode(2, True)], tmp_path / "ds", 2, {})
    data = spirl.dataset_behaviour(tmp_path / "ds")
    assert data == pytest.approx({"episodes": 4, "limit": 10, "length/limit": 0.55, "no_fall": 0.25,
                                  "half_limit": 0.5})
    arms = [spirl.RolloutArm("spirl", "prior", 10, np.array([10, 5]), np.array([False, True]), np.array([1.0, 0.0]))]
    assert "dataset      data              0.55      0.25        0.50" in spirl.rollout_table(arms, data)
