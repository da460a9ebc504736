"""Tests of hsd3_learn.utils: optimizers from configs, dim_select, natural sorting, signals, seeding, files."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from hsd3_learn.utils import (
    PreemptionHook,
    atomic_save,
    dim_select,
    env_seeds,
    fused_kwargs,
    make_optim,
    resolve_device,
    seed_everything,
    sorted_nicely,
    sorted_nicely_sep,
)


def _hsd3_like_model() -> nn.ModuleDict:
    return nn.ModuleDict(
        {
            "hi": nn.ModuleDict({"pi": nn.Linear(3, 2), "q": nn.Linear(3, 1), "flat": nn.Flatten()}),
            "lo": nn.ModuleDict({"pi": nn.Linear(3, 2)}),
        }
    )


# ------------------------------------------------------------------------------------------------ make_optim


def test_make_optim_mirrors_the_model_tree() -> None:
    model = _hsd3_like_model()
    cfg = {
        "hi": {
            "pi": {"_target_": "torch.optim.Adam", "lr": 3e-4},
            "q": {"_target_": "torch.optim.SGD", "lr": 0.1, "momentum": 0.9},
            "flat": {"_target_": "torch.optim.Adam", "lr": 1e-3},
        }
    }
    optims = make_optim(cfg, model)
    assert set(optims) == {"hi"} and set(optims["hi"]) == {"pi", "q", "flat"}
    assert isinstance(optims["hi"]["pi"], torch.optim.Adam)
    assert optims["hi"]["pi"].param_groups[0]["lr"] == 3e-4
    assert isinstance(optims["hi"]["q"], torch.optim.SGD)
    assert optims["hi"]["q"].param_groups[0]["momentum"] == 0.9
    assert optims["hi"]["flat"] is None  # no parameters, no optimizer
    # Each optimizer owns exactly its submodule's parameters.
    got = {id(p) for p in optims["hi"]["pi"].param_groups[0]["params"]}
    assert got == {id(p) for p in model.hi.pi.parameters()}
    assert "lo" not in optims  # frozen: no config, no optimizer


def test_make_optim_accepts_omegaconf_and_a_single_target() -> None:
    model = _hsd3_like_model()
    cfg = OmegaConf.create({"lr": 0.01, "optim": {"hi": {"pi": {"_target_": "torch.optim.Adam", "lr": "${lr}"}}}})
    optims = make_optim(cfg.optim, model)  # interpolations resolve against the whole config
    assert optims["hi"]["pi"].param_groups[0]["lr"] == 0.01
    whole = make_optim({"_target_": "torch.optim.Adam", "lr": 1e-4}, model)
    n_params = sum(len(g["params"]) for g in whole.param_groups)
    assert n_params == len(list(model.parameters()))


def test_make_optim_skips_frozen_parameters() -> None:
    model = nn.ModuleDict({"pi": nn.Linear(2, 2)})
    model.pi.weight.requires_grad_(False)
    optim = make_optim({"pi": {"_target_": "torch.optim.Adam", "lr": 1e-3}}, model)["pi"]
    assert [p is model.pi.bias for p in optim.param_groups[0]["params"]] == [True]


def test_make_optim_errors_name_the_problem() -> None:
    model = _hsd3_like_model()
    with pytest.raises(ValueError, match=r"optim\.hi\.nope .*valid keys: \['flat', 'pi', 'q'\]"):
        make_optim({"hi": {"nope": {"_target_": "torch.optim.Adam"}}}, model)
    with pytest.raises(ValueError, match="cannot import optimizer class 'torch.optim.Nope'"):
        make_optim({"hi": {"pi": {"_target_": "torch.optim.Nope"}}}, model)
    with pytest.raises(TypeError, match="must be a mapping"):
        make_optim({"hi": 3}, model)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="fused Adam needs CUDA")
def test_make_optim_fuses_adam_on_cuda() -> None:  # pragma: no cover - exercised on GPU machines
    model = nn.ModuleDict({"pi": nn.Linear(2, 2).cuda()})
    optim = make_optim({"pi": {"_target_": "torch.optim.Adam", "lr": 1e-3}}, model)["pi"]
    assert optim.defaults["fused"] is True


def test_make_optim_does_not_fuse_on_cpu_and_understands_hucc_fuse_key() -> None:
    model = nn.ModuleDict({"pi": nn.Linear(2, 2)})
    optim = make_optim({"pi": {"_target_": "torch.optim.Adam", "lr": 1e-3, "fuse": True}}, model)["pi"]
    assert not optim.defaults.get("fused")
    assert "fuse" not in optim.defaults


def test_fused_kwargs_decides_when_to_fuse() -> None:
    adam = "torch.optim.Adam"
    assert fused_kwargs(adam, {"lr": 1.0}, all_on_cuda=True) == {"lr": 1.0, "fused": True}
    assert fused_kwargs(adam, {"lr": 1.0}, all_on_cuda=False) == {"lr": 1.0}
    assert fused_kwargs(adam, {"fuse": False}, all_on_cuda=True) == {}
    assert fused_kwargs(adam, {}, all_on_cuda=True, fuse=False) == {}
    assert fused_kwargs(adam, {"foreach": True}, all_on_cuda=True) == {"foreach": True}  # explicit choice wins
    assert fused_kwargs(adam, {"fused": False}, all_on_cuda=True) == {"fused": False}
    assert fused_kwargs("torch.optim.RMSprop", {}, all_on_cuda=True) == {}  # no fused kernel


# ------------------------------------------------------------------------------------------------ dim_select


def test_dim_select_one_pick_per_row() -> None:
    q = torch.arange(12.0).view(4, 3)  # [B, N]
    index = torch.tensor([2, 0, 1, 2])
    assert torch.equal(dim_select(q, 1, index), torch.tensor([2.0, 3.0, 7.0, 11.0]))
    heads = torch.randn(4, 5, 2)  # [B, K, A]
    picked = dim_select(heads, 1, torch.tensor([4, 0, 3, 1]))
    assert picked.shape == (4, 2)
    for b, k in enumerate([4, 0, 3, 1]):
        assert torch.equal(picked[b], heads[b, k])


def test_dim_select_several_picks_per_row() -> None:
    x = torch.randn(3, 6, 2)  # [B, T, A]
    index = torch.tensor([[0, 5], [1, 1], [4, 2]])  # [B, K]
    out = dim_select(x, 1, index)
    assert out.shape == (3, 2, 2)
    for b in range(3):
        for k in range(2):
            assert torch.equal(out[b, k], x[b, index[b, k]])


def test_dim_select_along_the_leading_axis() -> None:
    x = torch.randn(7, 4, 3)  # [T, B, A]
    index = torch.tensor([6, 0, 2, 2])  # [B]
    out = dim_select(x, 0, index)
    assert out.shape == (4, 3)
    for b, t in enumerate(index.tolist()):
        assert torch.equal(out[b], x[t, b])


def test_dim_select_negative_dim_and_gradients() -> None:
    q = torch.randn(4, 3, requires_grad=True)
    index = torch.tensor([1, 1, 0, 2])
    dim_select(q, -1, index).sum().backward()
    expected = torch.zeros(4, 3)
    expected[torch.arange(4), index] = 1.0
    assert torch.equal(q.grad, expected)


def test_dim_select_rejects_unsupported_layouts() -> None:
    with pytest.raises(ValueError, match=r"cannot select input \(4, 3\) at dim 1 with index \(5,\)"):
        dim_select(torch.randn(4, 3), 1, torch.zeros(5, dtype=torch.long))
    with pytest.raises(TypeError, match="integer tensor"):
        dim_select(torch.randn(4, 3), 1, torch.zeros(4))


# ------------------------------------------------------------------------------------------------ sorting


def test_sorted_nicely_orders_numbers_naturally() -> None:
    assert sorted_nicely(["x10", "x2", "x1", "X3"]) == ["x1", "x2", "X3", "x10"]
    assert sorted_nicely(["checkpoint-100.pt", "checkpoint-20.pt"]) == ["checkpoint-20.pt", "checkpoint-100.pt"]


def test_sorted_nicely_sep_orders_by_rank_first() -> None:
    subsets = ["0,1,2", "3+4", "10", "0,3+4", "2", "0,1"]
    assert sorted_nicely_sep(subsets) == ["2", "3+4", "10", "0,1", "0,3+4", "0,1,2"]
    assert sorted_nicely_sep(["a-b", "c"], sep="-") == ["c", "a-b"]


# ------------------------------------------------------------------------------------------------ signals


def test_preemption_hook_defers_checkpoint_and_chains_previous_handler() -> None:
    calls: list[str] = []
    previous = signal.signal(signal.SIGUSR1, lambda signum, frame: calls.append(f"previous:{signum}"))
    try:
        with PreemptionHook(lambda: calls.append("checkpoint")) as hook:
            assert not hook.checkpoint_if_requested()
            os.kill(os.getpid(), signal.SIGUSR1)
            assert hook.requested == signal.SIGUSR1
            assert calls == []  # nothing happens inside the handler by default
            assert hook.checkpoint_if_requested()
        assert calls == ["checkpoint", f"previous:{int(signal.SIGUSR1)}"]
        # The previous handler is back after the context.
        os.kill(os.getpid(), signal.SIGUSR1)
        assert calls[-1] == f"previous:{int(signal.SIGUSR1)}" and len(calls) == 3
    finally:
        signal.signal(signal.SIGUSR1, previous)


def test_preemption_hook_immediate_mode_chains_to_a_python_handler() -> None:
    calls: list[str] = []
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: calls.append("previous"))
    hook = PreemptionHook(lambda: calls.append("checkpoint"), immediate=True).install()
    try:
        hook.install()  # a second install is a no-op, not a handler that calls itself
        os.kill(os.getpid(), signal.SIGTERM)
        assert calls == ["checkpoint", "previous"]
    finally:
        hook.uninstall()
        signal.signal(signal.SIGTERM, previous)


def test_preemption_hook_immediate_mode_honours_the_default_action(tmp_path) -> None:
    """With the default SIGTERM handler before it, the process saves and then terminates as it would have."""
    marker = tmp_path / "saved"
    script = textwrap.dedent(
        f"""
        import os, signal, time
        from hsd3_learn.utils import PreemptionHook
        PreemptionHook(lambda: open({str(marker)!r}, "w").close(), immediate=True).install()
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)
        print("still alive")
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert marker.exists()
    assert result.returncode == -signal.SIGTERM, result.stdout + result.stderr
    assert "still alive" not in result.stdout


