"""Contrastive losses for CroPS dense retrieval (arXiv 2511.15443).

Two losses live here (one module over 300 lines on purpose: the fused H-InfoNCE, forward and hand-written
backward, sits next to its loop reference and the InfoNCE it must agree with, which the tests compare):

* :func:`infonce` -- the DPR baseline: one positive column per query row, every other column of the
  row is a negative (``F.cross_entropy(scores / t, target)``).
* :func:`h_infonce` -- Hierarchical InfoNCE.  Candidates carry a graded relevance level (0..5 for the
  CroPS hierarchical label assignment, level 0 = negative).  A candidate at level ``l > 0`` is a
  positive that competes only with the candidates of *strictly lower* level of the same query row:

      loss_ij = -log( exp(s_ij/t) / (exp(s_ij/t) + sum_{k : l_ik < l_ij} exp(s_ik/t)) )

  so candidates of the same level are neither positives nor negatives to each other, and a level-4
  candidate is pushed above the level-3 ones while a level-3 candidate is never pushed above it.

How :func:`h_infonce` is computed -- ``O(B*N + P + B*L^2)`` time and memory for ``B`` rows, ``N``
candidates, ``P`` positives (label > 0) and ``L`` levels; no ``[B, N, N]`` or ``[B, N, L]`` tensor, no
scatter over the dense matrix, no Python loop over rows or levels:

1. the positives are found once (``nonzero``; typically a small fraction of an in-batch matrix): their
   flat positions and ``cell = row * L + level``;
2. level 0 is every other entry, handled densely like a softmax: ``x0 = s/t`` with the positives masked
   to ``-inf``, ``shift0`` its row max, ``lse0 = shift0 + log(sum(exp(x0 - shift0)))`` (each ``exp`` is
   taken as ``exp2``, see :data:`_EXP2_FLOOR`);
3. levels >= 1 touch the ``P`` positives only: the max of each ``(row, level)`` cell (``scatter_reduce``)
   and ``lse_level = cell max + log(sum(exp(x - cell max)))`` (``index_add``).  Every entry is shifted by
   the max of its own ``(row, level)``, so each level's log-sum-exp is exact however widely the row's
   scores are spread (dot-product scores at ``t = 0.05`` span thousands, far past ``exp``'s range);
4. the exclusive ``logcumsumexp`` over levels gives ``lse_below[b, v]``, the log-sum-exp of the row's
   scores of level ``< v``; each positive gets ``d = lse_below[b, l] - s/t`` and ``loss = softplus(d)``
   (a positive with nothing below it has ``d = -inf`` and loss exactly 0).

The backward pass is written by hand (a :class:`torch.autograd.Function`): with ``q = sigmoid(d)`` and
``w`` the upstream gradient of each term, ``t * dL/ds_ik = -w_ik q_ik + e_ik * coef[b, l_ik]``, where
``e_ik = exp(s_ik/t - shift[b, l_ik])`` is kept from the forward and
``coef[b, u] = sum_{v > u} exp(shift[b, u] - lse_below[b, v]) * sum_{j : l_ij = v} w_ij q_ij`` is a tiny
``[B, L]`` table.  The dense part of the gradient is one multiply by ``coef[b, 0]``, fewer passes than
cross-entropy's backward; the positives' entries are then written with one ``index_copy``.
"""

from __future__ import annotations

import functools
import math
import numbers

import torch
import torch.nn.functional as F

__all__ = [
    "DEFAULT_TEMPERATURE",
    "REDUCTIONS",
    "h_infonce",
    "h_infonce_reference",
    "infonce",
    "infonce_from_labels",
]

#: Softmax temperature used by the CroPS paper (and by DPR-style in-batch training in general).
DEFAULT_TEMPERATURE = 0.05

#: Accepted values of the ``reduction`` argument.
REDUCTIONS = ("mean", "sum", "none")

