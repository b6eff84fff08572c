"""course_lib.topics.vae: reparameterization, Gaussian KL, Bernoulli likelihood, binarization, the conv VAE, ELBO and IWAE."""
import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch.distributions import Normal, kl_divergence

from course_lib import zoo
from course_lib.topics import vae as V
from course_lib.zoo import vae_mnist


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------------------------- the pieces

def test_reparameterize_matches_formula_and_passes_gradients():
    mu = torch.randn(4, 3, generator=gen(), requires_grad=True)
    logvar = torch.randn(4, 3, generator=gen(1), requires_grad=True)
    eps = torch.randn(4, 3, generator=gen(2))
    z = V.reparameterize(mu, logvar, eps=eps)
    assert torch.allclose(z, mu + torch.exp(0.5 * logvar) * eps)
    z.sum().backward()
    assert torch.allclose(mu.grad, torch.ones(4, 3))
    assert torch.allclose(logvar.grad, 0.5 * torch.exp(0.5 * logvar.detach()) * eps)


def test_reparameterize_samples_have_the_right_moments():
    mu, logvar = torch.tensor([[1.0, -2.0]]).expand(20_000, 2), torch.tensor([[0.0, math.log(4.0)]]).expand(20_000, 2)
    z = V.reparameterize(mu, logvar, generator=gen())
    assert torch.allclose(z.mean(0), torch.tensor([1.0, -2.0]), atol=0.05)
    assert torch.allclose(z.var(0), torch.tensor([1.0, 4.0]), rtol=0.05)  # logvar is log sigma^2


def test_reparameterize_is_reproducible_with_a_generator():
    mu, logvar = torch.zeros(2, 5), torch.zeros(2, 5)
    assert torch.equal(V.reparameterize(mu, logvar, generator=gen(3)), V.reparameterize(mu, logvar, generator=gen(3)))


@pytest.mark.parametrize("mu, logvar", [(torch.zeros(3), torch.zeros(3)), (torch.zeros(2, 3), torch.zeros(2, 4))])
def test_reparameterize_rejects_bad_shapes(mu, logvar):
    with pytest.raises(ValueError):
        V.reparameterize(mu, logvar)


def test_reparameterize_rejects_eps_of_the_wrong_shape():
    with pytest.raises(ValueError, match="eps"):
        V.reparameterize(torch.zeros(2, 3), torch.zeros(2, 3), eps=torch.zeros(3, 2))


def test_gaussian_kl_matches_torch_distributions():
    mu = 2 * torch.randn(5, 7, generator=gen(), dtype=torch.float64)
    logvar = torch.randn(5, 7, generator=gen(1), dtype=torch.float64)
    expected = kl_divergence(Normal(mu, torch.exp(0.5 * logvar)), Normal(0.0, 1.0)).sum(1)
    assert torch.allclose(V.gaussian_kl(mu, logvar), expected, atol=1e-12)


def test_gaussian_kl_is_zero_at_the_prior_and_positive_elsewhere():
    assert torch.equal(V.gaussian_kl(torch.zeros(2, 4), torch.zeros(2, 4)), torch.zeros(2))
    kl = V.gaussian_kl(torch.randn(100, 3, generator=gen()), torch.randn(100, 3, generator=gen(1)))
    assert kl.shape == (100,) and (kl > 0).all()


def test_diagonal_gaussian_kl_matches_torch_distributions_and_reduces_to_the_prior_case():
    mu_q, logvar_q, mu_p, logvar_p = (torch.randn(5, 7, generator=gen(s), dtype=torch.float64) for s in range(4))
    expected = kl_divergence(Normal(mu_q, torch.exp(0.5 * logvar_q)), Normal(mu_p, torch.exp(0.5 * logvar_p))).sum(1)
    assert torch.allclose(V.diagonal_gaussian_kl(mu_q, logvar_q, mu_p, logvar_p), expected, atol=1e-12)
    zeros = torch.zeros_like(mu_q)
    assert torch.allclose(V.diagonal_gaussian_kl(mu_q, logvar_q, zeros, zeros), V.gaussian_kl(mu_q, logvar_q))
    assert torch.allclose(V.diagonal_gaussian_kl(mu_q, logvar_q, mu_q, logvar_q), torch.zeros(5, dtype=torch.float64))
    with pytest.raises(ValueError):
        V.diagonal_gaussian_kl(mu_q, logvar_q, mu_p[:, :3], logvar_p[:, :3])


