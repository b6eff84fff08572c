"""course_lib.topics.boxes: conversions, IoU/GIoU (against a rasterised brute force), NMS (against its definition), AP."""
import itertools

import numpy as np
import pytest
import torch

from course_lib.topics import boxes as B


def random_boxes(n, seed=0, size=20.0):
    g = torch.Generator().manual_seed(seed)
    xy = size * torch.rand(n, 2, generator=g, dtype=torch.float64)
    wh = 1 + 0.5 * size * torch.rand(n, 2, generator=g, dtype=torch.float64)
    return torch.cat([xy, xy + wh], dim=1)


def test_pixel_boxes_become_continuous_and_round_trip():
    pixel = torch.tensor([[2.0, 3.0, 5.0, 3.0]])  # columns 2..5, one row: 4 x 1 pixels
    xyxy = B.pixel_to_xyxy(pixel)
    assert torch.equal(xyxy, torch.tensor([[2.0, 3.0, 6.0, 4.0]]))
    assert B.box_area(xyxy).item() == 4.0
    cxcywh = B.xyxy_to_cxcywh(xyxy)
    assert torch.allclose(cxcywh, torch.tensor([[4.0, 3.5, 4.0, 1.0]]))
    assert torch.allclose(B.cxcywh_to_xyxy(cxcywh), xyxy)
    assert torch.allclose(B.normalized_targets(pixel, 8), cxcywh / 8)


def test_iou_and_giou_hand_cases():
    a = torch.tensor([0.0, 0.0, 2.0, 2.0])
    assert B.iou(a, a).item() == pytest.approx(1.0) and B.giou(a, a).item() == pytest.approx(1.0)
    b = torch.tensor([1.0, 1.0, 3.0, 3.0])  # overlap 1, union 7, enclosing 9
    assert B.iou(a, b).item() == pytest.approx(1 / 7)
    assert B.giou(a, b).item() == pytest.approx(1 / 7 - 2 / 9)
    far = torch.tensor([4.0, 0.0, 6.0, 2.0])  # disjoint: IoU 0, enclosing 12, union 8
    assert B.iou(a, far).item() == 0.0
    assert B.giou(a, far).item() == pytest.approx(-4 / 12)


def test_iou_giou_match_rasterised_brute_force():
    a, b = random_boxes(6, seed=1), random_boxes(6, seed=2)
    for box_a, box_b in zip(a, b):
        iou_r, giou_r = B.rasterized_iou_giou(box_a.numpy(), box_b.numpy(), resolution=0.02)
        assert B.iou(box_a, box_b).item() == pytest.approx(iou_r, abs=5e-3)
        assert B.giou(box_a, box_b).item() == pytest.approx(giou_r, abs=5e-3)


def test_pairwise_matches_elementwise_and_giou_bounds():
    a, b = random_boxes(5), random_boxes(7, seed=3)
    pair = B.pairwise_giou(a, b)
    assert pair.shape == (5, 7)
    assert torch.allclose(pair[2, 4], B.giou(a[2], b[4]))
    assert (pair > -1).all() and (pair <= 1).all() and (pair <= B.pairwise_iou(a, b) + 1e-12).all()


def test_giou_has_a_gradient_when_iou_is_zero():
    a = torch.tensor([0.0, 0.0, 1.0, 1.0], requires_grad=True)
    b = torch.tensor([3.0, 0.0, 4.0, 1.0])
    (1 - B.iou(a, b)).backward()
    assert a.grad.abs().sum() == 0
    a.grad = None
    (1 - B.giou(a, b)).backward()
    assert a.grad.abs().sum() > 0


def brute_force_nms(boxes, scores, threshold):
    """The definition: a box is kept iff no *kept* box of higher score overlaps it by more than the threshold."""
    order = sorted(range(len(boxes)), key=lambda i: (-scores[i].item(), i))
    kept = []
    for i in order:
        if all(B.iou(boxes[i], boxes[j]).item() <= threshold for j in kept):
            kept.append(i)
    return kept


@pytest.mark.parametrize("seed", range(5))
def test_nms_matches_its_definition(seed):
    boxes = random_boxes(30, seed=seed, size=10.0)
    scores = torch.rand(30, generator=torch.Generator().manual_seed(seed + 100), dtype=torch.float64)
    for threshold in (0.3, 0.5, 0.7):
        assert B.nms(boxes, scores, threshold).tolist() == brute_force_nms(boxes, scores, threshold)


def test_nms_rejects_bad_shapes():
    with pytest.raises(ValueError):
        B.nms(torch.zeros(3, 4), torch.zeros(4))
    with pytest.raises(ValueError, match="4 numbers"):
        B.iou(torch.zeros(3), torch.zeros(3))


def test_average_precision_hand_example():
    # 4 ground truths; detections in score order: TP, FP, TP, TP, FP -> recall .25 .25 .5 .75 .75
    recall = np.array([0.25, 0.25, 0.5, 0.75, 0.75])
    precision = np.array([1.0, 0.5, 2 / 3, 0.75, 0.6])
    # envelope: 1 on (0, .25], 0.75 on (.25, .75], 0 after: AP = .25 + .5 * .75 = 0.625
    assert B.average_precision(recall, precision) == pytest.approx(0.625)


def test_average_precision_equals_brute_force_area():
    rng = np.random.default_rng(0)
    for _ in range(20):
        hits = rng.random(15) < 0.6
        n_gt = int(hits.sum()) + int(rng.integers(0, 3))
        if n_gt == 0:
            continue
        tp = np.cumsum(hits)
        recall, precision = tp / n_gt, tp / np.arange(1, 16)
        grid = np.linspace(0, 1, 200_001)[1:]  # area under r -> max{p_k : r_k >= r}
        envelope = np.array([precision[recall >= r].max() if (recall >= r).any() else 0.0 for r in grid[::100]])
        area = envelope.mean()
        assert B.average_precision(recall, precision) == pytest.approx(area, abs=2e-3)


def test_mean_average_precision_perfect_and_empty():
    target = {"boxes": torch.tensor([[0.0, 0, 4, 4], [10, 10, 14, 14]]), "labels": torch.tensor([0, 1])}
    perfect = {"boxes": target["boxes"].clone(), "scores": torch.tensor([0.9, 0.8]), "labels": torch.tensor([0, 1])}
    assert B.mean_average_precision([perfect], [target], 2)["map"] == pytest.approx(1.0)
    nothing = {"boxes": torch.zeros(0, 4), "scores": torch.zeros(0), "labels": torch.zeros(0, dtype=torch.long)}
    assert B.mean_average_precision([nothing], [target], 2)["map"] == 0.0
    counts = B.matched_count([perfect], [target])
    assert counts == {"matched": 2, "total": 2, "false_positives": 0}


def test_inverted_boxes_are_refused():
    """GIoU of a box with x1 < x0 returned 1.6e13, although GIoU lies in (-1, 1]."""
    good = torch.tensor([[0.0, 0.0, 2.0, 2.0]])
    inverted = torch.tensor([[3.0, 0.0, 1.0, 2.0]])
    for fn in (B.iou, B.giou, B.pairwise_iou, B.pairwise_giou):
        with pytest.raises(ValueError, match="inverted box.*cxcywh_to_xyxy"):
            fn(good, inverted)
    assert B.giou(good, torch.tensor([[1.0, 1.0, 1.0, 1.0]])).item() > -1  # a degenerate (empty) box is allowed
