"""The course needs no network.

`make test` runs the whole suite (unit tests and every chapter) inside `unshare -n`, a network
namespace with only the loopback interface (.ci/offline). The first test proves that sandbox is
real; the second loads every dataset and checkpoint in a fresh network-less process of its own,
so it also holds when the suite itself was started with the network.
"""
import os
import shutil
import socket
import subprocess
import sys

import pytest

NO_NETWORK_SCRIPT = """
import course_lib
from course_lib.core.checkpointing import read_manifest
from course_lib.zoo import load_shipped
from course_lib.data import OFFLINE_IMAGES, load_fashion_mnist, load_image, load_mnist, make_shapes
load_mnist("train"); load_mnist("test")
for name in OFFLINE_IMAGES:
    load_image(name)
make_shapes(4)
try:
    load_fashion_mnist("test")
except FileNotFoundError:
    pass  # not installed: allowed, but it must not try the network
for name in read_manifest():  # every checkpoint must be registered in course_lib.zoo.MODELS
    load_shipped(name)
print("offline ok")
"""


def test_the_suite_runs_without_network():
    if os.environ.get("COURSE_OFFLINE_SANDBOX") != "1":
        pytest.skip("this run was not started inside `unshare -n` (needs root); `make test` does that where it can")
    interfaces = [name for _, name in socket.if_nameindex()]
    assert interfaces == ["lo"], f"COURSE_OFFLINE_SANDBOX=1 but network interfaces {interfaces} exist"


def test_data_and_checkpoints_load_in_a_process_without_network():
    if shutil.which("unshare") is None:
        pytest.skip("`unshare` is not installed, so no network-less process can be made here")
    if subprocess.run(["unshare", "-n", "true"], capture_output=True).returncode != 0:
        pytest.skip("`unshare -n` is not permitted here (it needs root or user namespaces)")
    result = subprocess.run(["unshare", "-n", sys.executable, "-c", NO_NETWORK_SCRIPT],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and "offline ok" in result.stdout, result.stderr[-3000:]
