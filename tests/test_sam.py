"""Chapter 14's tiny Segment Anything: nested scenes, the prompt encoder, the decoder's outputs and the loss."""
from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from course_lib.topics import sam


def test_nested_scenes_and_prompts():
    scenes = sam.nested_scenes(20, seed=1)
    assert scenes["images"].shape == (20, 3, 48, 48)
    assert not (scenes["inners"] & ~scenes["wholes"]).any()                 # every inner shape lies in its whole
    prompts = sam.sample_prompts(scenes, seed=1)
    assert prompts["on_inner"].any() and (~prompts["on_inner"]).any()
    for i in range(20):
        x, y = prompts["points"][i].long().tolist()
        alternatives = prompts["alternatives"][i]
        assert alternatives[:, y, x].all()                                   # the point lies on both meanings
        assert any(torch.equal(prompts["targets"][i], a) for a in alternatives)
        if prompts["on_inner"][i]:
            assert alternatives[0].sum() < alternatives[1].sum()             # small shape, then the whole


def step_by_step_prompt_token(encoder, points, size=48):
    """Chapter 14, E.2's prompt token, written out: Fourier features of the pixel centre + the foreground vector."""
    coords = (points + 0.5) / size                                           # (B, 2) in [0, 1]
    angles = 2 * math.pi * (2 * coords - 1) @ encoder.gaussian               # (B, D/2)
    return torch.cat([angles.sin(), angles.cos()], dim=-1) + encoder.foreground


def test_prompt_encoder_matches_the_step_by_step_token():
    torch.manual_seed(0)
    encoder = sam.PromptEncoder(dim=16, image_size=48)
    points = torch.tensor([[3.0, 40.0], [23.0, 23.0]])
    assert torch.allclose(encoder(points)[:, 0], step_by_step_prompt_token(encoder, points), atol=1e-6)
    dense = encoder.dense_positions(12, 12)                                   # token (row 2, col 5) at centre (5.5, 2.5)/12
    centre = torch.tensor([[5.5 / 12, 2.5 / 12]])
    assert torch.allclose(dense[2 * 12 + 5], sam.fourier_features(centre, encoder.gaussian)[0], atol=1e-6)
    with pytest.raises(ValueError, match="points"):
        encoder(torch.zeros(2, 3))


def test_tiny_sam_shapes_and_loss():
    torch.manual_seed(1)
    model = sam.TinySAM(dim=32, layers=1)
    images, points, targets = next(sam.prompt_batches(3))
    masks, ious = model(images, points)
    assert masks.shape == (3, 3, 48, 48) and ious.shape == (3, 3)
    loss = sam.sam_loss(masks, ious, targets)
    assert loss.ndim == 0 and torch.isfinite(loss)
    with pytest.raises(ValueError, match="one"):
        model(images, points[:2])


def test_minimum_loss_trains_only_the_best_candidate():
    target = torch.zeros(1, 4, 4, dtype=torch.bool)
    target[0, :2, :2] = True
    logits = torch.full((1, 3, 4, 4), -5.0)
    logits[0, 1, :2, :2] = 5.0                                               # candidate 1 is right
    logits.requires_grad_(True)
    per_candidate = sam.candidate_losses(logits, target)
    assert per_candidate.argmin().item() == 1
    loss = sam.sam_loss(logits, torch.tensor([[0.0, 1.0, 0.0]]), target)
    loss.backward()
    grads = logits.grad.abs().sum(dim=(2, 3))[0]
    assert grads[0] == 0 and grads[2] == 0 and grads[1] > 0
    assert torch.allclose(sam.hard_ious(logits.detach(), target), torch.tensor([[0.0, 1.0, 0.0]]))


def test_baselines_and_evaluation():
    data = sam.evaluation_prompts(20)
    scores = sam.baseline_scores(data)
    assert all(0.0 < v <= 1.0 for v in scores.values())
    # the colour flood fill finds an inner shape exactly when the point is on one (no noise crosses 0.2 there)
    image, point = data["images"][0], data["points"][0]
    assert sam.colour_region_baseline(image, point)[int(point[1]), int(point[0])]
    s = SimpleNamespace(model=dict(dim=16, layers=1, heads=2), steps=2, batch_size=2, lr=1e-3, warmup_steps=1,
                        weight_decay=0.0)
    model, history = sam.train_sam(s, show_progress=False)
    result = sam.evaluate_sam(model, data)
    assert len(history.losses) == 2 and result["oracle"] >= result["chosen"] - 1e-9
