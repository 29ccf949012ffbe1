"""An ONNX Runtime backend for the encoder: the same ``encode_queries`` / ``encode_docs`` contract as
:class:`crops_ray.encoder.Encoder`, on a transformer exported to ONNX (fp32, or int8 by dynamic quantisation).

    enc = OnnxEncoder.from_pretrained("runs/demo/model", quantize=True, threads=1)   # exported once, cached
    q = enc.encode_queries(["jaguar"], batch_size=64)                                 # float32 [n, dim], unit length
    export_onnx("runs/demo/model", "runs/demo/onnx", quantize=True)                   # or offline, to a folder

Each tower is exported on its own (TorchScript exporter, ``dynamo=False``: no onnxscript needed offline) with
dynamic batch and sequence axes; the graph returns the last hidden states, and pooling (the attention-masked mean)
and L2 normalisation run in numpy as in ``Encoder.embed``. The tokenizer and ``max_length`` come from the model
folder (``crops_encoder.json``). Exports are cached under ``cache_dir(None, "onnx", "<tower weights>-<fp32|int8>")``
keyed by the tower's weights, so a tower is exported once: a shared-tower model has one entry, and a frozen document
tower shares the zero-shot model's. The int8 entry is quantised from the fp32 one.
"""

from __future__ import annotations

import json
import os
import time
from typing import TYPE_CHECKING, Literal, get_args

import numpy as np

from crops_ray.plumbing import cache_dir, encode_by_length, model_path, weights_fingerprint

if TYPE_CHECKING:  # crops_ray.encoder imports torch: this module imports without it (EvalConfig checks backends)
    from crops_ray.encoder import EncoderConfig

EncoderBackend = Literal["torch", "onnx", "onnx-int8"]  # the encoder runtimes Serve and evaluation accept
BACKENDS = get_args(EncoderBackend)
INPUTS = ("input_ids", "attention_mask", "token_type_ids")
OPSET = 17
MODEL_FILE = "model.onnx"


def check_backend(backend: str) -> str:
    if backend not in BACKENDS:
        raise ValueError(f"encoder backend must be one of {BACKENDS}, got {backend!r}")
    return backend


def _encoder_config(folder: str) -> EncoderConfig:
    """The saved encoder's settings, or the defaults for a plain Hugging Face folder (as Encoder.from_pretrained)."""
    from crops_ray.encoder import EncoderConfig, saved_config

    return saved_config(folder) or EncoderConfig(init=folder)


def _towers(folder: str) -> tuple[EncoderConfig, dict[str, str]]:
    """The settings and each tower's Hugging Face folder ("query", "doc") of a model folder (from model_path)."""
    from crops_ray.encoder import DOC_FOLDER, QUERY_FOLDER

    config = _encoder_config(folder)
    if config.shared:
        towers = {"query": folder, "doc": folder}
    else:
        towers = {"query": os.path.join(folder, QUERY_FOLDER), "doc": os.path.join(folder, DOC_FOLDER)}
    for tower in towers.values():
        if not os.path.exists(os.path.join(tower, "config.json")):
            raise FileNotFoundError(f"{tower}: not a Hugging Face model folder (no config.json)")
    return config, towers


# ------------------------------------------------------------------------------------------------ export


