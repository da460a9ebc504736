"""Gradient updates per second of SAC, HSD-3's high level and SAC-MT with the paper's networks, eager vs torch.compile.

1. ``sac``: :class:`~hsd3_learn.agents.sac.SACAgent` (``walker_sac``: ``pi_d2rl_256``, ``qd_d2rl_256``, batch 256) on
   walker Hurdles; one update = one critic, one policy and one temperature step plus the polyak average.
2. ``hsd3``: :class:`~hsd3_learn.agents.hsd3.HSD3Agent`, the high level (``pi_d2rl_discrete_d_256``,
   ``pi_d2rl_mt_d_256``, ``qd_d2rl_flattsg_d_256``, batch 256) over all 31 walker subsets, on walker Hurdles with
   an untrained ``pi_d2rl_d_1024`` skill saved to a temporary low-level checkpoint.
3. ``sacmt``: :class:`~hsd3_learn.agents.sacmt.SACMTAgent` pre-training (``pi_d2rl_d_1024``, ``qd_d2rl_d_1024``,
   reachability ``q_d2rl_d_1024``, batch 256) on the walker ``PretrainingEnv``.

Each agent's replay buffer is filled by stepping random actions through the real envs (2 of them, a sync vector env)
with ``observe``, its warm-up set so that no update runs while filling; then ``agent.update()`` is called directly.
The compiled mode is a deep copy of the same filled agent whose network trunks (every ``SkipNetwork``,
``SkipDoubleQNetwork`` and ``BilinearSkipNetwork`` in ``agent.model`` and the target critics, where the FLOPs are) are
compiled in place with ``nn.Module.compile(dynamic=False)``; ``update()`` itself, the distribution heads, the
optimizers and the replay sampling stay eager, and no library code changes. Its first update is timed separately: a
cold compilation, since the run uses a fresh inductor cache in a temporary folder (dynamo's state is reset between
agents, and its recompile limit raised: each trunk class's forward serves several networks, grad modes and batch
shapes). After warm-up calls, eager and compiled rounds of ``--updates`` calls alternate; the median round of
each is reported, with the ratio compile/eager from the same run. Nothing is asserted.

Why the trunks: on a 2-core CPU, compiling whole networks (their distributions and Dict flattening included) was
slower than compiling the trunks, and ``torch.compile(agent.update)`` breaks its graph at every backward and
optimizer step and hits dynamo's recompile limit, ending far slower than eager.

    python bench/updates.py                          # about 3 minutes on 2 otherwise idle cores
    python bench/updates.py --agents sac --no-compile --updates 100
    python bench/updates.py --device cuda --save     # writes results/updates-cuda.txt
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

# This script sits next to bench/envs.py, which would shadow the ``envs`` package: keep its folder off the path.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import torch
import torch._dynamo
from torch import nn

import envs
from hsd3_learn.agents.hsd3 import HSD3Agent, low_level_observation_space, make_hsd3_env, save_low_level
from hsd3_learn.agents.sac import SACAgent
from hsd3_learn.agents.sacmt import SACMTAgent
from hsd3_learn.envs import FEATURE_DIMS, PretrainingEnv, enumerate_subsets, task_map
from hsd3_learn.envs.vector import TorchVectorEnv, make_vector_env
from hsd3_learn.models.blocks import BilinearSkipNetwork, SkipDoubleQNetwork, SkipNetwork
from hsd3_learn.models.factory import make_model
from hsd3_learn.utils import resolve_device

AGENTS = ("sac", "hsd3", "sacmt")
#: timed updates per round by default (HSD-3's critic sees 31 x 256 rows, SAC-MT's nets are 1024 wide: both slow)
DEFAULT_UPDATES = {"sac": 50, "hsd3": 8, "sacmt": 10}
#: the networks each agent is built with (the paper's configs)
NETWORKS = {"sac": {"pi": "pi_d2rl_256", "q": "qd_d2rl_256"},
            "hsd3": {"pi_task": "pi_d2rl_discrete_d_256", "pi_subgoal": "pi_d2rl_mt_d_256",
                     "q": "qd_d2rl_flattsg_d_256"},
            "sacmt": {"pi": "pi_d2rl_d_1024", "q": "qd_d2rl_d_1024", "reachability": "q_d2rl_d_1024"}}
LOW_LEVEL = "pi_d2rl_d_1024"
BATCH = 256
N_ENVS = 2
NEVER = 10**12  # warm-up and random-exploration samples: no update while filling, random actions throughout
TRUNKS = (SkipNetwork, SkipDoubleQNetwork, BilinearSkipNetwork)
RECOMPILE_LIMIT = 64


class Bench:
    """An agent, the vector env that fills its buffer, whether ``observe`` takes the step's info (SAC-MT), and a
    description of the data."""

    def __init__(self, agent: Any, venv: TorchVectorEnv, wants_info: bool, what: str) -> None:
        self.agent, self.venv, self.wants_info, self.what = agent, venv, wants_info, what


def _venv(make: Callable[[], Any]) -> TorchVectorEnv:
    return TorchVectorEnv(make_vector_env([make] * N_ENVS))


def _capacity(fill_steps: int) -> int:
    return N_ENVS * max(fill_steps, 1)


def build_sac(device: str, fill_steps: int, tmp: Path) -> Bench:
    venv = _venv(partial(envs.make, "Hurdles", "walker"))
    cfg = {"device": device, "batch_size": BATCH, "rpbuf_size": _capacity(fill_steps), "warmup_samples": NEVER,
           "randexp_samples": NEVER, **NETWORKS["sac"]}
    agent = SACAgent(venv.single_observation_space, venv.single_action_space, N_ENVS, cfg)
    return Bench(agent, venv, False, "walker Hurdles")


def build_hsd3(device: str, fill_steps: int, tmp: Path) -> Bench:
    robot_map = task_map(FEATURE_DIMS["walker"])
    subsets = enumerate_subsets(FEATURE_DIMS["walker"])
    venv = _venv(partial(make_hsd3_env, "Hurdles", "walker"))
    low = make_model(LOW_LEVEL, low_level_observation_space("walker", robot_map), venv.single_action_space)
    path = tmp / "checkpoint-lo.pt"
    save_low_level(path, low, "walker", subsets, robot_map, model=LOW_LEVEL)
    cfg = {"device": device, "batch_size": BATCH, "rpbuf_size": _capacity(fill_steps), "warmup_samples": NEVER,
           "randexp_samples": NEVER, "lo": {"init_from": str(path)}, **NETWORKS["hsd3"]}
    agent = HSD3Agent(venv.single_observation_space, venv.single_action_space, N_ENVS, cfg)
    return Bench(agent, venv, False, f"walker Hurdles, {agent.iface.n_subsets} subsets, {LOW_LEVEL} skill")


def build_sacmt(device: str, fill_steps: int, tmp: Path) -> Bench:
    venv = _venv(partial(PretrainingEnv, "walker"))
    cfg = {"device": device, "batch_size": BATCH, "rpbuf_size": _capacity(fill_steps), "warmup_samples": NEVER,
           "randexp_samples": NEVER, **NETWORKS["sacmt"]}
    agent = SACMTAgent(venv.single_observation_space, venv.single_action_space, N_ENVS, cfg)
    return Bench(agent, venv, True, "walker PretrainingEnv")


BUILDERS = {"sac": build_sac, "hsd3": build_hsd3, "sacmt": build_sacmt}


def fill(bench: Bench, steps: int) -> int:
    """Step random actions through the envs into the agent's buffer; returns the rows stored."""
    agent, venv = bench.agent, bench.venv
    obs, _ = venv.reset(seed=0)
    for _ in range(steps):
        action = agent.action(obs, explore=True)
        next_obs, reward, terminated, truncated, info = venv.step(action)
        extra = (info,) if bench.wants_info else ()
        agent.observe(obs, action, reward, terminated, truncated, info.get("final_obs", next_obs), *extra)
        obs = next_obs
    venv.close()
    if agent.n_updates:
        raise SystemExit(f"{type(agent).__name__} updated while its buffer was being filled")
    return len(agent.buffer)


