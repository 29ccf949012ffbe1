"""The Ray Train worker function: load or resume, then steps with gradient accumulation, clipping, progress
and checkpoints (see :mod:`crops_ray.train` for what one step does)."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from contextlib import nullcontext

import torch

from crops_ray.config import from_dict
from crops_ray.hla import stable_hash
from crops_ray.train.batch import DocCache, append_candidates, collate
from crops_ray.train.config import (
    CHECKPOINT_PREFIX,
    MODEL_DIR,
    STATE_FILE,
    TrainConfig,
)
from crops_ray.train.step import in_batch_loss, lr_lambda, seed_everything

# --------------------------------------------------------------------------------------- the worker loop


def _batches(shard, cfg: TrainConfig, rank: int, start_micro: int, micro_per_epoch: int):
    """Endless micro-batches from this worker's shard: epoch after epoch, starting at micro-batch ``start_micro``."""
    epoch, skip = divmod(start_micro, micro_per_epoch)
    while True:
        seen = 0
        shuffle = (
            {
                "local_shuffle_buffer_size": cfg.shuffle_buffer,
                "local_shuffle_seed": stable_hash(f"{cfg.seed}/{epoch}/{rank}") % 2**31,
            }
            if cfg.shuffle_buffer
            else {}
        )
        for batch in shard.iter_batches(batch_size=cfg.batch_size, batch_format="pyarrow", drop_last=True, **shuffle):
            seen += 1
            if skip:
                skip -= 1
                continue
            yield {name: batch.column(name).to_pylist() for name in batch.column_names}
        if seen == 0:
            raise RuntimeError(f"worker {rank}: its data shard holds fewer than batch_size={cfg.batch_size} groups")
        epoch += 1


def _format_progress(m: dict) -> str:
    levels = "  ".join(f"L{k.rsplit('_', 1)[1]} {v:.3f}" for k, v in sorted(m.items()) if k.startswith("loss_level_"))
    return (
        f"step {m['step']}/{m['total_steps']}  loss {m['loss']:.4f}  [{levels}]  lr {m['lr']:.2e}  "
        f"{m['samples_per_s']:.1f} samples/s"
    )


