"""Shared fixtures: a throw-away PostgreSQL server and small synthetic butler repositories.

The repositories are those of ``test_build_pipeline.py`` made smaller (2x2 detectors of
128 px, 6 exposures) and ingested in-process; pipelines run through the real ``pipetask``
command line in subprocesses, as a user runs them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest
from lsst.daf.butler import Butler
from lsst.images import MaskedImage

from lsst.skyframes.camera import Camera, DetectorGeometry, make_synthetic_camera
from lsst.skyframes.ingest import ingest_image, register_input
from lsst.skyframes.repo import calib_collection, create_repo, register_camera
from lsst.skyframes.simulate import (
    ExposurePlan,
    define_planned_exposure,
    exposure_header,
    plan_exposures,
    simulate_detector,
)

ROOT = Path(__file__).resolve().parents[1]
BUILD_PIPELINE = ROOT / "pipelines" / "BuildSkyFrame.yaml"
APPLY_PIPELINE = ROOT / "pipelines" / "ApplySkyFrame.yaml"
ENSURE_POSTGRES = ROOT / "scripts" / "ensure-postgres"

SEED = 23
N_EXPOSURES = 6
DETECTOR_SIZE = 128
RAW_RUN = "raw"


def tool(name: str) -> str:
    """Return the console script ``name`` beside the interpreter running the tests."""
    path = Path(sys.executable).parent / name
    found = str(path) if path.exists() else shutil.which(name)
    assert found, f"{name} is not installed beside {sys.executable} nor on PATH"
    return found


def tool_env() -> dict[str, str]:
    """Environment for subprocesses: the test interpreter's scripts first on PATH."""
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    return dict(os.environ, PATH=path, PYTHONUNBUFFERED="1", SKYFRAMES_DIR=str(ROOT))


INSTRUMENT = "lsst.skyframes.instrument.SkyFramesInstrument"
"""pipetask's ``--instrument``: its overrides size the focal-plane models from the camera
(`lsst.skyframes.camera_overrides`), which it reads from ``SKYFRAMES_CAMERA`` (`camera_env`)."""


def camera_env(camera_file: Path | str) -> dict[str, str]:
    """`tool_env` with ``SKYFRAMES_CAMERA`` naming a camera file, for ``pipetask --instrument INSTRUMENT``."""
    return dict(tool_env(), SKYFRAMES_CAMERA=str(camera_file))


