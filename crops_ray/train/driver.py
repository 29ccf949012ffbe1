"""The driver: checks the inputs, plans the steps, runs the :class:`~ray.train.torch.TorchTrainer`, prints the
workers' progress, logs the steps' metrics to the tracked run (:mod:`crops_ray.tracking`) and copies the final model
out."""

from __future__ import annotations

import json
import math
import os
import shutil
import threading
import time
from dataclasses import asdict

import pyarrow.compute as pc
import pyarrow.fs as pafs

from crops_ray.hla import GROUPS_SCHEMA
from crops_ray.layout import TRAIN_METRICS_JSON
from crops_ray.model_card import export_sentence_transformers, training_card, write_model_card
from crops_ray.plumbing import model_path
from crops_ray.schema import filesystem_and_path
from crops_ray.tracking import NO_RUN, Run
from crops_ray.train.config import (
    CHECKPOINT_PREFIX,
    DEFAULT_RUN_NAME,
    MODEL_DIR,
    RESUME_KEYS,
    RUN_SETTINGS_FILE,
    TrainConfig,
)
from crops_ray.train.loop import train_loop_per_worker

# ------------------------------------------------------------------------------------------------ driver


def _run_settings_check(storage: str, name: str, cfg: TrainConfig) -> None:
    """Refuse to resume a run under ``storage/name`` whose checkpoints were written with other key settings."""
    fs, base = filesystem_and_path(storage.rstrip("/"))
    path = f"{base}/{name}/{RUN_SETTINGS_FILE}"
    settings = {k: getattr(cfg, k) for k in RESUME_KEYS}
    if cfg.negatives.rule != "none":  # absent from runs that mined nothing (and from runs written before mining)
        settings["negatives"] = cfg.negatives.rule
    run = fs.get_file_info(pafs.FileSelector(f"{base}/{name}", allow_not_found=True))
    has_checkpoints = any(i.type == pafs.FileType.Directory and i.base_name.startswith(CHECKPOINT_PREFIX) for i in run)
    if has_checkpoints and fs.get_file_info(path).type == pafs.FileType.File:
        with fs.open_input_stream(path) as f:
            before = json.loads(f.read().decode())
        keys = {**before, **settings}
        differ = {k: (before.get(k), settings.get(k)) for k in keys if before.get(k) != settings.get(k)}
        if differ:
            raise ValueError(
                f"{storage}/{name} holds a run started with other settings {differ} (before, now); "
                "resume it with the same settings or start a new run with another --name or --storage"
            )
        return
    fs.create_dir(f"{base}/{name}", recursive=True)
    with fs.open_output_stream(path) as f:
        f.write(json.dumps(settings, indent=2).encode())


def _default_cpus_per_worker(num_workers: int) -> float:
    """The cluster's CPUs shared by the workers, one left for Ray Data's read tasks (a pool that takes every CPU
    deadlocks them), and no more than the largest node has."""
    import ray

    nodes = [n.get("Resources", {}).get("CPU", 0) for n in ray.nodes() if n.get("Alive")]
    total, largest = sum(nodes) or 1, max(nodes, default=1)
    return max(0.25, min((total - 1) / num_workers, max(largest - 1, 0.25)))


def _has_columns(fs, path: str) -> bool:
    """Whether the parquet file or folder at ``path`` has every column of :data:`GROUPS_SCHEMA`."""
    import pyarrow.dataset as pads

    try:
        names = pads.dataset(path, filesystem=fs, format="parquet").schema.names
    except (OSError, ValueError) as exc:  # not parquet
        raise ValueError(f"{path}: not readable as parquet ({exc})") from exc
    return all(c in names for c in GROUPS_SCHEMA.names)


def _count_groups(fs, path: str) -> tuple[int, int]:
    """(groups, levels = highest level + 1) of the groups at ``path``, read batch by batch: the driver's memory
    does not grow with the groups."""
    import pyarrow.dataset as pads

    rows, highest = 0, 0
    for batch in pads.dataset(path, filesystem=fs, format="parquet").to_batches(columns=["levels"]):
        rows += batch.num_rows
        top = pc.max(pc.list_flatten(batch.column(0))).as_py()
        highest = max(highest, top or 0)
    return rows, highest + 1


