"""What one Ray Train worker holds across its steps (:class:`WorkerState`): :func:`restore` builds it from the
run's latest checkpoint or the pretrained model, :func:`checkpoint` writes what the next attempt restores."""

from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

import torch

from crops_ray.config import from_dict
from crops_ray.hla import stable_hash
from crops_ray.train.batch import DocCache
from crops_ray.train.config import CHECKPOINT_PREFIX, MODEL_DIR, STATE_FILE, TrainConfig
from crops_ray.train.step import lr_lambda, seed_everything

if TYPE_CHECKING:
    from crops_ray.encoder import Encoder
    from crops_ray.negatives import NegativeMiner


@dataclass
class WorkerState:
    """What one worker carries from step to step (built by :func:`restore`)."""

    cfg: TrainConfig
    rank: int
    world: int
    total_steps: int
    num_levels: int
    device: torch.device
    encoder: Encoder
    model: torch.nn.Module  # the encoder, wrapped by DDP when there are several workers
    params: list[torch.nn.Parameter]  # the trained ones (not a frozen document tower's)
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    autocast: Callable[[], Any]  # a context: bf16 autocast, or none
    doc_cache: DocCache | None  # the frozen document tower's embeddings; None while the tower trains
    miner: NegativeMiner | None  # the hard-negative rule's, None without one
    start_step: int  # the restored checkpoint's step, 0 for a fresh run
    saved_metrics: dict  # the restored checkpoint's last report
    progress: Any  # the driver's queue, or None
    step: int = 0  # optimizer steps done
    lr: float = 0.0  # the last step's learning rate
    started: float = 0.0  # time.perf_counter() before this attempt's first step
    steady_from: float = 0.0  # ... and after it: throughput counts from here (that step also starts the data pipeline)
    # Since the last report: the loss terms' sum and count per label level, and (negatives mined, queries).
    level_sums: torch.Tensor = field(init=False)
    level_counts: torch.Tensor = field(init=False)
    mined: torch.Tensor = field(default_factory=lambda: torch.zeros(2, dtype=torch.float64))

    def __post_init__(self) -> None:
        self.step = self.start_step
        self.level_sums = torch.zeros(self.num_levels, dtype=torch.float64)
        self.level_counts = torch.zeros(self.num_levels, dtype=torch.float64)

    def to_driver(self, message) -> None:
        """Rank 0's printed lines and events go to the driver through the progress queue."""
        if self.rank == 0 and self.progress is not None:
            self.progress.put(message)


def restore(loop: dict) -> WorkerState:
    """This worker at the start of its attempt: model, optimizer, schedule and step from the run's latest
    checkpoint, or the pretrained model at step 0; ``loop`` holds the TrainConfig as a dict and the run's sizes."""
    import ray.train
    import ray.train.torch

    cfg = from_dict(TrainConfig, loop["train"])
    total_steps = loop["total_steps"]
    ctx = ray.train.get_context()
    rank = ctx.get_world_rank()
    _set_up_process(cfg, ctx.get_local_world_size())
    device = ray.train.torch.get_device()
    encoder, saved = _load_encoder(cfg)
    doc_cache = _freeze_doc_tower(encoder, cfg, device) if cfg.doc_tower == "frozen" else None
    start_step = int(saved.get("step", 0))
    miner = None
    if cfg.negatives.rule != "none":
        from crops_ray.negatives import NegativeMiner

        miner = NegativeMiner(cfg.negatives, cfg.temperature, total_steps, cfg.seed)
    seed_everything(stable_hash(f"{cfg.seed}/{rank}/{start_step}"))
    model = ray.train.torch.prepare_model(encoder)
    params = [p for p in encoder.parameters() if p.requires_grad]
    optimizer, scheduler = _optimizer(params, cfg, total_steps, saved)
    return WorkerState(
        cfg=cfg,
        rank=rank,
        world=ctx.get_world_size(),
        total_steps=total_steps,
        num_levels=loop["num_levels"],
        device=device,
        encoder=encoder,
        model=model,
        params=params,
        optimizer=optimizer,
        scheduler=scheduler,
        autocast=_autocast(cfg, device),
        doc_cache=doc_cache,
        miner=miner,
        start_step=start_step,
        saved_metrics=saved.get("metrics", {}),
        progress=loop.get("progress"),
    )


