"""The discriminator in Ray Data: a callable class over an actor pool (the model loads once per actor, batches are
scored together, a GPU is used when the cluster has one, a dead actor is restarted and its batch retried)."""

from __future__ import annotations

from dataclasses import asdict

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from crops_ray.discriminator.calibration import Calibration
from crops_ray.discriminator.config import DiscriminatorConfig
from crops_ray.discriminator.model import Discriminator
from crops_ray.plumbing import actor_threads, map_with_actors


class DiscriminatorScorer:
    """Ray Data callable class: theta for the rows of a batch, the model loaded once per actor.

    Adds ``score_column`` (float32) = theta(query_column, text_column) for the rows where ``mask_column`` is
    true (all rows when it is None; the raw score instead of theta with ``raw``, for a calibration fitted
    afterwards); other rows get null. With ``gate_column`` (a list of strings per row) it also adds
    ``gate_score``: the best bi-encoder cosine between the query and any string of that list.
    """

    def __init__(
        self,
        cfg: DiscriminatorConfig,
        calibration: dict,
        query_column: str = "query",
        text_column: str = "text",
        score_column: str = "score",
        mask_column: str | None = None,
        gate_column: str | None = None,
        raw: bool = False,
    ):
        actor_threads(cfg.torch_threads, cfg.num_cpus)
        self.disc = Discriminator(cfg, Calibration(**calibration))
        self.q, self.t, self.s, self.mask, self.gate = query_column, text_column, score_column, mask_column, gate_column
        self.score = self.disc.raw_scores if raw else self.disc.theta

    def __call__(self, batch: pa.Table) -> pa.Table:
        n = batch.num_rows
        rows = (
            np.arange(n)
            if self.mask is None
            else np.flatnonzero(pc.fill_null(batch[self.mask], False).to_numpy(zero_copy_only=False))
        )
        queries, texts = batch[self.q].to_pylist(), batch[self.t].to_pylist()
        score = np.full(n, np.nan, dtype=np.float32)
        if len(rows):
            score[rows] = self.score([queries[i] for i in rows], [texts[i] or "" for i in rows])
        valid = np.zeros(n, dtype=bool)
        valid[rows] = True
        batch = batch.append_column(self.s, pa.array(score, pa.float32(), mask=~valid))
        if self.gate:
            lists = batch[self.gate].to_pylist()
            left = [queries[i] for i in range(n) for _ in (lists[i] or ())]
            right = [o for i in range(n) for o in (lists[i] or ())]
            raw = self.disc.similarity(left, right) if left else np.empty(0, np.float32)
            gate = np.full(n, np.nan, dtype=np.float32)
            pos = 0
            for i in range(n):
                k = len(lists[i] or ())
                if k:
                    gate[i] = raw[pos : pos + k].max()
                pos += k
            batch = batch.append_column("gate_score", pa.array(gate, pa.float32(), mask=np.isnan(gate)))
        return batch


def score_dataset(ds, cfg: DiscriminatorConfig, calibration: Calibration, rows: int | None = None, **columns):
    """``ds`` with theta added by an actor pool of :class:`DiscriminatorScorer` (see its arguments).

    With ``rows`` (the input's size) the input is first split into enough blocks for every actor of the pool:
    a few small parquet files are read as one block, which one actor would score alone.
    """
    pool_max = cfg.pool_max
    if rows:
        ds = ds.repartition(max(2 * pool_max, min(1024, -(-rows // (4 * cfg.batch_size)))))
    return map_with_actors(
        ds,
        DiscriminatorScorer,
        constructor_kwargs={"cfg": cfg, "calibration": asdict(calibration), **columns},
        batch_size=cfg.batch_size,
        num_cpus=cfg.num_cpus,
        pool_min=cfg.pool_min,
        pool_max=pool_max,
        num_gpus=cfg.num_gpus,
        max_restarts=cfg.max_restarts,
        max_task_retries=cfg.max_task_retries,
    )
