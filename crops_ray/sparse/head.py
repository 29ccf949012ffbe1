"""The sparse head: sentence-transformers' CSR auto-encoder over a tower's pooled embedding.

    heads = SparseHeads.fresh(input_dim=384, cfg=SparseConfig(), shared=False)
    codes = heads.codes("query", pooled)          # [n, dim], at most k non-zeros per row, unit length
    loss = heads.reconstruction_loss()           # CSR's L(k) + L(4k)/8 + beta * L_aux of the last training pass

A code is the auto-encoder's top-k latents (ReLU, so non-negative), L2-normalised: a dot product of codes is a
cosine, and the training loss scores codes exactly as it scores dense vectors (same temperature). Normalising
keeps the zeros, so a code is as sparse as its latents.

The auto-encoder is sentence-transformers' own ``SparseAutoEncoder`` (tied encoder and decoder weights, a
pre-bias, top-k and top-4k latents, the auxiliary top-``k_aux`` over latents dead for ``dead_threshold`` steps) and
the loss its ``CSRReconstructionLoss``: crops-ray writes neither again. Saved as sentence-transformers saves the
module (``config.json`` + ``model.safetensors``) in ``FOLDER/sparse`` (shared towers) or ``FOLDER/sparse_query`` and
``FOLDER/sparse_doc`` (separate towers); ``crops_encoder.json`` says the encoder is sparse.
"""

from __future__ import annotations

import copy
import os

import numpy as np
import torch
import torch.nn.functional as F

from crops_ray.config import config

SHARED_FOLDER, QUERY_FOLDER, DOC_FOLDER = "sparse", "sparse_query", "sparse_doc"


@config
class SparseConfig:
    """CSR's settings. ``dim`` 4x the embedding (1,536 over MiniLM's 384) and ``k`` 32: CSR's text settings at
    MiniLM's size. The fit settings are for :mod:`crops_ray.sparse.fit` (reconstruction only, no labels)."""

    dim: int = 1536  # latents
    k: int = 32  # non-zeros per text at most
    k_aux: int = 256  # latents in the auxiliary loss that revives dead ones
    dead_threshold: int = 30  # steps without firing before a latent counts as dead
    beta: float = 0.1  # weight of the auxiliary loss (sentence-transformers' CSRLoss default)
    fit_steps: int = 400
    fit_batch_size: int = 512
    fit_lr: float = 1e-3

    def __post_init__(self) -> None:
        if not 1 <= self.k <= self.dim:
            raise ValueError(f"SparseConfig.k must be in 1..dim={self.dim}, got {self.k}")
        if 4 * self.k > self.dim:
            raise ValueError(f"SparseConfig: CSR's L(4k) needs 4 * k <= dim; got k={self.k}, dim={self.dim}")
        if not 0 <= self.k_aux <= self.dim:
            raise ValueError(f"SparseConfig.k_aux must be in 0..dim={self.dim}, got {self.k_aux}")


def _auto_encoder(input_dim: int, cfg: SparseConfig):
    from sentence_transformers.sparse_encoder.modules import SparseAutoEncoder

    sae = SparseAutoEncoder(input_dim, hidden_dim=cfg.dim, k=cfg.k, k_aux=cfg.k_aux, dead_threshold=cfg.dead_threshold)
    with torch.no_grad():  # unit-norm dictionary atoms: the decoder is the encoder's transpose (tied)
        sae.encoder.weight.copy_(F.normalize(torch.randn_like(sae.encoder.weight), dim=1))
    return sae


