"""docs/spec.md, the contract the code cites: every citation resolves, and the page keeps its numbering.

1. Every citation of the page in the code, tests, benchmarks and docs (``*.py`` and ``*.md`` under
   ebr_ref/, weights_io/, tests/, benchmarks/, docs/), written ``SPEC §n``, ``spec.md §n`` or
   ``docs/spec.md §n`` with an optional subsection (``§5.6``), a list or range (``§2-§5``,
   ``§2, §4 and §5``) or a step of a section (``§5 step 3``, subsection 5.3), names a heading of
   docs/spec.md.
2. The page's sections are ``## §1`` .. ``## §9`` in order, each subsection ``### §n.m`` sits under
   section n and they count 1, 2, ... without gaps.
3. Links into the page (``spec.md#anchor``) and the page's own links to other docs land on headings.
4. Every code or test pointer on the page (``path.py`` or ``path.py::name``) names a file that exists
   and, with ``::name``, a function, class or constant defined in it.
"""

import re

from tests.paths import DOCS, REPO

SPEC = DOCS / "spec.md"
SCANNED = ("ebr_ref", "weights_io", "tests", "benchmarks", "docs")
SECTIONS = [str(n) for n in range(1, 10)]

_NUM = r"§\d+(?:\.\d+)?"
# the cited numbers, then more numbers joined by a range dash, a comma, a slash, "and" or "or"
CITATION = re.compile(
    rf"(?:\bSPEC|\bspec\.md)\s+({_NUM}(?:\s*(?:[-–,/]|\band\b|\bor\b)\s*{_NUM})*)(?:\s+step\s+(\d+))?"
)
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
NUMBERED = re.compile(r"^§(\d+(?:\.\d+)*)\s+\S")
LINK = re.compile(r"\]\(([^)\s#]*)#([^)\s]+)\)")
POINTER = re.compile(r"`((?:ebr_ref|tests|benchmarks|weights_io)/[\w./-]+\.py)(?:::(\w+))?`")


def _lines_outside_code(text):
    """``(line number, line)`` of the lines not inside fenced code blocks."""
    fenced = False
    for n, line in enumerate(text.splitlines(), 1):
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        if not fenced:
            yield n, line


def headings(path):
    """``[(level, text)]`` of a Markdown file's headings (fenced code skipped)."""
    out = []
    for _, line in _lines_outside_code(path.read_text(encoding="utf-8")):
        m = HEADING.match(line)
        if m:
            out.append((len(m.group(1)), m.group(2)))
    return out


def spec_numbers():
    """``[(level, number)]`` of docs/spec.md's numbered headings, in page order."""
    out = []
    for level, text in headings(SPEC):
        m = NUMBERED.match(text)
        if m:
            out.append((level, m.group(1)))
    return out


def slug(text):
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")


def anchors(path):
    """The anchors of a Markdown file's headings (repeated headings get -1, -2, ... as on GitHub)."""
    seen, out = {}, set()
    for _, text in headings(path):
        s = slug(text)
        out.add(s if s not in seen else f"{s}-{seen[s]}")
        seen[s] = seen.get(s, 0) + 1
    return out


def _expand(group):
    """The section numbers of one citation's group: ``§2-§5`` is 2, 3, 4, 5; lists are taken as written."""
    nums = re.findall(r"§(\d+(?:\.\d+)?)", group)
    seps = re.split(r"§\d+(?:\.\d+)?", group)[1:-1]  # what lies between consecutive numbers
    out = [nums[0]]
    for sep, a, b in zip(seps, nums, nums[1:]):
        if sep.strip() in ("-", "–") and "." not in a + b:
            out.extend(str(k) for k in range(int(a) + 1, int(b) + 1))
        else:
            out.append(b)
    return out


def citations():
    """``[(file, line number, cited number, the citation as written)]`` over the scanned folders."""
    found = []
    for top in SCANNED:
        for path in sorted((REPO / top).rglob("*")):
            if path.suffix not in (".py", ".md") or not path.is_file():
                continue
            for n, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
                for m in CITATION.finditer(line):
                    nums = _expand(m.group(1))
                    if m.group(2):  # "§5 step 3" is subsection 5.3
                        nums = [f"{nums[-1]}.{m.group(2)}"] if "." not in nums[-1] else nums
                    rel = path.relative_to(REPO).as_posix()
                    found.extend((rel, n, num, m.group(0)) for num in nums)
    return found


