"""The learner's path through every chapter 01-13 (issue 18), read from the chapter sources; nothing here runs one.

- **See it work first**: a ``## See it work first`` section before section A, with a code cell and the sentence
  "By the end of this chapter you will have derived and trained this" (or "... derived and built this").
- **A picture of every model**: the chapter draws at least one schematic from ``course_lib`` (a ``...schematic(``
  call) before the first ``nn.Module`` class it defines.
- **Core path and deep dives**: the header has a ``**Core path.**`` paragraph with its minutes; a heading that a
  first reading can skip ends with exactly ``(optional deep dive)``, and the core-path paragraph names its label.
- **A summary at the end**: a ``## Summary`` section just before the discussion questions, with a table
  ``| key equation | derived in | checked by |`` whose section labels exist, and three things to remember.
- **Facilitator notes** in ``chapters/facilitator/NN_slug.md``: a session plan (what to pre-run and how long it
  takes), an answer or hint and the usual wrong answers for every discussion question, where learners stall.
- **Exercises that ask more than copying**: at least one marked ``*Predict, then run.*`` or ``*Derive, then
  check.*``, and no exercise solution appears verbatim elsewhere in the student notebook.
- **No documents the learner never sees**: no "source post", "study group's notes", ... .
"""
from __future__ import annotations

import ast
import functools
import re
from pathlib import Path

import jupytext
import pytest

from course_lib.tools.student import EXERCISE_TAG, build_student_notebooks

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = sorted(p for p in (ROOT / "chapters").glob("[0-9][0-9]_*.py") if p.name[:2] != "00")
FACILITATOR = ROOT / "chapters" / "facilitator"
DEEP_DIVE = "(optional deep dive)"
HEADING = re.compile(r"^(#{2,4}) (?:([A-Z](?:\.\d+)*)[.]? )?(.*)$")
UNSEEN_DOCUMENTS = re.compile(
    r"\b(?:source|survey|DDPM|CvT|blog) (?:posts?|documents?|blog)\b|study group'?s? (?:notes|assignment)"
    r"|course'?s sources|seed notes|research digest|\bdigest\b|\bseed-\d{3}|\b(?:earlier|previous) session\b", re.I)


def _cells(source: Path):
    return jupytext.read(source).cells


def _headings(cells):
    """(cell index, level, label or None, title) of every markdown heading outside fenced code."""
    found = []
    for index, cell in enumerate(cells):
        if cell.cell_type != "markdown":
            continue
        fenced = False
        for line in cell.source.splitlines():
            if line.startswith("```"):
                fenced = not fenced
            match = None if fenced else HEADING.match(line)
            if match:
                found.append((index, len(match.group(1)), match.group(2), match.group(3).strip()))
    return found


def _labels(cells) -> set[str]:
    return {label for _, _, label, _ in _headings(cells) if label}


@pytest.fixture(scope="module", params=CHAPTERS, ids=lambda p: p.stem)
def chapter(request):
    return request.param, _cells(request.param)


def test_see_it_work_first(chapter):
    source, cells = chapter
    headings = _headings(cells)
    first = next((h for h in headings if h[1] == 2 and h[3].lower().startswith("see it work first")), None)
    assert first, f"{source.name}: no '## See it work first' section (right after the goals and the imports)"
    section_a = next((h for h in headings if h[2] == "A"), None)
    assert section_a and first[0] < section_a[0], f"{source.name}: 'See it work first' must come before section A"
    text = "\n".join(c.source for c in cells[first[0]:section_a[0]] if c.cell_type == "markdown")
    assert re.search(r"by the end of this chapter you will have derived and (trained|built) (this|these|it)", text, re.I), (
        f"{source.name}: say 'By the end of this chapter you will have derived and trained this' under See it work first")
    assert any(c.cell_type == "code" for c in cells[first[0]:section_a[0]]), f"{source.name}: See it work first shows nothing"


def test_a_schematic_before_the_model_code(chapter):
    source, cells = chapter
    calls = [i for i, c in enumerate(cells) if c.cell_type == "code" and re.search(r"schematic\w*\(", c.source)]
    assert calls, f"{source.name}: draws no schematic (call course_lib.topics.<topic>.schematic() before building the model)"
    classes = [i for i, c in enumerate(cells) if c.cell_type == "code" and re.search(r"^class \w+\(nn\.Module\)", c.source, re.M)]
    if classes:
        assert calls[0] < classes[0], f"{source.name}: the first schematic comes after the first nn.Module class (cell {classes[0]})"


def _header(cells) -> str:
    return next(c.source for c in cells if c.cell_type == "markdown")


