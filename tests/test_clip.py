"""course_lib.topics.clip: the symmetric InfoNCE loss, the word tokenizer, the text tower, TinyCLIP, zero-shot prediction."""
import math

import pytest
import torch
import torch.nn.functional as F

from course_lib import zoo
from course_lib.topics import clip as C


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------------------------- captions and tokenizer

def test_templates_fill_both_class_forms():
    assert C.fill_template("a photo of the digit {word}", 7) == "a photo of the digit seven"
    assert C.fill_template("a handwritten {numeral}", 7) == "a handwritten 7"
    with pytest.raises(ValueError, match="names no class"):
        C.fill_template("a photo", 3)
    with pytest.raises(ValueError, match="0-9"):
        C.fill_template("the number {word}", 10)


def test_held_out_templates_are_new_but_use_known_words():
    tokenizer = C.mnist_tokenizer()
    assert not set(C.HELD_OUT_TEMPLATES) & set(C.TRAIN_TEMPLATES)
    for template in C.HELD_OUT_TEMPLATES:
        tokenizer.encode(C.mnist_captions([template]))  # no unknown word


def test_vocabulary_starts_with_the_special_tokens_and_is_sorted():
    vocabulary = C.build_vocabulary(["the number seven", "A handwritten 7"])
    assert vocabulary[:2] == ["<pad>", "<eot>"]
    assert vocabulary[2:] == sorted(["the", "number", "seven", "a", "handwritten", "7"])


def test_tokenizer_encodes_with_eot_and_padding_and_decodes_back():
    tokenizer = C.mnist_tokenizer(context_length=8)
    tokens = tokenizer.encode(["the number seven", "a handwritten 7"])
    assert tokens.shape == (2, 8) and tokens.dtype == torch.long
    assert tokens[0, 3] == tokenizer.eot_id and (tokens[0, 4:] == tokenizer.pad_id).all()
    assert tokenizer.decode(tokens) == ["the number seven", "a handwritten 7"]
    assert torch.equal(tokenizer.encode("The Number SEVEN"), tokens[:1])  # lower-cased


def test_tokenizer_names_the_unknown_word_and_the_vocabulary():
    tokenizer = C.mnist_tokenizer()
    with pytest.raises(KeyError, match="'sketch'") as error:
        tokenizer.encode("a sketch of a seven")
    assert "handwritten" in str(error.value) and "30 words" in str(error.value)
    with pytest.raises(KeyError):
        tokenizer.encode("<eot>")


def test_tokenizer_rejects_long_and_empty_texts_and_bad_vocabularies():
    tokenizer = C.mnist_tokenizer(context_length=4)
    with pytest.raises(ValueError, match="context length"):
        tokenizer.encode("a photo of the digit seven")
    with pytest.raises(ValueError, match="empty"):
        tokenizer.encode("  ")
    with pytest.raises(ValueError, match="start with"):
        C.WordTokenizer(["a", "b"])


# ---------------------------------------------------------------------------------- the loss

def test_clip_loss_is_the_mean_of_the_two_cross_entropies():
    logits = 5 * torch.randn(7, 7, generator=gen(), dtype=torch.float64)
    target = torch.arange(7)
    expected = 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))
    assert torch.allclose(C.clip_loss(logits), expected)
    assert torch.allclose(C.image_to_text_loss(logits), F.cross_entropy(logits, target))
    assert not torch.allclose(C.image_to_text_loss(logits), C.clip_loss(logits))  # the one-directional loss differs


def test_clip_loss_is_log_n_for_identical_embeddings():
    embeddings = torch.randn(1, 16, generator=gen()).expand(9, 16)
    logits = 14.3 * C.cosine_similarity_matrix(embeddings, embeddings)
    assert C.clip_loss(logits).item() == pytest.approx(math.log(9), rel=1e-6)


def test_clip_loss_is_unchanged_by_a_joint_permutation():
    images, texts = torch.randn(8, 5, generator=gen()), torch.randn(8, 5, generator=gen(1))
    perm = torch.randperm(8, generator=gen(2))
    loss = C.clip_loss(10 * C.cosine_similarity_matrix(images, texts))
    permuted = C.clip_loss(10 * C.cosine_similarity_matrix(images[perm], texts[perm]))
    assert torch.allclose(loss, permuted, atol=1e-6)
    shuffled_texts_only = C.clip_loss(10 * C.cosine_similarity_matrix(images, texts[perm]))
    assert not torch.allclose(loss, shuffled_texts_only)


