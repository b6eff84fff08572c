"""course_lib.core.plotting: image_grid, plot_losses, overlay_heatmap (Agg backend, see conftest)."""
import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from matplotlib.axes import Axes

from course_lib.core.plotting import image_grid, overlay_heatmap, plot_losses
from course_lib.core.train import History


@pytest.fixture(autouse=True)
def close_all():
    yield
    plt.close("all")


def _canvas(ax):
    (image,) = ax.images
    return np.asarray(image.get_array())


def test_image_grid_grey_nchw():
    images = torch.rand(10, 1, 5, 6)
    ax = image_grid(images)
    assert isinstance(ax, Axes)
    canvas = _canvas(ax)
    # default: ceil(sqrt(10)) = 4 rows, 3 columns, 1 pixel of padding
    assert canvas.shape == (4 * 6 - 1, 3 * 7 - 1)
    np.testing.assert_allclose(canvas[:5, :6], images[0, 0].numpy(), rtol=1e-6)
    np.testing.assert_allclose(canvas[6:11, 7:13], images[4, 0].numpy(), rtol=1e-6)  # row 1, column 1
    assert canvas[5, 0] == 0.0  # padding shows vmin
    assert not ax.axison


def test_image_grid_colour_nchw():
    images = torch.rand(4, 3, 8, 8) * 1.2  # values above 1 are clipped for display
    canvas = _canvas(image_grid(images, nrow=1))
    assert canvas.shape == (8, 4 * 9 - 1, 3)
    assert canvas.max() <= 1.0
    np.testing.assert_allclose(canvas[:, 9:17], images[1].permute(1, 2, 0).clamp(max=1).numpy(), rtol=1e-6)


def test_image_grid_nhw_and_numpy():
    canvas = _canvas(image_grid(np.random.rand(6, 4, 4), nrow=2, pad=0))
    assert canvas.shape == (2 * 4, 3 * 4)


def test_image_grid_accepts_grad_and_integer_tensors():
    image_grid(torch.rand(2, 1, 3, 3, requires_grad=True))
    image_grid(torch.randint(0, 2, (2, 3, 3)), vmin=None, vmax=None)


def test_image_grid_vmin_none_uses_data_min_for_padding():
    canvas = _canvas(image_grid(torch.full((2, 1, 2, 2), 0.5), vmin=None, vmax=None, nrow=1))
    assert canvas[0, 2] == 0.5


def test_image_grid_draws_into_given_axes():
    fig, ax = plt.subplots()
    assert image_grid(torch.rand(3, 1, 4, 4), ax=ax) is ax
    assert len(fig.axes) == 1


def test_image_grid_with_titles():
    axes = image_grid(torch.rand(5, 1, 4, 4), titles=[f"digit {i}" for i in range(5)])
    assert isinstance(axes, np.ndarray) and axes.shape == (3, 2)
    assert [a.get_title() for a in axes.flat][:5] == [f"digit {i}" for i in range(5)]
    assert all(len(a.images) == 1 for a in axes.flat[:5]) and all(len(a.images) == 0 for a in axes.flat[5:])
    axes = image_grid(torch.rand(3, 3, 4, 4), titles=[0, 1, 2], nrow=1)
    assert axes.shape == (1, 3) and axes[0, 2].get_title() == "2"
    assert axes[0, 0].images[0].get_array().shape == (4, 4, 3)


def test_image_grid_titles_count_must_match():
    with pytest.raises(ValueError, match="5 images but 4 titles"):
        image_grid(torch.rand(5, 1, 4, 4), titles=list("abcd"))


@pytest.mark.parametrize("shape", [(4, 2, 5, 5), (4, 4, 5, 5), (5, 5), (2, 1, 1, 5, 5), (7,)])
def test_image_grid_bad_shapes(shape):
    with pytest.raises(ValueError) as err:
        image_grid(torch.rand(*shape))
    assert "(N, 1 or 3, H, W)" in str(err.value) and str(shape) in str(err.value)


def test_image_grid_channels_last_is_refused():
    with pytest.raises(ValueError, match="expected images of shape"):
        image_grid(torch.rand(2, 8, 8, 3))  # NHWC, a common mistake


# ------------------------------------------------------------------------------------------ losses

