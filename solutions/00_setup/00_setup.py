# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 00 · Setup: a tour of the codebase, an environment check, and Hydra configs
#
# This course rebuilds **HSD-3** ("Hierarchical Skills for Efficient Exploration", Gehring et al., NeurIPS 2021;
# original code `facebookresearch/hsd3`, package `hucc`) and later SPiRL in modern PyTorch, one piece per notebook.
# Before the first real piece, this notebook shows you around:
#
# 1. **The codebase**: what each folder is for, which module of `hsd3_learn` you rebuild in which notebook, and
#    how an exercise and its check work (a one-line warm-up, so you see a `PASS` and a failure message).
# 2. **Your environment**: library versions, the torch device, and MuJoCo rendering a frame and a short video
#    without a display.
# 3. **Hydra**, the configuration system HSD-3 runs on: config groups, command-line overrides, interpolation,
#    mandatory values and `instantiate`, with five small graded questions answered in code.
#
# | exercise | what it practises | points |
# |---|---|---|
# | 1. `env_seeds` (warm-up) | how an exercise cell and its check work | 1 |
# | 2. `hsd3_overrides` | choosing a config group option, overriding values, adding keys with `+` | 2 |
# | 3. `run_dir_of` | composing a config in code; interpolations are resolved when read | 1 |
# | 4. `video_dir_override` | a new key whose value is an interpolation | 1 |
# | 5. `eval_config` | mandatory values (`???`) and the error they give | 1 |
# | 6. `make_optimizer` | building an object from its `_target_` with `instantiate` | 2 |
#
# Time: about 1 hour. Prerequisites: none (Python; PyTorch helps for exercise 6).

# %% kind="readonly" id="setup"
# Provided (read-only): imports used below and by the checks. Nothing here imports MuJoCo (see section 2).
from __future__ import annotations

import ast
import platform
import sys
import tempfile
import time
import warnings
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import matplotlib.pyplot as plt
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue
from torch import nn

import hsd3_learn
from autograder.checks import setup as check
from autograder.core import CheckFailed
from hsd3_learn.render import ensure_headless_gl, write_video
from hsd3_learn.utils import resolve_device

warnings.filterwarnings("ignore")
torch.manual_seed(0)

# %% [markdown]
# ## 1. A tour of the codebase
#
# The course is one repository. Its top-level folders:
#
# | path | what it is for |
# |---|---|
# | `course/` | the notebooks you work in (this one included), generated from `solutions/`: never edit them by hand |
# | `solutions/` | the same notebooks with complete code and the hidden tests; compare with them when you are stuck, after trying |
# | `hsd3_learn/` | the reference implementation, module by module in course order: the "solutions in code form" |
# | `envs/` | the MuJoCo walker task suite (robots and tasks), the role `bisk` plays for the original HSD-3 |
# | `autograder/` | the check functions the notebooks call, and the self-check command `python -m autograder` |
# | `tests/` | unit and integration tests of `hsd3_learn`, `envs` and the course machinery (`make test`) |
# | `bench/` | benchmarks that print what they measured next to a reference, as ratios (`make bench`) |
# | `syllabus.md` | the order of the notebooks, learning goals, time estimates and prerequisites |
#
# Let us look at the real thing. The repository is the folder above the installed `hsd3_learn` package:

# %%
REPO = Path(hsd3_learn.__file__).resolve().parents[1]
if not (REPO / "syllabus.md").exists():
    print(f"hsd3_learn is installed in {REPO}, away from the course repository; the listing needs the repository.")
else:
    for name in ["course", "solutions", "hsd3_learn", "envs", "autograder", "tests", "bench", "syllabus.md"]:
        path = REPO / name
        if path.is_dir():
            entries = sorted(p.name + ("/" if p.is_dir() else "") for p in path.iterdir()
                             if not p.name.startswith((".", "__pycache__")))
            shown = " ".join(entries[:7]) + (f" ... ({len(entries)} entries)" if len(entries) > 7 else "")
            print(f"{name + '/':12} {shown}")
        else:
            print(f"{name:12} {len(path.read_text().splitlines())} lines")

