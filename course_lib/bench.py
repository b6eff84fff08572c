"""``python -m course_lib.bench``: what each shipped model reaches, and how long it took.

For every checkpoint in the manifest: the metric measured now on the held-out data, a reference
number to read it against, the profile and device of the run that made it, and its training wall
time. ``--retrain`` also reruns each recipe under the active profile (or ``--profile``) and times it.
"""
from __future__ import annotations

import argparse
import inspect
import time

from .checkpointing import read_manifest
from .data import load_fashion_mnist, load_mnist
from .metrics import sample_quality
from .recipes import RECIPES, load_shipped
from .train import accuracy


def _classifier_evaluator(name: str, reference: str, dataset: str = "MNIST"):
    """A classifier: its accuracy on all 10,000 test images of ``dataset`` ("MNIST" or "Fashion-MNIST")."""
    load = {"MNIST": load_mnist, "Fashion-MNIST": load_fashion_mnist}[dataset]

    def evaluate(entry: dict) -> dict:
        x_test, y_test = load("test")
        return {"metric": f"{dataset} test accuracy (10k)",
                "value": f"{accuracy(load_shipped(name), x_test, y_test):.4f}", "reference": reference}
    return evaluate


def _ddpm_mnist(entry: dict, fid_samples: int = 2000) -> dict:
    model = load_shipped("ddpm_mnist")
    report = sample_quality(model, n=fid_samples, sampler="ddim", steps=50, show_progress=False)
    return {"metric": f"FID, classifier features, n={report['fid_n']}, {report['sampler']}",
            "value": f"{report['fid']:.2f}",
            "reference": f"real-vs-real floor {report['fid_floor']:.2f} at the same n (target <= 3x floor); "
                         f"label entropy per image {report['per_image_label_entropy']:.3f}, "
                         f"of the label mix {report['marginal_label_entropy']:.3f} (ln 10 = 2.303)"}


def _vae_evaluator(name: str, reference: str):
    """Chapter 08's VAEs: test -ELBO in nats per image on MNIST's test set binarized once (seed 0)."""
    def evaluate(entry: dict) -> dict:
        from .vae import binarized_mnist, evaluate_elbo, independent_pixel_nll

        x_test = binarized_mnist("test", seed=0)
        neg_elbo = evaluate_elbo(load_shipped(name), x_test)["neg_elbo"]
        iwae = [f"-L_{key.split('_k')[1].split('_')[0]} = {value:.2f} (manifest)"
                for key, value in entry["metrics"].items() if key.startswith("test_neg_iwae")]
        baseline = independent_pixel_nll(load_mnist("train")[0], x_test)
        return {"metric": "test -ELBO nats/image, binarized seed 0", "value": f"{neg_elbo:.2f}",
                "reference": "; ".join(iwae + [reference, f"no latent (independent pixels) {baseline:.1f}"])}
    return evaluate


def _ncsn_2d(entry: dict) -> dict:
    """Chapter 10's 2-D NCSN: annealed-Langevin samples against the true mixture, and score errors."""
    from .score import evaluate_ncsn, geometric_sigmas

    recipe = entry["recipe"]
    sigmas = geometric_sigmas(recipe["sigma_max"], recipe["sigma_min"], recipe["n_levels"])
    report = evaluate_ncsn(load_shipped("ncsn_2d"), sigmas, n=2000, seed=1, eps=recipe["eps"],
                           steps_per_level=recipe["steps_per_level"])
    errors = "/".join(f"{value:.4f}" for key, value in report.items() if key.startswith("score_rel_error"))
    return {"metric": "energy distance to true 2-D samples, n=2000", "value": f"{report['energy_distance']:.4f}",
            "reference": f"true-vs-true floor {report['energy_distance_floor']:.4f} at the same n; mode-weight TV "
                         f"{report['mode_weight_tv']:.3f} (0 = exact weights; plain Langevin ~0.3); relative score "
                         f"error at sigma = {recipe['sigma_max']:g}/mid/{recipe['sigma_min']:g}: {errors}"}


def _dino_shapes(entry: dict) -> dict:
    """Chapter 05's DINO: the best head's [CLS] attention (60%-mass mask) against the object masks of 200 held-out scenes."""
    from .dino import evaluate_dino

    r = evaluate_dino(load_shipped("dino_shapes"), n=200, tokencut_quantile=entry["recipe"]["tokencut_quantile"])
    beats = "beats" if r["best_head_iou"] > r["centre_prior_iou"] else "DOES NOT beat"
    return {"metric": "best-head [CLS] IoU, 60% mass, 200 scenes", "value": f"{r['best_head_iou']:.4f}",
            "reference": f"{beats} the centre prior (best centred disc, r = {r['centre_prior_radius_patches']} patches) "
                         f"{r['centre_prior_iou']:.4f}; random-init ViT best head {r['random_init_best_head_iou']:.4f}; "
                         f"head {r['best_head']} puts {r['head_mass_on_object'][r['best_head']]:.2f} of its attention on "
                         f"the object (area {r['object_area']:.3f}); TokenCut on keys (tau = quantile "
                         f"{r['tokencut_quantile']}) {r['tokencut_iou']:.4f}, on random-init keys "
                         f"{r['random_init_tokencut_iou']:.4f}"}


