"""Drive a real JupyterLab in headless Chromium: start the server, open a notebook, run it, look at it.

Used by the browser tests (`make test-browser`). The server runs on 127.0.0.1 with a token, from a
scratch folder that holds a *copy* of the notebooks (autosave is off as well, so nothing is ever
written back into chapters/), and it is stopped by its PID when the tests end, also on failure.

What "looks right" means is in the ``*_problems`` functions: each returns a list of sentences, one per
problem found, so a failing test says what a learner would see.
"""
from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from course_lib.tools.student import CHECK_METADATA, student_check_problem

CHROMIUM = "/usr/bin/chromium"
# Quiet, offline Chromium: without the background-networking flags it keeps trying Google's hosts.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]

# JupyterLab user settings for a test run: every cell in the DOM (no windowing, so widgets and math
# below the fold are rendered), no autosave, no "get notified about Jupyter news?" toast.
LAB_SETTINGS = {
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
    "@jupyterlab/docmanager-extension/plugin.jupyterlab-settings": {"autosave": False},
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {"fetchNews": "false",
                                                                        "checkForUpdates": False},
}

WIDGET_FAILURES = ("Loading widget", "Error displaying widget")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LabServer:
    """``jupyter lab`` serving ``notebooks`` (copied into ``workdir/root``), with its own config and settings."""

    def __init__(self, workdir: Path, notebooks: list[Path], env: dict[str, str]):
        self.workdir = Path(workdir)
        self.root = self.workdir / "root"
        self.port = free_port()
        self.token = secrets.token_hex(16)
        self.process = None
        shutil.rmtree(self.workdir, ignore_errors=True)
        self.root.mkdir(parents=True)
        for notebook in notebooks:
            shutil.copy(notebook, self.root / notebook.name)
        for name, values in LAB_SETTINGS.items():
            path = self.workdir / "settings" / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(values))
        self.env = {**os.environ, **env,
                    "JUPYTER_CONFIG_DIR": str(self.workdir / "config"), "JUPYTER_RUNTIME_DIR": str(self.workdir / "runtime"),
                    "JUPYTERLAB_SETTINGS_DIR": str(self.workdir / "settings"),
                    "JUPYTERLAB_WORKSPACES_DIR": str(self.workdir / "workspaces")}

    def url(self, path: str = "lab") -> str:
        return f"http://127.0.0.1:{self.port}/{path}?token={self.token}"

    def start(self, timeout: float = 90) -> "LabServer":
        command = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={self.port}",
                   f"--ServerApp.token={self.token}", f"--ServerApp.root_dir={self.root}",
                   "--LabApp.expose_app_in_browser=True",  # window.jupyterapp: run commands, read the notebook model
                   "--ServerApp.open_browser=False"]
        if os.geteuid() == 0:
            command.append("--allow-root")
        log = open(self.workdir / "server.log", "w")
        self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=self.env,
                                        start_new_session=True)  # its own process group: kernels go with it
        (self.workdir / "server.pid").write_text(str(self.process.pid))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"jupyter lab exited with code {self.process.returncode}; see {log.name}")
            try:
                with urllib.request.urlopen(self.url("api/status"), timeout=5) as answer:
                    if answer.status == 200:
                        return self
            except OSError:
                time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"jupyter lab did not answer on port {self.port} within {timeout:.0f} s; see {log.name}")

    def stop(self) -> None:
        """Stop the server and its kernels by the server's PID (its process group); wait until they are gone."""
        if self.process is None or self.process.poll() is not None:
            return
        for sig, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, 5)):
            try:
                os.killpg(self.process.pid, sig)
            except ProcessLookupError:
                return
            try:
                self.process.wait(wait)
                return
            except subprocess.TimeoutExpired:
                continue


# --- one notebook in the browser ------------------------------------------------------------------------------

NOTEBOOK = "window.courseNotebook"  # the notebook panel under test, set by open_notebook

