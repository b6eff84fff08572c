# ---
# jupyter:
#   course:
#     time_on_cpu:
#       ci:
#         machine: 2 CPU cores, no GPU, otherwise idle
#         measured: '2026-12-05'
#         seconds: 4
#       cpu:
#         machine: 2 CPU cores, no GPU, otherwise idle
#         measured: '2026-12-05'
#         seconds: 5
#       gpu:
#         note: nothing trains in this chapter; a GPU changes nothing
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
# # 16 · Camera geometry: the pinhole, distortion, one view and two views
#
# An image is the projection of the 3-D world onto a 2-D plane. This chapter writes that projection down exactly, as one
# $3 \times 4$ matrix, $x \simeq K [R \mid t] X$, and then uses it three ways: to undo a lens's radial distortion, to measure
# heights from a single photo (vanishing points, the horizon and the cross-ratio), and to relate two photos of the same
# scene (the essential and fundamental matrices, and the normalised eight-point algorithm that estimates them). Every
# scene is synthetic with known geometry, so every equation is checked against the truth by number.
#
# **Goals.** After this chapter you can
# - write the pinhole projection with homogeneous coordinates, name the five intrinsic and six extrinsic parameters, and
#   compute a projection both as $K [R \mid t] X$ and step by step (camera frame, divide by depth, pixels);
# - state the radial distortion model $x_d = x_u (1 + k_1 r^2 + k_2 r^4)$, say why $k_1 < 0$ is barrel and $k_1 > 0$
#   pincushion (magnification *as a function of the distance from the optical axis*), and undistort by fixed-point iteration;
# - compute vanishing points $v \simeq K R d$ and the horizon $l \simeq K^{-\top} R n$, and measure an object's height from one
#   image with a reference height and the cross-ratio;
# - derive $E = [t]_\times R$ and $F = K_2^{-\top} E K_1^{-1}$ from $x_2^\top F x_1 = 0$, draw epipolar lines, and estimate $F$ with
#   Hartley's normalised eight-point algorithm, with the rank-2 constraint enforced by an SVD;
# - measure, not just assert, why the normalisation matters when the correspondences are noisy.
#
# **Prerequisites.** Chapter 01 (tensors, the linear algebra of torch) and chapter 02 (eigenvectors and the SVD; the
# smallest singular vector as the least-squares solution of $A f = 0$ with $\lVert f \rVert = 1$). The cross product and
# $3 \times 3$ rotations. Chapter 00 (profiles, widgets).
#
# **Time.** One study-group session of about 90 minutes (A to C), a second of about 60 minutes (D, the summary and the
# discussion), and about 40 minutes of exercises at home. The session plan, the answers to the discussion questions and
# where groups stall are in [facilitator/16_camera_geometry.md](facilitator/16_camera_geometry.md).
#
# **Core path.** See it work first, A.1-A.3, B.1, B.2, C.1-C.3, D.1-D.4, the summary and the discussion: about 130 min.
# The optional deep dives C.4 (why the cross-ratio is invariant) and D.5 (the epipoles and rank 2) add about 20 min; a
# first reading can skip their text, but run their cells (Run All does).
#
# **What runs, and how long** (the whole chapter, top to bottom, on a fresh kernel; `ci` with 1 torch thread as the
# test suite runs it, `cpu` with torch's default threads; `make time PROFILE=ci` or `PROFILE=cpu` measures it and
# writes the time here, in the notebook's metadata and in the README):
#
# | profile | what changes | measured |
# |---|---|---|
# | `ci` | nothing trains; 20 noise seeds for the eight-point comparison and the height measurement | 4 s, measured 2026-12-05 on 2 CPU cores, no GPU, otherwise idle |
# | `cpu` | nothing trains; 200 noise seeds | 5 s, measured 2026-12-05 on 2 CPU cores, no GPU, otherwise idle |
# | `gpu` | the same as `cpu` | not measured: nothing trains in this chapter; a GPU changes nothing |
#
# Nothing here trains, so there is no checkpoint: every number is computed in the chapter from synthetic scenes. Set the
# profile before starting JupyterLab: `COURSE_PROFILE=ci`, `cpu` or `gpu`.

# %%
import math
import time

import ipywidgets
import matplotlib.pyplot as plt
import torch

import course_lib
import course_lib.core.check
import course_lib.core.widgets
import course_lib.topics.camera
from course_lib import per_profile, profile, seed_everything
from course_lib.topics.camera import (distort, eight_point, epipolar_lines, epipoles, from_homogeneous, fundamental,
                                      hartley_normalisation, height_from_reference, house, intersect, intrinsics,
                                      line_through, look_at, orbit_camera, project, skew, symmetric_epipolar_distance,
                                      to_homogeneous, undistort, vanishing_line, vanishing_point)

torch.set_default_dtype(torch.float64)  # geometry in float64: the eight-point algorithm squares pixel coordinates
generator = seed_everything(0)
cfg = per_profile(ci=dict(n_seeds=20), cpu=dict(n_seeds=200), gpu=dict(n_seeds=200))
WIDTH, HEIGHT = 640, 480  # the image size of every synthetic camera, pixels
print(f"profile = {profile()}, torch threads = {torch.get_num_threads()}; {cfg}")


def draw_image_frame(ax, title):
    """Axes set up as a 640 x 480 image: row 0 at the top."""
    ax.set_xlim(0, WIDTH)
    ax.set_ylim(HEIGHT, 0)
    ax.set_aspect("equal")
    ax.set_title(title, fontsize=10)


def draw_house(ax, pixels, edges, **style):
    for i, j in edges:
        ax.plot(pixels[[i, j], 0], pixels[[i, j], 1], **{"color": "k", "lw": 1, **style})


# %% [markdown]
# ## See it work first
#
# Two photos of a house and some scattered points, taken by two synthetic cameras a few metres apart. From 60 matched
# points, each moved by 1 pixel of Gaussian noise, the normalised eight-point algorithm estimates the fundamental matrix $F$;
# each coloured line in the right image is the **epipolar line** $F x_1$ of the point of the same colour in the left image:
# wherever that point's depth is, its match must lie on the line. The printed distance says how close the matches are.
# By the end of this chapter you will have derived and built this.

# %%
start = time.perf_counter()
K = intrinsics(500.0, cx=320.0, cy=240.0)                   # (3, 3) the same camera for both views
corners, edges, house_points = house()                        # (10, 3), 17 edges, (204, 3)
scatter = torch.rand(60, 3, generator=generator) * torch.tensor([4.0, 3.0, 2.0]) + torch.tensor([-2.0, -1.5, 0.0])
R1, t1 = look_at((-1.5, -7.0, 1.5), (0.0, 0.0, 0.8))          # camera 1
R2, t2 = look_at((1.8, -6.5, 2.2), (0.0, 0.0, 0.8))           # camera 2, 3.4 m to the right and a bit higher
x1, _ = project(K, R1, t1, scatter)                           # (60, 2) true pixels in view 1
x2, _ = project(K, R2, t2, scatter)                           # (60, 2) in view 2
noisy1 = x1 + torch.randn(x1.shape, generator=generator)      # 1 pixel of noise on every coordinate
noisy2 = x2 + torch.randn(x2.shape, generator=generator)
F_seen = eight_point(noisy1, noisy2)                          # (3, 3) estimated from the noisy matches
distance_seen = symmetric_epipolar_distance(F_seen, x1, x2)
print(f"eight-point F from 60 noisy matches in {1000 * (time.perf_counter() - start):.0f} ms; the true matches lie "
      f"{distance_seen:.2f} pixels from their epipolar lines on average")
