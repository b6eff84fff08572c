"""Student notebooks (course_lib/student.py, `make student`): every exercise becomes stubs with the
solution's signature and none of its code, its check cells are tagged for nbval, and the errors say
which chapter and cell. Fast: no notebook is executed here (`make test` runs the student notebooks
under nbval, with the repository's conftest.py checking the tagged cells)."""
import ast
import inspect
import math
import re
from functools import lru_cache
from pathlib import Path

import nbformat
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import course_lib
from course_lib.tools import student
from course_lib.tools.student import (CHECK_METADATA, EXERCISE_TAG, RAISES_TAG, StudentError, build_student_notebook,
                                      find_chapters, stub_exercise_source, student_check_problem)

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = sorted((ROOT / "chapters").glob("[0-9][0-9]_*.py"))
OUT = ROOT / "student"


@lru_cache(maxsize=None)
def built(chapter: Path):
    return build_student_notebook(chapter, OUT)


def _function_nodes(source: str) -> dict:
    """Qualified name -> FunctionDef of the top-level functions and the methods of top-level classes."""
    nodes = {}
    for statement in ast.parse(source).body:
        if isinstance(statement, (ast.FunctionDef, ast.AsyncFunctionDef)):
            nodes[statement.name] = statement
        elif isinstance(statement, ast.ClassDef):
            for item in statement.body:
                if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    nodes[f"{statement.name}.{item.name}"] = item
    return nodes


def _without_docstring(body):
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
            and isinstance(body[0].value.value, str):
        return body[1:]
    return body


def _chapter_write(tmp_path, text: str) -> Path:
    header = ("# ---\n# jupyter:\n#   jupytext:\n#     formats: ipynb,py:percent\n#   kernelspec:\n"
              "#     display_name: Python 3\n#     language: python\n#     name: python3\n# ---\n\n")
    path = tmp_path / "chapters" / "42_toy.py"
    path.parent.mkdir(exist_ok=True)
    path.write_text(header + text)
    return path


# --------------------------------------------------------------------------------------------
# The real chapters


