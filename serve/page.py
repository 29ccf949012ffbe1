"""The search page at ``/``: a query box and two retrievers side by side, for people looking at results.

    GET /                      the form
    GET /?q=jaguar+cubs&k=10   the served model's top k beside a comparison retriever's (``compare_model``): each
                               result's rank, id, text (``videos``), score and grade (``qrels``, when the evaluation
                               data knows the query), and a mark on the videos both lists hold

Server-rendered HTML with inline CSS: no script, nothing fetched from elsewhere. The query and k are checked by the
API's own request model and worded by its own message (serve/api.py), so bad input gets /v1/search's ``error``
line, with 422. While the API requires a bearer token the page answers 403: a browser's form cannot send the token,
and the page must not search without it. The comparison retriever runs in the ingress replica (serve/app.py's
``comparison_backend``): the page is for people, not for traffic.
"""

from __future__ import annotations

import asyncio
import html
import os
import re
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse
from pydantic import ValidationError

from crops_ray.engine.reformulation import normalise_query
from crops_ray.schema import QRELS_SCHEMA, VIDEOS_SCHEMA, table_files
from crops_ray.storage import read_table
from serve.api import failure, request_models, validation_message
from serve.settings import ServeSettings, column_label

PAGE_K = 10  # results per list when the form leaves k empty (the API's default_k, 100, makes a very long page)
TOP_GRADE = 3  # qrels grades run 0..3


@dataclass
class Column:
    """One retriever on the page: its title and anything with the API backend's ``search(query, k)``."""

    label: str
    backend: Any


@dataclass
class Answer:
    """One column's answer to a query."""

    label: str
    ids: list[str]
    scores: list[float]
    model: str
    index: str


def _table_files(path: str) -> list[str]:
    """A table named by its own path (a folder of shards like ``OUT/validated/videos``, or ``eval/qrels.parquet``),
    read as :func:`crops_ray.schema.table_files` reads a log's tables (``_SUCCESS`` and hidden files skipped)."""
    root, name = os.path.split(os.path.normpath(path))
    return table_files(root, name.removesuffix(".parquet"))


def check_page_settings(s: ServeSettings) -> str | None:
    """Refuse, before any replica starts, tables without the columns the page reads and a comparison index that its
    model cannot search (as ``index`` against ``model``); returns how the comparison index was checked."""
    from crops_ray.index import check_index_matches

    for key, schema in (("videos", VIDEOS_SCHEMA), ("qrels", QRELS_SCHEMA)):
        path = getattr(s, key)
        if path:
            names = pq.read_schema(_table_files(path)[0]).names
            missing = [c for c in schema.names if c not in names]
            if missing:
                raise ValueError(f"{key} {path!r}: missing column(s) {missing}; the page reads {schema.names}")
    if s.compare_model:
        return check_index_matches(s.compare_index, s.compare_model, allow_unverified=s.allow_unverified_index)
    return None


class PageData:
    """Each result's text (the corpus table) and grade (qrels), as far as the settings name them."""

    def __init__(self, texts: dict[str, str] | None, qrels: pa.Table | None):
        self.texts, self.qrels = texts, qrels
        queries = [] if qrels is None else pc.unique(qrels["query"]).to_pylist()
        self.queries = set(queries)
        self.normalised = {normalise_query(q): q for q in queries}

    @classmethod
    def load(cls, videos: str | None, qrels: str | None) -> PageData:
        texts = None
        if videos:
            table = read_table(_table_files(videos), columns=VIDEOS_SCHEMA.names)
            texts = dict(zip(table["video_id"].to_pylist(), table["text"].to_pylist()))
        grades = read_table(_table_files(qrels), columns=QRELS_SCHEMA.names) if qrels else None
        return cls(texts, grades)

    def grades(self, query: str) -> tuple[str, dict[str, int]] | None:
        """The qrels query that ``query`` is (as typed, else casefolded with its spaces collapsed, the engine's
        :func:`normalise_query`) and its graded videos; None when the evaluation data does not know it."""
        if self.qrels is None:
            return None
        match = query if query in self.queries else self.normalised.get(normalise_query(query))
        if match is None:
            return None
        rows = self.qrels.filter(pc.equal(self.qrels["query"], match))
        return match, dict(zip(rows["video_id"].to_pylist(), rows["grade"].to_pylist()))


