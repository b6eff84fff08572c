"""course_lib.topics.cnn: conv arithmetic, receptive fields (recursion, autograd, ERF), SmallCNN, saliency, Grad-CAM, augmentation."""
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from course_lib import zoo
from course_lib.topics import cnn as C
from course_lib.topics.losses import cross_entropy


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------------------------- arithmetic

def test_conv_output_size_matches_pytorch():
    for n in (1, 5, 8, 13, 28):
        for k in (1, 2, 3, 5):
            for s in (1, 2, 3):
                for p in (0, 1, 2):
                    for d in (1, 2):
                        if n + 2 * p < d * (k - 1) + 1:
                            with pytest.raises(ValueError, match="kernel"):
                                C.conv_output_size(n, k, s, p, d)
                            continue
                        out = F.conv2d(torch.zeros(1, 1, n, n), torch.zeros(1, 1, k, k), stride=s, padding=p, dilation=d)
                        assert C.conv_output_size(n, k, s, p, d) == out.shape[-1]


@pytest.mark.parametrize("args, error", [((28.0, 3), TypeError), ((28, 0), ValueError), ((28, 3, 0), ValueError),
                                         ((28, 3, 1, -1), ValueError), ((True, 3), TypeError)])
def test_conv_output_size_rejects_bad_arguments(args, error):
    with pytest.raises(error):
        C.conv_output_size(*args)


def test_receptive_field_of_classic_networks():
    vgg16 = [(3, 1, 1)] * 2 + [(2, 2)] + [(3, 1, 1)] * 2 + [(2, 2)] + ([(3, 1, 1)] * 3 + [(2, 2)]) * 3
    resnet18 = [(7, 2, 3), (3, 2, 1)] + [(3, 1, 1)] * 4 + ([(3, 2, 1)] + [(3, 1, 1)] * 3) * 3
    alexnet = [(11, 4, 2), (3, 2), (5, 1, 2), (3, 2), (3, 1, 1), (3, 1, 1), (3, 1, 1), (3, 2)]
    assert C.receptive_field(vgg16)[-1][:2] == (212, 32)
    assert C.receptive_field(vgg16)[-2].r == 196
    assert C.receptive_field(resnet18)[-1][:2] == (435, 32)
    assert C.receptive_field(alexnet)[-1].r == 195 and C.receptive_field(alexnet)[-2].r == 163
    lenet = C.receptive_field([(5, 1), (2, 2), (5, 1), (2, 2), (5, 1)])
    assert [f.r for f in lenet] == [5, 6, 14, 16, 32] and lenet[-1].start == 15.5


def test_receptive_field_recursion_and_dilation():
    assert C.receptive_field([(3, 1)] * 3)[-1].r == 7
    assert C.receptive_field([(5, 1), (2, 2)])[-1].r == 6  # P + K - 1
    assert C.receptive_field([(3, 1, 2**l, 2**l) for l in range(4)])[-1].r == 31
    assert C.receptive_field([3, 3])[-1].r == 5  # a bare kernel size means stride 1


@pytest.mark.parametrize("layers", [[], [(3, 1, 0, 1, 9)], [(0, 1)], [(3, 0)], ["3x3"]])
def test_receptive_field_rejects_bad_layers(layers):
    with pytest.raises((ValueError, TypeError)):
        C.receptive_field(layers)