def _mae_mnist(entry: dict) -> dict:
    """Chapter 05's MAE: per-pixel MSE on the hidden patches of the 10,000 test digits (75% masked, fixed masks)."""
    from .mae import evaluate_mae

    x_test = load_mnist("test")[0]
    r = evaluate_mae(load_shipped("mae_mnist"), x_test, entry["recipe"]["mask_ratio"], seed=0)
    return {"metric": "masked-patch MSE/pixel, 75% hidden, 10k", "value": f"{r['masked_mse']:.4f}",
            "reference": f"mean-fill baseline (each hidden pixel = mean of the visible ones) {r['mean_fill_mse']:.4f}; "
                         "raw-pixel target in [0, 1]"}


def _detr_shapes(entry: dict) -> dict:
    """Chapter 06's tiny DETR: mAP@0.5 (VOC all-point) on 500 held-out shapes scenes, and the matched-box count."""
    from .detr import evaluate_detr, evaluation_scenes, random_init_reference

    scenes = evaluation_scenes(500)
    r = evaluate_detr(load_shipped("detr_shapes"), scenes)
    floor = random_init_reference(entry["recipe"]["model"], scenes)
    aps = "/".join(f"{a:.3f}" for a in r["ap50"])
    return {"metric": "mAP@0.5, 500 held-out scenes (48x48, 1-3 obj)", "value": f"{r['map50']:.4f}",
            "random_init_map50": floor["map50"],
            "reference": f"random-init model {floor['map50']:.4f}; {r['matched']}/{r['total']} ground-truth boxes "
                         f"matched (right class, IoU >= 0.5, score >= 0.5) with {r['false_positives']} false positives; "
                         f"AP per class circle/square/triangle {aps}"}


def _clip_mnist(entry: dict) -> dict:
    """Chapter 07's tiny CLIP: zero-shot accuracy on all 10,000 MNIST test digits, prompt ensemble of the training
    templates; each held-out template on its own; the linear probe from the manifest."""
    from .clip import HELD_OUT_TEMPLATES, evaluate_clip

    x_test, y_test = load_mnist("test")
    r = evaluate_clip(load_shipped("clip_mnist"), x_test, y_test)
    held_out = "; ".join(f"held-out template '{t}' {r[f'held_out_{i}_acc']:.4f}" for i, t in enumerate(HELD_OUT_TEMPLATES))
    probe = entry["metrics"].get("linear_probe_test_accuracy")
    return {"metric": "MNIST zero-shot acc (10k), train prompts", "value": f"{r['zero_shot_acc']:.4f}",
            "reference": f"chance 0.10; {held_out}; linear probe on the frozen image features {probe} (manifest); "
                         f"supervised mnist_classifier 0.99; 1/tau = {r['logit_scale_exp']:.1f}"}


def _gan_mnist(entry: dict, fid_samples: int = 2000) -> dict:
    """Chapter 09's DCGAN: FID of its samples on the classifier's features, next to the real-vs-real floor
    (the same reference digits, floor and n as ddpm_mnist, so the two compare)."""
    from .gan import sample_quality as gan_sample_quality

    report = gan_sample_quality(load_shipped("gan_mnist"), n=fid_samples)
    return {"metric": f"FID, classifier features, n={report['fid_n']}, GAN",
            "value": f"{report['fid']:.2f}",
            "reference": f"real-vs-real floor {report['fid_floor']:.2f} at the same n; ddpm_mnist "
                         f"{read_manifest().get('ddpm_mnist', {}).get('metrics', {}).get('fid', 'n/a')} (manifest, "
                         f"n=2000); label entropy per image {report['per_image_label_entropy']:.3f}, "
                         f"of the label mix {report['marginal_label_entropy']:.3f} (ln 10 = 2.303)"}


