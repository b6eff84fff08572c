"""Student notebooks through nbgrader: every chapter with its exercise solutions cleared.

    python -m course_lib.tools.student [--out student] [--force] [chapters ...]      (what ``make student`` runs)
    python -m course_lib.tools.student --nbgrader-source DIR [chapters ...]          (a leader's nbgrader course)

A chapter's exercise cells are tagged ``exercise``, and inside them nbgrader's markers enclose the solution::

    # %% tags=["exercise"]
    def my_fn(x):
        \"\"\"What it returns, with shapes.\"\"\"
        ### BEGIN SOLUTION
        return 2 * x
        ### END SOLUTION

or, for a prediction, its value after a placeholder::

    MY_PREDICTION = None  # your prediction: "up" or "down"
    ### BEGIN SOLUTION
    MY_PREDICTION = "up"
    ### END SOLUTION

The chapter (read from its jupytext source) becomes nbgrader's *source* version of an assignment named after it
(``source/NN_slug/NN_slug.ipynb``): each exercise cell an nbgrader solution cell; each cell that checks an
exercise (a cell between the exercise and its ``show_solution`` cell that uses the exercise's names, found by
following them through the notebook) an autograded test cell worth one point, locked; a "your turn" note above
each exercise. ``nbgrader generate_assignment`` (its Python API, in a temporary course directory) then writes
the learner's *release* version: nbgrader replaces each solution region with ``# YOUR CODE HERE`` and
``raise NotImplementedError()``. The release is checked before anything is written: every function keeps its
decorators, signature and docstring and its body is the stub; every prediction is bound to its placeholder.

In the release, the check cells of an exercise raise, and so does a prediction's cell. They carry nbval's tag
``raises-exception``, so the student notebook still runs from top to bottom under nbval. nbval 0.11 does not
fail such a cell when it does *not* raise, nor look at *what* it raised; :func:`student_check_problem`, called
from the repository's ``conftest.py`` and the browser test, adds both: a tagged cell must raise, and raise
``NotImplementedError`` (or ``course_lib.core.check``'s "is not implemented yet" ``AssertionError``; any
``AssertionError`` for a check of a prediction), not an unrelated error. A cell *outside* an exercise's checks
that uses a function of the exercise would fail in the release: building stops with an error that says so.

A learner's work is never lost. Each notebook written records a fingerprint of its cells in its metadata
(``course_student``: a short sha256 of each cell's type and source; outputs, execution counts and cell
metadata are left out, so running the notebook is not an edit). Before writing anything, every target that
exists is checked: one that still holds what was last written (or already holds what would be written) is
replaced; one that was edited, has no fingerprint or is not readable stops the run with exit code 2 and
nothing written, naming each notebook and what changed. ``--force`` replaces them anyway, after copying each
to ``NN_slug.ipynb.bak`` (``.bak.1``, ``.bak.2``, ... when that exists). Notebooks are written to a temporary
file in the same folder and then renamed, so a killed run never leaves half a notebook.
"""
from __future__ import annotations

import argparse
import ast
import contextlib
import copy
import difflib
import hashlib
import json
import os
import re
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
CHAPTERS_DIR = REPO_ROOT / "chapters"
CHAPTER_GLOB = "[0-9][0-9]_*.py"
EXERCISE_TAG = "exercise"
RAISES_TAG = "raises-exception"  # nbval's tag: the cell may raise
CHECK_METADATA = "student_check"  # student check cell metadata, read by student_check_problem
NOT_IMPLEMENTED_TEXT = "is not implemented yet"  # what course_lib.core.check says when a stub raised
FINGERPRINT_METADATA = "course_student"  # student notebook metadata: what this tool wrote, to spot a learner's edits
BEGIN_SOLUTION, END_SOLUTION = "### BEGIN SOLUTION", "### END SOLUTION"  # nbgrader's markers
POINTS_PER_CHECK = 1
_JUPYTEXT_CELL_KEYS = {"lines_to_next_cell", "lines_to_end_of_cell_marker", "cell_marker", "region_name",
                       "cell_depth", "title"}


class StudentError(ValueError):
    """A chapter cannot be turned into a student notebook; the message says which cell and why."""


class LearnersWorkError(StudentError):
    """Notebooks in ``--out`` differ from what this tool last wrote there: overwriting them could lose work."""

    def __init__(self, problems: dict[Path, str]):
        self.problems = problems  # notebook -> what changed in it
        count = _plural(len(problems), "student notebook")
        lines = [f"not overwriting {count} that differ{'s' if len(problems) == 1 else ''} from what "
                 "`make student` last wrote (nothing was written):"]
        lines += [f"  {path}: {problem}" for path, problem in problems.items()]
        lines += ["Your work is untouched. Either",
                  "  - keep it, and write fresh notebooks to another folder: make student STUDENT_OUT=DIR "
                  "(python -m course_lib.tools.student --out DIR)",
                  "  - or replace these notebooks, each kept as NN_slug.ipynb.bak: make student FORCE=1 "
                  "(python -m course_lib.tools.student --force)"]
        super().__init__("\n".join(lines))


