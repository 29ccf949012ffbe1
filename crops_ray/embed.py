"""Encoding the corpus with the document tower, as a Ray Data batch job (an actor pool, model loaded once).

The result is cached on disk keyed by the document tower's weights and the corpus files' content
(:func:`crops_ray.encoder.doc_tower_fingerprint`), so an encoder that did not change (the zero-shot baseline, a
rerun of the evaluation, the same world copied elsewhere) never encodes a corpus twice.
"""

from __future__ import annotations

import os
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from crops_ray.config import config
from crops_ray.plumbing import cache_dir, map_with_actors
from crops_ray.schema import count_rows


@config
class EmbedConfig:
    batch_size: int = 256  # rows per Ray Data batch handed to an actor
    encode_batch_size: int = 64  # texts per forward pass
    actors_max: int = 2
    actor_num_cpus: float = 1.0  # per actor; with actors_max = 1 on 2 CPUs this leaves a CPU for reads
    actor_num_gpus: float = 0.0  # set 1 on a GPU cluster
    cache_dir: str | None = None  # default: $CROPS_CACHE or ~/.cache/crops-ray, then /embeddings


class DocumentEncoder:
    """Ray Data callable class: a batch of videos -> their document embeddings."""

    def __init__(self, model_dir: str, encode_batch_size: int, threads: int):
        import torch

        from crops_ray.encoder import Encoder

        torch.set_num_threads(threads)  # as many as the actor's CPUs: actors must not oversubscribe cores
        self.encoder = Encoder.from_pretrained(model_dir)
        if torch.cuda.is_available():
            self.encoder.to("cuda")
        self.encoder.eval()
        self.encode_batch_size = encode_batch_size

    def __call__(self, batch: pa.Table) -> pa.Table:
        # Pooled: a sparse encoder's heads read this embedding (crops_ray.sparse), so one cache entry serves every
        # model with the same document tower, dense or sparse.
        emb = self.encoder.encode_docs(batch["text"].to_pylist(), batch_size=self.encode_batch_size, pooled=True)
        flat = pa.array(emb.reshape(-1), type=pa.float32())
        return pa.table(
            {"video_id": batch["video_id"], "embedding": pa.FixedSizeListArray.from_arrays(flat, emb.shape[1])}
        )


def encode_corpus(
    video_files: list[str], model_dir: str, cfg: EmbedConfig | None = None, progress=print
) -> tuple[list[str], np.ndarray]:
    """(video ids, float32 [n, dim] L2-normalised pooled embeddings), in a stable order (sorted by video id)."""
    from crops_ray.encoder import doc_tower_fingerprint
    from crops_ray.storage import key_lock

    cfg = cfg or EmbedConfig()
    folder = cfg.cache_dir or cache_dir(None, "embeddings", create=False)
    cache = os.path.join(folder, f"corpus-{doc_tower_fingerprint(model_dir, video_files)}.parquet")
    with key_lock(cache):  # two runs at once: one encodes, the other waits and reads its entry
        return _cached_or_encoded(cache, folder, video_files, model_dir, cfg, progress)


def _cached_or_encoded(
    cache: str, folder: str, video_files: list[str], model_dir: str, cfg: EmbedConfig, progress
) -> tuple[list[str], np.ndarray]:
    import ray.data

    from crops_ray.runtime import init_ray

    if os.path.exists(cache):
        progress(f"corpus embeddings from cache {cache}")
        t = pq.read_table(cache)
    else:
        init_ray()
        n = count_rows(video_files)
        progress(f"encoding the corpus ({n:,} videos) with {model_dir} on up to {cfg.actors_max} actor(s)")
        ds = ray.data.read_parquet(video_files, columns=["video_id", "text"])
        ds = ds.repartition(max(cfg.actors_max, n // (cfg.batch_size * 4)))  # small files arrive as one block
        ds = map_with_actors(
            ds,
            DocumentEncoder,
            constructor_args=(model_dir, cfg.encode_batch_size, max(1, int(cfg.actor_num_cpus))),
            batch_size=cfg.batch_size,
            num_cpus=cfg.actor_num_cpus,
            pool_min=1,
            pool_max=cfg.actors_max,
            num_gpus=cfg.actor_num_gpus,
        )
        t = pa.concat_tables(list(ds.iter_batches(batch_format="pyarrow", batch_size=None)))
        t = t.sort_by("video_id")
        os.makedirs(folder, exist_ok=True)
        tmp = f"{cache}.tmp-{os.getpid()}-{time.time_ns()}"  # a name of its own: two runs may encode at once
        pq.write_table(t, tmp)
        os.replace(tmp, cache)
    emb = t["embedding"].combine_chunks().flatten().to_numpy().reshape(t.num_rows, -1)
    return t["video_id"].to_pylist(), np.ascontiguousarray(emb, dtype=np.float32)
