"""The learned sparse retriever (crops_ray/sparse): exact inverted-index search, the audit, CSR heads in the encoder,
and training through the same loop on the tiny world."""

import json

import numpy as np
import pytest
import scipy.sparse as sp

from crops_ray.sparse.head import SparseConfig, SparseHeads
from crops_ray.sparse.index import SparseIndex, is_sparse_index


def brute_force(docs: np.ndarray, queries: np.ndarray, k: int) -> tuple[list[list[int]], np.ndarray]:
    """Every document scored; ties by the document's row (what the index promises)."""
    scores = queries @ docs.T
    order = [np.lexsort((np.arange(len(docs)), -row))[:k] for row in scores]
    return [list(o) for o in order], np.stack([row[o] for row, o in zip(scores, order)])


def random_codes(rng, n: int, dim: int, k: int, levels: int = 4) -> np.ndarray:
    """Non-negative codes with at most k non-zeros, on a coarse grid of values so that ties happen (quarters: their
    products and sums are exact in float32, so a tie is a tie in any summation order)."""
    codes = np.zeros((n, dim), dtype=np.float32)
    for row in codes:
        used = rng.choice(dim, size=rng.integers(1, k + 1), replace=False)
        row[used] = rng.integers(1, levels + 1, size=len(used)) / levels
    return codes


@pytest.mark.parametrize("k", [1, 5, 40, 300])
def test_sparse_top_k_equals_brute_force(k):
    rng = np.random.default_rng(k)
    docs, queries = random_codes(rng, 250, 64, 6), random_codes(rng, 30, 64, 4)
    queries[0] = 0  # a query with no latent at all: every document scores 0
    ids = [f"v{i}" for i in range(len(docs))]
    index = SparseIndex.build(ids, sp.csr_matrix(docs))
    ranked, scores = index.search(sp.csr_matrix(queries), k, chunk=7)  # several chunks
    want, want_scores = brute_force(docs, queries, min(k, len(docs)))
    assert ranked == [[ids[i] for i in row] for row in want]
    np.testing.assert_allclose(scores, want_scores, rtol=1e-6)
    dense_input, _ = index.search(queries, k)  # a dense array of codes is accepted too
    assert dense_input == ranked


def test_audit_counts_postings_and_the_cost_of_a_query(tmp_path):
    docs = np.zeros((4, 6), dtype=np.float32)
    docs[0, [0, 1]] = 1
    docs[1, [0, 2]] = 1
    docs[2, [0]] = 1
    docs[3, [1]] = 1  # latents 3, 4, 5 never used; latent 0's list holds 3 of 4 documents
    index = SparseIndex.build(["a", "b", "c", "d"], docs)
    query = np.zeros((2, 6), dtype=np.float32)
    query[0, [0, 1]] = 1  # reads 3 + 2 postings
    query[1, [5]] = 1  # reads an empty list
    audit = index.audit(query)
    assert audit["unused_latents"] == pytest.approx(0.5)
    assert audit["longest_posting_share"] == pytest.approx(0.75)
    assert audit["nonzeros_per_doc_max"] == 2
    assert audit["postings"] == 6
    assert audit["multiply_adds_per_query"] == pytest.approx((5 + 0) / 2)
    index.meta = {"audit": audit}
    index.save(str(tmp_path / "ix"))
    assert is_sparse_index(str(tmp_path / "ix"))
    loaded = SparseIndex.load(str(tmp_path / "ix"))
    assert loaded.ids == index.ids and loaded.meta["audit"] == json.loads(json.dumps(audit))
    assert loaded.search(query, 2)[0] == index.search(query, 2)[0]


def test_heads_give_unit_codes_with_at_most_k_nonzeros_and_survive_a_save(tmp_path):
    import torch

    cfg = SparseConfig(dim=64, k=4, k_aux=8)
    heads = SparseHeads.fresh(16, cfg, shared=False)
    pooled = torch.nn.functional.normalize(torch.randn(50, 16), dim=-1).numpy()
    codes = heads.codes("doc", pooled)
    assert codes.shape == (50, 64)
    assert np.diff(codes.indptr).max() <= 4 and codes.data.min() > 0
    np.testing.assert_allclose(sp.linalg.norm(codes, axis=1), 1.0, rtol=1e-5)
    heads.save(str(tmp_path))
    again = SparseHeads.load(str(tmp_path), shared=False)
    assert (again.codes("doc", pooled) != codes).nnz == 0
    with pytest.raises(ValueError, match="4 \\* k <= dim"):
        SparseConfig(dim=64, k=20)


def test_a_training_pass_collects_csr_reconstruction_and_a_fit_reconstructs():
    import torch

    from crops_ray.sparse.fit import fit_heads

    rng = np.random.default_rng(0)
    basis = rng.normal(size=(12, 32))
    x = rng.normal(size=(400, 12)) @ basis  # 12 directions in 32 dimensions: 16 latents of 64 can rebuild them
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    cfg = SparseConfig(dim=64, k=16, k_aux=8, fit_steps=150, fit_batch_size=128, fit_lr=3e-3)
    heads, summary = fit_heads(x, cfg, shared=True, progress=lambda *_: None)
    assert summary["unexplained"] < 0.5 * summary["unexplained_before"]
    heads.train()
    heads.forward_codes("query", torch.tensor(x[:8]))
    loss = heads.reconstruction_loss()
    terms = {"reconstruction_loss_k", "reconstruction_loss_4k", "reconstruction_loss_aux"}
    assert loss is not None and loss.requires_grad and set(heads.last_terms) == terms
    assert heads.reconstruction_loss() is None  # collected once
    with torch.no_grad():  # an inference pass keeps nothing
        heads.forward_codes("query", torch.tensor(x[:8]))
    assert heads.reconstruction_loss() is None


