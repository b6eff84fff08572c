"""course_lib.core.profiles: profile() and per_profile()."""
import warnings

import pytest
import torch

import course_lib
from course_lib.core import profiles
from course_lib.core.profiles import ENV_VAR, PROFILES, per_profile, profile

TABLE = dict(ci=dict(steps=5, lr=0.1), cpu=dict(steps=50, lr=0.1), gpu=dict(steps=500, lr=0.01))


def test_public_names():
    assert PROFILES == ("ci", "cpu", "gpu")
    assert ENV_VAR == "COURSE_PROFILE"
    assert course_lib.profile is profile and course_lib.per_profile is per_profile
    assert set(course_lib.__all__) >= {"profile", "per_profile", "device", "seed_everything",
                                       "use_profile_threads", "PROFILES"}


def test_unset_is_cpu_without_cuda(monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    assert profile() == ("gpu" if torch.cuda.is_available() else "cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert profile() == "cpu"


def test_unset_is_gpu_with_cuda(monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert profile() == "gpu"


@pytest.mark.parametrize("value", ["", "   "])
def test_empty_is_like_unset(monkeypatch, value):
    monkeypatch.setenv(ENV_VAR, value)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert profile() == "cpu"


@pytest.mark.parametrize("name", PROFILES)
def test_each_valid_value(monkeypatch, name):
    monkeypatch.setenv(ENV_VAR, name)
    assert profile() == name


@pytest.mark.parametrize("value, expected", [("CI", "ci"), (" cpu ", "cpu"), ("Gpu\n", "gpu"), ("\tCPU", "cpu")])
def test_case_and_whitespace_are_ignored(monkeypatch, value, expected):
    monkeypatch.setenv(ENV_VAR, value)
    assert profile() == expected


def test_gpu_profile_can_be_forced_without_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setenv(ENV_VAR, "gpu")
    assert profile() == "gpu"


@pytest.mark.parametrize("value", ["fast", "cuda", "c p u", "ci,cpu", "0"])
def test_invalid_value_names_the_valid_ones(monkeypatch, value):
    monkeypatch.setenv(ENV_VAR, value)
    with pytest.raises(ValueError) as err:
        profile()
    message = str(err.value)
    assert repr(value) in message  # says what was wrong
    assert "ci, cpu, gpu" in message  # and what is allowed
    assert ENV_VAR in message


def test_profile_is_read_on_every_call(monkeypatch):
    monkeypatch.setenv(ENV_VAR, "ci")
    assert profile() == "ci"
    monkeypatch.setenv(ENV_VAR, "gpu")
    assert profile() == "gpu"


@pytest.mark.parametrize("name", PROFILES)
def test_per_profile_picks_the_active_profile(monkeypatch, name):
    monkeypatch.setenv(ENV_VAR, name)
    cfg = per_profile(**TABLE)
    assert cfg.profile == name
    assert cfg.steps == TABLE[name]["steps"] and cfg.lr == TABLE[name]["lr"]


def test_per_profile_active_overrides_the_environment(monkeypatch):
    monkeypatch.setenv(ENV_VAR, "ci")
    cfg = per_profile(**TABLE, active="gpu")
    assert (cfg.profile, cfg.steps) == ("gpu", 500)
    assert per_profile(**TABLE, active="cpu").steps == 50


def test_per_profile_docstring_example():
    assert per_profile(ci=dict(steps=5), cpu=dict(steps=50), gpu=dict(steps=500), active="cpu").steps == 50


def test_per_profile_empty_dicts(monkeypatch):
    cfg = per_profile(ci={}, cpu={}, gpu={}, active="ci")
    assert vars(cfg) == {"profile": "ci"}


def test_per_profile_does_not_share_state_between_calls():
    a = per_profile(**TABLE, active="ci")
    a.steps = 123
    assert per_profile(**TABLE, active="ci").steps == 5
    assert TABLE["ci"]["steps"] == 5


def test_per_profile_bad_active_names_the_valid_ones():
    with pytest.raises(ValueError, match="ci, cpu, gpu") as err:
        per_profile(**TABLE, active="tpu")
    assert "'tpu'" in str(err.value)


def test_per_profile_bad_environment_raises(monkeypatch):
    monkeypatch.setenv(ENV_VAR, "laptop")
    with pytest.raises(ValueError, match="ci, cpu, gpu"):
        per_profile(**TABLE)


@pytest.mark.parametrize("which", ["cpu", "gpu"])
def test_per_profile_missing_key(which):
    table = {k: dict(v) for k, v in TABLE.items()}
    del table[which]["lr"]
    with pytest.raises(ValueError) as err:
        per_profile(**table, active="ci")
    message = str(err.value)
    assert "same keys" in message and "'lr'" in message and which in message


def test_per_profile_extra_key():
    table = {k: dict(v) for k, v in TABLE.items()}
    table["gpu"]["batch_size"] = 128
    with pytest.raises(ValueError, match="batch_size"):
        per_profile(**table, active="gpu")


def test_per_profile_missing_key_in_ci():
    table = {k: dict(v) for k, v in TABLE.items()}
    del table["ci"]["steps"]
    with pytest.raises(ValueError, match="steps"):
        per_profile(**table, active="cpu")


@pytest.mark.parametrize("which", ["cpu", "gpu"])
@pytest.mark.parametrize("bad", [[("steps", 5)], "steps", 5, None])
def test_per_profile_non_dict_is_type_error(which, bad):
    table = dict(TABLE, **{which: bad})
    with pytest.raises(TypeError, match=f"per_profile\\({which}=...\\) must be a dict"):
        per_profile(**table, active="ci")


def test_per_profile_list_for_ci_is_type_error():
    with pytest.raises(TypeError, match=r"per_profile\(ci=...\) must be a dict"):
        per_profile(ci=["steps"], cpu=dict(steps=1), gpu=dict(steps=2), active="cpu")


@pytest.mark.parametrize("bad", [None, 5])
def test_per_profile_non_iterable_ci_gets_the_clear_message(bad):
    with pytest.raises(TypeError, match=r"per_profile\(ci=...\) must be a dict"):
        per_profile(ci=bad, cpu=dict(steps=1), gpu=dict(steps=2), active="cpu")


def test_per_profile_needs_keyword_arguments():
    with pytest.raises(TypeError):
        per_profile(TABLE["ci"], TABLE["cpu"], TABLE["gpu"])  # keyword-only
    with pytest.raises(TypeError):
        per_profile(ci={}, cpu={})  # gpu missing


def test_module_reexports():
    assert profiles.PROFILES is PROFILES


@pytest.mark.parametrize("value", ["gpu", "GPU"])
def test_gpu_profile_without_cuda_warns_once(monkeypatch, value):
    """COURSE_PROFILE=gpu on a machine without CUDA used to be accepted silently: hours of CPU training, unannounced."""
    import course_lib.core.profiles as P
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(P, "_warned_gpu_on_cpu", False)
    monkeypatch.setenv(ENV_VAR, value)
    with pytest.warns(RuntimeWarning, match="no CUDA GPU.*on the CPU"):
        assert profile() == "gpu"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert profile() == "gpu"  # once per process, not at every call
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(P, "_warned_gpu_on_cpu", False)
        assert profile() == "gpu"  # with CUDA: nothing to say
