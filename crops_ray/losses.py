"""Contrastive losses for CroPS dense retrieval (arXiv 2511.15443).

Two losses live here:

* :func:`infonce` -- the DPR baseline: one positive column per query row, every other column of the
  row is a negative (``F.cross_entropy(scores / t, target)``).
* :func:`h_infonce` -- Hierarchical InfoNCE.  Candidates carry a graded relevance level (0..5 for the
  CroPS hierarchical label assignment, level 0 = negative).  A candidate at level ``l > 0`` is a
  positive that competes only with the candidates of *strictly lower* level of the same query row:

      loss_ij = -log( exp(s_ij/t) / (exp(s_ij/t) + sum_{k : l_ik < l_ij} exp(s_ik/t)) )

  so candidates of the same level are neither positives nor negatives to each other, and a level-4
  candidate is pushed above the level-3 ones while a level-3 candidate is never pushed above it.

How :func:`h_infonce` is computed -- one vectorised pass, ``O(B*N + B*L^2)`` time and memory for
``B`` rows, ``N`` candidates and ``L`` levels (no ``[B, N, N]`` tensor, no Python loop over rows or
levels):

1. ``e = exp(s/t - shift)`` with a stabilising shift (the row max; the per-level max when a row's scores
   are spread so wide that ``exp`` would underflow) and per-``(row, level)`` sums
   ``S = scatter_add(e)``, i.e. a stable per-level log-sum-exp ``lse_level = shift + log S``;
2. the exclusive ``logcumsumexp`` over levels gives ``lse_below[b, v]``, the log-sum-exp of the row's
   scores of level ``< v``;
3. only the entries with label > 0 (found once with ``nonzero``; typically a small fraction of an
   in-batch score matrix) get ``d = lse_below[b, l] - s/t``, ``loss = softplus(d)``; a positive with
   nothing below it has ``d = -inf`` and loss exactly 0.

The backward pass is written by hand (a :class:`torch.autograd.Function`): with ``q = sigmoid(d)`` and
``w`` the upstream gradient of each term, ``t * dL/ds_ik = -w_ik q_ik + e_ik * coef[b, l_ik]`` where
``coef[b, u] = sum_{v > u} exp(shift[b, u] - lse_below[b, v]) * sum_{j : l_ij = v} w_ij q_ij`` is a tiny
``[B, L]`` table: the dense part of the gradient is one gather and one multiply, like cross-entropy's.
"""

from __future__ import annotations

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

