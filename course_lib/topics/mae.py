"""Chapter 05's masked autoencoder (He et al., 2021), small enough for a CPU.

    images --patchify--> N patches --shuffle per sample, keep N_keep = int(N (1 - r))--> visible
    encoder (chapter 04's ViT) on [CLS] + visible tokens only (no mask tokens)
    decoder: linear to its width, a shared mask token for every hidden patch, unshuffle with
    ids_restore, decoder positions, a few blocks, linear to P*P*C pixels per patch
    loss: mean squared error on the MASKED patches only (targets: raw pixels, or per-patch normalised)
"""
from __future__ import annotations

import torch
from torch import nn

from course_lib.core.runtime import device, seed_everything
from course_lib.core.train import fit, minibatches, warmup_cosine
from course_lib.data import load_mnist
from course_lib.topics.vit import Block, ViT, patchify, unpatchify



def random_masking(batch: int, n_patches: int, mask_ratio: float, generator: torch.Generator | None = None,
                   device: torch.device | str | None = None):
    """Per-sample random masking by sorting uniform noise, as the MAE code does. Chapter 05, E.1.

    Returns ``(ids_keep, ids_restore, mask)``: ``ids_keep`` (B, N_keep) the kept patches (in shuffled
    order), ``ids_restore`` (B, N) the inverse permutation (``ids_shuffle[ids_restore] = arange``),
    ``mask`` (B, N) float, 1 = hidden, 0 = visible, in the original patch order.
    N_keep = int(N (1 - mask_ratio)), at least 1.
    """
    if not 0 <= mask_ratio < 1:
        raise ValueError(f"mask_ratio must be in [0, 1), got {mask_ratio}")
    n_keep = max(int(n_patches * (1 - mask_ratio)), 1)
    noise = torch.rand(batch, n_patches, generator=generator).to(device or "cpu")   # (B, N)
    ids_shuffle = noise.argsort(dim=1)                 # small noise first: those are kept
    ids_restore = ids_shuffle.argsort(dim=1)           # where each original patch went
    mask = torch.ones(batch, n_patches, device=noise.device)
    mask[:, :n_keep] = 0                               # in shuffled order: the first n_keep are visible
    mask = torch.gather(mask, 1, ids_restore)          # back to the original order
    return ids_shuffle[:, :n_keep], ids_restore, mask


