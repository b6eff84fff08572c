# ---
# jupyter:
#   course:
#     time_on_cpu:
#       ci:
#         machine: 2 CPU cores, no GPU, otherwise idle
#         measured: '2026-12-05'
#         seconds: 18
#       cpu:
#         machine: 2 CPU cores, no GPU, otherwise idle
#         measured: '2026-12-05'
#         seconds: 22
#       gpu:
#         note: the gpu settings are the cpu settings (nothing here needs a GPU)
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
# # 02 · PCA, the Rayleigh quotient and Normalized Cut
#
# Two classic methods, one piece of linear algebra. **PCA** finds the direction $w$ along which data varies most: it
# maximises the Rayleigh quotient $w^\top S w / w^\top w$ of the covariance $S$. **Normalized Cut** (Shi and Malik, 2000)
# splits a graph, for instance the pixels of a photo, into two well-separated groups: relaxed, it minimises the
# Rayleigh quotient $y^\top (D - W) y / y^\top D y$ of the graph Laplacian. Both are solved by eigenvectors, and the
# same theorem (Courant–Fischer) says why the eigenvectors are the exact optima, not just critical points. This
# chapter derives both, checks every step by number, and ends by segmenting real photos in about a second each.
#
# **Goals.** After this chapter you can
# - derive PCA as the maximisation of a Rayleigh quotient (Lagrangian, then Courant–Fischer for the next components),
#   and compute it three ways (eigendecomposition, SVD, power iteration) that agree;
# - read eigendigits, explained variance and the reconstruction error on MNIST, prove that the error equals
#   the sum of the discarded eigenvalues, and that no other $k$-dimensional subspace does better (Ky Fan);
# - prove $v^\top L v = \tfrac{1}{2}\sum_{ij} w_{ij}(v_i - v_j)^2$, and so why $L = D - W$ is positive semi-definite;
# - define cut, assoc, Ncut and Nassoc (with the paper's names), show $\operatorname{Ncut} = 2 - \operatorname{Nassoc}$,
#   and say why the plain minimum cut is the wrong objective;
# - relax Ncut to $(D - W) y = \lambda D y$ with the constraint $y^\top D \mathbf{1} = 0$, and prove that the
#   second-smallest generalized eigenvector is the exact minimiser of the relaxed problem, so $\lambda_1 \le \min \operatorname{Ncut}$;
# - build a sparse pixel graph without a loop over pixels, solve it with Lanczos, and segment a $128 \times 128$ photo
#   recursively, in seconds.
#
# **Prerequisites.** Linear algebra: eigenvalues and eigenvectors of a symmetric matrix (the spectral theorem:
# an orthonormal eigenbasis exists), the SVD, Lagrange multipliers. Chapter 00 (profiles, widgets). Chapter 01 for
# autograd (used once, to check a gradient).
#
# **Time.** Two study-group sessions of about 90 minutes (PCA and the graph criteria in the first; the relaxation,
# images, widgets and discussion in the second), plus about 40 minutes of exercises at home. The session plan, the
# answers to the discussion questions and where groups stall are in [facilitator/02_pca_ncut.md](facilitator/02_pca_ncut.md).
#
# **Core path.** See it work first, A.1-A.3, A.5, A.6, B.1-B.4, C.1-C.3, C.6, C.7, D.1-D.3, D.5, D.6, the summary and
# the discussion: about 120 min. The optional deep dives A.4 (the same components from the SVD), C.4 (four solvers that
# agree), C.5 (what a sparse solver does: Lanczos, and the timings), D.4 (the eigenvectors as images) and D.7 (against
# scikit-learn) add about 40 min; a first reading can skip their text, but run their cells (Run All does): D uses the
# photos and the graph that C.5 loads.
#
# **What runs, and how long** (the whole chapter, top to bottom, on a fresh kernel; `ci` with 1 torch thread as the
# test suite runs it, `cpu` with torch's default threads; `make time PROFILE=ci` or `PROFILE=cpu` measures it and
# writes the time here, in the notebook's metadata and in the README):
#
# | profile | what changes | measured |
# |---|---|---|
# | `ci` | PCA on 10,000 MNIST digits; 20 random graphs for the relaxation gap; eigenvector gallery and widgets on $96 \times 96$ images | 18 s, measured 2026-12-05 on 2 CPU cores, no GPU, otherwise idle |
# | `cpu` | PCA on all 60,000 training digits; 200 random graphs; everything on $128 \times 128$ images | 22 s, measured 2026-12-05 on 2 CPU cores, no GPU, otherwise idle |
# | `gpu` | the same as `cpu` (nothing here needs a GPU) | the `cpu` time: the gpu settings are the cpu settings (nothing here needs a GPU) |
#
# Nothing here trains, so there is no checkpoint: every number is computed in the chapter. The timed segmentation of a
# $128 \times 128$ photo (section D.3) runs in every profile. Set the profile before starting JupyterLab:
# `COURSE_PROFILE=ci`, `cpu` or `gpu`.

# %%
import functools
import itertools
import math
import time

import ipywidgets
import matplotlib.pyplot as plt
import numpy as np
import scipy.linalg
import scipy.sparse
import scipy.sparse.csgraph
import scipy.sparse.linalg
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

import course_lib
import course_lib.core.check
import course_lib.core.plotting
import course_lib.core.widgets
import course_lib.topics.spectral
from course_lib import per_profile, profile, seed_everything
from course_lib.data import load_image, load_mnist
from course_lib.topics.spectral import (assoc, cut, degrees, eigenvector_stability, explained_variance_ratio,
                                        image_affinity, lanczos_largest, laplacian, nassoc_value, ncut_bipartition,
                                        ncut_eigenvectors, ncut_threshold_curve, ncut_value, pca, pca_reconstruct,
                                        rayleigh_quotient, recursive_ncut)

generator = seed_everything(0)
cfg = per_profile(ci=dict(n_pca=10_000, n_graphs=20, gallery_size=96),
                  cpu=dict(n_pca=60_000, n_graphs=200, gallery_size=128),
                  gpu=dict(n_pca=60_000, n_graphs=200, gallery_size=128))
print(f"profile = {profile()}, torch threads = {torch.get_num_threads()}; {cfg}")

# %% [markdown]
# ## See it work first
#
# Two exact computations, no training. Left: the cameraman photo ($128 \times 128$ pixels) split in two by Normalized
# Cut, the second generalized eigenvector $y_1$ of its pixel graph (middle) thresholded where the cut is smallest. Below:
# the mean of 5,000 MNIST digits and the first eight principal components, "eigendigits" (red adds ink to the mean
# digit, blue removes it), each with the share of the variance it explains.
# By the end of this chapter you will have derived and built this.

# %%
start = time.perf_counter()
photo = F.interpolate(load_image("camera")[None], size=(128, 128), mode="area")[0]  # (1, 128, 128)
W_photo = image_affinity(photo, sigma_i=0.1, sigma_x=4.0, radius=5)  # sparse (16384, 16384)
split_photo, y1_photo, ncut_photo = ncut_bipartition(W_photo, "search")
time_ncut = time.perf_counter() - start
first_digits = load_mnist("train")[0][:5000]  # (5000, 1, 28, 28)
digits_pca = pca(first_digits, k=8)
digits_ratio = digits_pca.variances / digits_pca.total_variance  # (8,) share of the variance
print(f"Ncut of the split: {ncut_photo:.4f} ({split_photo.sum()} and {(~split_photo).sum()} pixels), "
      f"graph + eigenvector + threshold in {time_ncut:.1f} s; the 8 eigendigits explain "
      f"{100 * digits_ratio.sum():.1f}% of the variance of the 5,000 digits")

fig = plt.figure(figsize=(13, 5.6), layout="constrained")
top, bottom = fig.subfigures(2, 1, height_ratios=[1.5, 1])
ax_photo, ax_y1, ax_split = top.subplots(1, 3)
ax_photo.imshow(photo[0], cmap="gray")
ax_photo.set_title("camera, 128 x 128")
ax_y1.imshow(y1_photo.reshape(128, 128), cmap="RdBu_r")
ax_y1.set_title("second eigenvector y_1")
ax_split.imshow(photo[0], cmap="gray")
ax_split.contour(split_photo.reshape(128, 128), levels=[0.5], colors="r")
ax_split.set_title(f"the split, Ncut {ncut_photo:.4f}")
digit_axes = bottom.subplots(1, 9)
digit_axes[0].imshow(digits_pca.mean.reshape(28, 28), cmap="gray")
digit_axes[0].set_title("mean digit", fontsize=9)
for i, ax in enumerate(digit_axes[1:]):
    component = digits_pca.components[:, i].reshape(28, 28)
    ax.imshow(component, cmap="RdBu_r", vmin=-component.abs().max(), vmax=component.abs().max())
    ax.set_title(f"w_{i + 1}: {100 * digits_ratio[i]:.1f}%", fontsize=9)
for ax in [ax_photo, ax_y1, ax_split, *digit_axes]:
    ax.axis("off")
plt.show()

# %% [markdown]
# ---
# ## A. PCA is the maximisation of a Rayleigh quotient
#
# The whole of PCA in one picture; this section derives each arrow, and why the top eigenvectors are the best
# possible directions:

# %%
fig = course_lib.topics.spectral.pca_schematic()
plt.show()

# %% [markdown]
# ### A.1 The variance along a direction
#
# Take $n$ data points $x_1, \dots, x_n \in \mathbb{R}^d$ (here MNIST digits, $d = 784$ pixels), their mean
# $\bar x = \frac{1}{n}\sum_i x_i$, the centred points $\tilde x_i = x_i - \bar x$ stacked as the rows of $X_c \in \mathbb{R}^{n \times d}$, and
# the covariance
#
# $$
# S = \frac{1}{n} \sum_{i=1}^n \tilde x_i \tilde x_i^\top = \frac{1}{n} X_c^\top X_c \in \mathbb{R}^{d \times d} .
# $$
#
# Project every point on a direction $w \neq 0$: its coordinate along the unit vector $w / \lVert w \rVert$ is
# $p_i = w^\top \tilde x_i / \lVert w \rVert$. The mean of the $p_i$ is $w^\top (\frac{1}{n}\sum_i \tilde x_i) / \lVert w \rVert = 0$, so their variance is the
# mean of their squares:
#
# $$
# \operatorname{Var}(p) = \frac{1}{n}\sum_i \frac{(w^\top \tilde x_i)^2}{w^\top w}
# = \frac{1}{n}\sum_i \frac{w^\top \tilde x_i \tilde x_i^\top w}{w^\top w}
# = \frac{w^\top S w}{w^\top w} =: R_S(w) .
# $$
#
# $R_S(w)$ is the **Rayleigh quotient** of $S$ at $w$. It does not change when $w$ is scaled, so it is a function of the
# direction only. PCA's first component is the direction of largest variance, $w_1 = \arg\max_{w \neq 0} R_S(w)$.

# %%
x_train, y_train = load_mnist("train")
x_test, y_test = load_mnist("test")
X = x_train[: cfg.n_pca].reshape(cfg.n_pca, -1).double()  # (n, 784)
labels = y_train[: cfg.n_pca]
x_mean = X.mean(dim=0)                                     # (784,)
X_c = X - x_mean                                           # (n, 784) centred
S = X_c.T @ X_c / len(X_c)                                 # (784, 784) covariance

w = torch.randn(784, generator=generator, dtype=torch.float64)
projections = X_c @ w / w.norm()                           # (n,) coordinates along w / |w|
print(f"{len(X)} digits; variance of the projections {projections.var(unbiased=False):.6f}, "
      f"R_S(w) = {rayleigh_quotient(S, w):.6f}, R_S(7 w) = {rayleigh_quotient(S, 7 * w):.6f}")
assert abs(projections.var(unbiased=False) - rayleigh_quotient(S, w)) < 1e-9
assert abs(rayleigh_quotient(S, 7 * w) - rayleigh_quotient(S, w)) < 1e-12

# %% [markdown]
# ### A.2 The maximum: a Lagrangian, then an eigenvector
#
# Since $R_S$ ignores the length of $w$, maximise $w^\top S w$ on the unit sphere $w^\top w = 1$. The Lagrangian and its
# gradient (with $\nabla_w\, w^\top S w = (S + S^\top) w = 2 S w$ for symmetric $S$, and $\nabla_w\, w^\top w = 2 w$) are
#
# $$
# \mathcal{L}(w, \lambda) = w^\top S w - \lambda (w^\top w - 1), \qquad
# \nabla_w \mathcal{L} = 2 S w - 2 \lambda w = 0 \;\Longleftrightarrow\; S w = \lambda w .
# $$
#
# So every critical point is a unit eigenvector, and there the objective is $w^\top S w = \lambda w^\top w = \lambda$. The largest of
# these values, $\lambda_1$ (eigenvalues sorted $\lambda_1 \ge \lambda_2 \ge \dots \ge \lambda_d \ge 0$), is the maximum: a continuous
# function on the (compact) sphere attains its maximum, and the maximum is a critical point.
#
# The same fact from the quotient's own gradient (quotient rule):
#
# $$
# \nabla_w R_S(w) = \frac{2 S w\, (w^\top w) - (w^\top S w)\, 2 w}{(w^\top w)^2} = \frac{2}{w^\top w}\big(S w - R_S(w)\, w\big),
# $$
#
# zero exactly when $S w = R_S(w)\, w$. A step of gradient ascent of size $\eta = \frac{1}{2 R_S(w)}$ from a unit $w$ gives
# $w + \eta \nabla R_S = w + \frac{1}{R_S}(S w - R_S w) = S w / R_S(w)$: after normalising, that is one step of **power iteration**,
# $w \leftarrow S w / \lVert S w \rVert$. The cell checks the gradient formula against autograd, runs power iteration, and compares
# with `torch.linalg.eigh`.

# %%
w = torch.randn(784, generator=generator, dtype=torch.float64, requires_grad=True)
quotient = (w @ S @ w) / (w @ w)
quotient.backward()
w_ = w.detach()
hand_gradient = 2 / (w_ @ w_) * (S @ w_ - quotient.detach() * w_)
print(f"max |autograd - hand-derived gradient| = {(w.grad - hand_gradient).abs().max():.1e}")
assert torch.allclose(w.grad, hand_gradient, atol=1e-12)

