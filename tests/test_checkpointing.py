"""course_lib.core.checkpointing: save_checkpoint, load_checkpoint, read_manifest, and the shipped checkpoints."""
import builtins
import datetime
import errno
import hashlib
import io
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from course_lib.core import checkpointing
from course_lib.topics.backprop import MLP
from course_lib.core.checkpointing import CHECKPOINT_DIR, MANIFEST, load_checkpoint, read_manifest, save_checkpoint

RECIPE = {"recipe": "tests.tiny", "seed": 0, "steps": 3}
METRICS = {"test_accuracy": 0.5}


def tiny_model(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2), nn.BatchNorm1d(2))


def _save(model, directory, name="tiny", **overrides):
    kwargs = dict(recipe=RECIPE, metrics=METRICS, wall_time_s=12.345, device="cpu", directory=directory)
    kwargs.update(overrides)
    return save_checkpoint(model, name, **kwargs)


def test_save_load_round_trip(tmp_path):
    model = tiny_model(0)
    model[3].running_mean += 1.5  # buffers travel too
    path = _save(model, tmp_path)
    assert path == tmp_path / "tiny.pt" and path.is_file()
    other = tiny_model(1).train()
    assert not torch.equal(other[0].weight, model[0].weight)
    entry = load_checkpoint(other, "tiny", directory=tmp_path)
    for (k, v), (k2, v2) in zip(model.state_dict().items(), other.state_dict().items()):
        assert k == k2 and torch.equal(v, v2)
    assert not other.training  # ready for inference
    assert entry == read_manifest(tmp_path)["tiny"]


def test_manifest_entry_fields(tmp_path):
    model = tiny_model()
    path = _save(model, tmp_path, device=torch.device("cpu"))
    entry = read_manifest(tmp_path)["tiny"]
    assert entry["file"] == "tiny.pt"
    assert entry["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert entry["size_bytes"] == path.stat().st_size
    assert entry["parameters"] == sum(p.numel() for p in model.parameters()) == 4 * 3 + 3 + 3 * 2 + 2 + 2 + 2
    assert entry["recipe"] == RECIPE and entry["metrics"] == METRICS
    assert entry["device"] == "cpu"
    assert entry["wall_time_s"] == 12.3
    assert entry["torch"] == torch.__version__.split("+")[0]
    assert entry["created"] == datetime.date.today().isoformat()
    manifest = json.loads((tmp_path / MANIFEST).read_text())
    assert manifest == {"tiny": entry}


def test_manifest_keeps_other_entries_and_overwrites_same_name(tmp_path):
    _save(tiny_model(0), tmp_path, "first")
    _save(tiny_model(1), tmp_path, "second", metrics={"acc": 0.9})
    _save(tiny_model(2), tmp_path, "first", metrics={"acc": 0.1})
    manifest = read_manifest(tmp_path)
    assert sorted(manifest) == ["first", "second"]
    assert manifest["first"]["metrics"] == {"acc": 0.1} and manifest["second"]["metrics"] == {"acc": 0.9}
    model = tiny_model(5)
    load_checkpoint(model, "first", directory=tmp_path)
    assert torch.equal(model[0].weight, tiny_model(2)[0].weight)


def test_save_creates_the_directory(tmp_path):
    target = tmp_path / "a" / "b"
    _save(tiny_model(), str(target))
    assert (target / "tiny.pt").is_file() and (target / MANIFEST).is_file()


def test_saved_tensors_are_plain_cpu_contiguous(tmp_path):
    model = nn.Linear(3, 4)
    with torch.no_grad():
        model.weight.set_(model.weight.detach().t().contiguous().t())  # a non-contiguous weight
    path = _save(model, tmp_path, "lin")
    state = torch.load(path, weights_only=True)
    assert all(v.is_contiguous() and v.device.type == "cpu" and not v.requires_grad for v in state.values())


def test_read_manifest_without_file_is_empty(tmp_path):
    assert read_manifest(tmp_path) == {}
    assert read_manifest(tmp_path / "does-not-exist") == {}


def test_tampered_file_is_refused(tmp_path):
    path = _save(tiny_model(), tmp_path)
    data = bytearray(path.read_bytes())
    data[-10] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError) as err:
        load_checkpoint(tiny_model(), "tiny", directory=tmp_path)
    assert "sha256" in str(err.value) and "tiny.pt" in str(err.value)


