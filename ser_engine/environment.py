"""The environment of the engine's child processes: an allow-list, never the parent's secrets.

A child process inherits its parent's environment.  The bot's process holds
``DISCORD_TOKEN`` and ``DATABASE_URL`` (and may hold other keys) in its
environment; the processes the engine starts -- the ffmpeg and ffprobe
decoders, which parse files strangers send, and the analysis and retraining
worker processes -- need none of them.  They get only the variables of
:data:`ALLOWED_NAMES` and :data:`ALLOWED_PREFIXES`: an allow-list, so that a
secret under a name nobody thought of is not passed on either.

Subprocesses take the mapping as ``env=`` (:func:`minimal_environment`).
:mod:`multiprocessing` gives its ``forkserver`` and ``spawn`` children no such
parameter: it starts them by executing :func:`multiprocessing.get_executable`
with the parent's environment.  :func:`minimal_process_context` therefore
points that executable (``set_executable``, the documented way to choose the
interpreter) at a launcher script that executes the same interpreter under
``env -i`` with the allowed variables only, so the forkserver, every worker it
forks and every spawned child start with the minimal environment: it is what
``/proc/<pid>/environ`` shows, not a copy trimmed inside the child.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import shlex
import stat
import sys
import tempfile
from collections.abc import Mapping
from multiprocessing.context import BaseContext
from typing import Final

__all__ = ["ALLOWED_NAMES", "ALLOWED_PREFIXES", "minimal_environment", "minimal_process_context", "python_launcher"]

ALLOWED_NAMES: Final[frozenset[str]] = frozenset(
    {
        # Where programs and libraries are, locale and time zone, home and temporary files.
        "PATH", "LD_LIBRARY_PATH", "LANG", "LANGUAGE", "TZ", "HOME", "TMPDIR", "TEMP", "TMP",
        # Windows needs these to start Python at all.
        "SYSTEMROOT", "SYSTEMDRIVE", "WINDIR", "COMSPEC", "PATHEXT",
        # Thread pools of the numerical libraries (the engine sizes them per worker).
        "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "VECLIB_MAXIMUM_THREADS",
        "NUMEXPR_NUM_THREADS", "BLIS_NUM_THREADS", "NUMBA_NUM_THREADS",
        # Writable caches of numba (librosa) and matplotlib (the Dockerfile sets them), glibc's malloc.
        "NUMBA_CACHE_DIR", "MPLCONFIGDIR", "XDG_CACHE_HOME", "MALLOC_ARENA_MAX", "GLIBC_TUNABLES",
        # Which Python and which code the child runs: the same as the parent's.
        "PYTHONPATH", "PYTHONHOME", "PYTHONSAFEPATH", "PYTHONNOUSERSITE", "PYTHONDONTWRITEBYTECODE",
        "PYTHONUNBUFFERED", "PYTHONHASHSEED", "PYTHONIOENCODING", "PYTHONUTF8", "PYTHONWARNINGS",
        "PYTHONFAULTHANDLER", "VIRTUAL_ENV",
    }
)  # fmt: skip
"""Environment variables a child process of the engine receives (when the parent has them)."""

ALLOWED_PREFIXES: Final[tuple[str, ...]] = ("LC_",)
"""Prefixes of further allowed names: the locale categories (``LC_ALL``, ``LC_CTYPE``...)."""


def minimal_environment(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The allowed subset of an environment, for a child process.

    Parameters
    ----------
    environ : mapping of str to str, optional
        The environment to filter (default ``os.environ``, read now).

    Returns
    -------
    dict of str to str
        The variables named in :data:`ALLOWED_NAMES` or starting with one of
        :data:`ALLOWED_PREFIXES`, with their values; nothing else (no
        ``DISCORD_TOKEN``, no ``DATABASE_URL``).  Pass it as ``env=`` to
        :func:`subprocess.run` / :class:`subprocess.Popen`.
    """
    source = os.environ if environ is None else environ
    return {
        name: value
        for name, value in source.items()
        if name in ALLOWED_NAMES or name.startswith(ALLOWED_PREFIXES)
    }