def test_log_normal_matches_torch_distributions():
    z, mu, logvar = (torch.randn(6, 4, generator=gen(s), dtype=torch.float64) for s in range(3))
    expected = Normal(mu, torch.exp(0.5 * logvar)).log_prob(z).sum(-1)
    assert torch.allclose(V.log_normal(z, mu, logvar), expected)
    assert torch.allclose(V.log_normal(z), Normal(0.0, 1.0).log_prob(z).sum(-1))


def test_bernoulli_log_likelihood_is_minus_summed_bce():
    logits = 5 * torch.randn(3, 1, 28, 28, generator=gen())
    x = torch.bernoulli(torch.full((3, 1, 28, 28), 0.3), generator=gen(1))
    expected = -F.binary_cross_entropy_with_logits(logits, x, reduction="sum") / 3
    assert torch.allclose(V.bernoulli_log_likelihood(logits, x).mean(), expected, rtol=1e-5)
    assert torch.isfinite(V.bernoulli_log_likelihood(torch.full((1, 4), 200.0), torch.zeros(1, 4))).all()


def test_bernoulli_log_likelihood_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="same shape"):
        V.bernoulli_log_likelihood(torch.zeros(2, 1, 28, 28), torch.zeros(2, 784))


def test_negative_elbo_adds_the_two_terms():
    logits = torch.randn(2, 1, 28, 28, generator=gen())
    x = torch.bernoulli(torch.full((2, 1, 28, 28), 0.5), generator=gen(1))
    mu, logvar = torch.randn(2, 4, generator=gen(2)), torch.randn(2, 4, generator=gen(3))
    expected = -V.bernoulli_log_likelihood(logits, x) + V.gaussian_kl(mu, logvar)
    assert torch.allclose(V.negative_elbo(logits, x, mu, logvar), expected)


def test_binarize_gives_zeros_and_ones_with_the_right_mean_and_is_seeded():
    x = torch.full((200, 1, 28, 28), 0.25)
    b = V.binarize(x, gen(5))
    assert set(b.unique().tolist()) <= {0.0, 1.0} and abs(b.mean().item() - 0.25) < 0.01
    assert torch.equal(b, V.binarize(x, gen(5)))


@pytest.mark.parametrize("bad", [torch.full((2, 2), 1.5), torch.full((2, 2), -0.1), torch.ones(2, 2, dtype=torch.uint8)])
def test_binarize_rejects_values_outside_0_1(bad):
    with pytest.raises(ValueError, match="\\[0, 1\\]"):
        V.binarize(bad)


def test_binarized_mnist_is_fixed_by_its_seed():
    a, b = V.binarized_mnist("test", seed=0, n=50), V.binarized_mnist("test", seed=0, n=50)
    assert a.shape == (50, 1, 28, 28) and torch.equal(a, b)
    assert set(a.unique().tolist()) == {0.0, 1.0}
    assert not torch.equal(a, V.binarized_mnist("test", seed=1, n=50))


def test_independent_pixel_baseline_at_one_half_is_784_log_2():
    x_train = torch.full((10, 1, 28, 28), 0.5)
    x_test = torch.bernoulli(torch.full((3, 1, 28, 28), 0.5), generator=gen())
    assert V.independent_pixel_nll(x_train, x_test) == pytest.approx(784 * math.log(2))


# ---------------------------------------------------------------------------------- the model

@pytest.mark.parametrize("latent_dim", [2, 16])
def test_conv_vae_shapes(latent_dim):
    model = V.ConvVAE(latent_dim=latent_dim, channels=(4, 8), hidden=16)
    x = torch.rand(3, 1, 28, 28, generator=gen())
    logits, mu, logvar, z = model(x, generator=gen(1))
    assert logits.shape == (3, 1, 28, 28) and mu.shape == logvar.shape == z.shape == (3, latent_dim)
    assert model.decode(torch.zeros(5, latent_dim)).shape == (5, 1, 28, 28)


def test_conv_vae_config_rebuilds_the_same_architecture():
    model = V.ConvVAE(latent_dim=3, channels=(4, 8), hidden=16)
    twin = zoo.MODELS["vae_mnist"].build({"recipe": {"model": dict(model.config, channels=list(model.config["channels"]))}})
    twin.load_state_dict(model.state_dict())
    x = torch.rand(2, 1, 28, 28, generator=gen())
    assert torch.equal(twin.encode(x)[0], model.encode(x)[0])


@pytest.mark.parametrize("x, error", [(torch.rand(2, 784), ValueError), (torch.rand(2, 3, 28, 28), ValueError),
                                      (torch.ones(2, 1, 28, 28, dtype=torch.uint8), TypeError)])
def test_conv_vae_encode_rejects_bad_input(x, error):
    with pytest.raises(error):
        V.ConvVAE(latent_dim=2, channels=(4, 8), hidden=16).encode(x)


