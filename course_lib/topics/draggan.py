"""A mini DragGAN (Pan et al. 2023) on the course's MNIST DCGAN (chapter 09).

Drag handle points p_i to target points t_i (i = 1..n, n = the number of handles) by optimising the
generator's latent. Each step has two parts:

* **motion supervision**: with d_i = (t_i - p_i) / ||t_i - p_i||_2 and Omega_1(p_i, r_1) the pixels
  within distance r_1 of p_i,

      L = sum_i mean_{q in Omega_1(p_i, r_1)} || sg(F(q)) - F(q + d_i) ||_1
          + lambda * mean over pixels of || (F - F_0) * (1 - M) ||_1

  where F is the generator's feature map resized to the image, F(q + d_i) is read bilinearly
  (q + d_i is fractional), sg is stop-gradient (``.detach()``): only the features one step ahead
  are pulled towards the current ones, so the content at p_i moves towards t_i. M = 1 marks the
  region allowed to change; the second term keeps F equal to the initial F_0 elsewhere.
  (The paper sums where this module averages, so lambda does not depend on r_1 or the image size.)
* **point tracking**: p_i <- argmin over q in the square Omega_2(p_i, r_2) of || F(q) - f_i ||_1,
  with f_i = F_0(p_i) the handle's feature in the *initial* image.

The paper optimises w in StyleGAN2's W+ (one w per layer, the first 6 of them); the course's DCGAN
has no mapping network and no per-layer styles, so the latent we optimise is z itself.
Points are (x, y) = (column, row) in pixels of the 28 x 28 image.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from course_lib.core.layers import to_pixel_range


def _check_points(points: torch.Tensor, name: str) -> torch.Tensor:
    points = torch.as_tensor(points, dtype=torch.float32)
    if points.ndim != 2 or points.shape[1] != 2:
        raise ValueError(f"{name} must be (P, 2) points (x, y), got shape {tuple(points.shape)}; "
                         "one point is [[x, y]]")
    return points


def image_and_features(G, z: torch.Tensor, size: int = 28):
    """The image (1, 28, 28) in [0, 1] and the feature map resized to it, (C, size, size), for one latent z (1, J).

    Taught in chapter 09, F.
    """
    if z.ndim != 2 or len(z) != 1:
        raise ValueError(f"expected one latent of shape (1, J), got {tuple(z.shape)}")
    image, features = G(z, return_features=True)  # (1, 1, 28, 28), (1, C, 14, 14)
    features = F.interpolate(features, size=(size, size), mode="bilinear", align_corners=False)  # (1, C, size, size)
    return to_pixel_range(image[0]), features[0]


def bilinear_sample(features: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Features at fractional pixel positions, by bilinear interpolation: (C, H, W), (P, 2) -> (P, C). Chapter 09, F.1.

    Point (x, y) reads between columns floor(x), floor(x) + 1 and rows floor(y), floor(y) + 1;
    at integer points it is exactly ``features[:, y, x]``. Points outside are clamped to the border.
    """
    if features.ndim != 3:
        raise ValueError(f"features must be (C, H, W), got shape {tuple(features.shape)}")
    points = _check_points(points, "points").to(features.device)
    _, height, width = features.shape
    grid = torch.stack([2 * points[:, 0] / (width - 1) - 1, 2 * points[:, 1] / (height - 1) - 1], dim=1)  # (P, 2)
    sampled = F.grid_sample(features[None], grid[None, :, None, :].to(features.dtype), mode="bilinear",
                            padding_mode="border", align_corners=True)  # (1, C, P, 1)
    return sampled[0, :, :, 0].T  # (P, C)


def disk_offsets(radius: float) -> torch.Tensor:
    """Integer offsets (dx, dy) with dx^2 + dy^2 <= radius^2: (K, 2), the neighbourhood Omega_1. Chapter 09, F.1."""
    if radius < 0:
        raise ValueError(f"radius must be >= 0, got {radius}")
    r = int(math.floor(radius))
    dy, dx = torch.meshgrid(torch.arange(-r, r + 1), torch.arange(-r, r + 1), indexing="ij")
    keep = dx**2 + dy**2 <= radius**2
    return torch.stack([dx[keep], dy[keep]], dim=1).float()


