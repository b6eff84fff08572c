"""course_lib.topics.diffusion: schedules, the forward process and its posterior, L_simple, the samplers, EMA."""
import math

import pytest
import torch

from course_lib.core import checkpointing
from course_lib.core.layers import to_model_range, to_pixel_range
from course_lib.data import GaussianMixture2D
from course_lib.topics import diffusion
from course_lib.topics.diffusion import (MLPDenoiser, NoiseSchedule, cosine_betas, ddim_sample, ddim_sigma, ddim_step,
                                         ddim_timesteps, ddpm_loss, ddpm_sample, ddpm_step, linear_betas,
                                         probability_flow_euler_sample, probability_flow_euler_step, vlb_weights)
from course_lib.zoo import load_ddpm_mnist


@pytest.fixture
def schedule():
    return NoiseSchedule.linear(1000)


# ------------------------------------------------------------------------------------------ schedules

def test_linear_schedule_matches_the_paper_numbers(schedule):
    assert schedule.T == 1000 and schedule.betas[0] == 0 and schedule.alpha_bars[0] == 1
    assert schedule.betas[1].item() == pytest.approx(1e-4) and schedule.betas[1000].item() == pytest.approx(0.02)
    root_ab = schedule.alpha_bars.sqrt()
    for t, expected in [(100, 0.947), (250, 0.724), (500, 0.280), (750, 0.058)]:
        assert root_ab[t].item() == pytest.approx(expected, abs=1e-3)
    assert schedule.alpha_bars[1000].item() == pytest.approx(4.0e-5, rel=0.02)


def test_cosine_schedule_follows_its_definition():
    T, s = 200, 0.008
    sched = NoiseSchedule.cosine(T)
    t = torch.arange(T + 1, dtype=torch.float64)
    f = torch.cos((t / T + s) / (1 + s) * math.pi / 2) ** 2
    assert torch.allclose(sched.alpha_bars[:-1], (f / f[0])[:-1], atol=1e-12)  # the last beta is clipped
    assert (sched.alpha_bars[1:] < sched.alpha_bars[:-1]).all()
    assert cosine_betas(T).max() <= 0.999


def test_snr_and_posterior_variances(schedule):
    ab = schedule.alpha_bars
    assert torch.allclose(schedule.snr(), ab[1:] / (1 - ab[1:]))
    pv = schedule.posterior_variances()
    assert pv.shape == (1001,) and pv[0] == 0 and pv[1] == 0  # beta_tilde_1 = 0: x_0 is known given x_1 and x_0
    assert ((pv[2:] > 0) & (pv[2:] < schedule.betas[2:])).all()  # beta_tilde_t < beta_t


@pytest.mark.parametrize("bad", [torch.tensor([0.1, 0.2]), torch.tensor([0.0, 1.0]), torch.tensor([0.0, -0.1]),
                                 torch.zeros(2, 2), torch.tensor([0.0])])
def test_schedule_rejects_bad_betas(bad):
    with pytest.raises(ValueError, match="betas"):
        NoiseSchedule(bad)


def test_schedule_needs_positive_T():
    with pytest.raises(ValueError):
        linear_betas(0)


# ------------------------------------------------------------------------------------------ forward process

def test_closed_form_matches_the_iterated_chain():
    sched = NoiseSchedule.linear(300)
    g = torch.Generator().manual_seed(0)
    x = torch.full((40_000,), 1.5, dtype=torch.float64)
    for t in range(1, 301):
        x = sched.alphas[t].sqrt() * x + sched.betas[t].sqrt() * torch.randn(x.shape, generator=g, dtype=torch.float64)
    ab = sched.alpha_bars[300]
    assert x.mean().item() == pytest.approx(ab.sqrt().item() * 1.5, abs=0.02)
    assert x.var().item() == pytest.approx(1 - ab.item(), abs=0.02)


def test_q_sample_and_predict_x0_are_inverse(schedule):
    g = torch.Generator().manual_seed(1)
    x0, noise = torch.randn(6, 1, 4, 4, generator=g), torch.randn(6, 1, 4, 4, generator=g)
    t = torch.tensor([1, 2, 10, 500, 999, 1000])
    xt = schedule.q_sample(x0, t, noise)
    assert xt.shape == x0.shape
    assert torch.allclose(schedule.predict_x0(xt, t, noise), x0, atol=2e-3)  # 1 / sqrt(ab_1000) ~ 157 amplifies rounding
    assert torch.allclose(schedule.x0_to_eps(xt, t, x0), noise, atol=1e-4)
    assert torch.allclose(schedule.score_to_eps(schedule.eps_to_score(noise, t), t), noise, atol=1e-6)