def test_every_chapter_is_found_by_the_glob():
    assert CHAPTERS, "no chapters"
    assert find_chapters() == CHAPTERS  # a chapter added later is picked up with no edit


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda p: p.stem)
def test_every_exercise_cell_yields_stubs(chapter):
    result = built(chapter)
    source_notebook = student.read_chapter(chapter)
    tagged = [i for i, c in enumerate(source_notebook.cells) if EXERCISE_TAG in c.metadata.get("tags", [])]
    assert tagged, f"{chapter.name} has no exercise cell"
    assert [e.cell_index for e in result.exercises] == tagged
    for exercise in result.exercises:
        assert exercise.stubs, f"{chapter.name} cell {exercise.cell_index}: no stub"
        assert exercise.check_cells, f"{chapter.name} cell {exercise.cell_index}: no check cell uses the stub"


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda p: p.stem)
def test_stub_signatures_match_the_solutions(chapter):
    for exercise in built(chapter).exercises:
        solutions, stubs = _function_nodes(exercise.solution_source), _function_nodes(exercise.stub_source)
        assert set(stubs) == set(solutions), f"{chapter.name} cell {exercise.cell_index}"
        for name, solution in solutions.items():
            stub = stubs[name]
            where = f"{chapter.name} cell {exercise.cell_index}: {name}"
            assert type(stub) is type(solution), where
            assert ast.dump(stub.args) == ast.dump(solution.args), f"{where}: the signature changed"
            assert [ast.dump(d) for d in stub.decorator_list] == [ast.dump(d) for d in solution.decorator_list], where
            assert ast.dump(stub.returns) == ast.dump(solution.returns) if solution.returns else stub.returns is None
            assert ast.get_docstring(stub) == ast.get_docstring(solution), f"{where}: the docstring changed"


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda p: p.stem)
def test_stubs_hold_no_solution_code(chapter):
    for exercise in built(chapter).exercises:
        student_lines = {line.strip() for line in exercise.stub_source.splitlines()}
        solutions = _function_nodes(exercise.solution_source)
        solution_lines = exercise.solution_source.splitlines()
        for name, stub in _function_nodes(exercise.stub_source).items():
            where = f"{chapter.name} cell {exercise.cell_index}: {name}"
            body = _without_docstring(stub.body)
            assert len(body) == 1, f"{where}: a stub's body is its docstring and one raise or return"
            if isinstance(body[0], ast.Raise):
                raised = body[0].exc
                assert isinstance(raised, ast.Call) and isinstance(raised.func, ast.Name) \
                    and raised.func.id == "NotImplementedError", where
                message = raised.args[0].value
                assert name in message and f"chapter {chapter.stem[:2]}" in message, where
                assert f"../chapters/{chapter.stem}.ipynb" in message, f"{where}: no link to the solution"
            else:
                assert isinstance(body[0], ast.Return), where
                assert "Wrong-but-runnable" in exercise.stub_source, f"{where}: a returning stub must say so"
            solution = solutions[name]
            first = _without_docstring(solution.body)[0].lineno
            code = [line.strip() for line in solution_lines[first - 1:solution.end_lineno]]
            leaked = [line for line in code if len(line) > 3 and not line.startswith("#") and line in student_lines]
            assert not leaked, f"{where}: the stub holds solution code {leaked}"


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda p: p.stem)
def test_stubs_raise_not_implemented(chapter):
    for exercise in built(chapter).exercises:
        namespace = {"torch": torch, "F": F, "math": math, "np": np, "course_lib": course_lib, "nn": torch.nn}
        exec(compile(exercise.stub_source, f"{chapter.name} cell {exercise.cell_index}", "exec"), namespace)
        for stub in exercise.stubs:
            if stub.kind != "function" or not stub.raises:
                continue
            function = namespace[stub.name]
            required = [p for p in inspect.signature(function).parameters.values()
                        if p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
            with pytest.raises(NotImplementedError, match=re.escape(stub.name)):
                function(*[None] * len(required))


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda p: p.stem)
def test_student_notebook_cells(chapter):
    """Outside the exercises, the student notebook is the chapter: same code cells; checks tagged; no outputs."""
    result = built(chapter)
    chapter_notebook = student.read_chapter(chapter)  # the source of truth, chapters/NN_slug.py
    notebook = result.notebook
    nbformat.validate(notebook)
    assert notebook.metadata["kernelspec"] == chapter_notebook.metadata["kernelspec"]
    assert "jupytext" not in notebook.metadata, "a student notebook must not be paired with a .py"
    code = [c for c in notebook.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code)
    chapter_code = [c for c in chapter_notebook.cells if c.cell_type == "code"]
    assert len(code) == len(chapter_code)
    checks = {i for e in result.exercises for i in e.check_cells}
    chapter_index = [i for i, c in enumerate(chapter_notebook.cells) if c.cell_type == "code"]
    for index, mine, theirs in zip(chapter_index, code, chapter_code):
        tags = mine.metadata.get("tags", [])
        if EXERCISE_TAG in tags:
            assert RAISES_TAG not in tags, "a stub cell only defines functions: it must run"
            continue
        assert mine.source == theirs.source, f"{chapter.name}: a non-exercise cell changed"
        if index in checks:
            assert RAISES_TAG in tags and mine.metadata[CHECK_METADATA]["stubs"]
        else:
            assert RAISES_TAG not in tags and CHECK_METADATA not in mine.metadata
    notes = [c.source for c in notebook.cells if c.cell_type == "markdown" and c.source.startswith("**Your turn**")]
    assert len(notes) == len(result.exercises)
    for note in notes:
        link = re.search(r"\]\((\.\./chapters/[^)]+\.ipynb)\)", note).group(1)
        assert (OUT / link).resolve() == chapter.with_suffix(".ipynb").resolve()


# --------------------------------------------------------------------------------------------
# Stubs and errors on made-up cells


def test_a_cell_without_a_def_is_a_clear_error():
    with pytest.raises(StudentError, match=r"08_vae.py, cell 7.*nothing to turn into a stub"):
        stub_exercise_source("import torch\n", label="exercise 1", where_solution="below", where="08_vae.py, cell 7")
    with pytest.raises(StudentError, match=r"cell 7.*not valid Python"):
        stub_exercise_source("def f(x)\n    return x\n", label="e", where_solution="s", where="08_vae.py, cell 7")
    with pytest.raises(StudentError, match=r"cell 7.*line 3.*`for i in range\(3\):`.*put this code in a function"):
        stub_exercise_source("def f(x):\n    return x\nfor i in range(3):\n    f(i)\n", label="e",
                             where_solution="s", where="08_vae.py, cell 7")


