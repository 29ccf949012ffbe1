"""The alpha sweep (the paper's limitation 1): what the discriminator's threshold does to P1/P2 and to CroPS.

build_data scored every mined pair once and kept theta (and the reformulation gate's score) in
``OUT/candidates/``. Here each alpha relabels those pairs with the engine's own rule
(:func:`crops_ray.engine.assemble.label_candidates` with :func:`crops_ray.engine.build.label_settings`) and
reassembles the samples with the engine's own HLA step (:func:`crops_ray.engine.assemble.to_samples`): nothing is
scored again, and the build's own alpha reproduces the build exactly. Per alpha:

- counts (any logs): P1/P2 candidates and kept, samples per source and level;
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
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from crops_ray import schema as S
from crops_ray import storage
from crops_ray.engine import assemble as A
from crops_ray.engine import build as B
from crops_ray.report import interval_cell
from crops_ray.world import audit as E

DEFAULT_ALPHAS = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
MINED = (("p1", "reformulation"), ("p2", "recommendation"))  # (short name, candidates column) of each swept source
LABEL_FLAGS = ("gate_pass", "reformulation_kept", "recommendation_kept")  # what label_candidates derives
PROGRESS_ROWS = 500_000  # a progress line per this many candidate pairs read
DOWNSTREAM_METRICS = (("recall@100_ct", "R@100 CT"), ("recall@100_qr", "R@100 QR"), ("ndcg@4", "NDCG@4"))


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

    if not os.path.exists(f"{data}/stats.json") or not storage.parquet_files(f"{data}/candidates"):
        raise SweepInputError(
            f"{data} is not a build_data output (no stats.json or candidates/): pass the --out of "
            "`python pipelines/build_data.py`, whose candidates/ keep every mined pair's theta"
        )
    with open(f"{data}/stats.json") as f:
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
    parts = [A.to_samples(relabel(batch, cfg, alpha), dict(cfg.levels)) for batch in _batches(f"{data}/candidates")]
    parts += list(_p3_samples(data, cfg))
    return pa.concat_tables(parts) if parts else S.SAMPLES_SCHEMA.empty_table()


def _p3_samples(data: str, cfg: B.EngineConfig):
    """The LLM's kept descriptions as samples, as build_data assembled them (none without P3)."""
    if "p3" in cfg.sources:
        for batch in _batches(f"{data}/llm_descriptions"):
            yield B.llm_samples(batch, cfg.levels["llm"])


def _add(total: dict, counts: dict) -> None:
    for k, v in counts.items():
        total[k] = total.get(k, 0) + int(v)


def _table_counts(table: pa.Table) -> dict[str, int]:
    """build.py's one-row counter tables as a dict."""
    return {name: int(table[name][0].as_py() or 0) for name in table.column_names}


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
    for batch in _batches(f"{data}/candidates"):
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
        folder = f"{alpha_folder(out, alpha)}/crops"
        if reuse and os.path.exists(f"{folder}/result.json"):
            with open(f"{folder}/result.json") as f:
                results[alpha] = json.load(f)
            progress(f"      alpha {alpha:g}: reused {folder}")
            continue
        samples = alpha_samples(data, cfg, alpha)
        progress(f"      alpha {alpha:g} ({i}/{len(alphas)}): CroPS on {samples.num_rows:,} samples -> {folder}")
        results[alpha] = run_method(METHODS["crops"], logs, samples, folder, exp_cfg, seed, progress=progress, log=log)
    return {a: r["metrics"] for a, r in results.items()}


def against_reference(out: str, alphas, reference: float, seed: int = 0) -> dict[float, dict]:
    """Per alpha, each Table-1 metric's paired bootstrap CI of (alpha - ``reference``) over queries."""
    from crops_ray import report, significance

    runs = {a: report.load_per_query(alpha_folder(out, a), ["crops"]).get("crops") for a in alphas}
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


# ---------------------------------------------------------------------------------------------- report


def _markdown(frame: pd.DataFrame) -> str:
    """Cells already formatted as text (so an alpha stays "0.6"), the alpha column left, the numbers right."""
    align = ["left"] + ["right"] * (frame.shape[1] - 1)
    return frame.to_markdown(index=False, disable_numparse=True, colalign=align)


def _alpha_label(alpha: float, reference: float) -> str:
    return f"{alpha:g}" + (" (build)" if alpha == reference else "")


def _cell(value) -> str:
    """A share as text, "-" when it is undefined (nothing kept, nothing relevant)."""
    return "-" if value is None or (isinstance(value, float) and np.isnan(value)) else f"{value:.3f}"


def mining_table(rows: list[dict], reference: float) -> str:
    """Markdown: per alpha, kept of candidates per source, precision/recall where there is ground truth."""
    table = []
    for r in rows:
        line = {
            "alpha": _alpha_label(r["alpha"], reference),
            "P1 kept": f"{r['p1_kept']:,} / {r['p1_candidates']:,}",
            "P2 kept": f"{r['p2_kept']:,} / {r['p2_candidates']:,}",
        }
        for name, label in (("p1", "P1"), ("p2", "P2"), ("mined", "mined")):
            if f"{name}_precision" in r:
                line[f"{label} precision"] = _cell(r[f"{name}_precision"])
                line[f"{label} recall"] = _cell(r[f"{name}_recall"])
        if "mined_f1" in r:
            line["mined F1"] = _cell(r["mined_f1"])
        line["samples"] = f"{r['samples']:,}"
        table.append(line)
    return _markdown(pd.DataFrame(table))


