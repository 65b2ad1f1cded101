"""Model registry: numbered versions of model bundles, one of them active.

Layout of a registry folder (default ``models/registry``)::

    versions/v0001.joblib   the bundle (ser_engine.bundle.save_bundle)
    versions/v0001.json     its sidecar: SHA-256, labels, features, metadata, metrics
    versions/v0001.info.json  registry record: version, source, note, created_at, gate decision
    active.json             {"active": 3, "history": [1, 2], "updated_at": ...}

``active.json`` is the only file ever rewritten; it is replaced atomically
(temporary file, fsync, ``os.replace``, fsync of the folder), so a crash
leaves either the old pointer or the new one.  Bundles are immutable once
registered.  ``history`` lists the previously active versions, most recent
last: :meth:`ModelRegistry.rollback` re-activates the last one.

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
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Final

from .bundle import ModelBundle, atomic_write, load_bundle, save_bundle, sidecar_path
from .errors import ModelError, ModelNotFoundError

__all__ = ["DEFAULT_REGISTRY_DIR", "ModelRegistry", "ModelVersion", "headline_metrics"]

DEFAULT_REGISTRY_DIR: Final[Path] = Path(__file__).resolve().parents[1] / "models" / "registry"
"""``<repo>/models/registry``."""

POINTER: Final[str] = "active.json"


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

    Notes
    -----
    Writers in several processes are serialised only by the atomic pointer
    replacement (last writer wins); registering assigns the next free number
    with an exclusive file creation, so two registrations never share one.
    """

    def __init__(self, root: str | os.PathLike[str] | None = None) -> None:
        self.root = Path(root) if root is not None else DEFAULT_REGISTRY_DIR
        self.versions_dir = self.root / "versions"

    # ------------------------------------------------------------ reading
    def _bundle_path(self, version: int) -> Path:
        return self.versions_dir / f"v{version:04d}.joblib"

    def _info_path(self, version: int) -> Path:
        return self.versions_dir / f"v{version:04d}.info.json"

    def version_numbers(self) -> list[int]:
        """Registered version numbers, ascending."""
        if not self.versions_dir.is_dir():
            return []
        numbers = []
        for p in self.versions_dir.glob("v*.info.json"):
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
        """
        info_path = self._info_path(version)
        try:
            info = json.loads(info_path.read_text(encoding="utf-8"))
        except (FileNotFoundError, NotADirectoryError):
            raise ModelNotFoundError(f"There is no model version v{version}.") from None
        except (OSError, ValueError):
            raise ModelNotFoundError(f"The record of model version v{version} is unreadable.") from None
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

    def pointer(self) -> dict[str, Any]:
        """The parsed ``active.json`` (``{"active": None, "history": []}`` if absent or unreadable)."""
        try:
            data = json.loads((self.root / POINTER).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {"active": None, "history": []}
        if not isinstance(data, dict):
            return {"active": None, "history": []}
        active = data.get("active")
        history = [int(v) for v in data.get("history") or [] if isinstance(v, int)]
        return {**data, "active": active if isinstance(active, int) else None, "history": history}

    @property
    def active_version(self) -> int | None:
        """Number of the active version, or ``None`` when none was activated."""
        return self.pointer()["active"]

    @property
    def previous_version(self) -> int | None:
        """The version :meth:`rollback` would re-activate, or ``None``."""
        history = self.pointer()["history"]
        return history[-1] if history else None

    def load(self, version: int) -> ModelBundle:
        """Load and verify one version's bundle.

        Raises
        ------
        ModelNotFoundError, ModelIntegrityError, ModelCompatibilityError
            As :func:`ser_engine.bundle.load_bundle`; the message names the version.
        """
        self.get(version)  # ModelNotFoundError for unknown versions
        try:
            return load_bundle(self._bundle_path(version))
        except ModelError as exc:
            raise type(exc)(f"Model version v{version} refused: {exc.user_message}") from None

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
        self.versions_dir.mkdir(parents=True, exist_ok=True)
        number = (self.version_numbers() or [0])[-1] + 1
        while True:
            try:
                fd = os.open(self._info_path(number), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                number += 1
                continue
            os.close(fd)
            return number

    def _write_info(self, version: int, info: dict[str, Any]) -> None:
        _atomic_json(self._info_path(version), info)

    def register(
        self, bundle: ModelBundle, *, source: str, note: str = "", extra: dict[str, Any] | None = None
    ) -> ModelVersion:
        """Save a bundle as the next version (not activated).

        Parameters
        ----------
        bundle : ModelBundle
            A fitted bundle.
        source : str
            Where it comes from (``"retrain"``, ``"ser train"`` ...).
        note : str, optional
            Free text (e.g. why it was not promoted).
        extra : dict, optional
            More JSON-serialisable fields for the registry record.

        Returns
        -------
        ModelVersion
        """
        version = self._reserve()
        try:
            path = save_bundle(bundle, self._bundle_path(version))
        except BaseException:
            self._info_path(version).unlink(missing_ok=True)
            raise
        sha = json.loads(sidecar_path(path).read_text(encoding="utf-8"))["sha256"]
        info = {"version": version, "created_at": _now(), "source": source, "note": note, "sha256": sha,
                "labels": list(bundle.labels), **(extra or {})}  # fmt: skip
        self._write_info(version, info)
        return self.get(version)

    def import_file(self, path: str | os.PathLike[str], *, source: str | None = None, note: str = "") -> ModelVersion:
        """Copy an existing bundle (``.joblib`` and its ``.json``) in as the next version.

        The bundle is verified (:func:`~ser_engine.bundle.load_bundle`) before
        it is copied, and the copy is verified again.

        Raises
        ------
        ModelNotFoundError, ModelIntegrityError, ModelCompatibilityError
            If the bundle does not load.
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
        except BaseException:
            for f in (dst, sidecar_path(dst), self._info_path(version)):
                f.unlink(missing_ok=True)
            raise
        sidecar = json.loads(sidecar_path(dst).read_text(encoding="utf-8"))
        info = {"version": version, "created_at": _now(), "source": source or f"imported {src.name}",
                "note": note, "sha256": sidecar["sha256"], "labels": sidecar.get("labels", [])}  # fmt: skip
        self._write_info(version, info)
        return self.get(version)

    def ensure_default(self, default_path: str | os.PathLike[str]) -> int:
        """Adopt ``default_path`` as version 1 and activate it when the registry is empty.

        Returns
        -------
        int
            The active version after the call.

        Raises
        ------
        ModelError
            If the registry is empty and ``default_path`` does not load.
        """
        active = self.active_version
        if active is not None:
            return active
        numbers = self.version_numbers()
        if numbers:
            version = numbers[-1]
        else:
            version = self.import_file(default_path, source=f"adopted {Path(default_path).name}").version
        self.activate(version)
        return version

    def annotate(self, version: int, **fields: Any) -> None:
        """Add or replace fields of a version's registry record (e.g. ``promoted=False``)."""
        info = self.get(version).info
        info.update(fields)
        self._write_info(version, info)

    def activate(self, version: int, *, _push: bool = True) -> ModelBundle:
        """Make ``version`` active, after verifying that its bundle loads.

        The current active version goes to the history (for :meth:`rollback`).

        Returns
        -------
        ModelBundle
            The verified bundle, ready for ``Predictor(bundle)``.

        Raises
        ------
        ModelNotFoundError, ModelIntegrityError, ModelCompatibilityError
            If the version is unknown or its bundle is refused; nothing changes then.
        """
        bundle = self.load(version)
        ptr = self.pointer()
        history = list(ptr["history"])
        if _push and ptr["active"] is not None and ptr["active"] != version:
            history.append(ptr["active"])
        self.root.mkdir(parents=True, exist_ok=True)
        _atomic_json(self.root / POINTER, {"active": version, "history": history[-50:], "updated_at": _now()})
        return bundle

    def rollback(self) -> tuple[int, ModelBundle]:
        """Re-activate the previously active version.

        Returns
        -------
        (int, ModelBundle)
            The version now active and its verified bundle.

        Raises
        ------
        ModelNotFoundError
            If there is no previous version.
        ModelError
            If the previous version's bundle is refused; nothing changes then.
        """
        ptr = self.pointer()
        if not ptr["history"]:
            raise ModelNotFoundError("There is no previous model version to roll back to.")
        target = ptr["history"][-1]
        bundle = self.load(target)
        _atomic_json(self.root / POINTER, {"active": target, "history": ptr["history"][:-1], "updated_at": _now()})
        return target, bundle
