"""Every relative link in the README and docs/ lands: the file exists and, with ``#anchor``, a heading of
it has that anchor (GitHub's rule, as :func:`tests.docs.test_spec.anchors` computes it). Links to web
pages are not followed."""

import re

from tests.docs.test_spec import anchors
from tests.paths import DOCS, REPO

LINK = re.compile(r"\]\(([^)\s]+)\)")
PAGES = [REPO / "README.md", *sorted(DOCS.glob("*.md"))]


def _links(page):
    """``(line number, target)`` of the relative links of a Markdown page, fenced code skipped."""
    fenced = False
    for n, line in enumerate(page.read_text(encoding="utf-8").splitlines(), 1):
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        if not fenced:
            for m in LINK.finditer(line):
                if not re.match(r"[a-z]+:", m.group(1)):  # http:, https:, mailto:
                    yield n, m.group(1)


def test_the_pages_have_relative_links():
    assert sum(1 for page in PAGES for _ in _links(page)) > 20


def test_every_relative_link_lands():
    broken = []
    for page in PAGES:
        for n, target in _links(page):
            path, _, anchor = target.partition("#")
            dest = (page.parent / path).resolve() if path else page
            where = f"{page.relative_to(REPO)}:{n}: {target}"
            if not dest.exists():
                broken.append(f"{where} (no such file)")
            elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
                broken.append(f"{where} (no heading with that anchor)")
    assert not broken, "broken links:\n" + "\n".join(broken)