def train_loop_per_worker(loop: dict) -> None:
    """The Ray Train worker function; ``loop`` holds the TrainConfig as a dict and the run's fixed sizes."""
    import ray.train
    import ray.train.torch
    from ray.train import Checkpoint

    from crops_ray.encoder import Encoder

    cfg = from_dict(TrainConfig, loop["train"])
    total_steps, micro_per_epoch, num_levels = loop["total_steps"], loop["micro_per_epoch"], loop["num_levels"]
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    threads = cfg.torch_threads or max(1, len(os.sched_getaffinity(0)) // max(1, ctx.get_local_world_size()))
    torch.set_num_threads(threads)
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    except ImportError:  # pragma: no cover
        pass

    device = ray.train.torch.get_device()
    checkpoint = ray.train.get_checkpoint()
    state: dict = {}
    if checkpoint:
        with checkpoint.as_directory() as folder:
            encoder = Encoder.from_pretrained(os.path.join(folder, MODEL_DIR))
            state = torch.load(os.path.join(folder, STATE_FILE), map_location="cpu", weights_only=True)
    else:
        encoder = Encoder.from_pretrained(cfg.model, shared=cfg.shared_towers, max_length=cfg.max_length)
    encoder.config.max_length = cfg.max_length
    frozen = cfg.doc_tower == "frozen"
    if frozen:
        encoder.freeze_docs()
    doc_cache = DocCache(encoder, cfg.doc_cache_size) if frozen else None
    if frozen and cfg.doc_embeddings:
        doc_cache.prefill(cfg.doc_embeddings, device)
    start_step = int(state.get("step", 0))
    miner = None
    if cfg.negatives.rule != "none":
        from crops_ray.negatives import NegativeMiner

        miner = NegativeMiner(cfg.negatives, cfg.temperature, total_steps, cfg.seed)
    mined = torch.zeros(2, dtype=torch.float64)  # (negatives mined, queries) since the last report
    seed_everything(stable_hash(f"{cfg.seed}/{rank}/{start_step}"))
    model = ray.train.torch.prepare_model(encoder)
    params = [p for p in encoder.parameters() if p.requires_grad]
    # fused: one kernel for every parameter (CPU and CUDA); the per-tensor loop took a third of a CPU step.
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(total_steps, cfg.warmup_ratio))
    if state:
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        # The schedule follows this run's total_steps (a resumed run may be given more steps than the first).
        factor = lr_lambda(total_steps, cfg.warmup_ratio)(scheduler.last_epoch)
        for group, base in zip(optimizer.param_groups, scheduler.base_lrs):
            group["lr"] = base * factor
    use_bf16 = cfg.precision == "bf16" or (cfg.precision == "auto" and device.type == "cuda")
    autocast = (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if use_bf16 else nullcontext
    queue = loop.get("progress")

    def report(metrics: dict, with_checkpoint: bool) -> None:
        if rank == 0 and queue is not None:
            queue.put(_format_progress(metrics) + ("  (checkpoint)" if with_checkpoint else ""))
        if not with_checkpoint or rank != 0:
            ray.train.report(metrics, checkpoint=None)
            return
        folder = tempfile.mkdtemp(prefix="crops-ckpt-")
        try:
            encoder.save(os.path.join(folder, MODEL_DIR))
            torch.save(
                {
                    "step": metrics["step"],
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
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

    if start_step >= total_steps:  # a finished run started again: report where it stands, train nothing
        if rank == 0 and queue is not None:
            queue.put(f"already at step {start_step} of {total_steps}: nothing to train")
        ray.train.report({**state.get("metrics", {}), "resumed_from_step": start_step}, checkpoint=None)
        return

    samples_per_step = cfg.batch_size * cfg.grad_accum * world
    batches = _batches(ray.train.get_dataset_shard("train"), cfg, rank, start_step * cfg.grad_accum, micro_per_epoch)
    model.train()
    t0 = t_steady = time.perf_counter()
    sums, counts = torch.zeros(num_levels, dtype=torch.float64), torch.zeros(num_levels, dtype=torch.float64)
    step = start_step
    while step < total_steps:
        for micro in range(cfg.grad_accum):
            rows = next(batches)
            batch = collate(rows, encoder, cfg.loss, device, tokenize_docs=not frozen)
            sync = nullcontext() if micro == cfg.grad_accum - 1 or world == 1 else model.no_sync()
            with sync:
                with autocast():
                    q, d = model(batch.query_inputs, batch.doc_inputs)
                if miner is not None:
                    picked = miner.negatives(encoder, rows, q, step)
                    batch = append_candidates(batch, [[(miner.ids[r], miner.texts[r]) for r in p] for p in picked])
                    mined += torch.tensor([sum(map(len, picked)), len(picked)], dtype=torch.float64)
                if frozen:
                    d = doc_cache(batch.doc_texts, device)
                out = in_batch_loss(q.float(), d.float(), batch, cfg.loss, cfg.temperature, num_levels)
                (out.backward / cfg.grad_accum).backward()
            sums += out.level_sums.cpu()
            counts += out.level_counts.cpu()
        # The gradient after DDP's all-reduce is the same on every rank, so every rank sees a non-finite norm
        # at the same step and they stop together; the last checkpoint stays the last good model.
        norm = torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm or float("inf"))
        lr = optimizer.param_groups[0]["lr"]
        if not torch.isfinite(norm):
            stopped = {"step": step + 1, "grad_norm": float(norm), "loss": float(out.backward.detach()), "lr": lr}
            if rank == 0 and queue is not None:  # the driver learns why through the progress queue
                queue.put({"nonfinite": stopped})
            ray.train.report(
                {**stopped, "total_steps": total_steps, "nonfinite": True, "resumed_from_step": start_step},
                checkpoint=None,
            )
            return
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        if step == start_step + 1:  # throughput counts from here: the first step also starts the data pipeline
            t_steady = time.perf_counter()
        checkpoint_now = step % cfg.checkpoint_every == 0 or step == total_steps
        if step % cfg.log_every == 0 or checkpoint_now:
            now = time.perf_counter()
            elapsed, steady = now - t0, now - t_steady
            rate = (
                (step - start_step - 1) * samples_per_step / steady
                if step > start_step + 1
                else samples_per_step / elapsed
            )
            metrics = {
                "step": step,
                "total_steps": total_steps,
                "loss": float(sums.sum() / counts.sum().clamp_min(1)),
                **{f"loss_level_{lv}": float(sums[lv] / counts[lv]) for lv in range(1, num_levels) if counts[lv] > 0},
                "lr": lr,
                "samples": (step - start_step) * samples_per_step,
                "elapsed_s": elapsed,
                "samples_per_s": rate,  # after the first step of this attempt (it also starts the data pipeline)
                "resumed_from_step": start_step,
                "world_size": world,
                **(
                    {"mined_per_query": float(mined[0] / mined[1].clamp_min(1)), "index_refreshes": miner.refreshes}
                    if miner is not None
                    else {}
                ),
            }
            mined.zero_()
            sums.zero_()
            counts.zero_()
            report(metrics, checkpoint_now)
