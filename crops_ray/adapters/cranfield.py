"""The Cranfield collection (1400 aeronautics abstracts, 225 queries, graded judgments) in our layout.

Documents become ``videos`` (id ``cran-<n>``, text = title + abstract); judgments become ``eval/qrels.parquet``.
There are no logs, so only the corpus-and-qrels metrics (NDCG, MRR) apply.

Grade direction: the collection's own readme (Cleverdon) says code 1 = "complete answer", 2 = high
relevance, 3 = useful background, 4 = minimum interest (5 = no interest, not listed). Some tools (ir_datasets)
read the scale the other way round. We follow the readme: ``grade = 5 - code``, so a complete answer is
grade 4 and minimum interest grade 1; code -1 rows (one per query, an artifact) are dropped. Query ids in
``cranqrel`` are the sequential order of queries in ``cran.qry``, not its ``.I`` numbers.
"""

from __future__ import annotations

import os
import re

import pyarrow as pa

from crops_ray import schema as S
from crops_ray import storage

BEST_CODE, WORST_CODE = 1, 4


def _records(path: str) -> list[dict[str, str]]:
    """SMART format: ``.I id`` starts a record, ``.X`` lines open field X."""
    records, field = [], None
    with open(path, encoding="latin-1") as f:
        for line in f:
            m = re.match(r"^\.([A-Z])\s*(.*)$", line.rstrip("\n"))
            if m and m.group(1) == "I":
                records.append({"I": m.group(2).strip()})
                field = None
            elif m:
                field = m.group(1)
                records[-1].setdefault(field, "")
            elif field and records:
                records[-1][field] += " " + line.strip()
    return [{k: " ".join(v.split()) for k, v in r.items()} for r in records]


def grade_of(code: int) -> int:
    """Cleverdon code (1 best .. 4 minimum interest) -> our gain (4 best .. 1); anything else -> 0."""
    return 5 - code if BEST_CODE <= code <= WORST_CODE else 0


def convert(source: str, out: str) -> dict[str, int]:
    docs = _records(os.path.join(source, "cran.all.1400"))
    queries = [r.get("W", "") for r in _records(os.path.join(source, "cran.qry"))]
    videos = pa.table(
        {
            "video_id": [f"cran-{d['I']}" for d in docs],
            "text": [(d.get("T", "").rstrip(" .") + ". " + d.get("W", "")).strip() for d in docs],
        },
        schema=S.VIDEOS_SCHEMA,
    )
    rows = {"query": [], "video_id": [], "grade": []}
    dropped = 0
    with open(os.path.join(source, "cranqrel")) as f:
        for line in f:
            parts = line.split()
            if len(parts) != 3:
                continue
            qid, doc, code = int(parts[0]), parts[1], int(parts[2])
            grade = grade_of(code)
            if grade == 0 or not 1 <= qid <= len(queries):
                dropped += 1
                continue
            rows["query"].append(queries[qid - 1])
            rows["video_id"].append(f"cran-{doc}")
            rows["grade"].append(grade)
    qrels = pa.table(rows, schema=S.QRELS_SCHEMA)
    with storage.Output(out, inputs=[source]) as root:
        storage.write_table(videos, f"{root}/videos/part-00000.parquet")
        storage.write_table(qrels, f"{root}/eval/qrels.parquet")
    return {
        "documents": videos.num_rows,
        "queries": len(set(rows["query"])),
        "judgments": qrels.num_rows,
        "dropped_judgments": dropped,
    }
