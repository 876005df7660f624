"""What object masking changed in one image, kept compactly between two build steps.

cpSkyImage masks the objects of a processed image (`MaskObjectsTask`: mask
planes set, object pixels replaced by a smooth background) and
cpSkySubtractBackground bins the result.  cp_pipe persists the whole masked
image between the two (``cpSkyMaskedIsrExp``: image, mask and variance, a
compressed copy of the input); here cpSkyImage writes only what masking
changed, an `ObjectMask`, and cpSkySubtractBackground reads the input's image
plane again and applies it (`ObjectMask.applyTo`), which gives back the masked
image bit for bit.  An `ObjectMask` holds the mask as it is after masking and
the values of the pixels masking replaced; the variance, which no later step
reads, is not kept.

File layout (FITS, written whole or not at all):

- primary HDU, no data: ``OMASKVER`` (`OBJECT_MASK_SCHEMA_VERSION`), the
  image's origin as afw records it (``LTV1``/``LTV2`` and the ``A`` linear
  WCS), ``MASKTYPE`` (the mask's integer type), ``MASKPLNS`` (its number of
  planes) and, for plane ``n``, ``MASKPLANE<n>`` (its name) and
  ``MASKDOC<n>`` (its description; HIERARCH cards);
- ``MASK``: the lsst.images mask array, one image per element of its last
  axis, RICE_1 tiles of 64 rows (lossless, ~20 x smaller, fast both ways);
- ``REPLACED``: 1 where masking replaced the pixel, else 0 (uint8, RICE_1);
- ``VALUES``: the replaced pixels' values in row-major order (float32, not
  compressed).
"""

from __future__ import annotations

__all__ = ["OBJECT_MASK_SCHEMA_VERSION", "ObjectMask"]

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
from astropy.io import fits

from lsst.images import Box, Image, Mask, MaskedImage, MaskPlane, MaskSchema

from .errors import BoxMismatchError, ObjectMaskFileError
from .images import image_and_mask
from .persistence import origin_cards, read_fits_safely, write_hdus_atomically
from .statistics import bad_pixel_mask

OBJECT_MASK_SCHEMA_VERSION = 1
"""Version of the file layout `ObjectMask.writeFits` writes and `ObjectMask.readFits` reads."""

# Tiles of 64 full rows: one call into the codec per 64 rows instead of per row.
_TILE_ROWS = 64


