"""A micro-batch: which candidates the loss sees and their labels, tokenised inputs, mined negatives appended,
and the frozen document tower's embedding cache."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from crops_ray.hla import stable_hash
from crops_ray.plumbing import EmbeddingCache
from crops_ray.schema import STAGES
from crops_ray.sources import Source
from crops_ray.train.config import (
    LOSSES,
)

# ------------------------------------------------------------------------------------------------ labels


def candidate_labels(levels: list[int], sources: list[str], loss: str) -> tuple[list[int], list[int]]:
    """Which of a group's candidates the loss sees, and their labels: ``(kept indices, labels)``.

    ``h_infonce``: every candidate, labelled with its HLA level. ``infonce`` (DPR): only candidates logged by
    search (sources in :data:`STAGES`); ``clicked`` is the positive (1), the other stages hard negatives (0).
    """
    if loss == "h_infonce":
        return list(range(len(levels))), [int(v) for v in levels]
    if loss == "infonce":
        kept = [i for i, s in enumerate(sources) if s in STAGES]
        return kept, [1 if sources[i] == Source.CLICKED else 0 for i in kept]
    raise ValueError(f"unknown loss {loss!r}; choose one of {list(LOSSES)}")


def in_batch_labels(
    row_query_key: torch.Tensor,
    own_video_key: torch.Tensor,
    own_label: torch.Tensor,
    own_row: torch.Tensor,
    col_query_key: torch.Tensor,
    col_video_key: torch.Tensor,
    col_label: torch.Tensor,
) -> torch.Tensor:
    """``[B, N]`` labels of ``B`` local queries against ``N`` global candidate columns.

    Column ``c`` gets its own label for query ``i`` when it belongs to a group of the same query; otherwise the
    level query ``i``'s own group gives that video (``own_*``: the local candidates, ``own_row`` their query);
    otherwise 0 (an in-batch negative).
    """
    same_query = row_query_key[:, None] == col_query_key[None, :]
    labels = torch.where(
        same_query, col_label[None, :], torch.zeros((), dtype=col_label.dtype, device=col_label.device)
    )
    if own_video_key.numel() and col_video_key.numel():
        by_video = torch.where(own_video_key[:, None] == col_video_key[None, :], own_label[:, None], 0)
        known = torch.zeros_like(labels).scatter_reduce(0, own_row[:, None].expand_as(by_video), by_video, "amax")
        labels = torch.maximum(labels, known)
    return labels


# ------------------------------------------------------------------------------------------------ batches


@dataclass
class Batch:
    query_inputs: dict
    # (chunks, inverse) from Encoder.tokenize_chunks; None when the document tower is frozen (then doc_texts go
    # through a DocCache)
    doc_inputs: tuple | None
    row_query_key: torch.Tensor  # [B]
    cand_query_key: torch.Tensor  # [C] key of the query whose group holds the candidate
    cand_video_key: torch.Tensor  # [C]
    cand_label: torch.Tensor  # [C]
    cand_row: torch.Tensor  # [C] local row (query) of the candidate's group
    n_docs: int  # real candidates (C); a batch without any still encodes one empty text, sliced away
    doc_texts: list = field(default_factory=list)


DOC_CHUNK = 32  # candidates per document-tower forward pass, of similar length (Encoder.tokenize_chunks)


def collate(rows: dict, encoder, loss: str, device: torch.device | str = "cpu", tokenize_docs: bool = True) -> Batch:
    """Tokenise one batch of groups (a dict of columns: query, texts, video_ids, levels, sources)."""
    queries = [str(q) for q in rows["query"]]
    docs, qkeys, vkeys, labels, owner = [], [], [], [], []
    for i, (query, texts, vids, levels, sources) in enumerate(
        zip(queries, rows["texts"], rows["video_ids"], rows["levels"], rows["sources"])
    ):
        kept, kept_labels = candidate_labels(list(levels), list(sources), loss)
        qkey = stable_hash(query)
        for j, label in zip(kept, kept_labels):
            docs.append(str(texts[j]))
            qkeys.append(qkey)
            vkeys.append(stable_hash(str(vids[j])))
            labels.append(label)
            owner.append(i)
    n_docs = len(docs)

    def tensor(values):
        return torch.tensor(values, dtype=torch.long, device=device)

    def tokens(texts):
        return {k: v.to(device) for k, v in encoder.tokenize(texts).items()}

    return Batch(
        query_inputs=tokens(queries),
        doc_inputs=encoder.tokenize_chunks(docs or [""], DOC_CHUNK, device) if tokenize_docs else None,
        row_query_key=tensor([stable_hash(q) for q in queries]),
        cand_query_key=tensor(qkeys),
        cand_video_key=tensor(vkeys),
        cand_label=tensor(labels),
        cand_row=tensor(owner),
        n_docs=n_docs,
        doc_texts=docs or [""],
    )


def append_candidates(batch: Batch, mined: list[list[tuple[str, str]]]) -> Batch:
    """``batch`` with extra candidates at label 0: ``mined[i]`` holds (video_id, text) pairs for local query ``i``
    (frozen document tower: their embeddings come from the DocCache, by text)."""
    owner = [i for i, pairs in enumerate(mined) for _ in pairs]
    if not owner:
        return batch
    device = batch.cand_label.device

    def tensor(values):
        return torch.tensor(values, dtype=torch.long, device=device)

    vids = [stable_hash(str(v)) for pairs in mined for v, _ in pairs]
    return Batch(
        query_inputs=batch.query_inputs,
        doc_inputs=None,
        row_query_key=batch.row_query_key,
        cand_query_key=torch.cat([batch.cand_query_key, batch.row_query_key[tensor(owner)]]),
        cand_video_key=torch.cat([batch.cand_video_key, tensor(vids)]),
        cand_label=torch.cat([batch.cand_label, torch.zeros(len(owner), dtype=batch.cand_label.dtype, device=device)]),
        cand_row=torch.cat([batch.cand_row, tensor(owner)]),
        n_docs=batch.n_docs + len(owner),
        doc_texts=batch.doc_texts[: batch.n_docs] + [str(t) for pairs in mined for _, t in pairs],
    )


class DocCache:
    """Frozen document-tower embeddings by text: each distinct text is encoded once (forward only, no grad).

    The cache holds pooled embeddings; a sparse encoder's frozen document head makes its codes from them on each
    lookup (cheap, and a code is ``dim`` floats wide: caching codes would cost several times the memory)."""

    def __init__(self, encoder, max_size: int = 200_000, batch_size: int = 128):
        self.encoder, self.max_size, self.batch_size = encoder, max_size, batch_size
        self._cache = EmbeddingCache(max_size)
        self.encoded = 0  # texts actually run through the tower (cache misses)

    def _encode(self, texts: list[str], device) -> list[torch.Tensor]:
        tower = self.encoder.doc_model
        tower.eval()  # frozen: dropout stays off even while the query tower trains
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out: list = [None] * len(texts)
        with torch.no_grad():
            for start in range(0, len(order), self.batch_size):
                chunk = order[start : start + self.batch_size]
                inputs = {k: v.to(device) for k, v in self.encoder.tokenize([texts[i] for i in chunk]).items()}
                for i, emb in zip(chunk, self.encoder.pooled("doc", inputs).float().cpu()):
                    out[i] = emb
        self.encoded += len(texts)
        return out

    def pooled(self, texts: list[str], device) -> torch.Tensor:
        return torch.stack(self._cache.lookup(texts, lambda missing: self._encode(missing, device))).to(device)

    def __call__(self, texts: list[str], device) -> torch.Tensor:
        """The frozen document tower's output for ``texts``: pooled embeddings, or a sparse encoder's codes."""
        with torch.no_grad():
            return self.encoder.project("doc", self.pooled(texts, device))

    def prefill(self, path: str, device, check: int = 4, atol: float = 1e-4) -> int:
        """Load (text, embedding) rows into the cache; refuse them unless ``check`` of them match fresh encodings."""
        from crops_ray import storage

        table = storage.read_table(path, columns=["text", "embedding"])
        texts = table["text"].to_pylist()
        emb = table["embedding"].combine_chunks().flatten().to_numpy().reshape(table.num_rows, -1)
        width = self.encoder.pooled_dim
        if emb.shape[1] != width:
            raise ValueError(f"doc_embeddings {path}: dimension {emb.shape[1]}, but the document tower's is {width}")
        sample = sorted(range(len(texts)), key=lambda i: stable_hash(texts[i]))[:check]
        if sample:
            fresh = DocCache(self.encoder, batch_size=self.batch_size).pooled([texts[i] for i in sample], device)
            fresh = fresh.cpu().numpy()
            worst = float(np.abs(fresh - emb[sample]).max())
            if worst > atol:
                raise ValueError(
                    f"doc_embeddings {path} were not made by this document tower (max difference {worst:.2e} "
                    f"on {len(sample)} texts; same weights and max_length?)"
                )
        for text, row in zip(texts[-self.max_size :], emb[-self.max_size :]):
            self._cache.put(text, torch.from_numpy(np.array(row, dtype=np.float32)))
        return len(texts)
