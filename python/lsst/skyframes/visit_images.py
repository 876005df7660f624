"""Conversion between lsst.images ``VisitImage`` objects and skyframes' types.

Rubin's public per-detector image type, `lsst.images.VisitImage`, carries
what skyframes otherwise takes as separate inputs: the detector's focal-plane
geometry (an `lsst.images.cameras.Detector`) and the background already
subtracted (entry ``"subtracted"`` of its `lsst.images.BackgroundMap`). This
module turns those into the types `~lsst.skyframes.correction.SkyCorrectionTask`
works with, and back:

- `detector_geometry` / `camera_from_visit_images`: the attached detectors as
  `~lsst.skyframes.camera.DetectorGeometry` / `~lsst.skyframes.camera.Camera`
  (position, rotation, pixel size, size, physical type), the geometry the YAML
  cameras describe;
- `lsst_images_detector`: the inverse, an `lsst.images.cameras.Detector` built
  with lsst.images alone (no afw) through its serialization model;
- `subtracted_background`: a ``BackgroundMap`` entry as a one-element
  `~lsst.skyframes.background.BackgroundList` that restores the entry's
  rendering exactly;
- `make_visit_image`: a ``VisitImage`` from a `lsst.images.MaskedImage` (tests,
  ingest);
- `with_correction`: the sky-corrected ``VisitImage``, whose ``BackgroundMap``
  gains the task's correction as a new entry.
"""

from __future__ import annotations

__all__ = [
    "attached_detector",
    "camera_from_visit_images",
    "detector_geometry",
    "lsst_images_detector",
    "make_visit_image",
    "subtracted_background",
    "with_correction",
]

import math
from collections.abc import Iterable, Sequence
from typing import Any

import astropy.units as u
import astropy.wcs
import numpy as np
from astro_metadata_translator import ObservationInfo

from lsst.images import Background, BackgroundMap, Image, Mask, MaskedImage, SkyProjection, VisitImage
from lsst.images.cameras import (
    CameraFrameSetSerializationModel,
    Detector,
    DetectorAttributes,
    DetectorType,
    Orientation,
)
from lsst.images.fields import Field, SplineField, SumField
from lsst.images.psfs import GaussianPointSpreadFunction

from .background import BackgroundControl, BackgroundList, BackgroundMI
from .camera import DEFAULT_PHYSICAL_TYPE, Camera, DetectorGeometry, FilterDefinition, _cos_sin_deg
from .errors import BackgroundEntryError, VisitImageError
from .interpolate import Interpolate, UndersampleStyle
from .mask_planes import default_mask_schema

# Nominal plate scale of the FIELD_ANGLE frame lsst.images requires of every
# camera frame set; skyframes works in the focal plane only, so its value
# matters to no result here (LSSTCam's is about 20 arcsec/mm).
_PLATE_SCALE_RAD_PER_MM = math.radians(20.0 / 3600.0)

# Relative agreement required between a detector's nominal pixel size and the
# scale of its pixel -> focal-plane transform (both float64 of one number).
_SCALE_RTOL = 1e-9


def _ast() -> Any:
    # lsst.images wraps whichever AST binding is installed (astshim with the
    # Rubin stack, starlink-pyast from PyPI) behind astshim's interface; its
    # native text encoding is what CameraFrameSetSerializationModel stores.
    from lsst.images._transforms import _ast as ast

    return ast


def _pixel_to_focal_plane_mapping(geometry: DetectorGeometry) -> Any:
    """AST mapping from pixel (x, y) to focal-plane mm, as `DetectorGeometry.pixel_to_focal_plane`."""
    ast = _ast()
    cos_t, sin_t = _cos_sin_deg(geometry.rotation_deg)
    cx, cy = geometry.centre_pixel
    matrix = geometry.pixel_size_mm * np.array([[cos_t, -sin_t], [sin_t, cos_t]])
    return ast.CmpMap(
        ast.CmpMap(ast.ShiftMap([-cx, -cy]), ast.MatrixMap(matrix), True),
        ast.ShiftMap(list(geometry.centre_mm)),
        True,
    )


