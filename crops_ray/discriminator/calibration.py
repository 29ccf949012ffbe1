"""Calibrating the discriminator: theta = sigmoid(a * raw + b), fitted on labelled (query, text, label) pairs.

Fitted on pairs drawn like the ones the gate decides (:mod:`crops_ray.discriminator.gate`: the held-out queries'
mined candidates that the log labels, per source, or the user's labelled pairs), so that alpha = 0.6 means "60 %
likely relevant" among the candidates. Never fitted on a generated world. :func:`expected_calibration_error`
measures how far theta is from the share of relevant pairs.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from crops_ray.discriminator.config import DiscriminatorConfig
from crops_ray.plumbing import model_path


@dataclass
class Calibration:
    """theta = sigmoid(a * raw + b), with where it came from and how well it does at alpha."""

    a: float
    b: float
    model: str
    kind: str
    source: str  # "logs:<rules>", a labelled-pairs path, or a JSON path
    labelled_pairs: int  # size of the set it was fitted on
    positives: int
    heldout_pairs: int = 0
    alpha: float = 0.6
    precision_at_alpha: float | None = None  # on the held-out pairs
    recall_at_alpha: float | None = None
    raw_threshold_at_alpha: float | None = None  # the raw score where theta = alpha
    fitted_prior: float | None = None  # share of relevant pairs in the labelled set it was fitted on
    # Per mined source, its own (a, b) fitted on that source's labelled candidates: a P1 and a P2 candidate with the
    # same raw score are not equally likely to be relevant (P1's candidates are mostly relevant, P2's mostly not),
    # so theta > alpha must mean "alpha likely" among each source's own candidates. {source: {"a", "b", ...}}.
    sources: dict | None = None
    int8: bool = False  # the cross-encoder's raw scores came from its int8 (CPU) form: score with the same

    def theta(self, raw: np.ndarray, source: str | None = None) -> np.ndarray:
        """theta of raw scores: the source's own calibration when it has one, else the pooled (a, b)."""
        a, b = self.a, self.b
        if source and self.sources and source in self.sources:
            a, b = self.sources[source]["a"], self.sources[source]["b"]
        return 1.0 / (1.0 + np.exp(-(a * np.asarray(raw, dtype=np.float64) + b)))

    def save(self, path: str) -> None:
        """Written whole or not at all (a name of its own, then an atomic rename): readers never see half a file."""
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        tmp = f"{path}.tmp-{os.getpid()}-{time.time_ns()}"
        with open(tmp, "w") as f:
            json.dump(asdict(self), f, indent=2)
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str) -> Calibration:
        with open(path) as f:
            data = json.load(f)
        missing = {"a", "b", "model", "kind"} - set(data)
        if missing:
            raise ValueError(f"{path}: not a discriminator calibration (missing {sorted(missing)})")
        known = set(cls.__dataclass_fields__)
        return cls(
            **{k: v for k, v in data.items() if k in known}
            | {
                "source": data.get("source", path),
                "labelled_pairs": data.get("labelled_pairs", 0),
                "positives": data.get("positives", 0),
            }
        )


def fit_logistic(raw: np.ndarray, labels: np.ndarray, l2: float = 1e-4, iterations: int = 50) -> tuple[float, float]:
    """Newton's method for a one-feature logistic regression (two parameters; no extra dependency)."""
    x = np.asarray(raw, dtype=np.float64)
    y = np.asarray(labels, dtype=np.float64)
    if len(x) != len(y) or len(x) == 0:
        raise ValueError("fit_logistic needs as many labels as scores, and at least one of each")
    if y.min() == y.max():
        raise ValueError("fit_logistic needs both relevant (1) and irrelevant (0) pairs")
    X = np.stack([x, np.ones_like(x)], axis=1)
    w = np.zeros(2)
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-(X @ w)))
        grad = X.T @ (p - y) + l2 * np.array([w[0], 0.0])
        hess = (X * (p * (1 - p))[:, None]).T @ X + l2 * np.diag([1.0, 0.0])
        step = np.linalg.solve(hess + 1e-9 * np.eye(2), grad)
        w -= step
        if np.abs(step).max() < 1e-10:
            break
    return float(w[0]), float(w[1])


