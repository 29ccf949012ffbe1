"""P3's text: the one-shot prompt, parsing an LLM's answer into descriptions, quality control, and
verification with the discriminator (:class:`DescriptionVerifier`, a Ray Data callable class).

Quality control (counted per reason in ``reason``): ``empty`` (nothing parseable), ``too_short``,
``duplicate`` and ``near_duplicate`` (of an earlier description for the same query), ``copies_example``,
``below_alpha`` (theta(query, description) <= alpha), ``over_cap`` (beyond ``per_query_cap``, lowest theta
first). Kept rows have a null reason.
"""

from __future__ import annotations

import hashlib
import re
import zlib
from typing import TYPE_CHECKING

import pandas as pd
import pyarrow as pa

if TYPE_CHECKING:
    from crops_ray.engine.config import WorldKnowledgeConfig

ANGLES = (
    "for example a beginner tutorial",
    "for example a short news clip",
    "for example a documentary-style clip",
    "for example a funny or surprising moment",
    "for example a review or comparison",
    "for example a behind-the-scenes look",
    "for example a quick facts video",
    "for example a step-by-step how-to",
)
REASONS = ("empty", "too_short", "duplicate", "near_duplicate", "copies_example", "below_alpha", "over_cap")


# ---------------------------------------------------------------------------------------------- prompts


def build_messages(
    query: str, example: str, sample: int, max_example_chars: int = 400, max_query_chars: int = 200
) -> list[dict]:
    """The one-shot prompt; the query and the example, whitespace collapsed, are cut to their maximum length."""
    query = " ".join(query.split())[:max_query_chars]
    example = " ".join(example.split())[:max_example_chars]
    angle = ANGLES[sample % len(ANGLES)]
    return [
        {
            "role": "user",
            "content": (
                f'A user searched a short-video app for "{query}". This video matches the search:\n"{example}"\n'
                f'Describe a DIFFERENT short video that also matches the search "{query}", {angle}. '
                "Answer with the video's title and a one-sentence caption."
            ),
        }
    ]


def prompt_rows(examples: pd.DataFrame, cfg: WorldKnowledgeConfig) -> list[dict]:
    """One row per query: query, example_video_id, example_text, seed (from the run seed and the query)."""
    return [
        {
            "query": ex.query,
            "example_video_id": ex.video_id,
            "example_text": ex.text,
            "seed": zlib.crc32(f"{cfg.seed}|{ex.query}".encode()) & 0x7FFFFFFF,
        }
        for ex in examples.itertuples()
    ]


# ---------------------------------------------------------------------------------------------- parsing


_PREAMBLE = re.compile(r"^(here('s| is| are)|sure|certainly|of course|okay|ok|absolutely|great)\b", re.IGNORECASE)
_LABEL = re.compile(
    r"^(video\s*)?(title|caption|description|summary|text|name|video)\s*(\d+)?\s*[:\-–]\s*", re.IGNORECASE
)
_BULLET = re.compile(r"^\s*(?:[-*•]+|\d+[.)]|\(\d+\))\s+")
_SENTENCE_END = re.compile(r"[.!?…](?=[\"'”’)\]]*(\s|$))")
_URL = re.compile(r"(https?://|www\.)\S+", re.IGNORECASE)


def _clean_line(line: str) -> str:
    line = _URL.sub("", line)
    line = re.sub(r"[*_`]{2,}|^#+\s+", "", line.strip())  # markdown emphasis and headers (not #hashtags)
    line = _BULLET.sub("", line)
    line = _LABEL.sub("", line)
    line = re.sub(r"(\s+[^\W\d_]+:)+\s*$", "", line)  # a label left dangling by a removed URL: "... Link:"
    return " ".join(line.split()).strip(" \"“”'").strip()


def _sentences_upto(text: str, max_chars: int, truncated: bool) -> str:
    """Text cut at the last sentence end within ``max_chars``; a trailing half-sentence goes when truncated."""
    text = text[: max_chars + 1]
    ends = [m.end() for m in _SENTENCE_END.finditer(text) if m.end() <= max_chars]
    if ends and (truncated or len(text) > max_chars):
        return text[: ends[-1]].strip()
    return text[:max_chars].strip()


def _is_filler(line: str) -> bool:
    """Lines that introduce rather than describe: "Here is a video:", "Sure!", a lone label."""
    return line.endswith(":") or (bool(_PREAMBLE.match(line)) and len(line.split()) <= 12)


def parse_descriptions(text: str, max_chars: int = 400, truncated: bool = True) -> list[str]:
    """Video descriptions in an LLM answer: list items when it wrote a list, else the answer's opening.

    Robust to what small models do: code blocks, markdown, URLs, "Here is ..." preambles, "Title:/Caption:"
    labels, quotes, answers cut off mid-sentence.
    """
    if not text or not text.strip():
        return []
    text = re.sub(r"```.*?(```|$)", " ", text, flags=re.DOTALL)  # code blocks, closed or not
    raw = text.splitlines()
    lines = ["" if _is_filler(line.strip()) else _clean_line(line) for line in raw]
    bullets = [i for i, line in enumerate(raw) if _BULLET.match(line)]
    if len(bullets) >= 2:  # a list: one description per item (continuation lines belong to their item)
        out = []
        for n, i in enumerate(bullets):
            stop = bullets[n + 1] if n + 1 < len(bullets) else len(raw)
            item = " ".join(line for line in lines[i:stop] if line)
            last = n == len(bullets) - 1
            out.append(_sentences_upto(item, max_chars, truncated=truncated and last))
        return [o for o in out if o]
    kept = [line for line in lines if line and not _is_filler(line)]
    if not kept:
        return []
    # A "Title" line then a "caption" line become "Title. caption"; the last line may be cut off, so it keeps
    # its own ending for _sentences_upto to judge.
    one = " ".join([line if line[-1] in ".!?…" else line + "." for line in kept[:-1]] + [kept[-1]])
    one = _sentences_upto(" ".join(one.split()), max_chars, truncated)
    return [one] if one else []