# What a step's report holds besides its measurements: the step itself and the run's shape (not tracked as metrics).
STEP_BOOKKEEPING = ("step", "total_steps", "resumed_from_step", "world_size")


def _forward_reports(queue):
    """A Ray Train callback that puts rank 0's reported metrics on the progress queue as ``{"metrics": ...}``.

    Callbacks run in Ray Train's controller, not in this process; the queue brings every report here, where the
    tracked run logs it (Ray Train V2 keeps no metrics reported without a checkpoint, so ``result`` cannot).
    """
    from ray.train import UserCallback

    class ForwardReports(UserCallback):
        def after_report(self, run_context, metrics, checkpoint):
            try:
                queue.put({"metrics": metrics[0]})
            except Exception:  # the queue went away with the driver: tracking must never stop the training
                pass

    return ForwardReports()


def _log_step(tracking: Run, metrics: dict) -> None:
    """One report's measurements (loss, per-level loss, lr, samples/s, ...) at its step."""
    if "step" in metrics:
        tracking.log_metrics({k: v for k, v in metrics.items() if k not in STEP_BOOKKEEPING}, step=metrics["step"])


def _drain(queue, stop: threading.Event, progress, events: list, tracking: Run = NO_RUN) -> None:
    """Print the workers' progress lines; log the reported metrics to ``tracking``; keep the other structured
    events (a non-finite stop) in ``events``."""
    from ray.util.queue import Empty

    while True:
        try:
            message = queue.get(timeout=0.5)
            if isinstance(message, dict) and "metrics" in message:
                _log_step(tracking, message["metrics"])
            elif isinstance(message, dict):
                events.append(message)
            else:
                progress(message)
        except Empty:
            if stop.is_set():
                return
        except Exception:  # the queue actor went away with the cluster
            return