#: Floating dtypes computed in their own precision; any other floating dtype (bfloat16, float16) is
#: upcast to :data:`_COMPUTE_DTYPE` for the computation.
_NATIVE_DTYPES = (torch.float32, torch.float64)
_COMPUTE_DTYPE = torch.float32

#: ``softplus(d)`` is returned as ``d`` above this threshold; ``log1p(exp(-d))`` is then below the dtype's
#: rounding error of ``d`` (``exp(-20) ~ 2e-9`` for float32, ``exp(-40) ~ 4e-18`` for float64).
_SOFTPLUS_THRESHOLD = {torch.float32: 20.0, torch.float64: 40.0}

#: The exponentials are taken in base 2 (``exp2``): on CPU it runs 2-3x faster than ``exp``, whose MKL
#: kernel also slows down 15-30x on results near underflow -- most entries of a dot-product score row.
#: Exponents are clamped from below at this value, so every result stays a normal number (float32 min
#: 2**-126, float64 2**-1022), and a clamped entry adds at most ``2**floor`` to a per-level sum that is
#: >= 1 (the level's max contributes ``2**0``): far below rounding.
_EXP2_FLOOR = {torch.float32: -80.0, torch.float64: -900.0}
_LN2 = math.log(2.0)


# --------------------------------------------------------------------------------------- validation


def _check_temperature(temperature: float) -> None:
    """Reject non-numeric, non-finite and non-positive temperatures (they make ``s / t`` meaningless)."""
    if isinstance(temperature, bool) or not isinstance(temperature, numbers.Real):
        raise ValueError(f"temperature must be a positive float, got {temperature!r}")
    if not math.isfinite(temperature) or temperature <= 0:
        raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}")


def _check_reduction(reduction: str) -> None:
    """Reject anything but ``"mean"``, ``"sum"`` and ``"none"``."""
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")


def _check_scores_labels(scores: torch.Tensor, labels: torch.Tensor) -> None:
    """Validate the ``[B, N]`` float scores / ``[B, N]`` integer labels pair (shape, dtype, device)."""
    if not isinstance(scores, torch.Tensor) or not isinstance(labels, torch.Tensor):
        raise ValueError("scores and labels must be torch.Tensor objects")
    if scores.dim() != 2:
        raise ValueError(f"scores must be 2-D [B, N], got shape {tuple(scores.shape)}")
    if labels.shape != scores.shape:
        raise ValueError(f"labels shape {tuple(labels.shape)} does not match scores shape {tuple(scores.shape)}")
    if not scores.is_floating_point():
        raise ValueError(f"scores must be a floating tensor, got dtype {scores.dtype}")
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise ValueError(f"labels must be an integer tensor (levels 0..L-1), got dtype {labels.dtype}")
    if labels.device != scores.device:
        raise ValueError(f"labels are on {labels.device} but scores are on {scores.device}")


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """float32/float64 are kept; lower-precision floats (bfloat16, float16) are computed in float32."""
    return dtype if dtype in _NATIVE_DTYPES else _COMPUTE_DTYPE


# ------------------------------------------------------------------------------------ H-InfoNCE core


def _positive_entries(labels: torch.Tensor):
    """Flat indices and levels of the entries with label != 0, and the number of levels ``L``.

    Rejects negative labels (they are non-zero, so checking the found entries is enough).  Host syncs:
    ``nonzero`` and one read of the found levels' min/max; the mean's denominator is ``len(positions)``.
    """
    flat = labels.reshape(-1)
    positions = flat.nonzero().squeeze(1)
    levels = flat.index_select(0, positions).long()
    if positions.numel() == 0:
        return positions, levels, 1
    lowest, highest = (int(v) for v in torch.aminmax(levels))
    if lowest < 0:
        raise ValueError(f"labels must be >= 0 (0 = negative, >0 = relevance level), got min {lowest}")
    return positions, levels, highest + 1


