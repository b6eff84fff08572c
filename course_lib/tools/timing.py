"""``python -m course_lib.tools.timing``: how long each chapter takes, top to bottom, under a run profile.

    python -m course_lib.tools.timing --profile ci                        # every chapter
    python -m course_lib.tools.timing --profile cpu chapters/08_vae.py   # one chapter (.py or .ipynb)
    make time PROFILE=cpu CHAPTERS=chapters/08_vae.ipynb

Each chapter's notebook runs on a fresh kernel (working directory ``chapters/``, ``COURSE_PROFILE``
set, ``OMP_WAIT_POLICY=PASSIVE``); the executed copy stays in memory, so the committed notebook is
never written. A cell that fails stops everything and nothing is recorded for that chapter.

The measured run is recorded in the chapter's notebook metadata, key
``course.time_on_cpu.<profile>`` = ``{"seconds", "measured", "machine"}``: in the jupytext header of
``chapters/NN_slug.py``, then in the paired ``.ipynb`` (with ``make sync``'s two commands). The
chapter's "What runs, and how long" row for that profile and its row in the README's chapter table
are rewritten from it, and ``tests/test_chapter_headers.py`` checks that every time shown is the
one recorded. Where there is no GPU, the ``gpu`` entry says why it was not measured.
"""
from __future__ import annotations

import argparse
import datetime
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
CHAPTERS = ROOT / "chapters"
README = ROOT / "README.md"
PROFILES = ("ci", "cpu", "gpu")
CELL_TIMEOUT_S = 1800
NO_GPU = {"seconds": None, "note": "no GPU where the course was timed"}


# ---------------------------------------------------------------- formatting (the tests use these too)

def duration(seconds: float) -> str:
    """A wall time as the course writes it: ``'42 s'``, ``'5 min 4 s'``, ``'1 h 2 min'``."""
    if seconds is None or seconds < 0:
        raise ValueError(f"duration() needs a number of seconds >= 0, got {seconds!r}")
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        minutes, rest = divmod(seconds, 60)
        return f"{minutes} min {rest} s" if rest else f"{minutes} min"
    hours, minutes = divmod(round(seconds / 60), 60)
    return f"{hours} h {minutes} min" if minutes else f"{hours} h"


def measured_cell(entry: dict) -> str:
    """The "measured" cell of a chapter's table row, written from one ``time_on_cpu`` entry."""
    if entry.get("seconds") is not None:
        return f"{duration(entry['seconds'])}, measured {entry['measured']} on {entry['machine']}"
    if entry.get("same_as"):
        return f"the `{entry['same_as']}` time: {entry['note']}"
    return f"not measured: {entry['note']}"


def chapter_times(notebook) -> dict:
    """``{profile: entry}`` from a notebook's metadata (``course.time_on_cpu``); empty if never timed."""
    return dict(notebook.metadata.get("course", {}).get("time_on_cpu", {}))


def table_row(markdown: str, profile: str) -> str | None:
    """The line of the "What runs, and how long" table for ``profile`` in ``markdown``, or None."""
    rows = [line for line in markdown.splitlines() if line.lstrip("# ").startswith(f"| `{profile}` |")]
    return rows[0] if rows else None


def last_cell(row: str) -> str:
    """The text of a markdown table row's last cell."""
    return row.rstrip().rstrip("|").rpartition("|")[2].strip()


def with_last_cell(row: str, text: str) -> str:
    """``row`` with its last cell replaced by ``text``."""
    return row.rstrip().rstrip("|").rpartition("|")[0] + f"| {text} |"


def readme_chapter_rows(readme_text: str) -> tuple[list[str], dict[str, list[str]]]:
    """The README's "## Chapters" table: its column names and ``{"08": [cells...]}`` per chapter."""
    section = readme_text.split("\n## Chapters\n", 1)[1].split("\n## ", 1)[0]
    rows = [_cells(line) for line in section.splitlines() if line.startswith("|") and not line.startswith("|---")]
    return rows[0], {cells[0]: cells for cells in rows[1:]}


def readme_column(header: list[str], profile: str) -> int:
    """Which column of the README's chapter table holds ``profile``'s time."""
    return next(i for i, name in enumerate(header) if name.startswith(f"`{profile}`"))


def _cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


# ---------------------------------------------------------------- measuring

