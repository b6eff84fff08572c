"""Student notebooks (course_lib/tools/student.py, `make student`): nbgrader clears every exercise's solution region,
the release keeps each function's signature and docstring and none of its code, the check cells are nbgrader
test cells tagged for nbval, and the errors say which chapter and cell. Fast: no notebook is executed here (`make
test-browser` runs the student notebooks, tests/test_nbgrader.py autogrades one chapter)."""
import ast
import copy
import inspect
import json
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
from course_lib.tools.student import (BEGIN_SOLUTION, CHECK_METADATA, END_SOLUTION, EXERCISE_TAG, RAISES_TAG,
                                      StudentError, build_student_notebook, build_student_notebooks, find_chapters,
                                      read_exercise, student_check_problem)

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = sorted((ROOT / "chapters").glob("[0-9][0-9]_*.py"))
OUT = ROOT / "student"


@lru_cache(maxsize=None)
def _all_built():
    return {result.chapter: result for result in build_student_notebooks(CHAPTERS, OUT)}  # one nbgrader run


def built(chapter: Path):
    return _all_built()[chapter]


def _function_nodes(source: str) -> dict:
    return {s.name: s for s in ast.parse(source).body if isinstance(s, (ast.FunctionDef, ast.AsyncFunctionDef))}


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
def test_every_exercise_cell_has_a_solution_region_and_a_check(chapter):
    result = built(chapter)
    source_notebook = student.read_chapter(chapter)
    tagged = [i for i, c in enumerate(source_notebook.cells) if EXERCISE_TAG in c.metadata.get("tags", [])]
    assert tagged, f"{chapter.name} has no exercise cell"
    assert [e.cell_index for e in result.exercises] == tagged
    for exercise in result.exercises:
        assert exercise.names and BEGIN_SOLUTION in exercise.solution_source, f"{chapter.name} {exercise.cell_index}"
        assert exercise.check_cells, f"{chapter.name} cell {exercise.cell_index}: no check cell uses the exercise"
    assert result.points == len([c for c in result.notebook.cells if c.metadata.get("nbgrader", {}).get("grade")])


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda p: p.stem)
def test_the_release_keeps_signatures_and_docstrings(chapter):
    for exercise in built(chapter).exercises:
        solutions, stubs = _function_nodes(exercise.solution_source), _function_nodes(exercise.release_source)
        assert set(stubs) == set(solutions) == set(exercise.functions), f"{chapter.name} cell {exercise.cell_index}"
        for name, solution in solutions.items():
            stub = stubs[name]
            where = f"{chapter.name} cell {exercise.cell_index}: {name}"
            assert ast.dump(stub.args) == ast.dump(solution.args), f"{where}: the signature changed"
            assert [ast.dump(d) for d in stub.decorator_list] == [ast.dump(d) for d in solution.decorator_list], where
            assert ast.get_docstring(stub) == ast.get_docstring(solution), f"{where}: the docstring changed"
            assert ast.get_docstring(solution), f"{where}: a function to write needs a docstring saying what it returns"


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda p: p.stem)
def test_the_release_holds_no_solution_code(chapter):
    for exercise in built(chapter).exercises:
        where = f"{chapter.name} cell {exercise.cell_index}"
        assert "BEGIN SOLUTION" not in exercise.release_source and "YOUR CODE HERE" in exercise.release_source, where
        release_lines = {line.strip() for line in exercise.release_source.splitlines()}
        inside, solution_code = False, []
        for line in exercise.solution_source.splitlines():
            if line.strip() in (BEGIN_SOLUTION, END_SOLUTION):
                inside = line.strip() == BEGIN_SOLUTION
            elif inside and len(line.strip()) > 3 and not line.strip().startswith("#"):
                solution_code.append(line.strip())
        assert solution_code, f"{where}: an empty solution region"
        leaked = [line for line in solution_code if line in release_lines]
        assert not leaked, f"{where}: the release holds solution code {leaked}"
        for name, stub in _function_nodes(exercise.release_source).items():
            body = _without_docstring(stub.body)
            assert len(body) == 1 and isinstance(body[0], ast.Raise), f"{where}: {name}'s body is one raise"


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda p: p.stem)
def test_the_release_raises_not_implemented(chapter):
    for exercise in built(chapter).exercises:
        namespace = {"torch": torch, "F": F, "math": math, "np": np, "course_lib": course_lib, "nn": torch.nn}
        code = compile(exercise.release_source, f"{chapter.name} cell {exercise.cell_index}", "exec")
        if exercise.predictions:  # the cell binds the placeholders, then raises
            with pytest.raises(NotImplementedError):
                exec(code, namespace)
            assert all(namespace[name] is None for name in exercise.predictions)
            continue
        exec(code, namespace)
        for name in exercise.functions:
            function = namespace[name]
            required = [p for p in inspect.signature(function).parameters.values()
                        if p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
            with pytest.raises(NotImplementedError):
                function(*[None] * len(required))


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda p: p.stem)
def test_student_notebook_cells(chapter):
    """Outside the exercises, the student notebook is the chapter: same code cells; checks graded and tagged."""
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
    predictions = {e.cell_index for e in result.exercises if e.predictions}
    chapter_index = [i for i, c in enumerate(chapter_notebook.cells) if c.cell_type == "code"]
    for index, mine, theirs in zip(chapter_index, code, chapter_code):
        tags, grading = mine.metadata.get("tags", []), mine.metadata.get("nbgrader", {})
        if EXERCISE_TAG in tags:
            assert grading["solution"] and not grading["grade"] and not grading["locked"]
            assert (RAISES_TAG in tags) == (index in predictions), "only a prediction's cell raises in the release"
            continue
        assert mine.source == theirs.source, f"{chapter.name}: a non-exercise cell changed"
        if index in checks:
            assert RAISES_TAG in tags and mine.metadata[CHECK_METADATA]["stubs"]
            assert grading["grade"] and grading["points"] == student.POINTS_PER_CHECK and grading["locked"]
        else:
            assert RAISES_TAG not in tags and CHECK_METADATA not in mine.metadata and not grading
    notes = [c.source for c in notebook.cells if c.cell_type == "markdown" and c.source.startswith("**Your turn**")]
    assert len(notes) == len(result.exercises)
    for note in notes:
        link = re.search(r"\]\((\.\./chapters/[^)]+\.ipynb)\)", note).group(1)
        assert (OUT / link).resolve() == chapter.with_suffix(".ipynb").resolve()


