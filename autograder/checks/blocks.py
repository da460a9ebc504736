"""Checks for notebook 03_blocks: the tanh-Gaussian, its heads, D2RL trunks, fused critics, the multi-head policy,
the task-subgoal expansion and the model factory.

Modules are built on both sides with the same constructor arguments and the reference ``state_dict`` is loaded into
the student's module (names and shapes are compared first), so outputs and gradients can be compared exactly.
Distributions are compared through their mean, the log-prob of fixed actions, ``rsample`` with the same seed and the
log-prob of that sample; gradients of one fixed scalar built from all of them are compared too.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from gymnasium import spaces
from torch import distributions as D
from torch import nn
from torch.nn import functional as F

from autograder.core import CheckFailed, assert_close, cases, check, describe, run_student, seed_all
from hsd3_learn.models import blocks as ref
from hsd3_learn.models import factory as ref_factory

__all__ = [
    "critic",
    "expand_task_subgoal",
    "gaussian_from_embedding",
    "grouped_linear",
    "make_model",
    "multihead_gaussian",
    "skip_double_q",
    "skip_network",
    "tanh_gaussian_log_prob",
    "tanh_normal",
]

ATOL, RTOL = 1e-5, 1e-5  # float32 outputs computed with the same operations on both sides
GRAD_ATOL, GRAD_RTOL = 1e-5, 1e-4


# --------------------------------------------------------------------------------------------------------------
# Shared helpers


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _matches(got: Any, candidate: torch.Tensor, atol: float = 1e-4, rtol: float = 1e-4) -> bool:
    """Does the student's value equal a known wrong answer (same shape, close values)?"""
    if not isinstance(got, torch.Tensor) or got.shape != candidate.shape:
        return False
    return bool(torch.allclose(got.detach().double(), candidate.detach().double(), atol=atol, rtol=rtol))


def _diagnose(got: Any, mistakes: Sequence[tuple[torch.Tensor, str]]) -> str:
    """The hint of the first known mistake the student's value reproduces, or ''."""
    return next((hint for candidate, hint in mistakes if _matches(got, candidate)), "")


def _construct(cls: type, args: Sequence[Any], kwargs: Mapping[str, Any], case: str) -> nn.Module:
    """Build the student's module; a crash in the constructor is reported with the arguments."""
    name = getattr(cls, "__name__", "module")
    module = run_student(cls, *args, what=f"{name}(...)", case=case, **kwargs)
    if not isinstance(module, nn.Module):
        raise CheckFailed(f"{name}(...) should be an nn.Module; got {type(module).__name__}\n  case: {case}")
    return module


def _load_reference_state(student: nn.Module, reference: nn.Module, what: str, case: str) -> None:
    """Copy the reference weights into the student's module after checking parameter names and shapes."""
    got = {k: tuple(v.shape) for k, v in student.state_dict().items()}
    expected = {k: tuple(v.shape) for k, v in reference.state_dict().items()}
    if got != expected:
        lines = [f"{what}: parameters differ from the reference (keep the given constructor code)", f"  case: {case}"]
        missing, extra = sorted(set(expected) - set(got)), sorted(set(got) - set(expected))
        if missing:
            lines.append(f"  missing: {missing[:6]}")
        if extra:
            lines.append(f"  unexpected: {extra[:6]}")
        wrong = [f"{k} expected {list(expected[k])}, got {list(got[k])}" for k in sorted(set(got) & set(expected))
                 if got[k] != expected[k]]
        if wrong:
            lines.append("  shapes: " + "; ".join(wrong[:3]))
        raise CheckFailed("\n".join(lines))
    student.load_state_dict(reference.state_dict())


def _randomize(module: nn.Module, seed: int, scale: float = 0.5) -> None:
    """Seeded random weights everywhere (so a zero-initialised output layer does not hide the layers before it)."""
    g = _gen(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * scale)


