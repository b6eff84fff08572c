"""Sample quality for MNIST-like generators: FID on a small shipped classifier's features.

The Fréchet distance between two Gaussians fitted to feature sets (means ``mu_1, mu_2``,
covariances ``S_1, S_2``) is

    FID = ||mu_1 - mu_2||^2 + Tr(S_1 + S_2 - 2 (S_1 S_2)^{1/2}).

Inception features mean nothing on 28x28 digits, so the features here are the 128-d penultimate
layer of :class:`MnistClassifier` (shipped as the ``mnist_classifier`` checkpoint). Numbers are only
comparable at the same ``n`` and the same feature extractor: always print them next to the
real-vs-real floor (:func:`real_fid_floor`), the FID between two disjoint sets of real test digits
of the same size.
"""
from __future__ import annotations

import torch
from torch import nn

from course_lib.core.checkpointing import load_checkpoint
from course_lib.data import load_mnist


class MnistClassifier(nn.Module):
    """A small CNN: (N, 1, 28, 28) in [0, 1] -> logits (N, 10); ``features`` gives the 128-d layer."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # (N, 32, 14, 14)
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # (N, 64, 7, 7)
            nn.Flatten(), nn.Linear(64 * 7 * 7, 128), nn.ReLU(),  # (N, 128)
        )
        self.head = nn.Linear(128, 10)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1:] != (1, 28, 28):
            raise ValueError(f"expected images of shape (N, 1, 28, 28), got {tuple(x.shape)}")
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def shipped_classifier(device: torch.device | str = "cpu") -> MnistClassifier:
    """The trained classifier that ships with the course (test accuracy in the manifest)."""
    model = MnistClassifier().to(device)
    load_checkpoint(model, "mnist_classifier")
    return model


def check_pixel_images(images: torch.Tensor, name: str = "images") -> None:
    """Refuse what the classifier was not trained on: integer pixels (0..255) or float values outside [0, 1].

    Such inputs do not crash, they give absurd numbers (an FID of 70 million on uint8 digits)."""
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape (N, 1, 28, 28), got {type(images).__name__}")
    if not images.is_floating_point():
        raise TypeError(f"{name} have dtype {images.dtype}; the classifier expects floats in [0, 1]: "
                        f"use {name}.float() / 255 for 0..255 pixels")
    if images.numel() == 0:
        raise ValueError(f"{name} is empty (shape {tuple(images.shape)})")
    low, high = images.min().item(), images.max().item()
    if not (low >= -1e-4 and high <= 1 + 1e-4):  # also catches NaN
        hint = ("they look like model outputs in [-1, 1]: map them with course_lib.topics.diffusion.to_pixel_range(x)"
                if low >= -1 - 1e-4 and high <= 1 + 1e-4 else "they look like 0..255 pixels: divide by 255"
                if high > 1.5 else "clamp them with x.clamp(0, 1)")
        raise ValueError(f"{name} must lie in [0, 1], found values in [{low:.4g}, {high:.4g}]: {hint}")


@torch.no_grad()
def classifier_outputs(images: torch.Tensor, classifier: MnistClassifier, batch_size: int = 1000):
    """Features (N, 128) and class probabilities (N, 10), in float64 on the CPU, of ``images`` (N, 1, 28, 28) in [0, 1]."""
    check_pixel_images(images)
    device = next(classifier.parameters()).device
    features, probs = [], []
    for start in range(0, len(images), batch_size):
        f = classifier.features(images[start:start + batch_size].to(device).float())
        features.append(f.double().cpu())
        probs.append(torch.softmax(classifier.head(f), dim=1).double().cpu())
    return torch.cat(features), torch.cat(probs)


def frechet_distance(features_a: torch.Tensor, features_b: torch.Tensor) -> float:
    """FID between two feature sets (N_a, D) and (N_b, D), via a symmetric square root."""
    if features_a.ndim != 2 or features_b.ndim != 2 or features_a.shape[1] != features_b.shape[1]:
        raise ValueError(f"need two (N, D) feature sets with the same D, got {tuple(features_a.shape)} "
                         f"and {tuple(features_b.shape)}")
    if min(len(features_a), len(features_b)) < 2:
        raise ValueError("need at least 2 samples in each set to estimate a covariance")
    a, b = features_a.double(), features_b.double()
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = torch.cov(a.T), torch.cov(b.T)
    # Tr((S_a S_b)^{1/2}) = Tr((S_a^{1/2} S_b S_a^{1/2})^{1/2}): the latter is symmetric PSD.
    values, vectors = torch.linalg.eigh(cov_a)
    sqrt_a = vectors @ torch.diag(values.clamp(min=0).sqrt()) @ vectors.T
    middle = sqrt_a @ cov_b @ sqrt_a
    trace_sqrt = torch.linalg.eigvalsh((middle + middle.T) / 2).clamp(min=0).sqrt().sum()
    return float(((mu_a - mu_b) ** 2).sum() + cov_a.trace() + cov_b.trace() - 2 * trace_sqrt)


def fid(images: torch.Tensor, reference: torch.Tensor, classifier: MnistClassifier | None = None) -> float:
    """FID of ``images`` against ``reference`` images, both (N, 1, 28, 28) in [0, 1]."""
    classifier = classifier or shipped_classifier()
    return frechet_distance(classifier_outputs(images, classifier)[0], classifier_outputs(reference, classifier)[0])


def real_fid_floor(n: int, test_images: torch.Tensor, classifier: MnistClassifier | None = None) -> float:
    """FID between two disjoint sets of ``n`` real test digits: the best a generator can hope for at this n."""
    reference, twin = real_split(n, test_images)
    return fid(twin, reference, classifier)


def label_entropies(images: torch.Tensor, classifier: MnistClassifier | None = None) -> dict:
    """Mean per-image label entropy (low: each sample looks like one digit) and the entropy of the
    average label distribution (high, up to ln 10 = 2.303: all digits appear), in nats."""
    probs = classifier_outputs(images, classifier or shipped_classifier())[1]
    per_image = -(torch.special.xlogy(probs, probs)).sum(1).mean()
    marginal = probs.mean(0)
    return {"per_image_entropy": float(per_image), "marginal_entropy": float(-(torch.special.xlogy(marginal, marginal)).sum())}


def real_split(n: int, test_images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Two disjoint, fixed random sets of ``n`` test digits: the reference set and its real-vs-real twin."""
    if 2 * n > len(test_images):
        raise ValueError(f"need 2n = {2 * n} test images, have {len(test_images)}; use n <= {len(test_images) // 2}")
    order = torch.randperm(len(test_images), generator=torch.Generator().manual_seed(0))
    return test_images[order[:n]], test_images[order[n:2 * n]]


