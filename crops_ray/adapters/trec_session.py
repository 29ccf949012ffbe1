"""The TREC 2013 Session Track log (real users' reformulations, result pages and clicks) in the log contract.

The track's XML (``sessiontrack2013.xml``) holds sessions of interactions; each interaction is a query, the ten
results shown for it (ClueWeb12 documents with a title and a snippet) and the clicks on them. Mapping:

- a session is a user (``user_id = trec-s<session>``); the track has no other user identity;
- an interaction is a search request (``request_id = trec-s<session>-i<interaction>``); its time is
  ``base_ts`` + one day per session number + the interaction's start (seconds from the session start, as
  recorded), so gaps inside a session are the real ones;
- every shown result is a candidate at stage ``exposed``; a clicked one is ``clicked`` instead (with
  ``min_dwell_s`` > 0, only clicks whose recorded dwell reached it; the file writes "NA" for unknown times);
- a result document is a video: ``video_id`` = its ClueWeb12 id, ``text`` = title and snippet, HTML entities
  decoded (the file escapes some twice) and whitespace collapsed;
- ``rec_log`` is empty (the track has no recommendation feed), so only P1 applies.

The session's final ``currentquery`` has no results or clicks and becomes no row; results without an id or
any text, and clicks on a rank that was not shown, are skipped and counted.

Evaluation (``eval_fraction`` > 0): the track ships no relevance judgments here (its 2013 qrels grade ClueWeb12
documents and are in no copy we have), so held-out sessions are the test set, as a platform would hold out
later traffic. A session is held out when a hash of (seed, session number) falls under ``eval_fraction``; its
rows leave the log and become ``eval/``:

- ``ct``: its clicked (query, document) pairs;
- ``qr``: for a reformulation (the next query of the session, different, issued within 90 s), the documents
  clicked under the new query, credited to the original one (the paper's QR set);
- ``qrels``: its clicked documents graded by dwell, 2 for a satisfied click (dwell >= 30 s, Fox et al. 2005) and
  1 for a shorter or unrecorded one: NDCG on clicks, not on judgments; unclicked documents count as 0.

Topics recur across sessions (133 sessions over 61 topics), but queries rarely repeat word for word: with the
default split 2 of the 56 test queries were also typed in a training session. ``import.json`` records it, and the
demo's report repeats it.
"""

from __future__ import annotations

import hashlib
import html
import json
import os
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc

from crops_ray import schema as S
from crops_ray import storage
from crops_ray.sources import Source

DAY = 86_400
BASE_TS = 1_370_044_800  # 2013-06-01T00:00:00Z, around when the track's sessions were recorded
REFORMULATION_WINDOW_S = 90  # the paper's P1 window, also the QR test set's
SATISFIED_DWELL_S = 30  # a click with at least this dwell is "satisfied" (Fox et al. 2005): qrels grade 2
_MOJIBAKE = re.compile("[\xc2-\xf4][\x80-\xbf]+")  # UTF-8 bytes read as Latin-1: "CittÃ\xa0" for "Città"


@dataclass
class ImportStats:
    sessions: int = 0
    interactions: int = 0
    interactions_without_results: int = 0
    current_queries_skipped: int = 0
    results: int = 0
    results_skipped: int = 0
    clicks: int = 0
    clicks_skipped: int = 0
    documents: int = 0
    search_rows: int = 0
    topics: dict[str, int] = field(default_factory=dict)
    split: dict = field(default_factory=dict)  # the held-out split's sizes (split_sessions), as in import.json


def _repair(match: re.Match) -> str:
    try:
        return match.group().encode("latin-1").decode("utf-8")
    except UnicodeDecodeError:
        return match.group()


def clean_text(text: str | None) -> str:
    """HTML entities decoded until stable (the file has ``&amp;mdash;``), mojibake repaired, spaces collapsed."""
    if not text:
        return ""
    for _ in range(3):
        decoded = html.unescape(text)
        if decoded == text:
            break
        text = decoded
    text = _MOJIBAKE.sub(_repair, text)
    text = re.sub(r"\\[rnt]", " ", text.replace("\\/", "/").replace('\\"', '"'))  # escapes written out literally
    return " ".join(text.split())


def _seconds(value: str | None) -> float | None:
    """A time attribute in seconds; the file writes "NA" where it was not recorded."""
    try:
        return float(value) if value not in (None, "", "NA") else None
    except ValueError:
        return None


