"""course_lib.topics.vit and course_lib.topics.cvt: patches, attention, the ViT and CvT models, counting, rollout, and the attention widget."""
import math

import ipywidgets as widgets
import pytest
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure
from torch import nn

from course_lib import zoo
from course_lib.topics import cvt as C
from course_lib.topics import vit as V
from course_lib.topics.vit import attention_explorer


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def tiny_vit(seed=0, **kwargs):
    torch.manual_seed(seed)
    settings = dict(image_size=28, patch_size=4, channels=1, dim=32, depth=2, heads=4, mlp_ratio=2.0, num_classes=10)
    settings.update(kwargs)
    return V.ViT(**settings).eval()


def tiny_cvt(seed=0, **kwargs):
    torch.manual_seed(seed)
    stages = (dict(dim=16, depth=1, heads=1, kernel=7, stride=2, padding=3),
              dict(dim=32, depth=2, heads=4, kernel=3, stride=2, padding=1))
    return C.CvT(stages=stages, **kwargs).eval()


# ---------------------------------------------------------------------------------- patches

@pytest.mark.parametrize("shape, p", [((2, 1, 28, 28), 4), ((3, 3, 8, 12), 4), ((1, 3, 32, 32), 16)])
def test_patchify_round_trip_and_layout(shape, p):
    x = torch.rand(*shape, generator=gen())
    patches = V.patchify(x, p)
    b, c, h, w = shape
    assert patches.shape == (b, (h // p) * (w // p), c * p * p)
    assert torch.equal(V.unpatchify(patches, p, c, h, w), x)
    assert torch.equal(patches, F.unfold(x, kernel_size=p, stride=p).transpose(1, 2))
    row, col = (h // p) - 1, 1  # patch row * (W/P) + col is the square at those pixel rows and columns
    assert torch.equal(patches[:, row * (w // p) + col], x[:, :, row * p:(row + 1) * p, col * p:(col + 1) * p].flatten(1))


def test_patch_embedding_is_a_strided_convolution():
    x = torch.rand(2, 3, 16, 16, generator=gen())
    linear = nn.Linear(3 * 16, 8)
    conv = nn.Conv2d(3, 8, kernel_size=4, stride=4)
    with torch.no_grad():
        conv.weight.copy_(linear.weight.reshape(8, 3, 4, 4))
        conv.bias.copy_(linear.bias)
        assert torch.allclose(linear(V.patchify(x, 4)), conv(x).flatten(2).transpose(1, 2), atol=1e-6)


@pytest.mark.parametrize("x, error, match", [(torch.rand(1, 28, 28), ValueError, "images\\[None\\]"),
                                             (torch.ones(1, 1, 28, 28, dtype=torch.uint8), TypeError, "float"),
                                             (torch.rand(1, 1, 30, 28), ValueError, "multiple")])
def test_patchify_rejects_bad_input(x, error, match):
    with pytest.raises(error, match=match):
        V.patchify(x, 4)


def test_unpatchify_rejects_patches_that_do_not_tile():
    with pytest.raises(ValueError, match="do not tile"):
        V.unpatchify(torch.zeros(1, 48, 16), 4, 1, 28, 28)


# ---------------------------------------------------------------------------------- attention

@pytest.mark.parametrize("masked", [False, True])
def test_attention_matches_torch(masked):
    q, k, v = (torch.randn(2, 3, n, d, generator=gen(s)) for s, (n, d) in enumerate([(7, 8), (5, 8), (5, 6)]))
    mask = None
    if masked:
        mask = torch.rand(7, 5, generator=gen(9)) > 0.4
        mask[:, 0] = True
    out, weights = V.scaled_dot_product_attention(q, k, v, mask)
    assert torch.allclose(out, F.scaled_dot_product_attention(q, k, v, attn_mask=mask), atol=1e-6)
    assert weights.shape == (2, 3, 7, 5) and torch.allclose(weights.sum(-1), torch.ones(2, 3, 7))
    if masked:
        assert (weights[..., ~mask] == 0).all()


def test_unit_variance_logits_with_the_scale():
    q, k = torch.randn(20_000, 256, generator=gen()), torch.randn(20_000, 256, generator=gen(1))
    logits = (q * k).sum(1)
    assert abs(logits.var().item() / 256 - 1) < 0.05
    assert abs((logits / math.sqrt(256)).var().item() - 1) < 0.05


def test_multi_head_attention_matches_torch_and_counts():
    torch.manual_seed(0)
    msa = V.MultiHeadAttention(16, 4)
    reference = nn.MultiheadAttention(16, 4, batch_first=True)
    with torch.no_grad():
        reference.in_proj_weight.copy_(msa.qkv.weight)
        reference.in_proj_bias.copy_(msa.qkv.bias)
        reference.out_proj.weight.copy_(msa.proj.weight)
        reference.out_proj.bias.copy_(msa.proj.bias)
        z = torch.randn(2, 9, 16, generator=gen())
        out, weights = msa(z)
        ref_out, ref_weights = reference(z, z, z, need_weights=True, average_attn_weights=False)
    assert torch.allclose(out, ref_out, atol=1e-5) and torch.allclose(weights, ref_weights, atol=1e-6)
    assert sum(p.numel() for p in msa.parameters()) == 4 * 16**2 + 4 * 16
    with pytest.raises(ValueError, match="divisible"):
        V.MultiHeadAttention(10, 4)


def test_block_is_permutation_equivariant():
    torch.manual_seed(0)
    block = V.Block(16, 2).eval()
    z = torch.randn(2, 11, 16, generator=gen())
    order = torch.randperm(11, generator=gen(1))
    with torch.no_grad():
        assert torch.allclose(block(z[:, order])[0], block(z)[0][:, order], atol=1e-5)


# ---------------------------------------------------------------------------------- the ViT

def test_vit_shapes_and_attention():
    model = tiny_vit()
    x = torch.rand(3, 1, 28, 28, generator=gen())
    logits, attentions = model(x, return_attention=True)
    assert logits.shape == (3, 10) and len(attentions) == 2 and attentions[0].shape == (3, 4, 50, 50)
    assert model.encode(x).shape == (3, 50, 32)
    assert tiny_vit(num_classes=0)(x).shape == (3, 32)
    assert model.patch_tokens(torch.rand(2, 1, 16, 16)).shape == (2, 16, 32)  # interpolated positions


def test_step_by_step_vit_equals_the_library():
    """The chapter's build from bare layers (section D.3), compared with course_lib.topics.vit.ViT on the same weights."""
    model = tiny_vit(seed=3)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=gen(7)))
    x = torch.rand(4, 1, 28, 28, generator=gen())
    heads = 4
    with torch.no_grad():
        z = torch.cat([model.cls_token.expand(4, -1, -1), model.patch_embed(V.patchify(x, 4))], 1) + model.position
        for blk in model.blocks:
            b, t, d = z.shape
            q, k, v = blk.attn.qkv(blk.norm1(z)).reshape(b, t, 3, heads, d // heads).permute(2, 0, 3, 1, 4)
            weights = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(d // heads), -1)
            z = z + blk.attn.proj((weights @ v).transpose(1, 2).reshape(b, t, d))
            z = z + blk.mlp[2](F.gelu(blk.mlp[0](blk.norm2(z))))
        ours = model.head(model.norm(z[:, 0]))
        assert torch.allclose(ours, model(x), atol=1e-5)


@pytest.mark.parametrize("settings", [dict(image_size=28, patch_size=4, channels=1, dim=64, depth=4, mlp_hidden=128,
                                           num_classes=10),
                                      dict(image_size=32, patch_size=8, channels=3, dim=48, depth=3, mlp_hidden=96,
                                           num_classes=0)])
def test_parameter_count_formula(settings):
    model = V.ViT(image_size=settings["image_size"], patch_size=settings["patch_size"], channels=settings["channels"],
                  dim=settings["dim"], depth=settings["depth"], heads=4,
                  mlp_ratio=settings["mlp_hidden"] / settings["dim"], num_classes=settings["num_classes"])
    assert V.parameter_count(**settings) == sum(p.numel() for p in model.parameters())


def test_vit_b16_has_86_567_656_parameters_and_17_5_giga_multiply_adds():
    with torch.device("meta"):
        model = V.ViT(image_size=224, patch_size=16, channels=3, dim=768, depth=12, heads=12, mlp_ratio=4.0,
                      num_classes=1000)
        measured = V.measured_multiply_adds(model, torch.empty(1, 3, 224, 224))
    assert sum(p.numel() for p in model.parameters()) == 86_567_656 == V.parameter_count(224, 16, 3, 768, 12, 3072, 1000)
    assert V.multiply_adds(model) == measured == 17_563_828_224


def test_multiply_adds_match_flop_counter_on_a_tiny_vit():
    model = tiny_vit()
    assert V.multiply_adds(model, 28) == V.measured_multiply_adds(model, torch.rand(1, 1, 28, 28))
    assert V.measured_multiply_adds(model, torch.rand(3, 1, 28, 28)) == 3 * V.multiply_adds(model)


def test_interpolate_position_embedding():
    position = torch.randn(1, 16, 8, generator=gen())
    assert V.interpolate_position_embedding(position, (4, 4)) is position
    assert V.interpolate_position_embedding(position, (2, 3)).shape == (1, 6, 8)
    with pytest.raises(ValueError, match="square"):
        V.interpolate_position_embedding(torch.zeros(1, 12, 8), (3, 4))


# ---------------------------------------------------------------------------------- looking inside

def random_attentions(depth=3, b=2, heads=4, t=10, seed=0):
    return [torch.softmax(3 * torch.randn(b, heads, t, t, generator=gen(seed + i)), -1) for i in range(depth)]


def test_rollout_is_the_product_of_mixed_layers_last_on_the_left():
    attentions = random_attentions()
    mixed = [0.5 * (a.mean(1) + torch.eye(10)) for a in attentions]
    expected = mixed[2] @ mixed[1] @ mixed[0]
    rollout = V.attention_rollout(attentions)
    assert torch.allclose(rollout, expected, atol=1e-6)
    assert torch.allclose(rollout.sum(-1), torch.ones(2, 10), atol=1e-5) and (rollout >= 0).all()
    plain = V.attention_rollout(attentions, residual=False)
    assert torch.allclose(plain, attentions[2].mean(1) @ attentions[1].mean(1) @ attentions[0].mean(1), atol=1e-6)
    assert torch.allclose(V.attention_rollout([torch.eye(10).expand(2, 4, 10, 10)] * 3), torch.eye(10).expand(2, 10, 10))


@pytest.mark.parametrize("temperature", [0.25, 1.0, 3.0, 30.0])
def test_temper_attention_equals_scaling_the_logits(temperature):
    logits = 4 * torch.randn(2, 3, 6, 6, generator=gen(), dtype=torch.float64)
    weights = torch.softmax(logits, -1)
    assert torch.allclose(V.temper_attention(weights, temperature), torch.softmax(logits / temperature, -1), atol=1e-12)


def test_temper_attention_rejects_non_positive_temperature():
    with pytest.raises(ValueError, match="> 0"):
        V.temper_attention(torch.full((2, 2), 0.5), 0.0)


def test_position_similarity():
    similarity = V.position_similarity(tiny_vit())
    assert similarity.shape == (49, 49)
    assert torch.allclose(similarity.diagonal(), torch.ones(49), atol=1e-5)
    assert torch.allclose(similarity, similarity.T, atol=1e-6)


def test_mean_attention_distance():
    grid = (3, 3)
    uniform = [torch.full((2, 2, 10, 10), 0.1)]
    identity = [torch.eye(10).expand(2, 2, 10, 10)]
    centres = torch.stack(torch.meshgrid(torch.arange(3), torch.arange(3), indexing="ij"), -1).reshape(9, 2).float()
    mean_pairwise = torch.cdist(centres, centres).mean()
    assert torch.allclose(V.mean_attention_distance(uniform, grid, patch_size=4), 4 * mean_pairwise.expand(1, 2))
    assert torch.equal(V.mean_attention_distance(identity, grid), torch.zeros(1, 2))
    with pytest.raises(ValueError, match="grid"):
        V.mean_attention_distance(uniform, (4, 4))


def test_select_attention():
    attentions = random_attentions()
    assert torch.allclose(V.select_attention(attentions, image=1, layer=1, head=None, query=3), attentions[1][1].mean(0)[3])
    assert torch.equal(V.select_attention(attentions, image=0, layer=-1, head=2, query=0), attentions[2][0, 2, 0])
    assert torch.allclose(V.select_attention(attentions, image=1, layer=1, query=4, rollout=True),
                          V.attention_rollout(attentions[:2])[1, 4])
    tempered = V.select_attention(attentions, image=0, layer=0, head=1, query=2, temperature=2.0)
    assert torch.allclose(tempered, V.temper_attention(attentions[0], 2.0)[0, 1, 2])
    with pytest.raises(IndexError):
        V.select_attention(attentions, layer=3)
    with pytest.raises(ValueError, match="empty"):
        V.select_attention([])


# ---------------------------------------------------------------------------------- the widget

def test_attention_explorer_draws_and_redraws():
    model = tiny_vit()
    x = torch.rand(3, 1, 28, 28, generator=gen())
    with torch.no_grad():
        _, attentions = model(x, return_attention=True)
    box = attention_explorer(x, attentions, patch_size=4)
    assert isinstance(box, widgets.VBox) and isinstance(box.figure, Figure)
    assert len(box.figure.axes) >= 3  # image, overlay, weights (+ colour bar)
    image, layer, head, token, row, column, view, temperature = box.children[0].children
    assert head.options[0] == ("mean", "mean") and head.value == "mean" and len(head.options) == 5
    assert token.options == ("[CLS]", "patch") and token.value == "[CLS]" and row.max == column.max == 6
    assert row.disabled and column.disabled  # the query is [CLS]: no patch to pick
    mean_title = box.figure.axes[1].get_title()
    head.value = 1
    assert box.figure.axes[1].get_title() != mean_title  # one head, not the mean over heads
    head.value = "mean"
    assert box.figure.axes[1].get_title() == mean_title
    token.value = "patch"
    assert not row.disabled and not column.disabled
    row.value, column.value = 2, 5
    assert "patch (row 2, col 5) = token 20" in box.figure.axes[0].get_title()  # 1 + 2 * 7 + 5
    view.value = "rollout"
    temperature.value = 3.0
    head.value = 2
    image.value = 2
    assert "rollout" in box.figure.axes[1].get_title()


def test_attention_explorer_shows_the_row_of_the_chosen_patch():
    """The overlay and the weights panel show row ``1 + 7 r + c`` of the chosen layer's (head-averaged) map."""
    attentions = [torch.softmax(torch.randn(2, 4, 50, 50, generator=gen(i)), -1) for i in range(2)]
    box = attention_explorer(torch.rand(2, 1, 28, 28, generator=gen()), attentions, patch_size=4, query=1 + 3 * 7 + 4,
                             layer=1)
    image, layer, head, token, row, column, view, temperature = box.children[0].children
    assert (token.value, row.value, column.value) == ("patch", 3, 4)
    shown = box.figure.axes[2].images[0].get_array()
    assert torch.allclose(torch.as_tensor(shown.data), attentions[1][0].mean(0)[1 + 3 * 7 + 4, 1:].reshape(7, 7))
    with pytest.raises(ValueError, match="query"):
        attention_explorer(torch.rand(2, 1, 28, 28), attentions, patch_size=4, query=50)


def test_attention_explorer_without_a_prefix_token():
    x = torch.rand(2, 1, 8, 8, generator=gen())
    attentions = [torch.softmax(torch.randn(2, 2, 4, 4, generator=gen(i)), -1) for i in range(2)]
    box = attention_explorer(x, attentions, patch_size=4, prefix_tokens=0)
    token, row, column = box.children[0].children[3:6]
    assert token.options == ("patch",) and token.disabled and row.max == column.max == 1
    assert "patch (row 0, col 0)" in box.figure.axes[0].get_title()


@pytest.mark.parametrize("images, attentions, match", [
    (torch.rand(1, 28, 28), [torch.zeros(1, 1, 50, 50)], "images"),
    (torch.rand(2, 1, 28, 28), [], "non-empty"),
    (torch.rand(2, 1, 28, 28), [torch.zeros(2, 1, 49, 49)], "prefix"),
    (torch.rand(2, 1, 30, 30), [torch.zeros(2, 1, 50, 50)], "multiple"),
])
def test_attention_explorer_rejects_bad_input(images, attentions, match):
    with pytest.raises(ValueError, match=match):
        attention_explorer(images, attentions, patch_size=4)


def test_attention_explorer_rejects_the_wrong_number_of_titles():
    with pytest.raises(ValueError, match="titles"):
        attention_explorer(torch.rand(2, 1, 8, 8), [torch.full((2, 1, 5, 5), 0.2)], patch_size=4, titles=["only one"])


# ---------------------------------------------------------------------------------- CvT

@pytest.mark.parametrize("size, kernel, stride, padding", [(224, 7, 4, 2), (56, 3, 2, 1), (28, 7, 2, 3), (7, 3, 2, 1),
                                                           (384, 7, 4, 2), (5, 5, 1, 0)])
def test_conv_output_size_matches_conv2d(size, kernel, stride, padding):
    with torch.device("meta"):
        out = nn.Conv2d(1, 1, kernel, stride, padding)(torch.empty(1, 1, size, size))
    assert C.conv_output_size(size, kernel, stride, padding) == out.shape[-1]


def test_conv_output_size_rejects_bad_arguments():
    with pytest.raises(ValueError):
        C.conv_output_size(3, 7, 1, 0)
    with pytest.raises(ValueError):
        C.conv_output_size(28, 3, 0, 1)


def test_conv_embedding_shapes_and_translation_equivariance():
    torch.manual_seed(0)
    embedding = C.ConvEmbedding(1, 8, kernel=7, stride=2, padding=3)
    x = torch.zeros(1, 1, 28, 28)
    x[..., 6:20, 8:22] = torch.rand(14, 14, generator=gen())
    with torch.no_grad():
        tokens, grid = embedding(x)
        shifted, _ = embedding(F.pad(x, (0, 0, 2, 0))[..., :28, :])
    assert tokens.shape == (1, 196, 8) and grid == (14, 14)
    a, b = C.tokens_to_map(tokens, grid), C.tokens_to_map(shifted, grid)
    assert torch.allclose(b[:, :, 1:], a[:, :, :-1], atol=1e-5)
    assert torch.equal(C.map_to_tokens(a), tokens)
    with pytest.raises(ValueError, match="grid"):
        C.tokens_to_map(tokens, (13, 14))


def test_conv_attention_shapes_and_cls_skips_the_convolutions():
    torch.manual_seed(0)
    attention = C.ConvAttention(16, 4, kernel=3, stride_kv=2, prefix_tokens=1).eval()
    x = torch.randn(2, 50, 16, generator=gen())
    with torch.no_grad():
        out, weights = attention(x, (7, 7))
        q, k, v = attention.conv_qkv(x, (7, 7))
        x2 = x.clone()
        x2[:, 0] += 1
        q2, k2, v2 = attention.conv_qkv(x2, (7, 7))
    assert out.shape == (2, 50, 16) and weights.shape == (2, 4, 50, 17)
    assert q.shape == (2, 50, 16) and k.shape == v.shape == (2, 17, 16)
    assert all(torch.equal(a[:, 1:], b[:, 1:]) for a, b in [(q, q2), (k, k2), (v, v2)])
    assert torch.equal(q[:, :1], x[:, :1])
    square = C.ConvAttention(16, 4, stride_kv=1).eval()
    assert square(torch.randn(2, 49, 16), (7, 7))[1].shape == (2, 4, 49, 49)


def test_cvt_forward_rebuild_and_errors():
    model = tiny_cvt()
    x = torch.rand(3, 1, 28, 28, generator=gen())
    with torch.no_grad():
        logits, attentions = model(x, return_attention=True)
        maps, cls = model.encode(x)
    assert logits.shape == (3, 10) and maps.shape == (3, 32, 7, 7) and cls.shape == (3, 32)
    assert [len(stage) for stage in attentions] == [1, 2]
    assert attentions[0][0].shape == (3, 1, 196, 49) and attentions[1][0].shape == (3, 4, 50, 17)
    twin = C.CvT(**model.config).eval()
    twin.load_state_dict(model.state_dict())
    with torch.no_grad():
        assert torch.equal(twin(x), logits)
    with pytest.raises(ValueError, match="stage 0"):
        C.CvT(stages=[dict(dim=8, depth=1, heads=1, kernel=3, stride=2)])
    with pytest.raises(ValueError, match="images"):
        model(torch.rand(2, 3, 28, 28))
    with pytest.raises(TypeError, match="float"):
        model(torch.ones(2, 1, 28, 28, dtype=torch.uint8))


def test_cvt_trains_a_step():
    model = tiny_cvt().train()
    x, y = torch.rand(8, 1, 28, 28, generator=gen()), torch.randint(0, 10, (8,), generator=gen(1))
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    assert torch.isfinite(loss) and all(p.grad is not None for p in model.parameters())


def test_cvt_multiply_adds_match_flop_counter():
    model = tiny_cvt()
    assert C.multiply_adds(model, 28) == V.measured_multiply_adds(model, torch.rand(1, 1, 28, 28))
    mnist = C.CvT().eval()
    assert C.multiply_adds(mnist, 28) == V.measured_multiply_adds(mnist, torch.rand(1, 1, 28, 28))


@pytest.mark.parametrize("stride_kv, macs", [(2, 4_566_089_216), (1, 6_643_074_560)])
def test_cvt_13_counts(stride_kv, macs):
    with torch.device("meta"):
        model = C.CvT(**C.CVT_13, stride_kv=stride_kv).eval()
        measured = V.measured_multiply_adds(model, torch.empty(1, 3, 224, 224))
    assert sum(p.numel() for p in model.parameters()) == 19_997_480
    assert C.multiply_adds(model, 224) == measured == macs


def test_full_vs_separable_parameters():
    assert C.full_vs_separable_parameters(384, 3) == (1_327_104, 150_912)


# ---------------------------------------------------------------------------------- the recipe the chapter uses

def test_vit_mnist_settings_have_what_chapter_04_reads():
    for name in ("ci", "cpu", "gpu"):
        cfg = zoo.settings("vit_mnist", name)
        for field in ("model", "steps", "batch_size", "lr", "weight_decay", "warmup_steps", "n_train"):
            assert hasattr(cfg, field), f"zoo.settings('vit_mnist', {name!r}) lacks {field}"
        model = V.ViT(**cfg.model)
        assert model.grid**2 * model.patch_size**2 == 28 * 28


# ---------------------------------------------------------------------------------- schematics

SCHEMATICS = [V.schematic, V.attention_schematic, C.schematic, V.swin_schematic]


def _boxes(fig):
    """(x0, y0, x1, y1) of every filled box a schematic drew, in canvas units."""
    from matplotlib.patches import FancyBboxPatch

    return [(p.get_x(), p.get_y(), p.get_x() + p.get_width(), p.get_y() + p.get_height())
            for p in fig.axes[0].patches if isinstance(p, FancyBboxPatch) and p.get_fill() and p.get_facecolor()[3] > 0]


@pytest.mark.parametrize("draw", SCHEMATICS, ids=lambda f: f"{f.__module__.rsplit('.', 1)[1]}.{f.__name__}")
def test_schematic_boxes_and_texts_do_not_overlap(draw):
    """Chapter 04's schematics: no two boxes overlap, no two texts overlap, and every box's text fits inside it."""
    import matplotlib.pyplot as plt

    fig = draw()
    try:
        fig.canvas.draw()
        boxes = _boxes(fig)
        assert len(boxes) >= 8
        for i, a in enumerate(boxes):
            for b in boxes[i + 1:]:
                assert a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1], f"boxes {a} and {b} overlap"
        renderer = fig.canvas.get_renderer()
        texts = [t for t in fig.axes[0].texts if t.get_text().strip()]
        extents = [t.get_window_extent(renderer) for t in texts]
        for i, a in enumerate(extents):
            for j in range(i + 1, len(extents)):
                assert not a.overlaps(extents[j]), f"texts {texts[i].get_text()!r} and {texts[j].get_text()!r} overlap"
        to_data = fig.axes[0].transData.inverted()
        for text, extent in zip(texts, extents):
            (x0, y0), (x1, y1) = to_data.transform([(extent.x0, extent.y0), (extent.x1, extent.y1)])
            x, y = text.get_position()
            for bx0, by0, bx1, by1 in boxes:
                if bx0 < x < bx1 and by0 < y < by1:  # a box's own label
                    assert bx0 <= x0 and x1 <= bx1 and by0 <= y0 and y1 <= by1, f"{text.get_text()!r} spills out of its box"
    finally:
        plt.close(fig)
