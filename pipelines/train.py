r"""Train the CroPS dual encoder (or the DPR baseline) on Ray Train.

    python pipelines/train.py --data runs/validated --out runs/crops --loss h_infonce --num-workers 2
    python pipelines/train.py --data runs/validated --out runs/dpr --loss infonce --num-workers 2
    ray job submit --working-dir . -- \
        python pipelines/train.py --data /abs/validated --out /abs/crops --storage s3://bucket/runs

--data is a log folder (search_log/ + videos/: samples come from the logged stages), a folder holding the data
engine's samples/, or a samples parquet folder. Writes OUT/groups/ (the HLA training groups), OUT/model/ (a
Hugging Face folder the evaluation loads with crops_ray.encoder.Encoder), OUT/train_metrics.json, and the run's
checkpoints under --storage/--name (default OUT/checkpoints/crops-train): the same command again resumes there.
--config takes a YAML with sections train (TrainConfig), groups (GroupConfig) and levels (LevelConfig); flags win.
Each invocation is an MLflow run (settings, per-step loss, lr and samples/s, train_metrics.json) in OUT/mlflow.db,
or in the store MLFLOW_TRACKING_URI names (crops_ray/tracking.py).
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import asdict

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from crops_ray.config import add_config_args, pipeline_config
from crops_ray.hla import build_groups, load_samples, samples_files, write_groups
from crops_ray.layout import TRAIN_METRICS_JSON, MethodLayout
from crops_ray.plumbing import model_path
from crops_ray.report.markdown import key_value_table
from crops_ray.runtime import init_ray
from crops_ray.storage import check_output
from crops_ray.tracking import start_run
from crops_ray.train import DEFAULT_RUN_NAME, DOC_TOWERS, LOSSES, NonFiniteTrainingError, TrainJobConfig, train
from crops_ray.train.groups import write_groups_dataset


def format_summary(m: dict) -> str:
    levels = ", ".join(f"L{k} {v:.4f}" for k, v in sorted(m["loss_per_level"].items()))
    return key_value_table(
        [
            ("loss", m["loss_name"]),
            ("steps", f"{m['steps']} (resumed from {m['resumed_from_step']})"),
            ("final loss", f"{m['final_loss']:.4f}"),
            ("loss per level", levels),
            ("workers x global batch", f"{m['num_workers']} x {m['global_batch']}"),
            ("samples/s", f"{m['samples_per_s']:.1f}"),
            ("wall time", f"{m['wall_s']:.1f} s"),
        ],
        headers=("training", "value"),
    )


def _train(args, job, files, groups_dir: str, run) -> dict:
    """The groups (built from a log folder in memory, or from the engine's samples by Ray Data), then training."""
    if files is None:  # a log folder: its samples are the logged stages, built in memory
        samples, what = load_samples(args.data, job.levels)
        groups = build_groups(samples, job.groups)
        if groups.num_rows == 0:
            raise ValueError(f"{args.data}: no labelled samples to train on")
        write_groups(groups, groups_dir, job.groups.rows_per_shard)
        what, num_groups = f"{what} -> {samples.num_rows:,} samples", groups.num_rows
    else:  # the data engine's samples, any size: grouped by Ray Data, never held by this process
        num_groups = write_groups_dataset(files, groups_dir, job.groups)
        what = f"samples {args.data} ({len(files)} file(s))"
    print(f"{what} -> {num_groups:,} training groups of up to {job.groups.group_size} candidates ({groups_dir})")
    return train(groups_dir, args.out, job.train, storage=args.storage, name=args.name, tracking=run)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="log folder (search_log/, videos/), or samples")
    p.add_argument("--out", required=True, help="output folder: groups/, model/, train_metrics.json")
    p.add_argument("--loss", choices=LOSSES, help="h_infonce (CroPS, default) or infonce (DPR baseline: clicks only)")
    p.add_argument("--num-workers", type=int, help="Ray Train workers (default 1)")
    p.add_argument(
        "--use-gpu", action=argparse.BooleanOptionalAction, default=None, help="one GPU per worker, NCCL, bf16"
    )
    p.add_argument(
        "--storage", help="checkpoint storage: local path or URI such as s3://bucket/runs (default OUT/checkpoints)"
    )
    p.add_argument(
        "--name", default=DEFAULT_RUN_NAME, help="run name under --storage; the same storage and name resume"
    )
    p.add_argument("--model", help="initial weights: packaged alias (minilm) or a local Hugging Face folder")
    p.add_argument("--max-steps", type=int, help="optimizer steps (default: --epochs over the data)")
    p.add_argument("--epochs", type=float)
    p.add_argument("--batch-size", type=int, help="groups (queries) per worker per micro-batch")
    p.add_argument("--lr", type=float)
    p.add_argument("--max-length", type=int, help="tokens per text")
    p.add_argument("--seed", type=int)
    p.add_argument(
        "--doc-tower",
        choices=DOC_TOWERS,
        help="train (both towers, default) or frozen (query-side fine-tuning: fast on CPUs)",
    )
    p.add_argument("--checkpoint-every", type=int)
    p.add_argument("--log-every", type=int)
    add_config_args(p, "TrainJobConfig (sections train, groups, levels)")
    return p


TRAIN_FLAGS = (
    "loss",
    "num_workers",
    "use_gpu",
    "model",
    "max_steps",
    "epochs",
    "batch_size",
    "lr",
    "max_length",
    "seed",
    "checkpoint_every",
    "log_every",
    "doc_tower",
)  # the flags that set TrainConfig fields of the same name


def job_config(p: argparse.ArgumentParser, args: argparse.Namespace) -> TrainJobConfig:
    """TrainJobConfig from --config, the flags (a frozen document tower also unshares the towers), then --set."""
    flags = {name: getattr(args, name) for name in TRAIN_FLAGS}
    if args.doc_tower == "frozen":
        flags["shared_towers"] = False
    return pipeline_config(p, TrainJobConfig, args, {f"train.{k}": v for k, v in flags.items()})


def main(argv: list[str] | None = None) -> dict:
    p = _parser()
    args = p.parse_args(argv)
    try:
        job = job_config(p, args)
        cfg = job.train
        check_output(args.out, [args.data], replaces=False)
        model_path(cfg.model)  # a missing model fails now, not after the groups are built and Ray has started
        groups_dir = MethodLayout(args.out).groups
        os.makedirs(args.out, exist_ok=True)
        files = samples_files(args.data)
        init_ray()
        tags = {"pipeline": "train", "loss": cfg.loss, "seed": cfg.seed}
        params = {"data": args.data, "groups": asdict(job.groups), "levels": asdict(job.levels)}
        with start_run(args.out, f"train {args.name} ({cfg.loss})", tags=tags, params=params) as run:
            metrics = _train(args, job, files, groups_dir, run)
    except (FileNotFoundError, ValueError, NonFiniteTrainingError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    print(format_summary(metrics))
    print(f"model: {metrics['model']}  (metrics: {os.path.join(args.out, TRAIN_METRICS_JSON)})")
    return metrics


if __name__ == "__main__":
    main()
