"""Chapter 15, C: SR3 super-resolution, the cascade, and colorization by replacing the gray coordinate."""
import math

import pytest
import torch
import torch.nn.functional as F

from course_lib.topics import sr3 as S
from course_lib.topics.diffusion import NoiseSchedule, ddim_sample

SCHEDULE = NoiseSchedule.linear(1000)


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def jiggle(model):
    """Random non-zero weights (the zero-initialised output layers would make every eps 0)."""
    torch.manual_seed(0)
    for p in model.parameters():
        p.data += 0.05 * torch.randn_like(p)
    return model.eval()


def tiny_sr():
    return jiggle(S.SR3UNet(widths=(8, 16, 16), emb_dim=16))


def test_downsample_upsample_shapes_and_consistency():
    x = torch.rand(3, 1, 28, 28, generator=gen()) * 2 - 1
    y = S.downsample(x)
    assert y.shape == (3, 1, 14, 14)
    assert torch.allclose(y[0, 0, 0, 0], x[0, 0, :2, :2].mean())
    assert S.upsample(y).shape == (3, 1, 28, 28)
    assert S.consistency_error(x, y) < 1e-7
    assert S.consistency_error(x, y + 0.2) == pytest.approx(0.1, rel=1e-4)  # 0.2 in [-1, 1] is 0.1 in pixels


def test_bad_shapes_raise_clear_errors():
    model = tiny_sr()
    with pytest.raises(ValueError, match="14, 14"):
        model(torch.zeros(2, 1, 28, 28), torch.tensor([5, 5]), torch.zeros(2, 1, 28, 28))
    with pytest.raises(ValueError, match="28, 28"):
        S.downsample(torch.zeros(2, 1, 14, 14))
    with pytest.raises(ValueError, match="float"):
        S.upsample(torch.zeros(2, 1, 14, 14, dtype=torch.long))
    with pytest.raises(ValueError, match="gray"):
        S.colorize(lambda x, t: x, torch.zeros(2, 3, 8, 8), SCHEDULE, steps=2)


def test_sr3_unet_output_shape_and_depends_on_y_and_s():
    model = tiny_sr()
    x, t = torch.randn(2, 1, 28, 28, generator=gen()), torch.tensor([10, 500])
    y = torch.rand(2, 1, 14, 14, generator=gen(1))
    out = model(x, t, y)
    assert out.shape == (2, 1, 28, 28)
    assert not torch.allclose(out, model(x, t, -y), atol=1e-5)
    assert not torch.allclose(out, model(x, t, y, 100), atol=1e-5)
    assert torch.allclose(out, model(x, t, y, torch.zeros(2, dtype=torch.long)))


def test_sr3_loss_matches_the_chapter_by_hand_version():
    """The chapter's C.1 loss, written out: the same draws of t, eps (and s) give the same number."""
    model = tiny_sr()
    x0 = torch.rand(4, 1, 28, 28, generator=gen(2)) * 2 - 1
    y = S.downsample(x0)
    g = gen(3)
    t = torch.randint(1, 1001, (4,), generator=g)
    eps = torch.randn(x0.shape, generator=g)
    ab = SCHEDULE.alpha_bars[t].float()[:, None, None, None]
    x_t = ab.sqrt() * x0 + (1 - ab).sqrt() * eps
    by_hand = ((eps - model(x_t, t, y)) ** 2).mean()
    library = S.sr3_loss(model, x0, y, SCHEDULE, generator=gen(3))  # max_aug = 0: s = 0, y untouched
    assert torch.allclose(by_hand, library, atol=1e-6)


def test_augment_low_res_is_the_forward_process():
    y = torch.rand(3, 1, 14, 14, generator=gen()) * 2 - 1
    assert torch.equal(S.augment_low_res(y, 0, SCHEDULE, gen()), y)
    noisy = S.augment_low_res(y, 200, SCHEDULE, gen(5))
    eps = torch.randn(y.shape, generator=gen(5))
    ab = float(SCHEDULE.alpha_bars[200])
    assert torch.allclose(noisy, math.sqrt(ab) * y + math.sqrt(1 - ab) * eps, atol=1e-6)


def test_super_resolve_is_ddim_with_the_condition_and_deterministic():
    model = tiny_sr()
    y = torch.rand(2, 1, 14, 14, generator=gen()) * 2 - 1
    a = S.super_resolve(model, y, SCHEDULE, steps=3, generator=gen(7))
    b = ddim_sample(lambda x, t: model(x, t, y, 0), (2, 1, 28, 28), SCHEDULE, steps=3, generator=gen(7),
                    show_progress=False)
    assert a.shape == (2, 1, 28, 28) and torch.allclose(a, b)
    assert not torch.allclose(a, S.super_resolve(model, y, SCHEDULE, steps=3, generator=gen(8)))


