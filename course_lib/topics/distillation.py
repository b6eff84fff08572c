"""Chapter 15: knowledge distillation (Hinton, Vinyals and Dean 2015).

A trained teacher's logits z_t, softened at a temperature T, q_t = softmax(z_t / T), are the targets of a small
student with logits z_s, q_s = softmax(z_s / T):

    L = (1 - alpha) CE(y, softmax(z_s)) + alpha T^2 KL(q_t || q_s).

The soft-target term's gradient is (1 / T)(q_s - q_t), about (z_s - z_t) / (K T^2) for large T and zero-mean
logits (K classes): multiplying by T^2 keeps its size independent of T. Chapter 05's DINO has the same loss
shape without labels, the teacher being an EMA of the student.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from course_lib.core.runtime import as_device, seed_everything
from course_lib.core.train import accuracy, autocast, resolve_precision


def _check_logits(name: str, logits: torch.Tensor) -> None:
    if not isinstance(logits, torch.Tensor) or logits.ndim != 2:
        shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise ValueError(f"{name} must be logits of shape (N, K), got {shape}; for one example use {name}[None]")


def soften(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """softmax(z / T) over the last axis: T = 1 the model's own probabilities, T > 1 softer. Chapter 15, D.1."""
    if temperature <= 0:
        raise ValueError(f"the temperature must be > 0, got {temperature}")
    return torch.softmax(logits / temperature, dim=-1)


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor | None,
                      temperature: float = 4.0, alpha: float = 0.9) -> torch.Tensor:
    """(1 - alpha) CE(y, softmax(z_s)) + alpha T^2 KL(softmax(z_t / T) || softmax(z_s / T)), batch means.

    ``labels`` (N,) may hold -1 for unlabelled examples (a transfer set): the CE term then averages over the
    labelled ones only (and is 0 when there are none); ``labels=None`` means none is labelled. The teacher's
    logits are detached. Chapter 15, D.2."""
    _check_logits("student_logits", student_logits)
    _check_logits("teacher_logits", teacher_logits)
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(f"student {tuple(student_logits.shape)} and teacher {tuple(teacher_logits.shape)} logits "
                         "must have the same shape")
    T = temperature
    log_q_s = F.log_softmax(student_logits / T, dim=-1)
    q_t = soften(teacher_logits.detach().float(), T)
    soft = (q_t * (torch.log(q_t.clamp(min=1e-30)) - log_q_s)).sum(-1).mean()  # KL(q_t || q_s)
    hard = student_logits.new_zeros(())
    if labels is not None and (labels >= 0).any():
        labelled = labels >= 0
        hard = F.cross_entropy(student_logits[labelled], labels[labelled])
    return (1 - alpha) * hard + alpha * T**2 * soft


def soft_target_gradient(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                         temperature: float) -> torch.Tensor:
    """d KL(q_t || q_s) / d z_s for each example (no batch mean, no T^2): (q_s - q_t) / T. (N, K) -> (N, K).
    Chapter 15, D.2."""
    return (soften(student_logits, temperature) - soften(teacher_logits, temperature)) / temperature


class StudentMLP(nn.Module):
    """The small student: (N, 1, 28, 28) -> flatten -> Linear(784, hidden) -> ReLU -> Linear(hidden, 10).
    Taught in chapter 15, D.3."""

    def __init__(self, hidden: int = 64):
        super().__init__()
        self.config = dict(hidden=hidden)
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(784, hidden), nn.ReLU(), nn.Linear(hidden, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1:] != (1, 28, 28):
            raise ValueError(f"expected images of shape (N, 1, 28, 28), got {tuple(x.shape)}")
        return self.net(x)


