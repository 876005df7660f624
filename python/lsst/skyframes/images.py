"""Uniform access to the pixel planes of the image types skyframes accepts."""

from __future__ import annotations

__all__ = ["image_and_mask", "require_same_bbox"]

from typing import Any

from lsst.images import Box, Image, Mask, MaskedImage

from .errors import BoxMismatchError


def image_and_mask(image: Any) -> tuple[Image, Mask | None]:
    """Return the image plane and mask (if any) of an image-like object.

    Parameters
    ----------
    image : `lsst.images.MaskedImage`, `lsst.images.VisitImage` or `lsst.images.Image`
        What a user passes where afw code would take an exposure, a masked
        image or an image.

    Returns
    -------
    pixels : `lsst.images.Image`
        The image plane (a view, not a copy).
    mask : `lsst.images.Mask` or `None`
        The mask plane, or `None` for a plain image.

    Raises
    ------
    TypeError
        Raised for any other type.
    """
    if isinstance(image, MaskedImage):  # VisitImage is a MaskedImage
        return image.image, image.mask
    if isinstance(image, Image):
        return image, None
    raise TypeError(
        f"Expected an lsst.images MaskedImage, VisitImage or Image, got {type(image).__name__}; "
        "wrap numpy arrays with lsst.images.Image(array) or MaskedImage(Image(array), mask_schema=...)."
    )


def require_same_bbox(first: Box, second: Box, what: str) -> None:
    """Raise `BoxMismatchError` naming ``what`` if two boxes differ."""
    if first != second:
        raise BoxMismatchError(
            f"{what}: bounding boxes differ ({first} vs {second}); both must cover the same pixels "
            "(use a sky frame made for this detector, or cut the image to the sky frame's box)."
        )
