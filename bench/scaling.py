"""Scale on paper: GPU- and CPU-hours per stage at the paper's scale, from throughputs measured by a demo run.

    .venv/bin/python bench/scaling.py --run runs/demo > docs/scaling.md

Reads what a finished ``pipelines/demo.py`` run measured on this machine (``RUN/seed-S/data/stats.json``: rows,
pairs scored, LLM tokens and the wall time of every data-engine stage; ``RUN/seed-S/crops/train_metrics.json``:
training samples/s; ``RUN/metrics.json``: evaluation seconds) and turns them into per-core throughputs. The
workload at the paper's scale is a small set of inputs, each printed with where it comes from (the paper, or a
stated assumption you should replace with your own numbers): the paper gives 35 M synthetic positives and
"hundreds of millions of users"; everything else scales with the search-log size at the ratios this run
measured (pairs scored per search row, training samples per search row).

GPU throughput was not measured (no GPU was lent to the sessions that built this): GPU-hours are the measured
per-core CPU throughput times an assumed GPU/core speed-up per stage (``--gpu-speedup-*``), printed as such.
Rerun with measured GPU numbers (``bench/engine.py`` and ``bench/train.py`` on a GPU node) to replace them.
"""

from __future__ import annotations

import argparse
import glob
import json
import os


def _load(path: str) -> dict:
    with open(path) as f:
        return json.load(f)


def measured(run: str) -> dict:
    """Per-core throughputs from a demo run folder (first seed that has the files)."""
    seeds = sorted(glob.glob(os.path.join(run, "seed-*")))
    for seed in seeds:
        stats_path, train_path = f"{seed}/data/stats.json", f"{seed}/crops/train_metrics.json"
        if os.path.exists(stats_path) and os.path.exists(train_path):
            break
    else:
        raise SystemExit(
            f"{run}: no seed-*/data/stats.json with seed-*/crops/train_metrics.json (run pipelines/demo.py first)"
        )
    stats, tm = _load(stats_path), _load(train_path)
    cores = stats.get("cluster", {}).get("cpus") or os.cpu_count()
    sec = stats["seconds"]
    search_rows = stats["rows_read"]["search_log"]
    rows_all = sum(stats["rows_read"].values())
    llm = stats["llm"]
    kept_llm = stats["sources"]["llm"]["kept"]
    demo = _load(os.path.join(run, "metrics.json")) if os.path.exists(os.path.join(run, "metrics.json")) else {}
    return {
        "source": seed,
        "cores": cores,
        "search_rows": search_rows,
        "log_rows_per_search_row": rows_all / search_rows,
        # mining: the users and pairs stages (two shuffles) over every log row
        "mining_rows_per_core_s": rows_all / max(1e-9, sec.get("users", 0) + sec.get("pairs", 0)) / cores,
        "pairs_scored_per_search_row": stats["discriminator"]["mined_pairs_scored"] / search_rows,
        "pairs_per_core_s": stats["discriminator"]["mined_pairs_scored"] / max(1e-9, sec["score"]) / cores,
        "tokens_per_call": llm["generated_tokens"] / max(1, llm["calls"]),
        "kept_per_call": kept_llm / max(1, llm["calls"]),
        "tokens_per_core_s": llm["generated_tokens"] / max(1e-9, sec.get("llm_generate", 0)) / cores
        if llm["calls"]
        else float("nan"),
        "samples_per_search_row": stats["samples"]["rows"] / search_rows,
        "train_groups_per_s": tm["samples_per_s"],
        "train_workers": tm["num_workers"],
        "train_doc_tower": tm["config"].get("doc_tower", "train"),
        "train_group_size": None,
        "demo_seconds": demo.get("seconds", {}),
    }


