"""The paper's Table 1 on any logs: every method trained and evaluated in one harness, then a report.

Methods (same data, same encoder initialisation, same training budget; only the labels and the loss differ):

| name | training samples | loss |
|---|---|---|
| ``bm25`` | none (bm25s over the same corpus) | - |
| ``zero_shot`` | none (the pretrained encoder) | - |
| ``dpr`` | search log: clicked positives, other logged stages as hard negatives | InfoNCE |
| ``fs_lr`` | search log stages as levels (clicked 4 > exposed 3 > ranked 2 > filtered 1) | H-InfoNCE |
| ``crops`` | P0 + P1 + P2 + P3, HLA levels | H-InfoNCE |
| ``crops_p1`` / ``crops_p2`` / ``crops_p3`` | P0 + one perspective | H-InfoNCE |
| ``crops_binary`` | P0 + P1-P3, every positive source at one level | InfoNCE (multi-positive) |
| ``ance`` | DPR's + 7 negatives per query, uniform from the index's top 200, re-queried every 50 steps | InfoNCE |
| ``adore_star`` | DPR's + 7 negatives: STAR (uniform, initial model's top 200), then ADORE (current top 7) | InfoNCE |
| ``trisampler`` | DPR's + 7 negatives from the top 200 (as ance), 60-degree region, TriSampler's sampling | InfoNCE |
| ``sparse_zero_shot`` | none: CSR's heads fitted to reconstruct the corpus's embeddings (no labels) | - |
| ``dpr_sparse``, ``crops_sparse`` | as ``dpr``, ``crops``; start: ``sparse_zero_shot`` | theirs + CSR reconstruction |

The ablations filter the engine's samples by ``source``; a video mined by several perspectives for one query
was kept at its highest level (P1 over P2/P3), so it counts for that perspective only.

The negative-sampling baselines (``NEGATIVE_BASELINES``, opt-in with ``--methods``) train on DPR's samples with
DPR's loss and budget; only their negatives differ: mined from the frozen document tower's corpus encoding, never
a labelled positive of the query (any sample at level 3 or above, any click). The rules, their parameters and
where they depart from the original papers: :mod:`crops_ray.negatives`.

The sparse methods (``SPARSE``, opt-in with ``--sparse``) are the paper's "Sparse Model": a learned sparse retriever
(CSR, :mod:`crops_ray.sparse`) trained by the same loop on the same samples with the same loss, budget and
document tower as its dense counterpart, searched through an inverted index. Their common start, CSR's heads
fitted on the corpus's pooled embeddings, is written once per seed to ``ROOT/sparse_init``.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field, replace

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from crops_ray import schema as S
from crops_ray.config import config
from crops_ray.evaluate import EvalConfig, evaluate
from crops_ray.hla import GroupConfig, build_groups, keep_highest, write_groups
from crops_ray.layout import MethodLayout, OnlineLayout, SeedLayout
from crops_ray.model_card import write_model_card
from crops_ray.negatives import NegativeConfig, labelled_positives
from crops_ray.runtime import init_ray
from crops_ray.sources import Source
from crops_ray.sparse.head import SparseConfig
from crops_ray.tracking import NO_RUN, Run
from crops_ray.train import TrainConfig, train

TABLE1 = ("bm25", "zero_shot", "dpr", "fs_lr", "crops")
ABLATIONS = ("crops_p1", "crops_p2", "crops_p3", "crops_binary")
NEGATIVE_BASELINES = ("ance", "adore_star", "trisampler")  # opt-in (--methods): not in the default demo
SPARSE = ("sparse_zero_shot", "dpr_sparse", "crops_sparse")  # opt-in (--sparse): the paper's Sparse Model
LOG_SOURCES = S.STAGES
PERSPECTIVE_SOURCE = S.PERSPECTIVES


@dataclass(frozen=True)
class Method:
    name: str
    label: str
    sources: tuple = ()  # sample sources it trains on; () = no training
    loss: str = "h_infonce"
    binary: bool = False  # every positive source at one level
    negatives: str = "none"  # a crops_ray.negatives rule: hard negatives mined from the model's own index
    sparse: bool = False  # a learned sparse retriever (CSR heads, an inverted index) instead of dense vectors


METHODS = {
    m.name: m
    for m in (
        Method("bm25", "BM25"),
        Method("zero_shot", "Zero-shot (pretrained)"),
        Method("dpr", "DPR (clicks, InfoNCE)", LOG_SOURCES, "infonce"),
        Method("fs_lr", "FS-LR-style (log stages, H-InfoNCE)", LOG_SOURCES),
        Method("crops", "CroPS", LOG_SOURCES + tuple(PERSPECTIVE_SOURCE.values())),
        Method("crops_p1", "CroPS, P1 only", LOG_SOURCES + (PERSPECTIVE_SOURCE["p1"],)),
        Method("crops_p2", "CroPS, P2 only", LOG_SOURCES + (PERSPECTIVE_SOURCE["p2"],)),
        Method("crops_p3", "CroPS, P3 only", LOG_SOURCES + (PERSPECTIVE_SOURCE["p3"],)),
        Method(
            "crops_binary",
            "CroPS, binary labels + InfoNCE",
            LOG_SOURCES + tuple(PERSPECTIVE_SOURCE.values()),
            binary=True,
        ),
        Method("ance", "ANCE (ANN negatives, InfoNCE)", LOG_SOURCES, "infonce", negatives="ance"),
        Method(
            "adore_star", "ADORE+STAR (static, then dynamic negatives)", LOG_SOURCES, "infonce", negatives="star_adore"
        ),
        Method("trisampler", "TriSampler (quasi-triangular negatives)", LOG_SOURCES, "infonce", negatives="trisampler"),
        Method("sparse_zero_shot", "Sparse CSR, untrained (reconstruction only)", sparse=True),
        Method("dpr_sparse", "DPR, sparse CSR", LOG_SOURCES, "infonce", sparse=True),
        Method("crops_sparse", "CroPS, sparse CSR", LOG_SOURCES + tuple(PERSPECTIVE_SOURCE.values()), sparse=True),
    )
}


@config
class ExperimentConfig:
    methods: tuple = TABLE1
    # The CPU demo's training: query-side fine-tuning (a frozen document tower, shared by every method and the
    # zero-shot baseline, so the corpus is encoded once per world). `doc_tower: train` trains both towers, as
    # the paper does, at several times the cost.
    train: TrainConfig = field(
        default_factory=lambda: TrainConfig(
            max_steps=150,
            batch_size=32,
            max_length=64,
            lr=5e-5,
            checkpoint_every=1000,
            log_every=25,
            shared_towers=False,
            doc_tower="frozen",
        )
    )
    groups: GroupConfig = field(default_factory=GroupConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    sparse: SparseConfig = field(default_factory=SparseConfig)  # the sparse methods' CSR heads


def method_samples(samples: pa.Table, method: Method, log: pa.Table | None = None) -> pa.Table:
    """The samples ``method`` trains on.

    ``log``: the P0 samples straight from the search log (:func:`crops_ray.hla.log_samples`). Baselines train on
    exactly those; an enriched method on them plus the rows of its perspectives, the highest level per (query,
    video). Without ``log`` the engine's log-stage rows stand in for P0, which lack the pairs an enriched source
    out-ranked (a click that was also a reformulation positive), so pass it for a fair comparison.
    ``binary`` relabels every enriched positive as a click (one positive class, InfoNCE).
    """
    enriched = [s for s in method.sources if s not in LOG_SOURCES]
    base = log if log is not None else samples.filter(pc.is_in(samples["source"], pa.array(list(LOG_SOURCES))))
    base = base.select(samples.column_names).cast(samples.schema)
    extra = samples.filter(pc.is_in(samples["source"], pa.array(enriched or [""])))
    rows = keep_highest(pa.concat_tables([extra, base]).to_pandas())
    kept = pa.Table.from_pandas(rows, schema=samples.schema, preserve_index=False)
    if method.binary:
        # Every enriched positive counts as a click: DPR's InfoNCE then treats them all as one positive class
        # and the other logged stages as hard negatives, exactly as for clicks.
        is_enriched = pc.is_in(kept["source"], pa.array(list(PERSPECTIVE_SOURCE.values())))
        source = pc.if_else(is_enriched, pa.scalar(Source.CLICKED), kept["source"])
        kept = kept.set_column(kept.schema.get_field_index("source"), "source", source)
    return kept


def method_loss(method: Method) -> str:
    """The loss a method trains with: binary labels make CroPS's sources one positive class (InfoNCE)."""
    return "infonce" if method.loss == "infonce" or method.binary else "h_infonce"


