"""Offline data for the course: nothing here downloads unless you ask for it.

- ``load_mnist``: all 70k MNIST digits, shipped with the course (``files/mnist.npz``).
- ``load_fashion_mnist``: Fashion-MNIST from Debian's ``dataset-fashion-mnist`` or a folder you name.
- ``toy2d``: 2-D distributions with known density and score (Gaussian mixtures, rings, swiss roll).
- ``shapes``: procedurally drawn scenes of circles, squares and triangles with labels, boxes and masks.
- ``images``: natural photos that scikit-image bundles.
"""
from .mnist import FASHION_CLASSES, load_fashion_mnist, load_mnist, read_idx
from .toy2d import GaussianMixture2D, sample_rings, sample_swiss_roll
from .shapes import SHAPE_CLASSES, endless_shapes, make_shapes
from .images import OFFLINE_IMAGES, load_image

__all__ = [
    "load_mnist", "load_fashion_mnist", "read_idx", "FASHION_CLASSES",
    "GaussianMixture2D", "sample_rings", "sample_swiss_roll",
    "make_shapes", "endless_shapes", "SHAPE_CLASSES",
    "load_image", "OFFLINE_IMAGES",
]
