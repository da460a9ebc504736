"""Tests for hsd3_learn.models.factory: every shorthand builds and runs, nested configs, errors, registration."""

import numpy as np
import pytest
import torch
from gymnasium import spaces
from omegaconf import OmegaConf
from torch import distributions as D
from torch import nn

from hsd3_learn.models.blocks import (
    BilinearSkipNetwork,
    CategoricalFromEmbedding,
    EmbedDiscreteSkill,
    ExpandTaskSubgoal,
    SkipDoubleQNetwork,
    SkipNetwork,
    TanhNormal,
)
from hsd3_learn.models.factory import (
    SHORTHANDS,
    BilinearQFunction,
    QFunction,
    StackCritics,
    TaskConditionedPolicy,
    make_model,
    register_shorthand,
)
from hsd3_learn.spaces import flatdim

BATCH = 5
N_TASKS = 3
N_SUBGOAL = 4
N_ACTIONS = 2
N_SKILLS = 4

BOX_OBS = spaces.Box(-1, 1, (6,))
DICT_OBS = spaces.Dict({"observation": spaces.Box(-1, 1, (5,)), "desired_goal": spaces.Box(-1, 1, (3,))})
TASK_OBS = spaces.Dict({"observation": spaces.Box(-1, 1, (5,)), "task": spaces.Discrete(N_TASKS)})
BOX_ACTION = spaces.Box(-1, 1, (N_ACTIONS,))
DISCRETE_ACTION = spaces.Discrete(N_SKILLS)
TASK_SUBGOAL_ACTION = spaces.Dict(
    {"task": spaces.Discrete(N_TASKS), "subgoal": spaces.Box(-1, 1, (N_SUBGOAL,))}
)


def spaces_for(name: str) -> tuple[spaces.Space, spaces.Space]:
    """A fitting (observation, action) space pair for a shorthand; fails loudly for a new, unknown family."""
    if name in ("double_q", "pi_diayn_cskill") or "_mt_" in name or "bilinear" in name:
        return TASK_OBS, BOX_ACTION
    if "flattsg" in name:
        return DICT_OBS, TASK_SUBGOAL_ACTION
    if "discrete" in name:
        return DICT_OBS, DISCRETE_ACTION
    if name.startswith("phi_"):
        return BOX_OBS, DISCRETE_ACTION
    if name.startswith(("pi_d2rl", "q_d2rl", "qd_d2rl", "qd_relu")):
        return (DICT_OBS if "_d_" in name else BOX_OBS), BOX_ACTION
    raise AssertionError(f"no sample spaces for shorthand {name!r}; extend spaces_for")


def config_for(name: str) -> str | dict:
    return {"name": "double_q", "q_name": "q_bilinear_d2rl_d_256"} if name == "double_q" else name


def expected_width(name: str) -> int:
    if name in ("double_q", "pi_diayn_cskill"):
        return 256
    return int(name.rsplit("_", 1)[1].split("x")[-1])


def sample_batch(space: spaces.Space, n: int = BATCH, seed: int = 0) -> torch.Tensor | dict:
    """n samples of a gymnasium space as one batch of torch tensors."""
    space.seed(seed)
    values = [space.sample() for _ in range(n)]
    return _stack(space, values)


def _stack(space: spaces.Space, values: list) -> torch.Tensor | dict:
    if isinstance(space, spaces.Dict):
        return {key: _stack(sub, [v[key] for v in values]) for key, sub in space.spaces.items()}
    if isinstance(space, spaces.Discrete):
        return torch.tensor([int(v) for v in values])
    return torch.as_tensor(np.stack(values))


def first_trunk_layer_width(model: nn.Module) -> int:
    """Output width of the first hidden layer of the model's trunk."""
    for module in model.modules():
        if isinstance(module, SkipNetwork):
            return module.layers[0].out_features
        if isinstance(module, SkipDoubleQNetwork):
            return module.layers[0].n_out
        if isinstance(module, BilinearSkipNetwork):
            return module.layers[0].weight.shape[0]
    raise AssertionError("model has no trunk")


def trunk_input_width(model: nn.Module) -> int:
    for module in model.modules():
        if isinstance(module, SkipNetwork):
            return module.layers[0].in_features
        if isinstance(module, SkipDoubleQNetwork):
            return module.layers[0].n_in
        if isinstance(module, BilinearSkipNetwork):
            return module.layers[0].weight.shape[1]
    raise AssertionError("model has no trunk")