def test_preemption_hook_needs_a_callable() -> None:
    with pytest.raises(TypeError, match="checkpoint_fn must be callable"):
        PreemptionHook("save")  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------------ seeding etc.


def test_seed_everything_makes_all_generators_repeat() -> None:
    def draw() -> tuple:
        rng = seed_everything(123)
        return random.random(), np.random.rand(), torch.rand(1).item(), rng.random()

    assert draw() == draw()
    seed_everything(124)
    assert torch.rand(1).item() != draw()[2]
    with pytest.raises(ValueError, match="non-negative integer"):
        seed_everything(-1)


def test_env_seeds() -> None:
    assert env_seeds(10, 3) == [10, 11, 12]
    with pytest.raises(ValueError, match="n_envs must be >= 1"):
        env_seeds(0, 0)


def test_resolve_device() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    with pytest.raises(ValueError, match="unknown device 'gpu0'"):
        resolve_device("gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda")


def test_atomic_save_round_trip_and_no_leftovers(tmp_path) -> None:
    path = tmp_path / "sub" / "checkpoint.pt"
    atomic_save({"w": torch.arange(3)}, path)
    assert torch.equal(torch.load(path)["w"], torch.arange(3))
    atomic_save({"w": torch.arange(4)}, path)  # overwrite
    assert torch.equal(torch.load(path)["w"], torch.arange(4))
    assert sorted(p.name for p in path.parent.iterdir()) == ["checkpoint.pt"]


def test_atomic_save_uses_normal_file_permissions(tmp_path) -> None:
    path = tmp_path / "checkpoint.pt"
    atomic_save({}, path)
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask


def test_atomic_save_keeps_the_old_file_when_saving_fails(tmp_path) -> None:
    path = tmp_path / "checkpoint.pt"
    atomic_save({"step": 1}, path)

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("cannot pickle")

    with pytest.raises(RuntimeError, match="cannot pickle"):
        atomic_save({"bad": Unpicklable()}, path)
    assert torch.load(path) == {"step": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]
