"""course_lib.topics.gan and course_lib.topics.draggan: the GAN theory on a grid, losses from logits, toy GANs, the DCGAN, DragGAN."""
import math

import pytest
import torch
from torch import nn

from course_lib import zoo
from course_lib.topics import draggan as DG
from course_lib.topics import gan as G


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def normal_pdf(x, mean, sd):
    return torch.exp(-0.5 * ((x - mean) / sd) ** 2) / (sd * math.sqrt(2 * math.pi))


X = torch.linspace(-16, 16, 32_001, dtype=torch.float64)
P_DATA = 0.5 * normal_pdf(X, -2, 0.5) + 0.5 * normal_pdf(X, 2, 0.5)


# ---------------------------------------------------------------------------------- theory

def test_optimal_discriminator_formula_and_edge_cases():
    d = G.optimal_discriminator(torch.tensor([1.0, 0.0, 0.0, 3.0]), torch.tensor([1.0, 2.0, 0.0, 1.0]))
    assert torch.allclose(d, torch.tensor([0.5, 0.0, 0.5, 0.75]))
    with pytest.raises(ValueError):
        G.optimal_discriminator(torch.ones(3), torch.ones(4))
    with pytest.raises(ValueError):
        G.optimal_discriminator(-torch.ones(3), torch.ones(3))


@pytest.mark.parametrize("mean, sd", [(0.0, 1.0), (2.0, 0.5), (-3.0, 0.3), (1.0, 2.0)])
def test_value_at_d_star_is_minus_log4_plus_2_jsd(mean, sd):
    p_g = normal_pdf(X, mean, sd)
    d_star = G.optimal_discriminator(P_DATA, p_g)
    value = float(G.gan_value(d_star, P_DATA, p_g, X))
    jsd = float(G.jensen_shannon(P_DATA, p_g, X))
    assert value == pytest.approx(-math.log(4) + 2 * jsd, abs=1e-8)
    assert 0 < jsd < math.log(2)
    assert G.gan_value((d_star * 0.9 + 0.05), P_DATA, p_g, X) < value  # any other D is worse


def test_jsd_is_zero_for_equal_densities_and_log2_for_disjoint_ones():
    assert float(G.jensen_shannon(P_DATA, P_DATA, X)) == pytest.approx(0.0, abs=1e-12)
    p, q = normal_pdf(X, -8, 0.3), normal_pdf(X, 8, 0.3)
    assert float(G.jensen_shannon(p, q, X)) == pytest.approx(math.log(2), abs=1e-6)


def test_kl_on_grid_matches_gaussian_closed_form():
    p, q = normal_pdf(X, 0.0, 1.0), normal_pdf(X, 1.0, 2.0)
    closed = math.log(2.0) + (1 + 1) / (2 * 4) - 0.5  # log(s2/s1) + (s1^2 + (m1-m2)^2) / (2 s2^2) - 1/2
    assert float(G.kl_divergence_on_grid(p, q, X)) == pytest.approx(closed, abs=1e-8)


def test_gaussian_kde_integrates_to_one_and_finds_the_mode():
    samples = 0.5 * torch.randn(2000, generator=gen(), dtype=torch.float64) + 1.0
    x = X[::16]  # (2001,)
    density = G.gaussian_kde(samples, x)
    assert float(torch.trapezoid(density, x)) == pytest.approx(1.0, abs=1e-3)
    assert abs(x[density.argmax()].item() - 1.0) < 0.1


# ---------------------------------------------------------------------------------- losses

def test_losses_from_logits_match_the_probability_formulas():
    logits = torch.randn(50, generator=gen(), dtype=torch.float64)
    d = torch.sigmoid(logits)
    assert G.generator_loss(logits, "non_saturating").item() == pytest.approx(-torch.log(d).mean().item())
    assert G.generator_loss(logits, "saturating").item() == pytest.approx(torch.log1p(-d).mean().item())
    real = torch.randn(20, generator=gen(1), dtype=torch.float64)
    expected = -(torch.log(torch.sigmoid(real)).mean() + torch.log1p(-torch.sigmoid(logits)).mean())
    assert G.discriminator_loss(real, logits).item() == pytest.approx(expected.item())
    assert torch.isfinite(G.generator_loss(torch.tensor([-500.0, 500.0]))).all()
    with pytest.raises(ValueError, match="kind"):
        G.generator_loss(logits, "wasserstein")