eigenvalues, eigenvectors = torch.linalg.eigh(S)           # ascending: (784,), (784, 784)
eigenvalues, eigenvectors = eigenvalues.flip(0), eigenvectors.flip(1)  # descending, as PCA lists them
v = torch.randn(784, generator=generator, dtype=torch.float64)
history = []
for step in range(300):                                    # power iteration = normalised gradient ascent
    v = S @ v
    v = v / v.norm()
    history.append(rayleigh_quotient(S, v).item())
cosine = abs(v @ eigenvectors[:, 0]).item()
print(f"power iteration: R_S = {history[-1]:.6f}; lambda_1 from eigh = {eigenvalues[0]:.6f}; |cos(v, w_1)| = {cosine:.8f}")
assert abs(history[-1] - eigenvalues[0]) < 1e-6 * eigenvalues[0] and cosine > 1 - 1e-6
assert all(b >= a - 1e-12 for a, b in zip(history, history[1:]))  # the quotient never goes down

# %% [markdown]
# ### A.3 The next components, and the Courant–Fischer theorem
#
# Expand any $w$ in the orthonormal eigenbasis $w_1, \dots, w_d$ of $S$ (the spectral theorem gives one for a symmetric
# matrix): $w = \sum_i c_i w_i$ with $c_i = w_i^\top w$. Then $S w = \sum_i \lambda_i c_i w_i$, and by orthonormality
#
# $$
# R_S(w) = \frac{\sum_i \lambda_i c_i^2}{\sum_i c_i^2} ,
# $$
#
# a **weighted average of the eigenvalues** with weights $c_i^2 / \sum_j c_j^2$. Everything follows from this line:
#
# - It is at most $\lambda_1$, with equality when all the weight sits on $\lambda_1$: the maximum of A.2 again, without calculus.
# - **The $k$-th component.** Require $w \perp w_1, \dots, w_{k-1}$, i.e. $c_1 = \dots = c_{k-1} = 0$. The average then runs over
#   $\lambda_k, \lambda_{k+1}, \dots$ only, so $R_S(w) \le \lambda_k$, with equality at $w = w_k$:
#
# $$
# \lambda_k = \max_{w \neq 0,\; w \perp w_1, \dots, w_{k-1}} R_S(w), \qquad \text{attained at } w_k .
# $$
#
# - **Courant–Fischer** (the same statement without naming the earlier eigenvectors):
#
# $$
# \lambda_k = \max_{U:\ \dim U = k}\ \min_{w \in U,\, w \neq 0} R_S(w) .
# $$
#
#   *Proof.* For $U = \operatorname{span}(w_1, \dots, w_k)$, every $w \in U$ has weights only on $\lambda_1, \dots, \lambda_k$, so
#   $R_S(w) \ge \lambda_k$, and the minimum is $\lambda_k$ (at $w_k$). For any other $k$-dimensional $U$: the subspace
#   $\operatorname{span}(w_k, \dots, w_d)$ has dimension $d - k + 1$, and two subspaces of dimensions $k$ and $d - k + 1$ in
#   $\mathbb{R}^d$ share a nonzero vector (their dimensions add up to more than $d$). At that vector the weights sit on
#   $\lambda_k, \dots, \lambda_d$, so $R_S \le \lambda_k$: the minimum over $U$ is at most $\lambda_k$. $\square$
#
# Read with "min" and "max" swapped, the same argument gives the smallest eigenvalues as minima: that is the form
# Normalized Cut needs (section C). The checks: random directions orthogonal to $w_1, \dots, w_{k-1}$ never beat
# $\lambda_k$ (even those close to $w_k$); power iteration restricted to that subspace finds $\lambda_k$; and the minimum of $R_S$ over a random
# $k$-dimensional subspace $U$ near $\operatorname{span}(w_1, \dots, w_k)$ (the smallest eigenvalue of $Q^\top S Q$, $Q$ an orthonormal basis of $U$) stays below $\lambda_k$.

# %%
k = 3
previous = eigenvectors[:, : k - 1]                        # (784, k - 1): w_1, ..., w_{k-1}


def orthogonal_to_previous(vectors):
    """Remove the components along w_1..w_{k-1} from the columns of vectors (784, m)."""
    return vectors - previous @ (previous.T @ vectors)


noise = torch.randn(784, 2000, generator=generator, dtype=torch.float64)
random_directions = orthogonal_to_previous(torch.cat([noise, eigenvectors[:, k - 1: k] + 0.02 * noise], dim=1))  # (784, 4000)
quotients = rayleigh_quotient(S, random_directions)        # (2000,)
v = orthogonal_to_previous(torch.randn(784, 1, generator=generator, dtype=torch.float64))
for _ in range(500):                                       # power iteration inside the subspace
    v = orthogonal_to_previous(S @ v)
    v = v / v.norm()
subspace_minima = []
for _ in range(200):
    near_top = eigenvectors[:, :k] + 0.03 * torch.randn(784, k, generator=generator, dtype=torch.float64)
    Q, _ = torch.linalg.qr(near_top)                        # (784, k) a random U close to span(w_1..w_k)
    subspace_minima.append(torch.linalg.eigvalsh(Q.T @ S @ Q)[0].item())                 # min of R_S over U
print(f"lambda_{k} = {eigenvalues[k - 1]:.5f}; 4,000 random directions orthogonal to w_1..w_{k - 1} (half of them near w_{k}): max R_S = {quotients.max():.5f}; "
      f"restricted power iteration: {rayleigh_quotient(S, v[:, 0]):.5f}")
print(f"min of R_S over 200 random {k}-d subspaces near span(w_1..w_{k}): at most {max(subspace_minima):.5f}; "
      f"over span(w_1..w_{k}): {torch.linalg.eigvalsh(eigenvectors[:, :k].T @ S @ eigenvectors[:, :k])[0]:.5f}")
assert quotients.max() <= eigenvalues[k - 1] + 1e-9
assert abs(rayleigh_quotient(S, v[:, 0]) - eigenvalues[k - 1]) < 1e-6
assert max(subspace_minima) <= eigenvalues[k - 1] + 1e-9

# %% [markdown]
# ### A.4 The same components from the SVD (optional deep dive)
#
# Write the centred data as $X_c = U \Sigma V^\top$ (thin SVD: $U^\top U = I$, $V^\top V = I$, $\Sigma$ diagonal with the singular values
# $\sigma_1 \ge \sigma_2 \ge \dots \ge 0$). Then
#
# $$
# S = \frac{1}{n} X_c^\top X_c = \frac{1}{n} V \Sigma U^\top U \Sigma V^\top = V \,\frac{\Sigma^2}{n}\, V^\top ,
# $$
#
# an eigendecomposition: the principal directions are the right singular vectors (columns of $V$), and
# $\lambda_i = \sigma_i^2 / n$. In practice the SVD route is the more accurate one (it never forms $X_c^\top X_c$, which squares the
# condition number). The check uses 2,000 digits to keep the SVD quick.

# %%
X_small = X[:2000] - X[:2000].mean(dim=0)                  # (2000, 784) centred
S_small = X_small.T @ X_small / len(X_small)
lam_eigh, vec_eigh = torch.linalg.eigh(S_small)
lam_eigh, vec_eigh = lam_eigh.flip(0), vec_eigh.flip(1)
_, singular_values, Vh = torch.linalg.svd(X_small, full_matrices=False)  # Vh: (784, 784), rows = right singular vectors
lam_svd = singular_values**2 / len(X_small)
cosines = (vec_eigh[:, :20] * Vh[:20].T).sum(dim=0).abs()  # |cos| between matching directions
print(f"top-5 eigenvalues, eigh {lam_eigh[:5].numpy().round(4)}, svd {lam_svd[:5].numpy().round(4)}; "
      f"min |cos| over the first 20 directions {cosines.min():.10f}")
assert torch.allclose(lam_eigh[:100], lam_svd[:100], rtol=1e-8, atol=1e-10)
assert cosines.min() > 1 - 1e-8

# %% [markdown]
# ### A.5 What the discarded components cost: the reconstruction error
#
# Keep $k$ components, $V_k = [w_1, \dots, w_k] \in \mathbb{R}^{d \times k}$, and reconstruct $\hat x = \bar x + V_k V_k^\top (x - \bar x)$. In the
# eigenbasis, $\tilde x = \sum_{i=1}^d c_i w_i$ with $c_i = w_i^\top \tilde x$, and $V_k V_k^\top \tilde x = \sum_{i \le k} c_i w_i$, so the error is
# $x - \hat x = \sum_{i > k} c_i w_i$ and by orthonormality $\lVert x - \hat x \rVert^2 = \sum_{i > k} c_i^2$. Averaged over the data,
# $\frac{1}{n}\sum_n c_i^2 = \frac{1}{n}\sum_n w_i^\top \tilde x_n \tilde x_n^\top w_i = w_i^\top S w_i = \lambda_i$:
#
# $$
# \frac{1}{n}\sum_{n} \lVert x_n - \hat x_n \rVert^2 = \sum_{i > k} \lambda_i ,
# \qquad
# \text{explained variance} = \frac{\sum_{i \le k} \lambda_i}{\sum_{i=1}^d \lambda_i} = \frac{\sum_{i \le k} \lambda_i}{\operatorname{tr} S} .
# $$
#
# No other $k$-dimensional subspace does better: that is the "minimum reconstruction error" view of PCA, proved and
# checked after the next cell. Below, the library's `pca` (the same
# computation, with a fixed sign per component) is checked against our step-by-step eigenvectors, and the identity
# against the measured error.

# %%
fitted = pca(X)                                            # course_lib.topics.spectral.pca: mean, components, variances
assert torch.allclose(fitted.mean, x_mean) and torch.allclose(fitted.variances, eigenvalues.clamp_min(0), atol=1e-10)
assert torch.allclose((fitted.components * eigenvectors).sum(0)[:50].abs(), torch.ones(50, dtype=torch.float64), atol=1e-8)
for k in (0, 10, 50, 150):
    error = ((X - pca_reconstruct(X, fitted, k)) ** 2).sum(dim=1).mean()
    print(f"k = {k:3d}: mean squared reconstruction error {error:9.4f}, sum of discarded eigenvalues "
          f"{eigenvalues[k:].sum():9.4f}, explained variance {explained_variance_ratio(fitted)[:k].sum():.3f}")
    assert abs(error - eigenvalues[k:].sum()) < 1e-8 * eigenvalues.sum()

# %% [markdown]
# **No other $k$-dimensional subspace does better (Ky Fan's maximum principle, 1949).** Take any $k$ orthonormal directions,
# the columns $q_1, \dots, q_k$ of $Q \in \mathbb{R}^{d \times k}$ ($Q^\top Q = I$), and reconstruct from them: $\hat x = \bar x + Q Q^\top \tilde x$. The two
# parts $Q Q^\top \tilde x$ and $\tilde x - Q Q^\top \tilde x$ are orthogonal, so by Pythagoras, and with $\lVert Q Q^\top \tilde x \rVert = \lVert Q^\top \tilde x \rVert$ (as $Q^\top Q = I$),
#
# $$
# \frac{1}{n}\sum_n \lVert x_n - \hat x_n \rVert^2 = \frac{1}{n}\sum_n \lVert \tilde x_n \rVert^2 - \frac{1}{n}\sum_n \lVert Q^\top \tilde x_n \rVert^2
# = \operatorname{tr} S - \operatorname{tr}(Q^\top S Q) ,
# $$
#
# the total variance minus the variance the subspace captures. So the claim is $\operatorname{tr}(Q^\top S Q) \le \lambda_1 + \dots + \lambda_k$. Step by step:
#
# 1. Write $S = \sum_i \lambda_i w_i w_i^\top$ (the eigendecomposition). Then $\operatorname{tr}(Q^\top S Q) = \sum_i \lambda_i \operatorname{tr}(Q^\top w_i w_i^\top Q) = \sum_i \lambda_i a_i$ with
#    $a_i = \lVert Q^\top w_i \rVert^2$: again a weighted sum of the eigenvalues, as in A.3.
# 2. Each weight is in $[0, 1]$: $\lVert Q^\top w_i \rVert = \lVert Q Q^\top w_i \rVert$ is the length of the projection of the unit vector $w_i$ onto the
#    subspace, at most $\lVert w_i \rVert = 1$.
# 3. The weights add up to $k$: $\sum_i a_i = \sum_i \sum_j (q_j^\top w_i)^2 = \sum_j \lVert q_j \rVert^2 = k$, because the $w_i$ are an orthonormal basis, so
#    $\sum_i (q_j^\top w_i)^2 = \lVert q_j \rVert^2$ for each column.
# 4. Weights in $[0, 1]$ that add up to $k$ do best on the $k$ largest eigenvalues. Exactly:
#
# $$
# \sum_i \lambda_i a_i - \sum_{i \le k} \lambda_i = \sum_{i \le k} \lambda_i (a_i - 1) + \sum_{i > k} \lambda_i a_i
# \;\le\; \lambda_k \sum_{i \le k} (a_i - 1) + \lambda_k \sum_{i > k} a_i = \lambda_k \Big(\sum_i a_i - k\Big) = 0 ,
# $$
#
#    because for $i \le k$ the factor $a_i - 1 \le 0$ is multiplied by $\lambda_i \ge \lambda_k$, and for $i > k$ the factor $a_i \ge 0$ by $\lambda_i \le \lambda_k$.
# 5. At $Q = V_k$ the weights are $a_i = 1$ for $i \le k$ and $0$ after: equality. $\square$
#
# So every $k$-dimensional subspace through the mean has an error of at least $\operatorname{tr} S - \sum_{i \le k} \lambda_i = \sum_{i > k} \lambda_i$, PCA's error. (A
# subspace through another point $m$ does worse still: its error has the extra term $\lVert (I - Q Q^\top)(\bar x - m) \rVert^2$.) The check:
# 200 random $k$-dimensional subspaces, half of them drawn anywhere and half of them close to $\operatorname{span}(w_1, \dots, w_k)$, where a
# counter-example would have to be; none may capture more variance than the top $k$ eigenvectors, and for two of them
# the error is measured on the digits themselves.

