"""The end-to-end demo: the paper's Table 1 on the embedded world, or on your logs.

    python pipelines/demo.py                                   # small world, seed 0, Table-1 methods
    python pipelines/demo.py --seeds 0,1,2 --ablations         # mean and spread over 3 seeds, with ablations
    python pipelines/demo.py --logs their_logs/ --out runs/x   # your logs (videos/, search_log/, rec_log/, eval/)

Per seed: generate the world (unless --logs) -> validate -> build the CroPS data (P0-P3, HLA) -> train each
method -> evaluate each (FAISS top-100: Recall@100 CT / QR, NDCG@4). Writes OUT/report.md (the table in the
paper's layout, a chart, the filter bubble, DPR vs CroPS top-10 for ambiguous queries), OUT/metrics.json and
OUT/table1.png.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from crops_ray import buckets as B
from crops_ray import report as R
from crops_ray import schema as S
from crops_ray.config import add_config_args, load_config
from crops_ray.experiment import (
    ABLATIONS,
    METHODS,
    NEGATIVE_BASELINES,
    TABLE1,
    ExperimentConfig,
    aggregate,
    online_ab,
    plot_table1,
    run_method,
    side_by_side,
    table1_markdown,
)
from crops_ray.storage import SUCCESS_MARKER, OutputError, check_output
from crops_ray.validate import ValidationConfig, format_summary, validate_logs
from crops_ray.world.generator import format_stats, generate_world, world_config

# The CPU demo's data-engine settings (a YAML passed with --engine-config applies on top): the default calibration
# set halved (the fine-tuned discriminator still reaches ~0.98 held-out precision) and P3 on 4 queries (the CPU LLM
# is a stand-in for vLLM on a GPU), so that one seed fits 20 minutes on 2 cores.
DEMO_ENGINE = {"discriminator": {"calibration_pairs": 1500}, "world_knowledge": {"max_queries": 4}}


def _engine_config(path: str | None, seed: int):
    from crops_ray.engine.build import EngineConfig

    cfg = load_config(EngineConfig, path, defaults=DEMO_ENGINE)
    cfg.world_knowledge.seed = seed
    return cfg


START, END = "<!-- table1:start (written by pipelines/demo.py --readme) -->", "<!-- table1:end -->"


def update_readme(readme: str, table: str, timings: dict, chart: str) -> None:
    """Replace the block between the README's table1 markers with this run's table, chart and wall time."""
    import shutil

    with open(readme) as f:
        text = f.read()
    if START not in text or END not in text:
        raise SystemExit(f"{readme}: no '{START}' ... '{END}' block to replace")
    docs = os.path.join(os.path.dirname(os.path.abspath(readme)), "docs")
    os.makedirs(docs, exist_ok=True)
    shutil.copyfile(chart, os.path.join(docs, "table1.png"))
    block = "\n".join(
        [
            START,
            table,
            "",
            "![Table 1](docs/table1.png)",
            "",
            timings.get("note") or f"Wall time of the whole run on this machine: {timings['total'] / 60:.1f} min.",
            END,
        ]
    )
    head, rest = text.split(START, 1)
    with open(readme, "w") as f:
        f.write(head + block + rest.split(END, 1)[1])


def online_metrics(online_by_seed: dict, seeds: list[int]) -> dict:
    """metrics.json's "online": per arm, CTR / LPR / RQR (first seed) and, with several seeds, their mean and sd."""
    if not online_by_seed:
        return {}
    import numpy as np

    out = {}
    for arm in online_by_seed[seeds[0]][0]["arm"]:
        rows = [frame.set_index("arm").loc[arm] for frame, _ in online_by_seed.values()]
        entry = {k: float(rows[0][k]) for k in ("ctr", "lpr", "rqr")}
        entry.update({f"{k}_rel_vs_baseline": float(rows[0][f"{k}_rel"]) for k in ("ctr", "lpr", "rqr")})
        entry.update(
            {
                f"{k}_rel_ci": [float(rows[0][f"{k}_rel_low"]), float(rows[0][f"{k}_rel_high"])]
                for k in ("ctr", "lpr", "rqr")
            }
        )
        if len(rows) > 1:
            for k in ("ctr", "lpr", "rqr"):
                values = np.array([float(r[k]) for r in rows])
                entry[f"{k}_mean"], entry[f"{k}_std"] = float(values.mean()), float(values.std(ddof=1))
        out[arm] = entry
    return out


