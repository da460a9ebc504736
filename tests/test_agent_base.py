"""Tests for hsd3_learn.agents.base: configs, RNG capture, checkpoints, mode switch and metric logging."""

import random
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from torch import nn

from hsd3_learn.agents.base import Agent, METRIC_NAMESPACES, capture_rng_state, make_config, restore_rng_state
from hsd3_learn.replaybuffer import ReplayBuffer


@dataclass
class ToyConfig:
    lr: float = 0.1
    width: int = 4


class ToyAgent(Agent):
    """A linear policy with every kind of checkpointable attribute the base class supports."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__(torch.device("cpu"))
        torch.manual_seed(seed)
        self.net = nn.Linear(2, 1)
        self.optims = {"net": torch.optim.Adam(self.net.parameters(), lr=0.1)}
        self.log_alpha = torch.zeros((), requires_grad=True)
        self.buffer = ReplayBuffer(4)
        self.since_update = 0
        self.set_checkpoint_attr("net", "optims", "log_alpha", "buffer", "since_update")

    def action(self, obs: torch.Tensor, explore: bool) -> torch.Tensor:
        return self.net(obs) + (torch.randn(obs.shape[0], 1) if explore else 0)

    def observe(self, obs, action, reward, terminated, truncated, next_obs, info=None) -> dict[str, float]:
        self.buffer.put_row({"obs": obs, "reward": reward})
        self.n_steps += 1
        self.n_samples += obs.shape[0]
        self.since_update += 1
        return {}

    def update(self) -> dict[str, torch.Tensor]:
        batch = self.buffer.get_batch(2)
        loss = (self.net(batch["obs"]).squeeze(1) - batch["reward"]).pow(2).mean() + self.log_alpha.pow(2)
        self.optims["net"].zero_grad()
        loss.backward()
        self.optims["net"].step()
        self.n_updates += 1
        return {"train/loss": loss.detach()}


def trained_toy() -> ToyAgent:
    agent = ToyAgent(seed=1)
    for step in range(3):
        agent.observe(torch.full((1, 2), float(step)), None, torch.tensor([1.0]), None, None, None)
        agent.update()
    with torch.no_grad():
        agent.log_alpha.fill_(0.5)
    return agent


class FakeWriter:
    def __init__(self) -> None:
        self.scalars: list[tuple[str, float, int]] = []

    def add_scalar(self, tag: str, value: float, step: int) -> None:
        self.scalars.append((tag, value, step))


# ------------------------------------------------------------------------------------------------ make_config


def test_make_config_from_none_instance_and_mapping():
    assert make_config(ToyConfig, None) == ToyConfig()
    given = ToyConfig(lr=0.5)
    assert make_config(ToyConfig, given) is given
    assert make_config(ToyConfig, {"width": 8}) == ToyConfig(width=8)


def test_make_config_from_omegaconf():
    from omegaconf import OmegaConf

    assert make_config(ToyConfig, OmegaConf.create({"lr": 0.25})) == ToyConfig(lr=0.25)


def test_make_config_rejects_unknown_keys_and_types():
    with pytest.raises(ValueError, match=r"unknown keys \['widht'\]; valid keys: lr, width"):
        make_config(ToyConfig, {"widht": 3})
    with pytest.raises(TypeError, match="expected None, an instance or a mapping; got int"):
        make_config(ToyConfig, 3)


# ------------------------------------------------------------------------------------------------ RNG state


def draw_all() -> tuple:
    return random.random(), float(np.random.rand()), np.random.randn(), torch.rand(3).tolist()


def test_rng_state_round_trip_through_a_weights_only_file(tmp_path):
    np.random.randn()  # leaves a cached Gaussian in NumPy's state
    torch.save(capture_rng_state(), tmp_path / "rng.pt")
    expected = draw_all()
    draw_all()
    restore_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True))
    assert draw_all() == expected


# ------------------------------------------------------------------------------------------------ declaration


def test_agent_is_abstract():
    with pytest.raises(TypeError, match="abstract"):
        Agent(torch.device("cpu"))


def test_set_checkpoint_attr_rejects_missing_duplicate_and_unsupported():
    agent = ToyAgent()
    with pytest.raises(ValueError, match="has no attribute 'nope' to checkpoint"):
        agent.set_checkpoint_attr("nope")
    with pytest.raises(ValueError, match="'net' is declared twice"):
        agent.set_checkpoint_attr("net")
    agent.odd = object()
    with pytest.raises(TypeError, match="'odd' has type object; valid: objects with state_dict"):
        agent.set_checkpoint_attr("odd")


def test_train_and_eval_switch_the_checkpointed_modules():
    agent = ToyAgent()
    agent.eval()
    assert not agent.training and not agent.net.training
    agent.train()
    assert agent.training and agent.net.training


# ------------------------------------------------------------------------------------------------ checkpoints


def assert_same_agent(a: ToyAgent, b: ToyAgent) -> None:
    for key, value in a.net.state_dict().items():
        assert torch.equal(value, b.net.state_dict()[key])
    state_a, state_b = a.optims["net"].state_dict()["state"], b.optims["net"].state_dict()["state"]
    for index in state_a:
        for key in ("step", "exp_avg", "exp_avg_sq"):
            assert torch.equal(state_a[index][key], state_b[index][key])
    assert torch.equal(a.log_alpha, b.log_alpha)
    assert (a.n_samples, a.n_steps, a.n_updates, a.since_update) == (b.n_samples, b.n_steps, b.n_updates,
                                                                       b.since_update)


def test_checkpoint_file_round_trip_restores_everything_and_the_rng(tmp_path):
    agent = trained_toy()
    agent.eval()
    agent.save_checkpoint(tmp_path / "ckpt.pt")
    expected_action = agent.action(torch.ones(2, 2), explore=True)
    expected_update = agent.update()["train/loss"]

    fresh = ToyAgent(seed=2)
    fresh.load_checkpoint(tmp_path / "ckpt.pt")
    assert fresh.log_alpha.requires_grad and fresh.log_alpha.item() == 0.5
    assert fresh.optims["net"].param_groups[0]["params"][0] is fresh.net.weight  # optimizer still wired
    assert len(fresh.buffer) == 3 and not fresh.training and not fresh.net.training
    assert torch.equal(fresh.action(torch.ones(2, 2), explore=True), expected_action)
    assert torch.equal(fresh.update()["train/loss"], expected_update)  # same batch, same optimizer state
    assert_same_agent(agent, fresh)


def test_checkpoint_without_buffer_keeps_the_current_buffer(tmp_path):
    agent = trained_toy()
    state = agent.checkpoint_state(include_buffer=False)
    assert "buffer" not in state["attrs"] and "net" in state["attrs"]
    fresh = ToyAgent(seed=2)
    fresh.observe(torch.zeros(1, 2), None, torch.zeros(1), None, None, None)
    fresh.load_checkpoint_state(state)
    assert len(fresh.buffer) == 1
    assert fresh.n_samples == 3 and fresh.since_update == 3


def test_loading_a_missing_truncated_or_foreign_file_fails_clearly(tmp_path):
    with pytest.raises(FileNotFoundError, match="checkpoint .*missing.pt' does not exist"):
        ToyAgent().load_checkpoint(tmp_path / "missing.pt")
    trained_toy().save_checkpoint(tmp_path / "ckpt.pt")
    data = (tmp_path / "ckpt.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="cannot read checkpoint .*cut.pt.*: truncated or not a torch file"):
        ToyAgent().load_checkpoint(tmp_path / "cut.pt")
    (tmp_path / "text.pt").write_text("hello")
    with pytest.raises(ValueError, match="truncated or not a torch file"):
        ToyAgent().load_checkpoint(tmp_path / "text.pt")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="is not an agent checkpoint"):
        ToyAgent().load_checkpoint(tmp_path / "other.pt")


def test_loading_another_agents_or_an_incomplete_state_fails():
    state = trained_toy().checkpoint_state()

    class OtherAgent(ToyAgent):
        pass

    with pytest.raises(ValueError, match="checkpoint is for agent 'ToyAgent', not 'OtherAgent'"):
        OtherAgent().load_checkpoint_state(state)
    del state["attrs"]["log_alpha"]
    with pytest.raises(ValueError, match=r"checkpoint lacks attributes \['log_alpha'\]"):
        ToyAgent().load_checkpoint_state(state)
    state = trained_toy().checkpoint_state()
    del state["attrs"]["optims"]["net"]
    with pytest.raises(ValueError, match=r"checkpoint entry 'optims' lacks keys \['net'\]"):
        ToyAgent().load_checkpoint_state(state)


# ------------------------------------------------------------------------------------------------ logging


def test_log_scalars_prefixes_names_and_defaults_to_n_samples():
    agent = trained_toy()
    agent.writer = FakeWriter()
    agent.log_scalars("", {"train/loss": torch.tensor(0.5), "health/alpha": 0.1})
    agent.log_scalars("eval/", {"return": 2.0}, step=7)
    assert agent.writer.scalars == [("train/loss", 0.5, 3), ("health/alpha", 0.1, 3), ("eval/return", 2.0, 7)]


def test_log_scalars_requires_a_namespace_even_without_writer():
    agent = ToyAgent()
    assert METRIC_NAMESPACES == ("train", "eval", "health")
    agent.log_scalars("train/", {"loss": 1.0})  # no writer: nothing to do, no error
    for prefix, name in (("", "loss"), ("Train/", "loss"), ("", "train")):
        with pytest.raises(ValueError, match="has no namespace; names start with one of train/, eval/, health/"):
            agent.log_scalars(prefix, {name: 1.0})


def test_log_scalars_writes_tensorboard_events(tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    agent = ToyAgent()
    agent.writer = SummaryWriter(log_dir=str(tmp_path))
    agent.log_scalars("health/", {"alpha": 0.1})
    agent.writer.close()
    assert any(path.name.startswith("events.out.tfevents") for path in tmp_path.iterdir())
