"""GANs beyond images (chapter 09, F.5): World-GAN's block2vec on a toy voxel world.

World-GAN (Awiszus, Schubert and Rosenhahn 2021) generates 3-D Minecraft worlds from a single example with a
SinGAN-style cascade of fully convolutional 3-D generators and discriminators, one per scale. A world is a volume of
block *ids* (air, stone, water, ... hundreds of types in Minecraft). Instead of one-hot vectors over all types, the
GAN works on **block2vec** embeddings, learned word2vec-style: skip-gram with negative sampling, where a block's
"context" is the blocks next to it in 3-D. The generator emits an embedding volume (dim, X, Y, Z); each voxel is
mapped back to the block whose embedding is nearest.

Here: a procedurally generated toy world (:func:`toy_world`), its 3-D neighbour pairs (:func:`neighbour_pairs`),
word2vec's sub-sampling rule (:func:`keep_probability`), skip-gram with negative sampling (:func:`train_block2vec`),
nearest-embedding decoding (:func:`decode_nearest`) and a one-scale 3-D generator sketch (:class:`ScaleGenerator3d`).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

BLOCKS = ("air", "stone", "dirt", "grass", "sand", "water", "wood", "leaves")
AIR, STONE, DIRT, GRASS, SAND, WATER, WOOD, LEAVES = range(len(BLOCKS))
# colours for drawing (RGBA), one per block id
BLOCK_COLOURS = ((1, 1, 1, 0), (0.5, 0.5, 0.5, 1), (0.45, 0.3, 0.15, 1), (0.3, 0.7, 0.2, 1), (0.93, 0.85, 0.55, 1),
                 (0.2, 0.4, 0.9, 0.6), (0.4, 0.25, 0.1, 1), (0.1, 0.45, 0.1, 0.9))


def toy_world(size: int = 24, height: int = 12, *, trees: int = 6, seed: int = 0) -> torch.Tensor:
    """A small Minecraft-like world of block ids, (size, size, height) indexed (x, y, z) with z up (chapter 09, F.5).

    A smooth random height map; stone below, two layers of dirt, grass on top; a lake where the ground lies below
    the water level, with sand on its floor and on the shore (ground cells next to water); ``trees`` trees (a wood
    trunk of 3, a crown of leaves) on grass away from the water. Deterministic for a given ``seed``.
    """
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, 1, 4, 4, generator=g)
    smooth = F.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=True)[0, 0]
    smooth = (smooth - smooth.min()) / (smooth.max() - smooth.min())  # [0, 1]
    ground = (2 + smooth * (height // 2 - 1)).round().long()  # (size, size): top ground z, 2 .. height // 2 + 1
    water_level = int(ground.float().quantile(0.3).item())
    z = torch.arange(height).view(1, 1, height).expand(size, size, height)  # (size, size, height)
    top = ground.unsqueeze(-1).expand(size, size, height)
    world = torch.full((size, size, height), AIR, dtype=torch.long)
    world[z <= top] = DIRT
    world[z < top - 2] = STONE
    world[z == 0] = STONE
    lake = ground < water_level  # columns under water
    world[(z > top) & (z <= water_level) & lake.unsqueeze(-1).expand_as(z)] = WATER
    near_water = F.max_pool2d(lake.float()[None, None], 3, stride=1, padding=1)[0, 0].bool()
    shore = near_water & (ground <= water_level + 1)  # lake floors and low ground beside the lake
    world[(z == top) & shore.unsqueeze(-1).expand_as(z)] = SAND
    world[(z == top) & ~shore.unsqueeze(-1).expand_as(z)] = GRASS
    # trees on grass, 3 cells from the border and from other trees, not next to sand
    far_from_shore = ~F.max_pool2d(shore.float()[None, None], 5, stride=1, padding=2)[0, 0].bool()
    candidates = [(x, y) for x in range(3, size - 3) for y in range(3, size - 3)
                  if far_from_shore[x, y] and ground[x, y] + 5 < height]
    order = torch.randperm(len(candidates), generator=g).tolist()
    placed: list[tuple[int, int]] = []
    for i in order:
        x, y = candidates[i]
        if len(placed) == trees:
            break
        if any(abs(x - px) < 4 and abs(y - py) < 4 for px, py in placed):
            continue
        placed.append((x, y))
        base = int(ground[x, y])
        crown = world[x - 1:x + 2, y - 1:y + 2, base + 3:base + 5]
        crown[crown == AIR] = LEAVES
        world[x, y, base + 5] = LEAVES
        world[x, y, base + 1:base + 4] = WOOD
    return world


def neighbour_pairs(world: torch.Tensor, radius: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """All (centre, context) block-id pairs of voxels at most ``radius`` apart in each axis, the centre excluded:
    the skip-gram training pairs of block2vec, two LongTensors of length N (chapter 09, F.5)."""
    centres, contexts = [], []
    sx, sy, sz = world.shape
    for dx in range(-radius, radius + 1):
        for dy in range(-radius, radius + 1):
            for dz in range(-radius, radius + 1):
                if dx == dy == dz == 0:
                    continue
                a = world[max(dx, 0):sx + min(dx, 0), max(dy, 0):sy + min(dy, 0), max(dz, 0):sz + min(dz, 0)]
                b = world[max(-dx, 0):sx + min(-dx, 0), max(-dy, 0):sy + min(-dy, 0), max(-dz, 0):sz + min(-dz, 0)]
                centres.append(b.reshape(-1))  # b[i] and a[i] are neighbours at offset (dx, dy, dz)
                contexts.append(a.reshape(-1))
    return torch.cat(centres), torch.cat(contexts)


def keep_probability(freq: torch.Tensor, t: float = 1e-3) -> torch.Tensor:
    """word2vec's sub-sampling rule, borrowed by block2vec (chapter 09, F.5): keep an occurrence of a token of
    relative frequency ``freq`` with probability (sqrt(freq / t) + 1) * t / freq, capped at 1. The +1 sits outside
    the square root; frequent tokens (air, stone) are thinned out, rare ones (freq below about 2.6 t) always kept."""
    freq = torch.as_tensor(freq, dtype=torch.float32)
    return (((freq / t).sqrt() + 1) * t / freq.clamp_min(1e-12)).clamp(max=1.0)


class Block2Vec(nn.Module):
    """Skip-gram with negative sampling over block ids (chapter 09, F.5): an input embedding v_b per block (the one
    World-GAN uses) and an output embedding u_c per block as a context. Score of (b, c): v_b . u_c."""

    def __init__(self, n_blocks: int, dim: int = 8, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.inputs = nn.Parameter(torch.randn(n_blocks, dim, generator=g) / dim ** 0.5)
        self.outputs = nn.Parameter(torch.zeros(n_blocks, dim))

    def loss(self, centre: torch.Tensor, context: torch.Tensor, negatives: torch.Tensor) -> torch.Tensor:
        """-log sigmoid(v_b . u_c) - sum_k log sigmoid(-v_b . u_{n_k}), averaged over the batch.
        centre, context (N,), negatives (N, K) block ids."""
        v = self.inputs[centre]  # (N, dim)
        positive = (v * self.outputs[context]).sum(-1)  # (N,)
        negative = torch.einsum("nd,nkd->nk", v, self.outputs[negatives])  # (N, K)
        return -(F.logsigmoid(positive) + F.logsigmoid(-negative).sum(-1)).mean()


def train_block2vec(world: torch.Tensor, *, dim: int = 8, steps: int = 300, batch: int = 2048, negatives: int = 5,
                    t: float = 1e-3, lr: float = 0.05, seed: int = 0) -> tuple[torch.Tensor, list[float]]:
    """Train block2vec on the 26-neighbourhoods of ``world`` (chapter 09, F.5): sub-sample voxels with
    :func:`keep_probability`, keep the pairs whose two voxels both survive, draw ``negatives`` negative blocks per
    pair from the unigram distribution to the power 3/4, and minimise :meth:`Block2Vec.loss` with Adam.
    Returns the input embeddings (n_blocks, dim), detached, and the loss per step."""
    g = torch.Generator().manual_seed(seed)
    n_blocks = len(BLOCKS)
    freq = torch.bincount(world.reshape(-1), minlength=n_blocks).float() / world.numel()
    kept = torch.rand(world.shape, generator=g) < keep_probability(freq, t)[world]
    marked = torch.where(kept, world, torch.full_like(world, -1))  # -1: sub-sampled away
    centre, context = neighbour_pairs(marked)
    ok = (centre >= 0) & (context >= 0)
    centre, context = centre[ok], context[ok]
    counts = torch.bincount(centre, minlength=n_blocks).float()
    noise = counts ** 0.75 / (counts ** 0.75).sum()
    model = Block2Vec(n_blocks, dim, seed=seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    losses = []
    for _ in range(steps):
        idx = torch.randint(len(centre), (batch,), generator=g)
        neg = torch.multinomial(noise, batch * negatives, replacement=True, generator=g).view(batch, negatives)
        loss = model.loss(centre[idx], context[idx], neg)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return model.inputs.detach().clone(), losses


def cosine_matrix(embeddings: torch.Tensor) -> torch.Tensor:
    """Cosine similarity of every pair of embeddings, (n, dim) -> (n, n) (chapter 09, F.5)."""
    unit = F.normalize(embeddings, dim=-1)
    return unit @ unit.T


def pca_2d(embeddings: torch.Tensor) -> torch.Tensor:
    """The embeddings projected on their top two principal directions, (n, dim) -> (n, 2) (chapter 09, F.5)."""
    centred = embeddings - embeddings.mean(0)
    _, _, v = torch.linalg.svd(centred, full_matrices=False)
    return centred @ v[:2].T


def embed_world(world: torch.Tensor, embeddings: torch.Tensor) -> torch.Tensor:
    """Block ids (X, Y, Z) -> the embedding volume (dim, X, Y, Z) that World-GAN's generator and discriminator see
    (chapter 09, F.5)."""
    return embeddings[world].permute(3, 0, 1, 2).contiguous()


def decode_nearest(volume: torch.Tensor, embeddings: torch.Tensor) -> torch.Tensor:
    """An embedding volume (dim, X, Y, Z) -> block ids (X, Y, Z): each voxel becomes the block whose embedding is
    nearest in Euclidean distance (chapter 09, F.5)."""
    dim = volume.shape[0]
    flat = volume.reshape(dim, -1).T  # (voxels, dim)
    return torch.cdist(flat, embeddings).argmin(-1).view(volume.shape[1:])


class ScaleGenerator3d(nn.Module):
    """One scale of a SinGAN-style 3-D generator (chapter 09, F.5): a few 3x3x3 convolutions that add detail to the
    previous (coarser, upsampled) scale's output, ``x = up + net(noise + up)``; fully convolutional, so the volume's
    size is free. Channels = the block2vec dimension. (Untrained here: World-GAN trains one scale after the other.)"""

    def __init__(self, dim: int = 8, hidden: int = 32, layers: int = 3):
        super().__init__()
        blocks: list[nn.Module] = []
        channels = dim
        for _ in range(layers - 1):
            blocks += [nn.Conv3d(channels, hidden, 3, padding=1), nn.LeakyReLU(0.2)]
            channels = hidden
        blocks.append(nn.Conv3d(channels, dim, 3, padding=1))
        self.net = nn.Sequential(*blocks)

    def forward(self, noise: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
        """noise, up: (B, dim, X, Y, Z) -> (B, dim, X, Y, Z)."""
        return up + self.net(noise + up)


def schematic():
    """World-GAN with block2vec, drawn: the example world's block ids -> block2vec (skip-gram on 3-D neighbours) ->
    an embedding volume; a coarse-to-fine cascade of 3-D convolutional generators, one discriminator per scale
    against the downsampled example; the nearest embedding maps the output back to block ids. Returns the Figure.

    Taught in chapter 09, F.5.
    """
    from course_lib.core.diagram import arrow, box, canvas, legend, note

    fig, ax = canvas(12, 5.4, title="World-GAN: a multi-scale 3-D GAN on block2vec embeddings")
    world = box(ax, 1.3, 4.1, "example world\nblock ids (X, Y, Z)", w=2.1, h=0.9, role="data")
    b2v = box(ax, 4.0, 4.1, "block2vec\nskip-gram on 3-D\nneighbours", w=2.0, h=1.0, role="network")
    vol = box(ax, 6.9, 4.1, "embedding volume\n(dim, X, Y, Z)", w=2.2, h=0.9, role="latent")
    pyr = box(ax, 9.9, 4.1, "downsampled real\nvolumes, scales N..0", w=2.3, h=0.9, role="operation")
    arrow(ax, world.right, b2v.left)
    arrow(ax, b2v.right, vol.left, text="look up $v_b$")
    arrow(ax, vol.right, pyr.left)
    z_n = box(ax, 1.3, 2.2, "noise $z_N$\n(coarsest)", w=1.6, h=0.8, role="latent")
    g_n = box(ax, 3.5, 2.2, "$G_N$ 3-D conv", w=1.7, h=0.7, role="network")
    up = box(ax, 5.7, 2.2, "upsample\n+ noise $z_n$", w=1.6, h=0.8, role="operation")
    g_0 = box(ax, 7.9, 2.2, "... $G_0$ 3-D conv", w=1.8, h=0.7, role="network")
    d_n = box(ax, 10.3, 2.2, "$D_n$ per scale\n(3-D conv)", w=1.9, h=0.8, role="network")
    arrow(ax, z_n.right, g_n.left)
    arrow(ax, g_n.right, up.left)
    arrow(ax, up.right, g_0.left)
    arrow(ax, g_0.right, d_n.left, text="fake")
    arrow(ax, pyr.bottom, d_n.top, text="real", text_offset=(0.3, 0.0))
    dec = box(ax, 7.9, 0.75, "nearest embedding\n-> block ids", w=2.2, h=0.8, role="operation")
    loss = box(ax, 10.3, 0.75, "adversarial loss\nper scale", w=1.9, h=0.8, role="loss")
    arrow(ax, g_0.bottom, dec.top)
    arrow(ax, d_n.bottom, loss.top)
    note(ax, 3.3, 0.9, "one example world, trained scale by scale\n(SinGAN); channels = embedding dim,\n"
         "not one-hot over hundreds of block types", fontsize=8)
    legend(ax, ["data", "network", "latent", "operation", "loss"], loc="lower left")
    return fig
