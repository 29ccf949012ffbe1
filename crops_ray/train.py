"""Training the dual encoder on HLA groups with Ray Train (TorchTrainer, DDP: gloo on CPU, NCCL on GPU).

    result = train("runs/x/groups", "runs/x", TrainConfig(loss="h_infonce", num_workers=2))

**One step.** Every worker reads ``batch_size`` groups (queries) from its Ray Dataset shard and encodes their
queries and candidates. The score matrix of a worker is its local queries x the *global* candidates: the
candidates of all workers, gathered with ``torch.distributed.nn.functional.all_gather`` (which keeps gradients)
in rank order, so worker ``r``'s candidates occupy the columns after those of workers ``0..r-1``.
Labels: :func:`in_batch_labels` gives query ``i`` and candidate ``c`` the level of (query i, video c) whenever
the batch knows it (the candidate belongs to a group of the same query, or its video is in query i's own group)
and 0 otherwise: every other candidate of the global batch is an in-batch negative, and a duplicated query or
video never becomes a false negative. Each worker sums its loss terms and divides by the global number of terms
(times the world size, which DDP's gradient averaging divides out), so the step's gradient is the gradient of
the mean loss over the whole global batch, as in one process.

**Losses** (everything else equal): ``h_infonce`` (CroPS) uses the stored levels; ``infonce`` (the DPR
baseline) sees only search-log candidates, clicked = positive, other logged stages = hard negatives
(:func:`candidate_labels`).

**Mined hard negatives** (the ANCE, ADORE+STAR and TriSampler baselines: ``TrainConfig.negatives``, frozen document
tower only): after the queries are encoded, each worker's :class:`crops_ray.negatives.NegativeMiner` picks videos
from the model's own index for every local query (never a labelled positive) and :func:`append_candidates` adds
them as candidate columns at label 0, negatives to the loss like any other.

**Same number of steps on every rank.** The trainer fixes ``total_steps`` on the driver (``max_steps``, or
``epochs`` over the global dataset size); every rank cycles its shard (Ray splits the data into equal shards
and batches drop their remainder), so no rank stops early and DDP never waits on a missing peer.

**Optimisation**: AdamW, linear warmup then linear decay to 0, gradient clipping; ``grad_accum`` micro-batches
per step (each with its own in-batch negatives; DDP synchronises on the last); bf16 autocast on GPU (the scores
and the loss stay float32), fp32 on CPU; seeded per rank and step.

**Checkpoints** every ``checkpoint_every`` steps through ``ray.train.report(checkpoint=...)`` to
``storage/name``; a checkpoint is ``model/`` (a loadable encoder folder) plus ``train_state.pt`` (optimizer,
schedule, step). Running again with the same storage and name resumes from the latest checkpoint, and
``FailureConfig(max_failures)`` restarts dead workers from it. Resuming continues the step count, schedule and
optimizer state and the position in the epoch; with several workers Ray may hand blocks to shards in another
order, so only single-worker runs are bit-for-bit reproducible.

**Progress**: rank 0 reports ``step, loss, loss_level_<l>, samples_per_s, lr`` every ``log_every`` steps as
Ray Train metrics and sends a printed line to the driver.
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import tempfile
import threading
import time
from collections import OrderedDict
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field

import numpy as np
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import torch

from crops_ray.config import from_dict
from crops_ray.hla import GROUPS_SCHEMA, GroupConfig, LevelConfig, stable_hash
from crops_ray.losses import DEFAULT_TEMPERATURE, h_infonce, infonce_from_labels
from crops_ray.negatives import NegativeConfig
from crops_ray.plumbing import DEFAULT_ENCODER, model_path
from crops_ray.schema import STAGES, filesystem_and_path

LOSSES = ("h_infonce", "infonce")
PRECISIONS = ("auto", "fp32", "bf16")
DEFAULT_RUN_NAME = "crops-train"
RUN_SETTINGS_FILE = "crops_run.json"
# Settings a resumed run must share with the run that wrote the checkpoints.
RESUME_KEYS = ("loss", "model", "shared_towers", "doc_tower")
DOC_TOWERS = ("train", "frozen")
MODEL_DIR, STATE_FILE, CHECKPOINT_PREFIX = "model", "train_state.pt", "step-"


@dataclass
class TrainConfig:
    loss: str = "h_infonce"  # "h_infonce" (CroPS) or "infonce" (DPR baseline: clicks only)
    model: str = DEFAULT_ENCODER  # initial weights: a packaged alias or any local Hugging Face folder
    shared_towers: bool = True
    # "train": both towers learn (the paper). "frozen": the document tower keeps its initial weights (separate
    # towers) and only the query tower learns; each distinct text is then encoded once per worker, forward
    # only, and the corpus never needs re-encoding for evaluation: query-side fine-tuning, the CPU demo's choice.
    doc_tower: str = "train"
    doc_cache_size: int = 200_000  # texts whose frozen embeddings a worker keeps
    # With a frozen tower: parquet (text, embedding) made by that same tower (e.g. the evaluation's corpus
    # encoding) that fills every worker's cache before the first step; checked against fresh encodings.
    doc_embeddings: str | None = None
    max_length: int = 64
    temperature: float = DEFAULT_TEMPERATURE
    batch_size: int = 32  # groups (queries) per worker per micro-batch
    grad_accum: int = 1  # micro-batches per optimizer step (each with its own in-batch negatives)
    lr: float = 5e-5
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1  # linear warmup over this share of the steps, then linear decay to 0
    max_grad_norm: float = 1.0  # 0 disables clipping
    max_steps: int = 0  # 0: derived from epochs and the data size
    epochs: float = 1.0
    seed: int = 0
    precision: str = "auto"  # auto: bf16 autocast on GPU, fp32 on CPU
    num_workers: int = 1
    use_gpu: bool = False
    cpus_per_worker: float = 0.0  # 0: share the cluster's CPUs, leaving one for Ray Data's read tasks
    torch_threads: int = 0  # 0: this node's cores / workers on this node
    checkpoint_every: int = 100
    keep_checkpoints: int = 2
    max_failures: int = 1  # worker failures survived by restarting from the latest checkpoint
    log_every: int = 10
    shuffle_buffer: int = 256  # groups in each worker's seeded local shuffle buffer (0: off)
    negatives: NegativeConfig = field(default_factory=NegativeConfig)  # mined hard negatives (rule "none": off)

    def __post_init__(self) -> None:
        if isinstance(self.negatives, dict):  # TrainConfig(**asdict(cfg)) hands the section back as a dict
            self.negatives = NegativeConfig(**self.negatives)
        if self.negatives.rule != "none" and self.doc_tower != "frozen":
            raise ValueError(
                f"negatives rule {self.negatives.rule!r} mines the "
                "frozen document tower's index: set doc_tower='frozen'"
            )
        if self.loss not in LOSSES:
            raise ValueError(f"unknown loss {self.loss!r}; choose one of {list(LOSSES)}")
        if self.doc_tower not in DOC_TOWERS:
            raise ValueError(f"unknown doc_tower {self.doc_tower!r}; choose one of {list(DOC_TOWERS)}")
        if self.doc_tower == "frozen" and self.shared_towers:
            raise ValueError("doc_tower='frozen' needs shared_towers=False (a shared tower is also the query tower)")
        if self.doc_embeddings and self.doc_tower != "frozen":
            raise ValueError("doc_embeddings prefill a frozen document tower's cache: set doc_tower='frozen'")
        if self.precision not in PRECISIONS:
            raise ValueError(f"unknown precision {self.precision!r}; choose one of {list(PRECISIONS)}")
        positive = {
            "batch_size": self.batch_size,
            "grad_accum": self.grad_accum,
            "num_workers": self.num_workers,
            "checkpoint_every": self.checkpoint_every,
            "log_every": self.log_every,
            "max_length": self.max_length,
        }
        bad = {k: v for k, v in positive.items() if not isinstance(v, int) or v < 1}
        if bad:
            raise ValueError(f"TrainConfig: these settings must be integers >= 1: {bad}")
        if self.max_steps < 0 or self.epochs <= 0 or self.lr <= 0 or self.temperature <= 0:
            raise ValueError("TrainConfig: max_steps must be >= 0 and epochs, lr, temperature > 0")
        if not 0 <= self.warmup_ratio < 1:
            raise ValueError(f"TrainConfig.warmup_ratio must be in [0, 1), got {self.warmup_ratio}")


# ------------------------------------------------------------------------------------------------ labels


def candidate_labels(levels: list[int], sources: list[str], loss: str) -> tuple[list[int], list[int]]:
    """Which of a group's candidates the loss sees, and their labels: ``(kept indices, labels)``.

    ``h_infonce``: every candidate, labelled with its HLA level. ``infonce`` (DPR): only candidates logged by
    search (sources in :data:`STAGES`); ``clicked`` is the positive (1), the other stages hard negatives (0).
    """
    if loss == "h_infonce":
        return list(range(len(levels))), [int(v) for v in levels]
    if loss == "infonce":
        kept = [i for i, s in enumerate(sources) if s in STAGES]
        return kept, [1 if sources[i] == "clicked" else 0 for i in kept]
    raise ValueError(f"unknown loss {loss!r}; choose one of {list(LOSSES)}")


def in_batch_labels(
    row_query_key: torch.Tensor,
    own_video_key: torch.Tensor,
    own_label: torch.Tensor,
    own_row: torch.Tensor,
    col_query_key: torch.Tensor,
    col_video_key: torch.Tensor,
    col_label: torch.Tensor,
) -> torch.Tensor:
    """``[B, N]`` labels of ``B`` local queries against ``N`` global candidate columns.

    Column ``c`` gets its own label for query ``i`` when it belongs to a group of the same query; otherwise the
    level query ``i``'s own group gives that video (``own_*``: the local candidates, ``own_row`` their query);
    otherwise 0 (an in-batch negative).
    """
    same_query = row_query_key[:, None] == col_query_key[None, :]
    labels = torch.where(
        same_query, col_label[None, :], torch.zeros((), dtype=col_label.dtype, device=col_label.device)
    )
    if own_video_key.numel() and col_video_key.numel():
        by_video = torch.where(own_video_key[:, None] == col_video_key[None, :], own_label[:, None], 0)
        known = torch.zeros_like(labels).scatter_reduce(0, own_row[:, None].expand_as(by_video), by_video, "amax")
        labels = torch.maximum(labels, known)
    return labels


# ------------------------------------------------------------------------------------------------ batches


@dataclass
class Batch:
    query_inputs: dict
    doc_inputs: dict | None  # None when the document tower is frozen (then doc_texts go through a DocCache)
    row_query_key: torch.Tensor  # [B]
    cand_query_key: torch.Tensor  # [C] key of the query whose group holds the candidate
    cand_video_key: torch.Tensor  # [C]
    cand_label: torch.Tensor  # [C]
    cand_row: torch.Tensor  # [C] local row (query) of the candidate's group
    n_docs: int  # real candidates (C); a batch without any still encodes one empty text, sliced away
    doc_texts: list = field(default_factory=list)


def collate(rows: dict, encoder, loss: str, device: torch.device | str = "cpu", tokenize_docs: bool = True) -> Batch:
    """Tokenise one batch of groups (a dict of columns: query, texts, video_ids, levels, sources)."""
    queries = [str(q) for q in rows["query"]]
    docs, qkeys, vkeys, labels, owner = [], [], [], [], []
    for i, (query, texts, vids, levels, sources) in enumerate(
        zip(queries, rows["texts"], rows["video_ids"], rows["levels"], rows["sources"])
    ):
        kept, kept_labels = candidate_labels(list(levels), list(sources), loss)
        qkey = stable_hash(query)
        for j, label in zip(kept, kept_labels):
            docs.append(str(texts[j]))
            qkeys.append(qkey)
            vkeys.append(stable_hash(str(vids[j])))
            labels.append(label)
            owner.append(i)
    n_docs = len(docs)

    def tensor(values):
        return torch.tensor(values, dtype=torch.long, device=device)

    def tokens(texts):
        return {k: v.to(device) for k, v in encoder.tokenize(texts).items()}

    return Batch(
        query_inputs=tokens(queries),
        doc_inputs=tokens(docs or [""]) if tokenize_docs else None,
        row_query_key=tensor([stable_hash(q) for q in queries]),
        cand_query_key=tensor(qkeys),
        cand_video_key=tensor(vkeys),
        cand_label=tensor(labels),
        cand_row=tensor(owner),
        n_docs=n_docs,
        doc_texts=docs or [""],
    )


def append_candidates(batch: Batch, mined: list[list[tuple[str, str]]]) -> Batch:
    """``batch`` with extra candidates at label 0: ``mined[i]`` holds (video_id, text) pairs for local query ``i``
    (frozen document tower: their embeddings come from the DocCache, by text)."""
    owner = [i for i, pairs in enumerate(mined) for _ in pairs]
    if not owner:
        return batch
    device = batch.cand_label.device

    def tensor(values):
        return torch.tensor(values, dtype=torch.long, device=device)

    vids = [stable_hash(str(v)) for pairs in mined for v, _ in pairs]
    return Batch(
        query_inputs=batch.query_inputs,
        doc_inputs=None,
        row_query_key=batch.row_query_key,
        cand_query_key=torch.cat([batch.cand_query_key, batch.row_query_key[tensor(owner)]]),
        cand_video_key=torch.cat([batch.cand_video_key, tensor(vids)]),
        cand_label=torch.cat([batch.cand_label, torch.zeros(len(owner), dtype=batch.cand_label.dtype, device=device)]),
        cand_row=torch.cat([batch.cand_row, tensor(owner)]),
        n_docs=batch.n_docs + len(owner),
        doc_texts=batch.doc_texts[: batch.n_docs] + [str(t) for pairs in mined for _, t in pairs],
    )


class DocCache:
    """Frozen document-tower embeddings by text: each distinct text is encoded once (forward only, no grad)."""

    def __init__(self, encoder, max_size: int = 200_000, batch_size: int = 128):
        self.encoder, self.max_size, self.batch_size = encoder, max_size, batch_size
        self._cache: OrderedDict[str, torch.Tensor] = OrderedDict()
        self.encoded = 0  # texts actually run through the tower (cache misses)

    def __call__(self, texts: list[str], device) -> torch.Tensor:
        missing = [t for t in dict.fromkeys(texts) if t not in self._cache]
        if missing:
            tower = self.encoder.doc_model
            tower.eval()  # frozen: dropout stays off even while the query tower trains
            order = sorted(range(len(missing)), key=lambda i: len(missing[i]))
            with torch.no_grad():
                for start in range(0, len(order), self.batch_size):
                    chunk = [missing[i] for i in order[start : start + self.batch_size]]
                    inputs = {k: v.to(device) for k, v in self.encoder.tokenize(chunk).items()}
                    for text, emb in zip(chunk, self.encoder.embed("doc", inputs).float().cpu()):
                        self._cache[text] = emb
            self.encoded += len(missing)
            while len(self._cache) > self.max_size:
                self._cache.popitem(last=False)
        for t in texts:
            self._cache.move_to_end(t)
        return torch.stack([self._cache[t] for t in texts]).to(device)

    def prefill(self, path: str, device, check: int = 4, atol: float = 1e-4) -> int:
        """Load (text, embedding) rows into the cache; refuse them unless ``check`` of them match fresh encodings."""
        from crops_ray import storage

        table = storage.read_table(path, columns=["text", "embedding"])
        texts = table["text"].to_pylist()
        emb = table["embedding"].combine_chunks().flatten().to_numpy().reshape(table.num_rows, -1)
        if emb.shape[1] != self.encoder.dim:
            raise ValueError(
                f"doc_embeddings {path}: dimension {emb.shape[1]}, but the document tower's is {self.encoder.dim}"
            )
        sample = sorted(range(len(texts)), key=lambda i: stable_hash(texts[i]))[:check]
        if sample:
            fresh = DocCache(self.encoder, batch_size=self.batch_size)([texts[i] for i in sample], device).cpu().numpy()
            worst = float(np.abs(fresh - emb[sample]).max())
            if worst > atol:
                raise ValueError(
                    f"doc_embeddings {path} were not made by this document tower (max difference {worst:.2e} "
                    f"on {len(sample)} texts; same weights and max_length?)"
                )
        for text, row in zip(texts[-self.max_size :], emb[-self.max_size :]):
            self._cache[text] = torch.from_numpy(np.array(row, dtype=np.float32))
        return len(texts)


# ------------------------------------------------------------------------------------- the global batch


def _world() -> tuple[int, int]:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def gather_columns(docs: torch.Tensor, meta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
    """All workers' candidate embeddings (gradients kept) and metadata, in rank order; and this rank's offset.

    ``docs`` [C, dim] and ``meta`` [k, C] (integers) may have a different C on each rank: they are padded to the
    largest C for the collective and trimmed after it.
    """
    rank, world = _world()
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
    _, world = _world()
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
    warmup = int(total_steps * warmup_ratio)

    def factor(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    return factor


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


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
    _seed_everything(stable_hash(f"{cfg.seed}/{rank}/{start_step}"))
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


def _drain(queue, stop: threading.Event, progress, events: list) -> None:
    """Print the workers' progress lines; keep the structured events (a non-finite stop) in ``events``."""
    from ray.util.queue import Empty

    while True:
        try:
            message = queue.get(timeout=0.5)
            if isinstance(message, dict):
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
) -> dict:
    """Train on the groups parquet at ``groups``; write ``out/model/`` and ``out/train_metrics.json`` (a local
    folder); return the metrics.

    ``storage`` (default ``out/checkpoints``; a local path or a URI such as ``s3://bucket/runs``) and ``name``
    identify the run: the same pair resumes it. Ray must be initialised (``crops_ray.runtime.init_ray``).
    """
    import pyarrow.compute as pc
    import ray
    import ray.data
    from ray.train import CheckpointConfig, DataConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer
    from ray.util.queue import Queue

    started = time.perf_counter()
    fs, path = filesystem_and_path(groups.rstrip("/"))
    if fs.get_file_info(path).type == pafs.FileType.NotFound:
        raise FileNotFoundError(f"{groups}: no such groups file or folder")
    levels = pq.read_table(path, filesystem=fs, columns=["levels"]) if _has_columns(fs, path) else None
    if levels is None:
        raise ValueError(
            f"{groups}: not a groups table {GROUPS_SCHEMA.names}; build it with crops_ray.hla.build_groups"
        )
    if levels.num_rows == 0:
        raise ValueError(f"{groups}: no training groups")
    total_steps, micro_per_epoch = plan_steps(levels.num_rows, cfg)
    num_levels = int(pc.max(pc.list_flatten(levels["levels"])).as_py()) + 1
    del levels

    model_path(cfg.model)  # fail here, with a clear message, on a model that is not there
    if cfg.doc_embeddings and "://" not in cfg.doc_embeddings:  # workers run in other working directories
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
        ),
        datasets={"train": dataset},
        dataset_config=data_config,
    )
    progress(
        f"training {cfg.loss} on {groups}: {total_steps} steps x {cfg.batch_size * cfg.grad_accum * cfg.num_workers} "
        f"groups (global batch), {cfg.num_workers} worker(s), storage {storage}/{name}"
    )
    stop = threading.Event()
    events: list[dict] = []
    printer = threading.Thread(target=_drain, args=(queue, stop, progress, events), daemon=True)
    printer.start()
    try:
        result = trainer.fit()
    finally:
        stop.set()
        printer.join(timeout=10)
        ray.kill(queue.actor)
    # Ray Train V2 keeps no metrics reported without a checkpoint, so the workers' stop arrives as a queue event.
    stopped = next((e["nonfinite"] for e in events if "nonfinite" in e), None)
    if stopped:
        raise NonFiniteTrainingError(
            f"training stopped at step {stopped['step']}: the gradient norm is {stopped['grad_norm']} (loss "
            f"{stopped['loss']}, lr {stopped['lr']:.3g}); no model was saved. Lower --lr or raise the warm-up; the "
            f"last good checkpoint (if any) is under {storage}/{name}."
        )
    if result.checkpoint is None:
        raise RuntimeError(f"training under {storage}/{name} finished without a checkpoint")
    final = dict(result.metrics or {})

    model_dir = os.path.join(out, MODEL_DIR)
    with result.checkpoint.as_directory() as folder:
        tmp = model_dir + ".tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(os.path.join(folder, MODEL_DIR), tmp)
        shutil.rmtree(model_dir, ignore_errors=True)
        os.replace(tmp, model_dir)
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
        "checkpoint": result.checkpoint.path,
        "config": asdict(cfg),
    }
    with open(os.path.join(out, "train_metrics.json"), "w") as f:
        json.dump(metrics, f, indent=2)
    return metrics


class NonFiniteTrainingError(RuntimeError):
    """The loss or gradient became NaN or infinite: training stops instead of saving a broken model."""


def _ordered_ingest():
    """Ray Data ingest options that keep the file order, so a seeded single-worker run repeats exactly."""
    from ray.data import DataContext, ExecutionOptions

    current = DataContext.get_current().execution_options
    return ExecutionOptions(
        resource_limits=current.resource_limits, preserve_order=True, verbose_progress=current.verbose_progress
    )


@dataclass
class TrainJobConfig:
    """Everything ``pipelines/train.py`` configures; a YAML file has the sections ``train``, ``groups``, ``levels``."""

    train: TrainConfig = field(default_factory=TrainConfig)
    groups: GroupConfig = field(default_factory=GroupConfig)
    levels: LevelConfig = field(default_factory=LevelConfig)
