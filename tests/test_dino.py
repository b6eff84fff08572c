"""course_lib.topics.dino: the DINO objective, centre and EMA schedule, head, multi-crop, trainer, attention read-outs, TokenCut."""
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from course_lib import zoo
from course_lib.data import make_shapes
from course_lib.topics import dino as D


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


VIT = dict(image_size=32, patch_size=4, channels=3, dim=32, depth=2, heads=4, mlp_ratio=2.0)
HEAD = dict(out_dim=16, hidden=32, bottleneck=8, layers=3)


# ---------------------------------------------------------------------------------- the objective

def test_cross_entropy_is_entropy_plus_kl():
    p = torch.softmax(torch.randn(5, 7, generator=gen(), dtype=torch.float64), -1)
    log_q = torch.log_softmax(torch.randn(5, 7, generator=gen(1), dtype=torch.float64), -1)
    kl = F.kl_div(log_q, p, reduction="none").sum(-1)
    assert torch.allclose(D.cross_entropy(p, log_q), D.entropy(p) + kl)
    assert torch.allclose(D.entropy(torch.full((3, 8), 1 / 8)), torch.full((3,), math.log(8)))
    assert torch.equal(D.entropy(torch.eye(4)), torch.zeros(4))  # 0 log 0 = 0


def reference_dino_loss(student, teacher, center, tau_s, tau_t):
    terms = []
    for i, t in enumerate(teacher):
        p_t = torch.softmax((t - center) / tau_t, -1)
        for v, s in enumerate(student):
            if v != i:
                terms.append(-(p_t * torch.log_softmax(s / tau_s, -1)).sum(-1).mean())
    return torch.stack(terms).mean(), len(terms)


def test_dino_loss_matches_a_direct_loop_and_skips_same_view_pairs():
    student = [torch.randn(6, 10, generator=gen(s)) for s in range(4)]
    teacher = [torch.randn(6, 10, generator=gen(10 + s)) for s in range(2)]
    center = torch.randn(10, generator=gen(20))
    expected, pairs = reference_dino_loss(student, teacher, center, 0.1, 0.04)
    assert pairs == 2 * 3
    assert torch.allclose(D.dino_loss(student, teacher, center, 0.1, 0.04), expected, atol=1e-6)


def test_student_gradient_is_p_s_minus_p_t_over_tau_s():
    s = torch.randn(3, 9, generator=gen(), dtype=torch.float64, requires_grad=True)
    t = torch.randn(3, 9, generator=gen(1), dtype=torch.float64)
    center = torch.zeros(9, dtype=torch.float64)
    # one pair only: the student's view 1 against the teacher's view 0
    loss = D.dino_loss([t.clone(), s], [t], center, tau_s=0.1, tau_t=0.04)
    (grad,) = torch.autograd.grad(loss, s)
    p_s, p_t = torch.softmax(s / 0.1, -1), torch.softmax(t / 0.04, -1)
    assert torch.allclose(grad, (p_s - p_t).detach() / 0.1 / 3)  # / B from the batch mean


def test_no_gradient_reaches_the_teacher():
    t = torch.randn(4, 5, generator=gen(), requires_grad=True)
    s = torch.randn(4, 5, generator=gen(1), requires_grad=True)
    D.dino_loss([s, s * 2], [t], torch.zeros(5)).backward()
    assert t.grad is None and s.grad is not None


def test_teacher_probabilities_subtract_the_centre():
    logits = torch.randn(1, 6, generator=gen()).expand(8, 6)  # a collapsed batch: every image the same
    p = D.teacher_probabilities(logits, logits.mean(0), tau_t=0.04)
    assert torch.allclose(p, torch.full((8, 6), 1 / 6))  # centred away: uniform
    shifted = D.teacher_probabilities(logits + 3.0, torch.zeros(6), 0.04)
    assert torch.allclose(shifted, D.teacher_probabilities(logits, torch.zeros(6), 0.04))  # a constant shift is nothing
    with pytest.raises(ValueError, match="center"):
        D.teacher_probabilities(logits, torch.zeros(5), 0.04)


