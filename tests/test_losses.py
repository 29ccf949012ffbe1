"""Tests for crops_ray.losses: H-InfoNCE against its loop reference, InfoNCE, stability, validation."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from crops_ray.losses import (
    DEFAULT_TEMPERATURE,
    h_infonce,
    h_infonce_reference,
    infonce,
    infonce_from_labels,
)

MAX_LEVEL = 5
TOL = {torch.float64: dict(rtol=1e-10, atol=1e-12), torch.float32: dict(rtol=1e-4, atol=1e-5)}
#: float32 resolves s/t ~ 4000 (dot-product scores at t = 0.05) only to ~5e-4, so there float32 results
#: are compared with the float64 reference at this tolerance (the float32 loop reference is no closer).
FLOAT32_DOT_PRODUCT_TOL = dict(rtol=1e-3, atol=2e-3)


# ------------------------------------------------------------------------------------------ helpers


def _labels(pattern: str, batch: int, width: int, gen: torch.Generator) -> torch.Tensor:
    """Level patterns exercised against the reference."""
    if pattern == "zeros":
        return torch.zeros(batch, width, dtype=torch.long)
    if pattern == "one_positive":
        labels = torch.zeros(batch, width, dtype=torch.long)
        labels[torch.arange(batch), torch.randint(0, width, (batch,), generator=gen)] = 1
        return labels
    if pattern == "ties":  # few levels, many equal ones
        return torch.randint(0, 3, (batch, width), generator=gen)
    if pattern == "all_levels":
        return torch.randint(0, MAX_LEVEL + 1, (batch, width), generator=gen)
    if pattern == "top_levels":  # only levels 4 and 5: no level-0 entry at all
        return torch.randint(4, MAX_LEVEL + 1, (batch, width), generator=gen)
    if pattern == "empty_rows":  # some rows without any positive
        labels = torch.randint(0, MAX_LEVEL + 1, (batch, width), generator=gen)
        labels[::2] = 0
        return labels
    raise AssertionError(pattern)


PATTERNS = ["zeros", "one_positive", "ties", "all_levels", "top_levels", "empty_rows"]
EDGE_SHAPES = [(1, 1), (1, 7), (2, 40), (9, 1), (9, 40)]
RANDOM_SHAPES_PER_TEST = 3  # drawn from B in 1..9, N in 1..40 with the test's seeded generator
MAX_B, MAX_N = 9, 40


def _value_and_grad(fn, scores, labels, **kwargs):
    scores = scores.detach().clone().requires_grad_(True)
    loss = fn(scores, labels, **kwargs)
    (grad,) = torch.autograd.grad(loss.sum(), scores)
    return loss.detach(), grad


def _scores(score_range: str, batch: int, width: int, gen: torch.Generator) -> torch.Tensor:
    """float64 scores: ``cosine`` ~ N(0, 0.5) (normalised embeddings), ``dot_product`` in [50, 200]
    (unnormalised DPR/ANCE embeddings: at t = 0.05 a row spans up to 3000, far past ``exp``'s range)."""
    if score_range == "cosine":
        return torch.randn(batch, width, generator=gen, dtype=torch.float64) * 0.5
    return 50.0 + 150.0 * torch.rand(batch, width, generator=gen, dtype=torch.float64)


SCORE_RANGES = ["cosine", "dot_product"]


@pytest.fixture(autouse=True)
def _one_thread():
    """The tensors here are tiny: a second thread only adds waits for a time slice on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ------------------------------------------------------------------------ against the loop reference


@pytest.mark.parametrize("score_range", SCORE_RANGES)
@pytest.mark.parametrize("pattern", PATTERNS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_matches_reference_value_and_grad(pattern, dtype, score_range):
    gen = torch.Generator().manual_seed(PATTERNS.index(pattern))
    drawn = torch.stack(
        [
            torch.randint(1, MAX_B + 1, (RANDOM_SHAPES_PER_TEST,), generator=gen),
            torch.randint(1, MAX_N + 1, (RANDOM_SHAPES_PER_TEST,), generator=gen),
        ],
        1,
    )
    same_precision = dtype == torch.float64 or score_range == "cosine"
    tol = TOL[dtype] if same_precision else FLOAT32_DOT_PRODUCT_TOL
    for batch, width in EDGE_SHAPES + [tuple(map(int, shape)) for shape in drawn]:
        scores = _scores(score_range, batch, width, gen).to(dtype)
        labels = _labels(pattern, batch, width, gen)
        ref_scores = scores if same_precision else scores.double()
        for temperature in (DEFAULT_TEMPERATURE, 1.0):
            got, got_grad = _value_and_grad(h_infonce, scores, labels, temperature=temperature)
            ref, ref_grad = _value_and_grad(h_infonce_reference, ref_scores, labels, temperature=temperature)
            assert got.dtype == dtype
            torch.testing.assert_close(got, ref.to(dtype), **tol)
            torch.testing.assert_close(got_grad, ref_grad.to(dtype), **tol)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_dot_product_in_batch_layout_matches_reference(dtype):
    """The benchmark's layout with unnormalised scores: each row's own K candidates at levels 1..5 and
    in-batch negatives elsewhere.  Row 0's positives score far above its negatives and row 1's far below,
    so at t = 0.05 every level's log-sum-exp lies thousands below or above the row max."""
    gen = torch.Generator().manual_seed(13)
    batch, k = 5, 4
    width = batch * k
    scores = _scores("dot_product", batch, width, gen)
    labels = torch.zeros(batch, width, dtype=torch.long)
    labels[torch.arange(batch).repeat_interleave(k), torch.arange(width)] = torch.randint(
        1, MAX_LEVEL + 1, (width,), generator=gen
    )
    scores[0, labels[0] > 0] += 300.0
    scores[1, labels[1] > 0] -= 300.0
    tol = TOL[dtype] if dtype == torch.float64 else FLOAT32_DOT_PRODUCT_TOL
    for reduction in ("mean", "none"):
        got, got_grad = _value_and_grad(h_infonce, scores.to(dtype), labels, reduction=reduction)
        ref, ref_grad = _value_and_grad(h_infonce_reference, scores, labels, reduction=reduction)
        torch.testing.assert_close(got, ref.to(dtype), **tol)
        torch.testing.assert_close(got_grad, ref_grad.to(dtype), **tol)


def test_masked_columns_count_as_absent():
    """``-inf`` scores (masked candidates) add nothing and get a zero gradient, like candidates so far
    below that ``exp`` is exactly 0; row 1 has every level-0 candidate masked."""
    gen = torch.Generator().manual_seed(14)
    scores = torch.randn(4, 12, generator=gen, dtype=torch.float64)
    labels = _labels("all_levels", 4, 12, gen)
    masked = (torch.rand(4, 12, generator=gen) < 0.3) & (labels == 0)
    masked[1] = labels[1] == 0
    for reduction in ("mean", "none"):
        got, got_grad = _value_and_grad(h_infonce, scores.masked_fill(masked, -math.inf), labels, reduction=reduction)
        ref, ref_grad = _value_and_grad(
            h_infonce_reference, scores.masked_fill(masked, -1e4), labels, reduction=reduction
        )
        torch.testing.assert_close(got, ref, **TOL[torch.float64])
        torch.testing.assert_close(got_grad, ref_grad, **TOL[torch.float64])


@pytest.mark.parametrize("score_range", SCORE_RANGES)
@pytest.mark.parametrize("reduction", ["sum", "none"])
def test_matches_reference_other_reductions(reduction, score_range):
    gen = torch.Generator().manual_seed(1)
    scores = _scores(score_range, 6, 23, gen)
    labels = _labels("all_levels", 6, 23, gen)
    got, got_grad = _value_and_grad(h_infonce, scores, labels, reduction=reduction)
    ref, ref_grad = _value_and_grad(h_infonce_reference, scores, labels, reduction=reduction)
    torch.testing.assert_close(got, ref, **TOL[torch.float64])
    torch.testing.assert_close(got_grad, ref_grad, **TOL[torch.float64])


def test_none_reduction_weighted_grad_matches_reference():
    """A non-uniform upstream gradient on the ``"none"`` output goes through the per-entry weights."""
    gen = torch.Generator().manual_seed(2)
    scores = torch.randn(4, 11, generator=gen, dtype=torch.float64)
    labels = _labels("all_levels", 4, 11, gen)
    weights = torch.randn(4, 11, generator=gen, dtype=torch.float64)
    grads = []
    for fn in (h_infonce, h_infonce_reference):
        s = scores.clone().requires_grad_(True)
        (fn(s, labels, reduction="none") * weights).sum().backward()
        grads.append(s.grad)
    torch.testing.assert_close(grads[0], grads[1], **TOL[torch.float64])


def test_gradcheck_none_reduction():
    gen = torch.Generator().manual_seed(12)
    scores = torch.randn(3, 8, generator=gen, dtype=torch.float64, requires_grad=True)
    labels = _labels("all_levels", 3, 8, gen)
    assert torch.autograd.gradcheck(lambda s: h_infonce(s, labels, 0.5, reduction="none"), (scores,))


@pytest.mark.parametrize("dtype", [torch.int8, torch.uint8, torch.int16, torch.int32, torch.int64])
def test_any_integer_label_dtype(dtype):
    gen = torch.Generator().manual_seed(3)
    scores = torch.randn(3, 9, generator=gen, dtype=torch.float64)
    labels = _labels("all_levels", 3, 9, gen)
    torch.testing.assert_close(h_infonce(scores, labels.to(dtype)), h_infonce(scores, labels))


def test_non_contiguous_inputs():
    gen = torch.Generator().manual_seed(11)
    scores = torch.randn(13, 4, generator=gen, dtype=torch.float64).t()
    labels = _labels("all_levels", 13, 4, gen).t()
    assert not scores.is_contiguous() and not labels.is_contiguous()
    got, got_grad = _value_and_grad(h_infonce, scores, labels, reduction="none")
    ref, ref_grad = _value_and_grad(h_infonce_reference, scores, labels, reduction="none")
    torch.testing.assert_close(got, ref, **TOL[torch.float64])
    torch.testing.assert_close(got_grad, ref_grad, **TOL[torch.float64])


def test_levels_above_five():
    gen = torch.Generator().manual_seed(4)
    scores = torch.randn(4, 30, generator=gen, dtype=torch.float64)
    labels = torch.randint(0, 12, (4, 30), generator=gen)
    got, got_grad = _value_and_grad(h_infonce, scores, labels)
    ref, ref_grad = _value_and_grad(h_infonce_reference, scores, labels)
    torch.testing.assert_close(got, ref, **TOL[torch.float64])
    torch.testing.assert_close(got_grad, ref_grad, **TOL[torch.float64])


# ------------------------------------------------------------------------------------ InfoNCE cases


@pytest.mark.parametrize("score_range", SCORE_RANGES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_binary_equals_cross_entropy(dtype, score_range):
    gen = torch.Generator().manual_seed(5)
    batch, width = 7, 19
    scores = _scores(score_range, batch, width, gen).to(dtype)
    target = torch.randint(0, width, (batch,), generator=gen)
    labels = F.one_hot(target, width)
    t = DEFAULT_TEMPERATURE

    def ce(s, _labels):
        return F.cross_entropy(s / t, target)

    ref, ref_grad = _value_and_grad(ce, scores, labels)
    for fn in (h_infonce, infonce_from_labels):
        got, got_grad = _value_and_grad(fn, scores, labels, temperature=t)
        torch.testing.assert_close(got, ref, **TOL[dtype])
        torch.testing.assert_close(got_grad, ref_grad, **TOL[dtype])
    torch.testing.assert_close(infonce(scores, target, t), ref, **TOL[dtype])


def test_infonce_from_labels_maps_positives_to_one_level():
    gen = torch.Generator().manual_seed(6)
    scores = torch.randn(5, 12, generator=gen, dtype=torch.float64)
    labels = _labels("all_levels", 5, 12, gen)
    torch.testing.assert_close(infonce_from_labels(scores, labels), h_infonce_reference(scores, (labels > 0).long()))


# ---------------------------------------------------------------------------------------- semantics


def test_same_level_entries_do_not_push_each_other():
    """d(term of a level-3 entry)/d(score of another level-3 entry) = 0, but != 0 for a level-4 entry."""
    gen = torch.Generator().manual_seed(7)
    labels = torch.tensor([[3, 3, 4, 0, 1, 3]])
    scores = torch.randn(1, 6, generator=gen, dtype=torch.float64, requires_grad=True)
    terms = h_infonce(scores, labels, reduction="none")
    (grad_level3,) = torch.autograd.grad(terms[0, 0], scores, retain_graph=True)
    (grad_level4,) = torch.autograd.grad(terms[0, 2], scores)
    assert grad_level3[0, 1] == 0 and grad_level3[0, 5] == 0  # same level: no push
    assert grad_level3[0, 3] > 0 and grad_level3[0, 4] > 0  # lower levels are negatives
    assert grad_level4[0, 1] > 0 and grad_level4[0, 5] > 0  # level 3 is below level 4
    # And by value: moving another level-3 score leaves the term unchanged.
    moved = scores.detach().clone()
    moved[0, 1] += 5.0
    before = h_infonce(scores.detach(), labels, reduction="none")
    after = h_infonce(moved, labels, reduction="none")
    torch.testing.assert_close(after[0, [0, 5]], before[0, [0, 5]], rtol=1e-12, atol=0.0)
    assert after[0, 2] > before[0, 2] + 1.0


def test_positive_with_nothing_below_has_zero_term():
    scores = torch.tensor([[0.3, -0.2, 0.9]], dtype=torch.float64, requires_grad=True)
    labels = torch.tensor([[2, 2, 5]])  # level 5 competes with the two level-2, they have nothing below
    terms = h_infonce(scores, labels, reduction="none")
    assert terms[0, 0] == 0 and terms[0, 1] == 0 and terms[0, 2] > 0


# ----------------------------------------------------------------------------- numerical robustness


@pytest.mark.parametrize("magnitude", [1e2, 1e4])
def test_extreme_scores_are_finite(magnitude):
    gen = torch.Generator().manual_seed(8)
    t = DEFAULT_TEMPERATURE
    scores = (torch.rand(6, 25, generator=gen) * 2 - 1) * magnitude
    scores[0, :3] = torch.tensor([magnitude, -magnitude, 0.0])
    labels = _labels("all_levels", 6, 25, gen)
    loss, grad = _value_and_grad(h_infonce, scores, labels, temperature=t)
    assert torch.isfinite(loss).all() and torch.isfinite(grad).all()
    ref, ref_grad = _value_and_grad(h_infonce_reference, scores.double(), labels, temperature=t)
    torch.testing.assert_close(loss.double(), ref, rtol=1e-5, atol=1e-3)
    torch.testing.assert_close(grad.double(), ref_grad, rtol=1e-4, atol=1e-4)


def test_widely_spread_level_keeps_exact_terms():
    """A pair far below the row max (``exp`` of it would underflow) still gets its exact term."""
    t = 1.0
    scores = torch.tensor([[0.0, -200.0, -190.0]], requires_grad=True)
    labels = torch.tensor([[5, 2, 1]])
    terms = h_infonce(scores, labels, temperature=t, reduction="none")
    expected = F.softplus(torch.tensor(-190.0 + 200.0))  # level 2 vs level 1: log(1 + e^10)
    torch.testing.assert_close(terms[0, 1], expected)
    terms.sum().backward()
    assert torch.isfinite(scores.grad).all()


def test_bfloat16_computes_in_float32():
    gen = torch.Generator().manual_seed(9)
    scores = torch.randn(5, 30, generator=gen).to(torch.bfloat16)
    labels = _labels("all_levels", 5, 30, gen)
    low, low_grad = _value_and_grad(h_infonce, scores, labels)
    high, high_grad = _value_and_grad(h_infonce, scores.float(), labels)
    assert low.dtype == torch.float32 and low_grad.dtype == torch.bfloat16
    torch.testing.assert_close(low, high, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(low_grad.float(), high_grad, rtol=1e-2, atol=1e-3)


# ---------------------------------------------------------------------------------- no positives


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("shape", [(4, 6), (0, 3), (3, 0)])
def test_no_positives_is_a_connected_zero(reduction, shape):
    scores = torch.randn(*shape, requires_grad=True)
    loss = h_infonce(scores, torch.zeros(shape, dtype=torch.long), reduction=reduction)
    assert loss.grad_fn is not None
    assert torch.count_nonzero(loss) == 0
    loss.sum().backward()
    assert scores.grad is not None and torch.count_nonzero(scores.grad) == 0


def test_no_positives_with_infinite_scores_gives_zero_grad():
    scores = torch.tensor([[math.inf, -math.inf, 0.0]], requires_grad=True)
    h_infonce(scores, torch.zeros(1, 3, dtype=torch.long)).backward()
    assert torch.count_nonzero(scores.grad) == 0


# ------------------------------------------------------------------------------------- reductions


def test_reductions_are_consistent():
    gen = torch.Generator().manual_seed(10)
    scores = torch.randn(7, 21, generator=gen, dtype=torch.float64)
    labels = _labels("empty_rows", 7, 21, gen)
    none = h_infonce(scores, labels, reduction="none")
    total = h_infonce(scores, labels, reduction="sum")
    mean = h_infonce(scores, labels, reduction="mean")
    assert none.shape == scores.shape
    assert torch.all(none[labels == 0] == 0)
    torch.testing.assert_close(none.sum(), total)
    torch.testing.assert_close(mean, total / torch.count_nonzero(labels))


# ------------------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    "scores, labels, kwargs, match",
    [
        (torch.zeros(2, 3), torch.zeros(2, 4, dtype=torch.long), {}, "does not match"),
        (torch.zeros(2, 3), torch.zeros(2, 3), {}, "integer"),
        (torch.zeros(2, 3), torch.zeros(2, 3, dtype=torch.bool), {}, "integer"),
        (torch.zeros(2, 3), torch.tensor([[0, 1, -1], [0, 0, 0]]), {}, ">= 0"),
        (torch.zeros(3), torch.zeros(3, dtype=torch.long), {}, "2-D"),
        (torch.zeros(2, 3, 1), torch.zeros(2, 3, 1, dtype=torch.long), {}, "2-D"),
        (torch.zeros(2, 3, dtype=torch.long), torch.zeros(2, 3, dtype=torch.long), {}, "floating"),
        (torch.zeros(2, 3), torch.zeros(2, 3, dtype=torch.long), {"temperature": 0.0}, "temperature"),
        (torch.zeros(2, 3), torch.zeros(2, 3, dtype=torch.long), {"temperature": -0.1}, "temperature"),
        (torch.zeros(2, 3), torch.zeros(2, 3, dtype=torch.long), {"temperature": math.nan}, "temperature"),
        (torch.zeros(2, 3), torch.zeros(2, 3, dtype=torch.long), {"reduction": "avg"}, "reduction"),
    ],
)
def test_validation_errors(scores, labels, kwargs, match):
    for fn in (h_infonce, h_infonce_reference, infonce_from_labels):
        with pytest.raises(ValueError, match=match):
            fn(scores, labels, **kwargs)


@pytest.mark.parametrize(
    "target, kwargs, match",
    [
        (torch.zeros(3, dtype=torch.long), {}, "target"),
        (torch.zeros(2, 1, dtype=torch.long), {}, "target"),
        (torch.zeros(2), {}, "integer"),
        (torch.zeros(2, dtype=torch.long), {"temperature": 0}, "temperature"),
    ],
)
def test_infonce_validation_errors(target, kwargs, match):
    with pytest.raises(ValueError, match=match):
        infonce(torch.zeros(2, 5), target, **kwargs)


def test_the_loss_benchmark_times_both_losses_and_counts_their_backward_ops():
    """bench/loss.py's table: both losses timed, and the ATen counts include the backward (cross-entropy's
    forward alone is 3 operations: the division, log-softmax, NLL)."""
    import importlib.util
    import os

    path = os.path.join(os.path.dirname(__file__), "..", "bench", "loss.py")
    spec = importlib.util.spec_from_file_location("bench_loss", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    table = bench.main(["--threads", "1", "--batch-sizes", "8", "--repeats", "3", "--budget-s", "0.5"])
    assert len(table) == 2 and set(table["scores"]) == {"cosine", "dot"}
    assert (table["cross_entropy ms"] > 0).all() and (table["h_infonce ms"] > 0).all()
    assert (table["ATen ops ce"] > 3).all() and (table["ATen ops h"] > table["ATen ops ce"]).all()
