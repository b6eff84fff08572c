"""Numerically stable losses from logits, and entropy / cross entropy / KL for categorical laws.

All quantities are in nats. Built step by step in chapter 01; later chapters import them.

- ``log_softmax(z) = z - m - log sum_j exp(z_j - m)`` with ``m = max_j z_j`` (log-sum-exp trick)
- ``cross_entropy(z, c) = -z_c + log sum_j exp(z_j)``, mean over the batch; targets may be class
  indices (int64, shape (N,)) or class probabilities (float, shape (N, C))
- ``bce_with_logits(z, y) = max(z, 0) - y z + log(1 + exp(-|z|))``, mean over all elements
- ``H(p, q) = h(p) + KL(p || q)``
"""
from __future__ import annotations

import torch


def _check_logits(z: torch.Tensor) -> None:
    if not isinstance(z, torch.Tensor):
        raise TypeError(f"logits must be a torch.Tensor, got {type(z).__name__}")
    if not z.is_floating_point():
        raise TypeError(f"logits must be floating point, got {z.dtype}; use .float()")


def log_softmax(z: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """log softmax(z) along ``dim``, stable for any finite logits. Chapter 01, B.2."""
    _check_logits(z)
    m = z.amax(dim=dim, keepdim=True).detach()  # the shift does not change the value
    return z - m - (z - m).exp().sum(dim=dim, keepdim=True).log()


def cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean cross entropy of ``logits`` (N, C) against class indices (N,) or probabilities (N, C). Chapter 01, B.2."""
    _check_logits(logits)
    if logits.ndim != 2:
        raise ValueError(f"logits must have shape (N, C), got {tuple(logits.shape)}; for (N, C, d...) "
                         "move the class dimension last and flatten: z.movedim(1, -1).reshape(-1, C)")
    log_q = log_softmax(logits, dim=1)
    if target.dtype in (torch.int64, torch.int32):
        if target.shape != logits.shape[:1]:
            raise ValueError(f"class-index targets must have shape ({logits.shape[0]},), got {tuple(target.shape)}")
        if target.min() < 0 or target.max() >= logits.shape[1]:
            raise ValueError(f"class indices must lie in [0, {logits.shape[1] - 1}]")
        return -log_q.gather(1, target.long()[:, None]).mean()
    if target.is_floating_point():
        if target.shape != logits.shape:
            raise ValueError(f"probability targets must have the logits' shape {tuple(logits.shape)}, "
                             f"got {tuple(target.shape)}")
        return -(target * log_q).sum(1).mean()
    raise TypeError(f"target must be int64 class indices or float probabilities, got {target.dtype}")


def bce_with_logits(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean binary cross entropy of Bernoulli(sigmoid(logits)) against ``target`` in [0, 1]. Chapter 01, B.3."""
    _check_logits(logits)
    if target.shape != logits.shape:
        raise ValueError(f"target shape {tuple(target.shape)} must equal logits shape {tuple(logits.shape)}: "
                         "each element is its own Bernoulli variable")
    target = target.to(logits.dtype)
    # (z + |z|) / 2 = max(z, 0), written so that autograd gives 1/2 at z = 0 (clamp would give 0 or 1)
    return ((logits + logits.abs()) / 2 - target * logits + torch.log1p((-logits.abs()).exp())).mean()


def _check_probs(p: torch.Tensor, name: str) -> None:
    if not isinstance(p, torch.Tensor) or not p.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor of probabilities")
    if (p < 0).any() or not torch.allclose(p.sum(-1), torch.ones((), dtype=p.dtype), atol=1e-5):
        raise ValueError(f"{name} must be probabilities: non-negative, summing to 1 along the last dim")


def entropy(p: torch.Tensor) -> torch.Tensor:
    """h(p) = -sum_x p(x) log p(x) along the last dim (0 log 0 = 0). Chapter 01, B.1."""
    _check_probs(p, "p")
    return -torch.special.xlogy(p, p).sum(-1)


def categorical_cross_entropy(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """H(p, q) = -sum_x p(x) log q(x) along the last dim. Chapter 01, B.1."""
    _check_probs(p, "p")
    _check_probs(q, "q")
    return -torch.special.xlogy(p, q).sum(-1)


def kl_divergence(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """KL(p || q) = sum_x p(x) log(p(x) / q(x)) along the last dim. Chapter 01, B.1."""
    return categorical_cross_entropy(p, q) - entropy(p)