def method_run(tracking: Run, method: Method, cfg: ExperimentConfig, seed: int, reused: bool = False) -> Run:
    """The MLflow run of one method and seed, nested in the demo's ``tracking`` run: tags ``method`` and ``seed``,
    the method's settings as params (a training method's ``train.*`` come from :func:`crops_ray.train.train`)."""
    params = {
        "method": method.name,
        "label": method.label,
        "sources": method.sources,
        "loss": method_loss(method) if method.sources else "-",
        "binary": method.binary,
        "negatives": method.negatives,
        "seed": seed,
        "groups": asdict(cfg.groups) if method.sources else {},
        "eval": asdict(cfg.eval),
    }
    tags = {"method": method.name, "seed": seed, **({"reused": "true"} if reused else {})}
    return tracking.child(f"{method.name} seed {seed}", tags=tags, params=params)


def log_result(run: Run, result: dict, out: str) -> None:
    """A method's Table-1 numbers as metrics (``recall@100_ct`` as ``recall_at_100_ct``) and its result.json and
    evaluation metrics.json as artifacts (the training logs its own train_metrics.json)."""
    run.log_metrics({**result["metrics"], "method_seconds": result["seconds"]})
    folder = MethodLayout(out)
    run.log_artifact(folder.result_json)
    for evaluation in folder.evaluations:  # a trained method's, BM25's or zero-shot's
        run.log_artifact(evaluation.metrics_json, "eval")