#: Largest spread of ``s / t`` below its row max for which every level is shifted by the row max (fast
#: path): ``exp(-range)`` must stay a normal number (float32 min ~ exp(-87), float64 ~ exp(-708)) and the
#: backward's per-level ratio ``exp(range)`` far from overflow.  Wider rows use the per-level max shift.
#: Cosine scores at t = 0.05 span at most 2 / 0.05 = 40.
_ROW_SHIFT_MAX_RANGE = {torch.float32: 60.0, torch.float64: 600.0}


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
        raise ValueError(
            f"labels shape {tuple(labels.shape)} does not match scores shape {tuple(scores.shape)}"
        )
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

    Rejects negative labels (they are non-zero, so checking the found entries is enough); one host sync
    (``nonzero``), and the mean's denominator comes for free as ``len(positions)``.
    """
    positions = labels.reshape(-1).nonzero().squeeze(1)
    levels = labels.reshape(-1).index_select(0, positions).long()
    if positions.numel() == 0:
        return positions, levels, 1
    lowest, highest = (int(v) for v in torch.aminmax(levels))
    if lowest < 0:
        raise ValueError(f"labels must be >= 0 (0 = negative, >0 = relevance level), got min {lowest}")
    return positions, levels, highest + 1


def _exclusive_logcumsumexp(x: torch.Tensor) -> torch.Tensor:
    """``out[:, v] = logsumexp(x[:, :v])`` (``-inf`` for ``v = 0``) over a small ``[B, L]`` tensor."""
    return F.pad(torch.logcumsumexp(x, dim=1)[:, :-1], (1, 0), value=-math.inf)


def _shifted_exp(scores: torch.Tensor, index: torch.Tensor, inv_t: float, num_levels: int):
    """Return ``(shift [B, L], e [B, N])`` with ``e = exp(scores/t - shift[row, level]) <= 1``.

    Fast path: the shift is the row max for every level (no gather).  If some ``e`` would then fall
    below ``exp(-_ROW_SHIFT_MAX_RANGE)`` (a row spread so wide that a whole level could underflow), the
    shift is the per-level max instead (one ``scatter_reduce`` + ``gather``), which keeps every level's
    log-sum-exp exact for arbitrarily spread scores.
    """
    dtype = _compute_dtype(scores.dtype)
    row_max = scores.amax(dim=1, keepdim=True).to(dtype).mul_(inv_t)
    e = torch.add(-row_max, scores, alpha=inv_t).exp_()  # one fused pass: exp(s/t - max/t)
    if float(e.amin()) >= math.exp(-_ROW_SHIFT_MAX_RANGE[dtype]):
        return row_max.expand(-1, num_levels), e
    x = torch.mul(scores.to(dtype), inv_t, out=e)  # reuse the buffer
    shift = torch.full((x.shape[0], num_levels), -math.inf, dtype=dtype, device=x.device)
    shift.scatter_reduce_(1, index, x, reduce="amax", include_self=True)
    return shift, x.sub_(shift.gather(1, index)).exp_()


class _HInfoNCE(torch.autograd.Function):
    """Fused H-InfoNCE forward/backward; see the module docstring for the algorithm and gradient.

    ``positions``/``levels`` are the flat indices and levels of the label > 0 entries.  Every exponent
    evaluated is bounded: ``e <= 1`` and the per-level ratio ``exp(shift[u] - lse_below[v])`` is
    ``<= exp(_ROW_SHIFT_MAX_RANGE)`` (row-max shift) or ``<= 1`` (per-level-max shift).
    """

    @staticmethod
    def forward(ctx, scores, index, positions, levels, temperature, reduction, num_levels):
        batch, width = scores.shape
        dtype = _compute_dtype(scores.dtype)
        inv_t = 1.0 / temperature
        ctx.inv_t, ctx.reduction, ctx.scores_dtype = inv_t, reduction, scores.dtype
        ctx.count = positions.numel()
        if ctx.count == 0:  # nothing to rank: a zero that is still connected to `scores`
            ctx.shape = scores.shape
            zeros = torch.zeros(scores.shape, dtype=dtype, device=scores.device)
            return zeros if reduction == "none" else zeros.sum()

        shift, e = _shifted_exp(scores, index, inv_t, num_levels)
        level_sum = torch.zeros_like(shift).scatter_add_(1, index, e)
        lse_level = level_sum.log_().add_(shift)  # -inf for an empty level
        lse_below = _exclusive_logcumsumexp(lse_level)

        cell = torch.div(positions, width, rounding_mode="floor").mul_(num_levels).add_(levels)
        x = scores.reshape(-1).index_select(0, positions).to(dtype).mul_(inv_t)
        d = lse_below.reshape(-1).index_select(0, cell).sub_(x)  # -inf where nothing is below
        terms = F.softplus(d, threshold=_SOFTPLUS_THRESHOLD[dtype])

        # ratio[b, u, v] = exp(shift[u] - lse_below[v]) for v > u, else 0.  Rows u of empty levels may
        # hold inf/nan (-inf - -inf); they are never gathered, since no entry has such a level.
        ratio = (shift.unsqueeze(2) - lse_below.unsqueeze(1)).exp_().triu_(diagonal=1)
        ctx.save_for_backward(index, e, positions, cell, torch.sigmoid(d), ratio)

        if reduction == "none":
            return torch.zeros(batch * width, dtype=dtype, device=e.device).index_copy_(
                0, positions, terms).view(batch, width)
        loss = terms.sum()
        return loss / ctx.count if reduction == "mean" else loss

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):
        no_grad = (None,) * 6
        if ctx.count == 0:
            return (torch.zeros(ctx.shape, dtype=ctx.scores_dtype, device=grad_out.device),) + no_grad
        index, e, positions, cell, q, ratio = ctx.saved_tensors
        batch, num_levels = ratio.shape[:2]
        if ctx.reduction == "none":
            weight = grad_out.reshape(-1).index_select(0, positions).to(q.dtype)
        else:
            weight = grad_out.to(q.dtype) / (ctx.count if ctx.reduction == "mean" else 1)
        wq = q * weight
        level_wq = torch.zeros(batch * num_levels, dtype=q.dtype, device=q.device).index_add_(0, cell, wq)
        coef = torch.bmm(ratio, level_wq.view(batch, num_levels, 1)).squeeze(2).mul_(ctx.inv_t)
        grad = coef.gather(1, index).mul_(e)
        grad.view(-1).index_add_(0, positions, wq, alpha=-ctx.inv_t)
        return (grad.to(ctx.scores_dtype),) + no_grad


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

    Costs a few host syncs (``nonzero`` on the labels, their max level, and the check that picks the
    row-max shift): negligible on CPU, a few microseconds each on GPU.
    """
    _check_scores_labels(scores, labels)
    _check_temperature(temperature)
    _check_reduction(reduction)
    positions, levels, num_levels = _positive_entries(labels)
    index = labels.long().contiguous()  # gather/scatter index; keeps the gradient's flat view valid
    return _HInfoNCE.apply(scores, index, positions, levels, float(temperature), reduction, num_levels)


def h_infonce_reference(
    scores: torch.Tensor,
    labels: torch.Tensor,
    temperature: float = DEFAULT_TEMPERATURE,
    reduction: str = "mean",
) -> torch.Tensor:
    """SLOW reference of :func:`h_infonce`: explicit Python loops over rows and entries.

    Only for tests and as the executable definition of the loss; it is differentiable through plain
    autograd.  The mean of no terms is defined as ``0`` (connected to ``scores``), like
    :func:`h_infonce`.
    """
    _check_scores_labels(scores, labels)
    _check_temperature(temperature)
    _check_reduction(reduction)
    _positive_entries(labels)
    x = scores.to(_compute_dtype(scores.dtype)) / temperature
    terms = [[x[i, j] * 0.0 for j in range(x.shape[1])] for i in range(x.shape[0])]
    count = 0
    for i in range(x.shape[0]):
        for j in range(x.shape[1]):
            level = int(labels[i, j])
            if level == 0:
                continue
            count += 1
            below = [k for k in range(x.shape[1]) if int(labels[i, k]) < level]
            logits = torch.stack([x[i, j]] + [x[i, k] for k in below])
            terms[i][j] = torch.logsumexp(logits, dim=0) - x[i, j]
    table = torch.stack([torch.stack(row) for row in terms]) if x.numel() else x * 0.0
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
            f"target must be a 1-D [B] tensor with B = {scores.shape[0]}, "
            f"got {getattr(target, 'shape', target)!r}"
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