def _cfg_mnist(entry: dict, fid_samples: int = 500) -> dict:
    """Chapter 12's classifier-free guidance: for each scale s (course convention: s = 1 conditional), the shipped
    classifier's accuracy on the intended label and the FID (classifier features) with its floor; n = min(fid_samples, 500)
    samples per s (labels 0-9 in turn), DDIM-10 (few steps: 55,000 U-Net image evaluations in all, about 4 min on 2
    busy CPU cores; ``--fid-samples 100`` takes ~30 s)."""
    from .guidance import evaluate_cfg

    n, steps = min(fid_samples, 500), 10
    rows = evaluate_cfg(load_shipped("cfg_mnist"), (1.0, 1.5, 2.0, 3.0, 5.0, 7.0), n=n, steps=steps)
    best = max(rows, key=lambda row: row["label_accuracy"])
    sweep = "; ".join(f"s={row['scale']:g}: acc {row['label_accuracy']:.3f} FID {row['fid']:.1f}" for row in rows)
    return {"metric": f"label acc at best s, n={n}/s, ddim-{steps}", "value": f"{best['label_accuracy']:.4f}",
            "reference": f"best s = {best['scale']:g} (target >= 0.95); {sweep}; real-vs-real FID floor "
                         f"{rows[0]['fid_floor']:.2f} at the same n"}


def _ldm_autoencoder(entry: dict) -> dict:
    """Chapter 13's KL autoencoder: reconstruction error (from mu) on the 10,000 test digits, and its scale factor."""
    from .ldm import encode_latents, evaluate_autoencoder

    model = load_shipped("ldm_autoencoder")
    x_test = load_mnist("test")[0]
    r = evaluate_autoencoder(model, x_test)
    std = encode_latents(model, x_test).std().item()
    zero_mse = x_test.pow(2).mean().item()
    mean_digit_mse = (x_test - load_mnist("train")[0].mean(0)).pow(2).mean().item()
    return {"metric": "recon. MSE/pixel from mu, 10k test digits", "value": f"{r['mse_per_pixel']:.5f}",
            "reference": f"PSNR {r['psnr_db']:.1f} dB; baselines: every pixel 0 {zero_mse:.4f}, the mean training "
                         f"digit {mean_digit_mse:.4f}; "
                         f"28x28 -> 4x7x7 (4x fewer values); scale factor {float(model.scale_factor):.4f}, scaled "
                         f"test latents have std {std:.3f} (target 1)"}


def _dit_mnist(entry: dict, fid_samples: int = 500, steps: int = 25, guidance_scale: float = 5.0) -> dict:
    """Chapter 13's latent DiT against pixel-space ddpm_mnist, both sampled now with DDIM (same steps, same
    n = min(fid_samples, 500)): FID (unguided and with classifier-free guidance at s = 5) with the floor, and the
    sampling time per image."""
    import torch

    n = min(fid_samples, 500)
    from .diffusion import NoiseSchedule, ddim_sample, load_ddpm_mnist, to_pixel_range
    from .ldm import balanced_labels, sample_latent_diffusion
    from .metrics import quality_of_samples

    dit, autoencoder = load_shipped("dit_mnist"), load_shipped("ldm_autoencoder")
    schedule = NoiseSchedule.linear(entry["recipe"]["T"])
    start = time.perf_counter()
    samples = sample_latent_diffusion(dit, autoencoder, balanced_labels(n), schedule, steps=steps,
                                      generator=torch.Generator().manual_seed(0))
    latent_ms = 1000 * (time.perf_counter() - start) / n
    guided = sample_latent_diffusion(dit, autoencoder, balanced_labels(n), schedule, steps=steps,
                                     guidance_scale=guidance_scale, generator=torch.Generator().manual_seed(0))
    pixel_unet, pixel_schedule, _ = load_ddpm_mnist()
    start = time.perf_counter()
    pixel = ddim_sample(pixel_unet, (n, 1, 28, 28), pixel_schedule, steps=steps,
                        generator=torch.Generator().manual_seed(0), show_progress=False)
    pixel_ms = 1000 * (time.perf_counter() - start) / n
    r, r_guided = quality_of_samples(samples), quality_of_samples(guided)
    r_pixel = quality_of_samples(to_pixel_range(pixel))
    return {"metric": f"FID, classifier features, n={r['fid_n']}, ddim-{steps}, latent", "value": f"{r['fid']:.2f}",
            "reference": f"real-vs-real floor {r['fid_floor']:.2f} at the same n; with CFG s = {guidance_scale:g} "
                         f"{r_guided['fid']:.2f}; pixel-space ddpm_mnist (unconditional) {r_pixel['fid']:.2f} at the "
                         f"same n and steps; sampling {latent_ms:.2f} ms/image (latent DiT + decoder) vs "
                         f"{pixel_ms:.2f} ms/image (pixel U-Net), timed now ({pixel_ms / latent_ms:.1f}x); label "
                         f"entropy per image {r['per_image_label_entropy']:.3f}, of the label mix "
                         f"{r['marginal_label_entropy']:.3f}"}