@dataclass
class Exercise:
    """One exercise cell of a chapter and what the student notebook makes of it."""

    number: int  # 1, 2, ... in the chapter's order
    cell_index: int  # index of the exercise cell in the chapter notebook
    solution_source: str  # the cell in the chapter, markers included
    functions: list[str]  # the functions whose bodies the release clears (they raise NotImplementedError)
    predictions: list[str]  # the names a prediction binds (None in the release, whose cell then raises)
    solution_cell: int | None  # the show_solution cell, chapter notebook index
    check_cells: list[int] = field(default_factory=list)  # chapter notebook indexes: nbgrader test cells
    release_source: str = ""  # the cell in the learner's notebook, as nbgrader wrote it

    @property
    def names(self) -> list[str]:
        return self.functions + self.predictions

    @property
    def grade_id(self) -> str:
        return f"exercise_{self.number}"


@dataclass
class StudentChapter:
    """A chapter's student notebook (not yet written), its nbgrader source version and its exercises."""

    chapter: Path
    notebook: object  # nbformat.NotebookNode: the release, what a learner gets
    source: object  # nbformat.NotebookNode: nbgrader's source version (solutions, grade ids, points)
    exercises: list[Exercise]

    @property
    def points(self) -> int:
        return POINTS_PER_CHECK * sum(len(e.check_cells) for e in self.exercises)


# --------------------------------------------------------------------------------------------
# Chapters


def find_chapters(names=(), chapters_dir: Path | str = CHAPTERS_DIR) -> list[Path]:
    """The chapter sources ``chapters/NN_slug.py`` for ``names`` (all of them when empty).

    A name may be the number (``08`` or ``8``), the stem (``08_vae``), the slug (``vae``) or a path to
    the ``.py`` or ``.ipynb``.
    """
    chapters_dir = Path(chapters_dir)
    available = sorted(chapters_dir.glob(CHAPTER_GLOB))
    if not available:
        raise StudentError(f"no chapters ({CHAPTER_GLOB}) in {chapters_dir}")
    if not names:
        return available
    by_stem = {p.stem: p for p in available}
    chosen = []
    for name in names:
        text = str(name)
        stem = Path(text).stem if text.endswith((".py", ".ipynb")) else Path(text).name
        matches = [p for s, p in by_stem.items()
                   if s == stem or s.split("_", 1)[1] == stem or (stem.isdigit() and int(s[:2]) == int(stem))]
        if len(matches) != 1:
            raise StudentError(f"unknown chapter {text!r}: choose from {', '.join(by_stem)} "
                               "(a number like 08, a stem like 08_vae, or a path)")
        if matches[0] not in chosen:
            chosen.append(matches[0])
    return chosen


def read_chapter(chapter: Path):
    """The chapter's notebook, read from its jupytext source (the source of truth)."""
    import jupytext

    return jupytext.read(chapter)


# --------------------------------------------------------------------------------------------
# Names a cell binds and uses (enough to follow exercise names through a notebook)


def _parse(source: str, where: str):
    try:
        return ast.parse(source)
    except SyntaxError as error:
        raise StudentError(f"{where}: not valid Python ({error.msg}, line {error.lineno} of the cell)") from None


def _parse_code_cell(source: str):
    """The cell's AST, or None if it does not parse (IPython magics): such cells are left alone."""
    lines = [line for line in source.splitlines() if not line.lstrip().startswith(("%", "!"))]
    try:
        return ast.parse("\n".join(lines))
    except SyntaxError:
        return None