OPENED = """name => { const nb = window.jupyterapp && window.jupyterapp.shell.currentWidget;
    if (!(nb && nb.context && nb.context.path === name && nb.context.isReady && nb.sessionContext.session
          && nb.sessionContext.session.kernel && nb.sessionContext.session.kernel.status === 'idle')) return false;
    window.courseNotebook = nb;
    return true; }"""

CODE_CELLS = f"""() => {{ const cells = {NOTEBOOK}.content.widgets; const found = [];
    cells.forEach((cell, index) => {{
        cell.node.setAttribute('data-course-cell', index);  // so that Playwright can find cell i
        if (cell.model.type !== 'code') return;
        const outputs = [];
        for (let j = 0; j < cell.model.outputs.length; j++) {{
            const output = cell.model.outputs.get(j).toJSON();
            outputs.push({{type: output.output_type, ename: output.ename || '', evalue: output.evalue || '',
                           mimes: Object.keys(output.data || {{}})}});
        }}
        found.push({{index, count: cell.model.executionCount, source: cell.model.sharedModel.getSource(),
                     metadata: cell.model.toJSON().metadata || {{}}, outputs, text: cell.outputArea.node.innerText}});
    }});
    return found; }}"""


APP_READY = "() => !!(window.jupyterapp && window.jupyterapp.commands.hasCommand('docmanager:open'))"

CLOSE_ALL = """async () => { const app = window.jupyterapp; if (!app) return 0;
    const open = Array.from(app.shell.widgets('main')).filter(w => w.context && w.sessionContext);
    for (const widget of open) {
        try { await widget.sessionContext.shutdown(); } catch (error) { /* already gone */ }
        widget.context.model.dirty = false;  // closing a notebook that ran asks "save?": it is a scratch copy
        widget.dispose();
    }
    return open.length; }"""


def open_notebook(page, server: LabServer, name: str, timeout: float = 120) -> None:
    """Open ``name`` in the page's JupyterLab, loading JupyterLab first if the page does not show it yet (a load
    takes seconds; opening a notebook in a loaded JupyterLab, as a learner does from the file browser, does not)."""
    if not page.url.startswith(f"http://127.0.0.1:{server.port}/lab") or not page.evaluate(APP_READY):
        page.goto(server.url("lab") + "&reset")  # reset: no tabs restored from an earlier page
        page.wait_for_function(APP_READY, timeout=timeout * 1000, polling=500)
        page.evaluate("async () => { await window.jupyterapp.restored; }")  # the reset closes what opened before
    page.evaluate("name => { window.jupyterapp.commands.execute('docmanager:open', {path: name}); }", name)
    page.wait_for_function(OPENED, arg=name, timeout=timeout * 1000, polling=500)


def close_notebooks(page) -> int:
    """Shut down the kernel of every open notebook and close it; return how many were open."""
    return page.evaluate(CLOSE_ALL)


# Run All's promise resolves at the first cell that raises, also one tagged raises-exception (a student notebook's
# check cell), while the kernel still runs the cells sent after it; and the kernel is idle for a moment between two
# cells. So "finished" means: every code cell has run and the kernel is idle, or the kernel has stayed idle for
# SETTLE_S seconds (then the cells left without a count did not run: an error stopped the kernel's queue).
PROGRESS = f"""() => [{NOTEBOOK}.sessionContext.session.kernel.status,
    {NOTEBOOK}.content.widgets.filter(c => c.model.type === 'code' && c.model.sharedModel.getSource().trim()
                                      && c.model.executionCount === null).length]"""
SETTLE_S = 10.0


def run_all(page, timeout: float) -> None:
    """Run all cells (as Run > Run All Cells does) and wait until the last one has finished."""
    page.evaluate(f"""() => {{ window.courseRunAll = undefined;
        window.jupyterapp.shell.activateById({NOTEBOOK}.id);
        window.jupyterapp.commands.execute('notebook:run-all-cells').then(ok => {{ window.courseRunAll = ok; }}); }}""")
    page.wait_for_function("window.courseRunAll !== undefined", timeout=timeout * 1000, polling=1000)
    deadline, idle_since = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        status, not_run = page.evaluate(PROGRESS)
        if status != "idle":
            idle_since = None
        else:
            idle_since = idle_since or time.monotonic()
            if not_run == 0 or time.monotonic() - idle_since >= SETTLE_S:
                return
        time.sleep(0.5)
    raise TimeoutError(f"the notebook was still running after {timeout:.0f} s")