assert distance_seen < 2.0

fig, (ax_1, ax_2) = plt.subplots(1, 2, figsize=(12, 4.4), layout="constrained")
colours = plt.cm.tab10(range(8))
for ax, R, t, x, title in ((ax_1, R1, t1, noisy1, "view 1: points x_1"), (ax_2, R2, t2, noisy2, "view 2: lines F x_1")):
    draw_image_frame(ax, title)
    draw_house(ax, project(K, R, t, corners)[0], edges, color="0.6")
    ax.scatter(x[8:, 0], x[8:, 1], s=6, c="0.5")
    ax.scatter(x[:8, 0], x[:8, 1], s=30, c=colours, edgecolors="k", zorder=3)
us = torch.tensor([0.0, WIDTH])
for line, colour in zip(epipolar_lines(F_seen, noisy1[:8]), colours):  # a x + b y + c = 0
    ax_2.plot(us, -(line[0] * us + line[2]) / line[1], color=colour, lw=1)
plt.show()

# %% [markdown]
# ---
# ## A. The pinhole camera
#
# The whole camera in one picture; this section derives each arrow.

# %%
fig = course_lib.topics.camera.schematic()
plt.show()

# %% [markdown]
# ### A.1 Homogeneous coordinates and the projection $x \simeq K [R \mid t] X$
#
# A pinhole camera sends the ray from a 3-D point through the pinhole (the **centre of projection**) onto an image plane.
# Put the camera's own frame at the pinhole: $x_c$ to the right, $y_c$ down, $z_c$ forward along the optical axis. A world
# point $X$ (metres, world frame, $z$ up) is first moved into the camera frame by a rotation $R$ and a translation $t$:
#
# $$
# X_c = R X + t = (x_c, y_c, z_c) .
# $$
#
# The image plane at distance 1 in front of the pinhole meets the ray at the **normalised coordinates**, by similar triangles
#
# $$
# \hat x = \frac{x_c}{z_c}, \qquad \hat y = \frac{y_c}{z_c} ,
# $$
#
# and the sensor turns them into pixels with focal lengths $f_x, f_y$ (in pixels), a skew $s$ and the principal point $(c_x, c_y)$:
#
# $$
# u = f_x \hat x + s \hat y + c_x, \qquad v = f_y \hat y + c_y .
# $$
#
# The division by $z_c$ is what makes projection non-linear. **Homogeneous coordinates** remove it: represent a 2-D point
# $(u, v)$ by any $(w u, w v, w)$ with $w \neq 0$, and a 3-D point by $(X, Y, Z, 1)$; "$\simeq$" means equal up to a non-zero
# factor. Then the three steps are one matrix product followed by one division:
#
# $$
# \begin{pmatrix} w u \\ w v \\ w \end{pmatrix} = \underbrace{\begin{pmatrix} f_x & s & c_x \\ 0 & f_y & c_y \\ 0 & 0 & 1 \end{pmatrix}}_{K}
# \big[\, R \mid t \,\big] \begin{pmatrix} X \\ 1 \end{pmatrix}, \qquad w = z_c ,
# $$
#
# since $[R \mid t] (X, 1)^\top = X_c$ and $K X_c = z_c (u, v, 1)^\top$. The $3 \times 4$ matrix $P = K [R \mid t]$ is the **camera matrix**.
# The check: project the house both ways, and confirm that the third homogeneous coordinate is the depth.

# %%
R_a, t_a = orbit_camera(yaw=0.5, distance=6.0)               # (3, 3), (3,)
pixels, depths = project(K, R_a, t_a, house_points)           # (204, 2), (204,) via K [R | t]
X_c = house_points @ R_a.T + t_a                               # (204, 3) step 1: the camera frame
normalised = X_c[:, :2] / X_c[:, 2:]                           # (204, 2) step 2: divide by the depth
step_by_step = normalised @ K[:2, :2].T + K[:2, 2]             # (204, 2) step 3: focal lengths, skew, principal point
print(f"max |K[R|t]X - step by step| = {(pixels - step_by_step).abs().max():.2e} pixels; depths from "
      f"{depths.min():.2f} to {depths.max():.2f} m (all in front of the camera)")
assert torch.allclose(pixels, step_by_step, atol=1e-9)
assert torch.allclose(depths, X_c[:, 2]) and (depths > 0).all()

# %% [markdown]
# ### A.2 Intrinsics $K$ and extrinsics $[R \mid t]$
#
# $K$ has five numbers and describes the camera itself: $f_x, f_y$ (the focal length $f$ in metres times the pixels per metre
# along each axis, so $f_x \neq f_y$ for non-square pixels), the skew $s$ (zero for every modern sensor) and the principal point
# $(c_x, c_y)$, the pixel where the optical axis pierces the image (near the image centre). $[R \mid t]$ has six (three for the
# rotation, three for the translation) and describes where the camera is. The camera's centre $C$ is the world point that
# maps to $X_c = 0$: $R C + t = 0$, so
#
# $$
# C = -R^\top t .
# $$
#
# `look_at(eye, target)` builds $R$ from the camera's three axes written in world coordinates as its rows (right, down,
# forward), and $t = -R\,\text{eye}$. The checks: $R$ is a rotation, the camera centre is the eye, the target lands on the
# principal point, doubling $f$ doubles every pixel's distance from the principal point, and a skew shears $u$ by $s \hat y$.

# %%
eye = torch.tensor([3.0, -5.0, 2.0])
R_b, t_b = look_at(eye, (0.0, 0.0, 0.5))
target_pixel, _ = project(K, R_b, t_b, torch.tensor([[0.0, 0.0, 0.5]]))
K_long = intrinsics(1000.0, cx=320.0, cy=240.0)
K_skew = intrinsics(500.0, cx=320.0, cy=240.0, skew=50.0)
p_short, _ = project(K, R_b, t_b, house_points)
p_long, _ = project(K_long, R_b, t_b, house_points)
p_skew, _ = project(K_skew, R_b, t_b, house_points)
n_hat = (house_points @ R_b.T + t_b)
n_hat = n_hat[:, :2] / n_hat[:, 2:]                            # (204, 2) normalised coordinates
principal = K[:2, 2]
print(f"R R^T = I: {torch.allclose(R_b @ R_b.T, torch.eye(3))}, det R = {torch.det(R_b):.6f}; camera centre "
      f"-R^T t = {(-R_b.T @ t_b).tolist()}; the target lands on pixel {target_pixel[0].tolist()}")
assert torch.allclose(-R_b.T @ t_b, eye) and abs(torch.det(R_b) - 1) < 1e-12
assert torch.allclose(target_pixel[0], principal)
assert torch.allclose(p_long - principal, 2 * (p_short - principal))
assert torch.allclose(p_skew[:, 0] - p_short[:, 0], 50.0 * n_hat[:, 1]) and torch.allclose(p_skew[:, 1], p_short[:, 1])

