"""Fixtures of the browser tests: one JupyterLab server and one headless Chromium per test process.

These tests are slow (every chapter, run in a real browser), so they run only under `make
test-browser`, which sets COURSE_BROWSER_TESTS=1; a plain `pytest` skips them.
"""
import os
import shutil
from pathlib import Path

import pytest

from labdriver import CHROMIUM, CHROMIUM_ARGS, LabServer

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "artifacts" / "browser"
# Which notebooks to open: the chapters, or another folder (a scratch copy with a deliberate break).
CHAPTER_DIR = Path(os.environ.get("COURSE_BROWSER_CHAPTERS", REPO / "chapters"))
CHAPTERS = sorted(CHAPTER_DIR.glob("[0-9][0-9]_*.ipynb"))


def pytest_collection_modifyitems(config, items):
    if os.environ.get("COURSE_BROWSER_TESTS") == "1":
        return
    skip = pytest.mark.skip(reason="browser tests run with `make test-browser` (COURSE_BROWSER_TESTS=1)")
    for item in items:
        if "tests/browser/" in str(item.fspath).replace(os.sep, "/"):
            item.add_marker(skip)


def _worker() -> str:
    return os.environ.get("PYTEST_XDIST_WORKER", "main")


@pytest.fixture(scope="session")
def lab(tmp_path_factory):
    """A JupyterLab server on 127.0.0.1 over copies of the notebooks, under COURSE_PROFILE=ci."""
    server = LabServer(ARTIFACTS / f"server-{_worker()}", CHAPTERS,
                       env={"COURSE_PROFILE": "ci", "OMP_WAIT_POLICY": "PASSIVE", "OPENBLAS_NUM_THREADS": "1"})
    server.start()
    try:
        yield server
    finally:
        server.stop()  # by its PID, also when a test failed


@pytest.fixture(scope="session")
def chromium():
    playwright_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright (make test-browser does)")
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: `make test-browser` installs Debian's chromium (apt-get install chromium)")
    with playwright_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


_PAGE = {}  # the test process's one page: JupyterLab stays loaded from one notebook to the next


@pytest.fixture
def page(chromium, request):
    """The browser page, with JupyterLab loaded once per test process (open_notebook loads it if needed); after
    each test every notebook is closed and its kernel shut down. On failure a screenshot is kept with the test's
    artefacts, and the next test gets a fresh page."""
    if "page" not in _PAGE:
        _PAGE["context"] = chromium.new_context(viewport={"width": 1400, "height": 1000})
        _PAGE["page"] = _PAGE["context"].new_page()
        _PAGE["page"].set_default_timeout(60_000)
    page = _PAGE["page"]
    yield page
    report = getattr(request.node, "rep_call", None)
    failed = report is not None and report.failed
    if failed:
        folder = ARTIFACTS / request.node.name.replace("/", "_")
        folder.mkdir(parents=True, exist_ok=True)
        try:
            page.screenshot(path=str(folder / "failure.png"))
        except Exception:  # the page may be gone; the test's own message matters more
            pass
    try:
        from labdriver import close_notebooks
        close_notebooks(page)
    except Exception:
        failed = True
    if failed:  # start the next test from a fresh page
        _PAGE.pop("context").close()
        _PAGE.pop("page")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)


@pytest.fixture
def artifacts(request):
    """Folder for this test's screenshots: artifacts/browser/<test name>/ (git-ignored, kept by CI)."""
    folder = ARTIFACTS / request.node.name.replace("/", "_")
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    return folder
