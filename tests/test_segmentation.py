"""Chapter 14's segmentation library: scores on hand cases, FCN's pieces, the U-Net, RoIAlign and the mask loss."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from course_lib.data.shapes import make_shapes
from course_lib.eval.fid import MnistClassifier
from course_lib.topics import segmentation as seg


def test_semantic_and_instance_maps_agree_with_the_masks():
    scenes = make_shapes(4, seed=3, **seg.shapes_settings())
    semantic = seg.semantic_map(scenes["masks"], scenes["labels"])
    instances = seg.instance_map(scenes["masks"])
    assert ((semantic > 0) == (instances > 0)).all()
    for i in range(4):
        for k in range(int(scenes["counts"][i])):
            assert (semantic[i][scenes["masks"][i, k]] == scenes["labels"][i, k] + 1).all()
            assert (instances[i][scenes["masks"][i, k]] == k + 1).all()
    with pytest.raises(ValueError, match="make_shapes"):
        seg.semantic_map(scenes["masks"][0], scenes["labels"])


def test_pixel_cross_entropy_by_hand_and_against_torch():
    logits = torch.tensor([[[[2.0, 0.0]], [[0.0, 1.0]]]])                 # (1, 2, 1, 2)
    target = torch.tensor([[[0, 1]]])
    by_hand = -(torch.log(torch.tensor(torch.e**2 / (torch.e**2 + 1))) + torch.log(torch.tensor(torch.e / (1 + torch.e)))) / 2
    assert abs(seg.pixel_cross_entropy(logits, target) - by_hand) < 1e-6
    logits, target = torch.randn(2, 4, 5, 6), torch.randint(4, (2, 5, 6))
    assert torch.allclose(seg.pixel_cross_entropy(logits, target), F.cross_entropy(logits, target), atol=1e-6)
    with pytest.raises(TypeError, match="long"):
        seg.pixel_cross_entropy(logits, target.float())


def test_dice_and_iou_on_hand_masks():
    a = torch.zeros(4, 4, dtype=torch.bool)
    b = torch.zeros(4, 4, dtype=torch.bool)
    a[:2, :2] = True                                                       # 4 pixels
    b[:2, :3] = True                                                       # 6 pixels, 4 shared
    assert abs(seg.dice_coefficient(a, b) - 8 / 10) < 1e-9
    assert abs(seg.mask_iou(a, b) - 4 / 6) < 1e-9
    # soft Dice of a near-perfect prediction is near 0, of a uniform one is large
    target = torch.randint(3, (1, 6, 6))
    perfect = 20 * F.one_hot(target, 3).permute(0, 3, 1, 2).float()
    assert seg.soft_dice_loss(perfect, target) < 1e-3
    assert seg.soft_dice_loss(torch.zeros(1, 3, 6, 6), target) > 0.3


def test_mean_iou_on_a_hand_case():
    target = torch.tensor([[0, 0, 1, 1], [0, 0, 2, 2]])
    pred = torch.tensor([[0, 1, 1, 1], [0, 0, 2, 0]])
    # class 0: tp 3, fp 1, fn 1 -> 3/5; class 1: tp 2, fp 1 -> 2/3; class 2: tp 1, fn 1 -> 1/2; class 3 absent
    assert abs(seg.mean_iou(pred, target) - (3 / 5 + 2 / 3 + 1 / 2) / 3) < 1e-9
    assert torch.isnan(seg.iou_per_class(seg.confusion_matrix(pred, target))[3])


def test_panoptic_quality_is_sq_times_rq():
    def square(x0, y0, x1, y1):
        m = torch.zeros(10, 10, dtype=torch.bool)
        m[y0:y1, x0:x1] = True
        return m
    truth = [(square(0, 0, 4, 4), 1), (square(5, 5, 9, 9), 1), (square(0, 6, 3, 9), 2)]
    pred = [(square(0, 0, 4, 3), 1), (square(6, 0, 9, 3), 1), (square(0, 6, 3, 9), 2)]
    r = seg.panoptic_quality([pred], [truth], num_classes=3)
    pq1, sq1, rq1, tp, fp, fn = r["per_class"][1]
    assert (tp, fp, fn) == (1, 1, 1)
    assert abs(sq1 - 12 / 16) < 1e-9 and abs(rq1 - 1 / 2) < 1e-9 and abs(pq1 - sq1 * rq1) < 1e-12
    assert r["per_class"][2][:3] == (1.0, 1.0, 1.0)
    assert abs(r["pq"] - (12 / 32 + 1) / 2) < 1e-9


def test_linear_is_a_convolution_and_the_classifier_convolutionalizes():
    torch.manual_seed(0)
    model = MnistClassifier().eval()
    fcn = seg.convolutionalize_mnist_classifier(model)
    x = torch.rand(3, 1, 28, 28)
    assert torch.allclose(fcn(x)[:, :, 0, 0], model(x), atol=1e-5)
    wide = torch.rand(1, 1, 28, 56)
    heat = fcn(wide)                                                        # (1, 10, 1, 8): windows every 4 px
    assert heat.shape == (1, 10, 1, 8)
    features = model.body[:6](wide)                                         # (1, 64, 7, 14) before Flatten
    for j in range(8):                                                       # the classifier's FC layers, per window
        window = model.body[6:](features[..., j:j + 7])
        assert torch.allclose(heat[0, :, 0, j], model.head(window)[0], atol=1e-5)
    with pytest.raises(ValueError, match="features"):
        seg.linear_as_conv(torch.nn.Linear(10, 3), 3)


def test_transposed_convolution_is_the_adjoint():
    torch.manual_seed(1)
    w = torch.randn(4, 3, 3, 3)                                             # conv: 3 -> 4 channels
    x, y = torch.randn(2, 3, 9, 9), torch.randn(2, 4, 4, 4)
    lhs = (F.conv2d(x, w, stride=2) * y).sum()
    rhs = (x * F.conv_transpose2d(y, w, stride=2)).sum()
    assert torch.allclose(lhs, rhs, rtol=1e-5)


def test_bilinear_upsampling_and_fusion():
    x = torch.randn(1, 2, 6, 6)
    for f in (2, 4):
        up = seg.upsample_scores(x, f)
        ref = F.interpolate(x, scale_factor=f, mode="bilinear", align_corners=False)
        assert up.shape == ref.shape and torch.allclose(up[..., f:-f, f:-f], ref[..., f:-f, f:-f], atol=1e-5)
    fused = seg.fcn_fuse([x, torch.zeros(1, 2, 12, 12)])
    assert torch.allclose(fused, seg.upsample_scores(x, 2))


def test_unet_valid_sizes_of_the_paper():
    sizes = seg.unet_valid_sizes(572)
    assert sizes == {"down": [568, 280, 136, 64], "bottom": 28, "up": [52, 100, 196, 388], "output": 388}
    with pytest.raises(ValueError, match="odd"):
        seg.unet_valid_sizes(570)


def step_by_step_unet(model, x):
    """Chapter 14, C.2's forward pass, written out with the model's own modules."""
    d1 = model.down1(x)
    d2 = model.down2(F.max_pool2d(d1, 2))
    bottom = model.bottom(F.max_pool2d(d2, 2))
    u2 = model.up2.conv(torch.cat([d2, model.up2.up(bottom)], dim=1))
    u1 = model.up1.conv(torch.cat([d1, model.up1.up(u2)], dim=1))
    return model.classify(u1)


def test_segunet_matches_the_step_by_step_forward():
    torch.manual_seed(2)
    model = seg.SegUNet(widths=(8, 16, 32)).eval()
    x = torch.rand(2, 3, 48, 48)
    out = model(x)
    assert out.shape == (2, 4, 48, 48)
    assert torch.allclose(out, step_by_step_unet(model, x), atol=1e-6)
    with pytest.raises(ValueError, match="multiples of 4"):
        model(torch.rand(1, 3, 50, 50))


def test_baselines_and_a_short_training_run():
    scenes = seg.evaluation_scenes(30)
    scores = seg.baselines(scenes, train_target=scenes["semantic"])
    assert 0.1 < scores["all background"] < 0.3
    assert max(scores.values()) > scores["all background"]
    s = SimpleNamespace(model=dict(widths=(4, 8, 16)), steps=2, batch_size=2, lr=1e-3, warmup_steps=1, weight_decay=0.0)
    model, history = seg.train_segmenter(s, show_progress=False)
    assert len(history.losses) == 2 and seg.predict_semantic(model, scenes["images"][:3]).shape == (3, 48, 48)


def test_roi_align_by_hand():
    features = torch.arange(16.0).reshape(1, 4, 4)                          # value = 4 y + x
    # a box covering feature cells 1..2 in x and y (image pixels, stride 1): one bin, 2x2 samples at
    # x, y in {1.5, 2.5} - 0.5 = {1, 2}: the mean of 4 y + x over them = 4 * 1.5 + 1.5
    out = seg.roi_align(features, torch.tensor([[1.0, 1.0, 3.0, 3.0]]), output_size=1, sampling_ratio=2)
    assert abs(out.item() - 7.5) < 1e-6
    # a fractional box: bilinear sampling of a linear map returns the linear map at the sample point
    out = seg.roi_align(features, torch.tensor([[0.7, 1.3, 2.7, 3.3]]), output_size=2, sampling_ratio=1)
    xs = torch.tensor([0.7 + 0.5, 0.7 + 1.5]) - 0.5
    ys = torch.tensor([1.3 + 0.5, 1.3 + 1.5]) - 0.5
    assert torch.allclose(out[0, 0], 4 * ys[:, None] + xs[None, :], atol=1e-5)


def test_roi_align_against_grid_sample():
    torch.manual_seed(3)
    features = torch.randn(2, 8, 8)
    box = torch.tensor([[4.3, 8.9, 40.2, 50.6]])                             # image pixels, stride 8
    out = seg.roi_align(features, box, output_size=3, spatial_scale=1 / 8, sampling_ratio=2)
    x0, y0, x1, y1 = (box[0] / 8).tolist()
    offsets = (torch.arange(6) + 0.5) / 6
    xs, ys = x0 + offsets * (x1 - x0) - 0.5, y0 + offsets * (y1 - y0) - 0.5
    grid = torch.stack(torch.meshgrid((xs + 0.5) / 8 * 2 - 1, (ys + 0.5) / 8 * 2 - 1, indexing="xy"), -1)
    sampled = F.grid_sample(features[None], grid[None], align_corners=False, padding_mode="zeros")[0]
    assert torch.allclose(out[0], sampled.reshape(2, 3, 2, 3, 2).mean(dim=(2, 4)), atol=1e-5)


def test_roi_pool_quantises():
    features = torch.arange(16.0).reshape(1, 4, 4)
    out = seg.roi_pool(features, torch.tensor([[0.6, 0.6, 2.4, 2.4]]), output_size=1)
    assert out.item() == 10.0                                              # cells 1..2 (rounded): max is 4*2 + 2
    region = seg.roi_pool_region((10.0, 10.0, 30.0, 30.0), stride=8)
    assert region == (8, 8, 40, 40) and abs(seg.box_region_iou(region, (10.0, 10.0, 30.0, 30.0)) - 400 / 1024) < 1e-9


def test_mask_head_loss_uses_only_the_true_class():
    logits = torch.randn(2, 3, 5, 5, requires_grad=True)
    labels = torch.tensor([2, 0])
    targets = torch.rand(2, 5, 5) > 0.5
    loss = seg.mask_head_loss(logits, labels, targets)
    loss.backward()
    grad_norms = logits.grad.abs().sum(dim=(2, 3))
    assert (grad_norms[0, :2] == 0).all() and grad_norms[0, 2] > 0 and (grad_norms[1, 1:] == 0).all()
    expected = F.binary_cross_entropy_with_logits(torch.stack([logits[0, 2], logits[1, 0]]), targets.float())
    assert torch.allclose(loss, expected)
