"""Tests for hsd3_learn.spirl.models: building blocks, Gaussian helpers, the three skill models, losses, files."""

import math

import numpy as np
import pytest
import torch
from torch import distributions as D
from torch import nn

from hsd3_learn.spirl.models import (
    LOG_SIGMA_MAX,
    LOG_SIGMA_MIN,
    MC_KL_LIMIT,
    SKILL_MODELS,
    AutoregressiveDecoder,
    Predictor,
    SkillCriticModel,
    SkillEncoder,
    SkillModel,
    SkillModelCheckpoint,
    SkillPriorConfig,
    SPiRLClModel,
    SPiRLModel,
    detached_gaussian,
    diag_gaussian,
    gaussian_from_params,
    gaussian_kl,
    kl_to_standard_normal,
    load_skill_model,
    make_skill_model,
    mc_kl,
    save_skill_model,
)

KINDS = list(SKILL_MODELS)


def tiny_config(**overrides: object) -> SkillPriorConfig:
    """A model small enough to train in a test: S 5, A 3, H 4, nz 2."""
    values = dict(state_dim=5, action_dim=3, H=4, nz=2, nz_enc=8, nz_mid=16, n_layers=1, lstm_width=8,
                  prior_layers=1, prior_width=16, beta=0.1)
    values.update(overrides)
    return SkillPriorConfig(**values)


def make_batch(cfg: SkillPriorConfig, batch_size: int = 6, seed: int = 1,
               dtype: torch.dtype = torch.float64) -> dict[str, torch.Tensor]:
    """Random windows: states [B, H+1, S] ~ N(0, 1), actions [B, H, A] ~ U[-1, 1]."""
    gen = torch.Generator().manual_seed(seed)
    return {"states": torch.randn(batch_size, cfg.H + 1, cfg.state_dim, generator=gen, dtype=dtype),
            "actions": torch.rand(batch_size, cfg.H, cfg.action_dim, generator=gen, dtype=dtype) * 2 - 1}


