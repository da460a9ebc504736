# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 01 · Utilities: the small tools every other piece of HSD-3 stands on
#
# Before the networks and the agents, HSD-3 needs a handful of tools that look boring and cause real bugs when
# they are wrong. In this notebook you write five of them, exactly as they are in `hsd3_learn/utils.py`:
#
# | exercise | what it is for in HSD-3 | points |
# |---|---|---|
# | 1. `dim_select` | pick "the Q-value of the chosen subset" or "the policy head of each row's task" for a whole batch | 3 |
# | 2. natural sorting | order goal-space subsets like `"3+4"`, `"0,1"` by rank, then as a human would | 2 |
# | 3. `make_optim` | build one optimizer per network from a config tree that mirrors the model tree | 3 |
# | 4. `PreemptionHook` | save a checkpoint when the cluster sends SIGUSR1/SIGTERM, then pass the signal on | 2 |
# | 5. `atomic_save` | write checkpoints so that a crash never leaves a half-written file | 2 |
#
# **How the exercises work.** Each exercise cell holds the real library code with a few lines replaced by
# `raise NotImplementedError()`. The hint above the gap says what to compute, which call helps and about how many
# lines it takes. Run the check cell right below: it calls your code and the reference implementation on the same
# seeded inputs and prints `PASS ...` or tells you which output differs, where, and by how much.
#
# Time: about 1.5 hours. Prerequisites: `00_setup`.

# %% kind="readonly" id="setup"
# Provided (read-only): imports used by the library code below and by the checks.
from __future__ import annotations

import os
import re
import signal
import tempfile
import time
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from types import FrameType
from typing import Any

import matplotlib.pyplot as plt
import torch
from torch import nn

from autograder.checks import utils as check
from hsd3_learn.utils import _FUSABLE, _gather_per_row, _to_container, fused_kwargs  # provided helpers

warnings.filterwarnings("ignore")
torch.manual_seed(0)

# %% [markdown]
# ## 1. `dim_select`: one pick per row
#
# HSD-3's high-level policy first picks a feature subset $f \in \{1..K\}$ for every environment in the batch,
# then a subgoal from the **head of that subset**. Later, the critic's value of the chosen subset is needed. Both
# are the same operation: from a tensor with one entry per choice, take a *different* entry in every row.
#
# $$\text{out}[b, \dots] = \text{input}[b, \text{index}[b], \dots]$$
#
# Three layouts appear in the agents (B batch, N choices, A features, T time, K picks per row):
#
# | input | index | dim | output | used for |
# |---|---|---|---|---|
# | `[B, N]` | `[B]` | 1 | `[B]` | Q of the chosen subset |
# | `[B, N, A]` | `[B]` | 1 | `[B, A]` | the policy head of each row's task |
# | `[B, T, A]` | `[B, K]` | 1 | `[B, K, A]` | K steps of each row's trajectory |
# | `[T, B, A]` | `[B]` | 0 | `[B, A]` | the step each env is at |
#
# A Python loop over rows would work but is slow and awkward for gradients. `torch.gather(input, dim, index)`
# does it in one call, but it wants `index` to have **the same number of dimensions as `input`**, with the
# trailing dimensions broadcast. The provided helper `_gather_per_row(input, dim, index)` does exactly that
# for an index of shape `input.shape[:dim] + (K,)`. Your job is to recognise the layout and call it.
#
# **Exercise 1.** Complete `dim_select`: handle case 1 (`index.shape == input.shape[:dim]`), case 2 (an extra K
# dimension) and case 3 (`dim == 0`: move the selected axis behind the batch axes with `movedim`). Anything else
# raises the `ValueError` at the end.

# %% kind="readonly" id="provided_gather"
# @library hsd3_learn.utils:_gather_per_row

# %% kind="solution" id="dim_select"
# @library hsd3_learn.utils:dim_select
# @blank lines lead = tuple ... return _gather_per_row(moved, index.ndim | Case 1: `_gather_per_row(input, dim, index.unsqueeze(-1))` then squeeze `dim`. Case 2: `_gather_per_row(input, dim, index)`. Case 3: `input.movedim(0, index.ndim)`, then case 1 on the moved tensor at dim `index.ndim`. About 8 lines; keep `lead = tuple(input.shape[:dim])` for the error message.

