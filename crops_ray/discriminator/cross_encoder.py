"""The gate's model: a cross-encoder (query and video text read together by one 6-layer Transformer) fine-tuned
on labelled pairs with a pointwise loss.

It starts from the packaged all-MiniLM-L6-v2 weights (the same 6-layer Transformer the paper names; a new
384 -> 1 head on its pooler, as sentence-transformers' ``CrossEncoder`` builds it from a SentenceTransformer folder)
and is trained with binary cross-entropy on one logit per pair. A pointwise loss keeps the logit comparable across
queries, which a single threshold alpha needs; a ranking loss would only order the videos of one query.
Reading query and text together lets the model compare the query's facet ("cubs") with the video's, which a
bi-encoder's two separate vectors blur: the sibling subtopics that P2 proposes are exactly that case.
"""

from __future__ import annotations

import time

import numpy as np
import pyarrow as pa

from crops_ray import storage
from crops_ray.discriminator.config import DiscriminatorConfig
from crops_ray.plumbing import model_path

HEAD_LR_SCALE = 50.0


def load(folder: str, device: str = "cpu"):
    """(tokenizer, model) of a sequence-classification folder, in eval mode (its own head: one logit, or one per
    class for a team's classifier, whose last class is read as "relevant" by :func:`logits`)."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForSequenceClassification.from_pretrained(folder).to(device).eval()
    return tokenizer, model


def pair_batch(tokenizer, queries: list[str], texts: list[str], idx, max_length: int):
    """The pairs ``idx`` as one padded batch: query and text as the two segments of one sequence."""
    return tokenizer(
        [queries[i] for i in idx],
        [texts[i] for i in idx],
        padding=True,
        truncation=True,
        max_length=max_length,
        return_tensors="pt",
    )


def quantized(model):
    """The model with dynamically quantised int8 linear layers (CPU inference; weights int8, activations quantised
    per input tensor, so score one pair per call for a theta that does not depend on its batch)."""
    import warnings

    import torch

    with warnings.catch_warnings():  # the eager-mode API warns of its move to torchao; it is what runs on 2.13
        warnings.simplefilter("ignore")
        return torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)


def logits(tokenizer, model, queries: list[str], texts: list[str], batch_size: int, max_length: int) -> np.ndarray:
    """One logit per (query, text) pair. Pairs are batched by length (short pairs are not padded to long ones),
    and the result is in the input order."""
    import torch

    out = np.empty(len(queries), dtype=np.float32)
    order = np.argsort([len(q) + len(t) for q, t in zip(queries, texts)], kind="stable")
    device = next(model.parameters()).device
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            enc = pair_batch(tokenizer, queries, texts, idx, max_length).to(device)
            out[idx] = model(**enc).logits[:, -1].float().cpu().numpy()  # one logit, or the last class's
    return out


def train_cross_encoder(cfg: DiscriminatorConfig, pairs: pa.Table, out: str, progress=print) -> str:
    """Fine-tune a cross-encoder from ``cfg.model`` on (query, text, label) ``pairs``; returns the saved folder.

    Binary cross-entropy on one logit, ``cfg.fine_tune_epochs`` epochs in a seeded order, fused AdamW with a linear
    warm-up over the first 10 % of the steps. The folder is written through :class:`crops_ray.storage.Output` (a
    crash leaves no half-written model).
    """
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    torch.manual_seed(cfg.fine_tune_seed)
    base = model_path(cfg.model)
    tokenizer = AutoTokenizer.from_pretrained(base)
    model = AutoModelForSequenceClassification.from_pretrained(base, num_labels=1)
    model.train()
    queries, texts = pairs["query"].to_pylist(), pairs["text"].to_pylist()
    labels = torch.tensor(pairs["label"].to_numpy(), dtype=torch.float32)
    bs = cfg.fine_tune_batch_size
    steps = cfg.fine_tune_epochs * -(-len(queries) // bs)
    # The head is new and reads a pooled vector of small values (|x| ~ 0.05 for MiniLM): at the encoder's rate it
    # would take thousands of steps to move the logit, so it learns at HEAD_LR_SCALE times that rate.
    head = [p for n, p in model.named_parameters() if n.startswith(("classifier", "bert.pooler"))]
    body = [p for n, p in model.named_parameters() if not n.startswith(("classifier", "bert.pooler"))]
    opt = torch.optim.AdamW(
        [{"params": body}, {"params": head, "lr": cfg.fine_tune_lr * HEAD_LR_SCALE}], lr=cfg.fine_tune_lr, fused=True
    )  # fused: one kernel for all parameters
    warmup = max(1, steps // 10)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warmup))
    started = last = time.time()
    done = 0
    for epoch in range(cfg.fine_tune_epochs):
        order = np.random.default_rng(cfg.fine_tune_seed + epoch).permutation(len(queries))
        total = 0.0
        for start in range(0, len(order), bs):
            if time.time() - last > 20:  # a minute or two on 2 cores: a line every ~20 s with what is left
                last, spent = time.time(), time.time() - started
                progress(
                    f"training the cross-encoder gate: step {done}/{steps}, {spent:.0f}s, about "
                    f"{spent / max(1, done) * (steps - done):.0f}s left"
                )
            idx = order[start : start + bs]
            enc = pair_batch(tokenizer, queries, texts, idx, cfg.max_length)
            loss = torch.nn.functional.binary_cross_entropy_with_logits(model(**enc).logits[:, 0], labels[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            done += 1
            total += float(loss.detach()) * len(idx)
        progress(
            f"training the cross-encoder gate: epoch {epoch + 1}/{cfg.fine_tune_epochs}, loss "
            f"{total / max(1, len(order)):.4f} ({time.time() - started:.0f}s)"
        )
    model.eval()
    with storage.Output(out) as staging:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
    return out