# %%
k = 10
top_k_variance = eigenvalues[:k].sum()                     # lambda_1 + ... + lambda_k
anywhere = torch.randn(100, 784, k, generator=generator, dtype=torch.float64)
closeness = torch.logspace(-3.5, -1.5, 100, dtype=torch.float64)[:, None, None]  # noise of length 0.01 to 0.9 per column
near_top = eigenvectors[:, :k] + closeness * torch.randn(100, 784, k, generator=generator, dtype=torch.float64)
Q_all, _ = torch.linalg.qr(torch.cat([anywhere, near_top]))  # (200, 784, k) orthonormal columns
captured = (Q_all * torch.matmul(S, Q_all)).sum(dim=(1, 2))  # (200,) tr(Q^T S Q)
print(f"k = {k}: lambda_1 + ... + lambda_{k} = {top_k_variance:.5f}; largest variance captured by 200 random "
      f"subspaces: {captured[:100].max():.5f} (drawn anywhere), {captured[100:].max():.5f} (near the top {k})")
assert captured.max() <= top_k_variance + 1e-10 * eigenvalues.sum()
for Q in Q_all[[0, 100]]:                                    # the error measured on the data, for two of them
    error = ((X_c - X_c @ Q @ Q.T) ** 2).sum(dim=1).mean()
    print(f"  a random subspace: mean squared error {error:.5f} = tr S - tr(Q^T S Q) = "
          f"{eigenvalues.sum() - (Q * (S @ Q)).sum():.5f} >= {eigenvalues[k:].sum():.5f} (PCA's)")
    assert abs(error - (eigenvalues.sum() - (Q * (S @ Q)).sum())) < 1e-8 * eigenvalues.sum()
    assert error >= eigenvalues[k:].sum() - 1e-10 * eigenvalues.sum()

# %% [markdown]
# ### A.6 Eigendigits and explained variance
#
# The components are directions in pixel space, so they can be shown as images ("eigendigits", after Turk and
# Pentland's eigenfaces): red where the component adds ink to the mean digit, blue where it removes it.

# %%
ratio = explained_variance_ratio(fitted)
cumulative = ratio.cumsum(0)
needed = {q: int((cumulative < q).sum()) + 1 for q in (0.5, 0.9, 0.95, 0.99)}
print("components needed for", ", ".join(f"{int(100 * q)}%: {k}" for q, k in needed.items()), "of the variance (of 784)")

fig = plt.figure(figsize=(13, 6.2), layout="constrained")
top, bottom = fig.subfigures(2, 1, height_ratios=[1.05, 1])
axes = top.subplots(2, 8)
axes[0, 0].imshow(x_mean.reshape(28, 28), cmap="gray")
axes[0, 0].set_title("mean digit", fontsize=9)
for i, ax in enumerate(axes.flat[1:]):
    component = fitted.components[:, i].reshape(28, 28)
    limit = component.abs().max()
    ax.imshow(component, cmap="RdBu_r", vmin=-limit, vmax=limit)
    ax.set_title(f"w_{i + 1}: {100 * ratio[i]:.1f}%", fontsize=9)
for ax in axes.flat:
    ax.axis("off")
ax_scree, ax_cum, ax_scatter = bottom.subplots(1, 3)
ax_scree.semilogy(np.arange(1, 785), fitted.variances.clamp_min(1e-12))
ax_scree.set(xlabel="component i", ylabel="lambda_i (log)", title="eigenvalues of S (scree plot)")
ax_cum.plot(np.arange(1, 785), cumulative)
for q, k in needed.items():
    ax_cum.plot([k], [q], "o")
    ax_cum.annotate(f"{k} for {int(100 * q)}%", (k, q), xytext=(6, -12), textcoords="offset points", fontsize=8)
ax_cum.set(xscale="log", xlabel="number of components k", ylabel="explained variance", title="cumulative")
codes = (X_c[:5000] @ fitted.components[:, :2]).numpy()   # (5000, 2) first two coordinates
ax_scatter.scatter(codes[:, 0], codes[:, 1], c=labels[:5000], cmap="tab10", s=2, vmin=-0.5, vmax=9.5)
for digit in range(10):
    centre = codes[labels[:5000].numpy() == digit].mean(axis=0)
    ax_scatter.annotate(str(digit), centre, fontsize=12, weight="bold", ha="center")
ax_scatter.set(xlabel="coordinate on w_1", ylabel="coordinate on w_2", title="5,000 digits in the first two components")
plt.show()

# %% [markdown]
# Things to look for: the first components are broad strokes (a "0" against a "1", slant), later ones finer and
# finer detail; 90% of the variance needs under a hundred of the 784 dimensions, because digits occupy a thin
# region of pixel space (the manifold hypothesis, in one number). The 2-D scatter separates 0 from 1 but mixes 4, 7,
# 9: linear projections only go so far.
#
# **Widget: reconstruction from $k$ components.** Top row: test digits (PCA was fitted on training digits). Bottom
# row: $\bar x + V_k V_k^\top (x - \bar x)$. Right: the training error $\sum_{i > k} \lambda_i$, with the test error of these digits.

# %%
test_digits = x_test[:8].reshape(8, -1).double()           # (8, 784)
train_error_curve = fitted.variances.flip(0).cumsum(0).flip(0)  # sum_{i >= k} lambda_i, k = 0..783


def draw_reconstruction(axes, k):
    reconstruction = pca_reconstruct(test_digits, fitted, k).clamp(0, 1)  # (8, 784)
    course_lib.core.plotting.image_grid(torch.cat([test_digits, reconstruction]).reshape(16, 1, 28, 28).float(), nrow=2,
                                   ax=axes[0])
    axes[0].set_title(f"test digits (top) and their reconstruction from k = {k} components (bottom)", fontsize=9)
    ks = np.arange(0, 400)
    axes[1].semilogy(ks, train_error_curve[:400], label="training: sum of discarded lambda_i")
    test_error = ((test_digits - pca_reconstruct(test_digits, fitted, k)) ** 2).sum(1).mean()
    axes[1].semilogy([k], [test_error], "o", color="C3", label=f"these 8 test digits: {test_error:.2f}")
    axes[1].set(xlabel="k", ylabel="mean squared error", title=f"explained variance {cumulative[max(k - 1, 0)] if k else 0:.3f}")
    axes[1].legend(fontsize=8)


course_lib.core.widgets.interactive_figure(
    draw_reconstruction, ncols=2, figsize=(12, 3.2),
    k=ipywidgets.IntSlider(value=20, min=0, max=300, step=1, description="k"))

# %% [markdown]
# ---
# ## B. Graphs, cuts and the Laplacian
#
# Sections B to D build Normalized Cut, the pipeline below: B the graph and the criterion, C the relaxation to an
# eigenproblem and the threshold, D the pixel graph of a real image.

# %%
fig = course_lib.topics.spectral.ncut_schematic()
plt.show()

# %% [markdown]
# ### B.1 The graph Laplacian and its quadratic form
#
# A weighted graph on $N$ nodes is a symmetric **affinity matrix** $W$ with $w_{ij} \ge 0$ (how strongly $i$ and $j$ belong
# together; $w_{ii} = 0$). The **degree** of a node is $d_i = \sum_j w_{ij}$, $D = \operatorname{diag}(d_1, \dots, d_N)$, and the **Laplacian** is
# $L = D - W$. For any $v \in \mathbb{R}^N$:
#
# $$
# v^\top L v = \sum_i d_i v_i^2 - \sum_{i,j} w_{ij} v_i v_j
# = \frac{1}{2}\sum_{i,j} w_{ij} v_i^2 + \frac{1}{2}\sum_{i,j} w_{ij} v_j^2 - \sum_{i,j} w_{ij} v_i v_j
# = \frac{1}{2}\sum_{i,j} w_{ij}\,(v_i - v_j)^2 .
# $$
#
# The middle step writes $\sum_i d_i v_i^2 = \sum_{i,j} w_{ij} v_i^2$ twice over as halves, and in the second half swaps the names $i \leftrightarrow j$
# (allowed because $w_{ij} = w_{ji}$). Three consequences:
#
# - $v^\top L v \ge 0$ for every $v$ **because every $w_{ij} \ge 0$**: $L$ is positive semi-definite (PSD), all its eigenvalues are $\ge 0$.
# - $L \mathbf{1} = 0$ (each row of $L$ sums to $d_i - \sum_j w_{ij} = 0$): $\mathbf{1}$ is an eigenvector with eigenvalue 0.
# - For the indicator $\mathbf{1}_A$ of a set $A$ (1 on $A$, 0 on its complement $B$), $(v_i - v_j)^2 = 1$ exactly when one of $i, j$ is in $A$
#   and the other in $B$, so $\mathbf{1}_A^\top L\, \mathbf{1}_A = \frac{1}{2} \cdot 2 \sum_{i \in A, j \in B} w_{ij}$: the total weight of the edges between $A$ and $B$.
#
# > **Common confusion:** a common reading is "$D - W$ is real and symmetric, hence positive semi-definite". In fact
# > symmetry gives real eigenvalues and an orthonormal eigenbasis, not non-negative eigenvalues: the non-negativity comes from
# > $w_{ij} \ge 0$ through the identity above. The cell builds a symmetric $W$ with one negative weight and finds a negative
# > eigenvalue of $D - W$.

# %%
generator = seed_everything(2)
N = 12
W_random = torch.rand(N, N, generator=generator, dtype=torch.float64)
W_random = (W_random + W_random.T) / 2                     # symmetric
W_random.fill_diagonal_(0)                                 # w_ii = 0
L_random = torch.diag(W_random.sum(1)) - W_random         # (N, N)
v = torch.randn(N, generator=generator, dtype=torch.float64)
half_sum = 0.5 * (W_random * (v[:, None] - v[None, :]) ** 2).sum()
print(f"v^T L v = {v @ L_random @ v:.12f}; (1/2) sum_ij w_ij (v_i - v_j)^2 = {half_sum:.12f}")
assert torch.allclose(v @ L_random @ v, half_sum, atol=1e-12)
assert torch.allclose(L_random @ torch.ones(N, dtype=torch.float64), torch.zeros(N, dtype=torch.float64), atol=1e-12)
print(f"smallest eigenvalue of L: {torch.linalg.eigvalsh(L_random)[0]:.1e} (0 up to rounding, eigenvector 1)")
assert np.allclose(laplacian(W_random), L_random.numpy())  # the library's L = D - W

W_signed = W_random.clone()
W_signed[0, 1] = W_signed[1, 0] = -3.0                     # still symmetric, one negative weight
L_signed = torch.diag(W_signed.sum(1)) - W_signed
print(f"with w_01 = -3: smallest eigenvalue of the symmetric D - W = {torch.linalg.eigvalsh(L_signed)[0]:.3f} < 0")
assert torch.linalg.eigvalsh(L_signed)[0] < 0
try:
    laplacian(W_signed)
except ValueError as error:
    print("course_lib refuses it:", error)

# %% [markdown]
# ### B.2 Cut, association, Ncut and Nassoc (the paper's names)
#
# Split the nodes $V$ into $A$ and $B = V \setminus A$. Shi and Malik define
#
# $$
# \operatorname{cut}(A, B) = \sum_{u \in A,\, v \in B} w_{uv}, \qquad
# \operatorname{assoc}(A, V) = \sum_{u \in A,\, t \in V} w_{ut} = \sum_{u \in A} d_u ,
# $$
#
# and the **normalized cut** and **normalized association**
#
# $$
# \operatorname{Ncut}(A, B) = \frac{\operatorname{cut}(A, B)}{\operatorname{assoc}(A, V)} + \frac{\operatorname{cut}(A, B)}{\operatorname{assoc}(B, V)}, \qquad
# \operatorname{Nassoc}(A, B) = \frac{\operatorname{assoc}(A, A)}{\operatorname{assoc}(A, V)} + \frac{\operatorname{assoc}(B, B)}{\operatorname{assoc}(B, V)} .
# $$
#
# Ncut is small when few edges leave each group *relative to all the edges of that group*; Nassoc is large when most
# of each group's edges stay inside it. They are the same criterion: every edge leaving a node of $A$ ends in $A$ or in $B$,
# so $\operatorname{assoc}(A, V) = \operatorname{assoc}(A, A) + \operatorname{cut}(A, B)$, hence
# $\frac{\operatorname{cut}(A, B)}{\operatorname{assoc}(A, V)} = 1 - \frac{\operatorname{assoc}(A, A)}{\operatorname{assoc}(A, V)}$, the same for $B$, and adding the two:
#
# $$
# \operatorname{Ncut}(A, B) = 2 - \operatorname{Nassoc}(A, B) .
# $$
#
# Minimising the disassociation between the groups and maximising the association within them is one problem.
#
# > **Common confusion:** a common mix-up calls the between-group criterion "Nassoc" and writes `assoc` for the cut too.
# > In the paper (and in this course), **Ncut** is the between-group quantity, which we minimise, and **Nassoc** the
# > within-group one, which we maximise; $\operatorname{Ncut} = 2 - \operatorname{Nassoc}$.

# %%
mask = torch.rand(N, generator=generator) < 0.5             # a random partition: A = mask
a, b = mask.double(), (~mask).double()
cut_by_hand = (W_random * a[:, None] * b[None, :]).sum()   # sum over u in A, v in B
assoc_a, assoc_b = (W_random * a[:, None]).sum(), (W_random * b[:, None]).sum()
assoc_aa, assoc_bb = (W_random * a[:, None] * a[None, :]).sum(), (W_random * b[:, None] * b[None, :]).sum()
ncut_by_hand = cut_by_hand / assoc_a + cut_by_hand / assoc_b
nassoc_by_hand = assoc_aa / assoc_a + assoc_bb / assoc_b
print(f"|A| = {int(mask.sum())}: cut = {cut_by_hand:.6f}, 1_A^T L 1_A = {a @ L_random @ a:.6f}; "
      f"Ncut = {ncut_by_hand:.6f}, 2 - Nassoc = {2 - nassoc_by_hand:.6f}")
