"""alt-profanity-check's model, computed directly: the same score in ~0.05 ms instead of ~9 ms.

The library's model is a TF-IDF vectorizer and five calibrated linear SVMs (scikit-learn's
`CalibratedClassifierCV` with sigmoid calibration); its score is the mean over the five of
`expit(-(a * (w . x + c) + b))`. Calling scikit-learn for one short text costs ~1 ms in the vectorizer and ~8 ms
in `predict_proba` (input validation, five estimators, five calibrators), all overhead. Here the TF-IDF vector of
a text is built from the vectorizer's own analyzer and vocabulary, and the five scores from the stacked weights.
At load the result is compared with the library's `predict_proba` on probe texts; if a later scikit-learn or
model differs, the library's own call is used instead (correct, just slower).
"""

from __future__ import annotations

import logging
from collections import Counter
from importlib import metadata
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

_PROBES = (
    "Welcome in! The wax is warm and the light's free tonight.",
    "shut up you stupid idiot",
    "this boss is killing me",
    "go to hell",
    "",
    "qwzx",
)
_TOLERANCE = 1e-9


class ProfanityCheck:
    """The alt-profanity-check classifier (MIT; a linear SVM over TF-IDF words, trained on ~200k human-labelled samples)."""

    name = "alt-profanity-check"

    def __init__(self) -> None:
        import profanity_check.profanity_check as pc  # scikit-learn and two small joblib files, ~1-2 s

        self.version = metadata.version(self.name)
        self._vectorizer: Any = pc.vectorizer
        self._model: Any = pc.model
        self._fast = False
        try:
            self._prepare()
            library = self._model.predict_proba(self._vectorizer.transform(list(_PROBES)))[:, 1]
            self._fast = all(
                abs(self._fast_score(p) - float(s)) <= _TOLERANCE
                for p, s in zip(_PROBES, library, strict=True)
            )
        except Exception:  # a model this code does not know how to read: the library call still works
            log.debug("safety: alt-profanity-check fast path unavailable", exc_info=True)
        if not self._fast:
            log.warning("safety: alt-profanity-check %s scored by scikit-learn (slower path)", self.version)

    def _prepare(self) -> None:
        vectorizer, model = self._vectorizer, self._model
        if vectorizer.norm not in ("l2", None) or list(model.classes_) != [0, 1]:
            raise ValueError("unexpected vectorizer or classes")
        self._analyze = vectorizer.build_analyzer()
        self._vocabulary: dict[str, int] = vectorizer.vocabulary_
        self._idf = np.asarray(vectorizer.idf_, dtype=np.float64) if vectorizer.use_idf else None
        weights, intercepts, a, b = [], [], [], []
        for calibrated in model.calibrated_classifiers_:
            if calibrated.method != "sigmoid" or len(calibrated.calibrators) != 1:
                raise ValueError("not a binary sigmoid calibration")
            weights.append(np.asarray(calibrated.estimator.coef_, dtype=np.float64).ravel())
            intercepts.append(float(calibrated.estimator.intercept_[0]))
            a.append(float(calibrated.calibrators[0].a_))
            b.append(float(calibrated.calibrators[0].b_))
        self._weights = np.stack(weights, axis=1)  # (features, folds)
        self._intercepts, self._a, self._b = np.array(intercepts), np.array(a), np.array(b)

    def _fast_score(self, text: str) -> float:
        counts = Counter(self._vocabulary[t] for t in self._analyze(text) if t in self._vocabulary)
        decision = self._intercepts
        if counts:
            index = np.fromiter(counts.keys(), dtype=np.intp, count=len(counts))
            x = np.fromiter(counts.values(), dtype=np.float64, count=len(counts))
            if self._vectorizer.binary:
                x = np.ones_like(x)
            elif self._vectorizer.sublinear_tf:
                x = 1.0 + np.log(x)
            if self._idf is not None:
                x = x * self._idf[index]
            if self._vectorizer.norm == "l2":
                x = x / np.sqrt(x @ x)
            decision = x @ self._weights[index] + self._intercepts  # (folds,)
        return float(np.mean(1.0 / (1.0 + np.exp(self._a * decision + self._b))))

    def score(self, text: str) -> float:
        if self._fast:
            return self._fast_score(text)
        return float(self._model.predict_proba(self._vectorizer.transform([text]))[0, 1])