def test_update_center_is_an_ema_of_the_batch_mean():
    center = torch.randn(4, generator=gen())
    outs = [torch.randn(3, 4, generator=gen(1)), torch.randn(3, 4, generator=gen(2))]
    expected = 0.9 * center + 0.1 * torch.cat(outs).mean(0)
    assert torch.allclose(D.update_center(center, outs, 0.9), expected)


def test_teacher_momentum_schedule():
    assert D.teacher_momentum(0, 100, 0.996) == pytest.approx(0.996)
    assert D.teacher_momentum(100, 100, 0.996) == pytest.approx(1.0)
    assert D.teacher_momentum(50, 100, 0.99) == pytest.approx(0.995)
    values = [D.teacher_momentum(k, 100) for k in range(101)]
    assert all(a <= b for a, b in zip(values, values[1:]))


def test_collapse_diagnostics_tell_the_two_collapses_apart():
    k = 32
    uniform = torch.zeros(10, k)  # every image the same and centred away
    d = D.collapse_diagnostics(uniform, uniform, uniform.mean(0))
    assert d["teacher_entropy"] == pytest.approx(math.log(k)) and d["kl"] == pytest.approx(0, abs=1e-6)
    one_hot = torch.zeros(10, k)
    one_hot[:, 3] = 1.0  # every image the same prototype, no centring
    d = D.collapse_diagnostics(one_hot, one_hot, torch.zeros(k))
    assert d["teacher_entropy"] < 0.01 and d["batch_mean_entropy"] < 0.01


def test_dino_loss_rejects_bad_input():
    with pytest.raises(ValueError):
        D.dino_loss([torch.zeros(2, 3)], [torch.zeros(2, 3)], torch.zeros(3))
    with pytest.raises(ValueError, match=r"\(B, K\)"):
        D.dino_loss([torch.zeros(3), torch.zeros(3)], [torch.zeros(3)], torch.zeros(3))


# ---------------------------------------------------------------------------------- networks and crops

def test_head_outputs_are_cosines_and_the_model_takes_any_crop_size():
    torch.manual_seed(0)
    model = D.DINO(VIT, HEAD)
    for size in (32, 16):
        out = model(torch.rand(3, 3, size, size))
        assert out.shape == (3, 16) and out.abs().max() <= 1 + 1e-5
    scaled = D.DINOHead(32, **HEAD)
    features = torch.randn(4, 32)
    before = scaled(features)
    with torch.no_grad():
        scaled.prototypes.mul_(7.0)  # the prototypes' length does not matter: weight norm with gain 1
    assert torch.allclose(scaled(features), before, atol=1e-6)


def step_by_step_head(head, features):
    """The chapter's build: three linear layers with GELU, l2-normalise, cosine against unit prototypes."""
    linears = [m for m in head.mlp if isinstance(m, nn.Linear)]
    h = F.gelu(linears[0](features))
    h = F.gelu(linears[1](h))
    z = linears[2](h)
    z = z / z.norm(dim=-1, keepdim=True)
    w = head.prototypes / head.prototypes.norm(dim=-1, keepdim=True)
    return z @ w.T


def test_step_by_step_head_agrees_with_the_library():
    torch.manual_seed(1)
    head = D.DINOHead(32, **HEAD)
    features = torch.randn(5, 32)
    assert torch.allclose(step_by_step_head(head, features), head(features), atol=1e-6)


def test_crop_and_resize_full_box_is_identity_and_flip_mirrors():
    images = torch.rand(2, 3, 8, 8, generator=gen())
    full = torch.tensor([[0.0, 0.0, 8.0, 8.0]] * 2)
    assert torch.allclose(D.crop_and_resize(images, full, 8), images, atol=1e-6)
    flipped = D.crop_and_resize(images, full, 8, flip=torch.tensor([True, False]))
    assert torch.allclose(flipped[0], images[0].flip(-1), atol=1e-6) and torch.allclose(flipped[1], images[1], atol=1e-6)
    half = D.crop_and_resize(images, torch.tensor([[4.0, 0.0, 4.0, 4.0]] * 2), 4)  # the top-right quarter
    assert torch.allclose(half, images[:, :, :4, 4:], atol=1e-6)


