# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 03 · Blocks: the networks HSD-3 is built from
#
# Every network in HSD-3 is a short chain of small modules from `hsd3_learn/models/blocks.py`, named in the config
# by a one-token shorthand (`pi_d2rl_mt_d_256`, `qd_d2rl_flattsg_d_256`) that `hsd3_learn/models/factory.py` turns
# into a module. In this notebook you write the pieces that carry the ideas:
#
# | exercise | what it is for in HSD-3 | points |
# |---|---|---|
# | 1. `tanh_gaussian_log_prob` | the change of variables behind every squashed action's log-probability | 2 |
# | 2a. `TanhNormal` | the policy distribution: a Gaussian squashed into (-1, 1) by `tanh` | 1 |
# | 2b. `GaussianFromEmbedding` | the policy head, with the log-std clamped to [-5, 2] | 1 |
# | 3. `SkipNetwork` | the D2RL trunk every network uses: the raw input goes into every layer | 2 |
# | 4a. `GroupedLinear` | K linear layers in one batched matmul | 1 |
# | 4b. `SkipDoubleQNetwork` | Q1 and Q2 fused into one module whose output starts at exactly zero | 2 |
# | 5. `MultiHeadGaussianFromEmbedding` | the subgoal policy pi_g: one Gaussian head per goal-space subset | 2 |
# | 6. `ExpandTaskSubgoal` | the critic's view of the action (subset, subgoal): an outer product | 1 |
# | 7a. `critic` | the builder behind every `q_*` / `qd_*` shorthand | 2 |
# | 7b. `make_model` | the factory's recursion over a nested config tree | 1 |
#
# **How the exercises work.** Each exercise cell holds the real library code with a few lines replaced by
# `raise NotImplementedError()`. The hint above the gap says what to compute, which call helps and about how many
# lines it takes. The check cell below it builds your module and the reference with the same arguments, copies the
# reference weights into yours, and compares outputs and gradients on seeded inputs (distributions: mean, log-prob
# of fixed actions, a sample drawn with the same seed). It prints `PASS ...` or what differs, where and by how much.
# Where a later exercise builds on an earlier piece, the notebook first switches to the reference version of that
# piece, so one mistake costs one grade only.
#
# Shapes use B batch, A action dims, D input features, H hidden units, K critics / heads / subsets, G subgoal dims.
#
# Time: about 3 hours. Prerequisites: `01_utils` (per-row selection with `gather`), PyTorch modules and
# `torch.distributions`, and the SAC policy loss (Haarnoja et al. 2018).

# %% kind="readonly" id="setup"
# Provided (read-only): imports used by the library code below and by the checks.
from __future__ import annotations

import inspect
import math
import warnings
from collections.abc import Callable, Mapping
from typing import Any

import gymnasium as gym
import matplotlib.pyplot as plt
import numpy as np
import torch
from gymnasium import spaces
from torch import distributions as D
from torch import nn
from torch.nn import functional as F

from autograder.checks import blocks as check
from hsd3_learn.models.blocks import LOG_STD_MAX, LOG_STD_MIN, FlattenSpace, SplitTaskInput, SqueezeLastDim
from hsd3_learn.models.factory import SHORTHANDS, _build_shorthand  # provided helpers
from hsd3_learn.spaces import flatdim

warnings.filterwarnings("ignore")
torch.manual_seed(0)

# %% [markdown]
# ## 1. Squashing a Gaussian: the change of variables
#
# A walker's actuators take torques in $[-1, 1]$. SAC (and both levels of HSD-3) therefore samples a Gaussian and
# squashes it with $\tanh$:
#
# $$u \sim \mathcal N(\mu, \sigma^2), \qquad a = \tanh(u). \tag{1}$$
#
# SAC's losses need $\log \pi(a)$: the entropy bonus $-\alpha \log \pi(a)$ is part of every target and of the
# policy loss. $\tanh$ squeezes the real line into $(-1, 1)$, so probability mass that was spread out gets packed
# together and the density of $a$ is **not** the Gaussian density of $u$. For a one-to-one map, mass is conserved:
# $\pi(a)\,|da| = \mathcal N(u)\,|du|$, and $\frac{da}{du} = 1 - \tanh^2 u$. Per action dimension,
#
# $$\log \pi(a) = \log \mathcal N(u;\, \mu, \sigma^2) - \log\left(1 - \tanh^2 u\right), \tag{2}$$
#
# and for the whole action (independent dimensions) $\log \pi(\mathbf a) = \sum_{i=1}^{A} \log \pi(a_i)$
# (SAC paper, appendix C). Forget the correction and the policy is credited with the entropy of $u$: it can make
# $\sigma$ huge, its actions pile up at $\pm 1$, and the entropy bonus still looks great.
#
# **Numerics.** In float32, $\tanh(u)$ rounds to exactly $\pm 1$ once $|u| > 9$, so `torch.log(1 - torch.tanh(u)**2)`
# becomes $\log 0 = -\infty$. Policies do produce such $u$. Write the correction in a form that never forms
# $1 - \tanh^2 u$: since $1 - \tanh^2 u = 4 / (e^{u} + e^{-u})^2$,
#
# $$\log\left(1 - \tanh^2 u\right) = 2\left(\log 2 - u - \operatorname{softplus}(-2u)\right). \tag{3}$$
#
# **Exercise 1.** Complete `tanh_gaussian_log_prob(u, mu, std)`: equation (2) with the stable form (3), **per
# dimension**. Shapes: `u` is `[B, A]`, `mu` and `std` are `[B, A]` or broadcastable (`[A]`); the result is `[B, A]`,
# like `TanhNormal.log_prob` below (callers sum over A).
#
# The check compares your values and their gradients w.r.t. `u`, `mu` and `std` with the library's `TanhNormal`
# (atol 1e-4, rtol 1e-5); the last row of every batch has $|u| \ge 9$.