# --------------------------------------------------------------------------------------------------------------
# Every registered shorthand


def test_registry_holds_the_hucc_shorthands():
    expected = {
        *(f"pi_d2rl_{w}" for w in (256, 512, 1024)),
        *(f"pi_d2rl_d_{w}" for w in (256, 512, 1024)),
        *(f"q_d2rl_{w}" for w in (256, 512, 1024)),
        *(f"q_d2rl_d_{w}" for w in (256, 512, 1024)),
        *(f"qd_d2rl_{w}" for w in (256, 512, 1024)),
        *(f"qd_d2rl_d_{w}" for w in (256, 512, 1024)),
        *(f"qd_d2rl_flattsg_d_{w}" for w in (256, 512, 1024)),
        *(f"pi_d2rl_mt_d_{w}" for w in (256, 512)),
        *(f"pi_d2rl_discrete_d_{w}" for w in (256, 512)),
        *(f"phi_diayn_d2rl_{w}" for w in (256, 1024)),
        "qd_relu_d_3x256",
        "pi_bilinear_d2rl_d_256",
        "q_bilinear_d2rl_d_256",
        "double_q",
        "pi_diayn_cskill",
    }
    assert set(SHORTHANDS) == expected


@pytest.mark.parametrize("name", sorted(SHORTHANDS))
def test_every_shorthand_builds_and_runs(name):
    obs_space, action_space = spaces_for(name)
    model = make_model(config_for(name), obs_space, action_space)
    assert first_trunk_layer_width(model) == expected_width(name)
    obs = sample_batch(obs_space)

    if name.startswith("pi_") or name.startswith("phi_"):
        dist = model(obs)
        if isinstance(action_space, spaces.Discrete):
            assert isinstance(dist, D.Categorical)
            assert dist.batch_shape == (BATCH,) and dist.probs.shape == (BATCH, action_space.n)
            torch.testing.assert_close(dist.probs.sum(-1), torch.ones(BATCH))
        else:
            assert isinstance(dist, TanhNormal)
            assert dist.batch_shape == (BATCH, N_ACTIONS) and dist.event_shape == ()
            action = dist.rsample()
            assert action.shape == (BATCH, N_ACTIONS) and (action.abs() <= 1).all()
            assert torch.isfinite(dist.log_prob(action)).all()
        return

    action = sample_batch(action_space, seed=1)
    value = model(obs, action)
    assert value.dtype == torch.float32 and torch.isfinite(value).all()
    if name.startswith("q_"):
        assert value.shape == (BATCH,)
    else:
        assert name.startswith("qd_") or name == "double_q"
        assert value.shape == (BATCH, 2)


@pytest.mark.parametrize("name", [n for n in sorted(SHORTHANDS) if n.startswith("qd_")])
def test_fused_critics_start_at_zero_and_read_obs_and_action(name):
    obs_space, action_space = spaces_for(name)
    model = make_model(name, obs_space, action_space)
    assert isinstance(model, QFunction) and isinstance(model.net, SkipDoubleQNetwork)
    value = model(sample_batch(obs_space), sample_batch(action_space, seed=1))
    assert (value == 0).all()
    n_action = N_TASKS * N_SUBGOAL if "flattsg" in name else flatdim(action_space)
    assert trunk_input_width(model) == flatdim(obs_space) + n_action


def test_single_critic_output_layer_is_small_uniform():
    model = make_model("q_d2rl_256", BOX_OBS, BOX_ACTION)
    out_layer = model.net[1]
    assert isinstance(out_layer, nn.Linear) and out_layer.out_features == 1
    assert out_layer.weight.abs().max() <= 3e-3 and out_layer.bias.abs().max() <= 3e-3
    assert out_layer.weight.abs().max() > 1e-3  # drawn, not zero
    assert trunk_input_width(model) == 6 + N_ACTIONS


def test_relu_critic_has_three_layers_without_skips():
    model = make_model("qd_relu_d_3x256", DICT_OBS, BOX_ACTION)
    net = model.net
    assert not net.skip and len(net.layers) == 3
    assert [layer.n_in for layer in net.layers] == [flatdim(DICT_OBS) + N_ACTIONS, 256, 256]


