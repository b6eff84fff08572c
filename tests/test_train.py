"""course_lib.core.train (minibatches, fit, accuracy, History), course_lib.zoo's records and its train CLI."""
import pytest
import torch
from torch import nn

from course_lib import zoo
from course_lib.core import checkpointing
from course_lib.core.train import History, accuracy, fit, minibatches
from course_lib.topics.backprop import MLP
from course_lib.zoo.train import main


# ------------------------------------------------------------------------------------------ minibatches

def test_minibatches_cover_every_index_once_per_epoch():
    x = torch.arange(12)
    batches = minibatches(x, batch_size=4, generator=torch.Generator().manual_seed(0))
    for _epoch in range(3):
        seen = torch.cat([next(batches)[0] for _ in range(3)])
        assert sorted(seen.tolist()) == list(range(12))


def test_minibatches_batch_shapes_and_alignment():
    x = torch.randn(10, 3, 2)
    y = torch.arange(10) * 7
    batches = minibatches(x, y, batch_size=5, generator=torch.Generator().manual_seed(1))
    for _ in range(4):
        bx, by = next(batches)
        assert bx.shape == (5, 3, 2) and by.shape == (5,)
        assert torch.equal(bx, x[by // 7])  # the rows stay aligned across tensors


def test_minibatches_reshuffle_every_epoch():
    batches = minibatches(torch.arange(32), batch_size=32, generator=torch.Generator().manual_seed(0))
    first, second = next(batches)[0], next(batches)[0]
    assert sorted(first.tolist()) == sorted(second.tolist()) == list(range(32))
    assert not torch.equal(first, second)


def test_minibatches_reproducible_with_a_generator():
    def take(seed):
        batches = minibatches(torch.arange(20), batch_size=4, generator=torch.Generator().manual_seed(seed))
        return [next(batches)[0].tolist() for _ in range(10)]
    assert take(3) == take(3)
    assert take(3) != take(4)


def test_minibatches_without_shuffle_are_in_order():
    batches = minibatches(torch.arange(6), batch_size=2, shuffle=False)
    assert [next(batches)[0].tolist() for _ in range(4)] == [[0, 1], [2, 3], [4, 5], [0, 1]]


def test_minibatches_drop_the_incomplete_last_batch():
    batches = minibatches(torch.arange(10), batch_size=3, generator=torch.Generator().manual_seed(0))
    epoch = [next(batches)[0] for _ in range(3)]
    assert all(len(b) == 3 for b in epoch)
    assert len(set(torch.cat(epoch).tolist())) == 9  # no index twice within an epoch


def test_minibatches_is_endless():
    batches = minibatches(torch.arange(3), batch_size=3)
    for _ in range(100):
        next(batches)


@pytest.mark.parametrize("batch_size", [0, -1, 11, 100])
def test_minibatches_bad_batch_size(batch_size):
    with pytest.raises(ValueError, match=r"batch_size must be in \[1, 10\]"):
        next(minibatches(torch.arange(10), batch_size=batch_size))


def test_minibatches_unequal_lengths():
    with pytest.raises(ValueError, match=r"same length, got \[10, 9\]"):
        next(minibatches(torch.zeros(10, 2), torch.zeros(9), batch_size=2))


def test_minibatches_no_tensors():
    with pytest.raises(ValueError, match="at least one tensor"):
        next(minibatches(batch_size=2))


def test_minibatches_checks_at_the_call():
    with pytest.raises(ValueError):
        minibatches(torch.arange(10), batch_size=0)


# -------------------------------------------------------------------------------------------------- fit

@pytest.fixture
def regression():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(256, 3, generator=g)
    w = torch.tensor([[1.5], [-2.0], [0.5]])
    y = x @ w + 0.3 + 0.01 * torch.randn(256, 1, generator=g)
    torch.manual_seed(0)
    model = nn.Linear(3, 1)
    return model, minibatches(x, y, batch_size=32, generator=g), x, y, w


def mse(model, batch):
    x, y = batch
    return ((model(x) - y) ** 2).mean()


def test_fit_reduces_the_loss(regression):
    model, batches, x, y, w = regression
    before = mse(model, (x, y)).item()
    history = fit(model, mse, batches, steps=200, optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
                  show_progress=False)
    assert isinstance(history, History)
    assert len(history.losses) == 200 and all(isinstance(v, float) for v in history.losses)
    assert mse(model, (x, y)).item() < 1e-3 < before
    assert sum(history.losses[-10:]) < 0.01 * sum(history.losses[:10])
    assert torch.allclose(model.weight.detach(), w.T, atol=0.02)
    assert history.evals == [] and history.last_eval() == {}
    assert history.wall_time_s > 0
    assert not model.training  # left in eval mode


def test_fit_calls_eval_fn_every_eval_every_and_at_the_end(regression):
    model, batches, x, y, _ = regression
    seen = []

    def eval_fn(m):
        seen.append((m.training, torch.is_grad_enabled()))
        return {"mse": mse(m, (x, y)).item()}

    history = fit(model, mse, batches, steps=10, optimizer=torch.optim.SGD(model.parameters(), lr=0.05),
                  eval_fn=eval_fn, eval_every=4, show_progress=False)
    assert [step for step, _ in history.evals] == [4, 8, 10]
    assert seen == [(False, False)] * 3  # eval mode, no gradients
    assert history.last_eval() == history.evals[-1][1]
    assert set(history.last_eval()) == {"mse"}
    assert history.evals[0][1]["mse"] > history.evals[-1][1]["mse"]


def test_fit_eval_at_last_step_only_once(regression):
    model, batches, *_ = regression
    history = fit(model, mse, batches, steps=8, optimizer=torch.optim.SGD(model.parameters(), lr=0.05),
                  eval_fn=lambda m: {"one": 1.0}, eval_every=4, show_progress=False)
    assert [step for step, _ in history.evals] == [4, 8]


def test_fit_eval_only_at_the_end_without_eval_every(regression):
    model, batches, *_ = regression
    history = fit(model, mse, batches, steps=5, optimizer=torch.optim.SGD(model.parameters(), lr=0.05),
                  eval_fn=lambda m: {"one": 1.0}, show_progress=False)
    assert history.evals == [(5, {"one": 1.0})]


def test_fit_trains_in_train_mode(regression):
    model, batches, *_ = regression
    modes = []

    def loss_fn(m, batch):
        modes.append(m.training)
        return mse(m, batch)

    fit(model, loss_fn, batches, steps=3, optimizer=torch.optim.SGD(model.parameters(), lr=0.01),
        eval_fn=lambda m: {}, eval_every=1, show_progress=False)
    assert modes == [True, True, True]


def test_fit_moves_batches_to_device(regression):
    model, batches, *_ = regression
    devices = []

    def loss_fn(m, batch):
        devices.extend(t.device.type for t in batch)
        assert isinstance(batch, tuple)
        return mse(m, batch)

    fit(model, loss_fn, batches, steps=2, optimizer=torch.optim.SGD(model.parameters(), lr=0.01),
        device="cpu", show_progress=False)
    assert devices == ["cpu"] * 4


def test_fit_accepts_a_tensor_batch_and_list_batches():
    model = nn.Linear(2, 1)
    tensors = iter([torch.ones(4, 2)] * 3)
    h = fit(model, lambda m, b: m(b).pow(2).mean(), tensors, steps=3,
            optimizer=torch.optim.SGD(model.parameters(), lr=0.01), device=torch.device("cpu"), show_progress=False)
    assert len(h.losses) == 3
    lists = iter([[torch.ones(4, 2), torch.zeros(4, 1)]] * 2)
    h = fit(model, lambda m, b: (m(b[0]) - b[1]).pow(2).mean(), lists, steps=2,
            optimizer=torch.optim.SGD(model.parameters(), lr=0.01), device="cpu", show_progress=False)
    assert len(h.losses) == 2


def test_fit_with_progress_bar(regression, capsys):
    model, batches, *_ = regression
    history = fit(model, mse, batches, steps=12, optimizer=torch.optim.SGD(model.parameters(), lr=0.01),
                  desc="tiny run", eval_fn=lambda m: {"acc": 0.5}, eval_every=5)
    assert len(history.losses) == 12
    assert "tiny run" in capsys.readouterr().err


def test_fit_non_scalar_loss_mentions_mean(regression):
    model, batches, *_ = regression
    with pytest.raises(ValueError) as err:
        fit(model, lambda m, b: (m(b[0]) - b[1]) ** 2, batches, steps=3,
            optimizer=torch.optim.SGD(model.parameters(), lr=0.01), show_progress=False)
    assert ".mean()" in str(err.value) and "(32, 1)" in str(err.value)


@pytest.mark.parametrize("steps", [0, -5])
def test_fit_steps_must_be_positive(regression, steps):
    model, batches, *_ = regression
    with pytest.raises(ValueError, match="steps must be >= 1"):
        fit(model, mse, batches, steps=steps, optimizer=torch.optim.SGD(model.parameters(), lr=0.01),
            show_progress=False)


def test_fit_stops_when_batches_run_out():
    model = nn.Linear(2, 1)
    with pytest.raises(StopIteration):
        fit(model, lambda m, b: m(b).mean(), iter([torch.ones(1, 2)]), steps=2,
            optimizer=torch.optim.SGD(model.parameters(), lr=0.01), show_progress=False)


def test_history_defaults_and_last_eval():
    h = History()
    assert h.losses == [] and h.evals == [] and h.wall_time_s == 0.0 and h.last_eval() == {}
    h.evals += [(5, {"acc": 0.5}), (10, {"acc": 0.75})]
    assert h.last_eval() == {"acc": 0.75}
    assert History().losses is not History().losses  # no shared default list


# --------------------------------------------------------------------------------------------- accuracy

class FixedClassifier(nn.Module):
    """Predicts the class stored in the first input feature (logits one-hot on it)."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, x):
        return nn.functional.one_hot(x[:, 0].long(), 4).float() * self.scale


def test_accuracy_on_a_hand_made_model():
    x = torch.tensor([[0.0], [1.0], [2.0], [3.0], [1.0]])
    model = FixedClassifier()
    assert accuracy(model, x, torch.tensor([0, 1, 2, 3, 1])) == 1.0
    assert accuracy(model, x, torch.tensor([0, 1, 2, 0, 0])) == 0.6
    assert accuracy(model, x, torch.tensor([3, 3, 3, 0, 0])) == 0.0


def test_accuracy_batches_and_restores_mode():
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 4, (2501, 1), generator=g).float()
    y = x[:, 0].long().clone()
    y[::5] = (y[::5] + 1) % 4  # every 5th wrong: 501 of 2501
    model = FixedClassifier().train()
    assert accuracy(model, x, y, batch_size=7) == pytest.approx(2000 / 2501)
    assert accuracy(model, x, y) == pytest.approx(2000 / 2501)
    assert model.training
    model.eval()
    accuracy(model, x, y)
    assert not model.training


def test_accuracy_uses_no_grad_and_eval_mode():
    seen = []

    class Spy(FixedClassifier):
        def forward(self, x):
            seen.append((self.training, torch.is_grad_enabled()))
            return super().forward(x)

    accuracy(Spy().train(), torch.zeros(3, 1), torch.zeros(3, dtype=torch.long))
    assert seen == [(False, False)]


def test_accuracy_length_mismatch():
    with pytest.raises(ValueError, match="3 vs 2"):
        accuracy(FixedClassifier(), torch.zeros(3, 1), torch.zeros(2, dtype=torch.long))


# ---------------------------------------------------------------------------------------- recipes, main

def test_mlp_mnist_settings_per_profile():
    ci, cpu, gpu = (zoo.settings("mlp_mnist", p) for p in ("ci", "cpu", "gpu"))
    assert (ci.profile, cpu.profile, gpu.profile) == ("ci", "cpu", "gpu")
    assert ci.n_train < cpu.n_train == gpu.n_train == 60_000
    assert ci.steps < cpu.steps < gpu.steps
    assert 0.5 < ci.min_test_accuracy <= cpu.min_test_accuracy <= gpu.min_test_accuracy < 1
    with pytest.raises(ValueError, match="ci, cpu, gpu"):
        zoo.settings("mlp_mnist", "big")


def test_mlp_mnist_recipe_runs(monkeypatch):
    from types import SimpleNamespace
    tiny = SimpleNamespace(profile="ci", n_train=600, steps=40, batch_size=50, lr=0.05, min_test_accuracy=0.5)
    monkeypatch.setattr(zoo.mlp_mnist, "settings", lambda active=None: tiny)
    model, history, metrics, recipe = zoo.MODELS["mlp_mnist"].train("ci", seed=0, show_progress=False)
    assert isinstance(model, MLP) and model.fc1.out_features == 500
    assert len(history.losses) == 40 and [s for s, _ in history.evals] == [10, 20, 30, 40]
    assert set(metrics) == {"test_accuracy", "final_train_loss"}
    assert metrics["test_accuracy"] > tiny.min_test_accuracy
    assert recipe["recipe"] == "course_lib.zoo.mlp_mnist" and recipe["seed"] == 0 and recipe["steps"] == 40
    assert {"mlp_mnist", "mnist_classifier", "ddpm_mnist"} <= set(zoo.MODELS)


def _tiny_recipe(active=None, seed=0):
    model = nn.Linear(2, 2)
    return model, History(losses=[1.0], wall_time_s=0.25), {"acc": 1.0}, {"recipe": "tiny", "seed": seed}


def test_main_dry_run_writes_nothing(monkeypatch, fake_record, tmp_path, capsys):
    fake_record("tiny", _tiny_recipe)
    written = []
    monkeypatch.setattr(checkpointing, "save_checkpoint", lambda *a, **k: written.append(a))
    main(["tiny", "--dry-run", "--seed", "3"])
    assert written == []
    assert "tiny: {'acc': 1.0}" in capsys.readouterr().out


def test_main_saves_the_checkpoint(monkeypatch, fake_record, tmp_path, capsys):
    fake_record("tiny", _tiny_recipe)
    real_save = checkpointing.save_checkpoint
    monkeypatch.setattr(checkpointing, "save_checkpoint",
                        lambda *a, **k: real_save(*a, **k, directory=tmp_path))
    main(["tiny", "--profile", "ci", "--seed", "5"])
    entry = checkpointing.read_manifest(tmp_path)["tiny"]
    assert entry["recipe"] == {"recipe": "tiny", "seed": 5} and entry["metrics"] == {"acc": 1.0}
    assert entry["wall_time_s"] == round(0.25, 1)
    assert (tmp_path / "tiny.pt").is_file()
    assert "wrote" in capsys.readouterr().out


def test_main_unknown_recipe_or_profile(capsys):
    with pytest.raises(SystemExit):
        main(["no_such_recipe"])
    with pytest.raises(SystemExit):
        main(["mlp_mnist", "--profile", "tpu"])
    assert "invalid choice" in capsys.readouterr().err


# -------------------------------------------------------------------------------------------------- clear errors

def test_fit_stops_at_the_first_non_finite_loss(regression):
    """A too-large learning rate used to train on silently: every weight NaN, no error."""
    from course_lib.core.train import TrainingDiverged
    model, batches, *_ = regression
    with pytest.raises(TrainingDiverged, match=r"at step \d+; the last finite loss was .* learning rate \(now 1e\+03\)"):
        fit(model, mse, batches, steps=200, optimizer=torch.optim.SGD(model.parameters(), lr=1e3), show_progress=False)
    assert all(torch.isfinite(p).all() for p in model.parameters())  # stopped before the NaN reached the weights


def test_fit_names_nan_in_the_data():
    from course_lib.core.train import TrainingDiverged
    x = torch.randn(64, 3)
    x[5, 1] = float("nan")
    model = nn.Linear(3, 1)
    with pytest.raises(TrainingDiverged, match="check the data"):
        fit(model, lambda m, b: m(b[0]).pow(2).mean(), minibatches(x, batch_size=64), steps=3,
            optimizer=torch.optim.SGD(model.parameters(), lr=0.1), show_progress=False)


@pytest.mark.parametrize("bad, message", [("gpu", "not a device name"), ("cuda", "no CUDA GPU")])
def test_fit_bad_device_is_named(regression, monkeypatch, bad, message):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    model, batches, *_ = regression
    with pytest.raises(ValueError, match=message):
        fit(model, mse, batches, steps=1, optimizer=torch.optim.SGD(model.parameters(), lr=0.1), device=bad,
            show_progress=False)


def test_accuracy_on_empty_input_is_an_error_not_a_division_by_zero():
    with pytest.raises(ValueError, match="empty"):
        accuracy(nn.Linear(3, 2), torch.zeros(0, 3), torch.zeros(0, dtype=torch.long))


# -------------------------------------------------------------------------------------------------- EMA

def test_ema_without_warmup_is_the_plain_average():
    from course_lib.core.train import EMA
    model = torch.nn.Linear(2, 1)
    ema = EMA(model, decay=0.75, warmup=False)
    with torch.no_grad():
        old = ema.model.weight.clone()
        model.weight.add_(1.0)
    ema.update(model)
    assert torch.allclose(ema.model.weight, 0.75 * old + 0.25 * model.weight)
    assert not ema.model.weight.requires_grad
    with pytest.raises(ValueError):
        EMA(model, decay=1.0)


def test_ema_warmup_forgets_the_initial_weights():
    """EMA(0.999) without warm-up kept 0.999^3000 = 5% of the random initial weights after 3,000 steps."""
    from course_lib.core.train import EMA
    model = torch.nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(0.0)
    ema = EMA(model, decay=0.999)
    assert [round(ema.current_decay(), 4) for _ in range(1)] == [0.1]
    weight_of_start = 1.0
    for t in range(3000):
        weight_of_start *= ema.current_decay()
        with torch.no_grad():
            model.weight.fill_(1.0)  # every trained step says 1; the initialisation said 0
        ema.update(model)
    assert ema.updates == 3000 and ema.current_decay() == (1 + 3000) / (10 + 3000)  # 0.997; 0.999 from t = 8,990
    assert weight_of_start < 1e-4 and abs(ema.model.weight.item() - (1 - weight_of_start)) < 1e-5
    assert 0.999 ** 3000 > 0.04  # what the average kept without the warm-up


# -------------------------------------------------------------------------------------------------- fast path, resume

def test_resolve_precision(monkeypatch):
    from course_lib.core import train as T
    monkeypatch.delenv(T.PRECISION_ENV, raising=False)
    assert T.resolve_precision("fp32") == "fp32" and T.resolve_precision("bf16") == "bf16"
    monkeypatch.setattr(T, "_cpu_has_bf16", lambda: False)
    assert T.resolve_precision("auto", "cpu") == "fp32"
    monkeypatch.setattr(T, "_cpu_has_bf16", lambda: True)
    assert T.resolve_precision("auto", "cpu") == "bf16"
    monkeypatch.setenv(T.PRECISION_ENV, "fp32")  # run as a machine without bf16 would
    assert T.resolve_precision("auto", "cpu") == "fp32" and T.resolve_precision("bf16") == "bf16"
    with pytest.raises(ValueError, match="precision must be one of"):
        T.resolve_precision("fp16")


@pytest.mark.parametrize("precision, channels_last", [("bf16", False), ("fp32", True)])
def test_fit_fast_path_trains_and_records_how(regression, precision, channels_last):
    conv = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 8 * 8, 1))
    x = torch.randn(64, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    y = x.mean((1, 2, 3))[:, None]
    history = fit(conv, mse, minibatches(x, y, batch_size=16), steps=60, optimizer=torch.optim.Adam(conv.parameters(), 1e-2),
                  precision=precision, channels_last=channels_last, show_progress=False)
    assert history.precision == precision and history.channels_last == channels_last
    assert sum(history.losses[-10:]) < sum(history.losses[:10])
    assert conv[0].weight.is_contiguous()  # back to the usual layout for saving and for the chapters
    record = history.training_record()
    assert record["precision"] == precision and record["steps"] == 60 and record["ms_per_step"] > 0


def test_fit_resumes_exactly_where_it_stopped(tmp_path):
    """Ten steps, an interruption, ten more from the state file == twenty steps in one go (EMA, scheduler,
    batch order and the global RNG included)."""
    from course_lib.core.train import EMA

    def run(steps, state_file=None):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(3, 8), nn.ReLU(), nn.Linear(8, 1))
        x = torch.randn(100, 3, generator=torch.Generator().manual_seed(1))
        y = x.sum(1, keepdim=True)
        batches = minibatches(x, y, batch_size=16, generator=torch.Generator().manual_seed(2))
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, 5, 0.5)
        ema = EMA(model, 0.9)

        def noisy_mse(m, batch):  # draws from the global RNG, as ddpm_loss does
            return mse(m, (batch[0] + 0.1 * torch.randn(batch[0].shape), batch[1]))

        history = fit(model, noisy_mse, batches, steps=steps, optimizer=optimizer, scheduler=scheduler,
                      after_step=ema.update, show_progress=False, state_file=state_file,
                      extra_state={"ema": ema})
        return model, ema, history

    straight, straight_ema, straight_history = run(20)
    state = tmp_path / "run.pt"
    run(10, state)  # the interrupted run: its last state is on disk
    assert state.is_file()
    torch.manual_seed(123)  # whatever happened in between
    resumed, resumed_ema, resumed_history = run(20, state)
    for a, b in zip(list(straight.parameters()) + list(straight_ema.model.parameters()),
                    list(resumed.parameters()) + list(resumed_ema.model.parameters())):
        assert torch.equal(a, b)
    assert resumed_history.losses == straight_history.losses and resumed_ema.updates == 20
    with pytest.raises(ValueError, match="past the 5 steps"):
        run(5, state)