def run_tool(name: str, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run the console script ``name`` (see `tool`) with ``args``, capturing its output as text."""
    return subprocess.run(
        [tool(name), *args], capture_output=True, text=True, env=tool_env(), timeout=timeout
    )


def check(result: subprocess.CompletedProcess, what: str) -> subprocess.CompletedProcess:
    """Assert that a finished command succeeded, showing the end of its output if not."""
    assert result.returncode == 0, (
        f"{what} failed with exit code {result.returncode}\n--- stdout\n{result.stdout[-3000:]}"
        f"\n--- stderr\n{result.stderr[-6000:]}"
    )
    return result


# --- PostgreSQL -----------------------------------------------------------------------------------


def _stop_with_parent() -> None:
    """In the server process: ask Linux for SIGINT (fast shutdown) when the test process dies.

    Runs after the switch to the postgres user (Popen sets the ids first), so the setting
    survives; it covers a test run that is killed before its fixtures can stop the server.
    """
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, int(signal.SIGINT), 0, 0, 0)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class PostgresServer:
    """A PostgreSQL server of its own in a temporary directory, on 127.0.0.1 only.

    Parameters
    ----------
    bindir : `str`
        Directory of ``initdb`` and ``postgres``.

    Notes
    -----
    initdb and the server refuse to run as root, so under root they run as
    the ``postgres`` system user (created by Debian's package), in a directory
    owned by it. The superuser's password is random and reaches clients
    through a daf_butler credentials file (``$LSST_DB_AUTH``), as the seed
    config documents, so no password is written into a repository's
    ``butler.yaml``.
    """

    SUPERUSER = "postgres"

    def __init__(self, bindir: str):
        self.bindir = Path(bindir)
        self.process: subprocess.Popen | None = None
        self.port: int | None = None
        self.password = secrets.token_hex(16)
        self._run_as: dict = {}
        self.owner_uid = os.getuid()
        self.owner_gid = os.getgid()
        if os.geteuid() == 0:
            try:
                entry = pwd.getpwnam("postgres")
            except KeyError:
                raise RuntimeError(
                    "running as root, and there is no 'postgres' user to run the PostgreSQL server as "
                    "(Debian's postgresql package creates it; see scripts/ensure-postgres)"
                ) from None
            self.owner_uid, self.owner_gid = entry.pw_uid, entry.pw_gid
            self._run_as = {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}
        # Under root the server runs as another user, who must reach its directory: /tmp is open
        # to every user, whereas $TMPDIR may be private to root.
        shared_tmp = "/tmp" if self._run_as and os.path.isdir("/tmp") else None
        self.directory = Path(tempfile.mkdtemp(prefix="skyframes-pg-", dir=shared_tmp))
        os.chown(self.directory, self.owner_uid, self.owner_gid)
        self.data = self.directory / "data"
        self.log = self.directory / "server.log"
        # Client credentials stay with the test process's user, away from the server's directory.
        self.client_directory = Path(tempfile.mkdtemp(prefix="skyframes-pg-client-"))
        self.db_auth = self.client_directory / "db-auth.yaml"

    def _run(self, args: Sequence[str], what: str) -> None:
        result = subprocess.run(
            args, cwd=self.directory, capture_output=True, text=True, timeout=120, **self._run_as
        )
        if result.returncode != 0:
            raise RuntimeError(f"{what} failed ({result.returncode}): {result.stderr[-3000:]}")

    def start(self) -> None:
        """Initialise the cluster and start the server; raise `RuntimeError` with the reason on failure."""
        pwfile = self.directory / "pwfile"
        pwfile.write_text(self.password + "\n")
        os.chmod(pwfile, 0o600)
        os.chown(pwfile, self.owner_uid, self.owner_gid)
        self._run(
            [
                str(self.bindir / "initdb"),
                "-D",
                str(self.data),
                "-U",
                self.SUPERUSER,
                f"--pwfile={pwfile}",
                "--auth=scram-sha-256",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
            ],
            "initdb",
        )
        pwfile.unlink()
        self.db_auth.write_text(
            f"- url: postgresql://127.0.0.1\n  username: {self.SUPERUSER}\n  password: {self.password}\n"
        )
        os.chmod(self.db_auth, 0o600)
        errors = []
        for _ in range(3):  # another process may take the free port before the server binds it
            self.port = _free_port()
            try:
                self._start_server()
                return
            except RuntimeError as err:
                errors.append(str(err))
        raise RuntimeError("; ".join(errors))

    def _start_server(self) -> None:
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [
                    str(self.bindir / "postgres"),
                    "-D",
                    str(self.data),
                    "-c",
                    "listen_addresses=127.0.0.1",
                    "-c",
                    f"port={self.port}",
                    "-c",
                    f"unix_socket_directories={self.directory}",
                    # A throw-away server: durability buys nothing here and costs seconds.
                    "-c",
                    "fsync=off",
                    "-c",
                    "synchronous_commit=off",
                    "-c",
                    "full_page_writes=off",
                ],
                cwd=self.directory,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                preexec_fn=_stop_with_parent,
                **self._run_as,
            )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self.process = None
                raise RuntimeError(f"the server exited at start-up; its log ends:\n{self._log_tail()}")
            try:
                self.connect("postgres").close()
                return
            except Exception:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"the server accepted no connection in 60 s; its log ends:\n{self._log_tail()}")

    def _log_tail(self) -> str:
        try:
            return self.log.read_text(errors="replace")[-3000:]
        except OSError as err:
            return f"(no log: {err})"

    def connect(self, database: str):
        """Open an autocommit psycopg2 connection to ``database`` as the superuser."""
        import psycopg2

        connection = psycopg2.connect(
            host="127.0.0.1",
            port=self.port,
            user=self.SUPERUSER,
            password=self.password,
            dbname=database,
            connect_timeout=5,
        )
        connection.autocommit = True
        return connection

    def create_database(self, name: str, *, btree_gist: bool = True) -> str:
        """Create a database (with the btree_gist extension) and return its butler URL."""
        connection = self.connect("postgres")
        try:
            with connection.cursor() as cursor:
                cursor.execute(f'CREATE DATABASE "{name}"')
        finally:
            connection.close()
        if btree_gist:
            connection = self.connect(name)
            try:
                with connection.cursor() as cursor:
                    cursor.execute("CREATE EXTENSION btree_gist")
            finally:
                connection.close()
        return self.url(name)

    def url(self, database: str) -> str:
        """Return the butler registry URL of ``database`` (no password: see `db_auth`)."""
        return f"postgresql+psycopg2://{self.SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def stop(self) -> None:
        """Stop the server by its pid: fast shutdown, then SIGKILL if it does not stop in 30 s."""
        process, self.process = self.process, None
        if process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGINT)  # "fast" shutdown: disconnect clients, then exit
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=30)

    def cleanup(self) -> None:
        """Stop the server and remove its files."""
        try:
            self.stop()
        finally:
            shutil.rmtree(self.directory, ignore_errors=True)
            shutil.rmtree(self.client_directory, ignore_errors=True)


def _postgres_bindir() -> str:
    """Return the PostgreSQL server's bin directory, installing it if needed (scripts/ensure-postgres)."""
    result = subprocess.run([str(ENSURE_POSTGRES)], capture_output=True, text=True, timeout=900)
    lines = result.stdout.strip().splitlines()
    if result.returncode != 0 or not lines:
        raise RuntimeError(f"scripts/ensure-postgres failed ({result.returncode}): {result.stderr[-3000:]}")
    return lines[-1]


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """A running PostgreSQL server for this test session; the tests using it fail if it cannot start."""
    try:
        server = PostgresServer(_postgres_bindir())
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as err:
        pytest.fail(f"Cannot start a PostgreSQL server for the tests: {err}", pytrace=False)
    previous = os.environ.get("LSST_DB_AUTH")
    try:
        try:
            server.start()
        except (RuntimeError, OSError, subprocess.TimeoutExpired) as err:
            pytest.fail(f"Cannot start a PostgreSQL server for the tests: {err}", pytrace=False)
        # Butlers in this process and in pipetask subprocesses find the password here.
        os.environ["LSST_DB_AUTH"] = str(server.db_auth)
        yield server
    finally:
        if previous is None:
            os.environ.pop("LSST_DB_AUTH", None)
        else:
            os.environ["LSST_DB_AUTH"] = previous
        server.cleanup()


# --- Synthetic repositories -----------------------------------------------------------------------


@dataclasses.dataclass
class SyntheticRepo:
    """A repository with a registered camera and ingested ``post_isr_image`` inputs."""

    root: str
    camera: Camera
    plans: list[ExposurePlan]

    @property
    def inputs(self) -> str:
        """The ``-i`` argument of pipetask for the build pipeline."""
        return f"{RAW_RUN},{calib_collection(self.camera.instrument)}"

    @property
    def instrument(self) -> str:
        return self.camera.instrument

    @property
    def camera_file(self) -> Path:
        """The camera's YAML file (written by `make_synthetic_repo`), for ``SKYFRAMES_CAMERA``."""
        return Path(self.root) / "camera.yaml"

    def butler(self, writeable: bool = False) -> Butler:
        return Butler.from_config(self.root, writeable=writeable)

    def _pipetask_command(self, args: Sequence[str], pipeline: Path | str, inputs: str | None) -> list[str]:
        inputs = inputs if inputs is not None else self.inputs
        return [
            tool("pipetask"),
            "run",
            "-b",
            self.root,
            "-i",
            inputs,
            "-p",
            str(pipeline),
            "--instrument",
            INSTRUMENT,
            *args,
        ]

    def pipetask(
        self,
        *args: str,
        pipeline: Path | str = BUILD_PIPELINE,
        inputs: str | None = None,
        timeout: float = 300,
    ) -> subprocess.CompletedProcess:
        """Run ``pipetask run`` on this repository (default: the build pipeline on `inputs`)."""
        command = self._pipetask_command(args, pipeline, inputs)
        return subprocess.run(
            command, capture_output=True, text=True, env=camera_env(self.camera_file), timeout=timeout
        )

    def popen_pipetask(
        self, *args: str, pipeline: Path | str = BUILD_PIPELINE, inputs: str | None = None, **kwargs
    ) -> subprocess.Popen:
        """Start ``pipetask run`` like `pipetask`, in a new session (so its process group can be killed)."""
        command = self._pipetask_command(args, pipeline, inputs)
        return subprocess.Popen(
            command, env=camera_env(self.camera_file), start_new_session=True, text=True, **kwargs
        )


def simulate_inputs(camera: Camera, plans: Sequence[ExposurePlan]):
    """Yield ``(detector, plan, image)`` for every detector of every planned exposure."""
    for plan in plans:
        for detector in camera:
            simulated = simulate_detector(detector, plan, seed=SEED, n_stars=10, n_galaxies=2)
            yield detector, plan, simulated.image


def make_synthetic_repo(
    root: Path | str,
    *,
    db_url: str | None = None,
    n_exposures: int = N_EXPOSURES,
    spoil: Callable[[DetectorGeometry, ExposurePlan, MaskedImage], bool] | None = None,
) -> SyntheticRepo:
    """Create a repository, register a 2x2 camera and ingest simulated inputs into ``raw``.

    ``spoil(detector, plan, image)``, if given, may make an image unusable in place (e.g.
    every pixel NaN) and returns True if it did. Ingest rightly refuses such an image, but
    a processing pipeline can still write one: it is stored with ``butler.put``, its
    exposure defined as ingest would.
    """
    camera = make_synthetic_camera(n_x=2, n_y=2, size=DETECTOR_SIZE, gap_px=16)
    plans = plan_exposures(n_exposures, camera.physical_filters[0], seed=SEED)
    butler = create_repo(str(root), db_url=db_url)
    register_camera(butler, camera)
    camera.to_yaml(Path(root) / "camera.yaml")
    register_input(butler, RAW_RUN)
    for detector, plan, image in simulate_inputs(camera, plans):
        if spoil is not None and spoil(detector, plan, image):
            define_planned_exposure(butler, camera, plan)
            data_id = {"instrument": camera.instrument, "exposure": plan.exposure_id, "detector": detector.id}
            butler.put(image, "post_isr_image", data_id, run=RAW_RUN)
            continue
        ingest_image(
            butler,
            camera,
            image,
            exposure_header(detector, plan),
            source=f"simulated exposure {plan.exposure_id} detector {detector.id}",
            run=RAW_RUN,
        )
    return SyntheticRepo(str(root), camera, plans)


# Storage classes whose formatter only writes, and the first bytes of a whole file of each.
WRITE_ONLY_STORAGE_CLASSES = {"Plot": b"\x89PNG\r\n\x1a\n"}


def read_every_dataset(butler: Butler, collection: str) -> dict[str, int]:
    """Read every dataset in a RUN collection; return the count per dataset type.

    A dataset that is registered but cannot be read makes the caller's test fail here.
    """
    counts: dict[str, int] = {}
    for ref in butler.query_all_datasets(collection, find_first=False, limit=None):
        try:
            if ref.datasetType.storageClass_name in WRITE_ONLY_STORAGE_CLASSES:
                # daf_butler writes figures but cannot read them back: check the file instead.
                data = butler.getURI(ref).read()
                assert data.startswith(WRITE_ONLY_STORAGE_CLASSES[ref.datasetType.storageClass_name])
            else:
                butler.get(ref)
        except Exception as err:
            raise AssertionError(f"dataset {ref} in {collection!r} cannot be read: {err}") from err
        counts[ref.datasetType.name] = counts.get(ref.datasetType.name, 0) + 1
    return counts


def sky_frames(repo: SyntheticRepo, collection: str) -> dict[int, dict[str, np.ndarray]]:
    """Return the image, mask and variance arrays of every detector's ``sky`` in ``collection``."""
    butler = repo.butler()
    frames = {}
    for detector in repo.camera:
        sky = butler.get(
            "sky",
            instrument=repo.instrument,
            detector=detector.id,
            physical_filter=repo.plans[0].physical_filter,
            collections=collection,
        )
        frames[detector.id] = {
            "image": sky.image.array,
            "mask": sky.mask.array,
            "variance": sky.variance.array,
        }
    return frames


def assert_identical_frames(actual: dict, expected: dict) -> None:
    """Assert two `sky_frames` results are equal bit for bit (NaN payloads included)."""
    assert actual.keys() == expected.keys()
    for detector, planes in expected.items():
        for name, array in planes.items():
            other = actual[detector][name]
            assert other.dtype == array.dtype and other.shape == array.shape, (detector, name)
            assert other.tobytes() == array.tobytes(), (
                f"detector {detector} {name}: {np.count_nonzero(other != array)} pixels differ"
            )


@pytest.fixture(scope="session")
def reference_build(tmp_path_factory) -> tuple[SyntheticRepo, str]:
    """A SQLite synthetic repository and an uninterrupted ``pipetask run`` of the build pipeline.

    Returns the repository and the output RUN collection, which later tests compare against.
    """
    repo = make_synthetic_repo(tmp_path_factory.mktemp("reference") / "repo")
    run = "reference/run"
    check(
        repo.pipetask("-o", "reference", "--output-run", run, "--register-dataset-types"),
        "reference pipetask run",
    )
    return repo, run