@torch.no_grad()
def quality_of_samples(samples: torch.Tensor, classifier: MnistClassifier | None = None) -> dict:
    """FID (domain features) of ``n`` generated digits (n, 1, 28, 28) in [0, 1] against ``n`` real test digits.

    ``fid_floor`` is the same FID between two disjoint sets of ``n`` real test digits: every generative
    model of the course (DDPM, GAN, ...) is scored against the same reference set and floor, so FIDs
    at equal ``n`` compare.
    """
    if samples.dim() != 4 or tuple(samples.shape[1:]) != (1, 28, 28):
        raise ValueError(f"expected samples of shape (n, 1, 28, 28) in [0, 1], got {tuple(samples.shape)}")
    classifier = classifier or shipped_classifier()
    n = len(samples)
    reference, twin = real_split(n, load_mnist("test")[0])
    real_features = classifier_outputs(reference, classifier)[0]
    entropies = label_entropies(samples, classifier)
    return {"fid": round(frechet_distance(classifier_outputs(samples, classifier)[0], real_features), 3),
            "fid_floor": round(frechet_distance(classifier_outputs(twin, classifier)[0], real_features), 3),
            "fid_n": n, "per_image_label_entropy": round(entropies["per_image_entropy"], 4),
            "marginal_label_entropy": round(entropies["marginal_entropy"], 4)}
