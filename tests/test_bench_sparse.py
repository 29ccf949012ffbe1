"""bench/sparse.py --quick: a synthetic corpus of a few thousand documents (no world), both indexes measured."""

import importlib.util
import json
import os
import sys

import numpy as np
import pytest
import scipy.sparse as sp

# Loaded from its file: putting bench/ on sys.path would shadow the serve/ package with bench/serve.py.
_spec = importlib.util.spec_from_file_location(
    "bench_sparse", os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench", "sparse.py")
)
bench = importlib.util.module_from_spec(_spec)
sys.modules["bench_sparse"] = bench
_spec.loader.exec_module(bench)


def test_quick_run_measures_flat_and_sparse(tmp_path, capsys):
    rows = bench.main(["--quick", "--world", "none", "--out", str(tmp_path)])
    assert [(r["corpus"], r["index"].split()[0]) for r in rows] == [("synthetic", "FAISS"), ("synthetic", "sparse")]
    flat, sparse = rows
    for ratio in ("bytes / flat", "time / flat, batch 1", "time / flat, batch 32", "multiply-adds / flat"):
        assert flat[ratio] == 1.0 and sparse[ratio] > 0
    assert flat["multiply-adds/query"] == 4000 * 384
    assert 0 < sparse["multiply-adds/query"] < flat["multiply-adds/query"]
    assert sparse["details"]["exact_check"]["queries"] == 16
    table = capsys.readouterr().out
    assert "| synthetic | FAISS flat (exact IP)" in table and "| synthetic | sparse inverted (exact)" in table
    saved = json.loads((tmp_path / "results.json").read_text())
    assert [r["index"] for r in saved["rows"]] == [r["index"] for r in rows]
    assert len(saved["machine"]["load_average_start"]) == 3


def test_random_codes_follow_the_popularity():
    popularity = bench.zipf_popularity(1.2, latents=256)
    codes = bench.random_codes(3000, popularity, 8, np.random.default_rng(0))
    assert codes.shape == (3000, 256) and np.all(np.diff(codes.indptr) == 8)
    assert all(len(set(codes.indices[i * 8 : (i + 1) * 8])) == 8 for i in range(3000))  # distinct latents
    assert np.all(codes.data >= 0) and np.allclose(sp.linalg.norm(codes, axis=1), 1.0, atol=1e-5)
    usage = np.bincount(codes.indices, minlength=256)
    assert usage[:10].sum() > 5 * usage[-10:].sum()  # the popular latents are used far more
    assert 0.5 < bench.zipf_exponent(usage) < 2.0


def test_check_exact_catches_a_wrong_top_k():
    rng = np.random.default_rng(1)
    docs = bench.random_codes(500, bench.zipf_popularity(1.0, 64), 4, rng)
    queries = bench.random_codes(10, bench.zipf_popularity(1.0, 64), 4, rng)
    index = bench.SparseIndex.build([str(i) for i in range(500)], docs)
    assert bench.check_exact(index, docs, queries, k=20) > 0.5

    class Reversed(bench.SparseIndex):  # the right documents, ranked worst first
        def search(self, query_codes, k, chunk=256):
            ranked, scores = super().search(query_codes, k, chunk)
            return [r[::-1] for r in ranked], scores[:, ::-1]

    with pytest.raises(AssertionError, match="is not the top-20"):
        bench.check_exact(Reversed(index.postings, index.ids), docs, queries, k=20)
