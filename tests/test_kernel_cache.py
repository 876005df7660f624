"""Where the numba kernels are cached, and the warm-up command that fills the cache."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import numba.core.config
import pytest

from lsst.skyframes import _jit, kernel_cache
from lsst.skyframes._jit import CacheLocation, select_cache_location, user_cache_dir
from lsst.skyframes.errors import KernelCacheError


def unwriteable_package(tmp_path: Path) -> Path:
    """A package directory whose ``__pycache__`` cannot be made.

    A file in its place: unlike ``chmod a-w``, that also stops root.
    """
    package = tmp_path / "site" / "pkg"
    package.mkdir(parents=True)
    (package / "__pycache__").write_text("not a directory")
    return package


def test_numba_cache_dir_is_respected(tmp_path):
    package = unwriteable_package(tmp_path)
    location = select_cache_location(package, {"NUMBA_CACHE_DIR": str(tmp_path / "mine")})
    assert location == CacheLocation(tmp_path / "mine", "NUMBA_CACHE_DIR")
    # Also when a program set numba.config.CACHE_DIR rather than the environment.
    location = select_cache_location(package, {}, configured=str(tmp_path / "set"))
    assert location == CacheLocation(tmp_path / "set", "NUMBA_CACHE_DIR")
    assert not location.redirected


def test_writeable_package_keeps_the_in_tree_cache(tmp_path):
    package = tmp_path / "pkg"
    package.mkdir()
    location = select_cache_location(package, {"XDG_CACHE_HOME": str(tmp_path / "xdg")})
    assert location == CacheLocation(package / "__pycache__", "package")
    assert not location.redirected
    assert not (tmp_path / "xdg").exists()


def test_read_only_package_uses_the_user_cache_dir(tmp_path):
    package = unwriteable_package(tmp_path)
    environ = {"XDG_CACHE_HOME": str(tmp_path / "xdg")}
    location = select_cache_location(package, environ)
    assert location == CacheLocation(tmp_path / "xdg" / "skyframes" / "numba", "user")
    assert location.redirected
    assert location.path.is_dir()


def test_user_cache_dir_defaults_to_home(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    assert user_cache_dir({}) == tmp_path / ".cache" / "skyframes" / "numba"


def test_unwriteable_user_dir_falls_back_to_temp(tmp_path, monkeypatch):
    package = unwriteable_package(tmp_path)
    blocked = tmp_path / "xdg"
    blocked.write_text("a file, not a directory")
    monkeypatch.setattr(_jit.tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    location = select_cache_location(package, {"XDG_CACHE_HOME": str(blocked)})
    assert location.source == "user"
    assert location.path.parent == tmp_path / "tmp"
    assert location.path.is_dir()


def test_no_writeable_directory_is_a_specific_error(tmp_path, monkeypatch):
    package = unwriteable_package(tmp_path)
    blocked = tmp_path / "blocked"
    blocked.write_text("a file, not a directory")
    monkeypatch.setattr(_jit.tempfile, "tempdir", str(blocked))
    with pytest.raises(KernelCacheError, match="set NUMBA_CACHE_DIR to a writeable directory"):
        select_cache_location(package, {"XDG_CACHE_HOME": str(blocked)})


def test_redirected_kernel_caches_there_and_only_it(tmp_path, monkeypatch):
    """A kernel decorated with the cache redirected writes its index there;
    numba's setting is restored for everyone else."""
    cache = tmp_path / "cache"
    monkeypatch.setattr(_jit, "cache_location", lambda: CacheLocation(cache, "user"))
    before = numba.core.config.CACHE_DIR
    source = tmp_path / "src" / "redirected_kernel.py"
    source.parent.mkdir()
    source.write_text(
        "from lsst.skyframes._jit import njit\n\n\n@njit(cache=True)\ndef add_one(x):\n    return x + 1\n"
    )
    spec = importlib.util.spec_from_file_location("redirected_kernel", source)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "redirected_kernel", module)
    spec.loader.exec_module(module)
    assert numba.core.config.CACHE_DIR == before
    assert module.add_one(41) == 42
    index = kernel_cache.index_file(module.add_one)
    assert index.is_file()
    # Where seed_from_package puts an installation's cache.
    assert index.parent == _jit.numba_cache_subdir(cache, source.parent)
    assert not (source.parent / "__pycache__").exists()