# %% [markdown]
# ### A.3 Moving the camera
#
# The widget puts the camera on a circle around the house (the yaw angle, and the distance), at a height of 1.5 m, and sets
# the focal length. Left: the scene from above with the camera and its field of view; right: the image. Things to try:
# walk closer and shorten the focal length together, keeping the house the same size in the image: the perspective changes
# (the near corner grows against the far one; photographers call it the *dolly zoom*), because the depths' *ratios* change
# while $f$ only scales the image.

# %%
def draw_camera(axes, yaw_degrees, distance, focal):
    ax_top, ax_image = axes
    R, t = orbit_camera(math.radians(yaw_degrees), distance)
    K_w = intrinsics(focal, cx=320.0, cy=240.0)
    centre = -R.T @ t
    ax_top.plot(corners[[0, 1, 2, 3, 0], 0], corners[[0, 1, 2, 3, 0], 1], "k-")
    half_angle = math.atan(WIDTH / 2 / focal)                  # the horizontal field of view, halved
    forward = R[2, :2] / R[2, :2].norm()
    for sign in (-1, 1):
        c, s = math.cos(sign * half_angle), math.sin(sign * half_angle)
        ray = torch.stack([c * forward[0] - s * forward[1], s * forward[0] + c * forward[1]])
        ax_top.plot([centre[0], centre[0] + 12 * ray[0]], [centre[1], centre[1] + 12 * ray[1]], "C0--", lw=0.8)
    ax_top.plot(centre[0], centre[1], "C0o")
    ax_top.set_xlim(-12, 12)
    ax_top.set_ylim(-12, 12)
    ax_top.set_aspect("equal")
    ax_top.set_title("from above: house and camera", fontsize=10)
    pixels_w, depths_w = project(K_w, R, t, corners)
    draw_image_frame(ax_image, f"image: f = {focal:.0f} px, depths {depths_w.min():.1f}-{depths_w.max():.1f} m")
    draw_house(ax_image, pixels_w, edges)


course_lib.core.widgets.interactive_figure(
    draw_camera, ncols=2, figsize=(10, 4),
    yaw_degrees=ipywidgets.FloatSlider(value=30.0, min=-180.0, max=180.0, step=5.0, description="yaw (deg)"),
    distance=ipywidgets.FloatSlider(value=6.0, min=2.5, max=11.0, step=0.5, description="distance (m)"),
    focal=ipywidgets.FloatSlider(value=500.0, min=150.0, max=1500.0, step=25.0, description="focal (px)"))

# %% [markdown]
# ---
# ## B. Radial distortion
#
# ### B.1 The model: barrel and pincushion
#
# Real lenses bend straight lines. The usual model acts on the normalised coordinates $x_u = (\hat x, \hat y)$ of A.1, before $K$:
#
# $$
# x_d = x_u \left(1 + k_1 r^2 + k_2 r^4\right), \qquad r^2 = \hat x^2 + \hat y^2 .
# $$
#
# A point moves along its own radius, by a factor $m(r) = 1 + k_1 r^2 + k_2 r^4$ that depends only on its distance $r$ from the
# optical axis. A common reading is "barrel distortion is decreasing magnification, pincushion increasing magnification"; the
# missing words are *with the distance from the optical axis*: the magnification of the whole image does not change, the
# magnification *at radius $r$ relative to the centre* does. With $k_1 < 0$, $m(r)$ falls as $r$ grows, the corners are pulled in
# and a square grid bulges like a barrel; with $k_1 > 0$, $m(r)$ grows, the corners are pushed out and the grid's sides curve
# in like a pincushion. The check: points at $r = 0.5$ move in for $k_1 < 0$ and out for $k_1 > 0$, by exactly $m(r)$, and the
# centre does not move.

# %%
probe = torch.tensor([[0.0, 0.0], [0.3, 0.4], [0.5, 0.0]])    # (3, 2) at r = 0, 0.5, 0.5
for k1 in (-0.3, 0.3):
    moved = distort(probe, k1)
    ratio = moved[1:].norm(dim=1) / probe[1:].norm(dim=1)
    print(f"k1 = {k1:+.1f}: r = 0.5 -> {moved[1].norm():.4f}, magnification m(0.5) = {ratio.tolist()}")
    assert torch.allclose(ratio, torch.tensor(1 + k1 * 0.25)) and torch.allclose(moved[0], probe[0])
assert distort(probe, -0.3)[2].norm() < 0.5 < distort(probe, 0.3)[2].norm()

# %% [markdown]
# The widget distorts a square grid of normalised coordinates ($\hat x, \hat y \in [-0.6, 0.6]$, about a 62° field of view) and
# plots $m(r)$. Move $k_1$ through 0.

# %%
grid_lines = [torch.stack([torch.linspace(-0.6, 0.6, 60), torch.full((60,), c)], dim=1)
              for c in torch.linspace(-0.6, 0.6, 9)]
grid_lines += [line.flip(1) for line in grid_lines]            # the vertical lines too


def draw_distortion(axes, k1):
    ax_grid, ax_m = axes
    for line in grid_lines:
        ax_grid.plot(line[:, 0], line[:, 1], color="0.8", lw=0.8)
        bent = distort(line, k1)
        ax_grid.plot(bent[:, 0], bent[:, 1], color="C3" if k1 > 0 else "C0", lw=1)
    ax_grid.set_aspect("equal")
    kind = "pincushion" if k1 > 0 else "barrel" if k1 < 0 else "no distortion"
    ax_grid.set_title(f"k1 = {k1:+.2f}: {kind} (grey: undistorted)", fontsize=10)
    r = torch.linspace(0, 0.85, 100)
    ax_m.plot(r, 1 + k1 * r ** 2)
    ax_m.axhline(1.0, color="0.6", lw=0.8)
    ax_m.set_ylim(0.6, 1.4)
    ax_m.set_xlabel("distance from the optical axis r")
    ax_m.set_title("magnification m(r) = |x_d| / |x_u|", fontsize=10)


course_lib.core.widgets.interactive_figure(
    draw_distortion, ncols=2, figsize=(10, 4),
    k1=ipywidgets.FloatSlider(value=-0.3, min=-0.5, max=0.5, step=0.05, description="k1"))

# %% [markdown]
# ### B.2 Undistortion by fixed-point iteration
#
# To straighten an image we need the inverse: given $x_d$, find $x_u$ with $x_u\, m(\lVert x_u \rVert) = x_d$. There is no closed form for
# $k_2 \neq 0$, but the equation is already a fixed-point form, $x_u = x_d / m(\lVert x_u \rVert)$, so iterate it from $x_u^{(0)} = x_d$:
#
# $$
# x_u^{(j+1)} = \frac{x_d}{1 + k_1 r_j^2 + k_2 r_j^4}, \qquad r_j = \lVert x_u^{(j)} \rVert .
# $$
#
# Write $x_u = \rho\, e$ along the fixed direction $e = x_d / \lVert x_d \rVert$: the iteration is $\rho \leftarrow g(\rho) = r_d / m(\rho)$, and it
# converges to the fixed point when $\lvert g'(\rho) \rvert = r_d \lvert m'(\rho) \rvert / m(\rho)^2 < 1$ there, i.e. roughly when
# $\lvert 2 k_1 \rvert r^2 < 1$; each iteration then cuts the error by that factor. The check: points over the whole grid of B.1
# round-trip to $10^{-12}$, for barrel and for pincushion, and the error falls geometrically (a straight line on the log plot).

