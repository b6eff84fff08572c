"""course_lib: the small library behind the course's chapters, layered like the course.

- ``core``: the machinery every chapter uses: run profiles, device and seeds, the training loop (``fit``,
  ``minibatches``, ``EMA``, the bf16 fast path, resumable runs), checkpoints with a manifest, exercise checks,
  plots, the interactive-figure widget, and ``layers`` (time embeddings, pixel ranges)
- ``data``: offline MNIST, Fashion-MNIST, 2-D toys, shapes scenes, bundled photos
- ``eval``: sample quality, the FID on a shipped MNIST classifier's features with its real-vs-real floor
- ``topics``: one module per topic, in chapter order (losses, backprop | spectral | cnn | vit, cvt | dino, mae |
  boxes, yolo, detr, maskformer | clip | vae | gan, draggan | score | unet, diffusion | guidance | ldm, dit); each
  imports only core, data, eval and earlier chapters' topics, and names the chapter section that teaches it
- ``zoo``: every shipped model as one record (settings per profile, training, building, measuring),
  ``load_shipped``, the bench, ``python -m course_lib.zoo train|bench NAME``, and ``checkpoints/``
- ``tools``: ``make time`` and ``make student``; never imported by a chapter

The layers are checked by import-linter (``.importlinter``, run by ``make test``).
"""
from course_lib.core.profiles import PROFILES, per_profile, profile
from course_lib.core.runtime import device, seed_everything, use_profile_threads

__version__ = "0.1.0"
__all__ = ["PROFILES", "profile", "per_profile", "device", "seed_everything", "use_profile_threads"]

use_profile_threads()  # 1 torch thread per process under COURSE_PROFILE=ci (see runtime.py)