def test_clip_loss_gradient_matches_autograd():
    logits = (3 * torch.randn(6, 6, generator=gen(), dtype=torch.float64)).requires_grad_()
    C.clip_loss(logits).backward()
    assert torch.allclose(C.clip_loss_gradient(logits.detach()), logits.grad)
    assert torch.allclose(logits.grad.sum(dim=1).sum(), torch.zeros((), dtype=torch.float64), atol=1e-12)


@pytest.mark.parametrize("bad", [torch.zeros(3, 4), torch.zeros(3)])
def test_clip_loss_rejects_non_square_logits(bad):
    with pytest.raises(ValueError, match="square"):
        C.clip_loss(bad)


def test_cosine_similarity_matrix_is_scale_free():
    a, b = torch.randn(3, 4, generator=gen()), torch.randn(5, 4, generator=gen(1))
    s = C.cosine_similarity_matrix(a, b)
    assert s.shape == (3, 5) and torch.allclose(s, C.cosine_similarity_matrix(7 * a, 0.1 * b), atol=1e-6)
    assert torch.allclose(s, F.cosine_similarity(a[:, None], b[None], dim=-1), atol=1e-6)
    with pytest.raises(ValueError):
        C.cosine_similarity_matrix(a, torch.randn(5, 3))


# ---------------------------------------------------------------------------------- the towers

def tiny_clip(seed=0, **text):
    torch.manual_seed(seed)
    text = dict(dict(dim=16, depth=2, heads=2, mlp_ratio=2.0, causal=True, pooling="eot"), **text)
    return C.TinyCLIP(C.mnist_tokenizer().vocabulary, embed_dim=8, image=dict(channels=(4, 8, 16)), text=text).eval()