assert abs(a @ L_random @ a - cut_by_hand) < 1e-12
assert abs(assoc_a - (assoc_aa + cut_by_hand)) < 1e-12 and abs(ncut_by_hand - (2 - nassoc_by_hand)) < 1e-12
assert abs(ncut_value(W_random, mask) - ncut_by_hand) < 1e-12 and abs(nassoc_value(W_random, mask) - nassoc_by_hand) < 1e-12
assert abs(cut(W_random, mask) - cut_by_hand) < 1e-12 and abs(assoc(W_random, mask) - assoc_a) < 1e-12

# %% [markdown]
# ### B.3 Why normalise: the minimum cut cuts off a single node
#
# The plain minimum cut (Wu and Leahy, 1993) favours cutting off small sets: a lone node has few edges to cut. Twelve
# points in the plane, two clusters and a straggler, with the affinity $w_{ij} = \exp(-\lVert p_i - p_j \rVert^2 / \sigma^2)$: we try
# **all** $2^{11} - 1 = 2047$ partitions (fixing node 0 in $A$ removes the $A \leftrightarrow B$ duplicates) and compare three criteria,
# the cut, the **average cut** $\frac{\operatorname{cut}}{|A|} + \frac{\operatorname{cut}}{|B|}$ (the paper's other comparison) and Ncut. Vectorised:
# for the matrix $M$ of all partitions ($M_{pi} = 1$ if node $i$ is in $A$ for partition $p$), $\operatorname{assoc}(A_p, V) = (M d)_p$ and
# $\operatorname{assoc}(A_p, A_p) = \sum_i (M W)_{pi} M_{pi}$.

# %%
def all_partitions(n):
    """Every split of n nodes with node 0 in A and B non-empty: bool (2^(n-1) - 1, n)."""
    rows = np.array(list(itertools.product([True, False], repeat=n - 1)), dtype=bool)  # (2^(n-1), n-1)
    masks = np.concatenate([np.ones((len(rows), 1), dtype=bool), rows], axis=1)
    return masks[~masks.all(axis=1)]


def criteria_of_all_partitions(W, masks):
    """cut, average cut and Ncut of every partition (rows of masks), vectorised: three (P,) arrays."""
    W = np.asarray(W, dtype=np.float64)
    M = masks.astype(np.float64)                           # (P, n)
    d = W.sum(1)                                           # (n,)
    assoc_a = M @ d                                        # (P,)
    within_a = ((M @ W) * M).sum(1)                        # assoc(A, A)
    cuts = assoc_a - within_a
    size_a = M.sum(1)
    return cuts, cuts / size_a + cuts / (len(d) - size_a), cuts / assoc_a + cuts / (d.sum() - assoc_a)


rng = np.random.default_rng(0)
points = np.concatenate([rng.normal([0, 0], 0.45, (6, 2)), rng.normal([3.2, 0.3], 0.45, (5, 2)), [[1.6, 2.6]]])
W_points = np.exp(-((points[:, None] - points[None]) ** 2).sum(-1) / 1.5**2)
np.fill_diagonal(W_points, 0)
masks_12 = all_partitions(12)
cuts_12, average_cuts_12, ncuts_12 = criteria_of_all_partitions(W_points, masks_12)
assert all(abs(ncuts_12[i] - ncut_value(W_points, masks_12[i])) < 1e-12 for i in range(0, len(masks_12), 97))

fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
for ax, values, name in zip(axes, (cuts_12, average_cuts_12, ncuts_12), ("minimum cut", "minimum average cut", "minimum Ncut")):
    best = masks_12[int(np.argmin(values))]
    for i in range(12):
        for j in range(i + 1, 12):
            ax.plot(*points[[i, j]].T, color="0.6", lw=4 * W_points[i, j], zorder=0)
    ax.scatter(*points[best].T, s=80, color="C0", label="A", zorder=2)
    ax.scatter(*points[~best].T, s=80, color="C3", label="B", zorder=2)
    ax.set(title=f"{name}: |A| = {best.sum()}, |B| = {(~best).sum()}\nvalue {values.min():.3f}, Ncut {ncuts_12[int(np.argmin(values))]:.3f}",
           aspect="equal")
    ax.legend(fontsize=8, loc="lower right")
plt.show()
best_cut = masks_12[int(np.argmin(cuts_12))]
print(f"the minimum cut isolates {min(best_cut.sum(), (~best_cut).sum())} node(s); its Ncut is {ncuts_12[int(np.argmin(cuts_12))]:.3f} "
      f"(a singleton always has Ncut > 1: cut = its whole degree)")
assert min(best_cut.sum(), (~best_cut).sum()) == 1

# %% [markdown]
# Edge widths show the affinities. The minimum cut takes the straggler alone; Ncut pays for that, since cutting off a
# node cuts all of its (few) edges, a ratio of 1 in the first term; its minimum splits the two clusters.
#
# ### B.4 A graph with no structure: the complete graph
#
# Take $N$ nodes and $w_{ij} = 1$ for every $i \neq j$, and let $|A| = x$. Each node has degree $N - 1$, so $\operatorname{assoc}(A, V) = x(N - 1)$ and
# $\operatorname{assoc}(B, V) = (N - x)(N - 1)$; every one of the $x(N - x)$ pairs across is an edge, $\operatorname{cut}(A, B) = x(N - x)$. Then
#
# $$
# \operatorname{Ncut} = \frac{x(N - x)}{x(N - 1)} + \frac{x(N - x)}{(N - x)(N - 1)} = \frac{(N - x) + x}{N - 1} = \frac{N}{N - 1}
# \quad\text{for every partition,}
# $$
#
# and $\operatorname{Nassoc} = 2 - \frac{N}{N - 1} = \frac{N - 2}{N - 1}$ (directly: $\operatorname{assoc}(A, A) = x(x - 1)$ ordered pairs, ratio $\frac{x - 1}{N - 1}$, plus
# $\frac{N - x - 1}{N - 1}$). The cut $x(N - x)$ is smallest at $x = 1$. With no structure in the graph, Ncut prefers no partition; the
# minimum cut still prefers a singleton.
#
# > **Common confusion:** a common miscount takes $\frac{\operatorname{assoc}(A, A)}{\operatorname{assoc}(A, V)} = \frac{\sum_{i=1}^{x} i}{x(N - 1)} = \frac{x + 1}{2(N - 1)}$ and a sum of
# > $\frac{N + 1}{2(N - 1)}$. Both are wrong: $A$ has $x(x - 1)$ ordered pairs (each edge counted from both ends, as
# > $\operatorname{assoc}(A, V)$ counts them), so the ratio is $\frac{x - 1}{N - 1}$; and those two miscounted terms would add to $\frac{N + 2}{2(N - 1)}$, not
# > $\frac{N + 1}{2(N - 1)}$. The conclusion (no small-set bias without structure) holds, with $\operatorname{Ncut} = \frac{N}{N - 1}$.

# %%
N_complete = 10
W_complete = np.ones((N_complete, N_complete)) - np.eye(N_complete)
masks_10 = all_partitions(N_complete)
cuts_10, _, ncuts_10 = criteria_of_all_partitions(W_complete, masks_10)
sizes = masks_10.sum(1)
print(f"complete graph, N = {N_complete}: Ncut over all {len(masks_10)} partitions in "
      f"[{ncuts_10.min():.6f}, {ncuts_10.max():.6f}], N/(N-1) = {N_complete / (N_complete - 1):.6f}")
for x in (1, 3, 5):
    example = masks_10[sizes == x][0]
    print(f"  |A| = {x}: cut = {cut(W_complete, example):.0f} (= x(N - x) = {x * (N_complete - x)}), "
          f"Ncut = {ncut_value(W_complete, example):.4f}, Nassoc = {nassoc_value(W_complete, example):.4f}")
assert np.allclose(ncuts_10, N_complete / (N_complete - 1), atol=1e-12)
assert np.allclose(cuts_10, sizes * (N_complete - sizes))

# %% [markdown]
# ---
# ## C. Ncut as a Rayleigh quotient, relaxed to an eigenproblem
#
# ### C.1 Ncut of a partition is a Rayleigh quotient
#
# Write $d_A = \operatorname{assoc}(A, V) = \sum_{i \in A} d_i$, $d_B$ likewise, $b = d_A / d_B$, and encode the partition by the vector
#
# $$
# y = 2\,(\mathbf{1}_A - b\, \mathbf{1}_B), \qquad y_i = 2 \text{ on } A, \quad y_i = -2b \text{ on } B .
# $$
#
# (The paper writes it as $y = (\mathbf{1} + x) - b(\mathbf{1} - x)$ with $x_i = \pm 1$: the same vector.) Four steps.
#
# 1. **Numerator.** With $\mathbf{1}_B = \mathbf{1} - \mathbf{1}_A$: $y = 2\big((1 + b)\mathbf{1}_A - b\,\mathbf{1}\big)$. Because $L \mathbf{1} = 0$ and $\mathbf{1}^\top L = (L \mathbf{1})^\top = 0$, every term with
#    $\mathbf{1}$ drops out: $y^\top L y = 4 (1 + b)^2\, \mathbf{1}_A^\top L\, \mathbf{1}_A = 4 (1 + b)^2 \operatorname{cut}(A, B)$ (B.1).
# 2. **Denominator.** $y^\top D y = \sum_i d_i y_i^2 = 4 d_A + 4 b^2 d_B = 4 d_A + 4 b\, d_A = 4 (1 + b)\, d_A$, using $b\, d_B = d_A$.
# 3. **Ratio.** $\dfrac{y^\top L y}{y^\top D y} = (1 + b)\dfrac{\operatorname{cut}(A, B)}{d_A} = \dfrac{\operatorname{cut}(A, B)}{d_A} + \dfrac{b \operatorname{cut}(A, B)}{d_A} = \dfrac{\operatorname{cut}(A, B)}{d_A} + \dfrac{\operatorname{cut}(A, B)}{d_B} = \operatorname{Ncut}(A, B)$.
# 4. **A constraint every such $y$ meets.** $y^\top D \mathbf{1} = \sum_i d_i y_i = 2 d_A - 2 b\, d_B = 0$.
#
# So, exactly,
#
# $$
# \min_{A} \operatorname{Ncut}(A, B) = \min_{y} \frac{y^\top (D - W)\, y}{y^\top D y}
# \quad\text{over } y \text{ with } y_i \in \{1, -b\} \text{ (after dividing by 2) and } y^\top D \mathbf{1} = 0 .
# $$
#
# This discrete problem is NP-complete (the paper cites Papadimitriou). The check runs on the 12-point graph of B.3.

# %%
L_points, d_points = laplacian(W_points), degrees(W_points)
D_points = np.diag(d_points)
for index in (int(np.argmin(ncuts_12)), 5, 1000):
    A = masks_12[index]
    d_A, d_B = d_points[A].sum(), d_points[~A].sum()
    b_ratio = d_A / d_B
    y = 2 * (A - b_ratio * ~A)                             # (12,) entries 2 and -2b
    numerator, denominator = y @ L_points @ y, y @ D_points @ y
    print(f"|A| = {A.sum():2d}: y^T L y = {numerator:.6f} = 4(1+b)^2 cut = {4 * (1 + b_ratio)**2 * cut(W_points, A):.6f}; "
          f"y^T D y = {denominator:.6f} = 4(1+b) d_A = {4 * (1 + b_ratio) * d_A:.6f}; "
          f"ratio {numerator / denominator:.6f} = Ncut {ncut_value(W_points, A):.6f}; y^T D 1 = {y @ d_points:.1e}")
    assert abs(numerator - 4 * (1 + b_ratio) ** 2 * cut(W_points, A)) < 1e-10
    assert abs(denominator - 4 * (1 + b_ratio) * d_A) < 1e-10
    assert abs(numerator / denominator - ncut_value(W_points, A)) < 1e-12 and abs(y @ d_points) < 1e-10
    assert abs(rayleigh_quotient(L_points, y, D_points) - ncut_value(W_points, A)) < 1e-12

