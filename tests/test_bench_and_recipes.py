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


def test_bench_prints_a_row_per_named_model(capsys):
    bench.main(["mlp_mnist", "mnist_classifier"])
    out = capsys.readouterr().out
    rows = {line.split()[0]: line for line in out.splitlines()[1:]}
    assert set(rows) == {"mlp_mnist", "mnist_classifier"}
    assert float(rows["mlp_mnist"].split("MNIST test accuracy (10k)")[1].split()[0]) >= 0.975
    assert float(rows["mnist_classifier"].split("MNIST test accuracy (10k)")[1].split()[0]) >= 0.99


def test_bench_rejects_unknown_names():
    with pytest.raises(SystemExit):
        bench.main(["no_such_model"])


def test_every_shipped_checkpoint_has_a_model_builder_and_an_evaluator():
    from course_lib.checkpointing import read_manifest
    shipped = set(read_manifest())
    assert shipped <= set(recipes.MODELS) and shipped <= set(bench.EVALUATORS) and shipped <= set(recipes.RECIPES)


def test_classifier_and_ddpm_recipes_run_under_ci():
    _, history, metrics, recipe = recipes.mnist_classifier("ci", show_progress=False)
    assert metrics["test_accuracy"] >= recipes.mnist_classifier_settings("ci").min_test_accuracy
    model, history, metrics, recipe = recipes.ddpm_mnist("ci", show_progress=False)
    assert len(history.losses) == recipe["steps"] and metrics["final_train_loss"] < 1.0
    assert recipe["model"]["widths"] == (16, 32, 64) and not model.training


def test_data_check_reports_mnist(capsys):
    data_main.main()
    assert "MNIST          ok" in capsys.readouterr().out


def test_vit_recipe_runs_under_ci_and_shifts_only_in_the_long_run():
    model, history, metrics, recipe = recipes.vit_mnist("ci", show_progress=False)
    assert len(history.losses) == recipe["steps"] and metrics["test_accuracy"] >= recipe["min_test_accuracy"]
    assert recipe["model"]["patch_size"] == 4 and recipe["max_shift"] == 0
    assert recipes.vit_mnist_settings("gpu").max_shift > 0


def test_bench_shows_the_chapter_04_and_05_bars_are_met(capsys):
    bench.main(["vit_mnist", "dino_shapes", "mae_mnist"])
    rows = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()[1:]}
    assert float(rows["vit_mnist"].split("(10k)")[1].split()[0]) >= 0.985
    assert " beats the centre prior" in rows["dino_shapes"]
    best_head_iou = float(rows["dino_shapes"].split("200 scenes")[1].split()[0])
    centre_prior_iou = float(rows["dino_shapes"].split("patches)")[1].split(";")[0])
    assert best_head_iou > centre_prior_iou + 0.1
    masked_mse = float(rows["mae_mnist"].split("10k")[1].split()[0])
    mean_fill = float(rows["mae_mnist"].split("visible ones)")[1].split(";")[0])
    assert masked_mse < 0.5 * mean_fill