def normalized_patches(patches: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Per-patch normalised pixels, MAE's ``norm_pix_loss`` target: (x - mean) / sqrt(var + eps) over each patch.

    Taught in chapter 05, E.3.
    """
    mean = patches.mean(dim=-1, keepdim=True)
    var = patches.var(dim=-1, keepdim=True)
    return (patches - mean) / (var + eps).sqrt()


def mae_loss(predicted: torch.Tensor, patches: torch.Tensor, mask: torch.Tensor,
             normalize_target: bool = False) -> torch.Tensor:
    """Mean squared error per pixel, averaged over the masked patches only. Chapter 05, E.3.

    ``predicted`` and ``patches`` (B, N, P*P*C), ``mask`` (B, N) with 1 = hidden. Visible patches do not count.
    """
    if predicted.shape != patches.shape or mask.shape != patches.shape[:2]:
        raise ValueError(f"shapes do not match: predicted {tuple(predicted.shape)}, patches {tuple(patches.shape)}, "
                         f"mask {tuple(mask.shape)} (expected (B, N, P*P*C), (B, N, P*P*C), (B, N))")
    target = normalized_patches(patches) if normalize_target else patches
    per_patch = ((predicted - target) ** 2).mean(dim=-1)                 # (B, N)
    return (per_patch * mask).sum() / mask.sum().clamp(min=1)


class MAE(nn.Module):
    """Encoder: a ViT (``course_lib.topics.vit.ViT``, no head) run on the visible patches only. Decoder: a narrower
    transformer over all N positions (visible tokens + mask tokens) that predicts every patch's pixels.

    Taught in chapter 05, E.2.
    """

    def __init__(self, image_size: int = 28, patch_size: int = 4, channels: int = 1, dim: int = 64, depth: int = 4,
                 heads: int = 4, mlp_ratio: float = 2.0, decoder_dim: int = 64, decoder_depth: int = 2,
                 decoder_heads: int = 4, normalize_target: bool = False):
        super().__init__()
        self.config = dict(image_size=image_size, patch_size=patch_size, channels=channels, dim=dim, depth=depth,
                           heads=heads, mlp_ratio=mlp_ratio, decoder_dim=decoder_dim, decoder_depth=decoder_depth,
                           decoder_heads=decoder_heads, normalize_target=normalize_target)
        self.image_size, self.patch_size, self.channels = image_size, patch_size, channels
        self.n_patches = (image_size // patch_size) ** 2
        self.normalize_target = normalize_target
        self.encoder = ViT(image_size, patch_size, channels, dim, depth, heads, mlp_ratio, num_classes=0)
        self.decoder_embed = nn.Linear(dim, decoder_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_dim))
        self.decoder_position = nn.Parameter(0.02 * torch.randn(1, 1 + self.n_patches, decoder_dim))
        self.decoder_blocks = nn.ModuleList(Block(decoder_dim, decoder_heads, mlp_ratio) for _ in range(decoder_depth))
        self.decoder_norm = nn.LayerNorm(decoder_dim)
        self.decoder_pred = nn.Linear(decoder_dim, channels * patch_size**2)
        nn.init.normal_(self.mask_token, std=0.02)

    def encode_visible(self, images: torch.Tensor, ids_keep: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W), (B, N_keep) -> encoded [CLS] + visible tokens (B, 1 + N_keep, D)."""
        tokens = self.encoder.patch_tokens(images)                                   # (B, N, D), positions added
        index = ids_keep[..., None].expand(-1, -1, tokens.shape[-1])                 # (B, N_keep, D)
        visible = torch.gather(tokens, 1, index)                                     # (B, N_keep, D)
        return self.encoder.run_blocks(torch.cat([self.encoder.cls_tokens(len(images)), visible], dim=1))

    def decode(self, latent: torch.Tensor, ids_restore: torch.Tensor) -> torch.Tensor:
        """(B, 1 + N_keep, D), (B, N) -> predicted pixels of every patch (B, N, P*P*C)."""
        x = self.decoder_embed(latent)                                                # (B, 1 + N_keep, D_dec)
        b, n_visible, width = x.shape[0], x.shape[1] - 1, x.shape[2]
        mask_tokens = self.mask_token.expand(b, self.n_patches - n_visible, -1)      # (B, N - N_keep, D_dec)
        shuffled = torch.cat([x[:, 1:], mask_tokens], dim=1)                          # (B, N, D_dec), shuffled order
        unshuffled = torch.gather(shuffled, 1, ids_restore[..., None].expand(-1, -1, width))
        x = torch.cat([x[:, :1], unshuffled], dim=1) + self.decoder_position          # (B, 1 + N, D_dec)
        for block in self.decoder_blocks:
            x, _ = block(x)
        return self.decoder_pred(self.decoder_norm(x))[:, 1:]                        # drop [CLS]

    def forward(self, images: torch.Tensor, mask_ratio: float = 0.75, generator: torch.Generator | None = None):
        """(B, C, H, W) -> ``(loss, predicted (B, N, P*P*C), mask (B, N))``."""
        if images.ndim != 4 or images.shape[1:] != (self.channels, self.image_size, self.image_size):
            raise ValueError(f"expected images (B, {self.channels}, {self.image_size}, {self.image_size}), "
                             f"got {tuple(images.shape)}")
        ids_keep, ids_restore, mask = random_masking(len(images), self.n_patches, mask_ratio, generator, images.device)
        predicted = self.decode(self.encode_visible(images, ids_keep), ids_restore)
        loss = mae_loss(predicted, patchify(images, self.patch_size), mask, self.normalize_target)
        return loss, predicted, mask


@torch.no_grad()
def reconstruct(model: MAE, images: torch.Tensor, mask_ratio: float = 0.75, generator: torch.Generator | None = None):
    """What the figures show: ``(masked input, prediction, visible + predicted)``, each (B, C, H, W). Chapter 05, E.4.

    The masked input has hidden patches at 0.5 grey. With a normalised-pixel target the prediction is
    un-normalised with each hidden patch's true mean and spread (display only, as the MAE demo does).
    """
    was_training = model.training
    model.eval()
    _, predicted, mask = model(images, mask_ratio, generator)
    patches = patchify(images, model.patch_size)                                       # (B, N, P*P*C)
    if model.normalize_target:
        mean, var = patches.mean(-1, keepdim=True), patches.var(-1, keepdim=True)
        predicted = predicted * (var + 1e-6).sqrt() + mean
    hidden = mask[..., None].bool()                                                     # (B, N, 1)
    size, c = model.image_size, model.channels
    as_image = lambda p: unpatchify(p, model.patch_size, c, size, size)  # noqa: E731
    masked_input = as_image(torch.where(hidden, torch.full_like(patches, 0.5), patches))
    pasted = as_image(torch.where(hidden, predicted, patches)).clamp(0, 1)
    model.train(was_training)
    return masked_input, as_image(predicted).clamp(0, 1), pasted


@torch.no_grad()
def evaluate_mae(model: MAE, images: torch.Tensor, mask_ratio: float = 0.75, seed: int = 0,
                 batch_size: int = 500) -> dict:
    """Mean masked-patch MSE (per pixel, in the loss's units) on ``images``, with fixed masks (``seed``); and the
    same for a baseline that predicts each hidden patch as the mean of the visible pixels of its image.

    Taught in chapter 05, E.4.
    """
    generator = torch.Generator().manual_seed(seed)
    device = next(model.parameters()).device
    total = baseline = count = 0.0
    for start in range(0, len(images), batch_size):
        x = images[start:start + batch_size].to(device)
        loss, _, mask = model(x, mask_ratio, generator)
        patches = patchify(x, model.patch_size)
        target = normalized_patches(patches) if model.normalize_target else patches
        visible_mean = (target * (1 - mask[..., None])).sum((1, 2)) / ((1 - mask).sum(1) * target.shape[-1])
        per_patch = ((visible_mean[:, None, None] - target) ** 2).mean(-1)
        n = mask.sum().item()
        total += loss.item() * n
        baseline += (per_patch * mask).sum().item()
        count += n
    return {"masked_mse": total / count, "mean_fill_mse": baseline / count}


def train_mae(cfg, *, seed: int = 0, show_progress: bool = True, desc: str = "MAE on MNIST", **fit_options):
    """Train an :class:`MAE` on MNIST digits; return ``(model, history, metrics)``. Chapter 05, E.4.

    ``cfg`` (e.g. ``course_lib.zoo.settings("mae_mnist")``) names: model, mask_ratio, lr, weight_decay,
    betas, n_train, steps, batch_size, warmup_steps, eval_images. Metrics: masked-patch MSE per pixel on
    the first ``eval_images`` test digits (fixed masks), and the mean-fill baseline's.
    """

    generator = seed_everything(seed)
    dev = device()
    x_train = load_mnist("train")[0][:cfg.n_train]                     # (n, 1, 28, 28) in [0, 1]
    x_test = load_mnist("test")[0][:cfg.eval_images]
    model = MAE(**cfg.model).to(dev)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay)
    batches = minibatches(x_train, batch_size=cfg.batch_size, generator=generator)
    history = fit(model, lambda m, batch: m(batch[0], cfg.mask_ratio, generator)[0], batches, steps=cfg.steps,
                  optimizer=optimizer, device=dev, scheduler=warmup_cosine(optimizer, cfg.warmup_steps, cfg.steps),
                  desc=desc, show_progress=show_progress, **fit_options)
    test = evaluate_mae(model, x_test, cfg.mask_ratio, seed=0)
    tail = history.losses[-50:]
    metrics = {"final_train_loss": round(sum(tail) / len(tail), 5), "test_masked_mse": round(test["masked_mse"], 5),
               "test_mean_fill_mse": round(test["mean_fill_mse"], 5), "eval_images": len(x_test)}
    return model, history, metrics