# %%
all_grid = torch.cat(grid_lines)                               # (1080, 2) undistorted normalised points
fig, ax = plt.subplots(figsize=(6, 3.4), layout="constrained")
for k1, k2 in ((-0.3, 0.0), (-0.3, 0.05), (0.3, 0.0), (0.3, 0.05)):
    recovered, errors = undistort(distort(all_grid, k1, k2), k1, k2, iterations=60)
    round_trip = (recovered - all_grid).abs().max()
    print(f"k1 = {k1:+.1f}, k2 = {k2:.2f}: max round-trip error {round_trip:.1e} after 60 iterations; "
          f"{int((errors > 1e-12).sum()) + 1} iterations to reach 1e-12")
    assert round_trip < 1e-12
    ax.semilogy(range(1, 61), errors.clamp_min(1e-17), label=f"k1 = {k1:+.1f}, k2 = {k2:.2f}")
ax.set_xlabel("iteration")
ax.set_ylabel("max |distort(x_u) - x_d|")
ax.legend(fontsize=8)
plt.show()

# %% [markdown]
# ---
# ## C. Single-view metrology
#
# One image loses depth, but not everything: parallel lines, the ground plane and the ratios along a line leave traces that
# let us measure. The scene: a camera 1.6 m above the ground (eye height), tilted slightly down, looking at a 1.8 m person (the
# reference) and a pole whose height we pretend not to know (3.0 m).

# %%
K_c = intrinsics(800.0, cx=320.0, cy=240.0)
R_c, t_c = look_at((0.0, -8.0, 1.6), (0.0, 0.0, 0.9))         # eye height 1.6 m, looking slightly down
person_bottom, person_top = torch.tensor([-1.0, 0.0, 0.0]), torch.tensor([-1.0, 0.0, 1.8])
pole_bottom, pole_top = torch.tensor([1.5, 2.0, 0.0]), torch.tensor([1.5, 2.0, 3.0])


def pixel_of(point, K_=K_c, R=R_c, t=t_c):
    """The pixel (2,) of one world point (3,)."""
    return project(K_, R, t, point[None])[0][0]


# %% [markdown]
# ### C.1 Vanishing points: $v \simeq K R d$
#
# Points far along a line $X(s) = X_0 + s\, d$ in direction $d$ project to
#
# $$
# x(s) \simeq K (R X_0 + t + s R d) = s \left( K R d + \tfrac{1}{s} K (R X_0 + t) \right) \;\simeq\; K R d + \tfrac{1}{s} K (R X_0 + t)
# \;\xrightarrow[s \to \infty]{}\; K R d .
# $$
#
# The limit $v \simeq K R d$ does not depend on $X_0$: **every line with direction $d$ runs to the same vanishing point**, the image of the
# point at infinity $(d, 0)$ in homogeneous coordinates (the fourth coordinate 0 kills $t$). It is finite when $(R d)_z \neq 0$, i.e.
# when the direction is not parallel to the image plane. The check: points 1,000 km along two different parallel lines land
# within a fraction of a pixel of $K R d$.

# %%
d_ground = torch.tensor([1.0, 2.0, 0.0]) / math.sqrt(5.0)      # a direction along the ground
v_ground = from_homogeneous(vanishing_point(K_c, R_c, d_ground))
for start_point in (torch.tensor([0.0, 0.0, 0.0]), torch.tensor([-3.0, 1.0, 0.0])):
    for s in (10.0, 100.0, 1_000_000.0):
        far = pixel_of(start_point + s * d_ground)
        print(f"from {start_point.tolist()}, s = {s:>9.0f} m: pixel {far.tolist()} -> distance to K R d: "
              f"{(far - v_ground).norm():.4f} px")
    assert (pixel_of(start_point + 1_000_000.0 * d_ground) - v_ground).norm() < 0.01

# %% [markdown]
# ### C.2 The horizon: the vanishing line of the ground plane
#
# Every horizontal direction $d$ satisfies $n^\top d = 0$ with the ground's normal $n = e_z$. Its vanishing point $v = K R d$ lies on
# the line $l \simeq K^{-\top} R n$, because
#
# $$
# l^\top v = n^\top R^\top K^{-1} K R d = n^\top d = 0 .
# $$
#
# That line is the **horizon**, the vanishing line of the ground (and of every horizontal plane). A line through two homogeneous
# points is their cross product, $l = p \times q$ (both $p^\top l = 0$ and $q^\top l = 0$), and two lines meet at $x = l \times m$. The
# plane $z = 1.6$ m at eye height passes through the camera centre, so it is seen edge-on: **anything at eye height, near or
# far, projects onto the horizon**. The checks: eight ground directions give vanishing points on $l$; the line through two of
# them is $l$; and the person's eyes (at 1.6 m) lie on it.

# %%
horizon = vanishing_line(K_c, R_c, (0.0, 0.0, 1.0))            # (3,) homogeneous line
vertical_vp = vanishing_point(K_c, R_c, (0.0, 0.0, 1.0))       # (3,) where vertical lines meet (below the image)
ground_vps = torch.stack([vanishing_point(K_c, R_c, (math.cos(a), math.sin(a), 0.0))
                          for a in torch.linspace(0.3, 2.8, 8)])  # (8, 3)
eyes = to_homogeneous(pixel_of(torch.tensor([-1.0, 0.0, 1.6])))
through_two = line_through(ground_vps[0], ground_vps[1])
residuals = ground_vps @ horizon / (ground_vps.norm(dim=1) * horizon.norm())
print(f"max |l^T v| (normalised) over 8 ground directions: {residuals.abs().max():.1e}; "
      f"1 - |cos| between l and the line through two of them: {1 - abs(torch.cosine_similarity(through_two, horizon, dim=0)):.1e}; "
      f"the person's eyes are {abs(eyes @ horizon) / horizon[:2].norm():.2e} px from the horizon")
assert residuals.abs().max() < 1e-12
assert abs(eyes @ horizon) / horizon[:2].norm() < 1e-9

