"""A control plus a matplotlib figure that redraws in place when the control moves.

    def draw(ax, beta):
        ax.plot(x, np.exp(-beta * x))

    interactive_figure(draw, beta=FloatSlider(value=1.0, min=0.1, max=5.0))

Only core ipywidgets (no ipympl or other front-end extensions), so it renders in plain JupyterLab;
run headless (nbval, a script) it draws the default state once. The figure is a
``matplotlib.figure.Figure`` made without pyplot, so it never shows up twice, and it is shown as a PNG
image, so it looks the same whether or not pyplot's inline backend has started.
"""
from __future__ import annotations

import io
from typing import Callable

import ipywidgets as widgets
from IPython.display import Image, clear_output, display
from matplotlib.figure import Figure


def interactive_figure(draw: Callable, *, nrows: int = 1, ncols: int = 1, figsize=(6, 4),
                       **controls: widgets.ValueWidget) -> widgets.VBox:
    """Controls above one figure; ``draw(axes, **values)`` fills the figure's axes.

    ``axes`` is a single Axes for ``nrows = ncols = 1``, else an array of them (as
    ``plt.subplots`` returns). Returns the widget box (display it, or leave it as the cell's
    last expression); ``box.redraw()`` draws again, ``box.figure`` is the figure.
    """
    if not controls:
        raise ValueError("interactive_figure needs at least one control, e.g. beta=FloatSlider(...)")
    for name, control in controls.items():
        if not isinstance(control, widgets.ValueWidget):
            raise TypeError(f"control {name!r} must be an ipywidgets value widget (a slider, dropdown, "
                            f"...), got {type(control).__name__}")
    figure = Figure(figsize=figsize, layout="constrained")
    output = widgets.Output()

    def draw_now():
        figure.clear()
        draw(figure.subplots(nrows, ncols), **{name: control.value for name, control in controls.items()})

    def show_now():
        clear_output(wait=True)
        display(figure_png(figure))

    def redraw(change=None):
        if change is None:  # the first draw, or box.redraw(): an error fails the cell like any error
            draw_now()
            with output:
                show_now()
            return
        # A control moved: the kernel calls this outside any cell, so an error raised here would only
        # reach JupyterLab's log console. Inside ``with output`` its traceback shows where the figure was.
        with output:
            clear_output(wait=True)
            draw_now()
            show_now()

    for control in controls.values():
        control.observe(redraw, names="value")
    redraw()
    box = widgets.VBox([widgets.HBox(list(controls.values())), output])
    box.redraw, box.figure = redraw, figure
    return box


def figure_png(figure: Figure) -> Image:
    """The figure as a PNG image, drawn as the inline backend draws it (tight box, the figure's dpi).

    Displaying the Figure object itself would need pyplot's inline backend to be active, which it is
    only after the notebook made a pyplot figure; a PNG shows the same everywhere.
    """
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", bbox_inches="tight")
    return Image(data=buffer.getvalue(), format="png")
