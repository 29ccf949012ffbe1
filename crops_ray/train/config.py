"""The training settings (:class:`TrainConfig`), checked when they are made, and the names a run's files use."""

from __future__ import annotations

from dataclasses import field

from crops_ray.config import config
from crops_ray.hla import GroupConfig, LevelConfig
from crops_ray.losses import DEFAULT_TEMPERATURE
from crops_ray.negatives import NegativeConfig
from crops_ray.plumbing import DEFAULT_ENCODER

LOSSES = ("h_infonce", "infonce")
PRECISIONS = ("auto", "fp32", "bf16")
DEFAULT_RUN_NAME = "crops-train"
RUN_SETTINGS_FILE = "crops_run.json"
# Settings a resumed run must share with the run that wrote the checkpoints.
RESUME_KEYS = ("loss", "model", "shared_towers", "doc_tower")
DOC_TOWERS = ("train", "frozen")
MODEL_DIR, STATE_FILE, CHECKPOINT_PREFIX = "model", "train_state.pt", "step-"


@config
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


@config
class TrainJobConfig:
    """Everything ``pipelines/train.py`` configures; a YAML file has the sections ``train``, ``groups``, ``levels``."""

    train: TrainConfig = field(default_factory=TrainConfig)
    groups: GroupConfig = field(default_factory=GroupConfig)
    levels: LevelConfig = field(default_factory=LevelConfig)
