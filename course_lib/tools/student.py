"""Student notebooks: every chapter with its exercise solutions replaced by runnable stubs.

    python -m course_lib.tools.student [--out student] [--force] [chapters ...]      (what ``make student`` runs)

A chapter's exercise cells are tagged ``exercise`` and hold a working solution. In the student
notebook (``<out>/NN_slug.ipynb``) each such cell keeps its tag and its imports, and every top-level
function (and every method of a top-level class) becomes a stub with the same decorators, signature
and docstring whose body raises ``NotImplementedError``, naming the exercise and where its solution
is. A short markdown cell above it links the ``show_solution`` cell below and the full chapter.

The code cells after an exercise that call its stubs (its check cells, up to its ``show_solution``
cell) get the nbval tag ``raises-exception``: nbval then lets them raise, so the student notebook
still runs from top to bottom under nbval. nbval 0.11 does not fail such a cell when it does *not*
raise, nor look at *what* it raised; :func:`student_check_problem`, called from the repository's
``conftest.py``, adds both: a tagged cell must raise, and raise ``NotImplementedError`` (or the
check's "is not implemented yet" ``AssertionError``), not an unrelated error.

A stub that raises would break a cell *outside* the exercise's checks that uses it (a later
section calling ``my_fn``). The generator finds such cells and stops with an error, unless the
exercise cell gives a wrong-but-runnable value for that name in its metadata::

    # %% tags=["exercise"] stub={"my_fn": "torch.zeros(x.shape[0])"}

The stub then returns that expression (a comment says so) and the later cells run; the check cells
still fail, with an ``AssertionError``. The same metadata gives a placeholder for a top-level constant
(``ANSWER = 0.5`` in the solution becomes ``ANSWER = None`` unless ``stub`` says otherwise).

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
import copy
import difflib
import hashlib
import io
import json
import os
import shutil
import sys
import tokenize
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
CHAPTERS_DIR = REPO_ROOT / "chapters"
CHAPTER_GLOB = "[0-9][0-9]_*.py"
EXERCISE_TAG = "exercise"
RAISES_TAG = "raises-exception"  # nbval's tag: the cell may raise
STUB_METADATA = "stub"  # exercise cell metadata: {name: wrong-but-runnable expression}
CHECK_METADATA = "student_check"  # student check cell metadata, read by student_check_problem
NOT_IMPLEMENTED_TEXT = "is not implemented yet"  # what course_lib.core.check says when a stub raised
FINGERPRINT_METADATA = "course_student"  # student notebook metadata: what this tool wrote, to spot a learner's edits
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
class Stub:
    """One stubbed definition of an exercise cell."""

    name: str  # "my_fn", "Model.forward" or a constant's name
    kind: str  # "function", "method" or "constant"
    raises: bool  # True: raises NotImplementedError; False: a wrong-but-runnable value
    solution: str  # the definition's source in the chapter
    stub: str  # its source in the student notebook


@dataclass
class Exercise:
    """One exercise cell of a chapter and what the student notebook makes of it."""

    number: int  # 1, 2, ... in the chapter's order
    cell_index: int  # index of the exercise cell in the chapter notebook
    solution_source: str
    stub_source: str
    stubs: list[Stub]
    solution_cell: int | None  # the show_solution cell, chapter notebook index
    check_cells: list[int] = field(default_factory=list)  # chapter notebook indexes tagged raises-exception

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.stubs if s.kind != "method"] + sorted(
            {s.name.split(".")[0] for s in self.stubs if s.kind == "method"})


@dataclass
class StudentChapter:
    """A chapter's student notebook (not yet written) and its exercises."""

    chapter: Path
    notebook: object  # nbformat.NotebookNode
    exercises: list[Exercise]

    @property
    def stubs(self) -> list[Stub]:
        return [stub for exercise in self.exercises for stub in exercise.stubs]


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
# Stubs


