"""The decorator of the package's numba kernels, and where their cache goes.

Every kernel is compiled with ``cache=True``. numba writes that cache next to
the source (``__pycache__``) unless ``NUMBA_CACHE_DIR`` is set; on a
read-only installation (a shared site-packages, a container image) it falls
back to its own user directory, and where that is not writeable either,
importing a cached kernel fails outright. `njit` keeps numba's choice
whenever it works (``NUMBA_CACHE_DIR`` if set, else the package's
``__pycache__`` if writeable: today's behaviour) and otherwise sends only
this package's kernels to `user_cache_dir`, a directory users can find
(``skyframes compile-kernels`` prints it) and fill once with every kernel the
tasks use; a cache compiled into the package's ``__pycache__`` at install
time, before the installation was made read-only, is copied there first.

numba picks a kernel's cache directory once, when the decorator runs (at
import of the kernel's module), from ``numba.config.CACHE_DIR``; `njit` sets
that value only while it decorates, so other packages' kernels, compiled in
the same process, keep their own cache.
"""

from __future__ import annotations

__all__ = [
    "CacheLocation",
    "cache_location",
    "njit",
    "numba_cache_subdir",
    "seed_from_package",
    "select_cache_location",
    "user_cache_dir",
]

import dataclasses
import functools
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numba
import numba.core.config
from numba.core.caching import UserProvidedCacheLocator

from .errors import KernelCacheError

# Not resolved: numba names a cache sub-directory after the path as imported.
PACKAGE_DIR = Path(os.path.abspath(__file__)).parent
"""The directory of the package's sources (and of its in-tree cache)."""


@dataclasses.dataclass(frozen=True)
class CacheLocation:
    """Where numba keeps the compiled kernels of this package.

    Attributes
    ----------
    path : `pathlib.Path`
        The directory given to numba: the in-tree ``__pycache__``, or the
        root under which numba makes one sub-directory per source directory.
    source : `str`
        Why this one: ``"NUMBA_CACHE_DIR"`` (set by the user), ``"package"``
        (the package directory is writeable: numba's default) or ``"user"``
        (the package directory is read-only: `user_cache_dir`).
    """

    path: Path
    source: str

    @property
    def redirected(self) -> bool:
        """Whether `njit` must point numba at `path` (numba would not)."""
        return self.source == "user"


def user_cache_dir(environ: Mapping[str, str] | None = None) -> Path:
    """Return the per-user cache directory of this package's kernels.

    ``$XDG_CACHE_HOME/skyframes/numba``, ``~/.cache/skyframes/numba`` when
    ``XDG_CACHE_HOME`` is unset (the XDG base-directory convention).

    Parameters
    ----------
    environ : mapping of `str` to `str`, optional
        The environment; `os.environ` by default.
    """
    environ = os.environ if environ is None else environ
    base = environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "skyframes" / "numba"


def _writeable(path: Path) -> bool:
    """Return whether files can be created in ``path`` (made if missing).

    The same test numba makes before it accepts a cache directory, so the
    two never disagree.
    """
    try:
        path.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=path).close()
    except OSError:
        return False
    return True


def select_cache_location(
    package_dir: Path = PACKAGE_DIR,
    environ: Mapping[str, str] | None = None,
    configured: str = "",
) -> CacheLocation:
    """Choose where numba caches this package's kernels.

    Parameters
    ----------
    package_dir : `pathlib.Path`, optional
        The package's source directory.
    environ : mapping of `str` to `str`, optional
        The environment; `os.environ` by default.
    configured : `str`, optional
        ``numba.config.CACHE_DIR`` as the process has it (set from
        ``NUMBA_CACHE_DIR`` at numba's import, or assigned by a program).

    Returns
    -------
    location : `CacheLocation`
        ``NUMBA_CACHE_DIR`` (or ``configured``) if set; else the package's
        ``__pycache__`` if it is writeable; else `user_cache_dir`, or, if
        that is not writeable either, a per-user directory under the
        system's temporary directory (so import never fails for want of a
        cache, though that one may not outlive the machine's next clean-up).

    Raises
    ------
    KernelCacheError
        If none of these directories is writeable.
    """
    environ = os.environ if environ is None else environ
    chosen = environ.get("NUMBA_CACHE_DIR") or configured
    if chosen:
        return CacheLocation(Path(chosen), "NUMBA_CACHE_DIR")
    in_tree = package_dir / "__pycache__"
    if _writeable(in_tree):
        return CacheLocation(in_tree, "package")
    user = user_cache_dir(environ)
    if _writeable(user):
        return CacheLocation(user, "user")
    fallback = Path(tempfile.gettempdir()) / f"skyframes-numba-{os.getuid()}"
    if _writeable(fallback):
        return CacheLocation(fallback, "user")
    raise KernelCacheError(
        f"no writeable directory for the numba kernel cache: not the package's {in_tree}, "
        f"not {user} nor {fallback}; set NUMBA_CACHE_DIR to a writeable directory."
    )