def motion_supervision_loss(features: torch.Tensor, handles: torch.Tensor, targets: torch.Tensor, radius: float = 2.0,
                            *, stop_gradient: bool = True, initial_features: torch.Tensor | None = None,
                            mask: torch.Tensor | None = None, lam: float = 10.0) -> torch.Tensor:
    """DragGAN's loss (module docstring): features (C, H, W), handles and targets (P, 2), mask (H, W) with 1 = may change.

    Handles already on their target (distance < 1e-6) contribute nothing.

    Taught in chapter 09, F.1.
    """
    handles, targets = _check_points(handles, "handles"), _check_points(targets, "targets")
    if handles.shape != targets.shape:
        raise ValueError(f"handles {tuple(handles.shape)} and targets {tuple(targets.shape)} must have the same shape")
    _, height, width = features.shape
    offsets = disk_offsets(radius)  # (K, 2)
    limit = torch.tensor([width - 1, height - 1], dtype=torch.float32)
    loss = features.new_zeros(())
    for p, t in zip(handles, targets):
        distance = (t - p).norm()
        if distance < 1e-6:
            continue
        d = (t - p) / distance  # (2,) a unit step towards the target
        q = torch.minimum((p + offsets).clamp_min(0), limit)  # (K, 2) inside the image
        f_here = bilinear_sample(features, q)  # (K, C)
        if stop_gradient:
            f_here = f_here.detach()
        f_ahead = bilinear_sample(features, q + d)  # (K, C)
        loss = loss + (f_here - f_ahead).abs().sum(dim=1).mean()
    if mask is not None:
        if initial_features is None:
            raise ValueError("a mask needs initial_features (F_0) to hold the region outside it fixed")
        if mask.shape != features.shape[1:]:
            raise ValueError(f"mask must be (H, W) = {tuple(features.shape[1:])}, got {tuple(mask.shape)}")
        outside = (1 - mask.to(features.dtype))[None]  # (1, H, W)
        loss = loss + lam * ((features - initial_features) * outside).abs().sum(dim=0).mean()
    return loss


@torch.no_grad()
def track_points(features: torch.Tensor, handle_features: torch.Tensor, handles: torch.Tensor,
                 radius: int = 3) -> torch.Tensor:
    """Nearest neighbour in feature space: each handle moves to the pixel of the square of half-size ``radius``
    around it whose feature is closest (L1) to its initial feature. features (C, H, W), handle_features (P, C),
    handles (P, 2) -> new handles (P, 2), integer-valued. Chapter 09, F.2."""
    handles = _check_points(handles, "handles")
    if handle_features.ndim != 2 or handle_features.shape != (len(handles), features.shape[0]):
        raise ValueError(f"handle_features must be (P, C) = ({len(handles)}, {features.shape[0]}), "
                         f"got {tuple(handle_features.shape)}")
    _, height, width = features.shape
    r = int(radius)
    new = []
    for p, f in zip(handles.round().long(), handle_features):
        x0, x1 = max(int(p[0]) - r, 0), min(int(p[0]) + r, width - 1)
        y0, y1 = max(int(p[1]) - r, 0), min(int(p[1]) + r, height - 1)
        window = features[:, y0:y1 + 1, x0:x1 + 1]  # (C, h, w)
        distance = (window - f.to(window.device)[:, None, None]).abs().sum(dim=0)  # (h, w)
        row, col = divmod(int(distance.argmin()), distance.shape[1])
        new.append([x0 + col, y0 + row])
    return torch.tensor(new, dtype=torch.float32)


def drag(G, z: torch.Tensor, handles, targets, *, steps: int = 40, lr: float = 0.05, r1: float = 2.0,
         r2: int = 3, mask: torch.Tensor | None = None, lam: float = 10.0, stop_gradient: bool = True,
         tolerance: float = 1.0) -> dict:
    """Run DragGAN on one latent ``z`` (1, J): Adam on z, motion supervision then point tracking each step.

    Stops early when every handle is within ``tolerance`` pixels of its target. Returns a dict with the
    final ``z``, ``image`` and the initial ``image_0`` ((1, 28, 28) in [0, 1]), ``path`` (steps + 1, P, 2) of
    tracked handles, ``distance`` (steps + 1,) mean handle-target distance, ``losses``, ``steps_run``.

    Taught in chapter 09, F.3.
    """
    handles, targets = _check_points(handles, "handles"), _check_points(targets, "targets")
    was_training = G.training
    G.eval()  # BatchNorm with its running statistics: a batch of one image is fine
    frozen = [p.requires_grad for p in G.parameters()]
    for p in G.parameters():
        p.requires_grad_(False)
    try:
        z = z.detach().clone().requires_grad_(True)
        optimizer = torch.optim.Adam([z], lr=lr)
        with torch.no_grad():
            image_0, features_0 = image_and_features(G, z)
            handle_features = bilinear_sample(features_0, handles)  # (P, C): f_i = F_0(p_i)
        path, losses = [handles.clone()], []
        distance = [(targets - handles).norm(dim=1).mean().item()]
        for _ in range(steps):
            if (targets - handles).norm(dim=1).max() <= tolerance:
                break
            _, features = image_and_features(G, z)
            loss = motion_supervision_loss(features, handles, targets, r1, stop_gradient=stop_gradient,
                                           initial_features=features_0, mask=mask, lam=lam)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
            with torch.no_grad():
                _, features = image_and_features(G, z)
                handles = track_points(features, handle_features, handles, r2)
            path.append(handles.clone())
            distance.append((targets - handles).norm(dim=1).mean().item())
        with torch.no_grad():
            image = image_and_features(G, z)[0]
    finally:
        for p, flag in zip(G.parameters(), frozen):
            p.requires_grad_(flag)
        G.train(was_training)
    return {"z": z.detach(), "image": image.cpu(), "image_0": image_0.cpu(), "path": torch.stack(path),
            "distance": torch.tensor(distance), "losses": losses, "steps_run": len(losses)}