def test_replaced_file_is_refused(tmp_path):
    _save(tiny_model(0), tmp_path)
    torch.save(tiny_model(1).state_dict(), tmp_path / "tiny.pt")  # valid file, not the recorded one
    model = tiny_model(2)
    before = model[0].weight.clone()
    with pytest.raises(ValueError, match="sha256"):
        load_checkpoint(model, "tiny", directory=tmp_path)
    assert torch.equal(model[0].weight, before)  # nothing was loaded


def test_missing_name_lists_the_known_ones(tmp_path):
    _save(tiny_model(), tmp_path, "alpha")
    _save(tiny_model(), tmp_path, "beta")
    with pytest.raises(FileNotFoundError) as err:
        load_checkpoint(tiny_model(), "gamma", directory=tmp_path)
    message = str(err.value)
    assert "'gamma'" in message and "alpha, beta" in message and "recipe" in message


def test_missing_name_without_manifest(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"known: none"):
        load_checkpoint(tiny_model(), "anything", directory=tmp_path)


def test_missing_file_says_how_to_restore(tmp_path):
    path = _save(tiny_model(), tmp_path)
    path.unlink()
    with pytest.raises(FileNotFoundError) as err:
        load_checkpoint(tiny_model(), "tiny", directory=tmp_path)
    message = str(err.value)
    assert str(path) in message and "git checkout -- tiny.pt" in message and "retrain" in message


def test_wrong_architecture_is_refused(tmp_path):
    _save(tiny_model(), tmp_path)
    with pytest.raises(RuntimeError, match="size mismatch|Missing key|Unexpected key"):
        load_checkpoint(nn.Sequential(nn.Linear(4, 5)), "tiny", directory=tmp_path)


@pytest.mark.parametrize("name", ["", "a b", "../evil", "x/y", "dot.pt", "semi;colon", "tab\t", "a\\b"])
def test_bad_names_are_refused(tmp_path, name):
    with pytest.raises(ValueError, match="letters, digits, '-' or '_'"):
        _save(tiny_model(), tmp_path, name)
    assert list(tmp_path.iterdir()) == []  # nothing written


@pytest.mark.parametrize("name", ["mlp_mnist", "vae-2", "A1"])
def test_good_names(tmp_path, name):
    assert _save(tiny_model(), tmp_path, name).name == f"{name}.pt"


def test_default_directory_is_the_package_folder():
    assert CHECKPOINT_DIR.name == "checkpoints" and CHECKPOINT_DIR.parent.name == "zoo"
    assert CHECKPOINT_DIR.parent.parent.name == "course_lib"
    assert checkpointing.MANIFEST == "manifest.json"


# ------------------------------------------------------------------ saving is all or nothing (fault injection)

REPO = Path(__file__).resolve().parents[1]


def _snapshot(directory):
    """Every file of ``directory`` (but the lock file) with its bytes, to compare before and after."""
    return {p.name: p.read_bytes() for p in sorted(Path(directory).iterdir()) if p.name != ".manifest.lock"}


def _assert_old_tiny_still_loads(directory, seed=0):
    model = tiny_model(7)
    load_checkpoint(model, "tiny", directory=directory)  # checks the sha256
    assert torch.equal(model[0].weight, tiny_model(seed)[0].weight)


