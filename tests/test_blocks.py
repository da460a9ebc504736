"""Tests for hsd3_learn.models.blocks: distribution heads, D2RL trunks, fused critics and glue modules."""

import math

import numpy as np
import pytest
import torch
from gymnasium import spaces
from torch import distributions as D
from torch import nn
from torch.nn import functional as F

from hsd3_learn.models.blocks import (
    LOG_STD_MAX,
    LOG_STD_MIN,
    BilinearSkipNetwork,
    CategoricalFromEmbedding,
    EinsumBilinear,
    EmbedDiscreteSkill,
    ExpandTaskSubgoal,
    FlattenSpace,
    GaussianFromEmbedding,
    GaussianFromMuLogStd,
    GroupedLinear,
    MultiHeadGaussianFromEmbedding,
    Parallel,
    SkipDoubleQNetwork,
    SkipNetwork,
    SplitTaskInput,
    SqueezeLastDim,
    TanhNormal,
    task_index,
)


def normal_log_density(u: np.ndarray, mu: np.ndarray, std: np.ndarray) -> np.ndarray:
    """log N(u; mu, std^2), written out by hand (float64)."""
    return -0.5 * ((u - mu) / std) ** 2 - np.log(std) - 0.5 * math.log(2 * math.pi)


# --------------------------------------------------------------------------------------------------------------
# TanhNormal


def test_tanh_normal_rsample_shape_range_and_mean():
    mu, std = torch.randn(64, 3), torch.rand(64, 3) + 0.1
    dist = TanhNormal(mu, std)
    a = dist.rsample()
    assert a.shape == (64, 3)
    assert dist.batch_shape == (64, 3) and dist.event_shape == ()
    assert (a.abs() < 1).all()
    assert dist.sample((7,)).shape == (7, 64, 3)
    torch.testing.assert_close(dist.mean, torch.tanh(mu))
    torch.testing.assert_close(dist.loc, mu)


def test_tanh_normal_log_prob_matches_hand_formula_per_dim():
    rng = np.random.default_rng(0)
    mu = rng.normal(size=(4, 3))
    std = rng.uniform(0.2, 1.5, size=(4, 3))
    a = rng.uniform(-0.99, 0.99, size=(4, 3))
    expected = normal_log_density(np.arctanh(a), mu, std) - np.log(1 - a**2)

    dist = TanhNormal(torch.from_numpy(mu), torch.from_numpy(std))
    log_prob = dist.log_prob(torch.from_numpy(a))
    assert log_prob.shape == (4, 3)  # per dimension: callers sum over actions
    np.testing.assert_allclose(log_prob.numpy(), expected, rtol=1e-10, atol=1e-10)


def test_tanh_normal_log_prob_matches_finite_difference_change_of_variables():
    """p(a) = p(u) / |da/du| with da/du estimated by a central difference of tanh."""
    mu = np.array([[0.3, -1.2, 2.0]])
    std = np.array([[0.5, 0.8, 1.3]])
    a = np.array([[0.1, -0.9, 0.97]])
    u = np.arctanh(a)
    h = 1e-5
    da_du = (np.tanh(u + h) - np.tanh(u - h)) / (2 * h)
    reference = normal_log_density(u, mu, std) - np.log(np.abs(da_du))

    log_prob = TanhNormal(torch.from_numpy(mu), torch.from_numpy(std)).log_prob(torch.from_numpy(a))
    np.testing.assert_allclose(log_prob.numpy(), reference, rtol=0, atol=1e-7)


def test_tanh_normal_density_integrates_to_one():
    dist = TanhNormal(torch.tensor([0.3], dtype=torch.float64), torch.tensor([0.5], dtype=torch.float64))
    a = torch.linspace(-1 + 1e-9, 1 - 1e-9, 20001, dtype=torch.float64).unsqueeze(-1)
    density = dist.log_prob(a).exp().squeeze(-1)
    assert torch.trapezoid(density, a.squeeze(-1)).item() == pytest.approx(1.0, abs=1e-4)