def precision_recall(theta: np.ndarray, labels: np.ndarray, alpha: float) -> tuple[float, float]:
    kept = np.asarray(theta) > alpha
    labels = np.asarray(labels).astype(bool)
    precision = float(labels[kept].mean()) if kept.any() else float("nan")
    recall = float(kept[labels].mean()) if labels.any() else float("nan")
    return precision, recall


def read_labelled_pairs(path: str) -> pa.Table:
    """A user's labelled pairs: parquet or CSV with columns query, text, label (1 relevant, 0 not)."""
    import pyarrow.csv as pcsv
    import pyarrow.parquet as pq

    if not os.path.exists(path):
        raise FileNotFoundError(f"labelled pairs file {path} does not exist")
    t = pcsv.read_csv(path) if path.endswith((".csv", ".tsv")) else pq.read_table(path)
    missing = {"query", "text", "label"} - set(t.column_names)
    if missing:
        raise ValueError(f"{path}: labelled pairs need columns query, text, label; missing {sorted(missing)}")
    labels = pc.cast(t["label"], pa.int8())
    bad = pc.sum(pc.invert(pc.is_in(labels, pa.array([0, 1], pa.int8())))).as_py()
    if bad:
        raise ValueError(f"{path}: label must be 0 or 1 ({bad} rows are not)")
    return pa.table(
        {"query": pc.cast(t["query"], pa.string()), "text": pc.cast(t["text"], pa.string()), "label": labels}
    )


def calibrated_weights(calibration: Calibration | None, cfg: DiscriminatorConfig) -> str:
    """The weights a calibration belongs to (it was fitted on them): its own folder (a fine-tuned model, say) or a
    packaged alias. Weights that are gone (another node, a wiped cache) are an error naming the folder, never a
    quiet fallback to the base model, whose scores the calibration would map to the wrong theta."""
    if calibration is None or not calibration.model:
        return model_path(cfg.model)
    if os.path.exists(os.path.join(calibration.model, "config.json")):
        return calibration.model
    try:
        return model_path(calibration.model)
    except FileNotFoundError:
        raise FileNotFoundError(
            f"the calibration ({calibration.source}) belongs to the discriminator weights at {calibration.model}, "
            "which are not there (another machine, or a wiped cache?): copy that folder there, or run build_data "
            "again to train and calibrate the gate on your logs"
        ) from None


def expected_calibration_error(theta: np.ndarray, labels: np.ndarray, bins: int = 10) -> float:
    """Expected calibration error: the pair-weighted mean |mean theta - share relevant| over equal-width bins."""
    theta, labels = np.asarray(theta, dtype=np.float64), np.asarray(labels, dtype=np.float64)
    if len(theta) == 0:
        return float("nan")
    which = np.minimum((theta * bins).astype(int), bins - 1)
    err = 0.0
    for b in np.unique(which):
        in_bin = which == b
        err += in_bin.sum() * abs(theta[in_bin].mean() - labels[in_bin].mean())
    return float(err / len(theta))


def fit_on_scores(
    raw: np.ndarray,
    labels: np.ndarray,
    model: str,
    kind: str,
    source: str,
    alpha: float,
    held_raw: np.ndarray | None = None,
    held_labels: np.ndarray | None = None,
) -> Calibration:
    """A calibration fitted on raw scores and 0/1 labels, its precision and recall at alpha measured on
    ``held_raw`` / ``held_labels`` when given."""
    labels = np.asarray(labels)
    a, b = fit_logistic(raw, labels)
    cal = Calibration(
        a=a, b=b, model=model, kind=kind, source=source, labelled_pairs=len(labels),
        positives=int(labels.sum()), alpha=alpha,
    )  # fmt: skip
    if a > 0:
        cal.raw_threshold_at_alpha = float((np.log(alpha / (1 - alpha)) - b) / a)
    if held_raw is not None and len(held_raw):
        cal.heldout_pairs = len(held_raw)
        cal.precision_at_alpha, cal.recall_at_alpha = precision_recall(cal.theta(held_raw), held_labels, alpha)
    return cal
