"""The glossary (chapters/glossary.md): every term has its Korean equivalent and points to a chapter that exists."""
import re
from pathlib import Path

CHAPTERS = Path(__file__).resolve().parent.parent / "chapters"


def _rows():
    lines = (CHAPTERS / "glossary.md").read_text(encoding="utf-8").splitlines()
    table = [line for line in lines if line.startswith("| ") and not line.startswith("| term") and "---" not in line]
    return [[cell.strip() for cell in re.split(r"(?<!\\)\|", line)[1:-1]] for line in table]


def test_every_term_has_korean_a_chapter_and_a_meaning():
    rows = _rows()
    assert len(rows) >= 50
    chapters = {path.name[:2] for path in CHAPTERS.glob("[0-9][0-9]_*.py")}
    for term, korean, chapter, meaning in rows:
        assert re.search(r"[\uac00-\ud7a3]", korean), f"{term!r} has no Korean (Hangul) equivalent: {korean!r}"
        assert chapter in chapters, f"{term!r} points to chapter {chapter!r}, which does not exist"
        assert meaning, f"{term!r} has no meaning given"


def test_terms_are_unique():
    terms = [row[0].lower() for row in _rows()]
    assert len(terms) == len(set(terms)), "a term is listed twice"


def test_terms_the_issue_names_are_there():
    terms = " ".join(row[0] for row in _rows())
    for term in ("score function", "reverse process", "receptive field"):
        assert term in terms
