"""course_lib.topics.detr: matching cost, Hungarian matcher vs brute force, set loss, the tiny DETR, evaluation, bench row."""
import math
import re
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from course_lib import zoo
from course_lib.core.checkpointing import read_manifest
from course_lib.topics import boxes as B
from course_lib.topics import detr as D

SMALL = dict(num_classes=3, num_queries=5, dim=32, heads=4, encoder_layers=1, decoder_layers=2, mlp_ratio=2.0,
             backbone_channels=(8, 8, 16))


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def random_prediction(n, k=3, seed=0):
    g = gen(seed)
    logits = torch.randn(n, k + 1, generator=g)
    centre, size = 0.2 + 0.6 * torch.rand(n, 2, generator=g), 0.05 + 0.3 * torch.rand(n, 2, generator=g)
    return logits, torch.cat([centre, size], 1)


def test_matching_cost_terms_and_weights():
    logits, boxes = random_prediction(4)
    labels, targets = torch.tensor([2, 0]), random_prediction(2, seed=1)[1]
    cost = D.matching_cost(logits, boxes, labels, targets)
    p = logits.softmax(-1)
    i, j = 3, 1
    expected = (-p[i, labels[j]] + 5 * (boxes[i] - targets[j]).abs().sum()
                - 2 * B.giou(B.cxcywh_to_xyxy(boxes[i]), B.cxcywh_to_xyxy(targets[j])))
    assert cost.shape == (4, 2) and torch.allclose(cost[i, j], expected, atol=1e-6)


@pytest.mark.parametrize("n, g, seed", [(3, 3, 0), (5, 2, 1), (6, 3, 2), (6, 6, 3), (4, 1, 4)])
def test_hungarian_equals_brute_force(n, g, seed):
    cost = torch.randn(n, g, generator=gen(seed))
    rows, cols = D.hungarian_match(cost)
    assignment, best = D.brute_force_match(cost)
    assert len(rows) == g and cost[rows, cols].sum().item() == pytest.approx(best, abs=1e-5)
    assert torch.equal(rows[torch.argsort(cols)], assignment)  # the query for target k is rows[argsort(cols)]


def test_hungarian_needs_enough_queries():
    with pytest.raises(ValueError, match="N >= G"):
        D.hungarian_match(torch.zeros(2, 3))


def test_set_loss_is_zero_on_a_perfect_prediction_but_for_the_class_term():
    targets = [{"labels": torch.tensor([1, 0]), "boxes": torch.tensor([[0.3, 0.3, 0.2, 0.2], [0.7, 0.6, 0.1, 0.3]])}]
    boxes = torch.full((1, 4, 4), 0.5)
    boxes[0, 2], boxes[0, 0] = targets[0]["boxes"]
    logits = torch.full((1, 4, 4), -30.0)
    logits[0, 2, 1] = logits[0, 0, 0] = logits[0, 1, 3] = logits[0, 3, 3] = 30.0
    loss = D.set_loss(logits, boxes, targets, num_classes=3)
    assert loss["loss_l1"].item() < 1e-6 and loss["loss_giou"].item() < 1e-6 and loss["loss_ce"].item() < 1e-6


def test_set_loss_no_object_weight_is_a_weighted_mean():
    logits, boxes = random_prediction(4)
    targets = [{"labels": torch.tensor([2]), "boxes": boxes[1:2].clone()}]
    matches = [(torch.tensor([1]), torch.tensor([0]))]
    loss = D.set_loss(logits[None], boxes[None], targets, 3, matches=matches)
    log_p = logits.log_softmax(-1)
    per_query = torch.stack([-log_p[0, 3], -log_p[1, 2], -log_p[2, 3], -log_p[3, 3]])
    weights = torch.tensor([0.1, 1.0, 0.1, 0.1])
    assert torch.allclose(loss["loss_ce"], (weights * per_query).sum() / weights.sum(), atol=1e-6)
    assert loss["loss_l1"].item() < 1e-6


def test_sine_position_embedding_shape_and_values():
    pos = D.sine_position_embedding(3, 4, 8)
    assert pos.shape == (12, 8)
    y = torch.tensor(2 / 3 * 2 * math.pi)  # row 1 of 3 (counting from 1: 2/3 of 2 pi), frequency 1 then 10000^(2/4)
    assert torch.allclose(pos[4, :4], torch.stack([y.sin(), y.cos(), (y / 100).sin(), (y / 100).cos()]), atol=1e-6)
    assert torch.equal(pos[4, 4:], pos[0, 4:])  # same column, same x half
    with pytest.raises(ValueError):
        D.sine_position_embedding(2, 2, 6)