def export_tower(tower_dir: str, out_path: str, quantize: bool = False) -> str:
    """One transformer folder -> ``out_path`` (ONNX, last hidden states; int8 weights if ``quantize``)."""
    if quantize:
        fp32 = f"{out_path}.fp32-{os.getpid()}.onnx"
        try:
            _quantize(export_tower(tower_dir, fp32, quantize=False), out_path)
        finally:
            if os.path.exists(fp32):
                os.remove(fp32)
        return out_path
    import warnings

    import torch
    from transformers import AutoModel, AutoTokenizer

    if not os.path.exists(os.path.join(tower_dir, "config.json")):
        raise FileNotFoundError(f"{tower_dir}: not a Hugging Face model folder (no config.json)")
    # Eager attention: SDPA's mask shortcuts are Python branches a trace would freeze.
    model = AutoModel.from_pretrained(tower_dir, attn_implementation="eager").eval()
    tokenizer = AutoTokenizer.from_pretrained(tower_dir)
    names = [n for n in INPUTS if n in tokenizer.model_input_names]

    class LastHidden(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, *args):
            return self.inner(**dict(zip(names, args))).last_hidden_state

    example = tokenizer(["an example query", "one"], padding=True, return_tensors="pt")  # a padded row: a live mask
    axes = {n: {0: "batch", 1: "sequence"} for n in names}
    os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # TorchScript tracer and deprecation notices
        torch.onnx.export(
            LastHidden(model),
            tuple(example[n] for n in names),
            out_path,
            dynamo=False,
            input_names=names,
            output_names=["last_hidden_state"],
            dynamic_axes={**axes, "last_hidden_state": {0: "batch", 1: "sequence"}},
            opset_version=OPSET,
        )
    return out_path


def _quantize(fp32_path: str, out_path: str) -> str:
    """Dynamic int8 quantisation of the MatMul weights (activations quantised per batch at run time).

    Per channel, MatMul only (the embedding Gather stays fp32), 7-bit range: on the demo world's queries this kept
    the cosine to fp32 at >= 0.985 where the defaults (per tensor, all ops) gave 0.94; ``reduce_range`` is
    ONNX Runtime's advice for x86 CPUs without VNNI, where 8-bit u8s8 products can saturate."""
    import logging

    from onnxruntime.quantization import QuantType, quantize_dynamic

    def not_the_preprocessing_advice(record: logging.LogRecord) -> bool:  # logged on the root logger each call
        return "pre-processing before quantization" not in record.getMessage()

    root = logging.getLogger()
    root.addFilter(not_the_preprocessing_advice)
    try:
        quantize_dynamic(
            fp32_path,
            out_path,
            weight_type=QuantType.QInt8,
            per_channel=True,
            reduce_range=True,
            op_types_to_quantize=["MatMul"],
        )
    finally:
        root.removeFilter(not_the_preprocessing_advice)
    return out_path


def export_onnx(model_dir: str, out_dir: str, quantize: bool = False, towers=("query", "doc")) -> dict[str, str]:
    """Export a model's towers to ``out_dir/{query,doc}.onnx`` (a shared model: ``query.onnx`` only, used for both).

    Returns tower -> file. Offline use (``python -m crops_ray.onnx_encoder MODEL OUT [--int8]``); Serve and
    evaluation go through the cache (:func:`cached_tower`)."""
    _, folders = _towers(model_path(model_dir))
    out: dict[str, str] = {}
    for which in towers:
        same = next((w for w in out if folders[w] == folders[which]), None)
        out[which] = (
            out[same] if same else export_tower(folders[which], os.path.join(out_dir, f"{which}.onnx"), quantize)
        )
    return out


def cached_tower(tower_dir: str, quantize: bool = False, cache: str | None = None) -> str:
    """The tower's ONNX file from the cache, exported first if missing (once: concurrent callers wait on a lock)."""
    from crops_ray.storage import key_lock

    entry = os.path.join(cache_dir(cache, "onnx"), f"{weights_fingerprint(tower_dir)}-{'int8' if quantize else 'fp32'}")
    path = os.path.join(entry, MODEL_FILE)
    with key_lock(entry):
        if not os.path.exists(path):
            os.makedirs(entry, exist_ok=True)
            tmp = os.path.join(entry, f"tmp-{os.getpid()}-{time.time_ns()}.onnx")
            if quantize:  # from the fp32 entry (exported first if need be)
                _quantize(cached_tower(tower_dir, False, cache), tmp)
            else:
                export_tower(tower_dir, tmp)
            os.replace(tmp, path)
    return path


# ------------------------------------------------------------------------------------------------ the encoder


