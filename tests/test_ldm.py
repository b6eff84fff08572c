"""Chapter 13's latent diffusion: the KL autoencoder, its scale factor, the latent U-Net and the latent sampler."""
import pytest
import torch

from course_lib.topics.diffusion import NoiseSchedule
from course_lib.topics.ldm import (KLAutoencoder, LatentUNet, autoencoder_loss, autoencoder_terms, balanced_labels,
                                   decode_latents, drop_labels, encode_latents, evaluate_autoencoder, latent_ddpm_loss,
                                   latent_trajectory, sample_latent_diffusion, scale_factor_from, set_scale_factor)
from course_lib.topics.vae import gaussian_kl


@pytest.fixture(scope="module")
def autoencoder():
    torch.manual_seed(0)
    return KLAutoencoder(widths=(8, 16)).eval()


def test_autoencoder_shapes_and_pixel_range(autoencoder):
    x = torch.rand(3, 1, 28, 28)
    reconstruction, mu, logvar, z = autoencoder(x)
    assert reconstruction.shape == x.shape and mu.shape == logvar.shape == z.shape == (3, 4, 7, 7)
    assert 0 <= decode_latents(autoencoder, z * autoencoder.scale_factor).min()
    assert decode_latents(autoencoder, 100 * z).max() <= 1  # decode_latents clamps to [0, 1]


def test_autoencoder_rejects_bad_inputs(autoencoder):
    with pytest.raises(ValueError, match=r"\(N, 1, 28, 28\)"):
        autoencoder.encode(torch.rand(2, 28, 28))
    with pytest.raises(TypeError, match="float"):
        autoencoder.encode(torch.zeros(2, 1, 28, 28, dtype=torch.uint8))
    with pytest.raises(ValueError, match=r"\(N, 4, 7, 7\)"):
        autoencoder.decode(torch.randn(2, 196))
    with pytest.raises(ValueError, match="latent_channels"):
        KLAutoencoder(latent_channels=0)


def test_loss_is_summed_squared_error_plus_weighted_kl(autoencoder):
    x = torch.rand(4, 1, 28, 28)
    torch.manual_seed(1)
    se, kl = autoencoder_terms(autoencoder, x)
    torch.manual_seed(1)
    loss = autoencoder_loss(autoencoder, (x,), kl_weight=0.5)
    torch.testing.assert_close(loss, (se + 0.5 * kl).mean())
    mu, logvar = autoencoder.encode(x)
    torch.testing.assert_close(kl, gaussian_kl(mu.flatten(1), logvar.flatten(1)))


def test_scale_factor_gives_unit_variance_and_round_trips(autoencoder):
    x = torch.rand(64, 1, 28, 28)
    factor = set_scale_factor(autoencoder, x)
    assert float(autoencoder.scale_factor) == pytest.approx(factor, rel=1e-6)
    z = encode_latents(autoencoder, x)
    assert z.std().item() == pytest.approx(1.0, abs=1e-4)
    raw = encode_latents(autoencoder, x, scaled=False)
    torch.testing.assert_close(decode_latents(autoencoder, z), autoencoder.decode(raw), atol=1e-5, rtol=1e-5)
    assert scale_factor_from(torch.tensor([1.0, -1.0, 1.0, -1.0])) == pytest.approx(1 / torch.tensor([1.0, -1, 1, -1]).std().item())
    assert "scale_factor" in autoencoder.state_dict()


def test_evaluate_autoencoder_reports_mse_and_psnr(autoencoder):
    x = torch.rand(10, 1, 28, 28)
    report = evaluate_autoencoder(autoencoder, x, batch_size=4)
    mu, _ = autoencoder.encode(x)
    mse = (autoencoder.decode(mu) - x).pow(2).mean().item()
    assert report["mse_per_pixel"] == pytest.approx(mse, rel=1e-4)
    assert report["psnr_db"] == pytest.approx(-10 * torch.log10(torch.tensor(mse)).item(), rel=1e-4)


def test_latent_unet_shapes_zero_init_and_errors():
    model = LatentUNet(widths=(16, 32), emb_dim=32)
    z = torch.randn(2, 4, 7, 7)
    assert torch.equal(model(z, torch.tensor([1, 999]), torch.tensor([0, 10])), torch.zeros_like(z))
    with pytest.raises(ValueError, match="7, 7"):
        model(torch.randn(2, 1, 28, 28), torch.tensor([1, 2]))


def test_latent_loss_and_sampler_shapes(autoencoder):
    model = LatentUNet(widths=(16, 32), emb_dim=32)
    schedule = NoiseSchedule.linear(100)
    loss = latent_ddpm_loss(model, torch.randn(6, 4, 7, 7), balanced_labels(6), schedule, label_dropout=0.5)
    assert loss.ndim == 0 and loss.item() == pytest.approx(1.0, abs=0.5)  # eps_hat = 0 at init: loss ~ E eps^2 = 1
    images = sample_latent_diffusion(model, autoencoder, balanced_labels(5), schedule, steps=3,
                                     generator=torch.Generator().manual_seed(0), batch_size=2)
    assert images.shape == (5, 1, 28, 28) and 0 <= images.min() and images.max() <= 1


def test_drop_labels_rate_and_balanced_labels():
    labels = torch.zeros(10_000, dtype=torch.long)
    dropped = drop_labels(labels, 0.1, 10, torch.Generator().manual_seed(0))
    assert set(dropped.unique().tolist()) == {0, 10}
    assert (dropped == 10).float().mean().item() == pytest.approx(0.1, abs=0.01)
    assert torch.bincount(balanced_labels(30)).tolist() == [3] * 10


def test_shipped_autoencoder_has_its_scale_factor():
    from course_lib.core.checkpointing import read_manifest
    from course_lib.zoo import load_shipped

    entry = read_manifest().get("ldm_autoencoder")
    if entry is None:
        pytest.skip("ldm_autoencoder not shipped yet")
    model = load_shipped("ldm_autoencoder")
    assert float(model.scale_factor) == pytest.approx(entry["metrics"]["scale_factor"], rel=1e-3)


def test_latent_trajectory_ends_at_the_samples_and_keeps_every_step(autoencoder):
    torch.manual_seed(1)
    model = LatentUNet(widths=(16, 32), emb_dim=32, num_classes=10).eval()
    for p in model.parameters():  # the zero-initialised output layer would make every eps 0
        p.data += 0.05 * torch.randn_like(p)
    schedule = NoiseSchedule.linear(100)
    for scale in (1.0, 3.0):
        frames = latent_trajectory(model, autoencoder, balanced_labels(4), schedule, steps=5, guidance_scale=scale,
                                   generator=torch.Generator().manual_seed(0))
        samples = sample_latent_diffusion(model, autoencoder, balanced_labels(4), schedule, steps=5,
                                          guidance_scale=scale, generator=torch.Generator().manual_seed(0))
        assert [t for t, _, _ in frames] == [100, 75, 50, 26, 1, 0]
        assert all(zt.shape == z0.shape == (4, 1, 28, 28) for _, zt, z0 in frames)
        torch.testing.assert_close(frames[-1][1], samples)


def test_ldm_schematic_names_its_parts():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from course_lib.core.diagram import text_of
    from course_lib.topics.ldm import schematic

    fig = schematic()
    text = text_of(fig)
    plt.close(fig)
    assert "encoder" in text and "decoder" in text and "kappa" in text