def _launcher_dir() -> str:
    """A private folder (mode 0700, owned by this user) for launcher scripts: ``$TMPDIR/ser-launch-<uid>``.

    Kept across processes and never removed at exit: :mod:`multiprocessing`
    executes the launcher late too (its resource tracker, started on demand
    while the interpreter shuts down), and a folder removed by an ``atexit``
    hook made such a start fail with "cannot open ..." (seen in
    ``tests/test_bot_faults.py``).  The scripts are named by the hash of their
    text and hold no secret (only allow-listed variables), so a few stay.

    Raises
    ------
    OSError
        The folder exists but is a link, not a folder, not owned by this user,
        or open to others (someone else made it: refuse to run their scripts).
    """
    path = os.path.join(tempfile.gettempdir(), f"ser-launch-{os.getuid()}")
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o077:
        raise OSError(f"python_launcher: {path} is not a private folder of this user; remove it or set TMPDIR")
    return path


def _launcher(python: str, env_items: tuple[tuple[str, str], ...]) -> str:
    """The ``/bin/sh`` script that runs ``python`` under ``env -i`` with ``env_items``, written if missing.

    Named by the hash of its text, written under a temporary name and renamed
    into place, so a concurrent caller never executes a half-written script;
    written again if a temporary-file cleaner removed it.
    """
    assignments = " ".join(shlex.quote(f"{name}={value}") for name, value in env_items)
    script = f'#!/bin/sh\nexec /usr/bin/env -i {assignments} {shlex.quote(python)} "$@"\n'
    folder = _launcher_dir()
    path = os.path.join(folder, "python-" + hashlib.sha256(script.encode()).hexdigest()[:16])
    if not os.path.isfile(path):
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".launcher-")
        with os.fdopen(fd, "w") as fh:
            fh.write(script)
        os.chmod(tmp, 0o700)
        os.replace(tmp, path)
    if not os.access(path, os.X_OK):  # Linux's access() also says no on a noexec mount
        raise OSError(f"python_launcher: {folder} does not allow executables (noexec?); set TMPDIR to one that does")
    return path


def python_launcher(environ: Mapping[str, str] | None = None) -> str:
    """An executable that runs this Python interpreter with the minimal environment.

    Parameters
    ----------
    environ : mapping of str to str, optional
        The environment whose allowed subset the launcher passes on (default
        ``os.environ``, read now; the values are written into the launcher).

    Returns
    -------
    str
        Path of a launcher script (``/bin/sh``, mode 0700, in a private
        folder ``$TMPDIR/ser-launch-<uid>``) that executes
        ``/usr/bin/env -i <allowed variables> <sys.executable> "$@"``: a
        drop-in for the interpreter that :mod:`multiprocessing` executes.

    Raises
    ------
    OSError
        On Windows (no ``/bin/sh``), or when the script cannot be written or
        executed where it is (a temporary folder mounted ``noexec``: set
        ``TMPDIR``).
    """
    if sys.platform == "win32":
        raise OSError("python_launcher: needs /bin/sh and /usr/bin/env (POSIX only)")
    env = minimal_environment(environ)
    return _launcher(sys.executable, tuple(sorted(env.items())))


def minimal_process_context(method: str | None = None) -> BaseContext:
    """A :mod:`multiprocessing` context whose children start with the minimal environment.

    Parameters
    ----------
    method : {"forkserver", "spawn"}, optional
        The start method (default: ``forkserver`` on Linux, ``spawn``
        elsewhere).  ``fork`` copies the parent's memory, secrets included,
        and is refused.

    Returns
    -------
    multiprocessing.context.BaseContext
        ``multiprocessing.get_context(method)`` after ``set_executable`` to
        :func:`python_launcher` (on Windows, where there is no launcher, the
        plain context).  ``set_executable`` is process-wide in
        :mod:`multiprocessing`: every ``spawn`` or ``forkserver`` child this
        process starts afterwards, and a forkserver started afterwards, get
        the minimal environment; a forkserver already running keeps its own.

    Raises
    ------
    ValueError
        ``method`` is ``"fork"`` or unknown.
    OSError
        The launcher cannot be written or executed (see :func:`python_launcher`).
    """
    if method is None:
        linux = sys.platform.startswith("linux")
        method = "forkserver" if linux and "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
    if method not in ("forkserver", "spawn"):
        raise ValueError(f"minimal_process_context: method must be 'forkserver' or 'spawn', not {method!r}")
    ctx = multiprocessing.get_context(method)
    if sys.platform != "win32":
        ctx.set_executable(python_launcher())
    return ctx
