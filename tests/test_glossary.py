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


def test_the_terms_korean_learners_use():
    korean = {row[0]: row[1] for row in _rows()}
    assert korean["saliency map"].startswith("현저성 맵") and "돌출" not in korean["saliency map"]
    assert korean["inpainting"] == "인페인팅"
    for term, word in [("mean-field approximation", "평균장"), ("posterior collapse", "사후 붕괴"),
                       ("ancestral sampling", "조상 샘플링"), ("signal-to-noise ratio (SNR)", "신호 대 잡음비"),
                       ("class token ([CLS])", "클래스 토큰"), ("attention rollout", "어텐션 롤아웃"),
                       ("depthwise convolution", "깊이별 합성곱")]:
        assert word in korean.get(term, ""), f"the glossary has no {term!r} ({word})"


def test_names_only_files_the_repository_has():
    text = (CHAPTERS / "glossary.md").read_text(encoding="utf-8")
    for name in re.findall(r"`([\w./-]+\.(?:md|ipynb|py))`", text):
        assert (CHAPTERS / name).exists() or (CHAPTERS.parent / name).exists(), f"the glossary names {name}, which is not there"
