"""``python -m course_lib.zoo train``: never replace a shipped checkpoint unasked, never lose trained weights.

A fake record (its train takes milliseconds) stands in for a shipped model, and a tmp folder for the shipped one.
"""
import errno
import json
from pathlib import Path

import pytest
import torch
from torch import nn

from course_lib import zoo
from course_lib.core import checkpointing
from course_lib.core import train as core_train
from course_lib.core.train import History
from course_lib.zoo import train
from course_lib.zoo.train import main

REAL_SHIPPED = checkpointing.CHECKPOINT_DIR.resolve()


@pytest.fixture(autouse=True)
def never_write_the_real_checkpoints(monkeypatch):
    """Every save goes to the folder the test chose; writing the real shipped folder fails the test."""
    real_save = checkpointing.save_checkpoint

    def save(*args, directory=None, **kwargs):
        directory = checkpointing.CHECKPOINT_DIR if directory is None else directory
        assert Path(directory).resolve() != REAL_SHIPPED, "a test tried to write course_lib/zoo/checkpoints/"
        return real_save(*args, directory=directory, **kwargs)

    monkeypatch.setattr(checkpointing, "save_checkpoint", save)


@pytest.fixture
def shipped(tmp_path, monkeypatch):
    """A stand-in for course_lib/zoo/checkpoints/ that already ships 'tiny' (acc 0.98)."""
    folder = tmp_path / "shipped"
    monkeypatch.setattr(checkpointing, "CHECKPOINT_DIR", folder)
    checkpointing.save_checkpoint(nn.Linear(2, 2), "tiny", recipe={"recipe": "tiny"}, metrics={"acc": 0.98},
                                  wall_time_s=60, device="cuda", directory=folder)
    return folder


@pytest.fixture
def trainings(fake_record):
    """Register the fake record 'tiny' in course_lib.zoo.MODELS; the list records each training it ran (its model)."""
    runs = []

    def tiny(active=None, seed=0):
        torch.manual_seed(seed)
        model = nn.Linear(2, 2)
        runs.append(model)
        return model, History(losses=[1.0], wall_time_s=0.25), {"acc": 0.9}, {"recipe": "tiny", "seed": seed}

    fake_record("tiny", tiny)
    return runs


def _files(folder):
    return {p.name: p.read_bytes() for p in Path(folder).iterdir() if p.name != ".manifest.lock"}


def test_refuses_to_replace_a_shipped_checkpoint_before_training(shipped, trainings, capsys):
    before = _files(shipped)
    with pytest.raises(SystemExit) as exit_:
        main(["tiny", "--profile", "ci"])
    assert exit_.value.code == 2
    assert trainings == []  # nothing was trained
    assert _files(shipped) == before
    message = capsys.readouterr().err
    assert "tiny is already shipped" in message and "{'acc': 0.98}" in message and "Nothing was trained" in message
    assert "python -m course_lib.zoo train tiny --profile ci --out DIR" in message
    assert "python -m course_lib.zoo train tiny --profile ci --force" in message


def test_out_saves_elsewhere_and_keeps_the_shipped_one(shipped, trainings, tmp_path, capsys):
    before = _files(shipped)
    main(["tiny", "--out", str(tmp_path / "mine"), "--seed", "4"])
    assert len(trainings) == 1
    assert _files(shipped) == before
    entry = checkpointing.read_manifest(tmp_path / "mine")["tiny"]
    assert entry["metrics"] == {"acc": 0.9} and entry["recipe"] == {"recipe": "tiny", "seed": 4}
    model = nn.Linear(2, 2)
    checkpointing.load_checkpoint(model, "tiny", directory=tmp_path / "mine")
    assert torch.equal(model.weight, trainings[0].weight)
    assert f"wrote {tmp_path / 'mine' / 'tiny.pt'}" in capsys.readouterr().out


def test_out_refuses_a_folder_that_already_holds_the_name(shipped, trainings, tmp_path, capsys):
    main(["tiny", "--out", str(tmp_path / "mine")])
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        main(["tiny", "--out", str(tmp_path / "mine")])
    assert exit_.value.code == 2 and len(trainings) == 1
    message = capsys.readouterr().err
    assert f"{tmp_path / 'mine'} already holds tiny with metrics {{'acc': 0.9}}" in message
    assert f"--out {tmp_path / 'mine'} --force" in message


def test_force_replaces_the_shipped_one_and_shows_both_metrics(shipped, trainings, capsys):
    main(["tiny", "--force"])
    assert len(trainings) == 1
    assert checkpointing.read_manifest(shipped)["tiny"]["metrics"] == {"acc": 0.9}
    out = capsys.readouterr().out
    assert "replaced the old tiny" in out and "old metrics: {'acc': 0.98}" in out and "new metrics: {'acc': 0.9}" in out


def test_dry_run_trains_but_writes_nothing_even_when_shipped(shipped, trainings, tmp_path, capsys):
    before = _files(shipped)
    main(["tiny", "--dry-run"])
    main(["tiny", "--dry-run", "--out", str(tmp_path / "mine")])
    assert len(trainings) == 2
    assert _files(shipped) == before and not (tmp_path / "mine").exists()
    assert "tiny: {'acc': 0.9}" in capsys.readouterr().out


def test_damaged_target_manifest_is_refused_before_training(shipped, trainings, capsys):
    (shipped / "manifest.json").write_text('{"tiny": ')
    with pytest.raises(SystemExit) as exit_:
        main(["tiny", "--force"])
    assert exit_.value.code == 2 and trainings == []
    assert "not valid JSON" in capsys.readouterr().err


