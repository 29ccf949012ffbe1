"""The demo's report from what ``pipelines/demo.py`` collected over its seeds: OUT/report.md (Table 1, recall at K,
splits by query bucket and kind, paired CIs, additivity, Table 2, the filter bubble, top-10 side by side, time),
OUT/metrics.json, the charts, and the README block."""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field

from crops_ray import buckets as B
from crops_ray import schema as S
from crops_ray.experiment import METHODS
from crops_ray.layout import LogsLayout, RunLayout, SeedLayout
from crops_ray.report import per_query as R
from crops_ray.report.additivity import additivity, additivity_report
from crops_ray.report.markdown import markdown_table, rows_table
from crops_ray.report.plots import plot_table1
from crops_ray.report.readme import reuse_note
from crops_ray.report.tables import (
    logs_section,
    online_metrics,
    online_seeds_table,
    side_by_side,
    table1_markdown,
    time_table,
)

SIGNIFICANCE = "## Is the difference real? CroPS minus each baseline"
SPARSE_SIGNIFICANCE = "## The sparse model: CroPS-sparse minus each sparse baseline"
SIGNIFICANCE_INTRO = (
    f"{SIGNIFICANCE}\n\nPercentage points per seed, with the paired bootstrap 95% confidence interval over queries "
    "(`crops_ray/significance.py`, scipy's BCa bootstrap); * marks an interval that excludes 0; with several seeds "
    "the mean ± sd of the differences comes first.\n\n"
)
SPARSE_SIGNIFICANCE_INTRO = (
    f"{SPARSE_SIGNIFICANCE}\n\nThe paper's second architecture: a learned sparse retriever (CSR heads over the "
    "same encoder, an inverted index; `crops_ray/sparse/`) trained on each method's samples with its loss, budget "
    "and document tower. Same intervals as above.\n\n"
)
ADDITIVITY_INTRO = (
    "## Do the perspectives add up? (ablations)\n\nEach perspective's gain over P0 (FS-LR-style: the log stages "
    "with HLA + H-InfoNCE), their sum, the gain of all of them (CroPS), and the interaction: CroPS's gain minus the "
    "sum, bootstrapped with the same resampled queries for every run (`crops_ray/report/additivity.py` "
    "`additivity`); additive when its interval holds 0. Last row: HLA + H-InfoNCE against binary labels + InfoNCE "
    "on the same samples. Points, paired 95% CI per seed, * excludes 0; with several seeds the mean ± sd first.\n\n"
)


@dataclass
class SeedResult:
    """What one seed of the demo produced (:func:`crops_ray.demo.run_seed`)."""

    seed: int
    results: list[dict] = field(default_factory=list)  # each method's result.json, in the demo's order
    sections: list[str] = field(default_factory=list)  # its world, validation and engine (the report: first seed's)
    ci: dict = field(default_factory=dict)  # per_query.compare of CroPS and the dense baselines
    sparse_ci: dict = field(default_factory=dict)  # the same for CroPS-sparse and the sparse baselines
    additivity: dict = field(default_factory=dict)  # additivity.additivity ({} without the ablations)
    online: tuple | None = None  # experiment.online_ab's (summary, table); None without the online test
    seconds: dict[str, float] = field(default_factory=dict)  # "seed S: stage" -> seconds, for what ran now
    reused: bool = False  # --reuse read the whole seed back
    read_back: list[str] = field(default_factory=list)  # the methods --reuse read back while the rest ran now


@dataclass
class DemoRun:
    """What the demo ran: its settings and each seed's :class:`SeedResult`."""

    out: str
    seeds: list[int]
    seeds_text: str  # --seeds as given, for the title
    methods: list[str]
    labels: dict[str, str]  # method -> its label in the tables
    started: float  # time.time() at the start: the report's last step gives the run's total
    logs: str | None = None  # the user's logs (None: the generated world under OUT/seed-S/world)
    scale: str = "small"
    online_skipped: bool = False  # the online test was wanted, but the logs are not a generated world
    tracking_uri: str = ""  # the MLflow store its runs went to ("": untracked)
    by_seed: list[SeedResult] = field(default_factory=list)
    summary: dict[str, dict[str, float]] = field(default_factory=dict)  # crops_ray.experiment.aggregate(results)

    @property
    def layout(self) -> RunLayout:
        return RunLayout(self.out)

    @property
    def results(self) -> list[dict]:
        return [r for s in self.by_seed for r in s.results]

    @property
    def seed_sections(self) -> list[str]:
        return self.by_seed[0].sections if self.by_seed else []

    @property
    def per_seed_ci(self) -> dict:
        return {s.seed: s.ci for s in self.by_seed}

    @property
    def per_seed_sparse_ci(self) -> dict:
        return {s.seed: s.sparse_ci for s in self.by_seed}

    @property
    def per_seed_additivity(self) -> dict:
        return {s.seed: s.additivity for s in self.by_seed}

    @property
    def online_by_seed(self) -> dict:
        return {s.seed: s.online for s in self.by_seed if s.online is not None}

    @property
    def timings(self) -> dict[str, float]:
        return {k: v for s in self.by_seed for k, v in s.seconds.items()}

    @property
    def reused_seeds(self) -> list[int]:
        return [s.seed for s in self.by_seed if s.reused]

    @property
    def partly_reused(self) -> dict[int, list[str]]:
        return {s.seed: s.read_back for s in self.by_seed if s.read_back}


