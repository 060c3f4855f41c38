"""What `save_graph`'s heat map shows: the figure it builds (recorded by a `Figure` subclass
patched in for the call), its colour scale, its labels, and a png drawn at 100 dpi whatever
the matplotlib rc settings say."""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

import matplotlib
import matplotlib.figure
import numpy as np
import pytest
from matplotlib.layout_engine import ConstrainedLayoutEngine

from rnb.balance.skills_graph import save_graph

TITLE = "skills graph A_ij: relative loss drop of j after training on i"
# max |A| = 0.75 while min A = -0.25: a colour scale that is not symmetric about 0, or not
# ±max|A|, shows in the image's limits.
A3 = np.array([[0.5, -0.25, 0.0], [0.0, 0.5, 0.333], [0.25, 0.0, 0.75]])
CELLS3 = [["0.50", "-0.25", "0.00"], ["0.00", "0.50", "0.33"], ["0.25", "0.00", "0.75"]]


@pytest.fixture
def figures(monkeypatch: pytest.MonkeyPatch) -> list[matplotlib.figure.Figure]:
    """Every `Figure` built while the test runs (save_graph imports the class at call time)."""
    made: list[matplotlib.figure.Figure] = []

    class Recorded(matplotlib.figure.Figure):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            made.append(self)

    monkeypatch.setattr(matplotlib.figure, "Figure", Recorded)
    return made


def _saved_figure(
    figures: list[matplotlib.figure.Figure], A: np.ndarray, names: list[str], out: Path
) -> tuple[matplotlib.figure.Figure, Any, Any]:
    """Run save_graph; return its figure, the heat map's axes and its image."""
    save_graph(A, names, out)
    # one figure, bound to its own Agg canvas (a canvas built without it makes a stray one)
    assert len(figures) == 1
    fig = figures[0]
    ax = next(a for a in fig.axes if a.images)
    assert len(ax.images) == 1
    return fig, ax, ax.images[0]


def _png_size(path: Path) -> tuple[int, int]:
    """(width, height) in pixels from the png signature and IHDR chunk."""
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR"
    return struct.unpack(">II", head[16:24])


def test_heat_map_cells_scale_and_colorbar(
    figures: list[matplotlib.figure.Figure], tmp_path: Path
) -> None:
    fig, ax, im = _saved_figure(figures, A3, ["x", "y", "z"], tmp_path)
    # constrained layout, figsize (1.2 + 0.55 m, 1.0 + 0.5 m) inches
    assert isinstance(fig.get_layout_engine(), ConstrainedLayoutEngine)
    np.testing.assert_allclose(fig.get_size_inches(), [2.85, 2.5])
    # diverging map, centred on 0 and spanning ±max|A|: gains red, losses blue
    assert im.get_cmap().name == "RdBu_r"
    assert im.get_clim() == (-0.75, 0.75)
    np.testing.assert_array_equal(im.get_array(), A3)
    # one centred 6 pt label per cell, with two decimals: row i = trained, column j = evaluated
    cells = {tuple(t.get_position()): t for t in ax.texts}
    assert len(ax.texts) == 9 and len(cells) == 9
    for i, row in enumerate(CELLS3):
        for j, label in enumerate(row):
            t = cells[(j, i)]
            assert (t.get_text(), t.get_ha(), t.get_va()) == (label, "center", "center")
            assert t.get_fontsize() == 6.0
    # the colorbar is the image's, beside the map at 0.8 of its (layout) height
    cbar = im.colorbar
    assert cbar is not None and cbar.mappable is im
    assert [a for a in fig.axes if a is not ax] == [cbar.ax]
    ratio = cbar.ax.get_position().height / ax.get_position(original=True).height
    assert ratio == pytest.approx(0.8, abs=1e-6)


def test_heat_map_title_labels_and_ticks(
    figures: list[matplotlib.figure.Figure], tmp_path: Path
) -> None:
    names = ["web", "code", "math", "books"]
    fig, ax, _ = _saved_figure(figures, np.eye(4), names, tmp_path)
    np.testing.assert_allclose(fig.get_size_inches(), [3.4, 3.0])  # m = 4
    assert (ax.get_title(), ax.title.get_fontsize()) == (TITLE, 8.0)
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("evaluated skill j", "trained skill i")
    np.testing.assert_array_equal(ax.get_xticks(), range(4))
    np.testing.assert_array_equal(ax.get_yticks(), range(4))
    xt = [
        (t.get_text(), t.get_rotation(), t.get_ha(), t.get_fontsize()) for t in ax.get_xticklabels()
    ]
    assert xt == [(n, 60.0, "right", 7.0) for n in names]  # slanted, ending under its column
    assert [(t.get_text(), t.get_fontsize()) for t in ax.get_yticklabels()] == [
        (n, 7.0) for n in names
    ]


def test_all_zero_graph_gets_unit_colour_limits(
    figures: list[matplotlib.figure.Figure], tmp_path: Path
) -> None:
    _, ax, im = _saved_figure(figures, np.zeros((2, 2)), ["a", "b"], tmp_path)
    assert im.get_clim() == (-1.0, 1.0)  # no scale of 0 width: zeros show as the mid colour
    assert [t.get_text() for t in ax.texts] == ["0.00"] * 4


def test_png_is_drawn_at_100_dpi_whatever_the_rc_dpi(tmp_path: Path) -> None:
    with matplotlib.rc_context({"figure.dpi": 50, "savefig.dpi": 50}):
        _, png = save_graph(np.eye(4), ["a", "b", "c", "d"], tmp_path)
    assert _png_size(png) == (340, 300)  # figsize (3.4, 3.0) inches at 100 dpi