def test_flattsg_critic_expands_task_and_subgoal():
    model = make_model("qd_d2rl_flattsg_d_256", DICT_OBS, TASK_SUBGOAL_ACTION)
    assert isinstance(model.action_encoder, ExpandTaskSubgoal)
    with torch.no_grad():
        model.net.out.weight.normal_()
    obs = sample_batch(DICT_OBS)
    subgoal = torch.randn(BATCH, N_SUBGOAL)
    q_task0 = model(obs, {"task": torch.zeros(BATCH, dtype=torch.long), "subgoal": subgoal})
    q_task1 = model(obs, {"task": torch.ones(BATCH, dtype=torch.long), "subgoal": subgoal})
    assert not torch.allclose(q_task0, q_task1)  # the same subgoal under another subset is another action


def test_multitask_policy_drops_task_from_input_and_picks_heads():
    model = make_model("pi_d2rl_mt_d_256", TASK_OBS, BOX_ACTION)
    assert isinstance(model, TaskConditionedPolicy) and model.n_tasks == N_TASKS
    assert trunk_input_width(model) == 5  # observation only
    obs = sample_batch(TASK_OBS)
    dist = model(obs)
    all_heads = model.head(model.trunk(obs["observation"]))
    torch.testing.assert_close(dist.loc, all_heads.loc[torch.arange(BATCH), obs["task"]])


def test_bilinear_models_condition_on_task_one_hot():
    policy = make_model("pi_bilinear_d2rl_d_256", TASK_OBS, BOX_ACTION)
    assert isinstance(policy, TaskConditionedPolicy) and isinstance(policy.trunk, BilinearSkipNetwork)
    assert policy.trunk.layers[0].weight.shape == (256, 5, N_TASKS)
    critic = make_model("q_bilinear_d2rl_d_256", TASK_OBS, BOX_ACTION)
    assert isinstance(critic, BilinearQFunction)
    assert critic.trunk.layers[0].weight.shape == (256, 5 + N_ACTIONS, N_TASKS)
    obs = sample_batch(TASK_OBS)
    one_hot_obs = {**obs, "task": nn.functional.one_hot(obs["task"], N_TASKS).float()}
    torch.testing.assert_close(policy(one_hot_obs).loc, policy(obs).loc)


def test_double_q_stacks_independent_copies():
    model = make_model({"name": "double_q", "q_name": "q_bilinear_d2rl_d_256"}, TASK_OBS, BOX_ACTION)
    assert isinstance(model, StackCritics) and len(model.critics) == 2
    first, second = (dict(critic.named_parameters()) for critic in model.critics)
    assert not torch.equal(first["out.weight"], second["out.weight"])
    obs, action = sample_batch(TASK_OBS), sample_batch(BOX_ACTION, seed=1)
    value = model(obs, action)
    torch.testing.assert_close(value[:, 1], model.critics[1](obs, action))
    three = make_model({"name": "double_q", "q_name": "q_d2rl_d_256", "n_critics": 3}, DICT_OBS, BOX_ACTION)
    assert three(sample_batch(DICT_OBS), action).shape == (BATCH, 3)


def test_continuous_skill_policy_embeds_the_skill():
    model = make_model({"name": "pi_diayn_cskill", "width": 16, "n_embed": 2}, TASK_OBS, BOX_ACTION)
    assert isinstance(model[0], EmbedDiscreteSkill) and model[0].n_skills == N_TASKS
    assert first_trunk_layer_width(model) == 16
    assert trunk_input_width(model) == 5 + 2
    assert model(sample_batch(TASK_OBS)).batch_shape == (BATCH, N_ACTIONS)


def test_discriminator_accepts_box_and_dict_features():
    for obs_space in (BOX_OBS, DICT_OBS):
        model = make_model("phi_diayn_d2rl_256", obs_space, DISCRETE_ACTION)
        assert isinstance(model[-1], CategoricalFromEmbedding)
        assert trunk_input_width(model) == flatdim(obs_space)


def test_builder_options_are_passed_through():
    model = make_model({"name": "pi_d2rl_256", "n_layers": 2, "log_std_max": 0.0}, BOX_OBS, BOX_ACTION)
    assert len(model[1].layers) == 2
    assert model[2].log_std_max == 0.0


