"""The exercises through nbgrader, the whole loop on one chapter (README, "Exercises through nbgrader").

A leader's course directory gets the chapter's source version (``--nbgrader-source``); ``nbgrader
generate_assignment`` writes the release; two submissions are autograded: the source version itself (every
solution in place: full marks) and the untouched release (zero, and no error outside the exercises).
"""
from __future__ import annotations

import shutil
from pathlib import Path

import nbformat
import pytest

from course_lib.tools import student

pytestmark = pytest.mark.filterwarnings("ignore::Warning:nbgrader.*", "ignore::Warning:sqlalchemy.*")
CHAPTER = "16_camera_geometry"  # 2 exercises, 4 s under ci: the loop, not the chapter, is under test


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    from nbgrader.api import Gradebook
    from nbgrader.apps import NbGraderAPI
    from traitlets.config import Config

    course = tmp_path_factory.mktemp("course")
    assert student.main(["--nbgrader-source", str(course), "--quiet", CHAPTER]) == 0
    config = Config()
    config.CourseDirectory.root = str(course)
    config.Execute.timeout = 30  # nbclient may notice a reply only at this timeout after a widget (nbclient#312)
    api = NbGraderAPI(config=config)
    with student._venv_on_path():
        result = api.generate_assignment(CHAPTER)
        assert result["success"], result.get("error") or result["log"]
        for learner, notebook in [("solution", course / "source"), ("untouched", course / "release")]:
            target = course / "submitted" / learner / CHAPTER
            target.mkdir(parents=True)
            shutil.copy(notebook / CHAPTER / f"{CHAPTER}.ipynb", target)
            result = api.autograde(CHAPTER, learner)
            assert result["success"], result.get("error") or result["log"]
        with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gradebook:
            scores = {learner: (gradebook.find_submission(CHAPTER, learner).score,
                                gradebook.find_submission(CHAPTER, learner).max_score)
                      for learner in ("solution", "untouched")}
    return course, scores


def test_the_solutions_get_full_marks(graded):
    course, scores = graded
    score, max_score = scores["solution"]
    built = student.build_student_notebook(student.find_chapters([CHAPTER])[0])
    assert max_score == built.points > 0
    assert score == max_score


def test_the_untouched_release_gets_zero_and_runs_outside_the_exercises(graded):
    course, scores = graded
    assert scores["untouched"][0] == 0
    notebook = nbformat.read(course / "autograded" / "untouched" / CHAPTER / f"{CHAPTER}.ipynb", as_version=4)
    for index, cell in enumerate(notebook.cells):
        if cell.cell_type != "code":
            continue
        errors = [o for o in cell.outputs if o.output_type == "error"]
        graded_check = cell.metadata.get("nbgrader", {}).get("grade", False)
        if graded_check:  # it must fail with the stub's error, not an unrelated one
            assert errors, f"cell {index} passed on the untouched release: {cell.source[:80]}"
            assert student.student_check_problem(cell.metadata, cell.outputs) is None, f"cell {index}"
        elif student.RAISES_TAG not in cell.metadata.get("tags", []):
            assert not errors, f"cell {index} failed outside the exercises: {errors[-1].ename}: {errors[-1].evalue}"
