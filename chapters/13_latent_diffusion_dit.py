# ---
# jupyter:
#   course:
#     time_on_cpu:
#       ci:
#         machine: 2 CPU cores, no GPU, otherwise idle
#         measured: '2026-12-05'
#         seconds: 29
#       cpu:
#         machine: 2 CPU cores, no GPU, otherwise idle
#         measured: '2026-12-05'
#         seconds: 156
#       gpu:
#         note: no GPU where the course was timed; the shipped autoencoder (its `gpu` settings) and DiT (the `shipped` settings, 10,000 steps) trained in 155 s + 15 min on 2 CPU cores, bf16
#         seconds: null
#   jupytext:
#     formats: ipynb,py:percent
#     notebook_metadata_filter: course
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 13 · Latent diffusion and the Diffusion Transformer (DiT)
#
# Chapter 11 ran diffusion on pixels. Latent diffusion (Rombach et al. 2022) first trains an autoencoder
# $\mathcal{E}, \mathcal{D}$ that squeezes an image into a small latent $z = \mathcal{E}(x)$, and runs the *same*
# DDPM/DDIM machinery on $z$; the decoder turns a generated latent back into an image $\tilde{x} = \mathcal{D}(z)$.
# DiT (Peebles & Xie 2023) then replaces the U-Net that predicts the noise by a transformer on patches of the latent,
# conditioned on time and class through adaptive LayerNorm with zero-initialised gates ("adaLN-Zero").
#
# **Goals.** After this chapter you can
# - train a KL-regularised autoencoder to a $4 \times 7 \times 7$ latent, measure its reconstruction error, and say
#   why its latents must be rescaled (and compute the factor, the analogue of Stable Diffusion's 0.18215);
# - run diffusion in latent space with chapter 11's code, and *measure* the compute it saves;
# - build a DiT block with adaLN-Zero, prove and check that a fresh block is exactly the identity, and train a
#   class-conditional DiT on the latents; look at its attention maps;
# - compare a DiT with a U-Net of about the same size on the same latents.
#
# **Prerequisites.** Chapter 04 (patches, attention, ViT), chapter 08 (the Gaussian KL, reparameterisation),
# chapter 11 (the forward process, $L_\text{simple}$, DDIM), chapter 12 (classifier-free guidance: the samples here are
# guided with it, and the DiT is trained with its label dropout).
#
# **Notation.** As in chapters 11 and 12: the noise is $\epsilon$, the network's prediction $\epsilon_\theta(z_t, t, c)$ with
# the class $c$ as the condition ($c = \varnothing$, the null label, for unconditional), and $s = 1 + w$ the guidance
# scale. The latent scale factor is $\kappa$ (A.5).
#
# **Core path.** A, B, C.1-C.3 and the summary, about 70 min: the autoencoder and its
# latent scale factor, diffusion in latent space and the compute it saves, DiT and adaLN-Zero, the shipped DiT's
# samples. Deep dives a first reading can skip (run their cells all the same): C.4 (attention maps, 10 min) and D (DiT
# against a latent U-Net trained the same way, 15 min).
#
# **Time.** Two sessions of about 60 minutes; the plan, what to pre-run and the answers to the discussion questions are
# in [facilitator/13_latent_diffusion_dit.md](facilitator/13_latent_diffusion_dit.md). The exercises (E) take about
# 30 minutes at home.
#
# **What runs, and how long** (the whole chapter, top to bottom, on a fresh kernel; `ci` with 1 torch thread as the
# test suite runs it, `cpu` with torch's default threads; `make time PROFILE=ci` or `PROFILE=cpu` measures it and
# writes the time here, in the notebook's metadata and in the README):
#
# | profile | what trains | measured |
# |---|---|---|
# | `ci` | the autoencoder 40 steps; a DiT and a latent U-Net 30 steps each on 2,000 latents | 29 s, measured 2026-12-05 on 2 CPU cores, no GPU, otherwise idle |
# | `cpu` | the autoencoder 600 steps; DiT and U-Net 400 steps each on 60,000 latents | 2 min 36 s, measured 2026-12-05 on 2 CPU cores, no GPU, otherwise idle |
# | `gpu` | DiT and U-Net 2,000 steps each here; the full recipes are `python -m course_lib.zoo train ldm_autoencoder --profile gpu` (3,000 steps) and `dit_mnist --profile gpu` (50,000 steps of batch 256) | not measured: no GPU where the course was timed; the shipped autoencoder (its `gpu` settings) and DiT (the `shipped` settings, 10,000 steps) trained in 155 s + 15 min on 2 CPU cores, bf16 |
#
# Whatever the profile, the figures use the shipped checkpoints `ldm_autoencoder` and `dit_mnist`, and chapter 11's
# `ddpm_mnist` for the pixel-space comparison.

# %%
import time

import ipywidgets
import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F
from torch import nn

import course_lib
import course_lib.core.check
import course_lib.core.widgets
import course_lib.topics.dit
import course_lib.topics.ldm
import course_lib.zoo
from course_lib import device, per_profile, profile, seed_everything
from course_lib.core.layers import to_pixel_range
from course_lib.core.plotting import image_grid, plot_losses
from course_lib.core.train import fit, minibatches, warmup_cosine
from course_lib.data import load_mnist
from course_lib.eval.fid import (classifier_outputs, frechet_distance, quality_of_samples, real_split,
                                 shipped_classifier)
from course_lib.topics.diffusion import NoiseSchedule, ddim_sample, ddpm_loss
from course_lib.topics.dit import DiT, DiTBlock, modulate, sincos_position_embedding
from course_lib.topics.ldm import (KLAutoencoder, LatentUNet, autoencoder_loss, balanced_labels, decode_latents,
                                   encode_latents, evaluate_autoencoder, latent_ddpm_loss, latent_trajectory,
                                   sample_latent_diffusion, scale_factor_from)
from course_lib.topics.vae import gaussian_kl, reparameterize
from course_lib.topics.vit import measured_multiply_adds, patchify, unpatchify
from course_lib.zoo import load_ddpm_mnist

print(f"profile {profile()!r}, device {device()}, torch threads {torch.get_num_threads()}")
x_train, y_train = load_mnist("train")
x_test, y_test = load_mnist("test")

# %% [markdown]
# ## See it work first
#
# The shipped class-conditional DiT `dit_mnist` runs DDIM (10 steps here) on $4 \times 7 \times 7$ latents, guided with
# chapter 12's classifier-free guidance at $s = 3$, and the shipped autoencoder `ldm_autoencoder` decodes the result: two
# of each digit 0-9, in a second or two on a CPU. The separate clean-digit classifier of chapters 11 and 12 reads each
# sample. By the end of this chapter you will have derived and trained this: the autoencoder and its latent scale
# factor, diffusion in its latent space, and the transformer that predicts the noise.

# %%
schedule = NoiseSchedule.linear(1000)
autoencoder = course_lib.zoo.load_shipped("ldm_autoencoder", device())
dit = course_lib.zoo.load_shipped("dit_mnist", device())
dit_entry = course_lib.core.checkpointing.read_manifest()["dit_mnist"]
first_labels = balanced_labels(20)  # 0-9, twice
first_look = sample_latent_diffusion(dit, autoencoder, first_labels, schedule, steps=10, guidance_scale=3.0,
                                     generator=torch.Generator().manual_seed(0))  # (20, 1, 28, 28) in [0, 1]
