"""How good the mined positives are, against a generated world's ground truth (``eval/`` of the world).

Relevant means a qrel of grade >= 2 (the discriminator's calibration target; grade 1 is marginal) for the pair. Reported per mined source: candidates,
how many of them are relevant (the base rate), kept, precision of the kept ones and recall within the
candidates; the discriminator's precision/recall at alpha over every pair it scored; and the filter-bubble
check: for the ambiguous queries, minority-sense videos that search never exposed (never clicked or exposed
for that query) that now are positives, per level.
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pyarrow.parquet as pq


def _read(folder: str, columns: list[str]) -> pd.DataFrame:
    return pq.read_table(folder, columns=columns).to_pandas()


def judgments_path(eval_dir: str) -> str:
    """A world's judgments of every query it typed (``judgments.parquet``), else the evaluation's qrels."""
    path = f"{eval_dir}/judgments.parquet"
    return path if os.path.exists(path) else f"{eval_dir}/qrels.parquet"


def has_truth(eval_dir: str | None) -> bool:
    return bool(eval_dir) and all(os.path.exists(f"{eval_dir}/{n}.parquet") for n in ("qrels", "video_truth", "queries"))


def evaluate_engine(out: str, eval_dir: str, alpha: float, min_grade: int = 2) -> dict:
    """Precision of what the engine in ``out`` mined, against ``eval_dir`` (qrels, video_truth, queries)."""
    qrels = pq.read_table(judgments_path(eval_dir)).to_pandas()
    good = qrels["grade"] >= min_grade
    relevant = set(zip(qrels.loc[good, "query"], qrels.loc[good, "video_id"]))
    cands = _read(f"{out}/candidates", ["query", "video_id", "log_source", "reformulation", "recommendation", "needs_score", "score", "reformulation_kept", "recommendation_kept"])
    cands["relevant"] = [(q, v) in relevant for q, v in zip(cands["query"], cands["video_id"])]
    report: dict = {"relevant_means": f"qrels grade >= {min_grade}", "alpha": alpha, "sources": {}}
    kept_any = np.zeros(len(cands), dtype=bool)
    for source in ("reformulation", "recommendation"):
        c = cands[cands[source]]
        kept = c[f"{source}_kept"].to_numpy()
        kept_any |= cands[f"{source}_kept"].to_numpy()
        rel = c["relevant"].to_numpy()
        report["sources"][source] = {
            "candidates": int(len(c)),
            "relevant_candidates": round(float(rel.mean()), 4) if len(c) else None,
            "kept": int(kept.sum()),
            "precision": round(float(rel[kept].mean()), 4) if kept.any() else None,
            "recall_within_candidates": round(float(kept[rel].mean()), 4) if rel.any() else None,
        }
    mined = cands[kept_any]
    report["mined_positives"] = int(len(mined))
    report["mined_precision"] = round(float(mined["relevant"].mean()), 4) if len(mined) else None
    scored = cands[cands["needs_score"]]
    above = (scored["score"] > alpha).to_numpy()
    rel = scored["relevant"].to_numpy()
    report["discriminator"] = {
        "pairs": int(len(scored)),
        "precision_at_alpha": round(float(rel[above].mean()), 4) if above.any() else None,
        "recall_at_alpha": round(float(above[rel].mean()), 4) if rel.any() else None,
    }
    report["bubble"] = minority_positives(out, eval_dir)
    return report


def minority_positives(out: str, eval_dir: str) -> dict:
    """For ambiguous queries: minority-sense positives that search never exposed for that query, by level."""
    queries = pq.read_table(f"{eval_dir}/queries.parquet").to_pandas()
    truth = pq.read_table(f"{eval_dir}/video_truth.parquet", columns=["video_id", "word", "dominant"]).to_pandas()
    ambiguous = set(queries.loc[queries["kind"] == "ambiguous", "query"])
    samples = _read(f"{out}/samples", ["query", "video_id", "level", "source"])
    cands = _read(f"{out}/candidates", ["query", "video_id", "log_source"])
    shown = set(zip(*[cands.loc[cands["log_source"].isin(["clicked", "exposed"]), c] for c in ("query", "video_id")]))
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
