"""The tiny SPiRL pipeline from the README, end to end: HSD-3's pre-trained skill -> ``hsd3_learn.spirl.collect`` ->
``hsd3_learn.spirl.train_prior`` (each skill-model kind) -> ``hsd3_learn.spirl.train`` (each agent). Reruns and
SIGTERM resume; bad command lines fail with one line before training; every profile composes to valid agent
configs; the ``time`` wrapper rule."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from test_pipeline import counters, eval_samples, run_cli as run_hsd3_cli, stop_after_first_checkpoint

from hsd3_learn.agents.base import make_config
from hsd3_learn.spirl.agents import NoPriorAgent, NoPriorConfig, SPiRLAgent, SPiRLConfig
from hsd3_learn.spirl.data import read_stats
from hsd3_learn.spirl.models import load_skill_model
from hsd3_learn.spirl.skill_critic import SkillCriticAgent, SkillCriticConfig
from hsd3_learn.spirl.train import AGENTS, CONFIG_DIR, CONFIG_NAME, PROG, SKILL_KINDS, prepare_spirl_run, \
    with_time_wrapper
from hsd3_learn.training import check_config

ROOT = Path(__file__).resolve().parents[1]
KINDS = ("spirl", "spirl_cl", "skill_critic")  # the skill models train_prior writes
PRIOR_OF = {"no_prior": "spirl", "spirl": "spirl", "spirl_cl": "spirl_cl", "skill_critic": "skill_critic"}
CONFIG_CLASSES = {"no_prior": NoPriorConfig, "spirl": SPiRLConfig, "spirl_cl": SPiRLConfig,
                  "skill_critic": SkillCriticConfig}
AGENT_CLASSES = {"no_prior": NoPriorAgent, "spirl": SPiRLAgent, "spirl_cl": SPiRLAgent,
                 "skill_critic": SkillCriticAgent}

# The README's commands (section "SPiRL"), run in runs/spirl next to HSD-3's runs/skills, each stage in its folder.
PRETRAIN = "python -m hsd3_learn.pretrain -cn walker_pretrain profile=tiny"  # run by test_pipeline.run_cli
COLLECT = "python -m hsd3_learn.spirl.collect profile=tiny lo.init_from=../skills/checkpoint-lo.pt"


def train_prior_command(kind: str) -> str:
    return f"python -m hsd3_learn.spirl.train_prior model={kind} profile=tiny data.dir=../dataset"


def train_command(agent: str, kind: str) -> str:
    prior = f"../prior_{kind}/checkpoint-prior.pt"
    return f"python -m hsd3_learn.spirl.train agent={agent} profile=tiny prior.init_from={prior}"


def run_command(command: str, cwd: Path, *overrides: str, wait: bool = True):
    """A README command (``python`` is this interpreter) plus ``overrides``, in ``cwd``, on one CPU thread."""
    argv = [sys.executable, *shlex.split(command)[1:], *overrides]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MUJOCO_GL": "egl", "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if not wait:
        return proc
    stdout, stderr = proc.communicate(timeout=180)
    return proc.returncode, stdout, stderr


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory) -> Path:
    """The README's tiny pipeline up to the skill models: runs/skills (HSD-3's pre-training, as test_pipeline runs
    it), then in runs/spirl the dataset and prior_<kind>/checkpoint-prior.pt for each kind; returns runs/spirl."""
    runs = tmp_path_factory.mktemp("runs")
    (runs / "skills").mkdir()
    rc, _, stderr = run_hsd3_cli("pretrain", runs / "skills", "walker_pretrain")
    assert rc == 0, stderr
    spirl = runs / "spirl"
    spirl.mkdir()
    rc, stdout, stderr = run_command(COLLECT, spirl)
    assert rc == 0 and "wrote dataset/" in stdout, stderr
    for kind in KINDS:
        (spirl / f"prior_{kind}").mkdir()
    # The README runs them one after the other; they are independent, so here they share the cores.
    procs = [run_command(train_prior_command(kind), spirl / f"prior_{kind}", wait=False) for kind in KINDS]
    for proc in procs:
        stdout, stderr = proc.communicate(timeout=180)
        assert proc.returncode == 0 and "wrote the skill model" in stdout, stderr
    return spirl


def prior_path(pipeline: Path, kind: str) -> Path:
    return pipeline / f"prior_{kind}" / "checkpoint-prior.pt"


def readme_section() -> str:
    """The README's SPiRL section, with shell continuation lines joined."""
    text = (ROOT / "README.md").read_text()
    start = text.index("\n## SPiRL")
    return re.sub(r"\s*\\\n\s*", " ", text[start:text.index("\n## ", start + 1)])


def test_readme_documents_the_commands_these_tests_run():
    section = readme_section()
    for command in (PRETRAIN, COLLECT, train_prior_command("$kind"), train_command("$kind", "$kind"),
                    train_command("no_prior", "spirl")):
        assert command in section, command
    for path in ("bench/spirl.py", "bench/results/spirl-hurdles.", "bench/results/spirl-prior-rollouts."):
        assert path in section, path


