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
"""

from __future__ import annotations

import html
import os
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

import pyarrow as pa

from crops_ray import schema as S
from crops_ray import storage

DAY = 86_400
BASE_TS = 1_370_044_800  # 2013-06-01T00:00:00Z, around when the track's sessions were recorded
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
    xml_path: str, min_dwell_s: float = 0.0, base_ts: int = BASE_TS
) -> tuple[pa.Table, pa.Table, ImportStats]:
    """(videos, search_log) tables in the contract's schemas, and what was read and skipped."""
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
            for doc in dict.fromkeys(by_rank.values()):  # a document shown twice on a page is one candidate
                for name, value in (
                    ("request_id", request),
                    ("user_id", user),
                    ("query", query),
                    ("ts", ts),
                    ("video_id", doc),
                    ("stage", "clicked" if doc in clicked else "exposed"),
                ):
                    rows[name].append(value)
    if not stats.sessions:
        raise ValueError(f"{xml_path}: no <session> elements")
    stats.documents = len(docs)
    stats.search_rows = len(rows["request_id"])
    videos = pa.table({"video_id": list(docs), "text": list(docs.values())}, schema=S.VIDEOS_SCHEMA)
    return videos, pa.table(rows, schema=S.SEARCH_LOG_SCHEMA), stats


def import_trec_session(xml_path: str, out: str, min_dwell_s: float = 0.0) -> ImportStats:
    """Write the log contract's layout (videos/, search_log/, rec_log/ with no rows) to ``out`` (replaced)."""
    storage.check_output(out, [xml_path])
    videos, search, stats = read_sessions(xml_path, min_dwell_s)
    with storage.Output(out, inputs=[xml_path]) as staging:
        for table, data in (("videos", videos), ("search_log", search), ("rec_log", S.REC_LOG_SCHEMA.empty_table())):
            storage.write_table(data, f"{staging}/{table}/part-00000.parquet")
    return stats