def _header(source_lines: list[str], tokens, node) -> str:
    """The decorators and the ``def``/``class`` line(s) of ``node`` up to the colon, as written."""
    start = min([d.lineno for d in node.decorator_list] + [node.lineno])
    depth = 0
    for token in tokens:
        if token.start < (node.lineno, node.col_offset):
            continue
        if token.type == tokenize.OP and token.string in "([{":
            depth += 1
        elif token.type == tokenize.OP and token.string in ")]}":
            depth -= 1
        elif token.type == tokenize.OP and token.string == ":" and depth == 0:
            row, col = token.start
            lines = source_lines[start - 1:row - 1] + [source_lines[row - 1][:col + 1]]
            return "\n".join(lines)
    raise StudentError(f"cannot find the end of the signature of {node.name}")  # not reached for valid code


def _docstring_lines(source: str, node, indent: str) -> list[str]:
    first = node.body[0]
    if not (isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant)
            and isinstance(first.value.value, str)):
        return []
    return (indent + ast.get_source_segment(source, first)).splitlines()


def _body_indent(source_lines: list[str], node) -> str:
    first = node.body[0]
    if first.lineno > node.lineno and not any(d.lineno == first.lineno for d in node.decorator_list):
        line = source_lines[first.lineno - 1]
        return line[:len(line) - len(line.lstrip())]
    return " " * (node.col_offset + 4)


def _wrap_comment(indent: str, text: str, width: int = 110) -> list[str]:
    lines, current = [], ""
    for word in text.split():
        if current and len(indent) + 2 + len(current) + 1 + len(word) > width:
            lines.append(f"{indent}# {current}")
            current = word
        else:
            current = f"{current} {word}" if current else word
    if current:
        lines.append(f"{indent}# {current}")
    return lines


def _assign_targets(statement) -> list:
    return statement.targets if isinstance(statement, ast.Assign) else [statement.target]


def _function_stub(source: str, source_lines, tokens, node, qualname: str, label: str, where_solution: str,
                   value: str | None) -> str:
    indent = _body_indent(source_lines, node)
    lines = [_header(source_lines, tokens, node)] + _docstring_lines(source, node, indent)
    if value is None:
        message = f"{qualname}: {label}, yours to write. Solution: {where_solution}"
        width = 86 - len(indent)  # the raise line stays under about 120 characters
        cut = message.rfind(" ", 0, width)
        parts = [message[:cut + 1], message[cut + 1:]] if len(message) > width and cut > 0 else [message]
        lines.append(f"{indent}raise NotImplementedError({parts[0]!r}")
        lines += [f"{indent}                          {part!r}" for part in parts[1:]]
        lines[-1] += ")"
    else:
        lines += _wrap_comment(indent, f"Wrong-but-runnable stub ({label}): it returns a placeholder so that later "
                                       f"cells run. Replace it with your code. Solution: {where_solution}.")
        lines.append(f"{indent}return {value}")
    return "\n".join(lines)