class ObjectMask:
    """The mask of an image after object masking, and the pixels it replaced.

    Parameters
    ----------
    mask : `lsst.images.Mask`
        The mask after masking (its planes as masking left them).
    replaced : `numpy.ndarray`
        Boolean array of the mask's shape: the pixels masking replaced.
    values : `numpy.ndarray`
        float32 values of the replaced pixels, in row-major order.

    Raises
    ------
    lsst.skyframes.errors.BoxMismatchError
        Raised if ``replaced`` is not of the mask's shape or ``values`` does
        not hold one value per replaced pixel.
    """

    def __init__(self, mask: Mask, replaced: np.ndarray, values: np.ndarray) -> None:
        replaced = np.asarray(replaced, dtype=bool)
        values = np.asarray(values, dtype=np.float32)
        if replaced.shape != mask.bbox.shape:
            raise BoxMismatchError(
                f"ObjectMask: the replaced-pixel array has shape {replaced.shape} but the mask covers "
                f"{mask.bbox} (shape {mask.bbox.shape}); both must describe the same image."
            )
        n_replaced = int(np.count_nonzero(replaced))
        if values.shape != (n_replaced,):
            raise BoxMismatchError(
                f"ObjectMask: {n_replaced} pixels are marked replaced but {values.size} values were given; "
                "give one value per replaced pixel, in row-major order."
            )
        self._mask = mask
        self._replaced = replaced
        self._values = values

    @classmethod
    def fromMasking(cls, before: np.ndarray, masked: MaskedImage) -> ObjectMask:
        """Record what masking changed in an image.

        Parameters
        ----------
        before : `numpy.ndarray`
            A copy of the image plane taken before masking.
        masked : `lsst.images.MaskedImage` or `lsst.images.VisitImage`
            The same image after masking.

        Returns
        -------
        objectMask : `ObjectMask`
            ``masked``'s mask, and the pixels whose value differs from
            ``before`` bit for bit (so a NaN replaced by a value, a value
            replaced by NaN and a replacement by an equal value are all
            exact).

        Raises
        ------
        lsst.skyframes.errors.BoxMismatchError
            Raised if ``before`` is not of ``masked``'s shape.
        """
        pixels, mask = image_and_mask(masked)
        if mask is None:
            raise TypeError(f"ObjectMask.fromMasking needs a masked image, not a {type(masked).__name__}.")
        after = pixels.array
        if before.shape != after.shape or before.dtype != after.dtype:
            raise BoxMismatchError(
                f"ObjectMask.fromMasking: the image before masking is {before.dtype} of shape "
                f"{before.shape}, after it {after.dtype} of shape {after.shape}; pass a copy of the same "
                "image's plane."
            )
        # Compare bit patterns: exact for NaN and signed zeros, which == is not.
        as_bits = np.dtype(f"u{after.dtype.itemsize}")
        replaced = before.view(as_bits) != after.view(as_bits)
        return cls(mask.copy(), replaced, after[replaced])

    @property
    def bbox(self) -> Box:
        """The pixels this object mask covers (`lsst.images.Box`)."""
        return self._mask.bbox

    @property
    def mask(self) -> Mask:
        """The mask after object masking (`lsst.images.Mask`)."""
        return self._mask

    @property
    def replaced(self) -> np.ndarray:
        """The pixels masking replaced (boolean `numpy.ndarray`)."""
        return self._replaced

    @property
    def values(self) -> np.ndarray:
        """The replaced pixels' values, row-major (float32 `numpy.ndarray`)."""
        return self._values

    def applyTo(self, image: Image, keepPlanes: Sequence[str] = ()) -> MaskedImage:
        """Turn the image as it was before masking into the masked image.

        Parameters
        ----------
        image : `lsst.images.Image`
            The image plane before masking (e.g. the ``image`` component of
            ``post_isr_image``); its replaced pixels are overwritten in place.
        keepPlanes : sequence of `str`, optional
            Replaced pixels flagged in any of these mask planes keep the
            image's own values (e.g. the detection planes, for a combination
            that decides for itself which detections to leave out).

        Returns
        -------
        masked : `lsst.images.MaskedImage`
            ``image`` with this object mask's mask.  Its variance is 1
            everywhere: no step after masking reads it.

        Raises
        ------
        lsst.skyframes.errors.BoxMismatchError
            Raised if ``image`` does not cover this object mask's pixels.
        """
        if image.bbox != self.bbox:
            raise BoxMismatchError(
                f"ObjectMask.applyTo: the image covers {image.bbox} but the object mask {self.bbox}; "
                "apply an object mask to the image it was made from (same exposure and detector)."
            )
        replaced, values = self._replaced, self._values
        if keepPlanes:
            kept = bad_pixel_mask(self._mask, list(keepPlanes))
            values = values[~kept[replaced]]
            replaced = replaced & ~kept
        image.array[replaced] = values
        return MaskedImage(image, mask=self._mask)

    def writeFits(self, path: str | os.PathLike[str]) -> None:
        """Write the object mask to a FITS file (layout in the module's docstring), atomically.

        Parameters
        ----------
        path : `str` or path-like
            Destination; the file appears whole or not at all.
        """
        schema = self._mask.schema
        header = fits.Header()
        header["OMASKVER"] = (OBJECT_MASK_SCHEMA_VERSION, "skyframes ObjectMask file layout")
        for key, value in origin_cards(self.bbox):
            header[key] = value
        header["MASKTYPE"] = np.dtype(schema.dtype).name
        header["MASKPLNS"] = len(schema)
        for index, plane in enumerate(schema):
            if plane is not None:
                header[f"HIERARCH MASKPLANE{index}"] = plane.name
                header[f"HIERARCH MASKDOC{index}"] = plane.description
        planes = np.ascontiguousarray(np.moveaxis(self._mask.array, -1, 0))
        height, width = self.bbox.shape
        rows = max(1, min(_TILE_ROWS, height))
        hdus = [
            fits.PrimaryHDU(header=header),
            fits.CompImageHDU(planes, name="MASK", compression_type="RICE_1", tile_shape=(1, rows, width)),
            fits.CompImageHDU(
                self._replaced.view(np.uint8),
                name="REPLACED",
                compression_type="RICE_1",
                tile_shape=(rows, width),
            ),
            fits.ImageHDU(self._values, name="VALUES"),
        ]
        write_hdus_atomically(hdus, path)

    @classmethod
    def readFits(cls, path: str | os.PathLike[str]) -> ObjectMask:
        """Read an object mask written by `writeFits`.

        Parameters
        ----------
        path : `str` or path-like
            The file.

        Returns
        -------
        objectMask : `ObjectMask`

        Raises
        ------
        lsst.skyframes.errors.ObjectMaskFileError
            Raised if the file is missing, truncated or corrupt, has a header
            claiming more data than it holds, has another ``OMASKVER``, or
            lacks a key or an HDU; the message names the file.
        """
        path = os.fspath(path)
        return read_fits_safely(
            path,
            lambda hdul: cls._from_hdus(path, hdul),
            ObjectMaskFileError,
            failure="Cannot read ObjectMask file {path}: {err}",
            not_found="ObjectMask file not found: {path}",
        )

    @classmethod
    def _from_hdus(cls, path: str, hdul: fits.HDUList) -> ObjectMask:
        header = hdul[0].header
        version = header.get("OMASKVER")
        if version != OBJECT_MASK_SCHEMA_VERSION:
            raise ObjectMaskFileError(
                f"{path}: OMASKVER is {version!r}; this version of skyframes reads ObjectMask files of "
                f"layout {OBJECT_MASK_SCHEMA_VERSION} (written by ObjectMask.writeFits)."
                if version is not None
                else f"{path} has no OMASKVER key in its primary header; it was not written by "
                "ObjectMask.writeFits."
            )
        for name in ("MASK", "REPLACED", "VALUES"):
            if name not in hdul:
                raise ObjectMaskFileError(f"{path} has no {name} HDU; it is not a complete ObjectMask file.")
        schema = MaskSchema(
            [
                MaskPlane(header[key], header.get(f"MASKDOC{index}", ""))
                if (key := f"MASKPLANE{index}") in header
                else None
                for index in range(int(_required(path, header, "MASKPLNS")))
            ],
            dtype=_required(path, header, "MASKTYPE"),
        )
        yx0 = (-int(_required(path, header, "LTV2")), -int(_required(path, header, "LTV1")))
        planes = hdul["MASK"].data
        if planes is None or planes.ndim != 3 or planes.shape[0] != schema.mask_size:
            raise ObjectMaskFileError(
                f"{path}: the MASK HDU holds {None if planes is None else planes.shape}, not "
                f"{schema.mask_size} mask image(s) as MASKPLNS and MASKTYPE say."
            )
        mask = Mask(np.moveaxis(planes, 0, -1), schema=schema, yx0=yx0)
        replaced = hdul["REPLACED"].data
        values = hdul["VALUES"].data
        try:
            return cls(
                mask,
                np.zeros(mask.bbox.shape, bool) if replaced is None else replaced != 0,
                np.zeros(0, np.float32) if values is None else values,
            )
        except BoxMismatchError as err:
            raise ObjectMaskFileError(f"{path}: {err}") from err


def _required(path: str, header: fits.Header, key: str) -> Any:
    if key not in header:
        raise ObjectMaskFileError(
            f"{path} lacks the {key} key in its primary header; it is not an ObjectMask file."
        )
    return header[key]
