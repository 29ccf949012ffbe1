"""The alpha sweep (the paper's limitation 1): what the discriminator's threshold does to P1/P2 and to CroPS.

build_data scored every mined pair once and kept theta (and the reformulation gate's score) in
``OUT/candidates/``. Here each alpha relabels those pairs with the engine's own rule
(:func:`crops_ray.engine.assemble.label_candidates` with :func:`crops_ray.engine.build.label_settings`) and
reassembles the samples with the engine's own HLA step (:func:`crops_ray.engine.assemble.to_samples`): nothing is
scored again, and the build's own alpha reproduces the build exactly. Per alpha:

- counts (any logs): P1/P2 candidates and kept, the precision the gate expects of the kept pairs (their mean
  theta: the logs' own estimate), samples per source and level;
- quality (where ground truth exists, e.g. a generated world's ``eval/``): precision and recall of the kept
  P1, P2 and mined pairs, relevant meaning qrels grade >= 2, with the counters of :mod:`crops_ray.world.audit`;
- downstream (opt-in: CroPS trains once per alpha through :func:`crops_ray.experiment.run_method`): Recall@100
  CT/QR and NDCG@4, and the paired bootstrap difference from the build's alpha over queries.

P3 (the LLM's descriptions) went through the same discriminator inside build_data, under a cap per query that
depends on the ranking of theta; it is held as built (at the build's alpha) here: the sweep is of P1 and P2.
"""

from __future__ import annotations

import json
import os
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from crops_ray import schema as S
from crops_ray import storage
from crops_ray.engine import assemble as A
from crops_ray.engine import build as B
from crops_ray.engine.summary import mean_of
from crops_ray.layout import DataLayout, SeedLayout
from crops_ray.report.sweep import DOWNSTREAM_METRICS, summary_lines, write_outputs
from crops_ray.sources import GATED_SOURCES, Source
from crops_ray.world import audit as E

DEFAULT_ALPHAS = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
MINED = tuple((f"p{s.perspective}", s) for s in GATED_SOURCES)  # (short name, candidates column) of each swept source
LABEL_FLAGS = ("gate_pass", "reformulation_kept", "recommendation_kept")  # what label_candidates derives
PROGRESS_ROWS = 500_000  # a progress line per this many candidate pairs read


class SweepInputError(ValueError):
    """The folder is not a finished build_data output (with a message saying what to pass)."""


# ---------------------------------------------------------------------------------------------- inputs


def parse_alphas(text: str | None) -> tuple[float, ...]:
    """``"0.5,0.6"`` -> (0.5, 0.6), sorted and de-duplicated; None -> :data:`DEFAULT_ALPHAS`."""
    if text is None:
        return DEFAULT_ALPHAS
    try:
        alphas = sorted({round(float(a), 6) for a in text.split(",") if a.strip()})
    except ValueError:
        raise ValueError(f"--alphas: expected comma-separated numbers, got {text!r}") from None
    if not alphas or not all(0.0 < a < 1.0 for a in alphas):
        raise ValueError(f"--alphas: every alpha must be in (0, 1), got {text!r}")
    return tuple(alphas)


def read_build(data: str) -> tuple[dict, B.EngineConfig]:
    """A finished build_data output's stats.json and the EngineConfig it was built with."""
    from crops_ray.config import from_dict

    build = DataLayout(data)
    if not os.path.exists(build.stats_json) or not storage.parquet_files(build.candidates):
        raise SweepInputError(
            f"{data} is not a build_data output (no stats.json or candidates/): pass the --out of "
            "`python pipelines/build_data.py`, whose candidates/ keep every mined pair's theta"
        )
    with open(build.stats_json) as f:
        stats = json.load(f)
    return stats, from_dict(B.EngineConfig, stats["config"])


def _batches(folder: str, batch_size: int = 65_536):
    """The parquet files of ``folder`` as pyarrow tables of up to ``batch_size`` rows, one at a time."""
    for file in storage.parquet_files(folder):
        fs, path = S.filesystem_and_path(file)
        with fs.open_input_file(path) as handle:
            for batch in pq.ParquetFile(handle).iter_batches(batch_size=batch_size):
                yield pa.Table.from_batches([batch])


# ---------------------------------------------------------------------------------------------- relabelling


def relabel(candidates: pa.Table, cfg: B.EngineConfig, alpha: float) -> pa.Table:
    """Candidates as build_data would have labelled them at ``alpha``: its gate and theta > alpha on the stored
    scores (CANDIDATES_SCHEMA)."""
    stored = candidates.drop_columns([c for c in LABEL_FLAGS if c in candidates.column_names])
    return A.label_candidates(stored, **{**B.label_settings(cfg), "alpha": alpha})


def alpha_samples(data: str, cfg: B.EngineConfig, alpha: float) -> pa.Table:
    """The samples build_data would have written at ``alpha`` (SAMPLES_SCHEMA): P0-P2 through the engine's HLA
    step on the relabelled candidates, plus P3 as built."""
    parts = [
        A.to_samples(relabel(batch, cfg, alpha), dict(cfg.levels)) for batch in _batches(DataLayout(data).candidates)
    ]
    parts += list(_p3_samples(data, cfg))
    return pa.concat_tables(parts) if parts else S.SAMPLES_SCHEMA.empty_table()