def step_by_step_detr(model, images):
    """The chapter's build with the library's weights: plain tensor operations and vit's attention."""
    from course_lib.topics.vit import scaled_dot_product_attention

    def attend(module, q_in, k_in, v_in):
        b, n_q, d = q_in.shape
        h = module.heads

        def split(x):
            return x.reshape(len(x), -1, h, d // h).transpose(1, 2)
        out, w = scaled_dot_product_attention(split(module.q(q_in)), split(module.k(k_in)), split(module.v(v_in)))
        return module.proj(out.transpose(1, 2).reshape(b, n_q, d)), w

    features = model.input_proj(model.backbone.features(images, "conv3"))  # (B, D, h, w)
    b, d, hh, ww = features.shape
    x = features.flatten(2).transpose(1, 2)
    pos = D.sine_position_embedding(hh, ww, d)
    for layer in model.encoder:
        n1 = layer.norm1(x)
        x = x + attend(layer.attn, n1 + pos, n1 + pos, n1)[0]
        x = x + layer.mlp(layer.norm2(x))
    memory = model.encoder_norm(x)
    t = torch.zeros(b, *model.query_pos.shape)
    crosses = []
    for layer in model.decoder:
        n1 = layer.norm1(t)
        t = t + attend(layer.self_attn, n1 + model.query_pos, n1 + model.query_pos, n1)[0]
        out, w = attend(layer.cross_attn, layer.norm2(t) + model.query_pos, memory + pos, memory)
        t = t + out
        t = t + layer.mlp(layer.norm3(t))
        crosses.append(w)
    t = model.decoder_norm(t)
    return model.class_head(t), model.box_head(t).sigmoid(), crosses


def test_step_by_step_build_agrees_with_the_library():
    torch.manual_seed(0)
    model = D.TinyDETR(**SMALL).eval()
    images = torch.rand(2, 3, 48, 48, generator=gen())
    with torch.no_grad():
        out = model(images)
        logits, boxes, crosses = step_by_step_detr(model, images)
    assert out["logits"].shape == (2, 5, 4) and out["boxes"].shape == (2, 5, 4) and out["grid"] == (12, 12)
    assert torch.allclose(out["logits"], logits, atol=1e-5) and torch.allclose(out["boxes"], boxes, atol=1e-6)
    assert len(out["cross_attention"]) == 2 and out["cross_attention"][-1].shape == (2, 4, 5, 144)
    assert torch.allclose(out["cross_attention"][-1], crosses[-1], atol=1e-6)
    assert torch.allclose(out["cross_attention"][0].sum(-1), torch.ones(2, 4, 5), atol=1e-5)
    assert len(out["aux"]) == 1


def test_training_loss_runs_and_reaches_every_parameter():
    torch.manual_seed(0)
    model = D.TinyDETR(**SMALL)
    batch = next(D.shapes_batches(4, seed=0))
    loss = D.training_loss(model, batch)
    loss.backward()
    assert math.isfinite(loss.item())
    unused = [name for name, p in model.named_parameters() if p.grad is None]
    assert unused == ["backbone.head.weight", "backbone.head.bias"]  # SmallCNN's classifier is not used


def test_train_detr_few_steps_and_recipe_settings():
    cfg = zoo.settings("detr_shapes", "ci")
    small = SimpleNamespace(**{**vars(cfg), "model": SMALL, "steps": 3, "batch_size": 4})
    model, history = D.train_detr(small, show_progress=False)
    assert len(history.losses) == 3 and all(math.isfinite(v) for v in history.losses)
    for name in ("ci", "cpu", "gpu"):
        assert zoo.settings("detr_shapes", name).model["num_queries"] >= 3


def test_predict_and_evaluate_on_a_perfect_fake_model():
    scenes = D.evaluation_scenes(20)
    targets = D.pixel_targets(scenes)
    perfect = [{"boxes": t["boxes"], "scores": torch.ones(len(t["boxes"])), "labels": t["labels"]} for t in targets]
    assert B.mean_average_precision(perfect, targets, 3)["map"] == pytest.approx(1.0)
    torch.manual_seed(0)
    predictions = D.predict(D.TinyDETR(**SMALL), scenes["images"][:3])
    assert len(predictions) == 3 and predictions[0]["boxes"].shape == (5, 4)


def test_evaluation_scenes_are_fixed():
    a, b = D.evaluation_scenes(5), D.evaluation_scenes(5)
    assert torch.equal(a["images"], b["images"]) and a["images"].shape == (5, 3, 48, 48)


@pytest.mark.skipif("detr_shapes" not in read_manifest(), reason="no shipped detr_shapes")
def test_bench_measures_map_and_beats_random_init():
    from course_lib.zoo.bench import measure

    result = measure("detr_shapes")
    assert "mAP@0.5" in result.metric
    matched = result.references["ground-truth boxes matched (right class, IoU >= 0.5, score >= 0.5)"]
    assert re.fullmatch(r"\d+/\d+", matched)
    assert len(result.references["AP per class circle / square / triangle"]) == 3
    assert result.value > 0.5 and result.value > result.references["random-init model"] + 0.3


def test_set_loss_needs_one_target_per_image():
    """With fewer target dicts than images, zip() silently trained the missing images as 'no object'."""
    logits, boxes = torch.randn(3, 5, 4), torch.rand(3, 5, 4) * 0.5 + 0.25
    targets = [{"labels": torch.tensor([0]), "boxes": torch.tensor([[0.5, 0.5, 0.2, 0.2]])}] * 2
    with pytest.raises(ValueError, match="2 target dicts for a batch of 3 images"):
        D.set_loss(logits, boxes, targets, num_classes=3)


def test_schematic_names_the_queries_the_matching_and_the_set_loss():
    import matplotlib.pyplot as plt

    from course_lib.core.diagram import text_of

    fig = D.schematic()
    words = text_of(fig)
    plt.close(fig)
    for part in ("CNN backbone", "encoder", "decoder", "object queries", "Hungarian matching", "set loss"):
        assert part in words, part