def downstream_table(rows: list[dict], reference: float) -> str:
    """Markdown: per alpha, CroPS's metrics (percent) and the paired 95% CI of its difference from the reference."""
    table = []
    for r in rows:
        if not any(key in r for key, _ in DOWNSTREAM_METRICS):
            continue
        line = {"alpha": _alpha_label(r["alpha"], reference)}
        for key, label in DOWNSTREAM_METRICS:
            value, ci = r.get(key), r.get(f"{key}_vs_reference")
            line[label] = "-" if value is None else f"{100 * value:.1f}"
            if ci is not None:
                line[label] += f" ({interval_cell(ci)})"
        table.append(line)
    return _markdown(pd.DataFrame(table)) if table else ""


def summary_lines(rows: list[dict], reference: float) -> list[str]:
    """What a reader wants from the sweep in a few lines: the spread of kept counts, where the mined positives'
    F1 peaks (ground truth), and per downstream metric the best alpha and how flat the curve is."""
    lines = []
    for short, label in (("p1", "P1"), ("p2", "P2")):
        kept = [r[f"{short}_kept"] for r in rows]
        lines.append(
            f"{label} kept {max(kept):,} at alpha {rows[0]['alpha']:g} down to {min(kept):,} at "
            f"{rows[-1]['alpha']:g} (of {rows[0][f'{short}_candidates']:,} candidates)"
        )
    scored = [r for r in rows if r.get("mined_f1") is not None]
    if scored:
        best = max(scored, key=lambda r: r["mined_f1"])
        lines.append(
            f"mined positives' F1 against the ground truth peaks at alpha {best['alpha']:g}: precision "
            f"{best['mined_precision']}, recall {best['mined_recall']}, F1 {best['mined_f1']}"
        )
    for key, label in DOWNSTREAM_METRICS:
        values = [(r["alpha"], r[key]) for r in rows if r.get(key) is not None]
        if not values:
            continue
        best = max(values, key=lambda v: v[1])
        spread = 100 * (max(v for _, v in values) - min(v for _, v in values))
        apart = [f"{r['alpha']:g}" for r in rows if r.get(f"{key}_vs_reference", {}).get("significant")]
        lines.append(
            f"{label}: best at alpha {best[0]:g} ({100 * best[1]:.1f}); spread over alphas {spread:.1f} "
            f"points; alphas whose paired CI vs {reference:g} excludes 0: {', '.join(apart) or 'none'}"
        )
    return lines


def plot_sweep(rows: list[dict], path: str, reference: float) -> None:
    """Kept counts, precision/recall (with ground truth) and downstream metrics (when trained) against alpha."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    alphas = [r["alpha"] for r in rows]
    trained = any(key in r for r in rows for key, _ in DOWNSTREAM_METRICS)
    panels = ["counts"] + (["quality"] if "p1_precision" in rows[0] else []) + (["downstream"] if trained else [])
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4), squeeze=False)
    for ax, panel in zip(axes[0], panels):
        if panel == "counts":
            for short, label in (("p1", "P1 kept"), ("p2", "P2 kept")):
                ax.plot(alphas, [r[f"{short}_kept"] for r in rows], marker="o", label=label)
            ax.set_ylabel("pairs kept")
            ax.set_title("kept candidates")
        elif panel == "quality":
            for color, (name, label) in zip(("C0", "C1", "C2"), (("p1", "P1"), ("p2", "P2"), ("mined", "mined"))):
                for what, style, marker in (("precision", "-", "o"), ("recall", "--", "x")):
                    values = [np.nan if r[f"{name}_{what}"] is None else r[f"{name}_{what}"] for r in rows]
                    ax.plot(alphas, values, color=color, linestyle=style, marker=marker, label=f"{label} {what}")
            ax.set_ylim(0, 1.02)
            ax.set_title("against the ground truth (grade >= 2)")
        else:
            for key, label in DOWNSTREAM_METRICS:
                values = [100 * r[key] if r.get(key) is not None else np.nan for r in rows]
                ax.plot(alphas, values, marker="o", label=label)
            ax.set_ylabel("%")
            ax.set_title("CroPS trained on each alpha's samples")
        ax.axvline(reference, color="grey", linestyle=":", linewidth=1)
        ax.set_xlabel("alpha (keep theta > alpha)")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_outputs(result: dict, out: str) -> None:
    """OUT/alpha_sweep.json, OUT/alpha_sweep.md (the tables and the summary) and OUT/alpha_sweep.png."""
    rows, reference = result["rows"], result["build_alpha"]
    os.makedirs(out, exist_ok=True)
    with open(f"{out}/alpha_sweep.json", "w") as f:
        json.dump(result, f, indent=2, default=str)
    truth = (
        f"relevant = {result['relevant_means']} in {result['ground_truth']}"
        if result["ground_truth"]
        else "no ground truth: counts only"
    )
    parts = [
        f"# Alpha sweep of {result['data']}",
        "",
        (
            f"The discriminator's scores from the build (alpha {reference:g}) thresholded again at each alpha; "
            f"nothing re-scored. P3 held as built. {truth}."
        ),
        "",
        mining_table(rows, reference),
    ]
    table = downstream_table(rows, reference)
    if table:
        parts += [
            "",
            f"## CroPS per alpha (seed {result['downstream']['seed']})",
            "",
            (
                f"Percent; in brackets the difference from alpha {reference:g} in points with its paired bootstrap "
                "95% CI over queries (* excludes 0)."
            ),
            "",
            table,
        ]
    parts += [
        "",
        "## Summary",
        "",
        *[f"- {line}" for line in result["summary"]],
        "",
        "![alpha sweep](alpha_sweep.png)",
        "",
    ]
    with open(f"{out}/alpha_sweep.md", "w") as f:
        f.write("\n".join(parts))
    plot_sweep(rows, f"{out}/alpha_sweep.png", reference)


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
    min_grade = cfg.discriminator.calibration_min_grade if min_grade is None else min_grade
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