def test_classes_methods_decorators_and_constants():
    source = '''import torch


@torch.no_grad()
def scaled(x, *args, scale: float = 2.0, **kwargs) -> torch.Tensor:
    """Twice x."""
    # a comment of the solution
    return scale * x


class Block(torch.nn.Module):
    """A block."""
    width = 4

    def __init__(self, dim):
        super().__init__()
        self.linear = torch.nn.Linear(dim, dim)

    def forward(self, x): return self.linear(x).relu()


ANSWER = 0.5
'''
    stubbed, stubs = stub_exercise_source(source, label="exercise 3 of chapter 42", where_solution="below",
                                          values={"Block.forward": "x"})
    assert [(s.name, s.kind, s.raises) for s in stubs] == [
        ("scaled", "function", True), ("Block.__init__", "method", True), ("Block.forward", "method", False),
        ("ANSWER", "constant", False)]
    assert "import torch" in stubbed and "@torch.no_grad()" in stubbed and "width = 4" in stubbed
    assert "scale * x" not in stubbed and "comment of the solution" not in stubbed and "Linear" not in stubbed
    assert "ANSWER = None" in stubbed
    namespace = {}
    exec(stubbed, namespace)
    assert inspect.signature(namespace["scaled"]).parameters["scale"].default == 2.0
    with pytest.raises(NotImplementedError, match="scaled: exercise 3 of chapter 42"):
        namespace["scaled"](torch.ones(1))
    with pytest.raises(NotImplementedError, match=r"Block.__init__"):
        namespace["Block"](3)
    assert namespace["Block"].forward(None, "unchanged") == "unchanged"  # the wrong-but-runnable value
    with pytest.raises(StudentError, match="names \\['missing'\\]"):
        stub_exercise_source(source, label="e", where_solution="s", values={"missing": "0"})


def test_unknown_chapter_is_a_clear_error():
    with pytest.raises(StudentError, match=r"unknown chapter 'nope': choose from 00_welcome"):
        find_chapters(["nope"])
    assert find_chapters(["8"]) == find_chapters(["08_vae"]) == find_chapters(["vae"]) \
        == find_chapters(["chapters/08_vae.ipynb"]) == [ROOT / "chapters" / "08_vae.py"]


def test_main_writes_notebooks_and_reports_errors(tmp_path, capsys):
    assert student.main(["--out", str(tmp_path), "--quiet", "00"]) == 0
    written = nbformat.read(tmp_path / "00_welcome.ipynb", as_version=4)
    assert any(EXERCISE_TAG in c.metadata.get("tags", []) for c in written.cells)
    assert student.main(["--out", str(tmp_path), "99"]) == 2
    assert "unknown chapter '99'" in capsys.readouterr().err


EXERCISE = '''# %% tags=["exercise"]{values}
def my_double(x):
    """2 x."""
    return 2 * x

# %%
assert my_double(torch.ones(2)).sum() == 4{extra}

# %%
course_lib.core.check.show_solution("def my_double(x): return 2 * x")

# %%
print(my_double(torch.ones(3)))
'''


def test_a_later_cell_that_uses_a_stub_needs_a_wrong_but_runnable_value(tmp_path):
    chapter = _chapter_write(tmp_path, EXERCISE.format(values="", extra=""))
    with pytest.raises(StudentError, match=r"42_toy.py, cell 3 \(from 0.*`print\(my_double.* uses my_double.*stub="):
        build_student_notebook(chapter, tmp_path / "student")
    chapter = _chapter_write(tmp_path, EXERCISE.format(values=' stub={"my_double": "torch.zeros_like(x)"}', extra=""))
    result = build_student_notebook(chapter, tmp_path / "student")
    (stub,) = result.stubs
    assert not stub.raises and "return torch.zeros_like(x)" in stub.stub
    cells = [c for c in result.notebook.cells if c.cell_type == "code"]
    assert cells[1].metadata[CHECK_METADATA] == {"exercise": 1, "stubs": ["my_double"], "only_raising_stubs": False}
    assert RAISES_TAG not in cells[3].metadata.get("tags", [])  # the later cell runs: it is not allowed to raise
    assert "../chapters/42_toy.ipynb" in stub.stub


