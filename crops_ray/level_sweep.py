"""The level sweep (the paper's limitation 4): whether HLA's levels transfer to your logs.

The paper fixes six levels; :data:`crops_ray.hla.LEVEL_MAPS` names the paper's map and a few hypotheses about it.
Here CroPS is trained once per map on the same build (the data engine's candidates relabelled with the engine's own
HLA step, as the alpha sweep does: :func:`crops_ray.alpha_sweep.alpha_samples` at the build's alpha, and the search
log's P0 samples under the same map), with the same budget, initialisation and seed; only the levels differ.

The choice is made on the logs alone. A share of the queries that have clicks (a hash of the query, so the split is
the same for every map) is held out of training: their clicked pairs in the training period are the validation
targets (``OUT/validation/eval/ct.parquet``), and the map that retrieves them best is the one the sweep picks. The
test set (``LOGS/eval/``, where it exists) only confirms: choosing a map by its test numbers would be tuning on the
test set. Each map is compared with the paper's by the paired bootstrap over queries, on validation and on test.
"""

from __future__ import annotations

import json
import os
from dataclasses import replace

import pyarrow as pa
import pyarrow.compute as pc

from crops_ray import alpha_sweep as AS
from crops_ray import schema as S
from crops_ray import storage
from crops_ray.hla import LEVEL_MAPS, LevelConfig, log_samples, stable_hash
from crops_ray.layout import LogsLayout, MethodLayout, SeedLayout
from crops_ray.sources import Source

VALIDATION_SHARE = 0.1  # of the queries with a click in the training log
SELECT_ON = "recall@100_ct"
SWEEP_JSON = "sweep.json"  # a map's row (validation and test metrics), so that --reuse reads it back
METRICS = ("recall@100_ct", "recall@100_qr", "ndcg@4")


def parse_maps(text: str | None) -> tuple[str, ...]:
    """``"paper,binary"`` -> the named maps, the paper's first (the reference)."""
    names = [m.strip() for m in (text or ",".join(LEVEL_MAPS)).split(",") if m.strip()]
    unknown = [m for m in names if m not in LEVEL_MAPS]
    if unknown:
        raise ValueError(f"--maps: unknown level maps {unknown}; named maps: {list(LEVEL_MAPS)}")
    return ("paper", *[m for m in dict.fromkeys(names) if m != "paper"])


def validation_queries(search_log: pa.Table, share: float = VALIDATION_SHARE, seed: int = 0) -> set[str]:
    """The held-out queries: a seeded hash share of the queries the training log has clicks for."""
    clicked = search_log.filter(pc.equal(search_log["stage"], Source.CLICKED))
    queries = set(clicked["query"].to_pylist())
    return {q for q in queries if stable_hash(f"level-sweep\x1f{seed}\x1f{q}") % 10_000 < share * 10_000}


def write_validation(search: pa.Table, videos: list[str], queries: set[str], out: str) -> str:
    """A log folder for evaluation on the held-out queries: their clicked (query, video) pairs in the validated
    search log (the training period) as ``eval/ct.parquet``, and the folder of the validated ``videos`` files
    (linked). Built from the validated logs only."""
    keep = pc.and_(pc.equal(search["stage"], Source.CLICKED), pc.is_in(search["query"], pa.array(sorted(queries))))
    pairs = search.filter(keep).select(["query", "video_id"]).group_by(["query", "video_id"]).aggregate([])
    folder = f"{out}/validation"
    test_sets = LogsLayout(folder).eval
    os.makedirs(test_sets, exist_ok=True)
    storage.write_table(pairs.cast(S.CT_SCHEMA), f"{test_sets}/ct.parquet")
    link = f"{folder}/videos"
    if not os.path.exists(link):
        os.symlink(os.path.abspath(os.path.dirname(videos[0])), link)
    return folder


def without(table: pa.Table, queries: set[str]) -> pa.Table:
    return table.filter(pc.invert(pc.is_in(table["query"], pa.array(sorted(queries), pa.string()))))


def map_samples(
    data: str, build: tuple, search: pa.Table, videos: pa.Table, name: str, held_out: set[str]
) -> tuple[pa.Table, pa.Table]:
    """(engine samples, P0 log samples) under level map ``name``, the held-out queries removed. ``build``: the
    build's (stats, EngineConfig) (:func:`crops_ray.alpha_sweep.read_build`); ``search``, ``videos``: the validated
    logs it read."""
    stats, cfg = build
    levels = dict(LEVEL_MAPS[name])
    samples = AS.alpha_samples(data, replace(cfg, levels=levels), stats["config"]["alpha"])
    log = log_samples(search, videos, LevelConfig(levels=levels))
    return without(samples, held_out), without(log, held_out)


def map_crops(out: str, name: str) -> MethodLayout:
    """CroPS's folder under level map ``name``: the map's folder is laid out as a seed's."""
    return SeedLayout(f"{out}/{name}").method("crops")