judge = shipped_classifier(device())  # the clean-digit classifier that scores samples in chapters 11-13
read_labels = classifier_outputs(first_look, judge)[1].argmax(1)
fig, ax = plt.subplots(figsize=(9, 2.4))
image_grid(first_look, nrow=2, ax=ax)
ax.set_title("shipped dit_mnist + ldm_autoencoder, s = 3, DDIM-10: asked for 0-9 (columns), twice")
plt.show()
print(f"the classifier reads the asked-for digit in {int((read_labels == first_labels).sum())} of these 20 samples; "
      f"manifest, unguided, DDIM-25, n = {dit_entry['metrics']['fid_n']}: FID {dit_entry['metrics']['fid']:.1f} "
      f"(real-vs-real floor {dit_entry['metrics']['fid_floor']:.1f}); trained {dit_entry['recipe']['steps']:,} steps "
      f"of batch {dit_entry['recipe']['batch_size']}")

# %% [markdown]
# ## A. An autoencoder to a latent space
#
# The whole pipeline first. Training: encode every image once with a frozen autoencoder, scale the latent by $\kappa$,
# and train chapter 11's noise predictor on it. Sampling: DDIM from pure noise in latent space, unscale, decode once.

# %%
course_lib.topics.ldm.schematic()
plt.show()

# %% [markdown]
# ### A.1 How much smaller
#
# LDM's autoencoder maps an image $x \in \mathbb{R}^{H \times W \times 3}$ to $z \in \mathbb{R}^{h \times w \times C}$
# with a downsampling factor $f = H / h$. Stable Diffusion v1 uses $f = 8$, $C = 4$ channels: a $512 \times 512 \times 3$
# image becomes a $64 \times 64 \times 4$ latent, so the diffusion model handles
#
# $$
# \frac{3 \cdot 512^2}{4 \cdot 64^2} = \frac{786\,432}{16\,384} = 48
# $$
#
# times fewer numbers. Ours: $f = 4$, $C = 4$, a $28 \times 28 \times 1$ digit becomes $7 \times 7 \times 4$,
# $784 / 196 = 4$ times fewer. (A grey digit has one channel; SD's images have three, which is where most of the 48
# comes from beyond $f^2 / C = 16$.)

# %%
sd_ratio = (3 * 512 ** 2) / (4 * 64 ** 2)
ours_ratio = (1 * 28 ** 2) / (4 * 7 ** 2)
assert sd_ratio == 48 and ours_ratio == 4
print(f"Stable Diffusion v1: {sd_ratio:.0f}x fewer numbers; ours: {ours_ratio:.0f}x")

# %% [markdown]
# ### A.2 The objective: reconstruction plus a *tiny* KL
#
# The encoder outputs, for every latent value $j$, a Gaussian $q_\phi(z_j \mid x) = \mathcal{N}(\mu_j(x), \sigma_j^2(x))$;
# a sample $z = \mu + \sigma \odot \epsilon$ (chapter 08's reparameterisation) is decoded to $\tilde{x} = \mathcal{D}(z)$.
# Per image we minimise
#
# $$
# \mathcal{L}(x) = \sum_{i=1}^{784} (\tilde{x}_i - x_i)^2 + \lambda \operatorname{KL}\big(q_\phi(z \mid x) \,\Vert\, \mathcal{N}(0, I)\big),
# \qquad
# \operatorname{KL} = \frac{1}{2} \sum_{j=1}^{196} \left(\mu_j^2 + \sigma_j^2 - 1 - \log \sigma_j^2\right),
# $$
#
# both terms summed per image, with $\lambda = 10^{-4}$ (LDM's "KL-reg" models use $10^{-6}$ next to their
# reconstruction, perceptual and adversarial losses). The KL is chapter 08's closed form, term by term. With so small
# a $\lambda$ this is *not* a VAE whose prior you could sample from: the KL only keeps the latents from drifting to huge
# values and makes $\sigma$ small but non-zero, so that nearby latents decode to similar images. The per-element KL,
# checked against `torch.distributions` on a $4 \times 7 \times 7$ latent:

# %%
generator = seed_everything(0)
mu_check, logvar_check = torch.randn(3, 4, 7, 7, generator=generator), torch.randn(3, 4, 7, 7, generator=generator)
reference_kl = torch.distributions.kl_divergence(
    torch.distributions.Normal(mu_check, (0.5 * logvar_check).exp()), torch.distributions.Normal(0.0, 1.0)).flatten(1).sum(1)
torch.testing.assert_close(gaussian_kl(mu_check.flatten(1), logvar_check.flatten(1)), reference_kl)
print("KL summed over the 196 latent values, closed form = torch.distributions:", reference_kl.numpy().round(1))

# %% [markdown]
# > **Common confusion: "$x = \mathcal{D}(z)$".** A common reading takes the decoder for an exact inverse. In fact it only *approximately* inverts the
# > encoder; the reconstruction is $\tilde{x} = \mathcal{D}(\mathcal{E}(x)) \neq x$, and its error is a floor on what
# > any latent diffusion model can reach, however good the diffusion part. We measure it below. Also: "LDM = VAE +
# > DDPM + CLIP + CFG" is a mnemonic, not an equation, and the original LDM paper did **not** use CLIP: its
# > text-to-image model conditioned on a BERT-tokenised transformer $\tau_\theta$ trained *jointly* with the U-Net,
# > through cross-attention. The frozen CLIP ViT-L/14 text encoder arrived with Stable Diffusion v1.
#
# ### A.3 The model, step by step
#
# Encoder: two stride-2 convolutions halve the resolution twice ($28 \to 14 \to 7$), and a $1 \times 1$ convolution
# outputs $2C = 8$ channels, read as $\mu$ and $\log \sigma^2$. The decoder mirrors it with transposed convolutions
# and ends in a plain convolution: its output is the pixel value itself, with no sigmoid (a sigmoid in front of a
# squared error saturates early in training, when the decoder first learns that most pixels are 0, and its gradient
# then vanishes: we tried it, and the autoencoder got stuck at "every pixel 0"). Samples are clamped to $[0, 1]$ only
# when decoded for display and FID. Built here by hand, then checked against `course_lib.topics.ldm.KLAutoencoder` with the
# same weights.

# %%
w0, w1, c_latent = 16, 32, 4
my_encoder = nn.Sequential(
    nn.Conv2d(1, w0, 3, padding=1), nn.SiLU(),                        # (N, 16, 28, 28)
    nn.Conv2d(w0, w0, 4, stride=2, padding=1), nn.SiLU(),             # (N, 16, 14, 14)
    nn.Conv2d(w0, w1, 3, padding=1), nn.SiLU(),                       # (N, 32, 14, 14)
    nn.Conv2d(w1, w1, 4, stride=2, padding=1), nn.SiLU(),             # (N, 32, 7, 7)
    nn.Conv2d(w1, 2 * c_latent, 1))                                   # (N, 8, 7, 7): mu | logvar
my_decoder = nn.Sequential(
    nn.Conv2d(c_latent, w1, 3, padding=1), nn.SiLU(),                 # (N, 32, 7, 7)
    nn.ConvTranspose2d(w1, w0, 4, stride=2, padding=1), nn.SiLU(),    # (N, 16, 14, 14)
    nn.Conv2d(w0, w0, 3, padding=1), nn.SiLU(),                       # (N, 16, 14, 14)
    nn.ConvTranspose2d(w0, w0, 4, stride=2, padding=1), nn.SiLU(),    # (N, 16, 28, 28)
    nn.Conv2d(w0, 1, 3, padding=1))                                   # (N, 1, 28, 28) pixels


