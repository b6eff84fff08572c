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


def attention_explorer(images, attentions, patch_size: int, prefix_tokens: int = 1, *, titles=None,
                       figsize=(11, 3.6), image: int = 0, layer: int = -1, head=None, query: int = 0,
                       rollout: bool = True, temperature: bool = True) -> widgets.VBox:
    """Attention maps of a vision transformer over its patch grid, drawn on the images.

    ``images`` (B, C, H, W) in [0, 1]; ``attentions`` a list with one (B, heads, T, T) tensor per layer,
    T = ``prefix_tokens`` + (H / P)(W / P) (what ``ViT.encode(images, return_attention=True)`` returns);
    ``prefix_tokens`` counts the tokens before the patches: 1 for a [CLS] token, 0 for DiT.
    Controls: the image, the layer, the head ("mean" averages them), the query token (0 is [CLS]
    when there is one), "attention" or "rollout" (through the layers up to the chosen one, heads
    averaged), and a softmax temperature T (rows re-softmaxed as softmax(log A / T)).
    Panels: the image with the query patch framed; the query's attention over the patches on the image
    (scaled to its own maximum); the same weights unscaled, with a colour bar, and the share that went
    to the prefix tokens. Returns the widget box of :func:`interactive_figure`.
    """
    import torch
    from matplotlib.patches import Rectangle

    from .plotting import overlay_heatmap
    from .vit import select_attention

    if not isinstance(images, torch.Tensor) or images.ndim != 4:
        raise ValueError("images must be a tensor (B, C, H, W); add a batch dimension with images[None]")
    if not isinstance(attentions, (list, tuple)) or not attentions:
        raise ValueError("attentions must be a non-empty list of (B, heads, T, T) tensors, one per layer")
    b, _, height, width = images.shape
    if height % patch_size or width % patch_size:
        raise ValueError(f"image size {height}x{width} is not a multiple of the patch size {patch_size}")
    grid = (height // patch_size, width // patch_size)
    tokens = prefix_tokens + grid[0] * grid[1]
    for i, weights in enumerate(attentions):
        if weights.ndim != 4 or weights.shape[0] != b or weights.shape[-2:] != (tokens, tokens):
            raise ValueError(f"attentions[{i}] has shape {tuple(weights.shape)}; expected ({b}, heads, {tokens}, "
                             f"{tokens}) for {prefix_tokens} prefix token(s) and a {grid[0]}x{grid[1]} patch grid")
    heads = attentions[0].shape[1]
    titles = list(titles) if titles is not None else [f"image {i}" for i in range(b)]
    if len(titles) != b:
        raise ValueError(f"{b} images but {len(titles)} titles")

    def token_name(q):
        if q < prefix_tokens:
            return "[CLS]" if prefix_tokens == 1 else f"prefix token {q}"
        row, col = divmod(q - prefix_tokens, grid[1])
        return f"patch (row {row}, col {col})"

    def draw(axes, image, layer, head, query, view, temperature):
        head = None if head == "mean" else head
        picture = images[image].detach().cpu().float()
        row = select_attention(attentions, image, layer, head, query, rollout=view == "rollout",
                               temperature=temperature).cpu()
        patch_map = row[prefix_tokens:].reshape(grid)
        ax_image, ax_overlay, ax_weights = axes
        ax_image.imshow(picture.permute(1, 2, 0).squeeze(-1).numpy(), cmap="gray", vmin=0, vmax=1)
        if query >= prefix_tokens:
            r, c = divmod(query - prefix_tokens, grid[1])
            ax_image.add_patch(Rectangle((c * patch_size - 0.5, r * patch_size - 0.5), patch_size, patch_size,
                                         fill=False, color="red", lw=2))
        ax_image.set_title(f"{titles[image]}; query {token_name(query)}", fontsize=9)
        ax_image.axis("off")
        which = "rollout, layers 0-" + str(layer % len(attentions)) if view == "rollout" else \
            f"layer {layer % len(attentions)}, " + ("heads averaged" if head is None else f"head {head}")
        overlay_heatmap(picture, patch_map, ax=ax_overlay, alpha=0.55)
        ax_overlay.set_title(f"{which}, T = {temperature:.2g}\n(scaled to its maximum)", fontsize=9)
        shown = ax_weights.imshow(patch_map.numpy(), cmap="viridis", vmin=0)
        ax_weights.figure.colorbar(shown, ax=ax_weights, fraction=0.046)
        prefix_share = float(row[:prefix_tokens].sum()) if prefix_tokens else 0.0
        ax_weights.set_title(f"weights on the {grid[0]}x{grid[1]} patches\n"
                             f"(sum {float(patch_map.sum()):.2f}; prefix tokens {prefix_share:.2f})", fontsize=9)
        ax_weights.set_xticks([])
        ax_weights.set_yticks([])

    # "mean" as a string, not None: a Dropdown whose value is None shows no selection at all.
    head_options = [("mean", "mean")] + [(str(h), h) for h in range(heads)]
    controls = dict(
        image=widgets.IntSlider(value=image, min=0, max=b - 1, description="image"),
        layer=widgets.IntSlider(value=layer % len(attentions), min=0, max=len(attentions) - 1, description="layer"),
        head=widgets.Dropdown(options=head_options, value="mean" if head is None else head, description="head"),
        query=widgets.IntSlider(value=query, min=0, max=tokens - 1, description="query token"),
        view=widgets.ToggleButtons(options=["attention", "rollout"] if rollout else ["attention"],
                                   value="attention", description="view"),
        temperature=widgets.FloatLogSlider(value=1.0, base=10, min=-1, max=1, step=0.05, description="T",
                                           disabled=not temperature),
    )
    box = interactive_figure(draw, ncols=3, figsize=figsize, **controls)
    box.children[0].layout.flex_flow = "row wrap"  # six controls: let them wrap on a narrow screen
    return box