def test_core_path_and_deep_dives(chapter):
    source, cells = chapter
    header = _header(cells)
    match = re.search(r"\*\*Core path\.\*\*(.*?)(?:\n\n|\n\*\*|$)", header, re.S)
    assert match, f"{source.name}: the header needs a '**Core path.**' paragraph (the sections to read first, and minutes)"
    core = match.group(1)
    time = re.search(r"\*\*Time\.\*\*(.*?)(?:\n\n|\n\*\*|$)", header, re.S)
    assert time and f"facilitator/{source.stem}.md" in time.group(1), (
        f"{source.name}: the **Time.** paragraph must give the number of sessions and link the plan, "
        f"[facilitator/{source.stem}.md](facilitator/{source.stem}.md)")
    assert "90-minute study-group session" not in header, f"{source.name}: replace the single 90-minute template"
    assert re.search(r"\d+ min", core), f"{source.name}: the core path must say how many minutes it takes"
    for _, _, label, title in _headings(cells):
        if re.search(r"deep dive|optional", title, re.I):
            assert title.endswith(DEEP_DIVE), f"{source.name}: heading {title!r} must end with exactly {DEEP_DIVE!r}"
            assert label and re.search(rf"\b{re.escape(label)}\b", core), (
                f"{source.name}: the core-path paragraph does not name the deep dive {label} ({title!r})")


def test_summary_before_the_discussion_questions(chapter):
    source, cells = chapter
    headings = _headings(cells)
    summary = [h for h in headings if h[1] == 2 and h[3] == "Summary"]
    assert summary, f"{source.name}: no '## Summary' section (the key equations table and three things to remember)"
    position = headings.index(summary[-1])
    assert "Discussion questions" in headings[position + 1][3], f"{source.name}: put the Summary just before the discussion questions"
    text = "\n".join(c.source for c in cells[summary[-1][0]:headings[position + 1][0] + 1] if c.cell_type == "markdown")
    text = text.split("Discussion questions")[0]
    assert re.search(r"^\| key equation \| derived in \| checked by \|$", text, re.M), (
        f"{source.name}: the summary needs a table '| key equation | derived in | checked by |'")
    rows = [line for line in text.splitlines() if line.startswith("|") and not line.startswith(("| key", "|---", "| ---"))]
    assert len(rows) >= 3, f"{source.name}: only {len(rows)} key equations in the summary table"
    labels = _labels(cells)
    for row in rows:
        cells_of_row = [part.strip() for part in row.strip("|").split("|")]
        assert len(cells_of_row) == 3, f"{source.name}: summary row {row!r} has {len(cells_of_row)} columns, not 3"
        for column in cells_of_row[1:]:
            named = re.findall(r"\b([A-Z](?:\.\d+)?)\b", column)
            assert named, f"{source.name}: summary row {row!r}: name a section (like C.2) in {column!r}"
            missing = [n for n in named if n not in labels and n not in {"I", "A"}]
            assert not missing, f"{source.name}: summary row {row!r} names sections {missing} that the chapter does not have"
    remember = re.search(r"\*\*Three things to remember\.\*\*(.*)", text, re.S)
    assert remember, f"{source.name}: the summary needs '**Three things to remember.**'"
    assert re.findall(r"^(\d)\. ", remember.group(1), re.M) == ["1", "2", "3"], f"{source.name}: three numbered things"


def _discussion_count(cells) -> int:
    headings = _headings(cells)
    index = next(h[0] for h in reversed(headings) if "Discussion questions" in h[3])
    text = "\n".join(c.source for c in cells[index:] if c.cell_type == "markdown")
    return len(re.findall(r"^\d+\. ", text.split("Discussion questions", 1)[1], re.M))