# %% [markdown]
# ### C.3 Heights from one image: the reference-height method
#
# We know the person is $h_r = 1.8$ m tall and want the pole's height $h$ (Criminisi, Reid and Zisserman, 2000). Both stand
# vertically on the ground; in the image the person has bottom $b_r$ and top $t_r$, the pole $b$ and $t$, and all vertical lines
# meet at the vertical vanishing point $v_z$.
#
# 1. **Move the reference to the pole.** The line through the two feet, $b_r \times b$, is a line on the ground; it meets the
#    horizon at $u = (b_r \times b) \times l$, the vanishing point of its direction. The line from $u$ through the person's top,
#    $u \times t_r$, is the image of the 3-D line through the person's top *parallel* to the ground line, so it is 1.8 m above the
#    ground all along. It crosses the pole's vertical line $b \times v_z$ at $\tilde t = (u \times t_r) \times (b \times v_z)$: the image of the
#    point 1.8 m up the pole.
# 2. **Read the ratio on the pole's line.** Now four points on one image line are the images of the heights $0$ ($b$), $h_r$
#    ($\tilde t$), $h$ ($t$) and $\infty$ ($v_z$). A perspective map of a line to a line preserves the **cross-ratio** (C.4 proves it).
#    With $s(\cdot)$ a coordinate along the image line,
#
# $$
# \frac{\big(s(t) - s(b)\big)\big(s(v_z) - s(\tilde t)\big)}{\big(s(\tilde t) - s(b)\big)\big(s(v_z) - s(t)\big)}
# = \frac{(h - 0)(\infty - h_r)}{(h_r - 0)(\infty - h)} = \frac{h}{h_r} .
# $$
#
# The check: the recovered pole height is 3.0 m to $10^{-6}$; then with half a pixel of noise on the four image points,
# the error over `cfg.n_seeds` seeds is printed (around a centimetre).

# %%
b_px, t_px = pixel_of(pole_bottom), pixel_of(pole_top)
b_ref_px, t_ref_px = pixel_of(person_bottom), pixel_of(person_top)
pole_height = height_from_reference(b_px, t_px, b_ref_px, t_ref_px, 1.8, horizon, vertical_vp)
print(f"recovered pole height {pole_height:.9f} m (true 3.0 m); the vertical vanishing point is at "
      f"{from_homogeneous(vertical_vp).tolist()} (below the {WIDTH} x {HEIGHT} image)")
assert abs(pole_height - 3.0) < 1e-6

generator = seed_everything(1)
noisy_heights = torch.stack([
    height_from_reference(*(p + 0.5 * torch.randn(2, generator=generator) for p in (b_px, t_px, b_ref_px, t_ref_px)),
                          1.8, horizon, vertical_vp)
    for _ in range(cfg.n_seeds)])
print(f"with 0.5 px of noise on the four points ({cfg.n_seeds} seeds): mean {noisy_heights.mean():.3f} m, "
      f"mean |error| {(noisy_heights - 3.0).abs().mean() * 100:.1f} cm")
assert (noisy_heights - 3.0).abs().mean() < 0.1

fig, ax = plt.subplots(figsize=(6.5, 4.9), layout="constrained")
draw_image_frame(ax, "the reference-height method")
for offset in torch.linspace(-4.0, 4.0, 9):                    # ground lines along y and along x
    for a, b in ((torch.tensor([offset, -2.0, 0.0]), torch.tensor([offset, 30.0, 0.0])),
                 (torch.tensor([-6.0, offset + 4.0, 0.0]), torch.tensor([6.0, offset + 4.0, 0.0]))):
        ends = project(K_c, R_c, t_c, torch.stack([a, b]))[0]
        ax.plot(ends[:, 0], ends[:, 1], color="0.85", lw=0.7)
us = torch.tensor([0.0, WIDTH])
ax.plot(us, -(horizon[0] * us + horizon[2]) / horizon[1], "C2-", label="horizon l")
u_point = from_homogeneous(intersect(line_through(to_homogeneous(b_ref_px), to_homogeneous(b_px)), horizon))
t_moved = from_homogeneous(intersect(line_through(to_homogeneous(u_point), to_homogeneous(t_ref_px)),
                                     line_through(to_homogeneous(b_px), vertical_vp)))
ax.plot(*torch.stack([b_ref_px, t_ref_px]).T, "C0-", lw=3, label="person, 1.8 m")
ax.plot(*torch.stack([b_px, t_px]).T, "C3-", lw=3, label=f"pole: {pole_height:.2f} m")
for p, q in ((b_ref_px, u_point), (t_ref_px, u_point)):
    ax.plot(*torch.stack([p, q]).T, "C1--", lw=0.8)
ax.plot(*t_moved, "C1o", label="1.8 m moved to the pole")
ax.legend(fontsize=8, loc="lower left")
plt.show()
print(f"u (on the horizon) at {u_point.tolist()}; it may lie outside the image, the algebra does not mind")

# %% [markdown]
# ### C.4 Why the cross-ratio is invariant (optional deep dive)
#
# A perspective map from one line to another, in a 1-D coordinate $s$, is a fractional linear map $s' = (a s + b) / (c s + d)$
# with $ad - bc \neq 0$ (a $2 \times 2$ homography of homogeneous $(s, 1)$). For two points,
#
# $$
# s'_i - s'_j = \frac{(a s_i + b)(c s_j + d) - (a s_j + b)(c s_i + d)}{(c s_i + d)(c s_j + d)} = \frac{(ad - bc)(s_i - s_j)}{(c s_i + d)(c s_j + d)} .
# $$
#
# In the cross-ratio $\frac{(s_1 - s_3)(s_2 - s_4)}{(s_2 - s_3)(s_1 - s_4)}$ each index appears once in the numerator and once in
# the denominator, so the factors $(ad - bc)$ and every $(c s_i + d)$ cancel: the cross-ratio is unchanged. With $s_4 \to \infty$ it
# reduces to the ratio $(s_1 - s_3)/(s_2 - s_3)$, which is what C.3 read off. The check: random homographies of the line leave it
# unchanged, while plain ratios of distances are not preserved.

# %%
def cross_ratio(s):
    return (s[0] - s[2]) * (s[1] - s[3]) / ((s[1] - s[2]) * (s[0] - s[3]))


generator = seed_everything(2)
s_line = torch.tensor([0.0, 1.8, 3.0, 7.5])
for _ in range(3):
    a, b, c, d = torch.randn(4, generator=generator)
    mapped = (a * s_line + b) / (c * s_line + d)
    print(f"cross-ratio {cross_ratio(s_line):.6f} -> {cross_ratio(mapped):.6f}; ratio of lengths "
          f"{(s_line[1] - s_line[0]) / (s_line[2] - s_line[0]):.4f} -> {(mapped[1] - mapped[0]) / (mapped[2] - mapped[0]):.4f}")
    assert abs(cross_ratio(mapped) - cross_ratio(s_line)) < 1e-9

# %% [markdown]
# ---
# ## D. Epipolar geometry
#
# Two cameras see the same point. Without knowing its depth, a pixel in one image fixes only a ray, and the ray's image in the
# other view is a line: the match must lie on it. This section derives that line and estimates it from matches alone.

# %%
fig = course_lib.topics.camera.epipolar_schematic()
plt.show()