# ---------------------------------------------------------------------------------- the picture


def schematic():
    """MAE, drawn: an image cut into patches, 75% of them hidden at random; the encoder runs on the visible patches
    only; the decoder gets the encoded visible tokens plus a shared mask token at every hidden position and predicts
    every patch's pixels; the loss counts the hidden patches only. Returns the matplotlib Figure.

    Drawn in chapter 05, E (the model is built step by step in E.2).
    """
    from course_lib.core.diagram import arrow, box, canvas, legend, note

    fig, ax = canvas(11, 4.8, title="MAE: hide 75% of the patches, paint them back")
    top, bottom, w, h = 3.35, 1.35, 1.85, 0.85
    xs = [1.1, 3.7, 6.3, 8.9]
    image = box(ax, xs[0], top, "image $x$\n1 × 28 × 28", w=w, h=h, role="data")
    patches = box(ax, xs[1], top, "patchify\n49 patches of 4 × 4", w=w, h=h, role="operation")
    mask = box(ax, xs[2], top, "random mask, 75%\nper image", w=w, h=h, role="operation")
    visible = box(ax, xs[3], top, "visible patches\n12 of 49", w=w, h=h, role="data")
    encoder = box(ax, xs[3], bottom, "encoder (ViT)\n[CLS] + visible only", w=w, h=h, role="network")
    decoder = box(ax, xs[2], bottom, "decoder\n+ mask tokens\n+ positions", w=w, h=1.0, role="network")
    predicted = box(ax, xs[1], bottom, "predicted pixels\nevery patch", w=w, h=h, role="data")
    loss = box(ax, xs[0], bottom, "MSE on the\nhidden patches only", w=w, h=h, role="loss")
    arrow(ax, image.right, patches.left)
    arrow(ax, patches.right, mask.left)
    arrow(ax, mask.right, visible.left)
    arrow(ax, visible.bottom, encoder.top)
    arrow(ax, encoder.left, decoder.right)
    note(ax, (encoder.left[0] + decoder.right[0]) / 2, bottom - 0.5, "latent\ntokens", fontsize=7.5)
    arrow(ax, decoder.left, predicted.right)
    arrow(ax, predicted.left, loss.right)
    arrow(ax, mask.bottom, (loss.x + 0.5, loss.top[1]), dashed=True, bend=-0.15, text="which patches are hidden",
          text_offset=(-0.6, 0.15))
    note(ax, xs[2] + 1.3, 0.45, "after pre-training the decoder is thrown away: the encoder is the product",
         fontsize=7.5)
    legend(ax, ["data", "network", "operation", "loss"], loc="lower left")
    return fig