# %% [markdown]
# `hsd3_learn` mirrors the original `hucc` package module by module. Every module starts with a docstring that
# says what it is for in HSD-3 and lists each deliberate difference from the original code, with the reason. The
# ones that exist today, and where you rebuild them:
#
# | module | role in HSD-3 | notebook |
# |---|---|---|
# | `utils` | optimizers from a config tree, batched `dim_select`, natural sorting, preemption hook, seeding, atomic saves | 01 (and `env_seeds` below) |
# | `spaces` | batched torch flatten/unflatten of gymnasium `Box`, `Discrete` and `Dict` spaces | used from 03 on |
# | `models/bandits` | the bandits HSD-Bandit uses to choose a goal space per episode | 02 |
# | `models/blocks` | tanh-Gaussian and categorical heads, D2RL networks, fused double-Q critics | 03 |
# | `models/factory` | `make_model`: networks from shorthand names such as `pi_d2rl_d_256` | 03 |
# | `models/traced` | `TracedModule`: trace a network on its first call, replay the trace afterwards | 04 |
# | `replaybuffer` | the preallocated circular replay buffer with vector-env interleaving | 07 |
# | `hashcount` | SimHash state counting, a diagnostic of how much of the state space a run visits | used in 08 |
# | `render` | episode frames to MP4 with a text overlay, headless | used right here, in section 2 |
#
# **Not there yet, on purpose.** The agents (SAC, SAC-MT, HSD-3's high level, HSD-Bandit) arrive in notebook 05
# as `hsd3_learn/agents/`; HSD-3's own environment code (goal spaces, the pre-training environment) in notebook 06
# as `hsd3_learn/envs/`, together with the walker robots and tasks in the top-level `envs/` package, which is
# empty until then; the training entry points in 08; SPiRL in 10. The listing below reads the first line of each
# module docstring, so it grows as the course goes on:

# %%
if (REPO / "syllabus.md").exists():
    for path in sorted((REPO / "hsd3_learn").rglob("*.py")):
        doc = ast.get_docstring(ast.parse(path.read_text())) or ""
        print(f"{str(path.relative_to(REPO)):34} {doc.splitlines()[0] if doc else ''}")

# %% [markdown]
# ### How the exercises and checks work
#
# - An **exercise cell** holds real code with a gap: `# YOUR CODE HERE` followed by `raise NotImplementedError()`.
#   Above the gap, a `# Hint:` line says what to compute, which call helps and about how many lines it takes.
#   Where the exercise is library code, the cell is an exact copy of the function in `hsd3_learn` with a few
#   lines taken out, so the finished cell *is* the reference implementation.
# - The **check cell** below it is locked. It calls your code and the reference on the same (seeded) inputs and
#   prints one `PASS ...` line, or raises `CheckFailed` with what differs: which output, expected against got,
#   the case that showed it, and a hint for known mistakes.
# - When the notebook is graded, each check cell is worth its points, all or nothing, and also runs **hidden
#   tests**: the same check with other seeds and edge cases. A check cell that writes anything to stderr scores
#   zero (nbgrader's rule), so keep your solutions free of warnings and prints to stderr.
# - Before handing in, grade yourself from a terminal in the repository:
#   `python -m autograder check course/00_setup/00_setup.ipynb` runs the notebook like the grader and prints a
#   table of points; `python -m autograder diff course/00_setup/00_setup.ipynb` shows your exercise cells next
#   to the solution's.
#
# ### Exercise 1 (warm-up): seeds for a vector environment
#
# HSD-3 collects experience from several copies of the environment at once (a vector env, I environments). If all
# of them started from the same seed, they would play the same episodes and the extra copies would add nothing. The
# original code gives environment $i$ the seed
#
# $$\text{seed}_i = s + i, \qquad i = 0, 1, \dots, I - 1 \tag{1}$$
#
# where $s$ is the run's seed (evaluation envs use $s = 0$, so every run is evaluated on the same 50 episodes).
#
# Input: `seed` (an int, possibly a NumPy integer read from a config) and `n_envs` = I. Output: a list of I
# Python ints. The check compares your list with `hsd3_learn.utils.env_seeds` **exactly** on two fixed and a few
# random `(seed, n_envs)` pairs, and checks that the values are Python `int`s: gymnasium's `reset(seed=...)`
# rejects NumPy integers.
#
# **Exercise 1.** Complete the one line of `env_seeds`.