def test_multi_crop_sizes_boxes_and_seed():
    images = torch.rand(4, 3, 32, 32, generator=gen())
    crops, boxes = D.multi_crop(images, n_global=2, n_local=3, generator=gen(1), return_boxes=True)
    assert [c.shape[-1] for c in crops] == [32, 32, 16, 16, 16] and all(c.shape[:2] == (4, 3) for c in crops)
    areas = [(b[:, 2] * b[:, 3] / 32**2) for b in boxes]
    assert all(((a >= 0.4 - 1e-6) & (a <= 1 + 1e-6)).all() for a in areas[:2])
    assert all((a <= 0.4 + 1e-6).all() for a in areas[2:])
    assert all(((b[:, 0] >= 0) & (b[:, 0] + b[:, 2] <= 32 + 1e-4)).all() for b in boxes)
    again = D.multi_crop(images, n_global=2, n_local=3, generator=gen(1))
    assert all(torch.equal(a, b) for a, b in zip(crops, again))


def test_trainer_runs_a_few_steps_and_moves_the_teacher():
    torch.manual_seed(0)
    student = D.DINO(VIT, HEAD)
    trainer = D.DINOTrainer(student, total_steps=3, teacher_momentum_base=0.5, generator=gen())
    optimizer = torch.optim.AdamW(student.parameters(), lr=1e-2)
    teacher_before = [p.clone() for p in trainer.teacher.parameters()]
    images = torch.rand(4, 3, 32, 32, generator=gen(1))
    for _ in range(2):
        loss = trainer.loss(images)
        assert torch.isfinite(loss)
        optimizer.zero_grad()
        loss.backward()
        assert all(p.grad is None for p in trainer.teacher.parameters())
        optimizer.step()
        lam = D.teacher_momentum(trainer.step + 1, 3, 0.5)
        expected = [lam * t + (1 - lam) * s.detach() for t, s in zip(trainer.teacher.parameters(), student.parameters())]
        trainer.update_teacher()
        assert all(torch.allclose(t, e, atol=1e-6) for t, e in zip(trainer.teacher.parameters(), expected))
    assert any(not torch.equal(a, b) for a, b in zip(teacher_before, trainer.teacher.parameters()))
    assert len(trainer.log) == 2 and set(trainer.log[0]) == {"teacher_entropy", "batch_mean_entropy", "kl", "ln_K"}


def test_dino_recipe_runs_under_ci():
    cfg = zoo.settings("dino_shapes", "ci")
    small = SimpleNamespace(**{**vars(cfg), "steps": 3, "batch_size": 4})
    trainer, history = D.train_dino(small, show_progress=False)
    assert len(history.losses) == 3 and all(math.isfinite(v) for v in history.losses)
    assert trainer.teacher(torch.rand(2, 3, 32, 32)).shape == (2, cfg.head["out_dim"])


# ---------------------------------------------------------------------------------- attention read-outs

def test_cls_attention_and_keys_match_a_manual_pass():
    torch.manual_seed(2)
    vit = D.DINO(VIT, HEAD).backbone.eval()
    images = torch.rand(2, 3, 32, 32, generator=gen())
    tokens = torch.cat([vit.cls_tokens(2), vit.patch_tokens(images)], 1)
    for block in vit.blocks[:-1]:
        tokens, _ = block(tokens)
    q, k, _ = vit.blocks[-1].attn.split_heads(vit.blocks[-1].norm1(tokens))  # (B, heads, T, D_h)
    manual = torch.softmax(q[:, :, :1] @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]), -1)[:, :, 0, 1:]
    assert torch.allclose(D.cls_attention(vit, images), manual, atol=1e-6)
    assert torch.allclose(D.last_block_keys(vit, images), k.transpose(1, 2).flatten(2)[:, 1:], atol=1e-6)


