"""Every model schematic in ``course_lib.topics`` (a public function whose name ends in ``schematic``) draws a
figure that names its parts, and the drawing primitives of ``course_lib.core.diagram`` refuse bad input."""
from __future__ import annotations

import importlib
import inspect
import pkgutil

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

import course_lib.topics  # noqa: E402
from course_lib.core.diagram import box, canvas, text_of  # noqa: E402

SCHEMATICS = [(f"{info.name}.{name}", fn)
              for info in pkgutil.iter_modules(course_lib.topics.__path__)
              for name, fn in vars(importlib.import_module(f"course_lib.topics.{info.name}")).items()
              if name.endswith("schematic") and inspect.isfunction(fn)
              and fn.__module__ == f"course_lib.topics.{info.name}"]


def test_there_are_schematics():
    assert len(SCHEMATICS) >= 10, f"only {len(SCHEMATICS)} model schematics: {[n for n, _ in SCHEMATICS]}"


@pytest.mark.parametrize("name, draw", SCHEMATICS, ids=[n for n, _ in SCHEMATICS])
def test_schematic_draws_a_labelled_figure(name, draw):
    fig = draw()
    try:
        assert isinstance(fig, Figure), f"{name}() must return the matplotlib Figure it drew"
        words = text_of(fig)
        assert len(words.split()) >= 5, f"{name}() names too few parts: {words!r}"
        fig.canvas.draw()  # mathtext errors surface here, not when the text is added
    finally:
        plt.close(fig)


def test_primitives_refuse_bad_input():
    with pytest.raises(ValueError, match="positive width"):
        canvas(0, 3)
    fig, ax = canvas(4, 2)
    with pytest.raises(ValueError, match="unknown role"):
        box(ax, 1, 1, "x", role="weights")
    b = box(ax, 2, 1, "net", w=2, h=1)
    assert (b.left, b.right, b.top, b.bottom) == ((1, 1), (3, 1), (2, 1.5), (2, 0.5))
    plt.close(fig)
