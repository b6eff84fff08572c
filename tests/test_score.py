"""course_lib.topics.score: score-matching losses, Langevin samplers, Tweedie, and the 2-D NCSN (chapter 10)."""
import math

import pytest
import torch

from course_lib.data import GaussianMixture2D
from course_lib.topics.score import (NoiseConditionalScoreNet, ScoreMLP, annealed_langevin, divergence, dsm_loss,
                                     energy_distance, evaluate_ncsn, geometric_sigmas, ism_loss, langevin,
                                     mixture_posterior_mean, mode_fractions, ncsn_loss, relative_score_error,
                                     sample_ncsn, saved_tensor_bytes, ssm_loss, toy_mixture, tweedie_denoise)


class LinearField(torch.nn.Module):
    """s(x) = x A^T + b: its Jacobian is A everywhere, so every loss has a closed form."""

    def __init__(self, A, b):
        super().__init__()
        self.A, self.b = torch.nn.Parameter(torch.as_tensor(A)), torch.nn.Parameter(torch.as_tensor(b))

    def forward(self, x):
        return x @ self.A.T + self.b


def gaussian_mixture_1_4():
    return GaussianMixture2D([[-5.0, -5.0], [5.0, 5.0]], 1.0, [0.2, 0.8])


# ---------------------------------------------------------------------------------------- data, models

def test_toy_mixture_weights_and_mode_fractions():
    mixture = toy_mixture()
    assert mixture.means.shape == (8, 2) and math.isclose(float(mixture.weights.sum()), 1.0)
    assert torch.allclose(mixture.weights[:2], torch.tensor([3 / 16, 1 / 16], dtype=torch.float64))
    x = mixture.sample(20_000, torch.Generator().manual_seed(0))
    assert torch.allclose(mode_fractions(x, mixture), mixture.weights, atol=0.01)


def test_score_mlp_shapes_and_bad_input():
    model = ScoreMLP(dim=3, hidden=16, n_layers=2)
    assert model(torch.randn(5, 3)).shape == (5, 3)
    with pytest.raises(ValueError, match="3 columns"):
        model(torch.randn(5, 2))
    with pytest.raises(ValueError, match=r"\(N, d\)"):
        model(torch.randn(3))
    with pytest.raises(TypeError, match="float"):
        model(torch.ones(5, 3, dtype=torch.long))


def test_ncsn_divides_by_sigma_and_accepts_float_or_vector_sigma():
    torch.manual_seed(0)
    model = NoiseConditionalScoreNet(hidden=16, n_layers=2, emb_dim=8)
    x = torch.randn(6, 2)
    same = model(x, 0.5)
    assert same.shape == (6, 2)
    assert torch.allclose(same, model(x, torch.full((6,), 0.5)), atol=1e-6)  # the embed-once shortcut agrees
    mixed = model(x, torch.tensor([0.1, 0.5, 1.0, 2.0, 0.5, 0.1]))
    assert torch.allclose(mixed[1], same[1], atol=1e-6)
    with pytest.raises(ValueError, match="shape"):
        model(x, torch.ones(5))
    with pytest.raises(ValueError, match="> 0"):
        model(x, 0.0)


def test_geometric_sigmas():
    sigmas = geometric_sigmas(8.0, 0.1, 10)
    assert sigmas.shape == (10,)
    assert math.isclose(sigmas[0].item(), 8.0, rel_tol=1e-5) and math.isclose(sigmas[-1].item(), 0.1, rel_tol=1e-5)
    ratios = sigmas[1:] / sigmas[:-1]
    assert torch.allclose(ratios, ratios[0].expand(9), rtol=1e-4)
    with pytest.raises(ValueError):
        geometric_sigmas(0.1, 8.0, 10)


# ---------------------------------------------------------------------------------------- losses

def test_divergence_is_the_jacobian_trace():
    A = torch.tensor([[1.5, -2.0, 0.3], [0.7, -0.5, 1.0], [2.0, 0.0, 4.0]], dtype=torch.float64)
    field = LinearField(A, torch.zeros(3, dtype=torch.float64))
    x = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    assert torch.allclose(divergence(field(x), x), torch.full((4,), 5.0, dtype=torch.float64))


