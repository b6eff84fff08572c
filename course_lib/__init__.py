"""course_lib: the small library behind the course's chapters.

One module per concern:

- ``profiles``: ``profile()``, ``per_profile()`` (the ``COURSE_PROFILE`` run profiles)
- ``runtime``: ``device()``, ``seed_everything()``, ``use_profile_threads()``
- ``data``: offline MNIST, Fashion-MNIST, 2-D toys, shapes scenes, bundled photos
- ``train``: ``fit()`` with a progress bar, ``minibatches()``, ``accuracy()``
- ``checkpointing``: ``save_checkpoint()``, ``load_checkpoint()`` with a manifest
- ``plotting``: ``image_grid()``, ``plot_losses()``, ``overlay_heatmap()``
- ``widgets``: ``interactive_figure()``
- ``check``: exercise checks and ``show_solution()``
- ``losses``, ``backprop``: chapter 01's stable losses and hand-written backprop
- ``metrics``: FID on a shipped MNIST classifier's features, with the real-vs-real floor
- ``spectral``: chapter 02's PCA, Rayleigh quotients, graph Laplacian, Normalized Cut (Lanczos, pixel graphs, recursive cuts)
- ``cnn``: chapter 03's conv arithmetic, receptive fields (recursion, autograd, ERF), SmallCNN, Grad-CAM, CutMix
- ``vit``, ``cvt``: chapter 04's patches, attention, ViT (parameter and multiply-add counts, rollout), and CvT
- ``dino``, ``mae``: chapter 05's DINO (loss, centre, EMA teacher, multi-crop, [CLS]-attention IoU, TokenCut) and MAE
- ``boxes``, ``yolo``, ``detr``, ``maskformer``: chapter 06's IoU/GIoU, NMS and mAP; the YOLOv1 loss; Hungarian matching,
  the set loss and a tiny DETR; MaskFormer's mask loss and Mask2Former's masked attention
- ``clip``: chapter 07's symmetric InfoNCE, word tokenizer, text transformer, TinyCLIP, zero-shot prompts
- ``vae``: chapter 08's conv VAE, Gaussian KL, ELBO and IWAE bound in nats per image, binarized MNIST
- ``gan``, ``draggan``: chapter 09's D* and JSD on a grid, GAN losses from logits, toy GANs, the MNIST DCGAN and its FID; a mini DragGAN
- ``score``: chapter 10's score matching (ISM, SSM, DSM), Langevin samplers, Tweedie, the 2-D NCSN
- ``diffusion``, ``unet``: chapter 11's noise schedules, DDPM/DDIM samplers and U-Net
- ``ldm``, ``dit``: chapter 13's KL autoencoder, latent scale factor, latent U-Net and sampler; DiT with adaLN-Zero
- ``guidance``: chapter 12's Bayes rule on scores, classifier guidance, classifier-free guidance (label dropout, both
  weight conventions), the CFG sweep, inpainting by replacement
- ``recipes``: the recipe behind every shipped checkpoint, and ``load_shipped(name)``
- ``timing``: ``make time`` (``python -m course_lib.timing``), each chapter's measured wall time, kept in its metadata
- ``student``: ``make student`` (``python -m course_lib.student``), the chapters with their exercise solutions as stubs
"""
from .profiles import PROFILES, per_profile, profile
from .runtime import device, seed_everything, use_profile_threads

__version__ = "0.1.0"
__all__ = ["PROFILES", "profile", "per_profile", "device", "seed_everything", "use_profile_threads"]

use_profile_threads()  # 1 torch thread per process under COURSE_PROFILE=ci (see runtime.py)