def test_conv_vae_decode_rejects_wrong_latent_size():
    with pytest.raises(ValueError, match="latents"):
        V.ConvVAE(latent_dim=2, channels=(4, 8), hidden=16).decode(torch.zeros(3, 5))


def test_conv_vae_rejects_zero_latents():
    with pytest.raises(ValueError):
        V.ConvVAE(latent_dim=0)


# ---------------------------------------------------------------------------------- objectives

def tiny_model(seed=0):
    torch.manual_seed(seed)
    return V.ConvVAE(latent_dim=3, channels=(4, 8), hidden=16)


def test_elbo_terms_agree_with_negative_elbo():
    model = tiny_model()
    x = torch.bernoulli(torch.full((4, 1, 28, 28), 0.2), generator=gen())
    reconstruction, kl = V.elbo_terms(model, x, generator=gen(1))
    logits, mu, logvar, _ = model(x, generator=gen(1))
    assert torch.allclose(reconstruction + kl, V.negative_elbo(logits, x, mu, logvar))
    assert (kl >= 0).all() and (reconstruction > 0).all()


def test_vae_loss_is_a_scalar_and_beta_scales_the_kl():
    model = tiny_model()
    batch = (torch.rand(8, 1, 28, 28, generator=gen()),)
    torch.manual_seed(1)
    loss_1 = V.vae_loss(model, batch, beta=1.0)
    torch.manual_seed(1)
    loss_3 = V.vae_loss(model, batch, beta=3.0)
    torch.manual_seed(1)
    kl = V.elbo_terms(model, V.binarize(batch[0]))[1].mean()  # the same binarization: same first draws
    assert loss_1.ndim == 0 and torch.isfinite(loss_1)
    assert torch.allclose(loss_3 - loss_1, 2 * kl, rtol=1e-4, atol=1e-4)
    loss_1.backward()
    assert all(p.grad is not None for p in model.parameters())


def test_evaluate_elbo_is_reproducible_and_restores_training_mode():
    model = tiny_model()
    model.train()
    x = V.binarized_mnist("test", n=20)
    first, second = V.evaluate_elbo(model, x, batch_size=7), V.evaluate_elbo(model, x, batch_size=7)
    assert first == second and model.training
    assert first["neg_elbo"] == pytest.approx(first["reconstruction"] + first["kl"])


def test_iwae_bound_is_log_mean_exp_and_stable():
    log_w = torch.randn(10, 4, generator=gen(), dtype=torch.float64)
    assert torch.allclose(V.iwae_bound(log_w), log_w.exp().mean(0).log())
    assert torch.allclose(V.iwae_bound(log_w - 1000), log_w.exp().mean(0).log() - 1000)
    assert torch.equal(V.iwae_bound(log_w[:1]), log_w[0])  # K = 1: the single log weight
    assert (V.iwae_bound(log_w) >= log_w.mean(0)).all()  # Jensen, sample by sample


def test_iwae_bound_rejects_1d_input():
    with pytest.raises(ValueError, match="\\(k, N\\)"):
        V.iwae_bound(torch.zeros(5))


def test_iwae_log_weights_shape_and_evaluate_iwae():
    model = tiny_model()
    x = V.binarized_mnist("test", n=6)
    with torch.no_grad():
        log_w = V.iwae_log_weights(model, x, k=5, generator=gen())
    assert log_w.shape == (5, 6) and torch.isfinite(log_w).all()
    assert V.evaluate_iwae(model, x, k=4, batch_size=4) == V.evaluate_iwae(model, x, k=4, batch_size=4)
    with pytest.raises(ValueError):
        V.evaluate_iwae(model, x, k=0)


def test_log_importance_weight_is_log_joint_minus_log_q_and_averages_to_the_elbo():
    model = tiny_model()
    x = V.binarized_mnist("test", n=2)
    with torch.no_grad():
        mu, logvar = model.encode(x)
        z = V.reparameterize(mu, logvar, generator=gen())
        logits = model.decode(z)
        log_w = V.log_importance_weight(logits, x, z, mu, logvar)
        expected = (V.bernoulli_log_likelihood(logits, x) + Normal(0.0, 1.0).log_prob(z).sum(1)
                    - Normal(mu, torch.exp(0.5 * logvar)).log_prob(z).sum(1))
        assert log_w.shape == (2,) and torch.allclose(log_w, expected, atol=1e-4)
        # L^A and L^B are both unbiased for the ELBO: their means over many z agree
        n = 2000
        mu_n, logvar_n, x_n = mu[:1].expand(n, -1), logvar[:1].expand(n, -1), x[:1].expand(n, -1, -1, -1)
        z_n = V.reparameterize(mu_n, logvar_n, generator=gen(1))
        logits_n = model.decode(z_n)
        estimate_a = V.log_importance_weight(logits_n, x_n, z_n, mu_n, logvar_n)
        estimate_b = -V.negative_elbo(logits_n, x_n, mu_n, logvar_n)
        se = ((estimate_a.var() + estimate_b.var()) / n).sqrt()
        assert (estimate_a.mean() - estimate_b.mean()).abs() < 5 * se + 1e-3


