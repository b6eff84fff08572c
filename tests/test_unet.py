"""course_lib.topics.unet: the time embedding, the scale-shift ResBlock, self-attention, and the U-Net."""
import math

import pytest
import torch
import torch.nn.functional as F

from course_lib.core.layers import sinusoidal_embedding
from course_lib.topics.unet import ResBlock, SelfAttention, UNet


def test_sinusoidal_embedding_values():
    emb = sinusoidal_embedding(torch.tensor([0, 1, 500]), 8)
    assert emb.shape == (3, 8)
    assert torch.allclose(emb[0], torch.tensor([0.0] * 4 + [1.0] * 4))  # sin 0, cos 0
    freqs = torch.exp(-math.log(10_000.0) * torch.arange(4) / 4)
    assert torch.allclose(emb[2], torch.cat([torch.sin(500 * freqs), torch.cos(500 * freqs)]), atol=1e-5)
    assert torch.allclose(emb.pow(2)[:, :4] + emb.pow(2)[:, 4:], torch.ones(3, 4), atol=1e-6)  # sin^2 + cos^2
    with pytest.raises(ValueError, match="even"):
        sinusoidal_embedding(torch.tensor([1]), 7)


def test_resblock_starts_as_its_skip_path():
    torch.manual_seed(0)
    x, emb = torch.randn(2, 8, 5, 5), torch.randn(2, 16)
    same = ResBlock(8, 8, emb_dim=16)
    assert torch.allclose(same(x, emb), x)  # conv2 is zero at initialisation
    wider = ResBlock(8, 16, emb_dim=16)
    assert torch.allclose(wider(x, emb), wider.skip(x))


def test_resblock_scale_shift_by_hand():
    torch.manual_seed(1)
    block = ResBlock(8, 8, emb_dim=4)
    torch.nn.init.normal_(block.conv2.weight, std=0.1)
    x, emb = torch.randn(3, 8, 4, 4), torch.randn(3, 4)
    h = block.conv1(F.silu(block.norm1(x)))
    scale, shift = block.emb(F.silu(emb)).chunk(2, dim=1)  # (N, C) each
    h = block.norm2(h) * (1 + scale[:, :, None, None]) + shift[:, :, None, None]
    expected = block.conv2(F.silu(h)) + x
    assert torch.allclose(block(x, emb), expected, atol=1e-6)


def test_self_attention_by_hand_and_permutation_equivariance():
    torch.manual_seed(2)
    attn = SelfAttention(16, heads=4)
    x = torch.randn(2, 16, 3, 3)
    assert torch.allclose(attn(x), x)  # the output projection is zero at initialisation
    torch.nn.init.normal_(attn.out.weight, std=0.2)
    q, k, v = attn.qkv(attn.norm(x)).reshape(2, 3, 4, 4, 9).unbind(1)  # (N, heads, D_h, HW)
    weights = torch.softmax(q.transpose(-1, -2) @ k / math.sqrt(4), dim=-1)  # (N, heads, HW, HW)
    out = (weights @ v.transpose(-1, -2)).transpose(-1, -2).reshape(2, 16, 3, 3)
    assert torch.allclose(attn(x), x + attn.out(out), atol=1e-5)
    # attention treats the positions as a set: permuting pixels permutes the output the same way
    perm = torch.randperm(9)
    flat = x.reshape(2, 16, 9)
    permuted = attn(flat[:, :, perm].reshape(2, 16, 3, 3)).reshape(2, 16, 9)
    assert torch.allclose(permuted, attn(x).reshape(2, 16, 9)[:, :, perm], atol=1e-5)
    with pytest.raises(ValueError, match="divisible"):
        SelfAttention(10, heads=4)


def small_unet(**kwargs):
    return UNet(widths=(8, 16, 16), emb_dim=16, heads=2, **kwargs)


def as_if_trained(model):
    """Give the zero-initialised layers (each block's last conv, attention outputs, the output conv) random weights:
    at initialisation every residual branch is switched off, so neither t nor labels could change the output."""
    for name, p in model.named_parameters():
        if not p.any():
            torch.nn.init.normal_(p, std=0.1)
    return model


def test_unet_shapes_and_zero_output_at_init():
    torch.manual_seed(3)
    model = small_unet()
    x = torch.randn(2, 1, 28, 28)
    out = model(x, torch.tensor([1, 1000]))
    assert out.shape == (2, 1, 28, 28) and torch.count_nonzero(out) == 0
    assert torch.equal(model(x, torch.tensor(7)), model(x, torch.tensor([7, 7])))


def test_unet_depends_on_t_once_its_branches_are_on():
    torch.manual_seed(4)
    model = as_if_trained(small_unet())
    x = torch.randn(1, 1, 28, 28)
    assert not torch.allclose(model(x, torch.tensor([10])), model(x, torch.tensor([900])))


def test_unet_input_checks_and_labels():
    model = small_unet()
    with pytest.raises(ValueError, match="28, 28"):
        model(torch.randn(1, 1, 32, 32), torch.tensor([1]))
    with pytest.raises(ValueError, match="unconditional"):
        model(torch.randn(1, 1, 28, 28), torch.tensor([1]), torch.tensor([3]))
    conditional = as_if_trained(small_unet(num_classes=10))
    x = torch.randn(2, 1, 28, 28)
    null = conditional(x, torch.tensor([5, 5]))  # labels=None: the "no label" token 10
    assert torch.allclose(null, conditional(x, torch.tensor([5, 5]), torch.tensor([10, 10])))
    assert not torch.allclose(null, conditional(x, torch.tensor([5, 5]), torch.tensor([3, 3])))


def test_unet_config_round_trip():
    model = small_unet(num_classes=10)
    clone = UNet(**model.config)
    clone.load_state_dict(model.state_dict())  # same names and shapes


def test_architecture_is_unchanged():
    # Shipped checkpoints (ddpm_mnist) store UNet's config in the manifest and rebuild it from there: a change to the
    # layers or their names would break them silently. These parameter counts pin the architecture.
    assert UNet().config["widths"] == (32, 64, 128)
    assert sum(p.numel() for p in UNet().parameters()) == 2_219_809
    assert sum(p.numel() for p in UNet(widths=(16, 32, 64)).parameters()) == 627_217


def test_schematic_names_the_paths_the_skips_and_the_time_embedding():
    import matplotlib.pyplot as plt

    from course_lib.core.diagram import text_of
    from course_lib.topics.unet import schematic

    fig = schematic()
    try:
        words = text_of(fig)
        for part in ("skip: concatenate channels", "sinusoidal", "MLP", "+emb", "attention", "7x7", "28x28"):
            assert part in words, f"the U-Net schematic does not name {part!r}"
        tags = [t for ax in fig.axes for t in ax.texts if t.get_text() == "+emb"]
        assert len(tags) == 7  # every residual stage: three down, three up, the middle
        fig.canvas.draw()
    finally:
        plt.close(fig)