@dataclass
class DemoReport:
    """The tables the README block repeats, rendered once for report.md, and the run's wall time."""

    table: str  # Table 1
    head: list[str]  # Table 1's section, as lines
    significance_table: str  # CroPS minus each baseline ("" without CIs)
    sparse_significance_table: str  # CroPS-sparse minus each sparse baseline, and the indexes' audit ("" without)
    additivity_table: str  # "" without ablations
    online_seeds_table: str  # Table 2 over the seeds ("" with one seed or none)
    total_seconds: float  # the whole run, up to the report's time table


def seed_comparisons(root: str, methods: list[str], seed: int) -> tuple[dict, dict, dict]:
    """One seed's CroPS-minus-each-baseline CIs (dense against dense, sparse against sparse: the paper's two
    architectures) and the ablation's additivity ({} unless the ablations ran)."""
    runs = R.load_per_query(root, methods)
    dense = [m for m in methods if m != "crops" and not METHODS[m].sparse]
    sparse = [m for m in methods if m != "crops_sparse" and METHODS[m].sparse]
    return (
        R.compare(runs, "crops", dense, seed=seed),
        R.compare(runs, "crops_sparse", sparse, seed=seed),
        additivity(runs, seed=seed),
    )


def sparse_audit_table(seed: SeedLayout, methods: list[str], labels: dict[str, str]) -> str:
    """What each sparse model's inverted index costs on one seed (its index.json audit, written by evaluation)."""
    rows = []
    for m in methods:
        paths = (e.index_json for e in seed.method(m).evaluations)
        path = next((p for p in paths if os.path.exists(p)), "")
        if not METHODS[m].sparse or not path:
            continue
        with open(path) as f:
            audit = json.load(f).get("audit", {})
        dense = audit.get("dense_multiply_adds_per_query", 0)
        rows.append(
            {
                "model": labels.get(m, m),
                "latents": audit.get("latents"),
                "non-zeros per document (mean, max)": (
                    f"{audit.get('nonzeros_per_doc_mean', 0):.1f}, {audit.get('nonzeros_per_doc_max', 0)}"
                ),
                "latents never used": f"{100 * audit.get('unused_latents', 0):.1f}%",
                "longest posting list / corpus": f"{100 * audit.get('longest_posting_share', 0):.1f}%",
                "multiply-adds per query": f"{audit.get('multiply_adds_per_query', 0):,.0f}",
                "vs a flat dense search": f"{audit.get('multiply_adds_per_query', 0) / max(1, dense):.2%}",
            }
        )
    if not rows:
        return ""
    return (
        "The inverted indexes (first seed; `crops_ray/sparse/index.py` `audit`; a flat dense search costs documents x "
        "the embedding's width in multiply-adds per query):\n\n" + rows_table(rows)
    )


def _first(run: DemoRun) -> SeedLayout:
    return run.layout.seed(run.seeds[0])


def _world(run: DemoRun) -> str:
    return run.logs or _first(run).world.root