def _exclusive_logcumsumexp(x: torch.Tensor) -> torch.Tensor:
    """``out[:, v] = logsumexp(x[:, :v])`` (``-inf`` for ``v = 0``) over a small ``[B, L]`` tensor."""
    return F.pad(torch.logcumsumexp(x, dim=1)[:, :-1], (1, 0), value=-math.inf)


@functools.lru_cache(maxsize=16)
def _strictly_upper(size: int, device: torch.device) -> torch.Tensor:
    """``mask[u, v] = u < v`` for the ``[B, L, L]`` level tables (built once per size and device)."""
    index = torch.arange(size, device=device)
    return index.unsqueeze(1) < index


class _HInfoNCE(torch.autograd.Function):
    """Fused H-InfoNCE forward/backward; see the module docstring for the algorithm and gradient.

    ``positions`` are the flat indices of the label > 0 entries, ``cells`` their ``row * L + level``.
    Every exponential that is used is <= 1: each entry is shifted by the max of its own (row, level), and
    the backward's ratio ``exp(shift[u] - lse_below[v])`` (``v > u``) is <= 1.
    """

    @staticmethod
    def forward(ctx, scores, positions, cells, temperature, reduction, num_levels):
        batch, width = scores.shape
        dtype = _compute_dtype(scores.dtype)
        inv_t, floor = 1.0 / temperature, _EXP2_FLOOR[dtype]
        ctx.inv_t, ctx.reduction, ctx.scores_dtype = inv_t, reduction, scores.dtype
        ctx.count = positions.numel()
        if ctx.count == 0:  # nothing to rank: a zero that is still connected to `scores`
            ctx.shape = scores.shape
            zeros = torch.zeros(scores.shape, dtype=dtype, device=scores.device)
            return zeros if reduction == "none" else zeros.sum()

        # Shifts stay in score units and exponentials are taken in base 2, e = exp2((s - shift) * to_exp2):
        # the one rounding before exp2 is of a small number, s - shift, never of a large s / t.
        to_exp2 = inv_t / _LN2

        # Level 0 = every entry that is not a positive, dense: shift by its row max.
        e0 = torch.empty((batch, width), dtype=dtype, device=scores.device)  # contiguous: flat indexing
        flat = e0.copy_(scores).view(-1)
        s_pos = flat.index_select(0, positions)
        flat.index_fill_(0, positions, -math.inf)
        max0 = e0.amax(dim=1, keepdim=True)  # -inf for a row without (finite) level-0 entries
        e0.sub_(max0.nan_to_num(neginf=0.0)).mul_(to_exp2).clamp_min_(floor).exp2_()  # such a row stays finite
        shift0 = max0.mul_(inv_t)
        lse0 = e0.sum(dim=1, keepdim=True).log_().add_(shift0)  # and gets -inf here

        # Levels >= 1, on the positives only: shift by the max of each (row, level) cell.
        shift = torch.full((batch * num_levels,), -math.inf, dtype=dtype, device=scores.device)
        shift.scatter_reduce_(0, cells, s_pos, reduce="amax")
        e_pos = (s_pos - shift.index_select(0, cells)).mul_(to_exp2).clamp_min_(floor).exp2_()
        shift = shift.mul_(inv_t).view(batch, num_levels)  # units of s / t from here on
        lse_level = (
            torch.zeros(batch * num_levels, dtype=dtype, device=scores.device)
            .index_add_(0, cells, e_pos)
            .log_()
            .view(batch, num_levels)
            .add_(shift)
        )  # -inf for an empty level
        shift[:, :1], lse_level[:, :1] = shift0, lse0
        x_pos = s_pos.mul_(inv_t)

        lse_below = _exclusive_logcumsumexp(lse_level)
        d = lse_below.view(-1).index_select(0, cells).sub_(x_pos)  # -inf where nothing is below
        terms = F.softplus(d, threshold=_SOFTPLUS_THRESHOLD[dtype])
        ctx.save_for_backward(e0, positions, cells, e_pos, d, shift, lse_below)

        if reduction == "none":
            return (
                torch.zeros(batch * width, dtype=dtype, device=e0.device)
                .index_copy_(0, positions, terms)
                .view(batch, width)
            )
        loss = terms.sum()
        return loss / ctx.count if reduction == "mean" else loss

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):
        no_grad = (None,) * 5
        if ctx.count == 0:
            return (torch.zeros(ctx.shape, dtype=ctx.scores_dtype, device=grad_out.device),) + no_grad
        e0, positions, cells, e_pos, d, shift, lse_below = ctx.saved_tensors
        batch, num_levels = shift.shape
        # wq = w * q / t, with w the upstream gradient of each term (a 0-d grad_out broadcasts).
        scale = ctx.inv_t / (ctx.count if ctx.reduction == "mean" else 1)
        weight = torch.take(grad_out, positions) if ctx.reduction == "none" else grad_out  # take: no copy
        wq = torch.sigmoid(d).mul_(weight).mul_(scale)
        level_wq = torch.zeros(batch * num_levels, dtype=d.dtype, device=d.device).index_add_(0, cells, wq)
        # ratio[b, u, v] = exp(shift[u] - lse_below[v]) for v > u, else 0.  NaN (-inf - -inf) only where
        # level u is empty and nothing is below v, so level v's positives have q = 0: it is a 0.  (A mask,
        # not triu_: triu_ opens a parallel region even for a 6 x 6 matrix, milliseconds on a busy machine.)
        above = (shift.unsqueeze(2) - lse_below.unsqueeze(1)).exp_().nan_to_num_(nan=0.0)
        ratio = torch.where(_strictly_upper(num_levels, d.device), above, 0.0)
        coef = torch.bmm(ratio, level_wq.view(batch, num_levels, 1)).view(batch, num_levels)
        grad = e0 * coef[:, :1]  # every level-0 entry; the positives' slots are overwritten next
        grad_pos = coef.view(-1).index_select(0, cells).mul_(e_pos).sub_(wq)
        grad.view(-1).index_copy_(0, positions, grad_pos)
        return (grad if grad.dtype == ctx.scores_dtype else grad.to(ctx.scores_dtype),) + no_grad


