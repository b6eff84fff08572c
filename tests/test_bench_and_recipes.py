"""The command-line entry points: recipes (`python -m course_lib.zoo train`), the bench, the data check."""
import pytest

from course_lib import zoo
from course_lib.core.checkpointing import CHECKPOINT_DIR
from course_lib.data import __main__ as data_main
from course_lib.zoo import bench
from course_lib.zoo import train as train_cli
from course_lib.zoo.bench import measure


def test_mlp_recipe_under_ci_reaches_its_floor():
    _, history, metrics, recipe = zoo.MODELS["mlp_mnist"].train("ci", show_progress=False)
    assert len(history.losses) == recipe["steps"]
    assert metrics["test_accuracy"] >= zoo.settings("mlp_mnist", "ci").min_test_accuracy
    assert recipe["profile"] == "ci" and recipe["recipe"] == "course_lib.zoo.mlp_mnist"


def test_train_cli_dry_run_writes_nothing(capsys):
    before = {p.name: p.stat().st_mtime_ns for p in CHECKPOINT_DIR.iterdir()}
    train_cli.main(["mlp_mnist", "--profile", "ci", "--dry-run"])
    assert "test_accuracy" in capsys.readouterr().out
    assert {p.name: p.stat().st_mtime_ns for p in CHECKPOINT_DIR.iterdir()} == before


def test_train_cli_rejects_unknown_recipes():
    with pytest.raises(SystemExit):
        train_cli.main(["no_such_model", "--profile", "ci"])


def test_bench_prints_a_row_per_named_model(capsys):
    """A smoke test of the table's formatting: a header, then one row per model named."""
    bench.main(["mlp_mnist", "mnist_classifier"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == bench.HEADER and len(lines) == 3
    rows = {line.split()[0]: line for line in lines[1:]}
    assert set(rows) == {"mlp_mnist", "mnist_classifier"}
    assert all("MNIST test accuracy (10k)" in row for row in rows.values())


def test_the_shipped_classifiers_reach_their_bars():
    mlp = measure("mlp_mnist")
    assert mlp.metric == "MNIST test accuracy (10k)" and mlp.value >= 0.975
    assert mlp.references["2-layer MLP, 800 hidden, cross entropy (Simard et al. 2003)"] == 0.984
    classifier = measure("mnist_classifier")
    assert classifier.metric == "MNIST test accuracy (10k)" and classifier.value >= 0.99


def test_bench_rejects_unknown_names():
    with pytest.raises(SystemExit):
        bench.main(["no_such_model"])


def test_every_shipped_checkpoint_has_a_record_with_a_builder_a_trainer_and_an_evaluator():
    from course_lib.core.checkpointing import read_manifest
    shipped = set(read_manifest())
    assert shipped <= set(zoo.MODELS)
    for name in shipped:
        record = zoo.MODELS[name]
        assert record.name == name
        assert callable(record.build) and callable(record.evaluate) and callable(record.train)


def test_classifier_and_ddpm_recipes_run_under_ci():
    _, history, metrics, recipe = zoo.MODELS["mnist_classifier"].train("ci", show_progress=False)
    assert metrics["test_accuracy"] >= zoo.settings("mnist_classifier", "ci").min_test_accuracy
    model, history, metrics, recipe = zoo.MODELS["ddpm_mnist"].train("ci", show_progress=False)
    assert len(history.losses) == recipe["steps"] and metrics["final_train_loss"] < 1.0
    assert recipe["model"]["widths"] == (16, 32, 64) and not model.training


def test_data_check_reports_mnist(capsys):
    data_main.main()
    assert "MNIST          ok" in capsys.readouterr().out


def test_vit_recipe_runs_under_ci_and_shifts_only_in_the_long_run():
    model, history, metrics, recipe = zoo.MODELS["vit_mnist"].train("ci", show_progress=False)
    assert len(history.losses) == recipe["steps"] and metrics["test_accuracy"] >= recipe["min_test_accuracy"]
    assert recipe["model"]["patch_size"] == 4 and recipe["max_shift"] == 0
    assert zoo.settings("vit_mnist", "gpu").max_shift > 0


def test_bench_shows_the_chapter_04_and_05_bars_are_met():
    assert measure("vit_mnist").value >= 0.985
    dino = measure("dino_shapes")
    centre_prior_iou = next(value for label, value in dino.references.items() if label.startswith("centre prior"))
    assert dino.value > centre_prior_iou + 0.1
    mae = measure("mae_mnist")
    mean_fill = mae.references["mean-fill baseline (each hidden pixel = the mean of the visible ones)"]
    assert mae.value < 0.5 * mean_fill