def run_level_sweep(
    data: str,
    logs: str,
    validated: str,
    out: str,
    maps: tuple[str, ...],
    exp_cfg,
    seed: int = 0,
    reuse: bool = False,
    progress=print,
) -> dict:
    """Train and evaluate CroPS per level map (``out/<map>/crops``); returns the rows and the validation pick."""
    from crops_ray.evaluate import evaluate
    from crops_ray.experiment import METHODS, run_method

    build = AS.read_build(data)  # read once; every map relabels the same build and log
    search = storage.read_table(S.table_files(validated, "search_log"))
    video_files = S.table_files(validated, "videos")
    videos = storage.read_table(video_files)
    held_out = validation_queries(search, seed=seed)
    val_logs = write_validation(search, video_files, held_out, out)
    test_sets = LogsLayout(logs.rstrip("/")).eval
    has_test = os.path.isdir(test_sets) and bool(storage.parquet_files(test_sets))
    progress(f"level sweep: {len(maps)} maps; {len(held_out):,} held-out validation queries (their clicks)")
    rows = {}
    for i, name in enumerate(maps, 1):
        crops = map_crops(out, name)
        folder, sweep_json = crops.root, f"{crops.root}/{SWEEP_JSON}"
        if reuse and os.path.exists(sweep_json):
            with open(sweep_json) as f:
                rows[name] = json.load(f)
            progress(f"  {name}: reused {folder}")
            continue
        samples, log = map_samples(data, build, search, videos, name, held_out)
        progress(f"  {name} ({i}/{len(maps)}): CroPS on {samples.num_rows:,} samples -> {folder}")
        result = run_method(METHODS["crops"], val_logs, samples, folder, exp_cfg, seed, progress=progress, log=log)
        row = {"map": name, "levels": LEVEL_MAPS[name], "validation": result["metrics"], "test": None}
        if has_test:
            row["test"] = evaluate(logs, crops.test.root, "dense", crops.model, exp_cfg.eval, progress=progress)
        with open(sweep_json, "w") as f:
            json.dump(row, f, indent=2, default=str)
        rows[name] = row
    compare(out, rows)
    picked = max(rows, key=lambda m: rows[m]["validation"][SELECT_ON])
    return {"rows": rows, "picked": picked, "validation_queries": len(held_out), "seed": seed}


def compare(out: str, rows: dict) -> None:
    """Each map minus the paper's, paired over queries, on validation and test (in each row, in place)."""
    import pyarrow.parquet as pq

    from crops_ray.significance import compare_runs

    def per_query(name: str, split: str):
        crops = map_crops(out, name)
        path = (crops.eval if split == "validation" else crops.test).per_query
        return (
            pq.read_table(path).to_pandas().drop(columns=["top10"], errors="ignore") if os.path.exists(path) else None
        )

    for name, row in rows.items():
        row["vs_paper"] = {}
        for split in ("validation", "test"):
            a, b = per_query(name, split), per_query("paper", split)
            if name != "paper" and a is not None and b is not None:
                row["vs_paper"][split] = compare_runs(a, b)


def sweep_table(results: list[dict]) -> str:
    """Markdown: per map, validation and test Recall@100 CT (mean over seeds) and the paired differences from the
    paper's map (mean [low, high] of the per-seed intervals), and which map validation picks per seed."""
    maps = list(results[0]["rows"])
    lines = [
        "| level map | validation R@100 CT | vs paper (validation) | test R@100 CT | vs paper (test) | test R@100 QR "
        "| test NDCG@4 | picked on validation |",
        "|---|---:|---|---:|---|---:|---:|---:|",
    ]

    def mean(values):
        values = [v for v in values if v is not None]
        return sum(values) / len(values) if values else None

    def pct(x):
        return "-" if x is None else f"{100 * x:.1f}"

    for name in maps:
        rows = [r["rows"][name] for r in results]
        val = mean([r["validation"].get(SELECT_ON) for r in rows])
        test = {m: mean([(r["test"] or {}).get(m) for r in rows]) for m in METRICS}
        diffs = {}
        for split in ("validation", "test"):
            cis = [r.get("vs_paper", {}).get(split, {}).get(SELECT_ON) for r in rows]
            cis = [c for c in cis if c]
            if cis:
                d, lo, hi = (mean([c[k] for c in cis]) for k in ("diff", "ci_low", "ci_high"))
                sign = "+" if d >= 0 else ""
                diffs[split] = f"{sign}{100 * d:.1f} [{100 * lo:+.1f}, {100 * hi:+.1f}]"
        picked = sum(r["picked"] == name for r in results)
        lines.append(
            f"| {name} | {pct(val)} | {diffs.get('validation', '(reference)' if name == 'paper' else '-')} | "
            f"{pct(test['recall@100_ct'])} | {diffs.get('test', '(reference)' if name == 'paper' else '-')} | "
            f"{pct(test['recall@100_qr'])} | {pct(test['ndcg@4'])} | {picked}/{len(results)} |"
        )
    return "\n".join(lines)