def normal_log_density(x: torch.Tensor, mu: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """log N(x; mu, sigma^2) per element, written out by hand."""
    return -0.5 * ((x - mu) / sigma) ** 2 - torch.log(sigma) - 0.5 * math.log(2 * math.pi)


def tiny_model(kind: str, **overrides: object) -> SkillModel:
    """A float64 model of ``kind`` on the tiny config."""
    return make_skill_model(kind, tiny_config(**overrides)).double()


# --------------------------------------------------------------------------------------------------------------
# Building blocks


def test_predictor_structure_shapes_and_zero_biases():
    net = Predictor(7, 3, 32, n_layers=2)
    linears = [m for m in net.modules() if isinstance(m, nn.Linear)]
    norms = [m for m in net.modules() if isinstance(m, nn.LayerNorm)]
    relus = [m for m in net.modules() if isinstance(m, nn.LeakyReLU)]
    assert len(linears) == 4 and len(norms) == 2 and len(relus) == 3
    assert all(m.negative_slope == 0.2 for m in relus)
    assert not any(isinstance(m, nn.BatchNorm1d) for m in net.modules())
    assert all(torch.all(m.bias == 0) for m in linears)
    assert net(torch.randn(5, 7)).shape == (5, 3)
    assert net(torch.randn(2, 4, 7)).shape == (2, 4, 3)


def test_predictor_weights_are_xavier_normal():
    net = Predictor(256, 256, 256, n_layers=1)
    weight = net.net[2].weight  # the first hidden block's linear
    assert weight.std().item() == pytest.approx(math.sqrt(2 / 512), rel=0.05)
    assert weight.mean().abs().item() < 0.005


def test_diag_gaussian_clamps_log_sigma():
    mu = torch.zeros(2, 3)
    log_sigma = torch.tensor([[50.0, -50.0, 0.5], [0.0, 1.0, -1.0]])
    dist = diag_gaussian(mu, log_sigma)
    assert dist.batch_shape == (2,) and dist.event_shape == (3,)
    expected = torch.tensor([[math.exp(LOG_SIGMA_MAX), math.exp(LOG_SIGMA_MIN), math.exp(0.5)],
                             [1.0, math.e, math.exp(-1.0)]])
    torch.testing.assert_close(dist.stddev, expected)


def test_gaussian_from_params_splits_mu_then_log_sigma():
    params = torch.tensor([[1.0, -2.0, 0.0, math.log(3.0)]])
    dist = gaussian_from_params(params)
    torch.testing.assert_close(dist.mean, torch.tensor([[1.0, -2.0]]))
    torch.testing.assert_close(dist.stddev, torch.tensor([[1.0, 3.0]]))


def test_detached_gaussian_has_the_same_values_and_no_graph():
    mu = torch.randn(4, 2, requires_grad=True)
    dist = diag_gaussian(mu, torch.full((4, 2), -0.3))
    cut = detached_gaussian(dist)
    torch.testing.assert_close(cut.mean, dist.mean)
    torch.testing.assert_close(cut.stddev, dist.stddev)
    assert not cut.mean.requires_grad and not cut.stddev.requires_grad and cut.event_shape == (2,)


def test_kl_to_standard_normal_is_the_closed_form_averaged_over_dims():
    mu = torch.tensor([[0.5, -1.0, 2.0], [0.0, 0.0, 0.0]], dtype=torch.float64)
    log_sigma = torch.tensor([[0.2, -0.7, 0.0], [0.0, 0.0, 0.0]], dtype=torch.float64)
    kl = kl_to_standard_normal(diag_gaussian(mu, log_sigma))
    by_hand = (0.5 * (mu**2 + torch.exp(2 * log_sigma) - 1) - log_sigma).mean(dim=1)
    torch.testing.assert_close(kl, by_hand)
    torch.testing.assert_close(kl[1], torch.tensor(0.0, dtype=torch.float64))
    summed = D.kl_divergence(diag_gaussian(mu, log_sigma), diag_gaussian(torch.zeros_like(mu), torch.zeros_like(mu)))
    torch.testing.assert_close(kl * 3, summed)  # the mean is the full KL / nz


def test_gaussian_kl_is_the_per_dim_mean_of_the_full_kl():
    p = diag_gaussian(torch.randn(5, 4), torch.randn(5, 4) * 0.3)
    q = diag_gaussian(torch.randn(5, 4), torch.randn(5, 4) * 0.3)
    torch.testing.assert_close(gaussian_kl(p, q), D.kl_divergence(p, q) / 4)
    torch.testing.assert_close(gaussian_kl(p, p), torch.zeros(5))


def test_mc_kl_agrees_with_the_analytic_kl():
    p = diag_gaussian(torch.tensor([[0.3, -0.5, 1.0], [0.0, 0.2, -0.4]]), torch.tensor([[0.0, -0.3, 0.2]] * 2))
    q = diag_gaussian(torch.tensor([[-0.4, 0.5, 0.0], [1.0, -0.8, 0.6]]), torch.tensor([[0.3, 0.1, -0.2]] * 2))
    torch.manual_seed(3)
    estimate = mc_kl(p, q, n_samples=10_000)
    exact = D.kl_divergence(p, q)
    assert estimate.shape == (2,)
    assert exact.min() > 0.5
    torch.testing.assert_close(estimate, exact, rtol=0.05, atol=0.0)


def test_mc_kl_is_clamped_and_differentiable():
    mu = torch.zeros(1, 2, requires_grad=True)
    p = diag_gaussian(mu, torch.zeros(1, 2))
    far = diag_gaussian(torch.full((1, 2), 1000.0), torch.zeros(1, 2))
    assert mc_kl(p, far, 4).item() == MC_KL_LIMIT
    near = diag_gaussian(torch.ones(1, 2), torch.zeros(1, 2))
    mc_kl(p, near, 16).sum().backward()
    assert mu.grad is not None and mu.grad.abs().sum() > 0


@pytest.mark.parametrize("n_samples", [0, -3, 2.5, True])
def test_mc_kl_rejects_bad_sample_counts(n_samples):
    p = diag_gaussian(torch.zeros(1, 2), torch.zeros(1, 2))
    with pytest.raises(ValueError, match="n_samples"):
        mc_kl(p, p, n_samples)


def test_mc_kl_rejects_different_event_shapes():
    p = diag_gaussian(torch.zeros(1, 2), torch.zeros(1, 2))
    q = diag_gaussian(torch.zeros(1, 3), torch.zeros(1, 3))
    with pytest.raises(ValueError, match="same event shape"):
        mc_kl(p, q, 4)


def test_skill_encoder_reads_the_whole_window():
    encoder = SkillEncoder(in_dim=3, lstm_width=8, nz_enc=6, nz=2)
    window = torch.randn(4, 5, 3)
    params = encoder(window)
    assert params.shape == (4, 4)
    changed = window.clone()
    changed[:, 0] += 1.0  # the first step still reaches the last LSTM output
    assert not torch.allclose(encoder(changed), params)


def test_autoregressive_decoder_starts_from_learned_constants():
    decoder = AutoregressiveDecoder(nz=2, action_dim=3, lstm_width=8)
    assert decoder.initial_action.shape == (3,) and decoder.initial_hidden.shape == (2, 8)
    plan = decoder(torch.randn(4, 2), steps=6)
    assert plan.shape == (4, 6, 3)
    plan.sum().backward()
    assert decoder.initial_action.grad.abs().sum() > 0 and decoder.initial_hidden.grad.abs().sum() > 0


# --------------------------------------------------------------------------------------------------------------
# Configuration and factory


def test_config_defaults_are_the_documented_values():
    cfg = SkillPriorConfig(state_dim=59, action_dim=6)
    assert (cfg.H, cfg.nz, cfg.nz_enc, cfg.nz_mid, cfg.n_layers) == (10, 10, 128, 128, 5)
    assert (cfg.lstm_width, cfg.prior_layers, cfg.prior_width) == (128, 6, 128)
    assert cfg.beta == 2e-3 and cfg.prior_objective == "nll"


@pytest.mark.parametrize("field, value, message", [
    ("state_dim", 0, "state_dim must be a positive int"),
    ("action_dim", 2.0, "action_dim must be a positive int"),
    ("H", True, "H must be a positive int"),
    ("nz", -1, "nz must be a positive int"),
    ("lstm_width", 0, "lstm_width must be a positive int"),
    ("n_layers", -1, "n_layers must be a non-negative int"),
    ("prior_layers", 1.5, "prior_layers must be a non-negative int"),
    ("beta", -1e-3, "beta must be a finite number >= 0"),
    ("beta", float("nan"), "beta must be a finite number >= 0"),
    ("beta", "0.1", "beta must be a finite number >= 0"),
    ("prior_objective", "mse", "prior_objective must be one of nll, kl"),
])
def test_bad_configs_fail_with_one_line(field, value, message):
    with pytest.raises(ValueError, match=message) as err:
        tiny_config(**{field: value})
    assert "\n" not in str(err.value)


def test_config_from_mapping_names_unknown_and_missing_fields():
    assert SkillPriorConfig.from_mapping({"state_dim": 4, "action_dim": 2, "nz": 3}).nz == 3
    with pytest.raises(ValueError, match="no fields \\['width'\\]"):
        SkillPriorConfig.from_mapping({"state_dim": 4, "action_dim": 2, "width": 3})
    with pytest.raises(ValueError, match="needs \\['action_dim'\\]"):
        SkillPriorConfig.from_mapping({"state_dim": 4})


def test_make_skill_model_builds_each_kind():
    cfg = tiny_config()
    classes = {"spirl": SPiRLModel, "spirl_cl": SPiRLClModel, "skill_critic": SkillCriticModel}
    for kind, cls in classes.items():
        model = make_skill_model(kind, cfg)
        assert type(model) is cls and model.kind == kind and model.cfg is cfg
    from_dict = make_skill_model("spirl_cl", {"state_dim": 5, "action_dim": 3, "H": 4})
    assert from_dict.cfg.H == 4


def test_make_skill_model_rejects_unknown_kinds_and_configs():
    with pytest.raises(ValueError, match="unknown skill model kind 'spirl_v2'; valid kinds: spirl, spirl_cl"):
        make_skill_model("spirl_v2", tiny_config())
    with pytest.raises(TypeError, match="SkillPriorConfig or a dict"):
        make_skill_model("spirl", 42)
    with pytest.raises(TypeError, match="needs a SkillPriorConfig"):
        SPiRLModel({"state_dim": 5, "action_dim": 3})


# --------------------------------------------------------------------------------------------------------------
# Shapes and decoders


@pytest.mark.parametrize("kind", KINDS)
def test_encode_and_prior_shapes(kind):
    model = tiny_model(kind)
    cfg, batch = model.cfg, make_batch(model.cfg)
    q = model.encode(batch["states"], batch["actions"])
    assert q.batch_shape == (6,) and q.event_shape == (cfg.nz,)
    assert model.encode(batch["states"][:, :-1], batch["actions"]).mean.shape == (6, cfg.nz)
    prior = model.prior(batch["states"][:, 0])
    assert prior.batch_shape == (6,) and prior.event_shape == (cfg.nz,)
    assert model.reconstruct(batch["states"], q.mean).shape == (6, cfg.H, cfg.action_dim)


def test_decode_shapes_of_each_variant():
    cfg = tiny_config()
    z, state = torch.randn(6, cfg.nz), torch.randn(6, cfg.state_dim)
    assert make_skill_model("spirl", cfg).decode_plan(z).shape == (6, cfg.H, cfg.action_dim)
    assert make_skill_model("spirl", cfg).decode_plan(z, 7).shape == (6, 7, cfg.action_dim)
    cl = make_skill_model("spirl_cl", cfg)
    assert cl.decode_step(state, z).shape == (6, cfg.action_dim)
    assert cl.decode_step(torch.randn(6, 4, cfg.state_dim), torch.randn(6, 4, cfg.nz)).shape == (6, 4, 3)
    mean, log_std = make_skill_model("skill_critic", cfg).decode_step(state, z, torch.full((6,), 2))
    assert mean.shape == (6, cfg.action_dim) and log_std.shape == (6, cfg.action_dim)


@pytest.mark.parametrize("kind, sees_states", [("spirl", False), ("spirl_cl", True), ("skill_critic", False)])
def test_which_encoders_read_the_states(kind, sees_states):
    model = tiny_model(kind)
    batch = make_batch(model.cfg)
    before = model.encode(batch["states"], batch["actions"]).mean
    after = model.encode(batch["states"] + 1.0, batch["actions"]).mean
    assert torch.allclose(before, after) is not sees_states
    assert not torch.allclose(model.encode(batch["states"], -batch["actions"]).mean, before)


def test_v1_decoder_is_autoregressive_and_open_loop():
    model = tiny_model("spirl")
    z = torch.randn(3, model.cfg.nz, dtype=torch.float64)
    plan = model.decode_plan(z, 10)
    # a step never depends on later steps: a shorter plan is a prefix of a longer one
    torch.testing.assert_close(model.decode_plan(z, 3), plan[:, :3])
    # z enters every step
    changed = model.decode_plan(z + 0.5, 10)
    assert ((changed - plan).abs().amax(dim=2) > 1e-6).all()
    # open loop: the states of the window are not read
    states = torch.randn(3, model.cfg.H + 1, model.cfg.state_dim, dtype=torch.float64)
    torch.testing.assert_close(model.reconstruct(states, z), model.reconstruct(states * 3, z))


def test_cl_decoder_is_closed_loop_per_step():
    model = tiny_model("spirl_cl")
    batch = make_batch(model.cfg)
    z = torch.randn(6, model.cfg.nz, dtype=torch.float64)
    actions = model.reconstruct(batch["states"], z)
    states = batch["states"].clone()
    states[:, 2] += 1.0
    changed = model.reconstruct(states, z)
    moved = (changed - actions).abs().amax(dim=(0, 2)) > 1e-9
    assert moved.tolist() == [False, False, True, False]
    torch.testing.assert_close(actions[:, 1], model.decode_step(batch["states"][:, 1], z))


def test_skill_critic_decoder_is_time_indexed():
    model = tiny_model("skill_critic")
    batch = make_batch(model.cfg)
    z = torch.randn(6, model.cfg.nz, dtype=torch.float64)
    means = model.reconstruct(batch["states"], z)
    for t in range(model.cfg.H):
        mean, _ = model.decode_step(batch["states"][:, t], z, torch.full((6,), t))
        torch.testing.assert_close(means[:, t], mean)
    state = batch["states"][:, 0]
    first, _ = model.decode_step(state, z, torch.zeros(6, dtype=torch.long))
    last, _ = model.decode_step(state, z, torch.full((6,), model.cfg.H - 1))
    assert not torch.allclose(first, last)


def test_skill_critic_rejects_bad_step_indices():
    model = tiny_model("skill_critic")
    state = torch.zeros(2, model.cfg.state_dim, dtype=torch.float64)
    z = torch.zeros(2, model.cfg.nz, dtype=torch.float64)
    with pytest.raises(TypeError, match="integer tensor"):
        model.decode_step(state, z, torch.zeros(2))
    with pytest.raises(ValueError, match="must lie in 0..3; got values 0..4"):
        model.decode_step(state, z, torch.tensor([0, 4]))


def test_decoders_reject_wrong_sizes():
    cfg = tiny_config()
    with pytest.raises(ValueError, match="z must have 2 features"):
        make_skill_model("spirl", cfg).decode_plan(torch.zeros(1, 3))
    with pytest.raises(ValueError, match="steps >= 1"):
        make_skill_model("spirl", cfg).decode_plan(torch.zeros(1, 2), 0)
    with pytest.raises(ValueError, match="state must have 5 features"):
        make_skill_model("spirl_cl", cfg).decode_step(torch.zeros(1, 4), torch.zeros(1, 2))
    with pytest.raises(ValueError, match="state0 must have 5 features"):
        make_skill_model("spirl", cfg).prior(torch.zeros(1, 6))


# --------------------------------------------------------------------------------------------------------------
# Losses


@pytest.mark.parametrize("kind", KINDS)
def test_loss_terms_match_a_hand_computation(kind):
    model = tiny_model(kind)
    batch = make_batch(model.cfg)
    terms = model.loss_terms(batch)
    q = model.encode(batch["states"], batch["actions"])
    torch.testing.assert_close(terms.posterior.mean, q.mean)
    mu, sigma = q.mean, q.stddev
    kl = (0.5 * (mu**2 + sigma**2 - 1) - torch.log(sigma)).mean()
    torch.testing.assert_close(terms.kl, kl)
    squared_error = (model.reconstruct(batch["states"], terms.z) - batch["actions"]) ** 2
    torch.testing.assert_close(terms.mse, squared_error.mean())
    torch.testing.assert_close(terms.rec, 0.5 * squared_error.mean())
    prior = model.prior(batch["states"][:, 0])
    nll = -normal_log_density(terms.z, prior.mean, prior.stddev).mean()
    torch.testing.assert_close(terms.prior, nll)
    assert all(torch.isfinite(t) for t in (terms.rec, terms.kl, terms.prior, terms.mse))


def test_prior_kl_objective_matches_the_closed_form():
    model = tiny_model("spirl_cl", prior_objective="kl")
    batch = make_batch(model.cfg)
    terms = model.loss_terms(batch)
    p = model.prior(batch["states"][:, 0])
    q_mu, q_sigma, p_mu, p_sigma = terms.posterior.mean, terms.posterior.stddev, p.mean, p.stddev
    kl = torch.log(p_sigma / q_sigma) + (q_sigma**2 + (q_mu - p_mu) ** 2) / (2 * p_sigma**2) - 0.5
    torch.testing.assert_close(terms.prior, kl.mean())


@pytest.mark.parametrize("kind", KINDS)
def test_loss_total_and_metrics(kind):
    model = tiny_model(kind)
    batch = make_batch(model.cfg)
    torch.manual_seed(5)
    total, metrics = model.loss(batch)
    torch.manual_seed(5)
    terms = model.loss_terms(batch)
    torch.testing.assert_close(total, terms.rec + model.cfg.beta * terms.kl + terms.prior)
    assert set(metrics) == {"loss", "rec", "kl", "prior_loss", "mse"}
    assert all(isinstance(v, float) for v in metrics.values())
    assert metrics["loss"] == pytest.approx(total.item())
    assert metrics["mse"] == pytest.approx(2 * metrics["rec"])
    assert metrics["prior_loss"] == pytest.approx(terms.prior.item())


@pytest.mark.parametrize("objective", ["nll", "kl"])
@pytest.mark.parametrize("kind", KINDS)
def test_prior_loss_trains_only_the_prior(kind, objective):
    model = tiny_model(kind, prior_objective=objective)
    terms = model.loss_terms(make_batch(model.cfg))
    terms.prior.backward(retain_graph=True)
    for name, param in model.named_parameters():
        touched = param.grad is not None and bool(param.grad.abs().sum() > 0)
        assert touched is name.startswith("prior_net."), name
    model.zero_grad(set_to_none=True)
    (terms.rec + terms.kl).backward()
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in model.prior_net.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.encoder.parameters())


