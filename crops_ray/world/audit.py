"""How good the mined positives are, against a generated world's ground truth (``eval/`` of the world).

Relevant means a qrel of grade >= 2 (the discriminator's calibration target; grade 1 is marginal) for the pair. Reported
per mined source: candidates, how many of them are relevant (the base rate), kept, precision of the kept ones and recall
within the candidates (:func:`quality_counts`, counters that add up over batches: the alpha sweep streams them); the
discriminator's precision/recall at alpha over every pair it scored; and the filter-bubble check: for the ambiguous
queries, minority-sense videos that search never exposed (never clicked or exposed for that query) that now are
positives, per level.
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from crops_ray.sources import GATED_SOURCES, SHOWN_STAGES


def _read(folder: str, columns: list[str]) -> pd.DataFrame:
    return pq.read_table(folder, columns=columns).to_pandas()


def judgments_path(eval_dir: str) -> str:
    """A world's judgments of every query it typed (``judgments.parquet``), else the evaluation's qrels."""
    path = f"{eval_dir}/judgments.parquet"
    return path if os.path.exists(path) else f"{eval_dir}/qrels.parquet"


def has_truth(eval_dir: str | None) -> bool:
    return bool(eval_dir) and all(
        os.path.exists(f"{eval_dir}/{n}.parquet") for n in ("qrels", "video_truth", "queries")
    )


def relevant_pairs(eval_dir: str, min_grade: int = 2) -> set[tuple[str, str]]:
    """The (query, video_id) pairs the ground truth judges relevant: a judgment of grade >= ``min_grade``."""
    qrels = pq.read_table(judgments_path(eval_dir), columns=["query", "video_id", "grade"]).to_pandas()
    good = qrels["grade"] >= min_grade
    return set(zip(qrels.loc[good, "query"], qrels.loc[good, "video_id"]))


def is_relevant(queries, video_ids, relevant: set[tuple[str, str]]) -> np.ndarray:
    """Per (query, video_id) pair, given as two sequences: is it in ``relevant``."""
    return np.fromiter(((q, v) in relevant for q, v in zip(queries, video_ids)), dtype=bool, count=len(queries))


def quality_counts(relevant: np.ndarray, proposed: np.ndarray, kept: np.ndarray) -> dict[str, int]:
    """Counters for the precision and recall of what was kept among what was proposed (boolean arrays, one per
    pair). They add up over batches, so a stream of candidates is measured the same as one table."""
    proposed = np.asarray(proposed, dtype=bool)
    kept = proposed & np.asarray(kept, dtype=bool)
    relevant = proposed & np.asarray(relevant, dtype=bool)
    return {
        "candidates": int(proposed.sum()),
        "relevant": int(relevant.sum()),
        "kept": int(kept.sum()),
        "kept_relevant": int((kept & relevant).sum()),
    }


def quality(counts: dict[str, int]) -> dict:
    """:func:`quality_counts` (summed) -> candidates, the relevant share, kept, precision, recall (None when 0/0)."""
    n, rel, kept, hit = counts["candidates"], counts["relevant"], counts["kept"], counts["kept_relevant"]
    return {
        "candidates": n,
        "relevant_candidates": round(rel / n, 4) if n else None,
        "kept": kept,
        "precision": round(hit / kept, 4) if kept else None,
        "recall_within_candidates": round(hit / rel, 4) if rel else None,
    }


def evaluate_engine(out: str, eval_dir: str, alpha: float, min_grade: int = 2) -> dict:
    """Precision of what the engine in ``out`` mined, against ``eval_dir`` (qrels, video_truth, queries)."""
    relevant = relevant_pairs(eval_dir, min_grade)
    cands = _read(
        f"{out}/candidates",
        [
            "query",
            "video_id",
            "log_source",
            *GATED_SOURCES,
            "needs_score",
            "score",
            "reformulation_kept",
            "recommendation_kept",
            "reformulation_theta",
            "recommendation_theta",
        ],
    )
    rel = is_relevant(cands["query"], cands["video_id"], relevant)
    report: dict = {"relevant_means": f"qrels grade >= {min_grade}", "alpha": alpha, "sources": {}}
    kept_any = np.zeros(len(cands), dtype=bool)
    theta = cands["score"].to_numpy(dtype=np.float64, na_value=np.nan)
    for source in GATED_SOURCES:
        kept = cands[f"{source}_kept"].to_numpy(dtype=bool)
        kept_any |= kept
        own = cands[f"{source}_theta"].to_numpy(dtype=np.float64, na_value=np.nan)
        proposed = cands[source].to_numpy(dtype=bool) & ~np.isnan(own)
        report["sources"][source] = quality(quality_counts(rel, cands[source].to_numpy(dtype=bool), kept))
        report["sources"][source]["ece"] = _ece(own[proposed], rel[proposed])  # of that source's own theta
    mined = quality(quality_counts(rel, kept_any, kept_any))
    report["mined_positives"] = mined["kept"]
    report["mined_precision"] = mined["precision"]
    above = (cands["score"] > alpha).to_numpy()
    scored = quality(quality_counts(rel, cands["needs_score"].to_numpy(dtype=bool), above))
    report["discriminator"] = {
        "pairs": scored["candidates"],
        "precision_at_alpha": scored["precision"],
        "recall_at_alpha": scored["recall_within_candidates"],
    }
    scored_mask = cands["needs_score"].to_numpy(dtype=bool) & ~np.isnan(theta)
    report["discriminator"]["ece"] = _ece(theta[scored_mask], rel[scored_mask])
    report["gate_labels"] = label_rule_precision(out, relevant)
    report["bubble"] = minority_positives(out, eval_dir)
    return report


def _ece(theta: np.ndarray, relevant: np.ndarray) -> float | None:
    from crops_ray.discriminator.calibration import expected_calibration_error

    return round(expected_calibration_error(theta, relevant), 4) if len(theta) else None


def label_rule_precision(out: str, relevant: set[tuple[str, str]]) -> dict:
    """How often each log label rule is right, against the truth: per rule, the pairs it labelled (of queries the
    world judges) and the share whose label agrees with it, for the gate's training sample and its calibration set.
    Audit only: the engine never reads this."""
    report = {}
    for name, path in (("training_set", "gate_labels.parquet"), ("calibration_set", "gate_calibration.parquet")):
        if not os.path.exists(f"{out}/{path}"):
            continue
        labels = pq.read_table(f"{out}/{path}").to_pandas()
        if "heldout" in labels:  # gate_labels: what trained the gate (its held-out half is audited below)
            labels = labels[~labels["heldout"]]
        judged = {q for q, _ in relevant}
        labels = labels[labels["query"].isin(judged)]
        right = is_relevant(labels["query"], labels["video_id"], relevant) == labels["label"].astype(bool).to_numpy()
        keys = ["origin", "rule"] if "origin" in labels else ["rule"]
        report[name] = {
            ":".join(k if isinstance(k, tuple) else (k,)): {
                "pairs": int(len(idx)),
                "precision": round(float(right[idx].mean()), 4),
            }
            for k, idx in labels.groupby(keys).indices.items()
        }
    return report


def minority_positives(out: str, eval_dir: str) -> dict:
    """For ambiguous queries: minority-sense positives that search never exposed for that query, by level."""
    queries = pq.read_table(f"{eval_dir}/queries.parquet").to_pandas()
    truth = pq.read_table(f"{eval_dir}/video_truth.parquet", columns=["video_id", "word", "dominant"]).to_pandas()
    ambiguous = set(queries.loc[queries["kind"] == "ambiguous", "query"])
    samples = _read(f"{out}/samples", ["query", "video_id", "level", "source"])
    cands = _read(f"{out}/candidates", ["query", "video_id", "log_source"])
    shown_rows = cands[cands["log_source"].isin(SHOWN_STAGES)]
    shown = set(zip(shown_rows["query"], shown_rows["video_id"]))
    s = samples[samples["query"].isin(ambiguous)].merge(truth, on="video_id", how="inner")
    s = s[(s["word"] == s["query"]) & ~s["dominant"]]
    s = s[[(q, v) not in shown for q, v in zip(s["query"], s["video_id"])]]
    by = s.groupby(["level", "source"]).size()
    return {
        "ambiguous_queries": len(ambiguous),
        "minority_unexposed_positives": {f"{lv}:{src}": int(n) for (lv, src), n in by.items()},
        "level5": int((s["level"] == 5).sum()),
        "level4": int((s["level"] == 4).sum()),
        "videos": int(s["video_id"].nunique()),
        "queries": int(s["query"].nunique()),
    }