# %% [markdown]
# ### C.2 The relaxation, and why its solution is an eigenvector
#
# **Relax** the one hard constraint: let $y$ take any real values, keeping $y^\top D \mathbf{1} = 0$. Since the quotient ignores the
# scale of $y$, fix $y^\top D y = 1$, and bring in a multiplier for each constraint:
#
# $$
# \mathcal{L}(y, \lambda, \mu) = y^\top L y - \lambda\,(y^\top D y - 1) - \mu\, y^\top D \mathbf{1}, \qquad
# \nabla_y \mathcal{L} = 2 L y - 2 \lambda D y - \mu D \mathbf{1} = 0 .
# $$
#
# Multiply on the left by $\mathbf{1}^\top$: $2\, \mathbf{1}^\top L y = 0$ (as $\mathbf{1}^\top L = 0$), $2 \lambda\, \mathbf{1}^\top D y = 0$ (the constraint), so $\mu\, \mathbf{1}^\top D \mathbf{1} = 0$
# and $\mu = 0$. What is left is the **generalized eigenproblem**
#
# $$
# (D - W)\, y = \lambda D y ,
# $$
#
# and at a solution the objective is $y^\top L y = \lambda\, y^\top D y = \lambda$.
#
# > **Common confusion:** a common slip differentiates $y^\top (D - W) y - \lambda\, y^\top D y$ and writes $2(D - W) y + 2 \lambda D y = 0$: a sign
# > slip, which would give $(D - W) y = -\lambda D y$ and negative "eigenvalues" for a PSD problem. It is $2 L y - 2 \lambda D y$.
#
# **Make it symmetric.** With $z = D^{1/2} y$ (every $d_i > 0$), $L y = \lambda D y$ becomes $L D^{-1/2} z = \lambda D^{1/2} z$; multiply by $D^{-1/2}$:
#
# $$
# L_{\text{sym}}\, z = \lambda z, \qquad L_{\text{sym}} = D^{-1/2} (D - W)\, D^{-1/2} = I - D^{-1/2} W D^{-1/2} ,
# $$
#
# and the quotient carries over: $\frac{y^\top L y}{y^\top D y} = \frac{z^\top L_{\text{sym}} z}{z^\top z}$. Facts about $L_{\text{sym}}$:
#
# - It is symmetric, and its eigenvalues lie in $[0, 2]$: $z^\top L_{\text{sym}} z = y^\top L y \ge 0$ (B.1), and
#   $2 z^\top z - z^\top L_{\text{sym}} z = z^\top (I + D^{-1/2} W D^{-1/2}) z = y^\top (D + W) y = \frac{1}{2}\sum_{ij} w_{ij} (y_i + y_j)^2 \ge 0$ (the identity of B.1
#   with a plus sign, derived the same way).
# - $z_0 = D^{1/2} \mathbf{1}$ has eigenvalue $\lambda_0 = 0$ (it is $y_0 = \mathbf{1}$, and $L \mathbf{1} = 0$): "everything in one group", no cut at all.
# - The constraint is orthogonality to it: $y^\top D \mathbf{1} = (D^{1/2} y)^\top (D^{1/2} \mathbf{1}) = z^\top z_0$.
#
# **The minimiser (Courant–Fischer, now for the smallest eigenvalues).** Let $u_0 = z_0 / \lVert z_0 \rVert, u_1, u_2, \dots$ be an orthonormal eigenbasis of
# $L_{\text{sym}}$ with $0 = \lambda_0 \le \lambda_1 \le \lambda_2 \le \dots$. A feasible $z$ has no $u_0$ component, $z = \sum_{i \ge 1} c_i u_i$, so as in A.3
#
# $$
# \frac{z^\top L_{\text{sym}} z}{z^\top z} = \frac{\sum_{i \ge 1} \lambda_i c_i^2}{\sum_{i \ge 1} c_i^2} \;\ge\; \lambda_1 ,
# \qquad\text{with equality at } z = u_1 .
# $$
#
# So $y_1 = D^{-1/2} u_1$, the **second-smallest generalized eigenvector, is the exact global minimiser of the relaxed problem**,
# and $\lambda_1$ its minimum. Every partition's $y$ from C.1 is one of the feasible vectors, so the relaxed minimum can only be lower:
#
# $$
# \lambda_1 \;\le\; \min_A \operatorname{Ncut}(A, B) .
# $$
#
# The relaxation is the only approximation: the real $y_1$ must still be turned back into a partition (C.6).
#
# > **Common confusion:** a common doubt is that the second eigenvector is the minimum at all ("the eigen-equation only
# > finds critical points"), and a common reading calls eigenvectors "orthogonal, hence non-overlapping". The
# > weighted-average argument above is the proof that it *is* the minimum over $y \perp_D \mathbf{1}$; and the $y_i$ are orthogonal in
# > the $D$ inner product ($y_i^\top D y_j = z_i^\top z_j = 0$), not in the plain one. The smallest eigenvector is often said to be
# > excluded because it "implies $k = 1$"; the precise reason is that $y_0 = \mathbf{1}$ violates $y^\top D \mathbf{1} = 0$.

# %% [markdown]
# ### C.3 Checked: the relaxed minimum and the brute-force minimum Ncut
#
# On the 12-point graph: $\lambda_1$ from `scipy.linalg.eigh(L, D)` (the generalized problem directly), the quotient of $y_1$, a
# thousand random feasible $y$ (all above $\lambda_1$), and the brute-force minimum over the 2,047 partitions. Then the gap
# $\min \operatorname{Ncut} - \lambda_1$ over random graphs of 12 nodes (`n_graphs` of them; uniform weights, and clustered ones).

# %%
lam_gen, Y_gen = scipy.linalg.eigh(L_points, D_points)      # generalized: L y = lambda D y, ascending
y1 = Y_gen[:, 1]
feasible = rng.standard_normal((12, 1000))
feasible -= np.outer(np.ones(12), d_points @ feasible) / d_points.sum()  # remove the D-weighted mean: y^T D 1 = 0
print(f"lambda_0 = {lam_gen[0]:.1e}, lambda_1 = {lam_gen[1]:.6f}; R(y_1) = {rayleigh_quotient(L_points, y1, D_points):.6f}; "
      f"y_1^T D 1 = {y1 @ d_points:.1e}")
print(f"1000 random feasible y: min quotient {rayleigh_quotient(L_points, feasible, D_points).min():.6f}; "
      f"brute-force min Ncut = {ncuts_12.min():.6f}")
assert abs(lam_gen[0]) < 1e-10 and abs(y1 @ d_points) < 1e-10
assert rayleigh_quotient(L_points, feasible, D_points).min() >= lam_gen[1] - 1e-12
assert lam_gen[1] <= ncuts_12.min() + 1e-12


def random_graph(kind, n=12):
    if kind == "uniform":
        W = rng.random((n, n))
    else:  # two groups, strong inside, weak across
        group = rng.random(n) < 0.5
        W = np.where(group[:, None] == group[None, :], rng.random((n, n)), 0.15 * rng.random((n, n)))
    W = (W + W.T) / 2
    np.fill_diagonal(W, 0)
    return W


gaps = {"uniform": [], "clustered": []}
for kind in gaps:
    for _ in tqdm(range(cfg.n_graphs), desc=f"{kind} graphs", leave=False):
        W = random_graph(kind)
        lam1 = scipy.linalg.eigh(laplacian(W), np.diag(degrees(W)), eigvals_only=True)[1]
        min_ncut = criteria_of_all_partitions(W, masks_12)[2].min()
        assert lam1 <= min_ncut + 1e-12
        gaps[kind].append((lam1, min_ncut))
mean_gap = {}
for kind, pairs in gaps.items():
    pairs = np.array(pairs)
    gap = pairs[:, 1] - pairs[:, 0]
    mean_gap[kind] = gap.mean()
    print(f"{kind:9s}: min Ncut - lambda_1 from {gap.min():.4f} to {gap.max():.4f} (mean {gap.mean():.4f}); "
          f"min Ncut from {pairs[:, 1].min():.3f} to {pairs[:, 1].max():.3f}")
assert mean_gap["uniform"] > 3 * mean_gap["clustered"] and min(p[1] for p in gaps["uniform"]) > 0.8
fig, ax = plt.subplots(figsize=(5, 4))
for kind, pairs in gaps.items():
    pairs = np.array(pairs)
    ax.scatter(pairs[:, 0], pairs[:, 1], s=12, label=kind)
top_value = max(np.array(p).max() for p in gaps.values())
ax.plot([0, top_value], [0, top_value], "k--", lw=1, label="min Ncut = lambda_1")
ax.set(xlabel="lambda_1 (relaxed minimum)", ylabel="brute-force min Ncut", title=f"{2 * cfg.n_graphs} random 12-node graphs")
ax.legend()
plt.show()

# %% [markdown]
# Every point lies on or above the diagonal, as the inequality says. For clustered graphs the relaxation is nearly tight
# (there is a good discrete answer and $y_1$ is nearly piecewise constant); for uniform random weights (no structure,
# like the complete graph of B.4) even the best partition has an Ncut near 1 and $\lambda_1$ stays measurably below it (the
# printed gaps: several times larger for the uniform graphs).
#
# ### C.4 One eigenproblem, four solvers (optional deep dive)
#
# The smallest generalized eigenvectors can be computed (1) by `scipy.linalg.eigh(L, D)`; (2) from $L_{\text{sym}}$ and $y = D^{-1/2} z$; (3) with a
# sparse, iterative solver that only needs products $W v$: ARPACK's Lanczos (`scipy.sparse.linalg.eigsh`) on $D^{-1/2} W D^{-1/2}$, whose
# **largest** eigenvalues $1 - \lambda$ are the smallest of $L_{\text{sym}}$ (`which="LA"`, largest algebraic); (4) the library's
# `ncut_eigenvectors`, which uses (2) for small dense graphs and its own Lanczos (C.5) for large sparse ones. Eigenvectors are defined up
# to sign (and scale), so compare $|\cos|$ in the $D$ inner product. The test graph: a $30 \times 30$ image's pixel graph (900 nodes,
# built in D.1).

# %%
generator = seed_everything(3)
small_image = torch.zeros(30, 30)
small_image[8:22, 6:16] = 0.25                              # a brighter rectangle ...
small_image += 0.05 * torch.randn(30, 30, generator=generator)  # ... with noise
W_small = image_affinity(small_image, sigma_i=0.1, sigma_x=4.0, radius=5)  # scipy.sparse (900, 900)
d_small = degrees(W_small)
L_dense, D_dense = laplacian(W_small).toarray(), np.diag(d_small)

lam_1, Y_1 = scipy.linalg.eigh(L_dense, D_dense, subset_by_index=[0, 3])          # (1)
inv_sqrt_d = 1 / np.sqrt(d_small)
lam_2, Z_2 = np.linalg.eigh(np.eye(900) - inv_sqrt_d[:, None] * W_small.toarray() * inv_sqrt_d[None, :])  # (2)
Y_2 = inv_sqrt_d[:, None] * Z_2[:, :4]
normalized_affinity = scipy.sparse.diags(inv_sqrt_d) @ W_small @ scipy.sparse.diags(inv_sqrt_d)
mu_3, Z_3 = scipy.sparse.linalg.eigsh(normalized_affinity, k=4, which="LA", v0=np.ones(900), ncv=40, tol=1e-10)  # (3)
order = np.argsort(1 - mu_3)
lam_3, Y_3 = (1 - mu_3)[order], inv_sqrt_d[:, None] * Z_3[:, order]
lam_4, Y_4 = ncut_eigenvectors(W_small, k=4, tol=1e-10)                            # (4), Lanczos (900 > 150 nodes)


def d_cosines(Y_a, Y_b):
    """|cos| between matching columns in the D inner product."""
    inner = lambda p, q: (p * d_small[:, None] * q).sum(0)  # noqa: E731
    return np.abs(inner(Y_a, Y_b)) / np.sqrt(inner(Y_a, Y_a) * inner(Y_b, Y_b))


print("eigenvalues:", *(np.round(lam, 7) for lam in (lam_1, lam_2[:4], lam_3, lam_4)), sep="\n  ")
for name, Y_other in (("L_sym + back-transform", Y_2), ("ARPACK eigsh", Y_3), ("course_lib (Lanczos)", Y_4)):
    print(f"|cos| of y_1, y_2, y_3 against eigh(L, D), {name}: {d_cosines(Y_1, Y_other)[1:].round(10)}")
    assert d_cosines(Y_1, Y_other)[1:].min() > 1 - 1e-6
assert np.allclose(lam_1, lam_2[:4], atol=1e-9) and np.allclose(lam_1, lam_3, atol=1e-9) and np.allclose(lam_1, lam_4, atol=1e-8)

# %% [markdown]
# ### C.5 What a sparse solver does: Lanczos in a few lines (optional deep dive)
#
# An image of $128 \times 128$ pixels is a graph of $N = 16{,}384$ nodes. A dense eigendecomposition costs $O(N^3)$ time and $N^2$ numbers of
# memory (2 GiB); the graph is sparse (each pixel has 68 neighbours), and the **Lanczos method** needs only products $A v$ with
# $A = D^{-1/2} W D^{-1/2}$, each $O(\text{nonzeros})$. The idea, step by step:
#
# 1. The **Krylov space** $\mathcal{K}_m = \operatorname{span}(v, A v, \dots, A^{m-1} v)$ holds every polynomial in $A$ applied to $v$: power iteration (A.2) keeps only its last
#    vector, Lanczos keeps the whole space and takes the best vector in it.
# 2. An orthonormal basis $v_1, \dots, v_m$ of $\mathcal{K}_m$ comes from a **three-term recurrence**. Orthogonalise $A v_j$ against the earlier $v_i$: for $i \le j - 2$,
#    $v_i^\top A v_j = (A v_i)^\top v_j = 0$, because $A$ is symmetric and $A v_i \in \mathcal{K}_{i+1} = \operatorname{span}(v_1, \dots, v_{i+1})$, orthogonal to $v_j$. Only
#    $v_j$ and $v_{j-1}$ remain:
#
# $$
# \beta_j v_{j+1} = A v_j - \alpha_j v_j - \beta_{j-1} v_{j-1}, \qquad \alpha_j = v_j^\top A v_j, \quad \beta_j = \lVert A v_j - \alpha_j v_j - \beta_{j-1} v_{j-1} \rVert .
# $$
#
# 3. In this basis $A$ becomes the tridiagonal $T_m = V_m^\top A V_m$ (diagonal $\alpha$, off-diagonal $\beta$), and the recurrence reads
#    $A V_m = V_m T_m + \beta_m v_{m+1} e_m^\top$. The largest eigenvalue $\theta$ of $T_m$, with eigenvector $s$, gives $x = V_m s$, the maximiser of
#    the Rayleigh quotient over $\mathcal{K}_m$ (A.3 inside the subspace), so $\theta$ rises towards $\lambda_{\max}(A)$ as $m$ grows.
# 4. The error needs no extra product: $A x - \theta x = V_m (T_m s - \theta s) + \beta_m v_{m+1} s_m = \beta_m s_m\, v_{m+1}$, so
#    $\lVert A x - \theta x \rVert = \beta_m\, |s_m|$. Stop when that is below a tolerance.
#
# For Ncut the top eigenvector of $A$ is known, $z_0 = D^{1/2}\mathbf{1}$ (normalised), so we run the recurrence orthogonal to it: the
# largest eigenvalue left is $1 - \lambda_1$. The cell writes the recurrence out on a $64 \times 64$ image (4,096 nodes), checks the
# residual formula and the monotone rise of $\theta$, and compares with ARPACK and with `course_lib.topics.spectral.lanczos_largest`
# (the same recurrence, plus a convergence test and a deflation list).

# %%
def load_resized(name, size):
    """A bundled photo, area-averaged to size x size: (C, size, size)."""
    return F.interpolate(load_image(name)[None], size=(size, size), mode="area")[0]


camera_64 = load_resized("camera", 64)
W_64 = image_affinity(camera_64, sigma_i=0.1, sigma_x=4.0, radius=5)
d_64 = degrees(W_64)
A_64 = (scipy.sparse.diags(1 / np.sqrt(d_64)) @ W_64 @ scipy.sparse.diags(1 / np.sqrt(d_64))).tocsr()  # (4096, 4096)
z0 = np.sqrt(d_64) / np.linalg.norm(np.sqrt(d_64))         # the known top eigenvector (eigenvalue 1)
assert np.allclose(A_64 @ z0, z0)