def my_autoencode(x, eps):
    mu, logvar = my_encoder(x).chunk(2, dim=1)                        # (N, 4, 7, 7) each
    z = mu + torch.exp(0.5 * logvar) * eps                            # reparameterised sample
    return my_decoder(z), mu, logvar


library_ae = KLAutoencoder(latent_channels=c_latent, widths=(w0, w1))
library_ae.encoder.load_state_dict(my_encoder.state_dict())
library_ae.decoder.load_state_dict(my_decoder.state_dict())
x_few, eps_few = x_test[:5], torch.randn(5, 4, 7, 7, generator=generator)
mine, mu_mine, _ = my_autoencode(x_few, eps_few)
mu_lib, logvar_lib = library_ae.encode(x_few)
z_lib = reparameterize(mu_lib.flatten(1), logvar_lib.flatten(1), eps=eps_few.flatten(1)).view_as(mu_lib)
torch.testing.assert_close(library_ae.decode(z_lib), mine)
print(f"step-by-step build = course_lib.topics.ldm.KLAutoencoder; {sum(p.numel() for p in library_ae.parameters()):,} parameters")

# %% [markdown]
# ### A.4 Training, then the shipped autoencoder
#
# Under the active profile we train the autoencoder for a few steps (the `ci` run only shows the loss falling); the
# figures then use the shipped `ldm_autoencoder` (3,000 steps on all 60,000 digits).

# %%
ae_cfg = course_lib.zoo.settings("ldm_autoencoder")
generator = seed_everything(1)
ae = KLAutoencoder(latent_channels=ae_cfg.latent_channels, widths=ae_cfg.widths).to(device())
optimizer = torch.optim.Adam(ae.parameters(), lr=ae_cfg.lr)
ae_history = fit(ae, lambda m, batch: autoencoder_loss(m, batch, ae_cfg.kl_weight),
                 minibatches(x_train[:ae_cfg.n_train], batch_size=ae_cfg.batch_size, generator=generator),
                 steps=ae_cfg.steps, optimizer=optimizer, device=device(),
                 scheduler=warmup_cosine(optimizer, ae_cfg.warmup, ae_cfg.steps), desc="KL autoencoder")
mean_digit_mse = (x_test[:1000] - x_train.mean(0)).pow(2).mean().item()  # a baseline: always predict the mean digit
print(f"trained here: test MSE/pixel {evaluate_autoencoder(ae, x_test[:1000])['mse_per_pixel']:.4f} (1,000 digits); "
      f"always predicting the mean training digit: {mean_digit_mse:.4f}")
if profile() == "ci":
    print("under ci the autoencoder trains 40 steps only: expect an error near the mean-digit baseline, not a failure")

autoencoder = course_lib.zoo.load_shipped("ldm_autoencoder", device())
ae_entry = course_lib.core.checkpointing.read_manifest()["ldm_autoencoder"]
recon_report = evaluate_autoencoder(autoencoder, x_test)
print(f"shipped: test MSE/pixel {recon_report['mse_per_pixel']:.5f}, PSNR {recon_report['psnr_db']:.1f} dB, "
      f"KL {recon_report['kl_per_image']:.0f} nats/image (all 10,000 test digits)")

# %%
with torch.no_grad():
    mu_show, _ = autoencoder.encode(x_test[:8].to(device()))
    recon_show = autoencoder.decode(mu_show).cpu()
fig, axes = plt.subplots(3, 1, figsize=(12, 6.6))
image_grid(x_test[:8], nrow=1, ax=axes[0])
axes[0].set_title("test digits $x$", fontsize=12)
image_grid(recon_show.clamp(0, 1), nrow=1, ax=axes[1])
axes[1].set_title(r"reconstructions $\tilde{x} = \mathcal{D}(\mu(x))$", fontsize=12)
image_grid((recon_show - x_test[:8]).abs(), nrow=1, ax=axes[2])
axes[2].set_title(r"$|\tilde{x} - x|$ (same grey scale, 0 to 1)", fontsize=12)
plt.show()

# %% [markdown]
# ### A.5 Latent statistics and the scaling factor
#
# The diffusion of chapter 11 adds noise as $z_t = \sqrt{\bar{\alpha}_t}\, z_0 + \sqrt{1 - \bar{\alpha}_t}\, \epsilon$.
# If the data $z_0$ has variance $\sigma_z^2$ per value, then, $z_0$ and $\epsilon$ being independent,
#
# $$
# \operatorname{Var}(z_t) = \bar{\alpha}_t \sigma_z^2 + (1 - \bar{\alpha}_t),
# \qquad
# \operatorname{SNR}(t) = \frac{\bar{\alpha}_t \sigma_z^2}{1 - \bar{\alpha}_t}.
# $$
#
# The schedule was designed for data of unit scale (pixels in $[-1, 1]$): $\operatorname{Var}(z_t) = 1$ at every $t$
# and $z_T \approx \mathcal{N}(0, I)$, the distribution sampling starts from. Nothing forces an autoencoder's latents
# to have $\sigma_z = 1$ (with a tiny KL weight they do not), and a $\sigma_z$ of 3 multiplies every SNR by 9: the
# same schedule now spends most of its steps at noise levels where the digit is still plainly visible, and the
# variance of $z_t$ is no longer 1 where the network is trained. Scaling by a constant $\kappa$ gives
# $\operatorname{Var}(\kappa z) = \kappa^2 \sigma_z^2$, so
#
# $$
# \kappa = \frac{1}{\sigma_z}
# \quad\Longrightarrow\quad
# \operatorname{Var}(\kappa z_0) = 1 .
# $$
#
# We call this the **latent scale factor** $\kappa$ (`scale_factor` in the code) so that $s$ keeps one meaning in the course:
# chapter 12's guidance scale $s = 1 + w$.
#
# Stable Diffusion's 0.18215 is exactly this: 1 / (std of its VAE's latents), measured once on training images. Ours
# is stored in the autoencoder as a buffer (`scale_factor`, computed on 10,000 training digits by
# `course_lib.topics.ldm.set_scale_factor`). Checked: the scaled latents of the *test* digits have unit variance.

# %%
z_raw = encode_latents(autoencoder, x_test, scaled=False)                  # (10000, 4, 7, 7)
z_scaled = encode_latents(autoencoder, x_test)                             # times scale_factor
scale = float(autoencoder.scale_factor)
print(f"raw latents: mean {z_raw.mean():+.3f}, std {z_raw.std():.3f}; per channel std "
      f"{z_raw.transpose(0, 1).flatten(1).std(1).numpy().round(2)}")
print(f"latent scale factor kappa = 1 / std = {scale:.4f} (recomputed on the test digits: {scale_factor_from(z_raw):.4f}; "
      f"Stable Diffusion's: 0.18215)")
print(f"scaled latents: std {z_scaled.std():.4f}")
assert abs(z_scaled.std().item() - 1) < 0.05
schedule = NoiseSchedule.linear(1000)
for name, z0 in (("unscaled", z_raw), ("scaled", z_scaled)):
    ab, z0 = schedule.alpha_bars[300].item(), z0[:2000]
    var_300 = ab * z0.var().item() + 1 - ab
    zt = schedule.q_sample(z0, 300, torch.randn(z0.shape, generator=generator))
    print(f"{name:>9}: SNR(t = 300) = {ab * z0.var().item() / (1 - ab):.3f}; Var(z_300) formula {var_300:.3f}, "
          f"simulated {zt.var().item():.3f}")
    assert abs(zt.var().item() - var_300) < 0.05 * var_300