# %% kind="solution" id="tanh_gaussian_log_prob"
def tanh_gaussian_log_prob(u: torch.Tensor, mu: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """log pi(a) for a = tanh(u), u ~ N(mu, std^2), per dimension: ``[B, A]`` (sum over A for the whole action).

    ``u`` is the pre-tanh sample ``[B, A]``; ``mu`` and ``std`` are ``[B, A]`` or broadcast to it (e.g. ``[A]``).
    """
    # Hint: log N(u; mu, std) is `D.Normal(mu, std).log_prob(u)`; subtract log(1 - tanh(u)^2) in the stable
    #   form of equation (3) (`math.log`, `F.softplus`). About 3 lines.
    ### BEGIN SOLUTION
    log_normal = D.Normal(mu, std).log_prob(u)
    log_det = 2.0 * (math.log(2.0) - u - F.softplus(-2.0 * u))  # log(1 - tanh(u)^2), finite for any u
    return log_normal - log_det
    ### END SOLUTION


# %% kind="tests" id="check_tanh_gaussian_log_prob" points=2
# Check: values and gradients against TanhNormal.log_prob (atol 1e-4), saturated rows included.
check.tanh_gaussian_log_prob(tanh_gaussian_log_prob)
### BEGIN HIDDEN TESTS
check.tanh_gaussian_log_prob(tanh_gaussian_log_prob, seeds=range(10, 14), edge_cases=True)
### END HIDDEN TESTS

# %% [markdown]
# ## 2. `TanhNormal` and the Gaussian policy head
#
# `torch.distributions` already knows equation (2): a `TransformedDistribution` of a base `Normal` with a
# `TanhTransform` computes `log_prob(a)` as the base log-prob of $\tanh^{-1}(a)$ minus the transform's
# `log_abs_det_jacobian`, which is exactly the stable form (3). Two details make it fit SAC:
#
# - **`cache_size=1`.** `rsample()` computes $u$, then $a = \tanh u$. The transform remembers the last
#   $(u, a)$ pair, so `log_prob(a)` of that very sample uses the exact $u$ instead of $\operatorname{atanh}(a)$,
#   which is $\pm\infty$ when $a$ rounded to $\pm 1$.
# - **`mean` is $\tanh(\mu)$.** HSD-3 acts deterministically at evaluation time (and its pre-trained low level
#   always does) with $\tanh$ of the Gaussian's mean. That is not the true mean of the squashed distribution, which
#   has no closed form, so `TransformedDistribution` does not define one; we do.
#
# Shapes: `loc` and `scale` are `[B, A]`; `rsample()` and `log_prob(a)` are `[B, A]`; `batch_shape` is `[B, A]`.
#
# **Exercise 2a.** Complete `TanhNormal.__init__` (one `super().__init__` call) and the `mean` property.
#
# The check compares `mean`, `log_prob` of fixed actions, `rsample()` drawn with the same seed, the `log_prob` of that
# sample (one row saturates) and the gradients w.r.t. `loc` and `scale` of a scalar made of all of them.

# %% kind="solution" id="tanh_normal"
# @library hsd3_learn.models.blocks:TanhNormal
# @blank method __init__ | `super().__init__(base, transforms, validate_args=False)` with base `D.Normal(loc, scale)` and transforms `[D.TanhTransform(cache_size=1)]`. One line.
# @blank method mean | tanh of the base distribution's mean (`self.base_dist.loc`). One line.

# %% kind="tests" id="check_tanh_normal" points=1
# Check: mean, log_prob, same-seed rsample and gradients against hsd3_learn's TanhNormal (atol 1e-5 .. 1e-3).
check.tanh_normal(TanhNormal)
### BEGIN HIDDEN TESTS
check.tanh_normal(TanhNormal, seeds=range(10, 14), edge_cases=True)
### END HIDDEN TESTS

# %% [markdown]
# **Experiment.** Does the squashed density match the samples? Below, a histogram of 200,000 samples of your
# `TanhNormal` against its density $e^{\log \pi(a)}$ and against the density *without* the correction,
# $\mathcal N(\operatorname{atanh} a)$. On the right the Gaussian is wide, so many samples land near $\pm 1$: the
# corrected density follows the pile-up, the uncorrected one misses it and does not even integrate to the share of
# samples it should cover.

# %%
grid = torch.linspace(-0.995, 0.995, 801)
fig, axes = plt.subplots(1, 2, figsize=(10, 3.2))
for ax, (mu, sigma) in zip(axes, [(0.0, 0.4), (0.8, 1.5)]):
    policy = TanhNormal(torch.tensor([mu]), torch.tensor([sigma]))
    torch.manual_seed(0)
    samples = policy.sample((200_000,)).squeeze(-1)
    with torch.no_grad():
        corrected = policy.log_prob(grid.unsqueeze(-1)).exp().squeeze(-1)
        uncorrected = D.Normal(mu, sigma).log_prob(torch.atanh(grid)).exp()
    inside = (samples.abs() <= 0.995).float().mean().item()
    print(f"mu={mu}, sigma={sigma}: share of samples in [-0.995, 0.995] = {inside:.3f}; integral over that range of "
          f"the corrected density = {torch.trapezoid(corrected, grid).item():.3f}, "
          f"uncorrected = {torch.trapezoid(uncorrected, grid).item():.3f}")
    ax.hist(samples.numpy(), bins=100, range=(-1, 1), density=True, alpha=0.4, label="samples")
    ax.plot(grid, corrected, label=r"$\mathcal{N}(u) / (1 - \tanh^2 u)$")
    ax.plot(grid, uncorrected, "--", label=r"$\mathcal{N}(\mathrm{atanh}\, a)$ (no correction)")
    ax.set_title(rf"$\mu$={mu}, $\sigma$={sigma}"), ax.set_xlabel("action a"), ax.set_ylim(0, None)
axes[0].set_ylabel("density"), axes[1].legend(loc="upper left", fontsize=8)
plt.tight_layout()
plt.show()

# %% [markdown]
# ### The policy head and the log-std clamp
#
# `GaussianFromEmbedding` turns the trunk's embedding $e$ `[B, H]` into the distribution, with two linear layers:
#
# $$\mu = W_\mu e + b_\mu, \qquad \log\sigma = \operatorname{clamp}\left(W_\sigma e + b_\sigma,\ -5,\ 2\right),
# \qquad \pi(\cdot \mid e) = \texttt{TanhNormal}(\mu, e^{\log\sigma}). \tag{4}$$
#
# Why clamp? SAC pulls $\sigma$ in two directions. Near a good action the Q-gradient pushes $\sigma \to 0$, and then
# $\log \mathcal N(\mu; \mu, \sigma) = -\log\sigma - \tfrac12\log 2\pi$ and its gradients (which scale like
# $1/\sigma$) blow up. The entropy bonus pushes $\sigma$ up, and at $\log\sigma = 5$ ($\sigma \approx 148$) about 99%
# of the actions have $|a| > 0.99$: the policy has become bang-bang. The clamp to $[-5, 2]$, that is
# $\sigma \in [0.0067, 7.4]$, keeps log-probs and gradients bounded (hucc's values, kept here as `LOG_STD_MIN` and
# `LOG_STD_MAX`). Clamp **before** `exp()`, on the log scale, and use the module's own `log_std_min/max`: other
# models pass other ranges.
#
# **Exercise 2b.** Complete `_tanh_normal` (clamp, exp, build the distribution) and `GaussianFromEmbedding.forward`.
#
# The check loads the reference weights into your head, sets the log-std biases between -9 and 5 (so the clamp
# matters), compares $\sigma$, the distribution as in 2a and the gradients w.r.t. every weight and the embedding.

# %% kind="solution" id="gaussian_from_embedding"
# @library hsd3_learn.models.blocks:_tanh_normal
# @blank body | Clamp `log_std` to [log_std_min, log_std_max] with `.clamp`, then `.exp()` it into the scale of a `TanhNormal(mu, scale)`. One line.
# @library hsd3_learn.models.blocks:GaussianFromEmbedding
# @blank method forward | Compute mu and the raw log-std with the two linear layers and hand them to `_tanh_normal` with this module's range. One line.

# %% kind="tests" id="check_gaussian_from_embedding" points=1
# Check: sigma (clamped), the distribution and all gradients against the reference head (atol 1e-5).
check.gaussian_from_embedding(GaussianFromEmbedding)
### BEGIN HIDDEN TESTS
check.gaussian_from_embedding(GaussianFromEmbedding, seeds=range(10, 14), edge_cases=True)
### END HIDDEN TESTS

# %% kind="readonly" id="use_reference_heads"
# Provided (read-only): from here on, the notebook uses the reference versions of the pieces above, so that a
# mistake there costs one grade only.
from hsd3_learn.models.blocks import GaussianFromEmbedding, TanhNormal, _tanh_normal  # noqa: E402, F811

# %% [markdown]
# ## 3. The D2RL trunk: the raw input in every layer
#
# Every HSD-3 network (policies, critics, both levels) uses the same trunk, from D2RL (Sinha et al. 2020): a ReLU
# MLP whose layers after the first also see the raw input $x$:
#
# $$y_1 = \operatorname{relu}(W_1 x + b_1), \qquad
# y_{l+1} = \operatorname{relu}\left(W_{l+1} \begin{bmatrix} y_l \\ x \end{bmatrix} + b_{l+1}\right),
# \quad l = 1, \dots, L-1. \tag{5}$$
#
# Shapes: $x$ is `[B, D]`, every $y_l$ is `[B, H]`; $W_1$ is `nn.Linear(D, H)` and the others are
# `nn.Linear(H + D, H)`. The dense skips let a 4-layer network train as easily as a 2-layer one, which matters in
# RL, where deeper plain MLPs often learn worse.
#
# **The order matters.** $W_{l+1}$'s first $H$ columns read $y_l$ and the last $D$ read $x$. With
# `torch.cat([x, y])` a freshly trained network still works, but loading a checkpoint trained with the other order
# (HSD-3 loads its pre-trained low-level policy) silently gives garbage. Keep `[y, x]`.
#
# **Exercise 3.** Complete `SkipNetwork.forward`.
#
# The check loads the reference weights and compares outputs `[B, H]` (atol 1e-5) and the gradients of a fixed
# weighted sum w.r.t. the input and every weight, for 1 to 4 layers.

# %% kind="solution" id="skip_network"
# @library hsd3_learn.models.blocks:SkipNetwork
# @blank method forward | Apply the first layer and a ReLU; then every later layer to `torch.cat([y, x], dim=-1)`, each followed by `F.relu`. About 4 lines.

# %% kind="tests" id="check_skip_network" points=2
# Check: outputs and gradients against the reference SkipNetwork with the same weights (atol 1e-5).
check.skip_network(SkipNetwork)
### BEGIN HIDDEN TESTS
check.skip_network(SkipNetwork, seeds=range(10, 14), edge_cases=True)
### END HIDDEN TESTS

# %% [markdown]
# ## 4. Two critics in one module
#
# SAC (and HSD-3's high level) trains two Q-functions and uses $\min(Q_1, Q_2)$ in its targets against
# overestimation. Two separate networks mean two small matmuls per layer. HSD-3 fuses them: each layer holds K
# independent weight matrices and applies them in **one** batched matmul.
#
# ### Grouped linear layers
#
# $$y_{b,k} = x_{b,k} W_k + \beta_k, \qquad x: [B, K, D],\ W: [K, D, H],\ \beta: [K, 1, H] \ \rightarrow\
# y: [B, K, H]. \tag{6}$$
#
# This is one `nn.Linear` with a block-diagonal weight, without storing the zeros. `torch.baddbmm(bias, X, W)`
# computes `bias + X @ W` for a batch of matrices; its batch dimension must come first, so move K to the front
# (`[K, B, D]`) and back.
#
# **Exercise 4a.** Complete `GroupedLinear.forward` (the comment above the gap gives the shapes).
#
# The check compares outputs `[B, K, H]` and gradients w.r.t. `x`, `weight` and `bias` (atol 1e-5).

# %% kind="solution" id="grouped_linear"
# @library hsd3_learn.models.blocks:GroupedLinear
# @blank method forward | `torch.baddbmm(bias, X, W)` is `bias + X @ W` batched over the first dim: move K to the front of x with `transpose(0, 1)`, use this layer's weight and bias, and move K back. One line.

# %% kind="tests" id="check_grouped_linear" points=1
# Check: outputs and gradients against the reference GroupedLinear with the same weights (atol 1e-5).
check.grouped_linear(GroupedLinear)
### BEGIN HIDDEN TESTS
check.grouped_linear(GroupedLinear, seeds=range(10, 14), edge_cases=True)
### END HIDDEN TESTS

# %% kind="readonly" id="use_reference_grouped_linear"
# Provided (read-only): the fused critic below is built from the reference GroupedLinear.
from hsd3_learn.models.blocks import GroupedLinear  # noqa: E402, F811

# %% [markdown]
# ### The fused double-Q network
#
# `SkipDoubleQNetwork` runs equation (5) for K critics at once: repeat the input for every critic,
# $x_s = [x, \dots, x]$ `[B, K, D]`, run grouped layers with the skip $[y_l, x_s]$ (or a plain MLP when
# `skip=False`, for the `qd_relu` shorthand), and finish with a grouped output layer `[B, K, 1]`, squeezed to
# **`[B, K]`**: column k is $Q_k$. The critics never mix: each group has its own weights.
#
# **Why the last layer starts at zero.** Both weights and bias of `self.out` are initialised to 0, so every critic
# says $Q(s, a) = 0$ before the first update. With a random output layer, each critic would start with arbitrary
# values of either sign, and bootstrapping ($r + \gamma \min_k Q_k(s', a')$) would copy that noise into the targets
# for a long time. Starting at zero, the first targets are just the rewards. Learning still starts at once: the
# output layer's gradient is its input $y_L \ne 0$, and the layers below get gradients from the next step on.
#
# **Exercise 4b.** Complete the two lines that zero the output layer in `__init__` (`nn.init.zeros_`), and
# `forward`.
#
# The check builds your module twice: fresh, its output must be exactly 0 `[B, K]`; then with random reference
# weights loaded, outputs and gradients must match (atol 1e-5) for 1 to 4 critics, with and without skips.

# %% kind="solution" id="skip_double_q"
# @library hsd3_learn.models.blocks:SkipDoubleQNetwork
# @blank lines nn.init.zeros_(self.out.weight) ... nn.init.zeros_(self.out.bias) | Set the output layer's weight and bias to exactly zero in place (`nn.init.zeros_`). 2 lines.
# @blank method forward | `xs = x.unsqueeze(1).expand(-1, self.n_critics, -1)` is [B, K, D]; first layer + ReLU; each later layer reads `torch.cat([y, xs], dim=-1)` if `self.skip` else `y`, + ReLU; then `self.out(y)` [B, K, 1], squeezed to [B, K]. About 5 lines.

# %% kind="tests" id="check_skip_double_q" points=2
# Check: zero output when fresh; outputs [B, K] and gradients with random reference weights (atol 1e-5).
check.skip_double_q(SkipDoubleQNetwork)
### BEGIN HIDDEN TESTS
check.skip_double_q(SkipDoubleQNetwork, seeds=range(10, 14), edge_cases=True)
### END HIDDEN TESTS

# %% [markdown]
# **Experiment.** A fresh fused critic is zero everywhere, and it has exactly as many parameters as two separate
# D2RL critics (a `SkipNetwork` plus a scalar output layer each).

# %%
fused = SkipDoubleQNetwork(n_in=40, n_hid=256)
x = torch.randn(1000, 40)
separate = nn.ModuleList([nn.Sequential(SkipNetwork(40, 256), nn.Linear(256, 1)) for _ in range(2)])
print(f"fresh fused critic: output {tuple(fused(x).shape)}, max |Q| = {fused(x).abs().max().item()}")
print(f"parameters: fused {sum(p.numel() for p in fused.parameters()):,}, "
      f"two separate critics {sum(p.numel() for p in separate.parameters()):,}")

# %% [markdown]
# ## 5. One Gaussian head per subset: HSD-3's subgoal policy
#
# HSD-3's high level acts in two steps: $\pi_f$ picks a goal-space subset $f \in \{1, \dots, K\}$ (K = 31 for the
# Walker), then $\pi_g$ picks a subgoal $g$ for the low level in that subset's coordinates. $\pi_g$ is one D2RL
# trunk with **K heads**; the subset is not an input feature, it selects the head:
#
# $$\mu(s) = W_\mu\, e(s) \in \mathbb R^{K \cdot G} \ \rightarrow\ [K, G], \qquad
# \pi_g(\cdot \mid s, f) = \texttt{TanhNormal}\left(\mu(s)_f,\ \sigma(s)_f\right). \tag{7}$$
#
# Shapes: `emb` `[B, H]`; `self.mu(emb)` and `self.log_std(emb)` `[B, K*G]`, viewed as `[B, K, G]` (head-major:
# the K heads first). With a task, the result is each row's head `[B, G]`: the "policy head of each row's task" case
# of `dim_select` from `01_utils`, done here with `gather` on an index `[B, 1, G]`. Without a task (`task=None`),
# all heads `[B, K, G]`; HSD-3 uses that to average over subsets exactly without repeating the batch K times. The
# task comes as an index `[B]` or a one-hot `[B, K]`; the provided `task_index` turns either into an index.
#
# **Exercise 5.** Complete `MultiHeadGaussianFromEmbedding.forward`.
#
# The check loads the reference weights and compares the distribution ($\mu$, then mean, log-probs, same-seed sample)
# and all gradients, for the task as an index, as a one-hot and for `task=None` (atol 1e-5).

# %% kind="readonly" id="provided_task_index"
# @library hsd3_learn.models.blocks:task_index

# %% kind="solution" id="multihead_gaussian"
# @library hsd3_learn.models.blocks:MultiHeadGaussianFromEmbedding
# @blank method forward | View `self.mu(emb)` and `self.log_std(emb)` as [B, n_heads, n_out]. If a task is given: `task_index(task, self.n_heads)` reshaped to [B, 1, 1] and expanded to [B, 1, n_out] is the `gather` index along dim 1; squeeze dim 1 afterwards. Return `_tanh_normal(mu, log_std, self.log_std_min, self.log_std_max)`. About 7 lines.

# %% kind="tests" id="check_multihead_gaussian" points=2
# Check: each row's head (index, one-hot) and all heads, distributions and gradients (atol 1e-5).
check.multihead_gaussian(MultiHeadGaussianFromEmbedding)
### BEGIN HIDDEN TESTS
check.multihead_gaussian(MultiHeadGaussianFromEmbedding, seeds=range(10, 12), edge_cases=True)
### END HIDDEN TESTS

# %% [markdown]
# ## 6. The critic's view of (subset, subgoal)
#
# HSD-3's critic $Q(s, f, g)$ must tell "root height 0.5 under subset {root z}" from "root height 0.5 under subset
# {root z, left foot}": the same numbers mean different things under different subsets. Concatenating a one-hot
# of $f$ with $g$ would let the first layer mix them freely; HSD-3 instead gives every subset **its own slice** of
# the input with an outer product:
#
# $$\operatorname{vec}\left(\operatorname{onehot}(f) \otimes g\right) \in \mathbb R^{K \cdot G}, \qquad
# \text{out}[b,\ kG + j] = [f_b = k]\; g_{b,j}. \tag{8}$$
#
# Shapes: `action["task"]` `[B]` (index) or `[B, K]` (one-hot), `action["subgoal"]` `[B, G]` → `[B, K*G]`, task-major
# (subset k's subgoal fills columns $kG, \dots, kG + G - 1$, zeros elsewhere). For the Walker, K = 31 and G = 7: 217
# features, so the first critic layer has a separate block of weights for every subset.
#
# **Exercise 6.** Complete `ExpandTaskSubgoal.forward`.
#
# The check compares the output exactly (atol 0) and the gradient w.r.t. the subgoal, for index and one-hot tasks.

# %% kind="solution" id="expand_task_subgoal"
# @library hsd3_learn.models.blocks:ExpandTaskSubgoal
# @blank method forward | Read the subgoal [B, G] and the task under this module's keys; `F.one_hot(task_index(task, self.n_tasks), self.n_tasks)` in the subgoal's dtype is [B, K]; broadcast `onehot.unsqueeze(-1) * subgoal.unsqueeze(-2)` to [B, K, G] and `flatten(start_dim=1)`. About 4 lines.

# %% kind="tests" id="check_expand_task_subgoal" points=1
# Check: the outer product [B, K*G] (exact) and its gradient w.r.t. the subgoal.
check.expand_task_subgoal(ExpandTaskSubgoal)
### BEGIN HIDDEN TESTS
check.expand_task_subgoal(ExpandTaskSubgoal, seeds=range(10, 12), edge_cases=True)
### END HIDDEN TESTS

# %% [markdown]
# ## 7. The model factory
#
# HSD-3's config names every network with a shorthand, `{role}_{family}[_{variant}][_d]_{width}`:
#
# | part | values |
# |---|---|
# | role | `pi` policy (returns a distribution), `q` one critic (`[B]`), `qd` fused critics (`[B, 2]`), `phi` a DIAYN discriminator |
# | family | `d2rl` (the trunk of section 3), `relu` (plain MLP, width written `3x256`), `bilinear_d2rl` |
# | variant | `mt` one head per task (section 5), `discrete` a categorical head, `flattsg` the critic reads $(f, g)$ through section 6 |
# | `_d` | the observation is a gymnasium `Dict`, flattened in key order |
# | width | hidden units per layer |
#
# So HSD-3's high level is `pi_task: pi_d2rl_discrete_d_256`, `pi_subgoal: pi_d2rl_mt_d_256`,
# `q: qd_d2rl_flattsg_d_256`. Each shorthand is registered with a *builder* and its preset options:
# `qd_d2rl_flattsg_d_256` is `critic(width=256, dict_obs=True, n_critics=2, task_subgoal=True)`.
#
# From here on the notebook uses the reference blocks (the cell below), and the provided helpers check the spaces
# and build the encoders: `_obs_encoder` flattens the observation (a `FlattenSpace` and its width), `_action_encoder`
# flattens the action or, with `task_subgoal`, expands it with `ExpandTaskSubgoal`, and `QFunction` concatenates
# `[encoded obs, encoded action]` and runs the network.

# %% kind="readonly" id="use_reference_blocks"
# Provided (read-only): the reference blocks, for the factory.
from hsd3_learn.models.blocks import (  # noqa: E402, F811
    ExpandTaskSubgoal,
    MultiHeadGaussianFromEmbedding,
    SkipDoubleQNetwork,
    SkipNetwork,
)

# %% kind="readonly" id="provided_factory_helpers"
# @library hsd3_learn.models.factory:QFunction
# @library hsd3_learn.models.factory:_small_output_layer
# @library hsd3_learn.models.factory:_obs_encoder
# @library hsd3_learn.models.factory:_action_encoder

# %% [markdown]
# ### A builder: `critic`
#
# `critic(name, obs_space, action_space, width=..., dict_obs=..., n_critics=..., skip=True, n_layers=4,
# task_subgoal=False)` builds every `q_*` and `qd_*` shorthand:
#
# - input width = observation features + action features ($K \cdot G$ with `task_subgoal`);
# - **one critic** (`n_critics == 1`, the `q_*` shorthands): a `SkipNetwork`, a scalar output layer initialised in
#   $U(-0.003, 0.003)$ (`_small_output_layer`), and `SqueezeLastDim()`, so that $q$ is **`[B]`, not `[B, 1]`**.
#   A `[B, 1]` critic broadcasts silently against `[B]` rewards in the TD loss and gives a `[B, B]` error matrix;
# - **several** (`qd_*`): one `SkipDoubleQNetwork(n_in, width, n_layers, n_critics, skip=skip)`, `[B, n_critics]`;
# - both wrapped as `QFunction(obs_encoder, action_encoder, net)`, called as `q(obs, action)`.
#
# **Exercise 7a.** Complete the body of `critic`.
#
# The check builds your critic and the reference with the same options (plain and Dict observations, Box and
# (subset, subgoal) actions, 1 to 3 critics, with and without skips), compares parameter names and shapes, loads
# random reference weights and compares `q(obs, action)` and its gradients (atol 1e-5).

# %% kind="solution" id="critic"
# @library hsd3_learn.models.factory:critic
# @blank body | Get `(obs_encoder, n_obs)` from `_obs_encoder(name, obs_space, dict_obs)` and `(action_encoder, n_act)` from `_action_encoder(name, action_space, task_subgoal)`. One critic: an `nn.Sequential` of `SkipNetwork`, `_small_output_layer(width)` and `SqueezeLastDim()`; several: `SkipDoubleQNetwork(..., skip=skip)`. Return a `QFunction`. About 7 lines.

# %% kind="tests" id="check_critic" points=2
# Check: same modules, outputs q(obs, action) and gradients as the reference builder (atol 1e-5).
check.critic(critic)
### BEGIN HIDDEN TESTS
check.critic(critic, seeds=[3, 4], edge_cases=True)
### END HIDDEN TESTS

# %% [markdown]
# ### The recursion: `make_model`
#
# The config tree mirrors the agent's object tree, and `make_model` follows it:
#
# - a string is a shorthand: `make_model("pi_d2rl_d_256", obs_space, action_space)`;
# - a mapping with a `name` key is a shorthand with options: `{name: qd_d2rl_d_256, n_layers: 2}`;
# - any other mapping is a **tree**: every key becomes a child, built by `make_model` on the sub-config, and the
#   result is an `nn.ModuleDict` with the same keys (`model.pi_task`, `model.q`, ...).
#
# The spaces either are one gymnasium space shared by all children, or plain `dict`s with the same keys as the
# config (each network of HSD-3's high level sees a different observation and action). The provided `_subspace`
# picks a child's space in both cases and raises a clear `ValueError` when a dict has no entry for a key.
#
# **Exercise 7b.** Complete the tree case of `make_model`.
#
# The check builds the same configs with yours and with the reference (a shorthand, a shorthand with options, a
# tree with shared spaces, HSD-3's high level with per-model spaces) and compares the module trees (names, types,
# parameter shapes), then asks for the `ValueError` when a space is missing.

# %% kind="readonly" id="provided_subspace"
# @library hsd3_learn.models.factory:_subspace

# %% kind="solution" id="make_model"
# @library hsd3_learn.models.factory:make_model
# @blank lines children = { ... return nn.ModuleDict(children) | For every `key, sub` in `cfg.items()`, build `make_model(sub, ...)` with the child's spaces `_subspace(obs_space, key, "observation")` and `_subspace(action_space, key, "action")`; collect them in a dict and return it as an `nn.ModuleDict`. About 5 lines.

# %% kind="tests" id="check_make_model" points=1
# Check: the same module trees as the reference factory, and the missing-space error.
check.make_model(make_model)
### BEGIN HIDDEN TESTS
check.make_model(make_model, edge_cases=True)
### END HIDDEN TESTS

# %% [markdown]
# **Experiment.** HSD-3's high-level model, built by your `make_model` from the three shorthands, on sample spaces
# shaped like the Walker's: 31 subsets, a 7-dimensional subgoal, and a made-up 30-feature observation plus the time
# within the current subgoal (the real spaces come from the environment in `06_envs`). Then one high-level step:
# $\pi_f$ picks a subset, $\pi_g$ a subgoal with that subset's head, and the fresh critic scores the pair.

# %%
N_SUBSETS, N_GOAL, BATCH = 31, 7, 4
obs_hi = spaces.Dict({"observation": spaces.Box(-np.inf, np.inf, (30,)), "time": spaces.Box(0.0, 1.0, (1,))})
obs_with_subset = spaces.Dict({**obs_hi.spaces, "task": spaces.Discrete(N_SUBSETS)})  # pi_g also sees the subset
action_hi = spaces.Dict({"task": spaces.Discrete(N_SUBSETS), "subgoal": spaces.Box(-1.0, 1.0, (N_GOAL,))})

config = {"pi_task": "pi_d2rl_discrete_d_256", "pi_subgoal": "pi_d2rl_mt_d_256", "q": "qd_d2rl_flattsg_d_256"}
obs_spaces = {"pi_task": obs_hi, "pi_subgoal": obs_with_subset, "q": obs_hi}
action_spaces = {"pi_task": action_hi["task"], "pi_subgoal": action_hi["subgoal"], "q": action_hi}
torch.manual_seed(0)
model_hi = make_model(config, obs_spaces, action_spaces)

for name, net in model_hi.items():
    print(f"{name:<11} {config[name]:<24} {sum(p.numel() for p in net.parameters()):>9,} parameters")

obs = {"observation": torch.randn(BATCH, 30), "time": torch.zeros(BATCH, 1)}
with torch.no_grad():
    subset = model_hi.pi_task(obs).sample()  # [B]
    subgoal = model_hi.pi_subgoal({**obs, "task": subset}).sample()  # [B, G], from each row's head
    q = model_hi.q(obs, {"task": subset, "subgoal": subgoal})  # [B, 2]
print(f"subsets {subset.tolist()}, subgoal {tuple(subgoal.shape)}, Q {tuple(q.shape)} = {q.abs().max().item()} "
      "everywhere (fresh critic)")

# %% [markdown]
# ## Summary
#
# - A $\tanh$-squashed Gaussian needs the change of variables $\log\pi(a) = \log\mathcal N(u) - \log(1 - \tanh^2 u)$,
#   computed in the stable form $2(\log 2 - u - \operatorname{softplus}(-2u))$; `TanhTransform(cache_size=1)` does it
#   and keeps the exact pre-tanh value of each sample. The deterministic action is $\tanh(\mu)$.
# - The log-std is clamped to $[-5, 2]$ before `exp()`, so log-probs and their gradients stay bounded.
# - D2RL feeds the raw input into every layer, always in the order `[y, x]`.
# - Q1 and Q2 live in one module of grouped layers (one batched matmul per layer); the output layer starts at zero,
#   so $Q = 0$ before the first update. A single critic returns `[B]`, fused critics `[B, K]`.
# - HSD-3's subgoal policy has one head per subset, picked per row with `gather`; its critic reads the subset and
#   subgoal as the outer product $\operatorname{vec}(\operatorname{onehot}(f) \otimes g)$.
# - The factory turns shorthands into modules and nested configs into `nn.ModuleDict` trees that mirror the agent.
#
# Next: `04_traced`, which makes these small modules fast by tracing them once.
