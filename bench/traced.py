"""Eager vs traced vs torch.compile: forward + backward of HSD-3's ``qd_d2rl_d_256`` critic.

The critic sees a walker-sized Dict observation (60 features + time) and a 6-d action, batch 256 by default, and
each iteration is one forward, one backward of ``Q.sum()`` and zeroing the gradients (the critic part of a SAC
update). All three modes run in the same process on the same weights and inputs; the script checks that their
outputs agree, then prints iterations per second and the ratio to eager.

    python bench/traced.py                     # CPU, or CUDA when available
    python bench/traced.py --device cpu --iters 300 --threads 2
"""

from __future__ import annotations

import argparse
import time
import warnings

import torch
from gymnasium import spaces

from hsd3_learn.models.factory import make_model
from hsd3_learn.models.traced import TracedModule
from hsd3_learn.utils import resolve_device


def _inputs(batch: int, device: torch.device) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    obs = {"observation": torch.randn(batch, 60, generator=g), "time": torch.rand(batch, 1, generator=g)}
    action = torch.rand(batch, 6, generator=g) * 2 - 1
    return {k: v.to(device) for k, v in obs.items()}, action.to(device)


def _step(model: torch.nn.Module, obs: dict, action: torch.Tensor) -> None:
    model.zero_grad(set_to_none=True)
    model(obs, action).sum().backward()


def _time(model: torch.nn.Module, obs: dict, action: torch.Tensor, iters: int, device: torch.device) -> float:
    """Seconds per iteration, after warm-up (which includes tracing or compiling)."""
    for _ in range(20):
        _step(model, obs, action)
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(iters):
        _step(model, obs, action)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / iters


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--iters", type=int, default=200)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    parser.add_argument("--no-compile", action="store_true", help="skip torch.compile (slow to compile on CPU)")
    args = parser.parse_args()

    device = resolve_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    obs_space = spaces.Dict({"observation": spaces.Box(-1, 1, (60,)), "time": spaces.Box(0, 1, (1,))})
    eager = make_model("qd_d2rl_d_256", obs_space, spaces.Box(-1, 1, (6,))).to(device)
    torch.nn.init.normal_(eager.net.out.weight, std=0.1)  # non-zero outputs, so the agreement check means something
    obs, action = _inputs(args.batch, device)

    modes: dict[str, torch.nn.Module] = {"eager": eager, "traced": TracedModule(eager)}
    compile_seconds = float("nan")
    if not args.no_compile:
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            modes["compile"] = torch.compile(eager)
            modes["compile"](obs, action)  # compile now, so the timing below is steady state
        compile_seconds = time.perf_counter() - start

    reference = eager(obs, action).detach()
    for name, model in modes.items():
        err = (model(obs, action).detach() - reference).abs().max().item()
        if err > 1e-4:
            raise SystemExit(f"{name} disagrees with eager: max abs error {err:.2e}")

    print(f"qd_d2rl_d_256 forward+backward, batch {args.batch}, {args.iters} iters, device {device}, "
          f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads")
    if not args.no_compile:
        print(f"torch.compile: first call (compilation) took {compile_seconds:.1f} s")
    eager_s = _time(eager, obs, action, args.iters, device)
    print(f"{'mode':<8} {'ms/iter':>9} {'iter/s':>9} {'vs eager':>9}")
    for name, model in modes.items():
        seconds = eager_s if name == "eager" else _time(model, obs, action, args.iters, device)
        print(f"{name:<8} {seconds * 1e3:>9.3f} {1 / seconds:>9.1f} {eager_s / seconds:>8.2f}x")


if __name__ == "__main__":
    main()