def online_seeds_table(online_by_seed: dict, labels: dict) -> str:
    import numpy as np
    import pandas as pd

    frames = [frame.set_index("arm") for frame, _ in online_by_seed.values()]
    rows = []
    for arm in frames[0].index:
        row = {"Arm": labels.get(arm, arm)}
        for k, name in (("ctr", "CTR"), ("lpr", "LPR"), ("rqr", "RQR")):
            rel = np.array([100 * f.loc[arm, f"{k}_rel"] for f in frames])
            row[f"{name} vs DPR"] = f"{rel.mean():+.2f}% ± {rel.std(ddof=1):.2f}"
        rows.append(row)
    return pd.DataFrame(rows).to_markdown(index=False)


def logs_section(logs: str) -> str:
    """Your logs' size, the test sets' size and, for an import that wrote ``import.json``, what it can say."""
    from crops_ray.evaluate import load_targets

    rows = {t: S.count_rows(S.table_files(logs, t)) for t in S.TABLES}
    targets = load_targets(logs)
    sets = [
        ("CT (clicked pairs)", targets.ct),
        ("QR (clicked after a reformulation)", targets.qr),
    ]
    lines = [
        "## Your logs: how much there is, and what the numbers can say",
        "",
        "| | rows | queries |",
        "|---|---:|---:|",
    ]
    lines += [f"| {t} | {n:,} | |" for t, n in rows.items()]
    lines += [f"| test set {name} | {len(p):,} | {len({q for q, _ in p}):,} |" for name, p in sets if p is not None]
    if targets.qrels is not None:
        judged = sum(len(v) for v in targets.qrels.values())
        lines.append(f"| test set qrels (graded) | {judged:,} | {len(targets.qrels):,} |")
    smallest = min((len({q for q, _ in p}) for _, p in sets if p), default=0)
    lines += [
        "",
        f"The smallest test set has {smallest:,} queries: a difference is real only where its paired interval below "
        "excludes 0, whatever the table's means say.",
    ]
    if rows["videos"] and 100 / rows["videos"] > 0.01:
        lines[-1] += (
            f" Recall@100 reaches {100 / rows['videos']:.1%} of a {rows['videos']:,}-document corpus (the paper's "
            "K = 100 was a sliver of millions): read Recall at K's smaller cut-offs and NDCG@4 instead."
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


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/demo")
    p.add_argument("--logs", help="your log folder instead of the generated world")
    p.add_argument("--scale", default="small", help="world scale: tiny, small, large")
    p.add_argument("--seeds", default="0", help="comma-separated seeds (world and training); 3 give mean and spread")
    p.add_argument("--ablations", action="store_true", help="add crops_p1, crops_p2, crops_p3, crops_binary")
    p.add_argument(
        "--methods",
        help=f"comma-separated subset of {list(METHODS)}; the negative-sampling baselines "
        f"{list(NEGATIVE_BASELINES)} run only when named here",
    )
    p.add_argument("--max-steps", type=int, help="training steps per method")
    p.add_argument(
        "--doc-tower",
        choices=("frozen", "train"),
        help="frozen (default: query-side fine-tuning, the corpus encoded once) or train (both towers, as the paper; "
        "several times slower on CPUs)",
    )
    add_config_args(p, "ExperimentConfig (train, groups, eval)")
    p.add_argument("--engine-config", help="YAML of the data engine's EngineConfig")
    p.add_argument(
        "--readme", help="also write the table and chart into this README (between its table1 markers) and docs/"
    )
    p.add_argument("--no-online", action="store_true", help="skip the simulated online A/B test (Table 2)")
    p.add_argument(
        "--reuse",
        action="store_true",
        help="a seed whose data, methods and online test are already under --out is read back, not rerun "
        "(regenerates the report)",
    )
    args = p.parse_args(argv)
    methods = args.methods.split(",") if args.methods else list(TABLE1) + (list(ABLATIONS) if args.ablations else [])
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        p.error(f"unknown methods {unknown}; choose from {list(METHODS)}")
    flags = {"train.max_steps": args.max_steps}
    if args.doc_tower:
        flags.update({"train.doc_tower": args.doc_tower, "train.shared_towers": args.doc_tower == "train"})
    cfg = load_config(ExperimentConfig, args.config, flags, args.set)
    seeds = [int(s) for s in args.seeds.split(",")]
    try:
        check_output(args.out, [args.logs], replaces=False)
    except OutputError as exc:
        p.error(str(exc))
    os.makedirs(args.out, exist_ok=True)
    started = time.time()
    results, sections, timings = [], [], {}
    needs_data = any(METHODS[m].sources for m in methods)
    # The online A/B test needs simulated users: a generated world (world.json), never a user's own logs.
    online = not args.no_online and (args.logs is None or os.path.exists(os.path.join(args.logs, "world.json")))
    steps = len(seeds) * (3 + len(methods) + online)
    per_seed_ci, per_seed_additivity, online_by_seed = {}, {}, {}
    step = 0

    def stage(what: str) -> None:
        nonlocal step
        step += 1
        print(f"\n[{step}/{steps}] {what}  ({time.time() - started:.0f}s)", flush=True)

    reused_seeds: list[int] = []  # seeds whose outputs --reuse found complete (nothing of them rerun)
    partly_reused: dict[int, list[str]] = {}  # seed -> the methods --reuse read back (the rest ran now)
    for seed in seeds:
        root = f"{args.out}/seed-{seed}"
        logs = args.logs
        if logs is None:
            logs = f"{root}/world"
            stage(f"seed {seed}: generating the {args.scale} world")
            t = time.time()
            if args.reuse and os.path.exists(f"{logs}/world.json"):
                with open(f"{logs}/world.json") as f:
                    stats = json.load(f)["stats"]
            else:
                stats = generate_world(logs, world_config(args.scale, seed=seed))
                timings[f"seed {seed}: generate"] = time.time() - t
            if seed == seeds[0]:
                sections.append("## The world (first seed)\n\n" + format_stats(stats))
        else:
            step += 1
        # --reuse reads back what an earlier run under --out finished: the data (when its stats, samples and the
        # validated log are there) and each method with a result.json; only what is missing runs now.
        data_done = (
            args.reuse
            and os.path.exists(f"{root}/data/stats.json")
            and os.path.exists(f"{root}/validated/{SUCCESS_MARKER}")
        )
        methods_done = {m for m in methods if args.reuse and os.path.exists(f"{root}/{m}/result.json")}
        reused = data_done and methods_done == set(methods)
        if reused:
            reused_seeds.append(seed)
        elif methods_done:
            partly_reused[seed] = sorted(methods_done)
        stage(f"seed {seed}: validating {logs}" + (" (reused)" if data_done else ""))
        if not data_done:
            t = time.time()
            summaries = validate_logs(logs, f"{root}/validated", ValidationConfig())
            timings[f"seed {seed}: validate"] = time.time() - t
            if seed == seeds[0]:
                sections.append("## Validation (rows in = kept + quarantined)\n\n" + format_summary(summaries))
        samples = log = None
        if needs_data and data_done:
            from crops_ray.engine.build import format_summary as engine_summary
            from crops_ray.hla import load_samples

            step += 1
            with open(f"{root}/data/stats.json") as f:
                engine_stats = json.load(f)
            if seed == seeds[0]:
                sections.append("## The CroPS data engine (first seed)\n\n" + engine_summary(engine_stats))
            if not reused:  # a method still to train needs the samples and the log
                samples, _ = load_samples(f"{root}/data")
                log, _ = load_samples(f"{root}/validated")
        elif needs_data:
            from crops_ray.engine.build import build_data
            from crops_ray.engine.build import format_summary as engine_summary
            from crops_ray.hla import load_samples

            stage(f"seed {seed}: building the CroPS data (P0-P3, HLA)")
            t = time.time()
            engine_stats = build_data(
                f"{root}/validated",
                f"{root}/data",
                _engine_config(args.engine_config, seed),
                eval_dir=f"{logs}/eval" if os.path.isdir(f"{logs}/eval") else None,
            )
            timings[f"seed {seed}: build data"] = time.time() - t
            samples, _ = load_samples(f"{root}/data")
            log, _ = load_samples(f"{root}/validated")  # P0 straight from the log: what the baselines train on
            if seed == seeds[0]:
                sections.append("## The CroPS data engine (first seed)\n\n" + engine_summary(engine_stats))
        else:
            step += 1
        for name in methods:
            done = name in methods_done and (data_done or not METHODS[name].sources)
            stage(f"seed {seed}: {METHODS[name].label}" + (" (reused)" if done else ""))
            t = time.time()
            if done:
                with open(f"{root}/{name}/result.json") as f:
                    results.append(json.load(f))
                continue
            results.append(run_method(METHODS[name], logs, samples, f"{root}/{name}", cfg, seed, log=log))
            timings[f"seed {seed}: {name}"] = time.time() - t
        runs = R.load_per_query(root, methods)
        per_seed_ci[seed] = R.compare(runs, "crops", [m for m in methods if m != "crops"], seed=seed)
        per_seed_additivity[seed] = R.additivity(runs, seed=seed)  # {} unless the ablations ran
        if online:
            stage(f"seed {seed}: simulated online A/B test (Table 2)")
            t = time.time()
            online_by_seed[seed] = online_ab(
                logs, root, methods, f"{root}/online", cfg, baseline="dpr", reuse=args.reuse
            )
            if not reused:
                timings[f"seed {seed}: online A/B"] = time.time() - t

    summary = aggregate(results)
    plot_table1(summary, methods, f"{args.out}/table1.png")
    table = table1_markdown(summary, methods)
    first = f"{args.out}/seed-{seeds[0]}"
    world = args.logs or f"{first}/world"
    corpus = S.count_rows(S.table_files(world, "videos"))
    labels = {m: METHODS[m].label for m in methods}
    where = "your logs" if args.logs else f"the {args.scale} world"
    head = [
        (
            f"## Table 1 on {where} ({len(seeds)} seed{'s' if len(seeds) > 1 else ''}: "
            f"{args.seeds}; corpus: {corpus:,} videos)"
        ),
        "",
        "Percent; with several seeds, mean ± standard deviation.",
        "",
        table,
        "",
        "![Table 1](table1.png)",
    ]
    sections.insert(0, "\n".join(head))
    if args.logs:
        sections.insert(1, logs_section(args.logs))
    runs = R.load_per_query(first, methods)
    if runs:
        groups = R.query_groups(world, sorted({q for per in runs.values() for q in per["query"]}))
        sections.insert(
            1,
            f"## Recall at K (first seed; corpus: {corpus:,} videos)\n\nThe paper's K = 100 was selective in a corpus "
            "of "
            "millions; here the smaller cut-offs show where methods separate.\n\n" + R.recall_curve_table(runs, labels),
        )
        by_bucket = R.split_table(runs, groups, "bucket", labels)
        sections.insert(
            2,
            f"## By query bucket (first seed; corpus: {corpus:,} videos)\n\nBuckets by how often the training log "
            f"typed the query: head >= {B.HEAD_MIN_REQUESTS} requests, torso 3-{B.HEAD_MIN_REQUESTS - 1}, tail 1-2, "
            "unseen 0 "
            "(`crops_ray/buckets.py`). Pair-level recall within each bucket.\n\n" + by_bucket,
        )
        by_kind = R.split_table(runs, groups, "kind", labels)
        if by_kind:
            sections.insert(
                3,
                f"## By query kind (first seed; corpus: {corpus:,} videos)\n\nThe world's query kinds from "
                "`eval/queries.parquet`: a bare ambiguous word, a sense query, a subtopic query, a long-tail query "
                "(subtopic + angle).\n\n" + by_kind,
            )
    if any(per_seed_ci.values()):
        sections.insert(
            4,
            "## Is the difference real? CroPS minus each baseline\n\nPercentage points per seed, with the paired "
            "bootstrap 95% confidence interval over queries (`crops_ray/significance.py`, scipy's BCa bootstrap); * "
            "marks an interval that excludes 0; with several seeds the mean ± sd of the differences comes first.\n\n"
            + R.significance_markdown(per_seed_ci, "CroPS", labels),
        )
    additivity_table, additivity = R.additivity_report(per_seed_additivity, labels)
    if additivity_table:  # right after CroPS minus each baseline
        at = next(
            (i + 1 for i, text in enumerate(sections) if text.startswith("## Is the difference real?")), len(sections)
        )
        sections.insert(
            at,
            "## Do the perspectives add up? (ablations)\n\nEach perspective's gain over P0 "
            "(FS-LR-style: the log stages with HLA + H-InfoNCE), their sum, the gain of all of them "
            "(CroPS), and the interaction: CroPS's gain minus the sum, bootstrapped with the same "
            "resampled queries for every run (`crops_ray/report.py` `additivity`); additive when its "
            "interval holds 0. Last row: HLA + H-InfoNCE against binary labels + InfoNCE on the same "
            "samples. Points, paired 95% CI per seed, * excludes 0; with several seeds the mean ± sd "
            "first.\n\n" + additivity_table,
        )
    if online_by_seed:
        first_summary, first_table = online_by_seed[seeds[0]]
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
            first_table,
        ]
        if len(online_by_seed) > 1:
            text += [
                "",
                "Over the seeds (relative change vs DPR, mean ± sd):",
                "",
                online_seeds_table(online_by_seed, labels),
            ]
        sections.append("\n".join(text))
    elif not online and not args.no_online:
        sections.append(
            "## Table 2: simulated online A/B test\n\nSkipped: these logs are not a generated world (no world.json), "
            "so there are no simulated users to run an A/B test on."
        )
    if os.path.exists(f"{world}/eval/video_truth.parquet"):
        from crops_ray.world.bubble import bubble_table, plot_bubble

        bubble = bubble_table(world)
        plot_bubble(bubble, f"{args.out}/filter_bubble.png")
        sections.append(
            "## The filter bubble in the logs\n\nShare of minority-sense videos for requests that typed a bare "
            "ambiguous word.\n\n"
            + bubble.to_markdown(index=False, floatfmt=".3f")
            + "\n\n![filter bubble](filter_bubble.png)"
        )
        if {"dpr", "crops"} <= set(methods):
            words = list(bubble.sort_values("requests", ascending=False)["word"][:3])
            side = {"DPR": f"{first}/dpr/eval/per_query.parquet", "CroPS": f"{first}/crops/eval/per_query.parquet"}
            sections.append(
                "## DPR vs CroPS, top-10 for ambiguous queries\n\n✓ relevant in the qrels, ✗ not; the video's sense in "
                "italics.\n\n" + side_by_side(world, side, words)
            )
    timings["total"] = time.time() - started
    sections.append(
        "## Time (this machine)\n\n| stage | seconds |\n|---|---:|\n"
        + "\n".join(f"| {k} | {v:.0f} |" for k, v in timings.items() if isinstance(v, (int, float)))
    )
    with open(f"{args.out}/report.md", "w") as f:
        f.write("# crops-ray: Table 1 report\n\n" + "\n\n".join(sections) + "\n")
    with open(f"{args.out}/metrics.json", "w") as f:
        json.dump(
            {
                "methods": summary,
                "significance": {str(k): v for k, v in per_seed_ci.items()},
                "online": online_metrics(online_by_seed, seeds),
                "additivity": additivity,
                "corpus_videos": corpus,
                "seeds": seeds,
                "runs": results,
                "seconds": timings,
            },
            f,
            indent=2,
            default=str,
        )
    if args.readme:
        block = "\n".join(head[:-1]).replace("## ", "### ", 1)
        if online_by_seed:
            block += (
                "\n\n### Table 2: simulated online A/B test (seed "
                + str(seeds[0])
                + ")\n\n"
                + online_by_seed[seeds[0]][1]
            )
            if len(online_by_seed) > 1:
                block += "\n\nOver the seeds (relative change vs DPR, mean ± sd):\n\n" + online_seeds_table(
                    online_by_seed, labels
                )
        if any(per_seed_ci.values()):
            block += (
                "\n\n### CroPS minus each baseline (points, paired bootstrap 95% CI over queries; * excludes 0)\n\n"
                + R.significance_markdown(per_seed_ci, "CroPS", labels)
            )
        if additivity_table:
            block += (
                "\n\n### Do the perspectives add up? (points, paired bootstrap 95% CI over queries; * excludes 0)"
                "\n\n" + additivity_table
            )
        if reused_seeds or partly_reused:
            notes = []
            if reused_seeds:
                notes.append(f"seed(s) {', '.join(map(str, reused_seeds))} reused whole")
            for s, names in partly_reused.items():
                notes.append(f"seed {s}'s data and {', '.join(names)} reused")
            ran = [s for s in seeds if s not in reused_seeds]
            timings["note"] = (
                f"With `--reuse` from `{args.out}`: {'; '.join(notes)} (see Measured numbers for their time)"
                + (
                    f"; the rest of seed(s) {', '.join(map(str, ran))} ran now in {timings['total'] / 60:.1f} min."
                    if ran
                    else "."
                )
            )
        update_readme(args.readme, block, timings, f"{args.out}/table1.png")
    print("\n" + table)
    print(f"\ndemo finished in {timings['total']:.0f}s; report: {args.out}/report.md")
    return summary


if __name__ == "__main__":
    main()