def stub_exercise_source(source: str, *, label: str, where_solution: str, values: dict | None = None,
                         where: str = "exercise cell") -> tuple[str, list[Stub]]:
    """Turn an exercise cell's solution into stubs; return the new source and what was stubbed.

    ``label`` names the exercise ("exercise 2 of chapter 08"), ``where_solution`` says where its solution
    is, ``values`` maps a name (``my_fn``, ``Model.forward``, a constant) to a wrong-but-runnable
    expression, ``where`` names the cell in error messages.
    """
    values = dict(values or {})
    tree = _parse(source, where)
    source_lines = source.splitlines()
    tokens = list(tokenize.generate_tokens(io.StringIO(source).readline))
    pieces, stubs = [], []

    def segment_lines(node):
        return "\n".join(source_lines[node.lineno - 1:node.end_lineno])

    def solution_of(node):
        start = min([d.lineno for d in getattr(node, "decorator_list", [])] + [node.lineno])
        return "\n".join(source_lines[start - 1:node.end_lineno])

    for statement in tree.body:
        if isinstance(statement, (ast.FunctionDef, ast.AsyncFunctionDef)):
            value = values.pop(statement.name, None)
            stub = _function_stub(source, source_lines, tokens, statement, statement.name, label, where_solution, value)
            stubs.append(Stub(statement.name, "function", value is None, solution_of(statement), stub))
            pieces.append(stub)
        elif isinstance(statement, ast.ClassDef):
            indent = _body_indent(source_lines, statement)
            docstring = _docstring_lines(source, statement, indent)
            class_lines = [_header(source_lines, tokens, statement)] + docstring
            methods = 0
            for index, item in enumerate(statement.body):
                if index == 0 and docstring:
                    continue  # the docstring, already copied
                if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    qualname = f"{statement.name}.{item.name}"
                    value = values.pop(qualname, None)
                    stub = _function_stub(source, source_lines, tokens, item, qualname, label, where_solution, value)
                    stubs.append(Stub(qualname, "method", value is None, solution_of(item), stub))
                    class_lines += [""] + stub.splitlines() if methods else stub.splitlines()
                    methods += 1
                else:  # class-level declarations (dataclass fields, constants) are the interface: kept
                    class_lines += segment_lines(item).splitlines()
            if not methods:
                raise StudentError(f"{where}: class {statement.name} has no method to turn into a stub")
            pieces.append("\n".join(class_lines))
        elif isinstance(statement, (ast.Import, ast.ImportFrom)):
            pieces.append(segment_lines(statement))
        elif isinstance(statement, ast.Expr) and isinstance(statement.value, ast.Constant) \
                and isinstance(statement.value.value, str):
            pieces.append(segment_lines(statement))  # a module-level docstring or note
        elif isinstance(statement, (ast.Assign, ast.AnnAssign)) and all(
                isinstance(t, ast.Name) for t in _assign_targets(statement)):
            for target in _assign_targets(statement):
                value = values.pop(target.id, None)
                annotation = f": {ast.get_source_segment(source, statement.annotation)}" \
                    if isinstance(statement, ast.AnnAssign) else ""
                stub = (f"{target.id}{annotation} = {value if value is not None else 'None'}  "
                        f"# {label}: your answer here (a wrong-but-runnable placeholder)")
                stubs.append(Stub(target.id, "constant", False, segment_lines(statement), stub))
                pieces.append(stub)
        else:
            first_line = source_lines[statement.lineno - 1].strip()
            raise StudentError(f"{where}: the top-level statement on line {statement.lineno} of the cell "
                               f"(`{first_line}`) cannot become a stub; an exercise cell holds functions, classes, "
                               "imports and constants only: put this code in a function")
    if not stubs:
        raise StudentError(f"{where}: nothing to turn into a stub; an exercise cell must define at least one "
                           "function (or a class with methods, or a constant)")
    if values:
        raise StudentError(f"{where}: its metadata {STUB_METADATA!r} names {sorted(values)}, which the cell does "
                           "not define at top level (use `name` for a function or constant, `Class.method` for a "
                           "method)")
    return "\n\n\n".join(pieces) + "\n", stubs


# --------------------------------------------------------------------------------------------
# The student notebook


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


def build_student_notebook(chapter: Path, out_dir: Path | str = "student") -> StudentChapter:
    """The student notebook of ``chapter`` (a ``chapters/NN_slug.py``), as it would be written to ``out_dir``:
    find the exercises, follow their stubbed names through the notebook, then write the cells."""
    chapter = Path(chapter)
    notebook = read_chapter(chapter)
    link = Path(os.path.relpath(chapter.with_suffix(".ipynb").resolve(), Path(out_dir).resolve())).as_posix()
    trees = [(_parse_code_cell(c.source) if c.cell_type == "code" else None) for c in notebook.cells]
    exercises, window_of = _find_exercises(chapter, notebook.cells, trees, link)
    checks = _trace_stubs(chapter, notebook.cells, trees, exercises, window_of)
    student = _student_notebook(chapter, notebook, exercises, window_of, checks, link)
    return StudentChapter(chapter, student, exercises)


