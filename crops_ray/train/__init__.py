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

Where each part lives: ``config.py`` (:class:`TrainConfig`), ``batch.py`` (labels, collation, the frozen tower's
cache), ``distributed.py`` (the gradient-keeping gather), ``step.py`` (the loss of one step, the schedule),
``loop.py`` (the worker function) and ``driver.py`` (:func:`train`).
"""

from crops_ray.train.batch import Batch, DocCache, append_candidates, candidate_labels, collate, in_batch_labels
from crops_ray.train.config import DEFAULT_RUN_NAME, DOC_TOWERS, LOSSES, PRECISIONS, TrainConfig, TrainJobConfig
from crops_ray.train.distributed import gather_columns
from crops_ray.train.driver import NonFiniteTrainingError, plan_steps, train
from crops_ray.train.step import StepLoss, in_batch_loss, lr_lambda

__all__ = [
    "DEFAULT_RUN_NAME",
    "DOC_TOWERS",
    "LOSSES",
    "PRECISIONS",
    "Batch",
    "DocCache",
    "NonFiniteTrainingError",
    "StepLoss",
    "TrainConfig",
    "TrainJobConfig",
    "append_candidates",
    "candidate_labels",
    "collate",
    "gather_columns",
    "in_batch_labels",
    "in_batch_loss",
    "lr_lambda",
    "plan_steps",
    "train",
]