# --------------------------------------------------------------------------------------------------------------
# Nested configs


def hsd3_like_config() -> dict:
    return {
        "hi": {"pi_task": "pi_d2rl_discrete_d_256", "pi_subgoal": "pi_d2rl_mt_d_256", "q": "qd_d2rl_flattsg_d_256"},
        "lo": {"pi": "pi_d2rl_d_256"},
    }


def hsd3_like_spaces() -> tuple[dict, dict]:
    hi_obs = spaces.Dict({"observation": spaces.Box(-1, 1, (5,)), "time": spaces.Box(0, 1, (1,))})
    subgoal_obs = spaces.Dict({**hi_obs.spaces, "task": spaces.Discrete(N_TASKS)})
    lo_obs = spaces.Dict({"observation": spaces.Box(-1, 1, (7,)), "desired_goal": spaces.Box(-1, 1, (N_SUBGOAL,))})
    obs = {"hi": {"pi_task": hi_obs, "pi_subgoal": subgoal_obs, "q": hi_obs}, "lo": lo_obs}
    action = {
        "hi": {
            "pi_task": spaces.Discrete(N_TASKS),
            "pi_subgoal": spaces.Box(-1, 1, (N_SUBGOAL,)),
            "q": TASK_SUBGOAL_ACTION,
        },
        "lo": BOX_ACTION,
    }
    return obs, action


def check_hsd3_like_tree(model: nn.Module) -> None:
    assert isinstance(model, nn.ModuleDict) and set(model) == {"hi", "lo"}
    assert isinstance(model["hi"], nn.ModuleDict) and set(model["hi"]) == {"pi_task", "pi_subgoal", "q"}
    assert isinstance(model["lo"], nn.ModuleDict) and set(model["lo"]) == {"pi"}
    obs_spaces, action_spaces = hsd3_like_spaces()
    hi_obs = sample_batch(obs_spaces["hi"]["pi_task"])
    assert model["hi"]["pi_task"](hi_obs).probs.shape == (BATCH, N_TASKS)
    subgoal_obs = sample_batch(obs_spaces["hi"]["pi_subgoal"])
    assert model["hi"]["pi_subgoal"](subgoal_obs).batch_shape == (BATCH, N_SUBGOAL)
    assert model["hi"]["q"](hi_obs, sample_batch(TASK_SUBGOAL_ACTION)).shape == (BATCH, 2)
    assert model["lo"]["pi"](sample_batch(obs_spaces["lo"])).batch_shape == (BATCH, N_ACTIONS)


def test_nested_config_builds_module_dict_tree():
    obs, action = hsd3_like_spaces()
    check_hsd3_like_tree(make_model(hsd3_like_config(), obs, action))


def test_nested_omegaconf_config():
    obs, action = hsd3_like_spaces()
    cfg = OmegaConf.create(hsd3_like_config())
    cfg.lo.pi = {"name": "pi_d2rl_d_256", "n_layers": 3}
    model = make_model(cfg, obs, action)
    check_hsd3_like_tree(model)
    assert len(model["lo"]["pi"][1].layers) == 3
    single = make_model(OmegaConf.create({"name": "q_d2rl_256"}), BOX_OBS, BOX_ACTION)
    assert isinstance(single, QFunction)


def test_one_space_is_shared_by_all_children():
    cfg = {"pi": "pi_d2rl_256", "q": "qd_d2rl_256", "inner": {"q1": "q_d2rl_256"}}
    model = make_model(cfg, BOX_OBS, BOX_ACTION)
    assert trunk_input_width(model["pi"]) == 6
    assert trunk_input_width(model["q"]) == 6 + N_ACTIONS
    assert trunk_input_width(model["inner"]["q1"]) == 6 + N_ACTIONS
    # A plain dict for one side and a shared space for the other mix freely.
    mixed = make_model({"a": "pi_d2rl_256", "b": "pi_d2rl_d_256"}, {"a": BOX_OBS, "b": DICT_OBS}, BOX_ACTION)
    assert trunk_input_width(mixed["b"]) == flatdim(DICT_OBS)


# --------------------------------------------------------------------------------------------------------------
# Errors