@pytest.mark.parametrize("kind", KINDS)
def test_a_few_steps_reduce_the_loss(kind):
    model = tiny_model(kind)
    batch = make_batch(model.cfg, batch_size=16)
    optim = torch.optim.Adam(model.parameters(), lr=3e-3)

    def seeded_loss() -> float:
        torch.manual_seed(11)
        with torch.no_grad():
            return model.loss(batch)[1]["loss"]

    before = seeded_loss()
    for _ in range(40):
        optim.zero_grad()
        model.loss(batch)[0].backward()
        optim.step()
    assert seeded_loss() < 0.8 * before


def test_skill_critic_log_std_head_gets_no_offline_gradient():
    model = tiny_model("skill_critic")
    total, _ = model.loss(make_batch(model.cfg))
    total.backward()
    head = model.decoder.net[-1]
    action_dim = model.cfg.action_dim
    assert head.weight.grad[:action_dim].abs().sum() > 0
    assert head.weight.grad[action_dim:].abs().sum() == 0 and head.bias.grad[action_dim:].abs().sum() == 0


@pytest.mark.parametrize("batch, message", [
    ({"states": torch.zeros(2, 5, 5)}, "'states' \\[B, H\\+1, S\\] and 'actions'"),
    ({"states": torch.zeros(2, 4, 5), "actions": torch.zeros(2, 4, 3)}, "states \\[B, 5, 5\\] and actions"),
    ({"states": torch.zeros(2, 5, 5), "actions": torch.zeros(3, 4, 3)}, "got \\(2, 5, 5\\) and \\(3, 4, 3\\)"),
    ({"states": torch.zeros(2, 5, 5), "actions": torch.zeros(4, 3)}, "actions \\[B, 4, 3\\]"),
])
def test_loss_rejects_malformed_batches(batch, message):
    model = make_skill_model("spirl", tiny_config())
    with pytest.raises(ValueError, match=message):
        model.loss(batch)


