"""Calibrating the discriminator: theta = sigmoid(a * raw + b), fitted on labelled (query, text, label) pairs.

A calibration comes from a JSON file, the user's labelled pairs, or (the default) the labelled set of an embedded
world generated with ``calibration_seed``; fitted calibrations (and fine-tuned models) are cached under
:func:`crops_ray.plumbing.cache_dir`, keyed by the weights' fingerprint and every setting that changes the result.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
import zlib
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from crops_ray import storage
from crops_ray.discriminator.config import DiscriminatorConfig
from crops_ray.discriminator.fine_tune import fine_tune
from crops_ray.plumbing import cache_dir, model_path, weights_fingerprint

if TYPE_CHECKING:
    from crops_ray.discriminator.model import Discriminator


@dataclass
class Calibration:
    """theta = sigmoid(a * raw + b), with where it came from and how well it does at alpha."""

    a: float
    b: float
    model: str
    kind: str
    source: str  # "world:<seed>", a labelled-pairs path, or a JSON path
    labelled_pairs: int  # size of the set it was fitted on
    positives: int
    heldout_pairs: int = 0
    alpha: float = 0.6
    precision_at_alpha: float | None = None  # on the held-out pairs
    recall_at_alpha: float | None = None
    raw_threshold_at_alpha: float | None = None  # the raw score where theta = alpha

    def theta(self, raw: np.ndarray) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-(self.a * np.asarray(raw, dtype=np.float64) + self.b)))

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


def query_split(queries, heldout: bool) -> np.ndarray:
    """A stable half of the queries (by a hash of the text): fit on one half, measure on the other."""
    bucket = np.array([zlib.crc32(q.encode("utf-8")) % 2 for q in queries])
    return bucket == (1 if heldout else 0)


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


def fit_calibration(
    disc: Discriminator, fit: pa.Table, heldout: pa.Table | None, source: str, alpha: float
) -> Calibration:
    raw = disc.raw_scores(fit["query"].to_pylist(), fit["text"].to_pylist())
    labels = fit["label"].to_numpy()
    a, b = fit_logistic(raw, labels)
    cal = Calibration(
        a=a,
        b=b,
        model=disc.model_dir,
        kind=disc.cfg.kind,
        source=source,
        labelled_pairs=fit.num_rows,
        positives=int(labels.sum()),
        alpha=alpha,
    )
    if a > 0:
        cal.raw_threshold_at_alpha = float((np.log(alpha / (1 - alpha)) - b) / a)
    if heldout is not None and heldout.num_rows:
        theta = cal.theta(disc.raw_scores(heldout["query"].to_pylist(), heldout["text"].to_pylist()))
        cal.heldout_pairs = heldout.num_rows
        cal.precision_at_alpha, cal.recall_at_alpha = precision_recall(theta, heldout["label"].to_numpy(), alpha)
    return cal


def _fit(
    cfg: DiscriminatorConfig, fit: pa.Table, held: pa.Table, source: str, alpha: float, folder: str, progress
) -> Calibration:
    """Calibrate ``cfg``'s model on ``fit`` (fine-tuning it into ``folder`` first when ``cfg.fine_tune``)."""
    from crops_ray.discriminator.model import Discriminator  # the model module needs this one: imported here

    if cfg.fine_tune:
        if not os.path.exists(os.path.join(folder, "config.json")):
            fine_tune(cfg, fit, folder, progress)
        cfg = DiscriminatorConfig(**{**asdict(cfg), "model": folder})
        # The fine-tuned model has seen ``fit``: its two calibration parameters are fitted on the held-out half
        # (and precision/recall measured there; two parameters barely overfit), never on what it trained on.
        return fit_calibration(Discriminator(cfg), held, held, source + ":fine-tuned", alpha)
    return fit_calibration(Discriminator(cfg), fit, held, source, alpha)


def _fine_tune_key(cfg: DiscriminatorConfig) -> str:
    if not cfg.fine_tune:
        return ""
    return (
        f"-ft{cfg.fine_tune_epochs}x{cfg.fine_tune_batch_size}lr{cfg.fine_tune_lr:g}s{cfg.fine_tune_seed}"
        f"L{cfg.max_length}"
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
            "which are not there (another machine, or a wiped cache?): copy that folder there, or calibrate again "
            "(drop the calibration file to refit on the embedded world)"
        ) from None


