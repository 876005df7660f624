"""Running the sky-frame pipelines with BPS on Parsl (``lsst.ctrl.bps.parsl``).

`LocalThreads` is a Parsl site for one machine: BPS jobs run as subprocesses
started from a pool of threads in the submitting process, one thread per CPU
the process may use. Unlike ctrl_bps_parsl's ``Local`` site (a
HighThroughputExecutor), it starts no interchange or worker processes and opens
no network ports, so it works offline and adds no start-up time; each job is
already a separate ``pipetask`` process, so threads suffice.

The submit files are in the ``bps/`` directory of the source tree:
``bps/local.yaml`` (this site) and ``bps/slurm-example.yaml`` (a Slurm
cluster, for a user to edit). This module imports ctrl_bps_parsl, which comes
with the ``bps`` extra (``pip install 'lsst-skyframes[bps]'``).
"""

from __future__ import annotations

__all__ = ["LocalThreads", "available_cpus"]

import os
from typing import TYPE_CHECKING

import parsl.config
from parsl.executors import ThreadPoolExecutor
from parsl.executors.base import ParslExecutor

from lsst.ctrl.bps.parsl.configuration import get_bps_config_value
from lsst.ctrl.bps.parsl.site import SiteConfig

if TYPE_CHECKING:
    from lsst.ctrl.bps.parsl.job import ParslJob

_LABEL = "local"


def available_cpus() -> int:
    """Return the number of CPUs this process may run on.

    Returns
    -------
    n : `int`
        The size of the process's CPU affinity set where the platform has one
        (it honours ``taskset``, cgroups cpusets and batch-system pinning,
        which `os.cpu_count` ignores), else `os.cpu_count`, and at least 1.
    """
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


class LocalThreads(SiteConfig):
    """Parsl site that runs every BPS job on this machine from a thread pool.

    Parameters
    ----------
    *args : `~typing.Any`
        Forwarded to `lsst.ctrl.bps.parsl.SiteConfig`.
    **kwargs : `~typing.Any`
        Forwarded to `lsst.ctrl.bps.parsl.SiteConfig`.

    Notes
    -----
    BPS configuration, under ``site.<computeSite>``:

    - ``class``: ``lsst.skyframes.bps.LocalThreads``.
    - ``cores`` (`int`, optional): number of jobs to run at once; default
      (absent or 0) `available_cpus`.
    - ``run_dir`` (`str`, optional): Parsl's working directory; default
      ``{submitPath}/runinfo`` (ctrl_bps_parsl's default, ``runinfo``, is in
      the directory ``bps submit`` was started from).
    - ``retries``, ``commandPrefix``, ``environment``: as for every
      ctrl_bps_parsl site.

    Jobs inherit the environment of ``bps submit``, so ``pipetask`` must be on
    its ``PATH`` (an activated virtual environment or a set-up stack).
    """

    def __init__(self, *args, **kwargs):
        # No per-job resource specification: a ThreadPoolExecutor rejects one.
        kwargs["resource_list"] = None
        super().__init__(*args, **kwargs)

    def get_cores(self) -> int:
        """Return the number of jobs to run at once.

        Returns
        -------
        cores : `int`
            ``site.<computeSite>.cores`` if positive, else `available_cpus`.

        Raises
        ------
        ValueError
            Raised if ``cores`` is negative.
        """
        cores = get_bps_config_value(self.site, "cores", int, 0)
        if cores < 0:
            raise ValueError(f"BPS site setting 'cores' is {cores}; give a positive number, or 0: all CPUs.")
        return cores or available_cpus()

    def get_executors(self) -> list[ParslExecutor]:
        """Return the one executor: a pool of `get_cores` threads.

        Returns
        -------
        executors : `list` [`parsl.executors.base.ParslExecutor`]
            A `parsl.executors.ThreadPoolExecutor` labelled ``local``.
        """
        return [ThreadPoolExecutor(label=_LABEL, max_threads=self.get_cores())]

    def get_parsl_config(self) -> parsl.config.Config:
        """Return the Parsl configuration, with ``run_dir`` in the submit directory.

        Returns
        -------
        config : `parsl.config.Config`
            ctrl_bps_parsl's configuration with `get_executors`, its
            ``run_dir`` resolved against the whole BPS configuration.
        """
        config = super().get_parsl_config()
        # The base class looks run_dir up in the site section alone, where
        # "{submitPath}" resolves to an empty string (so Parsl would write to
        # /runinfo); resolve it against the whole configuration instead.
        site_name = get_bps_config_value(self.config, "computeSite", str, required=True)
        run_dir = get_bps_config_value(self.config, f".site.{site_name}.run_dir", str)
        if not run_dir:
            submit_path = get_bps_config_value(self.config, "submitPath", str, required=True)
            run_dir = os.path.join(submit_path, "runinfo")
        config.run_dir = run_dir
        return config

    def select_executor(self, job: ParslJob) -> str:
        """Return the label of the executor for ``job`` (always ``local``).

        Parameters
        ----------
        job : `lsst.ctrl.bps.parsl.ParslJob`
            Job to be executed.

        Returns
        -------
        label : `str`
            ``local``.
        """
        return _LABEL