def box_mask(x0: int, y0: int, x1: int, y1: int, size: int = 28) -> torch.Tensor:
    """A (size, size) mask with 1 inside the box [x0, x1] x [y0, y1] (inclusive): the region allowed to change.

    Taught in chapter 09, F.3.
    """
    mask = torch.zeros(size, size)
    mask[max(y0, 0):y1 + 1, max(x0, 0):x1 + 1] = 1
    return mask


def schematic():
    """The mini DragGAN loop, drawn: handle and target points; the latent z -> the generator -> its features F and
    image; motion supervision on F with a stop-gradient; an Adam step on z; point tracking by nearest neighbour in
    feature space; repeat until every handle reaches its target. Returns the matplotlib Figure.

    Drawn in chapter 09, F (motion supervision F.1, point tracking F.2, the loop F.3).
    """
    from course_lib.core.diagram import arrow, box, canvas, legend, note

    fig, ax = canvas(12, 5.8, title="a mini DragGAN: drag handle points to targets by optimising z")
    z = box(ax, 1.2, 3.4, "latent $z$\n(64 numbers)", w=1.7, h=0.9, role="latent")
    g = box(ax, 3.4, 3.4, "generator $G$\n(frozen)", w=1.7, h=0.9, role="network")
    feats = box(ax, 5.9, 3.4, "features $\\mathbf{F}$\n(64, 14, 14) -> 28 x 28", w=2.3, h=0.9, role="latent")
    image = box(ax, 5.9, 4.75, "image $G(z)$", w=1.7, h=0.6, role="data")
    points = box(ax, 9.6, 4.75, "handles $p_i$, targets $t_i$, $i = 1, \\dots, n$\n"
                 "$d_i = (t_i - p_i) / |t_i - p_i|$", w=3.4, h=0.8, role="condition")
    motion = box(ax, 9.6, 3.3, "motion supervision\n$|\\mathrm{sg}(\\mathbf{F}(q)) - \\mathbf{F}(q + d_i)|_1$\n"
                 "$q$ within $r_1$ of $p_i$", w=3.4, h=1.2, role="loss")
    track = box(ax, 9.6, 1.3, "point tracking\n$p_i \\leftarrow$ nearest $q$ within $r_2$:\n"
                "$\\min_q |\\mathbf{F}'(q) - \\mathbf{F}_0(p_i)|_1$", w=3.4, h=1.2, role="operation")
    step = box(ax, 5.9, 1.3, "Adam step on $z$\n(G's weights fixed)", w=2.3, h=0.9, role="operation")
    arrow(ax, z.right, g.left)
    arrow(ax, g.right, feats.left)
    arrow(ax, (g.x + 0.5, g.top[1]), image.left, bend=-0.2)
    arrow(ax, feats.right, motion.left)
    arrow(ax, points.bottom, motion.top)
    arrow(ax, motion.bottom, (step.right[0], step.y + 0.25), bend=-0.15, text="gradient", text_offset=(0.1, 0.05))
    arrow(ax, step.left, (z.x + 0.3, z.bottom[1]), bend=-0.25, text="new $z$", text_offset=(-0.4, -0.2))
    arrow(ax, (step.right[0], step.y - 0.25), (track.left[0], track.y - 0.25), text="$\\mathbf{F}'$",
          text_offset=(0.0, 0.02))
    arrow(ax, (track.x + 1.0, track.top[1]), (motion.x + 1.0, motion.bottom[1]), text="updated $p_i$",
          text_offset=(0.55, 0.0))
    note(ax, 2.4, 0.9, "loop until every $|p_i - t_i| < 1$ pixel", fontsize=8)
    note(ax, 8.2, 0.3, "sg = stop-gradient: only $\\mathbf{F}(q + d_i)$ is pulled towards $\\mathbf{F}(q)$, "
         "so the content moves towards $t_i$", fontsize=8)
    legend(ax, ["latent", "network", "data", "condition", "loss", "operation"], loc="lower left")
    return fig
