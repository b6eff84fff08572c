"""The command-line entry points: recipes (`python -m course_lib.train`), the bench, the data check."""
import pytest

from course_lib import bench, recipes, train
from course_lib.checkpointing import CHECKPOINT_DIR
from course_lib.data import __main__ as data_main


def test_mlp_recipe_under_ci_reaches_its_floor():
    _, history, metrics, recipe = recipes.mlp_mnist("ci", show_progress=False)
    assert len(history.losses) == recipe["steps"]
    assert metrics["test_accuracy"] >= recipes.mlp_mnist_settings("ci").min_test_accuracy
    assert recipe["profile"] == "ci" and recipe["recipe"] == "course_lib.recipes.mlp_mnist"


def test_train_cli_dry_run_writes_nothing(capsys):
    before = {p.name: p.stat().st_mtime_ns for p in CHECKPOINT_DIR.iterdir()}
    train.main(["mlp_mnist", "--profile", "ci", "--dry-run"])
    assert "test_accuracy" in capsys.readouterr().out
    assert {p.name: p.stat().st_mtime_ns for p in CHECKPOINT_DIR.iterdir()} == before


def test_train_cli_rejects_unknown_recipes():
    with pytest.raises(SystemExit):
        train.main(["no_such_model", "--profile", "ci"])


def test_bench_prints_a_row_per_shipped_model(capsys):
    bench.main([])
    out = capsys.readouterr().out
    assert "mlp_mnist" in out and "MNIST test accuracy" in out
    value = float(out.split("MNIST test accuracy (10k)")[1].split()[0])
    assert value >= 0.975


def test_data_check_reports_mnist(capsys):
    data_main.main()
    assert "MNIST          ok" in capsys.readouterr().out