def _p3_samples(data: str, cfg: B.EngineConfig):
    """The LLM's kept descriptions as samples, as build_data assembled them (none without P3)."""
    if "p3" in cfg.sources:
        for batch in _batches(DataLayout(data).llm_descriptions):
            yield B.llm_samples(batch, cfg.levels[Source.LLM])


def _add(total: dict, counts: dict) -> None:
    for k, v in counts.items():
        total[k] = total.get(k, 0) + v


def _table_counts(table: pa.Table) -> dict[str, float]:
    """build.py's one-row counter tables as a dict (counts, and the kept pairs' theta sums)."""
    return {name: table[name][0].as_py() or 0 for name in table.column_names}


def sweep_counts(
    data: str, cfg: B.EngineConfig, alphas, relevant: set | None = None, progress=print
) -> dict[float, dict]:
    """Per alpha: the engine's candidate counters, samples per source:level, and (with ``relevant`` pairs) the
    quality counters of P1, P2 and all mined pairs. One pass over the candidates, every alpha per batch."""
    out = {a: {"counts": {}, "samples": {}, "quality": {"p1": {}, "p2": {}, "mined": {}}} for a in alphas}
    for batch in _p3_samples(data, cfg):  # the same at every alpha
        for alpha in alphas:
            _add(out[alpha]["samples"], _table_counts(B.sample_counts(batch)))
    rows, reported = 0, 0
    for batch in _batches(DataLayout(data).candidates):
        rows += batch.num_rows
        rel = None
        if relevant is not None:
            rel = E.is_relevant(batch["query"].to_pylist(), batch["video_id"].to_pylist(), relevant)
        for alpha in alphas:
            labelled = relabel(batch, cfg, alpha)
            entry = out[alpha]
            _add(entry["counts"], _table_counts(B.candidate_counts(labelled)))
            _add(entry["samples"], _table_counts(B.sample_counts(A.to_samples(labelled, dict(cfg.levels)))))
            if rel is not None:
                _add_quality(entry["quality"], labelled, rel)
        if rows - reported >= PROGRESS_ROWS:
            progress(f"      {rows:,} candidate pairs relabelled at {len(alphas)} alphas")
            reported = rows
    progress(f"      {rows:,} candidate pairs relabelled at {len(alphas)} alphas: done")
    return out


def _add_quality(quality: dict, labelled: pa.Table, rel: np.ndarray) -> None:
    """Add one batch's quality counters per swept source and for every mined pair (kept by either source)."""
    proposed_any = np.zeros(labelled.num_rows, dtype=bool)
    kept_any = np.zeros(labelled.num_rows, dtype=bool)
    for short, column in MINED:
        proposed = labelled[column].to_numpy(zero_copy_only=False).astype(bool)
        kept = labelled[f"{column}_kept"].to_numpy(zero_copy_only=False).astype(bool)
        proposed_any |= proposed
        kept_any |= kept
        _add(quality[short], E.quality_counts(rel, proposed, kept))
    _add(quality["mined"], E.quality_counts(rel, proposed_any, kept_any))


# ---------------------------------------------------------------------------------------------- rows


def _f1(counts: dict) -> float | None:
    """F1 of the kept pairs against the relevant candidates, from :func:`quality_counts`' counters."""
    total = counts["kept"] + counts["relevant"]
    return round(2 * counts["kept_relevant"] / total, 4) if total else None


def sweep_rows(counted: dict[float, dict], truth: bool) -> list[dict]:
    """One flat row per alpha: kept counts, (with ground truth) precision/recall/F1, samples."""
    rows = []
    for alpha, entry in sorted(counted.items()):
        c = entry["counts"]
        row = {
            "alpha": alpha,
            **{k: c.get(k, 0) for k in ("p1_candidates", "p1_kept", "p2_candidates", "p2_kept")},
            # the precision the gate expects of what it keeps, from the logs alone (the kept pairs' mean theta)
            "p1_estimated_precision": mean_of(c.get("p1_kept_theta", 0), c.get("p1_kept", 0)),
            "p2_estimated_precision": mean_of(c.get("p2_kept_theta", 0), c.get("p2_kept", 0)),
            "samples": sum(entry["samples"].values()),
            "samples_by_source_level": dict(sorted(entry["samples"].items())),
        }
        if truth:
            for name in ("p1", "p2", "mined"):
                counts = {"candidates": 0, "relevant": 0, "kept": 0, "kept_relevant": 0, **entry["quality"][name]}
                q = E.quality(counts)
                row[f"{name}_precision"], row[f"{name}_recall"] = q["precision"], q["recall_within_candidates"]
                if name == "mined":
                    row["mined_f1"], row["mined_relevant_share"] = _f1(counts), q["relevant_candidates"]
        rows.append(row)
    return rows


# ---------------------------------------------------------------------------------------------- downstream


def alpha_folder(out: str, alpha: float) -> str:
    return f"{out}/alpha-{alpha:g}"


