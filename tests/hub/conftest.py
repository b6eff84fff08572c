"""The hub test starts a JupyterHub, creates two accounts and runs their servers: `make test-hub` only (root)."""
import os

import pytest


def pytest_collection_modifyitems(config, items):
    if os.environ.get("COURSE_HUB_TESTS") == "1":
        return
    skip = pytest.mark.skip(reason="the hub test runs with `make test-hub` (COURSE_HUB_TESTS=1, as root)")
    for item in items:
        if "tests/hub/" in str(item.fspath).replace(os.sep, "/"):
            item.add_marker(skip)