def load_or_fit_calibration(cfg: DiscriminatorConfig, alpha: float = 0.6, progress=print) -> Calibration:
    """The calibration ``cfg`` asks for, fitting (and caching) it when needed.

    With ``cfg.fine_tune`` the model is fine-tuned on the fitting half first; the calibration's ``model`` then
    names the fine-tuned folder, which :class:`Discriminator` loads whenever it is given that calibration.
    """
    if cfg.calibration:
        cal = Calibration.load(cfg.calibration)
        if cal.kind != cfg.kind:
            raise ValueError(f"{cfg.calibration} calibrates a {cal.kind}, but the discriminator is a {cfg.kind}")
        return cal
    model_dir = model_path(cfg.model)
    if cfg.labelled_pairs:
        pairs = read_labelled_pairs(cfg.labelled_pairs)
        heldout_mask = query_split(pairs["query"].to_pylist(), heldout=True)
        fit, held = pairs.filter(pa.array(~heldout_mask)), pairs.filter(pa.array(heldout_mask))
        if fit.num_rows == 0 or held.num_rows == 0:  # too few queries to split: fit and report on all of it
            fit, held = pairs, pairs
        progress(
            f"{'fine-tuning and ' if cfg.fine_tune else ''}calibrating the discriminator on {fit.num_rows:,} labelled "
            f"pairs from {cfg.labelled_pairs}"
        )
        digest = hashlib.sha1(
            (
                f"{weights_fingerprint(model_dir)}|{os.path.abspath(cfg.labelled_pairs)}|"
                f"{os.path.getsize(cfg.labelled_pairs)}|{_fine_tune_key(cfg)}"
            ).encode()
        ).hexdigest()[:12]
        return _fit(
            cfg,
            fit,
            held,
            os.path.abspath(cfg.labelled_pairs),
            alpha,
            os.path.join(cache_dir(cfg.cache_dir), "discriminators", digest),
            progress,
        )
    from crops_ray.world.generator import WORLD_VERSION

    # The world's version is in the key: a new generator writes other labelled pairs from the same seed.
    key = (
        f"{weights_fingerprint(model_dir)}-{cfg.kind}-world{WORLD_VERSION}.{cfg.calibration_seed}"
        f"-n{cfg.calibration_pairs}-g{cfg.calibration_min_grade}{_fine_tune_key(cfg)}-a{alpha}"
    )
    cached = os.path.join(cache_dir(cfg.cache_dir), "calibration", f"{key}.json")
    with storage.key_lock(cached):  # a second run at once waits here, then reads the first one's entry
        return _cached_or_fitted(cfg, cached, alpha, key, progress)


def _cached_or_fitted(cfg: DiscriminatorConfig, cached: str, alpha: float, key: str, progress) -> Calibration:
    if os.path.exists(cached):
        cal = Calibration.load(cached)
        if os.path.exists(os.path.join(cal.model, "config.json")):
            return cal
        if not cfg.fine_tune:  # the key holds these weights' fingerprint: the same weights, installed elsewhere now
            cal.model = model_path(cfg.model)  # (a new virtual environment, another checkout)
            return cal
    from crops_ray.world.generator import generate_world, world_config
    from crops_ray.world.labelled_pairs import world_labelled_pairs

    started = time.time()
    progress(f"calibrating the discriminator on the embedded world (seed {cfg.calibration_seed}); cached at {cached}")
    with tempfile.TemporaryDirectory(prefix="crops-calibration-") as tmp:
        world = f"{tmp}/world"
        generate_world(world, world_config("tiny", seed=cfg.calibration_seed), progress=lambda *_: None)
        fit = world_labelled_pairs(
            world, cfg.calibration_pairs, heldout=False, seed=cfg.calibration_seed, min_grade=cfg.calibration_min_grade
        )
        held = world_labelled_pairs(
            world, cfg.calibration_pairs, heldout=True, seed=cfg.calibration_seed, min_grade=cfg.calibration_min_grade
        )
        cal = _fit(
            cfg,
            fit,
            held,
            f"world:{cfg.calibration_seed}:grade>={cfg.calibration_min_grade}",
            alpha,
            os.path.join(cache_dir(cfg.cache_dir), "discriminators", key),
            progress,
        )
    cal.save(cached)
    progress(
        f"calibration a={cal.a:.2f} b={cal.b:.2f}; held-out precision {cal.precision_at_alpha:.3f} recall "
        f"{cal.recall_at_alpha:.3f} at alpha {alpha} ({time.time() - started:.0f}s)"
    )
    return cal