# --------------------------------------------------------------------------------------------------------------
# Checkpoints


@pytest.mark.parametrize("kind", KINDS)
def test_save_load_round_trip_gives_identical_outputs(tmp_path, kind):
    cfg = tiny_config()
    model = make_skill_model(kind, cfg)
    stats = {"obs_mean": np.arange(5.0), "obs_std": torch.ones(5), "n_windows": 123}
    path = tmp_path / "sub" / "skills.pt"
    save_skill_model(path, model, kind, cfg, stats=stats)
    loaded = load_skill_model(path)
    assert isinstance(loaded, SkillModelCheckpoint)
    assert loaded.kind == kind and loaded.config == cfg and type(loaded.model) is type(model)
    assert not loaded.model.training
    torch.testing.assert_close(loaded.stats["obs_mean"], torch.arange(5.0, dtype=torch.float64))
    assert loaded.stats["n_windows"] == 123
    batch = make_batch(cfg, dtype=torch.float32)
    torch.manual_seed(2)
    expected = model.loss(batch)[1]
    torch.manual_seed(2)
    assert loaded.model.loss(batch)[1] == expected
    torch.testing.assert_close(loaded.model.prior(batch["states"][:, 0]).mean, model.prior(batch["states"][:, 0]).mean)
    assert not list(tmp_path.glob("sub/.*.tmp"))