def _words(text: str) -> frozenset[str]:
    return frozenset(re.findall(r"[^\W_]+", text.casefold()))


def jaccard(a: frozenset, b: frozenset) -> float:
    return len(a & b) / len(a | b) if a and b else 0.0


def synthetic_id(query: str, text: str) -> str:
    return "llm-" + hashlib.sha1(f"{query}\n{text}".encode("utf-8")).hexdigest()[:16]


DESCRIPTION_SCHEMA = pa.schema(
    [
        ("query", pa.string()),
        ("example_video_id", pa.string()),
        ("sample", pa.int32()),
        ("position", pa.int32()),  # index of the description within its answer
        ("video_id", pa.string()),  # the synthetic document's id
        ("text", pa.string()),
        ("score", pa.float32()),  # theta(query, text) when it reached the discriminator
        ("reason", pa.string()),  # why quality control dropped it; null when kept
        ("candidate", pa.bool_()),  # kept (reason is null)
    ]
)


# ---------------------------------------------------------------------------------------------- quality control


def quality_control(example_text: str, generations: list[str], truncated: list[bool], cfg: dict) -> list[dict]:
    """One query's answers -> descriptions, each with the reason it was dropped (None while it survives).

    ``cfg``: min_words, max_chars, near_duplicate, example_copy. Order (sample, position) is deterministic.
    """
    out: list[dict] = []
    kept_words: list[frozenset] = []
    kept_norm: set[str] = set()
    example_words = _words(example_text)
    example_flat = " ".join(example_text.casefold().split())
    for sample, (answer, cut) in enumerate(zip(generations, truncated)):
        descriptions = parse_descriptions(answer or "", cfg["max_chars"], bool(cut))
        if not descriptions:
            out.append({"sample": sample, "position": 0, "text": "", "reason": "empty"})
            continue
        for pos, text in enumerate(descriptions):
            words = _words(text)
            norm = " ".join(sorted(words))
            if len(text.split()) < cfg["min_words"]:
                reason = "too_short"
            elif norm in kept_norm:
                reason = "duplicate"
            elif any(jaccard(words, w) >= cfg["near_duplicate"] for w in kept_words):
                reason = "near_duplicate"
            elif (
                jaccard(words, example_words) >= cfg["example_copy"]
                or " ".join(text.casefold().split()) in example_flat
            ):
                reason = "copies_example"
            else:
                reason = None
                kept_words.append(words)
                kept_norm.add(norm)
            out.append({"sample": sample, "position": pos, "text": text, "reason": reason})
    return out


def apply_theta(descriptions: list[dict], theta: list[float], alpha: float, cap: int) -> None:
    """Survivors get their theta; ``below_alpha`` when theta <= alpha, then ``over_cap`` beyond ``cap`` (lowest
    theta first).
    """
    live = [d for d in descriptions if d["reason"] is None]
    for d, t in zip(live, theta):
        d["score"] = float(t)
        if not t > alpha:
            d["reason"] = "below_alpha"
    live = sorted((d for d in live if d["reason"] is None), key=lambda d: (-d["score"], d["sample"], d["position"]))
    for d in live[cap:]:
        d["reason"] = "over_cap"


class DescriptionVerifier:
    """Ray Data callable class: generated answers (one row per query) -> one row per description.

    Parses each answer, drops empty, short, duplicate, near-duplicate and example-copying descriptions,
    verifies the rest with the discriminator (theta > alpha, model loaded once per actor) and caps them per
    query. Every description is emitted, with the reason it was dropped (null when kept).
    """

    def __init__(self, discriminator_cfg, calibration: dict, alpha: float, qc: dict, cap: int):
        from crops_ray.discriminator import Calibration, Discriminator
        from crops_ray.plumbing import actor_threads

        actor_threads(discriminator_cfg.torch_threads, discriminator_cfg.num_cpus)
        self.disc = Discriminator(discriminator_cfg, Calibration(**calibration))
        self.alpha, self.qc, self.cap = alpha, qc, cap

    def __call__(self, batch: pa.Table) -> pa.Table:
        rows = []
        for r in batch.to_pylist():
            descriptions = quality_control(r["example_text"], r["generations"] or [], r["truncated"] or [], self.qc)
            live = [d["text"] for d in descriptions if d["reason"] is None]
            theta = self.disc.theta([r["query"]] * len(live), live) if live else []
            apply_theta(descriptions, list(theta), self.alpha, self.cap)
            for d in descriptions:
                rows.append(
                    {
                        "query": r["query"],
                        "example_video_id": r["example_video_id"],
                        "sample": d["sample"],
                        "position": d["position"],
                        "video_id": synthetic_id(r["query"], d["text"]) if d["text"] else None,
                        "text": d["text"],
                        "score": d.get("score"),
                        "reason": d["reason"],
                        "candidate": d["reason"] is None,
                    }
                )
        return pa.Table.from_pylist(rows, schema=DESCRIPTION_SCHEMA) if rows else DESCRIPTION_SCHEMA.empty_table()