def read_sessions(
    xml_path: str, min_dwell_s: float = 0.0, base_ts: int = BASE_TS, dwell_of: dict | None = None
) -> tuple[pa.Table, pa.Table, ImportStats]:
    """(videos, search_log) tables in the contract's schemas, and what was read and skipped.

    ``dwell_of``: filled with the longest recorded dwell (seconds) per clicked (request_id, document)."""
    if not os.path.exists(xml_path):
        raise FileNotFoundError(f"TREC Session Track XML not found: {xml_path}")
    try:
        root = ET.parse(xml_path).getroot()
    except ET.ParseError as exc:
        raise ValueError(f"{xml_path}: not well-formed XML ({exc})") from exc
    if root.tag != "sessiontrack2013" and not root.findall("session"):
        raise ValueError(f"{xml_path}: expected <sessiontrack2013><session>... (got <{root.tag}>)")
    stats = ImportStats()
    docs: dict[str, str] = {}
    rows: dict[str, list] = {name: [] for name in S.SEARCH_LOG_SCHEMA.names}
    for session in root.iter("session"):
        stats.sessions += 1
        num = int(session.get("num"))
        topic = session.find("topic")
        if topic is not None:
            stats.topics[topic.get("num", "?")] = stats.topics.get(topic.get("num", "?"), 0) + 1
        user = f"trec-s{num}"
        session_ts = base_ts + num * DAY + int(_seconds(session.get("starttime")) or 0)
        stats.current_queries_skipped += len(session.findall("currentquery"))
        for inter in session.findall("interaction"):
            stats.interactions += 1
            query = " ".join((inter.findtext("query") or "").split())
            results = inter.findall("./results/result")
            if not results or not query:
                stats.interactions_without_results += 1
                continue
            start = _seconds(inter.get("starttime"))
            if start is None:
                stats.interactions_without_results += 1  # no time: cannot place it in the session
                continue
            ts = session_ts + int(start)
            request = f"{user}-i{inter.get('num')}"
            by_rank: dict[str, str] = {}
            for r in results:
                stats.results += 1
                doc = (r.findtext("clueweb12id") or "").strip()
                title, snippet = clean_text(r.findtext("title")), clean_text(r.findtext("snippet"))
                text = f"{title}. {snippet}" if title and snippet else (title or snippet)
                if not doc or not text:
                    stats.results_skipped += 1
                    continue
                docs.setdefault(doc, text)
                by_rank[r.get("rank", "")] = doc
            clicked: set[str] = set()
            for click in inter.findall("./clicked/click"):
                stats.clicks += 1
                rank = (click.findtext("rank") or "").strip()
                begin, end = _seconds(click.get("starttime")), _seconds(click.get("endtime"))
                dwell = end - begin if begin is not None and end is not None else None  # "NA": not recorded
                if rank not in by_rank or (min_dwell_s > 0 and (dwell is None or dwell < min_dwell_s)):
                    stats.clicks_skipped += 1
                    continue
                clicked.add(by_rank[rank])
                if dwell is not None and dwell_of is not None:
                    key = (request, by_rank[rank])
                    dwell_of[key] = max(dwell_of.get(key, 0.0), dwell)
            for doc in dict.fromkeys(by_rank.values()):  # a document shown twice on a page is one candidate
                for name, value in (
                    ("request_id", request),
                    ("user_id", user),
                    ("query", query),
                    ("ts", ts),
                    ("video_id", doc),
                    ("stage", Source.CLICKED if doc in clicked else Source.EXPOSED),
                ):
                    rows[name].append(value)
    if not stats.sessions:
        raise ValueError(f"{xml_path}: no <session> elements")
    stats.documents = len(docs)
    stats.search_rows = len(rows["request_id"])
    videos = pa.table({"video_id": list(docs), "text": list(docs.values())}, schema=S.VIDEOS_SCHEMA)
    return videos, pa.table(rows, schema=S.SEARCH_LOG_SCHEMA), stats


def held_out(session_user: str, eval_fraction: float, seed: int) -> bool:
    """Whether a session (its user_id) is in the test set: a stable hash, the same on every machine and run."""
    h = int.from_bytes(hashlib.sha256(f"{seed}:{session_user}".encode()).digest()[:8], "big")
    return h / 2**64 < eval_fraction


def _pairs(pairs) -> pa.Table:
    return pa.table({"query": [q for q, _ in pairs], "video_id": [v for _, v in pairs]}, schema=S.CT_SCHEMA)


