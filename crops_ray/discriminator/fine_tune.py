"""Fine-tuning the bi-encoder discriminator on labelled pairs before it is calibrated (the paper's discriminator is a
trained relevance model, not a zero-shot one)."""

from __future__ import annotations

import time

import numpy as np
import pyarrow as pa

from crops_ray import storage
from crops_ray.discriminator.config import DiscriminatorConfig


def fine_tune(cfg: DiscriminatorConfig, fit: pa.Table, out: str, progress=print) -> str:
    """Fine-tune the bi-encoder ``cfg.model`` on labelled (query, text, label) pairs; returns the saved folder.

    Loss: binary cross-entropy on ``s * cosine + t`` (s, t learned alongside), mean pooling as in scoring.
    The folder is written through :class:`crops_ray.storage.Output` (a crash leaves no half-written model).
    """
    import torch

    from crops_ray.encoder import Encoder

    if cfg.kind != "bi-encoder":  # DiscriminatorConfig refuses fine_tune for other kinds; this is called directly too
        raise ValueError(
            "fine_tune supports the bi-encoder discriminator; fine-tune a cross-encoder with its own tools"
        )
    torch.manual_seed(cfg.fine_tune_seed)
    enc = Encoder.from_pretrained(cfg.model, shared=True, max_length=cfg.max_length)
    enc.train()
    scale, bias = torch.nn.Parameter(torch.tensor(10.0)), torch.nn.Parameter(torch.tensor(-5.0))
    params = [p for p in enc.parameters() if p.requires_grad] + [scale, bias]
    opt = torch.optim.AdamW(params, lr=cfg.fine_tune_lr, fused=True)  # one kernel for all parameters
    queries, texts = fit["query"].to_pylist(), fit["text"].to_pylist()
    labels = torch.tensor(fit["label"].to_numpy(), dtype=torch.float32)
    bs = cfg.fine_tune_batch_size
    started = last = time.time()
    steps, done = cfg.fine_tune_epochs * -(-len(queries) // bs), 0
    for epoch in range(cfg.fine_tune_epochs):
        order = np.random.default_rng(cfg.fine_tune_seed + epoch).permutation(len(queries))
        total = 0.0
        for start in range(0, len(order), bs):
            if time.time() - last > 20:  # a few minutes on 2 cores: a line every ~20 s with what is left
                last, spent = time.time(), time.time() - started
                progress(
                    f"fine-tuning the discriminator: step {done}/{steps}, {spent:.0f}s, about "
                    f"{spent / done * (steps - done):.0f}s left"
                )
            done += 1
            idx = order[start : start + bs]
            q = enc.embed("query", enc.tokenize([queries[i] for i in idx]))
            d = enc.embed("doc", enc.tokenize([texts[i] for i in idx]))
            loss = torch.nn.functional.binary_cross_entropy_with_logits(scale * (q * d).sum(-1) + bias, labels[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
        progress(
            f"fine-tuning the discriminator: epoch {epoch + 1}/{cfg.fine_tune_epochs}, loss {total / len(order):.4f} "
            f"({time.time() - started:.0f}s)"
        )
    with storage.Output(out) as staging:
        enc.save(staging)
    return out
