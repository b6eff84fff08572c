"""Swin's window attention with shifted windows in course_lib.topics.vit (chapter 04, G.5): partition and reverse,
the region mask, the step-by-step build of the chapter, the naive masked global attention, and the cost."""
import math

import pytest
import torch

from course_lib.topics import vit as V


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def attention(q, k, v, mask=None):
    logits = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if mask is not None:
        logits = logits.masked_fill(~mask, float("-inf"))
    return torch.softmax(logits, -1) @ v


def region_labels(h, w, window, shift):
    """The chapter's my_region_labels (G.5)."""
    row_region = (torch.arange(h) >= h - window).long() + (torch.arange(h) >= h - shift).long()
    col_region = (torch.arange(w) >= w - window).long() + (torch.arange(w) >= w - shift).long()
    return 3 * row_region[:, None] + col_region[None, :]


def chapter_window_attention(x, qkv, proj, heads, window, shift=0):
    """The chapter's my_window_attention (G.5): roll, partition, masked attention per window, reverse, roll back."""
    b, h, w, c = x.shape
    if shift:
        x = torch.roll(x, shifts=(-shift, -shift), dims=(1, 2))
    windows = V.window_partition(x, window)
    q, k, v = qkv(windows).reshape(-1, window**2, 3, heads, c // heads).permute(2, 0, 3, 1, 4)
    mask = None
    if shift:
        labels = V.window_partition(region_labels(h, w, window, shift)[None, :, :, None], window)[..., 0]
        mask = (labels[:, :, None] == labels[:, None, :]).repeat(b, 1, 1)[:, None]
    out = proj(attention(q, k, v, mask).transpose(1, 2).reshape(-1, window**2, c))
    out = V.window_reverse(out, window, h, w)
    return torch.roll(out, shifts=(shift, shift), dims=(1, 2)) if shift else out


def naive_mask(h, w, window, shift):
    """The chapter's naive_window_mask (G.5): same window of the rolled map and same region, in the original order."""
    rows, cols = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    rr, rc = (rows - shift) % h, (cols - shift) % w
    window_id = ((rr // window) * (w // window) + rc // window).flatten()
    region = region_labels(h, w, window, shift)[rr, rc].flatten()
    return (window_id[:, None] == window_id[None, :]) & (region[:, None] == region[None, :])


def brute_force_mask(h, w, window, shift):
    """Independent of the region labels: two tokens may meet iff they share a window of the shifted grid (windows
    start at -shift, so border windows are cut by the map's edges, no wrap-around)."""
    rows, cols = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    cell_r = torch.div(rows + (window - shift) % window, window, rounding_mode="floor").flatten()
    cell_c = torch.div(cols + (window - shift) % window, window, rounding_mode="floor").flatten()
    return (cell_r[:, None] == cell_r[None, :]) & (cell_c[:, None] == cell_c[None, :])


@pytest.mark.parametrize("shape, window", [((2, 8, 12, 5), 4), ((1, 14, 14, 3), 7), ((3, 6, 6, 1), 2)])
def test_partition_round_trip_and_layout(shape, window):
    x = torch.randn(shape, generator=gen())
    windows = V.window_partition(x, window)
    b, h, w, c = shape
    assert windows.shape == (b * (h // window) * (w // window), window * window, c)
    assert torch.equal(V.window_reverse(windows, window, h, w), x)
    assert torch.equal(windows[1], x[0, :window, window:2 * window].reshape(window * window, c))


def test_partition_rejects_maps_that_do_not_tile():
    with pytest.raises(ValueError, match="does not split"):
        V.window_partition(torch.zeros(1, 8, 10, 3), 4)


def test_region_labels_and_mask():
    assert torch.equal(V.shift_region_labels(8, 8, 4, 2), region_labels(8, 8, 4, 2))
    assert torch.equal(V.shift_region_labels(8, 12, 4, 2), region_labels(8, 12, 4, 2))
    assert V.shift_region_labels(8, 8, 4, 0).eq(0).all() and V.shifted_window_mask(8, 8, 4, 0).all()
    mask = V.shifted_window_mask(8, 8, 4, 2)  # (4, 16, 16)
    assert mask.shape == (4, 16, 16) and mask[0].all()  # the top-left window holds one region
    assert mask[-1].sum() == 4 * 4 * 4  # the corner window: four regions of 4 tokens each
    assert torch.equal(mask, mask.transpose(1, 2)) and mask.diagonal(dim1=1, dim2=2).all()


@pytest.mark.parametrize("h, w, window, shift", [(8, 8, 4, 2), (8, 12, 4, 2), (14, 14, 7, 3), (6, 9, 3, 1)])
def test_naive_mask_is_the_shifted_grid_without_wrap_around(h, w, window, shift):
    assert torch.equal(naive_mask(h, w, window, shift), brute_force_mask(h, w, window, shift))


@pytest.mark.parametrize("shift", [0, 2])
def test_chapter_step_by_step_equals_the_library_and_the_naive_masked_attention(shift):
    torch.manual_seed(0)
    layer = V.WindowAttention(32, heads=4, window=4)
    x = torch.randn(2, 8, 12, 32, generator=gen(1))
    with torch.no_grad():
        library = layer(x, shift)
        chapter = chapter_window_attention(x, layer.attention.qkv, layer.attention.proj, 4, 4, shift)
        tokens = x.reshape(2, 96, 32)
        q, k, v = layer.attention.qkv(tokens).reshape(2, 96, 3, 4, 8).permute(2, 0, 3, 1, 4)
        out = attention(q, k, v, brute_force_mask(8, 12, 4, shift))
        naive = layer.attention.proj(out.transpose(1, 2).reshape(2, 96, 32)).reshape(2, 8, 12, 32)
    assert torch.allclose(library, chapter, atol=1e-6)
    assert torch.allclose(library, naive, atol=1e-5)


def test_unshifted_mask_is_block_diagonal_in_window_order():
    allowed = naive_mask(8, 12, 4, 0)
    order = V.window_partition(torch.arange(96).reshape(1, 8, 12, 1), 4).flatten()
    assert torch.equal(allowed[order][:, order], torch.block_diag(*[torch.ones(16, 16, dtype=torch.bool)] * 6))


def test_window_attention_is_local_and_trains():
    """Changing one token changes the unshifted output only inside its window; gradients reach every weight."""
    torch.manual_seed(0)
    layer = V.WindowAttention(16, heads=2, window=4)
    x = torch.randn(1, 8, 8, 16, generator=gen(2))
    y = x.clone()
    y[0, 5, 6] += 1.0  # window (1, 1): rows 4-7, columns 4-7
    with torch.no_grad():
        changed = (layer(x) - layer(y)).abs().amax(-1)[0] > 1e-7  # (8, 8)
    expected = torch.zeros(8, 8, dtype=torch.bool)
    expected[4:, 4:] = True
    assert torch.equal(changed, expected)
    layer(x, 2).square().mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in layer.parameters())


@pytest.mark.parametrize("side", [8, 16])
def test_multiply_adds_match_flop_counter(side):
    dim, window = 32, 4
    x = torch.randn(1, side, side, dim)
    assert V.measured_multiply_adds(V.WindowAttention(dim, 4, window), x, 2) == \
        V.attention_multiply_adds(side, side, dim, window=window)
    assert V.measured_multiply_adds(V.MultiHeadAttention(dim, 4), x.reshape(1, side * side, dim)) == \
        V.attention_multiply_adds(side, side, dim)
    assert V.attention_multiply_adds(56, 56, 96) == 4 * 3136 * 96**2 + 2 * 3136**2 * 96
    assert V.attention_multiply_adds(56, 56, 96, window=7) == 4 * 3136 * 96**2 + 2 * 49 * 3136 * 96


@pytest.mark.parametrize("side, window", [(8, 4), (14, 7), (28, 7), (12, 4), (15, 5), (6, 2)])
def test_allowed_pair_fraction_counts_the_mask(side, window):
    mask = V.shifted_window_mask(side, side, window, window // 2)
    assert math.isclose(V.allowed_pair_fraction(side, window), mask.double().mean().item(), rel_tol=1e-12)