def raises_one_line(error: type[Exception], match: str, *args: object) -> str:
    with pytest.raises(error, match=match) as info:
        make_model(*args)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_unknown_shorthand_lists_valid_names():
    message = raises_one_line(ValueError, "unknown model shorthand 'pi_d2rl_128'", "pi_d2rl_128", BOX_OBS, BOX_ACTION)
    assert "valid: " in message and all(name in message for name in SHORTHANDS)


def test_dict_observation_to_box_model_suggests_d_variant():
    raises_one_line(ValueError, "pi_d2rl_256: needs a Box observation space; got Dict \\(use the _d variant",
                    "pi_d2rl_256", DICT_OBS, BOX_ACTION)
    raises_one_line(ValueError, "use the _d variant", "qd_d2rl_256", DICT_OBS, BOX_ACTION)


def test_box_observation_to_d_model():
    raises_one_line(ValueError, "pi_d2rl_d_256: the _d variants need a Dict observation space; got Box",
                    "pi_d2rl_d_256", BOX_OBS, BOX_ACTION)
    raises_one_line(ValueError, "need a Dict observation space", "pi_d2rl_discrete_d_256", BOX_OBS, DISCRETE_ACTION)


@pytest.mark.parametrize(
    "name, obs_space, action_space, match",
    [
        ("pi_d2rl_256", BOX_OBS, DISCRETE_ACTION, "needs a 1-D Box action space"),
        ("pi_d2rl_256", BOX_OBS, spaces.Box(-1, 1, (2, 2)), "needs a 1-D Box action space"),
        ("pi_d2rl_mt_d_256", TASK_OBS, DISCRETE_ACTION, "needs a 1-D Box action space"),
        ("q_bilinear_d2rl_d_256", TASK_OBS, DISCRETE_ACTION, "needs a 1-D Box action space"),
        ("pi_d2rl_discrete_d_256", DICT_OBS, BOX_ACTION, "needs a Discrete action space"),
        ("phi_diayn_d2rl_256", BOX_OBS, BOX_ACTION, "needs a Discrete action space"),
        ("qd_d2rl_flattsg_d_256", DICT_OBS, BOX_ACTION, "needs a Dict action space with 'task' and 'subgoal'"),
        (
            "qd_d2rl_flattsg_d_256",
            DICT_OBS,
            spaces.Dict({"task": spaces.Box(0, 1, (3,)), "subgoal": spaces.Box(-1, 1, (2,))}),
            "'task' must be Discrete and 'subgoal' a Box",
        ),
        ("pi_d2rl_mt_d_256", DICT_OBS, BOX_ACTION, "needs a Dict observation space with a 'task' key"),
        ("pi_bilinear_d2rl_d_256", BOX_OBS, BOX_ACTION, "needs a Dict observation space with a 'task' key"),
        (
            "pi_d2rl_mt_d_256",
            spaces.Dict({"observation": BOX_OBS, "task": spaces.Box(0, 1, (2, 2))}),
            BOX_ACTION,
            "'task' must be Discrete\\(K\\) or a one-hot Box\\(K,\\)",
        ),
    ],
)
def test_wrong_space_types(name, obs_space, action_space, match):
    message = raises_one_line(ValueError, match, name, obs_space, action_space)
    assert message.startswith(f"{name}: ")


def test_one_hot_box_task_is_accepted():
    obs_space = spaces.Dict({"observation": spaces.Box(-1, 1, (5,)), "task": spaces.Box(0, 1, (N_TASKS,))})
    model = make_model("pi_d2rl_mt_d_256", obs_space, BOX_ACTION)
    obs = {"observation": torch.randn(BATCH, 5), "task": nn.functional.one_hot(torch.arange(BATCH) % 3, 3).float()}
    assert model(obs).batch_shape == (BATCH, N_ACTIONS)


def test_unknown_option_lists_valid_options():
    message = raises_one_line(ValueError, "pi_d2rl_256: unknown options \\['n_layer'\\]; valid: ",
                              {"name": "pi_d2rl_256", "n_layer": 3}, BOX_OBS, BOX_ACTION)
    assert "'n_layers'" in message and "'log_std_min'" in message