def test_pipeline_writes_the_dataset_and_one_skill_model_per_kind(pipeline):
    info = read_stats(pipeline / "dataset").info
    assert (info["n_steps"], info["obs_dim"], info["action_dim"]) == (600, 59, 6)
    lo = Path(info["metadata"]["lo.init_from"])  # ../skills/checkpoint-lo.pt, made absolute
    assert lo.is_absolute() and lo.resolve() == (pipeline.parent / "skills" / "checkpoint-lo.pt").resolve()
    for kind in KINDS:
        model = load_skill_model(prior_path(pipeline, kind))
        assert model.kind == kind and (model.config.state_dim, model.config.action_dim, model.config.H) == (59, 6, 4)
        assert (pipeline / f"prior_{kind}" / "val.csv").is_file()


# ------------------------------------------------------------------------------------------------ training runs


@pytest.mark.parametrize("agent", list(PRIOR_OF))
def test_each_agent_trains_from_its_prior_and_a_rerun_finds_the_run_done(pipeline, agent):
    run_dir = pipeline / agent
    run_dir.mkdir()
    command = train_command(agent, PRIOR_OF[agent])
    rc, stdout, stderr = run_command(command, run_dir)
    assert rc == 0, stderr
    assert eval_samples(run_dir) == [0, 200, 400]
    assert {"checkpoint.pt", "config.yaml", "eval.csv", "tb"} <= {p.name for p in run_dir.iterdir()}
    state = counters(run_dir)
    assert state["n_samples"] == 400 and state["n_updates"] > 0
    config = OmegaConf.load(run_dir / "config.yaml")
    assert config.agent.name == agent and "time" in config.env.wrappers
    skill_model = Path(config.agent.skill_model)  # the relative ../prior_<kind> path, made absolute
    assert skill_model.is_absolute() and skill_model.resolve() == prior_path(pipeline, PRIOR_OF[agent]).resolve()
    assert config.prior.init_from == config.agent.skill_model

    rc, stdout, stderr = run_command(command, run_dir)
    assert rc == 0, stderr
    assert "resuming from checkpoint.pt at 400 samples" in stdout and "already has 400 samples" in stdout
    assert eval_samples(run_dir) == [0, 200, 400] and counters(run_dir) == state


def test_relative_prior_path_is_read_from_where_a_sweep_started(pipeline):
    launch = pipeline / "sweep"
    launch.mkdir()
    rc, stdout, stderr = run_command(train_command("no_prior", "spirl_cl"), launch, "max_samples=100", "seed=1",
                                     "-m")
    assert rc == 0, stderr
    (job,) = [path.parent for path in (launch / "multirun").rglob("config.yaml")]  # the job ran in its own folder
    assert job.name == "agent=no_prior,max_samples=100,profile=tiny,seed=1"
    assert counters(job)["n_samples"] == 100 and eval_samples(job) == [0, 100]
    skill_model = Path(OmegaConf.load(job / "config.yaml").agent.skill_model)
    assert skill_model.resolve() == prior_path(pipeline, "spirl_cl").resolve()


@pytest.mark.parametrize("agent", ["spirl_cl", "skill_critic"])
def test_run_stopped_by_sigterm_resumes_and_finishes(pipeline, agent):
    run_dir = pipeline / f"{agent}_stopped"
    run_dir.mkdir()
    command, longer = train_command(agent, agent), ("max_samples=1000", "eval.interval=300")
    proc = run_command(command, run_dir, *longer, wait=False)
    stdout, _ = stop_after_first_checkpoint(proc, run_dir)
    assert "stopped by a signal" in stdout
    stopped_at = counters(run_dir)["n_samples"]
    assert 300 <= stopped_at < 1000

    rc, stdout, stderr = run_command(command, run_dir, *longer)
    assert rc == 0, stderr
    assert f"resuming from checkpoint.pt at {stopped_at} samples" in stdout
    samples = eval_samples(run_dir)
    assert samples == sorted(set(samples)) == [0, 300, 600, 900, 1000]  # none lost or repeated
    assert counters(run_dir)["n_samples"] == 1000


# ------------------------------------------------------------------------------------------------ one-line errors


# name -> (arguments after ``python -m hsd3_learn.spirl.train``, what its one line must say); {kind}: that prior
BAD_COMMAND_LINES = {
    "no-agent": (("prior.init_from={spirl}",), ["You must specify 'agent'", "no_prior, skill_critic, spirl, spirl_cl"]),
    "no-prior": (("agent=spirl",), ["missing config value: prior.init_from"]),
    "no-file": (("agent=spirl", "prior.init_from=nowhere/checkpoint-prior.pt"),
                ["prior.init_from: no file '{cwd}/nowhere/checkpoint-prior.pt'", "hsd3_learn.spirl.train_prior"]),
    "wrong-kind": (("agent=spirl", "prior.init_from={spirl_cl}"),
                   ["agent=spirl needs a 'spirl' skill model", "is a 'spirl_cl' one", "model=spirl"]),
    "counting-time": (("agent=spirl", "prior.init_from={spirl}", "env.wrappers=[time:5]"),
                      ["'time' without an interval"]),
    "unknown-task": (("agent=spirl", "prior.init_from={spirl}", "env.task=Nope"), ["unknown task 'Nope'", "Hurdles"]),
    "other-config": (("-cn", "walker_sac", "agent=spirl", "prior.init_from={spirl}"),
                     ["runs the 'train' config only; got -cn walker_sac"]),
    "unknown-key": (("agent=spirl", "prior.init_from={spirl}", "agent.nope=1"), ["unknown key 'agent.nope'"]),
}