m = 150
v_current = np.random.default_rng(0).standard_normal(4096)
v_current -= z0 * (z0 @ v_current)
v_current /= np.linalg.norm(v_current)
v_previous, beta_previous = np.zeros(4096), 0.0
basis, alphas, betas, thetas = [v_current], [], [], []
for j in range(m):
    w_j = A_64 @ v_current
    w_j -= z0 * (z0 @ w_j)                                  # stay orthogonal to z0
    alpha = v_current @ w_j
    w_j = w_j - alpha * v_current - beta_previous * v_previous
    beta = np.linalg.norm(w_j)
    alphas.append(alpha)
    thetas.append(scipy.linalg.eigvalsh_tridiagonal(np.array(alphas), np.array(betas))[-1])
    betas.append(beta)
    v_previous, v_current, beta_previous = v_current, w_j / beta, beta
    basis.append(v_current)
T_m = np.diag(alphas) + np.diag(betas[:-1], 1) + np.diag(betas[:-1], -1)  # (m, m)
theta_all, S_m = np.linalg.eigh(T_m)
x = np.stack(basis[:m], axis=1) @ S_m[:, -1]                # (4096,) Ritz vector
residual = np.linalg.norm(A_64 @ x - z0 * (z0 @ (A_64 @ x)) - theta_all[-1] * x)
print(f"after m = {m} steps: theta = {theta_all[-1]:.10f}, so lambda_1 ~ {1 - theta_all[-1]:.8f}; "
      f"|A x - theta x| = {residual:.2e}, beta_m |s_m| = {betas[-1] * abs(S_m[-1, -1]):.2e}")
mu_arpack = scipy.sparse.linalg.eigsh(A_64, k=2, which="LA", ncv=40, tol=1e-12, v0=np.ones(4096))[0]
theta_lib, _, steps = lanczos_largest(A_64.dot, np.ones(4096), deflate=[z0], tol=1e-10)
print(f"ARPACK: 1 - lambda_1 = {mu_arpack.min():.10f}; course_lib.topics.spectral.lanczos_largest: {theta_lib:.10f} in {steps} products")
assert abs(residual - betas[-1] * abs(S_m[-1, -1])) < 1e-6 and all(b >= a - 1e-12 for a, b in zip(thetas, thetas[1:]))
assert abs(theta_all[-1] - mu_arpack.min()) < 1e-6 and abs(theta_lib - mu_arpack.min()) < 1e-9

fig, ax = plt.subplots(figsize=(6, 3))
ax.semilogy(np.arange(1, m + 1), np.maximum(mu_arpack.min() - np.array(thetas), 1e-16))
ax.set(xlabel="Lanczos step m", ylabel="lambda_max - theta_m", title="the largest Ritz value converges")
plt.show()

# %% [markdown]
# The plain recurrence slowly loses orthogonality in floating point (Paige showed that this happens exactly as a Ritz value
# converges, and that the converged pair stays correct); ARPACK keeps a short, restarted, re-orthogonalised basis instead.
# The library stops as soon as its one wanted pair has converged, and finds $y_2, y_3, \dots$ one at a time with the earlier ones
# deflated. Measured on this machine for the $128 \times 128$ photos `camera` (D.3) and `coins` (widget of D.5), time to $\lambda_1$ (all
# solvers agree on it to 6 digits, except `lobpcg`), with numpy's BLAS held to one thread and, in the last column, left at its
# default of two threads while other jobs share the 2 cores:
#
# | solver | `camera`, s | `coins`, s | `coins`, default BLAS threads, s |
# |---|---|---|---|
# | ARPACK `eigsh(which="LA")` as first written: default Krylov size $2k + 1 = 5$, tol $10^{-8}$, $v_0 = z_0$ | 1.4 | 6.8 | 8.1 |
# | ARPACK, Krylov size 40, tol $10^{-6}$ | 0.8 | 1.8 | 13.5 |
# | `course_lib.topics.spectral.lanczos_largest` ($z_0$ deflated), tol $10^{-6}$ | **0.3** | **0.6** | **0.7** |
# | shift-invert `eigsh(sigma=-1e-3)` on $L_{\text{sym}}$ (sparse LU) | 5.5 | | |
# | `lobpcg` without a preconditioner, 500 iterations | 1.0, still $3 \times 10^{-4}$ off | | |
# | dense `eigh` of the $16{,}384 \times 16{,}384$ matrix | not tried: 2 GiB, $O(N^3)$ | | |
#
# The last column is the practical point: ARPACK re-orthogonalises with a multi-threaded BLAS, which on a busy 2-core machine
# spends its time waiting for its own threads (a bigger Krylov space, normally faster, became 8x slower). The library's
# recurrence uses only sparse products and element-wise numpy: no BLAS call in the loop, the same time either way.
#
# ### C.6 From $y_1$ back to a partition: the threshold
#
# $y_1$ is real; a partition needs a threshold, $A = \{i : y_{1,i} > t\}$. The paper's options: $t = 0$, $t$ = the median of $y_1$, or the
# default, **search**: try $l$ evenly spaced values between $\min y_1$ and $\max y_1$ and keep the one whose partition has the
# smallest actual Ncut. On the 12-point graph every threshold can be listed:

# %%
_, y_points = ncut_eigenvectors(W_points, k=2)
y1_points = y_points[:, 1]
thresholds = np.linspace(y1_points.min(), y1_points.max(), 200)[1:-1]
curve = ncut_threshold_curve(W_points, y1_points, thresholds)
results = {name: ncut_bipartition(W_points, name) for name in ("search", "zero", "median")}
fig, ax = plt.subplots(figsize=(6, 3))
ax.plot(thresholds, curve, label="Ncut({i : y_1i > t})")
for name, (split, _, value) in results.items():
    print(f"threshold {name:6s}: |A| = {split.sum():2d}, Ncut = {value:.4f}")
ax.axhline(ncuts_12.min(), color="k", ls="--", label="brute-force minimum")
ax.axhline(lam_gen[1], color="0.5", ls=":", label="lambda_1")
ax.set(xlabel="threshold t", ylabel="Ncut", title="12-point graph: Ncut of the split of y_1 at t", ylim=(0, 2))
ax.legend(fontsize=8)
plt.show()
assert abs(results["search"][2] - ncuts_12.min()) < 1e-12   # here the search finds the brute-force optimum

# %% [markdown]
# > **Common confusion:** "split the eigenvector at 0". It is one of the paper's options, not its default; $y_1$ has $D$-weighted
# > mean 0, which need not sit in the gap between the groups. The search costs one sparse product per candidate threshold.
#
# ### C.7 A pitfall: a disconnected graph
#
# If the graph falls apart into $c$ connected components, each component's indicator $\mathbf{1}_{C}$ has $\mathbf{1}_{C}^\top L\, \mathbf{1}_{C} = \operatorname{cut}(C, V \setminus C) = 0$, so
# $\lambda = 0$ has multiplicity $c$: the "second eigenvector" is then any mix of the component indicators, and a threshold on it
# is arbitrary. With a pixel graph this happens when $\sigma_I$ is small compared with the contrast: edges between different
# intensities underflow to 0. Exercise 4 counts the components from the eigenvalues; the library's recursive Ncut (D.6) splits
# a disconnected segment into its components first.

# %%
two_objects = torch.full((24, 24), 0.2)
two_objects[3:10, 3:10] = 0.9
two_objects[14:21, 12:22] = 0.6
for sigma_i in (0.01, 0.3):
    W_two = image_affinity(two_objects, sigma_i=sigma_i, sigma_x=3.0, radius=3)
    n_components = scipy.sparse.csgraph.connected_components(W_two, directed=False)[0]
    lambdas_two = ncut_eigenvectors(W_two, k=4)[0]
    print(f"sigma_I = {sigma_i}: {n_components} connected component(s); smallest generalized eigenvalues {lambdas_two.round(6)}")
    assert (lambdas_two < 1e-9).sum() == n_components

# %% [markdown]
# ---
# ## D. Segmenting images
#
# ### D.1 The pixel graph
#
# Every pixel is a node. Shi and Malik's affinity joins pixels within a radius $r$, and weighs them by how similar their
# values $F$ and how close their positions $X$ are:
#
# $$
# w_{ij} = \exp\!\Big(-\frac{\lVert F_i - F_j \rVert^2}{\sigma_I^2}\Big) \cdot
# \begin{cases} \exp\!\Big(-\dfrac{\lVert X_i - X_j \rVert^2}{\sigma_X^2}\Big) & \text{if } \lVert X_i - X_j \rVert < r, \\ 0 & \text{otherwise.} \end{cases}
# $$
#
# (The paper divides by $\sigma^2$, not $2\sigma^2$; $F$ is the intensity for grey images, the colour vector for colour ones.) With $r = 5$
# each pixel has 68 neighbours, so $W$ has about $68 N$ nonzeros instead of $N^2$.
#
# **Built without a loop over pixels.** Loop instead over the *offsets* $(\delta_y, \delta_x)$ with $0 < \delta_y^2 + \delta_x^2 < r^2$, one of each pair
# $\pm(\delta_y, \delta_x)$ (34 of them for $r = 5$): for one offset, all the pixel pairs $(p, p + \delta)$ are two shifted slices of the image, and
# their weights one array expression. The other half of the edges is the transpose. First the definition itself, all pairs
# at once, on a tiny image; then the offset version; both against the library.

# %%
generator = seed_everything(4)
tiny = torch.rand(3, 9, 11, generator=generator, dtype=torch.float64)  # a colour image (C, H, W)
C_t, H_t, W_t = tiny.shape
features = tiny.reshape(C_t, -1).T                          # (HW, C) pixel values F_i, pixels row by row
ys, xs = torch.meshgrid(torch.arange(H_t), torch.arange(W_t), indexing="ij")
positions = torch.stack([ys.flatten(), xs.flatten()], dim=1).double()  # (HW, 2) positions X_i
sigma_i, sigma_x, radius = 0.3, 3.0, 4.0
feature_d2 = torch.cdist(features, features) ** 2           # (HW, HW) ||F_i - F_j||^2
position_d2 = torch.cdist(positions, positions) ** 2        # (HW, HW) ||X_i - X_j||^2
W_definition = torch.exp(-feature_d2 / sigma_i**2) * torch.exp(-position_d2 / sigma_x**2) * (position_d2 < radius**2)
W_definition.fill_diagonal_(0)


def offsets_within(radius):
    """(dy, dx) with 0 < dy^2 + dx^2 < radius^2, one of each +- pair: dy > 0, or dy = 0 and dx > 0."""
    reach = math.ceil(radius)
    return [(dy, dx) for dy in range(0, reach + 1) for dx in range(-reach, reach + 1)
            if (dy > 0 or dx > 0) and dy * dy + dx * dx < radius * radius]


def pixel_affinity(image, sigma_i, sigma_x, radius):
    """Our step-by-step sparse W for an image (C, H, W): one vectorised block of edges per offset."""
    image = np.asarray(image, dtype=np.float64)
    _, h, w = image.shape
    index = np.arange(h * w).reshape(h, w)                 # pixel number, row by row
    rows, cols, values = [], [], []
    for dy, dx in offsets_within(radius):
        x0, x1 = max(0, -dx), min(w, w - dx)               # columns x whose neighbour x + dx is inside
        p = image[:, : h - dy, x0:x1]                      # (C, h - dy, x1 - x0) the pixels p ...
        q = image[:, dy:, x0 + dx: x1 + dx]                # ... and their neighbours p + (dy, dx)
        weight = np.exp(-((p - q) ** 2).sum(0) / sigma_i**2 - (dy**2 + dx**2) / sigma_x**2)
        rows.append(index[: h - dy, x0:x1].ravel())
        cols.append(index[dy:, x0 + dx: x1 + dx].ravel())
        values.append(weight.ravel())
    upper = scipy.sparse.coo_matrix((np.concatenate(values), (np.concatenate(rows), np.concatenate(cols))), shape=(h * w, h * w))
    return (upper + upper.T).tocsr()


W_offsets = pixel_affinity(tiny, sigma_i, sigma_x, radius)
W_library = image_affinity(tiny, sigma_i, sigma_x, radius)
print(f"{len(offsets_within(5))} offsets for r = 5; tiny image: {W_offsets.nnz} nonzeros of {(H_t * W_t) ** 2}; "
      f"max |offsets - definition| = {np.abs(W_offsets.toarray() - W_definition.numpy()).max():.1e}")
assert np.allclose(W_offsets.toarray(), W_definition.numpy(), atol=1e-14)
assert np.allclose(W_library.toarray(), W_definition.numpy(), atol=1e-14)
W_camera_ours = pixel_affinity(camera_64.numpy(), 0.1, 4.0, 5)
assert abs(W_camera_ours - W_64).max() < 1e-14               # ours = course_lib's on the 64 x 64 photo too

# %% [markdown]
# ### D.2 A synthetic check: a disc on a background
#
# Before real photos, an image whose answer is known: a noisy bright disc on a darker background. The second
# eigenvector should be nearly two-valued, and the search threshold should recover the disc (IoU > 0.9).

# %%
generator = seed_everything(5)
yy, xx = torch.meshgrid(torch.arange(64), torch.arange(64), indexing="ij")
disc = ((yy - 30) ** 2 + (xx - 36) ** 2) < 16**2           # (64, 64) ground truth
disc_image = torch.where(disc, 0.65, 0.35) + 0.05 * torch.randn(64, 64, generator=generator)
W_disc = image_affinity(disc_image, sigma_i=0.1, sigma_x=4.0, radius=5)
split_disc, y1_disc, ncut_disc = ncut_bipartition(W_disc, "search")
found = torch.from_numpy(split_disc.reshape(64, 64))
found = found if (found & disc).sum() > (~found & disc).sum() else ~found  # the side that holds the disc
iou = ((found & disc).sum() / (found | disc).sum()).item()
print(f"Ncut = {ncut_disc:.4f}, IoU with the true disc = {iou:.4f}")
assert iou > 0.9

fig, axes = plt.subplots(1, 4, figsize=(13, 3))
axes[0].imshow(disc_image, cmap="gray")
axes[0].set_title("image")
axes[1].imshow(y1_disc.reshape(64, 64), cmap="RdBu_r")
axes[1].set_title("y_1 as an image")
axes[2].hist(y1_disc, bins=60)
axes[2].set_title("histogram of y_1: two levels")
axes[3].imshow(found, cmap="gray")
axes[3].set_title(f"split: IoU {iou:.3f}")
for ax in axes[[0, 1, 3]]:
    ax.axis("off")