def test_schematic_names_the_parts():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from course_lib.core.diagram import text_of

    fig = V.schematic()
    try:
        words = text_of(fig)
        for part in ("encoder", "decoder", "noise", "KL", "ELBO", "reconstruction"):
            assert part in words
        fig.canvas.draw()
    finally:
        plt.close(fig)


# ---------------------------------------------------------------------------------- looking at it

def test_latent_grid_spans_gaussian_quantiles():
    grid = V.latent_grid(n=5, quantile=0.9)
    assert grid.shape == (25, 2)
    edge = Normal(0.0, 1.0).icdf(torch.tensor(0.95)).item()
    assert grid.max().item() == pytest.approx(edge, rel=1e-5) and grid.min().item() == pytest.approx(-edge, rel=1e-5)
    assert grid[0, 1] > grid[-1, 1] and grid[0, 0] < grid[4, 0]  # top-left first, rows run down in z_2
    assert V.latent_grid(n=3, dims=4)[:, 2:].abs().sum() == 0


@pytest.mark.parametrize("n, quantile", [(1, 0.9), (5, 1.0), (5, 0.0)])
def test_latent_grid_rejects_bad_arguments(n, quantile):
    with pytest.raises(ValueError):
        V.latent_grid(n=n, quantile=quantile)


def test_interpolate_runs_from_a_to_b():
    a, b = torch.tensor([0.0, 1.0]), torch.tensor([2.0, -1.0])
    path = V.interpolate(a, b, steps=5)
    assert path.shape == (5, 2) and torch.equal(path[0], a) and torch.equal(path[-1], b)
    assert torch.allclose(path[2], (a + b) / 2)
    with pytest.raises(ValueError):
        V.interpolate(a, torch.zeros(3))


def test_decode_probabilities_are_probabilities():
    p = V.decode_probabilities(tiny_model(), torch.randn(4, 3, generator=gen()))
    assert p.shape == (4, 1, 28, 28) and p.min() >= 0 and p.max() <= 1


# ---------------------------------------------------------------------------------- recipes

@pytest.mark.parametrize("model_name", ["vae_mnist", "vae_mnist_2d"])
def test_vae_settings_exist_for_every_profile(model_name):
    for name in ("ci", "cpu", "gpu"):
        cfg = zoo.settings(model_name, name)
        assert cfg.profile == name and cfg.steps >= 1 and cfg.latent_dim in (2, 16)


def test_vae_recipe_trains_and_reports_nats(monkeypatch):
    small_test = V.binarized_mnist("test", n=64)
    monkeypatch.setattr(vae_mnist, "binarized_mnist", lambda split="test", seed=0, n=None: small_test)
    cfg = SimpleNamespace(profile="ci", latent_dim=2, channels=(4, 8), hidden=16, n_train=256, steps=4, batch_size=32,
                          lr=1e-3, warmup=1, iwae_k=3, max_test_neg_elbo=1e9)
    model, history, metrics, recipe = vae_mnist.train_vae("vae_mnist_2d", cfg, seed=0, show_progress=False)
    assert len(history.losses) == 4 and not model.training
    assert metrics["test_neg_elbo_nats"] == pytest.approx(metrics["test_reconstruction_nats"] + metrics["test_kl_nats"],
                                                          abs=0.02)
    assert "test_neg_iwae_k3_nats" in metrics and "binarized" in recipe["data"]
    assert recipe["model"] == model.config and recipe["recipe"] == "course_lib.zoo.vae_mnist_2d"


def test_bench_reports_the_shipped_vaes_in_nats():
    from course_lib.zoo.bench import measure

    results = {name: measure(name) for name in ("vae_mnist", "vae_mnist_2d")}
    for name, result in results.items():
        assert result.metric == "test -ELBO nats/image, binarized seed 0"
        assert "-L_100 (manifest)" in result.references  # the IWAE bound from the manifest
        assert result.value < result.references["no latent (independent pixels)"]
    assert results["vae_mnist"].value <= 95.0
    assert results["vae_mnist_2d"].value <= 150.0
