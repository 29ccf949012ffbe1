"""Evaluate a retriever: Recall@k CT / QR, NDCG@4/10 and MRR@10 against LOGS/eval/.

    python pipelines/evaluate.py --model runs/train/model --logs runs/world --out runs/eval/crops
    python pipelines/evaluate.py --method bm25 --logs runs/world --out runs/eval/bm25
    # the pretrained encoder:
    python pipelines/evaluate.py --model minilm --logs runs/cranfield --out runs/eval/zero_shot

The corpus is LOGS/videos; targets are whichever of LOGS/eval/{ct,qr,qrels}.parquet exist. Writes
OUT/metrics.json, OUT/per_query.parquet and, for a model, OUT/index/ (FAISS; what Serve loads).
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from crops_ray.config import add_config_args, pipeline_config
from crops_ray.evaluate import EvalConfig, evaluate, format_metrics
from crops_ray.index import KINDS
from crops_ray.layout import EvalLayout
from crops_ray.storage import check_output


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--logs", required=True, help="folder with videos/ and eval/")
    p.add_argument("--out", required=True)
    p.add_argument("--method", choices=("dense", "bm25"), default="dense")
    p.add_argument("--model", help="trained model folder, or 'minilm' for the pretrained encoder (zero-shot)")
    p.add_argument("--index", choices=KINDS, help="FAISS index kind (default flat = exact)")
    add_config_args(p, "EvalConfig")
    args = p.parse_args(argv)
    if args.method == "dense" and not args.model:
        p.error("--model is required for a dense method (use --model minilm for the pretrained encoder)")
    cfg = pipeline_config(p, EvalConfig, args)
    if args.index:
        cfg.index.kind = args.index
    try:
        check_output(
            args.out, [args.logs, args.model if args.model and os.path.exists(args.model) else None], replaces=False
        )
        metrics = evaluate(args.logs, args.out, method=args.method, model=args.model, cfg=cfg)
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    print(format_metrics(metrics))
    print(f"metrics: {EvalLayout(args.out).metrics_json}")
    return metrics


if __name__ == "__main__":
    main()