def _camera_frames(instrument: str, geometries: Sequence[DetectorGeometry]) -> Any:
    """Build an `lsst.images.cameras.CameraFrameSet` without afw.

    lsst.images makes one only from afw objects or from storage, so this
    writes the AST frame set its serialization model holds and reads it back.
    """
    ast = _ast()
    focal_plane = ast.Frame(2, "Ident=FOCAL_PLANE,Domain=FOCAL_PLANE,Unit(1)=mm,Unit(2)=mm")
    frames = ast.FrameSet(focal_plane)
    field_angle = ast.Frame(2, "Ident=FIELD_ANGLE,Domain=FIELD_ANGLE,Unit(1)=rad,Unit(2)=rad")
    frames.addFrame(1, ast.ZoomMap(2, _PLATE_SCALE_RAD_PER_MM), field_angle)
    for geometry in geometries:
        # Bottom/Top are what CameraFrameSet reads the detector's bbox from.
        pixels = ast.Frame(
            2,
            f"Ident=DETECTOR_{geometry.id},Domain=PIXELS,Bottom(1)=0,Top(1)={geometry.width},"
            f"Bottom(2)=0,Top(2)={geometry.height}",
        )
        frames.addFrame(1, _pixel_to_focal_plane_mapping(geometry).inverted(), pixels)
    model = CameraFrameSetSerializationModel(instrument=instrument, ast=frames.show())
    # The model's deserialize reads nothing from the archive.
    return model.deserialize(None)


def lsst_images_detector(
    geometry: DetectorGeometry, *, instrument: str, visit: int | None = None, frames: Any = None
) -> Detector:
    """Return an `lsst.images.cameras.Detector` with the geometry of ``geometry``.

    Parameters
    ----------
    geometry : `~lsst.skyframes.camera.DetectorGeometry`
        The detector.
    instrument : `str`
        Instrument name (the camera frame set's).
    visit : `int`, optional
        Visit the detector belongs to.
    frames : `lsst.images.cameras.CameraFrameSet`, optional
        A frame set holding this detector's frame (e.g. one built for a
        whole camera); a one-detector frame set is built if not given.

    Returns
    -------
    detector : `lsst.images.cameras.Detector`
        Its ``to_focal_plane`` transform maps pixel ``(x, y)`` to the
        focal-plane mm of ``geometry.pixel_to_focal_plane``; ``orientation``
        gives the centre pixel, its focal-plane position and the rotation
        (``yaw``); ``type`` is ``geometry.purpose``.

    Raises
    ------
    lsst.skyframes.errors.VisitImageError
        Raised if ``geometry.purpose`` is not an lsst.images detector type.
    """
    try:
        detector_type = DetectorType(geometry.purpose)
    except ValueError:
        raise VisitImageError(
            f"Detector {geometry.id} ({geometry.name!r}) has purpose {geometry.purpose!r}, which "
            f"lsst.images cannot represent; use one of {[t.value for t in DetectorType]}."
        ) from None
    if frames is None:
        frames = _camera_frames(instrument, [geometry])
    cx, cy = geometry.centre_pixel
    attributes = DetectorAttributes(
        name=geometry.name,
        id=geometry.id,
        type=detector_type,
        serial="",
        bbox=frames.detector(geometry.id).bbox,
        orientation=Orientation(
            focal_plane_x=geometry.centre_mm[0],
            focal_plane_y=geometry.centre_mm[1],
            focal_plane_z=0.0,
            pixel_reference_x=cx,
            pixel_reference_y=cy,
            yaw=geometry.rotation_deg * u.deg,
            pitch=0.0 * u.deg,
            roll=0.0 * u.deg,
        ),
        pixel_size=geometry.pixel_size_mm,
        physical_type=geometry.physical_type,
    )
    return Detector(attributes, [], frames, visit=visit)