def test_recursion_agrees_with_autograd_on_random_chains():
    g = gen(3)
    for _ in range(8):
        specs, modules = [], []
        for _ in range(4):
            k = [1, 2, 3, 5][torch.randint(4, (1,), generator=g).item()]
            s = torch.randint(1, 3, (1,), generator=g).item()
            d = torch.randint(1, 3, (1,), generator=g).item()
            p = torch.randint(0, (d * (k - 1)) // 2 + 1, (1,), generator=g).item()
            specs.append((k, s, p, d))
            modules.append(nn.Conv2d(1, 1, k, s, p, d) if k > 2 else nn.AvgPool2d(k, s, p))
            if k <= 2:
                specs[-1] = (k, s, p, 1)
        chain = nn.Sequential(*modules)
        rf = C.receptive_field(specs)[-1]
        size = 3 * rf.r + 4 * rf.j
        unit = chain(torch.zeros(1, 1, size, size)).shape[-1] // 2
        measured = C.measured_receptive_field(chain, (1, size, size), (unit, unit), n_inputs=2, generator=g)
        assert measured.rows == measured.cols == C.receptive_field_box(specs, unit)
        assert measured.size == (rf.r, rf.r)


def test_layer_specs_of_small_cnn_and_errors():
    specs = C.layer_specs(C.SmallCNN())
    assert [tuple(s) for s in specs] == [(5, 1, 2, 1), (2, 2, 0, 1), (3, 1, 1, 1), (2, 2, 0, 1), (3, 1, 1, 1)]
    assert C.receptive_field(specs)[-1].r == 20
    with pytest.raises(ValueError, match="no Conv2d"):
        C.layer_specs(nn.Linear(3, 4))
    with pytest.raises(ValueError, match="square"):
        C.layer_specs(nn.Conv2d(1, 1, (3, 5)))


def test_measured_field_of_small_cnn_and_batchnorm_in_train_mode():
    model = C.SmallCNN(channels=(4, 8, 8))
    model.eval()
    assert C.measured_receptive_field(lambda x: model.features(x), (1, 48, 48), (6, 6), n_inputs=2).size == (20, 20)
    model.train()  # batch statistics over all positions: every pixel moves every unit
    assert C.measured_receptive_field(lambda x: model.features(x), (1, 48, 48), (6, 6), n_inputs=1).size == (48, 48)
    with pytest.raises(ValueError, match="outside"):
        C.input_gradient(model.eval().features, torch.zeros(1, 1, 28, 28), (9, 0))
    with pytest.raises(ValueError, match="one image"):
        C.input_gradient(model.features, torch.zeros(2, 1, 28, 28), (0, 0))


def test_effective_receptive_field_of_averaging_stack_is_binomial_like():
    depth = 5
    stack = nn.Sequential(*[nn.Conv2d(1, 1, 3, padding=1, bias=False) for _ in range(depth)]).double()
    for conv in stack:
        nn.init.constant_(conv.weight, 1 / 9)
    erf = C.effective_receptive_field(stack, torch.randn(3, 1, 31, 31, generator=gen(), dtype=torch.float64))
    axis = np.array([1.0])
    for _ in range(depth):
        axis = np.convolve(axis, np.ones(3) / 3)
    exact = np.zeros(31)
    exact[15 - depth:16 + depth] = axis
    assert erf.shape == (31, 31) and abs(erf.sum().item() - 1) < 1e-12
    assert np.allclose(erf.numpy(), np.outer(exact, exact))
    rows, cols = C.erf_spread(erf)
    assert rows == pytest.approx(math.sqrt(2 * depth / 3)) and cols == pytest.approx(rows)


def test_effective_receptive_field_batches_agree_and_errors():
    model = C.SmallCNN(channels=(4, 8, 8)).eval()
    images = torch.rand(5, 1, 28, 28, generator=gen())
    whole = C.effective_receptive_field(lambda x: model.features(x), images, position=(3, 3))
    batched = C.effective_receptive_field(lambda x: model.features(x), images, position=(3, 3), batch_size=2)
    assert torch.allclose(whole, batched)
    with pytest.raises(ValueError, match="images"):
        C.effective_receptive_field(model.features, torch.zeros(1, 28, 28))
    with pytest.raises(ValueError, match="non-negative"):
        C.erf_spread(-torch.ones(3, 3))


# ---------------------------------------------------------------------------------- the model

def test_small_cnn_shapes_activations_and_config():
    model = C.SmallCNN(channels=(4, 8, 16), first_kernel=3, num_classes=7).eval()
    logits, acts = model.forward_with_activations(torch.rand(2, 1, 28, 28))
    assert logits.shape == (2, 7)
    assert {k: tuple(v.shape) for k, v in acts.items()} == {"conv1": (2, 4, 28, 28), "conv2": (2, 8, 14, 14),
                                                            "conv3": (2, 16, 7, 7)}
    assert all((a >= 0).all() for a in acts.values())
    assert model(torch.rand(1, 1, 40, 40)).shape == (1, 7)  # fully convolutional up to the pooling
    rebuilt = C.SmallCNN(**model.config)
    rebuilt.load_state_dict(model.state_dict())
    assert torch.equal(rebuilt.eval()(torch.ones(1, 1, 28, 28)), model(torch.ones(1, 1, 28, 28)))
    assert model.features(torch.rand(1, 1, 28, 28), "conv2").shape == (1, 8, 14, 14)


@pytest.mark.parametrize("kwargs", [dict(channels=(4, 8)), dict(first_kernel=4), dict(channels=(0, 8, 8))])
def test_small_cnn_rejects_bad_configs(kwargs):
    with pytest.raises(ValueError):
        C.SmallCNN(**kwargs)


def test_small_cnn_rejects_bad_input_and_layer():
    model = C.SmallCNN(channels=(4, 8, 8))
    with pytest.raises(ValueError, match="images"):
        model(torch.rand(1, 28, 28))
    with pytest.raises(ValueError, match="layer"):
        model.features(torch.rand(1, 1, 28, 28), "conv4")


def test_chapter_step_by_step_build_equals_small_cnn():
    torch.manual_seed(4)
    conv1, bn1 = nn.Conv2d(1, 32, 5, padding=2, bias=False), nn.BatchNorm2d(32)
    conv2, bn2 = nn.Conv2d(32, 64, 3, padding=1, bias=False), nn.BatchNorm2d(64)
    conv3, bn3 = nn.Conv2d(64, 128, 3, padding=1, bias=False), nn.BatchNorm2d(128)
    head = nn.Linear(128, 10)
    for module in (bn1, bn2, bn3):  # non-trivial running statistics, so that eval mode is really tested
        module.running_mean.uniform_(-0.5, 0.5)
        module.running_var.uniform_(0.5, 2.0)
        module.eval()
    x = torch.rand(4, 1, 28, 28, generator=gen())
    a1 = F.relu(bn1(conv1(x)))
    a2 = F.relu(bn2(conv2(F.max_pool2d(a1, 2))))
    a3 = F.relu(bn3(conv3(F.max_pool2d(a2, 2))))
    logits = head(a3.mean(dim=(2, 3)))
    model = C.SmallCNN()
    parts = {"conv1": conv1, "bn1": bn1, "conv2": conv2, "bn2": bn2, "conv3": conv3, "bn3": bn3, "head": head}
    model.load_state_dict({f"{n}.{k}": v for n, m in parts.items() for k, v in m.state_dict().items()})
    lib_logits, acts = model.eval().forward_with_activations(x)
    assert torch.allclose(lib_logits, logits, atol=1e-5)
    for name, mine in (("conv1", a1), ("conv2", a2), ("conv3", a3)):
        assert torch.allclose(acts[name], mine, atol=1e-5)


def test_classification_loss_accepts_soft_labels_and_augmentation():
    model = C.SmallCNN(channels=(4, 8, 8)).eval()
    x, y = torch.rand(6, 1, 28, 28, generator=gen()), torch.randint(0, 10, (6,), generator=gen(1))
    hard = C.classification_loss(model, (x, y))
    soft = C.classification_loss(model, (x, F.one_hot(y, 10).float()))
    assert torch.allclose(hard, soft) and torch.allclose(hard, F.cross_entropy(model(x), y))
    flipped = C.classification_loss(model, (x, y), augment=lambda t: t.flip(-1))
    assert torch.allclose(flipped, F.cross_entropy(model(x.flip(-1)), y))


# ---------------------------------------------------------------------------------- looking inside

def trained_like_model():
    torch.manual_seed(0)
    model = C.SmallCNN(channels=(4, 8, 16)).double()
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.2, 0.2)
    return model.eval()


