"""The documentation is self-contained: every cited docs/ path and anchor exists, nothing cites outside.

Code cites ``docs/<file>`` or ``docs/<file>#<anchor>``; an anchor must be the
GitHub slug of a heading of that file (lower case, punctuation other than ``-``
and ``_`` dropped, spaces to hyphens, ``-1``, ``-2`` ... for repeated headings).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SOURCES = ("dpaudit", "tests", "benchmarks", "docs", "README.md")
SUFFIXES = {".py", ".md", ".toml", ".txt", ".cfg", ".html", ".j2", ""}
# A cited path: docs/ followed by path characters, optionally #anchor. The pattern is built
# from pieces so that this file cites nothing itself.
CITATION = re.compile(
    r"(?<![\w/.-])" + "do" + r"cs/([\w./-]+?)(#[\w-]+)?(?=[.,;:]?(?:[^\w/.#-]|$))"
)
OUTSIDE = (
    "FORMULAS" + ".md",
    "DESIGN" + ".md",
    "STYLE" + ".md",
    "../" + "shared",
    "do" + "cs/STYLE",
)


def _files(*names: str) -> list[Path]:
    out: list[Path] = []
    for name in names:
        path = ROOT / name
        if path.is_file():
            out.append(path)
        elif path.is_dir():
            out += sorted(
                p
                for p in path.rglob("*")
                if p.is_file() and p.suffix in SUFFIXES and "__pycache__" not in p.parts
            )
    return out


def slug(heading: str) -> str:
    """GitHub's anchor for a Markdown heading's text (before de-duplication)."""
    text = heading.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)  # keeps letters, digits, _, -, spaces
    return text.replace(" ", "-")


def anchors(markdown: str) -> set[str]:
    """Every heading anchor of a Markdown text, with GitHub's -1, -2 suffixes for repeats."""
    seen: dict[str, int] = {}
    out: set[str] = set()
    fenced = False
    for line in markdown.splitlines():
        if line.lstrip().startswith(("```", "~~~")):
            fenced = not fenced
            continue
        match = None if fenced else re.match(r"^ {0,3}#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not match:
            continue
        base = slug(match.group(1))
        count = seen.get(base, 0)
        seen[base] = count + 1
        out.add(base if count == 0 else f"{base}-{count}")
    return out


def citations() -> list[tuple[str, int, str, str | None]]:
    """(file, line, path under docs/, anchor or None) of every docs/ citation in SOURCES."""
    found = []
    for path in _files(*SOURCES):
        if path == Path(__file__).resolve():
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        for number, line in enumerate(text.splitlines(), 1):
            for match in CITATION.finditer(line):
                rel = str(path.relative_to(ROOT))
                anchor = match.group(2)[1:] if match.group(2) else None
                found.append((rel, number, match.group(1).rstrip("."), anchor))
    return found


# ----------------------------------------------------------------------------- the helpers


@pytest.mark.parametrize(
    "heading,expected",
    [
        ("Clopper-Pearson threshold audit", "clopper-pearson-threshold-audit"),
        ("`minkpp`", "minkpp"),
        ("TPR at FPR", "tpr-at-fpr"),
        ("Privacy units and ledgers", "privacy-units-and-ledgers"),
        ("What it means (ε, δ)?", "what-it-means-ε-δ"),
        ("clf_lira: `scaled` logit", "clf_lira-scaled-logit"),
    ],
)
def test_slug_follows_github(heading, expected):
    assert slug(heading) == expected


def test_anchors_skip_code_fences_and_number_repeats():
    text = "# Top\n## Part\n```\n# not a heading\n```\n## Part\n### Part\nplain # text\n"
    assert anchors(text) == {"top", "part", "part-1", "part-2"}


def test_citation_pattern_finds_paths_and_anchors():
    line = (
        "see do" + "cs/run-directory.md), do" + "cs/formulas.md#one-run-audit. and "
        "(do" + "cs/design.md#layers, x/do" + "cs/no.md"
    )
    got = [(m.group(1).rstrip("."), m.group(2)) for m in CITATION.finditer(line)]
    assert got == [
        ("run-directory.md", None),
        ("formulas.md", "#one-run-audit"),
        ("design.md", "#layers"),
    ]


# ----------------------------------------------------------------------------- the repository


def test_the_code_cites_the_docs():
    """The scan is not vacuous: the package cites the formulas and the design."""
    cited = {(p, a) for f, _, p, a in citations() if f.startswith("dpaudit/")}
    assert any(p == "formulas.md" and a for p, a in cited)
    assert any(p == "design.md" and a for p, a in cited)


def test_every_cited_docs_path_and_anchor_exists():
    problems = []
    cache: dict[str, set[str]] = {}
    for source, number, rel, anchor in citations():
        target = ROOT / "docs" / rel
        if not target.exists():
            problems.append(f"{source}:{number}: docs/{rel} does not exist")
            continue
        if anchor is None:
            continue
        if target.suffix != ".md" or not target.is_file():
            problems.append(f"{source}:{number}: docs/{rel}#{anchor}: not a Markdown file")
            continue
        if rel not in cache:
            cache[rel] = anchors(target.read_text(encoding="utf-8"))
        if anchor not in cache[rel]:
            problems.append(f"{source}:{number}: docs/{rel} has no heading #{anchor}")
    assert not problems, "\n".join(problems)


def test_relative_markdown_links_resolve():
    """``[text](file.md#anchor)`` and ``[text](#anchor)`` links of the docs and README resolve."""
    problems = []
    for page in _files("docs", "README.md"):
        if page.suffix != ".md":
            continue
        for number, line in enumerate(page.read_text(encoding="utf-8").splitlines(), 1):
            for target in re.findall(r"\]\(([^)\s]+)\)", line):
                if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, mailto:, ...
                    continue
                rel, _, anchor = target.partition("#")
                linked = (page.parent / rel).resolve() if rel else page
                where = f"{page.relative_to(ROOT)}:{number}: {target}"
                if not linked.exists():
                    problems.append(f"{where}: no such file")
                elif anchor and anchor not in anchors(linked.read_text(encoding="utf-8")):
                    problems.append(f"{where}: no such heading")
    assert not problems, "\n".join(problems)


def test_nothing_cites_the_projects_private_notes():
    """No file of the package, tests, benchmarks or README points outside the repository."""
    problems = []
    for path in _files("dpaudit", "tests", "benchmarks", "README.md"):
        if path == Path(__file__).resolve():
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        for number, line in enumerate(text.splitlines(), 1):
            for word in OUTSIDE:
                if word in line:
                    problems.append(f"{path.relative_to(ROOT)}:{number}: {word}")
    assert not problems, "\n".join(problems)
