"""The discriminator's settings, with the paper's values as defaults (a 6-layer Transformer, alpha applied by the
caller)."""

from __future__ import annotations

from dataclasses import dataclass

KINDS = ("bi-encoder", "cross-encoder")


@dataclass
class DiscriminatorConfig:
    model: str = "minilm"  # a packaged alias (crops_ray.plumbing) or any local Hugging Face folder
    kind: str = "bi-encoder"
    max_length: int = 128  # word pieces per text; video titles and captions fit in ~70
    encode_batch_size: int = 64  # texts per forward pass
    batch_size: int = 512  # (query, text) pairs per Ray Data batch
    cache_size: int = 200_000  # texts whose embeddings an actor keeps (bi-encoder)
    # calibration
    calibration: str | None = None  # a calibration JSON to use as is
    labelled_pairs: str | None = None  # parquet/CSV with query, text, label (0/1) to fit the calibration on
    calibration_seed: int = 20_251_115  # seed of the embedded world that provides the default labelled set
    calibration_pairs: int = 3000  # labelled pairs per split (fit and held-out)
    # What "relevant" means in the world's labelled set: qrels grade >= this. 2 = relevant, not merely marginal
    # (grade 1: another subtopic of the same topic), since a kept candidate becomes a positive on par with a click.
    calibration_min_grade: int = 2
    # Fine-tune the bi-encoder on the labelled pairs before calibrating (the paper's discriminator is a trained
    # relevance model, not a zero-shot one): on half of the queries, BCE on a learned scale of the cosine. The
    # fine-tuned folder is cached and named in the calibration (``Calibration.model``), which scoring then loads.
    fine_tune: bool = False
    # One epoch: held-out precision / recall at alpha 0.988 / 0.988 against 0.992 / 0.985 for two (399 held-out
    # positives, world v2), at half of the ~3 minutes a fresh machine spends on it.
    fine_tune_epochs: int = 1
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
        for name in ("max_length", "encode_batch_size", "batch_size", "calibration_pairs", "pool_min", "pool_max"):
            if getattr(self, name) < 1:
                raise ValueError(f"discriminator {name} must be >= 1, got {getattr(self, name)}")
        if self.fine_tune and self.kind != "bi-encoder":
            raise ValueError(
                "discriminator fine_tune supports kind='bi-encoder' only (build_data: --no-fine-tune-discriminator)"
            )
        if self.pool_min > self.pool_max:
            raise ValueError(f"discriminator pool_min {self.pool_min} > pool_max {self.pool_max}")
