"""Encoding the corpus with the document tower, as a Ray Data batch job (an actor pool, model loaded once).

The result is cached on disk keyed by the model folder's weights and the corpus files, so an encoder that did
not change (the zero-shot baseline, a rerun of the evaluation) is never encoded twice.
"""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from crops_ray.schema import count_rows


@dataclass
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
        emb = self.encoder.encode_docs(batch["text"].to_pylist(), batch_size=self.encode_batch_size)
        flat = pa.array(emb.reshape(-1), type=pa.float32())
        return pa.table(
            {"video_id": batch["video_id"], "embedding": pa.FixedSizeListArray.from_arrays(flat, emb.shape[1])}
        )


def _doc_tower(model_dir: str) -> tuple[str, dict]:
    """The folder holding the document tower's weights, and the settings that change its embeddings."""
    import json

    from crops_ray.encoder import CONFIG_NAME, DOC_FOLDER, EncoderConfig

    settings = EncoderConfig()
    path = os.path.join(model_dir, CONFIG_NAME)
    if os.path.exists(path):
        with open(path) as f:
            saved = json.load(f)
        settings = EncoderConfig(**{k: v for k, v in saved.items() if k in EncoderConfig.__dataclass_fields__})
    folder = model_dir if settings.shared else os.path.join(model_dir, DOC_FOLDER)
    return folder, {"pooling": settings.pooling, "normalize": settings.normalize, "max_length": settings.max_length}


def _weights_digest(folder: str, h) -> None:
    """Feed ``h`` the tensors of a model folder by name and value, not the file's bytes: the same weights saved
    again (another safetensors header, another tokenizer file layout) give the same digest."""
    from safetensors import safe_open

    files = sorted(n for n in os.listdir(folder) if n.endswith(".safetensors"))
    if not files:  # a PyTorch .bin folder: its bytes
        for name in sorted(n for n in os.listdir(folder) if n.endswith(".bin")):
            with open(os.path.join(folder, name), "rb") as f:
                for chunk in iter(lambda: f.read(1 << 22), b""):
                    h.update(chunk)
        return
    for name in files:
        with safe_open(os.path.join(folder, name), framework="numpy") as f:
            for key in sorted(k for k in f.keys() if not k.endswith("position_ids")):  # a buffer some files keep
                value = f.get_tensor(key)
                h.update(f"{key}:{value.dtype}:{value.shape}".encode())
                h.update(np.ascontiguousarray(value).tobytes())


def _fingerprint(model_dir: str, files: list[str]) -> str:
    """Keyed by the document tower's weights and settings (not its path), and the corpus files.

    Models with the same document tower (the zero-shot model and every run that froze it) share one entry.
    """
    folder, settings = _doc_tower(model_dir)
    h = hashlib.sha256(repr(sorted(settings.items())).encode())
    _weights_digest(folder, h)
    for f in files:
        h.update(f.encode())
        if os.path.exists(f):
            st = os.stat(f)
            h.update(f"{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def encode_corpus(
    video_files: list[str], model_dir: str, cfg: EmbedConfig | None = None, progress=print
) -> tuple[list[str], np.ndarray]:
    """(video ids, float32 [n, dim] L2-normalised embeddings), in a stable order (sorted by video id)."""
    from crops_ray.storage import key_lock

    cfg = cfg or EmbedConfig()
    cache_dir = cfg.cache_dir or os.path.join(
        os.environ.get("CROPS_CACHE", os.path.expanduser("~/.cache/crops-ray")), "embeddings"
    )
    cache = os.path.join(cache_dir, f"corpus-{_fingerprint(model_dir, video_files)}.parquet")
    with key_lock(cache):  # two runs at once: one encodes, the other waits and reads its entry
        return _cached_or_encoded(cache, cache_dir, video_files, model_dir, cfg, progress)


def _cached_or_encoded(
    cache: str, cache_dir: str, video_files: list[str], model_dir: str, cfg: EmbedConfig, progress
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
        ds = ds.map_batches(
            DocumentEncoder,
            fn_constructor_args=(model_dir, cfg.encode_batch_size, max(1, int(cfg.actor_num_cpus))),
            batch_format="pyarrow",
            batch_size=cfg.batch_size,
            compute=ray.data.ActorPoolStrategy(min_size=1, max_size=cfg.actors_max),
            num_cpus=cfg.actor_num_cpus,
            num_gpus=cfg.actor_num_gpus,
        )
        t = pa.concat_tables(list(ds.iter_batches(batch_format="pyarrow", batch_size=None)))
        t = t.sort_by("video_id")
        os.makedirs(cache_dir, exist_ok=True)
        tmp = f"{cache}.tmp-{os.getpid()}-{time.time_ns()}"  # a name of its own: two runs may encode at once
        pq.write_table(t, tmp)
        os.replace(tmp, cache)
    emb = t["embedding"].combine_chunks().flatten().to_numpy().reshape(t.num_rows, -1)
    return t["video_id"].to_pylist(), np.ascontiguousarray(emb, dtype=np.float32)