def test_a_name_bound_after_the_check_call_is_an_error_if_used_later(tmp_path):
    text = EXERCISE.format(values=' stub={"my_double": "x"}', extra="\nresult = my_double(3)")
    text = text.replace("print(my_double(torch.ones(3)))", "print(result)")
    chapter = _chapter_write(tmp_path, text)
    with pytest.raises(StudentError, match=r"uses `result`, which check cell 1 binds only after calling"):
        build_student_notebook(chapter, tmp_path / "student")


# --------------------------------------------------------------------------------------------
# Regenerating never loses a learner's work (student.X, not imported names: the old module lacked them)


def _regenerate(out: Path, *args) -> int:
    return student.main(["--out", str(out), "--quiet", *args])


def _edit(path: Path, change) -> bytes:
    """Change the notebook at ``path`` the way Jupyter would save it; return its new bytes."""
    notebook = nbformat.read(path, as_version=4)
    change(notebook)
    nbformat.write(notebook, path)
    return path.read_bytes()


def _first_code_cell(notebook):
    return next(c for c in notebook.cells if c.cell_type == "code")


def _run_it(notebook):
    cell = _first_code_cell(notebook)
    cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text="ran\n")]
    cell.execution_count = 7
    cell.metadata["scrolled"] = True


def _edit_a_cell(notebook):
    _first_code_cell(notebook).source += "\nmy_work = 42"


def test_an_unchanged_or_only_run_notebook_is_replaced(tmp_path):
    notebook = tmp_path / "00_welcome.ipynb"
    assert _regenerate(tmp_path, "00") == 0
    written = nbformat.read(notebook, as_version=4)
    assert written.metadata[student.FINGERPRINT_METADATA] == {
        "chapter": "00_welcome", "cells_sha256": student.cell_fingerprints(written.cells)}
    fresh = notebook.read_bytes()
    assert _regenerate(tmp_path, "00") == 0
    assert notebook.read_bytes() == fresh
    _edit(notebook, _run_it)  # outputs, an execution count, cell metadata: not an edit
    assert _regenerate(tmp_path, "00") == 0
    assert notebook.read_bytes() == fresh
    assert [p.name for p in tmp_path.iterdir()] == ["00_welcome.ipynb"]  # no .bak, no temporary file


def test_an_edited_notebook_is_refused_and_left_as_it_is(tmp_path, capsys):
    notebook = tmp_path / "00_welcome.ipynb"
    assert _regenerate(tmp_path, "00") == 0
    mine = _edit(notebook, _edit_a_cell)
    assert _regenerate(tmp_path, "00") == 2
    assert notebook.read_bytes() == mine
    error = capsys.readouterr().err
    assert f"{notebook}: 1 cell edited" in error and "nothing was written" in error
    assert "make student STUDENT_OUT=DIR" in error and "make student FORCE=1" in error
    _edit(notebook, lambda nb: nb.cells.insert(1, nbformat.v4.new_code_cell("more = 1")))
    assert _regenerate(tmp_path, "00") == 2
    assert f"{notebook}: 1 cell edited, 1 added" in capsys.readouterr().err
    assert [p.name for p in tmp_path.iterdir()] == ["00_welcome.ipynb"]


def test_force_replaces_an_edited_notebook_and_keeps_every_version_as_a_backup(tmp_path, capsys):
    notebook = tmp_path / "00_welcome.ipynb"
    assert _regenerate(tmp_path, "00") == 0
    fresh = notebook.read_bytes()
    first = _edit(notebook, _edit_a_cell)
    assert _regenerate(tmp_path, "00", "--force") == 0
    assert notebook.read_bytes() == fresh
    assert (tmp_path / "00_welcome.ipynb.bak").read_bytes() == first
    assert f"your version is kept as {tmp_path / '00_welcome.ipynb.bak'}" in capsys.readouterr().out  # even --quiet
    second = _edit(notebook, lambda nb: nb.cells.pop())
    assert _regenerate(tmp_path, "00", "--force") == 0
    assert (tmp_path / "00_welcome.ipynb.bak").read_bytes() == first
    assert (tmp_path / "00_welcome.ipynb.bak.1").read_bytes() == second
    assert notebook.read_bytes() == fresh
    assert _regenerate(tmp_path, "00") == 0  # the forced copy is a fresh one: no --force needed next time


