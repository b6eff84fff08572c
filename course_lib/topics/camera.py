"""Camera geometry: the pinhole camera, radial distortion, single-view metrology and two-view epipolar geometry
(chapter 16).

Conventions. World points are columns or rows of 3 numbers in metres, the world's z axis points up. A camera maps a
world point X to its own frame by X_c = R X + t (R a rotation, t a translation), with x_c to the right, y_c down and
z_c forward (the depth). The pixel is x ~ K X_c, with K the upper-triangular intrinsics. For two views, camera 1 is
[I | 0] and camera 2 is [R | t] (X_2 = R X_1 + t); then x_2^T F x_1 = 0 with F = K_2^{-T} [t]_x R K_1^{-1}.

Everything is float64 torch; points are stacked as rows, (N, 2) or (N, 3).
"""
from __future__ import annotations

import math

import torch

from course_lib.core.diagram import arrow, box, canvas, legend, note

DTYPE = torch.float64


def _t(x) -> torch.Tensor:
    return torch.as_tensor(x, dtype=DTYPE)


# ------------------------------------------------------------------------------------------ the pinhole camera

def to_homogeneous(x) -> torch.Tensor:
    """Append a 1 to every row: (N, d) -> (N, d + 1). Taught in chapter 16, A.1."""
    x = _t(x)
    return torch.cat([x, torch.ones(*x.shape[:-1], 1, dtype=DTYPE)], dim=-1)


def from_homogeneous(x) -> torch.Tensor:
    """Divide every row by its last coordinate and drop it: (N, d + 1) -> (N, d). Taught in chapter 16, A.1."""
    x = _t(x)
    return x[..., :-1] / x[..., -1:]


