"""The shipped models: one record each, in chapter order.

Each model's module (``course_lib/zoo/NAME.py``) holds everything about its checkpoint: ``settings`` per
profile, ``train`` (what ``python -m course_lib.zoo train NAME`` runs), ``build`` (the model rebuilt from its
manifest entry), ``evaluate`` (what ``python -m course_lib.zoo bench NAME`` prints) and ``training_step`` (what
``bench --throughput`` times), and ends with ``RECORD = register(ShippedModel(...))``. To add a shipped model,
write such a module and import it below; the bench, the train CLI, ``load_shipped`` and the offline test read
the registry. The weights and ``manifest.json`` live in ``course_lib/zoo/checkpoints/``.

    from course_lib.zoo import load_shipped, settings
    model = load_shipped("ddpm_mnist")
    settings("ddpm_mnist", "cpu").steps
"""
from course_lib.zoo import (mlp_mnist, mnist_classifier, cnn_fashion, vit_mnist, dino_shapes, mae_mnist,  # noqa: F401
                            detr_shapes, clip_mnist, vae_mnist, vae_mnist_2d, gan_mnist, ncsn_2d, ddpm_mnist,
                            cfg_mnist, ldm_autoencoder, dit_mnist)
from course_lib.zoo import (restorer_mnist_l2, restorer_mnist_perceptual, restorer_mnist_adversarial,  # noqa: F401
                            student_mnist)  # chapter 15, A, B, D
from course_lib.zoo import seg_unet_shapes  # noqa: F401
from course_lib.zoo import sam_shapes  # noqa: F401
from course_lib.zoo import sr3_mnist, cascade_base_mnist, colorize_shapes  # noqa: F401,E402  chapter 15, C
from course_lib.zoo.ddpm_mnist import load_ddpm_mnist
from course_lib.zoo.record import (REGISTRY, BenchOptions, Measurement, ShippedModel, Trained, load_shipped,
                                   register)

MODELS = REGISTRY  # every shipped model's record, by name


def settings(name: str, active: str | None = None):
    """The settings of shipped model ``name`` under the active profile (or ``active``)."""
    if name not in MODELS:
        raise KeyError(f"no shipped model named {name!r}; known: {', '.join(MODELS)}")
    return MODELS[name].settings(active)


__all__ = ["MODELS", "BenchOptions", "Measurement", "ShippedModel", "Trained", "load_ddpm_mnist", "load_shipped",
           "register", "settings"]
