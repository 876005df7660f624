"""Figures a person can read: colour scales set by the sky, not the stars; titles that fit."""

from __future__ import annotations

import numpy as np
import pytest

from lsst.skyframes.camera import make_synthetic_camera
from lsst.skyframes.mosaic import focal_plane_mosaic, mosaic_figure
from lsst.skyframes.plotting import SKY_SCALE_SIGMA, colour_limits, plot_panels, wrap_title

SKY, NOISE = 100.0, 2.0


def _starry_sky(rng: np.random.Generator, shape: tuple[int, int] = (200, 200)) -> np.ndarray:
    """Gaussian sky of known level and noise with 2 % of the pixels on bright stars."""
    image = rng.normal(SKY, NOISE, shape)
    stars = rng.random(shape) < 0.02
    image[stars] += rng.uniform(500.0, 5000.0, np.count_nonzero(stars))
    return image


def test_sky_scale_is_centred_on_the_sky_not_the_stars():
    image = _starry_sky(np.random.default_rng(5))
    vmin, vmax = colour_limits([image], about_sky=True)
    centre, half_width = (vmin + vmax) / 2, (vmax - vmin) / 2
    # Truth: the sky level and SKY_SCALE_SIGMA times its noise; the 3-sigma clip keeps
    # 99.7 % of a Gaussian, whose clipped standard deviation is 0.986 of the true one.
    assert centre == pytest.approx(SKY, abs=0.05)
    assert half_width == pytest.approx(SKY_SCALE_SIGMA * NOISE, rel=0.03)
    # The default range scale is set by the stars: the sky would be one colour.
    low, high = colour_limits([image])
    assert high > SKY + 100 * NOISE


def test_sky_scale_of_empty_and_flat_images_is_finite():
    assert colour_limits([np.full((4, 4), np.nan)], about_sky=True) == (-1.0, 1.0)
    vmin, vmax = colour_limits([np.full((4, 4), 7.0)], about_sky=True)
    assert vmin < 7.0 < vmax


def test_corrected_mosaic_uses_the_sky_scale():
    camera = make_synthetic_camera(n_x=2, n_y=1, size=64, gap_px=4)
    rng = np.random.default_rng(2)
    binned = {d.id: _starry_sky(rng, (8, 8)) for d in camera}
    mosaic = focal_plane_mosaic(camera, binned, 8)
    figure = mosaic_figure([("sky-corrected image", mosaic)], label="counts", about_sky=True)
    (shown,) = figure.axes[0].get_images()
    vmin, vmax = shown.get_clim()
    assert (vmin, vmax) == pytest.approx(colour_limits([mosaic.array], about_sky=True))
    assert shown.get_cmap().name == "RdBu_r"


def _title_boxes(figure):
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    renderer = canvas.get_renderer()
    texts = [ax.title for ax in figure.axes if ax.get_title()]
    if figure._suptitle is not None:
        texts.append(figure._suptitle)
    return [text.get_window_extent(renderer) for text in texts], figure.bbox


LONG = (
    "Visit 2012 (second pattern weight +0.80): large-scale residual sky (64 px clipped means, "
    "objects masked) against truth, with every detector of the camera"
)


def test_wrapped_titles_fit_the_figure(tmp_path):
    assert "\n" in wrap_title(LONG, 5.0)
    assert wrap_title("short", 5.0) == "short"
    camera = make_synthetic_camera(n_x=1, n_y=1, size=64, gap_px=0)
    mosaic = focal_plane_mosaic(camera, {0: np.ones((8, 8))}, 8)
    figure = mosaic_figure([(LONG, mosaic)], title=LONG, label="residual", symmetric=True)
    boxes, page = _title_boxes(figure)
    assert len(boxes) == 2
    for box in boxes:
        assert page.x0 - 1 <= box.x0 and box.x1 <= page.x1 + 1, (box, page)


def test_panel_titles_fit(tmp_path, monkeypatch):
    import matplotlib.figure

    captured = []
    original = matplotlib.figure.Figure.savefig

    def keep(self, *args, **kwargs):
        captured.append(self)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", keep)
    path = tmp_path / "panels.png"
    plot_panels([(LONG, np.ones((8, 8)), "value")], path, title=LONG)
    assert path.read_bytes().startswith(b"\x89PNG")
    boxes, page = _title_boxes(captured[0])
    for box in boxes:
        assert page.x0 - 1 <= box.x0 and box.x1 <= page.x1 + 1, (box, page)