def test_plot_losses_list_and_history():
    h = History(losses=[3.0, 2.0, 1.5, 1.0])
    ax = plot_losses([4.0, 3.0, 2.0], h, labels=["list", "history"], title="two runs")
    assert len(ax.lines) == 2
    np.testing.assert_array_equal(ax.lines[0].get_xdata(), [1, 2, 3])
    np.testing.assert_array_equal(ax.lines[0].get_ydata(), [4.0, 3.0, 2.0])
    np.testing.assert_array_equal(ax.lines[1].get_ydata(), h.losses)
    assert ax.get_title() == "two runs" and ax.get_xlabel() == "step" and ax.get_ylabel() == "loss"
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["list", "history"]


def test_plot_losses_no_labels_no_legend():
    ax = plot_losses(np.linspace(1, 0, 20))
    assert ax.get_legend() is None and ax.get_title() == "training loss"


def test_plot_losses_smoothing():
    losses = [float(v) for v in range(1, 11)]
    ax = plot_losses(losses, smooth=3)
    line = ax.lines[0]
    np.testing.assert_allclose(line.get_ydata(), [2, 3, 4, 5, 6, 7, 8, 9])  # moving average of 3
    np.testing.assert_array_equal(line.get_xdata(), np.arange(3, 11))  # plotted at the window's last step


def test_plot_losses_short_run_with_big_window_keeps_steps():
    ax = plot_losses([3.0, 2.0, 1.0], smooth=5)
    np.testing.assert_array_equal(ax.lines[0].get_xdata(), [1, 2, 3])


def test_plot_losses_log_scale_and_given_axes():
    fig, ax = plt.subplots()
    assert plot_losses([1.0, 0.1, 0.01], ax=ax, log_y=True) is ax
    assert ax.get_yscale() == "log"


def test_plot_losses_label_count_must_match():
    with pytest.raises(ValueError, match="2 histories but 1 labels"):
        plot_losses([1.0], [2.0], labels=["only one"])


# ---------------------------------------------------------------------------------------- heatmaps

def test_overlay_heatmap_7x7_on_28x28():
    image = torch.rand(1, 28, 28)
    heat = torch.arange(49.0).reshape(7, 7)
    ax = overlay_heatmap(image, heat, title="attention", alpha=0.4)
    assert ax.get_title() == "attention" and len(ax.images) == 2
    picture, overlay = (np.asarray(im.get_array()) for im in ax.images)
    assert picture.shape == (28, 28)
    assert overlay.shape == (28, 28)
    assert overlay.min() == 0.0 and overlay.max() == 1.0  # scaled for display
    # nearest-neighbour blocks: each heatmap cell is a 4x4 square
    np.testing.assert_allclose(overlay[:4, :4], 0.0)
    np.testing.assert_allclose(overlay[4:8, 0:4], 7 / 48)
    np.testing.assert_allclose(overlay[24:, 24:], 1.0)
    assert ax.images[1].get_alpha() == 0.4


@pytest.mark.parametrize("image", [torch.rand(28, 28), np.random.rand(28, 28), torch.rand(3, 28, 28)])
def test_overlay_heatmap_image_layouts(image):
    ax = overlay_heatmap(image, np.random.rand(14, 4))
    assert np.asarray(ax.images[1].get_array()).shape == (28, 28)


def test_overlay_heatmap_constant_heatmap():
    ax = overlay_heatmap(torch.rand(1, 8, 8), torch.ones(2, 2))
    assert np.isfinite(np.asarray(ax.images[1].get_array())).all()


def test_overlay_heatmap_uses_given_axes():
    fig, ax = plt.subplots()
    assert overlay_heatmap(torch.rand(1, 8, 8), torch.rand(2, 2), ax=ax) is ax


@pytest.mark.parametrize("heat_shape", [(5, 7), (7, 5), (3, 3), (28, 29)])
def test_overlay_heatmap_non_tiling_raises(heat_shape):
    with pytest.raises(ValueError) as err:
        overlay_heatmap(torch.rand(1, 28, 28), torch.rand(*heat_shape))
    assert "does not tile an image of 28x28" in str(err.value)


@pytest.mark.parametrize("heat_shape", [(49,), (1, 7, 7), ()])
def test_overlay_heatmap_not_2d_raises(heat_shape):
    with pytest.raises(ValueError, match="heatmap must be 2-D"):
        overlay_heatmap(torch.rand(1, 28, 28), torch.rand(heat_shape))


def test_overlay_heatmap_bad_image_raises():
    with pytest.raises(ValueError, match="expected images of shape"):
        overlay_heatmap(torch.rand(2, 28, 28), torch.rand(7, 7))
