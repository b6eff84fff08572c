"""Checks for exercises: compare a learner's value or function with the reference and say what is wrong.

Each check prints a short "correct" line, or raises ``AssertionError`` with a diagnosis:
wrong type, wrong shape (and whether a transpose or a squeeze would fix it), wrong dtype,
NaN or inf, flipped sign, off by a constant factor (a sum where a mean was meant, a missing 1/2),
or simply how far off and where.
"""
from __future__ import annotations

import inspect
from typing import Callable, Iterable

import torch


def _diagnose(name: str, got, expected: torch.Tensor, rtol: float, atol: float) -> str | None:
    if not isinstance(got, torch.Tensor):
        return f"{name} should be a torch.Tensor, got {type(got).__name__}"
    if got.shape != expected.shape:
        hint = ""
        if got.ndim == 2 and got.T.shape == expected.shape:
            hint = " (a transpose, .T, would fix the shape)"
        elif got.squeeze().shape == expected.squeeze().shape:
            hint = " (the same numbers of elements: a squeeze/unsqueeze/reshape is missing)"
        elif got.numel() == 1 and expected.numel() > 1:
            hint = " (you reduced to a single number: is there a .sum() or .mean() too many?)"
        elif expected.numel() == 1 and got.numel() > 1:
            hint = " (expected a single number: is a .sum() or .mean() missing?)"
        return f"{name} has shape {tuple(got.shape)}, expected {tuple(expected.shape)}{hint}"
    if (got.is_floating_point() != expected.is_floating_point()
            or (got.dtype == torch.bool) != (expected.dtype == torch.bool)):
        return f"{name} has dtype {got.dtype}, expected {expected.dtype}"
    got_f, exp_f = got.detach().cpu().double(), expected.detach().cpu().double()
    if not torch.isfinite(got_f).all() and torch.isfinite(exp_f).all():
        bad = (~torch.isfinite(got_f)).sum().item()
        return (f"{name} has {bad} NaN/inf entries where the reference is finite: an overflow "
                "(exp of a large number?) or a log of 0?")
    if torch.allclose(got_f, exp_f, rtol=rtol, atol=atol, equal_nan=True):
        return None
    if exp_f.abs().max() > atol and torch.allclose(got_f, -exp_f, rtol=rtol, atol=atol):
        return f"{name} has the wrong sign: you computed -1 times the expected value"
    mask = exp_f.abs() > 1e-8
    if mask.any():
        ratios = got_f[mask] / exp_f[mask]
        factor = ratios.median()
        if factor.abs() > 1e-8 and torch.allclose(got_f, factor * exp_f, rtol=max(rtol, 1e-4), atol=atol):
            return (f"{name} is off by a constant factor: yours = {factor.item():.6g} x expected "
                    "(a sum instead of a mean, a missing 1/2 or 1/N, or a wrong scale?)")
    error = (got_f - exp_f).abs()
    where = tuple(int(i) for i in torch.unravel_index(error.argmax(), error.shape)) if error.ndim else ()
    return (f"{name} differs from the reference: max |error| = {error.max().item():.3g} at index {where} "
            f"(yours {got_f[where].item():.6g}, expected {exp_f[where].item():.6g}); "
            f"tolerance rtol={rtol:g}, atol={atol:g}")


def check_tensor(got, expected, *, name: str = "your answer", rtol: float = 1e-5, atol: float = 1e-6) -> None:
    """Assert that ``got`` matches ``expected`` (shape, dtype kind and values); explain if not."""
    expected = torch.as_tensor(expected)
    problem = _diagnose(name, got, expected, rtol, atol)
    if problem:
        raise AssertionError(problem)
    print(f"correct: {name} matches the reference")


def check_function(fn: Callable, reference: Callable, inputs: Iterable[tuple], *, name: str | None = None,
                   rtol: float = 1e-5, atol: float = 1e-6) -> None:
    """Call ``fn(*args)`` and ``reference(*args)`` for every ``args`` in ``inputs`` and compare."""
    name = name or getattr(fn, "__name__", "your function")
    count = 0
    for count, args in enumerate(inputs, start=1):
        args = args if isinstance(args, tuple) else (args,)
        shapes = ", ".join(str(tuple(a.shape)) if isinstance(a, torch.Tensor) else repr(a) for a in args)
        expected = reference(*args)
        try:
            got = fn(*args)
        except NotImplementedError:
            raise AssertionError(f"{name} is not implemented yet: replace the `raise NotImplementedError`") from None
        problem = _diagnose(f"{name}({shapes})", got, torch.as_tensor(expected), rtol, atol)
        if problem:
            raise AssertionError(problem)
    if count == 0:
        raise ValueError("check_function needs at least one input")
    print(f"correct: {name} matches the reference on {count} input(s)")


def show_solution(obj) -> None:
    """Show the reference solution: the source of a course_lib function or class, or a text."""
    from IPython.display import Markdown, display

    source = obj if isinstance(obj, str) else inspect.getsource(obj)
    display(Markdown(f"```python\n{source.rstrip()}\n```"))