# %% kind="solution" id="env_seeds"
# @library hsd3_learn.utils:env_seeds
# @blank lines return [int(seed) ... range(n_envs)] | A list with one seed per environment, equation (1): `int(seed) + i` for `i` in `range(n_envs)` (`int()` turns a NumPy integer into a Python int). One line, a list comprehension.

# %% kind="tests" id="check_env_seeds" points=1
# Check: exact values and types against the reference.
check.env_seeds(env_seeds)
### BEGIN HIDDEN TESTS
check.env_seeds(env_seeds, seeds=range(10, 14), edge_cases=True)
### END HIDDEN TESTS

# %%
print(env_seeds(100, 4))

# %% [markdown]
# **What a failure looks like.** Here is a classic mistake, run through the same check on purpose. Every check
# failure reads like this: a first line with what differs, then the case, then a hint.

# %%
def env_seeds_all_alike(seed: int, n_envs: int) -> list[int]:
    return [int(seed)] * n_envs  # every environment gets the same seed


try:
    check.env_seeds(env_seeds_all_alike)
except CheckFailed as failure:
    print(f"FAILED, as intended:\n{failure}")

# %% [markdown]
# ## 2. Environment check
#
# The versions this course is tested with are pinned in `pyproject.toml`; a different minor version usually works,
# but if a check or a plot looks odd, compare these first. A GPU is not needed anywhere in the course: every
# notebook runs on a laptop CPU, and the training entry points choose the device with `device=auto` (CUDA when
# present, else the CPU).

# %%
def installed(package: str) -> str:
    try:
        return version(package)
    except PackageNotFoundError:
        return "not installed"


print(f"{'Python':12} {platform.python_version()} ({sys.executable})")
for package in ["torch", "gymnasium", "mujoco", "hydra-core", "omegaconf", "numpy", "matplotlib", "nbgrader"]:
    print(f"{package:12} {installed(package)}")
device = resolve_device("auto")
print(f"\ntorch device: {device} (CUDA available: {torch.cuda.is_available()}), CPU threads: {torch.get_num_threads()}")

# %% [markdown]
# ### Rendering MuJoCo without a display
#
# MuJoCo draws with OpenGL, and its default backend (GLFW) needs a window system. Servers, containers and CI
# machines have none, so the course renders **headless with EGL**: an off-screen OpenGL context, on the GPU when
# a driver provides one, otherwise in software (Mesa's llvmpipe). MuJoCo reads the environment variable
# `MUJOCO_GL` **once, when it is imported**, so `ensure_headless_gl()` must run before `import mujoco`: it sets
# `MUJOCO_GL=egl` on Linux without `$DISPLAY` and leaves an explicit setting alone. (If EGL is missing on your
# machine, `MUJOCO_GL=osmesa` with the `libosmesa6` package works too.)

# %%
print("mujoco imported before ensure_headless_gl()?", "mujoco" in sys.modules)
print("OpenGL backend:", ensure_headless_gl())
import mujoco  # noqa: E402 - on purpose after ensure_headless_gl()

print("MuJoCo", mujoco.mj_versionString())

# %% [markdown]
# A MuJoCo model is an XML file (MJCF). This one has a checkered floor, a light, and a "walker" that is just a
# capsule on a free joint, with a camera that follows its centre of mass (`mode="trackcom"`), so that a robot
# that moves stays in the picture. `mujoco.Renderer` draws the scene into a NumPy array; shadows and
# reflections are switched off because they cost several times the rest of the drawing (see the experiment below).