def reference_text_encoder(encoder: C.TextTransformer, tokens: torch.Tensor) -> torch.Tensor:
    """The text tower written again with torch.nn.functional only, reading the library's weights."""
    x = F.embedding(tokens, encoder.token_embedding.weight) + encoder.position
    b, length, dim = x.shape
    allowed = (tokens != encoder.pad_id)[:, None, None, :]
    if encoder.causal:
        allowed = allowed & torch.ones(length, length, dtype=torch.bool).tril()
    for block in encoder.blocks:
        h = F.layer_norm(x, (dim,), block.norm1.weight, block.norm1.bias)
        heads = block.attn.heads
        q, k, v = F.linear(h, block.attn.qkv.weight, block.attn.qkv.bias).split(dim, dim=-1)
        q, k, v = (t.reshape(b, length, heads, dim // heads).transpose(1, 2) for t in (q, k, v))
        attended = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed).transpose(1, 2).reshape(b, length, dim)
        x = x + F.linear(attended, block.attn.proj.weight, block.attn.proj.bias)
        h = F.layer_norm(x, (dim,), block.norm2.weight, block.norm2.bias)
        x = x + block.mlp[2](F.gelu(block.mlp[0](h)))
    x = F.layer_norm(x, (dim,), encoder.norm.weight, encoder.norm.bias)
    if encoder.pooling == "eot":
        pooled = x[torch.arange(b), (tokens == encoder.eot_id).long().argmax(1)]
    else:
        real = (tokens != encoder.pad_id).float()[..., None]
        pooled = (x * real).sum(1) / real.sum(1)
    return pooled @ encoder.projection.weight.T


@pytest.mark.parametrize("text", [dict(), dict(causal=False, pooling="mean"), dict(causal=True, pooling="mean")])
def test_text_tower_agrees_with_a_functional_rewrite(text):
    model = tiny_clip(**text)
    tokens = model.tokenizer.encode(C.mnist_captions(C.TRAIN_TEMPLATES[:2]))
    with torch.no_grad():
        assert torch.allclose(model.text_encoder(tokens), reference_text_encoder(model.text_encoder, tokens), atol=1e-5)


def test_causal_eot_pooling_ignores_the_padding_tokens():
    model = tiny_clip()
    tokens = model.tokenizer.encode(["the number seven"])
    other = tokens.clone()
    other[0, 5] = model.tokenizer.ids["nine"]  # a word after <eot>: a causal tower cannot see it from <eot>
    with torch.no_grad():
        assert torch.allclose(model.text_encoder(tokens), model.text_encoder(other), atol=1e-6)


def test_text_tower_rejects_bad_tokens():
    model = tiny_clip()
    with pytest.raises(ValueError, match="int64"):
        model.text_encoder(torch.zeros(2, 8))
    with pytest.raises(ValueError, match="<eot>"):
        model.text_encoder(torch.full((2, 8), 3, dtype=torch.long))
    with pytest.raises(ValueError, match="8 tokens"):
        model.text_encoder(torch.ones(2, 5, dtype=torch.long))
    with pytest.raises(ValueError, match="pooling"):
        C.TextTransformer(10, pooling="cls")


def test_tiny_clip_logits_strings_and_tokens_agree():
    model = tiny_clip()
    images = torch.rand(3, 1, 28, 28, generator=gen())
    captions = ["the number seven", "a handwritten 7", "a photo of the digit two"]
    logits = model(images, model.tokenizer.encode(captions))
    assert logits.shape == (3, 3)
    with torch.no_grad():
        expected = model.scale() * C.cosine_similarity_matrix(model.encode_image(images), model.encode_text(captions))
    assert torch.allclose(logits, expected, atol=1e-6)
    with pytest.raises(ValueError, match="images"):
        model.encode_image(torch.rand(3, 28, 28))


def test_temperature_starts_at_0_07_and_its_inverse_is_clamped_at_100():
    model = tiny_clip()
    assert model.scale().item() == pytest.approx(1 / 0.07, rel=1e-6)
    with torch.no_grad():
        model.logit_scale.fill_(math.log(1000.0))
    scale = model.scale()
    assert scale.item() == pytest.approx(100.0)
    scale.backward()
    assert model.logit_scale.grad.item() == 0.0  # beyond the clamp the temperature no longer learns


def test_parameter_groups_exclude_logit_scale_from_weight_decay():
    model = tiny_clip()
    decay, no_decay = C.parameter_groups(model, 0.1)
    assert any(p is model.logit_scale for p in no_decay["params"])
    assert all(p.ndim >= 2 for p in decay["params"]) and decay["weight_decay"] == 0.1
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))


def test_model_rebuilds_from_its_config_like_the_manifest():
    model = tiny_clip()
    import json
    entry = {"recipe": {"model": json.loads(json.dumps(model.config))}}
    twin = zoo.MODELS["clip_mnist"].build(entry).eval()
    twin.load_state_dict(model.state_dict())
    images = torch.rand(2, 1, 28, 28, generator=gen())
    tokens = model.tokenizer.encode(["the number one", "a handwritten 1"])
    with torch.no_grad():
        assert torch.equal(twin(images, tokens), model(images, tokens))


def test_training_loss_runs_and_sends_gradients_everywhere():
    model = tiny_clip().train()
    table = C.caption_table(model.tokenizer)
    assert table.shape == (len(C.TRAIN_TEMPLATES), 10, 8)
    batch = (torch.rand(6, 1, 28, 28, generator=gen()), torch.tensor([0, 1, 2, 3, 4, 5]))
    loss = C.clip_training_loss(model, batch, table, gen(1), max_shift=2)
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())
    tokens = C.sample_captions(torch.tensor([7, 7, 7]), table, gen(2))
    assert all(text.split()[-1] in ("seven", "7") for text in model.tokenizer.decode(tokens))


# ---------------------------------------------------------------------------------- zero-shot