def test_posterior_mean_estimate_is_x0_hat_at_T():
    model = tiny_sr()
    y = torch.rand(2, 1, 14, 14, generator=gen()) * 2 - 1
    est = S.posterior_mean_estimate(model, y, SCHEDULE, gen(4))
    x_T = torch.randn(2, 1, 28, 28, generator=gen(4))
    t = torch.full((2,), 1000)
    assert torch.allclose(est, SCHEDULE.predict_x0(x_T, 1000, model(x_T, t, y)).clamp(-1, 1))


def test_low_res_unet_and_cascade_shapes():
    base = jiggle(S.LowResUNet(widths=(8, 16), emb_dim=16))
    out = base(torch.randn(3, 1, 14, 14), torch.tensor([1, 2, 3]), torch.tensor([0, 5, 10]))
    assert out.shape == (3, 1, 14, 14)
    low, high = S.cascade_sample(base, tiny_sr(), torch.tensor([1, 2]), SCHEDULE, steps=2, aug=50, generator=gen())
    assert low.shape == (2, 1, 14, 14) and high.shape == (2, 1, 28, 28)


def test_gray_chroma_basis_is_orthogonal_with_the_gray_axis_first():
    Q = S.gray_chroma_basis()
    assert torch.allclose(Q @ Q.T, torch.eye(3), atol=1e-6)
    assert torch.allclose(Q[0], torch.full((3,), 1 / math.sqrt(3)))
    rgb = torch.rand(2, 3, 4, 4, generator=gen()) * 2 - 1
    assert torch.allclose(S.from_gray_chroma(S.to_gray_chroma(rgb)), rgb, atol=1e-6)
    grey = torch.full((1, 3, 2, 2), 0.3)
    assert S.chroma(grey).abs().max() < 1e-6
    assert torch.allclose(S.gray_of(rgb)[:, 0], rgb.sum(1) / math.sqrt(3), atol=1e-6)


def test_colorize_keeps_the_gray_coordinate_and_matches_replacement_by_hand():
    torch.manual_seed(0)
    model = jiggle(S.colour_unet(widths=(8, 16, 16), emb_dim=16))
    rgb = S.shapes_scenes(2, seed=3)
    gray = S.gray_of(rgb)
    out = S.colorize(model, gray, SCHEDULE, steps=3, generator=gen(1))
    assert out.shape == (2, 3, 28, 28)
    assert (S.gray_of(out) - gray).abs().max() < 1e-5
    # with an identity "Q" the replacement is chapter 12's inpainting with a per-channel mask: same code path
    from course_lib.topics.guidance import inpaint

    z_model = lambda z, t: S.to_gray_chroma(model(S.from_gray_chroma(z), t))  # noqa: E731  eps in Q coordinates
    known = torch.cat([gray, torch.zeros_like(gray), torch.zeros_like(gray)], 1)
    mask = torch.tensor([1.0, 0.0, 0.0])[None, :, None, None]
    z = inpaint(z_model, known, mask, SCHEDULE, steps=3, generator=gen(1))
    assert (z[:, :1] - gray).abs().max() < 1e-5


def test_l2_regressor_shapes_and_identity_start():
    reg = S.L2Regressor(1, 3)
    for p in reg.net[-1].parameters():
        p.data.zero_()
    g = torch.rand(2, 1, 6, 6)
    assert torch.allclose(reg(g), g.expand(-1, 3, -1, -1))
    with pytest.raises(ValueError):
        reg(torch.zeros(2, 3, 6, 6))


def test_exercise_checks_accept_the_reference_and_reject_a_wrong_answer(capsys):
    S.check_downsample_consistency(S.consistency_error)
    S.check_augment(lambda y, s, schedule, noise: schedule.q_sample(y, s, noise))
    S.check_gray_chroma(S.to_gray_chroma)
    with pytest.raises(AssertionError):
        S.check_gray_chroma(lambda rgb: rgb)
    with pytest.raises(AssertionError):
        S.check_augment(lambda y, s, schedule, noise: y + noise)


def test_schematics_draw():
    import matplotlib.pyplot as plt

    for make in (S.sr3_schematic, S.colorize_schematic):
        plt.close(make())


def test_projection_makes_the_sample_consistent():
    x = torch.randn(2, 1, 28, 28, generator=gen())
    y = torch.rand(2, 1, 14, 14, generator=gen(1)) * 2 - 1
    projected = S.project_low_res(x, y, 0, SCHEDULE, gen(2))
    assert S.consistency_error(projected, y) < 1e-6
    detail = x - F.interpolate(S.downsample(x), scale_factor=2, mode="nearest")
    kept = projected - F.interpolate(S.downsample(projected), scale_factor=2, mode="nearest")
    assert torch.allclose(detail, kept, atol=1e-6)  # the detail inside each 2x2 block is untouched
    sample = S.super_resolve(tiny_sr(), y, SCHEDULE, steps=3, project=True, generator=gen(3))
    assert S.consistency_error(sample, y) < 1e-5