def numba_cache_subdir(root: Path, package_dir: Path = PACKAGE_DIR) -> Path:
    """Return the directory numba caches ``package_dir``'s kernels in under
    the cache root ``root`` (as for ``NUMBA_CACHE_DIR``).
    """
    return root / UserProvidedCacheLocator.get_suitable_cache_subpath(str(package_dir / "__init__.py"))


def seed_from_package(in_tree: Path, target: Path) -> int:
    """Copy the cache files of ``in_tree`` to ``target`` where they are newer.

    A read-only installation may carry the cache its installer compiled
    (``skyframes compile-kernels`` run before the files were made read-only)
    in its ``__pycache__``, which numba does not read once it cannot write
    there. Copying it into the user's cache directory makes it count. A
    file is copied when the target lacks it or has an older one (the
    installation was upgraded), keeping its time stamp, so a cache the user
    extended since is left alone. Data files go before the indexes that name
    them, each through a temporary file, so a process loading the cache
    meanwhile never sees half of it.

    Parameters
    ----------
    in_tree : `pathlib.Path`
        The package's ``__pycache__``.
    target : `pathlib.Path`
        numba's directory for the package's kernels (`numba_cache_subdir`).

    Returns
    -------
    copied : `int`
        Files copied; failures are skipped (numba compiles what it misses).
    """
    try:
        sources = [path for path in in_tree.iterdir() if path.suffix in (".nbc", ".nbi")]
    except OSError:
        return 0
    copied = 0
    for source in sorted(sources, key=lambda path: (path.suffix == ".nbi", path.name)):
        destination = target / source.name
        try:
            if destination.exists() and destination.stat().st_mtime >= source.stat().st_mtime:
                continue
            target.mkdir(parents=True, exist_ok=True)
            partial = target / f".{source.name}.{os.getpid()}.tmp"
            shutil.copy2(source, partial)
            os.replace(partial, destination)
        except OSError:
            continue
        copied += 1
    return copied


@functools.cache
def cache_location() -> CacheLocation:
    """Return this process's `CacheLocation` (chosen once, at the first kernel).

    When it is the user's directory, the installation's own cache, if it
    has one, is copied into it first (`seed_from_package`).
    """
    location = select_cache_location(configured=numba.core.config.CACHE_DIR)
    if location.redirected:
        seed_from_package(PACKAGE_DIR / "__pycache__", numba_cache_subdir(location.path))
    return location


@contextmanager
def _numba_cache_dir(path: Path):
    """Set ``numba.config.CACHE_DIR`` to ``path`` for the duration only."""
    saved = numba.core.config.CACHE_DIR
    numba.core.config.CACHE_DIR = str(path)
    try:
        yield
    finally:
        numba.core.config.CACHE_DIR = saved


def njit(*args: Any, **options: Any) -> Callable:
    """`numba.njit`, with the cache in `cache_location` when ``cache=True``.

    Used exactly as `numba.njit` (bare or with options); the compiled code
    is the same.
    """
    if args and callable(args[0]):
        return njit(**options)(args[0])

    def decorate(func: Callable) -> Callable:
        location = cache_location() if options.get("cache") else None
        if location is None or not location.redirected:
            return numba.njit(*args, **options)(func)
        with _numba_cache_dir(location.path):
            return numba.njit(*args, **options)(func)

    return decorate
