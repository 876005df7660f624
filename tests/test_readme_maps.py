"""The README's module map and datasets table hold for the tree and the pipelines as they are."""

from __future__ import annotations

import ast
import re

import pytest
from lsst.daf.butler import DimensionUniverse
from lsst.pipe.base import Pipeline

from conftest import ROOT
from lsst.skyframes.camera import Camera
from lsst.skyframes.instrument import SkyFramesInstrument

PACKAGE = ROOT / "python" / "lsst" / "skyframes"
README = (ROOT / "README.md").read_text(encoding="utf-8")
# Pipelines as the README runs them; skyCorr with nComponents > 1 reads sky_components, the build
# with includeAlternateBackground writes cpSkyExpBackgroundAlternate.
PIPELINES = [
    ("BuildSkyFrame.yaml", {}),
    # With separate backgrounds per physical type (cp_pipe's LSSTCam setting).
    (
        "BuildSkyFrame.yaml",
        {
            "cpSkyScaleMeasure": {"includeAlternateBackground": True},
            "cpSkySubtractBackground": {"includeAlternateBackground": True},
        },
    ),
    # cp_pipe's masked copy of every input, on request.
    ("BuildSkyFrame.yaml", {"cpSkyImage": {"doWriteMaskedExp": True}}),
    # The per-pixel combination reads the inputs' image planes and focal-plane backgrounds.
    ("BuildSkyFrame.yaml", {"cpSkyCombine": {"combineLevel": "pixel"}}),
    ("BuildSkyTemplates.yaml", {}),
    ("ApplySkyFrame.yaml", {}),
    ("ApplySkyFrame.yaml", {"skyCorr": {"nComponents": 2}}),
    ("ApplySkyFrame.yaml", {"skyCorr": {"doApplyFlatBackgroundRatio": True}}),
    ("ApplySkyFrame.yaml", {"skyCorr": {"doWriteCorrectedVisitImage": True}}),
]


def _table(header: str) -> list[list[str]]:
    """Rows of the Markdown table whose header line starts with ``header``."""
    lines = README[README.index(header) :].splitlines()
    rows = []
    for line in lines[2:]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
    return rows


def _module_groups() -> dict[str, int]:
    """Module name -> index of its group in the README's module map."""
    groups: dict[str, int] = {}
    group = -1
    for cells in _table("| module | holds |"):
        if cells[0].startswith("**"):
            group += 1
            continue
        (name,) = re.findall(r"`(\w+)`", cells[0])
        groups[name] = group
    return groups


def test_every_module_is_in_the_map():
    on_disk = {path.stem for path in PACKAGE.glob("*.py") if path.stem != "__init__"}
    listed = set(_module_groups())
    assert on_disk - listed == set(), "modules missing from the README's module map"
    assert listed - on_disk == set(), "the README's module map lists modules that do not exist"


def _imports(path) -> set[str]:
    """Package modules a module imports, at any depth (function-level imports included)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level == 1 and node.module:
                found.add(node.module.split(".")[0])
            elif node.level == 1:
                found.update(alias.name for alias in node.names)
            elif node.module and node.module.startswith("lsst.skyframes."):
                found.add(node.module.split(".")[2])
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("lsst.skyframes."):
                    found.add(alias.name.split(".")[2])
    return found


def test_data_flows_down_the_map():
    groups = _module_groups()
    upward = [
        f"{module} (group {groups[module]}) imports {other} (group {groups[other]})"
        for module in groups
        for other in _imports(PACKAGE / f"{module}.py")
        if other in groups and groups[other] > groups[module]
    ]
    assert upward == []


def _declared_datasets() -> dict[str, tuple[str, set[str]]]:
    """Dataset type -> (storage class, required dimensions) over every pipeline."""
    declared: dict[str, tuple[str, set[str]]] = {}
    # With an instrument, as the README runs them: its overrides size the focal-plane models.
    instrument = SkyFramesInstrument.from_camera(Camera.from_yaml(ROOT / "tests" / "data" / "camera.yaml"))
    for name, overrides in PIPELINES:
        pipeline = Pipeline.from_uri(ROOT / "pipelines" / name)
        pipeline.addInstrument(instrument)
        for label, fields in overrides.items():
            for field, value in fields.items():
                pipeline.addConfigOverride(label, field, value)
        graph = pipeline.to_graph()
        graph.resolve(dimensions=DimensionUniverse())
        for dataset_name, node in graph.dataset_types.items():
            if dataset_name.endswith(("_config", "_log", "_metadata")):
                continue
            dataset_type = node.dataset_type
            declared[dataset_name] = (dataset_type.storageClass_name, set(dataset_type.dimensions.required))
    return declared


@pytest.fixture(scope="module")
def declared() -> dict[str, tuple[str, set[str]]]:
    return _declared_datasets()


def test_every_dataset_is_in_the_table_with_its_storage_class_and_dimensions(declared):
    table = {}
    for cells in _table("| dataset | storage class |"):
        (name,) = re.findall(r"`(\w+)`", cells[0])
        table[name] = (cells[1].strip("`"), {d.strip() for d in cells[2].split(",")})
    assert set(declared) - set(table) == set(), "datasets the pipelines declare but the README omits"
    assert set(table) - set(declared) == set(), "datasets the README lists but no pipeline declares"
    for name, (storage_class, dimensions) in declared.items():
        assert table[name] == (storage_class, dimensions), name


def test_every_exception_class_is_defined_in_errors():
    """A user catches skyframes' exceptions from one module; the others re-export them."""
    defined_elsewhere = []
    for path in sorted(PACKAGE.glob("*.py")):
        if path.stem == "errors":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ClassDef) and any(
                re.search(r"(Error|Exception)$", ast.unparse(base)) for base in node.bases
            ):
                defined_elsewhere.append(f"{path.name}:{node.name}")
    assert defined_elsewhere == []
