# The course's JupyterHub for a study group on one shared machine: `make hub` (README, "A shared JupyterHub").
#
# - Who may log in: the machine's accounts in the group `course-learners` (learners) and `course-leaders` (leaders,
#   who also get the admin page), with their own passwords, checked by PAM: JupyterHub's default authenticator.
#   The leader creates the accounts with `make hub-users USERS="ana ben ..."` (course_lib/tools/hub/users.py).
# - What each learner gets: their own JupyterLab, run as their own account (LocalProcessSpawner), so the operating
#   system keeps every learner out of every other learner's files (homes are mode 700); the course's .venv as the
#   kernel; their own copy of the student notebooks in ~/course/ (written once, never overwritten: their work); the
#   chapters, read-only, in ~/course/chapters-read-only (a link to COURSE_HUB_HOME/chapters).
# - Idle servers are stopped after COURSE_HUB_IDLE_MINUTES (jupyterhub-idle-culler), and each learner's torch gets
#   COURSE_HUB_THREADS threads (default: the cores divided by COURSE_HUB_EXPECTED_USERS, at least 1), so ten kernels
#   on one machine share its cores instead of each taking all of them.
#
# Settings come from the environment (the Makefile passes them): COURSE_HUB_HOME (/opt/course-hub: the hub's venv
# with the course installed, configurable-http-proxy, the student notebooks, the chapters), COURSE_HUB_IP (127.0.0.1;
# 0.0.0.0 to serve a room),
# COURSE_HUB_PORT (8000), COURSE_HUB_STATE (where the hub keeps its database and secrets), COURSE_PROFILE for the
# learners' kernels (cpu).
import os
import shutil
import sys
from pathlib import Path

HOME = Path(os.environ.get("COURSE_HUB_HOME", "/opt/course-hub"))  # make hub-install and make hub-course fill it
STATE = Path(os.environ.get("COURSE_HUB_STATE", HOME / "state"))  # the hub's database and secrets (root only)
STUDENT_NOTEBOOKS = HOME / "student"  # what each learner gets a copy of
CHAPTERS = HOME / "chapters"  # the chapters, read-only for learners
CORES = os.cpu_count() or 1
EXPECTED_USERS = int(os.environ.get("COURSE_HUB_EXPECTED_USERS", "10"))
THREADS = int(os.environ.get("COURSE_HUB_THREADS", max(1, CORES // EXPECTED_USERS)))
IDLE_MINUTES = int(os.environ.get("COURSE_HUB_IDLE_MINUTES", "60"))

c = get_config()  # noqa: F821 (JupyterHub defines it)

c.JupyterHub.ip = os.environ.get("COURSE_HUB_IP", "127.0.0.1")
c.JupyterHub.port = int(os.environ.get("COURSE_HUB_PORT", "8000"))
c.JupyterHub.hub_port = int(os.environ.get("COURSE_HUB_API_PORT", "8081"))
c.JupyterHub.db_url = f"sqlite:///{STATE / 'jupyterhub.sqlite'}"
c.JupyterHub.cookie_secret_file = str(STATE / "jupyterhub_cookie_secret")
c.ConfigurableHTTPProxy.pid_file = str(STATE / "jupyterhub-proxy.pid")
c.ConfigurableHTTPProxy.command = [str(HOME / "node_modules" / ".bin" / "configurable-http-proxy")]
c.ConfigurableHTTPProxy.api_url = f"http://127.0.0.1:{int(os.environ.get('COURSE_HUB_PROXY_API_PORT', '8001'))}"

c.JupyterHub.authenticator_class = "pam"
c.PAMAuthenticator.allowed_groups = {"course-learners", "course-leaders"}
c.PAMAuthenticator.admin_groups = {"course-leaders"}
c.JupyterHub.admin_access = False  # a leader sees who runs what, not inside a learner's server

c.JupyterHub.spawner_class = "localprocess"  # each server as its learner's own account
c.Spawner.cmd = [str(HOME / "venv" / "bin" / "jupyterhub-singleuser")]  # the course installed for everyone
c.Spawner.default_url = "/lab/tree/course"
c.Spawner.notebook_dir = "~"
c.Spawner.environment = {"COURSE_PROFILE": os.environ.get("COURSE_HUB_PROFILE", "cpu"),
                         "OMP_NUM_THREADS": str(THREADS), "MKL_NUM_THREADS": str(THREADS)}
c.Spawner.start_timeout = 120
c.Spawner.http_timeout = 120


def give_the_learner_the_course(spawner):
    """Before a learner's server starts: ~/course/ with their own student notebooks (never overwritten) and a
    read-only view of the chapters. Runs as root in the hub; files are handed to the learner's account."""
    import pwd

    account = pwd.getpwnam(spawner.user.name)
    home = Path(account.pw_dir)
    home.chmod(0o700)  # nobody else reads a learner's work
    course = home / "course"
    course.mkdir(exist_ok=True)
    os.chown(course, account.pw_uid, account.pw_gid)
    for notebook in sorted(STUDENT_NOTEBOOKS.glob("[0-9][0-9]_*.ipynb")):
        mine = course / notebook.name
        if not mine.exists():  # a learner's notebook is theirs: never replaced
            shutil.copyfile(notebook, mine)
            os.chown(mine, account.pw_uid, account.pw_gid)
    link = course / "chapters-read-only"
    if not link.is_symlink():
        link.symlink_to(CHAPTERS)


c.Spawner.pre_spawn_hook = give_the_learner_the_course

c.JupyterHub.load_roles = [{
    "name": "idle-culler",
    "scopes": ["list:users", "read:users:activity", "read:servers", "delete:servers"],
    "services": ["idle-culler"],
}]
c.JupyterHub.services = [{
    "name": "idle-culler",
    "command": [sys.executable, "-m", "jupyterhub_idle_culler", f"--timeout={IDLE_MINUTES * 60}"],
}]