def detector_geometry(detector: Detector) -> DetectorGeometry:
    """Return the focal-plane geometry of an lsst.images detector.

    Parameters
    ----------
    detector : `lsst.images.cameras.Detector`
        E.g. ``visit_image.detector``.

    Returns
    -------
    geometry : `~lsst.skyframes.camera.DetectorGeometry`
        Centre from the pixel -> focal-plane transform at the centre pixel,
        rotation from the direction of the pixel x axis, pixel size the
        detector's nominal one (checked against the transform's scale),
        size from its bbox, physical type and purpose from its attributes.

    Raises
    ------
    lsst.skyframes.errors.VisitImageError
        Raised if the bbox does not start at pixel (0, 0), the focal plane is
        not in mm, or the transform is not a rotation and a uniform scale by
        the pixel size (a mirrored or distorted detector).
    """
    label = f"detector {detector.id} ({detector.name!r}) of {detector.instrument}"
    bbox = detector.bbox
    if bbox.x.start != 0 or bbox.y.start != 0:
        raise VisitImageError(
            f"The bbox of {label} starts at (x, y) = ({bbox.x.start}, {bbox.y.start}); skyframes' "
            "detectors have their pixel origin at (0, 0). Pass whole, trimmed detector images."
        )
    transform = detector.to_focal_plane
    unit = transform.out_frame.unit
    if unit != u.mm:
        raise VisitImageError(f"The focal plane of {label} is in {unit}; skyframes needs millimetres.")
    width, height = bbox.x.size, bbox.y.size
    cx, cy = (width - 1) / 2.0, (height - 1) / 2.0
    # The centre and its neighbours along x and y give the linear map; a far
    # corner checks that it is linear over the detector.
    xs = np.array([cx, cx + 1.0, cx, width - 1.0])
    ys = np.array([cy, cy, cy + 1.0, height - 1.0])
    fp = transform.apply_forward(x=xs, y=ys)
    fx, fy = np.asarray(fp.x, dtype=float), np.asarray(fp.y, dtype=float)
    ex = np.array([fx[1] - fx[0], fy[1] - fy[0]])
    ey = np.array([fx[2] - fx[0], fy[2] - fy[0]])
    pixel_size = detector.pixel_size
    scale_x, scale_y = float(np.hypot(*ex)), float(np.hypot(*ey))
    cross = float(ex[0] * ey[1] - ex[1] * ey[0])
    corner = np.array([fx[3], fy[3]])
    predicted = np.array([fx[0], fy[0]]) + (width - 1 - cx) * ex + (height - 1 - cy) * ey
    tol = 1e-6 * pixel_size
    if (
        not math.isclose(scale_x, pixel_size, rel_tol=1e-6)
        or not math.isclose(scale_y, pixel_size, rel_tol=1e-6)
        or abs(float(ex @ ey)) > 1e-6 * pixel_size**2
        or cross <= 0
        or np.abs(corner - predicted).max() > tol * max(width, height)
    ):
        raise VisitImageError(
            f"The pixel -> focal-plane transform of {label} is not a rotation and a scale by its pixel "
            f"size {pixel_size} mm (pixel x axis {ex.tolist()}, y axis {ey.tolist()} mm per pixel); "
            "skyframes' detectors cannot describe it (mirrored or distorted detectors are not supported)."
        )
    rotation = math.degrees(math.atan2(ex[1], ex[0]))
    # Round-off of the AST matrix must not turn an axis-aligned detector into
    # a resampled one (DetectorGeometry is exact at multiples of 90 degrees).
    rotation = round(rotation, 9) + 0.0
    return DetectorGeometry(
        id=detector.id,
        name=detector.name,
        width=width,
        height=height,
        centre_mm=(float(fx[0]), float(fy[0])),
        pixel_size_mm=pixel_size,
        rotation_deg=rotation,
        physical_type=detector.physical_type or DEFAULT_PHYSICAL_TYPE,
        purpose=str(detector.type.value),
    )


def attached_detector(image: Any) -> tuple[Detector, str, str]:
    """Return what `camera_from_visit_images` needs of one image, without its pixels.

    Parameters
    ----------
    image : `lsst.images.VisitImage`
        The image.

    Returns
    -------
    detector : `lsst.images.cameras.Detector`
        The attached detector.
    physical_filter, band : `str`
        The filter it was taken with.

    Raises
    ------
    lsst.skyframes.errors.VisitImageError
        Raised if ``image`` is not a ``VisitImage``.
    """
    if not isinstance(image, VisitImage):
        raise VisitImageError(
            f"Without a camera the detectors come from the images, but got a {type(image).__name__}; "
            "pass lsst.images VisitImages (with their detectors) or pass the camera (in a pipeline: "
            "register it with `skyframes register REPO camera.yaml` and give <instrument>/calib with -i)."
        )
    return image.detector, image.physical_filter, image.band