def h_infonce(
    scores: torch.Tensor,
    labels: torch.Tensor,
    temperature: float = DEFAULT_TEMPERATURE,
    reduction: str = "mean",
) -> torch.Tensor:
    """Hierarchical InfoNCE over graded relevance levels.

    Args:
        scores: float ``[B, N]``, similarity of query ``i`` to candidate ``j``.
        labels: integer ``[B, N]`` (any integer dtype), relevance level of each candidate, ``0`` =
            negative.  Levels are ``0..5`` in CroPS but any maximum level is supported.
        temperature: softmax temperature ``t > 0``.
        reduction: ``"mean"`` (over the entries with label > 0), ``"sum"``, or ``"none"`` (a ``[B, N]``
            tensor, ``0`` where label == 0).

    Returns:
        For every entry with ``l_ij > 0`` the term
        ``-log(exp(s_ij/t) / (exp(s_ij/t) + sum_{k: l_ik < l_ij} exp(s_ik/t)))``, reduced as asked.  A
        positive with nothing of lower level in its row contributes ``0``.

        If no entry has label > 0 the result is a zero that is still connected to ``scores`` in the
        autograd graph (with zero gradients), so every DDP rank runs the same backward and none hangs
        waiting for gradients another rank never produces.

        float32/float64 scores are computed in their own precision; bfloat16/float16 scores are
        computed in float32 and the loss is returned in float32 (the gradient keeps the scores' dtype).

    Costs two host syncs (``nonzero`` on the labels, then the min and max of the levels found, which
    validate them and size the ``[B, L]`` tables): negligible on CPU, a few microseconds each on GPU.
    """
    _check_scores_labels(scores, labels)
    _check_temperature(temperature)
    _check_reduction(reduction)
    positions, levels, num_levels = _positive_entries(labels)
    rows = torch.div(positions, scores.shape[1], rounding_mode="floor")
    cells = torch.add(levels, rows, alpha=num_levels)
    return _HInfoNCE.apply(scores, positions, cells, float(temperature), reduction, num_levels)