plt.show()

# %% [markdown]
# ### D.3 A real photo, $128 \times 128$, timed
#
# The cameraman photo (scikit-image's `camera`, CC0), area-averaged to $128 \times 128$: $N = 16{,}384$ nodes. The cell times the
# three steps a segmentation needs (the affinity, the eigenvector, the threshold search) and checks the result: the
# generalized residual $\lVert L y_1 - \lambda_1 D y_1 \rVert / \lVert D y_1 \rVert$ and the constraint $y_1^\top D \mathbf{1} = 0$. The target is 5 s on 2 cores; the
# assertion allows 10 s because CI shares its cores.

# %%
camera_128 = load_resized("camera", 128)                   # (1, 128, 128)
start = time.perf_counter()
W_128 = image_affinity(camera_128, sigma_i=0.1, sigma_x=4.0, radius=5)  # sparse (16384, 16384)
time_affinity = time.perf_counter() - start
lambdas_128, Y_128 = ncut_eigenvectors(W_128, k=2)
time_eigen = time.perf_counter() - start - time_affinity
split_128, y1_128, ncut_128 = ncut_bipartition(W_128, "search", y1=Y_128[:, 1])
time_total = time.perf_counter() - start
print(f"128 x 128 = {W_128.shape[0]} nodes, {W_128.nnz:,} nonzeros: affinity {time_affinity:.2f} s, eigenvector {time_eigen:.2f} s, "
      f"threshold search {time_total - time_affinity - time_eigen:.2f} s; total {time_total:.2f} s (target <= 5 s on 2 cores)")
d_128 = degrees(W_128)
residual_128 = np.linalg.norm(laplacian(W_128) @ Y_128[:, 1] - lambdas_128[1] * d_128 * Y_128[:, 1]) / np.linalg.norm(d_128 * Y_128[:, 1])
print(f"lambda_1 = {lambdas_128[1]:.3e}; relative residual {residual_128:.1e}; y_1^T D 1 = {Y_128[:, 1] @ d_128:.1e}; "
      f"Ncut of the split = {ncut_128:.4f}, |A| = {split_128.sum()}")
assert time_total < 10, f"the segmentation took {time_total:.1f} s"
assert residual_128 < 1e-3 and abs(Y_128[:, 1] @ d_128) < 1e-6 and ncut_128 < 0.01

fig, axes = plt.subplots(1, 4, figsize=(14, 3.4))
axes[0].imshow(camera_128[0], cmap="gray")
axes[0].set_title("camera, 128 x 128")
axes[1].imshow(y1_128.reshape(128, 128), cmap="RdBu_r")
axes[1].set_title("y_1")
thresholds_128 = np.linspace(y1_128.min(), y1_128.max(), 34)[1:-1]
axes[2].plot(thresholds_128, ncut_threshold_curve(W_128, y1_128, thresholds_128), "o-", ms=3)
axes[2].set(xlabel="t", ylabel="Ncut", yscale="log", title="the threshold search")
axes[3].imshow(camera_128[0], cmap="gray")
axes[3].contour(split_128.reshape(128, 128), levels=[0.5], colors="r")
axes[3].set_title(f"split: Ncut {ncut_128:.4f}")
for ax in axes[[0, 1, 3]]:
    ax.axis("off")
plt.show()

# %% [markdown]
# ### D.4 The eigenvectors as images (optional deep dive)
#
# The paper's Figure 3 shows eigenvectors 2 to 9 of a photo (counting from 1; our $y_1, \dots, y_8$), here $y_1, \dots, y_9$. Each $y_k$ minimises the quotient orthogonally (in the $D$ inner product) to
# the earlier ones (A.3's argument again), so the later ones cut the image in further ways; many of them are smooth ramps,
# which a threshold does not split well: the paper calls such eigenvectors *unstable*, and measures it by the histogram test
# `eigenvector_stability` (the ratio of the smallest to the largest bin count of a 20-bin histogram: near 0 for a clean
# two-level vector, near 1 for a ramp). On this photo every eigenvector is peaked (most pixels share a few values), so the
# ratios all come out small; the test tells ramps from steps, not good splits from bad ones.

# %%
gallery_image = load_resized("camera", cfg.gallery_size)
scale = cfg.gallery_size / 128                              # keep the graph's reach the same fraction of the image
W_gallery = image_affinity(gallery_image, sigma_i=0.1, sigma_x=4.0 * scale, radius=max(5 * scale, 2.0))
lambdas_gallery, Y_gallery = ncut_eigenvectors(W_gallery, k=10)
fig, axes = plt.subplots(2, 5, figsize=(14, 6.6))
axes[0, 0].plot(np.arange(10), lambdas_gallery, "o-")
axes[0, 0].set(title="lambda_0 ... lambda_9", xlabel="index")
for index, ax in enumerate(axes.flat[1:], start=1):
    eigenvector = Y_gallery[:, index].reshape(cfg.gallery_size, cfg.gallery_size)
    limit = np.quantile(np.abs(eigenvector), 0.99)          # a few extreme pixels would wash out the colour scale
    ax.imshow(eigenvector, cmap="RdBu_r", vmin=-limit, vmax=limit)
    ax.set_title(f"y_{index}: lambda {lambdas_gallery[index]:.1e}\nstability {eigenvector_stability(eigenvector):.2f}", fontsize=9)
    ax.axis("off")
plt.show()
gram = Y_gallery.T @ (degrees(W_gallery)[:, None] * Y_gallery)  # (10, 10) should be the identity: D-orthonormal
print(f"max |Y^T D Y - I| = {np.abs(gram - np.eye(10)).max():.1e}")
assert np.abs(gram - np.eye(10)).max() < 1e-4
ramp = np.linspace(0, 1, 4096)                              # a smooth ramp, and a noisy two-level vector
two_level = np.where(np.arange(4096) < 2500, 0.0, 1.0) + 0.01 * np.random.default_rng(0).standard_normal(4096)
print(f"stability of a linear ramp {eigenvector_stability(ramp):.2f}, of a two-level vector {eigenvector_stability(two_level):.2f}")
assert eigenvector_stability(ramp) > 0.5 and eigenvector_stability(two_level) < 0.05
gallery_stability = [eigenvector_stability(Y_gallery[:, index]) for index in range(1, 10)]
print(f"stability of y_1 ... y_9 on the photo: at most {max(gallery_stability):.2f}")
assert max(gallery_stability) < 0.2  # every one of them peaked, as the text says

# %% [markdown]
# ### D.5 Widgets: the affinity scales and the threshold
#
# Move $\sigma_I$ (how different two intensities may be and still be "alike"), $\sigma_X$ and $r$ (how far the graph reaches), and the
# threshold. Small $\sigma_I$ cuts along every edge of the image and, at the extreme, disconnects it (C.7): Ncut then isolates a
# small clump of odd pixels. Large $\sigma_I$ ignores the image and cuts along the geometry (a straight line). The eigenvector is
# cached per setting, so moving only the threshold is instant. Image: `cfg.gallery_size` pixels square.

# %%
@functools.lru_cache(maxsize=32)
def cached_eigenvector(name, sigma_i, sigma_x, radius):
    image = load_resized(name, cfg.gallery_size)
    W = image_affinity(image, sigma_i=sigma_i, sigma_x=sigma_x, radius=radius)
    return image, W, ncut_eigenvectors(W, k=2)[1][:, 1]


def draw_ncut(axes, name, sigma_i, sigma_x, radius, mode, manual_t):
    image, W, y1 = cached_eigenvector(name, sigma_i, sigma_x, radius)
    size = cfg.gallery_size
    if mode == "manual":
        t = y1.min() + manual_t * (y1.max() - y1.min())
        split, _, value = ncut_bipartition(W, t, y1=y1)
    else:
        split, _, value = ncut_bipartition(W, mode, y1=y1)
        t = y1[split].min() if mode == "search" else (0.0 if mode == "zero" else float(np.median(y1)))
    shown = image.permute(1, 2, 0).squeeze(-1).numpy()
    axes[0].imshow(shown, cmap="gray")
    axes[0].contour(split.reshape(size, size), levels=[0.5], colors="r")
    axes[0].set_title(f"Ncut = {value:.4f}, |A| = {split.sum()}", fontsize=9)
    axes[1].imshow(y1.reshape(size, size), cmap="RdBu_r")
    axes[1].set_title(f"y_1 (stability {eigenvector_stability(y1):.2f})", fontsize=9)
    candidates = np.linspace(y1.min(), y1.max(), 34)[1:-1]
    axes[2].semilogy(candidates, ncut_threshold_curve(W, y1, candidates), ".-")
    axes[2].axvline(t, color="r")
    axes[2].set(xlabel="threshold t", title="Ncut of the split at t")
    axes[3].hist(y1, bins=60)
    axes[3].axvline(t, color="r")
    axes[3].set(title="histogram of y_1")
    for ax in axes[:2]:
        ax.axis("off")


course_lib.core.widgets.interactive_figure(
    draw_ncut, ncols=4, figsize=(15, 3.6),
    name=ipywidgets.Dropdown(options=["camera", "coins", "horse", "chelsea", "astronaut", "coffee"], value="camera",
                             description="image"),
    sigma_i=ipywidgets.FloatLogSlider(value=0.1, base=10, min=-2, max=0, step=0.1, description="sigma_I"),
    sigma_x=ipywidgets.FloatSlider(value=4.0, min=1.0, max=12.0, step=0.5, description="sigma_X"),
    radius=ipywidgets.FloatSlider(value=4.0, min=1.5, max=8.0, step=0.5, description="radius r"),
    mode=ipywidgets.ToggleButtons(options=["search", "zero", "median", "manual"], value="search", description="threshold"),
    manual_t=ipywidgets.FloatSlider(value=0.5, min=0.01, max=0.99, step=0.01, description="manual t"))

# %% [markdown]
# Things to try: `coins` (each coin is nearly its own component: the first cut takes one coin), `astronaut` and `coffee` at
# $\sigma_I = 0.1$ (a tiny, nearly disconnected clump wins: raise $\sigma_I$ to 0.3 and the split becomes a region), the threshold at
# "zero" on `camera` (compare its Ncut with the search's).
#
# ### D.6 Recursive two-way cuts
#
# The paper's grouping algorithm: split, then split each part again on its own subgraph, and stop when the best split's
# Ncut exceeds a threshold (or a part is too small, or its eigenvector unstable). `course_lib.topics.spectral.recursive_ncut` does
# this; its threshold search skips thresholds that would leave fewer than `min_size` pixels on a side, so a clump of a few odd
# pixels is not taken for a region. The stopping threshold `max_ncut` matters most, and the cell runs both photos at two
# values: 0.01 (the left pair of panels) and 0.03 (the right pair). Ncut weighs the length of a boundary against the volumes it separates, not
# only the contrast across it, so a uniform region is cheap to cut wherever it is narrow: on `camera` the sky is narrowest
# above the man's head, and a short vertical line there cuts it for an Ncut of about 0.012, less than 0.03 but more than 0.01.
# So at 0.01 the sky stays one segment and at 0.03 it is cut in two. On `horse` the horse stays whole at 0.01 and is cut into
# pieces at 0.03, while the white background is cut into pieces at both: it is uniform, and narrow between the legs and at the
# corners. The cell prints the numbers behind each of these sentences. (On `coins` each cut takes off one coin, so it needs a
# recursion as deep as there are coins: try it with `max_depth=30` when you have half a minute.)

# %%
segment_images = {"camera": camera_128, "horse": load_resized("horse", 128)}
thresholds_seg = (0.01, 0.03)
segmentations = {}
fig, axes = plt.subplots(2, 4, figsize=(15, 8))
for row, (name, image) in enumerate(segment_images.items()):
    W_seg = image_affinity(image, sigma_i=0.1, sigma_x=4.0, radius=5)
    for column, max_ncut in enumerate(thresholds_seg):
        start = time.perf_counter()
        segment_labels, tried = recursive_ncut(W_seg, max_ncut=max_ncut, min_size=150, max_depth=6)
        segmentations[name, max_ncut] = segment_labels, tried
        kept = [s for s in tried if s["kept"]]
        print(f"{name}, max_ncut = {max_ncut}: {segment_labels.max() + 1} segments from {len(kept)} kept of {len(tried)} "
              f"tried splits in {time.perf_counter() - start:.1f} s; Ncut of the kept splits "
              f"{', '.join(format(s['ncut'], '.4f') for s in sorted(kept, key=lambda s: s['ncut']))}")
        ax_contour, ax_paint = axes[row, 2 * column], axes[row, 2 * column + 1]
        ax_contour.imshow(image.permute(1, 2, 0).squeeze(-1), cmap="gray")
        ax_contour.contour(segment_labels.reshape(128, 128), levels=np.arange(segment_labels.max()) + 0.5, colors="r",
                           linewidths=0.7)
        ax_contour.set_title(f"{name}, max_ncut = {max_ncut}: {segment_labels.max() + 1} segments", fontsize=9)
        ax_paint.imshow(segment_labels.reshape(128, 128), cmap="tab10", vmin=0, vmax=9, interpolation="nearest")
        ax_paint.set_title("the segments, one colour each", fontsize=9)
        assert segment_labels.max() + 1 >= 3 and (segment_labels >= 0).all()
for ax in axes.flat:
    ax.axis("off")
plt.show()


def largest_share(labels):
    """The fraction of the given pixels that carry their most common label."""
    return np.bincount(labels).max() / len(labels)


sky = np.zeros((128, 128), dtype=bool)
sky[:20] = True                                              # the top 20 rows: sky, and the top of the man's head
sky = sky.ravel() & (camera_128.reshape(-1).numpy() > 0.5)  # minus the dark head
horse_intensity = segment_images["horse"].reshape(-1).numpy()
horse_pixels = horse_intensity < 0.5                         # the dark horse on its white background
sky_shares = [largest_share(segmentations["camera", t][0][sky]) for t in thresholds_seg]
horse_shares = [largest_share(segmentations["horse", t][0][horse_pixels]) for t in thresholds_seg]
only_at_03 = [s["ncut"] for s in segmentations["camera", 0.03][1] if s["kept"] and s["ncut"] >= 0.01]
horse_background = [sum(horse_intensity[labels == s].mean() > 0.5 for s in range(labels.max() + 1))  # light segments
                    for labels in (segmentations["horse", t][0] for t in thresholds_seg)]
