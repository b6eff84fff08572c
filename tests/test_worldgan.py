"""course_lib.topics.worldgan: the toy voxel world, 3-D neighbour pairs, sub-sampling, block2vec, nearest decoding."""
import math

import pytest
import torch

from course_lib.core.diagram import text_of
from course_lib.topics import worldgan as W


@pytest.fixture(scope="module")
def world():
    return W.toy_world(size=24, height=12, trees=6, seed=0)


def test_toy_world_has_every_block_and_is_deterministic(world):
    assert world.shape == (24, 24, 12) and world.dtype == torch.long
    counts = torch.bincount(world.reshape(-1), minlength=len(W.BLOCKS))
    assert (counts > 0).all(), dict(zip(W.BLOCKS, counts.tolist()))
    assert torch.equal(world, W.toy_world(size=24, height=12, trees=6, seed=0))
    assert (world[:, :, 0] == W.STONE).all()
    # every wood voxel stands on ground or on wood; no water floats above air
    below = world[:, :, :-1]
    assert (below[world[:, :, 1:] == W.WOOD] != W.AIR).all()
    assert (below[world[:, :, 1:] == W.WATER] != W.AIR).all()


def test_neighbour_pairs_count_and_symmetry():
    world = torch.arange(2 * 3 * 4).view(2, 3, 4)
    centre, context = W.neighbour_pairs(world)
    # ordered pairs of distinct voxels within Chebyshev distance 1, counted per axis
    per_axis = [n + 2 * (n - 1) for n in (2, 3, 4)]  # same + one step either way
    assert len(centre) == math.prod(per_axis) - world.numel()
    pairs = set(zip(centre.tolist(), context.tolist()))
    assert len(pairs) == len(centre) and all((c, b) in pairs for b, c in pairs)
    assert (0, 1) in pairs and (0, 3) not in pairs  # voxel 0 = (0,0,0); 1 = (0,0,1); 3 = (0,0,3)


def test_keep_probability_formula():
    t = 1e-3
    f = torch.tensor([0.5, 0.01, 2.618 * t, 1e-4])
    expected = ((f / t).sqrt() + 1) * t / f
    assert torch.allclose(W.keep_probability(f, t), expected.clamp(max=1.0))
    assert W.keep_probability(torch.tensor(0.5), t) < W.keep_probability(torch.tensor(0.01), t)
    assert abs(float(W.keep_probability(torch.tensor(2.618034 * t), t)) - 1.0) < 1e-4


def test_block2vec_learns_co_occurrence_and_decodes_exactly(world):
    for seed in (0, 1):
        vectors, losses = W.train_block2vec(world, dim=8, steps=300, seed=seed)
        assert vectors.shape == (len(W.BLOCKS), 8)
        assert sum(losses[-20:]) / 20 < 0.6 * losses[0]
        cos = W.cosine_matrix(vectors)
        assert cos[W.WOOD, W.LEAVES] > cos[W.WOOD, W.WATER] + 0.2
        assert cos[W.SAND, W.WATER] > cos[W.SAND, W.LEAVES] + 0.2
        volume = W.embed_world(world, vectors)
        assert volume.shape == (8, *world.shape)
        assert torch.equal(W.decode_nearest(volume, vectors), world)


def test_pca_2d_and_cosine_matrix():
    x = torch.randn(8, 5, generator=torch.Generator().manual_seed(0))
    p = W.pca_2d(x)
    assert p.shape == (8, 2)
    assert torch.allclose(p.mean(0), torch.zeros(2), atol=1e-5)
    assert p[:, 0].var() >= p[:, 1].var()
    c = W.cosine_matrix(x)
    assert torch.allclose(c.diagonal(), torch.ones(8), atol=1e-5) and torch.allclose(c, c.T)


def test_scale_generator_keeps_shape():
    g = W.ScaleGenerator3d(dim=8, hidden=8)
    up = torch.randn(2, 8, 6, 5, 4)
    assert g(torch.randn_like(up), up).shape == up.shape


def test_schematic_names_its_parts():
    import matplotlib.pyplot as plt
    fig = W.schematic()
    text = text_of(fig)
    for part in ("block2vec", "nearest embedding", "3-D conv", "per scale"):
        assert part in text
    plt.close(fig)
