"""The trained page classifier: character n-grams of the folded page text, a linear model, calibrated.

Why this model: OCR of Vietnamese scans garbles tone marks and splits words, so whole-word
features are brittle; character n-grams (2 to 4, within word boundaries) of the folded text
survive both, and a multinomial logistic regression over their TF-IDF weights is fast, small
and gives probabilities. Those probabilities are calibrated by temperature scaling fitted on
out-of-fold predictions (folds grouped by dossier, so that pages of one dossier never both
train and test), which is what lets ``confidence >= 0.9`` mean "right 99 times in 100".

The model is trained from documents an operator confirmed or corrected (sohoa/services/training.py),
and stored in the archive store as plain JSON (vocabulary, IDF weights, coefficients, the
temperature), never as a pickle: loading a model runs no code. Versions are numbered; the
classify step uses the newest (``SOHOA_CLASSIFIER=auto``) and its digest enters the step's
cache key, so a new model reclassifies (never re-OCRs) what is processed after it.
"""

from __future__ import annotations

import gzip
import re
from collections import Counter
from datetime import UTC, datetime
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr

from sohoa.kernel.errors import BelowTarget, ConfigurationError, SohoaError
from sohoa.kernel.keys import sha256_bytes
from sohoa.kernel.text import fold
from sohoa.storage import ObjectNotFound, Store

SCHEMA = "sohoa.classifier/1"
PREFIX = "models/classifier/"
NGRAMS = (2, 4)
MAX_FEATURES = 20000
MIN_PAGES = 30  # below this the model cannot beat the rules: rules only
MIN_CLASSES = 2
MIN_PAGES_PER_CLASS = 3  # a type seen less often is left out of the model (the rules still see it)
_KEY = re.compile(r"^models/classifier/v(\d{5})\.json\.gz$")


class Example(BaseModel):
    """One training page: its OCR text and the type an operator gave its document."""

    text: str
    label: str
    dossier: str = Field(description="Dossier id: folds never split a dossier")


class TrainingSummary(BaseModel):
    dossiers: int
    pages: int
    per_class: dict[str, int]
    left_out: dict[str, int] = Field(default_factory=dict, description="Types with too few pages to learn")
    cv_accuracy: float = Field(description="Accuracy of out-of-fold predictions (pages of unseen dossiers)")
    temperature: float


class TooLittleData(BelowTarget):
    """Not enough confirmed pages to train on: classification stays with the rules (exit 5, nothing written)."""

    @property
    def message(self) -> str:
        return f"not enough reviewed documents to train ({super().message}); classification stays with the rules"


class ClassifierError(SohoaError, ValueError):
    """A stored classifier version is gone or does not match its checksum: classification cannot go on."""


class ModelRef(BaseModel):
    key: str
    version: int
    digest: str