def test_saliency_is_abs_gradient_of_the_logit():
    model = trained_like_model()
    x = torch.rand(3, 1, 28, 28, generator=gen(), dtype=torch.float64)
    target = torch.tensor([1, 4, 7])
    s = C.saliency(model, x, target)
    assert s.shape == (3, 28, 28) and (s >= 0).all()
    h = 1e-6
    bump = torch.zeros_like(x)
    bump[1, 0, 12, 15] = h
    with torch.no_grad():
        fd = (model(x + bump)[1, 4] - model(x - bump)[1, 4]) / (2 * h)
    assert s[1, 12, 15].item() == pytest.approx(abs(fd.item()), rel=1e-5, abs=1e-9)
    assert torch.allclose(C.saliency(model, x[:1], 1), s[:1])  # one int target works too
    model.train()
    C.saliency(model, x, target)
    assert model.training  # the mode is restored
    with pytest.raises(ValueError, match="target"):
        C.saliency(model, x, torch.tensor([1, 2]))


def test_grad_cam_weights_are_averaged_gradients_and_cam_at_the_last_layer():
    model = trained_like_model()
    x = torch.rand(4, 1, 28, 28, generator=gen(), dtype=torch.float64)
    target = torch.tensor([0, 3, 3, 9])
    for layer in ("conv1", "conv2", "conv3"):
        heatmap, weights = C.grad_cam(model, x, target, layer)
        logits, acts = model.forward_with_activations(x)
        grads = torch.autograd.grad(logits.gather(1, target[:, None]).sum(), acts[layer])[0]
        assert torch.allclose(weights, grads.mean(dim=(2, 3)))
        assert heatmap.shape == acts[layer].shape[:1] + acts[layer].shape[2:] and (heatmap >= 0).all()
    a3 = acts["conv3"].detach()
    w = model.head.weight[target].detach()
    assert torch.allclose(weights, w / 49)
    assert torch.allclose(heatmap, F.relu((w[:, :, None, None] * a3).sum(1)) / 49)
    unrectified = (weights[:, :, None, None] * a3).sum(dim=(1, 2, 3))
    assert torch.allclose(unrectified, logits.gather(1, target[:, None])[:, 0].detach() - model.head.bias[target].detach())