def h_infonce_reference(
    scores: torch.Tensor,
    labels: torch.Tensor,
    temperature: float = DEFAULT_TEMPERATURE,
    reduction: str = "mean",
) -> torch.Tensor:
    """SLOW reference of :func:`h_infonce`: an explicit Python loop over rows and their levels.

    Only for tests and as the executable definition of the loss; it is differentiable through plain
    autograd.  The entries of one level in one row share their competitors (the row's entries of lower
    level), so each gets ``logaddexp(x_ij, logsumexp(x_i[below])) - x_ij``.  The mean of no terms is
    defined as ``0`` (connected to ``scores``), like :func:`h_infonce`.
    """
    _check_scores_labels(scores, labels)
    _check_temperature(temperature)
    _check_reduction(reduction)
    _positive_entries(labels)
    x = scores.to(_compute_dtype(scores.dtype)) / temperature
    table = x * 0.0  # connected to `scores`; 0 where label == 0
    count = 0
    for i in range(x.shape[0]):
        for level in sorted(set(labels[i].tolist()) - {0}):
            at_level = (labels[i] == level).nonzero().squeeze(1)
            below = torch.logsumexp(x[i][labels[i] < level], dim=0)  # -inf when nothing is below
            positives = x[i, at_level]
            rows = torch.full_like(at_level, i)
            table = table.index_put((rows, at_level), torch.logaddexp(positives, below) - positives)
            count += at_level.numel()
    if reduction == "none":
        return table
    total = table.sum()
    return total / max(count, 1) if reduction == "mean" else total


# ------------------------------------------------------------------------------------------ InfoNCE


def infonce(
    scores: torch.Tensor,
    target: torch.Tensor,
    temperature: float = DEFAULT_TEMPERATURE,
) -> torch.Tensor:
    """DPR in-batch InfoNCE: row ``i``'s positive is column ``target[i]``, every other column is a negative.

    Args:
        scores: float ``[B, N]`` similarities.
        target: long ``[B]``, the positive column of each row.
        temperature: softmax temperature ``t > 0``.

    Returns:
        ``F.cross_entropy(scores / t, target)`` (mean over rows).
    """
    if not isinstance(scores, torch.Tensor) or scores.dim() != 2:
        raise ValueError(f"scores must be a 2-D [B, N] tensor, got {getattr(scores, 'shape', scores)!r}")
    if not isinstance(target, torch.Tensor) or target.dim() != 1 or target.shape[0] != scores.shape[0]:
        raise ValueError(
            f"target must be a 1-D [B] tensor with B = {scores.shape[0]}, got {getattr(target, 'shape', target)!r}"
        )
    if target.is_floating_point() or target.dtype == torch.bool:
        raise ValueError(f"target must be an integer tensor of column indices, got dtype {target.dtype}")
    _check_temperature(temperature)
    return F.cross_entropy(scores / temperature, target.long())


def infonce_from_labels(
    scores: torch.Tensor,
    labels: torch.Tensor,
    temperature: float = DEFAULT_TEMPERATURE,
    reduction: str = "mean",
) -> torch.Tensor:
    """InfoNCE from a binary ``[B, N]`` label matrix: each positive (label > 0) against the row's negatives.

    Every positive is scored against all label-0 entries of its row only (other positives are ignored),
    i.e. exactly :func:`h_infonce` with every positive mapped to level 1 (``labels.clamp_max(1)``, which
    is ``(labels > 0).long()`` for valid labels and leaves negative labels for :func:`h_infonce` to
    reject).  With one positive per row this equals :func:`infonce`.
    """
    _check_scores_labels(scores, labels)
    return h_infonce(scores, labels.clamp_max(1), temperature=temperature, reduction=reduction)