def _bound_names(node) -> set[str]:
    """Every name a statement binds anywhere inside it (targets, arguments, defs, imports)."""
    names = set()
    for sub in ast.walk(node):
        if isinstance(sub, ast.Name) and isinstance(sub.ctx, (ast.Store, ast.Del)):
            names.add(sub.id)
        elif isinstance(sub, ast.arg):
            names.add(sub.arg)
        elif isinstance(sub, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(sub.name)
        elif isinstance(sub, (ast.Import, ast.ImportFrom)):
            names.update((a.asname or a.name).split(".")[0] for a in sub.names)
        elif isinstance(sub, ast.ExceptHandler) and sub.name:
            names.add(sub.name)
    return names


def _top_bound_names(statement) -> set[str]:
    """The names a top-level statement binds in the notebook's namespace."""
    if isinstance(statement, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return {statement.name}
    if isinstance(statement, (ast.Import, ast.ImportFrom)):
        return {(a.asname or a.name).split(".")[0] for a in statement.names}
    names = set()
    scopes = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda, ast.ListComp, ast.SetComp,
              ast.DictComp, ast.GeneratorExp)
    stack = [statement]
    while stack:
        node = stack.pop()
        for child in ast.iter_child_nodes(node):
            if isinstance(child, scopes):
                if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                    names.add(child.name)
                continue
            if isinstance(child, ast.Name) and isinstance(child.ctx, ast.Store):
                names.add(child.id)
            stack.append(child)
    return names


def _loaded_names(node) -> set[str]:
    return {sub.id for sub in ast.walk(node) if isinstance(sub, ast.Name) and isinstance(sub.ctx, ast.Load)}


def _free_names(tree) -> set[str]:
    """Names a cell reads before binding them itself (an approximation on the safe side)."""
    bound, free = set(), set()
    for statement in tree.body:
        loads = _loaded_names(statement)
        if isinstance(statement, (ast.Assign, ast.AnnAssign, ast.AugAssign, ast.Expr, ast.Return)):
            # a simple statement reads before it binds; only comprehension/lambda names are its own
            local = _bound_names(statement) - _top_bound_names(statement)
            free |= loads - bound - local
        else:
            free |= loads - bound - _bound_names(statement)
        bound |= _top_bound_names(statement)
    return free


# --------------------------------------------------------------------------------------------
# Exercise cells: what nbgrader's markers enclose


def _solution_regions(source: str, where: str) -> list[tuple[int, int]]:
    """The (begin, end) line numbers (from 1) of each solution region of a cell."""
    regions, begin = [], None
    for number, line in enumerate(source.splitlines(), start=1):
        if line.strip() == BEGIN_SOLUTION:
            if begin is not None:
                raise StudentError(f"{where}: `{BEGIN_SOLUTION}` on line {number} inside the region begun on line "
                                   f"{begin}: close it with `{END_SOLUTION}` first")
            begin = number
        elif line.strip() == END_SOLUTION:
            if begin is None:
                raise StudentError(f"{where}: `{END_SOLUTION}` on line {number} without a `{BEGIN_SOLUTION}` above it")
            regions.append((begin, number))
            begin = None
        elif "BEGIN SOLUTION" in line or "END SOLUTION" in line:
            raise StudentError(f"{where}: line {number} mentions a solution marker but is not `{BEGIN_SOLUTION}` or "
                               f"`{END_SOLUTION}` on a line of its own")
    if begin is not None:
        raise StudentError(f"{where}: the region begun on line {begin} has no `{END_SOLUTION}`")
    return regions


def _is_none_placeholder(statement) -> bool:
    return (isinstance(statement, ast.Assign) and all(isinstance(t, ast.Name) for t in statement.targets)
            and isinstance(statement.value, ast.Constant) and statement.value.value is None)


def read_exercise(source: str, where: str = "exercise cell") -> tuple[list[str], list[str]]:
    """The functions and the predictions of an exercise cell; a StudentError says what is wrong with it.

    A function's body (after its docstring) is one solution region; a prediction is a top-level region of
    assignments to names bound to ``None`` above it, at the end of the cell (in the release the cell raises there).
    """
    tree = _parse(source, where)
    regions = _solution_regions(source, where)
    functions, predictions, placeholders, used = [], [], set(), set()
    top_regions = [r for r in regions if not any(isinstance(s, (ast.FunctionDef, ast.AsyncFunctionDef))
                                                 and s.lineno < r[0] <= s.end_lineno for s in tree.body)]
    for statement in tree.body:
        line = statement.lineno
        inside = next((r for r in top_regions if r[0] < line < r[1]), None)
        if inside is None and any(line > r[1] for r in top_regions):
            raise StudentError(f"{where}: the statement on line {line} comes after a prediction's solution region: the "
                               "release raises there, so it would never run; put predictions at the end of the cell")
        if isinstance(statement, (ast.FunctionDef, ast.AsyncFunctionDef)):
            own = [r for r in regions if line < r[0] <= statement.end_lineno]
            body = statement.body[1:] if ast.get_docstring(statement) is not None else statement.body
            if len(own) != 1 or not body or not (own[0][0] < body[0].lineno and statement.end_lineno < own[0][1]):
                raise StudentError(f"{where}: {statement.name}() needs its whole body after the docstring (and only "
                                   f"that) between one `{BEGIN_SOLUTION}` and `{END_SOLUTION}`, indented like the body")
            functions.append(statement.name)
            used.add(own[0])
        elif inside is not None and isinstance(statement, ast.Assign) and all(
                isinstance(t, ast.Name) and t.id in placeholders for t in statement.targets):
            predictions += [t.id for t in statement.targets if t.id not in predictions]
            used.add(inside)
        elif inside is None and isinstance(statement, (ast.Import, ast.ImportFrom)):
            continue
        elif inside is None and _is_none_placeholder(statement):
            placeholders |= {t.id for t in statement.targets}
        else:
            raise StudentError(
                f"{where}: the statement on line {line} (`{source.splitlines()[line - 1].strip()}`) cannot be an "
                f"exercise: an exercise cell holds imports, functions whose body is a solution region, and predictions "
                f"(`NAME = None  # your prediction` lines, then a region that assigns NAME) at its end")
    if set(regions) - used:
        begin = sorted(set(regions) - used)[0][0]
        raise StudentError(f"{where}: the solution region on line {begin} is neither a function's body nor a "
                           "prediction's assignments")
    if not functions and not predictions:
        raise StudentError(f"{where}: nothing for the learner to write; mark a solution with `{BEGIN_SOLUTION}` and "
                           f"`{END_SOLUTION}`")
    return functions, predictions


def _is_exercise(cell) -> bool:
    return cell.cell_type == "code" and EXERCISE_TAG in cell.metadata.get("tags", [])


def _calls_show_solution(tree) -> bool:
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            if (isinstance(func, ast.Name) and func.id == "show_solution") or (
                    isinstance(func, ast.Attribute) and func.attr == "show_solution"):
                return True
    return False


def _cell_label(chapter: Path, index: int, cell) -> str:
    first = next((line.strip() for line in cell.source.splitlines() if line.strip()), "(empty)")
    return f"{chapter.name}, cell {index} (from 0, markdown cells counted; it starts `{first[:60]}`)"


def _first_raising_statement(tree, raising: set[str]) -> int | None:
    """Index of the first top-level statement that may call a stub (defs that only mention one do not)."""
    for index, statement in enumerate(tree.body):
        if isinstance(statement, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Import, ast.ImportFrom)):
            continue
        if _loaded_names(statement) & raising:
            return index
    return None


