# ---
# jupyter:
#   course:
#     time_on_cpu:
#       ci:
#         machine: 2 CPU cores, no GPU, otherwise idle
#         measured: '2026-12-05'
#         seconds: 3
#       cpu:
#         machine: 2 CPU cores, no GPU, shared with other jobs
#         measured: '2026-11-23'
#         seconds: 9
#       gpu:
#         note: the profile changes nothing in this chapter
#         same_as: cpu
#         seconds: null
#   jupytext:
#     formats: ipynb,py:percent
#     notebook_metadata_filter: course
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 00 · Welcome: how this course works
#
# This course teaches modern computer vision and generative models the way you meet them in
# papers (VAE, DDPM, ViT, DINO, CLIP, latent diffusion, DiT ...): **derive** each equation with
# every step written, **check** it by a number, **build** the model step by step, **train** it for
# real, and **look** at what it does with sliders you can move.
#
# **Goals.** After this chapter you can
# - run the course on your machine, with or without a GPU, offline;
# - say what the three run profiles are and how a chapter uses them;
# - load the data every chapter uses, read the notation, and use the exercise checks;
# - see that widgets work in your JupyterLab.
#
# **Prerequisites.** Python and a little NumPy.
#
# **Time.** 20 minutes alone; 15 minutes at the start of a study group's first session: 5 min running the
# course (1, 2), 5 min the data and the notation (3, 4), 5 min widgets, exercises and discussion (5-7, 9); section 8
# (a hub for the group, several GPUs) is for the leader, when the group needs it.
#
# **What runs, and how long** (the whole chapter, top to bottom, on a fresh kernel; `ci` with 1 torch thread as the
# test suite runs it, `cpu` with torch's default threads; `make time PROFILE=ci` or `PROFILE=cpu` measures it and
# writes the time here, in the notebook's metadata and in the README):
#
# | profile | what runs | measured |
# |---|---|---|
# | `ci` | nothing trains: the data loaders, a 2-D mixture's score checked against autograd, one widget, one exercise | 3 s, measured 2026-12-05 on 2 CPU cores, no GPU, otherwise idle |
# | `cpu` | the same (the chapter only prints the profile's settings) | 9 s, measured 2026-11-23 on 2 CPU cores, no GPU, shared with other jobs |
# | `gpu` | the same | the `cpu` time: the profile changes nothing in this chapter |
#
# The profile changes nothing here; chapters 01-16 use it for the size of every experiment. Set it before starting
# JupyterLab: `COURSE_PROFILE=ci`, `cpu` or `gpu`.

# %% [markdown]
# ## 1. Running the course
#
# From the repository root, two commands do everything:
#
# ```bash
# make lab     # creates .venv, installs the course, checks the data, opens JupyterLab on chapters/
# make test    # the whole test suite: course_lib's unit tests plus every chapter under COURSE_PROFILE=ci
# ```
#
# Each chapter is a notebook `chapters/NN_slug.ipynb` paired with a plain-text source
# `chapters/NN_slug.py` (jupytext). Edit either in JupyterLab; they stay in sync.
# Run a chapter with **Kernel → Restart Kernel and Run All Cells**: every chapter runs top to bottom
# on a fresh kernel, on a CPU, offline.
#
# Everything the chapters share lives in a small library, `course_lib`, one module per topic.
# A chapter first builds a piece step by step; once built, the reusable version moves into
# `course_lib` and later chapters import it (a test proves the two agree).

# %%
import platform
import sys

import ipywidgets as widgets
import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import torch

import course_lib
from course_lib import device, per_profile, profile, seed_everything
from course_lib.core.plotting import image_grid
from course_lib.core.widgets import interactive_figure
from course_lib.data import GaussianMixture2D, SHAPE_CLASSES, load_mnist, make_shapes

DEVICE = device()
generator = seed_everything(0)

print(f"Python      {platform.python_version()}")
for module in (torch, np, matplotlib, widgets, course_lib):
    print(f"{module.__name__:<11} {module.__version__}")
print(f"device      {DEVICE}" + (f" ({torch.cuda.get_device_name(0)})" if DEVICE.type == "cuda" else ""))
print(f"profile     {profile()}   (torch uses {torch.get_num_threads()} thread(s))")