def test_grad_cam_errors():
    with pytest.raises(TypeError, match="forward_with_activations"):
        C.grad_cam(nn.Conv2d(1, 1, 3), torch.zeros(1, 1, 8, 8), 0)
    with pytest.raises(ValueError, match="layer"):
        C.grad_cam(C.SmallCNN(channels=(4, 8, 8)), torch.zeros(1, 1, 28, 28), 0, layer="fc")
    with pytest.raises(ValueError, match="both"):
        C.grad_cam_map(torch.zeros(1, 4, 7, 7), torch.zeros(1, 4, 7, 6))


# ---------------------------------------------------------------------------------- augmentation

def test_random_crop_flip():
    x = torch.rand(16, 1, 28, 28, generator=gen())
    assert torch.equal(C.random_crop_flip(x, padding=0, flip=False), x)
    out = C.random_crop_flip(x, padding=2, generator=gen(1))
    assert out.shape == x.shape
    for image, original in zip(out, x):  # every crop is a shifted (maybe flipped) copy, zeros coming in at the border
        candidates = [F.pad(o, (2, 2, 2, 2))[:, r:r + 28, c:c + 28] for o in (original, original.flip(-1))
                      for r in range(5) for c in range(5)]
        assert any(torch.equal(image, cand) for cand in candidates)
    flipped = C.random_crop_flip(x, padding=0, flip=True, generator=gen(2))
    assert all(torch.equal(f, o) or torch.equal(f, o.flip(-1)) for f, o in zip(flipped, x))


