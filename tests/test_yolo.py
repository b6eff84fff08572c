"""course_lib.topics.yolo: target encoding, the YOLOv1 loss (zero on a perfect prediction, a hand-computed case), decoding."""
import math

import pytest
import torch

from course_lib.topics import yolo as Y
from course_lib.topics.boxes import iou


def one_object():
    labels = torch.tensor([[2, -1]])
    boxes = torch.tensor([[[10.0, 20.0, 21.0, 29.0], [0, 0, 0, 0]]])  # continuous 10..22 x 20..30 in a 48 image
    return labels, boxes


def test_encode_targets_puts_the_object_in_the_cell_of_its_centre():
    labels, boxes = one_object()
    target = Y.encode_targets(labels, boxes, 48, grid=6)
    assert target.shape == (1, 6, 6, 8)
    # centre (16, 25) -> column 16 / 8 = 2, row 25 / 8 = 3, offsets (0, 0.125); size 12 x 10 of 48
    assert target[..., 4].sum() == 1 and target[0, 3, 2, 4] == 1
    assert torch.allclose(target[0, 3, 2, :4], torch.tensor([0.0, 0.125, 12 / 48, 10 / 48]), atol=1e-6)
    assert torch.equal(target[0, 3, 2, 5:], torch.tensor([0.0, 0.0, 1.0]))
    back = Y.cell_to_image_boxes(target[..., :4])[0, 3, 2] * 48
    assert torch.allclose(back, torch.tensor([10.0, 20.0, 22.0, 30.0]))


def test_loss_is_zero_on_a_perfect_prediction():
    from course_lib.data import make_shapes

    scenes = make_shapes(8, size=48, max_objects=3, min_radius=5, max_radius=10, seed=3)
    target = Y.encode_targets(scenes["labels"], scenes["boxes"], 48)
    assert Y.yolo_loss(Y.perfect_prediction(target), target).item() == pytest.approx(0.0, abs=1e-6)


def test_loss_equals_a_hand_computation_on_one_object():
    labels, boxes = one_object()
    target = Y.encode_targets(labels, boxes, 48, grid=6)
    pred = torch.zeros(1, 6, 6, 13)
    pred[0, 3, 2, :5] = torch.tensor([0.1, 0.2, 0.3, 0.16, 0.7])   # predictor 0: close to the box
    pred[0, 3, 2, 5:10] = torch.tensor([0.9, 0.9, 0.05, 0.05, 0.4])  # predictor 1: far off -> not responsible
    pred[0, 3, 2, 10:] = torch.tensor([0.1, 0.2, 0.6])
    pred[0, 0, 0, 4] = 0.3                                          # an empty cell with some confidence
    # by hand: predictor 0 responsible; its IoU with the truth
    cx, cy = (2 + 0.1) / 6, (3 + 0.2) / 6
    p0 = torch.tensor([cx - 0.15, cy - 0.08, cx + 0.15, cy + 0.08])
    truth = torch.tensor([10 / 48, 20 / 48, 22 / 48, 30 / 48])
    iou0 = iou(p0, truth).item()
    expected = (5 * ((0.1 - 0.0) ** 2 + (0.2 - 0.125) ** 2)
                + 5 * ((math.sqrt(0.3) - math.sqrt(0.25)) ** 2 + (math.sqrt(0.16) - math.sqrt(10 / 48)) ** 2)
                + (0.7 - iou0) ** 2
                + 0.5 * (0.4 ** 2 + 0.3 ** 2)
                + (0.1 ** 2 + 0.2 ** 2 + 0.4 ** 2))
    total, terms = Y.yolo_loss(pred, target, return_terms=True)
    assert total.item() == pytest.approx(expected, rel=1e-5)
    assert set(terms) == {"xy", "wh", "conf_obj", "conf_noobj", "class"}


def test_gradient_reaches_only_the_responsible_box():
    labels, boxes = one_object()
    target = Y.encode_targets(labels, boxes, 48, grid=6)
    pred = torch.zeros(1, 6, 6, 13)
    pred[0, 3, 2, :5] = torch.tensor([0.1, 0.2, 0.3, 0.16, 0.7])
    pred[0, 3, 2, 5:10] = torch.tensor([0.9, 0.9, 0.05, 0.05, 0.4])
    pred.requires_grad_(True)
    Y.yolo_loss(pred, target).backward()
    assert pred.grad[0, 3, 2, :4].abs().sum() > 0 and pred.grad[0, 3, 2, 5:9].abs().sum() == 0


def test_decode_and_model_shapes():
    labels, boxes = one_object()
    target = Y.encode_targets(labels, boxes, 48, grid=6)
    found = Y.decode(Y.perfect_prediction(target), 48)[0]
    assert found["labels"].tolist() == [2] and torch.allclose(found["boxes"][0], torch.tensor([10.0, 20, 22, 30]))
    assert Y.TinyYOLO()(torch.rand(2, 3, 48, 48)).shape == (2, 6, 6, 13)
    with pytest.raises(ValueError):
        Y.yolo_loss(torch.zeros(1, 6, 6, 12), target)


def test_negative_predicted_sizes_are_empty_boxes_not_inverted_ones():
    """Raw linear outputs can be negative: the loss and the decoder must still run (IoU checks refuse x1 < x0)."""
    pred = torch.randn(2, 4, 4, 5 * 2 + 3, generator=torch.Generator().manual_seed(0))
    pred[..., 2:4] = -0.3
    boxes = Y.cell_to_image_boxes(pred[..., :4])
    assert (boxes[..., 2] >= boxes[..., 0]).all() and (boxes[..., 3] >= boxes[..., 1]).all()
    target = Y.encode_targets(torch.tensor([[0, -1]]).repeat(2, 1), torch.tensor([[4, 4, 20, 20], [0, 0, 0, 0]]).repeat(2, 1, 1),
                              48, grid=4)
    assert torch.isfinite(Y.yolo_loss(pred, target))
    Y.decode(pred, 48, score_threshold=-10.0)


def test_schematic_names_the_grid_the_boxes_and_the_loss():
    import matplotlib.pyplot as plt

    from course_lib.core.diagram import text_of

    fig = Y.schematic()
    words = text_of(fig)
    plt.close(fig)
    for part in ("S x S x (5B + C)", "box 1", "box 2", "NMS", "YOLO loss", "responsible"):
        assert part in words, part
