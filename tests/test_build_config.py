"""No configuration field of the build that does nothing.

The residual backgrounds are binned by cpSkySubtractBackground and combined by cpSkyCombine
(or cpSkyTemplates); both carry the reference's ``sky`` subtask. A bin size set on one of them
alone is refused by the pipelines' contracts and, for a task run without the YAML, by
cpSkyCombine at run time. Subtask fields a build task never reads are refused when set.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
from lsst.images import Image, MaskedImage
from lsst.pex.config import FieldValidationError
from lsst.pipe.base import Pipeline
from lsst.pipe.base.pipelineIR import ContractError

from conftest import tool, tool_env
from lsst.skyframes import SkyMeasurementConfig, SkyMeasurementTask
from lsst.skyframes.build import (
    SCALE_FIT_FIELDS,
    CpSkyCombineConfig,
    CpSkyCombineTask,
    CpSkySubtractBackgroundConfig,
)
from lsst.skyframes.errors import ConfigMismatchError
from lsst.skyframes.mask_planes import default_mask_schema
from lsst.skyframes.repo import create_repo

ROOT = Path(__file__).resolve().parents[1]
PIPELINES = [
    (ROOT / "pipelines" / "BuildSkyFrame.yaml", "cpSkyCombine"),
    (ROOT / "pipelines" / "BuildSkyTemplates.yaml", "cpSkyTemplates"),
]


def _graph(path: Path | str, *overrides: tuple[str, str, str]):
    pipeline = Pipeline.from_uri(str(path))
    for label, field, value in overrides:
        pipeline.addConfigOverride(label, field, value)
    return pipeline.to_graph()


def _bins(graph, label: str) -> tuple[int, int]:
    background = graph.tasks[label].config.sky.background
    return background.xBinSize, background.yBinSize


# --- Pipeline contracts ------------------------------------------------------------------------------


@pytest.mark.parametrize("path, label", PIPELINES)
def test_contract_refuses_a_bin_size_set_on_one_step(path, label):
    with pytest.raises(ContractError, match=r"-c parameters:xBinSize=N -c parameters:yBinSize=N"):
        _graph(path, (label, "sky.background.xBinSize", "1000"))
    with pytest.raises(ContractError, match="cpSkySubtractBackground's, which bins"):
        _graph(path, ("cpSkySubtractBackground", "sky.background.yBinSize", "128"))


@pytest.mark.parametrize("path, label", PIPELINES)
def test_contract_accepts_the_same_bins_on_both_steps(path, label):
    both = _graph(
        path,
        (label, "sky.background.xBinSize", "1000"),
        ("cpSkySubtractBackground", "sky.background.xBinSize", "1000"),
    )
    assert _bins(both, label) == _bins(both, "cpSkySubtractBackground") == (1000, 32)
    # The one place to set them: the pipeline's parameters, honoured by both steps.
    once = _graph(path, ("parameters", "xBinSize", "128"), ("parameters", "yBinSize", "64"))
    assert _bins(once, label) == _bins(once, "cpSkySubtractBackground") == (128, 64)
    assert _bins(_graph(path), label) == (32, 32)  # the reference's default


@pytest.mark.parametrize("path, label", PIPELINES)
def test_contract_refuses_other_background_fields_set_on_one_step(path, label):
    with pytest.raises(ContractError, match=r"statistic, algorithm, mask"):
        _graph(path, (label, "sky.background.algorithm", "LINEAR"))
    graph = _graph(
        path,
        (label, "sky.background.statistic", "MEDIAN"),
        ("cpSkySubtractBackground", "sky.background.statistic", "MEDIAN"),
    )
    assert graph.tasks[label].config.sky.background.statistic == "MEDIAN"


def test_pipetask_run_refuses_the_ignored_bin_size(tmp_path):
    """The issue's command: pipetask stops before any work, with the contract's message."""
    create_repo(str(tmp_path / "repo")).collections.register("raw")
    result = subprocess.run(
        [tool("pipetask"), "run", "-b", str(tmp_path / "repo"), "-i", "raw", "-o", "out"]
        + ["-p", str(PIPELINES[0][0]), "-c", "cpSkyCombine:sky.background.xBinSize=1000"],
        capture_output=True,
        text=True,
        env=tool_env(),
    )
    assert result.returncode != 0
    assert "ContractError" in result.stderr and "-c parameters:xBinSize=N" in result.stderr, result.stderr[
        -3000:
    ]


# --- cp_pipe's cpSky contracts (pipelines/_ingredients/cpSky.yaml, less the ISR one) -------------------

# (label, or COMBINE for the pipeline's combination label; connection; a phrase of the contract's
# message): renaming the connection on one side alone must stop pipeline resolution with that message.
CONNECTION_CONTRACTS = [
    ("cpSkyScaleMeasure", "inputBkgs", "cpSkyImage writes as connections.maskedBkg"),
    ("cpSkySubtractBackground", "inputExp", "cpSkyImage reads as connections.inputExp"),
    ("cpSkySubtractBackground", "objectMask", "cpSkyImage writes as connections.objectMask"),
    ("cpSkySubtractBackground", "inputBkg", "cpSkyScaleMeasure writes as connections.outputBkg"),
    ("cpSkySubtractBackground", "inputScale", "cpSkyScaleMeasure writes as connections.outputScale"),
    ("COMBINE", "inputBkgs", "cpSkySubtractBackground writes as connections.outputBkg"),
    ("COMBINE", "inputExpHandles", "whose exposure records date the sky frame's inputs"),
    ("COMBINE", "inputScales", "each exposure's sky level, or why it was dropped"),
]


@pytest.mark.parametrize("path, label", PIPELINES)
@pytest.mark.parametrize("task, connection, message", CONNECTION_CONTRACTS)
def test_contract_refuses_a_connection_renamed_on_one_side(path, label, task, connection, message):
    task = label if task == "COMBINE" else task
    with pytest.raises(ContractError, match=f"{task}:connections.{connection} .*{re.escape(message)}"):
        _graph(path, (task, f"connections.{connection}", "renamedDatasetType"))


@pytest.mark.parametrize("path, label", PIPELINES)
def test_contracts_accept_a_dataset_type_renamed_on_both_sides(path, label):
    graph = _graph(
        path,
        ("cpSkyImage", "connections.inputExp", "renamedInput"),
        ("cpSkySubtractBackground", "connections.inputExp", "renamedInput"),
        ("cpSkyImage", "connections.objectMask", "renamedObjectMask"),
        ("cpSkySubtractBackground", "connections.objectMask", "renamedObjectMask"),
        (label, "connections.inputExpHandles", "renamedObjectMask"),
    )
    assert {edge.parent_dataset_type_name for edge in graph.tasks[label].inputs.values()} >= {
        "renamedObjectMask"
    }
    assert {
        edge.parent_dataset_type_name for edge in graph.tasks["cpSkySubtractBackground"].inputs.values()
    } >= {"renamedInput", "renamedObjectMask"}


@pytest.mark.parametrize("path, label", PIPELINES)
def test_cp_pipes_masked_copy_is_written_and_read_only_when_asked_for(path, label):
    """doWriteMaskedExp writes cpSkyMaskedIsrExp (cp_pipe's), which cpSkySubtractBackground may then read."""
    default = _graph(path)
    assert "maskedExp" not in default.tasks["cpSkyImage"].outputs
    graph = _graph(
        path,
        ("cpSkyImage", "doWriteMaskedExp", True),
        ("cpSkySubtractBackground", "connections.inputExp", "cpSkyMaskedIsrExp"),
    )
    assert graph.tasks["cpSkyImage"].outputs["maskedExp"].parent_dataset_type_name == "cpSkyMaskedIsrExp"
    assert graph.tasks["cpSkySubtractBackground"].inputs["inputExp"].parent_dataset_type_name == (
        "cpSkyMaskedIsrExp"
    )
    # Without the masked copy there is nothing to read under that name.
    with pytest.raises(ContractError, match="cpSkyImage reads as connections.inputExp"):
        _graph(path, ("cpSkySubtractBackground", "connections.inputExp", "cpSkyMaskedIsrExp"))


@pytest.mark.parametrize("path, label", PIPELINES)
def test_contract_refuses_include_alternate_background_on_one_step(path, label):
    pipeline = Pipeline.from_uri(str(path))
    pipeline.addConfigOverride("cpSkyScaleMeasure", "includeAlternateBackground", True)
    with pytest.raises(
        ContractError, match="includeAlternateBackground differs from cpSkySubtractBackground"
    ):
        pipeline.to_graph()
    pipeline.addConfigOverride("cpSkySubtractBackground", "includeAlternateBackground", True)
    pipeline.to_graph()  # both set: the contract holds


@pytest.mark.parametrize("path", [path for path, _ in PIPELINES])
@pytest.mark.parametrize("subset", ["step1", "step2", "step3"])
def test_contracts_of_steps_run_alone_resolve(path, subset):
    # pipe_base drops a subset's contracts that name a label outside it; one it kept would fail here.
    Pipeline.from_uri(f"{path}#{subset}").to_graph()


# --- cpSkyCombine's run-time check (tasks run without the YAML, or step3 alone) ---------------------------


def _residuals(bin_size: int = 32, n: int = 4, algorithm: str = "NATURAL_SPLINE"):
    config = SkyMeasurementConfig()
    config.background.xBinSize = config.background.yBinSize = bin_size
    config.background.algorithm = algorithm
    task, rng = SkyMeasurementTask(config=config), np.random.default_rng(3)
    y, x = np.mgrid[0:128, 0:128]
    pattern = 0.01 * np.sin(x / 20.0) * np.cos(y / 30.0)
    return [
        task.measureBackground(
            MaskedImage(
                Image((pattern + rng.normal(0, 0.01, pattern.shape)).astype(np.float32)),
                mask_schema=default_mask_schema(),
            )
        )
        for _ in range(n)
    ]


def test_combine_refuses_inputs_binned_otherwise():
    # Step 3 alone: the contract is pruned with cpSkySubtractBackground, so the task checks.
    graph = _graph(f"{PIPELINES[0][0]}#step3", ("cpSkyCombine", "sky.background.xBinSize", "1000"))
    config = graph.tasks["cpSkyCombine"].config
    with pytest.raises(ConfigMismatchError) as caught:
        CpSkyCombineTask(config=config).run(_residuals(32), [10, 11, 12, 13])
    message = str(caught.value)
    # Names the input, both layouts and both bin sizes, and the fix.
    for part in (
        "exposure 10",
        "4x4 bins over 128x128 pixels",
        "about 32x32 px",
        "xBinSize = 1000",
        "make 1x4",
    ):
        assert part in message, message
    assert "-c parameters:xBinSize=N" in message


def test_combine_refuses_inputs_of_another_algorithm():
    config = CpSkyCombineConfig()
    with pytest.raises(ConfigMismatchError, match="interpolation style LINEAR.*algorithm is NATURAL_SPLINE"):
        CpSkyCombineTask(config=config).run(_residuals(32, algorithm="LINEAR"))


def test_combine_bins_equal_to_the_inputs_are_accepted():
    # A bin size that rounds to the same layout (128/30 -> 4 bins) describes the same inputs.
    config = CpSkyCombineConfig()
    config.sky.background.xBinSize = 30
    inputs = _residuals(32)
    sky = CpSkyCombineTask(config=config).run(inputs).outputCalib
    reference = CpSkyCombineTask().run(inputs).outputCalib
    # The bin size is only checked: the frame is the default configuration's, bit for bit.
    assert np.array_equal(sky.image.array, reference.image.array)
    assert np.isfinite(sky.image.array).all() and np.std(sky.image.array) > 1e-3


# --- Fields the build tasks never read ---------------------------------------------------------------


@pytest.mark.parametrize("config_class", [CpSkySubtractBackgroundConfig, CpSkyCombineConfig])
@pytest.mark.parametrize(
    "field, value",
    [("skyIter", 5), ("skyRej", 2.5), ("xNumSamples", 8), ("yNumSamples", 2), ("stats.clip", 2.0)],
)
def test_scale_fit_fields_are_refused(config_class, field, value):
    assert field.split(".")[0] in SCALE_FIT_FIELDS
    config = config_class()
    config.validate()  # the defaults are fine
    *parents, name = field.split(".")
    target = config.sky
    for parent in parents:
        target = getattr(target, parent)
    setattr(target, name, value)
    with pytest.raises(
        FieldValidationError, match=rf"sky\.{parents[0] if parents else name} is set but not used"
    ):
        config.validate()


def test_pca_n_components_must_be_the_tasks():
    config = CpSkyCombineConfig()
    config.nComponents = 4
    config.pca.nComponents = 3
    with pytest.raises(FieldValidationError, match=r"pca.nComponents = 3 is not used.*nComponents \(= 4\)"):
        config.validate()
    config.pca.nComponents = 4  # the value used: harmless
    config.validate()
    config.pca.nComponents = 1  # the default
    config.validate()


def test_pca_sky_must_be_the_tasks():
    config = CpSkyCombineConfig()
    config.nComponents = 2
    config.pca.sky.background.xBinSize = 16
    with pytest.raises(FieldValidationError, match=r"pca.sky is set but not used.*Set sky\.\* instead"):
        config.validate()
    config.sky.background.xBinSize = 16  # now pca.sky says what is used
    config.validate()
    config.pca.sky.background.xBinSize = 32  # back to the default, sky differs: fine
    config.validate()