def code_cells(page) -> list[dict]:
    return page.evaluate(CODE_CELLS)


def output_area(page, cell: dict):
    return page.locator(f'[data-course-cell="{cell["index"]}"] .jp-Cell-outputArea').first


def _where(cell: dict) -> str:
    first_line = next((line for line in cell["source"].splitlines() if line.strip()), "")
    return f"cell {cell['index']} ({first_line[:70]!r})"


def cell_problems(cells: list[dict]) -> list[str]:
    """Errors raised by a cell, and code cells that never ran (Run All stops at the first error).

    A student notebook's check cell (``make student``; tagged ``raises-exception``, so Run All goes on past it) must
    raise what a stub raises, and nothing else: the same rule nbval applies through the repository's conftest.py."""
    problems = []
    for cell in cells:
        if CHECK_METADATA in cell.get("metadata", {}):
            outputs = [{"output_type": o["type"], "ename": o["ename"], "evalue": o["evalue"]} for o in cell["outputs"]]
            problem = student_check_problem(cell["metadata"], outputs)
            if problem:
                problems.append(f"{_where(cell)}: {problem}")
            continue
        for output in cell["outputs"]:
            if output["type"] == "error":
                problems.append(f"{_where(cell)} raised {output['ename']}: {output['evalue'][:300]}")
        if cell["count"] is None and cell["source"].strip():
            problems.append(f"{_where(cell)} did not run")
    return problems


WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


def widget_cells(cells: list[dict]) -> list[dict]:
    return [cell for cell in cells if any(WIDGET_VIEW in output["mimes"] for output in cell["outputs"])]


def widget_problems(page, cells: list[dict]) -> list[str]:
    """Every widget output rendered: no "Loading widget..." left, no "Error displaying widget"."""
    problems = []
    for cell in widget_cells(cells):
        area = output_area(page, cell)
        text = area.inner_text()
        for failure in WIDGET_FAILURES:
            if failure in text:
                line = next(line for line in text.splitlines() if failure in line)
                problems.append(f"{_where(cell)} shows {line.strip()!r}")
        # A widget output with neither a widget nor one of those messages is a widget the kernel closed
        # on purpose (a finished progress bar with leave=False): nothing to draw, nothing wrong.
    return problems