def downstream(
    data: str,
    cfg: B.EngineConfig,
    alphas,
    logs: str,
    out: str,
    exp_cfg,
    seed: int = 0,
    log: pa.Table | None = None,
    reuse: bool = False,
    progress=print,
) -> dict[float, dict]:
    """CroPS trained and evaluated on each alpha's samples (``out/alpha-A/crops/``); per alpha its metrics.

    The same harness as the demo's Table 1 (:func:`crops_ray.experiment.run_method`, ``log`` the P0 samples from
    the search log): only the samples differ between alphas. With ``reuse``, an alpha whose ``result.json`` exists
    is read back, so a sweep that stopped half-way continues.
    """
    from crops_ray.experiment import METHODS, run_method

    results = {}
    for i, alpha in enumerate(alphas, 1):
        crops = SeedLayout(alpha_folder(out, alpha)).method("crops")
        folder = crops.root
        if reuse and os.path.exists(crops.result_json):
            with open(crops.result_json) as f:
                results[alpha] = json.load(f)
            progress(f"      alpha {alpha:g}: reused {folder}")
            continue
        samples = alpha_samples(data, cfg, alpha)
        progress(f"      alpha {alpha:g} ({i}/{len(alphas)}): CroPS on {samples.num_rows:,} samples -> {folder}")
        results[alpha] = run_method(METHODS["crops"], logs, samples, folder, exp_cfg, seed, progress=progress, log=log)
    return {a: r["metrics"] for a, r in results.items()}


def against_reference(out: str, alphas, reference: float, seed: int = 0) -> dict[float, dict]:
    """Per alpha, each Table-1 metric's paired bootstrap CI of (alpha - ``reference``) over queries."""
    from crops_ray import significance
    from crops_ray.report.per_query import load_per_query

    runs = {a: load_per_query(alpha_folder(out, a), ["crops"]).get("crops") for a in alphas}
    if runs.get(reference) is None:
        return {}
    return {
        a: significance.compare_runs(per, runs[reference], seed=seed)
        for a, per in runs.items()
        if per is not None and a != reference
    }


def add_downstream(rows: list[dict], metrics: dict[float, dict], versus: dict[float, dict]) -> None:
    """Put each alpha's downstream metrics (and its difference from the reference alpha) into its row."""
    for row in rows:
        m = metrics.get(row["alpha"])
        if m is None:
            continue
        for key, _ in DOWNSTREAM_METRICS:
            row[key] = m.get(key)
            ci = versus.get(row["alpha"], {}).get(key)
            if ci is not None:
                row[f"{key}_vs_reference"] = ci


def run_sweep(
    data: str,
    out: str,
    alphas=DEFAULT_ALPHAS,
    eval_dir: str | None = None,
    min_grade: int | None = None,
    downstream_args: dict | None = None,
    progress=print,
) -> dict:
    """The sweep end to end: counts (and quality with ``eval_dir``) for every alpha; CroPS per alpha when
    ``downstream_args`` (keyword arguments of :func:`downstream`: logs, exp_cfg, seed, log, reuse) are given.
    Relevant means a judgment of grade >= ``min_grade`` (default: the build's, as its stats.json measured).
    Writes :func:`write_outputs`' files and returns the result."""
    started = time.time()
    stats, cfg = read_build(data)
    min_grade = cfg.audit_min_grade if min_grade is None else min_grade
    steps = 2 + (downstream_args is not None)
    relevant = None
    if eval_dir:
        relevant = E.relevant_pairs(eval_dir, min_grade)
    progress(
        f"[1/{steps}] relabelling the mined pairs of {data} at alpha {', '.join(f'{a:g}' for a in alphas)} "
        f"(build alpha {cfg.alpha:g}; {'ground truth ' + eval_dir if eval_dir else 'no ground truth'})"
    )
    rows = sweep_rows(sweep_counts(data, cfg, alphas, relevant, progress), truth=relevant is not None)
    result = {
        "data": data,
        "build_alpha": cfg.alpha,
        "alphas": list(alphas),
        "sources": list(cfg.sources),
        "ground_truth": eval_dir,
        "relevant_means": f"qrels grade >= {min_grade}" if eval_dir else None,
        "p3": "held as built (not re-thresholded)",
        "build_kept": {short: stats["sources"][column]["kept"] for short, column in MINED},
        "rows": rows,
        "downstream": None,
    }
    if downstream_args is not None:
        progress(f"[2/{steps}] training and evaluating CroPS once per alpha ({len(alphas)} runs)")
        metrics = downstream(data, cfg, alphas, out=out, progress=progress, **downstream_args)
        seed = downstream_args.get("seed", 0)
        add_downstream(rows, metrics, against_reference(out, alphas, cfg.alpha, seed))
        result["downstream"] = {"method": "crops", "seed": seed, "logs": downstream_args["logs"]}
    result["summary"] = summary_lines(rows, cfg.alpha)
    result["seconds"] = round(time.time() - started, 1)
    progress(f"[{steps}/{steps}] writing {out}/alpha_sweep.json, .md and .png")
    write_outputs(result, out)
    return result