def camera_from_visit_images(images: Iterable[Any]) -> Camera:
    """Return the camera that the detectors attached to ``images`` describe.

    Parameters
    ----------
    images : iterable of `lsst.images.VisitImage` or of `attached_detector` tuples
        Images of one instrument (normally one visit), one per detector, or
        what `attached_detector` returns for each (so the pixels need not be
        held together).

    Returns
    -------
    camera : `~lsst.skyframes.camera.Camera`
        The images' detectors (`detector_geometry`) in the given order, and
        the filters they were taken with.

    Raises
    ------
    lsst.skyframes.errors.VisitImageError
        Raised if an image is not a ``VisitImage``, the images come from
        several instruments, or two images share a detector id.
    lsst.skyframes.errors.CameraError
        Raised if the detectors overlap in the focal plane.
    """
    detectors: dict[int, DetectorGeometry] = {}
    filters: dict[str, str] = {}
    instruments = set()
    for item in images:
        detector, physical_filter, band = item if isinstance(item, tuple) else attached_detector(item)
        geometry = detector_geometry(detector)
        if geometry.id in detectors:
            raise VisitImageError(f"Two images have detector {geometry.id}; pass one image per detector.")
        detectors[geometry.id] = geometry
        instruments.add(detector.instrument)
        filters[physical_filter] = band
    if not detectors:
        raise VisitImageError("camera_from_visit_images got no images.")
    if len(instruments) > 1:
        raise VisitImageError(f"The images come from several instruments {sorted(instruments)}; pass one's.")
    return Camera(
        instrument=instruments.pop(),
        detectors=tuple(detectors.values()),
        filters=tuple(FilterDefinition(pf, band) for pf, band in filters.items()),
        source="the detectors attached to the VisitImages",
    )


def _render_in_image_units(visit_image: VisitImage, background: Background) -> np.ndarray:
    """Render a ``BackgroundMap`` entry over the image, in the pixels' unit, as float32.

    Rubin's rewrite task stores backgrounds in instrumental units (electron)
    beside calibrated pixels (nJy); the image's ``photometric_scaling``
    (nJy/electron) then converts them. A field without a unit is taken to be
    in the pixels' unit, as the entries skyframes writes without one.
    """
    bbox = visit_image.bbox
    field = background.field
    rendered = np.asarray(field.render(bbox).array, dtype=np.float64)
    image_unit = visit_image.unit
    field_unit = field.unit
    if field_unit is None or image_unit is None or field_unit == image_unit:
        return rendered.astype(np.float32)
    if field_unit.is_equivalent(image_unit):
        return (rendered * field_unit.to(image_unit)).astype(np.float32)
    scaling = visit_image.photometric_scaling
    if scaling is not None and (field_unit * scaling.unit).is_equivalent(image_unit):
        factor = (field_unit * scaling.unit).to(image_unit)
        return (rendered * np.asarray(scaling.render(bbox).array, dtype=np.float64) * factor).astype(
            np.float32
        )
    have = "no photometric_scaling" if scaling is None else f"a photometric_scaling in {scaling.unit}"
    raise VisitImageError(
        f"Background {background.name!r} of the VisitImage of detector {visit_image.detector.id} is in "
        f"{field_unit} but the pixels are in {image_unit}, and the image has {have} to convert it; "
        f"attach a photometric_scaling in {image_unit / field_unit}, or convert the image "
        "(VisitImage.convert_unit) to the background's unit."
    )


