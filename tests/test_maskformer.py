"""course_lib.topics.maskformer: dice, focal, the mask classification loss, masked attention and its empty-mask fix."""
import pytest
import torch
import torch.nn.functional as F

from course_lib.topics import maskformer as M
from course_lib.topics.detr import brute_force_match


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_dice_of_identical_confident_masks_is_zero_and_disjoint_is_near_one():
    target = torch.zeros(1, 8, 8)
    target[0, 2:6, 2:6] = 1
    logits = 50 * (2 * target - 1)
    assert M.dice_loss(logits, target).item() == pytest.approx(0.0, abs=1e-6)
    other = torch.roll(target, 4, dims=2)
    assert M.dice_loss(50 * (2 * other - 1), target).item() > 0.9


def test_focal_with_gamma_zero_is_bce_and_focal_down_weights_easy_pixels():
    logits, target = torch.randn(3, 20, generator=gen()), (torch.rand(3, 20, generator=gen(1)) > 0.5).float()
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none").mean(-1)
    assert torch.allclose(M.sigmoid_focal_loss(logits, target, alpha=None, gamma=0.0), bce, atol=1e-6)
    assert (M.sigmoid_focal_loss(logits, target, alpha=None, gamma=2.0) <= bce).all()


def test_matching_matches_brute_force_and_perfect_prediction_has_zero_mask_loss():
    masks = torch.zeros(2, 8, 8)
    masks[0, :4, :4] = 1
    masks[1, 4:, 4:] = 1
    labels = torch.tensor([0, 2])
    class_logits = torch.full((4, 4), -20.0)
    class_logits[1, 0] = class_logits[3, 2] = class_logits[0, 3] = class_logits[2, 3] = 20.0
    mask_logits = torch.randn(4, 8, 8, generator=gen())
    mask_logits[1], mask_logits[3] = 40 * (2 * masks[0] - 1), 40 * (2 * masks[1] - 1)
    loss = M.mask_classification_loss(class_logits, mask_logits, labels, masks)
    rows, cols = loss["matches"]
    assert rows[torch.argsort(cols)].tolist() == [1, 3]
    assert loss["loss_dice"].item() < 1e-6 and loss["loss_focal"].item() < 1e-6 and loss["loss_ce"].item() < 1e-6
    cost = M.mask_matching_cost(class_logits, mask_logits, labels, masks)
    assert brute_force_match(cost)[0].tolist() == [1, 3]


def test_masked_attention_all_ones_is_plain_attention_and_zero_outside():
    q, k, v = (torch.randn(2, 3, 4, generator=gen(i)) for i in range(3))
    k, v = torch.randn(2, 6, 4, generator=gen(4)), torch.randn(2, 6, 4, generator=gen(5))
    everything = torch.full((2, 3, 6), 10.0)
    out, w = M.masked_attention(q, k, v, everything)
    plain = F.scaled_dot_product_attention(q, k, v)
    assert torch.allclose(out, plain, atol=1e-6)
    mask_logits = torch.full((2, 3, 6), -10.0)
    mask_logits[:, :, :2] = 10.0
    _, w = M.masked_attention(q, k, v, mask_logits)
    assert (w[..., 2:] == 0).all() and torch.allclose(w.sum(-1), torch.ones(2, 3))


def test_empty_mask_gives_nan_without_the_fix_and_attends_everywhere_with_it():
    q, k, v = torch.randn(1, 2, 4), torch.randn(1, 5, 4), torch.randn(1, 5, 4)
    mask_logits = torch.full((1, 2, 5), -10.0)
    mask_logits[0, 0, 1] = 10.0  # query 0 has one pixel, query 1 none
    broken, _ = M.masked_attention(q, k, v, mask_logits, fix_empty=False)
    assert torch.isnan(broken[0, 1]).all() and not torch.isnan(broken[0, 0]).any()
    fixed, w = M.masked_attention(q, k, v, mask_logits)
    assert not torch.isnan(fixed).any() and (w[0, 1] > 0).all()


def test_schematic_names_the_mask_embeddings_and_the_dot_product():
    import matplotlib.pyplot as plt

    from course_lib.core.diagram import text_of

    fig = M.schematic()
    words = text_of(fig)
    plt.close(fig)
    for part in ("per-pixel embeddings", "mask embeddings", "dot product", "class head", "dice"):
        assert part in words, part