def _weights(shape: torch.Size, seed: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Fixed random weights that turn an output into the scalar whose gradients are compared."""
    return torch.randn(shape, generator=_gen(seed + 7919), dtype=dtype)


def _need_grad(got: torch.Tensor, what: str, case: str) -> None:
    if not got.requires_grad:
        raise CheckFailed(f"{what} has no gradient\n  case: {case}\n"
                          "  hint: compute it with differentiable torch operations (no .detach(), .item(), numpy)")


def _compare_param_grads(student: nn.Module, reference: nn.Module, what: str, case: str) -> None:
    """Gradient of every parameter that the reference's scalar depends on."""
    student_params = dict(student.named_parameters())
    for name, p_ref in reference.named_parameters():
        if p_ref.grad is None:
            continue
        grad = student_params[name].grad
        if grad is None:
            raise CheckFailed(f"{what}: no gradient reached parameter {name!r}\n  case: {case}\n"
                              "  hint: the output must depend on it through differentiable torch operations")
        assert_close(f"{what} gradient w.r.t. {name}", grad, p_ref.grad, atol=GRAD_ATOL, rtol=GRAD_RTOL, case=case)


def _actions(shape: torch.Size, g: torch.Generator, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Fixed actions inside (-0.99, 0.99) for log-prob comparisons."""
    return (torch.rand(shape, generator=g, dtype=dtype) * 2 - 1) * 0.99


def _compare_distributions(
    what: str, got: Any, expected: Any, actions: torch.Tensor, seed: int, case: str, log_prob_mistakes: Sequence = ()
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean, log-prob of fixed actions, rsample with the same seed and the log-prob of that sample.

    Returns (student's, reference's) fixed scalar made of all of them, for the gradient comparison.
    """
    if not isinstance(got, D.Distribution):
        raise CheckFailed(f"{what}: expected a torch.distributions.Distribution, got {type(got).__name__}\n"
                          f"  case: {case}")
    if tuple(got.batch_shape) != tuple(expected.batch_shape):
        raise CheckFailed(f"{what}: batch_shape differs: expected {list(expected.batch_shape)}, got "
                          f"{list(got.batch_shape)}\n  case: {case}")
    got_mean = run_student(lambda: got.mean, what=f"{what}.mean", case=case)
    assert_close(f"{what}.mean", got_mean, expected.mean, atol=ATOL, rtol=RTOL, case=case,
                 hint=_diagnose(got_mean, [(expected.loc, "the deterministic action is tanh(mu), not mu")])
                 or "the mean action is tanh of the Gaussian's mean")
    got_lp = run_student(got.log_prob, actions, what=f"{what}.log_prob", case=case)
    exp_lp = expected.log_prob(actions)
    u = torch.atanh(actions)
    no_correction = D.Normal(expected.loc, expected.base_dist.scale).log_prob(u)
    hint = _diagnose(got_lp, [(no_correction, "this is log N(atanh a): the tanh correction -log(1 - tanh^2 u) is "
                                              "missing (D.TanhTransform adds it)"), *log_prob_mistakes])
    assert_close(f"{what}.log_prob(actions)", got_lp, exp_lp, atol=1e-4, rtol=RTOL, case=case,
                 hint=hint or "log pi(a) = log N(atanh a; mu, sigma) - log(1 - a^2), per dimension")
    torch.manual_seed(seed)
    exp_sample = expected.rsample()
    torch.manual_seed(seed)
    got_sample = run_student(got.rsample, what=f"{what}.rsample()", case=case)
    assert_close(f"{what}.rsample() with the same seed", got_sample, exp_sample, atol=ATOL, rtol=RTOL, case=case,
                 hint="u = mu + sigma * eps from the base Normal's rsample, then a = tanh(u)")
    _need_grad(got_sample, f"{what}.rsample()", case)
    got_own = run_student(got.log_prob, got_sample, what=f"{what}.log_prob(sample)", case=case)
    exp_own = expected.log_prob(exp_sample)
    assert_close(f"{what}.log_prob(rsample())", got_own, exp_own, atol=1e-3, rtol=RTOL, case=case,
                 hint="where tanh saturates (a = +-1 in float32) atanh(a) is inf: cache the pre-tanh value with "
                      "D.TanhTransform(cache_size=1)")
    w = _weights(exp_lp.shape, seed, exp_lp.dtype)
    scalar = lambda lp, sample, own: (lp * w).sum() + (sample * w.flip(0)).sum() + 0.1 * (own * w).sum()  # noqa: E731
    return scalar(got_lp, got_sample, got_own), scalar(exp_lp, exp_sample, exp_own)


# --------------------------------------------------------------------------------------------------------------
# 1. The change of variables by hand


def _log_prob_inputs(seed: int, edge_cases: bool) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """(u, mu, std) triples; the last row of every batch saturates tanh (|u| >= 9)."""
    g = _gen(seed)
    b, a = 3 + seed % 4, 2 + seed % 3
    mu = torch.randn(b, a, generator=g)
    std = torch.empty(b, a).uniform_(-1.0, 0.5, generator=g).exp()
    u = mu + std * torch.randn(b, a, generator=g)
    u[-1] = torch.tensor([9.0, -10.0, 12.0, -12.0])[:a]
    out = [(u, mu, std)]
    if edge_cases:
        out += [
            (u, mu[0], std[0]),  # one Gaussian for the whole batch: mu, std [A]
            (u.double(), mu.double(), std.double()),  # float64
            (torch.zeros(1, a), torch.zeros(1, a), torch.ones(1, a)),  # u = 0: no correction at all
        ]
    return out


@check("tanh_gaussian_log_prob")
def tanh_gaussian_log_prob(student: Callable[..., torch.Tensor], seeds: Any = None, edge_cases: bool = False) -> str:
    """``student(u, mu, std)`` against ``TanhNormal(mu, std).log_prob(tanh(u))`` (pre-tanh value cached): values and
    gradients w.r.t. u, mu and std."""
    n = 0
    for seed in cases(seeds, [0, 1]):
        for u, mu, std in _log_prob_inputs(seed, edge_cases):
            case = f"seed={seed}, u {describe(u)}, mu {describe(mu)}, std {describe(std)}"
            leaves_ref = [t.clone().requires_grad_() for t in (u, mu, std)]
            leaves_student = [t.clone().requires_grad_() for t in (u, mu, std)]
            dist = ref.TanhNormal(leaves_ref[1], leaves_ref[2])
            expected = dist.log_prob(dist.transforms[0](leaves_ref[0]))  # the transform caches u: exact log-prob
            got = run_student(student, *leaves_student, what="tanh_gaussian_log_prob", case=case)
            log_normal = D.Normal(mu, std).log_prob(u)
            log_det = 2.0 * (math.log(2.0) - u - F.softplus(-2.0 * u))
            hint = _diagnose(got, [
                (log_normal, "this is log N(u; mu, std) only: subtract the tanh correction log(1 - tanh(u)^2)"),
                (log_normal + log_det,
                 "sign: a = tanh(u) squeezes space, so log pi(a) = log N(u) MINUS log(1 - tanh^2 u)"),
            ])
            if not hint and isinstance(got, torch.Tensor) and got.shape == expected.shape \
                    and not torch.isfinite(got).all() and torch.isfinite(expected).all():
                hint = ("log(1 - tanh(u)**2) underflows to log(0) = -inf once |u| > 9 in float32; use the stable form "
                        "log(1 - tanh^2 u) = 2 (log 2 - u - softplus(-2u))")
            assert_close("tanh_gaussian_log_prob output", got, expected, atol=1e-4, rtol=RTOL, case=case,
                         hints={"shape": "return one log-prob per action dimension, [B, A] like TanhNormal.log_prob "
                                         "(callers sum over A)",
                                "values": hint or "log pi(a) = log N(u; mu, std) - log(1 - tanh(u)^2), per dimension"})
            _need_grad(got, "tanh_gaussian_log_prob output", case)
            w = _weights(expected.shape, seed, expected.dtype)
            (expected * w).sum().backward()
            (got * w).sum().backward()
            for name, s, r in zip(("u", "mu", "std"), leaves_student, leaves_ref):
                if s.grad is None:
                    raise CheckFailed(f"tanh_gaussian_log_prob: no gradient w.r.t. {name}\n  case: {case}")
                assert_close(f"tanh_gaussian_log_prob gradient w.r.t. {name}", s.grad, r.grad, atol=1e-4, rtol=1e-4,
                             case=case)
            n += 1
    return f"{n} cases (saturated rows included), values and gradients match"


# --------------------------------------------------------------------------------------------------------------
# 2. TanhNormal and the Gaussian head


def _tanh_normal_inputs(seed: int, edge_cases: bool) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(loc, scale); the last row has |loc| = 8 and a small scale, so its samples saturate to +-1."""
    g = _gen(seed)
    b, a = 3 + seed % 3, 2 + seed % 3
    loc = torch.randn(b, a, generator=g)
    scale = torch.empty(b, a).uniform_(-2.0, 0.5, generator=g).exp()
    loc[-1] = 8.0 * torch.tensor([1.0, -1.0, 1.0, -1.0])[:a]
    scale[-1] = 0.05
    out = [(loc, scale)]
    if edge_cases:
        out += [(loc[0], scale[0]), (loc.double(), scale.double()), (loc[:1], scale[:1])]
    return out


@check("TanhNormal")
def tanh_normal(student_cls: type, seeds: Any = None, edge_cases: bool = False) -> str:
    """``student_cls(loc, scale)`` against ``TanhNormal``: mean, log-probs, same-seed rsample, gradients."""
    n = 0
    for seed in cases(seeds, [0, 1]):
        for loc, scale in _tanh_normal_inputs(seed, edge_cases):
            case = f"seed={seed}, loc {describe(loc)}, scale {describe(scale)}"
            loc_r, scale_r = loc.clone().requires_grad_(), scale.clone().requires_grad_()
            loc_s, scale_s = loc.clone().requires_grad_(), scale.clone().requires_grad_()
            expected = ref.TanhNormal(loc_r, scale_r)
            got = run_student(student_cls, loc_s, scale_s, what="TanhNormal(loc, scale)", case=case)
            actions = _actions(loc.shape, _gen(seed + 1), loc.dtype)
            got_scalar, exp_scalar = _compare_distributions("TanhNormal", got, expected, actions, seed, case)
            exp_scalar.backward()
            got_scalar.backward()
            for name, s, r in (("loc", loc_s, loc_r), ("scale", scale_s, scale_r)):
                if s.grad is None:
                    raise CheckFailed(f"TanhNormal: no gradient w.r.t. {name}\n  case: {case}")
                assert_close(f"TanhNormal gradient w.r.t. {name}", s.grad, r.grad, atol=1e-4, rtol=1e-4, case=case)
            n += 1
    return f"{n} distributions: mean, log_prob, rsample and gradients match"


@check("GaussianFromEmbedding")
def gaussian_from_embedding(student_cls: type, seeds: Any = None, edge_cases: bool = False) -> str:
    """Same weights on both sides; log-std biases in [-9, 5] so that the clamp to [min, max] matters."""
    n = 0
    for seed in cases(seeds, [0, 1]):
        b, n_in, n_out = 4 + seed % 3, 3 + seed % 4, 2 + seed % 3
        configs = [{}]
        if edge_cases:
            configs += [{"log_std_min": -2.0, "log_std_max": 0.5}]
        for kwargs in configs:
            options = "".join(f", {k}={v}" for k, v in kwargs.items())
            case = f"seed={seed}, GaussianFromEmbedding({n_in}, {n_out}{options})"
            seed_all(seed)
            reference = ref.GaussianFromEmbedding(n_in, n_out, **kwargs)
            with torch.no_grad():
                reference.log_std.bias.uniform_(-9.0, 5.0, generator=_gen(seed))
            student = _construct(student_cls, (n_in, n_out), kwargs, case)
            _load_reference_state(student, reference, "GaussianFromEmbedding", case)
            emb = torch.randn(b, n_in, generator=_gen(seed + 2))
            emb_r, emb_s = emb.clone().requires_grad_(), emb.clone().requires_grad_()
            expected = reference(emb_r)
            got = run_student(student, emb_s, what="GaussianFromEmbedding.forward", case=case)
            base = getattr(got, "base_dist", None)
            if isinstance(getattr(base, "scale", None), torch.Tensor):
                unclamped = reference.log_std(emb).exp()
                assert_close("GaussianFromEmbedding: sigma of the distribution", base.scale, expected.base_dist.scale,
                             atol=ATOL, rtol=RTOL, case=case,
                             hint=_diagnose(base.scale, [(unclamped, "the log-std must be clamped to "
                                                         "[self.log_std_min, self.log_std_max] before exp()")])
                             or "sigma = exp(clamp(log_std(emb), log_std_min, log_std_max))")
            got_scalar, exp_scalar = _compare_distributions("GaussianFromEmbedding(emb)", got, expected,
                                                            _actions(expected.batch_shape, _gen(seed + 3)), seed, case)
            exp_scalar.backward()
            got_scalar.backward()
            _compare_param_grads(student, reference, "GaussianFromEmbedding", case)
            assert_close("GaussianFromEmbedding gradient w.r.t. the embedding", emb_s.grad, emb_r.grad,
                         atol=GRAD_ATOL, rtol=GRAD_RTOL, case=case)
            n += 1
    return f"{n} heads (clamped log-stds included): distributions and gradients match"


# --------------------------------------------------------------------------------------------------------------
# 3. D2RL trunk


def _skip_forward(layers: Sequence[nn.Module], x: torch.Tensor, input_first: bool = False,
                  final_relu: bool = True) -> torch.Tensor:
    """The D2RL recurrence, optionally with a known mistake: ``cat([x, y])``, or no ReLU after the last layer."""
    y = layers[0](x)
    for layer in layers[1:]:
        y = layer(torch.cat([x, F.relu(y)] if input_first else [F.relu(y), x], dim=-1))
    return F.relu(y) if final_relu else y


@check("SkipNetwork")
def skip_network(student_cls: type, seeds: Any = None, edge_cases: bool = False) -> str:
    """Outputs ``[B, H]`` and gradients (input and every weight) for 1 to 4 layers, reference weights loaded."""
    n = 0
    for seed in cases(seeds, [0, 1]):
        n_in, n_hid, b = 3 + seed % 4, 5 + seed % 3, 4 + seed % 3
        configs = [(n_in, n_hid, 4), (n_in, n_hid, 2)]
        if edge_cases:
            configs += [(n_in, n_hid, 1), (1, 3, 3), (n_in, n_hid, 3, (2, b))]  # one layer; one feature; [T, B, D]
        for n_in_, n_hid_, n_layers, *lead in configs:
            shape = (*(lead[0] if lead else (b,)), n_in_)
            case = f"seed={seed}, SkipNetwork({n_in_}, {n_hid_}, n_layers={n_layers}), x [{', '.join(map(str, shape))}]"
            seed_all(seed)
            reference = ref.SkipNetwork(n_in_, n_hid_, n_layers)
            student = _construct(student_cls, (n_in_, n_hid_, n_layers), {}, case)
            _load_reference_state(student, reference, "SkipNetwork", case)
            x = torch.randn(shape, generator=_gen(seed + 5))
            x_r, x_s = x.clone().requires_grad_(), x.clone().requires_grad_()
            expected = reference(x_r)
            got = run_student(student, x_s, what="SkipNetwork.forward", case=case)
            hint = _diagnose(got, [
                (_skip_forward(reference.layers, x, input_first=True),
                 "concatenation order: each layer after the first reads torch.cat([y, x], dim=-1), hidden features "
                 "first, raw input second (the weights were trained in that order)"),
                (_skip_forward(reference.layers, x, final_relu=False),
                 "every layer, the last one included, is followed by a ReLU"),
            ])
            assert_close("SkipNetwork output", got, expected, atol=ATOL, rtol=RTOL, case=case,
                         hints={"shape": "the output is the last hidden layer, [..., n_hid]",
                                "values": hint or "y1 = relu(W1 x); y_{l+1} = relu(W_{l+1} [y_l, x])"})
            _need_grad(got, "SkipNetwork output", case)
            w = _weights(expected.shape, seed)
            (expected * w).sum().backward()
            (got * w).sum().backward()
            _compare_param_grads(student, reference, "SkipNetwork", case)
            assert_close("SkipNetwork gradient w.r.t. x", x_s.grad, x_r.grad, atol=GRAD_ATOL, rtol=GRAD_RTOL, case=case)
            n += 1
    return f"{n} networks: outputs and gradients match"


# --------------------------------------------------------------------------------------------------------------
# 4. Grouped linear layers and the fused double-Q network


@check("GroupedLinear")
def grouped_linear(student_cls: type, seeds: Any = None, edge_cases: bool = False) -> str:
    """``[B, K, D] -> [B, K, H]`` with reference weights; gradients w.r.t. x, weight and bias."""
    n = 0
    for seed in cases(seeds, [0, 1]):
        configs = [(3 + seed % 3, 4 + seed % 2, 2, 5), (2, 3, 3 + seed % 2, 4)]
        if edge_cases:
            configs += [(4, 1, 2, 3), (3, 2, 1, 2), (5, 3, 2, 1)]  # scalar output; one group; batch of one
        for n_in, n_out, groups, b in configs:
            case = f"seed={seed}, GroupedLinear({n_in}, {n_out}, groups={groups}), x [{b}, {groups}, {n_in}]"
            seed_all(seed)
            reference = ref.GroupedLinear(n_in, n_out, groups)
            student = _construct(student_cls, (n_in, n_out, groups), {}, case)
            _load_reference_state(student, reference, "GroupedLinear", case)
            x = torch.randn(b, groups, n_in, generator=_gen(seed + 11))
            x_r, x_s = x.clone().requires_grad_(), x.clone().requires_grad_()
            expected = reference(x_r)
            got = run_student(student, x_s, what="GroupedLinear.forward", case=case)
            assert_close("GroupedLinear output", got, expected, atol=ATOL, rtol=RTOL, case=case,
                         hints={"shape": "the batched matmul works on [K, B, D]: transpose(0, 1) before and after, so "
                                         "the output is [B, K, H]",
                                "values": "group k: y[:, k] = x[:, k] @ weight[k] + bias[k]; torch.baddbmm(bias, "
                                          "x.transpose(0, 1), weight) does all groups at once"})
            _need_grad(got, "GroupedLinear output", case)
            w = _weights(expected.shape, seed)
            (expected * w).sum().backward()
            (got * w).sum().backward()
            _compare_param_grads(student, reference, "GroupedLinear", case)
            assert_close("GroupedLinear gradient w.r.t. x", x_s.grad, x_r.grad, atol=GRAD_ATOL, rtol=GRAD_RTOL,
                         case=case)
            n += 1
    return f"{n} layers: outputs and gradients match"


def _double_q_input_first(reference: ref.SkipDoubleQNetwork, x: torch.Tensor) -> torch.Tensor:
    """The fused critic with torch.cat([x, y]) in its skips (a known mistake)."""
    xs = x.unsqueeze(1).expand(-1, reference.n_critics, -1)
    y = F.relu(reference.layers[0](xs))
    for layer in reference.layers[1:]:
        y = F.relu(layer(torch.cat([xs, y], dim=-1) if reference.skip else y))
    return reference.out(y).squeeze(-1)


@check("SkipDoubleQNetwork")
def skip_double_q(student_cls: type, seeds: Any = None, edge_cases: bool = False) -> str:
    """A fresh module outputs exactly 0; with random reference weights loaded, ``[B, n_critics]`` outputs and
    gradients match (D2RL and plain-MLP variants)."""
    n = 0
    for seed in cases(seeds, [0, 1]):
        b = 3 + seed % 3
        configs = [(4 + seed % 3, 6, 4, 2, True), (3, 5, 3, 2, False)]
        if edge_cases:
            configs += [(3, 4, 2, 3, True), (2, 4, 1, 1, True), (5, 3, 2, 4, False)]
        for n_in, n_hid, n_layers, n_critics, skip in configs:
            args = (n_in, n_hid, n_layers, n_critics)
            case = (f"seed={seed}, SkipDoubleQNetwork({n_in}, {n_hid}, n_layers={n_layers}, n_critics={n_critics}, "
                    f"skip={skip}), x [{b}, {n_in}]")
            x = torch.randn(b, n_in, generator=_gen(seed + 13))
            fresh = _construct(student_cls, args, {"skip": skip}, case)
            q0 = run_student(fresh, x, what="SkipDoubleQNetwork.forward", case=case + " (freshly built)")
            assert_close("SkipDoubleQNetwork output of a freshly built module", q0, torch.zeros(b, n_critics),
                         atol=0.0, case=case,
                         hints={"shape": "one Q-value per critic: [B, n_critics]; squeeze the last dim of [B, K, 1]",
                                "values": "the output layer starts at exactly zero: nn.init.zeros_ on self.out.weight "
                                          "and self.out.bias, so that Q = 0 before any update"})
            seed_all(seed)
            reference = ref.SkipDoubleQNetwork(n_in, n_hid, n_layers, n_critics, skip=skip)
            _randomize(reference, seed)
            student = _construct(student_cls, args, {"skip": skip}, case)
            _load_reference_state(student, reference, "SkipDoubleQNetwork", case)
            x_r, x_s = x.clone().requires_grad_(), x.clone().requires_grad_()
            expected = reference(x_r)
            got = run_student(student, x_s, what="SkipDoubleQNetwork.forward", case=case)
            hint = _diagnose(got, [(_double_q_input_first(reference, x),
                                    "concatenation order: torch.cat([y, xs], dim=-1), hidden features first")])
            assert_close("SkipDoubleQNetwork output", got, expected, atol=ATOL, rtol=RTOL, case=case,
                         hints={"shape": "one Q-value per critic: [B, n_critics]; self.out gives [B, K, 1], "
                                         "squeeze(-1) it",
                                "values": hint or "xs = x repeated for every critic [B, K, D]; y = relu(layer(cat([y, "
                                                  "xs]))) with skips, relu(layer(y)) without; then self.out"})
            _need_grad(got, "SkipDoubleQNetwork output", case)
            w = _weights(expected.shape, seed)
            (expected * w).sum().backward()
            (got * w).sum().backward()
            _compare_param_grads(student, reference, "SkipDoubleQNetwork", case)
            assert_close("SkipDoubleQNetwork gradient w.r.t. x", x_s.grad, x_r.grad, atol=GRAD_ATOL, rtol=GRAD_RTOL,
                         case=case)
            n += 1
    return f"{n} fused critics: zero at the start, outputs and gradients match"


# --------------------------------------------------------------------------------------------------------------
# 5. Multi-head Gaussian


def _task_inputs(seed: int, b: int, k: int, edge_cases: bool) -> list[tuple[str, torch.Tensor | None]]:
    """The task as an index [B], as a one-hot [B, K] and, for edge cases, as an index [B, 1]."""
    index = torch.randint(k, (b,), generator=_gen(seed + 17))
    out: list[tuple[str, torch.Tensor | None]] = [
        ("index [B]", index),
        ("one-hot [B, K]", F.one_hot(index, k).float()),
        ("None (all heads)", None),
    ]
    if edge_cases:
        out += [("index [B, 1] int32", index.view(-1, 1).int())]
    return out


@check("MultiHeadGaussianFromEmbedding")
def multihead_gaussian(student_cls: type, seeds: Any = None, edge_cases: bool = False) -> str:
    """Each row's head (task as an index or a one-hot) and all heads (task None): distributions and gradients."""
    n = 0
    for seed in cases(seeds, [0, 1]):
        configs = [(5, 3 + seed % 2, 4, 6)]
        if edge_cases:
            configs += [(3, 2, 1, 3), (4, 2, 3, 1)]  # one head; batch of one
        for n_in, n_out, n_heads, b in configs:
            for task_name, task in _task_inputs(seed, b, n_heads, edge_cases):
                case = (f"seed={seed}, MultiHeadGaussianFromEmbedding({n_in}, {n_out}, {n_heads}), emb [{b}, {n_in}], "
                        f"task {task_name}")
                seed_all(seed)
                reference = ref.MultiHeadGaussianFromEmbedding(n_in, n_out, n_heads)
                with torch.no_grad():
                    reference.log_std.bias.uniform_(-7.0, 3.0, generator=_gen(seed))
                student = _construct(student_cls, (n_in, n_out, n_heads), {}, case)
                _load_reference_state(student, reference, "MultiHeadGaussianFromEmbedding", case)
                emb = torch.randn(b, n_in, generator=_gen(seed + 19))
                emb_r, emb_s = emb.clone().requires_grad_(), emb.clone().requires_grad_()
                expected = reference(emb_r, task)
                args = (emb_s,) if task is None else (emb_s, task.clone())
                got = run_student(student, *args, what="MultiHeadGaussianFromEmbedding.forward", case=case)
                loc = getattr(got, "loc", None)
                if isinstance(loc, torch.Tensor):
                    mistakes = []
                    if task is not None:
                        swapped = reference.mu(emb).view(b, n_out, n_heads).transpose(1, 2)  # heads on the wrong axis
                        mistakes.append((swapped[torch.arange(b), ref.task_index(task, n_heads)],
                                         "the mu layer's output is [B, K * A] with the K heads first: view(-1, "
                                         "n_heads, n_out), then pick along dim 1"))
                    assert_close("MultiHeadGaussianFromEmbedding: mu of the distribution", loc, expected.loc,
                                 atol=ATOL, rtol=RTOL, case=case,
                                 hints={"shape": "with a task: the head of each row, [B, A]; with task None: all "
                                                 "heads, [B, K, A]",
                                        "values": _diagnose(loc, mistakes) or "row b uses head task_index(task)[b]: "
                                                  "gather along dim 1 of mu.view(-1, n_heads, n_out)"})
                got_scalar, exp_scalar = _compare_distributions(
                    "MultiHeadGaussianFromEmbedding(emb, task)", got, expected,
                    _actions(expected.batch_shape, _gen(seed + 23)), seed, case)
                exp_scalar.backward()
                got_scalar.backward()
                _compare_param_grads(student, reference, "MultiHeadGaussianFromEmbedding", case)
                assert_close("MultiHeadGaussianFromEmbedding gradient w.r.t. emb", emb_s.grad, emb_r.grad,
                             atol=GRAD_ATOL, rtol=GRAD_RTOL, case=case)
                n += 1
    return f"{n} cases (index, one-hot, all heads): distributions and gradients match"


# --------------------------------------------------------------------------------------------------------------
# 6. The HSD-3 critic's action input


@check("ExpandTaskSubgoal")
def expand_task_subgoal(student_cls: type, seeds: Any = None, edge_cases: bool = False) -> str:
    """``vec(onehot(task) ⊗ subgoal)`` ``[B, K*G]`` for index and one-hot tasks; gradient w.r.t. the subgoal."""
    n = 0
    for seed in cases(seeds, [0, 1]):
        k, g_dim, b = 3 + seed % 3, 2 + seed % 3, 4
        configs: list[tuple[int, int, int, dict[str, str]]] = [(k, g_dim, b, {})]
        if edge_cases:
            configs += [(1, 3, 2, {}), (4, 1, 3, {}), (k, g_dim, 1, {"task_key": "subset", "subgoal_key": "goal"})]
        for k_, g_, b_, keys in configs:
            task_key, subgoal_key = keys.get("task_key", "task"), keys.get("subgoal_key", "subgoal")
            student = _construct(student_cls, (k_, g_), keys, f"ExpandTaskSubgoal({k_}, {g_}, **{keys})")
            reference = ref.ExpandTaskSubgoal(k_, g_, **keys)
            dtypes = [torch.float32, torch.float64] if edge_cases else [torch.float32]
            for task_name, task in _task_inputs(seed, b_, k_, edge_cases):
                if task is None:
                    continue
                for dtype in dtypes:
                    subgoal = torch.randn(b_, g_, generator=_gen(seed + 29), dtype=dtype)
                    case = (f"seed={seed}, ExpandTaskSubgoal({k_}, {g_}), task {task_name}, subgoal {describe(subgoal)}"
                            + (f", keys {keys}" if keys else ""))
                    sg_r, sg_s = subgoal.clone().requires_grad_(), subgoal.clone().requires_grad_()
                    expected = reference({task_key: task, subgoal_key: sg_r})
                    got = run_student(student, {task_key: task.clone(), subgoal_key: sg_s},
                                      what="ExpandTaskSubgoal.forward", case=case)
                    onehot = F.one_hot(ref.task_index(task, k_), k_).to(dtype)
                    subgoal_major = (subgoal.unsqueeze(-1) * onehot.unsqueeze(-2)).flatten(1)
                    assert_close("ExpandTaskSubgoal output", got, expected, atol=0.0, case=case,
                                 hints={"shape": "flatten the outer product [B, K, G] to [B, K * G] "
                                                 "(flatten(start_dim=1))",
                                        "values": _diagnose(got, [(subgoal_major, "layout: the task comes first, so "
                                                                   "that subset k's subgoal fills columns k*G .. "
                                                                   "k*G + G - 1: onehot.unsqueeze(-1) * "
                                                                   "subgoal.unsqueeze(-2)")])
                                        or "out[b, k*G + g] = onehot(task)[b, k] * subgoal[b, g]"})
                    _need_grad(got, "ExpandTaskSubgoal output", case)
                    w = _weights(expected.shape, seed, dtype)
                    (expected * w).sum().backward()
                    (got * w).sum().backward()
                    assert_close("ExpandTaskSubgoal gradient w.r.t. the subgoal", sg_s.grad, sg_r.grad, atol=1e-6,
                                 case=case)
                    n += 1
    return f"{n} cases: outer products and gradients match"


# --------------------------------------------------------------------------------------------------------------
# 7. The model factory


DICT_OBS = spaces.Dict({"observation": spaces.Box(-1, 1, (5,)), "time": spaces.Box(0, 1, (1,))})
BOX_OBS = spaces.Box(-1, 1, (4,))
BOX_ACTION = spaces.Box(-1, 1, (2,))
TASK_SUBGOAL_ACTION = spaces.Dict({"task": spaces.Discrete(3), "subgoal": spaces.Box(-1, 1, (2,))})
TASK_OBS = spaces.Dict({"observation": spaces.Box(-1, 1, (5,)), "task": spaces.Discrete(3)})


def _sample(space: spaces.Space, batch: int, g: torch.Generator) -> Any:
    """A seeded batch of values of a Box / Discrete / Dict space as torch tensors."""
    if isinstance(space, spaces.Dict):
        return {key: _sample(sub, batch, g) for key, sub in space.spaces.items()}
    if isinstance(space, spaces.Discrete):
        return torch.randint(int(space.n), (batch,), generator=g)
    return torch.rand((batch, *space.shape), generator=g) * 2 - 1


@check("critic")
def critic(student: Callable[..., nn.Module], seeds: Any = None, edge_cases: bool = False) -> str:
    """Builder options -> the same modules (parameter names and shapes), then outputs and gradients of
    ``q(obs, action)`` with random reference weights loaded."""
    configs: list[tuple[spaces.Space, spaces.Space, dict[str, Any]]] = [
        (DICT_OBS, BOX_ACTION, {"width": 8, "dict_obs": True, "n_critics": 1}),  # q_d2rl_d: [B]
        (BOX_OBS, BOX_ACTION, {"width": 8, "dict_obs": False, "n_critics": 2}),  # qd_d2rl: [B, 2]
        (DICT_OBS, TASK_SUBGOAL_ACTION, {"width": 8, "dict_obs": True, "n_critics": 2, "task_subgoal": True}),  # HSD-3
        (DICT_OBS, BOX_ACTION, {"width": 8, "dict_obs": True, "n_critics": 2, "skip": False, "n_layers": 3}),
    ]
    if edge_cases:
        configs += [
            (BOX_OBS, BOX_ACTION, {"width": 4, "dict_obs": False, "n_critics": 1, "n_layers": 1}),
            (DICT_OBS, TASK_SUBGOAL_ACTION, {"width": 4, "dict_obs": True, "n_critics": 3, "task_subgoal": True,
                                             "n_layers": 2}),
        ]
    n = 0
    for seed in cases(seeds, [0]):
        for obs_space, action_space, options in configs:
            case = f"seed={seed}, critic(obs {type(obs_space).__name__}, action {action_space}, {options})"
            seed_all(seed)
            reference = ref_factory.critic("q_check", obs_space, action_space, **options)
            _randomize(reference, seed)
            got_model = run_student(student, "q_check", obs_space, action_space, what="critic", case=case, **options)
            if not isinstance(got_model, nn.Module):
                raise CheckFailed(f"critic should return an nn.Module; got {type(got_model).__name__}\n  case: {case}")
            try:
                _load_reference_state(got_model, reference, "critic", case)
            except CheckFailed as err:
                raise CheckFailed(f"{err}\n  hint: one critic: QFunction(obs encoder, action encoder, nn.Sequential("
                                  "SkipNetwork, _small_output_layer(width), SqueezeLastDim())); several: "
                                  "QFunction(..., SkipDoubleQNetwork(...))") from None
            g = _gen(seed + 31)
            obs, action = _sample(obs_space, 5, g), _sample(action_space, 5, g)
            expected = reference(obs, action)
            got = run_student(got_model, obs, action, what="q(obs, action)", case=case)
            assert_close("critic: q(obs, action)", got, expected, atol=ATOL, rtol=RTOL, case=case,
                         hints={"shape": "q_* returns [B] (end the single critic with SqueezeLastDim(), not [B, 1]); "
                                         "qd_* returns [B, n_critics]",
                                "values": "the network reads torch.cat([encoded obs, encoded action]) in that order"})
            w = _weights(expected.shape, seed)
            (expected * w).sum().backward()
            (got * w).sum().backward()
            _compare_param_grads(got_model, reference, "critic", case)
            n += 1
    return f"{n} critics: same modules, outputs and gradients"


def _compare_trees(got: Any, expected: nn.Module, case: str) -> None:
    """Same module tree (qualified names and types), then the same parameter names and shapes."""
    if not isinstance(got, nn.Module):
        raise CheckFailed(f"make_model should return an nn.Module (a ModuleDict for a nested config); got "
                          f"{type(got).__name__}\n  case: {case}")
    exp_types = {name: type(m).__name__ for name, m in expected.named_modules()}
    got_types = {name: type(m).__name__ for name, m in got.named_modules()}
    for name in sorted(set(exp_types) | set(got_types), key=lambda s: (s.count("."), s)):
        if exp_types.get(name) != got_types.get(name):
            where = f"model.{name}" if name else "the top-level model"
            raise CheckFailed(f"make_model: {where} should be {exp_types.get(name, 'absent')}, got "
                              f"{got_types.get(name, 'nothing')}\n  case: {case}\n  hint: a mapping without 'name' "
                              "becomes nn.ModuleDict({key: make_model(sub-config, sub-spaces)}) with the same keys")
    _load_reference_state(got, expected, "make_model", case)


@check("make_model")
def make_model(student: Callable[..., nn.Module], edge_cases: bool = False) -> str:
    """Shorthands, ``{name, options}`` and nested configs (shared spaces or per-model dicts) give the same module
    trees as the reference; missing spaces raise the ValueError of ``_subspace``."""
    hsd3 = {"pi_task": "pi_d2rl_discrete_d_256", "pi_subgoal": "pi_d2rl_mt_d_256", "q": "qd_d2rl_flattsg_d_256"}
    hsd3_obs = {"pi_task": DICT_OBS, "pi_subgoal": TASK_OBS, "q": DICT_OBS}
    hsd3_actions = {"pi_task": spaces.Discrete(3), "pi_subgoal": BOX_ACTION, "q": TASK_SUBGOAL_ACTION}
    configs: list[tuple[str, Any, Any, Any]] = [
        ("a shorthand", "pi_d2rl_256", BOX_OBS, BOX_ACTION),
        ("{name, options}", {"name": "qd_d2rl_d_256", "n_layers": 2}, DICT_OBS, BOX_ACTION),
        ("one space for every model", {"pi": "pi_d2rl_d_256", "q": {"name": "q_d2rl_d_256"}}, DICT_OBS, BOX_ACTION),
        ("HSD-3's high level, spaces per model", hsd3, hsd3_obs, hsd3_actions),
    ]
    if edge_cases:
        configs += [
            ("two levels", {"hi": hsd3, "lo": {"pi": "pi_d2rl_d_256"}},
             {"hi": hsd3_obs, "lo": {"pi": DICT_OBS}}, {"hi": hsd3_actions, "lo": {"pi": BOX_ACTION}}),
            ("an empty tree", {}, BOX_OBS, BOX_ACTION),
        ]
    n = 0
    for label, cfg, obs_space, action_space in configs:
        case = f"config {label}: {cfg}"
        seed_all(0)
        expected = ref_factory.make_model(cfg, obs_space, action_space)
        try:
            got = run_student(student, cfg, obs_space, action_space, what="make_model", case=case)
        except CheckFailed as err:
            raise CheckFailed(f"{err}\n  hint: every child gets its own spaces: _subspace(obs_space, key, "
                              "\"observation\") and _subspace(action_space, key, \"action\")") from err.__cause__
        _compare_trees(got, expected, case)
        n += 1
    try:
        run_student(student, {"hi": {"pi": "pi_d2rl_256"}}, {"lo": BOX_OBS}, BOX_ACTION, what="make_model",
                    case="no observation space for 'hi'")
    except CheckFailed as err:
        if isinstance(err.__cause__, ValueError) and "no observation space" in str(err.__cause__):
            return f"{n} configs and the missing-space error"
        raise CheckFailed(f"make_model with spaces for 'lo' only should raise _subspace's ValueError for 'hi'; got "
                          f"{err}") from None
    raise CheckFailed("make_model({'hi': ...}, {'lo': ...}, ...) should raise _subspace's ValueError (no observation "
                      "space for model 'hi')")