def test_preset_option_is_rejected():
    raises_one_line(ValueError, "pi_d2rl_256: options \\['width'\\] are fixed by the shorthand's name",
                    {"name": "pi_d2rl_256", "width": 64}, BOX_OBS, BOX_ACTION)
    raises_one_line(ValueError, "options \\['dict_obs'\\] are fixed", {"name": "qd_d2rl_256", "dict_obs": True},
                    BOX_OBS, BOX_ACTION)


def test_missing_required_option_is_named():
    raises_one_line(ValueError, "double_q: missing required options \\['q_name'\\]", {"name": "double_q"},
                    BOX_OBS, BOX_ACTION)


def test_missing_per_key_space():
    cfg = {"hi": "pi_d2rl_256", "lo": "pi_d2rl_256"}
    raises_one_line(ValueError, "no observation space for model 'lo'; spaces given for \\['hi'\\]",
                    cfg, {"hi": BOX_OBS}, BOX_ACTION)
    raises_one_line(ValueError, "no action space for model 'hi'", cfg, BOX_OBS, {"lo": BOX_ACTION})


def test_bad_config_and_space_types():
    raises_one_line(TypeError, "config must be a shorthand string or a mapping", 3, BOX_OBS, BOX_ACTION)
    raises_one_line(TypeError, "needs gymnasium spaces", "pi_d2rl_256", None, BOX_ACTION)
    raises_one_line(TypeError, "needs gymnasium spaces", "pi_d2rl_256", {"pi": BOX_OBS}, BOX_ACTION)
    raises_one_line(TypeError, "observation space must be a gymnasium space or a dict", {"pi": "pi_d2rl_256"},
                    [BOX_OBS], BOX_ACTION)


# --------------------------------------------------------------------------------------------------------------
# Registration and determinism


def tiny_linear(name: str, obs_space: spaces.Space, action_space: spaces.Space, *, width: int,
                bias: bool = True) -> nn.Module:
    """A deliberately small custom model: one linear layer named after its shorthand."""
    layer = nn.Linear(flatdim(obs_space), width, bias=bias)
    layer.built_as = name
    return layer


@pytest.fixture
def custom_shorthand():
    name = "test_tiny_linear_8"
    register_shorthand(name, tiny_linear, width=8)
    try:
        yield name
    finally:
        SHORTHANDS.pop(name, None)


def test_register_shorthand_custom_builder(custom_shorthand):
    assert custom_shorthand in SHORTHANDS
    model = make_model(custom_shorthand, BOX_OBS, BOX_ACTION)
    assert isinstance(model, nn.Linear) and model.out_features == 8 and model.in_features == 6
    assert model.built_as == custom_shorthand
    without_bias = make_model({"name": custom_shorthand, "bias": False}, BOX_OBS, BOX_ACTION)
    assert without_bias.bias is None
    raises_one_line(ValueError, "options \\['width'\\] are fixed by the shorthand's name",
                    {"name": custom_shorthand, "width": 4}, BOX_OBS, BOX_ACTION)
    raises_one_line(ValueError, "unknown options \\['depth'\\]; valid: \\['bias'\\]",
                    {"name": custom_shorthand, "depth": 4}, BOX_OBS, BOX_ACTION)


def test_custom_shorthand_is_removed_after_its_test():
    assert "test_tiny_linear_8" not in SHORTHANDS


def test_duplicate_registration_raises(custom_shorthand):
    with pytest.raises(ValueError, match="'test_tiny_linear_8' is already registered"):
        register_shorthand(custom_shorthand, tiny_linear, width=4)
    with pytest.raises(ValueError, match="'pi_d2rl_256' is already registered"):
        register_shorthand("pi_d2rl_256", tiny_linear, width=4)
    assert SHORTHANDS[custom_shorthand].preset == {"width": 8}


def test_same_seed_gives_identical_parameters():
    obs, action = hsd3_like_spaces()

    def build(seed: int) -> nn.Module:
        torch.manual_seed(seed)
        return make_model(hsd3_like_config(), obs, action)

    first, second, other = build(0), build(0), build(1)
    first_params = dict(first.named_parameters())
    assert first_params.keys() == dict(second.named_parameters()).keys()
    for name, param in second.named_parameters():
        assert torch.equal(param, first_params[name]), name
    other_params = dict(other.named_parameters())
    assert not torch.equal(other_params["lo.pi.1.layers.0.weight"], first_params["lo.pi.1.layers.0.weight"])