def run_method(
    method: Method,
    logs: str,
    samples: pa.Table | None,
    out: str,
    cfg: ExperimentConfig,
    seed: int,
    progress=print,
    log: pa.Table | None = None,
    tracking: Run = NO_RUN,
) -> dict:
    """Train (when the method trains) and evaluate one method into ``out``; returns its metrics.

    ``tracking``: the demo's MLflow run; this method and seed become a run nested in it (:func:`method_run`) with
    the training's steps, the evaluation's numbers and result.json."""
    with method_run(tracking, method, cfg, seed) as run:
        result = _train_and_evaluate(method, logs, samples, out, cfg, seed, progress, log, run)
        log_result(run, result, out)
    return result


def _train_and_evaluate(
    method: Method,
    logs: str,
    samples: pa.Table | None,
    out: str,
    cfg: ExperimentConfig,
    seed: int,
    progress,
    log: pa.Table | None,
    tracking: Run,
) -> dict:
    os.makedirs(out, exist_ok=True)
    folder = MethodLayout(out)
    started = time.time()
    train_metrics = {}
    kind = "sparse" if method.sparse else "dense"
    start = sparse_start(logs, os.path.dirname(out), cfg, seed, progress) if method.sparse else cfg.train.model
    if method.name == "bm25":
        metrics = evaluate(logs, out, method="bm25", cfg=cfg.eval, progress=progress)
    elif not method.sources:
        metrics = evaluate(logs, out, method=kind, model=start, cfg=cfg.eval, progress=progress)
    else:
        if samples is None:
            raise ValueError(f"method {method.name} needs training samples")
        chosen = method_samples(samples, method, log)
        groups = build_groups(chosen, GroupConfig(**{**asdict(cfg.groups), "seed": seed}))
        write_groups(groups, folder.groups)
        loss = method_loss(method)
        tcfg = TrainConfig(**{**asdict(cfg.train), "loss": loss, "seed": seed, "model": start})
        if method.sparse and method.negatives != "none":
            raise ValueError(f"method {method.name}: the hard-negative miners search dense vectors, not sparse codes")
        if tcfg.doc_tower == "frozen" and not tcfg.doc_embeddings:
            tcfg.doc_embeddings = frozen_doc_embeddings(logs, tcfg, cfg.eval, folder.doc_embeddings, progress)
        if method.negatives != "none":
            tcfg.negatives = mining_config(method, tcfg, chosen, out)
        mined = "" if method.negatives == "none" else f", {method.negatives} negatives"
        progress(
            f"[{method.name}] training on {groups.num_rows:,} groups from {chosen.num_rows:,} samples ({loss}{mined})"
        )
        init_ray()  # train() needs Ray; with --reuse nothing before it may have started one
        train_metrics = train(
            folder.groups,
            out,
            tcfg,
            storage=folder.checkpoints,
            name=method.name,
            progress=progress,
            tracking=tracking,
        )
        metrics = evaluate(logs, folder.eval.root, method=kind, model=folder.model, cfg=cfg.eval, progress=progress)
        corpus = S.count_rows(S.table_files(logs, "videos"))
        # The training side of the card is the driver's (train() wrote it under the run's name, the method's);
        # evaluation adds its own.
        write_model_card(folder.model, evaluation={**metrics, "corpus_videos": corpus})
    result = {
        "method": method.name,
        "seed": seed,
        "metrics": metrics,
        "train": train_metrics,
        "seconds": round(time.time() - started, 1),
    }
    with open(folder.result_json, "w") as f:
        json.dump(result, f, indent=2, default=str)
    return result