class _HalfFullFile:
    """A file that takes half of the first write, then fails as a full disk does."""

    def __init__(self, file):
        self._file = file

    def write(self, data):
        self._file.write(data[:len(data) // 2])
        self._file.flush()
        raise OSError(errno.ENOSPC, "No space left on device")

    def __getattr__(self, name):
        return getattr(self._file, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._file.close()


def _fill_the_disk_for(monkeypatch, fragment):
    """Every file opened for writing whose name contains ``fragment`` fails halfway through its write."""
    real_open = builtins.open

    def open_(file, mode="r", *args, **kwargs):
        f = real_open(file, mode, *args, **kwargs)
        writing = any(c in mode for c in "wxa+")
        if writing and isinstance(file, (str, os.PathLike)) and fragment in os.fspath(file):
            return _HalfFullFile(f)
        return f

    monkeypatch.setattr(builtins, "open", open_)
    monkeypatch.setattr(io, "open", open_)  # what Path.write_text uses


@pytest.mark.parametrize("fragment", [MANIFEST, "tiny.pt"])
def test_full_disk_leaves_the_old_checkpoint_and_manifest_intact(tmp_path, monkeypatch, fragment):
    _save(tiny_model(0), tmp_path)
    before = _snapshot(tmp_path)
    _fill_the_disk_for(monkeypatch, fragment)
    with pytest.raises(OSError) as err:
        _save(tiny_model(1), tmp_path, metrics={"acc": 0.1})
    monkeypatch.undo()
    assert _snapshot(tmp_path) == before  # byte for byte, and no temporary file left behind
    _assert_old_tiny_still_loads(tmp_path)
    assert err.value.errno == errno.ENOSPC
    message = str(err.value)
    assert f"'tiny' in {tmp_path}" in message and "unchanged" in message and "--out DIR" in message


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX file size limits")
@pytest.mark.parametrize("too_big", ["weights", "manifest"])
def test_file_size_limit_leaves_the_old_checkpoint_loadable(tmp_path, too_big):
    """A real failing write (ulimit -f), in another process: the new weights or manifest do not fit."""
    _save(tiny_model(0), tmp_path)
    before = _snapshot(tmp_path)
    script = textwrap.dedent(f"""
        import resource, signal, sys
        from torch import nn
        from course_lib.core.checkpointing import save_checkpoint
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # so the write fails with EFBIG, not a killed process
        resource.setrlimit(resource.RLIMIT_FSIZE, (60_000, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
        big = {too_big == "weights"}
        model = nn.Linear(200, 200) if big else nn.Linear(2, 2)
        recipe = {{"notes": "" if big else "x" * 100_000}}
        try:
            save_checkpoint(model, "tiny", recipe=recipe, metrics={{}}, wall_time_s=1, device="cpu",
                            directory=sys.argv[1])
        except OSError as error:
            print(error)
            sys.exit(3)
    """)
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path)], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    assert _snapshot(tmp_path) == before
    _assert_old_tiny_still_loads(tmp_path)
    assert done.returncode == 3, done.stderr
    assert "could not save checkpoint 'tiny'" in done.stdout and "Free some space" in done.stdout


def test_failing_manifest_replace_puts_the_old_weights_back(tmp_path, monkeypatch):
    _save(tiny_model(0), tmp_path)
    before = _snapshot(tmp_path)
    real_replace = os.replace

    def replace(src, dst):
        if Path(dst).name == MANIFEST:
            raise PermissionError(errno.EACCES, "Permission denied", str(dst))
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(PermissionError, match="could not save checkpoint 'tiny'.*Permission denied.*--out DIR"):
        _save(tiny_model(1), tmp_path)
    monkeypatch.undo()
    assert _snapshot(tmp_path) == before
    _assert_old_tiny_still_loads(tmp_path)


SAVER = """
import sys, time
from pathlib import Path
import torch
from torch import nn
from course_lib.core.checkpointing import save_checkpoint

directory, me = Path(sys.argv[1]), int(sys.argv[2])
(directory / f"ready-{me}").touch()
deadline = time.time() + 60
while not all((directory / f"ready-{i}").exists() for i in (0, 1)) and time.time() < deadline:
    time.sleep(0.01)  # start saving together
for i in range(20):
    torch.manual_seed(100 * me + i)
    save_checkpoint(nn.Linear(4, 3), f"p{me}_{i}", recipe={"i": i}, metrics={"me": me}, wall_time_s=0,
                    device="cpu", directory=directory)
"""


@pytest.mark.skipif(sys.platform == "win32", reason="saves are only locked where fcntl exists")
def test_two_processes_saving_at_once_keep_every_entry(tmp_path):
    savers = [subprocess.Popen([sys.executable, "-c", SAVER, str(tmp_path), str(me)], cwd=REPO,
                               stderr=subprocess.PIPE, text=True) for me in (0, 1)]
    for saver in savers:
        assert saver.wait(timeout=180) == 0, saver.stderr.read()
    manifest = read_manifest(tmp_path)
    assert sorted(manifest) == sorted(f"p{me}_{i}" for me in (0, 1) for i in range(20))
    for me in (0, 1):
        for i in range(20):
            model = nn.Linear(4, 3)
            load_checkpoint(model, f"p{me}_{i}", directory=tmp_path)  # sha256 checked
            torch.manual_seed(100 * me + i)
            assert torch.equal(model.weight, nn.Linear(4, 3).weight)
    assert not [p for p in tmp_path.iterdir() if p.suffix in (".tmp", ".old")]


# ------------------------------------------------------------------------------ values JSON cannot store

def test_numpy_and_tensor_scalars_are_stored_as_plain_numbers(tmp_path):
    metrics = {"fid": np.float32(12.5), "acc": torch.tensor(0.75), "steps": np.int64(3), "ok": np.bool_(True),
               "curve": (1, np.float64(0.5)), "nested": {"loss": torch.tensor([2.0]).sum()}}
    _save(tiny_model(), tmp_path, metrics=metrics, recipe={"lr": np.float32(0.25), "sizes": (4, 3)})
    entry = json.loads((tmp_path / MANIFEST).read_text())["tiny"]
    assert entry["metrics"] == {"fid": 12.5, "acc": 0.75, "steps": 3, "ok": True, "curve": [1, 0.5],
                                "nested": {"loss": 2.0}}
    assert type(entry["metrics"]["fid"]) is float and type(entry["metrics"]["steps"]) is int
    assert entry["recipe"] == {"lr": 0.25, "sizes": [4, 3]}
    load_checkpoint(tiny_model(), "tiny", directory=tmp_path)


@pytest.mark.parametrize("where, metrics, recipe", [
    ("metrics['fid']", {"fid": object()}, RECIPE),
    ("metrics['curve']", {"curve": torch.zeros(3)}, RECIPE),
    ("recipe['model']['layers'][1]", METRICS, {"model": {"layers": [4, {3}]}}),
])
def test_unstorable_value_fails_before_anything_is_written(tmp_path, where, metrics, recipe):
    _save(tiny_model(0), tmp_path)
    before = _snapshot(tmp_path)
    with pytest.raises(TypeError) as err:
        _save(tiny_model(1), tmp_path, metrics=metrics, recipe=recipe)
    assert _snapshot(tmp_path) == before
    _assert_old_tiny_still_loads(tmp_path)
    assert str(err.value).startswith(f"{where} = ") and "cannot be stored in manifest.json" in str(err.value)


# ----------------------------------------------------------------------------------- read-only folders

@pytest.mark.parametrize("read_only", ["manifest", "folder"])
def test_read_only_target_is_refused_clearly(tmp_path, monkeypatch, read_only):
    """Simulated (root may write anything): this process may not change the manifest or the folder."""
    _save(tiny_model(0), tmp_path)
    before = _snapshot(tmp_path)
    locked = tmp_path / MANIFEST if read_only == "manifest" else tmp_path
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode, **kw: False if Path(path) == locked and mode == os.W_OK
                        else real_access(path, mode, **kw))
    with pytest.raises(PermissionError) as err:
        _save(tiny_model(1), tmp_path)
    monkeypatch.undo()
    message = str(err.value)
    assert f"in {tmp_path}: {locked} is read-only" in message and "--out DIR" in message
    assert _snapshot(tmp_path) == before
    _assert_old_tiny_still_loads(tmp_path)


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root ignores file permissions")
@pytest.mark.parametrize("read_only", ["manifest", "folder"])
def test_read_only_target_for_real(tmp_path, read_only):
    _save(tiny_model(0), tmp_path)
    before = _snapshot(tmp_path)
    locked = tmp_path / MANIFEST if read_only == "manifest" else tmp_path
    locked.chmod(0o444 if read_only == "manifest" else 0o555)
    try:
        with pytest.raises(PermissionError, match=r"is read-only\. Nothing was changed; save it elsewhere"):
            _save(tiny_model(1), tmp_path)
    finally:
        locked.chmod(0o644 if read_only == "manifest" else 0o755)
    assert _snapshot(tmp_path) == before
    _assert_old_tiny_still_loads(tmp_path)