def test_generator_gradients_wrt_logit_are_minus_d_and_minus_one_minus_d():
    logits = torch.linspace(-8, 8, 17, dtype=torch.float64, requires_grad=True)
    d = torch.sigmoid(logits.detach())
    grad_sat = torch.autograd.grad(G.generator_loss(logits, "saturating") * 17, logits)[0]
    grad_ns = torch.autograd.grad(G.generator_loss(logits, "non_saturating") * 17, logits)[0]
    assert torch.allclose(grad_sat, -d) and torch.allclose(grad_ns, -(1 - d))


# ---------------------------------------------------------------------------------- toy GANs

def test_minibatch_std_appends_the_batch_spread():
    h = torch.randn(8, 3, generator=gen())
    out = G.minibatch_std(h)
    assert out.shape == (8, 4) and torch.allclose(out[:, 3], h.std(0).mean().expand(8))
    with pytest.raises(ValueError):
        G.minibatch_std(torch.randn(1, 3))


def test_mlp_networks_shapes_and_errors():
    assert G.MLPGenerator(2, 3)(torch.randn(5, 2)).shape == (5, 3)
    assert G.MLPDiscriminator(3, use_minibatch_std=True)(torch.randn(5, 3)).shape == (5,)
    with pytest.raises(ValueError):
        G.MLPGenerator(2, 3)(torch.randn(5, 3))


def test_gan_step_moves_d_and_g_in_the_right_direction():
    torch.manual_seed(0)
    g, d = G.MLPGenerator(1, 1, 16), G.MLPDiscriminator(1, 16)
    opt_g, opt_d = torch.optim.SGD(g.parameters(), 1e-2), torch.optim.SGD(d.parameters(), 1e-2)
    real, z = 3 + 0.1 * torch.randn(256, 1, generator=gen()), torch.randn(256, 1, generator=gen(1))
    with torch.no_grad():
        fake = g(z)
        loss_d_before = G.discriminator_loss(d(real), d(fake)).item()
    result = G.gan_step(g, d, real, z, opt_g, opt_d)
    with torch.no_grad():
        assert G.discriminator_loss(d(real), d(fake)).item() < loss_d_before  # the D step lowered D's loss
        assert G.generator_loss(d(g(z))).item() < G.generator_loss(d(fake)).item()  # the G step fooled D more
    assert len(result) == 4 and result[0] == pytest.approx(loss_d_before, rel=1e-5)


def test_train_toy_gan_snapshots_and_history():
    torch.manual_seed(0)
    g, d = G.MLPGenerator(1, 1, 8), G.MLPDiscriminator(1, 8)
    snaps, history = G.train_toy_gan(lambda n, r: torch.randn(n, 1, generator=r), g, d, steps=10, batch_size=16,
                                     snapshot_every=4, snapshot=lambda g_, d_: g_(torch.zeros(1, 1)).item(),
                                     show_progress=False)
    assert [s for s, _ in snaps] == [0, 4, 8, 10] and len(history.losses) == 10 and len(history.evals) == 10


def test_mode_coverage_counts_modes():
    centres = torch.tensor([[0.0, 0.0], [5.0, 0.0], [0.0, 5.0]])
    samples = torch.cat([centres[0] + 0.01 * torch.randn(50, 2, generator=gen()),
                         centres[1] + 0.01 * torch.randn(50, 2, generator=gen(1)), torch.full((10, 2), 20.0)])
    c = G.mode_coverage(samples, centres, std=0.05)
    assert c["modes_covered"] == 2 and c["high_quality"] == pytest.approx(100 / 110)


# ---------------------------------------------------------------------------------- DCGAN

def test_dcgan_shapes_range_and_features():
    g, d = G.DCGANGenerator(latent_dim=8, width=4).eval(), G.DCGANDiscriminator(width=4)
    images, features = g(torch.randn(3, 8), return_features=True)
    assert images.shape == (3, 1, 28, 28) and features.shape == (3, 8, 14, 14)  # 2 x width channels
    assert images.abs().max() <= 1 and d(images).shape == (3,)
    with pytest.raises(ValueError):
        g(torch.randn(3, 9))
    with pytest.raises(ValueError):
        d(torch.randn(3, 784))


def test_dcgan_config_rebuilds_through_models():
    g = G.DCGANGenerator(latent_dim=8, width=4).eval()
    twin = zoo.MODELS["gan_mnist"].build({"recipe": {"model": g.config}}).eval()
    twin.load_state_dict(g.state_dict())
    z = torch.randn(2, 8, generator=gen())
    assert torch.equal(twin(z), g(z))


