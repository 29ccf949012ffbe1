"""Real English text for the synthetic short-video world: ambiguous words, their senses, distractors, plain topics.

The data is ``vocabulary.yaml`` next to this module, read once at import into the frozen dataclasses below and
validated by pydantic (types, tuple lengths follow the annotations); :func:`check_vocabulary` checks the rest
of the invariants. No randomness. The catalog
(``crops_ray.world.catalog``) combines these pieces with :data:`TITLE_FORMATS` and :data:`CAPTION_OPENERS`
into video titles and captions, and derives search queries and graded relevance from them.

- :data:`WORDS`: 12 ambiguous query words, each with 2-3 senses, the DOMINANT sense first (the one a biased
  search engine over-exposes). Every sense has 8 subtopics (facets), one realistic query per subtopic, aliases
  that name the thing without the ambiguous word, 8 true facts and a few hashtags.
- :data:`DOMAINS`: domain key -> description. Senses of different words share domains ("wildlife": the jaguar,
  the python, the bat, ...), so they compete with near-duplicates.
- :data:`DISTRACTORS`: one hard-negative :class:`Topic` per domain used by a sense (``"wildlife/distractor"``:
  "leopard cubs playing"), never mentioning any ambiguous word.
- :data:`PLAIN_TOPICS`: 10 unambiguous everyday topics, each in its own domain (not used by any sense).

:func:`check_vocabulary` validates every invariant; it is not run at import time. (Over 300 lines on purpose: the
typed schema of the data file and the invariants it must keep are one unit a reader checks side by side.)
"""

from __future__ import annotations

import functools
import os
import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Sense:
    word: str  # the ambiguous query word, lower case
    name: str  # short sense id; key is f"{word}/{name}"
    label: str  # human label
    domain: str  # a key of DOMAINS
    sense_query: str  # 2-4 word query naming this sense, containing the word
    subtopics: tuple[str, ...]  # exactly 8 facets, >= 5 contain the word
    subtopic_queries: tuple[str, ...]  # exactly 8, one per subtopic, each contains the word
    aliases: tuple[str, ...]  # 3-5 ways to name the thing without the word
    facts: tuple[str, ...]  # 8 true sentences, at most half contain the word
    hashtags: tuple[str, ...]  # 4-6, lower case, without '#'

    @property
    def key(self) -> str:
        return f"{self.word}/{self.name}"


@dataclass(frozen=True)
class Word:
    word: str
    senses: tuple[Sense, ...]  # dominant sense first


@dataclass(frozen=True)
class Topic:
    key: str  # e.g. "cooking/pasta" or "wildlife/distractor"
    domain: str
    subtopics: tuple[str, ...]  # exactly 8
    subtopic_queries: tuple[str, ...]  # exactly 8, one per subtopic
    facts: tuple[str, ...]  # 8 sentences
    hashtags: tuple[str, ...]


@dataclass(frozen=True)
class Angle:
    """A video's format or angle, the last word of a long-tail query ("jaguar cubs wild slow motion").

    ``forms`` name the angle with the words users type; ``gap_forms`` are how many creators name it instead
    (slang, hashtags, creator jargon, loanwords) and share no word with ``query``: the vocabulary gap.
    """

    name: str
    query: str  # what a user appends to a query, lower case
    forms: tuple[str, ...]  # title phrasings that contain the query's words
    gap_forms: tuple[str, ...]  # phrasings that share no word with the query


# ------------------------------------------------------------------------------------------------ the data

VOCABULARY_YAML = os.path.join(os.path.dirname(os.path.abspath(__file__)), "vocabulary.yaml")


@dataclass(frozen=True)
class Vocabulary:
    domains: dict[str, str]
    words: tuple[Word, ...]
    distractors: tuple[Topic, ...]
    plain_topics: tuple[Topic, ...]
    title_formats: tuple[str, ...]
    caption_openers: tuple[str, ...]
    angles: tuple[Angle, ...]
    angle_title_formats: tuple[str, ...]
    forbidden_forms: dict[str, tuple[str, ...]]


