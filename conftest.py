"""Repository-wide pytest hook for the student notebooks (see course_lib/tools/student.py).

nbval 0.11 lets a cell tagged ``raises-exception`` raise, but passes it just the same when it does
not raise, whatever it raised. A student notebook's check cell (metadata ``student_check``) must
raise, and raise what its stub raises: otherwise the stub leaks the solution, or the tag hides an
unrelated error. Cells without that metadata (every chapter notebook) are left alone.
"""
import pytest


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    cell = getattr(item, "cell", None)  # nbval's IPyNbCell
    if call.when != "call" or not report.passed or cell is None or "student_check" not in cell.get("metadata", {}):
        return
    from course_lib.tools.student import student_check_problem

    problem = student_check_problem(cell["metadata"], getattr(item, "test_outputs", None))
    if problem:
        report.outcome = "failed"
        report.longrepr = f"{item.nodeid}: {problem}\n\nInput:\n{cell['source']}"
