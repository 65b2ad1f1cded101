"""Model registry: numbered versions of model bundles, one of them active.

Layout of a registry folder (default ``models/registry``)::

    versions/v0001.joblib   the bundle (ser_engine.bundle.save_bundle)
    versions/v0001.json     its sidecar: SHA-256, labels, features, metadata, metrics
    versions/v0001.info.json  registry record: version, source, note, created_at, gate decision
    versions/v0004.reserved   a number claimed by a registration still writing its files
    active.json             {"active": 3, "history": [1, 2], "revision": 7, "updated_at": ...}
    .registry.lock          the writers' lock (see below)

``active.json`` is the only file ever rewritten; it is replaced atomically
(temporary file, fsync, ``os.replace``, fsync of the folder), so a crash
leaves either the old pointer or the new one.  Bundles are immutable once
registered.  ``history`` lists the previously active versions, most recent
last: :meth:`ModelRegistry.rollback` re-activates the last one.
``revision`` counts the pointer's writes (+1 each).

Several processes may share one registry (the bot and its ``/retrain``
child, two bots, ``ser models``): every read-modify-write of
``active.json`` or of a version record (activation, rollback, promotion,
start-up adoption by :meth:`ModelRegistry.ensure_default`, reserving a
version number) runs under one exclusive lock on ``.registry.lock`` in the
registry folder (:class:`filelock.FileLock`: ``flock(2)`` on POSIX,
``LockFileEx`` on Windows; the kernel releases it when its process dies, so
a killed writer leaves no stale lock).  Without it, two activations that
read the same pointer both write, and one of them is lost from
``history`` (measured: 4 processes doing 25 random activations and
rollbacks each kept only 37-46 of their 87-96 writes; with the lock, all,
``tests/test_registry.py``).  Readers (:meth:`ModelRegistry.pointer`, :meth:`~ModelRegistry.get`)
take no lock: the atomic replacement already shows them a whole file.

Every activation loads the bundle first (:func:`ser_engine.bundle.load_bundle`
verifies its SHA-256 against the sidecar): a bundle altered after it was
written is refused with :class:`~ser_engine.errors.ModelIntegrityError` and
the pointer is not touched, so the previous version stays active.

The registry only manages files; a running :class:`~ser_engine.service.EmotionService`
is switched with ``service.swap_predictor(Predictor(bundle))`` after
:meth:`ModelRegistry.activate` returned the verified bundle.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Final

from filelock import FileLock, Timeout

from .bundle import ModelBundle, atomic_write, load_bundle, save_bundle, sidecar_path
from .errors import ModelError, ModelNotFoundError

__all__ = ["DEFAULT_REGISTRY_DIR", "LOCK_FILE", "LOCK_TIMEOUT_S", "ModelRegistry", "ModelVersion", "headline_metrics"]

DEFAULT_REGISTRY_DIR: Final[Path] = Path(__file__).resolve().parents[1] / "models" / "registry"
"""``<repo>/models/registry``."""

POINTER: Final[str] = "active.json"

LOCK_FILE: Final[str] = ".registry.lock"
"""The lock file in the registry folder that serialises writers (see the module docstring)."""

LOCK_TIMEOUT_S: Final[float] = 60.0
"""Seconds a writer waits for the registry lock before giving up.