# %%
fig, axes = plt.subplots(1, 2, figsize=(11, 3.2))
axes[0].hist(z_raw.flatten().numpy(), bins=100, density=True, alpha=0.6, label=f"raw (std {z_raw.std():.2f})")
axes[0].hist(z_scaled.flatten().numpy(), bins=100, density=True, alpha=0.6, label="scaled (std 1)")
axes[0].set_title("latent values, 10,000 test digits")
axes[0].legend()
image_grid(z_scaled[:6].reshape(24, 1, 7, 7), nrow=6, ax=axes[1], vmin=-3, vmax=3)
axes[1].set_title("the 4 latent channels (columns) of 6 digits (rows)")
plt.show()

# %% [markdown]
# > **Common confusion:** 0.18215 is not a universal constant of latent diffusion. It is the inverse standard
# > deviation of one particular autoencoder's latents (SD v1's); another autoencoder needs its own factor (ours is
# > printed above; SDXL's VAE uses 0.13025). Forgetting it does not crash anything: it silently changes every SNR of
# > the schedule.
#
# ## B. Diffusion in latent space
#
# Nothing in chapter 11's derivation used that $x$ was an image. Replace $x_0$ by $z_0 = \kappa\, \mathcal{E}(x)$ and add the
# class $c$ as the condition:
#
# $$
# L_\text{LDM} = \mathbb{E}_{z_0 = \kappa \mathcal{E}(x),\, c,\, \epsilon \sim \mathcal{N}(0, I),\, t}
# \left[ \lVert \epsilon - \epsilon_\theta(z_t, t, c) \rVert^2 \right],
# \qquad
# z_t = \sqrt{\bar{\alpha}_t}\, z_0 + \sqrt{1 - \bar{\alpha}_t}\, \epsilon .
# $$
#
# `course_lib.topics.ldm.latent_ddpm_loss` is chapter 11's `ddpm_loss` with labels (10% of them replaced by a "no label"
# token, so that classifier-free guidance, chapter 12, is possible later). Sampling is chapter 11's `ddim_sample` on
# $7 \times 7 \times 4$ noise, then $\tilde{x} = \mathcal{D}(\hat{z}_0 / \kappa)$. One difference: chapter 11 clipped
# $\hat{x}_0$ to $[-1, 1]$ at every step because pixels live there; latents do not, so `clip_x0=False`.
# At initialisation both our noise predictors output 0, so the loss is $\mathbb{E} \lVert \epsilon \rVert^2$ per
# value $= 1$:

# %%
fresh_dit = DiT(**course_lib.zoo.settings("dit_mnist").model)
loss_at_init = latent_ddpm_loss(fresh_dit, z_scaled[:512], y_test[:512], schedule,
                                generator=torch.Generator().manual_seed(0)).item()
print(f"loss of a fresh DiT: {loss_at_init:.4f} (E eps^2 = 1)")
assert abs(loss_at_init - 1) < 0.05

# %% [markdown]
# ### B.1 The compute saved, measured
#
# Two numbers: the multiply-adds of one forward pass (torch's `FlopCounterMode`, via chapter 04's
# `measured_multiply_adds`) and the wall time to sample one image with DDIM (25 steps), timed now on this machine.
# Pixel-space `ddpm_mnist` (chapter 11's U-Net) against the latent DiT would mix two changes, the space and the
# architecture. So a third model separates them: a `LatentUNet` built from the same `ResBlock` and `SelfAttention` as
# the pixel U-Net, with about as many parameters (widths 48, 64: 582k against 627k), on the latents. Its cost does not
# depend on its weights, so it is timed untrained. Pixel U-Net against latent U-Net is the saving of the latent
# space alone; latent U-Net against DiT is the architecture.

# %%
pixel_unet, pixel_schedule, _ = load_ddpm_mnist(device())
seed_everything(0)
same_design = LatentUNet(widths=(48, 64), emb_dim=128)  # chapter 11's blocks, about the pixel U-Net's size; untrained
one_t, one_y = torch.tensor([500]), torch.tensor([3])
macs = {"pixel U-Net (ddpm_mnist)": measured_multiply_adds(pixel_unet.cpu(), torch.zeros(1, 1, 28, 28), one_t),
        "latent U-Net, same design": measured_multiply_adds(same_design, torch.zeros(1, 4, 7, 7), one_t, one_y),
        "latent DiT (dit_mnist)": measured_multiply_adds(dit.cpu(), torch.zeros(1, 4, 7, 7), one_t, one_y),
        "decoder (once per image)": measured_multiply_adds(autoencoder.decoder.cpu(), torch.zeros(1, 4, 7, 7))}
pixel_unet, dit, autoencoder = pixel_unet.to(device()), dit.to(device()), autoencoder.to(device())
same_design = same_design.to(device())
params = {"pixel U-Net (ddpm_mnist)": sum(p.numel() for p in pixel_unet.parameters()),
          "latent U-Net, same design": sum(p.numel() for p in same_design.parameters()),
          "latent DiT (dit_mnist)": sum(p.numel() for p in dit.parameters()),
          "decoder (once per image)": sum(p.numel() for p in autoencoder.decoder.parameters())}
ddim_steps, n_timed = 25, per_profile(ci=dict(n=10), cpu=dict(n=100), gpu=dict(n=500)).n
labels_timed = balanced_labels(n_timed)


def seconds_per_image(sample):
    start = time.perf_counter()
    sample()
    return (time.perf_counter() - start) / n_timed


per_image_time = {
    "pixel U-Net": seconds_per_image(lambda: ddim_sample(pixel_unet, (n_timed, 1, 28, 28), pixel_schedule, steps=ddim_steps,
                                                         device=device(), generator=torch.Generator().manual_seed(0),
                                                         show_progress=False)),
    "latent U-Net + decoder": seconds_per_image(lambda: sample_latent_diffusion(
        same_design, autoencoder, labels_timed, schedule, steps=ddim_steps, generator=torch.Generator().manual_seed(0))),
    "latent DiT + decoder": seconds_per_image(lambda: sample_latent_diffusion(
        dit, autoencoder, labels_timed, schedule, steps=ddim_steps, generator=torch.Generator().manual_seed(0)))}
print(f"{'model':<26} {'parameters':>10} {'multiply-adds / pass':>21}")
for name in macs:
    print(f"{name:<26} {params[name]:>10,} {macs[name]:>21,}")
per_image_macs = {"pixel U-Net": ddim_steps * macs["pixel U-Net (ddpm_mnist)"],
                  "latent U-Net + decoder": ddim_steps * macs["latent U-Net, same design"] + macs["decoder (once per image)"],
                  "latent DiT + decoder": ddim_steps * macs["latent DiT (dit_mnist)"] + macs["decoder (once per image)"]}
print(f"\nper sampled image, DDIM {ddim_steps} steps (n = {n_timed} timed):")
for name in per_image_macs:
    print(f"{name:<24} {per_image_macs[name] / 1e6:6.0f} M multiply-adds ({per_image_macs['pixel U-Net'] / per_image_macs[name]:4.1f}x fewer "
          f"than pixel), {1000 * per_image_time[name]:6.1f} ms ({per_image_time['pixel U-Net'] / per_image_time[name]:4.1f}x faster)")
latent_saving = per_image_macs["pixel U-Net"] / per_image_macs["latent U-Net + decoder"]
assert 4 < latent_saving < 6, latent_saving  # the same design on 4x fewer values: about 5x fewer multiply-adds

