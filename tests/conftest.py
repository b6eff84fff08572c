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


@pytest.fixture
def fake_record(monkeypatch):
    """``fake_record(name, train, resumable=False)``: register a stand-in shipped model ``name`` in
    ``course_lib.zoo.MODELS`` (for this test only) whose ``train`` is ``train``; returns its record."""
    from torch import nn

    from course_lib import zoo

    def register(name, train, resumable=False):
        def training_step(model, entry, precision):
            raise NotImplementedError(f"the fake model {name!r} has no training step to time")

        record = zoo.ShippedModel(name=name, chapter="01", settings=lambda active=None: None, train=train,
                                  build=lambda entry: nn.Linear(2, 2),
                                  evaluate=lambda model, entry, options: zoo.Measurement("fake metric", 0.0),
                                  training_step=training_step, resumable=resumable)
        monkeypatch.setitem(zoo.MODELS, name, record)
        return record
    return register