def test_failed_save_rescues_the_trained_weights(shipped, trainings, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(train, "RESCUE_DIR", str(tmp_path / "rescued"))

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpointing, "save_checkpoint", full_disk)
    with pytest.raises(SystemExit) as exit_:
        main(["tiny", "--out", str(tmp_path / "mine")])
    assert exit_.value.code == 1
    [rescued] = (tmp_path / "rescued").glob("tiny-*.pt")
    model = nn.Linear(2, 2)
    model.load_state_dict(torch.load(rescued, weights_only=True))
    assert torch.equal(model.weight, trainings[0].weight)
    details = json.loads(rescued.with_suffix(".json").read_text())
    assert details["metrics"] == {"acc": 0.9} and details["recipe"] == {"recipe": "tiny", "seed": 0}
    message = capsys.readouterr().err
    assert "could not save tiny: OSError: [Errno 28] No space left on device" in message
    assert f"The trained weights are safe in {rescued}" in message
    assert "python -m course_lib.zoo train tiny --out DIR" in message


def test_metrics_json_cannot_store_are_rescued_too(shipped, trainings, tmp_path, monkeypatch, fake_record, capsys):
    monkeypatch.setattr(train, "RESCUE_DIR", str(tmp_path / "rescued"))

    def tiny_with_bad_metrics(active=None, seed=0):
        model, history, _, recipe = trainings_recipe(active, seed)
        return model, history, {"acc": 0.9, "when": object()}, recipe

    trainings_recipe = zoo.MODELS["tiny"].train
    fake_record("tiny", tiny_with_bad_metrics)
    before = _files(shipped)
    with pytest.raises(SystemExit) as exit_:
        main(["tiny", "--force"])
    assert exit_.value.code == 1
    assert _files(shipped) == before  # the shipped checkpoint was not touched
    [rescued] = (tmp_path / "rescued").glob("tiny-*.pt")
    details = json.loads(rescued.with_suffix(".json").read_text())
    assert details["metrics"]["acc"] == 0.9 and details["metrics"]["when"].startswith("<object object")
    message = capsys.readouterr().err
    assert "TypeError: metrics['when'] = " in message and str(rescued) in message
    assert "fix what the error names first, then: python -m course_lib.zoo train tiny --force" in message


def test_rescues_in_the_same_second_do_not_overwrite_each_other(shipped, trainings, tmp_path, monkeypatch):
    monkeypatch.setattr(train, "RESCUE_DIR", str(tmp_path / "rescued"))
    monkeypatch.setattr(train.time, "strftime", lambda fmt: "20250101-000000")

    def read_only(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(checkpointing, "save_checkpoint", read_only)
    for seed in (1, 2):
        with pytest.raises(SystemExit):
            main(["tiny", "--force", "--seed", str(seed)])
    rescued = sorted((tmp_path / "rescued").glob("tiny-*.pt"))
    assert [p.name for p in rescued] == ["tiny-20250101-000000-1.pt", "tiny-20250101-000000.pt"]
    for path, model in zip([rescued[1], rescued[0]], trainings):
        assert torch.equal(torch.load(path, weights_only=True)["weight"], model.weight)


@pytest.fixture
def resumable(monkeypatch, fake_record, tmp_path):
    """A fake resumable record 'slow' whose train runs fit with a state file, and can be interrupted."""
    calls = []

    def slow(active=None, seed=0, state_file=None, interrupt_at=None):
        torch.manual_seed(seed)
        model = nn.Linear(2, 1)
        x = torch.randn(64, 2, generator=torch.Generator().manual_seed(0))
        batches = core_train.minibatches(x, x.sum(1, keepdim=True), batch_size=8, generator=torch.Generator().manual_seed(1))

        def loss(m, batch):
            if calls[-1] == "interrupt" and len(history_steps) == 12:
                raise KeyboardInterrupt  # the learner closes the laptop at step 12
            history_steps.append(1)
            return ((m(batch[0]) - batch[1]) ** 2).mean()

        history_steps = []
        history = core_train.fit(model, loss, batches, steps=30, optimizer=torch.optim.SGD(model.parameters(), lr=0.05),
                            show_progress=False, state_file=state_file, save_every_s=0.0)
        return model, history, {"loss": history.losses[-1]}, {"recipe": "slow", "seed": seed}

    fake_record("slow", slow, resumable=True)
    monkeypatch.setattr(train, "RUNS_DIR", str(tmp_path / "runs"))
    return calls


def test_an_interrupted_run_resumes_and_records_how_it_ran(shipped, resumable, tmp_path, capsys):
    out = tmp_path / "mine"
    resumable.append("interrupt")
    with pytest.raises(KeyboardInterrupt):
        main(["slow", "--profile", "ci", "--out", str(out)])
    state = out / "slow-ci-seed0.state.pt"
    assert state.is_file() and not (out / "slow.pt").exists()
    resumable.append("run")
    with pytest.raises(SystemExit) as exit_:  # starting again without --resume would throw the progress away
        main(["slow", "--profile", "ci", "--out", str(out)])
    assert exit_.value.code == 2 and "--resume" in capsys.readouterr().err
    main(["slow", "--profile", "ci", "--out", str(out), "--resume"])
    assert "resuming from" in capsys.readouterr().out and not state.exists()  # done: nothing left to resume
    entry = checkpointing.read_manifest(out)["slow"]
    assert entry["training"]["steps"] == 30 and entry["training"]["precision"] == "fp32"
    assert entry["training"]["ms_per_step"] > 0 and entry["training"]["machine"]


def test_resume_is_refused_for_a_quick_recipe(shipped, trainings, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["tiny", "--resume", "--force"])
    assert exit_.value.code == 2 and "not resumable" in capsys.readouterr().err