# %% [markdown]
# The check below fails with a clear message if your environment is older than the course
# needs. If it fails, run `make lab` again from the repository root: it installs the versions CI
# uses (`constraints.txt`).

# %%
def version_tuple(version: str) -> tuple[int, int]:
    major, minor = version.split("+")[0].split(".")[:2]
    return int(major), int(minor)

assert sys.version_info >= (3, 10), "the course needs Python 3.10 or newer"
assert version_tuple(torch.__version__) >= (2, 2), f"torch {torch.__version__} is too old: need >= 2.2"
assert version_tuple(widgets.__version__) >= (8, 0), "ipywidgets 8 or newer is needed for the sliders"
print("environment ok")

# %% [markdown]
# ## 2. Run profiles: one variable, three sizes
#
# Every experiment in the course reads its size from the environment variable
# `COURSE_PROFILE`:
#
# - `ci`: seconds per chapter. This is what the test suite runs on 2 CPU cores; the numbers it
#   prints are only smoke tests.
# - `cpu`: the default on a machine without a GPU. Minutes per chapter, and results worth
#   looking at.
# - `gpu`: the default when CUDA is available. The full recipe.
#
# Set it before starting JupyterLab (`COURSE_PROFILE=cpu make lab`) or leave it unset.
# A chapter keeps its numbers next to the code that uses them:

# %%
cfg = per_profile(
    ci=dict(train_steps=50, n_samples=256),
    cpu=dict(train_steps=2_000, n_samples=2_048),
    gpu=dict(train_steps=20_000, n_samples=16_384),
)
print(cfg)

# %% [markdown]
# Whatever the profile, the figures in every chapter look right: the course ships small
# **trained checkpoints** (`course_lib/zoo/checkpoints/`, each with its recipe, metrics and sha256 in
# `manifest.json`). A chapter first shows "train it yourself" under your profile, then loads the
# shipped weights for the figures.

# %%
from course_lib.core.checkpointing import read_manifest

for name, entry in read_manifest().items():
    print(f"{name:<12} {entry['parameters']:>9,} parameters  metrics {entry['metrics']}  "
          f"(profile {entry['recipe']['profile']}, {entry['wall_time_s']} s on {entry['device']})")

# %% [markdown]
# **With a GPU.** Nothing changes in the code: `course_lib.device()` picks CUDA (then Apple's
# MPS, then the CPU) and the `gpu` profile becomes the default. On a lab server, start
# `make lab LAB_ARGS=--no-browser` and open the printed URL through an SSH tunnel.
#
# **Offline.** Nothing in the course downloads anything at run time. MNIST ships inside the
# repository (`course_lib/data/files/`), toy data is generated in code, photos come bundled with
# scikit-image, and Fashion-MNIST comes from a Debian package when installed.

# %% [markdown]
# ## 3. The data, in one look
#
# **MNIST**: 70,000 handwritten digits, 28×28 pixels, shipped with the course. The loader returns
# `x` of shape `(N, 1, 28, 28)` (float32, pixel/255, so in $[0, 1]$) and labels `y` of shape
# `(N,)` (int64).

# %%
x_train, y_train = load_mnist("train")
x_test, y_test = load_mnist("test")
print("train", tuple(x_train.shape), x_train.dtype, " test", tuple(x_test.shape), y_test.dtype)
assert x_train.shape == (60_000, 1, 28, 28) and y_test.shape == (10_000,)
assert 0.0 <= x_train.min() and x_train.max() <= 1.0
image_grid(x_train[:32], nrow=4, figsize=(8, 2.2));

# %% [markdown]
# **2-D toy distributions** with a known density, so every derivation about densities and scores
# can be checked exactly. A mixture of isotropic Gaussians with weights $\pi_k$, means $\mu_k$ and
# standard deviations $s_k$ has density
#
# $$
# p(x) = \sum_{k} \pi_k \, \mathcal{N}(x; \mu_k, s_k^2 I)
# $$
#
# and score (the gradient of the log-density, used from chapter 10 on)
#
# $$
# \nabla_x \log p(x) = \sum_k r_k(x) \, \frac{\mu_k - x}{s_k^2},
# \qquad r_k(x) = \frac{\pi_k \, \mathcal{N}(x; \mu_k, s_k^2 I)}{p(x)} .
# $$
#
# The first step: $\nabla_x \log p = \nabla_x p / p$, and
# $\nabla_x \mathcal{N}(x; \mu_k, s_k^2 I) = \mathcal{N}(x; \mu_k, s_k^2 I)\,(\mu_k - x)/s_k^2$
# (differentiate the exponent $-\lVert x - \mu_k \rVert^2 / 2 s_k^2$); dividing the sum by $p(x)$
# turns each $\pi_k \mathcal{N}_k$ into $r_k$. The check: the closed form against autograd of
# $\log p$, and the density integrates to 1.

