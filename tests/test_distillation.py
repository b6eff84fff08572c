"""course_lib.topics.distillation: soft targets, the distillation loss and its T^2, the student (chapter 15)."""
import pytest
import torch
import torch.nn.functional as F

from course_lib.topics import distillation as D
from course_lib.topics.dino import teacher_probabilities


def logits(seed, n=6, k=10, scale=2.0):
    z = torch.randn(n, k, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * scale
    return z - z.mean(1, keepdim=True)


@pytest.mark.parametrize("T", [1.0, 3.0, 20.0])
def test_soft_target_gradient_matches_autograd(T):
    z_s, z_t = logits(0), logits(1)
    leaf = z_s.clone().requires_grad_(True)
    q_t = torch.softmax(z_t / T, -1)
    kl = (q_t * (q_t.log() - torch.log_softmax(leaf / T, -1))).sum()
    (grad,) = torch.autograd.grad(kl, leaf)
    assert torch.allclose(grad, D.soft_target_gradient(z_s, z_t, T), atol=1e-12)


def test_t_squared_scaling_at_high_temperature():
    z_s, z_t = logits(0), logits(1)
    limit = (z_s - z_t) / 10
    errors = [float((T**2 * D.soft_target_gradient(z_s, z_t, T) - limit).norm() / limit.norm()) for T in (5, 20, 80)]
    assert errors[0] > errors[1] > errors[2] and errors[2] < 0.05  # the error falls like 1 / T


def test_distillation_loss_by_hand_and_masked_labels():
    z_s, z_t = logits(0, n=8), logits(1, n=8)
    labels = torch.tensor([3, -1, 7, 0, -1, 2, 9, 1])
    T, alpha = 4.0, 0.9
    soft = F.kl_div(F.log_softmax(z_s / T, -1), F.softmax(z_t / T, -1), reduction="batchmean")
    by_hand = (1 - alpha) * F.cross_entropy(z_s[labels >= 0], labels[labels >= 0]) + alpha * T**2 * soft
    assert torch.allclose(D.distillation_loss(z_s, z_t, labels, T, alpha).double(), by_hand, rtol=1e-5)
    unlabelled = D.distillation_loss(z_s, z_t, None, T, alpha)
    assert torch.allclose(unlabelled.double(), alpha * T**2 * soft, rtol=1e-5)
    assert float(D.distillation_loss(z_t, z_t, None, T, 1.0)) < 1e-6


def test_soften_and_dino_agree_and_bad_input_is_refused():
    z = logits(2)
    assert torch.allclose(teacher_probabilities(z, torch.zeros(10, dtype=torch.float64), 0.5), D.soften(z, 0.5))
    assert torch.allclose(D.soften(z, 1e4), torch.full_like(z, 0.1), atol=1e-3)
    with pytest.raises(ValueError, match="temperature"):
        D.soften(z, 0.0)
    with pytest.raises(ValueError, match=r"\(N, K\)"):
        D.distillation_loss(z[0], z[0], None)
    with pytest.raises(ValueError, match="28"):
        D.StudentMLP()(torch.rand(2, 784))


def test_transfer_set_keeps_n_labels():
    x, y = torch.rand(100, 1, 28, 28), torch.randint(10, (100,))
    images, labels = D.transfer_set(x, y, 10, 50)
    assert images.shape[0] == 50 and int((labels >= 0).sum()) == 10
    kept = labels >= 0
    assert torch.equal(labels[kept], y[:50][kept])
    with pytest.raises(ValueError):
        D.transfer_set(x, y, 60, 50)


def test_train_student_both_ways():
    x, y = torch.rand(64, 1, 28, 28), torch.randint(10, (64,))
    images, labels = D.transfer_set(x, y, 16, 64)
    teacher = D.StudentMLP(8)
    z_t = D.teacher_logits_of(teacher, images)
    for teacher_logits in (None, z_t):
        student, losses = D.train_student(images, labels, teacher_logits=teacher_logits, steps=3, batch_size=8,
                                          hidden=8, show_progress=False)
        assert len(losses) == 3 and not student.training
        assert 0.0 <= D.test_accuracy(student, x, y) <= 1.0