def test_a_notebook_without_a_fingerprint_is_refused_unless_it_holds_what_would_be_written(tmp_path, capsys):
    notebook = tmp_path / "00_welcome.ipynb"
    own = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("my notes")])
    nbformat.write(own, notebook)
    mine = notebook.read_bytes()
    assert _regenerate(tmp_path, "00") == 2
    assert notebook.read_bytes() == mine
    assert f"{notebook}: no 'course_student' fingerprint" in capsys.readouterr().err
    notebook.write_text('{"cells": [')  # half a notebook
    assert _regenerate(tmp_path, "00") == 2
    assert notebook.read_text() == '{"cells": ['
    assert f"{notebook}: not readable as a notebook (JSONDecodeError" in capsys.readouterr().err
    notebook.unlink()
    assert _regenerate(tmp_path, "00") == 0
    fresh = notebook.read_bytes()
    _edit(notebook, lambda nb: nb.metadata.pop(student.FINGERPRINT_METADATA))  # as an older version wrote it
    assert _regenerate(tmp_path, "00") == 0  # nothing of the learner's to lose
    assert notebook.read_bytes() == fresh


def test_refusing_one_chapter_writes_no_chapter(tmp_path, capsys):
    assert _regenerate(tmp_path, "00", "01") == 0
    (tmp_path / "00_welcome.ipynb").unlink()
    edited = tmp_path / "01_autograd_backprop_losses.ipynb"
    mine = _edit(edited, _edit_a_cell)
    assert _regenerate(tmp_path, "00", "01") == 2
    assert "1 student notebook that differs" in capsys.readouterr().err
    assert [p.name for p in tmp_path.iterdir()] == [edited.name]  # 00 not written either
    assert edited.read_bytes() == mine


def test_an_interrupted_write_leaves_the_old_notebook_whole(tmp_path, monkeypatch):
    notebook = tmp_path / "00_welcome.ipynb"
    assert _regenerate(tmp_path, "00") == 0
    ran = _edit(notebook, _run_it)  # safe to replace, and different bytes from a fresh copy

    def killed(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(student.os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        _regenerate(tmp_path, "00")
    assert notebook.read_bytes() == ran
    assert [p.name for p in tmp_path.iterdir()] == ["00_welcome.ipynb"]  # the temporary file is gone


# --------------------------------------------------------------------------------------------
# What conftest.py asks of a tagged check cell after nbval ran it


def test_student_check_problem():
    info = {CHECK_METADATA: {"exercise": 1, "stubs": ["my_fn"], "only_raising_stubs": True}}
    error = lambda name, value: [{"output_type": "stream", "text": "x"},  # noqa: E731
                                 {"output_type": "error", "ename": name, "evalue": value, "traceback": []}]
    assert "did not raise" in student_check_problem(info, [{"output_type": "stream", "text": "correct"}])
    assert student_check_problem(info, error("NotImplementedError", "my_fn: exercise 1")) is None
    assert student_check_problem(info, error("AssertionError", "my_fn is not implemented yet: replace")) is None
    assert "unrelated" in student_check_problem(info, error("NameError", "name 'x' is not defined"))
    assert "unrelated" in student_check_problem(info, error("AssertionError", "shape (3,), expected (4,)"))
    wrong_value = {CHECK_METADATA: dict(info[CHECK_METADATA], only_raising_stubs=False)}
    assert student_check_problem(wrong_value, error("AssertionError", "shape (3,), expected (4,)")) is None
    assert student_check_problem({"tags": [RAISES_TAG]}, []) is None  # not a student check cell: nbval decides


def test_make_test_browser_runs_the_student_notebooks():
    """make test runs the chapters (with their solutions) under nbval; make test-browser runs the student notebooks
    (the same chapters with stubs) in JupyterLab: each version runs once, and CI runs both."""
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^student:", makefile, re.M), "no `make student` target"
    browser_recipe = makefile.split("\ntest-browser:", 1)[1].split("\n\n", 1)[0]
    assert "course_lib.tools.student" in browser_recipe and "COURSE_BROWSER_CHAPTERS=$(STUDENT_CI)" in browser_recipe
    test_recipe = makefile.split("\ntest:", 1)[1].split("\n\n", 1)[0]
    assert "$(NOTEBOOKS)" in test_recipe
    assert "def pytest_runtest_makereport" in (ROOT / "conftest.py").read_text()