# --------------------------------------------------------------------------------------------
# Exercise cells that nbgrader could not clear, or the learner could not fill: clear errors


def test_an_exercise_cell_must_mark_its_solution():
    where = "08_vae.py, cell 7"
    with pytest.raises(StudentError, match=r"08_vae.py, cell 7.*nothing for the learner to write"):
        read_exercise("import torch\n", where)
    with pytest.raises(StudentError, match=r"cell 7.*not valid Python"):
        read_exercise("def f(x)\n    return x\n", where)
    with pytest.raises(StudentError, match=r"cell 7: f\(\) needs its whole body after the docstring"):
        read_exercise('def f(x):\n    """Doc."""\n    return x\n', where)
    with pytest.raises(StudentError, match=r"line 5 \(`for i in range\(3\):`\) cannot be an exercise"):
        read_exercise(f"def f(x):\n    {BEGIN_SOLUTION}\n    return x\n    {END_SOLUTION}\nfor i in range(3):\n"
                      "    f(i)\n", where)
    with pytest.raises(StudentError, match=r"region begun on line 2 has no `### END SOLUTION`"):
        read_exercise(f"def f(x):\n    {BEGIN_SOLUTION}\n    return x\n", where)
    with pytest.raises(StudentError, match=r"line 2 mentions a solution marker"):
        read_exercise("ANSWER = None\n# BEGIN SOLUTION here\nANSWER = 1\n", where)
    with pytest.raises(StudentError, match=r"line 2 \(`ANSWER = 1`\) cannot be an exercise"):  # no placeholder
        read_exercise(f"{BEGIN_SOLUTION}\nANSWER = 1\n{END_SOLUTION}\n", where)


def test_functions_with_decorators_and_predictions():
    source = f'''import torch


@torch.no_grad()
def scaled(x, *args, scale: float = 2.0, **kwargs) -> torch.Tensor:
    """Twice x."""
    {BEGIN_SOLUTION}
    # a comment of the solution
    return scale * x
    {END_SOLUTION}


ANSWER = None  # your prediction
OTHER = None
{BEGIN_SOLUTION}
ANSWER = 0.5
OTHER = "up"
{END_SOLUTION}
'''
    assert read_exercise(source) == (["scaled"], ["ANSWER", "OTHER"])
    with pytest.raises(StudentError, match=r"cell 0: the statement on line 21 comes after a prediction"):
        read_exercise(source + "\n\ndef late():\n    return 1\n", "cell 0")