def this_machine() -> str:
    """What runs it, in words: ``'2 CPU cores, no GPU, shared with other jobs'``."""
    import torch
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU"
    busy = "shared with other jobs" if cpu_busy() > 0.2 else "otherwise idle"
    return f"{os.cpu_count()} CPU cores, {gpu}, {busy}"


def cpu_busy(seconds: float = 2.0) -> float:
    """The fraction of all cores busy over the next ``seconds`` (Linux), else the 1-minute load per core.

    Not the load average alone: just after one chapter, it still counts that chapter's own kernel.
    """
    def idle_and_total():
        values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        return values[3] + values[4], sum(values)  # idle + iowait, all
    try:
        idle0, total0 = idle_and_total()
        time.sleep(seconds)
        idle1, total1 = idle_and_total()
    except OSError:
        return os.getloadavg()[0] / os.cpu_count()
    return 1 - (idle1 - idle0) / max(total1 - total0, 1)


def run_chapter(notebook_path: Path, profile: str, keep: Path | None = None) -> float:
    """Run a chapter's notebook top to bottom on a fresh kernel under ``profile``; its wall seconds.

    The kernel starts in the notebook's folder with ``COURSE_PROFILE=profile``. The notebook file is
    only read; with ``keep`` (a folder) the executed copy, outputs included, is written there under the
    same name (e.g. to read the numbers a profile prints, or to present a chapter already run).
    Raises nbclient's ``CellExecutionError`` (with the traceback) if a cell fails.
    """
    import nbformat
    from nbclient import NotebookClient
    from tqdm.auto import tqdm

    notebook = nbformat.read(notebook_path, as_version=4)
    code_cells = sum(cell.cell_type == "code" for cell in notebook.cells)
    env = {**os.environ, "COURSE_PROFILE": profile, "OMP_WAIT_POLICY": "PASSIVE"}
    with tqdm(total=code_cells, desc=f"{notebook_path.stem} [{profile}]", unit="cell") as bar:
        client = NotebookClient(notebook, timeout=CELL_TIMEOUT_S, kernel_name="python3",
                                resources={"metadata": {"path": str(notebook_path.parent)}},
                                on_cell_executed=lambda **_: bar.update())
        start = time.perf_counter()
        client.execute(env=env)
        seconds = time.perf_counter() - start
    if keep is not None:
        from course_lib.tools.student import write_notebook_atomically
        Path(keep).mkdir(parents=True, exist_ok=True)
        write_notebook_atomically(notebook, Path(keep) / notebook_path.name)
    return seconds


# ---------------------------------------------------------------- recording

def record(source: Path, profile: str, entry: dict, readme: Path = README, sync: bool = True) -> None:
    """Write ``entry`` as ``course.time_on_cpu.<profile>`` of chapter ``source`` (its .py), rewrite the
    chapter's table row and README row for ``profile`` from it, and regenerate the paired .ipynb."""
    text = source.read_text()
    text = _with_time_in_header(text, profile, entry)
    times = _header_times(text)
    for name in (profile, "gpu") if profile != "gpu" else (profile,):
        row = table_row(_first_markdown_cell(text), name)
        text = text.replace(row, with_last_cell(row, measured_cell(times[name])), 1)
    source.write_text(text)
    if sync:
        _sync_notebook(source)
    if entry.get("seconds") is not None:
        _update_readme(readme, source.name[:2], profile, duration(entry["seconds"]))


def _header_lines(text: str) -> tuple[int, int, list[str]]:
    lines = text.split("\n")
    if lines[0] != "# ---":
        raise ValueError("the chapter does not start with a jupytext header ('# ---'); copy the one of chapters/08_vae.py")
    end = lines.index("# ---", 1)
    return 1, end, lines


def _header_times(text: str) -> dict:
    start, end, lines = _header_lines(text)
    header = yaml.safe_load("\n".join(line[2:] for line in lines[start:end]))
    return header["jupyter"].get("course", {}).get("time_on_cpu", {})


def _with_time_in_header(text: str, profile: str, entry: dict) -> str:
    """The .py text with ``entry`` under ``jupyter: course: time_on_cpu: <profile>`` in its YAML header."""
    start, end, lines = _header_lines(text)
    header = yaml.safe_load("\n".join(line[2:] for line in lines[start:end]))
    notebook = header["jupyter"]
    notebook["jupytext"]["notebook_metadata_filter"] = "course"  # jupytext keeps this key in both files
    times = notebook.setdefault("course", {}).setdefault("time_on_cpu", {})
    times[profile] = entry
    times.setdefault("gpu", dict(NO_GPU))
    dumped = yaml.safe_dump(header, default_flow_style=False, sort_keys=True, allow_unicode=True, width=10_000)
    return "\n".join(lines[:start] + ["# " + line for line in dumped.rstrip("\n").split("\n")] + lines[end:])