def _find_exercises(chapter: Path, cells, trees) -> tuple[list[Exercise], dict[int, Exercise]]:
    """Each exercise cell with its show_solution cell; and, for every cell that may hold one of its checks
    (between the exercise and its show_solution cell), that exercise."""
    exercises: list[Exercise] = []
    window_of: dict[int, Exercise] = {}  # chapter cell index -> the exercise whose checks it may hold
    for index, cell in enumerate(cells):
        if not _is_exercise(cell):
            if "BEGIN SOLUTION" in cell.source or "END SOLUTION" in cell.source:
                raise StudentError(f"{_cell_label(chapter, index, cell)} is not an exercise cell but holds nbgrader's "
                                   "words BEGIN SOLUTION or END SOLUTION, which nbgrader takes for a solution marker "
                                   "in any cell, markdown too: tag the cell `exercise`, or reword it")
            continue
        solution_cell = None
        for later in range(index + 1, len(cells)):
            if _is_exercise(cells[later]):
                break
            if cells[later].cell_type == "code" and trees[later] is not None and _calls_show_solution(trees[later]):
                solution_cell = later
                break
        functions, predictions = read_exercise(cell.source, _cell_label(chapter, index, cell))
        exercise = Exercise(len(exercises) + 1, index, cell.source, functions, predictions, solution_cell)
        exercises.append(exercise)
        end = solution_cell if solution_cell is not None else next(
            (k for k in range(index + 1, len(cells)) if _is_exercise(cells[k])), len(cells))
        for k in range(index + 1, end):
            window_of[k] = exercise
    return exercises, window_of


def _trace_stubs(chapter: Path, cells, trees, exercises: list[Exercise],
                 window_of: dict[int, Exercise]) -> dict[int, tuple[bool, list[str]]]:
    """Follow the exercises' names through the notebook: which cells are checks of an exercise (cell index ->
    (whether it only involves functions, which raise in the release, the exercise names it uses)); raise a
    StudentError for a cell outside the checks that the release would break."""
    raising: set[str] = set()  # names whose use raises (functions, and defs of check cells that call them)
    wrong_value: set[str] = set()  # predictions: None in the release
    maybe_undefined: dict[str, int] = {}  # name -> check cell that binds it only after calling a stub
    bound_before: set[str] = set()
    exercise_at = {e.cell_index: e for e in exercises}
    checks: dict[int, tuple[bool, list[str]]] = {}
    for index, cell in enumerate(cells):
        tree = trees[index]
        if cell.cell_type != "code" or tree is None:
            continue
        if index in exercise_at:
            raising |= set(exercise_at[index].functions)
            wrong_value |= set(exercise_at[index].predictions)
            bound_before |= set(exercise_at[index].names)
            continue
        free = _free_names(tree)
        if index in window_of and free & (raising | wrong_value):
            exercise = window_of[index]
            exercise.check_cells.append(index)
            checks[index] = (not (free & wrong_value), sorted(free & (raising | wrong_value)))
            first = _first_raising_statement(tree, raising | wrong_value)
            for position, statement in enumerate(tree.body):
                binds = _top_bound_names(statement)
                is_def = isinstance(statement, (ast.FunctionDef, ast.AsyncFunctionDef))
                if is_def and _loaded_names(statement) & raising:
                    raising |= binds  # a helper that calls a stub raises too
                elif first is not None and position >= first:
                    for name in binds - bound_before:
                        maybe_undefined.setdefault(name, index)
                bound_before |= binds
            continue
        broken = free & raising
        if broken:
            raise StudentError(
                f"{_cell_label(chapter, index, cell)} uses {', '.join(sorted(broken))}, which the student notebook "
                "leaves to the learner (`raise NotImplementedError()`): this cell is not a check of that exercise (it "
                "comes after its show_solution cell), so it would fail. Use the course_lib function in this cell")
        missing = {name for name in free if name in maybe_undefined}
        if missing:
            name = sorted(missing)[0]
            raise StudentError(
                f"{_cell_label(chapter, index, cell)} uses `{name}`, which check cell {maybe_undefined[name]} binds "
                "only after calling an exercise's function: in the student notebook that call raises first, so "
                f"`{name}` is never defined. Bind it before the check in cell {maybe_undefined[name]}, or compute it "
                "with the course_lib function")
        bound_before |= set().union(*(_top_bound_names(s) for s in tree.body)) if tree.body else set()
    return checks


