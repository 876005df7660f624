"""Where SkyCorrectionTask keeps a visit's images between its passes.

The task visits every detector five times (restore and detect, bgModel1, the sky-frame scale,
bgModel2, the mosaics), and each pass is a reduction over the whole focal plane whose result is
applied to every detector, so an image cannot be finished before the next is read. Holding them
all costs about 12 bytes per pixel of the camera (37 GB for LSSTCam). `ScratchImages` instead
writes each image's planes, once restored and object-masked, to uncompressed ``.npy`` files in a
private temporary directory and hands them back one at a time as arrays mapped from those files:
only the detector in hand is resident, the arithmetic is the same float32 arithmetic on the same
values (so results are bit for bit those of the held images), and the files go when the store is
closed. `HeldImages` is the same interface over images the caller already holds in memory.
"""

from __future__ import annotations

__all__ = ["HeldImages", "LazySequence", "ScratchImages"]

import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lsst.images import Image, Mask, MaskedImage


class HeldImages:
    """Images held in memory (the caller's objects, corrected in place)."""

    def __init__(self) -> None:
        self._images: list[MaskedImage] = []

    def add(self, image: MaskedImage) -> None:
        """Keep ``image`` (restored and object-masked) for the later passes."""
        self._images.append(image)

    def __len__(self) -> int:
        return len(self._images)

    def __iter__(self) -> Iterator[MaskedImage]:
        return iter(self._images)

    def final(self, index: int, into: MaskedImage | None = None) -> MaskedImage:
        """Return the image ``index`` as the passes left it (the held object; ``into`` is not used)."""
        return self._images[index]

    def outputs(self, make: Callable[[int], Any]) -> list[Any]:
        """Return ``[make(0), make(1), ...]``, one per image: the images are in memory anyway."""
        return [make(index) for index in range(len(self))]

    def close(self) -> None:
        """Nothing to release: the images are the caller's."""


class ScratchImages:
    """Images kept in uncompressed files, mapped back one at a time.

    Parameters
    ----------
    keepVariance : `bool`
        Also keep the variance planes (only needed to hand back whole
        corrected images; no pass reads them).
    directory : `str`, optional
        Parent of the private temporary directory; default
        `tempfile.gettempdir` (``TMPDIR``).

    Notes
    -----
    Disk use: 4 bytes per pixel for the image, the mask's bytes per pixel
    (one per 8 mask planes), and 4 more with ``keepVariance``. Files are in
    the page cache while there is memory to spare, so a pass reads them at
    memory speed; they are not process memory and are dropped first when
    memory is short.
    """

    def __init__(self, *, keepVariance: bool, directory: str | None = None) -> None:
        self._keepVariance = keepVariance
        self._directory = tempfile.TemporaryDirectory(prefix="skyframes-skyCorr-", dir=directory)
        self._entries: list[dict[str, Any]] = []

    def _path(self, index: int, plane: str) -> Path:
        return Path(self._directory.name) / f"{index}-{plane}.npy"

    def add(self, image: MaskedImage) -> None:
        """Write ``image``'s planes (restored and object-masked) for the later passes."""
        index = len(self._entries)
        np.save(self._path(index, "image"), image.image.array)
        np.save(self._path(index, "mask"), image.mask.array)
        variance = getattr(image, "variance", None)
        keepVariance = self._keepVariance and variance is not None
        if keepVariance:
            np.save(self._path(index, "variance"), variance.array)
        self._entries.append(
            {
                "bbox": image.bbox,
                "unit": image.image.unit,
                "schema": image.mask.schema,
                "varianceUnit": variance.unit if keepVariance else None,
                "hasVariance": keepVariance,
            }
        )

    def __len__(self) -> int:
        return len(self._entries)

    def _open(self, index: int, mode: str | None) -> MaskedImage:
        entry = self._entries[index]
        load = {"mmap_mode": mode} if mode else {}
        image = Image(np.load(self._path(index, "image"), **load), bbox=entry["bbox"], unit=entry["unit"])
        mask = Mask(np.load(self._path(index, "mask"), **load), schema=entry["schema"], bbox=entry["bbox"])
        if entry["hasVariance"]:
            array = np.load(self._path(index, "variance"), **load)
            unit = entry["varianceUnit"]
        else:
            # No pass reads it: a read-only stand-in that costs no memory
            # (MaskedImage would otherwise allocate a plane of ones).
            array = np.broadcast_to(np.float32(1.0), image.array.shape)
            unit = None if image.unit is None else image.unit**2
        return MaskedImage(image, mask=mask, variance=Image(array, bbox=entry["bbox"], unit=unit))

    def __iter__(self) -> Iterator[MaskedImage]:
        # Writeable maps: what a pass subtracts in place is what the next
        # pass reads. Each map is released when the caller lets go of it.
        for index in range(len(self._entries)):
            yield self._open(index, "r+")

    def final(self, index: int, into: MaskedImage | None = None) -> MaskedImage:
        """Return image ``index`` as the passes left it, read into memory.

        Parameters
        ----------
        index : `int`
            Position of the image in the order it was added.
        into : `lsst.images.MaskedImage`, optional
            The image as it was read (e.g. a ``VisitImage``, with everything
            beside the pixels): its planes are overwritten with the stored
            ones (the variance only if it was kept) and it is returned.
        """
        stored = self._open(index, None)
        if into is None:
            return stored
        into.image.array[...] = stored.image.array
        into.mask.array[...] = stored.mask.array
        if self._entries[index]["hasVariance"]:
            into.variance.array[...] = stored.variance.array
        return into

    def outputs(self, make: Callable[[int], Any]) -> LazySequence:
        """Return a sequence whose item ``index`` is ``make(index)``, made when asked for."""
        return LazySequence(len(self), make)

    def close(self) -> None:
        """Delete the files."""
        self._directory.cleanup()


class LazySequence(Sequence):
    """A sequence whose items are made when asked for (one corrected image at a time).

    Parameters
    ----------
    length : `int`
        Number of items.
    make : callable
        ``make(index)`` returns item ``index``; it is called on every access.
    """

    def __init__(self, length: int, make: Callable[[int], Any]) -> None:
        self._length = length
        self._make = make

    def __len__(self) -> int:
        return self._length

    def __getitem__(self, index: int) -> Any:  # type: ignore[override]
        if not -self._length <= index < self._length:
            raise IndexError(f"index {index} out of range for {self._length} items")
        return self._make(index % self._length)
