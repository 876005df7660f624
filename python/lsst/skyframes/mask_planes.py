"""The mask planes skyframes creates, in afw's default bit order."""

from __future__ import annotations

__all__ = ["AFW_MASK_PLANES", "LEGACY_PLANE_ALIASES", "default_mask_schema"]

from lsst.images import MaskPlane, MaskSchema

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