def subtracted_background(visit_image: VisitImage, entry: str = "subtracted") -> BackgroundList:
    """Return a ``BackgroundMap`` entry as a list that restores it exactly.

    Parameters
    ----------
    visit_image : `lsst.images.VisitImage`
        The image.
    entry : `str`, optional
        Name of the entry (Rubin's rewrite task names the background
        subtracted during processing ``"subtracted"``).

    Returns
    -------
    background : `~lsst.skyframes.background.BackgroundList`
        One element with one bin per pixel holding the entry's field rendered
        over the image (as float32, the pixels' type), rendered with LINEAR
        interpolation, which returns each bin's value at its centre: so
        ``background.getImage()`` is ``field.render()`` exactly, in the
        pixels' unit (a field in another unit is converted, through the
        image's ``photometric_scaling`` if need be: Rubin keeps backgrounds
        in electrons beside nJy pixels).

    Raises
    ------
    lsst.skyframes.errors.BackgroundEntryError
        Raised if the map has no such entry; the message names the entries
        present and the config field that chooses one.
    lsst.skyframes.errors.VisitImageError
        Raised if the entry's unit cannot be converted to the pixels'.

    Notes
    -----
    A field (Akima spline, Chebyshev, a sum of them) is not in general a
    binned afw-style background: converting a spline's nodes to bins would
    reproduce its rendering only inside the hull of the nodes, since afw-style
    rendering extrapolates differently (see
    `~lsst.skyframes.background.BackgroundMI.toSplineField`). The
    full-resolution element is what keeps skyCorr's identity ``image -
    skyCorr.getImage() = corrected image`` exact, at the cost of a stats image
    the size of the detector in ``skyCorr``.
    """
    backgrounds = visit_image.backgrounds
    if entry not in backgrounds:
        present = list(backgrounds)
        subtracted = backgrounds.subtracted
        marked = f" ({subtracted.name!r} is marked subtracted)" if subtracted is not None else ""
        raise BackgroundEntryError(
            f"The VisitImage of detector {visit_image.detector.id} has no background {entry!r} in its "
            f"BackgroundMap; it has {present or 'none'}{marked}. Set the config field "
            f"visitImageBackgroundEntry to the entry that was subtracted (-c "
            f"skyCorr:visitImageBackgroundEntry=NAME), to None if nothing was, or pass the backgrounds "
            f"separately (calBkgs).",
            entry,
            present,
        )
    bbox = visit_image.bbox
    rendered = _render_in_image_units(visit_image, backgrounds[entry])
    height, width = bbox.shape
    stats = MaskedImage(
        Image(rendered.copy()),
        mask=Mask(0, schema=default_mask_schema(), shape=(height, width)),
        variance=Image(np.zeros((height, width), dtype=np.float32)),
    )
    control = BackgroundControl(Interpolate.LINEAR, width, height, UndersampleStyle.REDUCE_INTERP_ORDER)
    # The element takes its styles from the control.
    return BackgroundList(BackgroundMI(bbox, stats, control))