def write_report(run: DemoRun) -> DemoReport:
    """OUT/table1.png, OUT/report.md, OUT/metrics.json and (on a generated world) OUT/filter_bubble.png."""
    layout, labels = run.layout, run.labels
    plot_table1(run.summary, run.methods, layout.table1_png, labels)
    table = table1_markdown(run.summary, run.methods, labels)
    corpus = S.count_rows(S.table_files(_world(run), "videos"))
    head = _table1_head(run, table, corpus)
    # Positional inserts, as the report has always been laid out: Table 1, recall at K, the splits, (your logs),
    # the paired CIs, the additivity, then the first seed's world / validation / engine sections.
    sections = ["\n".join(head), *run.seed_sections]
    if run.logs:
        sections.insert(1, logs_section(run.logs))
    _insert_per_query_sections(sections, run, corpus)
    significance_table, sparse_table = _insert_significance(sections, run)
    additivity_table, additivity = additivity_report(run.per_seed_additivity, labels)
    if additivity_table:  # right after CroPS minus each baseline
        sections.insert(_after_significance(sections), ADDITIVITY_INTRO + additivity_table)
    seeds_table = online_seeds_table(run.online_by_seed, labels) if len(run.online_by_seed) > 1 else ""
    sections += _online_sections(run, seeds_table) + _bubble_sections(run)
    total = time.time() - run.started
    seconds = {**run.timings, "total": total}
    sections.append("## Time (this machine)\n\n" + time_table(seconds))
    with open(layout.report_md, "w") as f:
        f.write("# crops-ray: Table 1 report\n\n" + "\n\n".join(sections) + "\n")
    _write_metrics(run, additivity, corpus, seconds)
    return DemoReport(table, head, significance_table, sparse_table, additivity_table, seeds_table, total)


def _table1_head(run: DemoRun, table: str, corpus: int) -> list[str]:
    """Table 1's section, as lines."""
    where = "your logs" if run.logs else f"the {run.scale} world"
    seeds = len(run.seeds)
    return [
        f"## Table 1 on {where} ({seeds} seed{'s' if seeds > 1 else ''}: {run.seeds_text}; corpus: {corpus:,} videos)",
        "",
        "Percent; with several seeds, mean ± standard deviation.",
        "",
        table,
        "",
        "![Table 1](table1.png)",
    ]


def _insert_per_query_sections(sections: list[str], run: DemoRun, corpus: int) -> None:
    """Recall at K and the splits by query bucket and kind (first seed), right after Table 1."""
    runs = R.load_per_query(_first(run).root, run.methods)
    if not runs:
        return
    labels = run.labels
    groups = R.query_groups(_world(run), sorted({q for per in runs.values() for q in per["query"]}))
    sections.insert(
        1,
        f"## Recall at K (first seed; corpus: {corpus:,} videos)\n\nThe paper's K = 100 was selective in a corpus "
        "of millions; here the smaller cut-offs show where methods separate.\n\n" + R.recall_curve_table(runs, labels),
    )
    sections.insert(
        2,
        f"## By query bucket (first seed; corpus: {corpus:,} videos)\n\nBuckets by how often the training log "
        f"typed the query: head >= {B.HEAD_MIN_REQUESTS} requests, torso 3-{B.HEAD_MIN_REQUESTS - 1}, tail 1-2, "
        "unseen 0 (`crops_ray/buckets.py`). Pair-level recall within each bucket.\n\n"
        + R.split_table(runs, groups, "bucket", labels),
    )
    by_kind = R.split_table(runs, groups, "kind", labels)
    if by_kind:
        sections.insert(
            3,
            f"## By query kind (first seed; corpus: {corpus:,} videos)\n\nThe world's query kinds from "
            "`eval/queries.parquet`: a bare ambiguous word, a sense query, a subtopic query, a long-tail query "
            "(subtopic + angle).\n\n" + by_kind,
        )


def _after_significance(sections: list[str]) -> int:
    """The place right after "CroPS minus each baseline" (the end without it)."""
    return next((i + 1 for i, text in enumerate(sections) if text.startswith(SIGNIFICANCE)), len(sections))


def _insert_significance(sections: list[str], run: DemoRun) -> tuple[str, str]:
    """CroPS minus each baseline (5th section), then CroPS-sparse minus each sparse baseline with the indexes'
    audit; returns their tables ("" for one without intervals)."""
    labels = run.labels
    dense = R.significance_markdown(run.per_seed_ci, "CroPS", labels) if any(run.per_seed_ci.values()) else ""
    if dense:
        sections.insert(4, SIGNIFICANCE_INTRO + dense)
    if not any(run.per_seed_sparse_ci.values()):
        return dense, ""
    sparse = R.significance_markdown(run.per_seed_sparse_ci, "CroPS-sparse", labels)
    sparse += "\n\n" + sparse_audit_table(_first(run), run.methods, labels)
    sections.insert(_after_significance(sections), SPARSE_SIGNIFICANCE_INTRO + sparse)
    return dense, sparse