def plan(m: dict, args) -> list[dict]:
    """Hours per stage at scale: CPU core-hours from the measured rates, GPU-hours with the assumed speed-ups."""
    rows = args.search_rows
    pairs = rows * m["pairs_scored_per_search_row"]
    calls = args.synthetic_positives / max(1e-9, m["kept_per_call"])
    tokens = calls * m["tokens_per_call"]
    samples = rows * m["samples_per_search_row"]
    groups = samples / args.samples_per_group * args.epochs
    train_core_s = groups / (m["train_groups_per_s"] / m["cores"])
    stages = [
        (
            "mine P1/P2 candidates (Ray Data shuffles)",
            f"{rows * m['log_rows_per_search_row']:.3g} log rows (search + rec, this run's ratio)",
            rows * m["log_rows_per_search_row"] / m["mining_rows_per_core_s"],
            None,
        ),
        (
            "discriminator over mined pairs",
            f"{pairs:.3g} pairs",
            pairs / m["pairs_per_core_s"],
            args.gpu_speedup_encoder,
        ),
        ("LLM descriptions (P3)", f"{calls:.3g} prompts, {tokens:.3g} tokens", tokens / m["tokens_per_core_s"], None),
        (
            "training (H-InfoNCE)"
            + (", query tower (document tower frozen, as measured)" if m["train_doc_tower"] == "frozen" else ""),
            f"{groups:.3g} groups",
            train_core_s,
            args.gpu_speedup_train,
        ),
    ]
    out = []
    for name, work, core_s, speedup in stages:
        core_h = core_s / 3600
        if name.startswith("LLM"):
            gpu_h = tokens / args.vllm_tokens_per_gpu_s / 3600
        elif speedup:
            gpu_h = core_h / speedup
        else:
            gpu_h = None
        out.append({"stage": name, "work": work, "core_hours": core_h, "gpu_hours": gpu_h})
    return out


