"""The three model deployments, each scaling on its own and batching concurrent requests.

    QueryEncoder    crops_ray.encoder.Encoder (query tower; or crops_ray.onnx_encoder.OnnxEncoder): texts -> unit-length
                    embeddings (a sparse model's: its codes, [n, latents] with at most k non-zeros)
    Discriminator   crops_ray.discriminator, calibrated theta(query, text) in [0, 1]
    Retriever       crops_ray.index.VectorIndex (FAISS), or a sparse model's crops_ray.sparse.index.SparseIndex (exact):
                    query embedding -> top-k video ids and scores

They share :class:`_ModelReplica`: ``@serve.batch`` merges concurrent requests into one forward pass or one FAISS
search, run one batch at a time on a worker thread, so the replica's event loop keeps queueing the next batch.
serve/app.py binds them behind the gateway. (Ray pickles them by module path: they must stay in an importable module.)
"""

import asyncio
import hashlib
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from ray import serve

from serve.settings import content_version, model_version


class _OneThread:
    """Runs model calls one at a time on a worker thread: Hugging Face fast tokenizers and the discriminator's
    embedding cache are not thread-safe, and the event loop stays free to queue requests meanwhile."""

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="model")

    async def run(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)


def _replica_threads(threads: int | None) -> int:
    """Torch/FAISS threads: as configured, else the replica's CPU share rounded, at least 1 (no oversubscription)."""
    import ray

    return threads or max(1, int(round(ray.get_runtime_context().get_assigned_resources().get("CPU", 1.0))))


class _ModelReplica:
    """What the three model deployments share. The model runs on one thread (:class:`_OneThread`); a subclass
    implements ``_run(requests) -> results`` (one result per request, all in one model call) and calls
    :meth:`_one` per request. With batching on, ``@serve.batch`` merges concurrent requests into one ``_run``;
    off, each request is its own call. ``info()`` reports how full the batches were (the tests check that
    concurrent requests share one)."""

    batches = requests = largest_batch = 0

    def _serve(self, batching: bool, max_batch_size: int, batch_wait_timeout_s: float) -> None:
        self.batching = batching
        self._thread = _OneThread()
        self._batched.set_max_batch_size(max_batch_size)
        self._batched.set_batch_wait_timeout_s(batch_wait_timeout_s)

    def _run(self, requests: list) -> list:
        raise NotImplementedError

    async def _one(self, request):
        if self.batching:
            return await self._batched(request)
        (result,) = await self._thread.run(self._run, [request])
        return result

    def batch_stats(self) -> dict:
        return {"batches": self.batches, "requests": self.requests, "largest_batch": self.largest_batch}


def _batched():
    """A fresh ``@serve.batch`` method per deployment class (its queue belongs to the decorated function), to be
    bound as ``_batched``: Serve recognises a method call by the function's name."""

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.005)
    async def _batched(self, requests: list) -> list:
        self.batches, self.requests = self.batches + 1, self.requests + len(requests)
        self.largest_batch = max(self.largest_batch, len(requests))
        return await self._thread.run(self._run, requests)

    return _batched


def split_rows(rows: np.ndarray, sizes: list[int]) -> list[np.ndarray]:
    """One model call's output rows back to the requests they came from (``sizes`` rows each)."""
    return np.split(rows, np.cumsum(sizes)[:-1])


def top_k(index, embeddings: np.ndarray, ks: list[int]) -> list[tuple[list[str], list[float]]]:
    """Each query's top ``ks[i]`` video ids and scores from one search (FAISS or sparse) at the largest k."""
    ids, scores = index.search(embeddings, max(ks))
    return [(row[:k], [float(s) for s in srow[: min(k, len(row))]]) for k, row, srow in zip(ks, ids, scores)]


