"""course_lib.checkpointing: save_checkpoint, load_checkpoint, read_manifest, and the shipped checkpoints."""
import datetime
import hashlib
import json

import pytest
import torch
from torch import nn

from course_lib import checkpointing
from course_lib.backprop import MLP
from course_lib.checkpointing import CHECKPOINT_DIR, MANIFEST, load_checkpoint, read_manifest, save_checkpoint

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
    assert CHECKPOINT_DIR.name == "checkpoints" and CHECKPOINT_DIR.parent.name == "course_lib"
    assert checkpointing.MANIFEST == "manifest.json"


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
    from course_lib.train import accuracy

    entry = SHIPPED["mlp_mnist"]
    model = MLP(n_hidden=500)
    assert load_checkpoint(model, "mlp_mnist") == entry
    assert sum(p.numel() for p in model.parameters()) == entry["parameters"]
    x, y = load_mnist("test")
    acc = accuracy(model, x, y)
    assert abs(acc - entry["metrics"]["test_accuracy"]) <= 2e-3
    assert acc >= entry["recipe"]["min_test_accuracy"]
