"""The documentation stands on its own: every link it makes is to a file of the repository
that exists, and it never sends the reader to a document outside it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]
DOCS = [ROOT / "README.md", ROOT / "benchmarks" / "README.md", *sorted(
    (ROOT / "docs").glob("**/*.md"))]
# Inline links and images, and reference definitions: [text](target), [label]: target.
LINK = re.compile(r"\]\(\s*<?([^)\s>]+)>?[^)]*\)|^\s*\[[^\]]+\]:\s*(\S+)", re.MULTILINE)


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_links_stay_inside_the_repository(doc: Path) -> None:
    text = doc.read_text()
    for match in LINK.finditer(text):
        target = (match.group(1) or match.group(2)).split("#")[0]
        if not target or re.match(r"[a-z][a-z0-9+.-]*:", target):  # a URL, or a fragment
            continue
        resolved = (doc.parent / target).resolve()
        assert resolved.is_relative_to(ROOT), f"{doc.name} links outside the repo: {target}"
        assert resolved.exists(), f"{doc.name} links to a missing file: {target}"
    # The contract the project was built against is not part of it: say things here.
    assert not re.search(r"\bcontract\b|CONTRACT\.md|\.\./shared", text), doc.name