# ------------------------------------------------------------------------------- a damaged manifest

def test_truncated_manifest_is_named_with_its_line_and_the_fix(tmp_path):
    _save(tiny_model(), tmp_path, "alpha")
    _save(tiny_model(), tmp_path, "beta")
    path = tmp_path / MANIFEST
    path.write_bytes(path.read_bytes()[:-40])
    with pytest.raises(ValueError) as err:
        read_manifest(tmp_path)
    message = str(err.value)
    assert str(path) in message and "not valid JSON at line" in message and f"Delete {path}" in message
    with pytest.raises(ValueError, match="not valid JSON"):
        load_checkpoint(tiny_model(), "alpha", directory=tmp_path)


def test_damaged_shipped_manifest_says_git_checkout(tmp_path, monkeypatch):
    monkeypatch.setattr(checkpointing, "CHECKPOINT_DIR", tmp_path)
    (tmp_path / MANIFEST).write_text('{"mlp_mnist": {"file": "mlp_mnist.pt", "sha')
    with pytest.raises(ValueError, match=r"line 1, column \d+.*git checkout -- course_lib/zoo/checkpoints/manifest.json"):
        read_manifest()
    (tmp_path / MANIFEST).write_text("[]")
    with pytest.raises(ValueError, match="holds a list"):
        read_manifest()