class SearchPage:
    """``GET /`` on the API's app: the form, both columns' answers, or the API's message for bad input."""

    def __init__(self, columns: list[Column], data: PageData, settings: ServeSettings):
        self.columns, self.data, self.settings = columns, data, settings
        self.search_request = request_models(settings)["search"]  # the API's own rules for a query and k
        self.default_k = min(PAGE_K, settings.max_k)

    @classmethod
    def load(cls, settings: ServeSettings, backend, compare=None) -> SearchPage:
        """The page over the served ``backend`` and, if given, the comparison retriever ``compare``."""
        columns = [Column(settings.model_label or column_label(settings.model), backend)]
        if compare is not None:
            columns.append(Column(settings.compare_label or column_label(settings.compare_model), compare))
        return cls(columns, PageData.load(settings.videos, settings.qrels), settings)

    def mount(self, app: FastAPI, digest: str | None) -> FastAPI:
        """Adds ``GET /`` to ``app`` (make_api's); with a token required it answers 403 (the page is off)."""

        @app.get("/", response_class=HTMLResponse, include_in_schema=False)
        async def search_page(request: Request) -> HTMLResponse:
            if digest is not None:
                return self.render(403, error=self._auth_off())
            return await self.answer(request.query_params.get("q"), request.query_params.get("k"))

        return app

    async def answer(self, q: str | None, k: str | None) -> HTMLResponse:
        if q is None:
            return self.render(200, "", str(self.default_k))
        try:
            body = self.search_request.model_validate({"query": q, "k": self._k(k)})
        except ValidationError as exc:
            return self.render(422, q, k, error=validation_message(exc.errors()))
        try:
            answers = await self._search(body.query, body.k)
        except TimeoutError:
            timeout = self.settings.request_timeout_s
            message = f"the search was not answered within {timeout:g} s (request_timeout_s); retry, or ask for fewer"
            return self.render(408, q, k, error=message)
        except Exception as exc:  # the API's answer to the same failure: 503 where a retry cures it, else 500
            status, message = failure(exc)
            return self.render(status, q, k, error=message)
        return self.render(200, q, str(body.k), answers=answers)

    def _k(self, k: str | None) -> Any:
        """The form's k as the API would receive it: empty is the page's default, digits an integer, anything else
        stays a string (which the request model refuses with the API's message)."""
        text = (k or "").strip()
        if not text:
            return self.default_k
        return int(text) if re.fullmatch(r"[+-]?[0-9]+", text) else text

    async def _search(self, query: str, k: int) -> list[Answer]:
        # asyncio.wait, not wait_for: as in serve/guard.py, the deadline must not depend on a handle's cancellation.
        work = asyncio.ensure_future(asyncio.gather(*(c.backend.search(query, k) for c in self.columns)))
        done, _ = await asyncio.wait({work}, timeout=self.settings.request_timeout_s)
        if not done:
            work.cancel()
            raise TimeoutError
        return [Answer(c.label, list(ids), list(s), m, i) for c, (ids, s, m, i) in zip(self.columns, work.result())]

    def _auth_off(self) -> str:
        return (
            f"The search page is off while the API requires a bearer token (${self.settings.auth_token_env} is set "
            "on the gateway): a browser's form cannot send the token, and the page must not search without it. "
            "Call /v1/search with Authorization: Bearer <token>, or serve on 127.0.0.1 without the variable."
        )

    def render(
        self, status: int, q: str = "", k: str | None = "", answers: list[Answer] | None = None, error: str = ""
    ) -> HTMLResponse:
        parts = [_form(q, k or "", self.settings.max_k) if status != 403 else ""]
        if error:
            parts.append(f'<div class="error" id="error" role="alert">{_e(error)}</div>')
        if answers:
            parts.append(self._results(q, answers))
        title = f"{q.strip()} - crops-ray search" if q.strip() and not error else "crops-ray search"
        served = f"The served model, <strong>{_e(self.columns[0].label)}</strong>"
        others = "".join(f", beside <strong>{_e(c.label)}</strong>" for c in self.columns[1:])
        subtitle = (
            f"{served}{others}: each result's text, cosine score and, where the evaluation data knows the query, grade."
        )
        return HTMLResponse(_document(title, subtitle, "".join(parts)), status_code=status)

    def _results(self, query: str, answers: list[Answer]) -> str:
        graded = self.data.grades(query)
        shared = set.intersection(*(set(a.ids) for a in answers)) if len(answers) > 1 else set()
        notes = [self._grades_note(query, graded)]
        if len(answers) > 1:
            notes.append(
                f'<strong id="shared-count">{len(shared)}</strong> videos are in both lists (marked "in both").'
            )
        if self.data.texts is None:
            notes.append("No texts: the page was started without <code>videos</code> (the corpus table).")
        grades = graded[1] if graded else None
        columns = "".join(_column(a, self.data.texts, grades, shared) for a in answers)
        notes_html = "".join(f'<p class="note">{n}</p>' for n in notes)
        return f'{notes_html}<div class="columns" style="--n: {len(answers)}">{columns}</div>'

    def _grades_note(self, query: str, graded: tuple[str, dict] | None) -> str:
        if self.data.qrels is None:
            return '<span id="grades">No grades: the page was started without <code>qrels</code>.</span>'
        if graded is None:
            return f'<span id="grades">"{_e(query)}" is not a query of the evaluation data: no grades.</span>'
        return (
            f'<span id="grades">Grades from the evaluation data for "{_e(graded[0])}": {TOP_GRADE} most relevant, '
            "0 not graded relevant.</span>"
        )


# ------------------------------------------------------------------------------------------------ HTML


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _form(q: str, k: str, max_k: int) -> str:
    # novalidate and a text k: every check is the server's, so the page says exactly what the API says.
    return (
        '<form method="get" role="search" novalidate>'
        f'<label class="query">Query<input id="q" name="q" value="{_e(q)}" autofocus autocomplete="off"></label>'
        f'<label>Results (1-{max_k})<input id="k" name="k" value="{_e(k)}" inputmode="numeric" size="5"></label>'
        '<button type="submit" id="search">Search</button></form>'
    )


