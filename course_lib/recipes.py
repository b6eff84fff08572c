"""The recipes that make the shipped checkpoints, one function per checkpoint.

Run one with ``python -m course_lib.train NAME --profile cpu|gpu``; it trains, evaluates, and
writes ``course_lib/checkpoints/NAME.pt`` plus its manifest entry. The chapters use the same
settings (``*_settings()``) for their "train it yourself" cells.
"""
from __future__ import annotations

import os

import torch

from . import checkpointing, clip, detr
from .backprop import MLP, mlp_loss
from .clip import TinyCLIP
from .cnn import SmallCNN, classification_loss, random_crop_flip
from .data import load_fashion_mnist, load_mnist
from .detr import TinyDETR
from .diffusion import NoiseSchedule, ddpm_loss, to_model_range
from .dino import DINO, evaluate_dino, train_dino
from .dit import DiT
from .gan import DCGANDiscriminator, DCGANGenerator, recalibrate_batchnorm, train_dcgan
from .gan import sample_quality as gan_sample_quality
from .guidance import cfg_loss, evaluate_cfg
from .ldm import (KLAutoencoder, autoencoder_loss, balanced_labels, encode_latents, evaluate_autoencoder,
                  latent_ddpm_loss, sample_latent_diffusion, set_scale_factor)
from .mae import MAE, train_mae
from .metrics import MnistClassifier, quality_of_samples, sample_quality
from .profiles import per_profile
from .runtime import as_device, device, seed_everything
from .score import NoiseConditionalScoreNet, evaluate_ncsn, geometric_sigmas, ncsn_loss, toy_mixture
from .train import EMA, FAST, accuracy, fit, minibatches, warmup_cosine
from .unet import UNet
from .vae import ConvVAE, binarized_mnist, evaluate_elbo, evaluate_iwae, vae_loss
from .vit import ViT


def mlp_mnist_settings(active: str | None = None):
    """Chapter 01's MLP: 784-500-10, SGD with momentum, full MNIST except under ``ci``."""
    return per_profile(
        ci=dict(n_train=5_000, steps=300, batch_size=64, lr=0.05, min_test_accuracy=0.88),
        cpu=dict(n_train=60_000, steps=4_700, batch_size=128, lr=0.05, min_test_accuracy=0.975),
        gpu=dict(n_train=60_000, steps=9_400, batch_size=128, lr=0.05, min_test_accuracy=0.98),
        active=active,
    )


