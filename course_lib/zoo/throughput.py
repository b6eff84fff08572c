"""``python -m course_lib.zoo bench --throughput``: how fast each shipped model trains on this machine.

For every shipped model, one training step (forward, backward, optimizer) of its recipe's loss on a batch of
its recipe's size, timed in fp32 and on the fast path (bf16 autocast where the hardware has it, as
:data:`course_lib.core.train.FAST` does), side by side in one run. Beside the times: images
(or points) per second, and the achieved GFLOP/s, the step's floating-point operations counted by
``torch.utils.flop_counter.FlopCounterMode`` divided by its time, against the machine's measured peak for a
large fp32 and bf16 matrix product. Small models do not come near the peak: their steps are short, and time
goes to the many small kernels, normalisation and the optimizer, not to matrix products.
"""
from __future__ import annotations

import time
from typing import Callable

import torch
from torch.utils.flop_counter import FlopCounterMode

from course_lib.core.train import resolve_precision
from course_lib.zoo.record import REGISTRY

Step = Callable[[], None]  # one training step, closed over its model, batch and optimizer


def _median_ms(step: Step, repeats: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        step()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return 1000 * sorted(times)[len(times) // 2]


def flops_per_step(step: Step) -> int:
    """Floating-point operations of one step (matrix products and convolutions, forward and backward)."""
    with FlopCounterMode(display=False) as counter:
        step()
    return counter.get_total_flops()


def peak_gflops(dtype: torch.dtype, size: int = 2048, repeats: int = 5) -> float:
    """GFLOP/s of a large square matrix product in ``dtype``: what this machine reaches at best."""
    generator = torch.Generator().manual_seed(0)
    a, b = (torch.randn(size, size, generator=generator).to(dtype) for _ in range(2))
    ms = _median_ms(lambda: a @ b, repeats)
    return 2 * size ** 3 / (ms / 1000) / 1e9


def measure(name: str, entry: dict, repeats: int = 5) -> dict:
    """fp32 and fast-path ms/step of shipped model ``name`` (a fresh model, built from its manifest entry, each)."""
    record, fast = REGISTRY[name], resolve_precision("auto")
    row = {"name": name}
    for label, precision in (("fp32", "fp32"), ("fast", fast)):
        torch.manual_seed(0)
        step, n = record.training_step(record.build(entry).train(), entry, precision)
        row[f"{label}_ms"] = _median_ms(step, repeats)
        row["batch"] = n
    step, _ = record.training_step(record.build(entry).train(), entry, "fp32")
    row["gflop_per_step"] = flops_per_step(step) / 1e9
    row["fast_precision"] = fast
    return row


def report(names: list[str], manifest: dict, repeats: int = 5) -> str:
    """The throughput table of shipped models ``names``, as text."""
    peaks = {"fp32": peak_gflops(torch.float32), "bf16": peak_gflops(torch.bfloat16)}
    rows = [measure(name, manifest[name], repeats) for name in names]
    lines = [f"peak of a 2048 x 2048 matrix product on this machine: fp32 {peaks['fp32']:.0f} GFLOP/s, "
             f"bf16 {peaks['bf16']:.0f} GFLOP/s; {torch.get_num_threads()} torch threads",
             f"{'model':<16} {'batch':>5} {'fp32 ms':>8} {'fast ms':>8} {'speed-up':>8} {'fast':>5} "
             f"{'img/s':>7} {'GFLOP/step':>10} {'GFLOP/s':>8} {'% of peak':>9}"]
    for r in rows:
        ms = r["fast_ms"]
        achieved = r["gflop_per_step"] / (ms / 1000)
        peak = peaks["bf16" if r["fast_precision"] == "bf16" else "fp32"]
        lines.append(f"{r['name']:<16} {r['batch']:>5} {r['fp32_ms']:>8.1f} {ms:>8.1f} {r['fp32_ms'] / ms:>7.2f}x "
                     f"{r['fast_precision']:>5} {1000 * r['batch'] / ms:>7.0f} {r['gflop_per_step']:>10.3f} "
                     f"{achieved:>8.1f} {100 * achieved / peak:>8.1f}%")
    return "\n".join(lines)
