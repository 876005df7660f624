"""BPS on Parsl: the shipped submit configs, and a submission that matches pipetask bit for bit."""

from __future__ import annotations

import subprocess
import time

import pytest

from conftest import (
    ROOT,
    assert_identical_frames,
    camera_env,
    check,
    read_every_dataset,
    sky_frames,
    tool,
)

pytest.importorskip("lsst.ctrl.bps.parsl", reason="the bps extra (lsst-ctrl-bps-parsl) is not installed")

from lsst.ctrl.bps import BpsConfig  # noqa: E402
from lsst.ctrl.bps.parsl.site import SiteConfig  # noqa: E402
from parsl.executors import HighThroughputExecutor, ThreadPoolExecutor  # noqa: E402
from parsl.providers import SlurmProvider  # noqa: E402

from lsst.skyframes.bps import LocalThreads, available_cpus  # noqa: E402

LOCAL = ROOT / "bps" / "local.yaml"
SLURM = ROOT / "bps" / "slurm-example.yaml"


def _config(path, monkeypatch, **overrides) -> BpsConfig:
    monkeypatch.setenv("SKYFRAMES_DIR", str(ROOT))
    config = BpsConfig(str(path))
    for key, value in overrides.items():
        config[key] = value
    return config


def test_local_site_uses_every_cpu(monkeypatch, tmp_path):
    config = _config(LOCAL, monkeypatch, submitPath=str(tmp_path / "submit"))
    site = SiteConfig.from_config(config)
    assert isinstance(site, LocalThreads)
    parsl_config = site.get_parsl_config()
    (executor,) = parsl_config.executors
    assert isinstance(executor, ThreadPoolExecutor)
    assert executor.max_threads == available_cpus() >= 1
    assert parsl_config.run_dir == str(tmp_path / "submit" / "runinfo")
    assert parsl_config.retries == 0

    config[".site.local.cores"] = 3
    assert SiteConfig.from_config(config).get_executors()[0].max_threads == 3
    config[".site.local.cores"] = -1
    with pytest.raises(ValueError, match="cores"):
        SiteConfig.from_config(config).get_executors()


def test_slurm_example_parses(monkeypatch, tmp_path):
    """The cluster example builds its Parsl configuration (nothing is submitted)."""
    config = _config(SLURM, monkeypatch, submitPath=str(tmp_path / "submit"), uniqProcName="example")
    assert config["computeSite"] == "slurm"
    # Included from local.yaml.
    assert config["pipelineYaml"].endswith("pipelines/BuildSkyFrame.yaml")
    assert set(config["cluster"]) == {"skyExposure", "skyCombine"}
    parsl_config = SiteConfig.from_config(config).get_parsl_config()
    (executor,) = parsl_config.executors
    assert isinstance(executor, HighThroughputExecutor)
    assert isinstance(executor.provider, SlurmProvider)
    assert executor.provider.walltime == "04:00:00"
    assert "#SBATCH --partition=" in executor.provider.scheduler_options


def test_bps_submit_matches_pipetask(reference_build, tmp_path):
    repo, reference_run = reference_build
    start = time.monotonic()
    result = subprocess.run(
        [tool("bps"), "submit", str(LOCAL), "-b", repo.root, "-i", repo.inputs]
        + ["-o", "bps", "--output-run", "bps/run"],
        capture_output=True,
        text=True,
        # BPS puts its submit directory under ${PWD}, which a changed cwd alone does not update.
        env=dict(camera_env(repo.camera_file), PWD=str(tmp_path)),
        cwd=tmp_path,
        timeout=600,
    )
    elapsed = time.monotonic() - start
    check(result, "bps submit")
    print(f"bps submit took {elapsed:.1f} s")

    butler = repo.butler()
    counts = read_every_dataset(butler, "bps/run")
    n_det, n_exp = len(repo.camera), len(repo.plans)
    assert counts["sky"] == n_det and counts["cpSkyObjectMask"] == n_det * n_exp
    # The final job put the new run at the head of the output chain, before the inputs.
    assert list(butler.collections.get_info("bps").children)[0] == "bps/run"
    assert_identical_frames(sky_frames(repo, "bps/run"), sky_frames(repo, reference_run))

    # Quanta were clustered as bps/local.yaml says: one job per exposure, one for the combination.
    logs = tmp_path / "submit" / "bps" / "run" / "logs"
    assert len(list((logs / "skyExposure").rglob("*.stdout"))) == n_exp
    assert len(list((logs / "skyCombine").rglob("*.stdout"))) == 1
    final_script = (tmp_path / "submit" / "bps" / "run" / "final_job.bash").read_text()
    assert "-j $(nproc)" in final_script
    # Parsl's files went into the submit directory, not the working directory.
    assert (tmp_path / "submit" / "bps" / "run" / "runinfo").is_dir()
    assert not (tmp_path / "runinfo").exists()


def test_bps_submit_templates(reference_build, tmp_path):
    """bps/templates.yaml: the multi-component build on Parsl, clustered, component 1 = pipetask's sky."""
    repo, reference_run = reference_build
    result = subprocess.run(
        [tool("bps"), "submit", str(ROOT / "bps" / "templates.yaml"), "-b", repo.root, "-i", repo.inputs]
        + ["-o", "bpsk", "--output-run", "bpsk/run"],
        capture_output=True,
        text=True,
        env=dict(camera_env(repo.camera_file), PWD=str(tmp_path)),
        cwd=tmp_path,
        timeout=600,
    )
    check(result, "bps submit templates")
    butler = repo.butler()
    counts = read_every_dataset(butler, "bpsk/run")
    n_det = len(repo.camera)
    assert counts["sky"] == counts["sky_components"] == counts["sky_quality"] == n_det
    assert counts["cpSkyTemplates_metadata"] == 1  # one quantum for the whole focal plane
    for ref in butler.query_datasets("sky_quality", collections="bpsk/run", explain=False):
        assert butler.get(ref)["inputs_rejected"] == []
    # With no exposure rejected, component 1 is the single sky frame bit for bit.
    assert_identical_frames(sky_frames(repo, "bpsk/run"), sky_frames(repo, reference_run))
    logs = tmp_path / "submit" / "bpsk" / "run" / "logs"
    assert len(list((logs / "skyExposure").rglob("*.stdout"))) == len(repo.plans)
    assert len(list((logs / "skyCombine").rglob("*.stdout"))) == 1
