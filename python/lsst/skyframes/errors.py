"""Exceptions raised by skyframes.

Every error names the input at fault, what is wrong with it and how to fix it.
Each class also derives from the built-in exception a caller would naturally
catch (`ValueError`, `OSError`, ...), so generic handlers keep working.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

# The two exceptions a PipelineTask raises to tell the executor how to treat a
# failed quantum must derive from pipe_base's classes.
from lsst.pipe.base import AlgorithmError, RepeatableQuantumError

# A storage-class clash is pipe_base's incompatible dataset type, named with its fix.
from lsst.pipe.base.pipeline_graph import IncompatibleDatasetTypeError

__all__ = [
    "BackgroundEntryError",
    "BackgroundFileError",
    "BoxMismatchError",
    "CameraConflictError",
    "CameraError",
    "CameraLookupError",
    "CertificationConflictError",
    "ConfigMismatchError",
    "DatasetConflictError",
    "ExposureConflictError",
    "FocalPlaneCoverageError",
    "IngestError",
    "InputNotFoundError",
    "InstrumentCameraError",
    "KernelCacheError",
    "MissingMetadataError",
    "MissingSkyFrameError",
    "NoDataError",
    "NotFoundError",
    "NotRegisteredError",
    "ObjectMaskFileError",
    "ProblemTooLargeError",
    "RepoConfigError",
    "SkyFramesError",
    "StorageClassClashError",
    "UndersampledError",
    "UnsupportedStyleError",
    "UnusableImageError",
    "UsageError",
    "ValidityRangeError",
    "VisitImageError",
]


class SkyFramesError(Exception):
    """Base class of every exception raised deliberately by skyframes."""


class UndersampledError(SkyFramesError, ValueError):
    """Too few valid points for the requested interpolation style while the
    undersample style is ``THROW_EXCEPTION``.
    """


class UnsupportedStyleError(SkyFramesError, ValueError):
    """An interpolation, undersample or approximation style that is unknown or
    not implemented (periodic splines, ``INCREASE_NXNYSAMPLE``, Chebyshev
    approximation, ``UNKNOWN``).
    """


class BoxMismatchError(SkyFramesError, ValueError):
    """Images or backgrounds whose bounding boxes must agree do not."""


class ConfigMismatchError(SkyFramesError, ValueError):
    """Inputs made with a configuration that differs from the one the step
    reading them is configured with (e.g. the sky-frame bins of
    cpSkySubtractBackground and cpSkyCombine).
    """


class NoDataError(SkyFramesError, ValueError):
    """An input holds no usable data: empty lists, no finite samples, a sky
    frame that is zero everywhere, a non-finite scale.
    """


class MissingMetadataError(SkyFramesError, ValueError):
    """A header or metadata entry that the reader needs is absent or has the
    wrong type.
    """


class InputNotFoundError(SkyFramesError, FileNotFoundError):
    """A file or repository named as input does not exist."""


class BackgroundFileError(SkyFramesError, OSError):
    """A background file is missing, truncated, corrupt or not in the
    BackgroundList layout.
    """


class ObjectMaskFileError(SkyFramesError, OSError):
    """An object-mask file (``cpSkyObjectMask``) is missing, truncated,
    corrupt or not in the `~lsst.skyframes.object_mask.ObjectMask` layout.
    """


class ProblemTooLargeError(SkyFramesError, MemoryError):
    """A computation would need more memory than it is configured to use;
    the message gives the estimate and the settings that shrink it.
    """


class NotFoundError(SkyFramesError, LookupError):
    """A collection that the caller named does not exist in the repository;
    the message says how to list those that do. (A missing file or
    repository is an `InputNotFoundError`.)
    """


class ValidityRangeError(SkyFramesError, ValueError):
    """A calibration validity range that is not a time, or that is empty or
    inverted (its end not after its beginning).
    """


class UsageError(SkyFramesError, ValueError):
    """A command-line argument that cannot be understood."""


class CameraError(SkyFramesError, ValueError):
    """A camera description is malformed or inconsistent."""


class CameraLookupError(SkyFramesError, KeyError):
    """A detector or physical filter is not part of the camera."""

    def __str__(self) -> str:
        # KeyError would quote the message; keep it readable.
        return str(self.args[0]) if self.args else ""


class CertificationConflictError(SkyFramesError, ValueError):
    """Other datasets are already certified for an overlapping validity range."""


class IngestError(SkyFramesError, ValueError):
    """A file that cannot be ingested (unreadable, or missing or bad header keys)."""


class DatasetConflictError(IngestError):
    """A dataset with the same data ID but other content is already in the RUN collection."""


class ExposureConflictError(IngestError):
    """The exposure id is already defined with another start time, filter or exposure time."""


class UnusableImageError(IngestError, NoDataError):
    """An image without a single usable pixel (all NaN, or fully masked)."""


class InstrumentCameraError(SkyFramesError, ValueError):
    """The camera of a `SkyFramesInstrument` cannot be found or does not fit."""


class KernelCacheError(SkyFramesError, OSError):
    """No writeable directory for the compiled numba kernels' cache."""