@pytest.fixture(scope="module")
def sparse_folder(tmp_path_factory):
    """A one-layer MiniLM with CSR heads fitted on a few of its own document embeddings (separate towers)."""
    from crops_ray.encoder import Encoder, shallow_copy
    from crops_ray.sparse.fit import sparse_init

    root = tmp_path_factory.mktemp("sparse")
    base = shallow_copy("minilm", str(root / "base"), 1)
    texts = [f"{a} {b}" for a in ("jaguar", "piano", "pasta", "guitar", "cat") for b in ("cubs", "lesson", "recipe")]
    pooled = Encoder.from_pretrained(base).encode_docs(texts * 4, pooled=True)
    cfg = SparseConfig(dim=256, k=8, k_aux=16, fit_steps=20, fit_batch_size=32)
    return base, sparse_init(base, pooled, str(root / "init"), cfg, shared=False, seed=0, progress=lambda *_: None)


def test_a_sparse_encoder_folder_loads_encodes_and_keeps_the_dense_tower(sparse_folder):
    from crops_ray.encoder import Encoder, doc_tower_fingerprint

    base, folder = sparse_folder
    encoder = Encoder.from_pretrained(folder)
    assert encoder.config.sparse and encoder.dim == 256 and encoder.pooled_dim == 384
    assert Encoder.output_dim(folder) == 256
    codes = encoder.encode_queries(["jaguar cubs", "a piano lesson for beginners"])
    assert codes.shape == (2, 256) and ((codes != 0).sum(1) <= 8).all()
    np.testing.assert_allclose(np.linalg.norm(codes, axis=1), 1.0, rtol=1e-5)
    # The heads read the pooled embedding; the document tower itself is the base model's, and so is the corpus
    # cache's key: a sparse model never re-encodes a corpus its base already encoded.
    base_pooled = Encoder.from_pretrained(base).encode_docs(["jaguar cubs"])
    np.testing.assert_allclose(encoder.encode_docs(["jaguar cubs"], pooled=True), base_pooled, atol=1e-6)
    assert doc_tower_fingerprint(folder) == doc_tower_fingerprint(base)
    sparse_docs = encoder.encode_docs(["jaguar cubs"])
    np.testing.assert_allclose(sparse_docs, encoder.sparse.codes("doc", base_pooled).toarray(), atol=1e-6)


@pytest.mark.ray
@pytest.mark.slow
def test_crops_sparse_trains_through_the_same_loop_and_beats_its_untrained_start(tiny_engine, tmp_path):
    """On the tiny world: the sparse start (CSR heads fitted on the corpus, no labels) and CroPS-sparse trained from
    it by crops_ray.train with H-InfoNCE + CSR's reconstruction. Training moves the query tower and its head, leaves
    the frozen document side alone, keeps codes within k, and retrieves the clicked videos better."""
    import torch

    from crops_ray.encoder import Encoder, shallow_copy
    from crops_ray.experiment import METHODS, ExperimentConfig, run_method
    from crops_ray.hla import load_samples
    from crops_ray.layout import SPARSE_INIT
    from crops_ray.train import TrainConfig

    root, _, _ = tiny_engine
    model = shallow_copy("minilm", str(tmp_path / "minilm-1l"), num_layers=1)
    cfg = ExperimentConfig(
        train=TrainConfig(
            model=model, max_steps=40, batch_size=16, max_length=32, lr=1e-4, shared_towers=False, doc_tower="frozen"
        ),
        sparse=SparseConfig(dim=512, k=16, k_aux=64, fit_steps=60, fit_batch_size=256),
    )
    samples, _ = load_samples(str(root / "out"))
    log, _ = load_samples(str(root / "out" / "validated"))
    world, out = str(root / "world"), tmp_path / "seed-0"
    quiet = lambda *_: None  # noqa: E731
    start = run_method(METHODS["sparse_zero_shot"], world, None, str(out / "sparse_zero_shot"), cfg, 0, quiet)
    trained = run_method(METHODS["crops_sparse"], world, samples, str(out / "crops_sparse"), cfg, 0, quiet, log=log)
    for metric in ("recall@20_ct", "recall@100_ct"):  # the clicked videos (the graded truth is not the claim)
        assert trained["metrics"][metric] > start["metrics"][metric], metric

    before, after = (
        Encoder.from_pretrained(str(out / SPARSE_INIT)),
        Encoder.from_pretrained(str(out / "crops_sparse" / "model")),
    )
    changed = lambda a, b: any(not torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters()))  # noqa: E731
    assert changed(before.query_model, after.query_model) and changed(before.sparse.query, after.sparse.query)
    assert not changed(before.sparse.doc, after.sparse.doc) and not changed(before.doc_model, after.doc_model)
    codes = after.encode_queries(["jaguar", "how to cook pasta at home", "piano"])
    assert ((codes != 0).sum(1) <= 16).all() and (codes >= 0).all()
    audit = json.loads((out / "crops_sparse" / "eval" / "index" / "index.json").read_text())["audit"]
    assert audit["nonzeros_per_doc_max"] <= 16 and 0 <= audit["unused_latents"] < 1