def test_train_dcgan_and_recalibrate_batchnorm():
    torch.manual_seed(0)
    g, d = G.DCGANGenerator(latent_dim=8, width=4), G.DCGANDiscriminator(width=4)
    x = torch.rand(64, 1, 28, 28, generator=gen())
    history = G.train_dcgan(g, d, x, steps=3, batch_size=16, snapshot_every=2, n_snapshot=4, show_progress=False)
    assert len(history.losses) == 3 and [s for s, _ in history.snapshots] == [2, 3]
    assert history.snapshots[0][1].shape == (4, 1, 28, 28) and not g.training
    G.recalibrate_batchnorm(g, batches=2, batch_size=32)
    bn = g.up[1]
    assert not g.training and bn.momentum == 0.1 and bn.num_batches_tracked == 2


def test_sample_images_are_pixels_and_seeded():
    g = G.DCGANGenerator(latent_dim=8, width=4)
    a, b = G.sample_images(g, 5, seed=3), G.sample_images(g, 5, seed=3)
    assert a.shape == (5, 1, 28, 28) and torch.equal(a, b) and a.min() >= 0 and a.max() <= 1


def test_slerp_keeps_the_ends_and_the_norm():
    a, b = torch.randn(64, generator=gen()), torch.randn(64, generator=gen(1))
    path = G.slerp(a, b, steps=7)
    assert torch.allclose(path[0], a, atol=1e-5) and torch.allclose(path[-1], b, atol=1e-5)
    assert path.norm(dim=1).min() > 0.85 * min(a.norm(), b.norm())
    with pytest.raises(ValueError):
        G.slerp(a, torch.zeros(3))


def test_gan_settings_exist_for_every_profile():
    for name in ("ci", "cpu", "gpu"):
        cfg = zoo.settings("gan_mnist", name)
        assert cfg.profile == name and cfg.lr == 2e-4 and tuple(cfg.betas) == (0.5, 0.999)


# ---------------------------------------------------------------------------------- DragGAN

def test_bilinear_sample_is_exact_at_integers_and_linear_between():
    f = torch.arange(2 * 4 * 5, dtype=torch.float32).reshape(2, 4, 5)
    assert torch.equal(DG.bilinear_sample(f, torch.tensor([[3.0, 2.0]])), f[:, 2, 3][None])
    halfway = DG.bilinear_sample(f, torch.tensor([[1.5, 0.5]]))
    assert torch.allclose(halfway, (f[:, 0, 1] + f[:, 0, 2] + f[:, 1, 1] + f[:, 1, 2])[None] / 4)
    with pytest.raises(ValueError):
        DG.bilinear_sample(f, torch.tensor([1.0, 2.0]))


def test_disk_offsets():
    assert len(DG.disk_offsets(0)) == 1 and len(DG.disk_offsets(1)) == 5 and len(DG.disk_offsets(2)) == 13


def test_stop_gradient_sends_gradient_only_ahead_of_the_handle():
    f = torch.randn(2, 10, 10, generator=gen(), requires_grad=True)
    loss = DG.motion_supervision_loss(f, [[4.0, 4.0]], [[4.0, 8.0]], radius=0.0)  # d = (0, 1), Omega_1 = {p}
    grad = torch.autograd.grad(loss, f)[0].abs().sum(0)
    assert torch.nonzero(grad).tolist() == [[5, 4]]  # row y = 5, column x = 4: one step ahead
    loss = DG.motion_supervision_loss(f, [[4.0, 4.0]], [[4.0, 8.0]], radius=0.0, stop_gradient=False)
    assert torch.nonzero(torch.autograd.grad(loss, f)[0].abs().sum(0)).tolist() == [[4, 4], [5, 4]]


def test_motion_supervision_mask_term_and_errors():
    f0 = torch.zeros(3, 6, 6)
    f = f0 + 1.0
    mask = DG.box_mask(0, 0, 2, 5, size=6)  # left half may change
    loss = DG.motion_supervision_loss(f, [[1.0, 1.0]], [[1.0, 1.0]], initial_features=f0, mask=mask, lam=2.0)
    assert loss.item() == pytest.approx(2.0 * 3 * 0.5)  # lambda * 3 channels * half the pixels outside
    with pytest.raises(ValueError, match="initial_features"):
        DG.motion_supervision_loss(f, [[1.0, 1.0]], [[2.0, 1.0]], mask=mask)


