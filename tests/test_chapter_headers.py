"""Every chapter opens with goals, prerequisites, a time plan and a "What runs, and how long" table whose
times are the last measured run (kept in the notebook metadata by `make time`), and ends with 3-5
discussion questions; the README's chapter table shows the same times. Nothing here runs a chapter."""
import datetime
import re
from pathlib import Path

import jupytext
import nbformat
import pytest

from course_lib.tools.timing import (duration, last_cell, measured_cell, readme_chapter_rows, readme_column, table_row,
                                     with_last_cell)

ROOT = Path(__file__).resolve().parents[1]
SOURCES = sorted((ROOT / "chapters").glob("[0-9][0-9]_*.py"))
MEASURED = ("ci", "cpu")  # measured on every machine; gpu only where there is one
CI_BUDGET_SECONDS = 60  # per chapter under `ci` on 2 cores: the whole suite must fit in 15 minutes
HISTORY = re.compile(r"\b(?:earlier|previous|last) (?:session|run|version)\b|\bnbconvert\b", re.I)


def _remeasure(source, profile):
    return f"run `make time PROFILE={profile} CHAPTERS=chapters/{source.name}` (it rewrites the table, the metadata and the README)"


@pytest.fixture(scope="module", params=SOURCES, ids=lambda p: p.stem)
def chapter(request):
    source = request.param
    return source, jupytext.read(source), nbformat.read(source.with_suffix(".ipynb"), as_version=4)


def _header(notebook):
    return next(cell.source for cell in notebook.cells if cell.cell_type == "markdown")


def test_header_has_goals_prerequisites_time_and_table(chapter):
    source, notebook, _ = chapter
    header = _header(notebook)
    for part in ("**Goals.**", "**Prerequisites.**", "**Time.**", "**What runs, and how long**"):
        assert part in header, f"{source.name}: the first markdown cell has no {part} (copy the header of 08_vae.py)"
    assert re.search(r"^\| profile \|.*\| measured \|$", header, re.M), f"{source.name}: the table needs a 'measured' column"
    for profile in ("ci", "cpu", "gpu"):
        assert table_row(header, profile), f"{source.name}: the 'What runs, and how long' table has no `{profile}` row"


def test_metadata_has_the_measured_times(chapter):
    source, notebook, paired = chapter
    times = notebook.metadata.get("course", {}).get("time_on_cpu", {})
    assert paired.metadata.get("course") == notebook.metadata.get("course"), (
        f"{source.with_suffix('.ipynb').name}'s metadata differs from {source.name}'s header: run `make sync`")
    for profile in MEASURED:
        entry = times.get(profile)
        assert entry, f"{source.name} has never been timed under `{profile}`: {_remeasure(source, profile)}"
        assert isinstance(entry.get("seconds"), int) and entry["seconds"] > 0, f"{source.name} {profile}: {entry}"
        assert datetime.date.fromisoformat(entry["measured"]) <= datetime.date.today(), f"{source.name} {profile}: {entry}"
        assert isinstance(entry.get("machine"), str) and entry["machine"], f"{source.name} {profile}: no machine in {entry}"
        assert not HISTORY.search(entry["machine"]), (
            f"{source.name} {profile}: the machine says {entry['machine']!r}; a learner cannot know what 'earlier' was. "
            "Describe the machine and its load only")
    assert times["ci"]["seconds"] <= CI_BUDGET_SECONDS, (
        f"{source.name} takes {times['ci']['seconds']} s under `ci`; the budget is {CI_BUDGET_SECONDS} s per chapter "
        "(make the ci profile smaller: fewer steps, fewer samples)")
    gpu = times.get("gpu", {})
    assert isinstance(gpu.get("seconds"), int) or gpu.get("note"), (
        f"{source.name}: the gpu entry must be measured or say why not ({gpu}): {_remeasure(source, 'ci')} adds one")


