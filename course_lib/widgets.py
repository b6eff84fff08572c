"""A control plus a matplotlib figure that redraws in place when the control moves.

    def draw(ax, beta):
        ax.plot(x, np.exp(-beta * x))

    interactive_figure(draw, beta=FloatSlider(value=1.0, min=0.1, max=5.0))

Only core ipywidgets (no ipympl or other front-end extensions), so it renders in plain JupyterLab;
run headless (nbval, a script) it draws the default state once. The figure is a
``matplotlib.figure.Figure`` made without pyplot, so it never shows up twice.
"""
from __future__ import annotations

from typing import Callable

import ipywidgets as widgets
from IPython.display import clear_output, display
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

    def redraw(_change=None):
        figure.clear()
        axes = figure.subplots(nrows, ncols)
        draw(axes, **{name: control.value for name, control in controls.items()})
        with output:
            clear_output(wait=True)
            display(figure)

    for control in controls.values():
        control.observe(redraw, names="value")
    redraw()
    box = widgets.VBox([widgets.HBox(list(controls.values())), output])
    box.redraw, box.figure = redraw, figure
    return box
