"""What the serve application serves and how each model is named: its settings and version strings.

:class:`ServeSettings` is the builder's argument list (``key=value`` on ``serve run``, ``args:`` in
serve/config.yaml, ``--config``/``--set`` in pipelines/serve.py); :func:`resolve_settings` validates it and makes
its paths absolute. :func:`content_version` and :func:`model_version` give the ``name@sha12`` strings that every
response carries.
"""

import dataclasses
import hashlib
import os
from typing import Any, Literal

from pydantic import Field

from crops_ray.config import config, from_dict
from crops_ray.layout import INDEX_JSON
from crops_ray.onnx_encoder import EncoderBackend
from crops_ray.plumbing import file_digest

DEFAULT_TOKEN_ENV = "CROPS_SERVE_TOKEN"


@config(kw_only=True)
class ServeSettings:
    """What the application serves and the limits on requests (the builder's arguments). A
    :func:`crops_ray.config.config` class like every stage's settings: values coerced and checked, unknown keys
    refused."""

    model: str = Field("minilm", description="encoder folder written by training, or 'minilm' (pretrained, zero-shot)")
    index: str = Field(description="index folder written by evaluation (OUT/index/)")
    allow_unverified_index: bool = Field(
        False,
        description="serve an index whose index.json names no document encoder on its dimension alone (refused by "
        "default: another model's index of the same dimension would answer wrong results)",
    )
    encoder_backend: EncoderBackend = Field(
        "onnx",
        description="the QueryEncoder's runtime: ONNX Runtime on the exported query tower (fp32: the same Recall@100 "
        "and NDCG@4 as PyTorch on the demo world, 3.4-4x faster per single query; int8 weights: faster, cosines "
        "move by up to 0.07), or PyTorch; exported once by the builder, cached (crops_ray/onnx_encoder.py)",
    )
    discriminator_model: str = Field("minilm", description="discriminator backbone (alias or Hugging Face folder)")
    calibration: str | None = Field(
        None,
        description="the gate's calibration JSON that build_data wrote (OUT/discriminator_calibration.json): it "
        "names the gate's weights and kind, so /v1/score serves the gate the engine used; required",
    )
    max_items: int = Field(256, ge=1, description="queries per /v1/encode, pairs per /v1/score")
    max_chars: int = Field(
        2000, ge=1, description="characters per text; longer is refused (422); within it the tokenizer truncates"
    )
    max_k: int = Field(1000, ge=1)
    default_k: int = Field(100, ge=1)
    topology: Literal["auto", "split", "fused"] = Field(
        "auto",
        description="split: the gateway calls three model deployments through handles, each scaling on its own; "
        "fused: one ingress deployment holds the three models (same batching), no hop between processes; auto: fused "
        "on a Ray of one node, split on a cluster (resolve_topology)",
    )
    batching: bool = Field(True, description="@serve.batch on the model deployments; False: one request per model call")
    max_batch_size: int = Field(16, ge=1, description="requests per batch")
    batch_wait_timeout_s: float = Field(0.005, ge=0)
    encode_batch_size: int = Field(64, ge=1, description="texts per forward pass inside a batch")
    threads: int | None = Field(
        None, ge=1, description="torch/FAISS threads per model replica; None: its num_cpus rounded, at least 1"
    )
    auth_token_env: str = Field(
        DEFAULT_TOKEN_ENV, description="bearer token required on /v1/* when this variable is set"
    )
    max_body_bytes: int = Field(
        1_048_576, ge=1024, description="request body limit; larger bodies get 413 before they are parsed"
    )
    max_in_flight: int = Field(
        256,
        ge=1,
        description="requests in progress per ingress replica; the next one gets a JSON 503 with Retry-After at once "
        "(the ingress deployment's max_ongoing_requests is set above it, so Ray's proxy queue is the last resort)",
    )
    request_timeout_s: float = Field(
        30.0,
        gt=0,
        description="a request not answered within this gets a JSON 408 and its work is cancelled; the proxy's "
        "http_options.request_timeout_s must be longer (pipelines/serve.py sets it 5 s longer)",
    )
    health_timeout_s: float = Field(
        5.0, gt=0, description="/healthz waits this long for every deployment, then answers 503 naming the wait"
    )
    # The search page at / (serve/page.py): for people comparing two retrievers, not for traffic.
    compare_model: str | None = Field(
        None,
        description="a second encoder the page shows beside `model` (e.g. the demo's DPR), loaded in the ingress "
        "replica; needs compare_index. None: the page shows one column",
    )
    compare_index: str | None = Field(
        None, description="compare_model's index folder, checked against compare_model as `index` is against `model`"
    )
    videos: str | None = Field(
        None,
        description="the corpus table the page takes each result's text from: a parquet file or a folder of shards "
        "with video_id and text (e.g. OUT/validated/videos); None: the page shows ids only",
    )
    qrels: str | None = Field(
        None,
        description="graded relevance (parquet: query, video_id, grade 0-3; e.g. WORLD/eval/qrels.parquet): the "
        "page shows each result's grade when the query is in it",
    )
    model_label: str | None = Field(None, description="the page's title for `model`; None: from its folder name")
    compare_label: str | None = Field(
        None, description="the page's title for compare_model; None: from its folder name (.../dpr/model -> dpr)"
    )


