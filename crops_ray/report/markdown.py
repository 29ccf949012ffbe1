"""The one way a report makes a markdown table: ``pandas.DataFrame.to_markdown`` (tabulate's pipe format)."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd


def markdown_table(
    frame: pd.DataFrame,
    *,
    index: bool = True,
    floatfmt: str = "g",
    text: bool = False,
    align: Sequence[str] | None = None,
) -> str:
    """``frame`` as a markdown table.

    Numbers are formatted with ``floatfmt``. ``text=True`` is for cells already formatted as text ("82.6 ± 1.2",
    "1,234", an alpha "0.6"): tabulate parses none of them as numbers, so none is reformatted, and the columns
    (the index first, when shown) are aligned by ``align``, "left" or "right" per column (default: the first
    left, the others right).
    """
    if not text:
        return frame.to_markdown(index=index, floatfmt=floatfmt)
    columns = frame.shape[1] + (1 if index else 0)
    align = list(align) if align is not None else ["left"] + ["right"] * (columns - 1)
    if len(align) != columns:
        raise ValueError(f"align: {len(align)} entries for {columns} columns")
    return frame.to_markdown(index=index, disable_numparse=True, colalign=align)


def key_value_table(pairs, headers: Sequence[str] = ("statistic", "value")) -> str:
    """``(name, value)`` pairs as a two-column table; integers get thousands separators, the values align right."""
    rows = [(k, f"{v:,}" if isinstance(v, int) and not isinstance(v, bool) else str(v)) for k, v in pairs]
    return markdown_table(pd.DataFrame(rows, columns=list(headers)), index=False, text=True)


def rows_table(rows: list[dict], columns: Sequence[str] | None = None, **kwargs) -> str:
    """A list of row dicts (the columns in first-seen order, or ``columns``) as a table without an index."""
    return markdown_table(pd.DataFrame(rows, columns=columns), index=False, **kwargs)