def test_timestep_errors_are_clear(schedule):
    x = torch.zeros(3, 2)
    with pytest.raises(ValueError, match="0..1000"):
        schedule.q_sample(x, torch.tensor([0, 1, 1001]), x)
    with pytest.raises(TypeError, match="integers"):
        schedule.q_sample(x, torch.tensor([1.0, 2.0, 3.0]), x)
    with pytest.raises(ValueError, match="one t per example"):
        schedule.q_sample(x, torch.tensor([1, 2]), x)
    with pytest.raises(ValueError, match="randn_like"):
        schedule.q_sample(x, 5, torch.zeros(3, 3))
    with pytest.raises(ValueError, match="t >= 1"):
        schedule.posterior(x, x, 0)


def test_posterior_equals_gaussian_conditioning(schedule):
    # (x_{t-1}, x_t) given x_0 is jointly Gaussian; condition with the covariance formula.
    x0, xt = torch.tensor([[0.7]], dtype=torch.float64), torch.tensor([[-0.4]], dtype=torch.float64)
    for t in [2, 10, 300, 1000]:
        ab_prev, a = schedule.alpha_bars[t - 1], schedule.alphas[t]
        var_prev = 1 - ab_prev  # Var(x_{t-1} | x_0)
        var_t = a * var_prev + schedule.betas[t]  # Var(x_t | x_0)
        cov = a.sqrt() * var_prev  # Cov(x_{t-1}, x_t | x_0)
        mean = ab_prev.sqrt() * x0 + cov / var_t * (xt - schedule.alpha_bars[t].sqrt() * x0)
        var = var_prev - cov ** 2 / var_t
        got_mean, got_var = schedule.posterior(x0, xt, t)
        assert torch.allclose(got_mean, mean, atol=1e-12) and torch.allclose(got_var.reshape(()), var, atol=1e-12)


def test_posterior_mean_in_eps_form(schedule):
    g = torch.Generator().manual_seed(2)
    x0, eps = torch.randn(5, 3, generator=g, dtype=torch.float64), torch.randn(5, 3, generator=g, dtype=torch.float64)
    t = torch.tensor([2, 50, 300, 700, 1000])
    xt = schedule.q_sample(x0, t, eps)
    mean, _ = schedule.posterior(x0, xt, t)
    a, b, ab = (schedule._at(v, t, xt) for v in (schedule.alphas, schedule.betas, schedule.alpha_bars))
    assert torch.allclose(mean, (xt - b / (1 - ab).sqrt() * eps) / a.sqrt(), atol=1e-10)


def test_tweedie_on_a_gaussian_mixture(schedule):
    mixture = GaussianMixture2D([[-1.0, 0.0], [1.0, 0.5]], [0.3, 0.2], [0.3, 0.7])
    t = 200
    ab = schedule.alpha_bars[t].item()
    noised = GaussianMixture2D(mixture.means * math.sqrt(ab), (ab * mixture.stds ** 2 + 1 - ab).sqrt(), mixture.weights)
    xt = torch.tensor([[0.2, -0.3], [1.5, 1.0], [-2.0, 0.1]], dtype=torch.float64)
    # exact E[x_0 | x_t]: per component, Gaussian conditioning; then weight by responsibilities
    r = noised.responsibilities(xt)  # (N, K)
    gain = math.sqrt(ab) * mixture.stds ** 2 / (ab * mixture.stds ** 2 + 1 - ab)  # (K,)
    means = mixture.means[None] + gain[None, :, None] * (xt[:, None] - math.sqrt(ab) * mixture.means[None])
    exact = (r[:, :, None] * means).sum(1)
    eps_star = schedule.score_to_eps(noised.score(xt), torch.tensor([t]))  # the optimal eps_theta
    assert torch.allclose(schedule.predict_x0(xt, torch.tensor([t]), eps_star), exact, atol=1e-10)


def test_vlb_weights(schedule):
    w_beta, w_post = vlb_weights(schedule, "beta"), vlb_weights(schedule, "posterior")
    assert w_beta.shape == w_post.shape == (1001,) and w_beta[0] == 0 and w_post[0] == 0
    assert w_beta[1].item() == pytest.approx(1 / (2 * schedule.alphas[1].item()))
    assert math.isinf(w_post[1].item())
    t = 400
    b, a, ab = schedule.betas[t], schedule.alphas[t], schedule.alpha_bars[t]
    assert w_beta[t].item() == pytest.approx((b / (2 * a * (1 - ab))).item())
    assert (w_post[2:] > w_beta[2:]).all()  # smaller variance, larger weight
    with pytest.raises(ValueError):
        vlb_weights(schedule, "sigma")


