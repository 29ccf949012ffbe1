"""The READMEs and docs/ link to each other: every relative link names a file that exists and, where it names a
section (``page.md#section``), a heading that page has. The README keeps the table1 markers its writer expects."""

from __future__ import annotations

import glob
import os
import re

import pytest

from crops_ray.report.readme import END, START

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAGES = [
    "README.md",
    "serve/README.md",
    *sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, "docs", "*.md"))),
]
FENCE = re.compile(r"^(```|~~~).*?^\1", re.S | re.M)
CODE_SPAN = re.compile(r"`[^`\n]*`")
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
HEADING = re.compile(r"^#{1,6} +(.+?) *#*$", re.M)


def prose(text: str) -> str:
    """The page without fenced blocks and code spans, where brackets and parentheses are not links."""
    return CODE_SPAN.sub("", FENCE.sub("", text))


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped (hyphens and underscores kept), spaces to
    hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading).replace("`", "").lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: str) -> set[str]:
    """Every heading anchor of a markdown file, with GitHub's -1, -2 ... for repeated headings."""
    seen: dict[str, int] = {}
    out = set()
    with open(path) as f:
        for heading in HEADING.findall(FENCE.sub("", f.read())):
            s = slug(heading)
            out.add(f"{s}-{seen[s]}" if s in seen else s)
            seen[s] = seen.get(s, 0) + 1
    return out


def broken_links(page: str, root: str = ROOT) -> list[str]:
    """The relative links of ``page`` (a path under ``root``) whose file or section does not exist."""
    with open(os.path.join(root, page)) as f:
        targets = LINK.findall(prose(f.read()))
    broken = []
    for target in targets:
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        file = os.path.normpath(os.path.join(root, os.path.dirname(page), path)) if path else os.path.join(root, page)
        if not os.path.exists(file):
            broken.append(f"{target}: no such file")
        elif anchor and file.endswith(".md") and anchor not in anchors(file):
            broken.append(f"{target}: no heading with that anchor")
    return broken


def test_the_slug_follows_githubs_rule():
    assert slug("Table 1 on a real log: TREC 2013 Session Track") == "table-1-on-a-real-log-trec-2013-session-track"
    assert slug("The data engine (`pipelines/build_data.py`)") == "the-data-engine-pipelinesbuild_datapy"
    assert slug("Ray's fixed costs") == "rays-fixed-costs"


def test_a_missing_file_or_section_is_reported(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.md").write_text("# A\n\n## Here\n")
    (tmp_path / "README.md").write_text(
        "[ok](docs/a.md#here) [gone](docs/b.md) [no section](docs/a.md#there) `[code](docs/c.md)`\n"
        "```\n[fenced](docs/d.md)\n```\n[web](https://example.org/x)\n"
    )
    assert broken_links("README.md", str(tmp_path)) == [
        "docs/b.md: no such file",
        "docs/a.md#there: no heading with that anchor",
    ]


@pytest.mark.parametrize("page", PAGES)
def test_every_relative_link_resolves(page):
    assert broken_links(page) == []


def test_the_readme_keeps_the_block_its_writer_replaces():
    """pipelines/demo.py --readme README.md rewrites what lies between these markers (crops_ray/report/readme.py)."""
    with open(os.path.join(ROOT, "README.md")) as f:
        text = f.read()
    assert text.count(START) == 1 and text.count(END) == 1 and text.index(START) < text.index(END)
