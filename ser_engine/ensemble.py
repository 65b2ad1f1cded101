"""Pooling the probabilities of several fitted classifiers: the logarithmic opinion pool.

A recipe with :attr:`ser_engine.recipe.Recipe.members` trains one classifier
per member (each on its own corpora and augmentations) and answers with
their pooled probabilities.  The pool is the normalised weighted geometric
mean of the members' distributions, the *logarithmic opinion pool* of
Genest & Zidek (1986), "Combining probability distributions: a critique and
an annotated bibliography", Statistical Science 1(1), and a product of
experts (Hinton 2002, "Training products of experts by minimizing
contrastive divergence", Neural Computation 14(8)) with exponents 1/n.  A
class only some members know is scored by those members alone, so a member
trained on a corpus without, say, RAVDESS' *calm* neither votes against it
nor for it.

Why pool rather than train one model on every corpus: on RAVDESS held-out
actors the model trained on RAVDESS, nEMO and emotiontts confuses calm with
the quiet sad of the other corpora (accuracy 0.563 against 0.647 for the
RAVDESS-only model, 3 actor folds), while on unseen corpora it is the better
one (mean UAR over 4 emotions 0.538 against 0.479); their pool keeps most of
both (0.640 and 0.544; ``models/README.md``, "Multi-corpus training").
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin

__all__ = ["LogOpinionPool"]

#: Probability floor before the logarithm (a member's 0 must not veto a class outright).
_FLOOR = 1e-9


class LogOpinionPool(ClassifierMixin, BaseEstimator):
    """Normalised geometric mean of fitted classifiers' probabilities (already fitted; ``fit`` is not used).

    Parameters
    ----------
    estimators : sequence of fitted classifiers
        Each with ``classes_`` (int class indices) and ``predict_proba``
        (e.g. a ``[StandardScaler ->] MLPClassifier`` pipeline).
    weights : sequence of float, optional
        Exponent of each member (default equal, summing to 1).

    Attributes
    ----------
    classes_ : np.ndarray of int, shape (n_classes,)
        Union of the members' classes, sorted.

    Raises
    ------
    ValueError
        If no estimator is given, a weight is not positive, or the counts differ.
    """

    def __init__(self, estimators: Sequence[Any], weights: Sequence[float] | None = None) -> None:
        self.estimators = list(estimators)
        self.weights = None if weights is None else [float(w) for w in weights]
        if not self.estimators:
            raise ValueError("LogOpinionPool: no estimator")
        if self.weights is not None and (len(self.weights) != len(self.estimators) or min(self.weights) <= 0):
            raise ValueError("LogOpinionPool: one positive weight per estimator")
        self.classes_ = np.unique(np.concatenate([np.asarray(e.classes_) for e in self.estimators]))

    def fit(self, X: np.ndarray, y: np.ndarray) -> LogOpinionPool:
        """Members are fitted by :class:`ser_engine.recipe.RecipeModel`; refitting the pool is not supported.

        Raises
        ------
        NotImplementedError
            Always.
        """
        raise NotImplementedError("LogOpinionPool pools fitted members; fit them with RecipeModel")

    def __sklearn_is_fitted__(self) -> bool:
        return True

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """Pooled probabilities.

        Parameters
        ----------
        X : np.ndarray, shape (n_rows, n_features)
            What every member takes (the same normalised features).

        Returns
        -------
        np.ndarray, shape (n_rows, len(classes_)), float64
            Rows sum to 1; column ``j`` is class ``classes_[j]``: the
            weighted mean of ``log p`` over the members that know the class,
            exponentiated and renormalised.
        """
        n = np.shape(X)[0]
        weights = self.weights or [1.0] * len(self.estimators)
        log_sum = np.zeros((n, self.classes_.size))
        weight_sum = np.zeros(self.classes_.size)
        for estimator, weight in zip(self.estimators, weights, strict=True):
            cols = np.searchsorted(self.classes_, np.asarray(estimator.classes_))
            P = np.asarray(estimator.predict_proba(X), dtype=np.float64)
            log_sum[:, cols] += weight * np.log(np.clip(P, _FLOOR, 1.0))
            weight_sum[cols] += weight
        log_p = log_sum / weight_sum
        log_p -= log_p.max(axis=1, keepdims=True)
        P = np.exp(log_p)
        return P / P.sum(axis=1, keepdims=True)

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Most probable class of each row.

        Returns
        -------
        np.ndarray, shape (n_rows,), int
        """
        return self.classes_[self.predict_proba(X).argmax(axis=1)]