# --------------------------------------------------------------------------------------------
# nbgrader's source version, then its release


def _nbgrader_metadata(grade_id: str, *, solution: bool = False, points: int | None = None) -> dict:
    """A cell's ``nbgrader`` metadata: a solution cell, or an autograded test cell with its points (locked)."""
    metadata = {"grade": points is not None, "grade_id": grade_id, "locked": not solution, "schema_version": 3,
                "solution": solution, "task": False}
    if points is not None:
        metadata["points"] = points
    return metadata


def _tag_raises(cell, exercise: Exercise, names: list[str], only_raising: bool) -> None:
    tags = list(cell.metadata.get("tags", []))
    if RAISES_TAG not in tags:
        tags.append(RAISES_TAG)
    cell.metadata["tags"] = tags
    cell.metadata[CHECK_METADATA] = {"exercise": exercise.number, "stubs": names, "only_raising_stubs": only_raising}


def _your_turn(exercise: Exercise, number: str, link: str) -> str:
    chapter_link = f"the full chapter, [{Path(link).stem}.ipynb]({link}), has the worked solution."
    stuck = (f"The `show_solution` cell after the check reveals the reference implementation, and {chapter_link}"
             if exercise.solution_cell is not None else chapter_link[0].upper() + chapter_link[1:])
    names = ", ".join(f"`{name}`" for name in exercise.names)
    what = "is yours" if len(exercise.names) == 1 else "are yours"
    return (f"**Your turn** (exercise {exercise.number} of chapter {number}): {names} below {what} to write. Replace "
            f"`raise NotImplementedError()` (under `# YOUR CODE HERE`) with your "
            f"{'prediction' if exercise.predictions and not exercise.functions else 'code'}, then run the check cell. "
            f"Stuck? {stuck}")


def _source_notebook(chapter: Path, notebook, exercises: list[Exercise], window_of: dict[int, Exercise],
                     checks: dict[int, tuple[bool, list[str]]], link: str):
    """nbgrader's source version of the chapter: solution and test cells marked, a note above each exercise, no
    outputs. Returns the notebook and, for each chapter cell index, its index in it."""
    import nbformat

    number = chapter.stem[:2]
    exercise_at = {e.cell_index: e for e in exercises}
    source = copy.deepcopy(notebook)
    source.metadata.pop("jupytext", None)
    new_cells = [nbformat.v4.new_markdown_cell(
        f"> **Student version** of [chapter {number}]({link}), written by `make student` with nbgrader: each "
        "exercise's solution is left for you to write. Once you have edited this file, running `make student` again "
        "will not overwrite it (it stops and says what to do); `make student STUDENT_OUT=my_work` writes a fresh copy "
        "to another folder.")]
    position_of, check_count = {}, {}
    for index, cell in enumerate(source.cells):
        for key in _JUPYTEXT_CELL_KEYS:
            cell.metadata.pop(key, None)
        if index in exercise_at:
            exercise = exercise_at[index]
            new_cells.append(nbformat.v4.new_markdown_cell(_your_turn(exercise, number, link)))
            cell.metadata["nbgrader"] = _nbgrader_metadata(exercise.grade_id, solution=True)
            if exercise.predictions:  # the release raises at the prediction's stub
                _tag_raises(cell, exercise, exercise.predictions, True)
        elif index in checks:
            exercise = window_of[index]
            check_count[exercise.number] = check_count.get(exercise.number, 0) + 1
            grade_id = f"{exercise.grade_id}_check_{check_count[exercise.number]}"
            cell.metadata["nbgrader"] = _nbgrader_metadata(grade_id, points=POINTS_PER_CHECK)
            _tag_raises(cell, exercise, checks[index][1], checks[index][0])
        position_of[index] = len(new_cells)
        new_cells.append(cell)
    for position, cell in enumerate(new_cells):
        cell["id"] = f"student-{position:03d}"
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    source.cells = new_cells
    source.nbformat, source.nbformat_minor = 4, 5  # nbformat.write validates it
    return source, position_of