def plan_steps(num_groups: int, cfg: TrainConfig) -> tuple[int, int]:
    """``(total optimizer steps, micro-batches per epoch per worker)`` for ``num_groups`` training groups."""
    micro_per_epoch = (num_groups // cfg.num_workers) // cfg.batch_size
    if micro_per_epoch == 0:
        raise ValueError(
            f"{num_groups} training groups are too few for batch_size={cfg.batch_size} x "
            f"num_workers={cfg.num_workers}: lower the batch size or the number of workers, or add data"
        )
    total = cfg.max_steps or max(1, math.ceil(cfg.epochs * micro_per_epoch / cfg.grad_accum))
    return total, micro_per_epoch


def train(
    groups: str,
    out: str,
    cfg: TrainConfig,
    storage: str | None = None,
    name: str = DEFAULT_RUN_NAME,
    progress=print,
    tracking: Run = NO_RUN,
) -> dict:
    """Train on the groups parquet at ``groups``; write ``out/model/`` and ``out/train_metrics.json`` (a local
    folder); return the metrics.

    ``storage`` (default ``out/checkpoints``; a local path or a URI such as ``s3://bucket/runs``) and ``name``
    identify the run: the same pair resumes it. Ray must be initialised (``crops_ray.runtime.init_ray``).
    ``tracking`` (:func:`crops_ray.tracking.start_run`) gets the settings as ``train.*`` params, every reported
    step's loss, per-level loss, lr and samples/s, the final numbers and train_metrics.json.
    """
    import ray
    import ray.data
    from ray.train import CheckpointConfig, DataConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer
    from ray.util.queue import Queue

    started = time.perf_counter()
    num_groups, num_levels = _check_groups(groups)
    total_steps, micro_per_epoch = plan_steps(num_groups, cfg)
    cfg = _resolved(cfg)
    os.makedirs(out, exist_ok=True)
    storage = storage or os.path.join(out, "checkpoints")
    if "://" not in storage:
        storage = os.path.abspath(storage)
    _run_settings_check(storage, name, cfg)

    cpus = cfg.cpus_per_worker or _default_cpus_per_worker(cfg.num_workers)
    dataset = ray.data.read_parquet(groups if "://" in groups else os.path.abspath(groups))
    data_config = DataConfig(execution_options=_ordered_ingest())
    queue = Queue(actor_options={"num_cpus": 0})
    loop = {
        "train": asdict(cfg),
        "total_steps": total_steps,
        "micro_per_epoch": micro_per_epoch,
        "num_levels": num_levels,
        "progress": queue,
    }
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config=loop,
        scaling_config=ScalingConfig(
            num_workers=cfg.num_workers, use_gpu=cfg.use_gpu, resources_per_worker={"CPU": cpus}
        ),
        run_config=RunConfig(
            name=name,
            storage_path=storage,
            checkpoint_config=CheckpointConfig(num_to_keep=cfg.keep_checkpoints),
            failure_config=FailureConfig(max_failures=cfg.max_failures),
            callbacks=[_forward_reports(queue)],
        ),
        datasets={"train": dataset},
        dataset_config=data_config,
    )
    progress(
        f"training {cfg.loss} on {groups}: {total_steps} steps x {cfg.batch_size * cfg.grad_accum * cfg.num_workers} "
        f"groups (global batch), {cfg.num_workers} worker(s), storage {storage}/{name}"
    )
    tracking.log_params(
        {"train": asdict(cfg), "total_steps": total_steps, "num_groups": num_groups, "storage": f"{storage}/{name}"}
    )
    result = _fit(trainer, queue, progress, tracking, f"{storage}/{name}")
    if result.checkpoint is None:
        raise RuntimeError(f"training under {storage}/{name} finished without a checkpoint")
    model_dir = _copy_model(result.checkpoint, out)
    metrics = _final_metrics(cfg, dict(result.metrics or {}), started, model_dir, result.checkpoint.path)
    with open(os.path.join(out, TRAIN_METRICS_JSON), "w") as f:
        json.dump(metrics, f, indent=2)
    # The model is a sentence-transformers model too, with a card of what it was trained on (crops_ray/model_card.py).
    export_sentence_transformers(model_dir)
    write_model_card(model_dir, training_card(out, name))
    _log_final(tracking, metrics, out)
    return metrics


def _final_metrics(cfg: TrainConfig, final: dict, started: float, model_dir: str, checkpoint: str) -> dict:
    """train_metrics.json: the last report's numbers (``final``), the run's shape and where its model is."""
    metrics = {
        "loss_name": cfg.loss,
        "steps": final.get("step"),
        "final_loss": final.get("loss"),
        "loss_per_level": {k.rsplit("_", 1)[1]: v for k, v in final.items() if k.startswith("loss_level_")},
        "samples_per_s": final.get("samples_per_s"),
        "resumed_from_step": final.get("resumed_from_step", 0),
        "num_workers": cfg.num_workers,
        "global_batch": cfg.batch_size * cfg.grad_accum * cfg.num_workers,
        **{k: final[k] for k in ("mined_per_query", "index_refreshes") if k in final},
        "wall_s": round(time.perf_counter() - started, 2),
        "model": model_dir,
        "checkpoint": checkpoint,
        "config": asdict(cfg),
    }
    return metrics


def _check_groups(groups: str) -> tuple[int, int]:
    """``(groups, label levels)`` of the groups table at ``groups``; a missing, foreign or empty table is an error."""
    fs, path = filesystem_and_path(groups.rstrip("/"))
    if fs.get_file_info(path).type == pafs.FileType.NotFound:
        raise FileNotFoundError(f"{groups}: no such groups file or folder")
    if not _has_columns(fs, path):
        raise ValueError(
            f"{groups}: not a groups table {GROUPS_SCHEMA.names}; build it with crops_ray.hla.build_groups"
        )
    num_groups, num_levels = _count_groups(fs, path)
    if num_groups == 0:
        raise ValueError(f"{groups}: no training groups")
    return num_groups, num_levels


