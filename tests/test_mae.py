"""course_lib.topics.mae: per-sample random masking, the masked-patch loss, the MAE encoder/decoder, reconstructions."""
import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from course_lib import zoo
from course_lib.topics import mae as M
from course_lib.topics.vit import patchify


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


SMALL = dict(image_size=28, patch_size=4, channels=1, dim=32, depth=2, heads=4, mlp_ratio=2.0, decoder_dim=16,
             decoder_depth=1, decoder_heads=2)


def test_random_masking_counts_and_inverse_permutation():
    ids_keep, ids_restore, mask = M.random_masking(5, 49, 0.75, gen())
    n_keep = int(49 * 0.25)
    assert ids_keep.shape == (5, n_keep) and ids_restore.shape == (5, 49) and mask.shape == (5, 49)
    assert (mask.sum(1) == 49 - n_keep).all()
    for b in range(5):
        kept = torch.zeros(49)
        kept[ids_keep[b]] = 1
        assert torch.equal(kept, 1 - mask[b])  # the kept ids are exactly the visible patches
    noise = torch.rand(5, 49, generator=gen())  # the same noise the call drew
    ids_shuffle = noise.argsort(1)
    assert torch.equal(torch.gather(ids_shuffle, 1, ids_restore), torch.arange(49).expand(5, -1))
    assert len({tuple(row.tolist()) for row in mask}) == 5  # a different mask for every sample


@pytest.mark.parametrize("ratio", [0.0, 0.5, 0.9, 0.99])
def test_random_masking_keeps_at_least_one_patch(ratio):
    ids_keep, _, mask = M.random_masking(2, 16, ratio, gen())
    assert ids_keep.shape[1] == max(int(16 * (1 - ratio)), 1) and ((1 - mask).sum(1) == ids_keep.shape[1]).all()


def test_random_masking_rejects_bad_ratios():
    with pytest.raises(ValueError, match="mask_ratio"):
        M.random_masking(2, 16, 1.0)


def test_loss_counts_only_masked_patches():
    pred = torch.randn(3, 10, 16, generator=gen(), requires_grad=True)
    patches = torch.randn(3, 10, 16, generator=gen(1))
    mask = (torch.rand(3, 10, generator=gen(2)) < 0.7).float()
    loss = M.mae_loss(pred, patches, mask)
    expected = ((pred - patches) ** 2).mean(-1)[mask.bool()].mean()
    assert torch.allclose(loss, expected)
    loss.backward()
    assert torch.equal(pred.grad[~mask.bool()], torch.zeros_like(pred.grad[~mask.bool()]))


def test_normalized_target_has_zero_mean_unit_variance_per_patch():
    patches = 3 + 2 * torch.randn(4, 9, 16, generator=gen(), dtype=torch.float64)
    target = M.normalized_patches(patches)
    assert torch.allclose(target.mean(-1), torch.zeros(4, 9, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(target.var(-1), torch.ones(4, 9, dtype=torch.float64), atol=1e-5)


def test_loss_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="shapes"):
        M.mae_loss(torch.zeros(2, 4, 16), torch.zeros(2, 4, 9), torch.zeros(2, 4))


def test_forward_shapes_and_the_encoder_never_sees_hidden_pixels():
    torch.manual_seed(0)
    model = M.MAE(**SMALL).eval()
    images = torch.rand(3, 1, 28, 28, generator=gen())
    loss, pred, mask = model(images, 0.75, gen(1))
    assert pred.shape == (3, 49, 16) and mask.shape == (3, 49) and loss.ndim == 0 and torch.isfinite(loss)
    hidden = mask[..., None].bool()
    changed = patchify(images, 4).masked_fill(hidden, 0.123)  # repaint every hidden patch
    from course_lib.topics.vit import unpatchify
    _, pred_changed, mask_changed = model(unpatchify(changed, 4, 1, 28, 28), 0.75, gen(1))
    assert torch.equal(mask, mask_changed) and torch.allclose(pred, pred_changed, atol=1e-6)


def step_by_step_forward(model, images, ids_keep, ids_restore):
    """The chapter's build: embed patches, gather the visible ones, encode, insert mask tokens, unshuffle, decode."""
    enc = model.encoder
    tokens = enc.patch_embed(patchify(images, 4)) + enc.position[:, 1:]
    visible = torch.stack([tokens[b, ids_keep[b]] for b in range(len(images))])
    x = torch.cat([(enc.cls_token + enc.position[:, :1]).expand(len(images), -1, -1), visible], 1)
    for block in enc.blocks:
        x, _ = block(x)
    latent = enc.norm(x)
    y = model.decoder_embed(latent)
    full = model.mask_token.expand(len(images), 49, -1).clone()
    for b in range(len(images)):
        full[b, ids_keep[b]] = y[b, 1:]
    x = torch.cat([y[:, :1], full], 1) + model.decoder_position
    for block in model.decoder_blocks:
        x, _ = block(x)
    return model.decoder_pred(model.decoder_norm(x))[:, 1:]


def test_step_by_step_build_agrees_with_the_library():
    torch.manual_seed(1)
    model = M.MAE(**SMALL).eval()
    images = torch.rand(2, 1, 28, 28, generator=gen())
    ids_keep, ids_restore, _ = M.random_masking(2, 49, 0.75, gen(3))
    with torch.no_grad():
        library = model.decode(model.encode_visible(images, ids_keep), ids_restore)
        mine = step_by_step_forward(model, images, ids_keep, ids_restore)
    assert torch.allclose(library, mine, atol=1e-5)


def test_reconstruct_keeps_visible_patches():
    torch.manual_seed(2)
    model = M.MAE(**SMALL)
    images = torch.rand(2, 1, 28, 28, generator=gen())
    masked, predicted, pasted = M.reconstruct(model, images, 0.5, gen(4))
    assert masked.shape == predicted.shape == pasted.shape == images.shape
    _, _, mask = model(images, 0.5, gen(4))
    visible = ~mask.bool()
    assert torch.allclose(patchify(pasted, 4)[visible], patchify(images, 4)[visible])
    assert torch.allclose(patchify(masked, 4)[~visible], torch.tensor(0.5))


def test_evaluate_and_the_recipe_under_ci():
    cfg = zoo.settings("mae_mnist", "ci")
    small = SimpleNamespace(**{**vars(cfg), "steps": 3, "batch_size": 8, "eval_images": 50})
    model, history, metrics = M.train_mae(small, seed=0, show_progress=False)
    assert len(history.losses) == 3 and all(math.isfinite(v) for v in history.losses)
    assert set(metrics) >= {"test_masked_mse", "test_mean_fill_mse"}


def test_schematic_counts_match_the_masking():
    """The picture's "12 of 49" visible patches is what random_masking keeps at 75% on a 7 x 7 grid."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from course_lib.core.diagram import text_of

    fig = M.schematic()
    words = text_of(fig)
    plt.close(fig)
    ids_keep, _, mask = M.random_masking(2, 49, 0.75, torch.Generator().manual_seed(0))
    assert f"{ids_keep.shape[1]} of {mask.shape[1]}" in words and "49 patches of 4 × 4" in words