def test_saving_beside_a_damaged_manifest_changes_nothing(tmp_path):
    _save(tiny_model(0), tmp_path)
    (tmp_path / MANIFEST).write_text('{"tiny": ')
    before = _snapshot(tmp_path)
    with pytest.raises(ValueError, match="not valid JSON"):
        _save(tiny_model(1), tmp_path)
    assert _snapshot(tmp_path) == before


@pytest.mark.parametrize("field", ["file", "sha256"])
def test_entry_without_a_field_is_named(tmp_path, field):
    _save(tiny_model(), tmp_path)
    manifest = read_manifest(tmp_path)
    del manifest["tiny"][field]
    (tmp_path / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match=f"the entry 'tiny' in {tmp_path / MANIFEST} has no '{field}' field"):
        load_checkpoint(tiny_model(), "tiny", directory=tmp_path)


def test_the_shipped_folder_is_looked_up_when_called(tmp_path, monkeypatch):
    """Tests and tools point CHECKPOINT_DIR elsewhere; a default bound at import would miss it."""
    import inspect
    for function in (read_manifest, save_checkpoint, load_checkpoint):
        assert inspect.signature(function).parameters["directory"].default is None  # before anything is written
    monkeypatch.setattr(checkpointing, "CHECKPOINT_DIR", tmp_path)
    assert read_manifest() == {}
    save_checkpoint(tiny_model(), "tiny", recipe=RECIPE, metrics=METRICS, wall_time_s=1, device="cpu")
    assert sorted(read_manifest()) == ["tiny"] and (tmp_path / "tiny.pt").is_file()
    load_checkpoint(tiny_model(), "tiny")


# -------------------------------------------------------------------------------------- load_shipped