class OnnxEncoder:
    """``encode_queries`` / ``encode_docs`` on ONNX Runtime sessions (one per tower, created on first use)."""

    def __init__(
        self, towers: dict[str, str], tokenizer, config: EncoderConfig, quantize=False, threads=None, cache=None
    ):
        self.towers, self.tokenizer, self.config = towers, tokenizer, config
        self.quantize, self.threads, self.cache = quantize, threads, cache
        self.backend = "onnx-int8" if quantize else "onnx"
        self._sessions: dict[str, object] = {}  # tower -> session (shared towers: one session)
        # The pooled embedding's width: a sparse model's latents (Encoder.output_dim) come from its heads, not ONNX.
        with open(os.path.join(towers["query"], "config.json")) as f:
            self.dim = int(json.load(f)["hidden_size"])

    @classmethod
    def from_pretrained(
        cls, name_or_path: str, quantize: bool = False, threads: int | None = None, cache: str | None = None
    ) -> "OnnxEncoder":
        """A saved encoder or a Hugging Face folder / alias, as ``Encoder.from_pretrained``; ``threads``: ONNX
        Runtime's intra-op threads (None: its default, all cores)."""
        from transformers import AutoTokenizer

        config, towers = _towers(model_path(name_or_path))
        return cls(towers, AutoTokenizer.from_pretrained(towers["query"]), config, quantize, threads, cache)

    def session(self, which: str):
        """The ``which`` tower's session, opened on first use; shared towers share one."""
        if which not in self._sessions:
            same = next((s for w, s in self._sessions.items() if self.towers[w] == self.towers[which]), None)
            # cached_tower hashes the weights: once per tower, never per call.
            self._sessions[which] = same or self._open(cached_tower(self.towers[which], self.quantize, self.cache))
        return self._sessions[which]

    def _open(self, path: str):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.inter_op_num_threads = 1
        if self.threads:
            opts.intra_op_num_threads = self.threads
        return ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])

    def _encode(self, which: str, texts: list[str], batch_size: int) -> np.ndarray:
        if not len(texts):
            return np.zeros((0, self.dim), np.float32)  # no session opened for nothing
        session = self.session(which)
        names = [i.name for i in session.get_inputs()]

        def batch(chunk: list[str]) -> np.ndarray:
            enc = self.tokenizer(
                chunk, padding=True, truncation=True, max_length=self.config.max_length, return_tensors="np"
            )
            feed = {n: enc[n].astype(np.int64) for n in names}
            (hidden,) = session.run(None, feed)
            mask = feed["attention_mask"][..., None].astype(np.float32)
            pooled = (hidden * mask).sum(1) / np.maximum(mask.sum(1), 1.0)
            if self.config.normalize:
                pooled /= np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
            return pooled

        return encode_by_length(texts, batch_size, self.dim, batch)

    def encode_queries(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        """float32 ``[len(texts), dim]`` query embeddings (unit length unless ``normalize`` is off)."""
        return self._encode("query", texts, batch_size)

    def encode_docs(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        """float32 ``[len(texts), dim]`` document embeddings (unit length unless ``normalize`` is off)."""
        return self._encode("doc", texts, batch_size)


def load_encoder(model: str, backend: str = "torch", threads: int | None = None):
    """An encoder for ``backend`` ("torch": ``Encoder`` in eval mode; "onnx"/"onnx-int8": :class:`OnnxEncoder`)."""
    if check_backend(backend) == "torch":
        from crops_ray.encoder import Encoder

        encoder = Encoder.from_pretrained(model)
        encoder.eval()
        return encoder
    return OnnxEncoder.from_pretrained(model, quantize=backend == "onnx-int8", threads=threads)


if __name__ == "__main__":
    import argparse

    p = argparse.ArgumentParser(description="Export an encoder's towers to ONNX (offline)")
    p.add_argument("model", help="encoder folder or alias ('minilm')")
    p.add_argument("out", help="folder for query.onnx (and doc.onnx for separate towers)")
    p.add_argument("--int8", action="store_true", help="dynamic int8 quantisation of the weights")
    a = p.parse_args()
    print(json.dumps(export_onnx(a.model, a.out, quantize=a.int8), indent=2))