@functools.lru_cache(maxsize=None)
def load_vocabulary(path: str = VOCABULARY_YAML) -> Vocabulary:
    """The vocabulary file as typed, frozen objects; a missing field or a wrong type is an error naming it."""
    import yaml
    from pydantic import TypeAdapter

    with open(path, encoding="utf-8") as f:
        data = yaml.safe_load(f)
    return TypeAdapter(Vocabulary).validate_python(data, strict=False)


_V = load_vocabulary()
DOMAINS: dict[str, str] = _V.domains
WORDS: tuple[Word, ...] = _V.words  # dominant sense first in each word
SENSES: tuple[Sense, ...] = tuple(s for w in WORDS for s in w.senses)
DISTRACTORS: tuple[Topic, ...] = _V.distractors
PLAIN_TOPICS: tuple[Topic, ...] = _V.plain_topics
TITLE_FORMATS: tuple[str, ...] = _V.title_formats
CAPTION_OPENERS: tuple[str, ...] = _V.caption_openers
ANGLES: tuple[Angle, ...] = _V.angles
ANGLE_TITLE_FORMATS: tuple[str, ...] = _V.angle_title_formats
# Surface forms that count as "mentioning" an ambiguous word when it must NOT appear (plurals, irregular forms).
_FORBIDDEN_FORMS: dict[str, tuple[str, ...]] = _V.forbidden_forms


# ------------------------------------------------------------------------------------------------ checks

_REQUIRED_WORDS = tuple(_FORBIDDEN_FORMS)


def _contains(text: str, word: str) -> bool:
    """The generator's notion of a mention: the word or the word + 's', on word boundaries, any case."""
    return re.search(rf"\b{re.escape(word)}s?\b", text, re.IGNORECASE) is not None


def _mentions_any_form(text: str, word: str) -> bool:
    forms = "|".join(re.escape(f) for f in _FORBIDDEN_FORMS.get(word, (word,)))
    return re.search(rf"\b(?:{forms})\b", text, re.IGNORECASE) is not None


def _n_words(text: str) -> int:
    return len(text.split())


