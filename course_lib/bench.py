"""``python -m course_lib.bench``: what each shipped model reaches, and how long it took.

For every checkpoint in the manifest: the metric measured now on the held-out data, a reference
number to read it against, the profile and device of the run that made it, and its training wall
time. ``--retrain`` also reruns each recipe under the active profile (or ``--profile``) and times it.
"""
from __future__ import annotations

import argparse
import time

from .backprop import MLP
from .checkpointing import load_checkpoint, read_manifest
from .data import load_mnist
from .recipes import RECIPES
from .train import accuracy


def _mlp_mnist(entry: dict) -> dict:
    model = MLP()
    load_checkpoint(model, "mlp_mnist")
    x_test, y_test = load_mnist("test")
    return {"metric": "MNIST test accuracy (10k)", "value": f"{accuracy(model, x_test, y_test):.4f}",
            "reference": "0.984: 2-layer MLP, 800 hidden, cross entropy (Simard et al. 2003)"}


EVALUATORS = {"mlp_mnist": _mlp_mnist}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m course_lib.bench", description=__doc__.splitlines()[0])
    parser.add_argument("--retrain", action="store_true", help="rerun each recipe and time it")
    parser.add_argument("--profile", choices=("ci", "cpu", "gpu"), default=None)
    args = parser.parse_args(argv)
    manifest = read_manifest()
    print(f"{'model':<12} {'metric':<28} {'value':>8}  {'made under':<16} {'train time':>10}  reference")
    for name, entry in manifest.items():
        start = time.perf_counter()
        row = EVALUATORS[name](entry)
        made = f"{entry['recipe']['profile']} on {entry['device']}"
        print(f"{name:<12} {row['metric']:<28} {row['value']:>8}  {made:<16} {entry['wall_time_s']:>8.1f} s  "
              f"{row['reference']}   (evaluated in {time.perf_counter() - start:.1f} s)")
    if args.retrain:
        for name, recipe in RECIPES.items():
            _, history, metrics, cfg = recipe(args.profile, show_progress=False)
            print(f"{name:<12} retrained under {cfg['profile']}: {metrics} in {history.wall_time_s:.1f} s")


if __name__ == "__main__":
    main()