# %%
mixture = GaussianMixture2D(means=[[-2.0, 0.0], [2.0, 1.0]], stds=[0.6, 1.0], weights=[0.2, 0.8])
points = mixture.sample(500, generator=generator).double()

points.requires_grad_(True)
autograd_score, = torch.autograd.grad(mixture.log_prob(points).sum(), points)
assert torch.allclose(mixture.score(points.detach()), autograd_score, atol=1e-10)

grid = torch.linspace(-8, 8, 401, dtype=torch.float64)
xx, yy = torch.meshgrid(grid, grid, indexing="xy")
density = mixture.log_prob(torch.stack([xx.flatten(), yy.flatten()], 1)).exp()
integral = density.sum() * (grid[1] - grid[0]) ** 2
assert abs(integral - 1) < 1e-3, integral
print(f"closed-form score = autograd score; density integrates to {integral:.5f}")

# %% [markdown]
# **Shapes scenes**: circles, squares and triangles drawn in code, each with its class, box and
# mask, for the detection and self-supervised chapters.

# %%
scenes = make_shapes(8, size=64, max_objects=3, seed=0)
fig, axes = plt.subplots(1, 8, figsize=(12, 1.9))
for i, ax in enumerate(axes):
    ax.imshow(scenes["images"][i].permute(1, 2, 0))
    for k in range(int(scenes["counts"][i])):
        x0, y0, x1, y1 = scenes["boxes"][i, k].tolist()
        ax.add_patch(plt.Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0 + 1, y1 - y0 + 1, fill=False, color="w"))
        ax.text(x0, y0 - 1, SHAPE_CLASSES[int(scenes["labels"][i, k])], color="w", fontsize=6)
    ax.axis("off")
plt.show()

# %% [markdown]
# ## 4. Notation
#
# The literature writes the same thing in several ways; the course fixes one and says so
# when a paper differs.
#
# | symbol | meaning |
# |---|---|
# | $x$, $x_t$ | a data point; the noisy version at diffusion step $t$ (always lower case) |
# | $\beta_t$ | the **variance** of the noise added at step $t$ (not a standard deviation) |
# | $\alpha_t = 1 - \beta_t$, $\bar\alpha_t = \prod_{s \le t} \alpha_s$ | signal kept in one step, and over $t$ steps |
# | $\epsilon_\theta(x_t, t, c)$ | the noise predicted by a network; $c = \varnothing$ when unconditional |
# | $s = 1 + w$ | guidance scale $s$ (the $\epsilon$-mixing weight); $w$ is the other convention, $w = 0$ means no guidance |
# | $\hat y$, $\hat x_0$ | a hat always means a prediction |
# | $p(x \mid y)$ | conditioning is written with $\mid$ |
# | $H(p, q)$, $h(p)$ | cross entropy, and entropy; $H(p, q) = h(p) + \operatorname{KL}(p \,\Vert\, q)$ |
# | $D_h$ | the width of one attention head; $d_k$ in the attention scale $1/\sqrt{d_k}$ |
# | $W$, $D$, $L = D - W$ | a graph's affinities, degrees, and Laplacian |
# | $\nabla_x \log p(x)$ | the score (of the data, not of the parameters) |
# | $\lVert x \rVert$ | the Euclidean norm |
#
# Shapes in code comments follow PyTorch: images `(N, C, H, W)`, tokens `(N, L, D)`.