def _column(answer: Answer, texts: dict[str, str] | None, grades: dict[str, int] | None, shared: set[str]) -> str:
    hits = "".join(
        _hit(rank, vid, score, texts, grades, vid in shared)
        for rank, (vid, score) in enumerate(zip(answer.ids, answer.scores), 1)
    )
    return (
        f'<section class="column" data-column="{_e(answer.label)}"><h2>{_e(answer.label)}</h2>'
        f'<p class="version">{_e(answer.model)} &middot; {_e(answer.index)} &middot; {len(answer.ids)} results</p>'
        f'<ol class="results">{hits}</ol></section>'
    )


def _hit(rank: int, vid: str, score: float, texts, grades, shared: bool) -> str:
    badges = '<span class="badge both">in both</span>' if shared else ""
    grade_attr = ""
    if grades is not None:
        grade = grades.get(vid, 0)
        grade_attr = f' data-grade="{grade}"'
        badges += f'<span class="badge grade-{grade}" title="qrels grade (0-{TOP_GRADE})">grade {grade}</span>'
    if texts is None:
        text = ""
    else:
        known = texts.get(vid)
        text = f'<p class="text">{_e(known)}</p>' if known is not None else '<p class="text missing">(no text)</p>'
    return (
        f'<li class="hit{" shared" if shared else ""}" data-video-id="{_e(vid)}" data-score="{score!r}"{grade_attr}>'
        f'<div class="meta"><span class="rank">{rank}</span><code class="vid">{_e(vid)}</code>{badges}'
        f'<span class="score" title="cosine">{score:.3f}</span></div>{text}</li>'
    )


def _document(title: str, subtitle: str, body: str) -> str:
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<link rel="icon" href="data:,"><title>{_e(title)}</title><style>{CSS}</style></head>'
        f'<body><main><header><h1>crops-ray search</h1><p class="lede">{subtitle}</p></header>{body}</main>'
        "</body></html>"
    )


CSS = """
* { box-sizing: border-box; }
body { margin: 0; background: #f4f5f7; color: #1c2127;
  font: 16px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "Liberation Sans", "DejaVu Sans", sans-serif; }
main { max-width: 1280px; margin: 0 auto; padding: 24px 32px 48px; }
h1 { font-size: 1.5rem; margin: 0; }
.lede { color: #55606b; margin: 0 0 16px; }
form { display: flex; flex-wrap: wrap; gap: 12px; align-items: flex-end; background: #fff;
  border: 1px solid #dde1e6; border-radius: 8px; padding: 16px; }
label { display: flex; flex-direction: column; gap: 4px; font-size: .85rem; color: #55606b; }
label.query { flex: 1 1 20rem; }
input { font: inherit; color: inherit; padding: 8px 10px; border: 1px solid #b9c0c8; border-radius: 6px; }
#k { width: 7rem; }
button { font: inherit; padding: 8px 22px; border: 0; border-radius: 6px; background: #1f5fbf; color: #fff;
  cursor: pointer; }
button:hover { background: #184c99; }
.error { margin: 16px 0; padding: 12px 16px; background: #fdecec; color: #8a1111; border: 1px solid #e3a3a3;
  border-left: 6px solid #c62828; border-radius: 6px; }
.note { color: #55606b; margin: 12px 0 0; }
.note code { font-size: .9em; }
.columns { display: grid; grid-template-columns: repeat(var(--n), minmax(0, 1fr)); gap: 24px; margin-top: 16px; }
@media (max-width: 900px) { .columns { grid-template-columns: 1fr; } main { padding: 16px; } }
.column h2 { font-size: 1.2rem; margin: 0; }
.version { font-size: .8rem; color: #6b7580; margin: 0 0 8px; overflow-wrap: anywhere; }
ol.results { list-style: none; margin: 0; padding: 0; }
li.hit { background: #fff; border: 1px solid #dde1e6; border-radius: 8px; padding: 10px 14px; margin-bottom: 10px; }
li.hit.shared { border-left: 5px solid #d49b00; }
.meta { display: flex; flex-wrap: wrap; gap: 8px; align-items: baseline; font-size: .85rem; color: #55606b; }
.rank { font-weight: 700; color: #1c2127; min-width: 1.5em; }
.vid { font-family: ui-monospace, "DejaVu Sans Mono", monospace; }
.score { margin-left: auto; font-variant-numeric: tabular-nums; color: #1c2127; }
.badge { padding: 0 8px; border-radius: 999px; font-size: .75rem; font-weight: 600; }
.both { background: #fff0bf; color: #634800; }
.grade-0 { background: #eceef1; color: #55606b; }
.grade-1 { background: #e3efff; color: #1f4f99; }
.grade-2 { background: #d4f0de; color: #1d6b3a; }
.grade-3 { background: #1d6b3a; color: #fff; }
.text { margin: 6px 0 0; overflow-wrap: anywhere; }
.missing { color: #6b7580; font-style: italic; }
"""
