"""A two-layer MLP and its back-propagation written by hand (chapter 01).

Shapes (``N`` examples, ``D = 784`` inputs, ``H`` hidden units, ``K = 10`` classes), with the
weights stored as ``nn.Linear`` stores them, ``(out, in)``::

    z1 = x W1^T + b1      (N, H)        delta2 = (softmax(z2) - onehot(y)) / N   (N, K)
    h  = relu(z1)         (N, H)        dW2 = delta2^T h   db2 = sum_n delta2
    z2 = h W2^T + b2      (N, K)        delta1 = (delta2 W2) * 1[z1 > 0]         (N, H)
    L  = mean_n CE(z2, y)               dW1 = delta1^T x   db1 = sum_n delta1
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from course_lib.topics.losses import cross_entropy, log_softmax


class MLP(nn.Module):
    """784 -> hidden -> 10 with a ReLU: ``fc1``, ``relu``, ``fc2``. Takes (N, 1, 28, 28) or (N, 784). Chapter 01, C."""

    def __init__(self, n_in: int = 784, n_hidden: int = 500, n_out: int = 10):
        super().__init__()
        self.fc1 = nn.Linear(n_in, n_hidden)
        self.fc2 = nn.Linear(n_hidden, n_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1)  # (N, 784)
        return self.fc2(torch.relu(self.fc1(x)))  # logits (N, 10)


def manual_forward_backward(x: torch.Tensor, y: torch.Tensor, W1, b1, W2, b2) -> tuple[torch.Tensor, dict]:
    """Loss and its gradients for the MLP above, with no autograd: ``(loss, {"W1": dW1, ...})``. Chapter 01, C.1."""
    if x.ndim != 2 or x.shape[1] != W1.shape[1]:
        raise ValueError(f"x must have shape (N, {W1.shape[1]}), got {tuple(x.shape)}; flatten images first")
    if y.shape != (x.shape[0],) or y.dtype != torch.int64:
        raise ValueError(f"y must be int64 class indices of shape ({x.shape[0]},), got {y.dtype} {tuple(y.shape)}")
    with torch.no_grad():
        n = x.shape[0]
        z1 = torch.nn.functional.linear(x, W1, b1)  # (N, H) = x @ W1.T + b1, as nn.Linear computes it: the ReLU mask
        # below thresholds z1 at 0, so it must come from the same kernel as the autograd model it is compared with
        h = z1.clamp(min=0)  # (N, H)
        z2 = h @ W2.T + b2  # (N, K)
        log_q = log_softmax(z2, dim=1)
        loss = -log_q[torch.arange(n), y].mean()
        delta2 = log_q.exp()  # softmax(z2)
        delta2[torch.arange(n), y] -= 1.0
        delta2 /= n  # (N, K)
        grads = {"W2": delta2.T @ h, "b2": delta2.sum(0)}
        delta1 = (delta2 @ W2) * (z1 > 0)  # (N, H)
        grads.update(W1=delta1.T @ x, b1=delta1.sum(0))
    return loss, grads


def mlp_loss(model: MLP, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """Mean cross entropy of the model on ``(images, labels)``; the ``loss_fn`` for ``train.fit``. Chapter 01, D."""
    x, y = batch
    return cross_entropy(model(x), y)


def numerical_gradient(f: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, eps: float = 1e-6,
                       indices=None) -> torch.Tensor:
    """Central differences (f(x + eps e_i) - f(x - eps e_i)) / (2 eps) of a scalar ``f``. Chapter 01, A.4 and C.1.

    Use float64 (error O(eps^2) plus round-off O(1e-16 / eps)). ``indices`` (a list of flat
    indices) limits the work to a few coordinates; the others are left at 0.
    """
    if x.dtype != torch.float64:
        raise TypeError(f"use float64 for finite differences, got {x.dtype}: float32 round-off "
                        "(1e-7 / eps) swamps the gradient")
    grad = torch.zeros_like(x, memory_format=torch.contiguous_format)
    flat, grad_flat = x.detach().clone(memory_format=torch.contiguous_format).view(-1), grad.view(-1)
    for i in (range(flat.numel()) if indices is None else indices):
        old = flat[i].item()
        flat[i] = old + eps
        f_plus = float(f(flat.view_as(x)))
        flat[i] = old - eps
        f_minus = float(f(flat.view_as(x)))
        flat[i] = old
        grad_flat[i] = (f_plus - f_minus) / (2 * eps)
    return grad


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| / max(|a|, |b|, tiny): the usual gradient-check number (< 1e-7 is good in float64).

    Taught in chapter 01, A.4; used for the gradient check of chapter 01, C.1.
    """
    a, b = a.double(), b.double()
    return ((a - b).abs().max() / torch.maximum(a.abs().max(), b.abs().max()).clamp(min=1e-30)).item()