# %% [markdown]
# ## 5. Do widgets work here?
#
# Move the slider. The plot shows the mixture above smoothed by Gaussian noise of standard
# deviation $\sigma$: the law of $x + \sigma \varepsilon$ with $\varepsilon \sim \mathcal{N}(0, I)$,
# which is again a mixture with variances $s_k^2 + \sigma^2$. (Smoothing a density like this is
# the idea behind score-based models and diffusion, chapters 10 and 11.) If you see a slider and
# the plot changes when you move it, widgets work. If you see "Loading widget..." or a red error
# instead, see the README's troubleshooting section.

# %%
plot_grid = torch.linspace(-6, 6, 121)
gx, gy = torch.meshgrid(plot_grid, plot_grid, indexing="xy")
grid_points = torch.stack([gx.flatten(), gy.flatten()], 1)

def draw_smoothed(ax, sigma):
    smoothed = mixture.noised(sigma)
    ax.contourf(gx, gy, smoothed.log_prob(grid_points).exp().reshape(gx.shape), levels=20, cmap="viridis")
    ax.set(title=f"p * N(0, {sigma:.2f}² I)", aspect="equal", xticks=[], yticks=[])

interactive_figure(draw_smoothed, figsize=(4, 4),
                   sigma=widgets.FloatSlider(value=0.0, min=0.0, max=3.0, step=0.25, description="σ"))

# %% [markdown]
# The same check by number: the smoothed density is the convolution $p * \mathcal{N}(0, \sigma^2 I)$,
# so its mean is unchanged and its total variance grows by $2\sigma^2$ (trace over two dimensions).

# %%
sigma = 1.5
noisy = mixture.sample(200_000, generator=generator) + sigma * torch.randn(200_000, 2, generator=generator)
exact = mixture.noised(sigma).sample(200_000, generator=generator)
clean = mixture.sample(200_000, generator=generator)
assert torch.allclose(noisy.mean(0), exact.mean(0), atol=0.03)
assert abs(noisy.var(0).sum() - clean.var(0).sum() - 2 * sigma**2) < 0.1
print("mean", noisy.mean(0).numpy().round(3), "vs", exact.mean(0).numpy().round(3),
      "| variance grows by", round(float(noisy.var(0).sum() - clean.var(0).sum()), 3), "≈ 2σ² =", 2 * sigma**2)

# %% [markdown]
# ## 6. How exercises work
#
# Exercise cells are tagged `exercise`; in the chapter, the solution sits between nbgrader's two marker comments
# (the `###` lines in the cell below; in your student notebook, `raise NotImplementedError()` takes its place).
# Write your answer, run the check cell after it: it says **what** is wrong (shape, dtype, sign, off by a factor, or
# how far off and where). When stuck, run the solution cell below it to reveal the reference implementation.
#
# *Exercise.* Write `pixel_mean(x)`: the mean image of a batch `x` of shape `(N, 1, 28, 28)`,
# of shape `(1, 28, 28)`.

# %% tags=["exercise"]
def pixel_mean(x):
    """The mean image of a batch: (N, 1, 28, 28) -> (1, 28, 28)."""
    ### BEGIN SOLUTION
    return x.mean(dim=0)
    ### END SOLUTION

# %%
from course_lib.core.check import check_function, check_tensor, show_solution

def reference_pixel_mean(x):
    return x.mean(dim=0)

check_function(pixel_mean, reference_pixel_mean, [(x_train[:100],), (x_test[:7],)])

# %% [markdown]
# Here is what a wrong answer looks like (a common slip: summing instead of averaging). The check
# names the factor it is off by:

# %%
try:
    check_tensor(x_train[:100].sum(0), reference_pixel_mean(x_train[:100]), name="pixel_mean")
except AssertionError as err:
    print("AssertionError:", err)

# %% [markdown]
# Reveal the solution (in later chapters this shows the `course_lib` reference implementation):

# %%
show_solution(reference_pixel_mean)

