"""``python -m course_lib.data``: check the offline data and say what is missing and how to get it."""
from __future__ import annotations

from . import load_fashion_mnist, load_mnist
from .mnist import MNIST_FILE


def main() -> None:
    x, _ = load_mnist("train")  # checks the sha256 of the shipped file
    x_test, _ = load_mnist("test")
    print(f"MNIST          ok: {len(x)} train + {len(x_test)} test images ({MNIST_FILE.name}, sha256 checked)")
    try:
        x, _ = load_fashion_mnist("train")
        print(f"Fashion-MNIST  ok: {len(x)} train images")
    except FileNotFoundError as err:
        print(f"Fashion-MNIST  not installed (optional). {err}")
    print("2-D toys, shapes scenes: generated in code, nothing to prepare")


if __name__ == "__main__":
    main()
