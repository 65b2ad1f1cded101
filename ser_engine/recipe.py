"""A training recipe as one value: what ``ser train``, ``ser evaluate`` and ``/retrain`` run.

:class:`Recipe` is frozen configuration (features, speaker normalisation,
augmentation, calibration, MLP preset and parameters, seed).  It is saved
as ``metadata["recipe"]`` in every bundle that ``ser train`` or
:func:`ser_engine.retrain.run_retrain` writes, and
:meth:`Recipe.from_bundle` gives it back -- also for older bundles that
only recorded the individual fields (``preset``, ``mlp_params``,
``normalization``, ``augment``, ``temperature``, ``inner_folds`` ...).

:class:`RecipeModel` runs a recipe on a feature matrix, following
scikit-learn's estimator conventions: :meth:`RecipeModel.fit` returns the
object, and what it learned ends in ``_`` (``normalizer_``, ``pipeline_``,
``temperature_``, ...).

The defaults of :class:`Recipe` are the shipped model's recipe
(``models/README.md``, ``models/ravdess-8class.json``): the 2378 default
features, per-speaker normalisation (5 clips), augmentation with Opus
24 kbit/s, white noise at 20 dB SNR and pitch +1 semitone, a temperature
fitted on 3 inner speaker folds, preset ``default`` (64 ReLU units,
``alpha=3``), seed 0.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Final

import numpy as np

from .bundle import ModelBundle, sidecar_path
from .calibration import choose_recipe, normalise_split
from .corpora import Clip
from .features import FeatureConfig
from .normalization import SpeakerNormalizer
from .predict import apply_temperature
from .training import PRESETS, build_pipeline, fit_pipeline, mlp_params

__all__ = ["BALANCE", "CALIBRATE_ON", "RECIPE_VERSION", "Recipe", "RecipeModel"]

RECIPE_VERSION: Final[int] = 3
"""Layout version of :meth:`Recipe.to_dict` (3: ``members``; 2: ``corpora``, ``codec``, ``balance``,
``calibrate_on``; 1 and 2 are read too)."""

#: Values of :attr:`Recipe.balance`.
BALANCE: Final[tuple[str, ...]] = ("none", "corpus", "label", "corpus+label")

#: Values of :attr:`Recipe.calibrate_on`.
CALIBRATE_ON: Final[tuple[str, ...]] = ("speakers", "corpora")

#: The old CLI's ``--inner-folds`` default, for bundles that were calibrated before recipes were saved.
_OLD_INNER_FOLDS: Final[int] = 5


def _plain(value: Any) -> Any:
    """Tuples to lists, recursively (JSON form)."""
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


def _mlp_overrides(params: Mapping[str, Any]) -> dict[str, Any]:
    """``MLPClassifier`` keyword arguments as the pipeline wants them (``hidden_layer_sizes`` a tuple)."""
    out = dict(params)
    if "hidden_layer_sizes" in out:
        out["hidden_layer_sizes"] = tuple(int(h) for h in out["hidden_layer_sizes"])
    return out


@dataclass(frozen=True)
class Recipe:
    """Everything that decides how a model is trained from a feature matrix (frozen).

    Parameters
    ----------
    features : FeatureConfig, default FeatureConfig()
        Features extracted from every clip (2378 values by default).
    normalization : {"speaker", "none"}, default "speaker"
        Standardise each speaker's features with that speaker's statistics
        (:class:`~ser_engine.normalization.SpeakerNormalizer`), or not.
    min_clips : int, default 5
        Clips of a speaker before prediction uses their own statistics.
    augment : tuple of str, default ("noise20", "opus24k", "pitch+1")
        Conditions of :data:`ser_engine.augment.CONDITIONS` whose degraded
        copies of every training clip are added to the training set; kept
        sorted (the set is the recipe).
    calibrate : bool, default True
        Fit a probability temperature on inner speaker-independent folds.
    inner_folds : int, default 3
        Folds of that inner ``GroupKFold`` (also for ``grid``).
    inner_fits : int or None, default None
        Fit only the first ``inner_fits`` inner folds (None: all).
    preset : str, default "default"
        A key of :data:`ser_engine.training.PRESETS`.
    mlp : mapping, default {}
        ``MLPClassifier`` keyword arguments replacing the preset's (e.g. ``{"max_iter": 200}``).
    scaler : bool, default True
        ``StandardScaler`` before the MLP.
    seed : int or None, default 0
        Seed of the MLP (and of the random split of ``ser evaluate``).
    grid : tuple of mapping, default ()
        ``MLPClassifier`` overrides to choose from by the inner folds (``ser --nested-grid``).
    unsure_below : float, default 0.5
        Confidence below which an answer is flagged unsure.
    corpora : tuple of str, default ()
        Names of the corpora (``Clip.corpus``, e.g. ``("ravdess", "nemo",
        "emotiontts")``) whose clips the recipe trains on (:meth:`select`);
        empty: every clip given.  Kept lower-case and sorted.  The labels are
        the union of the corpora's emotions (:func:`ser_engine.training.label_order`);
        a corpus without an emotion simply contributes no example of it.
    codec : str or None, default None
        Codec history given to every training clip that lacks it, before
        features and augmentation (:func:`ser_engine.training.featurize_conditions`'s
        ``codec``), e.g. ``"opus32k"``: RAVDESS' FLAC clips then went through
        Opus 32 kbit/s like the extra corpora, so the model cannot tell
        corpora apart by their codec.
    balance : {"none", "corpus", "label", "corpus+label"}, default "none"
        Weights of the clips in the MLP's loss (:meth:`sample_weight`).
        ``"corpus"``: every corpus weighs the same whatever its size (nEMO
        has 4481 clips, emotiontts 300).  ``"label"``: every emotion weighs
        the same: an emotion only one corpus has (RAVDESS' calm, 192 clips)
        against one all have (sad: 1036 clips in RAVDESS, nEMO and
        emotiontts) is otherwise swamped -- trained on the three corpora
        unweighted, 37 of 64 held-out RAVDESS calm clips were called sad
        (models/README.md).  ``"corpus+label"``: both factors multiplied.
    calibrate_on : {"speakers", "corpora"}, default "speakers"
        Held-out data of the temperature: ``"speakers"``, the out-of-fold
        predictions of :attr:`inner_folds` speaker folds (each held-out
        speaker normalised with their own statistics); ``"corpora"``, one fit
        per training corpus left out, its clips predicted both as new
        speakers (training statistics) and as known ones (their own), each
        over the emotions it has -- the confidence a model deserves on
        voices, languages and rooms it never heard (``models/README.md``).
        Needs two corpora or more and no :attr:`grid`.
    members : tuple of Recipe, default ()
        When given, the model is a pool of one classifier per member
        (:class:`ser_engine.ensemble.LogOpinionPool`): each member trains
        its own MLP on its own :attr:`corpora` (all when empty), with its own
        :attr:`augment`, :attr:`balance`, preset and :attr:`mlp`, on features
        normalised once by this recipe's speaker statistics; this recipe's
        :attr:`augment` becomes the union of the members', its
        :attr:`corpora` the union of theirs (when each names some), and its
        temperature is fitted on the pooled answer.  Members may not have
        members, must use this recipe's features, and this recipe then
        calibrates only on left-out corpora (``calibrate_on="corpora"``) or
        not at all.  Mappings (:meth:`to_dict` output) are accepted.

    Raises
    ------
    ValueError
        If the preset, normalisation, balance or a condition is unknown, or a number is out of range.
    """

    features: FeatureConfig = field(default_factory=FeatureConfig)
    normalization: str = "speaker"
    min_clips: int = 5
    augment: tuple[str, ...] = ("noise20", "opus24k", "pitch+1")
    calibrate: bool = True
    inner_folds: int = 3
    inner_fits: int | None = None
    preset: str = "default"
    mlp: Mapping[str, Any] = field(default_factory=dict)
    scaler: bool = True
    seed: int | None = 0
    grid: tuple[Mapping[str, Any], ...] = ()
    unsure_below: float = 0.5
    corpora: tuple[str, ...] = ()
    codec: str | None = None
    balance: str = "none"
    calibrate_on: str = "speakers"
    members: tuple[Recipe, ...] = ()

    def __post_init__(self) -> None:
        from .augment import condition_parts

        if self.preset not in PRESETS:
            raise ValueError(f"Recipe: unknown preset {self.preset!r}; choose from {sorted(PRESETS)}")
        if self.normalization not in ("none", "speaker"):
            raise ValueError(f"Recipe: normalization must be 'none' or 'speaker', got {self.normalization!r}")
        augment = tuple(sorted(dict.fromkeys(str(c) for c in self.augment)))
        for condition in augment:
            condition_parts(condition)  # ValueError if unknown
        if "clean" in augment:
            raise ValueError("Recipe: 'clean' is not an augmentation")
        if int(self.min_clips) < 2:
            raise ValueError(f"Recipe: min_clips must be >= 2, got {self.min_clips}")
        if int(self.inner_folds) < 2:
            raise ValueError(f"Recipe: inner_folds must be >= 2, got {self.inner_folds}")
        if self.inner_fits is not None and not 1 <= int(self.inner_fits) <= int(self.inner_folds):
            raise ValueError(f"Recipe: inner_fits must be in 1..inner_folds, got {self.inner_fits}")
        if not 0.0 <= float(self.unsure_below) <= 1.0:
            raise ValueError(f"Recipe: unsure_below must be in [0, 1], got {self.unsure_below}")
        if self.codec is not None and (not self.codec or len(condition_parts(self.codec)) != 1):
            raise ValueError(f"Recipe: codec must be one condition such as 'opus32k', got {self.codec!r}")
        if self.balance not in BALANCE:
            raise ValueError(f"Recipe: balance must be one of {list(BALANCE)}, got {self.balance!r}")
        if self.calibrate_on not in CALIBRATE_ON:
            raise ValueError(f"Recipe: calibrate_on must be one of {list(CALIBRATE_ON)}, got {self.calibrate_on!r}")
        if self.calibrate_on == "corpora" and self.grid:
            raise ValueError("Recipe: a grid is chosen by speaker folds; calibrate_on='corpora' takes none")
        if isinstance(self.corpora, str):
            raise ValueError("Recipe: corpora must be a sequence of corpus names, not one string")
        corpora = tuple(sorted(dict.fromkeys(str(c).strip().lower() for c in self.corpora)))
        if any(not c for c in corpora):
            raise ValueError("Recipe: an empty corpus name")
        features = self.features
        if isinstance(features, Mapping):
            features = FeatureConfig.from_dict(dict(features))
        members = tuple(Recipe.from_dict(m) if isinstance(m, Mapping) else m for m in self.members)
        if members:
            if any(not isinstance(m, Recipe) or m.members for m in members):
                raise ValueError("Recipe: members must be recipes without members of their own")
            if any(m.features != features for m in members):
                raise ValueError("Recipe: every member must use the recipe's features")
            if self.calibrate and self.calibrate_on != "corpora":
                raise ValueError("Recipe: a recipe with members calibrates on left-out corpora or not at all")
            augment = tuple(sorted({c for m in members for c in m.augment}))
            if not corpora and all(m.corpora for m in members):
                corpora = tuple(sorted({c for m in members for c in m.corpora}))
        set_ = object.__setattr__
        set_(self, "members", members)
        set_(self, "features", features)
        set_(self, "augment", augment)
        set_(self, "corpora", corpora)
        set_(self, "min_clips", int(self.min_clips))
        set_(self, "inner_folds", int(self.inner_folds))
        set_(self, "inner_fits", None if self.inner_fits is None else int(self.inner_fits))
        set_(self, "mlp", _mlp_overrides(self.mlp))
        set_(self, "grid", tuple(_mlp_overrides(g) for g in self.grid))
        set_(self, "seed", None if self.seed is None else int(self.seed))
        set_(self, "unsure_below", float(self.unsure_below))
        mlp_params(self.preset, self.mlp)  # unknown preset already refused; keeps the check in one place

    def __hash__(self) -> int:
        return hash(json.dumps(self.to_dict(), sort_keys=True))

    # ------------------------------------------------------------ derived
    def mlp_params(self) -> dict[str, Any]:
        """The ``MLPClassifier`` keyword arguments: the preset's, with :attr:`mlp` applied (a fresh dict)."""
        return mlp_params(self.preset, self.mlp)

    def with_mlp(self, **overrides: Any) -> Recipe:
        """A copy whose :attr:`mlp` also sets ``overrides`` (e.g. ``max_iter=200``)."""
        return replace(self, mlp={**self.mlp, **overrides})

    def select(self, clips: Sequence[Clip]) -> list[Clip]:
        """The clips of :attr:`corpora` (all of them when it is empty), in the input order.

        Parameters
        ----------
        clips : sequence of Clip

        Returns
        -------
        list of Clip

        Raises
        ------
        ValueError
            If a corpus of :attr:`corpora` has no clip in ``clips`` (a recipe never trains on less than it says).
        """
        if not self.corpora:
            return list(clips)
        kept = [c for c in clips if c.corpus.lower() in self.corpora]
        absent = sorted(set(self.corpora) - {c.corpus.lower() for c in kept})
        if absent:
            raise ValueError(f"Recipe.select: no clip of the corpora {absent}")
        return kept

    def sample_weight(self, corpora: Sequence[str] | np.ndarray, y: Sequence[int] | np.ndarray) -> np.ndarray | None:
        """Training weight of each clip under :attr:`balance` (None: unweighted).

        Parameters
        ----------
        corpora : sequence of str, shape (n_clips,)
            Corpus of each training clip.
        y : sequence of int, shape (n_clips,)
            Class of each training clip.

        Returns
        -------
        np.ndarray, shape (n_clips,), float64, or None
            ``"corpus"``: ``n_clips / (n_corpora * count of the clip's
            corpus)``, every corpus' total weight equal; ``"label"``: the same
            over classes; ``"corpus+label"``: the product, scaled to mean 1;
            None for ``"none"``.  When :attr:`corpora` is set, rows of other
            sources (``/retrain``'s user feedback) keep a corpus factor of 1.
        """
        if self.balance == "none":
            return None

        def inverse_frequency(values: np.ndarray) -> np.ndarray:
            kinds, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
            return values.size / (kinds.size * counts[inverse].astype(np.float64))

        w = np.ones(len(y))
        if "corpus" in self.balance:
            names = np.asarray([str(c).lower() for c in corpora])
            own = np.isin(names, self.corpora) if self.corpora else np.ones(names.size, dtype=bool)
            if own.any():
                w[own] = inverse_frequency(names[own])
        if "label" in self.balance:
            w *= inverse_frequency(np.asarray(y, dtype=np.int64))
        return w / w.mean()

    def augment_for(self, corpus: str) -> tuple[str, ...]:
        """The augmentations whose copies of ``corpus``' clips this recipe trains on.

        Without :attr:`members`, :attr:`augment`; with them, the union of
        the members' that train on ``corpus`` (a member without
        :attr:`corpora` trains on all).  Other copies need not be extracted:
        give them as NaN rows to :meth:`RecipeModel.fit`.

        Parameters
        ----------
        corpus : str

        Returns
        -------
        tuple of str
        """
        if not self.members:
            return self.augment
        name = str(corpus).lower()
        return tuple(sorted({c for m in self.members if not m.corpora or name in m.corpora for c in m.augment}))

    def describe(self) -> str:
        """One line for people, e.g. ``"2378 features, normalisation speaker, augmentation noise20, ..."``."""
        if self.members:
            calibration = "left-out corpora" if self.calibrate else "none"
            return (f"pool of {len(self.members)} members [" + "] x [".join(m.describe() for m in self.members)
                    + f"], calibration {calibration}")  # fmt: skip
        params = self.mlp_params()
        extra = ""
        if self.corpora:
            extra += f"corpora {', '.join(self.corpora)}, "
        if self.codec:
            extra += f"codec history {self.codec}, "
        if self.balance != "none":
            extra += f"balance {self.balance}, "
        calibration = "none"
        if self.calibrate:
            calibration = "left-out corpora" if self.calibrate_on == "corpora" else f"{self.inner_folds} inner folds"
        return (
            extra + f"{self.features.n_features} features, normalisation {self.normalization}, "
            f"augmentation {', '.join(self.augment) or 'none'}, "
            f"calibration {calibration}, "
            f"MLP {list(params['hidden_layer_sizes'])} alpha {params['alpha']} max_iter {params['max_iter']}, "
            f"seed {self.seed}"
        )

    def evaluate_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of :func:`ser_engine.evaluation.evaluate` that this recipe decides."""
        return {
            "preset": self.preset, "scaler": self.scaler, "overrides": dict(self.mlp) or None,
            "random_state": self.seed, "normalization": self.normalization, "min_clips": self.min_clips,
            "grid": list(self.grid) or None, "calibrate": self.calibrate, "inner_folds": self.inner_folds,
            "inner_fits": self.inner_fits, "unsure_below": self.unsure_below,
        }  # fmt: skip

    def calibration_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of :func:`ser_engine.calibration.choose_recipe` that this recipe decides."""
        return {
            "preset": self.preset, "scaler": self.scaler, "overrides": dict(self.mlp) or None,
            "random_state": self.seed, "normalization": self.normalization, "min_clips": self.min_clips,
            "grid": list(self.grid) or None, "calibrate": self.calibrate, "inner_folds": self.inner_folds,
            "inner_fits": self.inner_fits,
        }  # fmt: skip

    # ------------------------------------------------------ serialisation
    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable dict with a ``"version"`` key; :meth:`from_dict` inverts it."""
        out: dict[str, Any] = {"version": RECIPE_VERSION}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "members":
                out[f.name] = [m.to_dict() for m in value]
            else:
                out[f.name] = value.to_dict() if isinstance(value, FeatureConfig) else _plain(value)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Recipe:
        """Build a recipe from :meth:`to_dict` output.

        Raises
        ------
        ValueError
            Unknown keys, a newer layout version, or invalid values.
        """
        data = dict(data)
        version = data.pop("version", RECIPE_VERSION)
        if not isinstance(version, int) or version > RECIPE_VERSION:
            raise ValueError(f"Recipe: layout version {version!r} is newer than this engine's {RECIPE_VERSION}")
        names = {f.name for f in fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise ValueError(f"Recipe: unknown keys {sorted(unknown)}")
        if isinstance(data.get("features"), Mapping):
            data["features"] = FeatureConfig.from_dict(dict(data["features"]))
        for key in ("augment", "grid", "corpora", "members"):
            if key in data:
                data[key] = tuple(data[key])
        try:
            return cls(**data)
        except TypeError as exc:
            raise ValueError(f"Recipe: {exc}") from None

    @classmethod
    def from_bundle(cls, source: ModelBundle | str | os.PathLike[str] | Mapping[str, Any]) -> Recipe:
        """The recipe a bundle was trained with.

        Bundles written since recipes exist carry ``metadata["recipe"]``.
        For older ones it is reconstructed from the metadata fields they
        do have: ``preset`` and ``mlp_params`` (overrides = the parameters
        that differ from the preset's), ``scaler``, ``random_state``,
        ``normalization`` and ``min_clips`` (absent: ``"none"``),
        ``augment``, ``unsure_below``; calibrated when the temperature is
        not 1, with ``inner_folds`` (absent: 5, the CLI's default then) and
        ``inner_fits``; the features are the bundle's.

        Parameters
        ----------
        source : ModelBundle, path or mapping
            A loaded bundle; the path of a bundle's ``.joblib`` or ``.json``
            sidecar (only the sidecar is read: nothing is unpickled); or a
            sidecar's parsed JSON.

        Returns
        -------
        Recipe

        Raises
        ------
        OSError
            If the sidecar cannot be read.
        ValueError
            If the metadata describes no valid recipe (e.g. an unknown preset).
        """
        if isinstance(source, ModelBundle):
            features, metadata, temperature = source.feature_config.to_dict(), source.metadata, source.temperature
        else:
            if isinstance(source, Mapping):
                sidecar = source
            else:
                path = Path(source)
                path = path if path.suffix == ".json" else sidecar_path(path)
                sidecar = json.loads(path.read_text(encoding="utf-8"))
            features = dict(sidecar.get("feature_config") or {})
            metadata = dict(sidecar.get("metadata") or {})
            temperature = float(sidecar.get("temperature", metadata.get("temperature", 1.0)))
        if isinstance(metadata.get("recipe"), Mapping):
            return cls.from_dict(metadata["recipe"])
        preset = str(metadata.get("preset", "default"))
        if preset not in PRESETS:
            raise ValueError(f"Recipe.from_bundle: unknown preset {preset!r}")
        params = _mlp_overrides(metadata.get("mlp_params") or {})
        base = mlp_params(preset)
        overrides = {k: v for k, v in params.items() if base.get(k, object()) != v}
        calibrated = float(temperature) != 1.0
        seed = metadata.get("random_state", 0)
        return cls(
            features=FeatureConfig.from_dict(features) if features else FeatureConfig(),
            normalization=str(metadata.get("normalization", "none")),
            min_clips=int(metadata.get("min_clips", 5)),
            augment=tuple(metadata.get("augment") or ()),
            calibrate=calibrated,
            inner_folds=int(metadata.get("inner_folds", _OLD_INNER_FOLDS)),
            inner_fits=metadata.get("inner_fits"),
            preset=preset,
            mlp=overrides,
            scaler=bool(metadata.get("scaler", True)),
            seed=seed if isinstance(seed, int) or seed is None else 0,
            grid=(),
            unsure_below=float(metadata.get("unsure_below", 0.5)),
        )


def _corpus_temperature(
    r: Recipe, X: np.ndarray, y: np.ndarray, groups: np.ndarray, corpora: np.ndarray,
    augment: Mapping[str, np.ndarray], w: np.ndarray | None,
) -> float:  # fmt: skip
    """Temperature from leave-one-corpus-out predictions (``calibrate_on == "corpora"``).

    For each corpus: fit on the others (``alpha`` scaled by the share of rows,
    as :func:`ser_engine.calibration.inner_oof` does, so the inner model is as
    regularised per clip as the final one), predict its clips with the
    training speakers' statistics (new speakers) and with their own (known
    speakers), keep the probabilities of the emotions the corpus has and the
    inner model knows (others set to 0, the rest renormalised), then fit one
    temperature (:func:`ser_engine.calibration.fit_temperature`) on all of
    them pooled.

    Returns
    -------
    float
        The temperature; raises ValueError with fewer than two corpora.
    """
    from .calibration import fit_temperature

    # Only the recipe's own corpora are left out in turn (when it names them): other rows, e.g. users'
    # feedback in /retrain, always train.
    names = [n for n in dict.fromkeys(corpora.tolist()) if not r.corpora or n in r.corpora]
    if len(names) < 2:
        raise ValueError("RecipeModel.fit: calibrate_on='corpora' needs two corpora or more")
    n_labels = int(y.max()) + 1
    probas, truths = [], []
    if r.members:
        # A pool: each left-out corpus is predicted by the pool fitted on the others (members without
        # training clips then drop out), uncalibrated, as new and as known speakers.
        inner = replace(r, calibrate=False)
        for name in names:
            test = np.flatnonzero(corpora == name)
            train = np.flatnonzero(corpora != name)
            model = RecipeModel(inner).fit(X[train], y[train], groups[train],
                                           augment={c: A[train] for c, A in augment.items()} or None,
                                           sample_weight=None if w is None else w[train], corpora=corpora[train])  # fmt: skip
            keep = np.zeros(n_labels, dtype=bool)
            keep[np.intersect1d(np.unique(y[test]), model.classes_)] = True
            scored = keep[y[test]]
            both = [None, groups[test]] if r.normalization == "speaker" else [None]
            for g in both:
                P = np.zeros((test.size, n_labels))
                P[:, model.classes_] = model.predict_proba(X[test], g, calibrated=False)
                P[:, ~keep] = 0.0
                P = P[scored]
                probas.append(P / np.clip(P.sum(axis=1, keepdims=True), 1e-12, None))
                truths.append(y[test][scored])
        return fit_temperature(np.vstack(probas), np.concatenate(truths))
    alpha = float(r.mlp_params()["alpha"])
    for name in names:
        test = np.flatnonzero(corpora == name)
        train = np.flatnonzero(corpora != name)
        Xtr, rows, Xown, nz = normalise_split(X, groups, train, test, r.normalization, r.min_clips, augment or None)
        pipe = build_pipeline(r.preset, scaler=r.scaler, random_state=r.seed,
                              overrides={**r.mlp, "alpha": alpha * train.size / y.size})  # fmt: skip
        fit_pipeline(pipe, Xtr, y[rows], sample_weight=None if w is None else w[rows])
        Xnew = X[test] if nz is None else nz.transform(X[test])
        keep = np.zeros(n_labels, dtype=bool)
        keep[np.intersect1d(np.unique(y[test]), pipe.classes_)] = True
        scored = keep[y[test]]
        for Z in ([Xnew, Xown] if nz is not None else [Xnew]):
            P = np.zeros((test.size, n_labels))
            P[:, pipe.classes_] = pipe.predict_proba(np.asarray(Z, dtype=np.float32))
            P[:, ~keep] = 0.0
            P = P[scored]
            probas.append(P / np.clip(P.sum(axis=1, keepdims=True), 1e-12, None))
            truths.append(y[test][scored])
    return fit_temperature(np.vstack(probas), np.concatenate(truths))


class RecipeModel:
    """A :class:`Recipe` fitted to a feature matrix (scikit-learn conventions).

    Parameters
    ----------
    recipe : Recipe

    Attributes
    ----------
    normalizer_ : SpeakerNormalizer or None
        Fallback statistics of the training speakers (``normalization == "speaker"``).
    pipeline_ : sklearn.pipeline.Pipeline
        ``[StandardScaler ->] MLPClassifier``, fitted on the normalised rows and their degraded copies.
    temperature_ : float
        Probability temperature (1.0 when the recipe does not calibrate).
    overrides_ : dict
        ``MLPClassifier`` overrides used (the recipe's, with the grid's choice).
    classes_ : np.ndarray of int
        Class indices seen in training.
    converged_ : bool
        Whether the MLP met its tolerance before ``max_iter``.
    n_iter_ : int
        MLP epochs run.
    """

    def __init__(self, recipe: Recipe) -> None:
        self.recipe = recipe

    def fit(
        self,
        X: np.ndarray,
        y: np.ndarray,
        groups: Sequence[str] | np.ndarray,
        *,
        augment: Mapping[str, np.ndarray] | None = None,
        sample_weight: np.ndarray | None = None,
        calibrate: bool | None = None,
        n_jobs: int = 1,
        corpora: Sequence[str] | np.ndarray | None = None,
    ) -> RecipeModel:
        """Fit the recipe on all rows.

        Parameters
        ----------
        X : np.ndarray, shape (n_rows, recipe.features.n_features)
            Raw (unnormalised) features of clean clips.
        y : np.ndarray, shape (n_rows,), int
            Class indices.
        groups : sequence of str, shape (n_rows,)
            Speaker of each row (normalisation and inner folds).
        augment : mapping of str to np.ndarray, shape (n_rows, n_features), optional
            The recipe's degraded copies of the rows (keys ⊇ ``recipe.augment``;
            NaN rows: no copy, e.g. feedback given as features only).
        sample_weight : np.ndarray, shape (n_rows,), optional
            Weight of each row (its degraded copies weigh the same).
        calibrate : bool, optional
            Override of ``recipe.calibrate`` (False: skip the inner folds,
            e.g. when only labels are scored -- a temperature never changes them).
        n_jobs : int, default 1
            Processes for the inner folds.
        corpora : sequence of str, shape (n_rows,), optional
            Corpus of each row; needed when ``recipe.balance`` is not
            ``"none"`` (its weights multiply ``sample_weight``) or the
            temperature comes from left-out corpora.

        Returns
        -------
        RecipeModel
            ``self``.

        Raises
        ------
        ValueError
            If shapes disagree, an augmentation of the recipe is missing, or
            the recipe balances corpora and ``corpora`` is not given.
        """
        r = self.recipe
        X = np.asarray(X)
        y = np.asarray(y, dtype=np.int64)
        groups = np.asarray([str(g) for g in groups])
        if X.ndim != 2 or X.shape[1] != r.features.n_features or y.shape != (X.shape[0],) or groups.shape != y.shape:
            raise ValueError(
                f"RecipeModel.fit: X {X.shape}, y {y.shape}, groups {groups.shape}; "
                f"expected {r.features.n_features} features"
            )
        missing = [c for c in r.augment if c not in (augment or {})]
        if missing:
            raise ValueError(f"RecipeModel.fit: no features for the augmentation(s) {missing}")
        extra = {c: np.asarray(augment[c]) for c in r.augment} if augment else {}
        if any(A.shape != X.shape for A in extra.values()):
            raise ValueError(f"RecipeModel.fit: every augmentation matrix must have the shape of X, {X.shape}")
        w = None if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
        calibrating = r.calibrate if calibrate is None else calibrate
        by_corpus = calibrating and r.calibrate_on == "corpora"
        if r.members:
            return self._fit_pool(X, y, groups, extra, w, corpora, by_corpus)
        if r.balance != "none" or by_corpus:
            if corpora is None or len(corpora) != y.size:
                raise ValueError(f"RecipeModel.fit: this recipe needs the corpus of each of the {y.size} rows")
            corpora = np.asarray([str(c) for c in corpora])
        if r.balance != "none":
            balanced = r.sample_weight(corpora, y)  # type: ignore[arg-type]
            w = balanced if w is None else w * balanced
        overrides = dict(r.mlp)
        temperature = 1.0
        if by_corpus:
            temperature = _corpus_temperature(r, X, y, groups, corpora, extra, w)  # type: ignore[arg-type]
        elif r.grid or calibrating:
            kwargs = r.calibration_kwargs()
            kwargs["calibrate"] = r.calibrate if calibrate is None else calibrate
            chosen, temperature = choose_recipe(X, y, groups, **kwargs, augment=extra or None, n_jobs=n_jobs,
                                                sample_weight=w)  # fmt: skip
            overrides = dict(chosen or {})
        everything = np.arange(y.size)
        Xtr, rows, _, nz = normalise_split(X, groups, everything, everything[:0], r.normalization, r.min_clips,
                                           extra or None)  # fmt: skip
        pipe = build_pipeline(r.preset, scaler=r.scaler, random_state=r.seed, overrides=overrides)
        self.converged_ = fit_pipeline(pipe, Xtr, y[rows], sample_weight=None if w is None else w[rows])
        mlp = pipe.named_steps["mlp"]
        # Adam's moment estimates double the pickle and serve only to resume training.
        if hasattr(mlp, "_optimizer"):
            del mlp._optimizer
        self.pipeline_ = pipe
        self.normalizer_: SpeakerNormalizer | None = nz
        self.temperature_ = float(temperature)
        self.overrides_ = overrides
        self.classes_ = np.asarray(pipe.classes_)
        self.n_iter_ = int(mlp.n_iter_)
        return self

    def _fit_pool(
        self, X: np.ndarray, y: np.ndarray, groups: np.ndarray, extra: Mapping[str, np.ndarray],
        w: np.ndarray | None, corpora: Sequence[str] | np.ndarray | None, calibrating: bool,
    ) -> RecipeModel:  # fmt: skip
        """:meth:`fit` for a recipe with members (see :attr:`Recipe.members`)."""
        from sklearn.pipeline import Pipeline

        from .ensemble import LogOpinionPool

        r = self.recipe
        if corpora is None or len(corpora) != y.size:
            raise ValueError(f"RecipeModel.fit: a pool needs the corpus of each of the {y.size} rows")
        corpora = np.asarray([str(c).lower() for c in corpora])
        temperature = _corpus_temperature(r, X, y, groups, corpora, extra, w) if calibrating else 1.0
        everything = np.arange(y.size)
        Xtr, rows, _, nz = normalise_split(X, groups, everything, everything[:0], r.normalization, r.min_clips,
                                           extra or None)  # fmt: skip
        # The source of each stacked row, in normalise_split's order: the clean rows, then each degraded copy.
        sources = np.concatenate([np.full(y.size, "clean", dtype=object)]
                                 + [np.full(int(np.isfinite(A).all(axis=1).sum()), c, dtype=object)
                                    for c, A in extra.items()])  # fmt: skip
        pipes, iters, converged = [], [], True
        for member in r.members:
            clips = np.isin(corpora, member.corpora) if member.corpora else np.ones(y.size, dtype=bool)
            if not clips.any():
                continue  # e.g. a leave-one-corpus-out fold without this member's corpus
            mw = np.zeros(y.size)
            mw[clips] = member.sample_weight(corpora[clips], y[clips]) if member.balance != "none" else 1.0
            if w is not None:
                mw *= w
            take = clips[rows] & np.isin(sources, ["clean", *member.augment])
            pipe = build_pipeline(member.preset, scaler=member.scaler, random_state=member.seed, overrides=member.mlp)
            converged &= fit_pipeline(pipe, Xtr[take], y[rows[take]], sample_weight=mw[rows[take]])
            mlp = pipe.named_steps["mlp"]
            if hasattr(mlp, "_optimizer"):
                del mlp._optimizer
            pipes.append(pipe)
            iters.append(int(mlp.n_iter_))
        if not pipes:
            raise ValueError("RecipeModel.fit: no member of the pool has a training clip")
        self.pipeline_ = Pipeline([("pool", LogOpinionPool(pipes))])
        self.normalizer_ = nz
        self.temperature_ = float(temperature)
        self.overrides_ = dict(r.mlp)
        self.classes_ = np.asarray(self.pipeline_.classes_)
        self.n_iter_ = max(iters)
        self.converged_ = bool(converged)
        return self

    def _check_fitted(self) -> None:
        if not hasattr(self, "pipeline_"):
            raise ValueError("RecipeModel: not fitted; call fit first")

    def predict_proba(self, X: np.ndarray, groups: Sequence[str] | np.ndarray | None = None, *,
                      calibrated: bool = True) -> np.ndarray:  # fmt: skip
        """Probabilities of held-out rows.

        Parameters
        ----------
        X : np.ndarray, shape (n_rows, n_features)
            Raw features.
        groups : sequence of str, shape (n_rows,), optional
            Speakers: each one's rows are normalised with the statistics of
            those same rows (as the bot does once it knows a user's notes);
            None: the training speakers' fallback statistics.
        calibrated : bool, default True
            Apply :attr:`temperature_`.

        Returns
        -------
        np.ndarray, shape (n_rows, len(classes_)), float64
            Columns in the order of :attr:`classes_`.
        """
        self._check_fitted()
        Z = np.asarray(X)
        if self.normalizer_ is not None:
            Z = self.normalizer_.transform(Z) if groups is None else self.normalizer_.transform_groups(Z, groups)
        P = self.pipeline_.predict_proba(np.asarray(Z, dtype=np.float32))
        return apply_temperature(P, self.temperature_) if calibrated else np.asarray(P, dtype=np.float64)

    def predict(self, X: np.ndarray, groups: Sequence[str] | np.ndarray | None = None) -> np.ndarray:
        """Class index of each row (as :meth:`predict_proba`; the temperature never changes it).

        Returns
        -------
        np.ndarray, shape (n_rows,), int
        """
        self._check_fitted()
        return self.classes_[self.predict_proba(X, groups, calibrated=False).argmax(axis=1)]

    def to_bundle(self, labels: Sequence[str], metadata: Mapping[str, Any] | None = None) -> ModelBundle:
        """Wrap the fitted model as a :class:`~ser_engine.bundle.ModelBundle`.

        Parameters
        ----------
        labels : sequence of str
            Class names, index = class.
        metadata : mapping, optional
            Provenance; ``recipe`` (:meth:`Recipe.to_dict`, with the grid's choice in ``mlp``),
            ``preset``, ``mlp_params``, ``scaler``, ``random_state``, ``normalization``,
            ``min_clips``, ``augment``, ``temperature``, ``unsure_below``, ``inner_folds``,
            ``n_iter`` and ``converged`` are added.

        Returns
        -------
        ModelBundle

        Raises
        ------
        ValueError
            If not fitted or a class of ``labels`` was never seen in training.
        """
        self._check_fitted()
        r = replace(self.recipe, mlp=self.overrides_, grid=())
        params = r.mlp_params()
        meta = dict(metadata or {})
        meta.update({
            "recipe": r.to_dict(), "preset": r.preset, "mlp_params": _plain(params), "scaler": r.scaler,
            "random_state": r.seed, "normalization": r.normalization, "min_clips": r.min_clips,
            "augment": list(r.augment), "temperature": self.temperature_, "unsure_below": r.unsure_below,
            "n_iter": self.n_iter_, "converged": bool(self.converged_),
        })  # fmt: skip
        if r.calibrate:
            meta["inner_folds"] = r.inner_folds
            if r.inner_fits is not None:
                meta["inner_fits"] = r.inner_fits
        return ModelBundle(pipeline=self.pipeline_, labels=tuple(labels), feature_config=r.features, metadata=meta,
                           normalizer=self.normalizer_, temperature=self.temperature_)  # fmt: skip
