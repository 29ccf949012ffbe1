"""One step's loss over the global batch (:func:`in_batch_loss`), the learning-rate schedule and seeding."""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np
import torch

from crops_ray.losses import h_infonce, infonce_from_labels
from crops_ray.train.batch import Batch, in_batch_labels
from crops_ray.train.distributed import gather_columns, rank_and_world_size


@dataclass
class StepLoss:
    backward: torch.Tensor  # this rank's share; DDP's gradient average makes it the global mean's gradient
    level_sums: torch.Tensor  # [L] global sum of loss terms per label level (no grad)
    level_counts: torch.Tensor  # [L] global number of terms per level

    @property
    def value(self) -> float:
        return float(self.level_sums.sum() / self.level_counts.sum().clamp_min(1))


def in_batch_loss(
    q: torch.Tensor, d: torch.Tensor, batch: Batch, loss: str, temperature: float, num_levels: int
) -> StepLoss:
    """The loss of local queries ``q`` [B, dim] against the global batch of candidates (see the module docstring)."""
    d = d[: batch.n_docs]
    meta = torch.stack([batch.cand_query_key, batch.cand_video_key, batch.cand_label])
    all_docs, all_meta, _ = gather_columns(d, meta)
    scores = q @ all_docs.T
    labels = in_batch_labels(
        batch.row_query_key,
        batch.cand_video_key,
        batch.cand_label,
        batch.cand_row,
        all_meta[0],
        all_meta[1],
        all_meta[2],
    )
    if labels.numel() and int(labels.max()) >= num_levels:
        raise ValueError(f"a label {int(labels.max())} is >= num_levels={num_levels}")
    fn = h_infonce if loss == "h_infonce" else infonce_from_labels
    terms = fn(scores, labels, temperature=temperature, reduction="none")
    _, world = rank_and_world_size()
    with torch.no_grad():
        flat = labels.reshape(-1)
        stats = torch.zeros(2, num_levels, dtype=torch.float64, device=q.device)
        stats[0].index_add_(0, flat, terms.detach().reshape(-1).double())
        stats[1].index_add_(0, flat, (flat > 0).double())
        stats[:, 0] = 0
        if world > 1:
            import torch.distributed as dist

            dist.all_reduce(stats)
    total = stats[1].sum().clamp_min(1).to(terms.dtype)
    return StepLoss(backward=terms.sum() * world / total, level_sums=stats[0], level_counts=stats[1])


# ---------------------------------------------------------------------------------------------- schedule


def lr_lambda(total_steps: int, warmup_ratio: float):
    """Linear warmup then linear decay to 0, as a factor of the base lr for ``torch.optim.lr_scheduler.LambdaLR``.

    Not transformers' ``get_linear_schedule_with_warmup``: its first step runs at lr 0 (a step that moves nothing
    but AdamW's moments); here step ``s`` of the warmup runs at ``(s + 1) / warmup``. Every trained number in the
    README was measured with this schedule.
    """
    warmup = int(total_steps * warmup_ratio)

    def factor(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    return factor


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
