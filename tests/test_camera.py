"""course_lib.topics.camera: pinhole projection, radial distortion, single-view metrology, epipolar geometry (chapter 16)."""
import math

import torch

from course_lib.topics import camera as C

K = C.intrinsics(500.0, cx=320.0, cy=240.0)


def scene(seed=0, n=60):
    g = torch.Generator().manual_seed(seed)
    X = torch.rand(n, 3, generator=g, dtype=torch.float64) * torch.tensor([4.0, 3.0, 2.0]) + torch.tensor([-2.0, -1.5, 0.0])
    R1, t1 = C.look_at((-1.0, -7.0, 1.5), (0.0, 0.0, 0.8))
    R2, t2 = C.look_at((1.5, -6.5, 2.0), (0.0, 0.0, 0.8))
    x1, _ = C.project(K, R1, t1, X)
    x2, _ = C.project(K, R2, t2, X)
    return x1, x2, R2 @ R1.T, t2 - R2 @ R1.T @ t1


def test_look_at_is_a_rotation_and_centres_the_target():
    R, t = C.look_at((3.0, -4.0, 2.0), (0.0, 0.0, 0.5))
    assert torch.allclose(R @ R.T, torch.eye(3, dtype=torch.float64), atol=1e-12) and torch.det(R) > 0
    px, depth = C.project(K, R, t, torch.tensor([[0.0, 0.0, 0.5]]))
    assert torch.allclose(px, torch.tensor([[320.0, 240.0]], dtype=torch.float64)) and depth.item() > 0
    up, _ = C.project(K, R, t, torch.tensor([[0.0, 0.0, 1.5]]))
    assert up[0, 1] < 240.0  # the world's up is up in the image (smaller row)


def test_projection_equals_the_step_by_step_pipeline():
    _, _, points = C.house()
    R, t = C.orbit_camera(0.4, 6.0)
    K_skew = C.intrinsics(600.0, 550.0, 300.0, 200.0, skew=3.0)
    px, depth = C.project(K_skew, R, t, points)
    X_c = points @ R.T + t
    normalised = X_c[:, :2] / X_c[:, 2:]
    manual = C.from_homogeneous(C.to_homogeneous(normalised) @ K_skew.T)
    assert torch.allclose(px, manual, atol=1e-9) and torch.allclose(depth, X_c[:, 2])


def test_undistortion_round_trips_for_barrel_and_pincushion():
    g = torch.Generator().manual_seed(1)
    xy = torch.rand(200, 2, generator=g, dtype=torch.float64) - 0.5
    for k1, k2 in ((-0.25, 0.02), (0.25, 0.05)):
        xy_u, errors = C.undistort(C.distort(xy, k1, k2), k1, k2, iterations=30)
        assert (xy_u - xy).abs().max() < 1e-10 and errors[-1] < 1e-10 and errors[0] > errors[-1]
    r_in = C.distort(torch.tensor([[0.5, 0.0]]), -0.2).norm()
    assert r_in < 0.5 < C.distort(torch.tensor([[0.5, 0.0]]), 0.2).norm()  # barrel pulls in, pincushion pushes out


def test_horizon_contains_every_ground_vanishing_point():
    R, t = C.look_at((0.0, -8.0, 1.6), (0.5, 0.0, 0.7))
    horizon = C.vanishing_line(K, R, (0.0, 0.0, 1.0))
    for angle in torch.linspace(0, math.pi, 7):
        v = C.vanishing_point(K, R, (math.cos(angle), math.sin(angle), 0.0))
        assert abs(horizon @ v) < 1e-9 * horizon.norm() * v.norm()


def test_height_from_one_image():
    R, t = C.look_at((0.0, -8.0, 1.6), (0.0, 0.0, 1.0))

    def pixel(p):
        return C.project(K, R, t, torch.tensor([p], dtype=torch.float64))[0][0]

    horizon, vertical = C.vanishing_line(K, R, (0.0, 0.0, 1.0)), C.vanishing_point(K, R, (0.0, 0.0, 1.0))
    for height in (0.5, 3.0, 7.0):
        h = C.height_from_reference(pixel((1.5, 2.0, 0.0)), pixel((1.5, 2.0, height)), pixel((-1.0, 0.0, 0.0)),
                                    pixel((-1.0, 0.0, 1.8)), 1.8, horizon, vertical)
        assert abs(h.item() - height) < 1e-6


def test_epipolar_constraint_and_epipoles():
    x1, x2, R, t = scene()
    F = C.fundamental(K, K, R, t)
    residual = (C.to_homogeneous(x2) * C.epipolar_lines(F, x1)).sum(1)
    assert residual.abs().max() < 1e-10 * F.norm() * 1e3
    assert torch.allclose(C.skew(t) @ x1[0].new_tensor([1.0, 2.0, 3.0]), torch.linalg.cross(t, x1.new_tensor([1.0, 2.0, 3.0])))
    e1, e2 = C.epipoles(F)
    assert (F @ e1).norm() < 1e-10 and (e2 @ F).norm() < 1e-10
    assert torch.linalg.matrix_rank(F).item() == 2


def test_eight_point_recovers_F_and_normalisation_helps_with_noise():
    x1, x2, R, t = scene()
    F_true = C.fundamental(K, K, R, t)
    F_est = C.eight_point(x1, x2)
    F_true = F_true / F_true.norm()
    assert min((F_est - F_true).norm(), (F_est + F_true).norm()) < 1e-8
    assert torch.linalg.svdvals(F_est)[2] < 1e-12
    normalised, raw = [], []
    for seed in range(10):
        g = torch.Generator().manual_seed(seed)
        n1 = x1 + torch.randn(x1.shape, generator=g, dtype=torch.float64)
        n2 = x2 + torch.randn(x2.shape, generator=g, dtype=torch.float64)
        normalised.append(C.symmetric_epipolar_distance(C.eight_point(n1, n2, True), x1, x2))
        raw.append(C.symmetric_epipolar_distance(C.eight_point(n1, n2, False), x1, x2))
    assert torch.stack(normalised).mean() < torch.stack(raw).mean()


def test_hartley_normalisation():
    x1, _, _, _ = scene()
    xn, T = C.hartley_normalisation(x1)
    assert xn.mean(0).abs().max() < 1e-12 and abs(xn.norm(dim=1).mean().item() - math.sqrt(2)) < 1e-12
