"""The study group's JupyterHub (`make hub`), started on 127.0.0.1 with two learners, as a leader would run it.

Through the hub's REST API both learners' servers start, a cell runs in each through the kernel API (as that
learner's own account, with the course's kernel and its thread limit), and learner A can read neither learner B's
notebook through the hub nor B's files on disk. Chromium takes screenshots of the login page and of a learner's
JupyterLab after logging in with a password (artifacts/hub/). Needs root (it creates and deletes two accounts).
"""
import json
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest

from course_lib.tools.hub import users

REPO = Path(__file__).resolve().parents[2]
HUB_HOME = Path(os.environ.get("COURSE_HUB_HOME", "/opt/course-hub"))  # make hub-course fills it
HUB_VENV = HUB_HOME / "venv"
CONFIG = REPO / "course_lib" / "tools" / "hub" / "jupyterhub_config.py"
ARTIFACTS = REPO / "artifacts" / "hub"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Hub:
    def __init__(self, state: Path, token: str):
        self.state, self.token = state, token
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = None

    def api(self, method: str, path: str, body=None, token: str | None = None):
        request = urllib.request.Request(self.url + path, method=method,
                                         data=None if body is None else json.dumps(body).encode(),
                                         headers={"Authorization": f"token {token or self.token}"})
        try:
            with urllib.request.urlopen(request, timeout=30) as answer:
                text = answer.read().decode()
                return answer.status, (json.loads(text) if text else None)
        except urllib.error.HTTPError as error:
            return error.code, None

    def start(self, timeout: float = 120):
        env = {**os.environ, "COURSE_HUB_HOME": str(HUB_HOME), "COURSE_HUB_STATE": str(self.state),
               "COURSE_HUB_PORT": str(self.port),
               "COURSE_HUB_API_PORT": str(_free_port()), "COURSE_HUB_PROXY_API_PORT": str(_free_port()),
               "COURSE_HUB_PROFILE": "ci", "COURSE_HUB_EXPECTED_USERS": "2"}
        log = open(self.state / "hub.log", "w")
        self.process = subprocess.Popen([str(HUB_VENV / "bin" / "jupyterhub"), "-f", str(self.state / "test_config.py")],
                                        cwd=self.state, env=env, stdout=log, stderr=subprocess.STDOUT,
                                        start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"the hub exited: {(self.state / 'hub.log').read_text()[-3000:]}"
            try:
                if self.api("GET", "/hub/api/")[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.5)
        raise AssertionError(f"the hub did not answer: {(self.state / 'hub.log').read_text()[-3000:]}")

    def start_server(self, name: str, timeout: float = 180):
        status, _ = self.api("POST", f"/hub/api/users/{name}")  # known to the hub before a first login
        assert status in (201, 409), f"adding {name} to the hub: HTTP {status}"
        status, _ = self.api("POST", f"/hub/api/users/{name}/server")
        assert status in (201, 202), f"starting {name}'s server: HTTP {status}"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            _, user = self.api("GET", f"/hub/api/users/{name}")
            if user and user.get("servers", {}).get("", {}).get("ready"):
                return
            time.sleep(1)
        raise AssertionError(f"{name}'s server did not start: {(self.state / 'hub.log').read_text()[-3000:]}")

    def stop(self):
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)  # the hub stops the proxy and its services
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)


def run_cell(hub: Hub, name: str, code: str, timeout: float = 120) -> str:
    """Run ``code`` in a new kernel of ``name``'s server, through the server's kernel API; return its printed text."""
    from tornado.httpclient import HTTPRequest
    from tornado.ioloop import IOLoop
    from tornado.websocket import websocket_connect

    status, kernel = hub.api("POST", f"/user/{name}/api/kernels", {"name": "python3"})
    assert status == 201, f"no kernel for {name}: HTTP {status}"

    async def execute():
        url = f"ws://127.0.0.1:{hub.port}/user/{name}/api/kernels/{kernel['id']}/channels"
        socket_ = await websocket_connect(HTTPRequest(url, headers={"Authorization": f"token {hub.token}"}))
        msg_id = uuid.uuid4().hex
        await socket_.write_message(json.dumps({
            "header": {"msg_id": msg_id, "msg_type": "execute_request", "username": name, "session": uuid.uuid4().hex,
                       "version": "5.3"}, "parent_header": {}, "metadata": {}, "channel": "shell",
            "content": {"code": code, "silent": False, "store_history": False, "user_expressions": {},
                        "allow_stdin": False, "stop_on_error": True}}))
        printed = []
        while True:
            message = json.loads(await socket_.read_message())
            if message.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            kind = message["msg_type"]
            if kind == "stream":
                printed.append(message["content"]["text"])
            elif kind == "error":
                printed.append(f"{message['content']['ename']}: {message['content']['evalue']}")
            elif kind == "status" and message["content"]["execution_state"] == "idle":
                socket_.close()
                return "".join(printed)

    try:
        return IOLoop.current().run_sync(execute, timeout=timeout)
    finally:
        hub.api("DELETE", f"/user/{name}/api/kernels/{kernel['id']}")


