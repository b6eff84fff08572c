"""The browser checks themselves, on notebooks broken on purpose: each break must be reported.

A check that cannot fail proves nothing. Small notebooks, one break each, and a scratch copy of a
real chapter with a LaTeX typo and a broken widget are written here and opened in the same
JupyterLab as the chapters.
"""
import re
from pathlib import Path

import nbformat
import pytest

import labdriver
from conftest import REPO
from course_lib.tools.student import CHECK_METADATA, RAISES_TAG

FIGURE_WIDGET = """\
import ipywidgets  # and no pyplot: the widget's figure must show as an image all the same
from course_lib.core.widgets import interactive_figure

def draw(ax, k):
    {body}

interactive_figure(draw, k=ipywidgets.IntSlider(value=1, min=0, max=5, description="k"))"""

STUDENT_CHECK = {"tags": [RAISES_TAG], CHECK_METADATA: {"exercise": 1, "stubs": ["my_fn"], "only_raising_stubs": True}}

BROKEN = {
    # name: (markdown, code cells, what the report must say)
    "fine": ("Fine math: $\\frac{a}{b} + \\beta$ and\n\n$$\n\\sum_i x_i^2\n$$",
             [FIGURE_WIDGET.format(body="ax.plot([0, k])")], None),
    "latex_undefined_command": ("A typo: $\\alpah + 1$.", ["1 + 1"], "undefined TeX command '\\\\alpah'"),
    "latex_missing_brace": ("A typo: $\\frac{a}{b$ is left open.", ["1 + 1"], "TeX left as text"),
    "latex_display_missing_brace": ("$$\n\\sum_i x_i^{2\n$$", ["1 + 1"], "TeX left as text"),
    "image_broken": ("A schematic that is not there: ![the model](missing_schematic.svg)", ["1 + 1"], "broken image"),
    "cell_error": ("No math.", ["1 + 1", "raise ValueError('a deliberate error')", "2 + 2"],
                   "raised ValueError: a deliberate error"),
    "widget_model_missing": ("No math.", [
        "from IPython.display import display\n"
        "display({'application/vnd.jupyter.widget-view+json': {'model_id': 'gone', 'version_major': 2, "
        "'version_minor': 0}}, raw=True)"], "Error displaying widget"),
    "widget_callback_raises": ("No math.", [FIGURE_WIDGET.format(
        body="if k != 1:\n        raise ValueError('broken callback')\n    ax.plot([0, k])")],
        "raised ValueError: broken callback (the traceback is in the widget)"),
    "widget_ignores_control": ("No math.", [FIGURE_WIDGET.format(body="ax.plot([0, 1])")], "did not redraw the figure"),
    # A student notebook's check cell (make student) must raise what a stub raises; Run All goes on past it.
    "student_check_raises_the_stub_error": ("No math.", [
        ("raise NotImplementedError('my_fn: exercise 1')", STUDENT_CHECK), "2 + 2"], None),
    "student_check_passes_on_a_stub": ("No math.", [("1 + 1", STUDENT_CHECK)], "did not raise"),
    "student_check_raises_something_else": ("No math.", [("raise NameError('x')", STUDENT_CHECK)], "unrelated"),
}


def _write(folder, name, markdown, sources):
    notebook = nbformat.v4.new_notebook()
    notebook.metadata.kernelspec = {"name": "python3", "display_name": "Python 3", "language": "python"}
    cells = [(s, {}) if isinstance(s, str) else s for s in sources]  # a source, or (source, metadata)
    notebook.cells = [nbformat.v4.new_markdown_cell(markdown)] + [nbformat.v4.new_code_cell(s, metadata=m)
                                                                  for s, m in cells]
    path = folder / f"selftest_{name}.ipynb"
    nbformat.write(notebook, path)
    return path


@pytest.mark.parametrize("name", list(BROKEN))
def test_a_deliberate_break_is_reported(name, lab, page, artifacts):
    markdown, sources, expected = BROKEN[name]
    path = _write(lab.root, name, markdown, sources)
    problems = labdriver.notebook_problems(page, lab, path.name, artifacts, run_timeout=120, widget_timeout=10)
    if expected is None:
        assert not problems, problems
    else:
        assert any(expected in problem for problem in problems), f"expected {expected!r} in {problems}"


# The bar of the browser test, on a real chapter: a scratch copy of chapter 00 (the quickest) with a
# LaTeX typo in its first formula and a widget whose callback raises once a control moves.
CHAPTER = REPO / "chapters" / "00_welcome.ipynb"
FORMULA = re.compile(r"\$[^$]+\$")  # inline $...$ (or the inside of a $$...$$ display)
TEX_COMMAND = re.compile(r"\\[A-Za-z]+")
WIDGET_BREAK = """\
    _draws.append(1)
    if len(_draws) > 1:  # a deliberate break: the first draw works, moving a control raises
        raise ValueError("deliberate break in the widget callback")
"""


def _break_chapter(source: Path, target: Path) -> tuple[str, str]:
    """Write ``target``: ``source`` with both breaks; returns the misspelt TeX command and the draw function."""
    notebook = nbformat.read(source, as_version=4)
    formulas = ((cell, match) for cell in notebook.cells if cell.cell_type == "markdown"
                for match in FORMULA.finditer(cell.source) if TEX_COMMAND.search(match.group()))
    markdown, formula = next(formulas)
    command = TEX_COMMAND.search(formula.group()).group()
    markdown.source = (markdown.source[:formula.start()] + formula.group().replace(command, command + "x", 1)
                       + markdown.source[formula.end():])
    widget = next(cell for cell in notebook.cells if cell.cell_type == "code" and "interactive_figure(" in cell.source
                  and re.search(r"^def \w+\(ax", cell.source, re.M))
    definition = re.search(r"^def (\w+)\(ax.*:\n", widget.source, re.M)
    widget.source = ("_draws = []\n" + widget.source[:definition.end()] + WIDGET_BREAK
                     + widget.source[definition.end():])
    nbformat.write(notebook, target)
    return command + "x", definition.group(1)


def test_a_chapter_with_a_latex_typo_and_a_broken_widget_fails(lab, page, artifacts):
    typo, draw = _break_chapter(CHAPTER, lab.root / "scratch_00_welcome_broken.ipynb")
    problems = labdriver.notebook_problems(page, lab, "scratch_00_welcome_broken.ipynb", artifacts, run_timeout=300)
    assert any(f"undefined TeX command {typo!r}" in problem for problem in problems), problems
    assert any("raised ValueError: deliberate break in the widget callback" in problem for problem in problems), (
        f"the broken {draw}() was not reported: {problems}")
    assert len(problems) == 2, f"only the two breaks should be reported: {problems}"
