# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 04 · Traced modules: record a network once, replay it many times
#
# HSD-3 calls the same few networks millions of times: the two critics in every update, the frozen low-level
# policy in every environment step. Their structure never changes, yet eager PyTorch pays Python's overhead for
# every layer of every call. The original code (`hucc`, option `trace: true`) therefore *traces* them: it runs a
# network once on example inputs, records the tensor operations into a graph, and replays the graph afterwards.
# In this notebook you write the wrapper that does this, `TracedModule` from `hsd3_learn/models/traced.py`, and
# find out what a trace cannot do:
#
# | exercise | what it is for in HSD-3 | points |
# |---|---|---|
# | 1a. `TracedModule.forward` | trace lazily on the first call and reuse the trace; parameters stay shared | 3 |
# | 1b. `forward` from many threads | vector-env workers sharing a policy: the first call traces exactly once | 2 |
# | 2. state-dict hooks | checkpoints look the same with tracing on or off | 3 |
# | 3. what the trace computes | predict, in code, what a trace of data-dependent Python returns | 2 |
#
# At the end an experiment times a critic update eager, traced and with `torch.compile`.
#
# **A word on TorchScript.** `torch.jit.trace` belongs to TorchScript, which recent PyTorch releases mark as
# *deprecated* in favour of `torch.compile` and `torch.export` (you would see a `DeprecationWarning`; this
# notebook silences warnings). Tracing still works, and it is the clearest way to see what "record the graph and
# replay it" means, including what gets frozen, which is exactly what `torch.compile` has to handle with guards
# and graph breaks. The course keeps it for that reason, and because `TracedModule` is the one place the library
# would have to change to switch: the agents only ever see an `nn.Module`.
#
# Time: about 1 hour. Prerequisites: `03_blocks` (the model factory and the `qd_d2rl_d_256` critic).

# %% kind="readonly" id="setup"
# Provided (read-only): imports used by the library code below, the checks and the experiments.
from __future__ import annotations

import statistics
import threading
import time
import warnings
from typing import Any

import matplotlib.pyplot as plt
import torch
from gymnasium import spaces
from torch import nn

from autograder.checks import traced as check
from hsd3_learn.models.factory import make_model

warnings.filterwarnings("ignore")  # TorchScript's deprecation notice and the tracer's warnings (see the text)
torch.manual_seed(0)

# %% [markdown]
# ## 0. What a trace records
#
# `torch.jit.trace(fn, example_inputs)` calls `fn` once and records every tensor operation it performs. The
# result is a callable that replays those operations on new inputs, without running the Python code again.
# `.code` shows the recording as Python-like TorchScript, `.graph` as the intermediate representation with one
# node per operation (the shapes in it are annotations from the example; they do not restrict later calls).