def test_facilitator_notes(chapter):
    source, cells = chapter
    notes = FACILITATOR / f"{source.stem}.md"
    assert notes.exists(), f"no facilitator notes for {source.name}: write {notes.relative_to(ROOT)}"
    text = notes.read_text(encoding="utf-8")
    for heading in ("## Session plan", "## Discussion questions", "## Where learners stall"):
        assert re.search(rf"^{heading}\b", text, re.M), f"{notes.name}: no '{heading}' section"
    plan = text.split("## Session plan", 1)[1].split("\n## ", 1)[0]
    assert re.search(r"^\| session \| covers \| minutes \| pre-run before the session \|$", plan, re.M), (
        f"{notes.name}: the session plan needs a table '| session | covers | minutes | pre-run before the session |'")
    rows = [line for line in plan.splitlines() if re.match(r"^\| \d+ \|", line)]
    assert rows, f"{notes.name}: the session plan has no sessions"
    for row in rows:
        assert re.search(r"`(ci|cpu|gpu)`|nothing", row), f"{notes.name}: say which profile to pre-run (or nothing): {row}"
    questions = text.split("## Discussion questions", 1)[1].split("\n## ", 1)[0]
    answered = re.findall(r"^### (\d+)\. \S", questions, re.M)  # the number, then the question (or its premise)
    expected = [str(n) for n in range(1, _discussion_count(cells) + 1)]
    assert answered == expected, f"{notes.name}: answers to questions {answered}, the chapter asks {expected}"
    for block in re.split(r"^### \d+\.", questions, flags=re.M)[1:]:
        assert re.search(r"\*\*(Answer|Hints?)\.?\*\*", block), f"{notes.name}: a question without **Answer.** or **Hint.**"
        assert "**Usual wrong answers" in block, f"{notes.name}: a question without **Usual wrong answers.**"


def test_an_exercise_that_asks_more_than_copying(chapter):
    source, cells = chapter
    text = "\n".join(c.source for c in cells if c.cell_type == "markdown")
    assert re.search(r"\*Predict, then run\.\*|\*Derive, then check\.\*", text), (
        f"{source.name}: no exercise marked '*Predict, then run.*' or '*Derive, then check.*'")


def _statements(nodes) -> list[str]:
    """The simple statements under ``nodes``, in source order, each as ``ast.unparse`` of what it computes (the value
    of a ``return``, an assignment or an expression), so formatting, comments and the name assigned to do not matter."""
    found = []
    for node in nodes:
        if isinstance(node, (ast.Return, ast.Assign, ast.AugAssign, ast.AnnAssign, ast.Expr)):
            if node.value is not None and not (isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)):
                found.append(ast.unparse(node.value))
        for field in ("body", "orelse", "finalbody", "handlers"):
            found += _statements(getattr(node, field, []) or [])
    return found


def _solution_bodies(cell_source: str) -> list[tuple[str, list[str]]]:
    bodies = []
    for node in ast.walk(ast.parse(cell_source)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            bodies.append((node.name, _statements(node.body)))
    return bodies


def _contains(haystack: list[str], needle: list[str]) -> bool:
    return any(haystack[i:i + len(needle)] == needle for i in range(len(haystack) - len(needle) + 1))


def _parses(code: str) -> bool:
    try:
        ast.parse(code)
    except SyntaxError:  # a cell with IPython magics
        return False
    return True


@functools.lru_cache(maxsize=1)
def _student_notebooks() -> dict:
    """Every chapter's student notebook, in one nbgrader run (seconds; one run per chapter costs seconds each)."""
    return {result.chapter: result for result in build_student_notebooks(CHAPTERS, ROOT / "build" / "student-ci")}


def test_no_solution_appears_verbatim_in_the_student_notebook(chapter):
    source, cells = chapter
    student = _student_notebooks()[source].notebook
    others = [_statements(ast.parse(c.source).body) for c in student.cells
              if c.cell_type == "code" and EXERCISE_TAG not in c.metadata.get("tags", []) and _parses(c.source)]
    for cell in cells:
        if cell.cell_type != "code" or EXERCISE_TAG not in cell.metadata.get("tags", []):
            continue
        for name, body in _solution_bodies(cell.source):
            if not body or (len(body) == 1 and len(body[0]) < 25):
                continue  # a one-liner as short as `return x.mean(0)` is its own hint, not a copy
            copies = [i for i, lines in enumerate(others) if _contains(lines, body)]
            assert not copies, (f"{source.name}: the solution of exercise {name}() appears verbatim in another code cell "
                                f"of the student notebook ({len(copies)} cell(s)); reword the exercise or move the shown code")


def test_no_documents_the_learner_never_sees(chapter):
    source, cells = chapter
    hits = [line.strip() for c in cells for line in c.source.splitlines() if UNSEEN_DOCUMENTS.search(line)]
    assert not hits, (f"{source.name}: {len(hits)} line(s) refer to documents the learner never sees; say it as "
                      f"'a common reading is X; in fact Y' or cite the paper: {hits[:3]}")


def test_every_chapter_has_facilitator_notes_and_nothing_else_there():
    names = sorted(p.stem for p in FACILITATOR.glob("*.md")) if FACILITATOR.exists() else []
    chapters = [p.stem for p in CHAPTERS]
    assert not set(names) - set(chapters) - {"README"}, f"facilitator notes for no chapter: {set(names) - set(chapters)}"