# %% kind="tests" id="check_dim_select" points=3
# Check: outputs and gradients against the reference for every layout (exact match expected).
check.dim_select(dim_select)
### BEGIN HIDDEN TESTS
check.dim_select(dim_select, seeds=range(10, 16), edge_cases=True)
### END HIDDEN TESTS

# %% [markdown]
# **Experiment.** How much does the vectorised gather save over a Python loop? (No exercise; just run it.)

# %%
def loop_select(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    return torch.stack([x[b, index[b]] for b in range(x.shape[0])])


sizes, loop_ms, gather_ms = [16, 64, 256, 1024], [], []
for batch in sizes:
    x, idx = torch.randn(batch, 31, 7), torch.randint(31, (batch,))
    for fn, store in ((loop_select, loop_ms), (lambda a, i: dim_select(a, 1, i), gather_ms)):
        start = time.perf_counter()
        for _ in range(20):
            fn(x, idx)
        store.append((time.perf_counter() - start) / 20 * 1e3)

plt.figure(figsize=(5, 3))
plt.loglog(sizes, loop_ms, "o-", label="Python loop")
plt.loglog(sizes, gather_ms, "o-", label="dim_select (gather)")
plt.xlabel("batch size B"), plt.ylabel("ms per call"), plt.legend(), plt.title("[B, 31, 7] -> [B, 7]")
plt.show()

# %% [markdown]
# ## 2. Natural sorting of subset names
#
# HSD-3 names a goal-space subset by its feature groups: `"0"` (root height), `"3+4"` (left foot x and z),
# `"0,3+4"` (both). After pre-training it loads the subsets the low level can control and sorts them **by rank
# (number of groups) first, then naturally**, so that the high level's K-way categorical always has the same
# order. Plain string sorting puts `"10"` before `"2"`; natural sorting compares digit runs as numbers.
#
# The key of natural sorting splits a string into text and number pieces:
# `"x10y2"` → `["x", 10, "y", 2, ""]`; Python compares lists element by element.
#
# **Exercise 2a.** Complete `_natural_key` (one line). **Exercise 2b.** Complete `sorted_nicely_sep` (one line):
# sort by `(number of parts separated by sep, natural key)`.

# %% kind="solution" id="natural_key"
# @library hsd3_learn.utils:_natural_key
# @blank body | `re.split(r"(\d+)", str(text))` keeps the digit runs (the parentheses make it keep the separators); turn digit pieces into `int` and lower-case the others. One line (a list comprehension).
# @library hsd3_learn.utils:sorted_nicely

# %% kind="tests" id="check_natural_key" points=1
check.natural_key(_natural_key)

# %% kind="solution" id="sorted_nicely_sep"
# @library hsd3_learn.utils:sorted_nicely_sep
# @blank body | `sorted(items, key=lambda s: (..., _natural_key(s)))` where the first element counts the parts of `str(s).split(sep)`. One line.

# %% kind="tests" id="check_sorted_nicely_sep" points=1
check.sorted_nicely_sep(sorted_nicely_sep)

# %%
print(sorted_nicely_sep(["0,1,2", "3+4", "10", "0,3+4", "2", "0,1"]))

# %% [markdown]
# ## 3. Optimizers from a config tree
#
# HSD-3's model is a tree of networks, and its Hydra config has an `optim` tree with the **same shape**:
#
# ```yaml
# model:                                   optim:
#   hi:                                      hi:
#     pi_task: pi_d2rl_discrete_d_256          pi_task:    {_target_: torch.optim.Adam, lr: 3e-4}
#     pi_subgoal: pi_d2rl_mt_d_256             pi_subgoal: {_target_: torch.optim.Adam, lr: 3e-4}
#     q: qd_d2rl_flattsg_d_256                 q:          {_target_: torch.optim.Adam, lr: 1e-4}
#   lo:                                      # no `lo`: the pre-trained low level stays frozen
#     pi: pi_d2rl_d_1024
# ```
#
# `make_optim(cfg, model)` walks both trees together: a node with `_target_` becomes an optimizer over that
# submodule's trainable parameters; any other node is a dict whose keys name children of the module. A missing
# key means "no optimizer"; a module without parameters gets `None`. The provided `_build_optimizer` does the
# `_target_` case (it also turns on fused Adam kernels when everything is on a GPU).
#
# **Exercise 3.** Complete the recursive part of `make_optim`: for each key of the config, find the child module of
# the same name (raise the `ValueError` shown in the hint if there is none) and recurse.

# %% kind="readonly" id="provided_build_optimizer"
# @library hsd3_learn.utils:_build_optimizer

# %% kind="solution" id="make_optim"
# @library hsd3_learn.utils:make_optim
# @blank lines children = dict( ... return optims | `children = dict(model.named_children())`; loop over `cfg.items()`; for a key that is not a child raise `ValueError(f"{where}.{key} has no matching submodule in the model; valid keys: {sorted(children)}")`; otherwise recurse with `make_optim(sub_cfg, children[key], fuse=fuse, _path=...)` where the path grows like "hi.q". About 9 lines.

# %% kind="tests" id="check_make_optim" points=3
check.make_optim(make_optim)

# %% [markdown]
# ## 4. Checkpoint on preemption
#
# On a shared cluster a job can be stopped at any time: Slurm sends `SIGUSR1` (or `SIGTERM`) some seconds before it
# kills the process. HSD-3 runs for days, so it saves a checkpoint when the signal arrives and resumes later.
#
# Two subtleties:
#
# - **When to save.** Python runs a signal handler between two bytecodes of the main thread, possibly in the
#   middle of an optimizer step. Saving right there could store half-updated weights. So by default the handler
#   only *records* the signal; the training loop calls `checkpoint_if_requested()` between updates.
# - **Chaining.** Other code may have installed a handler first (Hydra, submitit's requeue logic). After saving, call
#   the previous handler so that it still works.
#
# **Exercise 4.** Complete `_handle` (record the signal; in immediate mode also checkpoint and chain) and
# `checkpoint_if_requested`.

# %% kind="solution" id="preemption_hook"
# @library hsd3_learn.utils:PreemptionHook
# @blank method _handle | Store `signum` in `self.requested`; if `self.immediate`, call `self._checkpoint_and_chain(frame)`. 3 lines.
# @blank method checkpoint_if_requested | Return False when nothing was requested; otherwise `self._checkpoint_and_chain(None)` and return True. 4 lines.

# %% kind="tests" id="check_preemption_hook" points=2
check.preemption_hook(PreemptionHook)

# %% [markdown]
# ## 5. Atomic saves
#
# `torch.save(obj, "checkpoint.pt")` opens the file, truncates it and writes. If the process dies in between (the
# cluster's kill arrives, the disk fills up), the old checkpoint is gone and the new one is garbage: the run cannot
# resume. The fix is a classic: write to a temporary file **in the same folder**, flush it to disk, then
# `os.replace` it over the target. A rename within one file system is atomic: readers see the old file or the new
# one, never half of one.
#
# **Exercise 5.** Complete the `try` block of `atomic_save`: save into the open temporary file, flush and `fsync`,
# then replace the target.

# %% kind="solution" id="atomic_save"
# @library hsd3_learn.utils:atomic_save
# @blank lines with os.fdopen ... os.replace(tmp, path) | `with os.fdopen(fd, "wb") as f:` then `torch.save(obj, f)`, `f.flush()`, `os.fsync(f.fileno())`; after the `with`, `os.replace(tmp, path)`. 5 lines.

# %% kind="tests" id="check_atomic_save" points=2
check.atomic_save(atomic_save)

# %% [markdown]
# **Experiment.** What a crash does to a plain `torch.save`: we cut a checkpoint file in half (as a kill during
# the write would) and try to load it.

# %%
with tempfile.TemporaryDirectory() as tmp:
    path = Path(tmp) / "checkpoint.pt"
    torch.save({"weights": torch.randn(1000)}, path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # the process died halfway through writing
    try:
        torch.load(path)
    except Exception as err:
        print(f"plain save, interrupted: cannot resume ({type(err).__name__})")
    atomic_save({"weights": torch.randn(1000)}, path)  # a complete write replaces it in one step
    print("atomic save: loads fine, keys =", list(torch.load(path)))

# %% [markdown]
# ## Summary
#
# - `dim_select` turns "one choice per row" into a single differentiable `gather`; HSD-3 uses it for the chosen
#   subset's Q-value and policy head.
# - Subsets are ordered by rank, then naturally, so the high-level action space has a stable order.
# - `make_optim` mirrors the model tree: whatever has no optimizer config stays frozen.
# - Preemption: record the signal, save at a safe point, chain the previous handler.
# - Checkpoints go through a temporary file and an atomic rename.
#
# Next: `02_bandits`, the bandits HSD-Bandit uses to choose a goal space per episode.