def schematic():
    """The computational graph of the 784-H-10 MLP: forward values left to right, gradients right to left.

    Taught in chapter 01, C (the forward pass and the six backward equations), drawn before the model is built.
    """
    from course_lib.core.diagram import arrow, box, canvas, legend, note

    fig, ax = canvas(13, 5.0, title="the MLP as a computational graph: forward (black), backward (red, dashed)")
    y_forward = 3.2
    x_in = box(ax, 1.1, y_forward, "$x$\nimages", w=1.4, role="data")
    fc1 = box(ax, 3.7, y_forward, "$z_1 = x W_1^\\top + b_1$", w=2.3, role="network")
    relu = box(ax, 6.4, y_forward, "$h = \\max(z_1, 0)$", w=2.1, role="operation")
    fc2 = box(ax, 9.0, y_forward, "$z_2 = h W_2^\\top + b_2$", w=2.3, role="network")
    loss = box(ax, 11.7, y_forward, "$\\mathcal{L} = $ mean CE\n$(z_2, y)$", w=1.8, role="loss")
    label = box(ax, 11.7, 4.35, "label $y$", w=1.4, h=0.45, role="condition")
    arrow(ax, label.bottom, loss.top)
    shapes = ["$(N, 784)$", "$(N, H)$", "$(N, H)$", "$(N, 10)$"]
    chain = [x_in, fc1, relu, fc2, loss]
    for (left, right), shape in zip(zip(chain, chain[1:]), shapes):
        arrow(ax, left.right, right.left, text=shape, text_offset=(0.0, 0.12))
    red = "#990000"
    gradients = ["$\\delta_1 = \\partial \\mathcal{L} / \\partial z_1$",
                 "$\\partial \\mathcal{L} / \\partial h$",
                 "$\\delta_2 = \\partial \\mathcal{L} / \\partial z_2$"]
    for (left, right), text in zip([(fc1, relu), (relu, fc2), (fc2, loss)], gradients):
        arrow(ax, (right.x - 0.25, right.bottom[1]), (left.x + 0.25, left.bottom[1]), color=red,
              dashed=True, bend=-0.35, text=text, fontsize=8, text_offset=(0.0, -0.62))
    y_note = 1.25
    note(ax, 0.15, y_note + 0.75, "each backward function computes:", color=red, ha="left", fontsize=9)
    note(ax, 11.7, y_note, "$\\delta_2 = (\\mathrm{softmax}(z_2) - Y) / N$", color=red, fontsize=9)
    note(ax, 9.0, y_note, "$\\partial \\mathcal{L} / \\partial W_2 = \\delta_2^\\top h$\n"
         "$\\partial \\mathcal{L} / \\partial b_2 = \\sum_n \\delta_{2,n}$\n"
         "$\\partial \\mathcal{L} / \\partial h = \\delta_2 W_2$", color=red, fontsize=9)
    note(ax, 6.4, y_note, "$\\delta_1 = \\partial \\mathcal{L} / \\partial h \\odot \\mathbf{1}[z_1 > 0]$", color=red, fontsize=9)
    note(ax, 3.7, y_note, "$\\partial \\mathcal{L} / \\partial W_1 = \\delta_1^\\top x$\n"
         "$\\partial \\mathcal{L} / \\partial b_1 = \\sum_n \\delta_{1,n}$", color=red, fontsize=9)
    note(ax, 1.1, y_note, "data:\nno gradient kept", color="#555555")
    legend(ax, ["data", "network", "operation", "loss", "condition"], loc="lower left")
    return fig
