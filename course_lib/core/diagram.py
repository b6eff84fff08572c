"""Schematics of the models, drawn with matplotlib from code: boxes, arrows and notes on a blank canvas.

Each topic module draws its own model with these (``course_lib.topics.vae.schematic()`` and so on), so a picture
is reproducible, versioned with the code it describes, and renders wherever matplotlib does (JupyterLab, nbval,
GitHub). Coordinates are in the canvas's own units: ``canvas(10, 4)`` gives x in [0, 10] and y in [0, 4], one unit
an inch of the figure, so text sizes stay readable whatever the canvas.

    fig, ax = canvas(8, 3, title="a VAE")
    x = box(ax, 1, 1.5, "$x$", role="data")
    enc = box(ax, 3, 1.5, "encoder\\n$q_\\phi(z \\mid x)$", role="network")
    arrow(ax, x.right, enc.left)

A box's colour says what it is (``ROLES``): data, network, latent or noise, loss, operation, condition. The legend
of the roles a figure uses is added by :func:`legend`.
"""
from __future__ import annotations

from dataclasses import dataclass

import matplotlib.pyplot as plt
from matplotlib.figure import Figure
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch, Patch

# role -> (face colour, edge colour); the same role has the same colour in every schematic of the course
ROLES = {
    "data": ("#e8e8e8", "#555555"),  # images, tokens, captions: what comes in or goes out
    "network": ("#cfe2f3", "#2a6099"),  # a learned module (weights)
    "latent": ("#d9ead3", "#38761d"),  # a code, a latent, a noise sample, a feature
    "loss": ("#f4cccc", "#990000"),  # an objective
    "operation": ("#fff2cc", "#b45f06"),  # a fixed operation without weights (sum, softmax, noise schedule)
    "condition": ("#ead1dc", "#741b47"),  # class label, timestep, text: what steers the model
}


@dataclass(frozen=True)
class Box:
    """A drawn box: centre (x, y), width w, height h, and the points where arrows attach."""

    x: float
    y: float
    w: float
    h: float

    @property
    def left(self) -> tuple[float, float]:
        return (self.x - self.w / 2, self.y)

    @property
    def right(self) -> tuple[float, float]:
        return (self.x + self.w / 2, self.y)

    @property
    def top(self) -> tuple[float, float]:
        return (self.x, self.y + self.h / 2)

    @property
    def bottom(self) -> tuple[float, float]:
        return (self.x, self.y - self.h / 2)


def canvas(width: float = 10, height: float = 4, *, title: str | None = None):
    """A blank figure of ``width`` x ``height`` inches whose axes run over [0, width] x [0, height]; (fig, ax)."""
    if width <= 0 or height <= 0:
        raise ValueError(f"a canvas needs a positive width and height, got {width} x {height}")
    fig = plt.figure(figsize=(width, height))
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, width)
    ax.set_ylim(0, height)
    ax.set_aspect("equal")
    ax.axis("off")
    if title:
        ax.text(width / 2, height - 0.2, title, ha="center", va="top", fontsize=12, fontweight="bold")
    return fig, ax


def box(ax, x: float, y: float, text: str, *, w: float = 1.6, h: float = 0.7, role: str = "network",
        fontsize: float = 9) -> Box:
    """A rounded box centred at (x, y) with ``text`` inside, coloured by its ``role`` (see ``ROLES``)."""
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}; use one of {sorted(ROLES)}")
    face, edge = ROLES[role]
    ax.add_patch(FancyBboxPatch((x - w / 2, y - h / 2), w, h, boxstyle="round,pad=0.02,rounding_size=0.1",
                                facecolor=face, edgecolor=edge, linewidth=1.4))
    ax.text(x, y, text, ha="center", va="center", fontsize=fontsize)
    return Box(x, y, w, h)


def arrow(ax, start, end, *, text: str | None = None, color: str = "#333333", dashed: bool = False,
          bend: float = 0.0, fontsize: float = 8, text_offset: tuple[float, float] = (0.0, 0.15)) -> None:
    """An arrow from point ``start`` to point ``end`` (e.g. ``a.right`` to ``b.left``), with an optional label at
    its middle. ``bend`` curves it (0 straight; 0.3 a gentle arc, negative the other way): skip connections."""
    ax.add_patch(FancyArrowPatch(start, end, arrowstyle="-|>", mutation_scale=12, color=color, linewidth=1.3,
                                 linestyle="--" if dashed else "-", connectionstyle=f"arc3,rad={bend}",
                                 shrinkA=2, shrinkB=2))
    if text:
        mid_x = (start[0] + end[0]) / 2 + text_offset[0]
        mid_y = (start[1] + end[1]) / 2 + text_offset[1]
        ax.text(mid_x, mid_y, text, ha="center", va="bottom", fontsize=fontsize, color=color)


def note(ax, x: float, y: float, text: str, *, fontsize: float = 8, color: str = "#444444", ha: str = "center") -> None:
    """Plain explanatory text at (x, y): shapes, equations, what a part does."""
    ax.text(x, y, text, ha=ha, va="center", fontsize=fontsize, color=color, style="italic")


def legend(ax, roles, *, loc: str = "lower right") -> None:
    """A legend of the box colours for the ``roles`` this schematic uses."""
    handles = [Patch(facecolor=ROLES[r][0], edgecolor=ROLES[r][1], label=r) for r in roles]
    ax.legend(handles=handles, loc=loc, fontsize=7, frameon=False, ncol=len(handles))


def text_of(fig: Figure) -> str:
    """All the text drawn on a figure, joined: what a test reads to see that a schematic names its parts."""
    return "\n".join(t.get_text() for ax in fig.axes for t in ax.texts)