@contextlib.contextmanager
def _venv_on_path():
    """nbgrader's gradebook runs the ``alembic`` command: find it beside this Python when the venv is not active."""
    before = os.environ.get("PATH", "")
    os.environ["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), before])
    try:
        yield
    finally:
        os.environ["PATH"] = before


def generate_releases(sources: dict) -> dict:
    """``nbgrader generate_assignment`` for each {assignment name: source notebook}, in a temporary course
    directory; returns {assignment name: release notebook}."""
    import nbformat
    from nbgrader.apps import NbGraderAPI
    from traitlets.config import Config

    releases = {}
    with _venv_on_path(), tempfile.TemporaryDirectory(prefix="course-nbgrader-") as root:
        config = Config()
        config.CourseDirectory.root = root
        config.Exchange.root = str(Path(root, "exchange"))  # not used; nbgrader wants a writable one
        api = NbGraderAPI(config=config)
        for name, notebook in sources.items():
            path = Path(root, "source", name, f"{name}.ipynb")
            path.parent.mkdir(parents=True)
            nbformat.write(notebook, path)
            result = api.generate_assignment(name)
            if not result["success"]:
                details = result.get("error") or result["log"]
                raise StudentError(f"nbgrader generate_assignment {name} failed:\n{details}")
            releases[name] = nbformat.read(Path(root, "release", name, f"{name}.ipynb"), as_version=4)
    return releases


def _function_nodes(tree) -> dict:
    return {s.name: s for s in tree.body if isinstance(s, (ast.FunctionDef, ast.AsyncFunctionDef))}


def _is_stub_raise(statement) -> bool:
    exc = statement.exc if isinstance(statement, ast.Raise) else None
    call = exc.func if isinstance(exc, ast.Call) else exc
    return isinstance(call, ast.Name) and call.id == "NotImplementedError"


def check_release(chapter: Path, exercise: Exercise, release_source: str) -> None:
    """Today's guarantees, on what nbgrader wrote: each function keeps its decorators, signature and docstring,
    and its body is the stub; each prediction is bound to None, then the cell raises."""
    where = f"{chapter.name}, exercise {exercise.number} in the release"
    release = _parse(release_source, where)
    solutions, stubs = _function_nodes(ast.parse(exercise.solution_source)), _function_nodes(release)
    if set(stubs) != set(solutions):
        raise StudentError(f"{where}: defines {sorted(stubs)}, the chapter {sorted(solutions)}")
    for name, solution in solutions.items():
        stub = stubs[name]
        same = (ast.dump(stub.args) == ast.dump(solution.args)
                and [ast.dump(d) for d in stub.decorator_list] == [ast.dump(d) for d in solution.decorator_list]
                and ast.dump(stub.returns or ast.Pass()) == ast.dump(solution.returns or ast.Pass())
                and ast.get_docstring(stub) == ast.get_docstring(solution))
        body = stub.body[1:] if ast.get_docstring(stub) is not None else stub.body
        if not same or len(body) != 1 or not _is_stub_raise(body[0]):
            raise StudentError(f"{where}: {name}() must keep its signature and docstring and raise "
                               f"NotImplementedError, but reads\n{ast.unparse(stub)}")
    if exercise.predictions:
        bound = {t.id for s in release.body if _is_none_placeholder(s) for t in s.targets}
        if not set(exercise.predictions) <= bound or not _is_stub_raise(release.body[-1]):
            raise StudentError(f"{where}: {exercise.predictions} must be bound to None, then the cell raise "
                               f"NotImplementedError, but it reads\n{release_source}")


def build_student_notebooks(chapters, out_dir: Path | str = "student",
                            chapters_link: str | None = None) -> list[StudentChapter]:
    """The student notebook of each chapter (``chapters/NN_slug.py``) as it would be written to ``out_dir``: find
    the exercises, follow their names through the notebook, write nbgrader's source version, let nbgrader
    generate the release, and check it. Its links lead to the chapter in ``chapters_link`` (a folder relative to
    the notebook; default: ``chapters/`` relative to ``out_dir``)."""
    built, sources = [], {}
    for chapter in map(Path, chapters):
        notebook = read_chapter(chapter)
        link = (f"{chapters_link.rstrip('/')}/{chapter.stem}.ipynb" if chapters_link else
                Path(os.path.relpath(chapter.with_suffix(".ipynb").resolve(), Path(out_dir).resolve())).as_posix())
        trees = [(_parse_code_cell(c.source) if c.cell_type == "code" else None) for c in notebook.cells]
        exercises, window_of = _find_exercises(chapter, notebook.cells, trees)
        checks = _trace_stubs(chapter, notebook.cells, trees, exercises, window_of)
        source, position_of = _source_notebook(chapter, notebook, exercises, window_of, checks, link)
        sources[chapter.stem] = source
        built.append((chapter, source, exercises, position_of))
    releases = generate_releases(sources)
    results = []
    for chapter, source, exercises, position_of in built:
        release = releases[chapter.stem]
        for exercise in exercises:
            exercise.release_source = release.cells[position_of[exercise.cell_index]].source
            check_release(chapter, exercise, exercise.release_source)
        results.append(StudentChapter(chapter, release, source, exercises))
    return results


def build_student_notebook(chapter: Path, out_dir: Path | str = "student") -> StudentChapter:
    """The student notebook of one chapter: :func:`build_student_notebooks` for it alone."""
    return build_student_notebooks([chapter], out_dir)[0]


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


# --------------------------------------------------------------------------------------------
# Writing, without ever losing a learner's work


def cell_fingerprints(cells) -> list[str]:
    """A short sha256 of each cell's type and source: what a learner edits, not what running it changes.

    ``cells`` are nbformat cells or the plain dicts of a notebook's JSON (a source may be a list of lines).
    """
    fingerprints = []
    for cell in cells:
        source = cell.get("source", "")
        source = "".join(source) if isinstance(source, list) else source
        text = f"{cell.get('cell_type')}\n{source}"
        fingerprints.append(hashlib.sha256(text.encode("utf-8")).hexdigest()[:16])
    return fingerprints


def _describe_changes(written: list[str], current: list[str]) -> str:
    """What changed between two lists of cell fingerprints: "3 cells edited, 1 added"."""
    counts = {"edited": 0, "added": 0, "deleted": 0}
    for tag, a0, a1, b0, b1 in difflib.SequenceMatcher(None, written, current, autojunk=False).get_opcodes():
        if tag != "equal":
            both = min(a1 - a0, b1 - b0)
            counts["edited"] += both
            counts["added"] += b1 - b0 - both
            counts["deleted"] += a1 - a0 - both
    changes = [(count, what) for what, count in counts.items() if count]
    return ", ".join(f"{_plural(count, 'cell') if i == 0 else count} {what}" for i, (count, what) in enumerate(changes))


def overwrite_problem(path: Path, new_cells: list[str]) -> str | None:
    """Why overwriting the notebook at ``path`` could lose a learner's work, or None if it cannot.

    It cannot when the file is absent, still holds the cells this tool last wrote there (its outputs do not
    count), or already holds ``new_cells`` (the fingerprints of what would be written).
    """
    if not path.exists():
        return None
    try:
        notebook = json.loads(path.read_text(encoding="utf-8"))
        current = cell_fingerprints(notebook["cells"])
        fingerprint = notebook.get("metadata", {}).get(FINGERPRINT_METADATA)
    except (OSError, ValueError, LookupError, TypeError, AttributeError) as error:
        return f"not readable as a notebook ({type(error).__name__}: {error})"
    written = fingerprint.get("cells_sha256") if isinstance(fingerprint, dict) else None
    if current == new_cells or current == written:
        return None
    if not isinstance(written, list):
        return (f"no {FINGERPRINT_METADATA!r} fingerprint in its metadata: not written by `make student`, "
                "or by a version older than this check")
    return _describe_changes(written, current)


def _backup(path: Path) -> Path:
    """Copy ``path`` to ``path.bak`` (``.bak.1``, ``.bak.2``, ... if that exists: no backup is replaced)."""
    backup, number = path.with_name(f"{path.name}.bak"), 0
    while backup.exists():
        number += 1
        backup = path.with_name(f"{path.name}.bak.{number}")
    shutil.copy2(path, backup)
    return backup


def write_notebook_atomically(notebook, target: Path) -> None:
    """Write to a temporary file in the same folder, then rename it: a killed run leaves no half notebook."""
    import nbformat

    text = nbformat.writes(notebook)  # validates it before anything touches the disk
    temporary = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        with open(temporary, "w", encoding="utf-8") as file:
            file.write(text if text.endswith("\n") else text + "\n")
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, target)
    finally:
        temporary.unlink(missing_ok=True)


