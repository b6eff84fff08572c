"""course_lib.eval.fid: the Fréchet distance, the shipped classifier's features, FID with its floor."""
import numpy as np
import pytest
import scipy.linalg
import torch

from course_lib.data import load_mnist
from course_lib.eval.fid import (MnistClassifier, classifier_outputs, fid, frechet_distance, label_entropies,
                                 real_fid_floor, shipped_classifier)
from course_lib.topics.diffusion import sampler_quality


def gaussian_features(n, d, seed, shift=0.0, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    mixing = torch.randn(d, d, generator=g, dtype=torch.float64) / d ** 0.5
    return (torch.randn(n, d, generator=g, dtype=torch.float64) @ mixing) * scale + shift


def reference_frechet(a, b):
    """The textbook formula with scipy's general matrix square root."""
    a, b = a.numpy(), b.numpy()
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = scipy.linalg.sqrtm(cov_a @ cov_b).real
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a + cov_b - 2 * covmean))


def test_frechet_distance_matches_the_scipy_formula():
    a, b = gaussian_features(500, 8, 0), gaussian_features(400, 8, 1, shift=0.3, scale=1.5)
    assert frechet_distance(a, b) == pytest.approx(reference_frechet(a, b), rel=1e-8, abs=1e-10)


def test_frechet_distance_is_zero_for_identical_sets_and_symmetric():
    a, b = gaussian_features(300, 6, 0), gaussian_features(300, 6, 1)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-8)
    assert frechet_distance(a, b) == pytest.approx(frechet_distance(b, a), rel=1e-8)


def test_a_mean_shift_adds_its_squared_length():
    a = gaussian_features(300, 5, 0)
    shift = torch.tensor([1.0, 0.0, -2.0, 0.5, 0.0], dtype=torch.float64)
    assert frechet_distance(a, a + shift) == pytest.approx(float((shift ** 2).sum()), rel=1e-8)


@pytest.mark.parametrize("a_shape, b_shape", [((10, 4), (10, 5)), ((10,), (10, 4)), ((1, 4), (10, 4))])
def test_frechet_distance_rejects_bad_shapes(a_shape, b_shape):
    with pytest.raises(ValueError):
        frechet_distance(torch.zeros(a_shape), torch.zeros(b_shape))


def test_classifier_shapes_and_errors():
    model = MnistClassifier()
    features, probs = classifier_outputs(torch.rand(3, 1, 28, 28), model)
    assert features.shape == (3, 128) and probs.shape == (3, 10)
    assert torch.allclose(probs.sum(1), torch.ones(3, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"\(N, 1, 28, 28\)"):
        model(torch.rand(3, 28, 28))


@pytest.fixture(scope="module")
def classifier():
    return shipped_classifier()


@pytest.fixture(scope="module")
def test_images():
    return load_mnist("test")[0]


def test_shipped_classifier_is_accurate(classifier):
    x, y = load_mnist("test")
    assert (classifier(x[:2000]).argmax(1) == y[:2000]).float().mean() > 0.98


def test_fid_of_real_digits_is_about_the_floor_and_a_shifted_set_scores_worse(classifier, test_images):
    n = 1000
    floor = real_fid_floor(n, test_images, classifier)
    # Another random split: the MNIST test set is ordered (the first 5,000 digits come from other
    # writers than the last 5,000), so contiguous slices would not be samples of one distribution.
    g = torch.Generator().manual_seed(1)
    order = torch.randperm(len(test_images), generator=g)
    sample, reference = test_images[order[:n]], test_images[order[n:2 * n]]
    assert 0 < floor and 0.5 * floor < fid(sample, reference, classifier) < 2 * floor
    noisy = (sample + 0.3 * torch.randn(n, 1, 28, 28, generator=g)).clamp(0, 1)
    blurred = torch.nn.functional.avg_pool2d(sample, 3, stride=1, padding=1)
    assert fid(noisy, reference, classifier) > 3 * floor
    assert fid(blurred, reference, classifier) > 3 * floor
    assert fid(noisy, reference, classifier) < fid(torch.rand(n, 1, 28, 28, generator=g), reference, classifier)


def test_label_entropies_separate_clear_digits_from_noise(classifier, test_images):
    real = label_entropies(test_images[:500], classifier)
    noise = label_entropies(torch.rand(500, 1, 28, 28, generator=torch.Generator().manual_seed(0)), classifier)
    assert real["per_image_entropy"] < 0.1 and real["marginal_entropy"] > 2.2  # ln 10 = 2.303
    assert noise["per_image_entropy"] > real["per_image_entropy"] or noise["marginal_entropy"] < 1.0


def test_real_fid_floor_needs_enough_images(test_images):
    with pytest.raises(ValueError, match="2n"):
        real_fid_floor(6000, test_images)


def test_sampler_quality_reports_fid_with_its_floor(classifier):
    class ZeroNoise(torch.nn.Module):  # predicts eps = 0, so DDIM returns a scaled copy of x_T
        def __init__(self):
            super().__init__()
            self.dummy = torch.nn.Parameter(torch.zeros(()))

        def forward(self, x, t):
            return torch.zeros_like(x)

    report = sampler_quality(ZeroNoise(), n=20, steps=2, show_progress=False)
    assert report["fid_n"] == 20 and report["sampler"] == "ddim-2"
    assert report["fid"] > report["fid_floor"] > 0
    with pytest.raises(ValueError, match="sampler"):
        sampler_quality(ZeroNoise(), n=4, sampler="euler", show_progress=False)


@pytest.mark.parametrize("images, message", [
    ((torch.rand(8, 1, 28, 28) * 255).to(torch.uint8), "dtype torch.uint8"),
    (torch.rand(8, 1, 28, 28) * 255, "divide by 255"),
    (torch.rand(8, 1, 28, 28) * 2 - 1, "to_pixel_range"),
    (torch.full((8, 1, 28, 28), float("nan")), "must lie in"),
])
def test_fid_refuses_pixels_outside_0_1(images, message):
    """uint8 digits (0..255) gave an FID of 70,929,025 instead of an error."""
    model = MnistClassifier()
    with pytest.raises((TypeError, ValueError), match=message):
        fid(images, torch.rand(8, 1, 28, 28), model)
    with pytest.raises((TypeError, ValueError), match=message):
        label_entropies(images, model)