def _find_exercises(chapter: Path, cells, trees, link: str) -> tuple[list[Exercise], dict[int, Exercise]]:
    """Each exercise cell, stubbed, with its show_solution cell; and, for every cell that may hold one of its
    checks (between the exercise and its show_solution cell), that exercise."""
    number = chapter.stem[:2]
    exercises: list[Exercise] = []
    window_of: dict[int, Exercise] = {}  # chapter cell index -> the exercise whose checks it may hold
    for index, cell in enumerate(cells):
        if not _is_exercise(cell):
            continue
        solution_cell = None
        for later in range(index + 1, len(cells)):
            if _is_exercise(cells[later]):
                break
            if cells[later].cell_type == "code" and trees[later] is not None and _calls_show_solution(trees[later]):
                solution_cell = later
                break
        label = f"exercise {len(exercises) + 1} of chapter {number}"
        where_solution = (f"the show_solution cell below the check, or {link}" if solution_cell is not None else link)
        values = cell.metadata.get(STUB_METADATA, {})
        if not isinstance(values, dict):
            raise StudentError(f"{_cell_label(chapter, index, cell)}: metadata {STUB_METADATA!r} must map names to "
                               f"expressions, got {values!r}")
        stub_source, stubs = stub_exercise_source(cell.source, label=label, where_solution=where_solution,
                                                  values=values, where=_cell_label(chapter, index, cell))
        exercise = Exercise(len(exercises) + 1, index, cell.source, stub_source, stubs, solution_cell)
        exercises.append(exercise)
        end = solution_cell if solution_cell is not None else next(
            (k for k in range(index + 1, len(cells)) if _is_exercise(cells[k])), len(cells))
        for k in range(index + 1, end):
            window_of[k] = exercise

    return exercises, window_of


def _trace_stubs(chapter: Path, cells, trees, exercises: list[Exercise],
                 window_of: dict[int, Exercise]) -> dict[int, tuple[bool, list[str]]]:
    """Follow the stubbed names through the notebook: which cells are checks of an exercise (cell index ->
    (whether it only involves raising stubs, the stubbed names it uses)); raise a StudentError for a cell
    outside the checks that a stub would break."""
    raising: set[str] = set()  # names whose use raises (stubs, and defs of check cells that call them)
    wrong_value: set[str] = set()  # names stubbed with a wrong-but-runnable value
    maybe_undefined: dict[str, int] = {}  # name -> check cell that binds it only after calling a stub
    bound_before: set[str] = set()
    exercise_at = {e.cell_index: e for e in exercises}
    checks: dict[int, tuple[bool, list[str]]] = {}
    for index, cell in enumerate(cells):
        tree = trees[index]
        if cell.cell_type != "code" or tree is None:
            continue
        if index in exercise_at:
            for stub in exercise_at[index].stubs:
                top = stub.name.split(".")[0]
                (raising if stub.raises else wrong_value).add(top)
            for stub in exercise_at[index].stubs:  # a class with any raising method raises
                if stub.raises:
                    wrong_value.discard(stub.name.split(".")[0])
            bound_before |= {s.name.split(".")[0] for s in exercise_at[index].stubs}
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
                "stubs with `raise NotImplementedError`: this cell is not a check of that exercise (it comes after "
                "its show_solution cell), so it would fail. Use the course_lib function in this cell, or give the "
                f"exercise cell a wrong-but-runnable value: `# %% tags=[\"exercise\"] {STUB_METADATA}="
                f"{{\"{sorted(broken)[0]}\": \"...\"}}`")
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


