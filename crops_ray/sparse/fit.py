"""The untrained sparse retriever: CSR's auto-encoder fitted to reconstruct the corpus's embeddings.

No labels are read: the inputs are the document tower's pooled embeddings of the corpus (the same encoding the
evaluation and the frozen-tower cache use), the loss is CSR's reconstruction loss alone. The result is an encoder
folder (the base transformer plus the fitted heads) that is both Table 1's "untrained sparse" row and the
initialisation DPR-sparse and CroPS-sparse train from, as the base MiniLM is for the dense methods.
"""

from __future__ import annotations

import copy
import json
import os
import time

import numpy as np
import torch

from crops_ray.sparse.head import SparseConfig, SparseHeads

FIT_FILE = "sparse_fit.json"


def fit_heads(pooled: np.ndarray, cfg: SparseConfig, shared: bool, seed: int = 0, progress=print) -> tuple:
    """(heads, fit summary): a fresh auto-encoder fitted on ``pooled`` [n, input_dim] by reconstruction alone.

    The pre-bias starts at the mean embedding (CSR and the k-sparse auto-encoders it builds on centre the input);
    separate towers start as two copies of the one fitted auto-encoder."""
    torch.manual_seed(seed)
    x = torch.tensor(np.asarray(pooled, dtype=np.float32))
    heads = SparseHeads.fresh(x.shape[1], cfg, shared=True)
    sae = heads.query
    with torch.no_grad():
        sae.pre_bias.copy_(x.mean(0))
    sae.train()
    optimizer = torch.optim.Adam(sae.parameters(), lr=cfg.fit_lr)
    generator = torch.Generator().manual_seed(seed)
    started, unexplained = time.time(), [relative_error(sae, x)]
    for step in range(cfg.fit_steps):
        batch = x[torch.randint(len(x), (min(cfg.fit_batch_size, len(x)),), generator=generator)]
        heads.forward_codes("query", batch)
        loss = heads.reconstruction_loss()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if (step + 1) % max(1, cfg.fit_steps // 4) == 0:
            unexplained.append(relative_error(sae, x))
            progress(
                f"sparse head fit: step {step + 1}/{cfg.fit_steps}, {unexplained[-1]:.1%} of the variance unexplained"
            )
    sae.eval()
    codes = heads.codes("doc", x.numpy())
    summary = {
        "steps": cfg.fit_steps,
        "embeddings": int(len(x)),
        "unexplained_before": unexplained[0],
        "unexplained": unexplained[-1],
        "unused_latents": float(1 - len(np.unique(codes.indices)) / heads.dim),
        "seconds": round(time.time() - started, 1),
    }
    if not shared:
        heads = SparseHeads(heads.query, copy.deepcopy(heads.query), cfg.beta)
    return heads, summary


@torch.no_grad()
def relative_error(sae, x: torch.Tensor, sample: int = 4096) -> float:
    """The share of the embeddings' variance that top-k reconstruction leaves unexplained (on the first
    ``sample`` rows): ||x - decode(top_k(x))||^2 / ||x - mean||^2."""
    was_training = sae.training
    sae.eval()
    x = x[:sample]
    prepared, info = sae.prepare(x)
    latents, _ = sae.top_k(sae.encode_pre_act(prepared), sae.k, compute_aux=False)
    error = float(((x - sae.decode(latents, info)) ** 2).sum() / ((x - x.mean(0)) ** 2).sum().clamp_min(1e-12))
    sae.train(was_training)
    return error


def sparse_init(
    base_model: str, corpus_embeddings: np.ndarray, out: str, cfg: SparseConfig, shared: bool, seed: int, progress=print
) -> str:
    """Write ``out``: the encoder ``base_model`` with CSR heads fitted on ``corpus_embeddings`` (its document
    tower's pooled encoding of the corpus). Returns ``out``; a finished folder (its ``sparse_fit.json``) is reused."""
    from crops_ray.encoder import Encoder

    if os.path.exists(os.path.join(out, FIT_FILE)):
        return out
    heads, summary = fit_heads(corpus_embeddings, cfg, shared, seed=seed, progress=progress)
    encoder = Encoder.from_pretrained(base_model, shared=shared)
    encoder.attach_sparse(heads)
    tmp = f"{out}.tmp-{os.getpid()}"
    encoder.save(tmp)
    with open(os.path.join(tmp, FIT_FILE), "w") as f:
        json.dump({**summary, "base_model": base_model, "seed": seed}, f, indent=2)
    os.replace(tmp, out)
    progress(
        f"sparse head fitted in {summary['seconds']}s: {summary['unexplained']:.1%} of the corpus embeddings' variance "
        f"unexplained by {heads.k} of {heads.dim} latents ({summary['unexplained_before']:.0%} before), "
        f"{summary['unused_latents']:.1%} of the latents unused"
    )
    return out