def _set_up_process(cfg: TrainConfig, workers_on_this_node: int) -> None:
    """Torch threads: the configured number, else this worker's share of the node's cores; no progress bars."""
    threads = cfg.torch_threads or max(1, len(os.sched_getaffinity(0)) // max(1, workers_on_this_node))
    torch.set_num_threads(threads)
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    except ImportError:  # pragma: no cover
        pass


def _load_encoder(cfg: TrainConfig) -> tuple[Encoder, dict]:
    """The encoder and the saved training state from the latest checkpoint; else the pretrained model and ``{}``."""
    import ray.train

    from crops_ray.encoder import Encoder

    checkpoint = ray.train.get_checkpoint()
    saved: dict = {}
    if checkpoint:
        with checkpoint.as_directory() as folder:
            encoder = Encoder.from_pretrained(os.path.join(folder, MODEL_DIR))
            saved = torch.load(os.path.join(folder, STATE_FILE), map_location="cpu", weights_only=True)
    else:
        encoder = Encoder.from_pretrained(cfg.model, shared=cfg.shared_towers, max_length=cfg.max_length)
    encoder.config.max_length = cfg.max_length
    return encoder, saved


def _freeze_doc_tower(encoder: Encoder, cfg: TrainConfig, device: torch.device) -> DocCache:
    """Freeze the document tower; its embeddings come from a cache, prefilled from ``doc_embeddings`` if given."""
    encoder.freeze_docs()
    doc_cache = DocCache(encoder, cfg.doc_cache_size)
    if cfg.doc_embeddings:
        doc_cache.prefill(cfg.doc_embeddings, device)
    return doc_cache


def _optimizer(
    params: list[torch.nn.Parameter], cfg: TrainConfig, total_steps: int, saved: dict
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW and the warmup-then-decay schedule, continued from ``saved`` when resuming."""
    # fused: one kernel for every parameter (CPU and CUDA); the per-tensor loop took a third of a CPU step.
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(total_steps, cfg.warmup_ratio))
    if saved:
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        # The schedule follows this run's total_steps (a resumed run may be given more steps than the first).
        factor = lr_lambda(total_steps, cfg.warmup_ratio)(scheduler.last_epoch)
        for group, base in zip(optimizer.param_groups, scheduler.base_lrs):
            group["lr"] = base * factor
    return optimizer, scheduler


def _autocast(cfg: TrainConfig, device: torch.device) -> Callable[[], Any]:
    use_bf16 = cfg.precision == "bf16" or (cfg.precision == "auto" and device.type == "cuda")
    return (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if use_bf16 else nullcontext


def checkpoint(state: WorkerState, metrics: dict) -> None:
    """Report ``metrics`` with a checkpoint (the model, and the optimizer, schedule and step) that :func:`restore`
    resumes from; rank 0's call (the other ranks report without one)."""
    import ray.train
    from ray.train import Checkpoint

    folder = tempfile.mkdtemp(prefix="crops-ckpt-")
    try:
        state.encoder.save(os.path.join(folder, MODEL_DIR))
        torch.save(
            {
                "step": metrics["step"],
                "optimizer": state.optimizer.state_dict(),
                "scheduler": state.scheduler.state_dict(),
                "metrics": metrics,
            },
            os.path.join(folder, STATE_FILE),
        )
        ray.train.report(
            metrics,
            checkpoint=Checkpoint.from_directory(folder),
            checkpoint_dir_name=f"{CHECKPOINT_PREFIX}{metrics['step']:08d}",
        )
    finally:
        shutil.rmtree(folder, ignore_errors=True)