class ClassifierModel(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    schema_id: Literal["sohoa.classifier/1"] = Field(SCHEMA, alias="schema")
    version: int
    created_at: str
    taxonomy_digest: str
    classes: list[str]
    vocabulary: list[str]
    idf: list[float]
    coef: list[list[float]]
    intercept: list[float]
    temperature: float
    summary: TrainingSummary
    _compiled: Any = PrivateAttr(None)

    def predict(self, texts: list[str]) -> list[dict[str, float]]:
        """Calibrated probability of each class, per text."""
        if not texts:
            return []
        probabilities = _softmax(_logits(self, texts) / self.temperature)
        return [{c: float(p) for c, p in zip(self.classes, row)} for row in probabilities]


def _vectorizer(vocabulary: list[str] | None = None, idf: list[float] | None = None):
    from sklearn.feature_extraction.text import TfidfVectorizer

    vectorizer = TfidfVectorizer(
        analyzer="char_wb", ngram_range=NGRAMS, sublinear_tf=True, lowercase=False, dtype=np.float32,
        **({"vocabulary": {t: i for i, t in enumerate(vocabulary)}} if vocabulary is not None
           else {"min_df": 2, "max_features": MAX_FEATURES}),
    )
    if idf is not None:
        vectorizer.idf_ = np.asarray(idf, dtype=np.float64)
    return vectorizer


def _logits(model: ClassifierModel, texts: list[str]) -> np.ndarray:
    if model._compiled is None:  # built once per loaded model
        model._compiled = (_vectorizer(model.vocabulary, model.idf), np.asarray(model.coef, dtype=np.float64).T,
                           np.asarray(model.intercept, dtype=np.float64))
    vectorizer, weights, intercept = model._compiled
    return vectorizer.transform([fold(t) for t in texts]) @ weights + intercept


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _classifier():
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(C=10.0, max_iter=3000, class_weight="balanced")


def _decision(clf, features) -> np.ndarray:
    """Scores of every class of ``clf``, shape (pages, classes), also for two classes."""
    scores = clf.decision_function(features)
    return np.stack([-scores / 2, scores / 2], axis=1) if scores.ndim == 1 else scores


def _out_of_fold_logits(texts: list[str], labels: np.ndarray, groups: list[str], classes: list[str]) -> np.ndarray:
    """Logits of each page from a model that never saw its dossier (or its fold, with few dossiers)."""
    from sklearn.model_selection import GroupKFold, StratifiedKFold

    folds = min(5, len(set(groups)))
    if folds >= 3:
        splits = GroupKFold(n_splits=folds).split(texts, labels, groups)
    else:
        splits = StratifiedKFold(n_splits=min(3, min(Counter(labels).values())), shuffle=True, random_state=0).split(texts, labels)
    logits = np.full((len(texts), len(classes)), -30.0)  # a class missing from a fold's training: unlikely
    for train_rows, test_rows in splits:
        vectorizer = _vectorizer()
        clf = _classifier().fit(vectorizer.fit_transform([texts[i] for i in train_rows]), labels[train_rows])
        if len(clf.classes_) < 2:
            continue
        columns = [classes.index(c) for c in clf.classes_]
        logits[np.ix_(test_rows, columns)] = _decision(clf, vectorizer.transform([texts[i] for i in test_rows]))
    return logits


def _temperature(logits: np.ndarray, labels: np.ndarray, classes: list[str]) -> float:
    """The temperature that makes out-of-fold probabilities honest: least cross-entropy against the
    labels smoothed by 1/(pages + 2), so that a small set with no out-of-fold error yields "right
    about 1 - 1/(n + 2) of the time", not certainty."""
    from scipy.optimize import minimize_scalar

    truth = np.array([classes.index(label) for label in labels])
    smoothing = 1.0 / (len(truth) + 2)
    target = np.full(logits.shape, smoothing / max(len(classes) - 1, 1))
    target[np.arange(len(truth)), truth] = 1.0 - smoothing

    def cross_entropy(t: float) -> float:
        return float(-(target * np.log(np.clip(_softmax(logits / t), 1e-12, 1))).sum(axis=1).mean())

    return float(minimize_scalar(cross_entropy, bounds=(0.05, 20.0), method="bounded").x)


def train(examples: list[Example], version: int, taxonomy_digest: str) -> ClassifierModel:
    """Fit, calibrate and package a model; TooLittleData when the rules would do as well."""
    counts = Counter(e.label for e in examples)
    kept = {label for label, n in counts.items() if n >= MIN_PAGES_PER_CLASS}
    usable = [e for e in examples if e.label in kept]
    if len(usable) < MIN_PAGES or len(kept) < MIN_CLASSES:
        raise TooLittleData(f"{len(usable)} confirmed pages of {len(kept)} types with at least {MIN_PAGES_PER_CLASS} pages "
                            f"each; at least {MIN_PAGES} pages of {MIN_CLASSES} types are needed")
    texts = [fold(e.text) for e in usable]
    labels = np.array([e.label for e in usable])
    classes = sorted(kept)
    groups = [e.dossier for e in usable]
    oof = _out_of_fold_logits(texts, labels, groups, classes)
    temperature = _temperature(oof, labels, classes)
    cv_accuracy = float((np.array(classes)[oof.argmax(axis=1)] == labels).mean())
    vectorizer = _vectorizer()
    clf = _classifier().fit(vectorizer.fit_transform(texts), labels)
    coef, intercept = clf.coef_, clf.intercept_
    if len(clf.classes_) == 2:  # sklearn keeps one row for two classes: make it two, like the others
        coef, intercept = np.vstack([-coef / 2, coef / 2]), np.array([-intercept[0] / 2, intercept[0] / 2])
    return ClassifierModel(
        version=version, created_at=datetime.now(UTC).isoformat(timespec="seconds"), taxonomy_digest=taxonomy_digest,
        classes=[str(c) for c in clf.classes_], vocabulary=vectorizer.get_feature_names_out().tolist(),
        idf=[round(float(v), 6) for v in vectorizer.idf_],
        coef=[[round(float(v), 5) for v in row] for row in coef], intercept=[round(float(v), 5) for v in intercept],
        temperature=round(temperature, 4),
        summary=TrainingSummary(dossiers=len(set(groups)), pages=len(usable), per_class=dict(sorted(Counter(labels.tolist()).items())),
                                left_out={k: v for k, v in counts.items() if k not in kept},
                                cv_accuracy=round(cv_accuracy, 4), temperature=round(temperature, 4)),
    )


# --- storage ---------------------------------------------------------------------------------


def versions(store: Store) -> list[ModelRef]:
    """Stored models, oldest first (digest filled in lazily: see ``newest``)."""
    refs = []
    for info in store.list(PREFIX):
        found = _KEY.match(info.key)
        if found:
            refs.append(ModelRef(key=info.key, version=int(found.group(1)), digest=info.metadata.get("sha256", "")))
    return sorted(refs, key=lambda r: r.version)


def newest(store: Store) -> ModelRef | None:
    refs = versions(store)
    if not refs:
        return None
    ref = refs[-1]
    if not ref.digest:  # listings of some servers carry no metadata
        ref = ref.model_copy(update={"digest": store.stat(ref.key).metadata.get("sha256", "")})
    return ref


def choose(store: Store, setting: str) -> ModelRef | None:
    """The model that ``SOHOA_CLASSIFIER`` asks for: ``auto`` (newest), ``rules`` (none) or a version number."""
    if setting == "rules":
        return None
    if setting == "auto":
        return newest(store)
    wanted = int(setting)
    for ref in versions(store):
        if ref.version == wanted:
            return ref if ref.digest else ref.model_copy(update={"digest": store.stat(ref.key).metadata.get("sha256", "")})
    raise ConfigurationError(f"SOHOA_CLASSIFIER={setting}: no classifier version {wanted} in {store.url}")


def save(store: Store, model: ClassifierModel) -> ModelRef:
    """Write a new version, create-only: a version, once written, never changes."""
    data = gzip.compress(model.model_dump_json(by_alias=True).encode(), mtime=0)
    digest = sha256_bytes(data)
    key = f"{PREFIX}v{model.version:05d}.json.gz"
    store.put_bytes(key, data, content_type="application/gzip", metadata={"sha256": digest}, create_only=True)
    return ModelRef(key=key, version=model.version, digest=digest)


_LOADED: dict[tuple[str, str, str], ClassifierModel] = {}


def load(store: Store, ref: ModelRef) -> ClassifierModel:
    """The model of ``ref``, checked against its digest; kept in memory (a worker loads it once)."""
    cache_key = (store.url, ref.key, ref.digest)
    if cache_key not in _LOADED:
        try:
            data = store.get_bytes(ref.key)
        except ObjectNotFound:
            raise ClassifierError(f"classifier {ref.key} is gone from {store.url}") from None
        if ref.digest and sha256_bytes(data) != ref.digest:
            raise ClassifierError(f"classifier {ref.key} does not match its checksum")
        if len(_LOADED) >= 4:
            _LOADED.pop(next(iter(_LOADED)))
        _LOADED[cache_key] = ClassifierModel.model_validate_json(gzip.decompress(data))
    return _LOADED[cache_key]