def networks(agent: Any) -> list[nn.Module]:
    """The agent's trained networks and their target copies."""
    nets = list(agent.model.values())
    for name in ("target_q", "target"):
        target = getattr(agent, name, None)
        if isinstance(target, nn.ModuleDict):
            nets.extend(target.values())
        elif isinstance(target, nn.Module):
            nets.append(target)
    return nets


def compile_trunks(agent: Any) -> int:
    """Compile every network trunk of the agent in place (outermost ones only); returns how many."""
    count = 0
    for net in networks(agent):
        trunks = [m for m in net.modules() if isinstance(m, TRUNKS)]
        inner = {id(sub) for t in trunks for sub in t.modules() if sub is not t}
        for trunk in trunks:
            if id(trunk) not in inner:
                trunk.compile(dynamic=False)
                count += 1
    return count


def one_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}"[:160]


def seconds_per_update(agent: Any, n: int, sync: Callable[[], None]) -> float:
    sync()
    start = time.perf_counter()
    for _ in range(n):
        agent.update()
    sync()
    return (time.perf_counter() - start) / n


def measure(name: str, args: argparse.Namespace, device: torch.device, out: Callable[[str], None],
            tmp: Path) -> dict[str, Any]:
    """updates/s (median round) per mode, the compile time, or why compiling failed."""
    torch.manual_seed(0)
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    fill_steps = 16 if args.quick else 256
    bench = BUILDERS[name](str(device), fill_steps, tmp)
    rows = fill(bench, fill_steps)
    agent = bench.agent
    n_updates = args.updates or (2 if args.quick else DEFAULT_UPDATES[name])
    n_warmup = 1 if args.quick else 3
    nets = ", ".join(str(v) for v in NETWORKS[name].values())
    params = sum(p.numel() for net in agent.model.values() for p in net.parameters())
    out(f"\n{name}: {type(agent).__name__} ({nets}; {params / 1e6:.2f}M trained parameters), batch {BATCH}, "
        f"{bench.what}; buffer of {rows} rows from {fill_steps} random steps x {N_ENVS} envs")
    seconds_per_update(agent, n_warmup, sync)
    result: dict[str, Any] = {"rates": {"eager": []}, "updates": n_updates}
    compiled = None
    if not args.no_compile:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                torch._dynamo.reset()  # no compiled code or recompile counts left over from the previous agent
                compiled = copy.deepcopy(agent)
                n_trunks = compile_trunks(compiled)
                result["compile_s"] = seconds_per_update(compiled, 1, sync)  # the first call compiles
                seconds_per_update(compiled, n_warmup, sync)  # and recompiles for any new shape or grad mode
            result["rates"]["compile"] = []
            out(f"   compile: {n_trunks} trunks compiled; first update (cold compilation) took "
                f"{result['compile_s']:.1f} s")
        except Exception as err:  # noqa: BLE001 - any failure is reported, not raised
            result["compile_error"] = one_line(err)
            compiled = None
            out(f"   compile failed: {result['compile_error']}")
    for _ in range(args.rounds):
        result["rates"]["eager"].append(1 / seconds_per_update(agent, n_updates, sync))
        if compiled is not None:
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    result["rates"]["compile"].append(1 / seconds_per_update(compiled, n_updates, sync))
            except Exception as err:  # noqa: BLE001
                result["compile_error"] = one_line(err)
                result["rates"].pop("compile")
                compiled = None
                out(f"   compile failed while timing: {result['compile_error']}")
    return result


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--agents", default=",".join(AGENTS), help=f"comma-separated, from {', '.join(AGENTS)}")
    parser.add_argument("--updates", type=int, default=0,
                        help="timed updates per round (default: " +
                             ", ".join(f"{k} {v}" for k, v in DEFAULT_UPDATES.items()) + ")")
    parser.add_argument("--rounds", type=int, default=3, help="alternating eager/compile rounds; the median is kept")
    parser.add_argument("--no-compile", action="store_true", help="eager only (compiling takes a while on CPU)")
    parser.add_argument("--quick", action="store_true", help="tiny counts, a smoke test (figures mean little)")
    parser.add_argument("--save", action="store_true", help="also write the output to results/updates-<device>.txt")
    args = parser.parse_args()
    names = [a.strip() for a in args.agents.split(",") if a.strip()]
    unknown = [a for a in names if a not in AGENTS]
    if unknown or not names:
        parser.error(f"unknown agents {unknown}; valid: {', '.join(AGENTS)}")
    if args.updates < 0 or args.rounds < 1 or args.threads < 1:
        parser.error("--updates must be >= 0, --rounds and --threads >= 1")
    if args.quick:
        args.rounds = 1

    device = resolve_device(args.device)
    torch.set_num_threads(args.threads)
    # Each trunk class's forward is one code object shared by the networks, their target copies, grad modes and
    # batch shapes (HSD-3's critic sees 256 and 31 x 256 rows): more variants than dynamo's default limit of 8.
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, RECOMPILE_LIMIT)
    warnings.filterwarnings("ignore", category=UserWarning)
    lines: list[str] = []

    def out(line: str) -> None:
        print(line, flush=True)
        lines.append(line)

    gpu = f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""
    out(f"agent.update() per second, device {device}{gpu}, torch {torch.__version__}, {torch.get_num_threads()} CPU "
        f"threads, {cpu_name()}; median of {args.rounds} alternating rounds")
    results = {}
    with tempfile.TemporaryDirectory(prefix="bench-updates-") as tmp:
        # A fresh inductor cache, so that the first compiled update is a cold compile on every run.
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(Path(tmp) / "inductor")
        os.environ["TRITON_CACHE_DIR"] = str(Path(tmp) / "triton")
        for name in names:
            results[name] = measure(name, args, device, out, Path(tmp))

    out(f"\n{'agent':<6} {'mode':<8} {'updates/s':>10} {'ms/update':>10} {'compile/eager':>14}")
    for name, result in results.items():
        eager = statistics.median(result["rates"]["eager"])
        for mode in ("eager", "compile"):
            if mode in result["rates"]:
                rate = statistics.median(result["rates"][mode])
                ratio = "" if mode == "eager" else f"{rate / eager:.2f}x"
                out(f"{name:<6} {mode:<8} {rate:>10.2f} {1e3 / rate:>10.1f} {ratio:>14}")
            elif mode == "compile" and "compile_error" in result:
                out(f"{name:<6} {mode:<8} failed: {result['compile_error']}")
    if not args.no_compile:
        out("compile = the network trunks compiled in place with nn.Module.compile(dynamic=False); update(), heads, "
            "optimizers and sampling eager")

    if args.save:
        path = Path(__file__).resolve().parent / "results" / f"updates-{device.type}.txt"
        command = " ".join(["python bench/updates.py", *sys.argv[1:]])
        machine = f"{os.cpu_count()}-core {cpu_name()}, {device}{gpu}"
        path.write_text(f"$ {command}   # {machine}\n" + "\n".join(lines) + "\n")
        print(f"\nwritten to {path}")


if __name__ == "__main__":
    main()