def test_load_without_stats_gives_none(tmp_path):
    cfg = tiny_config()
    save_skill_model(tmp_path / "m.pt", make_skill_model("spirl", cfg), "spirl", cfg)
    assert load_skill_model(tmp_path / "m.pt").stats is None


def test_save_rejects_mismatched_kind_config_or_stats(tmp_path):
    cfg = tiny_config()
    model = make_skill_model("spirl_cl", cfg)
    with pytest.raises(ValueError, match="not built by make_skill_model\\('spirl'"):
        save_skill_model(tmp_path / "m.pt", model, "spirl", cfg)
    with pytest.raises(ValueError, match="not built by"):
        save_skill_model(tmp_path / "m.pt", model, "spirl_cl", tiny_config(nz=3))
    with pytest.raises(ValueError, match="unknown skill model kind"):
        save_skill_model(tmp_path / "m.pt", model, "cl", cfg)
    with pytest.raises(TypeError, match="stats\\['f'\\] must be a tensor"):
        save_skill_model(tmp_path / "m.pt", model, "spirl_cl", cfg, stats={"f": object()})
    assert not (tmp_path / "m.pt").exists()


def test_load_errors_are_one_line(tmp_path):
    cfg = tiny_config()
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_skill_model(tmp_path / "missing.pt")
    path = tmp_path / "m.pt"
    save_skill_model(path, make_skill_model("spirl", cfg), "spirl", cfg)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(path.read_bytes()[:200])
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(2)}, foreign)
    for bad, message in [(truncated, "cannot read skill model .*truncated or not a torch file"),
                         (foreign, "is not a skill model")]:
        with pytest.raises(ValueError, match=message) as err:
            load_skill_model(bad)
        assert "\n" not in str(err.value)


def test_load_rejects_weights_that_do_not_fit(tmp_path):
    cfg = tiny_config()
    path = tmp_path / "m.pt"
    save_skill_model(path, make_skill_model("spirl", cfg), "spirl", cfg)
    state = torch.load(path, weights_only=True)
    state["kind"] = "spirl_cl"  # a v1 file relabelled: the decoder keys differ
    torch.save(state, path)
    with pytest.raises(ValueError, match="does not fit a 'spirl_cl' model"):
        load_skill_model(path)
    state["kind"] = "option_critic"
    torch.save(state, path)
    with pytest.raises(ValueError, match="unknown skill model kind 'option_critic'"):
        load_skill_model(path)