def test_mass_mask_keeps_the_smallest_set_holding_the_mass():
    attention = torch.tensor([[0.05, 0.5, 0.2, 0.25]])
    assert D.mass_mask(attention, 0.6).tolist() == [[False, True, False, True]]  # 0.5 + 0.25 >= 0.6
    assert D.mass_mask(attention, 0.5).tolist() == [[False, True, False, False]]
    assert D.mass_mask(attention * 3, 0.6).tolist() == [[False, True, False, True]]  # unnormalised is fine
    assert D.mass_mask(attention, 1.0).all()
    uniform = D.mass_mask(torch.full((2, 3, 10), 0.1), 0.6)
    assert uniform.shape == (2, 3, 10) and (uniform.sum(-1) == 6).all()


def test_patch_masks_iou_and_centre_prior():
    pixels = torch.zeros(1, 8, 8, dtype=torch.bool)
    pixels[0, :4, :4] = True
    objects = D.patch_masks(pixels, 4)
    assert objects.tolist() == [[True, False, False, False]]
    assert D.mask_iou(objects, objects).item() == 1.0
    assert D.mask_iou(torch.tensor([True, True, False, False]), objects[0]).item() == 0.5
    assert D.centre_disc(8, 1.0).sum() == 4  # the 2 x 2 patches around the centre
    radius, iou = D.centre_prior_iou(D.centre_disc(8, 2.0)[None].expand(3, -1), 8)
    assert iou == pytest.approx(1.0) and D.centre_disc(8, radius).equal(D.centre_disc(8, 2.0))


def test_attention_report_on_a_random_vit_has_mass_near_the_area():
    torch.manual_seed(3)
    vit = D.DINO(VIT, HEAD).backbone.eval()
    scenes = D.evaluation_scenes(40)
    report = D.attention_report(vit, scenes["images"], scenes["masks"])
    assert report["iou"].shape == (4,) and 0 <= report["best_iou"] <= 1
    assert (report["mass_on_object"] - report["object_area"]).abs().max() < 0.15


def test_tokencut_finds_a_block_of_similar_features():
    generator = gen(4)
    base = torch.randn(2, 16, generator=generator)
    features = torch.cat([base[0] + 0.1 * torch.randn(10, 16, generator=generator),
                          base[1] + 0.1 * torch.randn(54, 16, generator=generator)])
    tau = D.similarity_quantile_tau(features, 0.5)
    mask = D.tokencut_mask(features, tau)
    assert mask.dtype == np.bool_ and mask.shape == (64,)
    assert (mask[:10].all() and not mask[10:].any()) or (not mask[:10].any() and mask[10:].all())


def test_evaluation_scenes_are_fixed():
    a, b = D.evaluation_scenes(5), D.evaluation_scenes(5)
    assert torch.equal(a["images"], b["images"]) and a["masks"].shape == (5, 32, 32)
    assert torch.equal(a["images"], make_shapes(5, seed=10_000, **D.shapes_settings())["images"])


def test_make_shapes_striped_background_is_additive():
    flat = make_shapes(6, size=32, max_objects=1, min_radius=4, max_radius=8, seed=3, noise=0.0)
    striped = make_shapes(6, size=32, max_objects=1, min_radius=4, max_radius=8, seed=3, noise=0.0, background="stripes")
    outside = ~flat["masks"][:, 0]
    flat_spread = torch.stack([flat["images"][i][:, outside[i]].std(1).max() for i in range(6)])
    assert (flat_spread < 1e-6).all()  # today's behaviour by default: one colour
    outside = ~striped["masks"][:, 0]
    assert all(striped["images"][i][:, outside[i]].std(1).max() > 0.01 for i in range(6))  # a texture
    assert striped["images"].min() >= 0 and striped["images"].max() <= 1
    with pytest.raises(ValueError, match="background"):
        make_shapes(2, background="plaid")


def test_schematic_names_the_parts_of_the_method():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from course_lib.core.diagram import text_of

    fig = D.schematic()
    words = text_of(fig)
    plt.close(fig)
    for part in ("student", "teacher", "EMA", "stop-gradient", "centre", "multi-crop", "H(P_t, P_s)"):
        assert part in words, part
