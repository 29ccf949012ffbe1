"""The data engine end to end: validated logs -> HLA-labelled training samples (``pipelines/build_data.py``).

Steps (each writes parquet, so a large run never holds its data in the object store, and each is timed):

1. ``users``: P1 and P2 candidates, one shuffle of the logs by user (:mod:`crops_ray.engine.users`).
2. ``pairs``: log rows (P0), candidates and videos, one shuffle by video -> one row per (query, video) with
   its text (:func:`crops_ray.engine.assemble.collapse_videos`). Both shuffles key on hash buckets of the
   user/video id (``rows_per_bucket``), so the per-group functions run vectorised over many users/videos.
3. ``gate``: the discriminator trained on labels from the user's data (the log's own labels, or the user's
   labelled pairs; :mod:`crops_ray.discriminator.gate`), cached.
4. ``score``: its raw score over the pairs P1/P2 proposed, its calibration on the held-out queries' labelled
   candidates -> ``OUT/candidates/`` (every pair, its sources, theta, and which mined candidates were kept).
5. ``llm_generate`` and ``llm_verify``: P3 on the most clicked queries -> ``OUT/llm_descriptions/`` (every
   description with the quality-control reason that dropped it, if any).
6. ``assemble``: the highest level per (query, video), plus the P3 documents -> ``OUT/samples/``
   (``schema.SAMPLES_SCHEMA``), and ``OUT/stats.json``.

``OUT`` is replaced atomically: everything is written to a staging folder that takes its place at the end.
Ray workers write there directly, so on a multi-node cluster ``OUT`` must be a shared mount (NFS and the
like); object stores (s3://) have no atomic rename and are not supported as ``OUT``.

This module is the stage sequence, one function per stage (P3's two are
:func:`crops_ray.engine.world_knowledge.run_stages`), with ``--validate`` first and the audit against a world's
truth last. The settings are in :mod:`crops_ray.engine.config`, the input checks and ``--validate`` in
:mod:`crops_ray.engine.inputs`, the parquet and timing helpers in :mod:`crops_ray.engine.io`, the counters,
stats.json's layout and the printed summary in :mod:`crops_ray.engine.summary`; the names other code imports
from here are re-exported.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import asdict, dataclass, field

from crops_ray import schema as S
from crops_ray import storage
from crops_ray.discriminator import Calibration, calibrated_weights, score_dataset
from crops_ray.discriminator.gate import calibrate_gate, train_gate, with_text
from crops_ray.engine import assemble as A
from crops_ray.engine import world_knowledge as W
from crops_ray.engine.assemble import llm_samples
from crops_ray.engine.config import EngineConfig, EngineInputError, label_settings
from crops_ray.engine.inputs import Run, check_logs, read_inputs, validate_stage
from crops_ray.engine.io import Clock, read_parquet, sum_counts, write_parquet
from crops_ray.engine.summary import (
    CANDIDATE_COUNT_COLUMNS,
    LlmCounts,
    MinedCounts,
    candidate_counts,
    engine_stats,
    format_summary,
    sample_counts,
)
from crops_ray.hla import LevelConfig
from crops_ray.layout import STATS_JSON
from crops_ray.sources import GATED_SOURCES, Source

__all__ = [  # re-exported: other code imports these from crops_ray.engine.build
    "EngineConfig",
    "EngineInputError",
    "build_data",
    "candidate_counts",
    "format_summary",
    "label_settings",
    "llm_samples",
    "sample_counts",
]


# ---------------------------------------------------------------------------------------------- the engine


def build_data(
    logs: str,
    out: str,
    cfg: EngineConfig | None = None,
    validate: bool = False,
    eval_dir: str | None = None,
    progress=print,
) -> dict:
    """Validated logs -> ``out``/samples/ and ``out``/stats.json (``out`` replaced atomically). Returns the stats."""
    from crops_ray.runtime import init_ray

    cfg = cfg or EngineConfig()
    storage.check_output(out, [logs, eval_dir])  # before anything is read, started or deleted
    if validate:  # whole-file problems fail before anything starts
        for table in S.TABLES:
            S.check_file_schemas(S.table_files(logs, table), table, S.LogColumns())
    else:
        check_logs(logs)
    started = time.time()
    init_ray()
    import ray.data

    ctx = ray.data.DataContext.get_current()
    previous_strategy = ctx.shuffle_strategy
    ctx.shuffle_strategy = cfg.shuffle_strategy
    try:
        with storage.Output(out, inputs=[logs, eval_dir]) as staging:
            stats = _build(logs, staging, cfg, validate, eval_dir, progress)
            stats["seconds"]["total"] = round(time.time() - started, 2)
            if not cfg.keep_work:
                shutil.rmtree(f"{staging}/_work", ignore_errors=True)
            if stats.get("evaluation") is None and eval_dir is None:
                stats.pop("evaluation", None)
            with open(f"{staging}/{STATS_JSON}", "w") as f:
                json.dump(stats, f, indent=2, default=str)
    finally:
        ctx.shuffle_strategy = previous_strategy
    return stats


def _build(logs: str, staging: str, cfg: EngineConfig, validate: bool, eval_dir: str | None, progress) -> dict:
    sources = set(cfg.sources)
    clock = Clock(progress, total=(1 if validate else 0) + 4 + (2 if "p3" in sources else 0) + 1)
    if validate:
        logs, eval_dir = validate_stage(logs, staging, eval_dir, clock, progress)
    run = read_inputs(logs, staging, cfg, clock, progress)

    user_rows, heavy = _mine_users(run)
    pair_rows = _pairs(run, user_rows)
    gate = _train_gate(run)
    mined, calibration = _score(run, gate, pair_rows)
    calibration.save(f"{staging}/discriminator_calibration.json")
    llm = W.run_stages(run, calibration) if "p3" in sources else LlmCounts()  # P3: llm_generate, llm_verify
    sample_rows, by_source_level = _assemble(run)

    import ray

    stats = engine_stats(
        logs=run.logs,
        resources=ray.cluster_resources(),
        cfg=cfg,
        calibration=calibration,
        gate_info=gate.info,
        rows_in=run.rows_in,
        quarantined=run.quarantined,
        mined=mined,
        llm=llm,
        user_rows=user_rows,
        heavy=heavy,
        sample_rows=sample_rows,
        by_source_level=by_source_level,
        seconds=clock.seconds,
    )
    stats["evaluation"] = _audit(staging, eval_dir, cfg)
    return stats


# ---------------------------------------------------------------------------------------------- the stages


SEARCH_COLUMNS = ["request_id", "user_id", "query", "ts", "video_id", "stage"]


def _mine_users(run: Run) -> tuple[int, dict[str, int]]:
    """P1/P2 candidates, one shuffle by user -> ``_work/user_candidates``. Returns the candidate rows and the users
    over max_user_rows (left out of P1/P2 mining) with their rows."""
    cfg, files, rows_in = run.cfg, run.files, run.rows_in
    p1_cfg = cfg.reformulation if "p1" in cfg.sources else None
    p2_cfg = cfg.recommendation if "p2" in cfg.sources else None
    user_rows = 0
    heavy: dict[str, int] = {}  # users over max_user_rows, left out of P1/P2 mining: their rows
    with run.clock.stage("users", "mining reformulation (P1) and recommendation (P2) candidates per user"):
        if p1_cfg or p2_cfg:
            from crops_ray.engine.users import USER_CANDIDATE_SCHEMA, heavy_users, user_candidates

            rec_cols = ["user_id", "video_id", "ts"] + (["action"] if p2_cfg and p2_cfg.actions else [])
            rec = read_parquet(files["rec_log"], rec_cols) if rows_in["rec_log"] and p2_cfg else None
            rec_rows = rows_in["rec_log"] if rec is not None else 0
            if cfg.max_user_rows and max(rows_in["search_log"], rec_rows) > cfg.max_user_rows // 2:
                # no user can pass the cap when neither log holds half as many rows: skip the count
                heavy = heavy_users([read_parquet(files["search_log"], ["user_id"]), rec], cfg.max_user_rows)
            if heavy:
                run.indented(
                    f"{len(heavy):,} user(s) over max_user_rows={cfg.max_user_rows:,} left out of P1/P2 mining "
                    f"({sum(heavy.values()):,} rows; the heaviest has {max(heavy.values()):,})"
                )
            ds = user_candidates(
                read_parquet(files["search_log"], SEARCH_COLUMNS),
                rec,
                p1_cfg,
                p2_cfg if rec is not None else None,
                run.partitions,
                run.buckets,
                cfg.map_num_cpus,
                skip_users=heavy,
            )
            user_rows = write_parquet(ds, f"{run.work}/user_candidates", USER_CANDIDATE_SCHEMA)
    run.indented(f"{user_rows:,} candidate rows (before deduplication)")
    return user_rows, heavy


def _pairs(run: Run, user_rows: int) -> int:
    """P0 log rows, the mined candidates and the videos, one shuffle by video -> ``_work/pairs``: one row per
    (query, video) with its text. Returns the pairs."""
    cfg = run.cfg
    with run.clock.stage("pairs", "collapsing log rows and candidates into (query, video) pairs with text"):
        cands = read_parquet(f"{run.work}/user_candidates") if user_rows else None
        pairs = A.pairs_dataset(
            read_parquet(run.files["search_log"], SEARCH_COLUMNS),
            read_parquet(run.files["videos"]),
            cands,
            LevelConfig(dict(cfg.levels)),
            run.partitions,
            run.buckets,
            cfg.map_num_cpus,
        )
        pair_rows = write_parquet(pairs, f"{run.work}/pairs", A.PAIR_SCHEMA)
    run.indented(f"{pair_rows:,} pairs")
    return pair_rows


@dataclass
class Gate:
    """The gate as the score stage gets it: a calibration to use as is (``fixed``), or weights to calibrate on the
    mined candidates' raw scores with the log's evidence (``evidence``; None for the user's labelled pairs)."""

    model_dir: str
    fixed: Calibration | None = None
    evidence: object = None
    heldout_sample: object = None  # the held-out queries' balanced sample (query, text, label)
    info: dict = field(default_factory=dict)  # stats.json's discriminator.gate


def _train_gate(run: Run) -> Gate:
    """The gate's weights: from a calibration JSON as is, else trained on the user's labelled pairs or on the
    log's own labels (:mod:`crops_ray.discriminator.gate`; never a generated world)."""
    import pyarrow.compute as pc

    dcfg = run.cfg.discriminator
    with run.clock.stage("gate", f"training the gate ({dcfg.kind}) on labels from your data"):
        if dcfg.calibration:
            cal = Calibration.load(dcfg.calibration)
            calibrated_weights(cal, dcfg)  # weights that are gone fail here, not inside every actor
            run.indented(f"the gate as calibrated in {dcfg.calibration} ({cal.kind}, {cal.model})")
            return Gate(cal.model, fixed=cal, info={"labels": os.path.abspath(dcfg.calibration)})
        import pyarrow.parquet as pq

        search = pq.read_table(run.files["search_log"], columns=["request_id", "query", "video_id", "stage"])
        videos = pq.read_table(run.files["videos"], columns=["video_id", "text"])
        pairs = pq.read_table(storage.parquet_files(f"{run.work}/pairs"), columns=["query", "video_id", "needs_score"])
        candidates = pairs.filter(pc.fill_null(pairs["needs_score"], False)).to_pandas()
        model_dir, evidence, info = train_gate(dcfg, search, videos, candidates, progress=run.indented)
        labels, sample = info.pop("_labels", None), info.pop("_heldout_sample", None)
        if labels is not None:  # what the gate learnt from (and is calibrated on), for reading and for the audit
            pq.write_table(labels, f"{run.staging}/gate_labels.parquet")
        held = with_text(sample, videos) if sample is not None else None
        return Gate(model_dir, None, evidence, held, info)


def _score(run: Run, gate: Gate, pair_rows: int) -> tuple[MinedCounts, Calibration]:
    """The gate's raw score for the pairs P1/P2 proposed -> its calibration (unless fixed) -> theta and the
    labelling rule -> ``OUT/candidates``."""
    cfg, staging = run.cfg, run.staging
    labels = label_settings(cfg)
    dcfg = cfg.discriminator  # a fixed calibration's kind wins where the model loads (Discriminator)
    raw_cal = gate.fixed or Calibration(a=1.0, b=0.0, model=gate.model_dir, kind=dcfg.kind, source="raw",
                                        labelled_pairs=0, positives=0, int8=dcfg.int8)  # fmt: skip
    with run.clock.stage(
        "score", f"scoring mined pairs with the gate ({raw_cal.kind}, {os.path.basename(gate.model_dir.rstrip('/'))})"
    ):
        ds = score_dataset(
            read_parquet(f"{run.work}/pairs"),
            dcfg,
            raw_cal,
            rows=pair_rows,
            mask_column="needs_score",
            gate_column="reformulated_queries" if labels["gate"] == "discriminator" else None,
            raw=True,
        )
        write_parquet(ds, f"{run.work}/scored", A.SCORED_SCHEMA)
        calibration = gate.fixed or _calibrate(run, gate, dcfg, raw_cal)
        ds = read_parquet(f"{run.work}/scored").map_batches(
            A.label_candidates,
            batch_format="pyarrow",
            fn_kwargs={**labels, "calibration": asdict(calibration)},
            num_cpus=cfg.map_num_cpus,
        )
        write_parquet(ds, f"{staging}/candidates", A.CANDIDATES_SCHEMA)
    counts = MinedCounts.from_totals(sum_counts(f"{staging}/candidates", candidate_counts, CANDIDATE_COUNT_COLUMNS))
    run.indented(
        f"scored {counts.scored:,} pairs; kept P1 {counts.p1_kept:,} of "
        f"{counts.p1_candidates:,}, P2 {counts.p2_kept:,} of {counts.p2_candidates:,}"
    )
    return counts, calibration


def _calibrate(run: Run, gate: Gate, dcfg, raw_cal: Calibration) -> Calibration:
    """theta = sigmoid(a * raw + b) fitted on the held-out queries' labelled candidates, pooled and per source
    (:func:`crops_ray.discriminator.gate.calibrate_gate`). ``raw_cal`` is the identity calibration the scorers used:
    the held-out sample, when it is needed, is scored by the same model."""
    import pyarrow.parquet as pq

    scored = pq.read_table(
        storage.parquet_files(f"{run.work}/scored"),
        columns=["query", "video_id", "score", "needs_score", *GATED_SOURCES],
    ).to_pandas()
    scored = scored[scored["needs_score"].fillna(False) & scored["score"].notna()].rename(columns={"score": "raw"})
    scored[list(GATED_SOURCES)] = scored[list(GATED_SOURCES)].fillna(False)
    scorer = None

    def raw_of(queries, texts):
        nonlocal scorer
        if scorer is None:
            from crops_ray.discriminator.model import Discriminator

            scorer = Discriminator(dcfg, raw_cal)
        return scorer.raw_scores(queries, texts)

    cal, info = calibrate_gate(dcfg, gate.model_dir, scored, gate.evidence, gate.heldout_sample, raw_of, run.cfg.alpha)
    labelled = info.pop("_calibration_set", None)
    if labelled is not None:
        labelled.to_parquet(f"{run.staging}/gate_calibration.parquet", index=False)
    gate.info.update(info)
    per_source = ", ".join(f"{k} a={v['a']:.2f} b={v['b']:.2f}" for k, v in (cal.sources or {}).items())
    run.indented(
        f"calibrated on {info['calibration_pairs']:,} labelled pairs ({info['calibration_set']}): pooled a={cal.a:.2f} "
        f"b={cal.b:.2f}{'; ' + per_source if per_source else ''}"
    )
    return cal


def _assemble(run: Run) -> tuple[int, dict[str, int]]:
    """HLA: the highest level per (query, video), plus P3's kept descriptions -> ``OUT/samples``. Returns the
    samples and their count per ``source:level``."""
    cfg, staging = run.cfg, run.staging
    with run.clock.stage("assemble", "assembling HLA samples (highest level per query and video)"):
        samples = read_parquet(f"{staging}/candidates").map_batches(
            A.to_samples, batch_format="pyarrow", fn_kwargs={"levels": dict(cfg.levels)}, num_cpus=cfg.map_num_cpus
        )
        llm_ds = read_parquet(f"{staging}/llm_descriptions") if "p3" in cfg.sources else None
        if llm_ds is not None:
            samples = samples.union(
                llm_ds.map_batches(
                    llm_samples,
                    batch_format="pyarrow",
                    fn_kwargs={"level": cfg.levels[Source.LLM]},
                    num_cpus=cfg.map_num_cpus,
                )
            )
        sample_rows = write_parquet(samples, f"{staging}/samples", S.SAMPLES_SCHEMA)
    return sample_rows, sum_counts(f"{staging}/samples", sample_counts, ["source", "level"])


def _audit(staging: str, eval_dir: str | None, cfg: EngineConfig) -> dict | None:
    """Precision and recall against a generated world's ground truth (None without one)."""
    from crops_ray.world.audit import evaluate_engine, has_truth

    if not has_truth(eval_dir):
        return None
    return evaluate_engine(staging, eval_dir, cfg.alpha, cfg.audit_min_grade)