def make_visit_image(
    masked_image: MaskedImage,
    detector_geometry: DetectorGeometry,
    *,
    band: str,
    psf_sigma: float,
    subtracted: BackgroundList | Field | None = None,
    instrument: str = "SkyCam",
    physical_filter: str | None = None,
    visit: int | None = None,
    unit: u.UnitBase = u.electron,
    sky_position_deg: tuple[float, float] = (150.0, 2.0),
    pixel_scale_arcsec: float = 0.2,
    frames: Any = None,
) -> VisitImage:
    """Build a ``VisitImage`` from a masked image, with lsst.images alone.

    Parameters
    ----------
    masked_image : `lsst.images.MaskedImage`
        Image, mask and variance (copied).
    detector_geometry : `~lsst.skyframes.camera.DetectorGeometry`
        The detector (`lsst_images_detector`).
    band : `str`
        Band of the visit.
    psf_sigma : `float`
        Sigma (pixels) of the attached Gaussian PSF.
    subtracted : `~lsst.skyframes.background.BackgroundList` or field, optional
        Background already subtracted from the image: entry ``"subtracted"``
        of the ``BackgroundMap``, marked subtracted (a list becomes its
        `~lsst.skyframes.background.BackgroundList.toBackgroundMap` field).
    instrument : `str`, optional
        Instrument name.
    physical_filter : `str`, optional
        Physical filter (``f"{instrument}-{band}"`` by default).
    visit : `int`, optional
        Visit id.
    unit : `astropy.units.UnitBase`, optional
        Unit of the pixels (a VisitImage needs one).
    sky_position_deg : `tuple` [`float`, `float`], optional
        RA, Dec of the detector centre for the (TAN) sky projection a
        VisitImage needs; skyframes does not use it.
    pixel_scale_arcsec : `float`, optional
        Its pixel scale.
    frames : `lsst.images.cameras.CameraFrameSet`, optional
        Passed to `lsst_images_detector`.

    Returns
    -------
    visit_image : `lsst.images.VisitImage`
    """
    geometry = detector_geometry
    detector = lsst_images_detector(geometry, instrument=instrument, visit=visit, frames=frames)
    bbox = detector.bbox
    scale_deg = pixel_scale_arcsec / 3600.0
    cos_t, sin_t = _cos_sin_deg(geometry.rotation_deg)
    wcs = astropy.wcs.WCS(
        {
            "CTYPE1": "RA---TAN",
            "CTYPE2": "DEC--TAN",
            "CRPIX1": geometry.centre_pixel[0] + 1.0,
            "CRPIX2": geometry.centre_pixel[1] + 1.0,
            "CRVAL1": sky_position_deg[0],
            "CRVAL2": sky_position_deg[1],
            "CD1_1": -scale_deg * cos_t,
            "CD1_2": -scale_deg * sin_t,
            "CD2_1": -scale_deg * sin_t,
            "CD2_2": scale_deg * cos_t,
        }
    )
    projection = SkyProjection.from_fits_wcs(wcs, detector.frame, pixel_bounds=bbox, x0=0, y0=0)
    physical_filter = physical_filter or f"{instrument}-{band}"
    obs_info = ObservationInfo.makeObservationInfo(
        instrument=instrument,
        physical_filter=physical_filter,
        detector_num=geometry.id,
        detector_name=geometry.name,
        visit_id=visit,
    )
    backgrounds = BackgroundMap()
    if isinstance(subtracted, BackgroundList):
        backgrounds = subtracted.toBackgroundMap("subtracted", "Background subtracted from the image.")
    elif subtracted is not None:
        backgrounds.add("subtracted", subtracted, "Background subtracted from the image.", is_subtracted=True)
    stamp = 2 * math.ceil(4 * psf_sigma) + 1
    variance = getattr(masked_image, "variance", None)
    return VisitImage(
        Image(np.array(masked_image.image.array, dtype=np.float32), bbox=bbox, unit=unit),
        mask=masked_image.mask.copy(),
        variance=None if variance is None else Image(np.array(variance.array), bbox=bbox, unit=unit**2),
        sky_projection=projection,
        obs_info=obs_info,
        psf=GaussianPointSpreadFunction(psf_sigma, bounds=bbox, stamp_size=stamp),
        detector=detector,
        backgrounds=backgrounds,
        band=band,
    )


