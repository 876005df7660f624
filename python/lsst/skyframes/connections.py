"""Connections that several PipelineTasks share, and the storage-class check
every skyframes PipelineTask gets at graph building.

Importing this module (every skyframes PipelineTask module does) makes
`lsst.pipe.base.pipeline_graph.PipelineGraph.resolve` run
`check_storage_classes` first; see its notes for why.
"""

from __future__ import annotations

__all__ = ["StorageClassClash", "camera_connection", "check_storage_classes", "storage_class_clashes"]

import dataclasses
import functools
import inspect
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from lsst.daf.butler import DatasetType, MissingDatasetTypeError, Registry, StorageClassFactory
from lsst.pipe.base import connectionTypes as cT
from lsst.pipe.base.pipeline_graph import PipelineGraph, ReadEdge, TaskNode, WriteEdge

from .errors import StorageClassClashError

# Tasks whose connections the check covers: those of this package.
_PACKAGE_PREFIX = "lsst.skyframes."

# Suffix of the dataset type name the message proposes in place of a taken one.
_RENAME_SUFFIX = "_skyframes"


def camera_connection(*, optional: bool = False) -> cT.PrerequisiteInput:
    """Return the prerequisite ``camera`` calibration connection.

    The camera (`~lsst.skyframes.camera.Camera`, storage class ``SkyCamera``)
    is certified into ``<instrument>/calib`` with an unbounded validity range
    by `~lsst.skyframes.repo.register_camera`.

    Parameters
    ----------
    optional : `bool`, optional
        Whether a quantum may run without it (``minimum=0``): for a task that
        can take the focal-plane geometry from its inputs instead (the
        detectors attached to lsst.images VisitImages), so that a
        repository with no ``camera`` dataset still builds a graph.

    Returns
    -------
    connection : `lsst.pipe.base.connectionTypes.PrerequisiteInput`
        A new connection, to assign to a connections class attribute.
    """
    doc = "Camera geometry."
    if optional:
        doc = "Camera geometry; without one, the detectors attached to the input VisitImages."
    return cT.PrerequisiteInput(
        name="camera",
        doc=doc,
        storageClass="SkyCamera",
        dimensions=("instrument",),
        isCalibration=True,
        minimum=0 if optional else 1,
    )


@dataclasses.dataclass(frozen=True)
class StorageClassClash:
    """A connection of a skyframes task whose dataset type is registered
    with a storage class daf_butler cannot convert.

    Attributes
    ----------
    dataset_type : `str`
        Parent dataset type name.
    registered : `str`
        Storage class in the repository.
    task_label : `str`
        Label of the task in the pipeline.
    task_class : `str`
        Fully-qualified task class name.
    connection : `str`
        Connection name (the ``connections.NAME`` config field).
    storage_class : `str`
        Storage class of the connection.
    writes : `bool`
        Whether the task writes the dataset type (else reads it).
    """

    dataset_type: str
    registered: str
    task_label: str
    task_class: str
    connection: str
    storage_class: str
    writes: bool


def _edges(task_node: TaskNode) -> Iterator[ReadEdge | WriteEdge]:
    """Yield the connection edges of a task (init ones included), without
    the metadata and log outputs pipe_base adds.
    """
    yield from task_node.init.inputs.values()
    yield from task_node.init.outputs.values()
    yield from task_node.inputs.values()
    yield from task_node.prerequisite_inputs.values()
    yield from task_node.outputs.values()


def _convertible(registered: DatasetType, edge: ReadEdge | WriteEdge) -> bool:
    """Whether daf_butler converts between the registered storage class and
    the edge's in the direction the edge needs (as pipe_base checks it).
    """
    if registered.storageClass_name == edge.storage_class_name:
        return True
    factory = StorageClassFactory()
    try:
        task_class = factory.getStorageClass(edge.storage_class_name)
    except KeyError:
        # Not a clash this check can describe: pipe_base reports it.
        return True
    try:
        registered_class = registered.storageClass
    except (KeyError, ImportError):
        # A storage class unknown to this repository's configuration cannot
        # be converted to anything.
        return False
    if isinstance(edge, WriteEdge):
        return registered_class.can_convert(task_class)
    return task_class.can_convert(registered_class)


def storage_class_clashes(
    pipeline_graph: PipelineGraph, get_registered: Callable[[str], DatasetType | None]
) -> list[StorageClassClash]:
    """Find the connections of skyframes tasks whose dataset type is
    registered with a storage class that cannot be converted.

    Parameters
    ----------
    pipeline_graph : `lsst.pipe.base.pipeline_graph.PipelineGraph`
        The pipeline, resolved or not.
    get_registered : callable [[`str`], `lsst.daf.butler.DatasetType` or `None`]
        The repository's definition of a parent dataset type, `None` if it
        has none.

    Returns
    -------
    clashes : `list` [`StorageClassClash`]
        In pipeline order; empty if none.
    """
    clashes = []
    for label, task_node in pipeline_graph.tasks.items():
        if not task_node.task_class_name.startswith(_PACKAGE_PREFIX):
            continue
        for edge in _edges(task_node):
            if isinstance(edge, ReadEdge) and edge.component is not None:
                continue  # components: pipe_base's own check names them
            registered = get_registered(edge.parent_dataset_type_name)
            if registered is None or _convertible(registered, edge):
                continue
            clashes.append(
                StorageClassClash(
                    dataset_type=edge.parent_dataset_type_name,
                    registered=registered.storageClass_name,
                    task_label=label,
                    task_class=task_node.task_class_name,
                    connection=edge.connection_name,
                    storage_class=edge.storage_class_name,
                    writes=isinstance(edge, WriteEdge),
                )
            )
    return clashes


