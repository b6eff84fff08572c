"""course_lib.core.widgets.interactive_figure: a control plus a figure redrawn in place."""
import ipywidgets as widgets
import matplotlib.pyplot as plt
import numpy as np
import pytest
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from course_lib.core.widgets import figure_png, interactive_figure


class Recorder:
    def __init__(self):
        self.calls = []

    def __call__(self, axes, **values):
        self.calls.append((axes, values))
        for ax in np.atleast_1d(axes).flat:
            ax.plot([0, 1], [0, sum(float(v) for v in values.values() if isinstance(v, (int, float)))])


def test_draws_once_at_creation_with_the_default():
    draw = Recorder()
    box = interactive_figure(draw, beta=widgets.FloatSlider(value=1.5, min=0.1, max=5.0))
    assert len(draw.calls) == 1
    axes, values = draw.calls[0]
    assert isinstance(axes, Axes) and values == {"beta": 1.5}
    assert isinstance(box, widgets.VBox)
    assert isinstance(box.figure, Figure)
    assert axes.figure is box.figure


def test_moving_the_slider_redraws_in_place():
    draw = Recorder()
    slider = widgets.FloatSlider(value=1.0, min=0.1, max=5.0)
    box = interactive_figure(draw, beta=slider)
    figure = box.figure
    slider.value = 2.5
    slider.value = 4.0
    assert [values["beta"] for _, values in draw.calls] == [1.0, 2.5, 4.0]
    assert box.figure is figure  # the same figure, redrawn
    assert all(axes.figure is figure for axes, _ in draw.calls)
    assert len(figure.axes) == 1  # old axes were cleared, not stacked
    assert len(figure.axes[0].lines) == 1


def test_setting_the_same_value_does_not_redraw():
    draw = Recorder()
    slider = widgets.IntSlider(value=3, min=0, max=10)
    interactive_figure(draw, n=slider)
    slider.value = 3
    assert len(draw.calls) == 1


def test_several_controls():
    draw = Recorder()
    a = widgets.IntSlider(value=2, min=0, max=5)
    kind = widgets.Dropdown(options=["sin", "cos"], value="sin")
    box = interactive_figure(draw, a=a, kind=kind)
    kind.value = "cos"
    a.value = 4
    assert [values for _, values in draw.calls] == [{"a": 2, "kind": "sin"}, {"a": 2, "kind": "cos"},
                                                    {"a": 4, "kind": "cos"}]
    controls_row, output = box.children
    assert isinstance(controls_row, widgets.HBox) and list(controls_row.children) == [a, kind]
    assert isinstance(output, widgets.Output)


def test_grid_of_axes():
    draw = Recorder()
    box = interactive_figure(draw, nrows=2, ncols=3, figsize=(6, 4), s=widgets.FloatSlider(value=0.5))
    axes, _ = draw.calls[0]
    assert isinstance(axes, np.ndarray) and axes.shape == (2, 3)
    assert all(isinstance(ax, Axes) for ax in axes.flat)
    assert len(box.figure.axes) == 6
    assert tuple(box.figure.get_size_inches()) == (6.0, 4.0)


def test_one_row_of_axes():
    draw = Recorder()
    interactive_figure(draw, ncols=2, s=widgets.FloatSlider())
    axes, _ = draw.calls[0]
    assert isinstance(axes, np.ndarray) and axes.shape == (2,)


def test_redraw_method_draws_again():
    draw = Recorder()
    box = interactive_figure(draw, s=widgets.FloatSlider(value=0.3))
    box.redraw()
    assert len(draw.calls) == 2 and draw.calls[1][1] == {"s": 0.3}


def test_figure_is_not_a_pyplot_figure():
    before = plt.get_fignums()
    interactive_figure(Recorder(), s=widgets.FloatSlider())
    assert plt.get_fignums() == before  # never shown twice by the inline backend


def test_no_controls_is_value_error():
    with pytest.raises(ValueError, match="at least one control"):
        interactive_figure(Recorder())


@pytest.mark.parametrize("control", [1.0, "slider", None, widgets.Button(description="go"), widgets.HTML])
def test_non_value_widget_is_type_error(control):
    draw = Recorder()
    with pytest.raises(TypeError) as err:
        interactive_figure(draw, beta=control)
    assert "'beta'" in str(err.value) and "value widget" in str(err.value)
    assert draw.calls == []


def test_error_in_draw_propagates():
    def draw(ax, beta):
        raise RuntimeError("learner's bug")
    with pytest.raises(RuntimeError, match="learner's bug"):
        interactive_figure(draw, beta=widgets.FloatSlider())


def test_the_figure_is_shown_as_a_png_whatever_the_backend():
    figure = Figure(figsize=(2, 2))
    figure.subplots().plot([0, 1])
    image = figure_png(figure)
    assert image.format == "png" and image.data.startswith(b"\x89PNG")


def test_error_after_a_control_moved_is_raised_outside_a_kernel():
    # In JupyterLab the traceback is shown inside the widget (the browser tests check that); in a plain
    # Python process there is no kernel to show it, so it must not be swallowed.
    def draw(ax, beta):
        if beta > 0:
            raise RuntimeError("learner's bug after the slider moved")
        ax.plot([0, 1])
    slider = widgets.FloatSlider(value=0.0)
    interactive_figure(draw, beta=slider)
    with pytest.raises(RuntimeError, match="after the slider moved"):
        slider.value = 1.0