def check_vocabulary() -> None:  # long: a flat list of independent checks over the word lists, read top to bottom
    """Raise ValueError listing every broken invariant of this module's data."""
    errors: list[str] = []
    err = errors.append
    all_words = [w.word for w in WORDS]

    # words and senses
    if len(WORDS) != 12:
        err(f"expected 12 ambiguous words, got {len(WORDS)}")
    if len(set(all_words)) != len(all_words):
        err(f"duplicate ambiguous words: {all_words}")
    if set(all_words) != set(_REQUIRED_WORDS):
        err(f"ambiguous words {sorted(all_words)} differ from the required set {sorted(_REQUIRED_WORDS)}")
    keys: set[str] = set()
    sense_domains: set[str] = set()
    for w in WORDS:
        if w.word != w.word.lower() or " " in w.word:
            err(f"word {w.word!r} must be a lower-case single token")
        if not 2 <= len(w.senses) <= 3:
            err(f"{w.word}: expected 2-3 senses, got {len(w.senses)}")
        others = [o for o in all_words if o != w.word]
        for s in w.senses:
            k = f"{s.word}/{s.name}"
            where = f"sense {k}"
            if s.word != w.word:
                err(f"{where}: sense.word {s.word!r} != word {w.word!r}")
            if not re.fullmatch(r"[a-z0-9-]+", s.name):
                err(f"{where}: name must be lower case without spaces")
            if k in keys:
                err(f"duplicate sense key {k}")
            keys.add(k)
            if s.domain not in DOMAINS:
                err(f"{where}: domain {s.domain!r} not in DOMAINS")
            sense_domains.add(s.domain)
            if not s.label:
                err(f"{where}: empty label")
            # sense query
            if not _contains(s.sense_query, s.word):
                err(f"{where}: sense_query {s.sense_query!r} lacks the word")
            if not 2 <= _n_words(s.sense_query) <= 4:
                err(f"{where}: sense_query {s.sense_query!r} must have 2-4 words")
            if s.sense_query != s.sense_query.lower():
                err(f"{where}: sense_query {s.sense_query!r} must be lower case")
            # subtopics
            if len(s.subtopics) != 8:
                err(f"{where}: expected 8 subtopics, got {len(s.subtopics)}")
            if len(set(s.subtopics)) != len(s.subtopics):
                err(f"{where}: duplicate subtopics")
            for p in s.subtopics:
                if not 2 <= _n_words(p) <= 6:
                    err(f"{where}: subtopic {p!r} must have 2-6 words")
            n_with = sum(_contains(p, s.word) for p in s.subtopics)
            if n_with < 5:
                err(f"{where}: only {n_with} subtopics contain {s.word!r} (need >= 5)")
            # subtopic queries
            if len(s.subtopic_queries) != 8:
                err(f"{where}: expected 8 subtopic_queries, got {len(s.subtopic_queries)}")
            if len(set(s.subtopic_queries)) != len(s.subtopic_queries):
                err(f"{where}: duplicate subtopic_queries")
            for q in s.subtopic_queries:
                if not _contains(q, s.word):
                    err(f"{where}: subtopic query {q!r} lacks the word")
                if q != q.lower():
                    err(f"{where}: subtopic query {q!r} must be lower case")
                if not 2 <= _n_words(q) <= 5:
                    err(f"{where}: subtopic query {q!r} must have 2-5 words")
            # aliases
            if not 3 <= len(s.aliases) <= 5:
                err(f"{where}: expected 3-5 aliases, got {len(s.aliases)}")
            for a in s.aliases:
                if _mentions_any_form(a, s.word):
                    err(f"{where}: alias {a!r} contains the word")
            # facts
            if len(s.facts) != 8:
                err(f"{where}: expected 8 facts, got {len(s.facts)}")
            if len(set(s.facts)) != len(s.facts):
                err(f"{where}: duplicate facts")
            n_fact_word = sum(_mentions_any_form(f, s.word) for f in s.facts)
            if n_fact_word > len(s.facts) // 2:
                err(f"{where}: {n_fact_word} facts contain the word (at most half allowed)")
            # hashtags
            if not 4 <= len(s.hashtags) <= 6:
                err(f"{where}: expected 4-6 hashtags, got {len(s.hashtags)}")
            for h in s.hashtags:
                if not re.fullmatch(r"[a-z0-9]+", h):
                    err(f"{where}: hashtag {h!r} must be lower-case alphanumeric without '#'")
            if len(set(s.hashtags)) != len(s.hashtags):
                err(f"{where}: duplicate hashtags")
            # no other ambiguous word leaks into this sense's text (it would blur the other word's relevance)
            texts = (s.sense_query, *s.subtopics, *s.subtopic_queries, *s.aliases, *s.facts)
            for o in others:
                for t in texts:
                    if _mentions_any_form(t, o):
                        err(f"{where}: text {t!r} mentions the other ambiguous word {o!r}")

    if not 10 <= len(sense_domains) <= 14:
        err(f"senses use {len(sense_domains)} domains (aim for 10-14)")

    # topics (distractors and plain)
    def check_topic(t: Topic, where: str) -> None:
        if t.domain not in DOMAINS:
            err(f"{where}: domain {t.domain!r} not in DOMAINS")
        if not t.key.startswith(f"{t.domain}/"):
            err(f"{where}: key must start with '{t.domain}/'")
        for field_name, n in (("subtopics", 8), ("subtopic_queries", 8), ("facts", 8)):
            vals = getattr(t, field_name)
            if len(vals) != n:
                err(f"{where}: expected {n} {field_name}, got {len(vals)}")
            if len(set(vals)) != len(vals):
                err(f"{where}: duplicate {field_name}")
        for p in t.subtopics:
            if not 2 <= _n_words(p) <= 6:
                err(f"{where}: subtopic {p!r} must have 2-6 words")
        for q in t.subtopic_queries:
            if q != q.lower():
                err(f"{where}: query {q!r} must be lower case")
            if not 1 <= _n_words(q) <= 5:
                err(f"{where}: query {q!r} must have 1-5 words")
        if not 4 <= len(t.hashtags) <= 6:
            err(f"{where}: expected 4-6 hashtags, got {len(t.hashtags)}")
        for h in t.hashtags:
            if not re.fullmatch(r"[a-z0-9]+", h):
                err(f"{where}: hashtag {h!r} must be lower-case alphanumeric without '#'")
        for text in (t.key, *t.subtopics, *t.subtopic_queries, *t.facts, *t.hashtags):
            for o in all_words:
                if _mentions_any_form(text, o):
                    err(f"{where}: {text!r} mentions the ambiguous word {o!r}")

    topic_keys: set[str] = set()
    for t in (*DISTRACTORS, *PLAIN_TOPICS):
        if t.key in topic_keys or t.key in keys:
            err(f"duplicate topic key {t.key}")
        topic_keys.add(t.key)
        check_topic(t, f"topic {t.key}")

    distractor_domains = [t.domain for t in DISTRACTORS]
    for t in DISTRACTORS:
        if t.key != f"{t.domain}/distractor":
            err(f"distractor {t.key}: key must be '{t.domain}/distractor'")
    if len(set(distractor_domains)) != len(distractor_domains):
        err("more than one distractor topic for a domain")
    if set(distractor_domains) != sense_domains:
        missing = sorted(sense_domains - set(distractor_domains))
        extra = sorted(set(distractor_domains) - sense_domains)
        err(f"distractor domains must equal sense domains (missing {missing}, extra {extra})")

    if len(PLAIN_TOPICS) != 10:
        err(f"expected 10 plain topics, got {len(PLAIN_TOPICS)}")
    plain_domains = [t.domain for t in PLAIN_TOPICS]
    if len(set(plain_domains)) != len(plain_domains):
        err("plain topics must each have their own domain")
    overlap = sorted(set(plain_domains) & sense_domains)
    if overlap:
        err(f"plain-topic domains overlap sense domains: {overlap}")
    unused = sorted(set(DOMAINS) - sense_domains - set(plain_domains))
    if unused:
        err(f"DOMAINS entries used by nothing: {unused}")

    # subtopic phrases are unique across the whole file
    seen: dict[str, str] = {}
    owners = [(f"{s.word}/{s.name}", s.subtopics) for s in SENSES] + [
        (t.key, t.subtopics) for t in (*DISTRACTORS, *PLAIN_TOPICS)
    ]
    for owner, subs in owners:
        for p in subs:
            norm = " ".join(p.lower().split())
            if norm in seen and seen[norm] != owner:
                err(f"subtopic {p!r} appears in both {seen[norm]} and {owner}")
            seen.setdefault(norm, owner)
    if len(SENSES) != sum(len(w.senses) for w in WORDS):
        err("SENSES is out of sync with WORDS")

    # templates
    for name, templates, n in (("TITLE_FORMATS", TITLE_FORMATS, 30), ("CAPTION_OPENERS", CAPTION_OPENERS, 20)):
        if len(templates) != n:
            err(f"{name}: expected {n}, got {len(templates)}")
        if len(set(templates)) != len(templates):
            err(f"{name}: duplicates")
        for f in templates:
            if f.count("{s}") != 1 or f.count("{") != 1 or f.count("}") != 1:
                err(f"{name}: {f!r} must contain exactly one '{{s}}' slot and no other braces")
                continue
            for o in all_words:
                if _mentions_any_form(f.format(s=""), o):
                    err(f"{name}: {f!r} mentions the ambiguous word {o!r}")

    # angles: the gap forms share no word with what users type
    names = [a.name for a in ANGLES]
    if len(set(names)) != len(names):
        err("duplicate angle names")
    for a in ANGLES:
        qwords = set(re.findall(r"[a-z0-9]+", a.query))
        if a.query != a.query.lower() or not qwords:
            err(f"angle {a.name}: query {a.query!r} must be lower case and non-empty")
        for f in a.forms:
            if not qwords <= set(re.findall(r"[a-z0-9]+", f.lower())):
                err(f"angle {a.name}: form {f!r} lacks the query's words")
        for f in a.gap_forms:
            if qwords & set(re.findall(r"[a-z0-9]+", f.lower())):
                err(f"angle {a.name}: gap form {f!r} shares a word with {a.query!r}")
        for f in (*a.forms, *a.gap_forms):
            for o in all_words:
                if _mentions_any_form(f, o):
                    err(f"angle {a.name}: {f!r} mentions the ambiguous word {o!r}")

    if errors:
        raise ValueError("vocabulary check failed:\n  - " + "\n  - ".join(errors))
