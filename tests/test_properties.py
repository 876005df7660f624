"""Properties that must hold for every input, checked with hypothesis on a fixed set of examples."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lsst.images import Box, Image, MaskedImage

from lsst.skyframes import (
    BackgroundControl,
    BackgroundList,
    Interpolate,
    SkyMeasurementConfig,
    SkyMeasurementTask,
    UndersampleStyle,
)
from lsst.skyframes.background import ApproximateControl, BackgroundMI
from lsst.skyframes.mask_planes import default_mask_schema
from lsst.skyframes.statistics import Property, stack_statistics

# Deterministic (the same examples on every run, no example database) and modest, so the suite
# stays fast and a failure is reproducible; hypothesis prints the failing example.
DETERMINISTIC = settings(
    derandomize=True,
    database=None,
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)

# Every style that renders (periodic splines and UNKNOWN are not implemented).
STYLES = [
    Interpolate.CONSTANT,
    Interpolate.LINEAR,
    Interpolate.NATURAL_SPLINE,
    Interpolate.CUBIC_SPLINE,
    Interpolate.AKIMA_SPLINE,
]

float32s = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, width=32)


@st.composite
def boxes(draw, max_size=48) -> Box:
    """A box with a random origin (negative included) and size."""
    height = draw(st.integers(8, max_size))
    width = draw(st.integers(8, max_size))
    y0 = draw(st.integers(-1000, 1000))
    x0 = draw(st.integers(-1000, 1000))
    return Box.from_shape((height, width), start=(y0, x0))


def stats_image(
    values: np.ndarray, *, seed: int = 0, mask_bits: bool = False, origin: tuple[int, int] = (0, 0)
) -> MaskedImage:
    """A stats image holding ``values``, its first bin at ``origin`` (y, x)."""
    values = np.asarray(values, dtype=np.float32)
    rng = np.random.default_rng(seed)
    bbox = Box.from_shape(values.shape, start=origin)
    image = MaskedImage(
        Image(values, bbox=bbox),
        variance=Image(rng.uniform(0.0, 5.0, values.shape).astype(np.float32), bbox=bbox),
        mask_schema=default_mask_schema(),
    )
    if mask_bits:
        image.mask.set("NO_DATA", rng.random(values.shape) < 0.2)
        image.mask.set("BAD", rng.random(values.shape) < 0.1)
    return image


@DETERMINISTIC
@given(
    bbox=boxes(),
    nx=st.integers(1, 8),
    ny=st.integers(1, 8),
    value=float32s,
    style=st.sampled_from(STYLES),
)
def test_constant_field_renders_exactly(bbox, nx, ny, value, style):
    background = BackgroundMI(
        bbox,
        stats_image(np.full((ny, nx), value)),
        BackgroundControl(style, nx, ny, UndersampleStyle.REDUCE_INTERP_ORDER),
    )
    rendered = background.getImageF()
    assert rendered.bbox == bbox
    assert rendered.array.dtype == np.float32
    assert np.all(rendered.array == np.float32(value)), (
        f"{style.name} {nx}x{ny} over {bbox}: values {np.unique(rendered.array)[:5]}"
    )


@DETERMINISTIC
@given(
    layers=st.integers(1, 12),
    shape=st.tuples(st.integers(1, 6), st.integers(1, 6)),
    value=float32s,
    masked_fraction=st.sampled_from([0.0, 0.3, 0.9]),
    seed=st.integers(0, 2**16),
)
def test_meanclip_of_a_constant_stack_is_the_constant(layers, shape, value, masked_fraction, seed):
    rng = np.random.default_rng(seed)
    stack = np.full((layers, *shape), value, dtype=np.float64)
    bad = rng.random(stack.shape) < masked_fraction
    # Masked layers hold garbage that must not leak into the result.
    stack[bad] = rng.normal(0, 1e9, int(bad.sum()))
    result = stack_statistics(stack, bad, Property.MEANCLIP)
    good = (~bad).any(axis=0)
    assert np.all(result.value[good] == value)
    assert np.all(np.isnan(result.value[~good]))
    assert np.array_equal(result.count, (~bad).sum(axis=0))


@DETERMINISTIC
@given(
    scale=st.floats(min_value=1e-3, max_value=1e3, allow_nan=False),
    nx=st.integers(2, 6),
    ny=st.integers(2, 6),
    n_detectors=st.integers(1, 4),
    seed=st.integers(0, 2**16),
)
def test_scale_of_a_scaled_sky_frame_is_recovered(scale, nx, ny, n_detectors, seed):
    rng = np.random.default_rng(seed)
    task = SkyMeasurementTask(config=SkyMeasurementConfig())
    samples = []
    for detector in range(n_detectors):
        bbox = Box.from_shape((64, 80), start=(0, 0))
        # A sky frame with structure: a level near 1 plus a random bin pattern.
        values = 1.0 + 0.2 * rng.standard_normal((ny, nx))
        sky = BackgroundList(
            BackgroundMI(
                bbox,
                stats_image(values, seed=seed + detector),
                BackgroundControl(Interpolate.AKIMA_SPLINE, nx, ny, UndersampleStyle.REDUCE_INTERP_ORDER),
            )
        )
        image = MaskedImage(
            Image((scale * sky.getImage().array.astype(np.float64)).astype(np.float32)),
            mask_schema=default_mask_schema(),
        )
        samples.append(task.measureScale(image, sky))
    fitted = task.solveScales(samples)
    assert abs(fitted - scale) <= 1e-6 * scale


@st.composite
def background_lists(draw) -> BackgroundList:
    elements = []
    for index in range(draw(st.integers(1, 3))):
        bbox = draw(boxes(max_size=64))
        height, width = bbox.shape
        nx = draw(st.integers(1, min(8, width)))
        ny = draw(st.integers(1, min(8, height)))
        values = np.asarray(
            draw(st.lists(float32s, min_size=nx * ny, max_size=nx * ny)), dtype=np.float32
        ).reshape(ny, nx)
        if draw(st.booleans()):
            values[0, 0] = np.nan  # a bin without data
        # Stats images of afw files may sit at a non-zero origin.
        origin = (draw(st.integers(-5, 5)), draw(st.integers(-5, 5)))
        stats = stats_image(values, seed=index, mask_bits=draw(st.booleans()), origin=origin)
        interp = draw(st.sampled_from(list(Interpolate)))
        undersample = draw(st.sampled_from(list(UndersampleStyle)))
        control = BackgroundControl(
            STYLES[0] if interp not in STYLES else interp, nx, ny, UndersampleStyle.REDUCE_INTERP_ORDER
        )
        elements.append(
            (
                BackgroundMI(bbox, stats, control),
                interp,
                undersample,
                draw(st.sampled_from(list(ApproximateControl.Style))),
                draw(st.integers(-1, 6)),
                draw(st.integers(-1, 6)),
                draw(st.booleans()),
            )
        )
    return BackgroundList(*elements)


@DETERMINISTIC
@given(background_list=background_lists())
def test_background_list_fits_round_trip_is_the_identity(background_list):
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "bg.fits"
        background_list.writeFits(str(path))
        read = BackgroundList.readFits(str(path))
    assert len(read) == len(background_list)
    for written, got in zip(background_list, read, strict=True):
        assert tuple(got[1:]) == tuple(written[1:])
        assert got[0].getImageBBox() == written[0].getImageBBox()
        want, have = written[0].getStatsImage(), got[0].getStatsImage()
        assert have.bbox == want.bbox
        assert have.image.array.tobytes() == want.image.array.tobytes()  # NaN bins included
        assert have.variance.array.tobytes() == want.variance.array.tobytes()
        assert np.array_equal(have.mask.array, want.mask.array)
        assert list(have.mask.schema.names) == list(want.mask.schema.names)
