"""Butler formatters for the storage classes skyframes declares.

The storage classes and the formatter each uses are declared in the repo seed
config, ``config/butler-seed.yaml``:

- ``SkyBackgroundList``: `lsst.skyframes.background.BackgroundList`,
  `BackgroundListFormatter` (afw's BackgroundList FITS layout);
- ``SkyFocalPlaneBackground``: ``lsst.skyframes.focal_plane.FocalPlaneBackground``,
  `FocalPlaneBackgroundFormatter` (FITS);
- ``SkyObjectMask``: `lsst.skyframes.object_mask.ObjectMask`,
  `ObjectMaskFormatter` (FITS);
- ``SkyCamera``: `lsst.skyframes.camera.Camera`, `CameraFormatter` (the YAML
  camera file).

The FITS formatters resolve their python type from the storage class when a
dataset is read (so this module does not import the background modules);
`CameraFormatter` needs `~lsst.skyframes.camera.Camera` and imports it.
"""

from __future__ import annotations

__all__ = [
    "BackgroundListFormatter",
    "CameraFormatter",
    "FitsMethodFormatter",
    "FocalPlaneBackgroundFormatter",
    "ObjectMaskFormatter",
]

from typing import Any, ClassVar

import yaml

from lsst.daf.butler import FormatterV2
from lsst.resources import ResourcePath

from .camera import Camera


class FitsMethodFormatter(FormatterV2):
    """Formatter for types with ``obj.writeFits(path)`` and
    ``type.readFits(path)``, afw-style.

    The type to read is the python type of the dataset's storage class.
    """

    default_extension: ClassVar[str] = ".fits"
    supported_extensions: ClassVar[frozenset[str]] = frozenset({".fits"})
    can_read_from_local_file: ClassVar[bool] = True
    # Neither type takes read parameters.
    unsupported_parameters: ClassVar[None] = None

    def read_from_local_file(self, path: str, component: str | None = None, expected_size: int = -1) -> Any:
        # Resolving the storage class's pytype imports the module only now.
        pytype = self.file_descriptor.storageClass.pytype
        return pytype.readFits(path)

    def write_local_file(self, in_memory_dataset: Any, uri: ResourcePath) -> None:
        # The datastore hands us a fresh temporary local path and moves the
        # file into place afterwards, so the write is atomic.
        in_memory_dataset.writeFits(uri.ospath)


class BackgroundListFormatter(FitsMethodFormatter):
    """Formatter for `~lsst.skyframes.background.BackgroundList`, in afw's
    BackgroundList FITS layout.
    """


class FocalPlaneBackgroundFormatter(FitsMethodFormatter):
    """Formatter for ``lsst.skyframes.focal_plane.FocalPlaneBackground``."""


class ObjectMaskFormatter(FitsMethodFormatter):
    """Formatter for `~lsst.skyframes.object_mask.ObjectMask` (``cpSkyObjectMask``), FITS."""


class CameraFormatter(FormatterV2):
    """Formatter for `~lsst.skyframes.camera.Camera`: the YAML camera file."""

    default_extension: ClassVar[str] = ".yaml"
    supported_extensions: ClassVar[frozenset[str]] = frozenset({".yaml"})
    can_read_from_uri: ClassVar[bool] = True
    unsupported_parameters: ClassVar[None] = None

    def read_from_uri(self, uri: ResourcePath, component: str | None = None, expected_size: int = -1) -> Any:
        return Camera.from_json_dict(yaml.safe_load(uri.read()), source=str(uri))

    def to_bytes(self, in_memory_dataset: Any) -> bytes:
        if not isinstance(in_memory_dataset, Camera):
            raise TypeError(f"CameraFormatter writes Camera objects, not {type(in_memory_dataset).__name__}.")
        return yaml.safe_dump(in_memory_dataset.to_json_dict(), sort_keys=False).encode()