def _write_protected(notebooks: dict, chapter_of: dict, *, force: bool) -> None:
    """Write each {target path: notebook}, never over a learner's edits (see the module's docstring)."""
    problems = {}
    for target, notebook in notebooks.items():
        fingerprints = cell_fingerprints(notebook.cells)
        notebook.metadata[FINGERPRINT_METADATA] = {"chapter": chapter_of[target], "cells_sha256": fingerprints}
        problem = overwrite_problem(target, fingerprints)
        if problem:
            problems[target] = problem
    if problems and not force:
        raise LearnersWorkError(problems)
    for target, notebook in notebooks.items():
        target.parent.mkdir(parents=True, exist_ok=True)
        if target in problems:
            print(f"{target}: {problems[target]}; your version is kept as {_backup(target)}")
        write_notebook_atomically(notebook, target)


def write_student_notebooks(chapters=None, out_dir: Path | str = "student", *, force: bool = False,
                            quiet: bool = False, chapters_link: str | None = None) -> list[StudentChapter]:
    """Write ``out_dir/NN_slug.ipynb`` for each chapter (all when ``chapters`` is None).

    A notebook there that differs from what this tool last wrote is a learner's work: if there is any,
    nothing is written and :class:`LearnersWorkError` says which (``force``: each is copied to a ``.bak``
    first, then replaced).
    """
    out_dir = Path(out_dir)
    built = build_student_notebooks(find_chapters(chapters or ()), out_dir, chapters_link)  # errors before writes
    targets = {out_dir / f"{result.chapter.stem}.ipynb": result for result in built}
    _write_protected({target: result.notebook for target, result in targets.items()},
                     {target: result.chapter.stem for target, result in targets.items()}, force=force)
    if not quiet:
        for target, result in targets.items():
            print(f"{target}: {_plural(len(result.exercises), 'exercise')}, "
                  f"{_plural(result.points // POINTS_PER_CHECK, 'check cell')} graded by nbgrader "
                  f"({_plural(result.points, 'point')}) and tagged {RAISES_TAG}")
    return built