def test_pixel_range_round_trip():
    pixels = torch.rand(4, 1, 3, 3)
    assert torch.allclose(to_pixel_range(to_model_range(pixels)), pixels)
    assert to_pixel_range(torch.tensor([-3.0, 3.0])).tolist() == [0.0, 1.0]


# ------------------------------------------------------------------------------------------ loss

def test_ddpm_loss_draws_t_over_1_to_T_and_regresses_noise():
    sched = NoiseSchedule.linear(5)
    seen = []

    def zero_model(xt, t):
        seen.append(t)
        return torch.zeros_like(xt)

    g = torch.Generator().manual_seed(0)
    losses = [ddpm_loss(zero_model, torch.zeros(256, 2), sched, generator=g) for _ in range(10)]
    ts = torch.cat(seen)
    assert ts.min() == 1 and ts.max() == 5  # T itself is included
    assert sum(losses).item() / 10 == pytest.approx(1.0, abs=0.05)  # E ||eps||^2 / dim = 1


def test_ddpm_loss_passes_labels():
    sched = NoiseSchedule.linear(10)
    got = {}

    def model(xt, t, labels):
        got["labels"] = labels
        return xt

    ddpm_loss(model, torch.zeros(3, 2), sched, labels=torch.tensor([0, 1, 2]))
    assert got["labels"].tolist() == [0, 1, 2]


# ------------------------------------------------------------------------------------------ steps and samplers

def test_ddpm_step_equals_the_paper_form_without_clipping(schedule):
    g = torch.Generator().manual_seed(3)
    x, eps, z = (torch.randn(4, 2, generator=g, dtype=torch.float64) for _ in range(3))
    t = 321
    a, b, ab = schedule.alphas[t], schedule.betas[t], schedule.alpha_bars[t]
    paper = (x - b / (1 - ab).sqrt() * eps) / a.sqrt() + b.sqrt() * z
    assert torch.allclose(ddpm_step(x, eps, t, schedule, noise=z), paper, atol=1e-10)
    post = ddpm_step(x, eps, t, schedule, noise=z, variance="posterior")
    assert torch.allclose(post, paper - b.sqrt() * z + schedule.posterior_variances()[t].sqrt() * z, atol=1e-10)
    assert torch.allclose(ddpm_step(x, eps, 1, schedule, noise=z), schedule.predict_x0(x, 1, eps), atol=1e-10)
    with pytest.raises(ValueError):
        ddpm_step(x, eps, 0, schedule)


def test_ddim_step_is_euler_in_scaled_variables(schedule):
    g = torch.Generator().manual_seed(4)
    x, eps = torch.randn(4, 2, generator=g, dtype=torch.float64), torch.randn(4, 2, generator=g, dtype=torch.float64)
    t, t_prev = 700, 640
    ab, ab_prev = schedule.alpha_bars[t], schedule.alpha_bars[t_prev]
    sigma_tilde, sigma_tilde_prev = ((1 - ab) / ab).sqrt(), ((1 - ab_prev) / ab_prev).sqrt()
    x_bar_prev = x / ab.sqrt() + (sigma_tilde_prev - sigma_tilde) * eps
    assert torch.allclose(ddim_step(x, eps, t, t_prev, schedule), ab_prev.sqrt() * x_bar_prev, atol=1e-10)


def test_naive_euler_agrees_with_ddim_to_first_order(schedule):
    g = torch.Generator().manual_seed(5)
    x, eps = torch.randn(4, 2, generator=g, dtype=torch.float64), torch.randn(4, 2, generator=g, dtype=torch.float64)
    gaps = []
    for step in (1, 2, 4):
        ddim = ddim_step(x, eps, 500, 500 - step, schedule)
        euler = probability_flow_euler_step(x, eps, 500, 500 - step, schedule)
        gaps.append((ddim - euler).abs().max().item())
    assert gaps[0] < 1e-3 and gaps[2] > 2.5 * gaps[1] > 2.5 ** 2 * gaps[0] * 0.5  # the gap grows like step^2


def test_ddim_sigma_with_eta_1_is_the_posterior_std(schedule):
    assert ddim_sigma(schedule, 10, 9, 1.0) == pytest.approx(schedule.posterior_variances()[10].sqrt().item())
    assert ddim_sigma(schedule, 10, 0, 1.0) == 0.0 and ddim_sigma(schedule, 10, 5, 0.0) == 0.0