def wait_for_widgets(page, cells: list[dict], timeout: float = 60) -> None:
    """Give the widget manager time to draw every view (it does so after the kernel has gone idle)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        areas = [output_area(page, cell)
                 for cell in widget_cells(cells)]
        if not any("Loading widget" in area.inner_text() for area in areas):
            return
        time.sleep(1)


# Controls a learner moves, in the order we try them inside one widget: a slider (by keyboard, as a
# learner would after clicking it), a dropdown, toggle buttons, a checkbox.
def _move_first_control(page, widget) -> str | None:
    handles = widget.locator(".noUi-handle")
    for i in range(handles.count()):
        handle = handles.nth(i)
        if handle.get_attribute("disabled") is not None or "disabled" in (handle.get_attribute("class") or ""):
            continue
        at_max = handle.get_attribute("aria-valuenow") == handle.get_attribute("aria-valuemax")
        handle.focus()
        page.keyboard.press("ArrowLeft" if at_max else "ArrowRight")
        label = widget.locator(".widget-slider .widget-label").nth(i).inner_text()
        return f"slider {label!r}"
    selects = widget.locator("select:not([disabled])")
    if selects.count():
        select = selects.first
        options = select.locator("option").all_inner_texts()
        current = select.evaluate("s => s.options[s.selectedIndex].text")
        other = next(option for option in options if option != current)
        select.select_option(label=other)
        return f"dropdown -> {other!r}"
    toggles = widget.locator(".widget-toggle-buttons button:not(.mod-active):not([disabled])")
    if toggles.count():
        text = toggles.first.inner_text()
        toggles.first.click()
        return f"toggle button {text!r}"
    boxes = widget.locator("input[type=checkbox]:not([disabled])")
    if boxes.count():
        boxes.first.click()
        return "checkbox"
    return None


def _figures(outputs) -> list[str]:
    """The pictures a widget shows now: the src of every image in its Output areas."""
    return outputs.evaluate_all("nodes => nodes.flatMap(n => [...n.querySelectorAll('img')].map(i => i.src))")


def _raised(outputs) -> str | None:
    """The exception a widget's callback raised, as its traceback's last line shows it in the widget, if any."""
    text = "\n".join(outputs.all_inner_texts())
    if "Traceback (most recent call last)" not in text:
        return None
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return next((line for line in reversed(lines) if re.match(r"^[A-Za-z_.]*(Error|Exception|Interrupt)\b", line)),
                lines[-1])[:300]


def move_widgets(page, cells: list[dict], screenshots: Path | None = None, timeout: float = 60) -> list[str]:
    """Move one control of every widget and check that the figure it drives is drawn again, differently."""
    problems = []
    for cell in widget_cells(cells):
        widget = output_area(page, cell)
        outputs = widget.locator(".widget-output")
        if not outputs.count():
            continue  # a control without a figure of its own
        widget.scroll_into_view_if_needed()
        before = _figures(outputs)
        if screenshots:
            widget.screenshot(path=str(screenshots / f"cell{cell['index']:03d}-widget-before.png"))
        moved = _move_first_control(page, widget)
        if moved is None:
            problems.append(f"{_where(cell)}: a widget with a figure but no control to move")
            continue
        deadline = time.monotonic() + timeout
        raised = redrawn = None
        while time.monotonic() < deadline:
            now = _figures(outputs)
            redrawn = bool(now) and now != before
            raised = None if redrawn else _raised(outputs)
            if redrawn or raised:
                break
            time.sleep(0.5)
        if raised:
            problems.append(f"{_where(cell)}: moving the {moved} raised {raised} (the traceback is in the widget)")
        elif not redrawn:
            problems.append(f"{_where(cell)}: moving the {moved} did not redraw the figure within {timeout:.0f} s, "
                            "or drew the same picture (does the callback raise, see the log console, "
                            "or ignore that control?)")
        else:
            page.wait_for_function(f"{NOTEBOOK}.sessionContext.session.kernel.status === 'idle'", timeout=60_000)
        if screenshots:  # also when it failed: the picture shows what the learner would see
            widget.screenshot(path=str(screenshots / f"cell{cell['index']:03d}-widget-after.png"))
    return problems


MATH_REPORT = f"""() => {{
    const report = {{containers: document.querySelectorAll('.jp-Notebook mjx-container').length,
                     unrendered: 0, errors: [], undefined: [], raw: []}};
    {NOTEBOOK}.content.widgets.forEach((cell, index) => {{
        if (cell.model.type !== 'markdown') return;
        if (!cell.rendered) {{ report.unrendered += 1; return; }}
        const html = cell.node.querySelector('.jp-RenderedMarkdown');
        if (!html) return;
        html.querySelectorAll('mjx-merror, [data-mjx-error]').forEach(e =>
            report.errors.push([index, e.getAttribute('data-mjx-error') || e.textContent]));
        html.querySelectorAll('mjx-assistive-mml mtext[mathcolor="red"]').forEach(e => {{
            if (e.textContent.startsWith('\\\\')) report.undefined.push([index, e.textContent]); }});
        const copy = html.cloneNode(true);
        copy.querySelectorAll('mjx-container, code, pre').forEach(e => e.remove());
        const text = copy.textContent;
        const leftover = text.match(/\\$|\\\\[A-Za-z]+/);
        if (leftover) {{
            const at = leftover.index;
            report.raw.push([index, text.slice(Math.max(0, at - 40), at + 40).replace(/\\s+/g, ' ')]);
        }}
    }});
    return report; }}"""


def math_report(page, settle: float = 1.5, timeout: float = 60) -> dict:
    """MathJax typesets asynchronously: wait until the number of typeset formulas stops changing."""
    deadline = time.monotonic() + timeout
    last = -1
    while time.monotonic() < deadline:
        report = page.evaluate(MATH_REPORT)
        if report["containers"] == last and not report["unrendered"]:
            return report
        last = report["containers"]
        time.sleep(settle)
    return report


def math_problems(report: dict, source_has_math: bool) -> list[str]:
    problems = [f"markdown cell {i}: MathJax error {text!r}" for i, text in report["errors"]]
    problems += [f"markdown cell {i}: undefined TeX command {text!r} (drawn in red)" for i, text in report["undefined"]]
    problems += [f"markdown cell {i}: TeX left as text, not typeset (unbalanced braces or $?): ...{text}..."
                 for i, text in report["raw"]]
    if report["unrendered"]:
        problems.append(f"{report['unrendered']} markdown cell(s) not rendered")
    if source_has_math and not report["containers"]:
        problems.append("the notebook has $...$ math but MathJax typeset nothing")
    return problems


IMAGE_REPORT = f"""() => {{
    const broken = [];
    {NOTEBOOK}.content.widgets.forEach((cell, index) => {{
        cell.node.querySelectorAll('img').forEach(img => {{
            if (img.complete && img.naturalWidth === 0) broken.push([index, (img.getAttribute('src') || '').slice(0, 80)]);
        }});
    }});
    return broken; }}"""


def image_problems(page, settle: float = 1.0, timeout: float = 30) -> list[str]:
    """Images (markdown pictures, figure outputs) that the browser could not show: a missing file, a bad data URI."""
    deadline = time.monotonic() + timeout
    broken = page.evaluate(IMAGE_REPORT)
    while broken and time.monotonic() < deadline:  # an image still loading is not broken yet
        time.sleep(settle)
        broken = page.evaluate(IMAGE_REPORT)
    return [f"cell {i}: broken image {src!r} (the browser cannot show it)" for i, src in broken]


# --- the whole check -------------------------------------------------------------------------------------------

def has_math(notebook_path: Path) -> bool:
    """Whether any markdown cell of the notebook holds ``$`` math (then MathJax must typeset something)."""
    import nbformat
    notebook = nbformat.read(notebook_path, as_version=4)
    return any("$" in cell.source for cell in notebook.cells if cell.cell_type == "markdown")


def notebook_problems(page, server: LabServer, name: str, screenshots: Path, run_timeout: float,
                      widget_timeout: float = 60) -> list[str]:
    """Open ``name`` (a notebook in the server's root), Run All, and say what a learner would see go wrong.

    Checks, in order: no cell raised or was left unrun, every widget drawn, all math typeset, every image shown, and, if
    the notebook ran through, one control of every widget moved redraws its figure. Screenshots:
    ``after-run-all.png`` and each widget before and after the move. The notebook is closed after, its kernel shut
    down.
    """
    open_notebook(page, server, name)
    run_all(page, timeout=run_timeout)
    cells = code_cells(page)
    wait_for_widgets(page, cells, timeout=widget_timeout)
    page.screenshot(path=str(screenshots / "after-run-all.png"))
    problems = cell_problems(cells)
    ran_through = not problems  # moving the widgets of a notebook that stopped early would only repeat that
    problems += widget_problems(page, cells)
    problems += math_problems(math_report(page), has_math(server.root / name))
    problems += image_problems(page)
    if ran_through:
        problems += move_widgets(page, cells, screenshots=screenshots, timeout=widget_timeout)
    close_notebooks(page)
    return problems