def intrinsics(fx: float, fy: float | None = None, cx: float = 0.0, cy: float = 0.0, skew: float = 0.0) -> torch.Tensor:
    """The intrinsic matrix K = [[fx, s, cx], [0, fy, cy], [0, 0, 1]] (3, 3), focal lengths in pixels.
    Taught in chapter 16, A.2."""
    fy = fx if fy is None else fy
    return _t([[fx, skew, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])


def rotation_z(angle: float) -> torch.Tensor:
    """The rotation by ``angle`` radians about the z axis, (3, 3). Taught in chapter 16, A.2."""
    c, s = math.cos(angle), math.sin(angle)
    return _t([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def look_at(eye, target, up=(0.0, 0.0, 1.0)) -> tuple[torch.Tensor, torch.Tensor]:
    """The extrinsics (R (3, 3), t (3,)) of a camera at ``eye`` looking at ``target``, the world's ``up`` pointing
    up in the image: the rows of R are the camera's axes (right, down, forward) in world coordinates, t = -R eye.
    Taught in chapter 16, A.2."""
    eye, target, up = _t(eye), _t(target), _t(up)
    forward = (target - eye) / (target - eye).norm()
    right = torch.linalg.cross(forward, up)
    right = right / right.norm()
    down = torch.linalg.cross(forward, right)
    R = torch.stack([right, down, forward])
    return R, -R @ eye


def orbit_camera(yaw: float, distance: float, height: float = 1.5, target=(0.0, 0.0, 0.5)):
    """(R, t) of a camera on a circle of radius ``distance`` around ``target``, at angle ``yaw`` (radians, 0 = on the
    -y side looking along +y), ``height`` metres above the ground, looking at ``target``. Taught in chapter 16, A.3."""
    target = _t(target)
    eye = target + _t([distance * math.sin(yaw), -distance * math.cos(yaw), height - target[2].item()])
    return look_at(eye, target)


def project(K, R, t, X) -> tuple[torch.Tensor, torch.Tensor]:
    """Project world points X (N, 3) with x ~ K [R | t] X: (pixels (N, 2), depths (N,)). Points behind the camera
    (depth <= 0) get pixels too (the algebra does not know), so check the depths. Taught in chapter 16, A.1."""
    P = _t(K) @ torch.cat([_t(R), _t(t).reshape(3, 1)], dim=1)  # (3, 4) the camera matrix
    x = to_homogeneous(X) @ P.T                                  # (N, 3)
    return from_homogeneous(x), x[:, 2]


def house(points_per_edge: int = 12) -> tuple[torch.Tensor, list[tuple[int, int]], torch.Tensor]:
    """A house: a 2 m x 1.5 m x 1 m box with a gable roof (ridge at 1.6 m), centred on the origin, on the ground z = 0.
    Returns (corners (10, 3), edges [(i, j)], points (E * points_per_edge, 3) spread along the edges).
    Taught in chapter 16, A.1."""
    w, d, h, ridge = 1.0, 0.75, 1.0, 1.6
    corners = _t([[-w, -d, 0], [w, -d, 0], [w, d, 0], [-w, d, 0],
                  [-w, -d, h], [w, -d, h], [w, d, h], [-w, d, h],
                  [-w, 0, ridge], [w, 0, ridge]])
    edges = [(0, 1), (1, 2), (2, 3), (3, 0), (4, 5), (5, 6), (6, 7), (7, 4), (0, 4), (1, 5), (2, 6), (3, 7),
             (4, 8), (7, 8), (5, 9), (6, 9), (8, 9)]
    s = torch.linspace(0, 1, points_per_edge, dtype=DTYPE)[:, None]  # (P, 1)
    points = torch.cat([corners[i] + s * (corners[j] - corners[i]) for i, j in edges])
    return corners, edges, points


# ------------------------------------------------------------------------------------------ radial distortion

def distort(xy, k1: float, k2: float = 0.0) -> torch.Tensor:
    """Radial distortion of normalised image points (N, 2): x_d = x_u (1 + k1 r^2 + k2 r^4), r^2 = |x_u|^2.
    k1 < 0 is barrel, k1 > 0 pincushion. Taught in chapter 16, B.1."""
    xy = _t(xy)
    r2 = (xy ** 2).sum(-1, keepdim=True)
    return xy * (1 + k1 * r2 + k2 * r2 ** 2)


def undistort(xy_d, k1: float, k2: float = 0.0, iterations: int = 20) -> tuple[torch.Tensor, torch.Tensor]:
    """Invert :func:`distort` by the fixed-point iteration x_u <- x_d / (1 + k1 r(x_u)^2 + k2 r(x_u)^4), from x_u = x_d.
    Returns (x_u (N, 2), the max round-trip error |distort(x_u) - x_d| after each iteration (iterations,)).
    Taught in chapter 16, B.2."""
    xy_d = _t(xy_d)
    xy_u, errors = xy_d.clone(), []
    for _ in range(iterations):
        r2 = (xy_u ** 2).sum(-1, keepdim=True)
        xy_u = xy_d / (1 + k1 * r2 + k2 * r2 ** 2)
        errors.append((distort(xy_u, k1, k2) - xy_d).norm(dim=-1).max())
    return xy_u, torch.stack(errors)


# ------------------------------------------------------------------------------------------ single-view metrology

def vanishing_point(K, R, direction) -> torch.Tensor:
    """The image of the point at infinity in world direction d: v ~ K R d, homogeneous (3,). Taught in chapter 16, C.1."""
    return _t(K) @ _t(R) @ _t(direction)


def vanishing_line(K, R, normal) -> torch.Tensor:
    """The vanishing line of planes with world normal n: l ~ K^{-T} R n (3,), so l^T v = 0 for every direction in the
    plane. For the ground (n = e_z) it is the horizon. Taught in chapter 16, C.2."""
    return torch.linalg.inv(_t(K)).T @ _t(R) @ _t(normal)


def line_through(p, q) -> torch.Tensor:
    """The homogeneous line through two homogeneous points: l = p x q (3,). Taught in chapter 16, C.2."""
    return torch.linalg.cross(_t(p), _t(q))


def intersect(l, m) -> torch.Tensor:
    """The homogeneous point where two lines meet: x = l x m (3,). Taught in chapter 16, C.2."""
    return torch.linalg.cross(_t(l), _t(m))


def height_from_reference(bottom, top, ref_bottom, ref_top, ref_height: float, horizon, vertical_vp) -> torch.Tensor:
    """The height of an object standing on the ground from one image (Criminisi, Reid and Zisserman, 2000): transfer the
    reference's height to the object's vertical line through a point u on the horizon, then read the cross-ratio of
    (bottom, transferred top, top, vertical vanishing point). Points are pixels (2,); horizon (3,); vertical_vp (3,),
    homogeneous. Returns the height (0-d). Taught in chapter 16, C.3."""
    b, t, b_r, t_r = (to_homogeneous(_t(p)) for p in (bottom, top, ref_bottom, ref_top))
    u = intersect(line_through(b_r, b), horizon)             # where the line of the two feet meets the horizon
    t_moved = intersect(line_through(u, t_r), line_through(b, vertical_vp))  # the reference's top, moved to the object
    v = _t(vertical_vp)
    b, t, t_moved = (p[:2] / p[2] for p in (b, t, t_moved))
    direction = (t - b) / (t - b).norm()                      # a 1-D coordinate along the object's image line

    def s(p):
        return (p - b) @ direction

    if v[2].abs() < 1e-12 * v.norm():                         # vertical lines stay parallel in the image: affine case
        return ref_height * s(t) / s(t_moved)
    v = v[:2] / v[2]
    return ref_height * (s(t) * (s(v) - s(t_moved))) / (s(t_moved) * (s(v) - s(t)))


# ------------------------------------------------------------------------------------------ two views

def skew(t) -> torch.Tensor:
    """The cross-product matrix [t]_x (3, 3), with [t]_x v = t x v. Taught in chapter 16, D.1."""
    a, b, c = _t(t).tolist()
    return _t([[0.0, -c, b], [c, 0.0, -a], [-b, a, 0.0]])


def essential(R, t) -> torch.Tensor:
    """E = [t]_x R (3, 3) for the second camera [R | t] relative to the first [I | 0]. Taught in chapter 16, D.1."""
    return skew(t) @ _t(R)


def fundamental(K1, K2, R, t) -> torch.Tensor:
    """F = K_2^{-T} [t]_x R K_1^{-1} (3, 3): x_2^T F x_1 = 0 for pixels of the same point. Taught in chapter 16, D.1."""
    return torch.linalg.inv(_t(K2)).T @ essential(R, t) @ torch.linalg.inv(_t(K1))


def epipolar_lines(F, x1) -> torch.Tensor:
    """The epipolar lines l_2 = F x_1 (N, 3) in the second image of pixels x1 (N, 2) of the first (use F^T for the
    other direction). Taught in chapter 16, D.2."""
    return to_homogeneous(x1) @ _t(F).T


def epipoles(F) -> tuple[torch.Tensor, torch.Tensor]:
    """The epipoles (e_1, e_2), homogeneous (3,): F e_1 = 0 and F^T e_2 = 0, the right and left null vectors.
    Taught in chapter 16, D.5."""
    U, _, Vh = torch.linalg.svd(_t(F))
    return Vh[-1], U[:, -1]


def hartley_normalisation(x) -> tuple[torch.Tensor, torch.Tensor]:
    """Hartley's (1997) similarity T (3, 3) that moves the centroid of the pixels x (N, 2) to the origin and scales
    their mean distance from it to sqrt(2); returns (the normalised points (N, 2), T). Taught in chapter 16, D.4."""
    x = _t(x)
    centre = x.mean(0)
    scale = math.sqrt(2) / (x - centre).norm(dim=1).mean()
    T = _t([[scale, 0.0, -scale * centre[0]], [0.0, scale, -scale * centre[1]], [0.0, 0.0, 1.0]])
    return from_homogeneous(to_homogeneous(x) @ T.T), T


def eight_point(x1, x2, normalise: bool = True) -> torch.Tensor:
    """The (normalised) eight-point algorithm (Longuet-Higgins, 1981; Hartley, 1997): F (3, 3) of unit Frobenius norm
    from N >= 8 correspondences x1, x2 (N, 2) in pixels. Each pair gives one row of A f = 0 (f = F row by row); f is the
    right singular vector of the smallest singular value; rank 2 is enforced by zeroing F's smallest singular value.
    Taught in chapter 16, D.3."""
    x1, x2 = _t(x1), _t(x2)
    T1 = T2 = torch.eye(3, dtype=DTYPE)
    if normalise:
        x1, T1 = hartley_normalisation(x1)
        x2, T2 = hartley_normalisation(x2)
    h1, h2 = to_homogeneous(x1), to_homogeneous(x2)          # (N, 3)
    A = (h2[:, :, None] * h1[:, None, :]).reshape(-1, 9)     # (N, 9): row n is vec(x2_n x1_n^T)
    F = torch.linalg.svd(A)[2][-1].reshape(3, 3)
    U, S, Vh = torch.linalg.svd(F)
    F = U @ torch.diag(torch.stack([S[0], S[1], torch.zeros((), dtype=DTYPE)])) @ Vh  # the closest rank-2 matrix
    F = T2.T @ F @ T1                                        # back to pixels: x2^T T2^T F_n T1 x1
    return F / F.norm()


def symmetric_epipolar_distance(F, x1, x2) -> torch.Tensor:
    """Mean over the N pairs of (d(x2, F x1) + d(x1, F^T x2)) / 2, the pixel distances of each point to the other's
    epipolar line. Taught in chapter 16, D.4."""
    h1, h2 = to_homogeneous(x1), to_homogeneous(x2)
    F = _t(F)
    l2, l1 = h1 @ F.T, h2 @ F                                 # (N, 3) lines in image 2 and image 1
    residual = (h2 * l2).sum(1).abs()                         # |x2^T F x1|, the same for both
    return (residual / l2[:, :2].norm(dim=1) + residual / l1[:, :2].norm(dim=1)).mean() / 2


# ------------------------------------------------------------------------------------------ pictures

def schematic():
    """The pinhole camera as a pipeline, world point to pixel: x ~ K [R | t] X. Taught in chapter 16, A."""
    fig, ax = canvas(13.2, 2.9, title="the pinhole camera: world point to pixel")
    y = 1.35
    X = box(ax, 1.0, y, "world point\n$X = (X, Y, Z, 1)$", w=1.7, h=0.9, role="data")
    Rt = box(ax, 3.1, y, "extrinsics\n$[R \\mid t]$", w=1.5, h=0.9, role="operation")
    Xc = box(ax, 5.2, y, "camera frame\n$X_c = R X + t$", w=1.8, h=0.9, role="latent")
    div = box(ax, 7.35, y, "divide by depth\n$(x_c / z_c,\\ y_c / z_c)$", w=1.9, h=0.9, role="operation")
    K = box(ax, 9.5, y, "intrinsics $K$\n$f_x, f_y, s, c_x, c_y$", w=1.8, h=0.9, role="operation")
    px = box(ax, 11.9, y, "pixel\n$(u, v)$", w=1.5, h=0.9, role="data")
    for a, b in ((X, Rt), (Rt, Xc), (Xc, div), (div, K), (K, px)):
        arrow(ax, a.right, b.left)
    note(ax, 3.1, 0.45, "6 numbers: where the camera is")
    note(ax, 7.35, 0.45, "normalised coordinates; distortion acts here (B)")
    note(ax, 9.5, 2.25, "5 numbers: the camera itself")
    note(ax, 6.6, 2.25, "all in one: $x \\simeq K [R \\mid t] X$, a 3 x 4 matrix")
    legend(ax, ["data", "operation", "latent"])
    return fig


def epipolar_schematic():
    """Two views: a pixel in image 1 constrains its match in image 2 to the epipolar line l_2 = F x_1.
    Taught in chapter 16, D.1."""
    fig, ax = canvas(12.4, 3.2, title="two views: the epipolar constraint")
    y = 1.5
    x1 = box(ax, 1.0, y, "pixel $x_1$\nin image 1", w=1.5, h=0.9, role="data")
    ray = box(ax, 3.2, y, "ray $K_1^{-1} x_1$\n(camera 1 frame)", w=1.9, h=0.9, role="latent")
    E = box(ax, 5.65, y, "essential $E = [t]_\\times R$\nmove to camera 2", w=2.2, h=0.9, role="operation")
    K2 = box(ax, 8.1, y, "$K_2^{-T}$\nto pixels", w=1.5, h=0.9, role="operation")
    line = box(ax, 10.6, y, "epipolar line\n$l_2 = F x_1$ in image 2", w=2.2, h=0.9, role="latent")
    for a, b in ((x1, ray), (ray, E), (E, K2), (K2, line)):
        arrow(ax, a.right, b.left)
    note(ax, 5.65, 2.5, "$F = K_2^{-T} [t]_\\times R K_1^{-1}$, rank 2, 7 degrees of freedom")
    note(ax, 10.6, 0.55, "the match $x_2$ lies on it: $x_2^T F x_1 = 0$")
    note(ax, 3.2, 0.55, "depth unknown: a whole ray")
    legend(ax, ["data", "latent", "operation"], loc="lower center")
    return fig