def test_the_citation_pattern():
    assert _expand("§2-§5") == ["2", "3", "4", "5"]
    assert _expand("§2, §4 and §5") == ["2", "4", "5"]
    assert _expand("§5.6") == ["5.6"]
    m = CITATION.search("the normalisation (SPEC §5 step 3), as the oracle")
    assert (m.group(1), m.group(2)) == ("§5", "3")
    assert CITATION.search("SPEC §4 / paper §4").group(1) == "§4"
    assert CITATION.search("see docs/spec.md §4.2 for the rule").group(1) == "§4.2"


def test_every_citation_names_a_section_of_the_page():
    cited = citations()
    assert cited, "no citation of docs/spec.md found: has the citation syntax changed?"
    numbers = {num for _, num in spec_numbers()}
    missing = [f"{f}:{n}: {text!r} cites §{num}" for f, n, num, text in cited if num not in numbers]
    assert not missing, "citations of sections docs/spec.md does not have:\n" + "\n".join(missing)


def test_citations_name_the_file_a_reader_can_open():
    """In code a citation reads ``docs/spec.md §n``; in docs it is a link or names ``spec.md``: a bare
    ``SPEC §n`` names no file a user of the package can open."""
    bare = [
        f"{f}:{n}: {text!r}"
        for f, n, _, text in citations()
        if text.startswith("SPEC") and f != "tests/docs/test_spec.py"
    ]
    assert not bare, "write docs/spec.md §n (code) or a spec.md link (docs):\n" + "\n".join(bare)


def test_sections_are_numbered_one_to_nine_in_order():
    numbered = spec_numbers()
    top = [num for level, num in numbered if level == 2]
    assert top == SECTIONS, f"## headings of docs/spec.md: {top}"
    levels = {level for level, _ in headings(SPEC)}
    assert levels <= {1, 2, 3, 4}, levels
    unnumbered = [text for level, text in headings(SPEC) if level in (2, 3) and not NUMBERED.match(text)]
    assert not unnumbered, f"section headings without a § number: {unnumbered}"
    section, expect = None, 1
    for level, num in numbered:
        if level == 2:
            assert "." not in num, f"## §{num}: a section heading takes a whole number"
            section, expect = num, 1
        elif level == 3:
            assert num == f"{section}.{expect}", f"### §{num} follows §{section}.{expect - 1}"
            expect += 1


def test_links_into_and_out_of_the_page_land_on_headings():
    bad = []
    sources = sorted(DOCS.rglob("*.md")) + [REPO / "README.md"]
    for path in sources:
        if not path.is_file():
            continue
        for n, line in _lines_outside_code(path.read_text(encoding="utf-8")):
            for target, anchor in LINK.findall(line):
                dest = (path.parent / target).resolve() if target else path
                if dest != SPEC.resolve() and path != SPEC:
                    continue  # only links into the page, and all of the page's own links
                if target.startswith(("http://", "https://")):
                    continue
                if not dest.is_file():
                    bad.append(f"{path.relative_to(REPO)}:{n}: no file {target}")
                elif anchor not in anchors(dest):
                    bad.append(f"{path.relative_to(REPO)}:{n}: no heading #{anchor} in {target or path.name}")
    assert not bad, "\n".join(bad)


def test_every_pointer_on_the_page_exists():
    bad, count = [], 0
    for n, line in _lines_outside_code(SPEC.read_text(encoding="utf-8")):
        for rel, name in POINTER.findall(line):
            count += 1
            path = REPO / rel
            if not path.is_file():
                bad.append(f"docs/spec.md:{n}: no file {rel}")
                continue
            if name and not re.search(
                rf"^\s*(?:def|class)\s+{name}\b|^{name}\s*[:=]", path.read_text(encoding="utf-8"), re.M
            ):
                bad.append(f"docs/spec.md:{n}: {rel} defines no {name}")
    assert count > 0, "no code or test pointer found on the page"
    assert not bad, "\n".join(bad)
