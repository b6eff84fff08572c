"""course_lib.core.runtime: device(), seed_everything(), use_profile_threads()."""
import random

import numpy as np
import pytest
import torch

import course_lib
from course_lib.core.runtime import device, seed_everything, use_profile_threads


def test_device_here():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    if expected == "cpu" and getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        expected = "mps"
    dev = device()
    assert isinstance(dev, torch.device) and dev.type == expected
    assert torch.zeros(2, device=dev).device.type == expected


def test_device_is_cpu_without_accelerators(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    if getattr(torch.backends, "mps", None) is not None:
        monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert device() == torch.device("cpu")


def test_device_prefers_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert device() == torch.device("cuda")


def test_device_uses_mps_when_no_cuda(monkeypatch):
    if getattr(torch.backends, "mps", None) is None:
        pytest.skip("this torch has no torch.backends.mps")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert device() == torch.device("mps")


def _draws():
    return random.random(), np.random.rand(3).tolist(), torch.rand(3).tolist()


def test_seed_everything_reproduces_random_numpy_and_torch():
    seed_everything(123)
    first = _draws()
    seed_everything(123)
    assert _draws() == first
    seed_everything(124)
    assert _draws() != first


def test_seed_everything_returns_a_seeded_generator():
    g = seed_everything(7)
    assert isinstance(g, torch.Generator)
    assert g.initial_seed() == 7
    a = torch.rand(4, generator=g)
    b = torch.rand(4, generator=seed_everything(7))
    assert torch.equal(a, b)
    assert torch.equal(torch.rand(4, generator=seed_everything(7)), torch.rand(4, generator=torch.Generator().manual_seed(7)))


def test_seed_everything_generator_is_independent_of_global_stream():
    g = seed_everything(5)
    expected = torch.rand(3, generator=torch.Generator().manual_seed(5))
    torch.rand(100)  # consuming the global stream does not move the returned generator
    assert torch.equal(torch.rand(3, generator=g), expected)


def test_seed_everything_default_seed_is_zero():
    g = seed_everything()
    assert g.initial_seed() == 0
    assert torch.initial_seed() == 0


@pytest.mark.parametrize("seed", [0, 1, 2**32 - 1, np.int64(42), np.uint32(9)])
def test_seed_everything_accepts_valid_seeds(seed):
    g = seed_everything(seed)
    assert g.initial_seed() == int(seed)
    assert torch.initial_seed() == int(seed)


@pytest.mark.parametrize("seed", [1.0, 0.5, "3", None, True, False, np.float64(2.0), [1]])
def test_seed_everything_rejects_non_int(seed):
    with pytest.raises(TypeError, match="seed must be an int"):
        seed_everything(seed)


@pytest.mark.parametrize("seed", [-1, 2**32, 2**40, np.int64(-5)])
def test_seed_everything_rejects_out_of_range(seed):
    with pytest.raises(ValueError, match=r"\[0, 2\*\*32\)"):
        seed_everything(seed)


@pytest.fixture
def restore_threads():
    before = torch.get_num_threads()
    yield before
    torch.set_num_threads(before)


def test_use_profile_threads_ci_sets_one_thread(monkeypatch, restore_threads):
    monkeypatch.setenv("COURSE_PROFILE", "ci")
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    torch.set_num_threads(2)
    assert use_profile_threads() == 1
    assert torch.get_num_threads() == 1


def test_use_profile_threads_respects_omp_num_threads(monkeypatch, restore_threads):
    monkeypatch.setenv("COURSE_PROFILE", "ci")
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    torch.set_num_threads(2)
    assert use_profile_threads() == 2
    assert torch.get_num_threads() == 2


@pytest.mark.parametrize("name", ["cpu", "gpu"])
def test_use_profile_threads_other_profiles_change_nothing(monkeypatch, restore_threads, name):
    monkeypatch.setenv("COURSE_PROFILE", name)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    torch.set_num_threads(2)
    assert use_profile_threads() == 2
    assert torch.get_num_threads() == 2


def test_use_profile_threads_bad_profile_raises(monkeypatch, restore_threads):
    monkeypatch.setenv("COURSE_PROFILE", "nope")
    with pytest.raises(ValueError, match="ci, cpu, gpu"):
        use_profile_threads()


def test_package_exports_runtime():
    assert course_lib.device is device
    assert course_lib.seed_everything is seed_everything
    assert course_lib.use_profile_threads is use_profile_threads
    assert course_lib.__version__


@pytest.mark.parametrize("value, message", [("gpu", "not a device name.*'cuda'"), ("GPU:0", "not a device name"),
                                            (3, "must be a torch.device")])
def test_as_device_names_what_is_wrong(value, message):
    from course_lib.core.runtime import as_device
    with pytest.raises((ValueError, TypeError), match=message):
        as_device(value)


def test_as_device_accepts_real_devices(monkeypatch):
    from course_lib.core.runtime import as_device
    assert as_device(None) is None and as_device("CPU") == torch.device("cpu")
    assert as_device(torch.device("cpu")) == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="no CUDA GPU here.*course_lib.device()"):
        as_device("cuda:0")