def _resolved(cfg: TrainConfig) -> TrainConfig:
    """``cfg`` with its local paths checked and made absolute (workers run in other working directories): the
    model, the document embeddings, and the miner's corpus and positives."""
    model_path(cfg.model)  # fail here, with a clear message, on a model that is not there
    if cfg.doc_embeddings and "://" not in cfg.doc_embeddings:
        if not os.path.exists(cfg.doc_embeddings):
            raise FileNotFoundError(f"doc_embeddings {cfg.doc_embeddings} does not exist")
        cfg = TrainConfig(**{**asdict(cfg), "doc_embeddings": os.path.abspath(cfg.doc_embeddings)})
    if os.path.isdir(cfg.model):
        cfg = TrainConfig(**{**asdict(cfg), "model": os.path.abspath(cfg.model)})
    if cfg.negatives.rule != "none":  # the miner reads the corpus embeddings and the labelled positives
        files = {"corpus": cfg.negatives.corpus or cfg.doc_embeddings, "positives": cfg.negatives.positives}
        for key, path in files.items():
            if not path:
                raise ValueError(
                    f"negatives rule {cfg.negatives.rule!r} needs negatives.{key}"
                    + (" (or doc_embeddings)" if key == "corpus" else "")
                )
            if "://" not in path:
                if not os.path.exists(path):
                    raise FileNotFoundError(f"negatives.{key} {path} does not exist")
                files[key] = os.path.abspath(path)
        cfg = TrainConfig(**{**asdict(cfg), "negatives": {**asdict(cfg.negatives), **files}})
    return cfg


def _fit(trainer, queue, progress, tracking: Run, where: str):
    """Run ``trainer`` while a thread prints the workers' progress from ``queue``; its result. A non-finite stop
    (the workers' queue event: Ray Train V2 keeps no metrics reported without a checkpoint) is an error."""
    import ray

    stop = threading.Event()
    events: list[dict] = []
    printer = threading.Thread(target=_drain, args=(queue, stop, progress, events, tracking), daemon=True)
    printer.start()
    try:
        result = trainer.fit()
    finally:
        stop.set()
        printer.join(timeout=10)
        ray.kill(queue.actor)
    stopped = next((e["nonfinite"] for e in events if "nonfinite" in e), None)
    if stopped:
        raise NonFiniteTrainingError(
            f"training stopped at step {stopped['step']}: the gradient norm is {stopped['grad_norm']} (loss "
            f"{stopped['loss']}, lr {stopped['lr']:.3g}); no model was saved. Lower --lr or raise the warm-up; the "
            f"last good checkpoint (if any) is under {where}."
        )
    return result


def _copy_model(checkpoint, out: str) -> str:
    """The checkpoint's model copied to ``out/model`` (whole or not at all: through a temporary folder)."""
    model_dir = os.path.join(out, MODEL_DIR)
    with checkpoint.as_directory() as folder:
        tmp = model_dir + ".tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(os.path.join(folder, MODEL_DIR), tmp)
        shutil.rmtree(model_dir, ignore_errors=True)
        os.replace(tmp, model_dir)
    return model_dir


def _log_final(tracking: Run, metrics: dict, out: str) -> None:
    """The run's totals, under names apart from the per-step histories (``final_loss``, not ``loss``)."""
    tracking.log_metrics(
        {
            "final_loss": metrics["final_loss"],
            "final_samples_per_s": metrics["samples_per_s"],
            "steps": metrics["steps"],
            "wall_s": metrics["wall_s"],
            **{f"final_loss_level_{k}": v for k, v in metrics["loss_per_level"].items()},
        }
    )
    tracking.log_artifact(os.path.join(out, TRAIN_METRICS_JSON))


class NonFiniteTrainingError(RuntimeError):
    """The loss or gradient became NaN or infinite: training stops instead of saving a broken model."""


def _ordered_ingest():
    """Ray Data ingest options that keep the file order, so a seeded single-worker run repeats exactly."""
    from ray.data import DataContext, ExecutionOptions

    current = DataContext.get_current().execution_options
    return ExecutionOptions(
        resource_limits=current.resource_limits, preserve_order=True, verbose_progress=current.verbose_progress
    )