def test_ddim_timesteps():
    assert ddim_timesteps(1000, 1) == [1000, 0]
    taus = ddim_timesteps(1000, 50)
    assert len(taus) == 51 and taus[0] == 1000 and taus[-2:] == [1, 0] and taus == sorted(taus, reverse=True)
    assert ddim_timesteps(10, 10) == list(range(10, -1, -1))
    with pytest.raises(ValueError):
        ddim_timesteps(10, 11)


def gaussian_eps(schedule, mean=0.5, std=0.3):
    """The exact eps_theta for 1-D data N(mean, std^2): E[eps | x_t] is linear in x_t."""
    def model(x, t):
        ab = schedule._at(schedule.alpha_bars, t, x)
        var_t = ab * std ** 2 + 1 - ab
        return (1 - ab).sqrt() * (x - ab.sqrt() * mean) / var_t
    return model


@pytest.mark.parametrize("sampler", ["ddpm", "ddim", "ddim_eta1"])
def test_samplers_with_the_exact_eps_reproduce_gaussian_data(sampler):
    sched = NoiseSchedule(linear_betas(400, 1e-4, 0.05))  # alpha_bar_T ~ 4e-5 with 400 steps
    model, g = gaussian_eps(sched), torch.Generator().manual_seed(6)
    shape = (6000, 1)
    if sampler == "ddpm":
        x = ddpm_sample(model, shape, sched, generator=g, clip_x0=False, show_progress=False)
    else:
        x = ddim_sample(model, shape, sched, steps=100, eta=1.0 if sampler == "ddim_eta1" else 0.0, generator=g,
                        clip_x0=False, show_progress=False)
    assert x.mean().item() == pytest.approx(0.5, abs=0.03) and x.std().item() == pytest.approx(0.3, abs=0.03)


def test_ddim_with_eta_1_and_all_steps_is_ddpm_with_posterior_variance():
    sched = NoiseSchedule.linear(50)
    model = gaussian_eps(sched)
    x_T = torch.randn(64, 1, dtype=torch.float64, generator=torch.Generator().manual_seed(6))  # float64: no rounding
    a = ddpm_sample(model, (64, 1), sched, generator=torch.Generator().manual_seed(7), variance="posterior",
                    clip_x0=False, x_T=x_T, show_progress=False)
    b = ddim_sample(model, (64, 1), sched, steps=50, eta=1.0, generator=torch.Generator().manual_seed(7),
                    clip_x0=False, x_T=x_T, show_progress=False)
    assert torch.allclose(a, b, atol=1e-10)


def test_ddim_eta0_is_deterministic_and_keeps_a_trajectory():
    sched = NoiseSchedule.linear(100)
    model = gaussian_eps(sched)
    x_T = torch.randn(8, 1, generator=torch.Generator().manual_seed(8))
    x1, traj = ddim_sample(model, (8, 1), sched, steps=10, x_T=x_T, keep_every=2, show_progress=False)
    x2 = ddim_sample(model, (8, 1), sched, steps=10, x_T=x_T, generator=torch.Generator().manual_seed(9),
                     show_progress=False)
    assert torch.equal(x1, x2)
    assert [t for t, _ in traj] == [100, 78, 56, 34, 12, 0] and torch.equal(traj[0][1], x_T)


def test_ddpm_sample_trajectory_and_clipping():
    sched = NoiseSchedule.linear(20)
    x, traj = ddpm_sample(lambda x, t: torch.zeros_like(x), (3, 1, 2, 2), sched, keep_every=5,
                          generator=torch.Generator().manual_seed(0), show_progress=False)
    assert [t for t, _ in traj] == [20, 15, 10, 5, 0] and x.shape == (3, 1, 2, 2)
    assert x.abs().max() <= 1.0 + 1e-6  # with eps_hat = 0 and clipping, the last x0_hat is clipped to [-1, 1]
    with pytest.raises(ValueError, match="shape"):
        ddpm_sample(lambda x, t: x, (0, 2), sched)


def test_probability_flow_euler_sample_runs_and_is_deterministic():
    sched = NoiseSchedule.linear(100)
    x_T = torch.randn(5, 1, generator=torch.Generator().manual_seed(1))
    a = probability_flow_euler_sample(gaussian_eps(sched), (5, 1), sched, steps=100, x_T=x_T)
    b = ddim_sample(gaussian_eps(sched), (5, 1), sched, steps=100, x_T=x_T, clip_x0=False, show_progress=False)
    assert torch.allclose(a, b, atol=0.1)  # with every step, the two ODE solvers nearly agree


# ------------------------------------------------------------------------------------------ models, EMA, loading