def resolve_settings(args: dict | ServeSettings) -> ServeSettings:
    """Validated settings with absolute paths (replicas may start elsewhere); clear errors for missing folders."""
    from crops_ray.plumbing import model_path

    s = args if isinstance(args, ServeSettings) else from_dict(ServeSettings, args)
    updates: dict[str, Any] = {}
    for key in ("model", "discriminator_model"):
        value = getattr(s, key)
        model_path(value)  # FileNotFoundError names what is neither a folder nor a packaged alias
        if os.path.isdir(value):
            updates[key] = os.path.abspath(value)
    if not os.path.exists(os.path.join(s.index, INDEX_JSON)):
        raise FileNotFoundError(f"index {s.index!r} is not an index folder (written by evaluation as OUT/index/)")
    updates["index"] = os.path.abspath(s.index)
    if s.calibration:
        if not os.path.exists(s.calibration):
            raise FileNotFoundError(f"calibration {s.calibration!r} does not exist")
        updates["calibration"] = os.path.abspath(s.calibration)
    if s.default_k > s.max_k:
        raise ValueError(f"default_k {s.default_k} > max_k {s.max_k}")
    updates.update(_page_paths(s))
    return dataclasses.replace(s, **updates)


def _page_paths(s: ServeSettings) -> dict[str, str]:
    """The search page's paths, absolute; a clear error for a missing one or a comparison model without its index."""
    from crops_ray.plumbing import model_path

    if bool(s.compare_model) != bool(s.compare_index):
        raise ValueError("compare_model and compare_index go together: the comparison retriever needs both")
    updates = {}
    if s.compare_model:
        model_path(s.compare_model)  # FileNotFoundError names what is neither a folder nor a packaged alias
        if os.path.isdir(s.compare_model):
            updates["compare_model"] = os.path.abspath(s.compare_model)
        if not os.path.exists(os.path.join(s.compare_index, INDEX_JSON)):
            raise FileNotFoundError(f"compare_index {s.compare_index!r} is not an index folder (OUT/index/)")
        updates["compare_index"] = os.path.abspath(s.compare_index)
    for key in ("videos", "qrels"):
        path = getattr(s, key)
        if path and not os.path.exists(path):
            raise FileNotFoundError(f"{key} {path!r} does not exist")
        if path:
            updates[key] = os.path.abspath(path)
    return updates


def column_label(model: str) -> str:
    """A model's name on the search page: its folder's name, or the folder above a folder named ``model``
    (``runs/demo/seed-0/dpr/model`` -> ``dpr``), or the alias (``minilm``)."""
    parts = os.path.normpath(model).split(os.sep)
    return parts[-2] if parts[-1] == "model" and len(parts) > 1 else parts[-1]


# ------------------------------------------------------------------------------------------------ versions


def content_version(folder: str, suffixes: tuple[str, ...]) -> str:
    """``name@sha12``: the folder's name and a hash of the contents of its files ending in ``suffixes``."""
    h = hashlib.sha256()
    for root, _, names in sorted(os.walk(folder)):
        for name in sorted(names):
            if name.endswith(suffixes):
                path = os.path.join(root, name)
                h.update(os.path.relpath(path, folder).encode())
                file_digest(path, h)
    return f"{os.path.basename(os.path.normpath(folder))}@{h.hexdigest()[:12]}"


def model_version(name_or_path: str, backend: str = "torch") -> str:
    """``name@sha12``, and ``+onnx`` / ``+onnx-int8`` when the model runs on ONNX Runtime (other numbers)."""
    from crops_ray.plumbing import model_path

    version = content_version(model_path(name_or_path), (".safetensors", ".bin", ".json"))
    version = version if os.path.isdir(name_or_path) else f"{name_or_path}@{version.split('@')[1]}"
    return version if backend == "torch" else f"{version}+{backend}"
