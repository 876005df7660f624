"""The mask planes skyframes creates, in afw's default bit order."""

from __future__ import annotations

__all__ = [
    "AFW_MASK_PLANES",
    "DETECTION_PLANES",
    "LEGACY_PLANE_ALIASES",
    "default_mask_schema",
    "mask_from_afw_bits",
    "mask_to_afw_bits",
    "split_detection_planes",
]

from collections.abc import Iterable

import numpy as np
from astropy.io import fits

from lsst.images import Mask, MaskPlane, MaskSchema

AFW_MASK_PLANES: dict[str, str] = {
    "BAD": "Bad pixel in the instrument.",
    "SAT": "Pixel was saturated.",
    "INTRP": "Pixel value was interpolated.",
    "CR": "A cosmic ray affected this pixel.",
    "EDGE": "Pixel was too close to the edge for detection.",
    "DETECTED": "Pixel was part of a detected source.",
    "DETECTED_NEGATIVE": "Pixel was part of a detected negative source.",
    "SUSPECT": "Pixel was close to the saturation level.",
    "NO_DATA": "No data was available for this pixel.",
}
"""Plane names and descriptions, in the bit order afw assigns by default."""

DETECTION_PLANES: tuple[str, ...] = ("DETECTED", "DETECTED_NEGATIVE")
"""The planes object detection sets (positive and negative footprints)."""


def split_detection_planes(planes: Iterable[str]) -> tuple[list[str], list[str]]:
    """Split mask-plane names into the others and the detection planes (`DETECTION_PLANES`).

    Parameters
    ----------
    planes : iterable of `str`
        Plane names, e.g. a ``background.mask`` list.

    Returns
    -------
    others, detection : `list` [`str`]
        The names not in `DETECTION_PLANES`, and those in it, each in the
        given order.
    """
    planes = list(planes)
    return (
        [name for name in planes if name not in DETECTION_PLANES],
        [name for name in planes if name in DETECTION_PLANES],
    )


LEGACY_PLANE_ALIASES: dict[str, str] = {
    "SAT": "SATURATED",
    "INTRP": "INTERPOLATED",
    "CR": "COSMIC_RAY",
    "EDGE": "DETECTION_EDGE",
}
"""afw plane names (as used in configs) mapped to the names lsst.images gives
the same planes in visit images; lookups by an afw name fall back to these.
"""


def default_mask_schema() -> MaskSchema:
    """Return a mask schema with afw's default planes.

    Returns
    -------
    schema : `lsst.images.MaskSchema`
        Schema holding the planes of `AFW_MASK_PLANES` in afw's order.
    """
    return MaskSchema([MaskPlane(name, doc) for name, doc in AFW_MASK_PLANES.items()])


def mask_to_afw_bits(mask: Mask) -> tuple[np.ndarray, list[tuple[str, object]]]:
    """Pack an lsst.images mask into afw's int32 layout.

    Parameters
    ----------
    mask : `lsst.images.Mask`
        Mask to pack; afw's default planes keep afw's bit numbers.

    Returns
    -------
    packed : `numpy.ndarray`
        int32 array, one bit per plane.
    cards : `list` [`tuple`]
        ``("MP_<NAME>", bit)`` header cards naming the planes, as afw writes them.

    Raises
    ------
    ValueError
        Raised if there are more than 31 planes.
    """
    names = [name for name in AFW_MASK_PLANES if name in mask.schema.names]
    names += sorted(set(mask.schema.names) - set(names))
    if len(names) > 31:
        raise ValueError(f"Cannot write {len(names)} mask planes into an afw int32 mask (31 at most).")
    packed = np.zeros(mask.bbox.shape, dtype=np.int32)
    for bit, name in enumerate(names):
        packed |= mask.get(name).astype(np.int32) << bit
    return packed, [(f"MP_{name}", bit) for bit, name in enumerate(names)]


def mask_from_afw_bits(data: np.ndarray, header: fits.Header, yx0: tuple[int, int] = (0, 0)) -> Mask:
    """Unpack an afw-style integer mask into an lsst.images Mask.

    Parameters
    ----------
    data : `numpy.ndarray`
        Integer mask array, one bit per plane.
    header : `astropy.io.fits.Header`
        Header whose ``MP_<NAME> = bit`` cards name the planes; without any,
        afw's default plane order is assumed.
    yx0 : `tuple` [`int`, `int`], optional
        Origin of the mask's bounding box.

    Returns
    -------
    mask : `lsst.images.Mask`
    """
    bits = {key[3:]: int(value) for key, value in header.items() if key.startswith("MP_")}
    if not bits:
        bits = {name: bit for bit, name in enumerate(AFW_MASK_PLANES)}
    ordered = sorted(bits.items(), key=lambda item: item[1])
    schema = MaskSchema([MaskPlane(name, AFW_MASK_PLANES.get(name, "")) for name, _ in ordered])
    mask = Mask(0, schema=schema, shape=data.shape, yx0=yx0)
    as_int = data.astype(np.int64)
    for name, bit in ordered:
        mask.set(name, ((as_int >> bit) & 1).astype(bool))
    return mask