def _student_notebook(chapter: Path, notebook, exercises: list[Exercise], window_of: dict[int, Exercise],
                      checks: dict[int, tuple[bool, list[str]]], link: str):
    """The chapter's notebook with each exercise stubbed under a "your turn" note, its checks tagged, no outputs."""
    import nbformat

    number = chapter.stem[:2]
    exercise_at = {e.cell_index: e for e in exercises}
    student = copy.deepcopy(notebook)
    student.metadata.pop("jupytext", None)
    new_cells = [nbformat.v4.new_markdown_cell(
        f"> **Student version** of [chapter {number}]({link}), written by `make student`: each exercise's solution "
        "is a stub for you to fill in. Once you have edited this file, running `make student` again will not "
        "overwrite it (it stops and says what to do); `make student STUDENT_OUT=my_work` writes a fresh copy to "
        "another folder.")]
    for index, cell in enumerate(student.cells):
        for key in _JUPYTEXT_CELL_KEYS | {STUB_METADATA}:
            cell.metadata.pop(key, None)
        if index in exercise_at:
            exercise = exercise_at[index]
            names = ", ".join(f"`{name}`" for name in exercise.names)
            chapter_link = f"the full chapter, [{chapter.stem}.ipynb]({link}), has the worked solution."
            stuck = (f"The `show_solution` cell after the check reveals the reference implementation, and "
                     f"{chapter_link}"
                     if exercise.solution_cell is not None else chapter_link[0].upper() + chapter_link[1:])
            replace = ("the `raise NotImplementedError`" if all(s.raises for s in exercise.stubs)
                       else "the stub's placeholder value" if len(exercise.stubs) == 1 else "the stubs' bodies")
            new_cells.append(nbformat.v4.new_markdown_cell(
                f"**Your turn** (exercise {exercise.number} of chapter {number}): {names} below "
                f"{'is a stub' if len(exercise.names) == 1 else 'are stubs'}. Replace {replace} "
                f"with your code, then run the check cell. Stuck? {stuck}"))
            cell.source = exercise.stub_source.rstrip("\n")
        elif index in checks:
            tags = list(cell.metadata.get("tags", []))
            if RAISES_TAG not in tags:
                tags.append(RAISES_TAG)
            cell.metadata["tags"] = tags
            exercise = window_of[index]
            only_raising, uses = checks[index]
            cell.metadata[CHECK_METADATA] = {"exercise": exercise.number, "stubs": uses,
                                             "only_raising_stubs": only_raising}
        new_cells.append(cell)
    for position, cell in enumerate(new_cells):
        cell["id"] = f"student-{position:03d}"
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    student.cells = new_cells
    student.nbformat, student.nbformat_minor = 4, 5  # nbformat.write validates it
    return student


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


def write_student_notebooks(chapters=None, out_dir: Path | str = "student", *, force: bool = False,
                            quiet: bool = False) -> list[StudentChapter]:
    """Write ``out_dir/NN_slug.ipynb`` for each chapter (all when ``chapters`` is None).

    A notebook there that differs from what this tool last wrote is a learner's work: if there is any,
    nothing is written and :class:`LearnersWorkError` says which (``force``: each is copied to a ``.bak``
    first, then replaced).
    """
    chapters = find_chapters(chapters or ())
    out_dir = Path(out_dir)
    built = [build_student_notebook(chapter, out_dir) for chapter in chapters]  # every error before any write
    targets = [out_dir / f"{result.chapter.stem}.ipynb" for result in built]
    problems = {}
    for result, target in zip(built, targets):
        fingerprints = cell_fingerprints(result.notebook.cells)
        result.notebook.metadata[FINGERPRINT_METADATA] = {"chapter": result.chapter.stem,
                                                          "cells_sha256": fingerprints}
        problem = overwrite_problem(target, fingerprints)
        if problem:
            problems[target] = problem
    if problems and not force:
        raise LearnersWorkError(problems)
    out_dir.mkdir(parents=True, exist_ok=True)
    for result, target in zip(built, targets):
        if target in problems:
            print(f"{target}: {problems[target]}; your version is kept as {_backup(target)}")
        write_notebook_atomically(result.notebook, target)
        if not quiet:
            checks = sum(len(e.check_cells) for e in result.exercises)
            runnable = sum(not s.raises for s in result.stubs)
            print(f"{target}: {_plural(len(result.exercises), 'exercise')}, {_plural(len(result.stubs), 'stub')}"
                  f"{f' ({runnable} wrong-but-runnable)' if runnable else ''}, "
                  f"{_plural(checks, 'check cell')} tagged {RAISES_TAG}")
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
        "Write student notebooks: each chapter with its exercise solutions replaced by stubs. A notebook in "
        "--out that was edited since it was written (or not written by this tool) is never overwritten: the "
        "run stops with exit code 2 and writes nothing, unless --force."))
    parser.add_argument("chapters", nargs="*", help="chapters (08, 08_vae, vae or a path); default: all")
    parser.add_argument("--out", default="student", help="folder to write to (default: student, git-ignored)")
    parser.add_argument("--force", action="store_true", help="replace edited notebooks too, after copying each "
                        "to NN_slug.ipynb.bak (or .bak.1, .bak.2, ...: no backup is replaced)")
    parser.add_argument("--quiet", action="store_true", help="print nothing but errors and the backups made")
    args = parser.parse_args(argv)
    try:
        built = write_student_notebooks(args.chapters, args.out, force=args.force, quiet=args.quiet)
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
