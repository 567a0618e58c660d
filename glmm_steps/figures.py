"""What every figure of the workflow shares: headless matplotlib, a canvas that keeps
its titles and labels inside, wrapped titles, a figure that says why there is no plot,
and the one PNG writer.

Kept apart from the plot modules so a step that only draws (a study's plots, the power
curve) loads matplotlib and nothing of the fitting code. matplotlib runs headless
(Agg) and PNGs carry no timestamp or software tag, so the same figure gives the same
bytes.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.layout_engine import PlaceHolderLayoutEngine  # noqa: E402

_PNG_META = {"Software": None}


def save_png(fig, path: str | Path) -> None:
    """Write ``fig`` to ``path`` as a PNG without a timestamp or software tag (the same
    figure gives the same bytes), creating the folder, and close it."""
    # fig.tight_layout() leaves a placeholder layout engine, for which savefig lays the
    # figure out once more by a full draw before rendering it: 10-15% of a study
    # figure's time, for the same bytes (the layout is done). Constrained layouts keep
    # their engine: their draw before rendering places the axes.
    if isinstance(fig.get_layout_engine(), PlaceHolderLayoutEngine):
        fig.set_layout_engine(None)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, metadata=_PNG_META)
    plt.close(fig)


def figure(width: float, height: float, **kwargs):
    """A figure whose layout engine keeps titles, tick labels and legends placed
    outside the axes inside the canvas (tight_layout clips a legend outside the axes)."""
    return plt.figure(figsize=(width, height), layout="constrained", **kwargs)


def _wrapped(fig, text: str, fontsize: float) -> str:
    """``text`` with each of its lines wrapped to the figure's width at ``fontsize``."""
    width = int(fig.get_figwidth() * 72 / (0.6 * fontsize))
    return "\n".join(w for line in text.splitlines() for w in (textwrap.wrap(line, width) or [""]))


def wrapped_title(fig, text: str, fontsize: float = 11) -> None:
    """The figure's title, each line wrapped to the figure's width so none is cut off."""
    fig.suptitle(_wrapped(fig, text, fontsize), fontsize=fontsize)


def wrapped_axes_title(ax, text: str, fontsize: float = 10) -> None:
    """An axes' title, each line wrapped to its figure's width so none is cut off."""
    ax.set_title(_wrapped(ax.figure, text, fontsize), fontsize=fontsize)


def message(text: str, title: str = ""):
    """A figure that states why there is no plot (a failed fit, no covariate to draw),
    under ``title``; the text's own line breaks (a failure, then the engine's error)
    are kept."""
    fig = figure(7, 2.8)
    ax = fig.add_subplot()
    ax.axis("off")
    if title:
        wrapped_title(fig, title)
    ax.text(0.5, 0.5, _wrapped(fig, text, 11), ha="center", va="center", fontsize=11)
    return fig


def message_figure(text: str, path: str | Path, title: str = "") -> None:
    """Write :func:`message` as a PNG to ``path``."""
    save_png(message(text, title), path)