# %% [markdown]
# ### D.1 The essential and fundamental matrices
#
# Put the world frame at camera 1, so camera 1 is $[I \mid 0]$ and camera 2 is $[R \mid t]$: a point $X_1$ in camera 1's frame is
# $X_2 = R X_1 + t$ in camera 2's. (For two cameras $[R_1 \mid t_1]$, $[R_2 \mid t_2]$ in a world frame, $R = R_2 R_1^\top$ and
# $t = t_2 - R t_1$.) Take the cross product of both sides with $t$, then the dot product with $X_2$:
#
# $$
# t \times X_2 = t \times R X_1 \quad\Longrightarrow\quad 0 = X_2^\top (t \times X_2) = X_2^\top\, [t]_\times R\, X_1 ,
# $$
#
# where $[t]_\times$ is the **skew-symmetric matrix** with $[t]_\times v = t \times v$ (exercise 1 derives it). Geometrically: the two
# rays and the baseline $t$ lie in one plane, the **epipolar plane**. Since $X_i = z_i\, K_i^{-1} x_i$ with pixels $x_i$ (homogeneous)
# and depths $z_i > 0$, dividing by $z_1 z_2$:
#
# $$
# \hat x_2^\top E\, \hat x_1 = 0,\quad E = [t]_\times R ; \qquad\qquad x_2^\top F\, x_1 = 0,\quad F = K_2^{-\top}\, [t]_\times R\, K_1^{-1} .
# $$
#
# $E$ (the **essential matrix**, Longuet-Higgins, 1981) relates normalised coordinates; $F$ (the **fundamental matrix**) relates
# pixels. Both have rank 2 since $[t]_\times t = 0$. The check on the 60 true correspondences of See it work first: $x_2^\top F x_1$
# is zero to rounding for every pair, while for mismatched pairs it is not.

# %%
R_12 = R2 @ R1.T                                               # (3, 3) camera 2 relative to camera 1
t_12 = t2 - R_12 @ t1                                          # (3,)
F_true = fundamental(K, K, R_12, t_12)
F_true = F_true / F_true.norm()                                # F is defined up to scale: unit Frobenius norm
h1, h2 = to_homogeneous(x1), to_homogeneous(x2)               # (60, 3) each
matched = (h2 @ F_true * h1).sum(1)                            # (60,) x2^T F x1
mismatched = (h2.roll(1, dims=0) @ F_true * h1).sum(1)         # (60,) each x1 with another point's x2
print(f"|x2^T F x1|: matches at most {matched.abs().max():.1e}, mismatched pairs median {mismatched.abs().median():.1e}; "
      f"rank of F: {torch.linalg.matrix_rank(F_true).item()}")
assert matched.abs().max() < 1e-12 and mismatched.abs().median() > 1e-4
assert torch.linalg.matrix_rank(F_true).item() == 2

# %% [markdown]
# ### D.2 Epipolar lines
#
# For a fixed $x_1$, the constraint $x_2^\top (F x_1) = 0$ says that $x_2$ lies on the line $l_2 = F x_1$ (a homogeneous line $(a, b, c)$:
# $a u + b v + c = 0$). Symmetrically $l_1 = F^\top x_2$ in image 1. Every epipolar line in image 2 passes through the **epipole**
# $e_2$, the image of camera 1's centre: since $F^\top e_2 = 0$, $e_2^\top (F x_1) = 0$ for every $x_1$ (D.5 computes it). The distance of
# a pixel $(u, v)$ from a line is $\lvert a u + b v + c \rvert / \sqrt{a^2 + b^2}$. The check: each true match lies on its epipolar line
# (distance below $10^{-9}$ pixels) and all the lines meet at the epipole.

# %%
lines_2 = epipolar_lines(F_true, x1)                           # (60, 3) in image 2
lines_1 = h2 @ F_true                                          # (60, 3) F^T x2, in image 1
distance_2 = (h2 * lines_2).sum(1).abs() / lines_2[:, :2].norm(dim=1)
e1, e2 = epipoles(F_true)
print(f"max distance of x2 to F x1: {distance_2.max():.1e} px; epipole e2 at {from_homogeneous(e2).tolist()} "
      f"(max |l2 . e2| = {(lines_2 @ e2).abs().max():.1e})")
assert distance_2.max() < 1e-9 and (lines_2 @ e2).abs().max() < 1e-9

fig, axes = plt.subplots(1, 2, figsize=(12, 4.4), layout="constrained")
for ax, x, lines, title in ((axes[0], x1, lines_1[:8], "view 1: lines F^T x_2"), (axes[1], x2, lines_2[:8], "view 2: lines F x_1")):
    draw_image_frame(ax, title)
    ax.scatter(x[:8, 0], x[:8, 1], s=30, c=colours, edgecolors="k", zorder=3)
    for line, colour in zip(lines, colours):
        ax.plot(us, -(line[0] * us + line[2]) / line[1], color=colour, lw=1)
plt.show()

# %% [markdown]
# ### D.3 The eight-point algorithm
#
# Now forget $K$, $R$ and $t$: estimate $F$ from matches alone. The constraint is linear in the nine entries of $F$. Write
# $f = (F_{11}, F_{12}, \dots, F_{33})$ row by row; for a match $x_1 = (u_1, v_1, 1)$, $x_2 = (u_2, v_2, 1)$,
#
# $$
# x_2^\top F x_1 = \sum_{i, j} x_{2,i}\, F_{ij}\, x_{1,j} = \big(u_2 u_1,\ u_2 v_1,\ u_2,\ v_2 u_1,\ v_2 v_1,\ v_2,\ u_1,\ v_1,\ 1\big) \cdot f = 0 ,
# $$
#
# one row of a matrix $A$ ($N \times 9$) per match, $A f = 0$. $F$ has scale freedom, so fix $\lVert f \rVert = 1$; eight matches in general
# position determine $f$, and with more (or noisy) matches we minimise $\lVert A f \rVert^2$ subject to $\lVert f \rVert = 1$: as in chapter 02,
# the minimiser is the eigenvector of $A^\top A$ with the smallest eigenvalue, i.e. **the right singular vector of $A$ for its
# smallest singular value**. Noise makes that $F$ full rank, but a true $F$ has rank 2 (D.1), so replace it by the **closest
# rank-2 matrix** in Frobenius norm: with $F = U \operatorname{diag}(\sigma_1, \sigma_2, \sigma_3) V^\top$, take $U \operatorname{diag}(\sigma_1, \sigma_2, 0) V^\top$
# (Eckart–Young). The check: from the 60 exact matches the algorithm recovers the true $F$ (up to sign) to $10^{-8}$, and the
# result has a zero third singular value.

# %%
F_exact = eight_point(x1, x2)
sign = torch.sign((F_exact * F_true).sum())
print(f"|F_8pt - F_true| = {(sign * F_exact - F_true).norm():.1e}; singular values of F_8pt "
      f"{torch.linalg.svdvals(F_exact).tolist()}")
assert (sign * F_exact - F_true).norm() < 1e-8 and torch.linalg.svdvals(F_exact)[2] < 1e-12
F_8 = eight_point(x1[:8], x2[:8])                              # the minimal case: exactly 8 matches
print(f"from exactly 8 matches: mean symmetric epipolar distance on all 60 = "
      f"{symmetric_epipolar_distance(F_8, x1, x2):.1e} px")
assert symmetric_epipolar_distance(F_8, x1, x2) < 1e-6