def _first_markdown_cell(text: str) -> str:
    start = text.index("# %% [markdown]")
    end = text.find("\n# %%", start + 1)
    return text[start:end if end >= 0 else None]


def _sync_notebook(source: Path) -> None:
    """What ``make sync`` does, for one chapter."""
    bin_dir = Path(sys.executable).parent
    notebook = source.with_suffix(".ipynb")
    subprocess.run([bin_dir / "jupytext", "--quiet", "--update", "--to", "ipynb", source], check=True)
    subprocess.run([bin_dir / "jupyter", "nbconvert", "--log-level=WARN", "--clear-output", "--inplace", notebook],
                   check=True)


def _update_readme(readme: Path, number: str, profile: str, time_text: str) -> None:
    if not readme.exists():
        return
    text = readme.read_text()
    header, rows = readme_chapter_rows(text)
    if number not in rows or not any(name.startswith(f"`{profile}`") for name in header):
        print(f"note: {readme.name}'s chapter table has no row for {number} or no `{profile}` column; add it by hand")
        return
    column = readme_column(header, profile)
    old_cells = rows[number]
    new_cells = old_cells[:column] + [time_text] + old_cells[column + 1:]
    old_line = next(line for line in text.split("\n") if line.startswith("|") and _cells(line) == old_cells)
    readme.write_text(text.replace(old_line, "| " + " | ".join(new_cells) + " |", 1))


def resolve(chapter: str) -> Path:
    """``chapters/08_vae.ipynb``, ``chapters/08_vae.py`` or ``08`` -> the chapter's .py source."""
    path = Path(chapter)
    if re.fullmatch(r"\d\d", chapter):
        matches = sorted(CHAPTERS.glob(f"{chapter}_*.py"))
        if not matches:
            raise SystemExit(f"no chapter {chapter} in {CHAPTERS}")
        path = matches[0]
    source = (path if path.is_absolute() else Path.cwd() / path).with_suffix(".py")
    if not source.exists() or not source.with_suffix(".ipynb").exists():
        raise SystemExit(f"{chapter}: need both {source.name} and its .ipynb (run `make sync`)")
    return source


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m course_lib.tools.timing", description=__doc__.splitlines()[0])
    parser.add_argument("chapters", nargs="*", help="chapter files or numbers (default: every chapter)")
    parser.add_argument("--profile", choices=PROFILES, default="ci")
    parser.add_argument("--machine", help="what ran it, in words (default: cores, GPU, load from this machine)")
    parser.add_argument("--keep", type=Path, metavar="DIR",
                        help="also write each executed notebook, with its outputs, to DIR (never to chapters/)")
    args = parser.parse_args(argv)
    sources = [resolve(c) for c in args.chapters] or sorted(CHAPTERS.glob("[0-9][0-9]_*.py"))
    if args.keep is not None and args.keep.resolve() == CHAPTERS.resolve():
        raise SystemExit("--keep must name another folder: chapters/ holds the notebooks without outputs")
    if args.profile == "gpu":
        import torch
        if not torch.cuda.is_available():
            raise SystemExit("--profile gpu needs a GPU (none here); the gpu rows keep saying why they are not measured")
    for source in sources:  # check every table before spending minutes on a run
        missing = [name for name in PROFILES if table_row(_first_markdown_cell(source.read_text()), name) is None]
        if missing:
            raise SystemExit(f"{source.name}: the 'What runs, and how long' table of its first markdown cell has no "
                             f"row for {missing}; copy the table of chapters/08_vae.py")
    for source in sources:
        machine = args.machine or this_machine()  # before the run: the load without our own kernel
        try:
            seconds = run_chapter(source.with_suffix(".ipynb"), args.profile, keep=args.keep)
        except Exception:
            print(f"\n{source.name} FAILED under COURSE_PROFILE={args.profile}; nothing recorded for it", file=sys.stderr)
            raise
        entry = {"seconds": round(seconds), "measured": datetime.date.today().isoformat(), "machine": machine}
        record(source, args.profile, entry)
        print(f"{source.stem}: {args.profile} {duration(seconds)} ({machine})")


if __name__ == "__main__":
    main()