def _fake_shipped(tmp_path, name="ncsn_2d", drop=None):
    """A folder holding a tiny checkpoint under a shipped model's name, its manifest entry missing ``drop``."""
    _save(tiny_model(), tmp_path, name, recipe={"model": {}})
    if drop:
        manifest = read_manifest(tmp_path)
        *path, key = drop
        inner = manifest[name]
        for part in path:
            inner = inner[part]
        del inner[key]
        (tmp_path / MANIFEST).write_text(json.dumps(manifest))


def test_load_shipped_entry_without_recipe_is_named(tmp_path):
    from course_lib.zoo import load_shipped
    _fake_shipped(tmp_path, drop=["recipe"])
    with pytest.raises(ValueError, match="the entry 'ncsn_2d' in .* has no 'recipe' field"):
        load_shipped("ncsn_2d", directory=tmp_path)


def test_load_shipped_recipe_without_model_is_named(tmp_path):
    from course_lib.zoo import load_shipped
    _fake_shipped(tmp_path, drop=["recipe", "model"])
    with pytest.raises(ValueError, match="the entry 'ncsn_2d' in .* lacks 'model' in its recipe"):
        load_shipped("ncsn_2d", directory=tmp_path)


def test_load_shipped_unknown_name_lists_the_shipped_and_suggests_no_command(tmp_path):
    from course_lib.zoo import load_shipped
    _fake_shipped(tmp_path, "mlp_mnist")
    with pytest.raises(FileNotFoundError) as err:
        load_shipped("nope", directory=tmp_path)
    message = str(err.value)
    assert "no model named 'nope'" in message and "Shipped: mlp_mnist." in message
    assert "python -m course_lib.zoo train" not in message
    with pytest.raises(FileNotFoundError, match="Did you mean 'mlp_mnist'"):
        load_shipped("mlp_mnsit", directory=tmp_path)


def test_load_shipped_known_recipe_not_shipped_suggests_training(tmp_path, monkeypatch):
    from course_lib.zoo import load_shipped
    monkeypatch.setattr(checkpointing, "CHECKPOINT_DIR", tmp_path)  # the default folder, looked up now
    with pytest.raises(FileNotFoundError, match=f"in {tmp_path}; shipped: none.*python -m course_lib.zoo train vae_mnist"):
        load_shipped("vae_mnist")


# ------------------------------------------------------------------------------------------- shipped

SHIPPED = read_manifest(CHECKPOINT_DIR)
needs_manifest = pytest.mark.skipif(not SHIPPED, reason="no shipped checkpoints yet (no manifest.json)")


@needs_manifest
@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_shipped_checkpoint_files_match_the_manifest(name):
    entry = SHIPPED[name]
    path = CHECKPOINT_DIR / entry["file"]
    assert path.is_file(), f"{path} is in the manifest but missing"
    assert hashlib.sha256(path.read_bytes()).hexdigest() == entry["sha256"]
    assert path.stat().st_size == entry["size_bytes"]
    assert path.stat().st_size < 5 * 2**20, f"{path.name} is {path.stat().st_size} bytes, over 5 MB"
    for key in ("recipe", "metrics", "device", "wall_time_s", "parameters", "torch", "created"):
        assert key in entry, f"manifest entry {name!r} lacks {key!r}"


@needs_manifest
def test_no_unlisted_checkpoint_files():
    listed = {entry["file"] for entry in SHIPPED.values()}
    assert {p.name for p in CHECKPOINT_DIR.glob("*.pt")} <= listed


@pytest.mark.skipif("mlp_mnist" not in SHIPPED, reason="mlp_mnist not shipped yet")
def test_shipped_mlp_mnist_reaches_its_recorded_accuracy():
    from course_lib.data import load_mnist
    from course_lib.core.train import accuracy

    entry = SHIPPED["mlp_mnist"]
    model = MLP(n_hidden=500)
    assert load_checkpoint(model, "mlp_mnist") == entry
    assert sum(p.numel() for p in model.parameters()) == entry["parameters"]
    x, y = load_mnist("test")
    acc = accuracy(model, x, y)
    assert abs(acc - entry["metrics"]["test_accuracy"]) <= 2e-3
    assert acc >= entry["recipe"]["min_test_accuracy"]