# %%
fig, axes = plt.subplots(1, 2, figsize=(11, 3.2))
names = [name.replace(" + ", "\n+ ") for name in per_image_macs]
colours = ["tab:gray", "tab:green", "tab:blue"]
axes[0].bar(names, [v / 1e6 for v in per_image_macs.values()], color=colours)
axes[0].set_ylabel("M multiply-adds per image")
axes[1].bar(names, [1000 * v for v in per_image_time.values()], color=colours)
axes[1].set_ylabel("ms per image (measured)")
fig.suptitle(f"sampling one digit with DDIM, {ddim_steps} steps")
plt.show()

# %% [markdown]
# Read the two comparisons separately. Same design, pixel against latent: the multiply-adds per image fall by the
# factor printed above (about 5x, the cell asserts it), close to the 4x fewer values; the decoder, run once per image,
# adds little (its multiply-adds are printed). Latent U-Net against DiT, same latents: the architecture alone; here
# about the same multiply-adds per image, at about half the parameters. The
# measured times follow the multiply-adds only roughly (small tensors on a CPU are dominated by per-call overheads;
# the ratios printed are this machine's). Beside Stable Diffusion's, the saving is modest: our latent has only 4x fewer
# values (SD: 48x). The decoder runs once per image, the denoiser once per step, so the autoencoder's cost is
# amortised over the sampling steps.
#
# ## C. DiT: a transformer on latent patches, conditioned by adaLN-Zero
#
# The model first. Left: the latent is cut into patches, each patch becomes a token, the tokens pass through a stack of
# DiT blocks and are put back together as $\hat\epsilon$. Middle: the timestep and the class make one conditioning vector
# $e$, from which every block regresses its shifts $\beta$, scales $\gamma$ and gates $\alpha$. Right: one block; its
# gates start at zero, so a fresh block is the identity. C.1 is the patches, C.2 the block, C.3 training.

# %%
course_lib.topics.dit.schematic()
plt.show()

# %% [markdown]
# ### C.1 Patchify the latent
#
# A latent $z \in \mathbb{R}^{C \times S \times S}$ cut into $p \times p$ patches gives $T = (S / p)^2$ tokens of
# $C p^2$ numbers each, chapter 04's `patchify`. DiT's latents are $32 \times 32 \times 4$ (256-pixel images,
# $f = 8$); $p = 2, 4, 8$ give $T = 256, 64, 16$ tokens. Halving $p$ multiplies $T$, and roughly the compute, by 4
# (attention by up to 16), at the same parameter count; DiT-XL/2, the best model, uses the smallest patch. Our latent is
# $7 \times 7$, so $p = 1$ (49 tokens of 4 numbers, each token one $4 \times 4$ patch of the digit) or $p = 7$ (one
# token).

