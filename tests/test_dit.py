"""Chapter 13's DiT: adaLN-Zero makes a fresh block the identity and a fresh DiT output zeros; shapes; positions."""
import pytest
import torch

from course_lib.core.layers import sinusoidal_embedding
from course_lib.topics.dit import DiT, DiTBlock, FinalLayer, modulate, sincos_position_embedding
from course_lib.topics.vit import patchify


def _perturb(module, seed=0):
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=generator))


def test_fresh_block_is_exactly_the_identity():
    block = DiTBlock(32, heads=4)
    x, c = torch.randn(3, 9, 32), torch.randn(3, 32)
    out, weights = block(x, c)
    assert torch.equal(out, x)
    assert weights.shape == (3, 4, 9, 9)
    torch.testing.assert_close(weights.sum(-1), torch.ones(3, 4, 9))


def test_fresh_dit_outputs_zeros_and_a_trained_one_does_not():
    model = DiT(dim=32, depth=2, heads=4)
    z, t, y = torch.randn(5, 4, 7, 7), torch.randint(1, 1001, (5,)), torch.randint(0, 10, (5,))
    assert torch.equal(model(z, t, y), torch.zeros_like(z))
    _perturb(model)
    assert model(z, t, y).abs().max() > 1e-3


def test_block_matches_the_written_out_adaln_zero_equations():
    block = DiTBlock(16, heads=2, mlp_ratio=2.0)
    _perturb(block, seed=1)
    x, c = torch.randn(2, 5, 16), torch.randn(2, 16)
    params = block.adaLN_modulation[1](torch.nn.functional.silu(c))  # (2, 96)
    shift1, scale1, gate1, shift2, scale2, gate2 = params.split(16, dim=1)
    ln = torch.nn.functional.layer_norm
    h = ln(x, (16,), eps=1e-6) * (1 + scale1[:, None]) + shift1[:, None]
    x1 = x + gate1[:, None] * block.attn(h)[0]
    h2 = ln(x1, (16,), eps=1e-6) * (1 + scale2[:, None]) + shift2[:, None]
    expected = x1 + gate2[:, None] * block.mlp(h2)
    torch.testing.assert_close(block(x, c)[0], expected)


def test_modulate_broadcasts_over_tokens():
    x, shift, scale = torch.randn(2, 3, 4), torch.randn(2, 4), torch.randn(2, 4)
    torch.testing.assert_close(modulate(x, shift, scale)[:, 1], x[:, 1] * (1 + scale) + shift)


@pytest.mark.parametrize("input_size, patch_size, tokens", [(7, 1, 49), (7, 7, 1), (8, 2, 16), (8, 4, 4)])
def test_patch_sizes_give_the_token_count_and_shapes(input_size, patch_size, tokens):
    model = DiT(input_size=input_size, patch_size=patch_size, dim=16, depth=1, heads=2)
    _perturb(model)
    z = torch.randn(2, 4, input_size, input_size)
    out, attentions = model(z, torch.tensor([1, 500]), torch.tensor([3, 10]), return_attention=True)
    assert out.shape == z.shape
    assert attentions[0].shape == (2, 2, tokens, tokens)
    assert patchify(z, patch_size).shape == (2, tokens, 4 * patch_size ** 2)


def test_sincos_position_embedding_is_row_then_column_features():
    pos = sincos_position_embedding(3, 8)  # (9, 8)
    assert pos.shape == (9, 8)
    torch.testing.assert_close(pos[5, :4], sinusoidal_embedding(torch.tensor([1]), 4)[0])  # row 1
    torch.testing.assert_close(pos[5, 4:], sinusoidal_embedding(torch.tensor([2]), 4)[0])  # column 2
    with pytest.raises(ValueError, match="divisible by 4"):
        sincos_position_embedding(3, 6)


def test_labels_change_the_output_and_none_means_the_null_label():
    model = DiT(dim=16, depth=1, heads=2)
    _perturb(model)
    z, t = torch.randn(2, 4, 7, 7), torch.tensor([10, 10])
    assert not torch.allclose(model(z, t, torch.tensor([0, 0])), model(z, t, torch.tensor([1, 1])))
    torch.testing.assert_close(model(z, t), model(z, t, torch.tensor([10, 10])))


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="multiple of patch_size"):
        DiT(input_size=7, patch_size=2)
    with pytest.raises(ValueError, match="expects latents of shape"):
        DiT(dim=16, depth=1, heads=2)(torch.randn(2, 1, 28, 28), torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="unconditional"):
        DiT(dim=16, depth=1, heads=2, num_classes=None)(torch.randn(1, 4, 7, 7), torch.tensor([1]), torch.tensor([0]))


def test_final_layer_is_zero_at_initialisation():
    layer = FinalLayer(16, 4)
    assert torch.equal(layer(torch.randn(2, 3, 16), torch.randn(2, 16)), torch.zeros(2, 3, 4))


def test_config_rebuilds_the_architecture_and_shipped_weights_load():
    from course_lib.core.checkpointing import read_manifest
    from course_lib.zoo import MODELS, load_shipped

    model = DiT(dim=32, depth=2, heads=4)
    rebuilt = DiT(**model.config)
    rebuilt.load_state_dict(model.state_dict())
    if "dit_mnist" in read_manifest():
        shipped = load_shipped("dit_mnist")
        assert isinstance(shipped, DiT)
        assert "dit_mnist" in MODELS


def test_dit_recipe_runs_under_ci_on_the_shipped_autoencoder():
    from course_lib import zoo
    from course_lib.core.checkpointing import read_manifest

    if "ldm_autoencoder" not in read_manifest():
        pytest.skip("ldm_autoencoder not shipped yet")
    model, history, metrics, recipe = zoo.MODELS["dit_mnist"].train("ci", show_progress=False)
    assert isinstance(model, DiT) and len(history.losses) == recipe["steps"] == 30
    assert metrics["final_train_loss"] < 1.5 and recipe["model"] == model.config


def test_bench_compares_the_latent_dit_with_pixel_space_ddpm():
    from course_lib.zoo import BenchOptions
    from course_lib.zoo.bench import measure

    options = BenchOptions(fid_samples=30)  # 30 samples keep it short; the bench uses 500
    autoencoder = measure("ldm_autoencoder", options)
    assert 0 < autoencoder.value < autoencoder.references["the mean training digit"]
    assert autoencoder.references["PSNR dB"] > 0 and autoencoder.references["scale factor"] > 0
    dit = measure("dit_mnist", options)
    assert dit.value > 0 and dit.references["real-vs-real floor at the same n"] > 0
    assert dit.references["with CFG s = 5"] > 0
    assert dit.references["pixel-space ddpm_mnist (unconditional), same n and steps"] > 0
    latent_ms = dit.references["sampling ms/image, latent DiT + decoder"]
    pixel_ms = dit.references["sampling ms/image, pixel U-Net"]
    # both are measured and reported; which is faster is a benchmark's question (`make bench`, 500 samples on an idle
    # machine: 3.5x), not a test's: wall-clock times taken while other jobs run can come out either way
    assert latent_ms > 0 and pixel_ms > 0


def test_dit_schematic_names_the_adaln_zero_parts():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from course_lib.core.diagram import text_of
    from course_lib.topics.dit import schematic

    fig = schematic()
    text = text_of(fig)
    plt.close(fig)
    assert all(word in text for word in ("patchify", "DiT block", "alpha_1", "identity", "class")), text