def _train_mnist_classifier(build_model, make_optimizer, cfg, seed, desc, show_progress, cosine_decay=False,
                            loss_fn=mlp_loss):
    """The loop the MNIST classifiers share: train on ``cfg.n_train`` digits, report test accuracy
    (on the first ``cfg.n_test`` test digits when the settings name it, else on all 10,000).

    With ``cosine_decay`` the learning rate warms up for ``cfg.warmup_steps`` (default: 5% of the
    steps), then follows a cosine to zero. ``build_model()`` runs after the seeding, so the initial
    weights are seeded too.
    """
    generator = seed_everything(seed)
    model = build_model()
    dev = device()
    x_train, y_train = load_mnist("train")
    x_test, y_test = load_mnist("test")
    x_train, y_train = x_train[:cfg.n_train], y_train[:cfg.n_train]
    x_test, y_test = x_test[:getattr(cfg, "n_test", None)], y_test[:getattr(cfg, "n_test", None)]
    model = model.to(dev)
    optimizer = make_optimizer(model.parameters())
    warmup_steps = getattr(cfg, "warmup_steps", cfg.steps // 20)
    scheduler = warmup_cosine(optimizer, warmup_steps, cfg.steps) if cosine_decay else None
    batches = minibatches(x_train, y_train, batch_size=cfg.batch_size, generator=generator)
    history = fit(model, loss_fn, batches, steps=cfg.steps, optimizer=optimizer, device=dev, scheduler=scheduler,
                  eval_fn=lambda m: {"test_acc": accuracy(m, x_test, y_test)}, eval_every=max(cfg.steps // 4, 1),
                  desc=desc, show_progress=show_progress, **FAST)
    metrics = {"test_accuracy": round(history.last_eval()["test_acc"], 4),
               "final_train_loss": round(sum(history.losses[-50:]) / len(history.losses[-50:]), 4)}
    return model, history, metrics


def mlp_mnist(active: str | None = None, seed: int = 0, show_progress: bool = True):
    """Train chapter 01's MLP; return ``(model, history, metrics, recipe)``."""
    cfg = mlp_mnist_settings(active)
    model, history, metrics = _train_mnist_classifier(
        lambda: MLP(n_hidden=500), lambda params: torch.optim.SGD(params, lr=cfg.lr, momentum=0.9), cfg, seed,
        "MLP on MNIST", show_progress)
    return model, history, metrics, {"recipe": "course_lib.recipes.mlp_mnist", "seed": seed, **vars(cfg)}


def mnist_classifier_settings(active: str | None = None):
    """The CNN whose features the FID uses (chapters 08-13): Adam with a cosine decay."""
    return per_profile(
        ci=dict(n_train=5_000, steps=150, batch_size=64, lr=1e-3, min_test_accuracy=0.9),
        cpu=dict(n_train=60_000, steps=1_900, batch_size=128, lr=2e-3, min_test_accuracy=0.988),
        gpu=dict(n_train=60_000, steps=4_700, batch_size=128, lr=2e-3, min_test_accuracy=0.99),
        active=active,
    )


def mnist_classifier(active: str | None = None, seed: int = 0, show_progress: bool = True):
    """Train the FID feature extractor; return ``(model, history, metrics, recipe)``."""
    cfg = mnist_classifier_settings(active)
    model, history, metrics = _train_mnist_classifier(
        MnistClassifier, lambda params: torch.optim.Adam(params, lr=cfg.lr), cfg, seed,
        "MNIST classifier", show_progress, cosine_decay=True)
    return model, history, metrics, {"recipe": "course_lib.recipes.mnist_classifier", "seed": seed, **vars(cfg)}


def vit_mnist_settings(active: str | None = None):
    """Chapter 04's tiny ViT on MNIST: 4x4 patches (a 7x7 grid), AdamW with warm-up and cosine decay;
    the long run also shifts each training digit by up to ``max_shift`` pixels (a ViT has no built-in
    translation invariance, so it has to learn it from data)."""
    model = dict(image_size=28, patch_size=4, channels=1, dim=64, depth=4, heads=4, mlp_ratio=2.0, num_classes=10)
    return per_profile(
        ci=dict(model=model, n_train=5_000, n_test=1_000, steps=80, batch_size=64, lr=2e-3, weight_decay=0.05,
                warmup_steps=8, max_shift=0, min_test_accuracy=0.2),
        cpu=dict(model=model, n_train=60_000, n_test=10_000, steps=2_200, batch_size=128, lr=2e-3, weight_decay=0.05,
                 warmup_steps=110, max_shift=0, min_test_accuracy=0.975),
        gpu=dict(model=model, n_train=60_000, n_test=10_000, steps=7_000, batch_size=128, lr=2e-3, weight_decay=0.05,
                 warmup_steps=350, max_shift=2, min_test_accuracy=0.985),
        active=active,
    )


def vit_mnist(active: str | None = None, seed: int = 0, show_progress: bool = True):
    """Train chapter 04's ViT; return ``(model, history, metrics, recipe)``."""
    cfg = vit_mnist_settings(active)
    shifts = torch.Generator().manual_seed(seed + 1)

    def shift(images):
        return random_crop_flip(images, cfg.max_shift, flip=False, generator=shifts)

    def loss_fn(model, batch):
        return classification_loss(model, batch, shift)

    model, history, metrics = _train_mnist_classifier(
        lambda: ViT(**cfg.model), lambda params: torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay),
        cfg, seed, "ViT on MNIST", show_progress, cosine_decay=True, loss_fn=loss_fn)
    return model, history, metrics, {"recipe": "course_lib.recipes.vit_mnist", "seed": seed, **vars(cfg)}


def ddpm_mnist_settings(active: str | None = None):
    """Chapter 11's U-Net DDPM on MNIST: L_simple, Adam with warm-up and cosine decay, EMA weights (with warm-up).

    ``cpu`` is the learner's run in chapter 11 (bf16 where the CPU has it: under 5 minutes on 2 cores);
    ``shipped`` made the shipped checkpoint (2 CPU cores, bf16, under 2 hours); ``gpu`` is the full recipe, a
    wider U-Net trained longer."""
    return per_profile(
        ci=dict(widths=(16, 32, 64), steps=20, batch_size=32, lr=1e-3, ema_decay=0.9, T=1000, fid_samples=0),
        cpu=dict(widths=(16, 32, 64), steps=1_000, batch_size=128, lr=2e-3, ema_decay=0.995, T=1000, fid_samples=0),
        shipped=dict(widths=(16, 32, 64), steps=26_000, batch_size=128, lr=2e-3, ema_decay=0.999, T=1000,
                     fid_samples=2_000),
        gpu=dict(widths=(32, 64, 128), steps=60_000, batch_size=256, lr=2e-3, ema_decay=0.9995, T=1000,
                 fid_samples=2_000),
        active=active,
    )


def ddpm_mnist(active: str | None = None, seed: int = 0, show_progress: bool = True, state_file=None):
    """Train the MNIST DDPM; return ``(ema_model, history, metrics, recipe)`` (the EMA weights are what ships)."""
    cfg = ddpm_mnist_settings(active)
    generator = seed_everything(seed)
    dev = device()
    x_train = to_model_range(load_mnist("train")[0])  # (60000, 1, 28, 28) in [-1, 1]
    schedule = NoiseSchedule.linear(cfg.T)
    model = UNet(widths=cfg.widths).to(dev)
    ema = EMA(model, cfg.ema_decay)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    batches = minibatches(x_train, batch_size=cfg.batch_size, generator=generator)
    history = fit(model, lambda m, batch: ddpm_loss(m, batch[0], schedule), batches, steps=cfg.steps,
                  optimizer=optimizer, device=dev, scheduler=warmup_cosine(optimizer, min(200, cfg.steps // 10), cfg.steps),
                  clip_grad_norm=1.0, after_step=ema.update, desc="DDPM on MNIST", show_progress=show_progress,
                  state_file=state_file, extra_state={"ema": ema}, **FAST)
    metrics = {"final_train_loss": round(sum(history.losses[-100:]) / len(history.losses[-100:]), 4)}
    if cfg.fid_samples and "mnist_classifier" in checkpointing.read_manifest():
        metrics.update(sample_quality(ema.model, n=cfg.fid_samples, sampler="ddim", steps=50, seed=seed))
    recipe = {"recipe": "course_lib.recipes.ddpm_mnist", "seed": seed, "model": ema.model.config, **vars(cfg)}
    return ema.model, history, metrics, recipe


def ncsn_2d_settings(active: str | None = None):
    """Chapter 10's noise-conditional score network on ``course_lib.score.toy_mixture()`` (8 modes, 2-D).

    Ten geometric noise levels from sigma_max = 8 (the data's diameter) to sigma_min = 0.1, the
    sigma^2-weighted DSM loss, Adam with warm-up and cosine decay; sampled by annealed Langevin
    with eps = 2e-3 (so alpha_i / sigma_i^2 = eps / sigma_min^2 = 0.2) and ``steps_per_level`` steps per level.
    """
    return per_profile(
        ci=dict(n_train=100_000, steps=300, batch_size=256, lr=2e-3, hidden=128, sigma_max=8.0, sigma_min=0.1,
                n_levels=10, eps=2e-3, steps_per_level=100, eval_samples=500),
        cpu=dict(n_train=100_000, steps=10_000, batch_size=512, lr=2e-3, hidden=128, sigma_max=8.0, sigma_min=0.1,
                 n_levels=10, eps=2e-3, steps_per_level=100, eval_samples=2_000),
        gpu=dict(n_train=100_000, steps=30_000, batch_size=1_024, lr=2e-3, hidden=128, sigma_max=8.0, sigma_min=0.1,
                 n_levels=10, eps=2e-3, steps_per_level=100, eval_samples=2_000),
        active=active,
    )


def ncsn_2d(active: str | None = None, seed: int = 0, show_progress: bool = True):
    """Train chapter 10's 2-D NCSN; return ``(model, history, metrics, recipe)``."""
    cfg = ncsn_2d_settings(active)
    generator = seed_everything(seed)
    dev = device()
    x_train = toy_mixture().sample(cfg.n_train, generator)  # (n_train, 2)
    sigmas = geometric_sigmas(cfg.sigma_max, cfg.sigma_min, cfg.n_levels)  # (L,)
    model = NoiseConditionalScoreNet(hidden=cfg.hidden).to(dev)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    batches = minibatches(x_train, batch_size=cfg.batch_size, generator=generator)
    history = fit(model, lambda m, batch: ncsn_loss(m, batch[0], sigmas, generator), batches, steps=cfg.steps,
                  optimizer=optimizer, device=dev, scheduler=warmup_cosine(optimizer, cfg.steps // 20, cfg.steps),
                  desc="NCSN on 2-D", show_progress=show_progress)
    metrics = {"final_train_loss": round(sum(history.losses[-200:]) / len(history.losses[-200:]), 4),
               **evaluate_ncsn(model, sigmas, n=cfg.eval_samples, seed=seed, eps=cfg.eps,
                               steps_per_level=cfg.steps_per_level)}
    recipe = {"recipe": "course_lib.recipes.ncsn_2d", "seed": seed, "model": model.config, **vars(cfg)}
    return model, history, metrics, recipe


VAE_BINARIZATION = ("Bernoulli likelihood on binarized pixels: training images re-binarized every batch (dynamic), "
                    "test images binarized once with torch.bernoulli and seed 0 (course_lib.vae.binarized_mnist)")


def _vae_settings(latent_dim: int, gpu_steps: int, max_test_neg_elbo: tuple[float, float, float], active):
    """The conv VAE's settings per profile; only the latent size, the long run and the bars differ."""
    ci_bar, cpu_bar, gpu_bar = max_test_neg_elbo
    common = dict(latent_dim=latent_dim, channels=(32, 64), hidden=128, lr=2e-3)
    return per_profile(
        ci=dict(**common, n_train=5_000, steps=60, batch_size=64, warmup=10, iwae_k=0, max_test_neg_elbo=ci_bar),
        cpu=dict(**common, n_train=60_000, steps=2_000, batch_size=128, warmup=100, iwae_k=100,
                 max_test_neg_elbo=cpu_bar),
        gpu=dict(**common, n_train=60_000, steps=gpu_steps, batch_size=128, warmup=200, iwae_k=100,
                 max_test_neg_elbo=gpu_bar),
        active=active,
    )


def vae_mnist_settings(active: str | None = None):
    """Chapter 08's conv VAE, 16-d latent, on binarized MNIST: Adam with warm-up and cosine decay."""
    return _vae_settings(16, gpu_steps=12_000, max_test_neg_elbo=(260.0, 105.0, 95.0), active=active)


def vae_mnist_2d_settings(active: str | None = None):
    """The same VAE with a 2-D latent, for chapter 08's latent-grid, interpolation and beta widgets."""
    return _vae_settings(2, gpu_steps=6_000, max_test_neg_elbo=(270.0, 160.0, 150.0), active=active)


def _train_vae(name: str, cfg, seed: int, show_progress: bool):
    generator = seed_everything(seed)
    dev = device()
    x_train = load_mnist("train")[0][:cfg.n_train]  # grey values; vae_loss binarizes each batch afresh
    x_test = binarized_mnist("test", seed=0)  # (10000, 1, 28, 28) of 0/1, fixed
    model = ConvVAE(latent_dim=cfg.latent_dim, channels=cfg.channels, hidden=cfg.hidden).to(dev)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    batches = minibatches(x_train, batch_size=cfg.batch_size, generator=generator)
    history = fit(model, vae_loss, batches, steps=cfg.steps, optimizer=optimizer, device=dev,
                  scheduler=warmup_cosine(optimizer, cfg.warmup, cfg.steps),
                  eval_fn=lambda m: evaluate_elbo(m, x_test[:2000]), eval_every=max(cfg.steps // 5, 1),
                  desc=f"VAE (latent {cfg.latent_dim}) on MNIST", show_progress=show_progress, **FAST)
    test = evaluate_elbo(model, x_test)
    metrics = {"test_neg_elbo_nats": round(test["neg_elbo"], 2), "test_reconstruction_nats": round(test["reconstruction"], 2),
               "test_kl_nats": round(test["kl"], 2)}
    if cfg.iwae_k:
        metrics[f"test_neg_iwae_k{cfg.iwae_k}_nats"] = round(evaluate_iwae(model, x_test, k=cfg.iwae_k), 2)
    recipe = {"recipe": f"course_lib.recipes.{name}", "seed": seed, "model": model.config,
              "data": VAE_BINARIZATION, **vars(cfg)}
    return model, history, metrics, recipe


def vae_mnist(active: str | None = None, seed: int = 0, show_progress: bool = True):
    """Train chapter 08's 16-d conv VAE; return ``(model, history, metrics, recipe)``; metrics in nats per image."""
    return _train_vae("vae_mnist", vae_mnist_settings(active), seed, show_progress)


def vae_mnist_2d(active: str | None = None, seed: int = 0, show_progress: bool = True):
    """Train chapter 08's 2-D-latent conv VAE; return ``(model, history, metrics, recipe)``."""
    return _train_vae("vae_mnist_2d", vae_mnist_2d_settings(active), seed, show_progress)


def cnn_fashion_settings(active: str | None = None):
    """Chapter 03's SmallCNN on Fashion-MNIST: left-right flips, Adam with warm-up and cosine decay.

    ``crop_padding > 0`` would add random crops; on this short schedule they slowed the fit more than they helped
    (test accuracy after 1,000 steps at lr 2e-3: 0.862 with 2-pixel crops and flips, 0.879 with flips only).
    """
    model = dict(channels=(32, 64, 128), first_kernel=5, in_channels=1, num_classes=10, batch_norm=True)
    return per_profile(
        ci=dict(model=model, n_train=10_000, steps=60, batch_size=64, lr=5e-3, warmup_steps=6, crop_padding=0,
                min_test_accuracy=0.55),
        cpu=dict(model=model, n_train=60_000, steps=1_000, batch_size=128, lr=5e-3, warmup_steps=50, crop_padding=0,
                 min_test_accuracy=0.87),
        gpu=dict(model=model, n_train=60_000, steps=3_000, batch_size=128, lr=5e-3, warmup_steps=150, crop_padding=0,
                 min_test_accuracy=0.9),
        active=active,
    )


def cnn_fashion(active: str | None = None, seed: int = 0, show_progress: bool = True):
    """Train chapter 03's SmallCNN on Fashion-MNIST; return ``(model, history, metrics, recipe)``."""
    cfg = cnn_fashion_settings(active)
    generator = seed_everything(seed)
    dev = device()
    x_train, y_train = load_fashion_mnist("train")
    x_test, y_test = load_fashion_mnist("test")
    x_train, y_train = x_train[:cfg.n_train], y_train[:cfg.n_train]
    model = SmallCNN(**cfg.model).to(dev)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    batches = minibatches(x_train, y_train, batch_size=cfg.batch_size, generator=generator)

    def augment(x):
        return random_crop_flip(x, padding=cfg.crop_padding, generator=generator)

    history = fit(model, lambda m, batch: classification_loss(m, batch, augment), batches, steps=cfg.steps,
                  optimizer=optimizer, device=dev, scheduler=warmup_cosine(optimizer, cfg.warmup_steps, cfg.steps),
                  eval_fn=lambda m: {"test_acc": accuracy(m, x_test[:2000], y_test[:2000], batch_size=250)},
                  eval_every=max(cfg.steps // 5, 1), desc="SmallCNN on Fashion-MNIST", show_progress=show_progress,
                  **FAST)
    metrics = {"test_accuracy": round(accuracy(model, x_test, y_test, batch_size=250), 4),
               "final_train_loss": round(sum(history.losses[-50:]) / len(history.losses[-50:]), 4)}
    return model, history, metrics, {"recipe": "course_lib.recipes.cnn_fashion", "seed": seed, **vars(cfg)}


def dino_shapes_settings(active: str | None = None):
    """Chapter 05's tiny DINO on one-object shapes scenes (32 x 32, striped backgrounds, fresh scenes every step).

    ViT 4 x 4 patches (an 8 x 8 grid), width 64, depth 3, 4 heads; head MLP(256) -> 64 -> l2 -> weight-normed
    linear to K = 256; 2 global crops 32 x 32 (scale 0.4-1) + 2 local 16 x 16 (0.05-0.4), flips, colour
    scaling; tau_s = 0.1, tau_t = 0.04, centre momentum 0.9, teacher EMA 0.99 -> 1 (cosine); AdamW 5e-4,
    weight decay 0.04, warm-up then cosine; gradients clipped at 3.
    """
    vit = dict(image_size=32, patch_size=4, channels=3, dim=64, depth=3, heads=4, mlp_ratio=2.0)
    head = dict(out_dim=256, hidden=256, bottleneck=64, layers=3)
    common = dict(vit=vit, head=head, lr=5e-4, weight_decay=0.04, tau_s=0.1, tau_t=0.04, center_momentum=0.9,
                  teacher_momentum_base=0.99, n_local=2, crop=dict(global_size=32, local_size=16),
                  clip_grad_norm=3.0, tokencut_quantile=0.3)
    return per_profile(
        ci=dict(**common, steps=15, batch_size=16, warmup_steps=2, eval_scenes=50),
        cpu=dict(**common, steps=1_500, batch_size=32, warmup_steps=150, eval_scenes=200),
        gpu=dict(**common, steps=2_000, batch_size=32, warmup_steps=200, eval_scenes=200),
        active=active,
    )


def dino_shapes(active: str | None = None, seed: int = 0, show_progress: bool = True):
    """Train chapter 05's DINO; return ``(teacher, history, metrics, recipe)`` (the EMA teacher is what ships)."""
    cfg = dino_shapes_settings(active)
    trainer, history = train_dino(cfg, seed=seed, show_progress=show_progress, **FAST)
    teacher = trainer.teacher.eval()
    last = trainer.log[-50:]
    metrics = {"final_train_loss": round(sum(history.losses[-50:]) / len(history.losses[-50:]), 4),
               "teacher_entropy": round(sum(d["teacher_entropy"] for d in last) / len(last), 4),
               "batch_mean_entropy": round(sum(d["batch_mean_entropy"] for d in last) / len(last), 4),
               "ln_K": round(last[-1]["ln_K"], 4),
               **evaluate_dino(teacher, n=cfg.eval_scenes, tokencut_quantile=cfg.tokencut_quantile)}
    recipe = {"recipe": "course_lib.recipes.dino_shapes", "seed": seed, "model": teacher.config,
              "data": "course_lib.dino.shapes_batches: make_shapes(**course_lib.dino.shapes_settings()), "
                      "a new seed every batch", **vars(cfg)}
    return teacher, history, metrics, recipe


def mae_mnist_settings(active: str | None = None):
    """Chapter 05's masked autoencoder on MNIST: 4 x 4 patches (49), 75% masked, raw-pixel targets.

    Encoder: chapter 04's ViT (width 64, depth 4, 4 heads) on the 12 visible patches; decoder width 64,
    depth 2. AdamW (betas 0.9, 0.95; weight decay 0.05), warm-up then cosine.
    """
    model = dict(image_size=28, patch_size=4, channels=1, dim=64, depth=4, heads=4, mlp_ratio=2.0, decoder_dim=64,
                 decoder_depth=2, decoder_heads=4, normalize_target=False)
    common = dict(model=model, mask_ratio=0.75, lr=2e-3, weight_decay=0.05, betas=(0.9, 0.95))
    return per_profile(
        ci=dict(**common, n_train=5_000, steps=20, batch_size=64, warmup_steps=2, eval_images=500),
        cpu=dict(**common, n_train=60_000, steps=1_500, batch_size=128, warmup_steps=75, eval_images=10_000),
        gpu=dict(**common, n_train=60_000, steps=3_000, batch_size=128, warmup_steps=150, eval_images=10_000),
        active=active,
    )


def mae_mnist(active: str | None = None, seed: int = 0, show_progress: bool = True):
    """Train chapter 05's MAE; return ``(model, history, metrics, recipe)``; MSE per pixel on masked patches."""
    cfg = mae_mnist_settings(active)
    model, history, metrics = train_mae(cfg, seed=seed, show_progress=show_progress, **FAST)
    return model, history, metrics, {"recipe": "course_lib.recipes.mae_mnist", "seed": seed, **vars(cfg)}


def detr_shapes_settings(active: str | None = None):
    """Chapter 06's tiny DETR on shapes scenes (48 x 48, flat background, 1-3 objects, fresh scenes every step).

    SmallCNN (16, 32, 64) to stride 4 (a 12 x 12 token grid), width 64, 4 heads, 2 encoder and 3 decoder layers,
    8 object queries, 2-D sine positions; the set loss (class 1, L1 5, GIoU 2, no-object weight 0.1) on every
    decoder layer (auxiliary losses); AdamW, lr 1e-3 for the transformer and heads, 2.5e-4 for the backbone,
    weight decay 1e-4, warm-up then cosine, gradients clipped at 0.1 (DETR's value).
    """
    model = dict(num_classes=3, num_queries=8, dim=64, heads=4, encoder_layers=2, decoder_layers=3, mlp_ratio=2.0,
                 backbone_channels=(16, 32, 64))
    common = dict(model=model, lr=1e-3, backbone_lr=2.5e-4, weight_decay=1e-4, clip_grad_norm=0.1, aux_loss=True)
    return per_profile(
        ci=dict(**common, steps=40, batch_size=16, warmup_steps=4, eval_scenes=100),
        cpu=dict(**common, steps=600, batch_size=32, warmup_steps=30, eval_scenes=500),
        gpu=dict(**common, steps=3_000, batch_size=32, warmup_steps=150, eval_scenes=500),
        active=active,
    )


def detr_shapes(active: str | None = None, seed: int = 0, show_progress: bool = True):
    """Train chapter 06's tiny DETR; return ``(model, history, metrics, recipe)``; mAP@0.5 on held-out scenes."""
    cfg = detr_shapes_settings(active)
    model, history = detr.train_detr(cfg, seed=seed, show_progress=show_progress,
                                     eval_fn=detr.evaluate_for_training(200), **FAST)
    scenes = {k: v[:cfg.eval_scenes] for k, v in detr.evaluation_scenes(cfg.eval_scenes).items()}
    result = detr.evaluate_detr(model.cpu(), scenes)
    metrics = {"map50": round(result["map50"], 4), "matched": result["matched"], "total": result["total"],
               "false_positives": result["false_positives"],
               "final_train_loss": round(sum(history.losses[-50:]) / len(history.losses[-50:]), 4)}
    recipe = {"recipe": "course_lib.recipes.detr_shapes", "seed": seed, "model": model.config,
              "data": "course_lib.detr.shapes_batches: make_shapes(**course_lib.detr.shapes_settings()), "
                      "a new seed every batch", **vars(cfg)}
    return model, history, metrics, recipe


def clip_mnist_settings(active: str | None = None):
    """Chapter 07's tiny CLIP: MNIST digits with captions from ``course_lib.clip.TRAIN_TEMPLATES``.

    Image tower SmallCNN (32, 64, 128) whose head projects to the 64-d joint space; text tower a causal
    2-block transformer (width 64, 4 heads) pooled at <eot>, a linear projection; tau learned from 0.07,
    1 / tau clamped at 100. AdamW (weight decay 0.01 on matrices only), warm-up then cosine, batch 128,
    shifts of up to 2 pixels in the long run.
    """
    model = dict(context_length=8, embed_dim=64, image=dict(channels=[32, 64, 128]),
                 text=dict(dim=64, depth=2, heads=4, mlp_ratio=2.0, causal=True, pooling="eot"),
                 init_temperature=0.07, max_logit_scale=100.0)
    common = dict(model=model, lr=2e-3, weight_decay=0.01, batch_size=128)
    return per_profile(
        ci=dict(common, n_train=5_000, steps=40, batch_size=64, warmup_steps=4, max_shift=0, n_eval=500,
                probe_train=2_000, min_zero_shot_accuracy=0.15),
        cpu=dict(**common, n_train=60_000, steps=1_000, warmup_steps=50, max_shift=0, n_eval=2_000,
                 probe_train=60_000, min_zero_shot_accuracy=0.97),
        gpu=dict(**common, n_train=60_000, steps=2_000, warmup_steps=100, max_shift=2, n_eval=2_000,
                 probe_train=60_000, min_zero_shot_accuracy=0.98),
        active=active,
    )


def clip_mnist(active: str | None = None, seed: int = 0, show_progress: bool = True):
    """Train chapter 07's tiny CLIP; return ``(model, history, metrics, recipe)``: zero-shot accuracy on all
    10,000 test digits (training templates' ensemble, each held-out template) and a linear probe."""
    cfg = clip_mnist_settings(active)
    model, history = clip.train_clip(cfg, seed=seed, show_progress=show_progress, **FAST)
    x_train, y_train = load_mnist("train")
    x_test, y_test = load_mnist("test")
    report = clip.evaluate_clip(model, x_test, y_test)
    probe = clip.linear_probe(clip.image_features(model, x_train[:cfg.probe_train]), y_train[:cfg.probe_train],
                              clip.image_features(model, x_test), y_test)
    metrics = {"zero_shot_test_accuracy": round(report["zero_shot_acc"], 4),
               **{f"held_out_template_{i}_accuracy": round(report[f"held_out_{i}_acc"], 4)
                  for i in range(len(clip.HELD_OUT_TEMPLATES))},
               "linear_probe_test_accuracy": round(probe, 4), "logit_scale_exp": round(report["logit_scale_exp"], 3),
               "final_train_loss": round(sum(history.losses[-50:]) / len(history.losses[-50:]), 4)}
    recipe = {"recipe": "course_lib.recipes.clip_mnist", "seed": seed, **vars(cfg),
              "model": model.config,  # the settings' model dict plus the vocabulary: what MODELS rebuilds from
              "train_templates": list(clip.TRAIN_TEMPLATES), "held_out_templates": list(clip.HELD_OUT_TEMPLATES)}
    return model, history, metrics, recipe


def gan_mnist_settings(active: str | None = None):
    """Chapter 09's DCGAN on MNIST: the non-saturating loss, k = 1, Adam(2e-4, betas (0.5, 0.999)) for both nets
    (Radford et al. 2016); latent 64, width 32 (a three-stage generator); the last weights ship, their BatchNorm
    statistics recalibrated at the end; FID at n = 2,000. ``ema_decay`` would ship an EMA of the weights instead:
    measured after 10,000 steps, EMA 0.999 gave FID 29.2 against 27.3 for the last weights, so it is off.
    ``shipped`` made the shipped checkpoint on 2 CPU cores; ``gpu`` is wider and longer."""
    common = dict(latent_dim=64, batch_size=64, lr=2e-4, betas=(0.5, 0.999), ema_decay=None)
    return per_profile(
        ci=dict(**common, width=32, n_train=5_000, steps=30, fid_samples=0),
        cpu=dict(**common, width=32, n_train=60_000, steps=2_500, fid_samples=2_000),
        shipped=dict(**common, width=32, n_train=60_000, steps=25_000, fid_samples=2_000),
        gpu=dict(**common, width=64, n_train=60_000, steps=50_000, fid_samples=2_000),
        active=active,
    )


def gan_mnist(active: str | None = None, seed: int = 0, show_progress: bool = True, state_file=None):
    """Train chapter 09's DCGAN; return ``(generator, history, metrics, recipe)``: the generator that ships
    (its EMA weights when ``ema_decay`` is set, and then metrics also give the FID of the last weights)."""
    cfg = gan_mnist_settings(active)
    seed_everything(seed)
    dev = device()
    generator = DCGANGenerator(latent_dim=cfg.latent_dim, width=cfg.width)
    discriminator = DCGANDiscriminator(width=cfg.width)
    history = train_dcgan(generator, discriminator, load_mnist("train")[0][:cfg.n_train], steps=cfg.steps,
                          batch_size=cfg.batch_size, lr=cfg.lr, betas=cfg.betas, seed=seed, device=dev,
                          ema_decay=cfg.ema_decay, show_progress=show_progress, precision=FAST["precision"],
                          state_file=state_file)
    last_weights = generator
    if history.ema_generator is not None:
        generator = history.ema_generator
        recalibrate_batchnorm(last_weights, seed=seed)
    recalibrate_batchnorm(generator, seed=seed)
    last = history.evals[-20:]
    metrics = {"final_d_loss": round(sum(history.losses[-200:]) / len(history.losses[-200:]), 4),
               "final_d_real": round(sum(e["d_real"] for _, e in last) / len(last), 4),
               "final_d_fake": round(sum(e["d_fake"] for _, e in last) / len(last), 4)}
    if cfg.fid_samples and "mnist_classifier" in checkpointing.read_manifest():
        metrics.update(gan_sample_quality(generator, n=cfg.fid_samples, seed=seed))
        if last_weights is not generator:
            metrics["fid_last_weights_no_ema"] = gan_sample_quality(last_weights, n=cfg.fid_samples, seed=seed)["fid"]
    recipe = {"recipe": "course_lib.recipes.gan_mnist", "seed": seed, "model": generator.config, **vars(cfg)}
    return generator, history, metrics, recipe


def cfg_mnist_settings(active: str | None = None):
    """Chapter 12's class-conditional U-Net for classifier-free guidance: chapter 11's L_simple with the label
    replaced by the null token (label 10) 20% of the time; Adam with warm-up and cosine decay, EMA weights.
    The gpu settings trained in 884 s on one busy CPU thread; ``eval_*`` is the CFG check at the end."""
    common = dict(widths=(16, 32, 64), num_classes=10, p_uncond=0.2, T=1000, lr=2e-3, eval_steps=25)
    return per_profile(
        ci=dict(**common, steps=20, batch_size=32, ema_decay=0.9, eval_samples=0, eval_scales=(3.0,)),
        cpu=dict(**common, steps=500, batch_size=128, ema_decay=0.99, eval_samples=0, eval_scales=(3.0,)),
        gpu=dict(**common, steps=1_400, batch_size=64, ema_decay=0.995, eval_samples=500, eval_scales=(1.0, 3.0)),
        active=active,
    )


def cfg_mnist(active: str | None = None, seed: int = 0, show_progress: bool = True, state_file=None):
    """Train the CFG U-Net; return ``(ema_model, history, metrics, recipe)`` (the EMA weights are what ships)."""
    cfg = cfg_mnist_settings(active)
    generator = seed_everything(seed)
    dev = device()
    x_train, y_train = load_mnist("train")
    x_train = to_model_range(x_train)  # (60000, 1, 28, 28) in [-1, 1]
    schedule = NoiseSchedule.linear(cfg.T)
    model = UNet(widths=cfg.widths, num_classes=cfg.num_classes).to(dev)
    ema = EMA(model, cfg.ema_decay)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    batches = minibatches(x_train, y_train, batch_size=cfg.batch_size, generator=generator)
    history = fit(model, lambda m, batch: cfg_loss(m, batch[0], batch[1], schedule, cfg.p_uncond), batches,
                  steps=cfg.steps, optimizer=optimizer, device=dev,
                  scheduler=warmup_cosine(optimizer, min(200, cfg.steps // 10), cfg.steps),
                  clip_grad_norm=1.0, after_step=ema.update, desc="CFG U-Net on MNIST", show_progress=show_progress,
                  state_file=state_file, extra_state={"ema": ema}, **FAST)
    metrics = {"final_train_loss": round(sum(history.losses[-100:]) / len(history.losses[-100:]), 4)}
    if cfg.eval_samples and "mnist_classifier" in checkpointing.read_manifest():
        for row in evaluate_cfg(ema.model, cfg.eval_scales, n=cfg.eval_samples, steps=cfg.eval_steps, seed=seed):
            metrics[f"s{row['scale']:g}"] = {k: row[k] for k in ("label_accuracy", "fid", "fid_floor", "fid_n")}
    recipe = {"recipe": "course_lib.recipes.cfg_mnist", "seed": seed, "model": ema.model.config, **vars(cfg)}
    return ema.model, history, metrics, recipe


def ldm_autoencoder_settings(active: str | None = None):
    """Chapter 13's KL-regularised autoencoder, 28x28 -> 4x7x7: summed squared pixel error + 1e-4 x KL,
    Adam with warm-up and cosine decay; the scale factor 1 / std is then computed on the training latents."""
    common = dict(latent_channels=4, widths=(16, 32), kl_weight=1e-4, lr=2e-3)
    return per_profile(
        ci=dict(**common, n_train=5_000, steps=40, batch_size=64, warmup=5),
        cpu=dict(**common, n_train=60_000, steps=600, batch_size=128, warmup=30),
        gpu=dict(**common, n_train=60_000, steps=3_000, batch_size=128, warmup=150),
        active=active,
    )


def ldm_autoencoder(active: str | None = None, seed: int = 0, show_progress: bool = True, state_file=None):
    """Train chapter 13's autoencoder and set its scale factor; return ``(model, history, metrics, recipe)``."""
    cfg = ldm_autoencoder_settings(active)
    generator = seed_everything(seed)
    dev = device()
    x_train = load_mnist("train")[0][:cfg.n_train]  # (n_train, 1, 28, 28) in [0, 1]
    x_test = load_mnist("test")[0]
    model = KLAutoencoder(latent_channels=cfg.latent_channels, widths=cfg.widths).to(dev)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    batches = minibatches(x_train, batch_size=cfg.batch_size, generator=generator)
    history = fit(model, lambda m, batch: autoencoder_loss(m, batch, cfg.kl_weight), batches, steps=cfg.steps,
                  optimizer=optimizer, device=dev, scheduler=warmup_cosine(optimizer, cfg.warmup, cfg.steps),
                  desc="KL autoencoder on MNIST", show_progress=show_progress, state_file=state_file, **FAST)
    factor = set_scale_factor(model, x_train[:10_000])
    test = evaluate_autoencoder(model, x_test)
    metrics = {"test_mse_per_pixel": round(test["mse_per_pixel"], 5), "test_psnr_db": round(test["psnr_db"], 2),
               "test_kl_per_image": round(test["kl_per_image"], 1), "scale_factor": round(factor, 5),
               "final_train_loss": round(sum(history.losses[-50:]) / len(history.losses[-50:]), 3)}
    recipe = {"recipe": "course_lib.recipes.ldm_autoencoder", "seed": seed, "model": model.config, **vars(cfg)}
    return model, history, metrics, recipe


def dit_mnist_settings(active: str | None = None):
    """Chapter 13's class-conditional DiT on the shipped ldm_autoencoder's scaled 4x7x7 latents: patch size 1
    (49 tokens, each a 4x4-pixel patch of the digit), L_simple with 10% label dropout, AdamW with warm-up and
    cosine decay, EMA weights (with warm-up); FID at n = 500 with DDIM 25 steps. ``shipped`` made the shipped
    checkpoint on 2 CPU cores (bf16); ``gpu`` trains longer with larger batches."""
    model = dict(input_size=7, patch_size=1, in_channels=4, dim=64, depth=4, heads=4, mlp_ratio=4.0, num_classes=10)
    common = dict(model=model, T=1000, lr=1e-3, label_dropout=0.1)
    return per_profile(
        ci=dict(**common, n_train=2_000, steps=30, batch_size=32, ema_decay=0.9, fid_samples=0, ddim_steps=25),
        cpu=dict(**common, n_train=60_000, steps=1_000, batch_size=128, ema_decay=0.995, fid_samples=0, ddim_steps=25),
        shipped=dict(**common, n_train=60_000, steps=16_000, batch_size=128, ema_decay=0.999, fid_samples=500,
                     ddim_steps=25),
        gpu=dict(**common, n_train=60_000, steps=50_000, batch_size=256, ema_decay=0.9995, fid_samples=500,
                 ddim_steps=25),
        active=active,
    )


def dit_mnist(active: str | None = None, seed: int = 0, show_progress: bool = True, state_file=None):
    """Train chapter 13's latent DiT; return ``(ema_model, history, metrics, recipe)``."""
    cfg = dit_mnist_settings(active)
    generator = seed_everything(seed)
    dev = device()
    autoencoder = load_shipped("ldm_autoencoder", dev)
    x_train, y_train = load_mnist("train")
    z_train = encode_latents(autoencoder, x_train[:cfg.n_train])  # (n, 4, 7, 7), scaled: unit variance
    schedule = NoiseSchedule.linear(cfg.T)
    model = DiT(**cfg.model).to(dev)
    ema = EMA(model, cfg.ema_decay)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.0)
    batches = minibatches(z_train, y_train[:cfg.n_train], batch_size=cfg.batch_size, generator=generator)
    history = fit(model, lambda m, b: latent_ddpm_loss(m, b[0], b[1], schedule, cfg.label_dropout), batches,
                  steps=cfg.steps, optimizer=optimizer, device=dev,
                  scheduler=warmup_cosine(optimizer, max(cfg.steps // 20, 1), cfg.steps), clip_grad_norm=1.0,
                  after_step=ema.update, desc="DiT on MNIST latents", show_progress=show_progress,
                  state_file=state_file, extra_state={"ema": ema}, **FAST)
    metrics = {"final_train_loss": round(sum(history.losses[-100:]) / len(history.losses[-100:]), 4),
               "autoencoder_sha256": checkpointing.read_manifest()["ldm_autoencoder"]["sha256"][:12]}
    if cfg.fid_samples and "mnist_classifier" in checkpointing.read_manifest():
        samples = sample_latent_diffusion(ema.model, autoencoder, balanced_labels(cfg.fid_samples), schedule,
                                          steps=cfg.ddim_steps, generator=torch.Generator().manual_seed(seed))
        metrics.update(quality_of_samples(samples))
    recipe = {"recipe": "course_lib.recipes.dit_mnist", "seed": seed, **vars(cfg), "model": ema.model.config}
    return ema.model, history, metrics, recipe


RECIPES = {"mlp_mnist": mlp_mnist, "mnist_classifier": mnist_classifier, "ddpm_mnist": ddpm_mnist,
           "ncsn_2d": ncsn_2d, "vae_mnist": vae_mnist, "vae_mnist_2d": vae_mnist_2d, "vit_mnist": vit_mnist,
           "cnn_fashion": cnn_fashion, "dino_shapes": dino_shapes, "mae_mnist": mae_mnist,
           "detr_shapes": detr_shapes, "clip_mnist": clip_mnist, "gan_mnist": gan_mnist, "cfg_mnist": cfg_mnist,
           "ldm_autoencoder": ldm_autoencoder, "dit_mnist": dit_mnist}

# The recipes that take a ``state_file`` (a resumable run: ``python -m course_lib.train NAME --resume``).
RESUMABLE = frozenset({"ddpm_mnist", "cfg_mnist", "ldm_autoencoder", "dit_mnist", "gan_mnist"})

# How to rebuild each shipped model from its manifest entry, before its weights are loaded.
# Register every new checkpoint here: the offline test and the bench load them all through it.
MODELS = {
    "mlp_mnist": lambda entry: MLP(n_hidden=500),
    "mnist_classifier": lambda entry: MnistClassifier(),
    "ddpm_mnist": lambda entry: UNet(**entry["recipe"]["model"]),
    "ncsn_2d": lambda entry: NoiseConditionalScoreNet(**entry["recipe"]["model"]),
    "vae_mnist": lambda entry: ConvVAE(**entry["recipe"]["model"]),
    "vae_mnist_2d": lambda entry: ConvVAE(**entry["recipe"]["model"]),
    "vit_mnist": lambda entry: ViT(**entry["recipe"]["model"]),
    "cnn_fashion": lambda entry: SmallCNN(**entry["recipe"]["model"]),
    "dino_shapes": lambda entry: DINO(**entry["recipe"]["model"]),
    "mae_mnist": lambda entry: MAE(**entry["recipe"]["model"]),
    "detr_shapes": lambda entry: TinyDETR(**entry["recipe"]["model"]),
    "clip_mnist": lambda entry: TinyCLIP(**entry["recipe"]["model"]),
    "gan_mnist": lambda entry: DCGANGenerator(**entry["recipe"]["model"]),
    "cfg_mnist": lambda entry: UNet(**entry["recipe"]["model"]),
    "ldm_autoencoder": lambda entry: KLAutoencoder(**entry["recipe"]["model"]),
    "dit_mnist": lambda entry: DiT(**entry["recipe"]["model"]),
}


def load_shipped(name: str, device: torch.device | str = "cpu",
                 directory: str | os.PathLike | None = None) -> torch.nn.Module:
    """The shipped model ``name``, rebuilt as its recipe made it, weights loaded, in eval mode.

    ``directory`` defaults to the shipped folder, ``checkpointing.CHECKPOINT_DIR``."""
    import difflib

    device = as_device(device)
    directory = checkpointing.CHECKPOINT_DIR if directory is None else directory
    manifest = checkpointing.read_manifest(directory)
    shipped = ", ".join(sorted(manifest)) or "none"
    if name not in manifest and name in RECIPES:
        raise FileNotFoundError(f"no shipped checkpoint named {name!r} in {directory}; shipped: {shipped}. "
                                "Restore course_lib/checkpoints/ with git, or retrain it with "
                                f"`python -m course_lib.train {name} --profile cpu|gpu`.")
    if name not in manifest:
        close = difflib.get_close_matches(name, sorted(manifest) + sorted(RECIPES), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise FileNotFoundError(f"there is no model named {name!r}: it is neither shipped in {directory} nor a "
                                f"recipe.{hint} Shipped: {shipped}.")
    if name not in MODELS:
        raise FileNotFoundError(f"{name!r} is in {directory} but course_lib.recipes.MODELS has no builder for it: "
                                "register one there, or build the model yourself and load its weights with "
                                f"checkpointing.load_checkpoint(model, {name!r}, directory=...).")
    entry = checkpointing.manifest_entry(name, directory, needs=("file", "sha256", "recipe"))
    try:
        model = MODELS[name](entry).to(device)
    except KeyError as missing:
        raise ValueError(f"the entry {name!r} in {directory} lacks {missing} in its recipe, which rebuilding "
                         "the model needs: the manifest was edited by hand or is damaged. Restore the shipped one with "
                         "`git checkout -- course_lib/checkpoints/manifest.json`, or retrain it with "
                         f"`python -m course_lib.train {name} --force`.") from None
    checkpointing.load_checkpoint(model, name, directory=directory)
    return model
