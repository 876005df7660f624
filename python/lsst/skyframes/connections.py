"""Connections that several PipelineTasks share."""

from __future__ import annotations

__all__ = ["camera_connection"]

from lsst.pipe.base import connectionTypes as cT


def camera_connection() -> cT.PrerequisiteInput:
    """Return the prerequisite ``camera`` calibration connection.

    The camera (`~lsst.skyframes.camera.Camera`, storage class ``SkyCamera``)
    is certified into ``<instrument>/calib`` with an unbounded validity range
    by `~lsst.skyframes.repo.register_camera`.

    Returns
    -------
    connection : `lsst.pipe.base.connectionTypes.PrerequisiteInput`
        A new connection, to assign to a connections class attribute.
    """
    return cT.PrerequisiteInput(
        name="camera",
        doc="Camera geometry.",
        storageClass="SkyCamera",
        dimensions=("instrument",),
        isCalibration=True,
    )