EXERCISE = f'''# %% tags=["exercise"]
def my_double(x):
    """2 x."""
    {BEGIN_SOLUTION}
    return 2 * x
    {END_SOLUTION}

# %%
assert my_double(torch.ones(2)).sum() == 4{{extra}}

# %%
course_lib.core.check.show_solution("def my_double(x): return 2 * x")

# %%
print(my_double(torch.ones(3)))
'''


def test_a_toy_chapter_through_nbgrader(tmp_path):
    text = EXERCISE.format(extra="").replace("print(my_double(torch.ones(3)))", "print(3)")
    result = build_student_notebook(_chapter_write(tmp_path, text), tmp_path / "student")
    (exercise,) = result.exercises
    assert exercise.functions == ["my_double"] and exercise.check_cells == [1]
    assert "raise NotImplementedError()" in exercise.release_source and "2 * x" not in exercise.release_source
    assert result.points == 1
    grading = [c.metadata.get("nbgrader") for c in result.source.cells if c.cell_type == "code"]
    assert grading[0]["solution"] and grading[1]["grade"] and grading[1]["grade_id"] == "exercise_1_check_1"


def test_the_markers_words_outside_an_exercise_cell_are_an_error(tmp_path):
    text = EXERCISE.format(extra="").replace("print(my_double(torch.ones(3)))", "print(3)")
    text = "# %% [markdown]\n# The solution sits after `### BEGIN SOLUTION`.\n\n" + text
    with pytest.raises(StudentError, match=r"42_toy.py, cell 0 .* is not an exercise cell but holds nbgrader's words"):
        build_student_notebook(_chapter_write(tmp_path, text), tmp_path / "student")


def test_a_later_cell_that_uses_an_exercise_function_is_an_error(tmp_path):
    chapter = _chapter_write(tmp_path, EXERCISE.format(extra=""))
    with pytest.raises(StudentError, match=r"42_toy.py, cell 3 \(from 0.*`print\(my_double.* uses my_double"):
        build_student_notebook(chapter, tmp_path / "student")


def test_a_name_bound_after_the_check_call_is_an_error_if_used_later(tmp_path):
    text = EXERCISE.format(extra="\nresult = my_double(3)")
    text = text.replace("print(my_double(torch.ones(3)))", "print(result)")
    chapter = _chapter_write(tmp_path, text)
    with pytest.raises(StudentError, match=r"uses `result`, which check cell 1 binds only after calling"):
        build_student_notebook(chapter, tmp_path / "student")


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


def test_nbgrader_source_writes_a_course_directory(tmp_path, capsys):
    assert student.main(["--nbgrader-source", str(tmp_path), "08"]) == 0
    notebook = nbformat.read(tmp_path / "source" / "08_vae" / "08_vae.ipynb", as_version=4)
    solutions = [c for c in notebook.cells if c.metadata.get("nbgrader", {}).get("solution")]
    assert len(solutions) == 5 and all(BEGIN_SOLUTION in c.source for c in solutions)
    assert "nbgrader generate_assignment 08_vae" in capsys.readouterr().out
    assert student.main(["--nbgrader-source", str(tmp_path), "--quiet", "08"]) == 0  # unchanged: replaced
    _edit(tmp_path / "source" / "08_vae" / "08_vae.ipynb", _edit_a_cell)  # a leader's edit (points, a hint)
    assert student.main(["--nbgrader-source", str(tmp_path), "--quiet", "08"]) == 2


# --------------------------------------------------------------------------------------------
# Regenerating never loses a learner's work (student.X, not imported names: the old module lacked them)


_RELEASES: dict = {}


@pytest.fixture(autouse=True)
def _nbgrader_once_per_source(monkeypatch):
    """Regenerating the same chapter again and again is about fingerprints, not nbgrader: run nbgrader (seconds a
    call, mostly its gradebook's set-up) once per source notebook and hand out copies."""
    real = student.generate_releases

    def remembered(sources):
        key = json.dumps(sources, sort_keys=True)
        if key not in _RELEASES:
            _RELEASES[key] = real(sources)
        return copy.deepcopy(_RELEASES[key])

    monkeypatch.setattr(student, "generate_releases", remembered)


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