@pytest.fixture(scope="module")
def learners():
    if os.geteuid() != 0:
        pytest.skip("the hub test creates accounts: run it as root (make test-hub)")
    tag = secrets.token_hex(2)
    names = [f"coursetest-a{tag}", f"coursetest-b{tag}"]
    passwords = users.add(names, users.LEARNERS)
    try:
        yield passwords
    finally:
        users.remove(names)


@pytest.fixture(scope="module")
def hub(learners, tmp_path_factory):
    assert (HUB_VENV / "bin" / "jupyterhub").exists() and (HUB_HOME / "student").is_dir(), (
        f"nothing installed in {HUB_HOME}: run `make hub-course` (make test-hub does)")
    state = tmp_path_factory.mktemp("hub")
    token = secrets.token_hex(24)
    (state / "test_config.py").write_text(
        f"c = get_config()\nload_subconfig({str(CONFIG)!r})\n"
        f"c.JupyterHub.services.append({{'name': 'course-test', 'api_token': {token!r}}})\n"
        "c.JupyterHub.load_roles.append({'name': 'course-test', 'services': ['course-test'], "
        "'scopes': ['admin:users', 'admin:servers', 'access:servers', 'tokens']})\n")
    running = Hub(state, token)
    running.start()
    try:
        for name in learners:
            running.start_server(name)
        yield running
    finally:
        for name in learners:
            running.api("DELETE", f"/hub/api/users/{name}/server")
        running.stop()


