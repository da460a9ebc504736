"""Tests for autograder.checks.blocks: every check passes on the reference, catches a realistic mistake with a
useful message, lets the student's NotImplementedError through, and writes nothing to stderr."""

import math

import pytest
import torch
from torch import distributions as D
from torch import nn
from torch.nn import functional as F

from autograder.checks import blocks as check
from autograder.core import CheckFailed
from hsd3_learn.models import blocks, factory


def reference_log_prob(u: torch.Tensor, mu: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """The notebook's solution of exercise 1."""
    return D.Normal(mu, std).log_prob(u) - 2.0 * (math.log(2.0) - u - F.softplus(-2.0 * u))


# --------------------------------------------------------------------------------------------------------------
# Broken implementations: the mistakes students make


def log_prob_without_correction(u, mu, std):
    return D.Normal(mu, std).log_prob(u)


def log_prob_naive(u, mu, std):
    return D.Normal(mu, std).log_prob(u) - torch.log(1 - torch.tanh(u) ** 2)


def log_prob_summed(u, mu, std):
    return reference_log_prob(u, mu, std).sum(-1)


class TanhNormalWithoutCache(blocks.TanhNormal):
    def __init__(self, loc, scale):
        D.TransformedDistribution.__init__(self, D.Normal(loc, scale), [D.TanhTransform()], validate_args=False)


class TanhNormalMeanIsMu(blocks.TanhNormal):
    @property
    def mean(self):
        return self.base_dist.loc


class GaussianUnclamped(blocks.GaussianFromEmbedding):
    def forward(self, emb):
        return blocks.TanhNormal(self.mu(emb), self.log_std(emb).exp())


class SkipInputFirst(blocks.SkipNetwork):
    def forward(self, x):
        y = F.relu(self.layers[0](x))
        for layer in self.layers[1:]:
            y = F.relu(layer(torch.cat([x, y], dim=-1)))
        return y


class GroupedLinearGroupsFirst(blocks.GroupedLinear):
    def forward(self, x):
        return torch.baddbmm(self.bias, x.transpose(0, 1), self.weight)  # forgot to transpose back


class DoubleQNotSqueezed(blocks.SkipDoubleQNetwork):
    def forward(self, x):
        return super().forward(x).unsqueeze(-1)


class DoubleQRandomOutput(blocks.SkipDoubleQNetwork):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        nn.init.normal_(self.out.weight)


class MultiHeadWrongLayout(blocks.MultiHeadGaussianFromEmbedding):
    def forward(self, emb, task=None):
        mu = self.mu(emb).view(-1, self.n_out, self.n_heads).transpose(1, 2)
        log_std = self.log_std(emb).view(-1, self.n_out, self.n_heads).transpose(1, 2)
        if task is not None:
            rows = torch.arange(mu.shape[0])
            index = blocks.task_index(task, self.n_heads)
            mu, log_std = mu[rows, index], log_std[rows, index]
        return blocks._tanh_normal(mu, log_std, self.log_std_min, self.log_std_max)


class ExpandSubgoalMajor(blocks.ExpandTaskSubgoal):
    def forward(self, action):
        subgoal = action[self.subgoal_key]
        onehot = F.one_hot(blocks.task_index(action[self.task_key], self.n_tasks), self.n_tasks).to(subgoal.dtype)
        return (subgoal.unsqueeze(-1) * onehot.unsqueeze(-2)).flatten(start_dim=1)


def critic_not_squeezed(name, obs_space, action_space, *, width, dict_obs, n_critics, skip=True, n_layers=4,
                        task_subgoal=False):
    model = factory.critic(name, obs_space, action_space, width=width, dict_obs=dict_obs, n_critics=n_critics,
                           skip=skip, n_layers=n_layers, task_subgoal=task_subgoal)
    if n_critics == 1:
        model.net = model.net[:2]  # drops SqueezeLastDim: q is [B, 1]
    return model


def make_model_shared_spaces(cfg, obs_space, action_space):
    """Recurses with the parent's spaces instead of each child's."""
    if isinstance(cfg, str) or "name" in cfg:
        return factory.make_model(cfg, obs_space, action_space)
    return nn.ModuleDict({key: make_model_shared_spaces(sub, obs_space, action_space) for key, sub in cfg.items()})


def make_model_plain_dict(cfg, obs_space, action_space):
    if isinstance(cfg, str) or "name" in cfg:
        return factory.make_model(cfg, obs_space, action_space)
    return {key: factory.make_model(sub, obs_space, action_space) for key, sub in cfg.items()}


# --------------------------------------------------------------------------------------------------------------
# Table of checks: reference, broken versions with the expected message, and a stub


class StubModule(nn.Module):
    def __init__(self, *args, **kwargs):
        raise NotImplementedError()


def stub_function(*args, **kwargs):
    raise NotImplementedError()


class TanhNormalStub(D.TransformedDistribution):
    def __init__(self, loc, scale):
        raise NotImplementedError()


class SkipNetworkForwardStub(blocks.SkipNetwork):
    def forward(self, x):
        raise NotImplementedError()


CHECKS = {
    "tanh_gaussian_log_prob": (check.tanh_gaussian_log_prob, reference_log_prob, stub_function),
    "tanh_normal": (check.tanh_normal, blocks.TanhNormal, TanhNormalStub),
    "gaussian_from_embedding": (check.gaussian_from_embedding, blocks.GaussianFromEmbedding, StubModule),
    "skip_network": (check.skip_network, blocks.SkipNetwork, SkipNetworkForwardStub),
    "grouped_linear": (check.grouped_linear, blocks.GroupedLinear, StubModule),
    "skip_double_q": (check.skip_double_q, blocks.SkipDoubleQNetwork, StubModule),
    "multihead_gaussian": (check.multihead_gaussian, blocks.MultiHeadGaussianFromEmbedding, StubModule),
    "expand_task_subgoal": (check.expand_task_subgoal, blocks.ExpandTaskSubgoal, StubModule),
    "critic": (check.critic, factory.critic, stub_function),
    "make_model": (check.make_model, factory.make_model, stub_function),
}

BROKEN = [
    ("tanh_gaussian_log_prob", log_prob_without_correction, "tanh correction"),
    ("tanh_gaussian_log_prob", log_prob_naive, "stable form"),
    ("tanh_gaussian_log_prob", log_prob_summed, "per action dimension"),
    ("tanh_normal", TanhNormalWithoutCache, "cache_size=1"),
    ("tanh_normal", TanhNormalMeanIsMu, "tanh(mu), not mu"),
    ("gaussian_from_embedding", GaussianUnclamped, "must be clamped"),
    ("skip_network", SkipInputFirst, "concatenation order"),
    ("grouped_linear", GroupedLinearGroupsFirst, "transpose(0, 1) before and after"),
    ("skip_double_q", DoubleQNotSqueezed, "squeeze the last dim"),
    ("skip_double_q", DoubleQRandomOutput, "starts at exactly zero"),
    ("multihead_gaussian", MultiHeadWrongLayout, "K heads first"),
    ("expand_task_subgoal", ExpandSubgoalMajor, "the task comes first"),
    ("critic", critic_not_squeezed, "not [B, 1]"),
    ("make_model", make_model_shared_spaces, "_subspace(obs_space, key"),
    ("make_model", make_model_plain_dict, "should return an nn.Module"),
]


def hidden_kwargs(name):
    return {"edge_cases": True} if name == "make_model" else {"seeds": [10, 11], "edge_cases": True}


@pytest.mark.parametrize("name", sorted(CHECKS))
def test_check_passes_on_the_reference_quietly(name, capfd):
    fn, reference, _ = CHECKS[name]
    fn(reference)
    fn(reference, **hidden_kwargs(name))
    out, err = capfd.readouterr()
    assert err == ""
    assert out.count("PASS") == 2


@pytest.mark.parametrize("name, broken, message", BROKEN, ids=[f"{n}-{b.__name__}" for n, b, _ in BROKEN])
def test_check_catches_a_known_mistake_with_a_hint(name, broken, message, capfd):
    fn = CHECKS[name][0]
    with pytest.raises(CheckFailed) as info:
        fn(broken, **hidden_kwargs(name))
    assert message in str(info.value), str(info.value)
    assert "case:" in str(info.value)
    assert capfd.readouterr().err == ""


@pytest.mark.parametrize("name", sorted(CHECKS))
def test_not_implemented_passes_through(name, capfd):
    fn, _, stub = CHECKS[name]
    with pytest.raises(NotImplementedError):
        fn(stub)
    out, err = capfd.readouterr()
    assert err == "" and "PASS" not in out


def test_failure_message_names_the_output_and_the_worst_element():
    with pytest.raises(CheckFailed) as info:
        check.skip_network(SkipInputFirst)
    first, *rest = str(info.value).splitlines()
    assert first.startswith("SkipNetwork output: max abs error")
    assert any(line.strip().startswith("worst element at index") for line in rest)


def test_module_with_other_parameter_names_is_reported_before_values():
    class Renamed(nn.Module):
        def __init__(self, n_in, n_hid, n_layers=4):
            super().__init__()
            self.body = blocks.SkipNetwork(n_in, n_hid, n_layers)

        def forward(self, x):
            return self.body(x)

    with pytest.raises(CheckFailed, match="parameters differ from the reference") as info:
        check.skip_network(Renamed)
    assert "missing: ['layers.0.bias'" in str(info.value)


def test_student_crash_is_reported_with_the_case():
    class Crashing(blocks.ExpandTaskSubgoal):
        def forward(self, action):
            return action["subgoal"] @ action["task"]

    with pytest.raises(CheckFailed, match="ExpandTaskSubgoal.forward raised RuntimeError") as info:
        check.expand_task_subgoal(Crashing)
    assert "case: seed=0" in str(info.value)


def test_make_model_requires_the_missing_space_error():
    def no_error(cfg, obs_space, action_space):
        if isinstance(cfg, dict) and "hi" in cfg and isinstance(obs_space, dict) and "hi" not in obs_space:
            return nn.ModuleDict()
        return factory.make_model(cfg, obs_space, action_space)

    with pytest.raises(CheckFailed, match="should raise _subspace's ValueError"):
        check.make_model(no_error)