def test_ensemble_is_the_renormalised_mean_of_unit_embeddings():
    per_template = torch.randn(3, 10, 8, generator=gen())
    ensemble = C.ensemble_embeddings(per_template)
    assert ensemble.shape == (10, 8) and torch.allclose(ensemble.norm(dim=1), torch.ones(10))
    expected = F.normalize(sum(F.normalize(per_template[t], dim=1) for t in range(3)), dim=1)
    assert torch.allclose(ensemble, expected, atol=1e-6)
    assert torch.allclose(C.ensemble_embeddings(per_template[:1]), F.normalize(per_template[0], dim=1), atol=1e-6)
    with pytest.raises(ValueError):
        C.ensemble_embeddings(per_template[0])


def test_zero_shot_predict_picks_the_most_similar_class():
    classes = torch.eye(4, 6)
    images = torch.tensor([[0.1, 0.0, 5.0, 0, 0, 0], [0, 2.0, 0, 0, 0, 0], [0, 0, 0, 1.0, 0, 0.5]])
    assert C.zero_shot_predict(images, classes).tolist() == [2, 1, 3]


def test_class_embeddings_and_zero_shot_accuracy_run_on_a_tiny_model():
    model = tiny_clip()
    assert C.class_embeddings(model, C.HELD_OUT_TEMPLATES[0]).shape == (10, 8)
    images, labels = torch.rand(20, 1, 28, 28, generator=gen()), torch.arange(20) % 10
    accuracy = C.zero_shot_accuracy(model, images, labels)
    assert 0.0 <= accuracy <= 1.0


def test_linear_probe_separates_separable_features():
    labels = torch.arange(200) % 10
    features = F.one_hot(labels, 10).float() * 3 + 0.1 * torch.randn(200, 10, generator=gen())
    assert C.linear_probe(features, labels, features, labels, steps=100) == 1.0


# ---------------------------------------------------------------------------------- recipe and shipped checkpoint

def test_clip_settings_exist_for_every_profile():
    for name in ("ci", "cpu", "gpu"):
        cfg = zoo.settings("clip_mnist", name)
        assert cfg.profile == name and cfg.steps >= 1 and cfg.model["max_logit_scale"] == 100.0
        assert cfg.model["init_temperature"] == 0.07


def test_bench_shows_zero_shot_accuracy_of_at_least_0_90():
    from course_lib.zoo.bench import measure

    result = measure("clip_mnist")
    assert result.metric == "MNIST zero-shot acc (10k), train prompts" and result.value >= 0.90
    assert result.references["chance"] == 0.1
    held_out = [label for label in result.references if label.startswith("held-out template")]
    assert len(held_out) == len(C.HELD_OUT_TEMPLATES)
    assert all(0.0 <= result.references[label] <= 1.0 for label in held_out)


def test_clip_recipe_records_a_model_config_that_rebuilds(monkeypatch):
    from types import SimpleNamespace

    model = tiny_clip()
    history = SimpleNamespace(losses=[1.0] * 60, wall_time_s=0.0)
    monkeypatch.setattr(C, "train_clip", lambda cfg, seed=0, show_progress=True, **fit_options: (model, history))
    monkeypatch.setattr(C, "evaluate_clip", lambda m, x, y: {"zero_shot_acc": 0.5, "held_out_0_acc": 0.4,
                                                             "held_out_1_acc": 0.3, "logit_scale_exp": 14.0})
    monkeypatch.setattr(C, "image_features", lambda m, x, batch_size=1000: torch.zeros(len(x), 2))
    monkeypatch.setattr(C, "linear_probe", lambda *args, **kwargs: 0.9)
    _, _, metrics, recipe = zoo.MODELS["clip_mnist"].train("ci", show_progress=False)
    assert metrics["zero_shot_test_accuracy"] == 0.5 and metrics["linear_probe_test_accuracy"] == 0.9
    assert recipe["model"] == model.config and recipe["held_out_templates"] == list(C.HELD_OUT_TEMPLATES)
    twin = zoo.MODELS["clip_mnist"].build({"recipe": recipe})  # what load_shipped does with the manifest entry
    twin.load_state_dict(model.state_dict())


def test_schematic_names_both_towers_and_both_cross_entropies():
    import matplotlib.pyplot as plt

    from course_lib.core.diagram import text_of

    fig = C.schematic()
    words = text_of(fig)
    plt.close(fig)
    for part in ("image encoder", "text encoder", "CE over each row", "CE over each column", "logit_scale"):
        assert part in words, part