A holder keeps the lock for one pointer update, at most one bundle load
(~15 ms for the shipped 1.2 MB bundle, measured with :func:`load_bundle`)
or one bundle save: seconds would already mean a stuck process."""

HISTORY_LIMIT: Final[int] = 50
"""Previously active versions kept in ``active.json`` for :meth:`ModelRegistry.rollback`."""


def headline_metrics(metadata: dict[str, Any]) -> dict[str, float]:
    """Speaker-independent headline numbers of a bundle's metadata, if any.

    Reads ``metadata["metrics"]["speaker"]`` (written by ``ser train``,
    :meth:`ser_engine.evaluation.EvaluationReport.summary`) or
    ``metadata["comparison"]["candidate"]`` (written by :mod:`ser_engine.retrain`).

    Returns
    -------
    dict of str to float
        Subset of ``macro_f1``, ``uar``, ``accuracy``; empty if unknown.
    """
    source: Any = (metadata.get("comparison") or {}).get("candidate")
    if not isinstance(source, dict):
        source = (metadata.get("metrics") or {}).get("speaker")
    if not isinstance(source, dict):
        return {}
    return {k: float(source[k]) for k in ("macro_f1", "uar", "accuracy") if isinstance(source.get(k), (int, float))}


@dataclass(frozen=True)
class ModelVersion:
    """One registered bundle.

    Attributes
    ----------
    version : int
        1, 2, 3 ... in registration order.
    path : Path
        The ``.joblib`` file.
    sha256 : str
        SHA-256 recorded in the sidecar when the bundle was written.
    created_at : str
        UTC ISO 8601 time of registration.
    source : str
        How it got here, e.g. ``"adopted models/ravdess-8class.joblib"``, ``"retrain"``, ``"ser train"``.
    labels : tuple of str
    metadata : dict
        The bundle's metadata (training data, metrics, recipe) from its sidecar.
    info : dict
        The registry record (``note``, ``promoted``, ``gate`` ...).
    """

    version: int
    path: Path
    sha256: str
    created_at: str
    source: str
    labels: tuple[str, ...]
    metadata: dict[str, Any] = field(repr=False)
    info: dict[str, Any] = field(repr=False)

    @property
    def name(self) -> str:
        """``"v3"``."""
        return f"v{self.version}"

    @property
    def metrics(self) -> dict[str, float]:
        """:func:`headline_metrics` of the metadata."""
        return headline_metrics(self.metadata)

    @property
    def promoted(self) -> bool:
        """False when a quality gate refused this version (its record says ``"promoted": false``).

        Versions registered without a gate (the adopted default, ``ser train
        --registry``, imports) count as promoted: an operator put them there.
        """
        return self.info.get("promoted") is not False


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _atomic_json(path: Path, data: dict[str, Any]) -> None:
    atomic_write(path, (json.dumps(data, indent=2) + "\n").encode("utf-8"))


class ModelRegistry:
    """Versions of model bundles in one folder, with an atomic "active" pointer.

    Parameters
    ----------
    root : str or os.PathLike, optional
        Registry folder (default :data:`DEFAULT_REGISTRY_DIR`); created on first write.
    lock_timeout_s : float, optional, keyword-only
        Seconds a writer waits for the lock (default :data:`LOCK_TIMEOUT_S`).

    Notes
    -----
    Writers in several processes (or threads) are serialised by an exclusive
    lock on :data:`LOCK_FILE` in ``root``, held for every read-modify-write
    (see the module docstring).  A writer that cannot get the lock within
    ``lock_timeout_s`` raises :class:`~ser_engine.errors.ModelError` and
    changes nothing.  The lock is re-entrant within one thread, so
    :meth:`ensure_default` and :meth:`promote` hold it across the
    registration and activation they combine.
    """

    def __init__(self, root: str | os.PathLike[str] | None = None, *, lock_timeout_s: float = LOCK_TIMEOUT_S) -> None:
        self.root = Path(root) if root is not None else DEFAULT_REGISTRY_DIR
        self.versions_dir = self.root / "versions"
        self.lock_timeout_s = float(lock_timeout_s)
        self._lock = FileLock(os.fspath(self.root / LOCK_FILE), timeout=self.lock_timeout_s)

    @contextmanager
    def _locked(self) -> Iterator[None]:
        """Hold the registry's write lock (creating the folder first).

        Raises
        ------
        ModelError
            The lock was not obtained within ``lock_timeout_s``, or the
            folder or its lock file cannot be created.
        """
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            self._lock.acquire()
        except Timeout:
            raise ModelError(
                f"The model registry is busy (another process has held its lock for over {self.lock_timeout_s:g} s); "
                "nothing was changed, try again later."
            ) from None
        except OSError as exc:
            raise ModelError(f"The model registry folder cannot be written ({type(exc).__name__}).") from None
        try:
            yield
        finally:
            self._lock.release()

    # ------------------------------------------------------------ reading
    def _bundle_path(self, version: int) -> Path:
        return self.versions_dir / f"v{version:04d}.joblib"

    def _info_path(self, version: int) -> Path:
        return self.versions_dir / f"v{version:04d}.info.json"

    def _reservation_path(self, version: int) -> Path:
        return self.versions_dir / f"v{version:04d}.reserved"

    def version_numbers(self) -> list[int]:
        """Registered version numbers, ascending (versions still being written are not listed)."""
        return self._numbers("v*.info.json")

    def _numbers(self, pattern: str) -> list[int]:
        if not self.versions_dir.is_dir():
            return []
        numbers = []
        for p in self.versions_dir.glob(pattern):
            digits = p.name[1:].split(".", 1)[0]
            if digits.isdigit():
                numbers.append(int(digits))
        return sorted(numbers)

    def get(self, version: int) -> ModelVersion:
        """The record of one version (without loading its model).

        Raises
        ------
        ModelNotFoundError
            If no such version is registered.
        ModelError
            If its record exists but cannot be read or parsed.
        """
        info_path = self._info_path(version)
        try:
            info = json.loads(info_path.read_text(encoding="utf-8"))
        except (FileNotFoundError, NotADirectoryError):
            raise ModelNotFoundError(f"There is no model version v{version}.") from None
        except (OSError, ValueError):
            raise ModelError(f"The record of model version v{version} is unreadable.") from None
        if not isinstance(info, dict):
            raise ModelError(f"The record of model version v{version} is unreadable.")
        path = self._bundle_path(version)
        try:
            sidecar = json.loads(sidecar_path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            sidecar = {}
        return ModelVersion(
            version=version,
            path=path,
            sha256=str(sidecar.get("sha256") or info.get("sha256") or ""),
            created_at=str(info.get("created_at", "")),
            source=str(info.get("source", "")),
            labels=tuple(sidecar.get("labels") or info.get("labels") or ()),
            metadata=dict(sidecar.get("metadata") or {}),
            info=info,
        )

    def list(self) -> list[ModelVersion]:
        """Every registered version, oldest first."""
        return [self.get(v) for v in self.version_numbers()]

    def _read_pointer(self) -> dict[str, Any] | None:
        """``active.json`` parsed and checked; None when it does not exist.

        Raises
        ------
        ModelError
            It exists but cannot be read, is not JSON, or its ``active`` /
            ``history`` are not version numbers.
        """
        try:
            text = (self.root / POINTER).read_text(encoding="utf-8")
        except (FileNotFoundError, NotADirectoryError):
            return None
        except (OSError, UnicodeDecodeError) as exc:
            raise ModelError(f"The model registry's {POINTER} cannot be read ({type(exc).__name__}).") from None
        try:
            data = json.loads(text)
        except ValueError:
            raise ModelError(f"The model registry's {POINTER} is not valid JSON.") from None

        def is_number(v: Any) -> bool:
            return isinstance(v, int) and not isinstance(v, bool) and v > 0

        history = data.get("history", []) if isinstance(data, dict) else None
        if (
            not isinstance(data, dict)
            or not is_number(data.get("active"))
            or not isinstance(history, list)
            or not all(is_number(v) for v in history)
        ):
            raise ModelError(f"The model registry's {POINTER} does not name an active version and its history.")
        revision = data.get("revision", 0)
        return {**data, "history": list(history), "revision": revision if is_number(revision) else 0}

    def pointer(self) -> dict[str, Any]:
        """The parsed ``active.json``, for display.

        Returns
        -------
        dict
            ``active`` (int or None), ``history`` (list of int, oldest
            first), ``revision`` (int, writes so far), ``updated_at``; ``{"active":
            None, "history": [], "revision": 0}`` if absent or unreadable
            (:meth:`ensure_default` refuses an unreadable one instead).
        """
        try:
            ptr = self._read_pointer()
        except ModelError:
            ptr = None
        return ptr if ptr is not None else {"active": None, "history": [], "revision": 0}

    @property
    def active_version(self) -> int | None:
        """Number of the active version, or ``None`` when none was activated."""
        return self.pointer()["active"]  # type: ignore[no-any-return]

    @property
    def previous_version(self) -> int | None:
        """The version :meth:`rollback` would re-activate, or ``None``."""
        history = self.pointer()["history"]
        return history[-1] if history else None

    def load(self, version: int) -> ModelBundle:
        """Load and verify one version's bundle.

        Returns
        -------
        ModelBundle
            Named ``"v<version>"``, so its :attr:`~ser_engine.bundle.ModelBundle.model_version`
            is ``"v3@sha256:<hex>"``.

        Raises
        ------
        ModelNotFoundError, ModelIntegrityError, ModelCompatibilityError
            As :func:`ser_engine.bundle.load_bundle` (including its signature
            check when ``SER_MODEL_HMAC_KEY`` is set); the message names the version.
        """
        self.get(version)  # ModelNotFoundError for unknown versions
        try:
            bundle = load_bundle(self._bundle_path(version))
        except ModelError as exc:
            raise type(exc)(f"Model version v{version} refused: {exc.user_message}") from None
        bundle.name = f"v{version}"
        return bundle

    def load_active(self) -> tuple[int, ModelBundle]:
        """Load the active version, falling back to earlier active ones that still load.

        The pointer is not changed by a fallback; the caller should log it.

        Returns
        -------
        (int, ModelBundle)
            The version actually loaded and its bundle.

        Raises
        ------
        ModelNotFoundError
            If no version is active.
        ModelError
            The error of the active version when no candidate loads.
        """
        ptr = self.pointer()
        if ptr["active"] is None:
            raise ModelNotFoundError(f"No model version is active in {self.root}.")
        first_error: ModelError | None = None
        for version in [ptr["active"], *reversed(ptr["history"])]:
            try:
                return version, self.load(version)
            except ModelError as exc:
                first_error = first_error or exc
        assert first_error is not None
        raise first_error

    # ------------------------------------------------------------ writing
    def _reserve(self) -> int:
        """Claim the next version number with a ``vNNNN.reserved`` marker (under the lock).

        The number is one above every registered, reserved or half-written
        version; the marker goes when the version's record is written (or
        its registration fails), and a marker left by a killed process only
        retires its number.
        """
        with self._locked():
            self.versions_dir.mkdir(parents=True, exist_ok=True)
            taken = self._numbers("v*.info.json") + self._numbers("v*.reserved") + self._numbers("v*.joblib")
            number = max(taken, default=0) + 1
            fd = os.open(self._reservation_path(number), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            os.close(fd)
            return number

    def _write_info(self, version: int, info: dict[str, Any]) -> None:
        _atomic_json(self._info_path(version), info)

    def _abandon(self, version: int) -> None:
        """Remove the files of a registration that failed (its number stays retired)."""
        for f in (self._bundle_path(version), sidecar_path(self._bundle_path(version)), self._info_path(version)):
            f.unlink(missing_ok=True)

    def register(
        self, bundle: ModelBundle, *, source: str, note: str = "", extra: dict[str, Any] | None = None
    ) -> ModelVersion:
        """Save a bundle as the next version (not activated).

        The number is reserved under the registry lock; the bundle is written
        under that unique number without the lock, and the version appears
        (:meth:`version_numbers`) only once its record is written, last.

        Parameters
        ----------
        bundle : ModelBundle
            A fitted bundle.
        source : str
            Where it comes from (``"retrain"``, ``"ser train"`` ...).
        note : str, optional
            Free text (e.g. why it was not promoted).
        extra : dict, optional
            More JSON-serialisable fields for the registry record
            (``promoted=False`` marks a version a quality gate refused).

        Returns
        -------
        ModelVersion

        Raises
        ------
        ModelError
            The registry lock could not be obtained.
        OSError, ValueError
            As :func:`~ser_engine.bundle.save_bundle`; nothing is registered then.
        """
        version = self._reserve()
        try:
            path = save_bundle(bundle, self._bundle_path(version))
            sha = json.loads(sidecar_path(path).read_text(encoding="utf-8"))["sha256"]
            info = {"version": version, "created_at": _now(), "source": source, "note": note, "sha256": sha,
                    "labels": list(bundle.labels), **(extra or {})}  # fmt: skip
            self._write_info(version, info)
        except BaseException:
            self._abandon(version)
            raise
        finally:
            self._reservation_path(version).unlink(missing_ok=True)
        return self.get(version)

    def import_file(self, path: str | os.PathLike[str], *, source: str | None = None, note: str = "") -> ModelVersion:
        """Copy an existing bundle (``.joblib`` and its ``.json``) in as the next version.

        The bundle is verified (:func:`~ser_engine.bundle.load_bundle`) before
        it is copied, and the copy is verified again.

        Raises
        ------
        ModelNotFoundError, ModelIntegrityError, ModelCompatibilityError
            If the bundle does not load.
        ModelError
            The registry lock could not be obtained.
        """
        src = Path(path)
        load_bundle(src)
        version = self._reserve()
        dst = self._bundle_path(version)
        try:
            for a, b in ((src, dst), (sidecar_path(src), sidecar_path(dst))):
                tmp = b.with_name(f".{b.name}.tmp")
                shutil.copyfile(a, tmp)
                os.replace(tmp, b)
            load_bundle(dst)
            sidecar = json.loads(sidecar_path(dst).read_text(encoding="utf-8"))
            info = {"version": version, "created_at": _now(), "source": source or f"imported {src.name}",
                    "note": note, "sha256": sidecar["sha256"], "labels": sidecar.get("labels", [])}  # fmt: skip
            self._write_info(version, info)
        except BaseException:
            self._abandon(version)
            raise
        finally:
            self._reservation_path(version).unlink(missing_ok=True)
        return self.get(version)

    def ensure_default(self, default_path: str | os.PathLike[str]) -> int:
        """Make sure a version is active: keep the pointer, else adopt one, under the lock.

        * ``active.json`` names a registered version: nothing changes.
        * There is no ``active.json`` ("not found"): the newest *promoted*
          version (:attr:`ModelVersion.promoted`; never one a quality gate
          refused) is activated; with none, ``default_path`` is imported as
          the next version (version 1 in an empty registry) and activated.
        * Anything else is refused rather than papered over: an unreadable
          or malformed ``active.json``, one naming an unregistered version,
          an unreadable version record, or a chosen bundle that does not
          load.  Nothing is written then.

        Two processes starting on one empty registry adopt the default once.

        Parameters
        ----------
        default_path : str or os.PathLike
            The bundle to adopt when no promoted version exists (e.g. the
            shipped model).

        Returns
        -------
        int
            The active version after the call.

        Raises
        ------
        ModelError
            In the refusal cases above (its message says which), or when the
            lock cannot be obtained.
        ModelNotFoundError, ModelIntegrityError, ModelCompatibilityError
            ``default_path`` had to be adopted and does not load.
        """
        with self._locked():
            ptr = self._read_pointer()
            if ptr is not None:
                active: int = ptr["active"]
                if not self._info_path(active).is_file():
                    raise ModelError(
                        f"The model registry's {POINTER} names v{active}, which is not registered; "
                        "activate an existing version (ser models activate) or remove the pointer."
                    )
                return active
            version = next((v for v in reversed(self.version_numbers()) if self.get(v).promoted), None)
            if version is None:
                version = self.import_file(default_path, source=f"adopted {Path(default_path).name}").version
            self.activate(version)
            return version

    def annotate(self, version: int, **fields: Any) -> None:
        """Add or replace fields of a version's registry record (e.g. ``promoted=False``), under the lock.

        Raises
        ------
        ModelNotFoundError
            If the version is not registered.
        ModelError
            If its record is unreadable or the lock cannot be obtained.
        """
        with self._locked():
            info = self.get(version).info
            info.update(fields)
            self._write_info(version, info)

    def _write_pointer(self, previous: dict[str, Any] | None, active: int, history: list[int]) -> None:
        revision = (previous or {}).get("revision", 0) + 1
        _atomic_json(self.root / POINTER, {"active": active, "history": history[-HISTORY_LIMIT:],
                                           "revision": revision, "updated_at": _now()})  # fmt: skip

    def _pointer_for_update(self) -> dict[str, Any] | None:
        """The pointer to update (under the lock); an unreadable one is replaced (history lost)."""
        try:
            return self._read_pointer()
        except ModelError:
            # An explicit activation repairs a damaged pointer; ensure_default refuses instead.
            return None

    def activate(self, version: int, *, _push: bool = True) -> ModelBundle:
        """Make ``version`` active, after verifying that its bundle loads.

        The current active version goes to the history (for :meth:`rollback`).
        The bundle is verified before the lock is taken (bundles never change
        once registered); the pointer is read and replaced under the lock.

        Returns
        -------
        ModelBundle
            The verified bundle, ready for ``Predictor(bundle)``.

        Raises
        ------
        ModelNotFoundError, ModelIntegrityError, ModelCompatibilityError
            If the version is unknown or its bundle is refused; nothing changes then.
        ModelError
            If the lock cannot be obtained; nothing changes then.
        """
        bundle = self.load(version)
        with self._locked():
            ptr = self._pointer_for_update()
            history = list(ptr["history"]) if ptr is not None else []
            if _push and ptr is not None and ptr["active"] != version:
                history.append(ptr["active"])
            self._write_pointer(ptr, version, history)
        return bundle

    def promote(self, version: int) -> ModelBundle:
        """Activate a version and mark it ``promoted=True``, as one step under the lock (the end of a retrain).

        Returns
        -------
        ModelBundle
            The verified bundle.

        Raises
        ------
        ModelNotFoundError, ModelIntegrityError, ModelCompatibilityError, ModelError
            As :meth:`activate`; nothing changes then.
        """
        with self._locked():
            bundle = self.activate(version)
            self.annotate(version, promoted=True)
        return bundle

    def rollback(self) -> tuple[int, ModelBundle]:
        """Re-activate the previously active version.

        The pointer is read, the target verified and the pointer replaced
        under one hold of the lock.

        Returns
        -------
        (int, ModelBundle)
            The version now active and its verified bundle.

        Raises
        ------
        ModelNotFoundError
            If there is no previous version.
        ModelError
            If the previous version's bundle is refused, or the lock cannot
            be obtained; nothing changes then.
        """
        with self._locked():
            ptr = self._pointer_for_update()
            if ptr is None or not ptr["history"]:
                raise ModelNotFoundError("There is no previous model version to roll back to.")
            target = ptr["history"][-1]
            bundle = self.load(target)
            self._write_pointer(ptr, target, ptr["history"][:-1])
        return target, bundle