# %% [markdown]
# ### D.4 Why normalise: measured
#
# In pixels, the columns of $A$ have wildly different scales: $u_2 u_1 \approx 10^5$, $u_2 \approx 10^2$, the last column exactly 1.
# $A^\top A$ is then badly conditioned, and noise in the large entries swamps the small ones. Hartley (1997) fixes it by
# **normalising** each image's points with a similarity $T_i$: move their centroid to the origin and scale so that the mean
# distance from it is $\sqrt 2$ (the typical point is then $(\pm 1, \pm 1)$). Estimate $\hat F$ from $\hat x_i = T_i x_i$, enforce rank 2, and
# undo the normalisation: since $\hat x_2^\top \hat F \hat x_1 = x_2^\top (T_2^\top \hat F T_1) x_1$,
#
# $$
# F = T_2^\top\, \hat F\, T_1 .
# $$
#
# The measurement: `cfg.n_seeds` draws of 1 pixel of Gaussian noise on the 60 matches; for each, $F$ with and without the
# normalisation, scored by the **mean symmetric epipolar distance** of the *true* matches to the estimated lines (how wrong the
# geometry is, in pixels). Also printed: the condition number of $A$ (ratio of its largest to its second-smallest singular value).

# %%
def design_matrix(a, b):
    """A (N, 9): row n is vec(x2_n x1_n^T) for homogeneous pixels."""
    return (to_homogeneous(b)[:, :, None] * to_homogeneous(a)[:, None, :]).reshape(-1, 9)


generator = seed_everything(3)
raw_distances, normalised_distances = [], []
for _ in range(cfg.n_seeds):
    noisy1 = x1 + torch.randn(x1.shape, generator=generator)
    noisy2 = x2 + torch.randn(x2.shape, generator=generator)
    raw_distances.append(symmetric_epipolar_distance(eight_point(noisy1, noisy2, normalise=False), x1, x2))
    normalised_distances.append(symmetric_epipolar_distance(eight_point(noisy1, noisy2, normalise=True), x1, x2))
raw_distances, normalised_distances = torch.stack(raw_distances), torch.stack(normalised_distances)
s_raw = torch.linalg.svdvals(design_matrix(x1, x2))
s_norm = torch.linalg.svdvals(design_matrix(hartley_normalisation(x1)[0], hartley_normalisation(x2)[0]))
print(f"condition number sigma_1 / sigma_8 of A: {s_raw[0] / s_raw[7]:.1e} in pixels, {s_norm[0] / s_norm[7]:.1e} normalised")
print(f"mean symmetric epipolar distance over {cfg.n_seeds} seeds, 1 px noise: without normalisation "
      f"{raw_distances.mean():.2f} px (median {raw_distances.median():.2f}), with {normalised_distances.mean():.2f} px "
      f"(median {normalised_distances.median():.2f}); normalised better in "
      f"{int((normalised_distances < raw_distances).sum())} of {cfg.n_seeds}")
assert normalised_distances.mean() < raw_distances.mean()

fig, ax = plt.subplots(figsize=(6, 3.2), layout="constrained")
bins = torch.logspace(-1.5, 2, 30)
ax.hist(raw_distances, bins=bins, alpha=0.6, label="pixels (no normalisation)")
ax.hist(normalised_distances, bins=bins, alpha=0.6, label="Hartley-normalised")
ax.set_xscale("log")
ax.set_xlabel("mean symmetric epipolar distance of the true matches (px)")
ax.legend(fontsize=8)
plt.show()

# %% [markdown]
# A common belief is that normalisation is a numerical nicety for float32; the measurement above is in float64 and the gap is
# still large: the problem is not rounding but that least squares on the unnormalised $A$ weights the equations' terms by their
# pixel magnitudes, so the solution fits the noise in the large terms.

# %% [markdown]
# ### D.5 The epipoles and rank 2 (optional deep dive)
#
# The epipole $e_2$ is the image in camera 2 of camera 1's centre. Camera 1's centre is the origin of its frame, $X_1 = 0$, so in
# camera 2's frame it is $X_2 = t$, and
#
# $$
# e_2 \simeq K_2\, t, \qquad F^\top e_2 = K_1^{-\top} R^\top [t]_\times^\top K_2^{-1} K_2 t = -K_1^{-\top} R^\top (t \times t) = 0 .
# $$
#
# Likewise $e_1 \simeq K_1 C_2$ with camera 2's centre $C_2 = -R^\top t$ in camera 1's frame, and $F e_1 = 0$. The epipoles are the null
# vectors of $F$: the reason it has rank 2, and the point through which every epipolar line passes (D.2). The check: the SVD
# null vectors equal $K t$ and $-K R^\top t$ up to scale.

# %%
e2_direct, e1_direct = K @ t_12, -K @ R_12.T @ t_12
print(f"e2: SVD {from_homogeneous(e2).tolist()}, K t {from_homogeneous(e2_direct).tolist()}")
print(f"e1: SVD {from_homogeneous(e1).tolist()}, -K R^T t {from_homogeneous(e1_direct).tolist()}")
assert torch.allclose(from_homogeneous(e2), from_homogeneous(e2_direct), rtol=1e-8)
assert torch.allclose(from_homogeneous(e1), from_homogeneous(e1_direct), rtol=1e-8)

# %% [markdown]
# ---
# ## E. Exercises
#
# Each exercise cell below holds a working solution; in the student version it is replaced by a stub. Write your own,
# run the check cell, and reveal the reference only when stuck.
#
# **Exercise 1: the cross-product matrix.** *Derive, then check.* Write out $t \times v$ component by component for
# $t = (a, b, c)$ and read off the $3 \times 3$ matrix $[t]_\times$ with $[t]_\times v = t \times v$. Code it as `my_skew(t)` for a tensor `t` (3,),
# returning (3, 3). The check compares it with the library's, and `my_skew(t) @ v` with `torch.linalg.cross(t, v)`.

# %% tags=["exercise"]
def my_skew(t):
    """[t]_x (3, 3): the matrix of v -> t x v."""
    ### BEGIN SOLUTION
    a, b, c = t
    zero = torch.zeros(())
    return torch.stack([torch.stack([zero, -c, b]), torch.stack([c, zero, -a]), torch.stack([-b, a, zero])])
    ### END SOLUTION


# %%
generator = seed_everything(4)
skew_inputs = [torch.randn(3, generator=generator) for _ in range(4)] + [t_12]
course_lib.core.check.check_function(my_skew, skew, skew_inputs, rtol=1e-12, atol=1e-12)
v_test = torch.randn(3, generator=generator)
course_lib.core.check.check_tensor(my_skew(skew_inputs[0]) @ v_test, torch.linalg.cross(skew_inputs[0], v_test),
                                   name="my_skew(t) @ v", rtol=1e-12, atol=1e-12)

# %%
course_lib.core.check.show_solution(course_lib.topics.camera.skew)

# %% [markdown]
# **Exercise 2: F from the cameras.** *Derive, then check.* Two cameras with intrinsics $K_1$, $K_2$ sit in a world frame at
# $[R_1 \mid t_1]$ and $[R_2 \mid t_2]$. Derive the relative pose (camera 2 with respect to camera 1) and from it the fundamental
# matrix, then code `my_fundamental_from_poses(K1, R1, t1, K2, R2, t2)` returning $F$ (3, 3) scaled to unit Frobenius norm with
# $F_{33} > 0$. Use your `my_skew`. The check compares with the library on three camera pairs.