def test_affine_transform_rotation_and_translation():
    x = torch.rand(2, 1, 28, 28, generator=gen())
    assert torch.allclose(C.affine_transform(x, angle=90), torch.rot90(x, 1, dims=(2, 3)), atol=1e-5)
    assert torch.allclose(C.affine_transform(x), x, atol=1e-5)
    moved = C.affine_transform(x, translate=(0.25, 0.0))  # 7 pixels to the right
    assert torch.allclose(moved[..., 7:], x[..., :-7], atol=1e-5)
    down = C.affine_transform(x, translate=(0.0, 0.25))  # 7 pixels down
    assert torch.allclose(down[..., 7:, :], x[..., :-7, :], atol=1e-5)
    with pytest.raises(ValueError, match="scale"):
        C.affine_transform(x, scale=0)


def test_rand_augment_keeps_shape_and_range():
    x = torch.rand(3, 1, 28, 28, generator=gen())
    for name, op in C.RAND_AUGMENT_OPS.items():
        for m in (-1.0, 0.3, 1.0):
            y = op(x, m)
            assert y.shape == x.shape and y.min() >= -1e-6 and y.max() <= 1 + 1e-6, name
    assert torch.equal(C.rand_augment(x, num_ops=0, magnitude=9), x)
    assert torch.equal(C.rand_augment(x, 2, 9, generator=gen(5)), C.rand_augment(x, 2, 9, generator=gen(5)))
    with pytest.raises(ValueError, match="magnitude"):
        C.rand_augment(x, 2, 31)


def test_mixup_labels_match_pixel_weights():
    a, b = torch.zeros(1, 1, 28, 28), torch.ones(1, 1, 28, 28)
    for lam in (0.0, 0.25, 0.9):
        mixed, soft = C.mixup(torch.cat([a, b]), torch.tensor([2, 5]), lam, perm=torch.tensor([1, 0]), num_classes=10)
        assert torch.allclose(mixed[0], torch.full_like(mixed[0], 1 - lam))
        assert soft[0, 2].item() == pytest.approx(lam) and soft[0, 5].item() == pytest.approx(1 - lam)
        assert torch.allclose(soft.sum(1), torch.ones(2))


def test_mixup_soft_cross_entropy_is_the_mixture_of_losses():
    logits = torch.randn(8, 10, generator=gen())
    y = torch.randint(0, 10, (8,), generator=gen(1))
    perm = torch.randperm(8, generator=gen(2))
    _, soft = C.mixup(torch.zeros(8, 1, 4, 4), y, 0.3, perm=perm, num_classes=10)
    expected = 0.3 * cross_entropy(logits, y) + 0.7 * cross_entropy(logits, y[perm])
    assert torch.allclose(cross_entropy(logits, soft), expected)


@pytest.mark.parametrize("kwargs, match", [(dict(lam=1.5), "lam"), (dict(lam=0.5, perm=torch.tensor([0])), "perm"),
                                           (dict(lam=0.5, num_classes=None), "num_classes")])
def test_mixup_rejects_bad_arguments(kwargs, match):
    kwargs = {"num_classes": 10, **kwargs}
    with pytest.raises(ValueError, match=match):
        C.mixup(torch.zeros(2, 1, 4, 4), torch.tensor([0, 1]), **kwargs)


def test_cutmix_box_area_and_clipping():
    box = C.cutmix_box(28, 28, 0.75, center=(14, 14))  # sides 28 * sqrt(0.25) = 14
    assert box == C.Box(7, 7, 21, 21) and box.area == 14 * 14
    corner = C.cutmix_box(28, 28, 0.75, center=(0, 27))
    assert corner == C.Box(0, 20, 7, 28)
    assert C.cutmix_box(28, 28, 1.0, center=(5, 5)).area == 0
    assert C.cutmix_box(28, 28, 0.0, center=(14, 14)) == C.Box(0, 0, 28, 28)
    with pytest.raises(ValueError, match="lam"):
        C.cutmix_box(28, 28, -0.1)


