"""``python -m course_lib.zoo bench`` (``make bench``): what each shipped model reaches now, and how it was made.

For every checkpoint in the manifest: the metric measured now on held-out data, the numbers to read it against,
the profile and device of the run that made it and its training time. ``--retrain`` also reruns each recipe
under the active profile (or ``--profile``) and times it; ``--throughput`` times one training step of each model
in fp32 and on the fast path instead (``course_lib.zoo.throughput``).
"""
from __future__ import annotations

import argparse
import time

from course_lib.core.checkpointing import read_manifest
from course_lib.core.profiles import RECIPE_PROFILES
from course_lib.zoo import throughput
from course_lib.zoo.record import REGISTRY, BenchOptions, Measurement, load_shipped

PROG = "python -m course_lib.zoo bench"


def measure(name: str, options: BenchOptions = BenchOptions()) -> Measurement:
    """Shipped model ``name`` measured now (a :class:`Measurement` of numbers; :func:`format_row` writes it)."""
    entry = read_manifest()[name]
    return REGISTRY[name].evaluate(load_shipped(name), entry, options)


def format_number(value) -> str:
    """The one place numbers become text: 4 significant digits; lists joined by " / "."""
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return " / ".join(format_number(v) for v in value)
    return str(value)


def made_under(entry: dict) -> str:
    """How the checkpoint was made: profile, device, precision (when the manifest records it)."""
    training = entry.get("training", {})
    precision = f", {training['precision']}" if "precision" in training else ""
    return f"{entry['recipe'].get('profile', '?')} on {entry['device']}{precision}"


def format_row(name: str, measurement: Measurement, entry: dict, seconds: float) -> str:
    references = "; ".join(f"{label} {format_number(value)}" for label, value in measurement.references.items())
    return (f"{name:<16} {measurement.metric:<44} {format_number(measurement.value):>8}  {made_under(entry):<22} "
            f"{entry['wall_time_s']:>8.1f} s  {references}   (evaluated in {seconds:.1f} s)")


HEADER = f"{'model':<16} {'metric':<44} {'value':>8}  {'made under':<22} {'train time':>10}  reference"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="shipped models to measure (default: all)")
    parser.add_argument("--retrain", action="store_true", help="rerun each recipe and time it")
    parser.add_argument("--profile", choices=RECIPE_PROFILES, default=None)
    parser.add_argument("--fid-samples", type=int, default=2000, help="samples per FID (default 2000)")
    parser.add_argument("--throughput", action="store_true",
                        help="instead of the metrics: ms per training step in fp32 and on the fast path, images/s, "
                             "GFLOP/s against this machine's peak")
    parser.add_argument("--repeats", type=int, default=5, help="timed steps per model and precision (--throughput)")
    args = parser.parse_args(argv)
    manifest = read_manifest()
    names = args.names or [name for name in REGISTRY if name in manifest]
    unknown = [name for name in names if name not in manifest or name not in REGISTRY]
    if unknown:
        parser.error(f"no shipped model named {', '.join(unknown)}; shipped: "
                     f"{', '.join(n for n in REGISTRY if n in manifest)}")
    if args.throughput:
        print(throughput.report(names, manifest, args.repeats))
        return
    options = BenchOptions(fid_samples=args.fid_samples)
    print(HEADER)
    for name in names:
        start = time.perf_counter()
        result = measure(name, options)
        print(format_row(name, result, manifest[name], time.perf_counter() - start), flush=True)
    if args.retrain:
        for name in names:
            _, history, metrics, recipe = REGISTRY[name].train(args.profile, show_progress=False)
            print(f"{name:<16} retrained under {recipe['profile']}: {metrics} in {history.wall_time_s:.1f} s "
                  f"({history.precision})")
