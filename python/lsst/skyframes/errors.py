"""Exceptions raised by skyframes.

Every error names the input at fault, what is wrong with it and how to fix it.
Each class also derives from the built-in exception a caller would naturally
catch (`ValueError`, `OSError`, ...), so generic handlers keep working.
"""

from __future__ import annotations

__all__ = [
    "BackgroundFileError",
    "BoxMismatchError",
    "ConfigMismatchError",
    "InputNotFoundError",
    "MissingMetadataError",
    "NoDataError",
    "NotFoundError",
    "ProblemTooLargeError",
    "SkyFramesError",
    "UndersampledError",
    "UnsupportedStyleError",
    "UsageError",
    "ValidityRangeError",
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