class SparseOnnxQueries:
    """A sparse model's query codes with the ONNX backend: the exported query tower's pooled embedding (ONNX Runtime,
    the transformer: nearly all the work), then the model's query head on it (PyTorch: one [pooled, latents] product
    and a top-k). The same interface as :class:`crops_ray.encoder.Encoder` for the replica: ``encode_queries`` gives
    float32 [n, latents] codes, ``sparse`` the heads, ``dim`` the latents."""

    def __init__(self, onnx, model: str):
        from crops_ray.plumbing import model_path
        from crops_ray.sparse.head import SparseHeads

        self.onnx, self.config = onnx, onnx.config
        self.sparse = SparseHeads.load(model_path(model), onnx.config.shared)
        self.sparse.eval()
        self.dim = self.sparse.dim

    def encode_queries(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        return self.sparse.codes("query", self.onnx.encode_queries(texts, batch_size)).toarray()


def load_query_encoder(model: str, backend: str, threads: int | None):
    """The query encoder for ``backend`` (crops_ray.onnx_encoder.load_encoder), a sparse model's ONNX backend with its
    query head on top (:class:`SparseOnnxQueries`)."""
    from crops_ray.onnx_encoder import load_encoder

    encoder = load_encoder(model, backend, threads=threads)
    return SparseOnnxQueries(encoder, model) if backend != "torch" and encoder.config.sparse else encoder


def kind_of(encoder) -> str:
    """The encoder's kind: "sparse" with sparse heads (its codes are searched through a SparseIndex), else "dense"."""
    return "sparse" if getattr(encoder, "sparse", None) is not None else "dense"


@serve.deployment(name="QueryEncoder")
class QueryEncoder(_ModelReplica):
    """The query tower: a list of texts -> float32 [n, dim], unit length (exactly Encoder.encode_queries, or
    OnnxEncoder.encode_queries with ``backend`` "onnx" / "onnx-int8": the version then ends in ``+<backend>``). A
    sparse model's rows are its codes (:class:`SparseOnnxQueries` with ONNX)."""

    _batched = _batched()

    def __init__(
        self,
        model: str,
        batching: bool = True,
        max_batch_size: int = 16,
        batch_wait_timeout_s: float = 0.005,
        encode_batch_size: int = 64,
        threads: int | None = None,
        backend: str = "torch",
    ):
        import torch

        threads = _replica_threads(threads)
        torch.set_num_threads(threads)
        # ONNX: the export is in the cache (build_app made it); a replica on another node exports it once, locked.
        self.encoder = load_query_encoder(model, backend, threads)
        self.encoder.encode_queries(["warm-up"])  # lazy set-up (an ONNX session) at start-up, not in a request
        self.backend = backend
        self.version = model_version(model, backend)
        self.encode_batch_size = encode_batch_size
        self._serve(batching, max_batch_size, batch_wait_timeout_s)

    def info(self) -> dict:
        return {
            "model": self.version,
            "backend": self.backend,
            "kind": kind_of(self.encoder),
            "dim": self.encoder.dim,
            "max_length": self.encoder.config.max_length,
            **self.batch_stats(),
        }

    def _run(self, requests: list[list[str]]) -> list[np.ndarray]:
        emb = self.encoder.encode_queries([t for texts in requests for t in texts], batch_size=self.encode_batch_size)
        return split_rows(emb, [len(texts) for texts in requests])

    async def encode(self, texts: list[str]) -> tuple[np.ndarray, str]:
        return await self._one(texts), self.version


@serve.deployment(name="Discriminator")
class DiscriminatorDeployment(_ModelReplica):
    """theta(query, text) in [0, 1]: crops_ray.discriminator.Discriminator with a fixed calibration."""

    _batched = _batched()

    def __init__(
        self,
        model: str,
        calibration: dict,
        batching: bool = True,
        max_batch_size: int = 16,
        batch_wait_timeout_s: float = 0.005,
        threads: int | None = None,
    ):
        import torch

        from crops_ray.discriminator import Calibration, Discriminator, DiscriminatorConfig

        torch.set_num_threads(_replica_threads(threads))
        cal = Calibration(**calibration)
        self.disc = Discriminator(DiscriminatorConfig(model=model), cal, device="cpu")
        cal_id = hashlib.sha256(f"{cal.a!r}|{cal.b!r}".encode()).hexdigest()[:8]
        self.version = f"{model_version(self.disc.model_dir)}+cal{cal_id}"  # the weights loaded (the calibration's)
        self._serve(batching, max_batch_size, batch_wait_timeout_s)

    def info(self) -> dict:
        cal = self.disc.calibration
        return {
            "discriminator": self.version,
            "kind": cal.kind,
            "weights": self.disc.model_dir,
            "calibration": {
                "a": cal.a,
                "b": cal.b,
                "source": cal.source,
                "alpha": cal.alpha,
                "sources": cal.sources,
            },
            **self.batch_stats(),
        }

    def _run(self, requests: list[list[tuple[str, str]]]) -> list[np.ndarray]:
        pairs = [p for pairs in requests for p in pairs]
        theta = self.disc.theta([q for q, _ in pairs], [t for _, t in pairs])
        return split_rows(theta, [len(pairs) for pairs in requests])

    async def score(self, pairs: list[tuple[str, str]]) -> tuple[np.ndarray, str]:
        return await self._one(pairs), self.version


INDEX_FILES = (".faiss", ".npz", ".parquet", ".json")  # a FAISS index's files, and a sparse one's postings.npz


@serve.deployment(name="Retriever")
class Retriever(_ModelReplica):
    """Top-k video ids and inner-product scores for query embeddings (FAISS, or a sparse model's exact inverted
    index; one search per batch)."""

    _batched = _batched()

    def __init__(
        self,
        index: str,
        batching: bool = True,
        max_batch_size: int = 16,
        batch_wait_timeout_s: float = 0.005,
        threads: int | None = None,
        checked: str = "",
    ):
        import faiss

        from crops_ray.index import VectorIndex
        from crops_ray.sparse.index import SparseIndex, is_sparse_index

        faiss.omp_set_num_threads(_replica_threads(threads))
        # A sparse model's index ("kind": "sparse" in index.json; build_app matched the kinds) or a FAISS one.
        self.kind = "sparse" if is_sparse_index(index) else "dense"
        self.index = SparseIndex.load(index) if self.kind == "sparse" else VectorIndex.load(index)
        self.version = content_version(index, INDEX_FILES)
        self.checked = checked  # how build_app matched the index to the encoder
        self._serve(batching, max_batch_size, batch_wait_timeout_s)

    def info(self) -> dict:
        return {
            "index": self.version,
            "size": len(self.index.ids),
            "kind": self.kind,
            "dim": self.index.dim if self.kind == "sparse" else int(self.index.index.d),
            "checked": self.checked,
            **self.batch_stats(),
        }

    def _run(self, requests: list[tuple[np.ndarray, int]]) -> list[tuple[list[str], list[float]]]:
        return top_k(self.index, np.stack([q for q, _ in requests]), [k for _, k in requests])

    async def search(self, query: np.ndarray, k: int) -> tuple[list[str], list[float], str]:
        ids, scores = await self._one((query, k))
        return ids, scores, self.version