def test_ism_and_ssm_losses_in_closed_form_for_a_linear_field():
    A = torch.tensor([[1.5, -2.0], [0.7, -0.5]], dtype=torch.float64)
    b = torch.tensor([0.2, -0.1], dtype=torch.float64)
    field = LinearField(A, b)
    x = torch.randn(7, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    half_norm = 0.5 * ((x @ A.T + b) ** 2).sum(1)
    assert torch.allclose(ism_loss(field, x), (A.trace() + half_norm).mean())
    v = torch.tensor([[1.0, -1.0]] * 7, dtype=torch.float64)
    assert torch.allclose(ssm_loss(field, x, v=v), (v[0] @ A @ v[0] + half_norm).mean())
    # averaged over the 4 Rademacher sign vectors, v^T A v is exactly the trace
    signs = torch.tensor([[1.0, 1.0], [1.0, -1.0], [-1.0, 1.0], [-1.0, -1.0]], dtype=torch.float64)
    mean_ssm = sum(ssm_loss(field, x, v=s.expand(7, 2)) for s in signs) / 4
    assert torch.allclose(mean_ssm, ism_loss(field, x))
    with pytest.raises(ValueError, match="shape of x"):
        ssm_loss(field, x, v=torch.ones(3, 2, dtype=torch.float64))


def test_ism_loss_gives_parameter_gradients():
    model = ScoreMLP(dim=2, hidden=8, n_layers=1)
    ism_loss(model, torch.randn(16, 2)).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_dsm_and_ncsn_losses_with_given_noise():
    field = LinearField(torch.eye(2) * -1.0, torch.zeros(2))  # s(x) = -x
    x, eps, sigma = torch.randn(5, 2), torch.randn(5, 2), 0.5
    x_noisy = x + sigma * eps
    expected = 0.5 * ((-x_noisy + eps / sigma) ** 2).sum(1).mean()
    assert torch.allclose(dsm_loss(field, x, sigma, noise=eps), expected)

    def conditional(x_in, s):  # the same field, ignoring sigma
        return field(x_in)

    sigmas = torch.tensor([2.0, 0.5])
    levels = torch.ones(5, dtype=torch.long)  # all at sigma = 0.5
    weighted = ncsn_loss(conditional, x, sigmas, levels=levels, noise=eps)
    assert torch.allclose(weighted, sigma**2 * expected)  # lambda(sigma) = sigma^2


def test_dsm_optimum_is_the_noised_score():
    """The DSM loss is lower for the exact score of p_sigma than for the exact score of p."""
    mixture, sigma = toy_mixture(), 0.8
    g = torch.Generator().manual_seed(1)
    x = mixture.sample(20_000, g).double()
    eps = torch.randn(x.shape, generator=g, dtype=torch.float64)
    noised_score = lambda y: mixture.noised(sigma).score(y)  # noqa: E731
    clean_score = lambda y: mixture.score(y)  # noqa: E731
    assert dsm_loss(noised_score, x, sigma, noise=eps) < dsm_loss(clean_score, x, sigma, noise=eps)


# ---------------------------------------------------------------------------------------- samplers

def test_langevin_on_a_gaussian_has_the_ula_stationary_variance():
    g = torch.Generator().manual_seed(0)
    variance, step = 2.0, 0.4
    x = langevin(lambda y: -y / variance, torch.zeros(20_000, 1, dtype=torch.float64), step, 300, g)
    expected = variance / (1 - step / (4 * variance))  # unadjusted Langevin is biased for finite steps
    assert abs(x.var().item() - expected) < 0.05 * expected
    final, path = langevin(lambda y: -y, torch.zeros(3, 2), 0.1, 10, g, keep_every=5)
    assert len(path) == 3 and final.shape == (3, 2)
    with pytest.raises(ValueError):
        langevin(lambda y: -y, torch.zeros(3, 2), -0.1, 10)


def test_langevin_is_reproducible_with_a_seeded_generator():
    def run(seed):
        return langevin(lambda y: -y, torch.zeros(4, 2), 0.1, 20, torch.Generator().manual_seed(seed))
    assert torch.equal(run(3), run(3)) and not torch.equal(run(3), run(4))


def test_annealed_beats_plain_langevin_on_the_one_to_four_mixture():
    mixture = gaussian_mixture_1_4()
    g = torch.Generator().manual_seed(0)
    x0 = (torch.rand(1000, 2, generator=g, dtype=torch.float64) * 2 - 1) * 8
    plain = langevin(mixture.score, x0, 0.1, 300, g)
    sigmas = geometric_sigmas(20.0, 1.0, 10).tolist()
    annealed = annealed_langevin(lambda y, s: mixture.noised(s).score(y), x0, sigmas, 0.1 / 2, 60, g)
    heavy_plain = (plain.sum(1) > 0).double().mean().item()
    heavy_annealed = (annealed.sum(1) > 0).double().mean().item()
    assert abs(heavy_plain - 0.5) < 0.06  # each chain stays in the basin it started in
    assert heavy_annealed > 0.7  # close to the true 0.8
    x, snapshots = annealed_langevin(lambda y, s: -y, x0, [2.0, 1.0], 0.1, 3, g, keep_levels=True)
    assert len(snapshots) == 3
    with pytest.raises(ValueError, match="decreasing"):
        annealed_langevin(lambda y, s: -y, x0, [1.0, 2.0], 0.1, 3, g)


# ---------------------------------------------------------------------------------------- Tweedie

def test_tweedie_equals_the_closed_form_posterior_mean():
    mixture, sigma = toy_mixture(), 1.3
    x_noisy = torch.randn(50, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * 5
    tweedie = tweedie_denoise(x_noisy, mixture.noised(sigma).score(x_noisy), sigma)
    assert torch.allclose(tweedie, mixture_posterior_mean(mixture, x_noisy, sigma), atol=1e-10)
    with pytest.raises(ValueError):
        tweedie_denoise(x_noisy, x_noisy[:3], sigma)


def test_tweedie_on_a_single_gaussian():
    """For x ~ N(m, s^2 I): E[x | x~] = m + s^2 / (s^2 + sigma^2) (x~ - m)."""
    gaussian = GaussianMixture2D([[1.0, -2.0]], 0.5)
    x_noisy = torch.tensor([[0.0, 0.0], [3.0, 1.0]], dtype=torch.float64)
    m = gaussian.means[0]
    expected = m + 0.25 / (0.25 + 4.0) * (x_noisy - m)
    assert torch.allclose(mixture_posterior_mean(gaussian, x_noisy, 2.0), expected)


# ---------------------------------------------------------------------------------------- measurements

def test_energy_distance():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(500, 2, generator=g), torch.randn(500, 2, generator=g)
    assert abs(energy_distance(a, b)) < 0.02
    assert energy_distance(a, b + 1.0) > 0.3
    with pytest.raises(ValueError):
        energy_distance(a, torch.randn(5, 3))


def test_relative_score_error_is_zero_for_the_exact_score():
    mixture = toy_mixture()
    exact = lambda x, s: mixture.noised(s).score(x.double())  # noqa: E731
    assert relative_score_error(exact, mixture, 0.5, 500, torch.Generator().manual_seed(0)) < 1e-12
    zero = lambda x, s: torch.zeros_like(x)  # noqa: E731
    assert math.isclose(relative_score_error(zero, mixture, 0.5, 500), 1.0)


def test_saved_tensor_bytes_grows_with_ism_dimension_but_not_with_dsm():
    def measure(loss, dim):
        model = ScoreMLP(dim=dim, hidden=16, n_layers=2)
        x = torch.randn(8, dim)
        return saved_tensor_bytes(lambda: loss(model, x))

    def ism(model, x):
        return ism_loss(model, x)

    def dsm(model, x):
        return dsm_loss(model, x, 0.5)

    assert measure(ism, 16) > 4 * measure(ism, 2)
    assert measure(dsm, 16) < 2 * measure(dsm, 2)


def test_sample_and_evaluate_a_tiny_ncsn():
    torch.manual_seed(0)
    model = NoiseConditionalScoreNet(hidden=16, n_layers=1, emb_dim=8)
    sigmas = geometric_sigmas(8.0, 0.1, 3)
    x, snapshots = sample_ncsn(model, sigmas, 20, torch.Generator().manual_seed(0), steps_per_level=2,
                               keep_levels=True)
    assert x.shape == (20, 2) and len(snapshots) == 4
    report = evaluate_ncsn(model, sigmas, n=20, steps_per_level=2)
    assert {"energy_distance", "energy_distance_floor", "mode_weight_tv", "score_rel_error_sigma_0.1"} <= set(report)


def test_the_shipped_ncsn_matches_the_exact_score():
    from course_lib.core.checkpointing import read_manifest
    from course_lib.zoo import load_shipped

    if "ncsn_2d" not in read_manifest():
        pytest.skip("ncsn_2d is not shipped; train it with `python -m course_lib.zoo train ncsn_2d --profile cpu`")
    model = load_shipped("ncsn_2d")
    recipe = read_manifest()["ncsn_2d"]["recipe"]
    mixture = toy_mixture()

    def score_fn(x, sigma):
        with torch.no_grad():
            return model(x, sigma)

    ladder = geometric_sigmas(recipe["sigma_max"], recipe["sigma_min"], recipe["n_levels"]).tolist()
    for sigma in (ladder[0], ladder[len(ladder) // 2], ladder[-1]):  # it was trained at these levels only
        assert relative_score_error(score_fn, mixture, sigma, 2000, torch.Generator().manual_seed(0)) < 0.02


def test_ncsn_recipe_runs(monkeypatch):
    """The recipe's plumbing, with the ci settings made even smaller (the full ci run takes several seconds)."""
    from course_lib import zoo

    ci = zoo.settings("ncsn_2d", "ci")
    tiny = type(ci)(**{**vars(ci), "steps": 40, "n_train": 2_000, "eval_samples": 100, "steps_per_level": 5})
    monkeypatch.setattr(zoo.ncsn_2d, "settings", lambda active=None: tiny)
    model, history, metrics, recipe = zoo.MODELS["ncsn_2d"].train("ci", show_progress=False)
    assert len(history.losses) == 40 and recipe["model"] == model.config and recipe["steps"] == 40
    assert {"energy_distance", "mode_weight_tv", "score_rel_error_sigma_8"} <= set(metrics)
    assert zoo.MODELS["ncsn_2d"].build({"recipe": recipe}).config == model.config


def test_schematic_names_the_levels_the_network_and_the_update():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from course_lib.core.diagram import text_of
    from course_lib.topics.score import schematic

    fig = schematic()
    try:
        words = text_of(fig)
        for part in ("noise levels", "score network", "Langevin update", "DSM loss", "uniform", "samples"):
            assert part in words, f"score.schematic() does not name {part!r}"
    finally:
        plt.close(fig)