def write_nbgrader_sources(chapters=None, course_dir: Path | str = "grading", *, force: bool = False,
                           quiet: bool = False, chapters_link: str | None = None) -> list[StudentChapter]:
    """Write nbgrader's source version of each chapter to ``course_dir/source/NN_slug/NN_slug.ipynb``: a leader's
    nbgrader course directory, for ``nbgrader generate_assignment NN_slug`` and the rest (README, "Exercises
    through nbgrader"). Edited source notebooks are protected like a learner's work. A learner fetches the
    release into a folder of its own, ``NN_slug/``: by default its links lead to ``../chapters/``."""
    course_dir = Path(course_dir)
    built = build_student_notebooks(find_chapters(chapters or ()), course_dir, chapters_link or "../chapters")
    targets = {course_dir / "source" / r.chapter.stem / f"{r.chapter.stem}.ipynb": r for r in built}
    _write_protected({target: result.source for target, result in targets.items()},
                     {target: result.chapter.stem for target, result in targets.items()}, force=force)
    if not quiet:
        print(f"{len(built)} assignments in {course_dir}/source/, {sum(r.points for r in built)} points in all. Then, "
              f"in {course_dir}: nbgrader generate_assignment {built[0].chapter.stem}")
    return built


# --------------------------------------------------------------------------------------------
# nbval: a check cell tagged raises-exception must raise, and raise what a stub raises


def student_check_problem(metadata: dict, outputs: list) -> str | None:
    """Why a student notebook's check cell that ran under nbval is wrong, or None if it is right.

    nbval's ``raises-exception`` tag lets a cell raise but does not require it. A check cell of a stub
    must raise: if it does not, the stub passes its own check (it leaks the solution, or the check is too
    weak). And it must raise what a stub raises (``NotImplementedError``, or ``course_lib.core.check``'s
    "is not implemented yet" ``AssertionError``; any ``AssertionError`` for a wrong-but-runnable stub), not
    an unrelated error that the tag would hide.
    """
    info = metadata.get(CHECK_METADATA)
    if not info:
        return None
    stubs = ", ".join(info.get("stubs", [])) or "the exercise"
    errors = [o for o in outputs or [] if o.get("output_type") == "error"]
    if not errors:
        return (f"this check cell of {stubs} (tagged {RAISES_TAG} in the student notebook) did not raise: the stub "
                "passed its own check, so it leaks the solution or the check is too weak")
    name, value = errors[-1].get("ename", ""), str(errors[-1].get("evalue", ""))
    if name == "NotImplementedError" or (name == "AssertionError" and (
            NOT_IMPLEMENTED_TEXT in value or not info.get("only_raising_stubs", True))):
        return None
    return (f"this check cell of {stubs} raised {name}: {value[:300]}, not the NotImplementedError of a stub: an "
            "error unrelated to the exercise, which the raises-exception tag would hide")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m course_lib.tools.student", description=(
        "Write student notebooks with nbgrader: each chapter with its exercise solutions cleared. A notebook in "
        "--out that was edited since it was written (or not written by this tool) is never overwritten: the "
        "run stops with exit code 2 and writes nothing, unless --force."))
    parser.add_argument("chapters", nargs="*", help="chapters (08, 08_vae, vae or a path); default: all")
    parser.add_argument("--out", default="student", help="folder to write to (default: student, git-ignored)")
    parser.add_argument("--nbgrader-source", metavar="COURSE_DIR", help="write nbgrader's source versions (solutions, "
                        "grade ids, points) to COURSE_DIR/source/NN_slug/ instead: a leader's nbgrader course")
    parser.add_argument("--chapters-link", metavar="DIR", help="where a student notebook finds the chapters, "
                        "relative to itself (default: the repository's chapters/ for --out; ../chapters for "
                        "--nbgrader-source, whose notebooks are fetched into a folder NN_slug/ of their own)")
    parser.add_argument("--force", action="store_true", help="replace edited notebooks too, after copying each "
                        "to NN_slug.ipynb.bak (or .bak.1, .bak.2, ...: no backup is replaced)")
    parser.add_argument("--quiet", action="store_true", help="print nothing but errors and the backups made")
    args = parser.parse_args(argv)
    try:
        if args.nbgrader_source:
            write_nbgrader_sources(args.chapters, args.nbgrader_source, force=args.force, quiet=args.quiet,
                                   chapters_link=args.chapters_link)
            return 0
        built = write_student_notebooks(args.chapters, args.out, force=args.force, quiet=args.quiet,
                                        chapters_link=args.chapters_link)
    except StudentError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if not args.quiet:
        first = Path(args.out) / f"{built[0].chapter.stem}.ipynb"
        print(f"{len(built)} student notebooks in {args.out}/. Open one from the repository root, so that its links to "
              f"chapters/ work: .venv/bin/jupyter lab {first}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
