"""Shared test setup for course_lib's unit tests: a headless matplotlib and no leaked state."""
import matplotlib

matplotlib.use("Agg")  # before anything imports pyplot

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402


@pytest.fixture(autouse=True)
def _close_figures_and_keep_threads():
    """Close every pyplot figure after each test and give torch its thread count back."""
    threads = torch.get_num_threads()
    yield
    plt.close("all")
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