# %%
def layer(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.relu(x @ w + b)


w, b = torch.randn(3, 2), torch.randn(2)
traced_layer = torch.jit.trace(layer, (torch.randn(4, 3), w, b))
print(traced_layer.code)
print(traced_layer.graph)
x = torch.randn(10, 3)  # another batch size: the same recording applies
print("same result as eager on a batch of 10:", torch.equal(traced_layer(x, w, b), layer(x, w, b)))

# %% [markdown]
# The same works for a whole network. Here is HSD-3's fused double critic `qd_d2rl_d_256` for a walker-sized
# observation: a Dict with 60 features and the time, an action of 6 numbers, and two D2RL critics evaluated at once:
# `q(obs, action) -> [B, 2]`. Two things to notice in the recorded code of its trunk: the Python `for` loop over
# the layers is gone (unrolled into four layer calls), and the layers of the trace are the *same parameter
# tensors* as the eager critic's, so training the critic trains the trace.

# %%
obs_space = spaces.Dict({"observation": spaces.Box(-1, 1, (60,)), "time": spaces.Box(0, 1, (1,))})
action_space = spaces.Box(-1, 1, (6,))
critic = make_model("qd_d2rl_d_256", obs_space, action_space)
obs = {"observation": torch.randn(5, 60), "time": torch.rand(5, 1)}
action = torch.rand(5, 6) * 2 - 1

traced_critic = torch.jit.trace(critic, (obs, action), strict=False)  # strict=False: the input is a dict
print(traced_critic.net.code)
print("trace shares the weights of the critic:", traced_critic.net.out.weight is critic.net.out.weight)

# %% [markdown]
# ## 1. `TracedModule`: trace on the first call
#
# `torch.jit.trace` needs example inputs, and an agent does not have them when it builds its networks: the first
# real batch is the example. So `TracedModule(module)` is *lazy*: it stores `module` and traces on the first call.
#
# $$\texttt{forward}(x) = \begin{cases} \tau \leftarrow \texttt{trace}(\texttt{module}, x);\ \ \tau(x) &
# \text{first call} \\ \tau(x) & \text{every later call} \end{cases}$$
#
# For the critic above: `obs = {"observation": [B, 60], "time": [B, 1]}`, `action: [B, 6]` → `q: [B, 2]`; B may
# change from call to call, the structure (dict keys, number of inputs, ranks) may not.
#
# Three details of the provided parts of the class matter for your code:
#
# - The trace is kept in `self.__dict__["_traced"]`, **not** `self._traced = ...`: `nn.Module.__setattr__` would
#   register a traced module as a submodule, and its (shared) parameters would appear a second time in
#   `state_dict()`. Reading `self._traced` is fine.
# - `self._trace(inputs)` does the actual `torch.jit.trace(self.module, inputs, strict=False, ...)` (with the
#   tracer's warnings silenced and a clear error for untraceable modules).
# - `self._lock` is a `threading.Lock()`.
#
# **Why a lock.** HSD-3 runs several environments in worker threads that may share one policy. If all of them call a
# fresh `TracedModule` at the same moment, all see "no trace yet" and all trace: wasted seconds at best, and
# several different trace objects. The fix is *double-checked locking*:
#
# 1. read `self._traced`; if it exists, call it: the fast path, no lock (reading an attribute is atomic in Python);
# 2. otherwise take `self._lock`, and **check again**: another thread may have traced while this one waited;
# 3. trace only if it is still missing, store it, release the lock, call the trace.
#
# Locking on every call would also be correct, but then every call of every worker waits for the others, forever,
# to protect something that only happens once.
#
# **Exercise 1.** Write the body of `TracedModule.forward` in the class below (about 7 lines).
#
# *Checks.* 1a: on seeded `qd_d2rl_d_256` critics, `is_traced` is False before the first call and True after; the
# outputs of two calls with different batch sizes equal the eager critic's (atol 1e-6) with one trace recorded in
# all; gradients of a fixed weighted sum reach the critic's own parameters and equal eager gradients (atol 1e-5);
# after an SGD step on the *wrapped* critic, the traced output changes and still equals eager. 1b: 8 threads call a
# fresh wrapper at once; exactly one `torch.jit.trace` call (the check makes each trace slow, so a race shows up
# every time), every thread's output equals eager, and a call after tracing does not take the lock.

# %% [markdown]
# ## 2. Checkpoints that do not know about tracing
#
# `TracedModule` holds the network as `self.module`, so without help its `state_dict()` would name the output
# weight of the critic `module.net.out.weight` instead of `net.out.weight`: a checkpoint written with tracing
# switched on could not be loaded with tracing switched off, and the other way round. Two hooks fix that:
#
# $$\texttt{save:}\ \ \texttt{prefix} + \texttt{module.} + k \;\mapsto\; \texttt{prefix} + k \qquad\qquad
# \texttt{load:}\ \ \texttt{prefix} + k \;\mapsto\; \texttt{prefix} + \texttt{module.} + k$$
#
# | where the critic sits | without the hook | with the hook (= eager) |
# |---|---|---|
# | alone | `module.net.out.weight` | `net.out.weight` |
# | `ModuleDict({"hi": ModuleDict({"q": traced})})` | `hi.q.module.net.out.weight` | `hi.q.net.out.weight` |
#
# - `register_state_dict_post_hook(hook)` calls `hook(module, state_dict, prefix, local_metadata)` after the module
#   has written its tensors into `state_dict`: a dict of the **whole** checkpoint being built, where this module's
#   keys all start with `prefix` (the path of the module in the tree, `""` at the top, `"hi.q."` above).
# - `register_load_state_dict_pre_hook(hook)` calls `hook(module, state_dict, prefix, *more)` before the module
#   loads its part of `state_dict`; rename keys in place.
#
# The constructor registers both hooks (they are static methods: `module` is the `TracedModule`, unused here).
# Change a dict while looping over a *copy* of its keys (`for key in [k for k in state_dict if ...]`), and
# rename with `state_dict[new_key] = state_dict.pop(old_key)`: every key moves to the end of the dict in turn, so
# the order of the keys is kept.
#
# **Exercise 2.** Write the bodies of `_drop_module_level` and `_add_module_level` (2 lines each).
#
# *Check.* For a `qd_d2rl_d_256` critic alone, inside `ModuleDict({"pi", "q"})` and two levels deep next to a second
# `TracedModule` (hidden tests add a module with a child named `head_module`): the keys of `state_dict()` equal
# those of the same tree without tracing (same order); a plain model loads the traced checkpoint and the traced
# model loads a plain checkpoint (`strict=True`), with every tensor equal (exact).

# %% kind="solution" id="traced_module"
# @library hsd3_learn.models.traced:TracedModule
# @blank method forward | Fast path: `traced = self._traced`. If it is None: `with self._lock:`, test `self._traced is None` again, and only then store `self._trace(inputs)` in `self.__dict__["_traced"]`; read `traced = self._traced` (still inside the lock). Finally `return traced(*inputs)`. About 7 lines.
# @blank method _drop_module_level | For every key that starts with `prefix + "module."` (loop over a list of them), pop it and store its value under `prefix` + the rest of the key after `"module."`. 2 lines.
# @blank method _add_module_level | For every key that starts with `prefix` (loop over a list of them, since you change the dict), pop it and store its value under `prefix + "module."` + the rest of the key after `prefix`. 2 lines.

# %% kind="tests" id="check_traced_forward" points=3
# Exercise 1a: lazy, equal to eager (outputs and gradients), one trace for two batch sizes, shared parameters.
check.traced_forward(TracedModule)
### BEGIN HIDDEN TESTS
check.traced_forward(TracedModule, seeds=[3, 8])
### END HIDDEN TESTS

# %% kind="tests" id="check_traced_threads" points=2
# Exercise 1b: 8 threads call a fresh TracedModule at once: one trace, correct outputs, no lock once traced.
check.traced_threads(TracedModule)
### BEGIN HIDDEN TESTS
check.traced_threads(TracedModule, seeds=[5], n_threads=16)
### END HIDDEN TESTS

# %% kind="tests" id="check_state_dict_hooks" points=3
# Exercise 2: state_dict keys as without tracing (alone and nested), loading both ways.
check.state_dict_hooks(TracedModule)
### BEGIN HIDDEN TESTS
check.state_dict_hooks(TracedModule, seeds=[4], edge_cases=True)
### END HIDDEN TESTS

# %% [markdown]
# With both exercises done, a traced critic trains like the eager one and its checkpoint is interchangeable with an
# eager critic's:

# %%
q_traced = TracedModule(make_model("qd_d2rl_d_256", obs_space, action_space))
q_traced(obs, action)
q_eager = make_model("qd_d2rl_d_256", obs_space, action_space)
q_eager.load_state_dict(q_traced.state_dict())
print(q_traced)
print("first keys of the checkpoint:", list(q_traced.state_dict())[:3])

# %% [markdown]
# ## 3. What a trace cannot see
#
# A trace records what *happened* on the example input, not the Python code that decided it. Three rules follow:
#
# - **Branches on tensor values are frozen.** `if x.sum() > 0:` turns a tensor into a Python `bool`; the tracer
#   only sees the operations of the branch that ran and records those.
# - **Python numbers computed from tensors become constants.** `x.max().item()` leaves the graph; its value on the
#   example is baked into the trace.
# - **Shapes are different.** `x.shape[0]` used in arithmetic is recorded as an operation (`aten::size`) and follows
#   the new input, which is why batch sizes may change.
#
# The tracer warns about the first two (`TracerWarning: Converting a tensor to a Python boolean might cause the
# trace to be incorrect`); they are silenced in this notebook, never ignore them in your own code. The usual fix is
# to keep the decision inside the graph, e.g. `torch.where(x.sum() > 0, x * 2, -x)`. `torch.compile` handles such
# code differently: it guards on the values it specialised on and recompiles (or breaks the graph) when they change.
# Outputs are a limit too: a trace returns tensors (or tuples/dicts of them), so a policy that returns a
# `torch.distributions` object cannot be traced; HSD-3 traces critics and the deterministic low level only.

# %%
def sign_gate(x: torch.Tensor) -> torch.Tensor:
    return x * 2 if x.sum() > 0 else -x


traced_gate = torch.jit.trace(sign_gate, torch.ones(3))  # traced on a positive input
x = -torch.ones(3)
print("eager :", sign_gate(x))
print("traced:", traced_gate(x), "  <- the branch of the example, forever")
print(traced_gate.code)
in_graph = torch.jit.trace(lambda x: torch.where(x.sum() > 0, x * 2, -x), torch.ones(3))
print("torch.where version, traced:", in_graph(x))

# %% [markdown]
# **Exercise 3.** The function below uses all three rules. It is traced on `example = [1, 2, 4]`. Work out, on
# paper first, what `traced_scale(x)` returns for a **new** input `x` of shape `[N]` (any length, any signs), then
# write it in `what_the_trace_computes(x)` as one line of plain torch, without calling the trace or
# `scale_by_max`. Once your answer passes, print `traced_scale.code` and find each rule in it.
#
# *Check.* Your function against `traced_scale` on new seeded inputs of several lengths and signs (atol 1e-5). The
# hidden tests add all-negative inputs, a single element and a longer vector.

# %% kind="readonly" id="provided_scale_by_max"
def scale_by_max(x: torch.Tensor) -> torch.Tensor:
    """[N] -> [N]: divide by the largest entry if the mean is positive, else flip the sign; then times N."""
    top = x.max().item()  # a Python float
    if x.mean() > 0:  # a Python bool
        y = x / top
    else:
        y = -x
    return y * x.shape[0]  # N, the length of x


example = torch.tensor([1.0, 2.0, 4.0])
traced_scale = torch.jit.trace(scale_by_max, example)

# %% kind="solution" id="what_the_trace_computes"
def what_the_trace_computes(x: torch.Tensor) -> torch.Tensor:
    """``traced_scale(x)`` for a new input x [N] -> [N], in plain torch."""
    # Hint: one line. For each of `top`, the branch and `x.shape[0]`: was it recorded as an operation on x, or frozen
    # to its value on the example?
    ### BEGIN SOLUTION
    return x / 4.0 * x.shape[0]
    ### END SOLUTION


# %% kind="tests" id="check_what_the_trace_computes" points=2
check.traced_prediction(what_the_trace_computes, scale_by_max, example)
### BEGIN HIDDEN TESTS
check.traced_prediction(what_the_trace_computes, scale_by_max, example, seeds=range(10, 14), edge_cases=True)
### END HIDDEN TESTS

# %% [markdown]
# ## 4. Experiment: eager vs traced vs `torch.compile`
#
# What does tracing buy? We time one critic update step, forward and backward of `q(obs, action).sum()` for the
# `qd_d2rl_d_256` critic at batch 256 (the critic part of a SAC update), in three modes on the same weights:
#
# - **eager**: plain PyTorch, Python runs every layer;
# - **traced**: your `TracedModule`; the graph is replayed by TorchScript's executor;
# - **`torch.compile`**: TorchDynamo captures the graph, Inductor generates fused C++ (CPU) or Triton (GPU)
#   kernels. Compiling takes seconds (5–25 s on a laptop CPU), so we compile once and time a few steps.
#
# The modes take turns (5 rounds of 10 steps) and we report the median, which is robust to a busy laptop. The
# numbers are ratios to eager: above 1 is faster.

# %%
torch.manual_seed(0)
bench_critic = make_model("qd_d2rl_d_256", obs_space, action_space)
nn.init.normal_(bench_critic.net.out.weight, std=0.1)  # non-zero outputs, so the agreement check means something
bench_obs = {"observation": torch.randn(256, 60), "time": torch.rand(256, 1)}
bench_action = torch.rand(256, 6) * 2 - 1


def update_step(model: nn.Module) -> None:
    model.zero_grad(set_to_none=True)
    model(bench_obs, bench_action).sum().backward()


# Compile in this process: for a model this small, starting a pool of compiler processes costs more than it saves.
torch._inductor.config.compile_threads = 1
modes: dict[str, Any] = {"eager": bench_critic, "traced": TracedModule(bench_critic)}
first_call_s = {}
for name, model in [("traced", modes["traced"]), ("compile", None)]:
    start = time.perf_counter()
    if model is None:
        model = modes["compile"] = torch.compile(bench_critic)
    update_step(model)  # traces or compiles
    first_call_s[name] = time.perf_counter() - start
print(f"first call: trace {first_call_s['traced']:.2f} s, compile {first_call_s['compile']:.1f} s")
reference = bench_critic(bench_obs, bench_action).detach()
for name, model in modes.items():
    error = (model(bench_obs, bench_action).detach() - reference).abs().max().item()
    print(f"{name:>8}: max abs difference to eager {error:.1e}")

ms_per_step: dict[str, list[float]] = {name: [] for name in modes}
for name, model in modes.items():
    for _ in range(3):
        update_step(model)  # warm-up: TorchScript optimises its graph during the first calls
for _ in range(5):
    for name, model in modes.items():
        start = time.perf_counter()
        for _ in range(10):
            update_step(model)
        ms_per_step[name].append((time.perf_counter() - start) / 10 * 1e3)
median_ms = {name: statistics.median(times) for name, times in ms_per_step.items()}
speedup = {name: median_ms["eager"] / ms for name, ms in median_ms.items()}
print(f"\nqd_d2rl_d_256, forward + backward, batch 256, {torch.get_num_threads()} CPU threads")
for name in modes:
    print(f"{name:>8}: {median_ms[name]:6.2f} ms/step   {speedup[name]:.2f}x eager")

reference_2core = {"eager": 1.0, "traced": 1.09, "compile": 0.63}  # bench/results/traced-cpu.txt
positions = range(len(modes))
plt.figure(figsize=(5.5, 3.2))
plt.bar([p - 0.2 for p in positions], [speedup[m] for m in modes], width=0.4, label="this machine")
plt.bar([p + 0.2 for p in positions], [reference_2core[m] for m in modes], width=0.4,
        label="2-core VM (bench/results)", alpha=0.6)
for p, m in zip(positions, modes):
    plt.text(p - 0.2, speedup[m], f"{speedup[m]:.2f}", ha="center", va="bottom", fontsize=8)
plt.axhline(1.0, color="black", linewidth=0.8, linestyle="--")
plt.xticks(list(positions), list(modes))
plt.ylim(0, 1.45 * max(max(speedup.values()), 1.09))
plt.ylabel("speed vs eager (x)"), plt.legend(loc="upper center", ncol=2, fontsize=8)
plt.title("critic update step, batch 256, CPU")
plt.show()

# %% [markdown]
# **Reading the result.** On a CPU at this size the differences are small, and `torch.compile` is often *slower*
# than eager: on a 2-core VM (`bench/results/traced-cpu.txt`) tracing gave about 1.1x and `torch.compile` about
# 0.6x, after 4 s of compilation. Each step is a handful of large matrix multiplications (`[256, 323] @ [323, 256]`
# per critic and layer); they dominate the time and are the same BLAS calls in every mode, so removing Python's
# per-layer overhead saves little, and Inductor's generated code for the backward pass does not beat PyTorch's
# hand-written kernels on CPU. Expect some noise between runs on a busy machine.
#
# Compilation pays off where per-operation overhead and memory traffic dominate: on a **GPU**, where each eager
# operation is a separate kernel launch and Inductor fuses the element-wise operations (ReLU, bias, concatenation)
# into few kernels, and for **bigger models or many small operations** (long rollouts of a small policy, HSD-3's
# 1024-wide low level evaluated every environment step), where the compile time is spent once and repaid over
# millions of calls. Tracing sits in between: cheap to make (well under a second), modest gains, and the frozen
# control flow of section 3 to watch out for.

# %% [markdown]
# ## Summary
#
# - `torch.jit.trace` runs a function once and records its tensor operations; the recording replays them on new
#   inputs, unrolls Python loops and shares the module's parameters.
# - `TracedModule` traces lazily on the first call, protected by double-checked locking so that concurrent first
#   calls trace once and later calls take no lock.
# - Two state-dict hooks remove and restore the `module.` level, so checkpoints are identical with tracing on or off,
#   at any depth of the model tree.
# - A trace freezes branches on tensor values and Python numbers taken from tensors; shapes stay dynamic. Models
#   returning distributions cannot be traced.
# - On a CPU at HSD-3's sizes, tracing gains a little and `torch.compile` may lose; compilation pays off on GPUs and
#   for bigger or longer-running models. TorchScript is deprecated; `TracedModule` is the one place to switch.
#
# Next: `05_agents`, where the traced critics meet SAC and HSD-3's high-level agent.