@torch.no_grad()
def teacher_logits_of(teacher: nn.Module, x: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """The teacher's logits (N, K) on x, float32 on the CPU, computed once before training. Chapter 15, D.3."""
    teacher.eval()
    device = next(teacher.parameters()).device
    return torch.cat([teacher(x[i:i + batch_size].to(device)).float().cpu() for i in range(0, len(x), batch_size)])


def transfer_set(x: torch.Tensor, y: torch.Tensor, n_labelled: int, n_transfer: int, seed: int = 0):
    """The regime of chapter 15, D.3: the first ``n_transfer`` images of (x, y), of which a fixed random
    ``n_labelled`` keep their labels and the others get label -1. Returns (images, labels with -1)."""
    if n_labelled > n_transfer:
        raise ValueError(f"n_labelled = {n_labelled} cannot exceed n_transfer = {n_transfer}")
    images, labels = x[:n_transfer], y[:n_transfer].clone()
    keep = torch.randperm(n_transfer, generator=torch.Generator().manual_seed(seed))[:n_labelled]
    hidden = torch.ones(n_transfer, dtype=torch.bool)
    hidden[keep] = False
    labels[hidden] = -1
    return images, labels


def train_student(images: torch.Tensor, labels: torch.Tensor, *, teacher_logits: torch.Tensor | None,
                  steps: int, batch_size: int = 128, lr: float = 3e-3, hidden: int = 64, temperature: float = 4.0,
                  alpha: float = 0.9, weight_decay: float = 1e-4, seed: int = 0,
                  device: torch.device | str = "cpu", precision: str = "fp32", show_progress: bool = True):
    """Train a :class:`StudentMLP` for ``steps`` AdamW steps (cosine learning rate).

    With ``teacher_logits`` (N, K): :func:`distillation_loss` on batches of all N images (labels -1 where
    unknown). Without: cross entropy on the labelled images only (the labels-only student), with the same
    number of steps and the same batch size. Returns (student in eval mode, list of losses). Chapter 15, D.3."""
    device = as_device(device)
    precision = resolve_precision(precision, device)
    generator = seed_everything(seed)
    student = StudentMLP(hidden).to(device)
    if teacher_logits is None:
        keep = labels >= 0
        images, labels = images[keep], labels[keep]
    if len(images) == 0:
        raise ValueError("no labelled images: the labels-only student needs at least one label >= 0")
    optimizer = torch.optim.AdamW(student.parameters(), lr=lr, weight_decay=weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    losses = []
    for _ in tqdm(range(steps), desc="student (distilled)" if teacher_logits is not None else "student (labels)",
                  disable=not show_progress):
        index = torch.randint(len(images), (min(batch_size, len(images)),), generator=generator)
        x, y = images[index].to(device), labels[index].to(device)
        student.train()
        with autocast(precision, device):
            logits = student(x).float()
            if teacher_logits is None:
                loss = F.cross_entropy(logits, y)
            else:
                loss = distillation_loss(logits, teacher_logits[index].to(device), y, temperature, alpha)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        losses.append(loss.item())
    student.eval()
    return student, losses


def test_accuracy(model: nn.Module, x_test: torch.Tensor, y_test: torch.Tensor) -> float:
    """Accuracy on (x_test, y_test), on the model's device. Chapter 15, D.3."""
    return accuracy(model, x_test.to(next(model.parameters()).device), y_test.to(next(model.parameters()).device))


# ---------------------------------------------------------------------------------- exercises' checks


def check_soft_gradient(fn) -> None:
    """Exercise check (chapter 15, D.2): ``fn(z_s, z_t, T)`` must be d KL(q_t || q_s) / d z_s, per example."""
    from course_lib.core.check import check_function

    generator = torch.Generator().manual_seed(0)
    inputs = [(torch.randn(5, 10, generator=generator, dtype=torch.float64) * 3,
               torch.randn(5, 10, generator=generator, dtype=torch.float64) * 3, T) for T in (1.0, 2.0, 8.0)]
    check_function(fn, soft_target_gradient, inputs, name="soft-target gradient", rtol=1e-6, atol=1e-9)


# ---------------------------------------------------------------------------------- the picture


def schematic():
    """Distillation, drawn: one image into the frozen teacher and the student; both logits softened at T;
    the KL between them (scaled by T^2) plus the cross entropy with the label where there is one. Returns the
    Figure. Drawn in chapter 15, D.3."""
    from course_lib.core.diagram import arrow, box, canvas, legend, note

    fig, ax = canvas(12, 4.8, title="knowledge distillation: a frozen teacher's softened outputs train a small student")
    x = box(ax, 1.2, 2.4, "image $x$\n(labelled or not)", w=1.9, h=0.9, role="data")
    teacher = box(ax, 3.8, 3.7, "teacher (frozen)\nCNN, 99% test acc.", w=2.2, h=0.9, role="network")
    student = box(ax, 3.8, 1.3, "student\nMLP 784-64-10", w=2.2, h=0.9, role="network")
    q_t = box(ax, 6.6, 3.7, "$q_t = \\mathrm{softmax}(z_t / T)$", w=2.6, h=0.7, role="operation")
    q_s = box(ax, 6.6, 1.3, "$q_s = \\mathrm{softmax}(z_s / T)$", w=2.6, h=0.7, role="operation")
    kl = box(ax, 9.7, 2.4, "$\\alpha\\, T^2\\, \\mathrm{KL}(q_t \\,\\|\\, q_s)$", w=2.6, h=0.7, role="loss")
    label = box(ax, 6.6, 0.3, "label $y$ (if any)", w=2.0, h=0.45, role="condition")
    ce = box(ax, 9.7, 0.6, "$(1 - \\alpha)\\, \\mathrm{CE}(y, \\mathrm{softmax}(z_s))$", w=3.2, h=0.6, role="loss")
    arrow(ax, x.right, teacher.left)
    arrow(ax, x.right, student.left)
    arrow(ax, teacher.right, q_t.left, text="$z_t$", text_offset=(0, 0.2))
    arrow(ax, student.right, q_s.left, text="$z_s$", text_offset=(0, 0.2))
    arrow(ax, q_t.right, kl.top)
    arrow(ax, q_s.right, kl.left)
    arrow(ax, (student.right[0], student.y - 0.35), ce.left)
    arrow(ax, label.right, (ce.left[0] + 0.3, ce.bottom[1]))
    note(ax, 9.7, 4.1, "gradient into the student only", fontsize=9)
    legend(ax, ["data", "network", "operation", "condition", "loss"], loc="upper left")
    return fig
