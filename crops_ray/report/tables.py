"""The demo report's tables that do not read per-query runs: Table 1, the online A/B test over seeds, the size of
a user's logs, two methods' top-k side by side, and the time per stage."""

from __future__ import annotations

import json
import math
import os

import numpy as np
import pyarrow.parquet as pq

from crops_ray import schema as S
from crops_ray.layout import LogsLayout
from crops_ray.report.markdown import rows_table

TABLE1_COLUMNS = (("recall@100_ct", "Recall@100 CT"), ("recall@100_qr", "Recall@100 QR"), ("ndcg@4", "NDCG@4"))
ONLINE_METRICS = (("ctr", "CTR"), ("lpr", "LPR"), ("rqr", "RQR"))


def table1_markdown(summary: dict[str, dict[str, float]], methods: list[str], labels: dict[str, str]) -> str:
    """The paper's Table 1 in percent from :func:`crops_ray.experiment.aggregate`: one row per method run (in
    ``methods``' order), mean ± sd with several seeds, "-" for a metric the method lacks."""
    rows = []
    for name in methods:
        row = summary.get(name)
        if row is None:
            continue
        line = {"Method": labels.get(name, name)}
        for key, label in TABLE1_COLUMNS:
            if key not in row or (isinstance(row[key], float) and math.isnan(row[key])):
                line[label] = "-"
            elif row["seeds"] > 1:
                line[label] = f"{100 * row[key]:.1f} ± {100 * row[key + '_std']:.1f}"
            else:
                line[label] = f"{100 * row[key]:.1f}"
        rows.append(line)
    return rows_table(rows, ["Method", *(label for _, label in TABLE1_COLUMNS)], text=True)


def online_metrics(online_by_seed: dict, seeds: list[int]) -> dict:
    """metrics.json's "online": per arm, CTR / LPR / RQR (first seed) and, with several seeds, their mean and sd."""
    if not online_by_seed:
        return {}
    out = {}
    for arm in online_by_seed[seeds[0]][0]["arm"]:
        rows = [frame.set_index("arm").loc[arm] for frame, _ in online_by_seed.values()]
        entry = {k: float(rows[0][k]) for k, _ in ONLINE_METRICS}
        entry.update({f"{k}_rel_vs_baseline": float(rows[0][f"{k}_rel"]) for k, _ in ONLINE_METRICS})
        entry.update(
            {
                f"{k}_rel_ci": [float(rows[0][f"{k}_rel_low"]), float(rows[0][f"{k}_rel_high"])]
                for k, _ in ONLINE_METRICS
            }
        )
        if len(rows) > 1:
            for k, _ in ONLINE_METRICS:
                values = np.array([float(r[k]) for r in rows])
                entry[f"{k}_mean"], entry[f"{k}_std"] = float(values.mean()), float(values.std(ddof=1))
        out[arm] = entry
    return out


def online_seeds_table(online_by_seed: dict, labels: dict) -> str:
    """Per arm, the relative change vs DPR of CTR / LPR / RQR over the seeds (mean ± sd, percent)."""
    frames = [frame.set_index("arm") for frame, _ in online_by_seed.values()]
    rows = []
    for arm in frames[0].index:
        row = {"Arm": labels.get(arm, arm)}
        for k, name in ONLINE_METRICS:
            rel = np.array([100 * f.loc[arm, f"{k}_rel"] for f in frames])
            row[f"{name} vs DPR"] = f"{rel.mean():+.2f}% ± {rel.std(ddof=1):.2f}"
        rows.append(row)
    return rows_table(rows)