print(f"camera, top 20 rows of sky ({sky.sum()} pixels): the largest segment holds {100 * sky_shares[0]:.1f}% of them at "
      f"max_ncut = 0.01, {100 * sky_shares[1]:.1f}% at 0.03; the split kept at 0.03 but not at 0.01 has Ncut "
      f"{', '.join(format(v, '.4f') for v in only_at_03)}")
print(f"horse ({horse_pixels.sum()} dark pixels): the largest segment holds {100 * horse_shares[0]:.1f}% of them at 0.01, "
      f"{100 * horse_shares[1]:.1f}% at 0.03; the white background is cut into {horse_background[0]} segments at 0.01, "
      f"{horse_background[1]} at 0.03")
assert sky_shares[0] > 0.95 and sky_shares[1] < 0.8 and all(0.01 <= v < 0.03 for v in only_at_03) and len(only_at_03) >= 1
assert horse_shares[0] > 0.95 and horse_shares[1] < 0.8 and min(horse_background) >= 3

# %% [markdown]
# ### D.7 Compared with scikit-learn's spectral clustering, if it is installed (optional deep dive)
#
# scikit-learn is not a dependency of this course; if it happens to be installed, its `spectral_clustering` (a K-way
# method: several eigenvectors of the normalized affinity, then k-means) is run on the same $W$ with two clusters, and its split
# compared with ours.

# %%
try:
    from sklearn.cluster import spectral_clustering
except ImportError:
    print("scikit-learn is not installed (it is not a course dependency): comparison skipped. "
          "`pip install scikit-learn` and re-run this cell to see it.")
else:
    start = time.perf_counter()
    sklearn_labels = spectral_clustering(W_128, n_clusters=2, eigen_solver="arpack", random_state=0)
    agreement = max((sklearn_labels == split_128).mean(), (sklearn_labels != split_128).mean())
    print(f"scikit-learn spectral_clustering: {time.perf_counter() - start:.1f} s; agrees with our split on {100 * agreement:.1f}% "
          f"of the pixels; its Ncut {ncut_value(W_128, sklearn_labels == 1):.4f} against ours {ncut_128:.4f}")

# %% [markdown]
# ---
# ## E. Exercises
#
# Each exercise cell below holds a working solution; in the student version it is replaced by a stub. Write your own,
# run the check cell, and reveal the reference only when stuck.
#
# **Exercise 1: Ncut of a partition.** Write `my_ncut(W, mask)` for a dense affinity `W` (N, N) (a float64 tensor) and a boolean
# `mask` (N,) (True = in $A$), returning $\operatorname{Ncut}(A, B)$ as a 0-dimensional tensor. Use only the definitions of B.2.

# %% tags=["exercise"]
def my_ncut(W, mask):
    """Ncut(A, B) = cut / assoc(A, V) + cut / assoc(B, V) for a dense W (N, N) and a bool mask (N,)."""
    ### BEGIN SOLUTION
    a, b = mask.double(), (~mask).double()
    cut_ab = a @ W @ b
    return cut_ab / (a @ W).sum() + cut_ab / (b @ W).sum()
    ### END SOLUTION


# %%
generator = seed_everything(6)
ncut_inputs = []
for n_nodes in (5, 12, 40):
    W_ex = torch.rand(n_nodes, n_nodes, generator=generator, dtype=torch.float64)
    W_ex = (W_ex + W_ex.T) / 2
    W_ex.fill_diagonal_(0)
    ncut_inputs.append((W_ex, torch.arange(n_nodes) % 3 == 0))
ncut_inputs.append((torch.tensor(W_points), torch.from_numpy(masks_12[int(np.argmin(ncuts_12))])))
course_lib.core.check.check_function(my_ncut, lambda W, mask: torch.tensor(ncut_value(W, mask), dtype=torch.float64),
                                ncut_inputs, rtol=1e-10, atol=1e-12)

# %%
course_lib.core.check.show_solution(course_lib.topics.spectral.ncut_value)

# %% [markdown]
# **Exercise 2: PCA reconstruction.** Given data `x` (n, d) and a fitted `PCA` (its `mean` (d,) and `components` (d, k_max)),
# return the reconstruction from the first `k` components, $\bar x + V_k V_k^\top (x - \bar x)$, shape (n, d).

# %% tags=["exercise"]
def my_reconstruct(x, fitted, k):
    """mean + V_k V_k^T (x - mean): (n, d)."""
    ### BEGIN SOLUTION
    V_k = fitted.components[:, :k]                          # (d, k)
    return fitted.mean + (x - fitted.mean) @ V_k @ V_k.T
    ### END SOLUTION


# %%
reconstruct_inputs = [(test_digits, fitted, k) for k in (0, 1, 30, 784)]
course_lib.core.check.check_function(my_reconstruct, pca_reconstruct, reconstruct_inputs, rtol=1e-8, atol=1e-10)

# %%
course_lib.core.check.show_solution(course_lib.topics.spectral.pca_reconstruct)

# %% [markdown]
# **Exercise 3: the relaxed Ncut value.** Write `my_lambda_1(W)` returning $\lambda_1$, the second-smallest eigenvalue of
# $(D - W) y = \lambda D y$, for a dense `W` (N, N) (a float64 tensor), as a 0-dimensional tensor. Go through $L_{\text{sym}}$ and
# `torch.linalg.eigvalsh`.

# %% tags=["exercise"]
def my_lambda_1(W):
    """Second-smallest eigenvalue of L_sym = I - D^{-1/2} W D^{-1/2}."""
    ### BEGIN SOLUTION
    inv_sqrt_d = W.sum(1).rsqrt()                           # (N,)
    L_sym = torch.eye(len(W), dtype=W.dtype) - inv_sqrt_d[:, None] * W * inv_sqrt_d[None, :]
    return torch.linalg.eigvalsh(L_sym)[1]
    ### END SOLUTION


# %%
lambda_inputs = [W for W, _ in ncut_inputs]
course_lib.core.check.check_function(my_lambda_1, lambda W: torch.tensor(ncut_eigenvectors(W, k=2)[0][1], dtype=torch.float64),
                                lambda_inputs, rtol=1e-8, atol=1e-10)

# %%
course_lib.core.check.show_solution(course_lib.topics.spectral.ncut_eigenvectors)

# %% [markdown]
# **Exercise 4: counting components from the spectrum.** Write `my_count_components(W)` for a sparse affinity: the number
# of generalized eigenvalues below `1e-9` (C.7), computed with `ncut_eigenvectors(W, k=...)` for a large enough `k`, returned
# as a 0-dimensional int64 tensor. The check compares it with `scipy.sparse.csgraph.connected_components` on pixel graphs of the
# two-object image at two $\sigma_I$ and on a three-object image.

# %% tags=["exercise"]
def my_count_components(W, max_components=8):
    """Multiplicity of the eigenvalue 0 of (D - W) y = lambda D y (at most max_components - 1 are told apart)."""
    ### BEGIN SOLUTION
    lambdas, _ = ncut_eigenvectors(W, k=max_components)
    return torch.tensor(int((lambdas < 1e-9).sum()))
    ### END SOLUTION


# %%
component_inputs = [image_affinity(two_objects, sigma_i=s, sigma_x=3.0, radius=3) for s in (0.01, 0.3)]
three_objects = two_objects.clone()
three_objects[14:20, 2:8] = 0.9                            # far (> r) from the other bright square
component_inputs.append(image_affinity(three_objects, sigma_i=0.01, sigma_x=3.0, radius=3))
course_lib.core.check.check_function(
    my_count_components,
    lambda W: torch.tensor(scipy.sparse.csgraph.connected_components(W, directed=False)[0]),
    component_inputs)

# %%
course_lib.core.check.show_solution('''def my_count_components(W, max_components=8):
    lambdas, _ = ncut_eigenvectors(W, k=max_components)   # smallest generalized eigenvalues, ascending
    return torch.tensor(int((lambdas < 1e-9).sum()))        # each connected component adds one zero''')

# %% [markdown]
# **Exercise 5: PCA without centring.** *Predict, then run.* Suppose you forget the centring of A.1 and take the top
# eigenvector $u_1$ of the second-moment matrix $\frac{1}{n} X^\top X$ instead of the covariance $S$. Before you run the cell, predict:
# (a) what $u_1$ looks like as an image, and its $\lvert \cos \rvert$ with the mean digit $\bar x$: near 0, near 0.5 or near 1? (b) Is its
# eigenvalue close to $\lambda_1$ of $S$, or much larger? Write your answers into `MY_PREDICTION`, then run the experiment.
# (Hint for checking your reasoning afterwards: $\frac{1}{n} X^\top X = S + \bar x \bar x^\top$.)

# %%
MY_PREDICTION = {"abs cos with the mean digit": None, "top eigenvalue / lambda_1": None}  # fill in before running

# %%
second_moment = X.T @ X / len(X)                            # (784, 784), no centring
moment_values, moment_vectors = torch.linalg.eigh(second_moment)  # ascending
u_1 = moment_vectors[:, -1]                                 # (784,) top eigenvector
cos_with_mean = abs(u_1 @ x_mean / x_mean.norm()).item()
print(f"your prediction: {MY_PREDICTION}")
print(f"measured: |cos(u_1, mean digit)| = {cos_with_mean:.4f}; top eigenvalue {moment_values[-1]:.2f} = "
      f"{moment_values[-1] / eigenvalues[0]:.1f} x lambda_1 of S ({eigenvalues[0]:.2f}); |mean digit|^2 = {x_mean @ x_mean:.2f}")
assert torch.allclose(second_moment, S + torch.outer(x_mean, x_mean))
fig, axes = plt.subplots(1, 3, figsize=(7, 2.6))
for ax, image, title in zip(axes, (u_1 * u_1.sum().sign(), x_mean, fitted.components[:, 0]),
                            ("u_1 of X^T X / n", "mean digit", "w_1 of S (centred)")):
    ax.imshow(image.reshape(28, 28), cmap="RdBu_r", vmin=-image.abs().max(), vmax=image.abs().max())
    ax.set_title(title, fontsize=9)
    ax.axis("off")
plt.show()

# %% [markdown]
# Without centring, the "first component" is the mean digit (the direction in which every digit has a lot of ink) and
# its eigenvalue is mostly $\lVert \bar x \rVert^2$: it says where digits *are*, not how they *differ*. Centring removes it, and
# the components of A then describe the variation around the mean.

# %% [markdown]
# ---
# ## Summary
#
# | key equation | derived in | checked by |
# |---|---|---|
# | $R_S(w) = \frac{w^\top S w}{w^\top w} = \frac{\sum_i \lambda_i c_i^2}{\sum_i c_i^2}$, maximised by $w_1$; $\lambda_k$ is the maximum orthogonal to $w_1, \dots, w_{k-1}$ | A.1, A.2, A.3 | autograd and power iteration in A.2, random directions and subspaces in A.3 |
# | $\frac{1}{n}\sum_n \lVert x_n - \hat x_n \rVert^2 = \sum_{i > k} \lambda_i$, and no $k$-dimensional subspace does better (Ky Fan) | A.5 | the measured error for four values of k, and 200 random subspaces, in A.5 |
# | $v^\top L v = \frac{1}{2}\sum_{ij} w_{ij} (v_i - v_j)^2 \ge 0$ and $\operatorname{Ncut} = 2 - \operatorname{Nassoc}$ | B.1, B.2 | a random graph, and one with a negative weight, in B.1 and B.2 |
# | $\operatorname{Ncut}(A, B) = \frac{y^\top (D - W) y}{y^\top D y}$ for $y = 2(\mathbf{1}_A - b\, \mathbf{1}_B)$, with $y^\top D \mathbf{1} = 0$ | C.1 | three partitions of the 12-point graph in C.1 |
# | relaxed: $(D - W)\, y = \lambda D y$, minimised by $y_1$, so $\lambda_1 \le \min \operatorname{Ncut}$ | C.2 | brute force over 2,047 partitions and random graphs in C.3 |
#
# **Three things to remember.**
#
# 1. In the eigenbasis a Rayleigh quotient is a weighted average of the eigenvalues; that one line gives PCA's components,
#    its reconstruction error $\sum_{i > k} \lambda_i$, and the relaxed Ncut's minimiser.
# 2. Ncut normalises the cut by each side's total connection, so cutting off a lone node costs more than 1; the trivial
#    eigenvector $y_0 = \mathbf{1}$ is excluded by the constraint $y^\top D \mathbf{1} = 0$, and $y_1$ is the exact minimiser of the relaxed problem.
# 3. The relaxation is the only approximation: threshold $y_1$ by searching for the smallest actual Ncut, and read a
#    nearly two-valued $y_1$ (and a split whose Ncut is close to $\lambda_1$) as a sign the relaxation was tight.

# %% [markdown]
# ---
# ## F. Discussion questions
#
# 1. PCA maximises a Rayleigh quotient and Ncut minimises one. In PCA the top eigenvector is the answer; in Ncut the
#    bottom one is discarded. What is the discarded vector in each case, and which constraint removes it?
# 2. $\lambda_1 \le \min \operatorname{Ncut}$ always, and C.3 showed the gap is small for clustered graphs and large for uniform ones. What property of
#    $y_1$ (look at its histogram, D.2 and the widget of D.5) tells you, without brute force, that the relaxation is nearly tight?
# 3. The minimum cut isolates single nodes; Ncut does not (B.3). Does the *average* cut (cut/|A| + cut/|B|) have the same
#    protection? Construct a graph where minimum average cut and minimum Ncut disagree.
# 4. In the widget, make $\sigma_I$ small until the first cut isolates a few pixels. Explain it with C.7, then explain why raising
#    $\sigma_X$ or $r$ helps less than raising $\sigma_I$.
# 5. Chapter 05 builds the same graph on a ViT's patch features instead of pixel intensities. What does a good feature space
#    buy over the $(F, X)$ affinity of D.1, and what does the $8 \times 8$ patch grid cost?