def _overrides(pipeline_graph: PipelineGraph, dataset_type: str) -> list[str]:
    """The ``-c`` options that move every connection of the pipeline using
    ``dataset_type`` (skyframes' or not) to a new name, so that producers and
    consumers stay connected.
    """
    new_name = dataset_type + _RENAME_SUFFIX
    options = []
    for label, task_node in pipeline_graph.tasks.items():
        for edge in _edges(task_node):
            if edge.parent_dataset_type_name == dataset_type:
                options.append(f"-c {label}:connections.{edge.connection_name}={new_name}")
    return options


def _message(pipeline_graph: PipelineGraph, clashes: list[StorageClassClash]) -> str:
    lines = ["Storage classes in this repository clash with those of skyframes tasks:"]
    for dataset_type in dict.fromkeys(c.dataset_type for c in clashes):
        these = [c for c in clashes if c.dataset_type == dataset_type]
        uses = "; ".join(
            f"task {c.task_label!r} ({c.task_class.rsplit('.', 1)[-1]}) "
            f"{'writes' if c.writes else 'reads'} it as {c.storage_class!r} (connection {c.connection!r})"
            for c in these
        )
        lines.append(
            f"- dataset type {dataset_type!r} is registered with storage class {these[0].registered!r}, "
            f"which daf_butler cannot convert to or from the task's; {uses}."
        )
        fix = " ".join(_overrides(pipeline_graph, dataset_type))
        if any(c.writes for c in these):
            lines.append(
                f"  Write skyframes' {dataset_type!r} under a name of its own (any unregistered name), "
                f"e.g.: {fix}"
            )
        else:
            lines.append(
                f"  Read a dataset type holding {these[0].storage_class!r} data instead "
                f"(see 'Rubin dataset types' in the README), e.g.: {fix}"
            )
    lines.append("Nothing has been run or written.")
    return "\n".join(lines)


def check_storage_classes(
    pipeline_graph: PipelineGraph,
    registry: Registry | None = None,
    dataset_types: Mapping[str, DatasetType] | None = None,
) -> None:
    """Refuse a pipeline whose skyframes connections clash with the
    repository's storage classes.

    Parameters
    ----------
    pipeline_graph : `lsst.pipe.base.pipeline_graph.PipelineGraph`
        The pipeline.
    registry : `lsst.daf.butler.Registry`, optional
        The repository's registry.
    dataset_types : mapping [`str`, `lsst.daf.butler.DatasetType`], optional
        Registered dataset types, in place of ``registry`` (as
        `~lsst.pipe.base.pipeline_graph.PipelineGraph.resolve` takes them).

    Raises
    ------
    StorageClassClashError
        If a dataset type a skyframes task reads or writes is registered with
        a storage class that cannot be converted to or from the task's; the
        message names the dataset type, both storage classes and the ``-c``
        overrides that avoid the clash.

    Notes
    -----
    pipe_base resolves a pipeline's dataset types against the repository
    (`~lsst.pipe.base.pipeline_graph.PipelineGraph.resolve`) when the quantum
    graph builder is created, before any task hook can run
    (``adjustQuantum`` is called only afterwards, per quantum), and refuses
    such a clash there with a generic
    `~lsst.pipe.base.pipeline_graph.IncompatibleDatasetTypeError` that does
    not say how to avoid it. Importing this module therefore wraps ``resolve``
    so that this check runs first; it does nothing for pipelines without
    skyframes tasks and leaves every other problem to pipe_base.
    """
    if dataset_types is not None:
        get_registered = dataset_types.get
    elif registry is not None:

        def get_registered(name: str) -> DatasetType | None:
            try:
                return registry.getDatasetType(name)
            except MissingDatasetTypeError:
                return None

    else:
        return
    clashes = storage_class_clashes(pipeline_graph, get_registered)
    if clashes:
        raise StorageClassClashError(
            _message(pipeline_graph, clashes),
            [(c.dataset_type, c.registered, c.storage_class) for c in clashes],
        )


def _install_resolve_check() -> None:
    """Make `PipelineGraph.resolve` call `check_storage_classes` first (once)."""
    original = PipelineGraph.resolve
    if getattr(original, "_skyframes_storage_class_check", False):
        return
    signature = inspect.signature(original)

    @functools.wraps(original)
    def resolve(self: PipelineGraph, *args: Any, **kwargs: Any) -> None:
        arguments = signature.bind(self, *args, **kwargs).arguments
        if not arguments.get("visualization_only", False):
            check_storage_classes(self, arguments.get("registry"), arguments.get("dataset_types"))
        return original(self, *args, **kwargs)

    resolve._skyframes_storage_class_check = True  # type: ignore[attr-defined]
    PipelineGraph.resolve = resolve  # type: ignore[method-assign]


_install_resolve_check()
