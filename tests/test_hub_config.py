"""The study group's hub configuration, read without starting a hub (that is tests/hub/, `make test-hub`)."""
from pathlib import Path

import pytest
from traitlets.config import Config

from course_lib.tools.hub import users

CONFIG = Path(__file__).resolve().parents[1] / "course_lib" / "tools" / "hub" / "jupyterhub_config.py"


def _load(monkeypatch, **env) -> Config:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    c = Config()
    exec(compile(CONFIG.read_text(), str(CONFIG), "exec"), {"get_config": lambda: c, "__file__": str(CONFIG)})
    return c


def test_learners_log_in_with_their_own_accounts_and_run_as_themselves(monkeypatch):
    c = _load(monkeypatch)
    assert c.JupyterHub.authenticator_class == "pam" and c.JupyterHub.spawner_class == "localprocess"
    assert c.PAMAuthenticator.allowed_groups == {users.LEARNERS, users.LEADERS}
    assert c.PAMAuthenticator.admin_groups == {users.LEADERS} and c.JupyterHub.admin_access is False
    assert c.JupyterHub.ip == "127.0.0.1"  # a room is opened on purpose, with COURSE_HUB_IP=0.0.0.0
    assert any("jupyterhub_idle_culler" in " ".join(s["command"]) for s in c.JupyterHub.services)


def test_threads_are_shared_between_the_expected_learners(monkeypatch):
    monkeypatch.setattr("os.cpu_count", lambda: 16)
    assert _load(monkeypatch, COURSE_HUB_EXPECTED_USERS="10").Spawner.environment["OMP_NUM_THREADS"] == "1"
    assert _load(monkeypatch, COURSE_HUB_EXPECTED_USERS="4").Spawner.environment["OMP_NUM_THREADS"] == "4"
    assert _load(monkeypatch, COURSE_HUB_EXPECTED_USERS="40").Spawner.environment["OMP_NUM_THREADS"] == "1"


def test_account_names_are_checked_before_anything_is_created():
    users.check_names(["ana", "ben-2", "c_o"])
    with pytest.raises(ValueError, match="not usable as account names"):
        users.check_names(["Ana", "ben; rm -rf /", "-x"])
