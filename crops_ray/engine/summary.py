"""The engine's numbers: per-batch counters, the typed totals each stage returns (:class:`MinedCounts`,
:class:`LlmCounts`), the layout of ``OUT/stats.json`` (:func:`engine_stats`) and the tables a person reads
(:func:`format_summary`, from a stats dict such as a saved stats.json).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

import pyarrow as pa
import pyarrow.compute as pc

from crops_ray.engine.config import label_settings
from crops_ray.engine.io import count_true
from crops_ray.sources import Source

# ---------------------------------------------------------------------------------------------- per-batch counters


def candidate_counts(batch: pa.Table) -> pa.Table:
    p1, p2 = pc.fill_null(batch[Source.REFORMULATION], False), pc.fill_null(batch[Source.RECOMMENDATION], False)
    return pa.table(
        {
            "pairs": [batch.num_rows],
            "scored": [count_true(batch["needs_score"])],
            "p1_candidates": [count_true(p1)],
            "p1_gate_pass": [count_true(batch["gate_pass"])],
            "p1_kept": [count_true(batch["reformulation_kept"])],
            "p2_candidates": [count_true(p2)],
            "p2_kept": [count_true(batch["recommendation_kept"])],
            "p0_pairs": [count_true(pc.is_valid(batch["log_level"]))],
            # theta summed over the kept pairs: their mean is the precision the gate expects (logs only)
            "p1_kept_theta": [_kept_theta(batch, Source.REFORMULATION)],
            "p2_kept_theta": [_kept_theta(batch, Source.RECOMMENDATION)],
        }
    )


def _kept_theta(batch: pa.Table, source: str) -> float:
    kept = pc.fill_null(batch[f"{source}_kept"], False)
    return float(pc.sum(pc.filter(batch[f"{source}_theta"], kept)).as_py() or 0.0)


CANDIDATE_COUNT_COLUMNS = [  # the candidates' columns candidate_counts reads
    Source.REFORMULATION,
    Source.RECOMMENDATION,
    "needs_score",
    "gate_pass",
    "reformulation_kept",
    "recommendation_kept",
    "log_level",
    "reformulation_theta",
    "recommendation_theta",
]


def sample_counts(batch: pa.Table) -> pa.Table:
    keys = [f"{s}:{lv}" for s, lv in zip(batch["source"].to_pylist(), batch["level"].to_pylist())]
    counts: dict[str, int] = {}
    for k in keys:
        counts[k] = counts.get(k, 0) + 1
    return pa.table({k: [v] for k, v in counts.items()})


# ---------------------------------------------------------------------------------------------- stage totals


@dataclass
class MinedCounts:
    """:func:`candidate_counts` summed over ``OUT/candidates/`` (the score stage)."""

    pairs: int = 0
    scored: int = 0
    p1_candidates: int = 0
    p1_gate_pass: int = 0
    p1_kept: int = 0
    p2_candidates: int = 0
    p2_kept: int = 0
    p0_pairs: int = 0
    p1_kept_theta: float = 0.0
    p2_kept_theta: float = 0.0

    @classmethod
    def from_totals(cls, totals: dict[str, int]) -> MinedCounts:
        return cls(**{f.name: totals.get(f.name, 0) for f in fields(cls)})


@dataclass
class LlmCounts:
    """What P3 did (the llm_generate and llm_verify stages); all zero when P3 is off."""

    queries: int = 0
    prompts: int = 0
    prompt_tokens: int = 0
    generated_tokens: int = 0
    descriptions: int = 0
    removed: dict = field(default_factory=dict)  # quality-control reason -> descriptions dropped
    kept: int = 0
    scored: int = 0


# ---------------------------------------------------------------------------------------------- stats.json


def engine_stats(
    *,
    logs: str,
    resources: dict,
    cfg,
    calibration,
    gate_info: dict,
    rows_in: dict,
    quarantined: dict,
    mined: MinedCounts,
    llm: LlmCounts,
    user_rows: int,
    heavy: dict,
    sample_rows: int,
    by_source_level: dict,
    seconds: dict,
) -> dict:
    """The stats dict build_data returns and writes as ``OUT/stats.json`` (before ``evaluation``)."""
    sources = set(cfg.sources)
    gate = label_settings(cfg)["gate"]
    return {
        "logs": logs,
        "cluster": {"cpus": resources.get("CPU", 0), "gpus": resources.get("GPU", 0)},
        "config": asdict(cfg),
        "rows_read": rows_in,
        "quarantined": quarantined,
        "pairs": mined.pairs,
        "sources": {
            "log": {"pairs": mined.p0_pairs},
            Source.REFORMULATION: {
                "enabled": "p1" in sources,
                "candidates": mined.p1_candidates,
                "gate_removed": mined.p1_candidates - mined.p1_gate_pass if gate == "discriminator" else 0,
                "below_alpha": mined.p1_gate_pass - mined.p1_kept
                if gate == "discriminator"
                else mined.p1_candidates - mined.p1_kept,
                "kept": mined.p1_kept,
                "estimated_precision": mean_of(mined.p1_kept_theta, mined.p1_kept),
            },
            Source.RECOMMENDATION: {
                "enabled": "p2" in sources,
                "candidates": mined.p2_candidates,
                "below_alpha": mined.p2_candidates - mined.p2_kept,
                "kept": mined.p2_kept,
                "estimated_precision": mean_of(mined.p2_kept_theta, mined.p2_kept),
            },
            Source.LLM: {
                "enabled": "p3" in sources,
                "queries": llm.queries,
                "candidates": llm.descriptions,
                "removed": llm.removed,
                "kept": llm.kept,
            },
        },
        "user_candidate_rows": user_rows,
        "heavy_users": {"users": len(heavy), "rows": sum(heavy.values()), "max_user_rows": cfg.max_user_rows},
        "discriminator": {
            "pairs_scored": mined.scored + llm.scored,
            "mined_pairs_scored": mined.scored,
            "llm_descriptions_scored": llm.scored,
            "calibration": asdict(calibration),
            "gate": gate_info,
        },
        Source.LLM: {  # P3's calls to its LLM
            "backend": cfg.world_knowledge.backend,
            "calls": llm.prompts,
            "prompt_tokens": llm.prompt_tokens,
            "generated_tokens": llm.generated_tokens,
        },
        "samples": {"rows": sample_rows, "by_source_level": dict(sorted(by_source_level.items()))},
        "seconds": seconds,
    }


def mean_of(total: float, n: int) -> float | None:
    """A mean from a sum and a count (None for none): the kept pairs' mean theta from candidate_counts' sums."""
    return round(total / n, 4) if n else None


# ---------------------------------------------------------------------------------------------- summary


def format_summary(stats: dict) -> str:  # long: one table after another, in the order a person reads them
    """Tables a person reads: per source candidates and kept, samples per level, time per stage."""
    from crops_ray.report.markdown import rows_table

    def table(rows: list[dict]) -> str:
        return rows_table(rows, text=True)

    def source(name: str, candidates: str, removed: str, kept: int, precision: float | None = None) -> dict:
        est = "-" if precision is None else f"{precision:.3f}"
        return {
            "source": name, "candidates": candidates, "removed": removed, "kept": f"{kept:,}",
            "estimated precision (logs)": est,
        }  # fmt: skip

    src = stats["sources"]
    pairs = src["log"]["pairs"]
    sources = [source("log stages (P0)", f"{pairs:,} pairs", "-", pairs)]
    p1, p2, p3 = src[Source.REFORMULATION], src[Source.RECOMMENDATION], src[Source.LLM]
    if p1["enabled"]:
        removed = f"gate {p1['gate_removed']:,}, theta<=alpha {p1['below_alpha']:,}"
        sources.append(
            source("reformulation (P1)", f"{p1['candidates']:,}", removed, p1["kept"], p1.get("estimated_precision"))
        )
    if p2["enabled"]:
        sources.append(
            source(
                "recommendation (P2)",
                f"{p2['candidates']:,}",
                f"theta<=alpha {p2['below_alpha']:,}",
                p2["kept"],
                p2.get("estimated_precision"),
            )
        )
    if p3["enabled"]:
        removed = ", ".join(f"{k} {v}" for k, v in p3["removed"].items() if v) or "-"
        sources.append(source(f"LLM (P3), {p3['queries']} queries", f"{p3['candidates']:,}", removed, p3["kept"]))
    lines = [table(sources)]
    heavy = stats.get("heavy_users", {})
    if heavy.get("users"):
        lines.append(
            f"\n{heavy['users']:,} user(s) with more than {heavy['max_user_rows']:,} log rows ({heavy['rows']:,} rows) "
            "were left out of P1/P2 mining (crawlers or shared accounts; their search rows still give P0 samples)."
        )
    samples = [
        {"samples: source": key.rsplit(":", 1)[0], "level": key.rsplit(":", 1)[1], "rows": f"{n:,}"}
        for key, n in stats["samples"]["by_source_level"].items()
    ]
    if samples:
        lines += ["", table(samples)]
    if stats["seconds"]:
        lines += ["", table([{"stage": k, "seconds": f"{v:.1f}"} for k, v in stats["seconds"].items()])]
    d, llm = stats["discriminator"], stats[Source.LLM]
    lines += [
        "",
        (
            f"discriminator pairs scored: {d['pairs_scored']:,}; LLM calls: {llm['calls']:,} ({llm['prompt_tokens']:,} "
            f"prompt + {llm['generated_tokens']:,} generated tokens)"
        ),
    ]
    ev = stats.get("evaluation")
    if ev:
        truth = [
            {
                "against the world's ground truth": name,
                "candidates": f"{e['candidates']:,}",
                "relevant share": str(e["relevant_candidates"]),
                "kept": f"{e['kept']:,}",
                "precision": str(e["precision"]),
                "estimated precision (logs)": str(src.get(name, {}).get("estimated_precision", "-")),
                "recall": str(e["recall_within_candidates"]),
                "theta ECE": str(e.get("ece", "-")),
            }
            for name, e in ev["sources"].items()
        ]
        dd = ev["discriminator"]
        truth.append(
            {
                "against the world's ground truth": f"discriminator at alpha {ev['alpha']}",
                "candidates": f"{dd['pairs']:,}",
                "relevant share": "-",
                "kept": "-",
                "precision": str(dd["precision_at_alpha"]),
                "estimated precision (logs)": "-",
                "recall": str(dd["recall_at_alpha"]),
                "theta ECE": str(dd.get("ece", "-")),
            }
        )
        lines += ["", table(truth)]
        b = ev["bubble"]
        lines.append(
            "\nminority-sense videos search never exposed for an ambiguous query, now positives: level 5: "
            f"{b['level5']}, level 4: {b['level4']} ({b['videos']} videos, {b['queries']} queries)"
        )
    return "\n".join(lines)