@pytest.fixture(scope="module")
def bad_runs(pipeline, tmp_path_factory) -> dict[str, tuple[int, str, Path]]:
    """Each of :data:`BAD_COMMAND_LINES` in a folder of its own: exit status, stderr, folder. Each fails within
    seconds of starting, so they all start together."""
    priors = {kind: prior_path(pipeline, kind) for kind in KINDS}
    started = {}
    for name, (arguments, _) in BAD_COMMAND_LINES.items():
        cwd = tmp_path_factory.mktemp(name)
        argv = [argument.format(**priors) for argument in arguments]
        started[name] = cwd, run_command(f"python -m {PROG}", cwd, *argv, "profile=tiny", wait=False)  # -cn first
    results = {}
    for name, (cwd, proc) in started.items():
        _, stderr = proc.communicate(timeout=120)
        results[name] = proc.returncode, stderr, cwd
    return results


@pytest.mark.parametrize("name", list(BAD_COMMAND_LINES))
def test_bad_command_lines_fail_with_one_line_before_training(bad_runs, name):
    rc, stderr, cwd = bad_runs[name]
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert rc == 1 and len(lines) == 1 and lines[0].startswith(f"{PROG}: error: "), stderr
    for message in BAD_COMMAND_LINES[name][1]:
        assert message.format(cwd=cwd) in lines[0], lines[0]
    assert list(cwd.iterdir()) == []  # no config.yaml, checkpoint or eval.csv


# ------------------------------------------------------------------------------------------------ configs


def compose_train(*overrides: str):
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose(config_name=CONFIG_NAME, overrides=list(overrides))


@pytest.mark.parametrize("agent", list(AGENTS))
@pytest.mark.parametrize("profile", ["tiny", "laptop", "paper"])
def test_every_profile_and_agent_composes_to_a_valid_agent_config(profile, agent):
    cfg = compose_train(f"agent={agent}", f"profile={profile}", "prior.init_from=x")
    check_config(cfg, agents=AGENTS)
    options = OmegaConf.to_container(cfg.agent, resolve=True)
    assert options.pop("name") == agent
    config = make_config(CONFIG_CLASSES[agent], options)
    assert type(config) is CONFIG_CLASSES[agent] and config.skill_model == "x" and config.device == cfg.device
    assert with_time_wrapper(cfg.env.wrappers) == ["time"]
    assert cfg.max_samples == {"tiny": 400, "laptop": 100_000, "paper": 1_000_000}[profile]
    if agent == "skill_critic":
        assert config.warm_start_samples == {"tiny": 200, "laptop": 10_000, "paper": 100_000}[profile]


def test_agent_registry_and_skill_kinds_agree():
    assert set(AGENTS) == set(SKILL_KINDS) == set(PRIOR_OF)
    assert {SKILL_KINDS[agent] for agent in AGENTS} == {None, *KINDS}
    assert all(SKILL_KINDS[agent] in (None, kind) for agent, kind in PRIOR_OF.items())


@pytest.mark.parametrize("agent", list(AGENTS))
def test_prepare_spirl_run_builds_the_agent_and_adds_the_time_wrapper(pipeline, tmp_path, agent):
    cfg = compose_train(f"agent={agent}", "profile=tiny", f"prior.init_from={prior_path(pipeline, PRIOR_OF[agent])}",
                        "env.wrappers=[]", "device=cpu")
    setup = prepare_spirl_run(cfg, tmp_path)
    try:
        assert type(setup.agent) is AGENT_CLASSES[agent] and not setup.resumed
        assert list(setup.cfg.env.wrappers) == ["time"] and "time" in setup.envs.single_observation_space.spaces
        assert OmegaConf.load(tmp_path / "config.yaml").env.wrappers == ["time"]
    finally:
        setup.close()


# ------------------------------------------------------------------------------------------------ time wrapper


@pytest.mark.parametrize("wrappers, expected", [
    ([], ["time"]),
    (["time"], ["time"]),
    (["reward_acc"], ["time", "reward_acc"]),
    (["reward_acc", "time"], ["reward_acc", "time"]),
])
def test_with_time_wrapper_puts_time_first_only_where_it_is_missing(wrappers, expected):
    given = list(wrappers)
    assert with_time_wrapper(wrappers) == expected
    assert wrappers == given  # the caller's list is left alone


def test_with_time_wrapper_takes_hydra_lists_and_refuses_a_counting_time():
    result = with_time_wrapper(OmegaConf.create(["reward_acc"]))
    assert result == ["time", "reward_acc"] and type(result) is list
    for wrappers in (["time:5"], ["time", "time:10"]):
        with pytest.raises(ValueError, match=r"'time' without an interval \(the episode step\); got \[.*'time:"):
            with_time_wrapper(wrappers)