def test_track_points_follows_a_shift():
    smooth = torch.nn.functional.avg_pool2d(torch.randn(1, 6, 20, 20, generator=gen()), 3, 1, 1)[0]
    handles = torch.tensor([[5.0, 6.0], [12.0, 12.0]])
    moved = DG.track_points(torch.roll(smooth, shifts=(-1, 2), dims=(1, 2)), DG.bilinear_sample(smooth, handles),
                            handles, radius=3)
    assert torch.equal(moved, handles + torch.tensor([2.0, -1.0]))


def test_drag_runs_and_leaves_the_generator_as_it_was():
    torch.manual_seed(0)
    g = G.DCGANGenerator(latent_dim=8, width=4).train()
    before = {k: v.clone() for k, v in g.state_dict().items()}
    r = DG.drag(g, torch.randn(1, 8, generator=gen()), [[10, 10]], [[14, 10]], steps=3)
    assert r["image"].shape == (1, 28, 28) and r["path"].shape[1:] == (1, 2) and len(r["distance"]) == r["steps_run"] + 1
    assert g.training and all(p.requires_grad for p in g.parameters())
    assert all(torch.equal(v, g.state_dict()[k]) for k, v in before.items())
    with pytest.raises(ValueError):
        DG.drag(g, torch.randn(2, 8), [[10, 10]], [[14, 10]], steps=1)


def test_the_chapters_step_by_step_dcgan_is_the_library_one():
    from pathlib import Path

    source = (Path(__file__).resolve().parents[1] / "chapters" / "09_gans_draggan.py").read_text()
    cell = source[source.index("class Generator(nn.Module):"):source.index("seed_everything(2)")]
    namespace = {"nn": nn, "torch": torch}
    exec(cell, namespace)  # the chapter's Generator and Discriminator classes
    torch.manual_seed(0)
    mine_g, mine_d = namespace["Generator"](latent_dim=16, width=8).eval(), namespace["Discriminator"](width=8)
    lib_g, lib_d = G.DCGANGenerator(latent_dim=16, width=8).eval(), G.DCGANDiscriminator(width=8)
    lib_g.load_state_dict(mine_g.state_dict())
    lib_d.load_state_dict(mine_d.state_dict())
    z = torch.randn(4, 16, generator=gen())
    with torch.no_grad():
        assert torch.allclose(mine_g(z), lib_g(z), atol=1e-6)
        assert torch.allclose(mine_d(mine_g(z)), lib_d(lib_g(z)), atol=1e-6)


def test_bench_reports_the_shipped_gan_next_to_its_floor():
    from course_lib.zoo.bench import measure

    result = measure("gan_mnist", zoo.BenchOptions(fid_samples=500))
    floor = result.references["real-vs-real floor at the same n"]
    assert "n=500" in result.metric and floor < result.value < 150


def test_train_dcgan_keeps_an_ema_generator_when_asked():
    torch.manual_seed(0)
    g, d = G.DCGANGenerator(latent_dim=8, width=4), G.DCGANDiscriminator(width=4)
    x = torch.rand(64, 1, 28, 28, generator=gen())
    start = [p.detach().clone() for p in g.parameters()]
    history = G.train_dcgan(g, d, x, steps=1, batch_size=16, ema_decay=0.5, show_progress=False)
    for p_ema, p_start, p in zip(history.ema_generator.parameters(), start, g.parameters()):
        assert torch.allclose(p_ema, 0.1 * p_start + 0.9 * p, atol=1e-6)  # one update: warm-up rate min(0.5, 1/10)
    assert G.train_dcgan(g, d, x, steps=1, batch_size=16, show_progress=False).ema_generator is None


# ---------------------------------------------------------------------------------- the pictures

def test_schematics_name_the_players_and_the_drag_loop():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from course_lib.core.diagram import text_of

    for draw, parts in [(G.schematic, ("generator", "discriminator", "minimises", "maximises", "noise")),
                        (DG.schematic, ("motion supervision", "point tracking", "handles", "targets", "Adam step"))]:
        fig = draw()
        try:
            words = text_of(fig)
            for part in parts:
                assert part in words, f"{draw.__module__}.schematic() does not name {part!r}"
        finally:
            plt.close(fig)