def _element_field(element: tuple, nodes_per_bin: int) -> SplineField:
    """Return one background-list element as an lsst.images (Akima) spline field."""
    background, style, *_ = element
    if style == Interpolate.AKIMA_SPLINE:
        return background.toSplineField()
    bbox = background.getImageBBox()
    ny, nx = background.getStatsImage().bbox.shape
    rendered = np.asarray(BackgroundList(element).getImage().array, dtype=np.float64)
    nodes = []
    for length, bins in ((bbox.y.size, ny), (bbox.x.size, nx)):
        step = max(1, (length // bins) // max(1, nodes_per_bin))
        nodes.append(np.unique(np.r_[np.arange(0, length, step), length - 1]))
    rows, columns = nodes
    return SplineField(
        bbox,
        rendered[np.ix_(rows, columns)].copy(),
        y=rows + float(bbox.y.start),
        x=columns + float(bbox.x.start),
    )


def with_correction(
    visit_image: VisitImage,
    skyCorr: BackgroundList,
    entry: str = "skyCorr",
    *,
    restored: int = 1,
    nodes_per_bin: int = 4,
    image_is_corrected: bool = False,
    description: str = "Sky correction by skyframes' SkyCorrectionTask (sky frame and focal-plane "
    "models), to be subtracted after restoring the background marked subtracted before it.",
) -> VisitImage:
    """Return the sky-corrected copy of a visit image, its correction in the ``BackgroundMap``.

    Parameters
    ----------
    visit_image : `lsst.images.VisitImage`
        The image as the task read it, or with ``image_is_corrected`` the
        task's ``correctedExp`` (corrected in place).
    skyCorr : `~lsst.skyframes.background.BackgroundList`
        The task's ``skyCorr`` for this detector: ``restored`` elements that
        undo the subtracted background, then the task's models.
    entry : `str`, optional
        Name of the new entry.
    restored : `int`, optional
        How many leading elements of ``skyCorr`` restore the background
        marked subtracted (`SkyCorrectionTask` restores a VisitImage's entry
        as one element, `subtracted_background`).
    nodes_per_bin : `int`, optional
        For elements rendered with another style than Akima splines (the
        sky frame's NATURAL_SPLINE): spline nodes per bin along each axis
        of the field that resamples the element's rendering (see Notes).
    description : `str`, optional
        Description of the new entry.
    image_is_corrected : `bool`, optional
        Whether ``visit_image``'s pixels are already corrected (the task's
        ``correctedExp``, which keeps the input's ``BackgroundMap``): they
        are then copied as they are instead of having ``skyCorr`` subtracted.

    Returns
    -------
    corrected : `lsst.images.VisitImage`
        A copy whose pixels are ``visit_image - skyCorr.getImage()`` and whose
        ``BackgroundMap`` holds the entries of ``visit_image`` plus ``entry``,
        marked subtracted: the sum of the elements after the restored ones
        (Rubin's "differential_composed": the terms applied after restoring
        the background subtracted before). So ``image + backgrounds[entry]``
        is the image with no background subtracted, and the input is
        ``image + backgrounds[entry] - backgrounds[old]``.

    Raises
    ------
    lsst.skyframes.errors.VisitImageError
        Raised if ``entry`` already exists, or if the first ``restored``
        elements do not cancel the background marked subtracted.

    Notes
    -----
    lsst.images fields interpolate with Akima splines (SciPy's). An
    ``AKIMA_SPLINE`` element (bgModel1, bgModel2) becomes the field over its
    own bins (`~lsst.skyframes.background.BackgroundMI.toSplineField`), which
    renders it to float32 round-off (measured: 1.4e-4 of a 1600 e sky). An
    element of another style (the sky frame, NATURAL_SPLINE by default) would
    render differently through its bins (measured: up to 8.5 e, rms 0.7 e on
    tests/test_visit_images.py's visit), so its full-resolution rendering is
    resampled instead, at ``nodes_per_bin`` nodes per bin along each axis
    (always including the first and last pixel): measured there, with 8 px
    bins, up to 0.34 e and rms 0.02 e with 4 nodes per bin, 1.9 e and 0.14 e
    with 2; one node per pixel reproduces the rendering exactly, at the cost
    of a full-resolution field.
    """
    backgrounds = visit_image.backgrounds
    if entry in backgrounds:
        raise VisitImageError(
            f"The VisitImage of detector {visit_image.detector.id} already has a background {entry!r}; "
            "choose another name for the correction."
        )
    elements = list(skyCorr)
    if not 0 <= restored <= len(elements) - 1:
        raise VisitImageError(
            f"skyCorr has {len(elements)} elements; {restored} restoring the subtracted background leaves "
            "no correction to add."
        )
    previous = backgrounds.subtracted
    if previous is not None and restored:
        undo = BackgroundList(*elements[:restored]).getImage().array
        expected = _render_in_image_units(visit_image, previous)
        if not np.array_equal(undo, -expected):
            raise VisitImageError(
                f"The first {restored} element(s) of skyCorr do not cancel the background "
                f"{previous.name!r} of detector {visit_image.detector.id} (largest difference "
                f"{float(np.abs(undo + expected).max()):.3g}); pass the skyCorr computed from this image."
            )
    fields = [_element_field(element, nodes_per_bin) for element in elements[restored:]]
    correction = fields[0] if len(fields) == 1 else SumField(fields)
    if visit_image.unit is not None:
        # The task's models are in the pixels' unit (whatever the unit of
        # the entry it restored); say so, so readers need no scaling.
        correction = correction * visit_image.unit
    result = visit_image.copy()
    if not image_is_corrected:
        result.image.array[...] = visit_image.image.array - skyCorr.getImage().array
    result.backgrounds.add(entry, correction, description, is_subtracted=True)
    return result
