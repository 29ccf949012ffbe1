"""The dual encoder: query and document towers from ``transformers``, mean pooling, L2-normalised outputs.

    enc = Encoder.from_pretrained("minilm")            # or any local Hugging Face folder, or a trained model
    q = enc.encode_queries(["jaguar"], batch_size=64)   # float32 [n, dim], unit length
    d = enc.encode_docs(["Jaguar cubs in the wild"])
    enc.save("runs/model")

The towers share one transformer (``shared=True``, the default) or hold two copies initialised from the same
weights. A saved encoder is a Hugging Face folder that ``transformers`` loads alone:

- shared towers: ``FOLDER/{config.json, model.safetensors, tokenizer files, crops_encoder.json}``;
- separate towers: ``FOLDER/crops_encoder.json`` and ``FOLDER/query/``, ``FOLDER/doc/``, each a complete folder.

``crops_encoder.json`` records pooling, normalisation, ``max_length``, whether the towers are shared and whether
the encoder is sparse; an embedding is the attention-masked mean of the last hidden states, L2-normalised.

A sparse encoder (``sparse: true``, :mod:`crops_ray.sparse`) adds CSR heads over that pooled embedding: ``embed``
and ``encode_*`` then give codes of ``dim`` latents with at most ``k`` non-zeros (unit length), and
``encode_docs(pooled=True)`` the pooled embedding the heads read (what the corpus cache stores).

A BERT pooler (``pooler.*``) is not used by mean pooling; its parameters are frozen (kept and saved, never
trained) so distributed data parallel training sees no unused parameters.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import asdict, fields

import numpy as np
import torch
import torch.nn.functional as F

from crops_ray.config import config
from crops_ray.plumbing import encode_by_length, file_digest, model_path, weights_digest

CONFIG_NAME = "crops_encoder.json"
QUERY_FOLDER, DOC_FOLDER = "query", "doc"
POOLINGS = ("mean",)


@config
class EncoderConfig:
    pooling: str = "mean"
    normalize: bool = True
    max_length: int = 64  # tokens per text; longer texts are truncated
    shared: bool = True  # one transformer for both towers
    init: str = ""  # the folder the weights were first loaded from (information only)
    sparse: bool = False  # CSR heads over the pooled embedding (crops_ray.sparse)

    def __post_init__(self) -> None:
        if self.pooling not in POOLINGS:
            raise ValueError(f"EncoderConfig.pooling must be one of {POOLINGS}, got {self.pooling!r}")
        if self.max_length < 2:
            raise ValueError(f"EncoderConfig.max_length must be >= 2, got {self.max_length}")


def saved_config(folder: str) -> EncoderConfig | None:
    """The settings saved with an encoder (``crops_encoder.json``; unknown keys ignored), or None for a plain Hugging
    Face folder."""
    path = os.path.join(folder, CONFIG_NAME)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        data = json.load(f)
    known = {f.name for f in fields(EncoderConfig)}
    return EncoderConfig(**{k: v for k, v in data.items() if k in known})


def _load_transformer(folder: str) -> torch.nn.Module:
    from transformers import AutoModel

    model = AutoModel.from_pretrained(folder)
    for name, param in model.named_parameters():
        if name.startswith("pooler."):
            param.requires_grad_(False)
    return model


class Encoder(torch.nn.Module):
    """Query and document towers; ``forward(query_inputs, doc_inputs)`` returns both embeddings (for training)."""

    def __init__(
        self, query_model: torch.nn.Module, doc_model: torch.nn.Module, tokenizer, config: EncoderConfig, sparse=None
    ):
        super().__init__()
        self.config = config
        self.query_model = query_model
        # With shared towers the doc model IS the query model; registering it once keeps parameters unique.
        self.doc_model = None if config.shared else doc_model
        self.tokenizer = tokenizer
        self.sparse = sparse  # crops_ray.sparse.head.SparseHeads, or None for a dense encoder
        if config.sparse and sparse is None:
            raise ValueError("EncoderConfig.sparse is set but no sparse heads were given")

    def attach_sparse(self, heads) -> None:
        """Make this a sparse encoder with ``heads`` (:class:`crops_ray.sparse.head.SparseHeads`) over its towers."""
        if heads.shared != self.config.shared:
            raise ValueError(f"sparse heads shared={heads.shared}, but the towers are shared={self.config.shared}")
        self.sparse = heads
        self.config.sparse = True

    # ------------------------------------------------------------------------------------------ loading

    @classmethod
    def from_pretrained(cls, name_or_path: str, shared: bool | None = None, max_length: int | None = None) -> "Encoder":
        """Load a saved encoder, or initialise one from any Hugging Face folder or packaged alias ("minilm").

        ``shared`` and ``max_length`` apply when initialising; for a saved encoder they must match or be None
        (``max_length`` may change: it only affects tokenisation).
        """
        from transformers import AutoTokenizer

        folder = model_path(name_or_path)
        config = saved_config(folder)
        if config is not None:
            if shared is not None and shared != config.shared:
                raise ValueError(f"{folder}: saved with shared={config.shared}; cannot load it with shared={shared}")
            if max_length is not None:
                config.max_length = max_length
            if config.shared:
                query_model = _load_transformer(folder)
                doc_model, tok_folder = query_model, folder
            else:
                query_model = _load_transformer(os.path.join(folder, QUERY_FOLDER))
                doc_model = _load_transformer(os.path.join(folder, DOC_FOLDER))
                tok_folder = os.path.join(folder, QUERY_FOLDER)
            heads = None
            if config.sparse:
                from crops_ray.sparse.head import SparseHeads

                heads = SparseHeads.load(folder, config.shared)
            return cls(query_model, doc_model, AutoTokenizer.from_pretrained(tok_folder), config, heads)
        if not os.path.exists(os.path.join(folder, "config.json")):
            raise FileNotFoundError(f"{folder}: not a Hugging Face model folder (no config.json)")
        config = EncoderConfig(shared=True if shared is None else shared, init=folder)
        if max_length is not None:
            config.max_length = max_length
        query_model = _load_transformer(folder)
        doc_model = query_model if config.shared else copy.deepcopy(query_model)
        return cls(query_model, doc_model, AutoTokenizer.from_pretrained(folder), config)

    @staticmethod
    def output_dim(name_or_path: str) -> int:
        """The embedding size of a saved or pretrained encoder (a sparse one's latents), read from its config (no
        weights loaded)."""
        folder = model_path(name_or_path)
        config = saved_config(folder)
        if config is not None and config.sparse:
            from crops_ray.sparse.head import QUERY_FOLDER as SPARSE_QUERY
            from crops_ray.sparse.head import SHARED_FOLDER

            head = os.path.join(folder, SHARED_FOLDER if config.shared else SPARSE_QUERY, "config.json")
            with open(head) as f:
                return int(json.load(f)["hidden_dim"])
        query = os.path.join(folder, QUERY_FOLDER)
        with open(os.path.join(query if os.path.isdir(query) else folder, "config.json")) as f:
            return int(json.load(f)["hidden_size"])

    def save(self, folder: str) -> None:
        """Write a Hugging Face folder (safetensors + tokenizer) plus ``crops_encoder.json``."""
        os.makedirs(folder, exist_ok=True)
        if self.config.shared:
            targets = [(self.query_model, folder)]
        else:
            targets = [
                (self.query_model, os.path.join(folder, QUERY_FOLDER)),
                (self.doc_model, os.path.join(folder, DOC_FOLDER)),
            ]
        for model, target in targets:
            model.save_pretrained(target, safe_serialization=True)
            self.tokenizer.save_pretrained(target)
        if self.sparse is not None:
            self.sparse.save(folder)
        with open(os.path.join(folder, CONFIG_NAME), "w") as f:
            json.dump(asdict(self.config), f, indent=2)

    # --------------------------------------------------------------------------------------- embedding

    @property
    def device(self) -> torch.device:
        return next(self.query_model.parameters()).device

    @property
    def dim(self) -> int:
        """The width of ``embed``'s output: the sparse heads' latents, or the pooled embedding's size."""
        return self.sparse.dim if self.sparse is not None else self.pooled_dim

    @property
    def pooled_dim(self) -> int:
        return int(self.query_model.config.hidden_size)

    def tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        return dict(
            self.tokenizer(
                list(texts), padding=True, truncation=True, max_length=self.config.max_length, return_tensors="pt"
            )
        )

    def _tower(self, which: str) -> torch.nn.Module:
        return self.query_model if which == "query" or self.doc_model is None else self.doc_model

    def pooled(self, which: str, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """Pooled (and normalised) float32 embeddings of tokenised ``inputs`` through the ``which`` tower."""
        hidden = self._tower(which)(**inputs).last_hidden_state
        mask = inputs["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = ((hidden * mask).sum(1) / mask.sum(1).clamp_min(1.0)).float()
        return F.normalize(pooled, dim=-1) if self.config.normalize else pooled

    def project(self, which: str, pooled: torch.Tensor) -> torch.Tensor:
        """What ``embed`` makes of pooled embeddings: the ``which`` head's sparse codes, or ``pooled`` itself."""
        return pooled if self.sparse is None else self.sparse.forward_codes(which, pooled)

    def embed(self, which: str, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """The ``which`` tower's output for tokenised ``inputs``: the pooled embedding, or a sparse encoder's codes."""
        return self.project(which, self.pooled(which, inputs))

    def auxiliary_loss(self) -> torch.Tensor | float:
        """The loss terms a training step adds to the ranking loss: CSR's reconstruction loss of the sparse heads'
        passes since the last call (0.0 for a dense encoder)."""
        loss = None if self.sparse is None else self.sparse.reconstruction_loss()
        return 0.0 if loss is None else loss

    def tokenize_chunks(self, texts: list[str], chunk_size: int, device=None) -> tuple[list[dict], torch.Tensor]:
        """``texts`` tokenised in chunks of similar length, and the permutation that puts the chunks' embeddings back
        in the order of ``texts``: a chunk pads to its own longest text, not the batch's (a training batch's
        candidates range from a short title to ``max_length`` tokens)."""
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        chunks = [
            {k: v.to(device) for k, v in self.tokenize([texts[i] for i in order[start : start + chunk_size]]).items()}
            for start in range(0, len(order), chunk_size)
        ]
        inverse = torch.empty(len(order), dtype=torch.long)
        inverse[torch.tensor(order, dtype=torch.long)] = torch.arange(len(order))
        return chunks, inverse.to(device)

    def forward(self, query_inputs: dict[str, torch.Tensor], doc_inputs):
        """Query and document embeddings; ``doc_inputs=None`` runs the query tower only (a frozen doc tower).

        ``doc_inputs`` is one tokenised batch, or ``(chunks, inverse)`` from :meth:`tokenize_chunks`.
        """
        q = self.embed("query", query_inputs)
        if doc_inputs is None:
            return q, None
        if isinstance(doc_inputs, tuple):
            chunks, inverse = doc_inputs
            return q, torch.cat([self.embed("doc", chunk) for chunk in chunks])[inverse]
        return q, self.embed("doc", doc_inputs)

    def freeze_docs(self) -> None:
        """Freeze the document tower (separate towers only): no gradients, dropout off, embeddings that never change."""
        if self.doc_model is None:
            raise ValueError("freeze_docs needs separate towers (shared=False): a shared tower is also the query tower")
        for param in self.doc_model.parameters():
            param.requires_grad_(False)
        self.doc_model.eval()
        if self.sparse is not None:
            self.sparse.freeze("doc")

    @torch.no_grad()
    def _encode(self, which: str, texts: list[str], batch_size: int, pooled: bool = False) -> np.ndarray:
        was_training, device = self.training, self.device
        self.eval()
        run = self.pooled if pooled else self.embed

        def batch(chunk: list[str]) -> np.ndarray:
            return run(which, {k: v.to(device) for k, v in self.tokenize(chunk).items()}).cpu().numpy()

        try:
            return encode_by_length(texts, batch_size, self.pooled_dim if pooled else self.dim, batch)
        finally:
            self.train(was_training)

    def encode_queries(self, texts: list[str], batch_size: int = 64, pooled: bool = False) -> np.ndarray:
        """float32 ``[len(texts), dim]`` query embeddings (unit length unless ``normalize`` is off); ``pooled``: the
        pooled embedding even for a sparse encoder (what its heads read)."""
        return self._encode("query", texts, batch_size, pooled)

    def encode_docs(self, texts: list[str], batch_size: int = 64, pooled: bool = False) -> np.ndarray:
        """float32 ``[len(texts), dim]`` document embeddings (unit length unless ``normalize`` is off); ``pooled``:
        the pooled embedding even for a sparse encoder (what its heads read)."""
        return self._encode("doc", texts, batch_size, pooled)


def doc_head_fingerprint(model_dir: str) -> str | None:
    """A sparse encoder's document head, by its weights (None for a dense encoder). Two sparse models over one
    document tower share :func:`doc_tower_fingerprint` but not their codes: a sparse index records both."""
    from crops_ray.sparse.head import DOC_FOLDER as SPARSE_DOC
    from crops_ray.sparse.head import SHARED_FOLDER

    settings = saved_config(model_dir)
    if settings is None or not settings.sparse:
        return None
    h = hashlib.sha256()
    weights_digest(os.path.join(model_dir, SHARED_FOLDER if settings.shared else SPARSE_DOC), h)
    return h.hexdigest()[:16]


def doc_tower_fingerprint(model_dir: str, files: Sequence[str] = ()) -> str:
    """The document tower's weights and the settings that change its pooled embeddings, and the content of
    ``files``.

    Models with the same document tower (the zero-shot model and every run that froze it, sparse or not: a sparse
    head reads the pooled embedding, it does not change it) share one entry; a corpus copied elsewhere (another
    world folder with the same videos) keeps its entry, since files count by their bytes.
    """
    settings = saved_config(model_dir) or EncoderConfig()
    folder = model_dir if settings.shared else os.path.join(model_dir, DOC_FOLDER)
    pooled = {"pooling": settings.pooling, "normalize": settings.normalize, "max_length": settings.max_length}
    h = hashlib.sha256(repr(sorted(pooled.items())).encode())
    weights_digest(folder, h)
    for f in sorted(files, key=os.path.basename):
        h.update(os.path.basename(f).encode())
        if os.path.exists(f):
            file_digest(f, h)
        else:  # a remote URI: its name is all that is known without reading it
            h.update(f.encode())
    return h.hexdigest()[:16]


def shallow_copy(source: str, target: str, num_layers: int) -> str:
    """Save the first ``num_layers`` transformer layers of a BERT-like model (and its tokenizer) to ``target``.

    Still a real pretrained transformer, only shallower: for smoke runs and tests on small machines.
    """
    from transformers import AutoModel, AutoTokenizer

    folder = model_path(source)
    model = AutoModel.from_pretrained(folder)
    layers = getattr(getattr(model, "encoder", None), "layer", None)
    if layers is None:
        raise ValueError(f"{folder}: shallow_copy needs a BERT-like model with encoder.layer")
    if not 1 <= num_layers <= len(layers):
        raise ValueError(f"num_layers must be in 1..{len(layers)}, got {num_layers}")
    model.encoder.layer = layers[:num_layers]
    model.config.num_hidden_layers = num_layers
    model.save_pretrained(target, safe_serialization=True)
    AutoTokenizer.from_pretrained(folder).save_pretrained(target)
    return target