def split_sessions(
    search: pa.Table, dwell_of: dict, eval_fraction: float, seed: int = 0
) -> tuple[pa.Table, dict[str, pa.Table], dict]:
    """(the training log, {ct, qr, qrels} tables of the held-out sessions, what the split holds)."""
    rows = search.to_pandas()
    test = rows["user_id"].map(lambda u: held_out(u, eval_fraction, seed)).to_numpy()
    train, held = rows[~test], rows[test]
    clicked = held[held["stage"] == Source.CLICKED]
    ct = sorted(set(zip(clicked["query"], clicked["video_id"])))
    grades: dict[tuple, int] = {}
    for rid, q, v in zip(clicked["request_id"], clicked["query"], clicked["video_id"]):
        grade = 2 if dwell_of.get((rid, v), 0.0) >= SATISFIED_DWELL_S else 1
        grades[(q, v)] = max(grades.get((q, v), 0), grade)
    qr = set()
    requests = held.drop_duplicates("request_id")[["request_id", "user_id", "query", "ts"]]
    clicks_of = clicked.groupby("request_id")["video_id"].apply(list).to_dict()
    for _, session in requests.sort_values(["user_id", "ts", "request_id"]).groupby("user_id"):
        reqs = list(session.itertuples(index=False))
        for a, b in zip(reqs, reqs[1:]):
            if b.query != a.query and 0 <= b.ts - a.ts <= REFORMULATION_WINDOW_S:
                qr.update((a.query, v) for v in clicks_of.get(b.request_id, ()))
    qr = sorted(qr)
    qrels = pa.table(
        {
            "query": [q for q, _ in grades],
            "video_id": [v for _, v in grades],
            "grade": pa.array(list(grades.values()), pa.int8()),
        },
        schema=S.QRELS_SCHEMA,
    )
    train_queries = set(train["query"])
    eval_queries = sorted({q for q, _ in ct} | {q for q, _ in qr})
    info = {
        "eval_fraction": eval_fraction,
        "seed": seed,
        "sessions": {"train": int(train["user_id"].nunique()), "test": int(held["user_id"].nunique())},
        "requests": {"train": int(train["request_id"].nunique()), "test": int(held["request_id"].nunique())},
        "eval_pairs": {"ct": len(ct), "qr": len(qr), "qrels": len(grades)},
        "eval_queries": {
            "ct": len({q for q, _ in ct}),
            "qr": len({q for q, _ in qr}),
            "also_typed_in_training": sum(q in train_queries for q in eval_queries),
            "all": len(eval_queries),
        },
        "satisfied_clicks": sum(g == 2 for g in grades.values()),
    }
    train_table = pa.Table.from_pandas(train, schema=S.SEARCH_LOG_SCHEMA, preserve_index=False)
    return train_table, {"ct": _pairs(ct), "qr": _pairs(qr), "qrels": qrels}, info


IMPORT_NOTES = [
    "Source: TREC 2013 Session Track (NIST), real users' sessions with result pages, clicks and dwell times; "
    "documents are the shown ClueWeb12 results' titles and snippets, so the corpus is only what was shown.",
    "No relevance judgments: the test sets are held-out sessions' clicks (CT), clicks after a reformulation "
    "within 90 s (QR) and dwell-graded clicks (NDCG). A method can only be credited for documents some user saw "
    "and clicked: exposure bias is built into the test set, the opposite of the embedded world's ground truth.",
    "Sessions are users; there is no recommendation feed (no P2) and no other user identity.",
    "A few hundred training requests: every number has a wide confidence interval (see the paired CIs); the "
    "discriminator is the one fine-tuned and calibrated on the embedded world, not on this domain.",
]


def import_trec_session(
    xml_path: str, out: str, min_dwell_s: float = 0.0, eval_fraction: float = 0.0, seed: int = 0, max_sessions=None
) -> ImportStats:
    """Write the log contract's layout (videos/, search_log/, rec_log/ with no rows) to ``out`` (replaced).

    ``eval_fraction`` > 0 holds that share of the sessions out as ``eval/`` (see the module's docs) and writes
    ``import.json`` (the split's sizes and what the numbers can say); ``max_sessions``: the first N sessions only
    (a slice for tests)."""
    if not 0.0 <= eval_fraction < 1.0:
        raise ValueError(f"eval_fraction must be in [0, 1), got {eval_fraction}")
    storage.check_output(out, [xml_path])
    dwell_of: dict = {}
    videos, search, stats = read_sessions(xml_path, min_dwell_s, dwell_of=dwell_of)
    if max_sessions:
        keep = sorted(set(search["user_id"].to_pylist()), key=lambda u: int(u.removeprefix("trec-s")))[:max_sessions]
        search = search.filter(pc.is_in(search["user_id"], pa.array(keep)))
        used = pc.is_in(videos["video_id"], search["video_id"].unique())
        videos = videos.filter(used)
    evals, info = {}, {}
    if eval_fraction > 0:
        search, evals, info = split_sessions(search, dwell_of, eval_fraction, seed)
    stats.split = info
    with storage.Output(out, inputs=[xml_path]) as staging:
        for table, data in (("videos", videos), ("search_log", search), ("rec_log", S.REC_LOG_SCHEMA.empty_table())):
            storage.write_table(data, f"{staging}/{table}/part-00000.parquet")
        for name, table in evals.items():
            storage.write_table(table, f"{staging}/eval/{name}.parquet")
        meta = {
            "source": "TREC 2013 Session Track",
            "xml": os.path.basename(xml_path),
            "sessions": len(set(search["user_id"].to_pylist())) + info.get("sessions", {}).get("test", 0),
            "documents": videos.num_rows,
            "split": info,
            "notes": IMPORT_NOTES if evals else IMPORT_NOTES[:1] + IMPORT_NOTES[2:3],
        }
        storage.write_bytes(f"{staging}/import.json", json.dumps(meta, indent=2).encode())
    return stats