def test_cutmix_label_equals_pixel_fraction():
    g = gen(7)
    a, b = torch.zeros(1, 1, 28, 28), torch.ones(1, 1, 28, 28)
    for lam0 in torch.rand(200, generator=g).tolist():
        box = C.cutmix_box(28, 28, lam0, generator=g)
        mixed, soft, lam = C.cutmix(torch.cat([a, b]), torch.tensor([0, 1]), box, perm=torch.tensor([1, 0]), num_classes=10)
        fraction_b = mixed[0].mean().item()
        assert lam == pytest.approx(1 - fraction_b) and soft[0, 1].item() == pytest.approx(fraction_b)
        assert soft[0, 0].item() == pytest.approx(lam)
    with pytest.raises(ValueError, match="inside"):
        C.cutmix(torch.zeros(2, 1, 28, 28), torch.tensor([0, 1]), C.Box(0, 0, 29, 10), num_classes=10)


# ---------------------------------------------------------------------------------- recipe, checkpoint, bench

def test_cnn_fashion_settings_exist_for_every_profile():
    for name in ("ci", "cpu", "gpu"):
        cfg = zoo.settings("cnn_fashion", name)
        assert cfg.profile == name and cfg.steps >= 1 and cfg.model["channels"] == (32, 64, 128)


def test_cnn_fashion_recipe_runs(monkeypatch):
    real = zoo.cnn_fashion.load_fashion_mnist  # the name the record's train looks up
    monkeypatch.setattr(zoo.cnn_fashion, "load_fashion_mnist", lambda split="train": tuple(t[:256] for t in real(split)))
    tiny = SimpleNamespace(profile="ci", model=dict(channels=(4, 8, 8), first_kernel=5, in_channels=1, num_classes=10,
                                                    batch_norm=True),
                           n_train=256, steps=3, batch_size=32, lr=1e-3, warmup_steps=1, crop_padding=2,
                           min_test_accuracy=0.0)
    monkeypatch.setattr(zoo.cnn_fashion, "settings", lambda active=None: tiny)
    model, history, metrics, recipe = zoo.MODELS["cnn_fashion"].train("ci", show_progress=False)
    assert len(history.losses) == 3 and not model.training and 0 <= metrics["test_accuracy"] <= 1
    assert recipe["recipe"] == "course_lib.zoo.cnn_fashion" and recipe["model"]["channels"] == (4, 8, 8)


def test_shipped_cnn_fashion_is_small_and_accurate():
    from course_lib.core.checkpointing import read_manifest

    entry = read_manifest()["cnn_fashion"]
    assert entry["size_bytes"] < 1_000_000 and entry["metrics"]["test_accuracy"] >= 0.91
    model = zoo.load_shipped("cnn_fashion")
    assert isinstance(model, C.SmallCNN) and not model.training


def test_bench_reports_the_shipped_cnn(monkeypatch):
    from course_lib.zoo import common
    from course_lib.zoo.bench import measure

    real = common.DATASETS["Fashion-MNIST"]  # the first 2,000 test images keep the test fast; make bench uses all
    monkeypatch.setitem(common.DATASETS, "Fashion-MNIST", lambda split="test": tuple(t[:2000] for t in real(split)))
    result = measure("cnn_fashion")
    assert result.metric == "Fashion-MNIST test accuracy (10k)" and result.value >= 0.9
    assert result.references["bar"] == 0.91 and result.references["human labellers"] == 0.835


def test_schematic_shows_the_shapes_and_receptive_fields_of_small_cnn():
    """The numbers drawn in the picture are those the code computes: each stage's output shape and its r and j."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from course_lib.core.diagram import text_of

    fig = C.schematic()
    words = text_of(fig)
    plt.close(fig)
    model = C.SmallCNN()
    _, maps = model.eval().forward_with_activations(torch.zeros(1, 1, 28, 28))
    for name, a in maps.items():
        assert " × ".join(str(n) for n in a.shape[1:]) in words, name
    for field in C.receptive_field(C.layer_specs(model)):
        assert f"r = {field.r}, j = {field.j}" in words, field