def report(m: dict, rows: list[dict], args) -> str:
    lines = [
        "# Scale on paper",
        "",
        "Generated by `bench/scaling.py` from a demo run (`" + m["source"] + "`); do not edit by hand.",
        "",
        "## Measured on this machine",
        "",
        "| throughput | value | from |",
        "|---|---:|---|",
        (
            f"| log rows mined per core-second (users + pairs shuffles) | {m['mining_rows_per_core_s']:,.0f} | "
            "data/stats.json |"
        ),
        (
            f"| discriminator pairs per core-second (bi-encoder, texts cached) | {m['pairs_per_core_s']:,.1f} | "
            "data/stats.json |"
        ),
        f"| LLM tokens per core-second (SmolLM2-135M, CPU) | {m['tokens_per_core_s']:,.2f} | data/stats.json |",
        (
            f"| LLM tokens per prompt / synthetic positives kept per prompt | {m['tokens_per_call']:.1f} / "
            f"{m['kept_per_call']:.3f} | data/stats.json |"
        ),
        f"| discriminator pairs per search-log row | {m['pairs_scored_per_search_row']:.3f} | data/stats.json |",
        f"| training samples per search-log row | {m['samples_per_search_row']:.3f} | data/stats.json |",
        (
            f"| training groups/s ({m['train_workers']} worker(s), {m['cores']} cores, document tower: "
            f"{m['train_doc_tower']}) | {m['train_groups_per_s']:.1f} | crops/train_metrics.json |"
        ),
        "",
        "## The workload at the paper's scale",
        "",
        "| input | value | source |",
        "|---|---:|---|",
        f"| synthetic positives (P3) | {args.synthetic_positives:,.0f} | the paper |",
        (
            f"| search-log rows in the mining window | {args.search_rows:,.0f} | assumption (hundreds of millions of "
            "users; replace with yours) |"
        ),
        f"| samples per training group / epochs | {args.samples_per_group} / {args.epochs} | assumption |",
        (
            f"| GPU speed-up over one CPU core: encoder inference / training | {args.gpu_speedup_encoder:g} / "
            f"{args.gpu_speedup_train:g} | assumption (not measured here) |"
        ),
        (
            f"| vLLM generated tokens/s per GPU (14B model) | {args.vllm_tokens_per_gpu_s:,.0f} | assumption (not "
            "measured here) |"
        ),
        "",
        "## Hours per stage",
        "",
        "| stage | work | CPU core-hours (measured rate) | GPU-hours (assumed speed-up) |",
        "|---|---|---:|---:|",
    ]
    for r in rows:
        gpu = f"{r['gpu_hours']:,.0f}" if r["gpu_hours"] is not None else "- (CPU stage)"
        lines.append(f"| {r['stage']} | {r['work']} | {r['core_hours']:,.0f} | {gpu} |")
    gpu_rows = [r for r in rows if r["gpu_hours"]]
    top = max(gpu_rows, key=lambda r: r["gpu_hours"])
    cpu_top = max(rows, key=lambda r: r["core_hours"])
    nodes = args.gpu_nodes
    lines += [
        "",
        "## What it implies",
        "",
        (
            f"- On CPUs alone the largest stage is **{cpu_top['stage']}** ({cpu_top['core_hours']:,.0f} core-hours): "
            f"{cpu_top['core_hours'] / (args.cpu_nodes * args.cores_per_cpu_node):,.1f} h on {args.cpu_nodes} CPU "
            f"nodes of {args.cores_per_cpu_node} cores."
        ),
        (
            f"- With GPUs the bottleneck {'stays with' if top is cpu_top else 'moves to'} **{top['stage']}** "
            f"({top['gpu_hours']:,.0f} GPU-hours): {top['gpu_hours'] / nodes:,.1f} h on {nodes} single-GPU workers "
            "(the `gpu` worker type of `cluster.yaml`, max_workers raised)."
        ),
        (
            "- The mining shuffles stay on CPU workers and scale with log rows; the discriminator and training scale "
            "with GPUs; P3 is bounded by the LLM's generated tokens, so its cost is set by the number of synthetic "
            "positives wanted and the share that survives quality control (measured above)."
        ),
        (
            "- Every GPU number above rests on the assumed speed-ups in the table; measure them on one GPU node "
            "before sizing a cluster."
        ),
        (
            "- The P3 row uses the keep rate of the CPU demo's 135M-parameter LLM, which follows the one-shot prompt "
            "loosely; a 14B model keeps a larger share, which divides that row's hours by the same factor."
        ),
        (
            "- Training with both towers (the paper's setting) costs several times the measured query-tower rate; the "
            "paper reports 88 h for its H-InfoNCE run."
        ),
    ]
    return "\n".join(lines) + "\n"


def main(argv=None) -> str:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", default="runs/demo", help="a finished demo run folder")
    p.add_argument("--synthetic-positives", type=float, default=35e6, help="the paper: 35 M")
    p.add_argument(
        "--search-rows", type=float, default=2e10, help="search-log rows (request x candidate) in the mining window"
    )
    p.add_argument("--samples-per-group", type=int, default=8)
    p.add_argument("--epochs", type=float, default=1.0)
    p.add_argument(
        "--gpu-speedup-encoder",
        type=float,
        default=100.0,
        help="assumed: one GPU vs one CPU core, MiniLM-class inference",
    )
    p.add_argument(
        "--gpu-speedup-train", type=float, default=60.0, help="assumed: one GPU vs one CPU core, encoder training"
    )
    p.add_argument(
        "--vllm-tokens-per-gpu-s", type=float, default=2000.0, help="assumed: a 14B model on one 48 GB GPU, batched"
    )
    p.add_argument("--gpu-nodes", type=int, default=16)
    p.add_argument("--cpu-nodes", type=int, default=8)
    p.add_argument("--cores-per-cpu-node", type=int, default=16)
    args = p.parse_args(argv)
    m = measured(args.run)
    text = report(m, plan(m, args), args)
    print(text)
    return text


if __name__ == "__main__":
    main()