def _write_metrics(run: DemoRun, additivity: dict, corpus: int, seconds: dict[str, float]) -> None:
    """OUT/metrics.json: the methods over the seeds, the paired CIs, Table 2, the additivity and each run."""
    metrics = {
        "methods": run.summary,
        "significance": {str(k): v for k, v in run.per_seed_ci.items()},
        "significance_sparse": {str(k): v for k, v in run.per_seed_sparse_ci.items()},
        "online": online_metrics(run.online_by_seed, run.seeds),
        "additivity": additivity,
        "corpus_videos": corpus,
        "seeds": run.seeds,
        "runs": run.results,
        "seconds": seconds,
    }
    with open(run.layout.metrics_json, "w") as f:
        json.dump(metrics, f, indent=2, default=str)


def _online_sections(run: DemoRun, seeds_table: str) -> list[str]:
    """Table 2 (the first seed's online A/B test, and over the seeds), or why there is none."""
    if run.online_by_seed:
        text = [
            "## Table 2: simulated online A/B test (first seed)",
            "",
            (
                "Each retriever is the platform's retrieval channel (top 100 into the same ranker) for a fresh period "
                "of the same world: same users, intents and random draws in every arm (`crops_ray/world/online.py`). "
                "CTR: requests with a click; LPR: requests with a long play; RQR: sessions that reformulated within "
                "90 s. Relative change vs DPR with a 95% paired bootstrap interval over users. The paper (Kuaishou, "
                "dense model): CTR +0.869%, LPR +0.483%, RQR -0.646%."
            ),
            "",
            run.online_by_seed[run.seeds[0]][1],
        ]
        if seeds_table:
            text += ["", "Over the seeds (relative change vs DPR, mean ± sd):", "", seeds_table]
        return ["\n".join(text)]
    if run.online_skipped:
        return [
            "## Table 2: simulated online A/B test\n\nSkipped: these logs are not a generated world (no world.json), "
            "so there are no simulated users to run an A/B test on."
        ]
    return []


def _bubble_sections(run: DemoRun) -> list[str]:
    """On a generated world: the filter bubble (table and OUT/filter_bubble.png) and DPR vs CroPS top-10."""
    world, first = _world(run), _first(run)
    if not os.path.exists(LogsLayout(world).video_truth):
        return []
    from crops_ray.world.bubble import bubble_table, plot_bubble

    bubble = bubble_table(world)
    plot_bubble(bubble, run.layout.filter_bubble_png)
    sections = [
        "## The filter bubble in the logs\n\nShare of minority-sense videos for requests that typed a bare "
        "ambiguous word.\n\n"
        + markdown_table(bubble, index=False, floatfmt=".3f")
        + "\n\n![filter bubble](filter_bubble.png)"
    ]
    if {"dpr", "crops"} <= set(run.methods):
        words = list(bubble.sort_values("requests", ascending=False)["word"][:3])
        side = {
            label: R.per_query_path(first.method(name).root) for label, name in (("DPR", "dpr"), ("CroPS", "crops"))
        }
        sections.append(
            "## DPR vs CroPS, top-10 for ambiguous queries\n\n✓ relevant in the qrels, ✗ not; the video's sense in "
            "italics.\n\n" + side_by_side(world, side, words)
        )
    return sections


def readme_block(run: DemoRun, report: DemoReport) -> str:
    """The README's tables: Table 1, Table 2 (first seed, and over the seeds), the paired CIs, the additivity."""
    block = "\n".join(report.head[:-1]).replace("## ", "### ", 1)
    if run.online_by_seed:
        block += f"\n\n### Table 2: simulated online A/B test (seed {run.seeds[0]})\n\n"
        block += run.online_by_seed[run.seeds[0]][1]
        if report.online_seeds_table:
            block += "\n\nOver the seeds (relative change vs DPR, mean ± sd):\n\n" + report.online_seeds_table
    if report.significance_table:
        block += "\n\n### CroPS minus each baseline (points, paired bootstrap 95% CI over queries; * excludes 0)\n\n"
        block += report.significance_table
    if report.sparse_significance_table:
        block += "\n\n### The sparse model: CroPS-sparse minus each sparse baseline (points, paired 95% CI)\n\n"
        block += report.sparse_significance_table
    if report.additivity_table:
        block += "\n\n### Do the perspectives add up? (points, paired bootstrap 95% CI over queries; * excludes 0)"
        block += "\n\n" + report.additivity_table
    return block


def readme_note(run: DemoRun, report: DemoReport) -> str | None:
    """The README block's last line for a ``--reuse`` run that read seeds back (None: the run's wall time)."""
    if not run.reused_seeds and not run.partly_reused:
        return None
    return reuse_note(run.out, run.seeds, run.reused_seeds, run.partly_reused, report.total_seconds)