def test_tanh_normal_gradcheck_through_rsample_and_log_prob():
    def sample_and_log_prob(mu: torch.Tensor, log_std: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        torch.manual_seed(1)  # same noise on every call of gradcheck
        dist = TanhNormal(mu, log_std.exp())
        a = dist.rsample()
        return a, dist.log_prob(a)

    mu = torch.tensor([[0.2, -0.5], [1.0, 0.0]], dtype=torch.float64, requires_grad=True)
    log_std = torch.tensor([[-0.3, 0.1], [0.4, -1.0]], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(sample_and_log_prob, (mu, log_std))

    fixed_a = torch.tensor([[0.3, -0.6], [0.9, 0.1]], dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda m, s: TanhNormal(m, s.exp()).log_prob(fixed_a), (mu, log_std))

    a, log_prob = sample_and_log_prob(mu, log_std)
    (a.sum() + log_prob.sum()).backward()
    assert mu.grad is not None and (mu.grad != 0).all()
    assert log_std.grad is not None and (log_std.grad != 0).all()


def test_tanh_normal_log_prob_of_saturated_sample_is_finite_and_exact():
    mu = torch.tensor([[20.0, -20.0, 0.0]])
    std = torch.full((1, 3), 0.5)
    dist = TanhNormal(mu, std)
    torch.manual_seed(3)
    a = dist.rsample()
    torch.manual_seed(3)
    u = mu + std * torch.randn(1, 3)  # the pre-tanh value the sample came from
    assert a[0, 0] == 1.0 and a[0, 1] == -1.0  # float32 tanh saturates
    log_prob = dist.log_prob(a)
    assert torch.isfinite(log_prob).all()
    # log(1 - tanh(u)^2) = 2 (log 2 - u - softplus(-2u)), stable for large |u|
    log_det = 2 * (math.log(2) - u - F.softplus(-2 * u))
    expected = D.Normal(mu, std).log_prob(u) - log_det
    torch.testing.assert_close(log_prob, expected)
    # Without the cache (a copy of the tensor) the saturated value has no finite density.
    assert not torch.isfinite(dist.log_prob(a.clone())[0, :2]).any()


# --------------------------------------------------------------------------------------------------------------
# Gaussian and categorical heads


def test_gaussian_from_embedding_shapes_and_parameters():
    head = GaussianFromEmbedding(5, 3)
    emb = torch.randn(4, 5)
    dist = head(emb)
    assert isinstance(dist, TanhNormal)
    assert dist.rsample().shape == (4, 3)
    torch.testing.assert_close(dist.loc, head.mu(emb))
    torch.testing.assert_close(dist.base_dist.scale, head.log_std(emb).exp())
    assert "log_std_range=(-5.0, 2.0)" in repr(head)


@pytest.mark.parametrize("bias, expected_log_std", [(1e4, LOG_STD_MAX), (-1e4, LOG_STD_MIN)])
def test_gaussian_from_embedding_clamps_log_std(bias, expected_log_std):
    head = GaussianFromEmbedding(5, 3)
    with torch.no_grad():
        head.log_std.weight.zero_()
        head.log_std.bias.fill_(bias)
    scale = head(torch.randn(4, 5)).base_dist.scale
    torch.testing.assert_close(scale, torch.full((4, 3), math.exp(expected_log_std)))
    assert (LOG_STD_MIN, LOG_STD_MAX) == (-5.0, 2.0)  # hucc's range


def test_gaussian_from_embedding_custom_log_std_range():
    head = GaussianFromEmbedding(2, 2, log_std_min=-1.0, log_std_max=0.5)
    with torch.no_grad():
        head.log_std.weight.zero_()
        head.log_std.bias.copy_(torch.tensor([-100.0, 100.0]))
    scale = head(torch.zeros(1, 2)).base_dist.scale
    torch.testing.assert_close(scale, torch.tensor([[math.exp(-1.0), math.exp(0.5)]]))


def test_gaussian_from_mu_log_std_splits_and_clamps():
    head = GaussianFromMuLogStd()
    mu = torch.randn(4, 3)
    log_std = torch.tensor([[1e4, -1e4, 0.5]]).expand(4, 3)
    dist = head(torch.cat([mu, log_std], dim=-1))
    assert isinstance(dist, TanhNormal) and dist.batch_shape == (4, 3)
    torch.testing.assert_close(dist.loc, mu)
    expected_scale = torch.tensor([[math.exp(2.0), math.exp(-5.0), math.exp(0.5)]]).expand(4, 3)
    torch.testing.assert_close(dist.base_dist.scale, expected_scale)
    assert "log_std_range=(-5.0, 2.0)" in repr(head)


def test_gaussian_from_mu_log_std_rejects_odd_last_dim():
    with pytest.raises(ValueError, match="last dim must be even"):
        GaussianFromMuLogStd()(torch.zeros(4, 5))


def test_tanh_normal_expand_repeats_the_distribution():
    dist = TanhNormal(torch.randn(4, 2), torch.rand(4, 2) + 0.1)
    expanded = dist.expand(torch.Size([3, 4, 2]))
    assert isinstance(expanded, TanhNormal) and expanded.batch_shape == (3, 4, 2)
    action = dist.rsample().detach()
    torch.testing.assert_close(expanded.log_prob(action.expand(3, 4, 2))[1], dist.log_prob(action))
    torch.testing.assert_close(expanded.mean[2], dist.mean)


def test_categorical_from_embedding():
    head = CategoricalFromEmbedding(6, 4)
    emb = torch.randn(8, 6)
    dist = head(emb)
    assert isinstance(dist, D.Categorical)
    assert dist.batch_shape == (8,) and dist.probs.shape == (8, 4)
    torch.testing.assert_close(dist.probs.sum(-1), torch.ones(8))
    torch.testing.assert_close(dist.probs, torch.softmax(head.logits(emb), dim=-1))
    sample = dist.sample()
    assert sample.shape == (8,) and ((sample >= 0) & (sample < 4)).all()


# --------------------------------------------------------------------------------------------------------------
# task_index and the multi-head Gaussian


def test_task_index_from_index_and_one_hot():
    index = torch.tensor([2, 0, 1], dtype=torch.int32)
    out = task_index(index)
    assert out.dtype == torch.int64
    assert out.tolist() == [2, 0, 1]
    one_hot = F.one_hot(index.long(), 3).float()
    assert task_index(one_hot).tolist() == [2, 0, 1]
    assert task_index(one_hot, n_tasks=3).tolist() == [2, 0, 1]
    assert task_index(index, n_tasks=3).tolist() == [2, 0, 1]
    assert task_index(index.view(3, 1)).tolist() == [2, 0, 1]  # an integer column is an index, not a one-hot


@pytest.mark.parametrize(
    "task, n_tasks, message",
    [
        (torch.tensor([0.0, 1.0]), None, "index \\[B\\] \\(integer\\) or a one-hot"),
        (torch.tensor(1), None, "index \\[B\\]"),
        (torch.zeros(2, 3, 4), None, "got \\(2, 3, 4\\)"),
        (torch.zeros(2, 4), 3, "has 4 entries; expected 3"),
    ],
)
def test_task_index_rejects_bad_shapes(task, n_tasks, message):
    with pytest.raises(ValueError, match=message) as info:
        task_index(task, n_tasks)
    assert "\n" not in str(info.value)


def test_multihead_gaussian_selects_the_task_head():
    head = MultiHeadGaussianFromEmbedding(6, 2, n_heads=3)
    emb = torch.randn(5, 6)
    task = torch.tensor([0, 2, 1, 2, 0])
    all_heads = head(emb)
    assert all_heads.batch_shape == (5, 3, 2)
    picked = head(emb, task)
    assert picked.batch_shape == (5, 2)
    rows = torch.arange(5)
    torch.testing.assert_close(picked.loc, all_heads.loc[rows, task])
    torch.testing.assert_close(picked.base_dist.scale, all_heads.base_dist.scale[rows, task])
    # The slice for head k is columns k*A:(k+1)*A of the mean layer.
    torch.testing.assert_close(picked.loc[1], head.mu(emb)[1, 4:6])

    by_one_hot = head(emb, F.one_hot(task, 3).float())
    torch.testing.assert_close(by_one_hot.loc, picked.loc)
    torch.testing.assert_close(by_one_hot.base_dist.scale, picked.base_dist.scale)
    assert "n_heads=3, n_out=2" in repr(head)


def test_multihead_gaussian_clamps_and_checks_one_hot_width():
    head = MultiHeadGaussianFromEmbedding(4, 2, n_heads=3)
    with torch.no_grad():
        head.log_std.weight.zero_()
        head.log_std.bias.fill_(-1e4)
    scale = head(torch.randn(2, 4), torch.tensor([1, 2])).base_dist.scale
    torch.testing.assert_close(scale, torch.full((2, 2), math.exp(-5.0)))
    with pytest.raises(ValueError, match="expected 3"):
        head(torch.randn(2, 4), torch.zeros(2, 4))


# --------------------------------------------------------------------------------------------------------------
# Trunks and critics


def test_skip_network_matches_d2rl_recurrence():
    net = SkipNetwork(5, 7, n_layers=3)
    assert len(net.layers) == 3
    assert net.layers[0].in_features == 5 and net.layers[1].in_features == 12 and net.layers[2].in_features == 12
    x = torch.randn(4, 5)
    w, b = [layer.weight for layer in net.layers], [layer.bias for layer in net.layers]
    y = torch.relu(x @ w[0].T + b[0])
    y = torch.relu(torch.cat([y, x], dim=1) @ w[1].T + b[1])
    y = torch.relu(torch.cat([y, x], dim=1) @ w[2].T + b[2])
    out = net(x)
    assert out.shape == (4, 7)
    torch.testing.assert_close(out, y)


def test_skip_network_default_depth_and_errors():
    assert len(SkipNetwork(3, 8).layers) == 4
    one = SkipNetwork(3, 8, n_layers=1)
    x = torch.randn(2, 3)
    torch.testing.assert_close(one(x), torch.relu(one.layers[0](x)))
    with pytest.raises(ValueError, match="n_layers >= 1; got 0"):
        SkipNetwork(3, 8, n_layers=0)


def test_grouped_linear_equals_separate_and_block_diagonal_layers():
    layer = GroupedLinear(4, 3, groups=5)
    assert layer.weight.shape == (5, 4, 3) and layer.bias.shape == (5, 1, 3)
    bound = 1 / math.sqrt(4)
    assert layer.weight.abs().max() <= bound and layer.bias.abs().max() <= bound
    x = torch.randn(6, 5, 4)
    out = layer(x)
    assert out.shape == (6, 5, 3)
    separate = torch.stack([x[:, k] @ layer.weight[k] + layer.bias[k, 0] for k in range(5)], dim=1)
    torch.testing.assert_close(out, separate)
    block = torch.block_diag(*layer.weight)  # [K*D, K*H]
    flat = x.reshape(6, 20) @ block + layer.bias.reshape(-1)
    torch.testing.assert_close(out, flat.reshape(6, 5, 3))
    assert "groups=5" in repr(layer)


def _perturb_output(net: SkipDoubleQNetwork) -> None:
    with torch.no_grad():
        net.out.weight.normal_()
        net.out.bias.normal_()


def test_skip_double_q_shape_and_zero_init():
    net = SkipDoubleQNetwork(5, 8)
    out = net(torch.randn(7, 5))
    assert out.shape == (7, 2)
    assert (out == 0).all()
    assert (net.out.weight == 0).all() and (net.out.bias == 0).all()
    assert len(net.layers) == 4
    assert SkipDoubleQNetwork(5, 8, n_critics=3)(torch.randn(2, 5)).shape == (2, 3)
    assert "n_critics=2, skip=True" in repr(net)


def test_skip_double_q_each_critic_is_a_d2rl_network():
    net = SkipDoubleQNetwork(5, 8, n_layers=3)
    _perturb_output(net)
    x = torch.randn(4, 5)
    out = net(x)
    for k in range(2):
        single = SkipNetwork(5, 8, n_layers=3)
        with torch.no_grad():
            for mine, fused in zip(single.layers, net.layers):
                mine.weight.copy_(fused.weight[k].T)
                mine.bias.copy_(fused.bias[k, 0])
        expected = single(x) @ net.out.weight[k, :, 0] + net.out.bias[k, 0, 0]
        torch.testing.assert_close(out[:, k], expected)


def test_skip_double_q_critics_are_independent():
    net = SkipDoubleQNetwork(5, 8)
    _perturb_output(net)
    x = torch.randn(4, 5)
    before = net(x)
    with torch.no_grad():
        for layer in [*net.layers, net.out]:
            layer.weight[0].add_(1.0)
            layer.bias[0].add_(1.0)
    after = net(x)
    torch.testing.assert_close(after[:, 1], before[:, 1], rtol=0, atol=0)
    assert not torch.allclose(after[:, 0], before[:, 0])


def test_skip_double_q_without_skips_is_a_plain_mlp():
    net = SkipDoubleQNetwork(5, 8, n_layers=3, skip=False)
    assert [layer.n_in for layer in net.layers] == [5, 8, 8]
    _perturb_output(net)
    x = torch.randn(4, 5)
    out = net(x)
    for k in range(2):
        y = x
        for layer in net.layers:
            y = torch.relu(y @ layer.weight[k] + layer.bias[k, 0])
        torch.testing.assert_close(out[:, k], y @ net.out.weight[k, :, 0] + net.out.bias[k, 0, 0])
    assert "skip=False" in repr(net)


def test_skip_double_q_gradients_reach_every_layer():
    net = SkipDoubleQNetwork(5, 8)
    x = torch.randn(16, 5)
    net(x).sum().backward()
    assert all((layer.weight.grad == 0).all() for layer in net.layers)  # zero output layer blocks the signal
    assert (net.out.weight.grad != 0).any()
    net.zero_grad()
    _perturb_output(net)
    net(x).sum().backward()
    for name, param in net.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name
        for k in range(2):
            assert param.grad[k].abs().sum() > 0, (name, k)


def test_einsum_bilinear_equals_torch_bilinear():
    layer = EinsumBilinear(4, 3, 5)
    assert layer.weight.shape == (5, 4, 3)
    x1, x2 = torch.randn(6, 4), torch.randn(6, 3)
    out = layer(x1, x2)
    assert out.shape == (6, 5)
    torch.testing.assert_close(out, F.bilinear(x1, x2, layer.weight, layer.bias))
    no_bias = EinsumBilinear(4, 3, 5, bias=False)
    assert no_bias.bias is None
    torch.testing.assert_close(no_bias(x1, x2), F.bilinear(x1, x2, no_bias.weight))
    assert "in1_features=4, in2_features=3, out_features=5, bias=True" in repr(layer)


def test_einsum_bilinear_with_one_hot_is_a_per_task_linear_layer():
    layer = EinsumBilinear(4, 3, 5)
    x = torch.randn(6, 4)
    task = torch.tensor([0, 1, 2, 2, 1, 0])
    out = layer(x, F.one_hot(task, 3).float())
    for b in range(6):
        expected = layer.weight[:, :, task[b]] @ x[b] + layer.bias
        torch.testing.assert_close(out[b], expected)


def test_bilinear_skip_network_shapes_and_recurrence():
    net = BilinearSkipNetwork(5, 3, 8, n_layers=2)
    assert len(net.layers) == 2
    assert net.layers[1].weight.shape == (8, 13, 3)
    x, task = torch.randn(4, 5), F.one_hot(torch.tensor([0, 2, 1, 0]), 3).float()
    out = net(x, task)
    assert out.shape == (4, 8)
    y = torch.relu(net.layers[0](x, task))
    torch.testing.assert_close(out, torch.relu(net.layers[1](torch.cat([y, x], dim=-1), task)))
    assert len(BilinearSkipNetwork(5, 3, 8).layers) == 4


# --------------------------------------------------------------------------------------------------------------
# Glue


def test_flatten_space_matches_gymnasium_flatten():
    space = spaces.Dict({"observation": spaces.Box(-1, 1, (2, 2)), "task": spaces.Discrete(3)})
    space.seed(0)
    samples = [space.sample() for _ in range(4)]
    batch = {
        "observation": torch.as_tensor(np.stack([s["observation"] for s in samples])),
        "task": torch.tensor([int(s["task"]) for s in samples]),
    }
    out = FlattenSpace(space)(batch)
    expected = np.stack([spaces.flatten(space, s) for s in samples])
    assert out.shape == (4, 7)
    np.testing.assert_allclose(out.numpy(), expected, rtol=0, atol=1e-7)
    box = spaces.Box(-1, 1, (3,))
    x = torch.randn(4, 3)
    torch.testing.assert_close(FlattenSpace(box)(x), x)
    assert "space=" in repr(FlattenSpace(box))


def test_split_task_input():
    obs = {"observation": torch.randn(3, 4), "task": torch.tensor([2, 0, 1])}
    rest, task = SplitTaskInput()(obs)
    assert set(rest) == {"observation"}
    assert rest["observation"] is obs["observation"]
    assert task.tolist() == [2, 0, 1]
    _, from_one_hot = SplitTaskInput()({"x": torch.zeros(3, 1), "task": F.one_hot(obs["task"], 3).float()})
    assert from_one_hot.tolist() == [2, 0, 1]
    rest, skill = SplitTaskInput("skill")({"skill": torch.tensor([1]), "task": torch.tensor([0])})
    assert set(rest) == {"task"} and skill.tolist() == [1]
    assert "key='skill'" in repr(SplitTaskInput("skill"))


def test_split_task_input_missing_key():
    with pytest.raises(ValueError, match="no 'task' key; keys: \\['observation'\\]"):
        SplitTaskInput()({"observation": torch.zeros(2, 3)})


def test_expand_task_subgoal_outer_product_layout():
    n_tasks, n_subgoal = 3, 2
    expand = ExpandTaskSubgoal(n_tasks, n_subgoal)
    task = torch.tensor([1, 0, 2, 1])
    subgoal = torch.randn(4, n_subgoal)
    out = expand({"task": task, "subgoal": subgoal})
    assert out.shape == (4, n_tasks * n_subgoal)
    for b in range(4):
        k = int(task[b])
        torch.testing.assert_close(out[b, k * n_subgoal : (k + 1) * n_subgoal], subgoal[b])
        others = torch.cat([out[b, : k * n_subgoal], out[b, (k + 1) * n_subgoal :]])
        assert (others == 0).all()
    from_one_hot = expand({"task": F.one_hot(task, n_tasks).float(), "subgoal": subgoal})
    torch.testing.assert_close(from_one_hot, out)
    torch.testing.assert_close(expand({"task": task.view(4, 1), "subgoal": subgoal}), out)  # integer column
    with pytest.raises(ValueError, match="one-hot has 4 entries; expected 3"):
        expand({"task": torch.zeros(4, 4), "subgoal": subgoal})
    custom = ExpandTaskSubgoal(n_tasks, n_subgoal, task_key="f", subgoal_key="g")
    torch.testing.assert_close(custom({"f": task, "g": subgoal}), out)
    assert "n_tasks=3, n_subgoal=2" in repr(expand)


def test_embed_discrete_skill():
    embed = EmbedDiscreteSkill(4, 3)
    skill = torch.tensor([3, 0, 2])
    other = torch.randn(3, 5)
    out = embed({"task": skill, "observation": other})
    assert out["observation"] is other
    assert out["task"].shape == (3, 3)
    expected = torch.tanh(embed.embed.weight[:, skill].T)  # column k of W is skill k's code
    torch.testing.assert_close(out["task"], expected)
    from_one_hot = embed({"task": F.one_hot(skill, 4).float(), "observation": other})
    torch.testing.assert_close(from_one_hot["task"], out["task"])
    torch.testing.assert_close(embed({"task": skill.view(3, 1), "observation": other})["task"], out["task"])
    assert embed.embed.bias is None
    assert "key='task'" in repr(embed)


def test_parallel_applies_every_branch_to_the_same_inputs():
    first, second = nn.Linear(3, 2), nn.Linear(3, 4)
    x = torch.randn(5, 3)
    out = Parallel(first, second)(x)
    assert isinstance(out, tuple) and len(out) == 2
    torch.testing.assert_close(out[0], first(x))
    torch.testing.assert_close(out[1], second(x))
    bilinear = EinsumBilinear(3, 2, 1)
    both = Parallel(bilinear, bilinear)(x, torch.randn(5, 2))
    torch.testing.assert_close(both[0], both[1])
    assert len(list(Parallel(first, second).parameters())) == 4


def test_squeeze_last_dim():
    squeeze = SqueezeLastDim()
    assert squeeze(torch.randn(5, 1)).shape == (5,)
    assert squeeze(torch.randn(2, 5, 1)).shape == (2, 5)
    x = torch.randn(5, 1)
    torch.testing.assert_close(squeeze(x), x[:, 0])