def test_mlp_denoiser_shapes_and_time_dependence():
    torch.manual_seed(0)
    model = MLPDenoiser(dim=2, hidden=16, depth=2, emb_dim=8)
    x = torch.randn(5, 2)
    out = model(x, torch.full((5,), 10))
    assert out.shape == (5, 2)
    assert torch.allclose(model(x, 10), out)  # a scalar t is broadcast
    assert not torch.allclose(model(x, 900), out)
    with pytest.raises(ValueError, match=r"\(N, 2\)"):
        model(torch.randn(5, 3), 10)


def test_mlp_denoiser_learns_a_simple_eps():
    torch.manual_seed(0)
    sched = NoiseSchedule.linear(100)
    model = MLPDenoiser(dim=1, hidden=16, depth=1, emb_dim=8)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(100):
        loss = ddpm_loss(model, 0.5 + 0.3 * torch.randn(64, 1, generator=g), sched, generator=g)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert sum(losses[-20:]) / 20 < 0.6  # predicting eps = 0 has loss 1; the optimum is far below


def test_load_ddpm_mnist_says_what_to_do_when_missing(monkeypatch):
    monkeypatch.setattr(checkpointing, "read_manifest", lambda *a, **k: {})
    with pytest.raises(FileNotFoundError, match="python -m course_lib.zoo train ddpm_mnist"):
        load_ddpm_mnist()


def test_load_ddpm_mnist_when_shipped():
    if "ddpm_mnist" not in checkpointing.read_manifest():
        pytest.skip("ddpm_mnist is not shipped in this checkout")
    model, sched, entry = load_ddpm_mnist()
    assert sched.T == entry["recipe"]["T"]
    with torch.no_grad():
        out = model(torch.zeros(1, 1, 28, 28), torch.tensor([500]))
    assert out.shape == (1, 1, 28, 28) and torch.isfinite(out).all()


def test_float32_steps_keep_their_precision_at_small_t(schedule):
    # 1 - alpha_bar_t ~ 1e-4 at small t: the coefficients must be formed in float64, not in the data's float32
    g = torch.Generator().manual_seed(11)
    x, eps = 1.5 * torch.randn(2000, 2, generator=g), torch.randn(2000, 2, generator=g)
    for t in [2, 3, 10]:
        a, b, ab = schedule.alphas[t], schedule.betas[t], schedule.alpha_bars[t]
        exact = (x.double() - b / (1 - ab).sqrt() * eps.double()) / a.sqrt()
        assert (ddpm_step(x, eps, t, schedule) - exact).abs().max() < 1e-5


def test_samplers_refuse_an_x_T_of_another_shape():
    """ddim_sample used x_T's shape silently when it differed from ``shape``."""
    model = MLPDenoiser()
    schedule = NoiseSchedule.linear(50)
    with pytest.raises(ValueError, match=r"x_T has shape \(4, 2\) but the sampler was asked for shape \(8, 2\)"):
        ddim_sample(model, (8, 2), schedule, steps=5, x_T=torch.randn(4, 2), show_progress=False)
    with pytest.raises(ValueError, match="x_T has shape"):
        diffusion.ddpm_sample(model, (8, 2), schedule, x_T=torch.randn(8, 3), show_progress=False)
    with pytest.raises(ValueError, match="not a device name"):
        ddim_sample(model, (8, 2), schedule, steps=5, device="gpu", show_progress=False)


# ------------------------------------------------------------------------------------------ the picture

def test_schematic_draws_both_chains_and_the_jump():
    import matplotlib.pyplot as plt

    from course_lib.core.diagram import text_of

    fig = diffusion.schematic()
    try:
        words = text_of(fig)
        for part in ("$x_0$", "$x_T$", "q(x_t \\mid x_{t-1})", "p_\\theta(x_{t-1} \\mid x_t)", "q(x_t \\mid x_0)",
                     "\\epsilon_\\theta(x_t, t)"):
            assert part in words, f"the diffusion schematic does not name {part}"
        fig.canvas.draw()  # mathtext errors surface here
    finally:
        plt.close(fig)


def test_eta_one_gives_the_posterior_variance(schedule):
    """Chapter 11, F.1: sigma_t^2 with eta = 1 and t' = t - 1 is beta_tilde_t = (1 - ab_{t-1}) / (1 - ab_t) beta_t."""
    sigma2 = torch.tensor([ddim_sigma(schedule, t, t - 1, eta=1.0) ** 2 for t in range(1, schedule.T + 1)],
                          dtype=torch.float64)
    assert torch.allclose(sigma2, schedule.posterior_variances()[1:], rtol=1e-10, atol=0)
