"""The README's block between the table1 markers, written by ``pipelines/demo.py --readme``."""

from __future__ import annotations

import os
import shutil

START, END = "<!-- table1:start (written by pipelines/demo.py --readme) -->", "<!-- table1:end -->"


def reuse_note(out: str, seeds: list[int], reused: list[int], partly: dict[int, list[str]], total: float) -> str:
    """The block's last line for a ``--reuse`` run: which seeds (or which of their methods) were read back from
    ``out`` and how long the rest took now."""
    notes = []
    if reused:
        notes.append(f"seed(s) {', '.join(map(str, reused))} reused whole")
    for s, names in partly.items():
        notes.append(f"seed {s}'s data and {', '.join(names)} reused")
    ran = [s for s in seeds if s not in reused]
    return f"With `--reuse` from `{out}`: {'; '.join(notes)} (see docs/measured.md for their time)" + (
        f"; the rest of seed(s) {', '.join(map(str, ran))} ran now in {total / 60:.1f} min." if ran else "."
    )


def update_readme(readme: str, table: str, chart: str, total: float, note: str | None = None) -> None:
    """Replace the block between the README's table1 markers with this run's tables, chart (copied to the README's
    docs/) and ``note``, by default the run's wall time (``total`` seconds)."""
    with open(readme) as f:
        text = f.read()
    if START not in text or END not in text:
        raise SystemExit(f"{readme}: no '{START}' ... '{END}' block to replace")
    docs = os.path.join(os.path.dirname(os.path.abspath(readme)), "docs")
    os.makedirs(docs, exist_ok=True)
    shutil.copyfile(chart, os.path.join(docs, "table1.png"))
    block = "\n".join(
        [
            START,
            table,
            "",
            "![Table 1](docs/table1.png)",
            "",
            note or f"Wall time of the whole run on this machine: {total / 60:.1f} min.",
            END,
        ]
    )
    head, rest = text.split(START, 1)
    with open(readme, "w") as f:
        f.write(head + block + rest.split(END, 1)[1])
