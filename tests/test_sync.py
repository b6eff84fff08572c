"""Each chapter's jupytext source (chapters/NN_slug.py) and its notebook (.ipynb) hold the same cells,
and the committed notebook has no outputs. Fix a failure with `make sync`."""
from pathlib import Path

import jupytext
import nbformat
import pytest

CHAPTERS = Path(__file__).resolve().parents[1] / "chapters"
SOURCES = sorted(CHAPTERS.glob("[0-9][0-9]_*.py"))


def _cells(notebook):
    return [(cell.cell_type, cell.source.strip(), tuple(cell.metadata.get("tags", ()))) for cell in notebook.cells]


def test_there_are_chapters():
    assert SOURCES, f"no chapters found in {CHAPTERS}"


def test_every_notebook_has_its_source():
    orphans = [p.name for p in CHAPTERS.glob("*.ipynb") if not p.with_suffix(".py").exists()]
    assert not orphans, f"notebooks without a .py source: {orphans}"


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.stem)
def test_notebook_matches_source(source):
    notebook_path = source.with_suffix(".ipynb")
    assert notebook_path.exists(), f"{notebook_path.name} is missing: run `make sync`"
    from_source = jupytext.read(source)
    notebook = nbformat.read(notebook_path, as_version=4)
    assert _cells(notebook) == _cells(from_source), f"{notebook_path.name} is out of sync with {source.name}: run `make sync`"
    assert notebook.metadata.get("jupytext", {}).get("formats") == "ipynb,py:percent", "the notebook is not paired"


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.stem)
def test_notebook_has_no_outputs(source):
    notebook = nbformat.read(source.with_suffix(".ipynb"), as_version=4)
    for index, cell in enumerate(notebook.cells):
        if cell.cell_type == "code":
            assert not cell.outputs and cell.execution_count is None, (
                f"{source.with_suffix('.ipynb').name} cell {index} has stored outputs: run `make sync` "
                "(the committed notebooks carry no outputs)")
    assert "widgets" not in notebook.metadata, "stored widget state in the notebook: run `make sync`"
