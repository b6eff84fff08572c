"""Every chapter, opened in JupyterLab in a real (headless) browser and run top to bottom under
COURSE_PROFILE=ci, the way a learner does "Run All": no cell raises, every widget is drawn, moving a
widget redraws its figure, and all the math is typeset by MathJax without an error.

New chapters are picked up from the file names (chapters/NN_slug.ipynb); nothing to edit here.
Screenshots go to artifacts/browser/<test>/ (git-ignored).
"""
import pytest

import labdriver
from conftest import CHAPTERS

RUN_TIMEOUT = 600  # seconds for one chapter's "Run All" under `ci` (nbval's own budget is 90 s per chapter)


def test_there_are_chapters():
    assert CHAPTERS, "no notebooks named NN_slug.ipynb were found"


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda path: path.stem)
def test_chapter_runs_in_jupyterlab(chapter, lab, page, artifacts):
    problems = labdriver.notebook_problems(page, lab, chapter.name, artifacts, run_timeout=RUN_TIMEOUT)
    assert not problems, f"{chapter.name} in JupyterLab:\n- " + "\n- ".join(problems)