# %% tags=["exercise"]
def my_fundamental_from_poses(K1, R1, t1, K2, R2, t2):
    """F (3, 3), |F| = 1 and F[2, 2] > 0, with x2^T F x1 = 0 for cameras [R1 | t1] and [R2 | t2]."""
    ### BEGIN SOLUTION
    R = R2 @ R1.T                                              # X2 = R2 R1^T (X1 - t1) + t2
    t = t2 - R @ t1
    F = torch.linalg.inv(K2).T @ my_skew(t) @ R @ torch.linalg.inv(K1)
    F = F / F.norm()
    return F * torch.sign(F[2, 2])
    ### END SOLUTION


# %%
def reference_fundamental(K1, R1, t1, K2, R2, t2):
    F = fundamental(K1, K2, R2 @ R1.T, t2 - R2 @ R1.T @ t1)
    return F / F.norm() * torch.sign(F[2, 2])


pose_inputs = [(K, R1, t1, K, R2, t2),
               (intrinsics(700.0, 650.0, 300.0, 250.0), *look_at((4.0, -3.0, 1.0), (0.0, 0.0, 0.5)),
                intrinsics(450.0, cx=330.0, cy=230.0), *look_at((-3.0, -5.0, 3.0), (0.0, 0.5, 0.5))),
               (K_c, R_c, t_c, K, *orbit_camera(1.0, 7.0))]
course_lib.core.check.check_function(my_fundamental_from_poses, reference_fundamental, pose_inputs, rtol=1e-9, atol=1e-12)

# %%
course_lib.core.check.show_solution(course_lib.topics.camera.fundamental)

# %% [markdown]
# **Exercise 3: vertical lines in a level camera.** *Predict, then run.* The camera of C is tilted down, and its vertical
# vanishing point $v_z$ lies below the image. Now level it: it looks horizontally, from $(0, -8, 1.6)$ at $(0, 0, 1.6)$. Before you run
# the cell, predict: (a) where is $v_z$ now, and what is the third homogeneous coordinate of $K R e_z$? (b) Do the images of the
# person and the pole stay parallel, converge upwards or converge downwards? (c) Does the height method of C.3 still work?
# Write your answers into `MY_PREDICTION`, then run the experiment.

# %%
MY_PREDICTION = {"v_z": None, "vertical lines in the image": None, "C.3 still works": None}  # fill in before running

# %%
R_level, t_level = look_at((0.0, -8.0, 1.6), (0.0, 0.0, 1.6))
vz_level = vanishing_point(K_c, R_level, (0.0, 0.0, 1.0))
horizon_level = vanishing_line(K_c, R_level, (0.0, 0.0, 1.0))
corners_level = [pixel_of(p, K_c, R_level, t_level) for p in (person_bottom, person_top, pole_bottom, pole_top)]
level_height = height_from_reference(corners_level[2], corners_level[3], corners_level[0], corners_level[1], 1.8,
                                     horizon_level, vz_level)
person_dir, pole_dir = corners_level[1] - corners_level[0], corners_level[3] - corners_level[2]
print(f"your prediction: {MY_PREDICTION}")
print(f"measured: K R e_z = {vz_level.tolist()}; image directions of the person {person_dir.tolist()} and the pole "
      f"{pole_dir.tolist()}; pole height from C.3's method: {level_height:.6f} m")
assert abs(level_height - 3.0) < 1e-6

# %% [markdown]
# The level camera's $R e_z$ is $(0, -1, 0)$ in the camera frame: parallel to the image plane, so $K R e_z$ has third coordinate 0, a
# point at infinity, and vertical lines stay vertical and parallel in the image (architects' "shift" lenses keep the camera level
# for this reason). The cross-ratio then degenerates into a plain ratio of lengths along the pole's image, which is what
# `height_from_reference` uses when $v_z$ is at infinity: the method still works.

# %% [markdown]
# ---
# ## Summary
#
# | key equation | derived in | checked by |
# |---|---|---|
# | $x \simeq K [R \mid t] X$, with $K$ (5 numbers) and $[R \mid t]$ (6), camera centre $-R^\top t$ | A.1, A.2 | the step-by-step projection of the house in A.1, and the checks on focal length and skew in A.2 |
# | $x_d = x_u (1 + k_1 r^2 + k_2 r^4)$; undistort by $x_u \leftarrow x_d / m(\lVert x_u \rVert)$ | B.1, B.2 | the magnification at r = 0.5 in B.1, the round trip to 1e-12 in B.2 |
# | $v \simeq K R d$, horizon $l \simeq K^{-\top} R n$, and $h / h_r$ as a cross-ratio | C.1, C.2, C.3, C.4 | points 1,000 km away in C.1, eight ground directions in C.2, the pole's 3.0 m in C.3 |
# | $x_2^\top F x_1 = 0$ with $F = K_2^{-\top} [t]_\times R K_1^{-1}$; epipoles are its null vectors | D.1, D.2, D.5 | the 60 matches in D.1 and D.2, the null vectors in D.5 |
# | eight-point: $A f = 0$ by SVD, rank 2 by zeroing $\sigma_3$, $F = T_2^\top \hat F T_1$ | D.3, D.4 | exact recovery in D.3, the noise measurement in D.4 |
#
# **Three things to remember.**
#
# 1. Homogeneous coordinates make projection linear: one $3 \times 4$ matrix $K [R \mid t]$, then one division by the depth. Points at
#    infinity $(d, 0)$ are ordinary points there, and their images are the vanishing points $K R d$.
# 2. Radial distortion is magnification that changes *with the distance from the optical axis*: falling for barrel ($k_1 < 0$),
#    growing for pincushion ($k_1 > 0$); it is undone in normalised coordinates, before $K$.
# 3. Two views are tied by a rank-2 matrix: $x_2^\top F x_1 = 0$. Estimate it linearly from eight or more matches, enforce rank 2 by
#    an SVD, and always normalise the points first: in pixels the least-squares problem weights the noise wrongly.

# %% [markdown]
# ---
# ## F. Discussion questions
#
# 1. A common reading is "barrel distortion means less magnification". Less than what? Using $m(r)$, explain why a barrel lens
#    still shows the image centre at the right scale, and why a wide-angle lens is more likely to show barrel than pincushion.
# 2. In A.3, walk the camera closer while shortening the focal length so the house keeps its size. Which quantities in
#    $x \simeq K [R \mid t] X$ change, and why does the perspective change although the house's image size does not?
# 3. The height method of C.3 needs the horizon, the vertical vanishing point and one reference height. Does it still work when
#    the two feet $b_r$ and $b$ lie on an image line parallel to the horizon? And when the pole stands exactly behind the person
#    in the image ($b$ on the line through $b_r$ and $v_z$)? If one case fails, how would you work around it?
# 4. $F$ has 9 entries but only 7 degrees of freedom. Where do the two lost ones go, and why does the eight-point algorithm use 8
#    matches rather than 7?
# 5. D.4 measured that normalisation helps by a large factor even in float64. Why is it not a rounding problem, and what would
#    happen to the unnormalised estimate if the pixels were given in millimetres on the sensor instead?