def test_each_learner_runs_a_cell_as_their_own_account(hub, learners):
    for name in learners:
        printed = run_cell(hub, name, "import os, pwd, torch, course_lib\n"
                                      "print(pwd.getpwuid(os.getuid()).pw_name, torch.get_num_threads(), "
                                      "os.environ['COURSE_PROFILE'], sorted(os.listdir(os.path.expanduser('~/course'))))")
        account, threads, profile, files = printed.split(" ", 3)
        assert account == name and profile == "ci", printed
        assert int(threads) == max(1, (os.cpu_count() or 1) // 2), printed
        assert "00_welcome.ipynb" in files and "chapters-read-only" in files, printed


def test_a_learner_cannot_read_another_learners_notebook(hub, learners):
    a, b = learners
    theirs = Path(pwd.getpwnam(b).pw_dir) / "course" / "16_camera_geometry.ipynb"
    assert theirs.exists()
    printed = run_cell(hub, a, f"open({str(theirs)!r}).read()")
    assert "PermissionError" in printed, printed
    status, token = hub.api("POST", f"/hub/api/users/{a}/tokens", {"note": "course test"})
    assert status in (200, 201), status
    mine, _ = hub.api("GET", f"/user/{a}/api/contents/course/16_camera_geometry.ipynb", token=token["token"])
    other, _ = hub.api("GET", f"/user/{b}/api/contents/course/16_camera_geometry.ipynb", token=token["token"])
    assert mine == 200 and other in (403, 404), (mine, other)
    printed = run_cell(hub, a, "import pathlib\npathlib.Path('~/course/chapters-read-only/new.txt').expanduser()"
                               ".write_text('x')")
    assert "PermissionError" in printed, f"the chapters must be read-only for a learner: {printed}"


def test_screenshots_of_the_login_page_and_a_learners_lab(hub, learners):
    playwright_api = pytest.importorskip("playwright.sync_api")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    name, password = next(iter(learners.items()))
    with playwright_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", headless=True,
                                             args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.goto(f"{hub.url}/hub/login")
        page.screenshot(path=str(ARTIFACTS / "login.png"))
        page.fill("#username_input", name)
        page.fill("#password_input", password)
        page.click("#login_submit")
        page.wait_for_selector(".jp-LabShell", timeout=120_000)
        page.wait_for_selector(".jp-DirListing-item", timeout=60_000)
        page.screenshot(path=str(ARTIFACTS / "learner-lab.png"))
        listing = page.inner_text(".jp-DirListing-content")
        browser.close()
    assert "00_welcome.ipynb" in listing, listing


# --------------------------------------------------------------------------------------------
# Exercises through nbgrader on the shared machine: release, fetch, submit, collect, autograde (README)

ASSIGNMENT = "16_camera_geometry"  # 2 exercises, seconds under ci
RUNUSER = shutil.which("runuser", path="/usr/sbin:/sbin:/usr/bin:/bin") or "runuser"  # util-linux


def as_account(name: str, *command: str, cwd: Path | None = None) -> str:
    """Run ``command`` as ``name`` (a login-like environment, the hub's venv first on PATH); return its output."""
    account = pwd.getpwnam(name)
    env = {"HOME": account.pw_dir, "USER": name, "LOGNAME": name, "PATH": f"{HUB_VENV / 'bin'}:/usr/bin:/bin",
           "COURSE_PROFILE": "ci", "OMP_NUM_THREADS": "1", "LANG": "C.UTF-8"}
    done = subprocess.run([RUNUSER, "-u", name, "--", *command], cwd=cwd or account.pw_dir, env=env, text=True,
                          capture_output=True, timeout=300)
    assert done.returncode == 0, f"{name}: {' '.join(command)} failed:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    return done.stdout + done.stderr


@pytest.fixture(scope="module")
def leader():
    name = f"coursetest-l{secrets.token_hex(2)}"
    users.add([name], users.LEADERS)
    try:
        yield name
    finally:
        users.remove([name])


def test_the_leader_releases_learners_submit_and_the_leader_autogrades(hub, learners, leader):
    from nbgrader.api import Gradebook

    a, b = learners
    course = f"--CourseDirectory.course_id={leader}"  # a course of its own in the exchange, removed afterwards
    grading = Path(pwd.getpwnam(leader).pw_dir) / "grading"
    try:
        as_account(leader, "cp", "-r", str(HUB_HOME / "nbgrader"), str(grading))
        as_account(leader, "nbgrader", "generate_assignment", ASSIGNMENT, cwd=grading)
        as_account(leader, "nbgrader", "release_assignment", ASSIGNMENT, course, cwd=grading)
        for name in (a, b):
            assert ASSIGNMENT in as_account(name, "nbgrader", "list", course)
            as_account(name, "nbgrader", "fetch_assignment", ASSIGNMENT, course)
        fetched = Path(pwd.getpwnam(b).pw_dir) / "course" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb"
        assert fetched.exists()
        # b does the exercises: each solution cell of the source version, written into b's copy
        source = json.loads((grading / "source" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb").read_text())
        solutions = {c["metadata"]["nbgrader"]["grade_id"]: c["source"] for c in source["cells"]
                     if c["metadata"].get("nbgrader", {}).get("solution")}
        mine = json.loads(fetched.read_text())
        for cell in mine["cells"]:
            grade_id = cell["metadata"].get("nbgrader", {}).get("grade_id")
            if grade_id in solutions:
                cell["source"] = solutions[grade_id]
        fetched.write_text(json.dumps(mine))  # as root: the owner and mode stay b's
        for name in (a, b):  # a submits the release untouched
            as_account(name, "nbgrader", "submit", ASSIGNMENT, course)
        inbound = HUB_HOME / "exchange" / leader / "inbound"
        listing = subprocess.run([RUNUSER, "-u", a, "--", "ls", str(inbound)], capture_output=True, text=True)
        assert listing.returncode != 0 and "Permission denied" in listing.stderr, "a learner listed the submissions"
        as_account(leader, "nbgrader", "collect", ASSIGNMENT, course, cwd=grading)
        as_account(leader, "nbgrader", "autograde", ASSIGNMENT, course, "--Execute.timeout=30", cwd=grading)
        with Gradebook(f"sqlite:///{grading / 'gradebook.db'}") as gradebook:
            score = {name: gradebook.find_submission(ASSIGNMENT, name).score for name in (a, b)}
            max_score = gradebook.find_assignment(ASSIGNMENT).max_score
        assert max_score > 0 and score == {a: 0, b: max_score}, (score, max_score)
    finally:
        shutil.rmtree(HUB_HOME / "exchange" / leader, ignore_errors=True)
