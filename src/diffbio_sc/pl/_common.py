"""What every ``dfm.pl`` plot shares: ``ax=``, ``show=``, ``save=``, and returning the Figure."""

from __future__ import annotations

import os

from .._validate import DfmInputError, check_bool


def check_show(show) -> bool:
    """Return ``show`` as a bool (``None``: do not call ``plt.show()``)."""
    return False if show is None else check_bool("show", show)


def check_ax(ax, *, n_panels: int = 1, what: str = "this plot"):
    """Return ``ax`` if it is ``None`` or one matplotlib Axes a single-panel plot can draw into."""
    if ax is None:
        return None
    from matplotlib.axes import Axes

    if not isinstance(ax, Axes):
        raise TypeError(f"ax must be a matplotlib Axes or None, got {type(ax).__name__}.")
    if n_panels != 1:
        raise DfmInputError(
            f"{what} draws {n_panels} panels and cannot draw into one ax; pass ax=None "
            "(a new figure), or select one panel."
        )
    return ax


def finish(fig, *, save, dpi: int, show: bool, owned: bool, bbox: str | None = "tight"):
    """Save ``fig`` atomically if asked, then show it or detach it from pyplot; return it.

    ``owned``: the plot made ``fig`` (``ax=None``). A figure the caller passed an
    Axes of is left open, for the caller to finish.
    """
    import matplotlib.pyplot as plt

    if save is not None:
        from ..io._atomic import atomic_path

        with atomic_path(save, what="figure") as tmp:
            fig.savefig(
                tmp,
                dpi=dpi,
                bbox_inches=bbox,
                facecolor="white",
                format=os.path.splitext(os.fspath(save))[1].lstrip(".") or None,
            )
    if show:
        plt.show()
    elif owned:
        plt.close(fig)  # detach from pyplot: shown once, as the returned value
    return fig