class RepoConfigError(SkyFramesError, ValueError):
    """A repository exists at the requested root with a different config, or
    the root holds something other than a repository.
    """


class CameraConflictError(SkyFramesError, ValueError):
    """A different camera is already registered under the same instrument name."""


class StorageClassClashError(SkyFramesError, IncompatibleDatasetTypeError):
    """A dataset type that a skyframes task reads or writes is registered in
    the repository with a storage class that daf_butler cannot convert to or
    from the task's (an afw ``Background`` ``skyCorr``, an ``ExposureF``
    ``sky``...).

    Raised while the quantum graph is built, before any quantum runs; the
    message names each dataset type, both storage classes and the
    ``-c LABEL:connections.NAME=...`` overrides that avoid the clash.  A
    `~lsst.pipe.base.pipeline_graph.IncompatibleDatasetTypeError` too, which
    pipe_base would otherwise raise with a generic message.

    Parameters
    ----------
    message : `str`
        What is wrong and how to fix it.
    clashes : sequence of `tuple` [`str`, `str`, `str`]
        ``(dataset type, registered storage class, task storage class)``.
    """

    def __init__(self, message: str, clashes: Sequence[tuple[str, str, str]]) -> None:
        super().__init__(message)
        self.clashes = tuple(tuple(c) for c in clashes)


class NotRegisteredError(SkyFramesError, LookupError):
    """An instrument or its camera is not registered in the repository."""


class MissingSkyFrameError(NoDataError, RepeatableQuantumError):
    """Sky frames (or templates) that ``doSky`` needs are missing or too few.

    Raised when no detector of a visit has one (a detector lacking one while
    others have theirs is skipped, as in the reference) and when a
    detector's ``sky_components`` hold fewer than ``nComponents`` templates.

    A `~lsst.pipe.base.RepeatableQuantumError` too: running the quantum
    again will not help until the calibration is certified.

    Parameters
    ----------
    message : `str`
        What is wrong and how to fix it.
    detectorIds : sequence of `int`
        The detectors concerned.
    """

    def __init__(self, message: str, detectorIds: Sequence[int]) -> None:
        super().__init__(message)
        self.detectorIds = tuple(int(d) for d in detectorIds)


class FocalPlaneCoverageError(NoDataError, AlgorithmError):
    """No bin of a visit's focal-plane background has enough good pixels.

    An `~lsst.pipe.base.AlgorithmError`: `SkyCorrectionTask.runQuantum`
    reports it the way pipe_base reports annotated partial outputs
    (`~lsst.pipe.base.AnnotatedPartialOutputsError`), with `metadata`
    recorded in the task metadata under ``failure``.

    Parameters
    ----------
    message : `str`
        What is wrong and how to fix it.
    model : `str`
        Which model failed (``bgModel1`` or ``bgModel2``).
    goodPixels : mapping [`int`, `int`]
        Good (unmasked, finite) pixels each detector contributed.
    threshold : `float`
        Good pixels a bin needs (``minFrac`` times the pixels of a bin).
    """

    def __init__(self, message: str, model: str, goodPixels: Mapping[int, int], threshold: float) -> None:
        super().__init__(message)
        self.model = model
        self.goodPixels = {int(k): int(v) for k, v in goodPixels.items()}
        self.threshold = float(threshold)

    @property
    def metadata(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "threshold": self.threshold,
            "goodPixels": {str(k): v for k, v in self.goodPixels.items()},
        }


class VisitImageError(SkyFramesError, ValueError):
    """An lsst.images ``VisitImage`` lacks what skyframes needs of it.

    For example an image passed without a camera whose detector cannot be
    described as a `~lsst.skyframes.camera.DetectorGeometry` (a mirrored or
    non-linear pixel to focal-plane transform), or a plain ``MaskedImage``
    where the detector must come from the image.
    """


class BackgroundEntryError(VisitImageError, KeyError):
    """A ``VisitImage``'s ``BackgroundMap`` has no entry of the requested name.

    Parameters
    ----------
    message : `str`
        What is wrong and how to fix it (the entries present, the config
        field to set).
    entry : `str`
        The entry asked for.
    present : sequence of `str`
        The entries the map holds.
    """

    def __init__(self, message: str, entry: str, present: Sequence[str]) -> None:
        super().__init__(message)
        self.entry = entry
        self.present = tuple(present)

    def __str__(self) -> str:
        # KeyError would quote the message; show it as written.
        return str(self.args[0])