# %% [markdown]
# ## 7. How a chapter is laid out, and how a study group uses it
#
# Every chapter 01-16 follows the same path:
#
# 1. **Goals, prerequisites, time**, and a **core path**: the sections to read first and how long they take.
#    Sections a first reading can skip end their heading with **(optional deep dive)**.
# 2. **See it work first**: what the chapter builds, shown from the shipped model in a few seconds
#    (samples, attention maps, detections). By the end of the chapter you will have derived and trained it.
# 3. **A schematic of each model** before the code that builds it (drawn by `course_lib` from code,
#    so the picture and the model never drift apart).
# 4. The derivations, each followed by a cell that checks it by number; then the model step by step,
#    trained under your profile; widgets to explore it; exercises (at least one asks you to *derive,
#    then check* or to *predict, then run*, not to copy).
# 5. A **summary**: a table of the key equations with the section that derives each and the cell that
#    checks it, and three things to remember. Then the discussion questions.
#
# **For study groups.** A chapter is one to three sessions, not a fixed 90 minutes: each chapter's
# facilitator notes, in `chapters/facilitator/` (one file per chapter, kept out of the notebooks
# because they hold the answers), give the plan per session (what it covers, how long, which profile
# the leader pre-runs before the session and how long that takes), answers and usual wrong answers to
# every discussion question, and where learners stall.

# %% [markdown]
# ## 8. Beyond one machine: a hub for the group, several GPUs for a recipe
#
# Everything above runs for one person on one machine. Three well-kept tools take the course further, and the course
# uses them rather than anything of its own:
#
# - **A study group on one shared server: JupyterHub.** `sudo make hub-users USERS="ana ben" LEADERS="lea"` creates
#   the learners' accounts, `sudo make hub` starts [JupyterHub](https://jupyterhub.readthedocs.io): each learner logs in
#   with their own password and gets their own JupyterLab, running as their own account (nobody can open anyone
#   else's files), with their own copy of the student notebooks and the chapters read-only. The leader sees on the
#   hub's admin page who is running what; idle servers are stopped after an hour; each learner's torch gets a share of
#   the cores, so ten kernels do not fight over them. The README's "A shared JupyterHub" has the details.
# - **Exercises handed out and graded: nbgrader.** The exercise cell above is written for
#   [nbgrader](https://nbgrader.readthedocs.io): its solution sits between nbgrader's marker comments, and your
#   student notebook (`make student`) has `raise NotImplementedError()` in its place. On the hub the leader
#   releases a chapter as an assignment, each learner fetches and submits it with `nbgrader`, and the leader collects
#   and autogrades the submissions (one point per check cell) to see who is stuck where. The README's "Exercises
#   through nbgrader" has the commands.
# - **A recipe bigger than one GPU: torchrun.** `torchrun --standalone --nproc_per_node 4 -m course_lib.zoo train
#   ddpm_mnist --profile gpu` starts four processes that train one model together with PyTorch's
#   `DistributedDataParallel`: each takes a quarter of every batch, the gradients are averaged, and the step is the
#   recipe's step. It pays off when a `gpu` recipe takes hours on one card; every chapter's `ci` and `cpu` profiles,
#   and the shipped checkpoints, need one machine and no GPU.
#
# The cell below checks the one fact that makes data-parallel training exact: the gradient of a mean loss over a batch
# is the mean of the gradients over its equal slices.

# %%
seed_everything(0)
net = torch.nn.Linear(5, 3)
batch_x, batch_y = torch.randn(8, 5), torch.randint(3, (8,))


def gradient_of(x, y):
    net.zero_grad()
    torch.nn.functional.cross_entropy(net(x), y).backward()
    return net.weight.grad.clone()


whole = gradient_of(batch_x, batch_y)
slices = [gradient_of(batch_x[i:i + 2], batch_y[i:i + 2]) for i in range(0, 8, 2)]  # 4 "processes", 2 rows each
print(f"largest difference between the whole batch's gradient and the mean of 4 slices' gradients: "
      f"{(whole - torch.stack(slices).mean(0)).abs().max():.1e}")
assert torch.allclose(whole, torch.stack(slices).mean(0), atol=1e-6)

# %% [markdown]
# ## 9. Discussion questions
#
# 1. Why does the course check every derivation with a number, when the algebra is already written out?
#    What kinds of mistakes can a numeric check catch that reading cannot, and which can it miss?
# 2. The smoothed mixture above becomes one blob as $\sigma$ grows. What is lost, and why might
#    that still help a sampler that starts from noise?
# 3. The `ci` profile's results are only smoke tests. What would go wrong if a course reported
#    its `ci` numbers as results?
#
# Next: **chapter 01**, autograd, back-propagation and losses.