def sparse_start(logs: str, root: str, cfg: ExperimentConfig, seed: int, progress=print) -> str:
    """``ROOT/sparse_init``: the pretrained encoder with CSR's heads fitted (reconstruction only, no labels) on the
    corpus's pooled embeddings through its document tower (the evaluation's cached encoding). Made once per root
    and seed; every sparse method starts from it, as the dense methods start from the pretrained encoder."""
    from crops_ray.embed import encode_corpus
    from crops_ray.plumbing import model_path
    from crops_ray.sparse.fit import FIT_FILE, sparse_init

    out = SeedLayout(root).sparse_init
    if not os.path.exists(f"{out}/{FIT_FILE}"):
        _, pooled = encode_corpus(S.table_files(logs, "videos"), model_path(cfg.train.model), cfg.eval.embed, progress)
        sparse_init(cfg.train.model, pooled, out, cfg.sparse, cfg.train.shared_towers, seed, progress)
    return out


def mining_config(method: Method, tcfg: TrainConfig, chosen: pa.Table, out: str) -> NegativeConfig:
    """``tcfg.negatives`` for a negative-sampling baseline: its rule, the frozen tower's corpus encoding to mine,
    and its samples' labelled positives (written to ``out/positives.parquet``), which it never mines."""
    if tcfg.doc_tower != "frozen" or not (tcfg.negatives.corpus or tcfg.doc_embeddings):
        raise ValueError(
            f"method {method.name} mines the frozen document tower's corpus encoding: it needs "
            "train.doc_tower = frozen and train.max_length equal to the evaluation's"
        )
    positives = MethodLayout(out).positives
    pq.write_table(labelled_positives(chosen, tcfg.negatives.positive_level), positives)
    corpus = tcfg.negatives.corpus or tcfg.doc_embeddings
    return replace(tcfg.negatives, rule=method.negatives, corpus=corpus, positives=positives)


def frozen_doc_embeddings(logs: str, tcfg: TrainConfig, ecfg: EvalConfig, path: str, progress=print) -> str | None:
    """The corpus through the frozen document tower, as (video_id, text, embedding) for the trainer's cache and
    the hard-negative miners' index.

    The same encoding the evaluation makes (and caches), so a frozen tower encodes the corpus once for every
    method and for the zero-shot baseline. None when the training's ``max_length`` differs from the
    evaluation's (then the trainer's cache fills as it goes).
    """
    from crops_ray.embed import encode_corpus
    from crops_ray.encoder import EncoderConfig
    from crops_ray.plumbing import model_path

    if tcfg.max_length != EncoderConfig().max_length:
        return None
    files = S.table_files(logs, "videos")
    ids, emb = encode_corpus(files, model_path(tcfg.model), ecfg.embed, progress=progress)
    videos = (
        pq.read_table(files, columns=["video_id", "text"])
        .to_pandas()
        .drop_duplicates("video_id")
        .set_index("video_id")["text"]
    )
    flat = pa.array(emb.reshape(-1), type=pa.float32())
    table = pa.table(
        {
            "video_id": ids,
            "text": [videos[v] for v in ids],
            "embedding": pa.FixedSizeListArray.from_arrays(flat, emb.shape[1]),
        }
    )
    pq.write_table(table, path)
    return path


