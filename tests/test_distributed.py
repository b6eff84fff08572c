"""Training on several processes (issue 20): torchrun + DistributedDataParallel through fit() and the train CLI.

Two processes on the CPU with gloo must reach the same weights as one process with the same global batch and
seed, and only process 0 may write a checkpoint."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from course_lib.core import distributed

ROOT = Path(__file__).resolve().parents[1]
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]


def _run(command, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "tests")}
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        env.pop(name, None)
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def test_world_outside_torchrun_is_one_process(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    assert distributed.world() == (0, 1, 0) and distributed.is_main() and not distributed.is_distributed()
    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(ValueError, match="torchrun sets it"):
        distributed.world()


def test_shard_gives_each_process_its_rows():
    x, y = torch.arange(8.0).reshape(8, 1), torch.arange(8)
    parts = [distributed.shard((x, y), rank, 2) for rank in range(2)]
    assert torch.equal(torch.cat([p[0] for p in parts]), x) and torch.equal(parts[1][1], torch.arange(4, 8))
    assert distributed.shard({"images": x}, 1, 4)["images"].tolist() == [[2.0], [3.0]]
    with pytest.raises(ValueError, match="does not split evenly over 3 processes"):
        distributed.shard(x, 0, 3)
    with pytest.raises(TypeError, match="cannot split"):
        distributed.shard("text", 0, 2)


def test_two_processes_reach_the_weights_of_one(tmp_path):
    import ddp_worker  # tests/ddp_worker.py
    _run(TORCHRUN + [str(ROOT / "tests" / "ddp_worker.py"), str(tmp_path / "ddp.pt")], tmp_path)
    together = torch.load(tmp_path / "ddp.pt")
    alone = ddp_worker.train().state_dict()
    for name, weight in alone.items():
        torch.testing.assert_close(together[name], weight, rtol=1e-5, atol=1e-6, msg=name)
    first = dict(torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3)).state_dict())
    assert not torch.allclose(first["0.weight"], alone["0.weight"])  # it did train


def test_the_train_cli_under_torchrun_writes_one_checkpoint(tmp_path):
    out = tmp_path / "out"
    result = _run(TORCHRUN + ["-m", "course_lib.zoo", "train", "mlp_mnist", "--profile", "ci", "--out", str(out)], tmp_path)
    assert sorted(p.name for p in out.glob("*.pt")) == ["mlp_mnist.pt"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert list(manifest) == ["mlp_mnist"] and manifest["mlp_mnist"]["training"]["processes"] == 2
    assert manifest["mlp_mnist"]["recipe"]["batch_size"] == 64  # the global batch, as the recipe says
    assert result.stdout.count("wrote ") == 1, result.stdout
