"""``python -m course_lib.zoo train NAME ...`` or ``python -m course_lib.zoo bench [NAME ...]``."""
import sys

from course_lib.zoo import bench, train

COMMANDS = {"train": train.main, "bench": bench.main}

if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
        sys.exit("usage: python -m course_lib.zoo train NAME [--profile ci|cpu|gpu|shipped] [--out DIR] [--force] "
                 "[--resume]\n       python -m course_lib.zoo bench [NAME ...] [--retrain] [--throughput]")
    COMMANDS[sys.argv[1]](sys.argv[2:])