# %%
WALKER_XML = """
<mujoco model="capsule walker">
  <option timestep="0.005"/>
  <asset>
    <texture name="sky" type="skybox" builtin="gradient" rgb1=".4 .6 .8" rgb2="0 0 0" width="32" height="192"/>
    <texture name="grid" type="2d" builtin="checker" rgb1=".2 .3 .4" rgb2=".1 .15 .2" width="300" height="300"/>
    <material name="grid" texture="grid" texrepeat="8 8" reflectance=".2"/>
  </asset>
  <worldbody>
    <light name="sun" pos="0 0 4" dir="0 0 -1" directional="true"/>
    <geom name="floor" type="plane" size="20 20 0.1" material="grid"/>
    <body name="walker" pos="0 0 1">
      <freejoint name="root"/>
      <geom name="torso" type="capsule" fromto="0 0 -0.4 0 0 0.4" size="0.1" rgba=".9 .6 .2 1"/>
      <camera name="track" mode="trackcom" pos="0 -2.5 0.3" xyaxes="1 0 0 0 0.3 1"/>
    </body>
  </worldbody>
</mujoco>
"""
HEIGHT, WIDTH = 120, 160


def set_fast_rendering(renderer: mujoco.Renderer, shadows: bool = False, reflections: bool = False) -> None:
    renderer.scene.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = shadows
    renderer.scene.flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = reflections


model = mujoco.MjModel.from_xml_string(WALKER_XML)
data = mujoco.MjData(model)
mujoco.mj_forward(model, data)
with mujoco.Renderer(model, height=HEIGHT, width=WIDTH) as renderer:
    set_fast_rendering(renderer)
    renderer.update_scene(data, camera="track")
    frame = renderer.render()
print(f"one frame: {frame.shape} {frame.dtype}, pixel values {frame.min()}..{frame.max()}")

plt.figure(figsize=(3.2, 2.6))
plt.imshow(frame)
plt.axis("off"), plt.title("the capsule walker, camera 'track'")
plt.show()

# %% [markdown]
# Now a 1-second clip: push the walker forward, simulate, render a frame every $1/25$ s and let
# `hsd3_learn.render.write_video` encode the frames as an H.264 MP4 (through imageio's bundled ffmpeg, written to
# a temporary file and renamed, so a crash never leaves half a video). Without a policy, the walker simply falls
# over; making it walk is what the rest of the course is about.

# %%
FPS = 25
steps_per_frame = round(1 / FPS / model.opt.timestep)  # 8 physics steps of 5 ms per video frame
mujoco.mj_resetData(model, data)
data.qvel[:6] = [1.0, 0.0, 0.0, 0.0, 2.0, 0.0]  # 1 m/s forward, tipping forward at 2 rad/s
mujoco.mj_forward(model, data)  # positions (and the tracking camera) for the first frame
frames = []
with mujoco.Renderer(model, height=HEIGHT, width=WIDTH) as renderer:
    set_fast_rendering(renderer)
    for _ in range(FPS):
        renderer.update_scene(data, camera="track")
        frames.append(renderer.render())
        mujoco.mj_step(model, data, nstep=steps_per_frame)

with tempfile.TemporaryDirectory() as tmp:
    video = write_video(Path(tmp) / "capsule.mp4", frames, fps=FPS)
    print(f"{len(frames)} frames at {FPS} fps -> {video.name}: {video.stat().st_size / 1024:.1f} KiB")