def test_table_shows_the_measured_times(chapter):
    source, notebook, _ = chapter
    times = notebook.metadata.get("course", {}).get("time_on_cpu", {})
    for profile in ("ci", "cpu", "gpu"):
        if profile not in times:
            continue  # reported by test_metadata_has_the_measured_times
        shown, expected = last_cell(table_row(_header(notebook), profile)), measured_cell(times[profile])
        assert shown == expected, (
            f"{source.name}: the `{profile}` row says {shown!r}, but the last measured run (the notebook metadata) "
            f"gives {expected!r}. Do not edit times by hand: {_remeasure(source, profile)}")


def _outside_code_blocks(markdown):
    inside = False
    for line in markdown.splitlines():
        inside ^= line.startswith("```")
        if not inside and not line.startswith("```"):
            yield line


def test_ends_with_three_to_five_discussion_questions(chapter):
    source, notebook, _ = chapter
    headings = [(i, line) for i, cell in enumerate(notebook.cells) if cell.cell_type == "markdown"
                for line in _outside_code_blocks(cell.source) if line.startswith("#")]
    index, heading = headings[-1]
    assert "Discussion questions" in heading, (
        f"{source.name}: the last section is {heading!r}; end the chapter with a '## X. Discussion questions' section")
    assert all(cell.cell_type == "markdown" for cell in notebook.cells[index:]), (
        f"{source.name}: code after the discussion questions; they close the chapter")
    section = "\n".join(cell.source for cell in notebook.cells[index:]).split(heading, 1)[1]
    numbers = [int(n) for n in re.findall(r"^(\d+)\. ", section, re.M)]
    assert 3 <= len(numbers) <= 5 and numbers == list(range(1, len(numbers) + 1)), (
        f"{source.name}: {len(numbers)} discussion questions numbered {numbers}; the course asks for 3-5, numbered 1, 2, ...")


def test_readme_shows_the_measured_times(chapter):
    source, notebook, _ = chapter
    header, rows = readme_chapter_rows((ROOT / "README.md").read_text())
    number = source.name[:2]
    assert number in rows, f"README.md's '## Chapters' table has no row for {number} ({source.name}); add one"
    assert source.with_suffix(".ipynb").name in rows[number][1], f"README.md's row {number} does not link {source.name}"
    times = notebook.metadata.get("course", {}).get("time_on_cpu", {})
    for profile in MEASURED:
        if profile in times:
            shown, expected = rows[number][readme_column(header, profile)], duration(times[profile]["seconds"])
            assert shown == expected, (
                f"README.md row {number}: `{profile}` says {shown!r}, the last measured run {expected!r}: "
                f"{_remeasure(source, profile)}")


def test_duration_format():
    assert [duration(s) for s in (0, 42, 59.4, 60, 304, 3599, 3600, 3720)] == [
        "0 s", "42 s", "59 s", "1 min", "5 min 4 s", "59 min 59 s", "1 h", "1 h 2 min"]
    with pytest.raises(ValueError):
        duration(None)


def test_measured_cell_and_row_rewrite():
    entry = {"seconds": 304, "measured": "2026-11-23", "machine": "2 CPU cores, no GPU, shared with other jobs"}
    assert measured_cell(entry) == "5 min 4 s, measured 2026-11-23 on 2 CPU cores, no GPU, shared with other jobs"
    assert measured_cell({"seconds": None, "note": "no GPU here"}) == "not measured: no GPU here"
    row = "| `cpu` | the VAE, $x \\mid z$ | 5 min |"
    assert last_cell(with_last_cell(row, "42 s")) == "42 s" and with_last_cell(row, "42 s").startswith("| `cpu` | the VAE")


def test_keep_writes_the_executed_copy_and_leaves_the_notebook_alone(tmp_path):
    from course_lib.tools.timing import run_chapter
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("import os\nprint(os.environ['COURSE_PROFILE'])")])
    source = tmp_path / "99_tiny.ipynb"
    nbformat.write(notebook, source)
    before = source.read_text()
    seconds = run_chapter(source, "ci", keep=tmp_path / "executed")
    assert seconds > 0 and source.read_text() == before
    executed = nbformat.read(tmp_path / "executed" / "99_tiny.ipynb", as_version=4)
    assert executed.cells[0].outputs[0]["text"].strip() == "ci"