EVALUATORS = {"mlp_mnist": _classifier_evaluator("mlp_mnist", "0.984: 2-layer MLP, 800 hidden, cross entropy "
                                                   "(Simard et al. 2003)"),
              "mnist_classifier": _classifier_evaluator("mnist_classifier", "0.99+: small CNNs (LeNet-5 0.991, LeCun "
                                                        "et al. 1998); the FID feature extractor"),
              "vit_mnist": _classifier_evaluator("vit_mnist", "bars: shipped >= 0.985; the cpu profile >= 0.975 in "
                                                 "<= 5 min on 2 cores (check: --retrain --profile cpu vit_mnist)"),
              "ddpm_mnist": _ddpm_mnist,
              "vae_mnist": _vae_evaluator("vae_mnist", "target <= 95; 86.76 = -log p(x), K=5000, 1-layer MLP VAE, "
                                          "dynamic binarization (Burda et al. 2016); pytorch/examples ~104 is on grey "
                                          "targets: not comparable"),
              "vae_mnist_2d": _vae_evaluator("vae_mnist_2d", "J=2 pays ~50 nats more than vae_mnist (J=16) "
                                             "for a latent space you can draw"),
              "ncsn_2d": _ncsn_2d,
              "cnn_fashion": _classifier_evaluator("cnn_fashion", "bar >= 0.91; Fashion-MNIST README (as submitted): "
                                                   "2-conv nets 0.876-0.925, ResNet-18 0.949, WRN-40-4 0.967, human "
                                                   "labellers 0.835", dataset="Fashion-MNIST"),
              "dino_shapes": _dino_shapes,
              "mae_mnist": _mae_mnist,
              "clip_mnist": _clip_mnist,
              "detr_shapes": _detr_shapes,
              "gan_mnist": _gan_mnist,
              "cfg_mnist": _cfg_mnist,
              "ldm_autoencoder": _ldm_autoencoder,
              "dit_mnist": _dit_mnist}


def _throughput(names: list[str], manifest: dict, repeats: int) -> str:
    import torch

    from . import throughput
    from .recipes import MODELS

    peaks = {"fp32": throughput.peak_gflops(torch.float32), "bf16": throughput.peak_gflops(torch.bfloat16)}
    rows = [throughput.measure(name, lambda name=name: MODELS[name](manifest[name]), manifest[name], repeats)
            for name in names]
    return throughput.report(rows, peaks)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m course_lib.bench", description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="checkpoints to evaluate (default: all shipped)")
    parser.add_argument("--retrain", action="store_true", help="rerun each recipe and time it")
    parser.add_argument("--profile", choices=("ci", "cpu", "gpu"), default=None)
    parser.add_argument("--fid-samples", type=int, default=2000, help="samples per FID (default 2000)")
    parser.add_argument("--throughput", action="store_true",
                        help="instead of the metrics: ms per training step in fp32 and on the fast path, images/s, "
                             "GFLOP/s against this machine's peak (course_lib.throughput)")
    parser.add_argument("--repeats", type=int, default=5, help="timed steps per model and precision (--throughput)")
    args = parser.parse_args(argv)
    manifest = read_manifest()
    names = args.names or list(manifest)
    unknown = [name for name in names if name not in manifest or name not in EVALUATORS]
    if unknown:
        parser.error(f"no shipped checkpoint with an evaluator named {', '.join(unknown)}; "
                     f"known: {', '.join(n for n in manifest if n in EVALUATORS)}")
    if args.throughput:
        print(_throughput(names, manifest, args.repeats))
        return
    print(f"{'model':<16} {'metric':<44} {'value':>8}  {'made under':<16} {'train time':>10}  reference")
    for name in names:
        entry = manifest[name]
        start = time.perf_counter()
        evaluator = EVALUATORS[name]
        takes_fid_samples = "fid_samples" in inspect.signature(evaluator).parameters
        row = evaluator(entry, fid_samples=args.fid_samples) if takes_fid_samples else evaluator(entry)
        made = f"{entry['recipe']['profile']} on {entry['device']}"
        print(f"{name:<16} {row['metric']:<44} {row['value']:>8}  {made:<16} {entry['wall_time_s']:>8.1f} s  "
              f"{row['reference']}   (evaluated in {time.perf_counter() - start:.1f} s)", flush=True)
    if args.retrain:
        for name, recipe in RECIPES.items():
            if args.names and name not in args.names:
                continue
            _, history, metrics, cfg = recipe(args.profile, show_progress=False)
            print(f"{name:<12} retrained under {cfg['profile']}: {metrics} in {history.wall_time_s:.1f} s")


if __name__ == "__main__":
    main()
