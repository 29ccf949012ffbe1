"""The discriminator's settings, with the paper's values as defaults (a 6-layer Transformer, alpha applied by the
caller), trained and calibrated on the logs it gates unless told otherwise."""

from __future__ import annotations

from dataclasses import field

from crops_ray.config import config
from crops_ray.discriminator.log_labels import LogLabelConfig

KINDS = ("bi-encoder", "cross-encoder")


@config
class DiscriminatorConfig:
    # The gate's model: a cross-encoder fine-tuned from this backbone (default), or a bi-encoder (cosine).
    model: str = "minilm"  # a packaged alias (crops_ray.plumbing) or any local Hugging Face folder
    kind: str = "cross-encoder"
    # The bi-encoder behind query-to-query similarity (P1's reformulation gate) and a bi-encoder gate.
    similarity_model: str = "minilm"
    max_length: int = 128  # word pieces per text (bi-encoder) or per (query, text) pair (cross-encoder)
    # Score with the cross-encoder's int8 form (PyTorch dynamic quantisation, CPU), one pair per forward pass: int8
    # activations are scaled per input tensor, so in a batch a pair's theta would depend on its neighbours (measured:
    # a mean logit change of 0.39 between batches of 64 and 7). One pair at a time it is 1.15x fp32's batched pairs/s
    # on one thread and slower on two (bench/gate.py), at a held-out AUC of 0.974 against fp32's 0.982: off.
    # The calibration records it, so every scorer of that calibration (engine, P3, Serve) runs alike.
    int8: bool = False
    encode_batch_size: int = 64  # texts or pairs per forward pass
    batch_size: int = 512  # (query, text) pairs per Ray Data batch
    cache_size: int = 200_000  # texts whose embeddings an actor keeps (bi-encoder)
    # Where theta comes from, in order: a calibration JSON used as is (its weights named inside it), the user's
    # labelled pairs (parquet/CSV with query, text, label 0/1: the model trained on half of their queries,
    # calibrated on the other half), else the search log's own labels (log_labels; trained on half of the
    # queries, calibrated on the held-out queries' mined candidates). Never a generated world.
    calibration: str | None = None
    labelled_pairs: str | None = None
    log_labels: LogLabelConfig = field(default_factory=LogLabelConfig)
    # Train the gate's weights on the labels (a cross-encoder's head is new, so it needs this unless ``model`` is
    # already a trained sequence-classification folder; a bi-encoder without it is the packaged one, zero-shot).
    fine_tune: bool = True
    # One epoch of BCE on the log's labels (small world: 3,900 pairs, ~110 s on 2 cores); trained folders are cached
    # under a key of their labels' content and settings. Chosen on the log's own held-out labels (README: the gate).
    fine_tune_epochs: int = 1
    max_train_pairs: int = 8000  # a seeded sample of the labels beyond this (about 4 minutes an epoch on 2 cores)
    fine_tune_lr: float = 3e-5
    fine_tune_batch_size: int = 32
    fine_tune_seed: int = 0
    cache_dir: str | None = None  # default: $CROPS_CACHE or ~/.cache/crops-ray
    # Ray Data actor pool: 0.5 CPU each so two actors leave a CPU for read and write tasks on 2 cores.
    num_cpus: float = 0.5
    num_gpus: float | None = None  # None: 1 per actor when the cluster has GPUs, else 0
    pool_min: int = 2  # a fixed pool: Ray Data's autoscaler was seen leaving a 1..2 pool at one actor (one core idle)
    pool_max: int = 2
    max_restarts: int = 3  # a dead actor is replaced ...
    max_task_retries: int = 3  # ... and the batch it held is retried
    torch_threads: int | None = None  # None: max(1, round(num_cpus)) inside an actor

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"discriminator kind {self.kind!r} is not one of {KINDS}")
        for name in (
            "max_length",
            "encode_batch_size",
            "batch_size",
            "pool_min",
            "pool_max",
            "fine_tune_epochs",
            "max_train_pairs",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"discriminator {name} must be >= 1, got {getattr(self, name)}")
        if isinstance(self.log_labels, dict):
            self.log_labels = LogLabelConfig(**self.log_labels)
        if self.pool_min > self.pool_max:
            raise ValueError(f"discriminator pool_min {self.pool_min} > pool_max {self.pool_max}")