def test_install_time_cache_seeds_the_user_dir(tmp_path):
    in_tree = tmp_path / "pkg" / "__pycache__"
    in_tree.mkdir(parents=True)
    (in_tree / "mod.kernel-10.py312.nbi").write_bytes(b"index")
    (in_tree / "mod.kernel-10.py312.1.nbc").write_bytes(b"data")
    (in_tree / "mod.cpython-312.pyc").write_bytes(b"bytecode")
    target = tmp_path / "user" / "pkg_0123"
    assert _jit.seed_from_package(in_tree, target) == 2
    copied = sorted(p.name for p in target.iterdir())
    assert copied == ["mod.kernel-10.py312.1.nbc", "mod.kernel-10.py312.nbi"]
    assert (target / "mod.kernel-10.py312.nbi").read_bytes() == b"index"
    # Up to date: nothing copied. A user's newer index (more signatures) is kept.
    assert _jit.seed_from_package(in_tree, target) == 0
    (target / "mod.kernel-10.py312.nbi").write_bytes(b"user index")
    assert _jit.seed_from_package(in_tree, target) == 0
    assert (target / "mod.kernel-10.py312.nbi").read_bytes() == b"user index"
    # An upgraded installation's newer cache replaces the user's copy.
    newer = (target / "mod.kernel-10.py312.nbi").stat().st_mtime + 10
    (in_tree / "mod.kernel-10.py312.nbi").write_bytes(b"new index")
    os.utime(in_tree / "mod.kernel-10.py312.nbi", (newer, newer))
    assert _jit.seed_from_package(in_tree, target) == 1
    assert (target / "mod.kernel-10.py312.nbi").read_bytes() == b"new index"
    assert _jit.seed_from_package(tmp_path / "missing", target) == 0


def test_kernel_dispatchers_are_found_by_introspection():
    kernels = kernel_cache.kernel_dispatchers()
    # One from each kernel module, named where it is defined (not where imported).
    for name in (
        "lsst.skyframes._binned_kernels._binned_kernel",
        "lsst.skyframes._detection._row_distance",
        "lsst.skyframes._group_kernels._reduce",
        "lsst.skyframes._selection._select",
        "lsst.skyframes._stack_kernels._stack_network_kernel",
        "lsst.skyframes._sums._clipped_mean_var",
        "lsst.skyframes.focal_plane._bin_labels",
        "lsst.skyframes.interpolate._akima_kernel",
        "lsst.skyframes.statistics._mask_test",
    ):
        assert name in kernels
    assert all(kernel_cache.index_file(d).suffix == ".nbi" for d in kernels.values())


def test_warm_up_caches_every_kernel_the_tasks_use(capsys):
    """The command runs the tasks and leaves an index file for every kernel
    the package calls; the only ones left out are defined and never called."""
    assert kernel_cache.main(["--verbose"]) == 0
    entries = kernel_cache.cache_entries()
    assert {e.name for e in entries} == set(kernel_cache.kernel_dispatchers())
    missing = [e.name for e in entries if not e.cached]
    assert missing == [e.name for e in entries if not e.used]
    for entry in entries:
        if not entry.used:
            short = entry.name.rpartition(".")[2]
            sources = Path(kernel_cache.PACKAGE_DIR).glob("*.py")
            assert sum(path.read_text().count(short) for path in sources) == 1
    out = capsys.readouterr().out
    assert f"{len(entries) - len(missing)} of {len(entries)} kernels cached" in out


@pytest.mark.parametrize("layout", ["C", "F", "A"])
def test_array_like_has_the_layout(layout):
    from numba import types

    array = kernel_cache._array_like(types.Array(types.float32, 2, layout), (4, 6))
    assert array.dtype == "float32" and array.shape == (4, 6)
    assert numba.typeof(array).layout == layout