# %%
for p_size, size in ((2, 32), (4, 32), (8, 32), (1, 7), (7, 7)):
    tokens = patchify(torch.zeros(1, 4, size, size), p_size)
    assert tokens.shape[1] == (size // p_size) ** 2
    print(f"latent 4x{size}x{size}, p = {p_size}: T = {tokens.shape[1]:>3} tokens of {tokens.shape[2]:>3} numbers")
z_round = torch.randn(2, 4, 7, 7, generator=generator)
assert torch.equal(unpatchify(patchify(z_round, 1), 1, 4, 7, 7), z_round)

# %% [markdown]
# ### C.2 adaLN-Zero
#
# DiT tried four ways of feeding $t$ and $c$ to the transformer (extra tokens, cross-attention, adaptive LayerNorm,
# adaLN-Zero); adaLN-Zero gave the best FID. A conditioning vector $e = \operatorname{MLP}(\operatorname{sinusoidal}(t)) +
# \operatorname{embed}(c) \in \mathbb{R}^D$ (DiT's paper calls this vector $c$; here $c$ stays the class, and the code's
# argument `c` is $e$) is mapped by one linear layer (after a SiLU) to six vectors
# $\beta_1, \gamma_1, \alpha_1, \beta_2, \gamma_2, \alpha_2 \in \mathbb{R}^D$ (shift, scale, gate), and a block computes
#
# $$
# \begin{aligned}
# h &= x + \alpha_1 \odot \operatorname{Attn}\big(\operatorname{LN}(x) \odot (1 + \gamma_1) + \beta_1\big), \\
# x' &= h + \alpha_2 \odot \operatorname{MLP}\big(\operatorname{LN}(h) \odot (1 + \gamma_2) + \beta_2\big),
# \end{aligned}
# $$
#
# with $\operatorname{LN}$ a LayerNorm *without* its own affine parameters (the affine part now depends on $e$). "Zero":
# the linear layer that produces $(\beta, \gamma, \alpha)$ starts with zero weights and biases, so at initialisation
# $\alpha_1 = \alpha_2 = 0$ and
#
# $$
# h = x + 0 \odot \operatorname{Attn}(\cdot) = x, \qquad x' = h + 0 \odot \operatorname{MLP}(\cdot) = x :
# $$
#
# every block is exactly the identity, whatever its attention and MLP weights. The final layer (adaLN, then a linear
# map to $C p^2$ numbers per token) is zero-initialised too, so a fresh DiT predicts $\hat{\epsilon} = 0$. The block
# step by step, against `course_lib.topics.dit.DiTBlock` with the same (perturbed, so that nothing is trivially zero) weights:

# %%
def my_dit_block(block, x, c):
    """x (N, T, D), c (N, D) -> (N, T, D): the two equations above, written out."""
    beta1, gamma1, alpha1, beta2, gamma2, alpha2 = block.adaLN_modulation[1](F.silu(c)).chunk(6, dim=1)  # (N, D) each
    ln = lambda v: F.layer_norm(v, v.shape[-1:], eps=1e-6)                                              # no affine
    h = x + alpha1[:, None] * block.attn(ln(x) * (1 + gamma1[:, None]) + beta1[:, None])[0]
    return h + alpha2[:, None] * block.mlp(ln(h) * (1 + gamma2[:, None]) + beta2[:, None])


block = DiTBlock(dim=32, heads=4)
x_tokens, c_vec = torch.randn(2, 49, 32, generator=generator), torch.randn(2, 32, generator=generator)
assert torch.equal(block(x_tokens, c_vec)[0], x_tokens)                   # fresh: exactly the identity
assert torch.equal(my_dit_block(block, x_tokens, c_vec), x_tokens)
print("a fresh DiTBlock is exactly the identity (torch.equal, not allclose)")
with torch.no_grad():
    for p in block.parameters():
        p.add_(0.1 * torch.randn(p.shape, generator=generator))
torch.testing.assert_close(my_dit_block(block, x_tokens, c_vec), block(x_tokens, c_vec)[0])
print("perturbed: step-by-step block = course_lib.topics.dit.DiTBlock")
z_probe = torch.randn(4, 4, 7, 7, generator=generator)
assert torch.equal(fresh_dit(z_probe, torch.tensor([1, 10, 100, 999]), torch.tensor([0, 1, 2, 10])), torch.zeros_like(z_probe))
print("a fresh DiT outputs exactly zero")

# %% [markdown]
# If every block starts as the identity and the output is zero, does anything learn? Follow the gradient backwards.
# The output is $\hat{\epsilon} = W_\text{out} u$ with $u$ the final normalised tokens: $\partial L / \partial
# W_\text{out} = (\partial L / \partial \hat{\epsilon})\, u^\top \neq 0$, but everything before it receives
# $W_\text{out}^\top (\partial L / \partial \hat{\epsilon}) = 0$. So step 1 changes only the final layer. From
# step 2 the gates receive $\partial x' / \partial \alpha_1 = \operatorname{Attn}(\cdot) \neq 0$ times a non-zero
# upstream gradient, while the attention and MLP weights still get $\alpha_1 \odot (\dots) = 0$. From step 3, with the
# gates open, everything trains. Checked with three plain SGD steps on a fresh DiT:

# %%
probe = DiT(**course_lib.zoo.settings("dit_mnist").model)
probe_optimizer = torch.optim.SGD(probe.parameters(), lr=0.1)
watch = {"final.linear.weight": "final linear layer", "blocks.0.adaLN_modulation.1.weight": "block 0 adaLN (gates)",
         "blocks.0.attn.qkv.weight": "block 0 attention q/k/v"}
grad_table = []
for step in range(3):
    probe_optimizer.zero_grad()
    latent_ddpm_loss(probe, z_scaled[:64], y_test[:64], schedule, generator=torch.Generator().manual_seed(step)).backward()
    grads = dict(probe.named_parameters())
    grad_table.append([grads[name].grad.norm().item() for name in watch])
    probe_optimizer.step()
print(f"{'gradient norm at step':<28}" + "".join(f"{k:>10}" for k in (1, 2, 3)))
for i, label in enumerate(watch.values()):
    print(f"{label:<28}" + "".join(f"{row[i]:>10.2e}" for row in grad_table))
assert grad_table[0][0] > 0 and grad_table[0][1] == 0 and grad_table[0][2] == 0   # step 1: only the final layer
assert grad_table[1][1] > 0 and grad_table[1][2] == 0                             # step 2: gates, not attention
assert grad_table[2][2] > 0                                                       # step 3: everything

# %% [markdown]
# > **Common confusion:** "DiT = ViT with a diffusion loss". Three things the one-liner hides: the conditioning is
# > adaLN-Zero (not a [CLS] or label token), positions are *fixed* 2-D sin-cos embeddings
# > (`course_lib.topics.dit.sincos_position_embedding`), and DiT also learns a diagonal covariance $\Sigma_\theta$ (twice the
# > output channels, trained with the variational bound as in Improved DDPM), so the loss is $L_\text{simple}$ only for
# > the $\epsilon$ half. DiT is class-conditional (ImageNet labels), not text-conditional. Ours predicts
# > $\epsilon$ only, like chapter 11's U-Net.
#
# ### C.3 Training a DiT on the latents; the shipped one
#
# Under the active profile the DiT trains for a few steps here (with the same settings as the U-Net in section D, so
# the two runs are comparable). The samples come from the shipped `dit_mnist` (10,000 steps of batch 128, the manifest
# says so below), 25 DDIM steps, class by class.

# %%
compare_cfg = per_profile(ci=dict(n_train=2_000, steps=30, batch_size=32),
                          cpu=dict(n_train=60_000, steps=400, batch_size=128),
                          gpu=dict(n_train=60_000, steps=2_000, batch_size=128))
z_train = encode_latents(autoencoder, x_train[:compare_cfg.n_train])     # (n, 4, 7, 7), scaled


def train_latent_model(model, desc, seed=2):
    generator = seed_everything(seed)
    model = model.to(device())
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0)
    history = fit(model, lambda m, b: latent_ddpm_loss(m, b[0], b[1], schedule, 0.1),
                  minibatches(z_train, y_train[:compare_cfg.n_train], batch_size=compare_cfg.batch_size,
                              generator=generator),
                  steps=compare_cfg.steps, optimizer=optimizer, device=device(), clip_grad_norm=1.0,
                  scheduler=warmup_cosine(optimizer, max(compare_cfg.steps // 20, 1), compare_cfg.steps), desc=desc)
    return model, history


seed_everything(3)
dit_here, dit_history = train_latent_model(DiT(**course_lib.zoo.settings("dit_mnist").model), "DiT on latents")

# %%
per_class = per_profile(ci=dict(n=6), cpu=dict(n=10), gpu=dict(n=10)).n
fig, axes = plt.subplots(1, 2, figsize=(11, 6))
for ax, scale in zip(axes, (1.0, 5.0)):  # s = 1: plain conditional; s = 5: chapter 12's classifier-free guidance
    samples = sample_latent_diffusion(dit, autoencoder, balanced_labels(10 * per_class), schedule, steps=25,
                                      guidance_scale=scale, generator=torch.Generator().manual_seed(1))  # (10k, 1, 28, 28)
    by_class = samples.reshape(per_class, 10, 1, 28, 28).transpose(0, 1).reshape(-1, 1, 28, 28)  # class-major order
    image_grid(by_class, nrow=10, ax=ax)
    ax.set_title(f"guidance scale s = {scale:g}" + (" (no guidance)" if scale == 1 else " (CFG)"))
fig.suptitle("shipped dit_mnist: one row per class 0-9, DDIM 25 steps, decoded")
plt.show()
print(f"shipped dit_mnist (manifest): {dit_entry['recipe']['steps']:,} steps of batch {dit_entry['recipe']['batch_size']}, "
      f"FID {dit_entry['metrics'].get('fid')} at n = {dit_entry['metrics'].get('fid_n')}, "
      f"floor {dit_entry['metrics'].get('fid_floor')}; `python -m course_lib.zoo bench dit_mnist` measures it again")
assert dit_entry["recipe"]["steps"] == 10_000 and dit_entry["recipe"]["batch_size"] == 128  # as the text says
# the autoencoder alone: 500 real test digits encoded and decoded, scored like the samples (FID against the same 500
# reference digits; the floor is the same 500 digits not passed through the autoencoder)
reference_digits, twin_digits = real_split(500, x_test)
reference_features = classifier_outputs(reference_digits, judge)[0]
round_trip = decode_latents(autoencoder, encode_latents(autoencoder, twin_digits))
fid_round_trip = frechet_distance(classifier_outputs(round_trip, judge)[0], reference_features)
fid_twin = frechet_distance(classifier_outputs(twin_digits, judge)[0], reference_features)
print(f"the autoencoder alone, n = 500: FID of real digits encoded and decoded {fid_round_trip:.1f}; "
      f"of the same digits untouched (the floor) {fid_twin:.1f}")
assert fid_round_trip < 1.1 * fid_twin

# %% [markdown]
# **Watch a sample form.** Two sliders: the DDIM timestep $t$ (from $T = 1000$ down to 0) and the guidance scale $s$.
# Top row: what the decoder makes of the noisy latent $z_t$ itself. Bottom row: the decoded current guess of the clean
# latent, $\hat z_0 = (z_t - \sqrt{1 - \bar\alpha_t}\, \tilde\epsilon) / \sqrt{\bar\alpha_t}$. One digit per column (0-9), the same
# starting noise for every $s$. Every frame is computed once below, so the sliders are instant (run headless, the cell
# draws the middle timestep at $s = 3$). The printed table counts, at each $t$, how many of the 10 guesses $\hat z_0$ the
# classifier already reads as the asked-for digit: the identity settles long before $z_t$ is clean.

# %%
widget_cfg = per_profile(ci=dict(steps=10, scales=(1.0, 3.0, 5.0)),
                         cpu=dict(steps=25, scales=(1.0, 2.0, 3.0, 5.0, 7.0)),
                         gpu=dict(steps=25, scales=(1.0, 2.0, 3.0, 5.0, 7.0)))
frames = {scale: latent_trajectory(dit, autoencoder, torch.arange(10), schedule, steps=widget_cfg.steps,
                                   guidance_scale=scale, generator=torch.Generator().manual_seed(4))
          for scale in widget_cfg.scales}  # scale -> [(t, decoded z_t (10, 1, 28, 28), decoded z0_hat), ...]
frame_timesteps = [t for t, _, _ in frames[1.0]]  # T, ..., 1, 0
print("asked-for digit read in the guess z0_hat, out of 10, at t =", frame_timesteps)
for scale, trajectory in frames.items():
    read = [int((classifier_outputs(guess, judge)[1].argmax(1) == torch.arange(10)).sum()) for _, _, guess in trajectory]
    print(f"s = {scale:g}: {read}")


def draw_frame(axes, t, scale):
    index = frame_timesteps.index(t)
    _, decoded_zt, decoded_z0_hat = frames[scale][index]
    image_grid(decoded_zt, nrow=1, ax=axes[0])
    axes[0].set_title(f"decoded $z_t$, t = {t}", fontsize=10)
    image_grid(decoded_z0_hat, nrow=1, ax=axes[1])
    axes[1].set_title(f"decoded $\\hat z_0$ (the guess at t = {t}), guidance scale s = {scale:g}", fontsize=10)


course_lib.core.widgets.interactive_figure(
    draw_frame, nrows=2, figsize=(10, 2.8),
    t=ipywidgets.SelectionSlider(options=frame_timesteps, value=frame_timesteps[len(frame_timesteps) // 2],
                                 description="timestep t"),
    scale=ipywidgets.SelectionSlider(options=list(widget_cfg.scales), value=3.0, description="scale s"))

# %% [markdown]
# Numbers for the shipped model (measured with `python -m course_lib.zoo bench dit_mnist`, n = 500, DDIM 25 steps, no
# guidance): FID 36.3 against a real-vs-real floor of 17.8, 2.0x the floor. Two parts of that are easy to separate. The
# autoencoder alone, real test digits encoded and decoded, scores about the floor at the same n (the cell above
# measures it now): what the classifier's features can see of its blur is next to nothing, and the gap is the DiT's (10,000 steps of batch 128, 15 minutes
# on 2 CPU cores in bf16). Classifier-free guidance (chapter 12; the DiT was trained with 10% label dropout, so it can be
# guided) at scale $s = 5$ ($w = 4$ in Ho & Salimans' convention) gives FID 143 at the same n and sampler: guidance
# trades the variety of the samples for how clearly each shows its label, and FID counts the variety (chapter 12, F).
# Pixel-space `ddpm_mnist` at the same n and sampler: 27.4. A longer run of the recipe, `python -m course_lib.zoo
# train dit_mnist --profile gpu` (50,000 steps of batch 256), is the way to a lower number.
#
# ### C.4 Attention maps (optional deep dive)
#
# Chapter 04's attention explorer, with `prefix_tokens=0` (DiT has no [CLS] token). Every one of the 49 tokens is a
# $4 \times 4$ patch of the digit, so the maps are drawn on the 28x28 test digits with `patch_size=4`. The inputs are
# the digits' scaled latents noised to $t = 200$ (moderately noisy), with their true labels. Move the query token to
# see where each patch looks.

# %%
t_show = 200
z0_show = z_scaled[:6].to(device())
zt_show = schedule.q_sample(z0_show, t_show, torch.randn(z0_show.shape, generator=torch.Generator().manual_seed(2)).to(device()))
with torch.no_grad():
    _, dit_attentions = dit(zt_show, torch.full((6,), t_show), y_test[:6].to(device()), return_attention=True)
course_lib.topics.vit.attention_explorer(x_test[:6], [a.cpu() for a in dit_attentions], patch_size=4, prefix_tokens=0,
                                      titles=[f"digit {int(y)}, t = {t_show}" for y in y_test[:6]], query=24,
                                      temperature=False)

# %% [markdown]
# ## D. DiT against a U-Net of about the same size, on the same latents (optional deep dive)
#
# `course_lib.topics.ldm.LatentUNet` is chapter 11's U-Net design (its `ResBlock` and `SelfAttention`) on $7 \times 7$
# latents: one downsampling to $4 \times 4$, attention there, skip connections. We pick its widths so that its parameter
# count is close to the DiT's, train it with exactly the settings of the DiT above, and compare at toy scale.

# %%
unet_here, unet_history = train_latent_model(LatentUNet(widths=(32, 48), emb_dim=64), "latent U-Net")
val_z, val_y = encode_latents(autoencoder, x_test[:1000]), y_test[:1000]


@torch.no_grad()
def held_out_loss(model, seed=0):
    model.eval()
    return latent_ddpm_loss(model, val_z.to(device()), val_y.to(device()), schedule,
                            generator=torch.Generator().manual_seed(seed)).item()


rows = []
for name, model, history in (("DiT", dit_here, dit_history), ("latent U-Net", unet_here, unet_history)):
    rows.append((name, sum(p.numel() for p in model.parameters()), sum(history.losses[-20:]) / 20, held_out_loss(model),
                 history.wall_time_s, measured_multiply_adds(model.cpu(), torch.zeros(1, 4, 7, 7), one_t, one_y)))
    model.to(device())
print(f"profile {profile()!r}: {compare_cfg.steps} steps, batch {compare_cfg.batch_size}, same data, seed and optimiser")
print(f"{'model':<14} {'params':>8} {'train loss':>11} {'test loss':>10} {'time (s)':>9} {'multiply-adds':>14}")
for name, n_params, train_loss, test_loss, seconds, n_macs in rows:
    print(f"{name:<14} {n_params:>8,} {train_loss:>11.4f} {test_loss:>10.4f} {seconds:>9.1f} {n_macs:>14,}")
plot_losses(dit_history, unet_history, labels=["DiT", "latent U-Net"], smooth=5)
plt.show()

# %% [markdown]
# Read the table with its scale in mind. At equal parameters the two spend very different compute per pass (the
# multiply-adds column) and per second of CPU time, and a few hundred steps on 49 tokens says little about which
# design is better: which one wins here can change with the profile, the seed and the learning rate. DiT's case is
# how it scales (its paper's FID falls steadily as Gflops grow, across S/B/L/XL and patch sizes, and transformers
# scale on accelerators better than convolutions do); a toy run cannot test that. What it does show is that the two are
# interchangeable noise predictors for the same latent diffusion: same loss, same sampler, same decoder.
# The table above says which one was ahead under your profile; rerun with another seed or profile and it may flip.
#
# ## E. Exercises
#
# Each exercise cell below holds a working solution; in the student version it is replaced by a stub. Write your own,
# run the check cell, and reveal the reference only when stuck.
#
# **Exercise 1: the adaptive LayerNorm step.** Write `my_modulate(x, shift, scale)` for tokens `x` (N, T, D) and
# per-example `shift`, `scale` (N, D): $x \odot (1 + \gamma) + \beta$, the same $\gamma, \beta$ for every token.

# %% tags=["exercise"]
def my_modulate(x, shift, scale):
    """x (N, T, D), shift and scale (N, D) -> (N, T, D)."""
    ### BEGIN SOLUTION
    return x * (1 + scale[:, None, :]) + shift[:, None, :]
    ### END SOLUTION


# %%
generator = seed_everything(8)
course_lib.core.check.check_function(my_modulate, modulate,
                                [(torch.randn(2, 5, 8, generator=generator), torch.randn(2, 8, generator=generator),
                                  torch.randn(2, 8, generator=generator)),
                                 (torch.randn(3, 1, 4, generator=generator), torch.zeros(3, 4), torch.zeros(3, 4))])

# %%
course_lib.core.check.show_solution(modulate)

# %% [markdown]
# **Exercise 2: the scaling factor.** Write `my_scale_factor(latents)` returning $1 / \sigma$, the inverse standard
# deviation of all the values of a latent tensor (any shape, unbiased estimate as `torch.std`), as a 0-d tensor.

# %% tags=["exercise"]
def my_scale_factor(latents):
    """1 / std of every value of ``latents``, a 0-d tensor."""
    ### BEGIN SOLUTION
    return 1.0 / latents.std()
    ### END SOLUTION


# %%
course_lib.core.check.check_function(my_scale_factor, lambda z: torch.tensor(scale_factor_from(z)),
                                [(5 * torch.randn(100, 4, 7, 7, generator=generator),),
                                 (0.2 * torch.randn(10, 3, generator=generator) + 4,)], rtol=1e-6)

# %%
course_lib.core.check.show_solution(scale_factor_from)

# %% [markdown]
# **Exercise 3: 2-D sin-cos positions.** Write `my_sincos_positions(grid, dim)`: for the tokens of a `grid` x `grid`
# patch grid in row-major order, the first `dim // 2` features are chapter 11's `sinusoidal_embedding` of the token's
# row index, the last `dim // 2` of its column index. Shape (grid * grid, dim).

# %% tags=["exercise"]
def my_sincos_positions(grid, dim):
    """(grid * grid, dim): [sinusoidal(row) | sinusoidal(col)] per token, rows first."""
    ### BEGIN SOLUTION
    from course_lib.topics.unet import sinusoidal_embedding

    rows = torch.arange(grid).repeat_interleave(grid)          # 0,0,...,1,1,...
    cols = torch.arange(grid).repeat(grid)                     # 0,1,...,0,1,...
    return torch.cat([sinusoidal_embedding(rows, dim // 2), sinusoidal_embedding(cols, dim // 2)], dim=1)
    ### END SOLUTION


# %%
course_lib.core.check.check_function(my_sincos_positions, sincos_position_embedding, [(7, 64), (3, 8), (1, 4)])

# %%
course_lib.core.check.show_solution(sincos_position_embedding)

# %% [markdown]
# **Exercise 4: the patch size.** *Predict, then run.* The shipped DiT uses $p = 1$: 49 tokens of 4 numbers each. Built
# with $p = 7$ instead, the whole $4 \times 7 \times 7$ latent is one token of 196 numbers; width $D = 64$, depth 4 and
# everything else unchanged. How many times more multiply-adds does one forward pass cost with $p = 1$ than with $p = 7$?
# 49 (the number of tokens), 49² = 2,401 (attention is quadratic), or something else? Write your number into
# `MY_PREDICTION` and one sentence why, then run the cell: it counts both with torch's `FlopCounterMode`, as in B.1.

# %%
MY_PREDICTION = None  # your guess: multiply-adds with p = 1 divided by multiply-adds with p = 7

# %%
dit_settings = dict(course_lib.zoo.settings("dit_mnist").model)
patch_macs = {}
for p_size in (1, 7):
    seed_everything(0)
    model_p = DiT(**{**dit_settings, "patch_size": p_size})
    patch_macs[p_size] = measured_multiply_adds(model_p, torch.zeros(1, 4, 7, 7), one_t, one_y)
    print(f"p = {p_size}: {model_p.grid ** 2:>2} token(s), {sum(q.numel() for q in model_p.parameters()):,} parameters, "
          f"{patch_macs[p_size]:,} multiply-adds per pass")
print(f"your prediction: {MY_PREDICTION}; measured ratio p = 1 / p = 7: {patch_macs[1] / patch_macs[7]:.1f}")

# %% [markdown]
# *Answer, after you ran it.* Less than 49, and far below 2,401. Per block, the work done once per token (the q/k/v and
# output projections and the MLP, about $12 D^2$ multiply-adds per token) grows with $T$; attention's $T^2$ part costs
# $2 T^2 D$ per block, which at $T = 49$ and $D = 64$ is still smaller than the per-token part ($2 T^2 D = 307{,}328$
# against $12 T D^2 = 2{,}408{,}448$). And some work does not depend on $T$ at all: the conditioning MLP and every
# block's adaLN regression ($6 D^2$ per block) run once per image, and the patch embedding costs $T \cdot C p^2 \cdot D$,
# the same for both. With $p = 7$ that fixed part is about 40% of the pass, which is why the ratio falls short of 49
# (it is about 33).
# DiT's own sweep goes the other way: halving $p$ costs about 4x the compute and buys a lower FID.

# %% [markdown]
# ---
# ## Summary
#
# | key equation | derived in | checked by |
# |---|---|---|
# | $\operatorname{KL} = \frac{1}{2} \sum_j (\mu_j^2 + \sigma_j^2 - 1 - \log \sigma_j^2)$, weighted by $10^{-4}$ | A.2 | `torch.distributions` on a 4x7x7 latent, in A.2 |
# | $\kappa = 1 / \sigma_z$, so $\operatorname{Var}(\kappa z_0) = 1$; $\operatorname{SNR}(t) = \bar\alpha_t \sigma_z^2 / (1 - \bar\alpha_t)$ | A.5 | the scaled test latents' std and the simulated variance at $t = 300$, in A.5 |
# | $L_\text{LDM} = \mathbb{E} \lVert \epsilon - \epsilon_\theta(z_t, t, c) \rVert^2$ on $z_0 = \kappa \mathcal{E}(x)$, equal to 1 at initialisation | B | the loss of a fresh DiT, in B |
# | $T = (S / p)^2$ tokens of $C p^2$ numbers | C.1 | the token counts and the patchify round trip, in C.1 |
# | adaLN-Zero: $x' = h + \alpha_2 \odot \operatorname{MLP}(\cdot)$, $h = x + \alpha_1 \odot \operatorname{Attn}(\cdot)$, $\alpha = 0$ at initialisation, so $x' = x$ | C.2 | `torch.equal` on a fresh block and the three plain gradient steps, in C.2 |
#
# **Three things to remember.**
#
# 1. Latent diffusion is chapter 11's diffusion, unchanged, on $z_0 = \kappa\, \mathcal{E}(x)$. The autoencoder's
#    reconstruction is a floor on the quality, and the latent scale factor $\kappa = 1 / \sigma_z$ keeps the schedule's
#    signal-to-noise ratios the ones it was designed for.
# 2. The saving is in the values the denoiser processes at every step; the decoder runs once per image. To measure it,
#    compare the same design in pixel and latent space, not two different networks.
# 3. DiT is a transformer on latent patches whose blocks take their shift, scale and gate from the timestep and the
#    class (adaLN-Zero); gates that start at zero make every block the identity, so a fresh DiT predicts
#    $\hat\epsilon = 0$ and training starts from a stable point.
#
# ---
# ## F. Discussion questions
#
# 1. The autoencoder's reconstruction error is a floor for the whole latent model. Our FID is measured on *decoded*
#    samples: how would you find out how much of it is the autoencoder's fault and how much the diffusion model's?
#    (Hint: what is the FID of $\mathcal{D}(\mathcal{E}(x))$ for real test digits?)
# 2. The KL weight was $10^{-4}$. What happens to the latents, the scale factor and the diffusion model if it is 0?
#    If it is 1 (a real VAE)? Why does LDM choose "almost 0"?
# 3. With $f = 4$ our latent saves 4x in values but the measured saving per sample is different. Which costs does the
#    count of values leave out, on each side?
# 4. adaLN-Zero makes every block the identity at initialisation. Chapter 11's U-Net zero-initialises the last
#    convolution of each ResBlock. Compare the two: what does each buy for training a deep network from scratch?
# 5. DiT-XL/2 uses patch size 2 on $32 \times 32$ latents (256 tokens). What would $p = 1$ cost, and why might it
#    still be worth it for small latents like ours?