def aggregate(results: list[dict]) -> dict[str, dict[str, float]]:
    """Mean and (sample) standard deviation per method and metric over seeds."""
    by_method: dict[str, list[dict]] = {}
    for r in results:
        by_method.setdefault(r["method"], []).append(r["metrics"])
    out = {}
    for name, runs in by_method.items():
        keys = [
            k
            for k, v in runs[0].items()
            if isinstance(v, (int, float)) and k not in ("queries", "seconds") and not k.startswith("pairs_")
        ]
        row = {}
        for k in keys:
            values = np.array([r[k] for r in runs if k in r], dtype=float)
            row[k] = float(values.mean())
            row[f"{k}_std"] = float(values.std(ddof=1)) if len(values) > 1 else 0.0
        row["seeds"] = len(runs)
        out[name] = row
    return out


def method_model(name: str, root: str, cfg: ExperimentConfig) -> str | None:
    """The model a method retrieves with: None for BM25, the pretrained encoder, or its trained folder."""
    if name == "bm25":
        return None
    if not METHODS[name].sources:
        return SeedLayout(root).sparse_init if METHODS[name].sparse else cfg.train.model
    return SeedLayout(root).method(name).model


def online_ab(
    world: str,
    root: str,
    methods: list[str],
    out: str,
    cfg: ExperimentConfig,
    baseline: str = "dpr",
    ocfg=None,
    progress=print,
    reuse: bool = False,
):
    """The simulated online A/B test (the paper's Table 2) of ``methods`` trained under ``root`` on ``world``.

    Returns (summary frame, markdown table); writes ``out/online_counts.parquet`` (per user and arm) and
    ``out/online.json``. Needs a world written by the generator (``world.json``); raises FileNotFoundError
    otherwise, so a caller on a user's own logs can skip it with the reason.
    """
    import pandas as pd

    from crops_ray.evaluate import retrieve
    from crops_ray.world import online as O

    ocfg = ocfg or O.OnlineConfig()
    labels = {
        **{m: METHODS[m].label for m in methods},
        "oracle": "Oracle (the intent's own videos)",
        "logging": "Logging engine (incumbent, term based)",
        "random": "Random",
    }
    files = OnlineLayout(out)
    counts = pd.read_parquet(files.counts) if reuse and os.path.exists(files.counts) else None
    if counts is not None and set(methods) <= set(counts["arm"]):  # summarise the counts an earlier run wrote
        base = baseline if baseline in set(counts["arm"]) else "logging"
        summary = O.summarize(counts, base, ocfg)
        return summary, O.table2_markdown(summary, base, labels)
    loaded = O.load_world(world)
    sessions = O.plan_sessions(*loaded, ocfg)  # planned once: the queries to retrieve for, then the simulation
    queries = O.queries_needed(world, ocfg, loaded=loaded, sessions=sessions)
    runs = {}
    for name in methods:
        model = method_model(name, root, cfg)
        progress(f"online A/B: {METHODS[name].label} retrieves the top {ocfg.k} for {len(queries):,} queries")
        kind = "bm25" if model is None else "sparse" if METHODS[name].sparse else "dense"
        runs[name] = retrieve(kind, world, queries, ocfg.k, model=model, cfg=cfg.eval, progress=progress)
    counts = O.simulate(world, runs, ocfg, progress=progress, loaded=loaded, sessions=sessions)
    os.makedirs(out, exist_ok=True)
    counts.to_parquet(files.counts, index=False)
    base = baseline if baseline in runs else "logging"
    summary = O.summarize(counts, base, ocfg)
    table = O.table2_markdown(summary, base, labels)
    with open(files.summary_json, "w") as f:
        json.dump(
            {"baseline": base, "config": asdict(ocfg), "arms": summary.set_index("arm").to_dict(orient="index")},
            f,
            indent=2,
            default=float,
        )
    return summary, table