class SparseHeads(torch.nn.Module):
    """One auto-encoder per tower (or one for both). Training passes through :meth:`forward_codes` keep their
    reconstruction terms until :meth:`reconstruction_loss` collects them."""

    def __init__(self, query, doc=None, beta: float = 0.1):
        super().__init__()
        self.query = query
        self.doc = doc  # None: the query's auto-encoder serves both towers
        self.beta = beta
        self._outputs: list[dict] = []
        self.last_terms: dict = {}  # the last reconstruction loss by term (L_k, L_4k / 8, beta * L_aux)

    @classmethod
    def fresh(cls, input_dim: int, cfg: SparseConfig, shared: bool) -> "SparseHeads":
        sae = _auto_encoder(input_dim, cfg)
        return cls(sae, None if shared else copy.deepcopy(sae), cfg.beta)

    @property
    def shared(self) -> bool:
        return self.doc is None

    @property
    def dim(self) -> int:
        return int(self.query.hidden_dim)

    @property
    def k(self) -> int:
        return int(self.query.k)

    def tower(self, which: str):
        return self.query if which == "query" or self.doc is None else self.doc

    def forward_codes(self, which: str, pooled: torch.Tensor) -> torch.Tensor:
        """Codes of ``pooled`` [n, input_dim]; in a training pass with gradients it also runs the decoder and keeps
        the reconstruction terms for :meth:`reconstruction_loss`."""
        sae = self.tower(which)
        if sae.training and torch.is_grad_enabled():
            features = sae({"sentence_embedding": pooled})
            self._outputs.append(features)
            latents = features["sentence_embedding"]
        else:
            prepared, _ = sae.prepare(pooled)
            latents, _ = sae.top_k(sae.encode_pre_act(prepared), sae.k, compute_aux=False)
        return F.normalize(latents, dim=-1)

    def reconstruction_loss(self) -> torch.Tensor | None:
        """CSR's reconstruction loss over the training passes since the last call (None if there were none)."""
        if not self._outputs:
            return None
        from sentence_transformers.sparse_encoder.losses import CSRReconstructionLoss

        outputs, self._outputs = self._outputs, []
        self.last_terms = CSRReconstructionLoss(model=None, beta=self.beta).compute_loss_from_embeddings(outputs)
        return sum(self.last_terms.values())

    @torch.no_grad()
    def codes(self, which: str, pooled: np.ndarray, batch_size: int = 4096):
        """scipy CSR ``[n, dim]`` codes of float32 ``pooled`` embeddings (inference: no decoder, no statistics)."""
        import scipy.sparse as sp

        was_training = self.training
        self.eval()
        device = next(self.parameters()).device
        try:
            blocks = [
                sp.csr_matrix(
                    self.forward_codes(which, torch.tensor(pooled[i : i + batch_size], device=device)).cpu().numpy()
                )
                for i in range(0, len(pooled), batch_size)
            ]
        finally:
            self.train(was_training)
        return sp.vstack(blocks, format="csr") if blocks else sp.csr_matrix((0, self.dim), dtype=np.float32)

    # ----------------------------------------------------------------------------------------- save and load

    def save(self, folder: str) -> None:
        targets = [(self.query, SHARED_FOLDER)] if self.shared else [(self.query, QUERY_FOLDER), (self.doc, DOC_FOLDER)]
        for sae, name in targets:
            os.makedirs(os.path.join(folder, name), exist_ok=True)
            sae.save(os.path.join(folder, name))

    @classmethod
    def load(cls, folder: str, shared: bool, beta: float = 0.1) -> "SparseHeads":
        from sentence_transformers.sparse_encoder.modules import SparseAutoEncoder

        if shared:
            return cls(SparseAutoEncoder.load(os.path.join(folder, SHARED_FOLDER)), None, beta)
        query = SparseAutoEncoder.load(os.path.join(folder, QUERY_FOLDER))
        return cls(query, SparseAutoEncoder.load(os.path.join(folder, DOC_FOLDER)), beta)

    def freeze(self, which: str) -> None:
        """No gradients and no dead-latent statistics for ``which``'s auto-encoder (a frozen document tower)."""
        if self.shared:
            raise ValueError("a shared sparse head is also the query's: freeze needs separate towers")
        sae = self.tower(which)
        for param in sae.parameters():
            param.requires_grad_(False)
        sae.eval()
