"""The global batch across Ray Train workers: the gather that keeps gradients (like sentence-transformers'
``util/distributed.py``), in rank order so worker ``r``'s candidates follow those of workers ``0..r-1``."""

from __future__ import annotations

import torch

# ------------------------------------------------------------------------------------- the global batch


def rank_and_world_size() -> tuple[int, int]:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def gather_columns(docs: torch.Tensor, meta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
    """All workers' candidate embeddings (gradients kept) and metadata, in rank order; and this rank's offset.

    ``docs`` [C, dim] and ``meta`` [k, C] (integers) may have a different C on each rank: they are padded to the
    largest C for the collective and trimmed after it.
    """
    rank, world = rank_and_world_size()
    if world == 1:
        return docs, meta, 0
    import torch.distributed as dist
    from torch.distributed.nn.functional import all_gather

    count = torch.tensor([docs.shape[0]], dtype=torch.long, device=docs.device)
    counts = [torch.zeros_like(count) for _ in range(world)]
    dist.all_gather(counts, count)
    counts = [int(c) for c in counts]
    width = max(counts)
    pad = width - docs.shape[0]
    padded_docs = torch.nn.functional.pad(docs, (0, 0, 0, pad))
    padded_meta = torch.nn.functional.pad(meta, (0, pad)).contiguous()
    doc_parts = all_gather(padded_docs)
    meta_parts = [torch.empty_like(padded_meta) for _ in range(world)]
    dist.all_gather(meta_parts, padded_meta)
    all_docs = torch.cat([part[:c] for part, c in zip(doc_parts, counts)])
    all_meta = torch.cat([part[:, :c] for part, c in zip(meta_parts, counts)], dim=1)
    return all_docs, all_meta, sum(counts[:rank])
