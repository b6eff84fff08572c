"""course_lib.topics.restoration: forward models, the posterior mean, the restorer and its losses (chapter 15)."""
import pytest
import torch
import torch.nn.functional as F

from course_lib.eval.fid import MnistClassifier
from course_lib.topics import restoration as R
from course_lib.topics.gan import DCGANDiscriminator


def digits(n=8, seed=0):
    return torch.rand(n, 1, 28, 28, generator=torch.Generator().manual_seed(seed))


def test_downsample_is_box_blur_then_subsample():
    x = digits()
    box = torch.full((1, 1, 4, 4), 1 / 16)
    assert torch.allclose(F.conv2d(x, box)[..., ::4, ::4], R.downsample(x), atol=1e-6)
    assert R.downsample(x).shape == (8, 1, 7, 7)


def test_forward_models_and_baselines_have_the_right_shapes():
    x = digits(2)
    g = torch.Generator().manual_seed(0)
    assert R.observe(x, "denoise", 0.1, g).shape == x.shape
    assert R.observe(x, "deblur", 0.0, g).shape == x.shape
    assert torch.allclose(R.observe(x, "deblur", 0.0, g), R.box_blur(x))
    y = R.observe(x, "super_resolution", 0.0, g)
    for mode in ("nearest", "bilinear", "bicubic"):
        up = R.upsample(y, mode)
        assert up.shape == x.shape and up.min() >= 0 and up.max() <= 1
    assert torch.allclose(R.downsample(R.upsample(y, "nearest")), y, atol=1e-6)


def test_bad_input_is_refused_with_a_hint():
    with pytest.raises(ValueError, match="unsqueeze"):
        R.downsample(torch.rand(28, 28))
    with pytest.raises(ValueError, match="task"):
        R.observe(digits(1), "inpaint", 0.1)
    with pytest.raises(ValueError, match="7 x 7"):
        R.Restorer(8)(torch.rand(2, 1, 28, 28))
    with pytest.raises(ValueError, match="kind"):
        R.restorer_loss("l3", digits(1), digits(1))


def test_bimodal_posterior_mean_matches_monte_carlo():
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 2, (200_000,), generator=g).float() * 2 - 1
    y = x + 0.8 * torch.randn(200_000, generator=g)
    near = (y - 0.5).abs() < 0.05
    assert abs(x[near].mean() - R.bimodal_posterior_mean(torch.tensor(0.5), 0.8)) < 0.03


def test_posterior_mean_equals_tweedie_for_denoising():
    prior = digits(50)
    y = R.observe(prior[:10], "denoise", 2.0, torch.Generator().manual_seed(1))
    bayes = R.posterior_mean(y, prior, lambda v: v, 2.0)
    assert torch.allclose(R.tweedie_denoiser(y, prior, 2.0), bayes.double(), atol=1e-5)
    weights = R.posterior_weights(y, prior, lambda v: v, 2.0)
    assert torch.allclose(weights.sum(1), torch.ones(10), atol=1e-5)
    assert ((R.effective_candidates(weights) >= 1 - 1e-6) & (R.effective_candidates(weights) <= 50 + 1e-6)).all()


def test_tiny_noise_posterior_picks_the_true_digit():
    prior = digits(20)
    weights = R.posterior_weights(R.downsample(prior[:5]), prior, R.downsample, 1e-3)
    assert torch.equal(weights.argmax(1), torch.arange(5))


def test_the_chapters_step_by_step_restorer_matches_the_module():
    torch.manual_seed(0)
    model = R.Restorer(16)
    y = R.downsample(digits(4))
    base = F.interpolate(y, scale_factor=4, mode="bicubic", align_corners=False)
    by_hand = torch.sigmoid(torch.logit(base.clamp(0.02, 0.98)) + model.up(model.low(y)))
    with torch.no_grad():
        assert torch.allclose(by_hand, model(y), atol=1e-6)


def test_perceptual_loss_by_hand_matches_the_library():
    torch.manual_seed(0)
    classifier = MnistClassifier().eval()
    x, x_hat = digits(4, 0), digits(4, 1)
    first = [F.relu(classifier.body[0](v)) for v in (x_hat, x)]
    second = [F.relu(classifier.body[3](F.max_pool2d(f, 2))) for f in first]
    by_hand = F.mse_loss(*first) + F.mse_loss(*second)
    assert torch.allclose(R.perceptual_loss(classifier, x_hat, x), by_hand, rtol=1e-5)
    assert float(R.perceptual_loss(classifier, x, x).detach()) < 1e-12


def test_adversarial_loss_by_hand_matches_the_library():
    torch.manual_seed(0)
    D = DCGANDiscriminator(8)
    x, x_hat = digits(4, 0), digits(4, 1)
    by_hand = F.mse_loss(x_hat, x) + 0.01 * F.softplus(-D(2 * x_hat - 1)).mean()
    assert torch.allclose(R.restorer_loss("adversarial", x_hat, x, discriminator=D), by_hand, rtol=1e-6)


def test_psnr_of_a_known_error():
    x = torch.full((3, 1, 28, 28), 0.5)
    assert abs(R.psnr(x + 0.1, x) - 20.0) < 1e-4


@pytest.mark.parametrize("kind", R.LOSS_KINDS)
def test_train_restorer_runs_a_few_steps(kind):
    torch.manual_seed(0)
    model, history = R.train_restorer(kind, digits(16), steps=2, batch_size=4, width=8, noise_sigma=0.1,
                                      classifier=MnistClassifier(), show_progress=False)
    assert len(history["loss"]) == 2 and not model.training
    assert R.restore(model, R.downsample(digits(3))).shape == (3, 1, 28, 28)


def test_evaluate_restorations_scores_the_truth_as_the_floor():
    torch.manual_seed(0)
    classifier = MnistClassifier().eval()
    truth, reference = digits(40, 0), digits(40, 1)
    rows = R.evaluate_restorations({"bicubic": R.upsample(R.downsample(truth))}, truth, reference, classifier)
    assert rows["truth"]["psnr"] == float("inf") and rows["bicubic"]["psnr"] > 0
    assert rows["truth"]["fid"] >= 0