def logs_section(logs: str) -> str:
    """Your logs' size, the test sets' size and, for an import that wrote ``import.json``, what it can say."""
    from crops_ray.evaluate import load_targets

    counts = {t: S.count_rows(S.table_files(logs, t)) for t in S.TABLES}
    targets = load_targets(logs)
    sets = [
        ("CT (clicked pairs)", targets.ct),
        ("QR (clicked after a reformulation)", targets.qr),
    ]
    rows = [{"": t, "rows": f"{n:,}", "queries": ""} for t, n in counts.items()]
    rows += [
        {"": f"test set {name}", "rows": f"{len(p):,}", "queries": f"{len({q for q, _ in p}):,}"}
        for name, p in sets
        if p is not None
    ]
    if targets.qrels is not None:
        judged = sum(len(v) for v in targets.qrels.values())
        rows.append({"": "test set qrels (graded)", "rows": f"{judged:,}", "queries": f"{len(targets.qrels):,}"})
    smallest = min((len({q for q, _ in p}) for _, p in sets if p), default=0)
    lines = [
        "## Your logs: how much there is, and what the numbers can say",
        "",
        rows_table(rows, ["", "rows", "queries"], text=True),
        "",
        f"The smallest test set has {smallest:,} queries: a difference is real only where its paired interval below "
        "excludes 0, whatever the table's means say.",
    ]
    if counts["videos"] and 100 / counts["videos"] > 0.01:
        lines[-1] += (
            f" Recall@100 reaches {100 / counts['videos']:.1%} of a {counts['videos']:,}-document corpus (the "
            "paper's K = 100 was a sliver of millions): read Recall at K's smaller cut-offs and NDCG@4 instead."
        )
    meta_path = os.path.join(logs, "import.json")
    if os.path.exists(meta_path):
        with open(meta_path) as f:
            meta = json.load(f)
        split = meta.get("split") or {}
        lines += ["", f"Imported from {meta.get('source', 'an importer')} (`import.json`):", ""]
        if split:
            lines.append(
                f"- held out {split['sessions']['test']} of {split['sessions']['test'] + split['sessions']['train']} "
                f"sessions ({split['requests']['test']} requests) as the test sets, seed {split['seed']}; "
                f"{split['eval_queries']['also_typed_in_training']} of the {split['eval_queries']['all']} test queries "
                "were also typed in a training session"
            )
        lines += [f"- {note}" for note in meta.get("notes", [])]
    return "\n".join(lines)


def side_by_side(world: str, runs: dict[str, str], queries: list[str], k: int = 10) -> str:
    """Top-k of two methods for some queries: text, the video's sense, and whether it is relevant (qrels)."""
    truth_path, qrels_path = LogsLayout(world).video_truth, LogsLayout(world).qrels
    truth = pq.read_table(truth_path).to_pandas().set_index("video_id") if os.path.exists(truth_path) else None
    qrels = pq.read_table(qrels_path).to_pandas() if os.path.exists(qrels_path) else None
    videos = pq.read_table(S.table_files(world, "videos")).to_pandas().set_index("video_id")["text"]
    tops = {name: pq.read_table(path).to_pandas().set_index("query")["top10"] for name, path in runs.items()}
    parts = []
    names = list(runs)
    for query in queries:
        graded = (
            {}
            if qrels is None
            else dict(qrels.loc[qrels["query"] == query, ["video_id", "grade"]].itertuples(index=False))
        )
        rows = []
        for r in range(k):
            row = {"rank": str(r + 1)}
            for name in names:
                ids = list(tops[name].get(query, []))
                if r >= len(ids):
                    row[name] = ""
                    continue
                v = ids[r]
                sense = truth.loc[v, "topic"] if truth is not None and v in truth.index else ""
                mark = "✓" if graded.get(v, 0) > 0 else "✗"
                title = videos.get(v, "").split(". ")[0][:60].replace("|", "/")
                row[name] = f"{mark} {title} *({sense})*"
            rows.append(row)
        table = rows_table(rows, ["rank", *names], text=True, align=["right"] + ["left"] * len(names))
        parts.append(f"**{query}**\n\n{table}")
    return "\n\n".join(parts)


def time_table(timings: dict) -> str:
    """Seconds per stage (the numeric entries of ``timings``)."""
    rows = [{"stage": k, "seconds": f"{v:.0f}"} for k, v in timings.items() if isinstance(v, (int, float))]
    return rows_table(rows, ["stage", "seconds"], text=True)