fig, axes = plt.subplots(1, 3, figsize=(8, 2.2))
for ax, index in zip(axes, [0, FPS // 2, FPS - 1]):
    ax.imshow(frames[index])
    ax.set_title(f"t = {index / FPS:.2f} s"), ax.axis("off")
plt.show()

# %% [markdown]
# **Experiment.** What do shadows and reflections cost? We render the same scene 20 times with each setting and
# measure frames per second (the numbers depend on your machine; the ratio is what matters).

# %%
settings = {"shadows + reflections": (True, True), "reflections only": (False, True), "neither": (False, False)}
fps_measured = {}
with mujoco.Renderer(model, height=HEIGHT, width=WIDTH) as renderer:
    for label, (shadows, reflections) in settings.items():
        set_fast_rendering(renderer, shadows=shadows, reflections=reflections)
        renderer.update_scene(data, camera="track")
        renderer.render()  # the first frame after a change pays one-off costs
        start = time.perf_counter()
        for _ in range(20):
            renderer.update_scene(data, camera="track")
            renderer.render()
        fps_measured[label] = 20 / (time.perf_counter() - start)
        print(f"{label:22} {fps_measured[label]:7.0f} frames/s")

plt.figure(figsize=(5, 2.4))
plt.barh(list(fps_measured), list(fps_measured.values()))
plt.xlabel(f"frames per second at {HEIGHT}x{WIDTH}"), plt.title("rendering cost of shadows and reflections")
plt.show()

# %% [markdown]
# ## 3. Hydra: how HSD-3 is configured
#
# An HSD-3 run has dozens of settings: the agent and its hyperparameters, one network and one optimizer
# per part of the model, the environment, the evaluation schedule. The original code keeps them in YAML files
# managed by [Hydra](https://hydra.cc) (on top of OmegaConf), and so does this course. Hydra adds three things to
# plain YAML:
#
# - **Composition.** A config is assembled from several files. A *config group* is a folder of alternatives
#   (`agent/sac.yaml`, `agent/hsd3.yaml`); the *defaults list* at the top of the main file says which one to use.
# - **Overrides.** Any value can be changed from the command line (`python train.py agent=hsd3 seed=3`) without
#   editing a file, so every run is "the files plus a short list of overrides".
# - **Object creation.** A node with `_target_: torch.optim.Adam` names a class; `instantiate` builds it.
#
# This notebook ships a trimmed-down HSD-3 configuration in `conf/`, next to the notebook:

# %% kind="readonly" id="hydra_setup"
# Provided (read-only): point Hydra at the conf/ folder next to this notebook. Jupyter, nbgrader and
# `python -m autograder check` run a notebook in its own folder, so that is the current directory; Hydra wants an
# absolute path.
CONF_DIR = Path.cwd().resolve() / "conf"
if not (CONF_DIR / "config.yaml").exists():
    raise FileNotFoundError(f"no config.yaml in {CONF_DIR}: the conf/ folder must sit next to the notebook")
GlobalHydra.instance().clear()  # so that running this cell twice does not fail
initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3")

for path in sorted(CONF_DIR.rglob("*.yaml")):
    print(path.relative_to(CONF_DIR))

# %% [markdown]
# The main file, `config.yaml`. Its defaults list picks `agent/sac.yaml` for the key `agent` and `env/walker.yaml`
# for the key `env`; `_self_` says where this file's own keys go in the merge order (last, so they win):

# %%
print((CONF_DIR / "config.yaml").read_text())

# %% [markdown]
# `initialize_config_dir(config_dir=..., version_base="1.3")` (the cell above) tells Hydra where the files are,
# once per session; `compose(config_name="config")` assembles them into one `DictConfig`, which you read like an
# object (`cfg.agent.gamma`) or a dict (`cfg["agent"]["gamma"]`). In a training script, the decorator
# `@hydra.main(config_path="conf", config_name="config", version_base="1.3")` does both and also reads the overrides
# from the command line; you meet it in notebook 08. Composition is a merge, in the order of the defaults list:
#
# $$\text{cfg} = \text{merge}\big(\texttt{agent/sac.yaml} \to \texttt{agent},\ \texttt{env/walker.yaml} \to
#   \texttt{env},\ \texttt{config.yaml},\ \text{overrides}\big)$$

# %%
cfg = compose(config_name="config")
print(OmegaConf.to_yaml(cfg))
print("cfg.agent.optim.q.lr =", cfg.agent.optim.q.lr, type(cfg.agent.optim.q.lr).__name__)

# %% [markdown]
# Note the last line of the YAML: `run_dir` still shows `${...}`. That is an interpolation, which section 3.2 is
# about; `to_yaml` prints it as written unless you ask for `OmegaConf.to_yaml(cfg, resolve=True)`.
#
# ### 3.1 Overrides
#
# An override is a string, exactly what you would type after `python train.py`:
#
# | override | meaning |
# |---|---|
# | `agent=hsd3` | choose another option of the config group `agent` (loads `agent/hsd3.yaml` instead) |
# | `seed=3`, `agent.gamma=0.98` | change a value that exists; nested keys are written with dots |
# | `+env.args.hurdle_height=0.25` | **add** a key the config does not have yet |
# | `~agent.init_alpha` | delete a key |
#
# Composed configs are *strict*: overriding a key that does not exist is an error (usually a typo), which is why
# adding one needs the explicit `+`. Group choices are applied before values, so the order of the list does not
# matter.

# %%
cfg = compose(config_name="config", overrides=["agent=hsd3", "seed=3", "agent.gamma=0.98"])
print("agent:", cfg.agent.name, "| seed:", cfg.seed, "| gamma:", cfg.agent.gamma)
print("hsd3's networks:", OmegaConf.to_container(cfg.agent.model))

for overrides in (["agent.lr=1e-4"], ["env.args.hurdle_height=0.25"], ["agent=td3"]):
    try:
        compose(config_name="config", overrides=overrides)
    except Exception as err:  # Hydra's errors say what went wrong; we print their first lines
        lines = [line.strip() for line in str(err).splitlines() if line.strip()]
        print(f"\n{overrides} -> {type(err).__name__}:", *lines[:4], sep="\n  ")

# %% [markdown]
# Read Hydra's advice in the first error with care: `+agent.lr=1e-4` would indeed compose, but it would add a new
# key `lr` that nothing reads, while the learning rates that matter stay as they were. Use `+` only for keys that
# are really new, like `hurdle_height` in the second example.
#
# ### Exercise 2: the overrides of an experiment
#
# For the Humanoid, the HSD-3 paper trains the subset policy $\pi_f$ (`pi_task`) with a learning rate of
# $10^{-4}$ instead of $3 \cdot 10^{-4}$, and collects experience with 5 training environments instead of 1. We
# want a run with those two settings on the walker, on hurdles of height 0.25, a constructor argument the env
# config does not list yet.
#
# **Exercise 2.** Return the list of overrides that
# 1. selects the agent `hsd3`,
# 2. sets the learning rate of the high-level `pi_task` optimizer to `1e-4`,
# 3. sets the number of training environments to 5,
# 4. adds `hurdle_height: 0.25` to `env.args`.
#
# The check composes `conf/` with your list and compares every key of the result with the config the reference
# list gives (exact values), then again with a few other overrides appended (as a user would add `seed=...` on
# the command line). Print `OmegaConf.to_yaml(compose(config_name="config", overrides=["agent=hsd3"]))` to find
# the full path of each key.

# %% kind="solution" id="hsd3_overrides"
def hsd3_overrides() -> list[str]:
    """Command-line overrides for HSD-3 with the Humanoid's pi_task learning rate and 5 training envs."""
    # Hint: four strings: one group choice (group=option), two value overrides (dotted.path.to.key=value) and one
    #   addition (+dotted.path.to.key=value).
    ### BEGIN SOLUTION
    return ["agent=hsd3", "agent.optim.hi.pi_task.lr=1e-4", "env.train_envs=5", "+env.args.hurdle_height=0.25"]
    ### END SOLUTION


# %% kind="tests" id="check_hsd3_overrides" points=2
# Check: the composed config matches the reference composition key by key.
check.hsd3_overrides(hsd3_overrides, CONF_DIR)
### BEGIN HIDDEN TESTS
check.hsd3_overrides(hsd3_overrides, CONF_DIR, seeds=range(10, 14), edge_cases=True)
### END HIDDEN TESTS

# %%
print(hsd3_overrides())

# %% [markdown]
# ### 3.2 Interpolation: `${...}`
#
# A value can refer to another one: `${seed}`, `${agent.name}`, or a piece of a string such as
# `runs/${env.name}-${env.task}/${agent.name}/seed${seed}`. The reference is an absolute path from the root of the
# config, and it is **resolved when the value is read**, after all files and overrides are merged. So one
# override of `seed` also moves `run_dir`, and nothing can go out of sync:
#
# $$\texttt{cfg.run\_dir} = \texttt{"runs/"} \Vert \texttt{cfg.env.name} \Vert \texttt{"-"} \Vert
#   \texttt{cfg.env.task} \Vert \texttt{"/"} \Vert \texttt{cfg.agent.name} \Vert \texttt{"/seed"} \Vert
#   \texttt{cfg.seed}$$

# %%
cfg = compose(config_name="config", overrides=["seed=7"])
print("as written:", OmegaConf.to_container(cfg, resolve=False)["run_dir"])
print("as read:   ", cfg.run_dir)

# %% [markdown]
# **Exercise 3.** Write `run_dir_of(overrides)`: compose the config with the given overrides and return where that
# run would write its checkpoints, as a plain string. The check calls it with three fixed and two random override
# lists and compares with a reference composition (exact string match).

# %% kind="solution" id="run_dir_of"
def run_dir_of(overrides: list[str]) -> str:
    """The resolved `run_dir` of a run started with these command-line overrides."""
    # Hint: `compose(config_name="config", overrides=overrides)`, then read `.run_dir` from the result. 2 lines.
    ### BEGIN SOLUTION
    cfg = compose(config_name="config", overrides=overrides)
    return cfg.run_dir
    ### END SOLUTION


# %% kind="tests" id="check_run_dir_of" points=1
check.run_dir_of(run_dir_of, CONF_DIR)
### BEGIN HIDDEN TESTS
check.run_dir_of(run_dir_of, CONF_DIR, seeds=range(10, 14))
### END HIDDEN TESTS

# %%
print(run_dir_of(["agent=hsd3", "seed=3"]))

# %% [markdown]
# An interpolation can also be written in an override, which is handy for keys that must follow others.
#
# **Exercise 4.** Evaluation videos should go to a folder `videos` inside the run directory. Return **one**
# override string that adds a top-level key `video_dir` whose value is the run directory followed by `/videos`,
# written as an interpolation so that it follows `run_dir` when the seed, the agent or the task change. The check
# composes your override together with other overrides and compares `cfg.video_dir` with `cfg.run_dir + "/videos"`
# (exact), and checks that the stored value contains `${run_dir}` rather than a copy of today's path.

# %% kind="solution" id="video_dir_override"
def video_dir_override() -> str:
    """An override adding `video_dir` = the run directory followed by /videos."""
    # Hint: `+` (the key is new), the key, `=`, then a value that starts with the interpolation of run_dir. 1 line.
    ### BEGIN SOLUTION
    return "+video_dir=${run_dir}/videos"
    ### END SOLUTION


# %% kind="tests" id="check_video_dir_override" points=1
check.video_dir_override(video_dir_override, CONF_DIR)
### BEGIN HIDDEN TESTS
check.video_dir_override(video_dir_override, CONF_DIR, seeds=range(10, 14))
### END HIDDEN TESTS

# %%
print(compose(config_name="config", overrides=[video_dir_override(), "seed=2"]).video_dir)

# %% [markdown]
# ### 3.3 Mandatory values: `???`
#
# Some values have no sensible default. HSD-3's high level needs a pre-trained low-level policy, and which
# checkpoint that is depends on the experiment, so `agent/hsd3.yaml` says `init_from: ???`. Composing still works;
# **reading** the value raises `MissingMandatoryValue`, naming the key. That is the point: a run that forgot it
# fails at once with a clear message, instead of silently starting from random weights. (`null`, by contrast, is
# an ordinary value, Python's `None`, and reads without complaint.)

# %%
cfg = compose(config_name="config", overrides=["agent=hsd3"])
print("still to supply:", OmegaConf.missing_keys(cfg))
try:
    print(cfg.agent.lo.init_from)
except MissingMandatoryValue as err:
    print(f"{type(err).__name__}: {str(err).splitlines()[0]}")
cfg = compose(config_name="config", overrides=["agent=hsd3", "agent.lo.init_from=checkpoint-lo.pt"])
print("supplied:", cfg.agent.lo.init_from)

# %% [markdown]
# **Exercise 5.** A run that only evaluates a trained agent needs a smaller config. Return an OmegaConf config
# (build it with `OmegaConf.create`) with exactly three keys:
#
# - `checkpoint`: the trained agent to evaluate. Every evaluation must name its own, so make it **mandatory**;
# - `episodes`: 50;
# - `video`: `true`.
#
# The check reads `checkpoint` and expects `MissingMandatoryValue`, compares the other two values exactly, and then
# supplies a checkpoint with `OmegaConf.merge`, as a command-line override would, and reads it back.

# %% kind="solution" id="eval_config"
def eval_config() -> DictConfig:
    """The config of an evaluation-only run; `checkpoint` must be supplied by whoever starts it."""
    # Hint: `OmegaConf.create({...})` with the three keys; a mandatory value is the string "???". 1 line.
    ### BEGIN SOLUTION
    return OmegaConf.create({"checkpoint": "???", "episodes": 50, "video": True})
    ### END SOLUTION


# %% kind="tests" id="check_eval_config" points=1
check.eval_config(eval_config)
### BEGIN HIDDEN TESTS
check.eval_config(eval_config, seeds=range(10, 13))
### END HIDDEN TESTS

# %%
print(OmegaConf.to_yaml(eval_config()))

# %% [markdown]
# ### 3.4 `instantiate`: objects from `_target_`
#
# HSD-3's config describes each optimizer as a node with a `_target_` (the import path of a class or function) and
# its keyword arguments. `hydra.utils.instantiate` imports the target and calls it; arguments that cannot live in
# a YAML file, such as the parameters to optimize, are passed as extra keyword arguments:
#
# $$\text{instantiate}\big(\{\texttt{\_target\_}: f,\ k_1: v_1, \dots\},\ \text{**kw}\big) = f(k_1{=}v_1, \dots,
#   \text{**kw})$$

# %%
cfg = compose(config_name="config")
critic = nn.Linear(4, 2)
optimizer = instantiate(cfg.agent.optim.q, params=critic.parameters())
print(type(optimizer).__name__, "lr =", optimizer.defaults["lr"], "| parameter tensors:",
      sum(len(group["params"]) for group in optimizer.param_groups))

# %% [markdown]
# **Exercise 6.** Write `make_optimizer(optim_cfg, module)`: the optimizer that `optim_cfg` names, over the
# **trainable** parameters of `module` only. In HSD-3 part of a network can be frozen (`requires_grad=False`, as the
# pre-trained low level is); those parameters must not be handed to the optimizer: a weight decay or momentum term
# would still move them. This is the core of `hsd3_learn.utils.make_optim`, which you complete in notebook 01.
#
# Inputs: `optim_cfg` (a `DictConfig` or a dict with `_target_`), `module` with P parameter tensors, some of them
# frozen. The check builds the same small network twice, freezes its first layer in some cases, and compares your
# optimizer with `make_optim`'s: the class, the names of the parameters it updates, the hyperparameters (exact),
# and every weight after one update step on the same loss (atol 1e-7).

# %% kind="solution" id="make_optimizer"
def make_optimizer(optim_cfg: DictConfig | dict, module: nn.Module) -> torch.optim.Optimizer:
    """The optimizer named by `optim_cfg["_target_"]`, over `module`'s trainable parameters."""
    # Hint: keep the parameters with `p.requires_grad`, then `instantiate(optim_cfg, params=...)`. 2 lines.
    ### BEGIN SOLUTION
    params = [p for p in module.parameters() if p.requires_grad]
    return instantiate(optim_cfg, params=params)
    ### END SOLUTION


# %% kind="tests" id="check_make_optimizer" points=2
check.make_optimizer(make_optimizer)
### BEGIN HIDDEN TESTS
check.make_optimizer(make_optimizer, seeds=range(10, 13), edge_cases=True)
### END HIDDEN TESTS

# %% [markdown]
# ## Summary
#
# - `hsd3_learn/` is the reference implementation, one module per piece of HSD-3; `course/` holds the notebooks
#   you fill in, `autograder/` the checks, `envs/` the walker tasks (from notebook 06); agents arrive in 05.
# - Each exercise is followed by a check that compares your code with the reference on the same inputs and tells
#   you what differs; `python -m autograder check` grades a whole notebook the way nbgrader does.
# - MuJoCo renders headless with EGL if `MUJOCO_GL=egl` is set before `import mujoco`
#   (`ensure_headless_gl()`); switch shadows and reflections off for fast videos; `write_video` makes the MP4.
# - Hydra composes a config from a defaults list of config groups, then applies overrides: `group=option`,
#   `key=value`, `+new.key=value`. `${...}` refers to another value and is resolved when read; `???` marks a value
#   every experiment must supply and raises `MissingMandatoryValue` when read; `instantiate` builds the object a
#   `_target_` names.
#
# Next: `01_utils`, the small tools every other piece of HSD-3 stands on, starting with `dim_select`.
