"""The Ray Train worker function: restore (:mod:`crops_ray.train.state`), then steps with gradient accumulation,
clipping, progress and checkpoints (see :mod:`crops_ray.train` for what one step does)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import nullcontext

import torch

from crops_ray.hla import stable_hash
from crops_ray.train.batch import Batch, append_candidates, collate
from crops_ray.train.config import TrainConfig
from crops_ray.train.state import WorkerState, checkpoint, restore
from crops_ray.train.step import StepLoss, in_batch_loss

# --------------------------------------------------------------------------------------- the worker loop


def _batches(shard, cfg: TrainConfig, rank: int, start_micro: int, micro_per_epoch: int) -> Iterator[dict]:
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

    state = restore(loop)
    cfg = state.cfg
    if state.start_step >= state.total_steps:  # a finished run started again: report where it stands, train nothing
        state.to_driver(f"already at step {state.start_step} of {state.total_steps}: nothing to train")
        ray.train.report({**state.saved_metrics, "resumed_from_step": state.start_step}, checkpoint=None)
        return
    shard = ray.train.get_dataset_shard("train")
    batches = _batches(shard, cfg, state.rank, state.start_step * cfg.grad_accum, loop["micro_per_epoch"])
    state.model.train()
    state.started = state.steady_from = time.perf_counter()
    while state.step < state.total_steps:
        stopped = train_step(state, batches)
        if stopped is not None:
            report_stop(state, stopped)
            return
        # Throughput counts from here: the first step also starts the data pipeline.
        if state.step == state.start_step + 1:
            state.steady_from = time.perf_counter()
        checkpoint_now = state.step % cfg.checkpoint_every == 0 or state.step == state.total_steps
        if state.step % cfg.log_every == 0 or checkpoint_now:
            report(state, checkpoint_now)


def train_step(state: WorkerState, batches: Iterator[dict]) -> dict | None:
    """One optimizer step over ``grad_accum`` micro-batches: None, or when the gradient norm is not finite the
    stop's facts (step, grad_norm, loss, lr) and no step."""
    cfg = state.cfg
    for micro in range(cfg.grad_accum):
        out = _micro_step(state, next(batches), last=micro == cfg.grad_accum - 1)
    # The gradient after DDP's all-reduce is the same on every rank, so every rank sees a non-finite norm
    # at the same step and they stop together; the last checkpoint stays the last good model.
    norm = torch.nn.utils.clip_grad_norm_(state.params, cfg.max_grad_norm or float("inf"))
    state.lr = state.optimizer.param_groups[0]["lr"]
    if not torch.isfinite(norm):
        return {"step": state.step + 1, "grad_norm": float(norm), "loss": float(out.backward.detach()), "lr": state.lr}
    state.optimizer.step()
    state.scheduler.step()
    state.optimizer.zero_grad(set_to_none=True)
    state.step += 1
    return None


def _micro_step(state: WorkerState, rows: dict, last: bool) -> StepLoss:
    """Forward and backward of one micro-batch (a ``1/grad_accum`` share of the step's gradient); DDP all-reduces
    the gradient on the ``last`` micro-batch of the step only."""
    cfg, device = state.cfg, state.device
    batch = collate(rows, state.encoder, cfg.loss, device, tokenize_docs=state.doc_cache is None)
    sync = nullcontext() if last or state.world == 1 else state.model.no_sync()
    with sync:
        with state.autocast():
            q, d = state.model(batch.query_inputs, batch.doc_inputs)
        if state.miner is not None:
            batch = _add_mined_negatives(state, rows, q, batch)
        if state.doc_cache is not None:
            d = state.doc_cache(batch.doc_texts, device)
        out = in_batch_loss(q.float(), d.float(), batch, cfg.loss, cfg.temperature, state.num_levels)
        # What is backpropagated: the in-batch loss, plus a sparse encoder's CSR reconstruction loss of this
        # micro-batch's forward passes (0.0 for a dense encoder: crops_ray.encoder.Encoder.auxiliary_loss).
        loss = out.backward + state.encoder.auxiliary_loss()
        (loss / cfg.grad_accum).backward()
    state.level_sums += out.level_sums.cpu()
    state.level_counts += out.level_counts.cpu()
    return out


def _add_mined_negatives(state: WorkerState, rows: dict, q: torch.Tensor, batch: Batch) -> Batch:
    """``batch`` with the miner's negatives for each local query appended as candidates (label 0)."""
    miner = state.miner
    picked = miner.negatives(state.encoder, rows, q, state.step)
    batch = append_candidates(batch, [[(miner.ids[r], miner.texts[r]) for r in p] for p in picked])
    state.mined += torch.tensor([sum(map(len, picked)), len(picked)], dtype=torch.float64)
    return batch


def report(state: WorkerState, with_checkpoint: bool) -> None:
    """Report the steps since the last report as Ray Train metrics (rank 0 also prints a line), with a checkpoint
    when ``with_checkpoint``; the sums start again."""
    import ray.train

    metrics = _metrics(state)
    state.mined.zero_()
    state.level_sums.zero_()
    state.level_counts.zero_()
    state.to_driver(_format_progress(metrics) + ("  (checkpoint)" if with_checkpoint else ""))
    if with_checkpoint and state.rank == 0:
        checkpoint(state, metrics)
    else:
        ray.train.report(metrics, checkpoint=None)


def _metrics(state: WorkerState) -> dict:
    cfg, step, start_step = state.cfg, state.step, state.start_step
    sums, counts, mined = state.level_sums, state.level_counts, state.mined
    samples_per_step = cfg.batch_size * cfg.grad_accum * state.world
    now = time.perf_counter()
    elapsed, steady = now - state.started, now - state.steady_from
    rate = (step - start_step - 1) * samples_per_step / steady if step > start_step + 1 else samples_per_step / elapsed
    return {
        "step": step,
        "total_steps": state.total_steps,
        "loss": float(sums.sum() / counts.sum().clamp_min(1)),
        **{f"loss_level_{lv}": float(sums[lv] / counts[lv]) for lv in range(1, state.num_levels) if counts[lv] > 0},
        "lr": state.lr,
        "samples": (step - start_step) * samples_per_step,
        "elapsed_s": elapsed,
        "samples_per_s": rate,  # after the first step of this attempt (it also starts the data pipeline)
        "resumed_from_step": start_step,
        "world_size": state.world,
        **(
            {"mined_per_query": float(mined[0] / mined[1].clamp_min(1)), "index_refreshes": state.miner.refreshes}
            if state.miner is not None
            else {}
        ),
    }


def report_stop(state: WorkerState, stopped: dict) -> None:
    """Report a non-finite stop (:func:`train_step`'s facts); the driver learns why through the progress queue."""
    import ray.train

    state.to_driver({"nonfinite": stopped})
    ray.train.report(
        {**stopped, "total_steps": state.total_steps, "nonfinite": True, "resumed_from_step": state.start_step},
        checkpoint=None,
    )
