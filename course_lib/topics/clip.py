"""Chapter 07's tiny CLIP: the symmetric InfoNCE loss, a word-level tokenizer, a text transformer, zero-shot prediction.

A batch of N (image, caption) pairs gives an N x N matrix of cosine similarities and logits::

    s_ij = f(x_i)^T g(t_j) / (||f(x_i)|| ||g(t_j)||),       logits_ij = s_ij / tau = exp(logit_scale) s_ij

    L = 1/2 [ CE over the rows (image -> text) + CE over the columns (text -> image) ],  target: the diagonal

``logit_scale = log(1 / tau)`` is learned, initialised at log(1 / 0.07) and its exponential clamped at 100
(Radford et al. 2021). The images are MNIST digits and the captions come from templates such as
"a photo of the digit seven" or "a handwritten 7" (``TRAIN_TEMPLATES``); ``HELD_OUT_TEMPLATES`` are
never used in training, so zero-shot accuracy with them is honest about prompt generalisation.

The image tower is chapter 03's ``SmallCNN`` (its linear head is the projection to the joint space);
the text tower is built from chapter 04's transformer ``Block``. Built step by step in chapter 07.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from course_lib.core.runtime import device, seed_everything
from course_lib.core.train import fit, minibatches, warmup_cosine
from course_lib.data import load_mnist
from course_lib.topics.cnn import SmallCNN, random_crop_flip
from course_lib.topics.vit import Block


# ---------------------------------------------------------------------------------- captions

DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
DIGIT_NUMERALS = tuple(str(k) for k in range(10))

TRAIN_TEMPLATES = (
    "a photo of the digit {word}",
    "a handwritten {numeral}",
    "the number {word}",
    "an image of the number {numeral}",
    "a drawing of the digit {numeral}",
    "a handwritten digit {word}",
)
# Never seen in training: new combinations of words that the training captions do contain.
HELD_OUT_TEMPLATES = (
    "a drawing of the number {word}",
    "an image of a handwritten {numeral}",
)
PAD, EOT = "<pad>", "<eot>"
SPECIAL_TOKENS = (PAD, EOT)


def fill_template(template: str, label: int) -> str:
    """The caption of digit ``label`` (0-9) from a template with ``{word}`` ("seven") or ``{numeral}`` ("7").

    Taught in chapter 07, B.1.
    """
    if not 0 <= int(label) <= 9:
        raise ValueError(f"label must be a digit 0-9, got {label}")
    if "{word}" not in template and "{numeral}" not in template:
        raise ValueError(f"template {template!r} names no class: put {{word}} or {{numeral}} in it")
    return template.format(word=DIGIT_WORDS[int(label)], numeral=DIGIT_NUMERALS[int(label)])


def split_words(text: str) -> list[str]:
    """Lower-case, then split on white space: the whole of this tokenizer's text normalisation. Chapter 07, B.2."""
    return text.lower().split()


def build_vocabulary(texts: Sequence[str]) -> list[str]:
    """The special tokens ``<pad>`` (id 0) and ``<eot>`` (id 1), then every word of ``texts``, sorted.

    Taught in chapter 07, B.2.
    """
    words = sorted({word for text in texts for word in split_words(text)} - set(SPECIAL_TOKENS))
    return list(SPECIAL_TOKENS) + words


def mnist_captions(templates: Sequence[str] = TRAIN_TEMPLATES) -> list[str]:
    """Every caption the templates make for the ten digits, template by template. Chapter 07, B.1."""
    return [fill_template(template, label) for template in templates for label in range(10)]


class WordTokenizer:
    """Words to ids over a fixed vocabulary: ``encode`` gives (B, context_length) with ``<eot>`` after the
    last word and ``<pad>`` (id 0) after that. An unknown word is an error that names it. Chapter 07, B.2."""

    def __init__(self, vocabulary: Sequence[str], context_length: int = 8):
        vocabulary = list(vocabulary)
        if vocabulary[:2] != list(SPECIAL_TOKENS):
            raise ValueError(f"the vocabulary must start with {SPECIAL_TOKENS}; build it with build_vocabulary()")
        if len(set(vocabulary)) != len(vocabulary):
            raise ValueError("the vocabulary has repeated words")
        if context_length < 2:
            raise ValueError(f"context_length must be >= 2 (a word and <eot>), got {context_length}")
        self.vocabulary = vocabulary
        self.context_length = context_length
        self.ids = {word: i for i, word in enumerate(vocabulary)}
        self.pad_id, self.eot_id = self.ids[PAD], self.ids[EOT]

    def __len__(self) -> int:
        return len(self.vocabulary)

    def encode_one(self, text: str) -> list[int]:
        words = split_words(text)
        unknown = [word for word in words if word not in self.ids or word in SPECIAL_TOKENS]
        if unknown:
            known = " ".join(self.vocabulary[len(SPECIAL_TOKENS):])
            raise KeyError(f"{unknown[0]!r} (in {text!r}) is not in the vocabulary. This tokenizer knows only the "
                           f"{len(self) - len(SPECIAL_TOKENS)} words of the training captions: {known}")
        if not words:
            raise ValueError("cannot encode an empty text")
        if len(words) + 1 > self.context_length:
            raise ValueError(f"{text!r} has {len(words)} words; with <eot> that exceeds the context length "
                             f"{self.context_length}")
        ids = [self.ids[word] for word in words] + [self.eot_id]
        return ids + [self.pad_id] * (self.context_length - len(ids))

    def encode(self, texts: str | Sequence[str]) -> torch.Tensor:
        """(B,) texts -> token ids (B, context_length), int64. A single string gives (1, context_length)."""
        if isinstance(texts, str):
            texts = [texts]
        return torch.tensor([self.encode_one(text) for text in texts], dtype=torch.long)

    def decode(self, tokens: torch.Tensor) -> list[str]:
        """(B, L) ids -> the texts, up to each ``<eot>``."""
        texts = []
        for row in tokens.tolist():
            words = []
            for i in row:
                if i == self.eot_id:
                    break
                words.append(self.vocabulary[i])
            texts.append(" ".join(words))
        return texts


def mnist_tokenizer(context_length: int = 8) -> WordTokenizer:
    """The tokenizer over the words of the training captions (``TRAIN_TEMPLATES`` x ten digits). Chapter 07, B.2."""
    return WordTokenizer(build_vocabulary(mnist_captions(TRAIN_TEMPLATES)), context_length)


# ---------------------------------------------------------------------------------- the loss


def cosine_similarity_matrix(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """s_ij = a_i . b_j / (||a_i|| ||b_j||): (N, E), (M, E) -> (N, M). Chapter 07, A.2."""
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"expected embeddings (N, E) and (M, E), got {tuple(a.shape)} and {tuple(b.shape)}")
    return F.normalize(a, dim=-1) @ F.normalize(b, dim=-1).T


def _check_square(logits: torch.Tensor) -> None:
    if logits.ndim != 2 or logits.shape[0] != logits.shape[1]:
        raise ValueError(f"logits must be a square (N, N) matrix, image i against caption j, got {tuple(logits.shape)}")


def image_to_text_loss(logits: torch.Tensor) -> torch.Tensor:
    """The one-directional InfoNCE: -1/N sum_i log softmax_j(logits)_ii, a cross entropy over each row.

    Taught in chapter 07, A.2.
    """
    _check_square(logits)
    n = logits.shape[0]
    return -(logits.diagonal() - torch.logsumexp(logits, dim=1)).sum() / n


def clip_loss(logits: torch.Tensor) -> torch.Tensor:
    """CLIP's symmetric loss: 1/2 (cross entropy over the rows + cross entropy over the columns), target the diagonal.

    ``logits`` (N, N): row i is image i against every caption, already divided by tau. Returns a scalar.

    Taught in chapter 07, A.2.
    """
    _check_square(logits)
    return 0.5 * (image_to_text_loss(logits) + image_to_text_loss(logits.T))


def clip_loss_gradient(logits: torch.Tensor) -> torch.Tensor:
    """d clip_loss / d logits by hand: 1/2 [(softmax over each row - I) / N + (softmax over each column - I) / N].

    Taught in chapter 07, A.4.
    """
    _check_square(logits)
    n = logits.shape[0]
    eye = torch.eye(n, dtype=logits.dtype, device=logits.device)
    return 0.5 * ((logits.softmax(dim=1) - eye) / n + (logits.softmax(dim=0) - eye) / n)


# ---------------------------------------------------------------------------------- the towers


class TextTransformer(nn.Module):
    """Token ids (B, L) -> a caption embedding (B, embed_dim). Chapter 07, B.3.

    Token embedding + learned position embedding, ``depth`` pre-norm transformer blocks (chapter 04's ``Block``,
    causal by default, as CLIP's), a final LayerNorm, the hidden state at ``<eot>`` (``pooling="eot"``) or the
    mean over the real tokens (``"mean"``), then a linear projection without bias to the joint space.
    """

    def __init__(self, vocab_size: int, context_length: int = 8, dim: int = 64, depth: int = 2, heads: int = 4,
                 mlp_ratio: float = 2.0, embed_dim: int = 64, causal: bool = True, pooling: str = "eot",
                 pad_id: int = 0, eot_id: int = 1):
        super().__init__()
        if pooling not in ("eot", "mean"):
            raise ValueError(f"pooling must be 'eot' or 'mean', got {pooling!r}")
        self.context_length, self.causal, self.pooling = context_length, causal, pooling
        self.pad_id, self.eot_id = pad_id, eot_id
        self.token_embedding = nn.Embedding(vocab_size, dim)
        self.position = nn.Parameter(0.02 * torch.randn(1, context_length, dim))
        self.blocks = nn.ModuleList(Block(dim, heads, mlp_ratio) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)
        self.projection = nn.Linear(dim, embed_dim, bias=False)

    def attention_mask(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, L) -> bool (B, 1, L, L), True where query i may attend to key j: j <= i if causal, and j not padding."""
        b, length = tokens.shape
        mask = (tokens != self.pad_id)[:, None, None, :]  # (B, 1, 1, L): keys that are real tokens
        if self.causal:
            mask = mask & torch.ones(length, length, dtype=torch.bool, device=tokens.device).tril()
        return mask.expand(b, 1, length, length)

    def hidden_states(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, L) -> per-token hidden states (B, L, dim) after the final LayerNorm."""
        if tokens.ndim != 2 or tokens.dtype != torch.long:
            raise ValueError(f"expected token ids (B, L) of dtype int64, got {tuple(tokens.shape)} {tokens.dtype}; "
                             "use a WordTokenizer's encode()")
        if tokens.shape[1] != self.context_length:
            raise ValueError(f"expected {self.context_length} tokens per caption, got {tokens.shape[1]}")
        if not ((tokens == self.eot_id).sum(1) == 1).all():
            raise ValueError("every caption needs exactly one <eot> token; use a WordTokenizer's encode()")
        x = self.token_embedding(tokens) + self.position  # (B, L, dim)
        mask = self.attention_mask(tokens)
        for block in self.blocks:
            x, _ = block(x, mask)
        return self.norm(x)

    def features(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, L) -> the pooled hidden state (B, dim), before the projection."""
        x = self.hidden_states(tokens)  # (B, L, dim)
        if self.pooling == "eot":
            where = (tokens == self.eot_id).long().argmax(dim=1)  # (B,)
            return x[torch.arange(len(x), device=x.device), where]
        real = (tokens != self.pad_id).unsqueeze(-1).to(x.dtype)  # (B, L, 1)
        return (x * real).sum(1) / real.sum(1)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.projection(self.features(tokens))  # (B, embed_dim)


class TinyCLIP(nn.Module):
    """Two towers and a learned temperature. Chapter 07, B.3.

    ``encode_image``: (N, 1, 28, 28) -> (N, embed_dim), chapter 03's ``SmallCNN`` whose head is the projection.
    ``encode_text``: token ids (M, L) or a list of M strings (tokenized with the model's own vocabulary) -> (M, embed_dim).
    ``forward(images, tokens)`` -> logits (N, M) = exp(logit_scale) x cosine similarities, exp clamped at ``max_logit_scale``.
    """

    def __init__(self, vocabulary: Sequence[str], context_length: int = 8, embed_dim: int = 64,
                 image: dict | None = None, text: dict | None = None, init_temperature: float = 0.07,
                 max_logit_scale: float = 100.0):
        super().__init__()
        image = dict(channels=(32, 64, 128)) if image is None else dict(image)
        text = dict(dim=64, depth=2, heads=4, mlp_ratio=2.0, causal=True, pooling="eot") if text is None else dict(text)
        if not init_temperature > 0:
            raise ValueError(f"init_temperature must be > 0, got {init_temperature}")
        self.tokenizer = WordTokenizer(vocabulary, context_length)
        self.config = dict(vocabulary=list(vocabulary), context_length=context_length, embed_dim=embed_dim,
                           image=dict(image, channels=list(image.get("channels", (32, 64, 128)))), text=text,
                           init_temperature=init_temperature, max_logit_scale=max_logit_scale)
        self.image_encoder = SmallCNN(num_classes=embed_dim, in_channels=1, **image)
        self.text_encoder = TextTransformer(len(self.tokenizer), context_length, embed_dim=embed_dim,
                                            pad_id=self.tokenizer.pad_id, eot_id=self.tokenizer.eot_id, **text)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / init_temperature)))
        self.max_logit_scale = max_logit_scale

    def scale(self) -> torch.Tensor:
        """1 / tau = exp(logit_scale), clamped at ``max_logit_scale`` (no gradient beyond the clamp)."""
        return self.logit_scale.exp().clamp(max=self.max_logit_scale)

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        if images.ndim != 4 or images.shape[1] != 1:
            raise ValueError(f"expected images (N, 1, H, W), got {tuple(images.shape)}")
        return self.image_encoder(images)  # (N, embed_dim)

    def image_features(self, images: torch.Tensor) -> torch.Tensor:
        """The pooled conv3 features (N, c3) before the projection: what a linear probe reads."""
        return self.image_encoder.features(images, "conv3").mean(dim=(2, 3))

    def encode_text(self, tokens: torch.Tensor | str | Sequence[str]) -> torch.Tensor:
        if not isinstance(tokens, torch.Tensor):
            tokens = self.tokenizer.encode(tokens)
        return self.text_encoder(tokens.to(self.logit_scale.device))  # (M, embed_dim)

    def forward(self, images: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Logits (N, M): row i is image i against every caption."""
        return self.scale() * cosine_similarity_matrix(self.encode_image(images), self.encode_text(tokens))


# ---------------------------------------------------------------------------------- training


def caption_table(tokenizer: WordTokenizer, templates: Sequence[str] = TRAIN_TEMPLATES) -> torch.Tensor:
    """Token ids of every (template, digit) caption: (T, 10, context_length). Chapter 07, B.4."""
    return torch.stack([tokenizer.encode([fill_template(t, k) for k in range(10)]) for t in templates])


def sample_captions(labels: torch.Tensor, table: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """One caption per label, its template drawn uniformly: (B,) labels, (T, 10, L) table -> (B, L) token ids.

    Taught in chapter 07, B.4.
    """
    template = torch.randint(len(table), (len(labels),), generator=generator)
    return table[template, labels.cpu()].to(labels.device)


def clip_training_loss(model: TinyCLIP, batch, table: torch.Tensor, generator: torch.Generator | None = None,
                       max_shift: int = 0) -> torch.Tensor:
    """For ``course_lib.core.train.fit``: ``batch = (images, labels)``; each image gets a caption from a random
    training template (and a random shift of up to ``max_shift`` pixels); returns the symmetric loss.

    Taught in chapter 07, B.4.
    """
    images, labels = batch
    if max_shift:
        images = random_crop_flip(images, max_shift, flip=False, generator=generator)
    tokens = sample_captions(labels, table, generator)
    return clip_loss(model(images, tokens))


# ---------------------------------------------------------------------------------- zero-shot


def ensemble_embeddings(text_embeddings: torch.Tensor) -> torch.Tensor:
    """Prompt ensemble: (T, K, E) embeddings of K classes under T templates -> (K, E), the mean of the
    normalised embeddings over the templates, normalised again. Chapter 07, C.1."""
    if text_embeddings.ndim != 3:
        raise ValueError(f"expected (templates, classes, E), got {tuple(text_embeddings.shape)}")
    return F.normalize(F.normalize(text_embeddings, dim=-1).mean(dim=0), dim=-1)


@torch.no_grad()
def class_embeddings(model: TinyCLIP, templates: Sequence[str] | str = TRAIN_TEMPLATES) -> torch.Tensor:
    """One unit vector per digit (10, E): the prompt ensemble over ``templates`` (one template: its embedding).

    Taught in chapter 07, C.1.
    """
    if isinstance(templates, str):
        templates = [templates]
    per_template = torch.stack([model.encode_text([fill_template(t, k) for k in range(10)]) for t in templates])
    return ensemble_embeddings(per_template)  # (10, E)


@torch.no_grad()
def image_embeddings(model: TinyCLIP, images: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """Unit image embeddings (N, E), in batches, model in eval mode, returned on the CPU. Chapter 07, C.1."""
    device = model.logit_scale.device
    was_training = model.training
    model.eval()
    out = [F.normalize(model.encode_image(images[i:i + batch_size].to(device)), dim=-1).cpu()
           for i in range(0, len(images), batch_size)]
    model.train(was_training)
    return torch.cat(out)


def zero_shot_predict(image_embeddings: torch.Tensor, class_embeddings: torch.Tensor) -> torch.Tensor:
    """The class whose text embedding has the highest cosine similarity with each image: (N, E), (K, E) -> (N,).

    Taught in chapter 07, C.1.
    """
    return cosine_similarity_matrix(image_embeddings, class_embeddings.to(image_embeddings.device)).argmax(dim=1)


@torch.no_grad()
def zero_shot_accuracy(model: TinyCLIP, images: torch.Tensor, labels: torch.Tensor,
                       templates: Sequence[str] | str = TRAIN_TEMPLATES,
                       embeddings: torch.Tensor | None = None) -> float:
    """Fraction of ``images`` whose zero-shot prediction (prompt ensemble over ``templates``) equals ``labels``.
    Pass precomputed unit ``embeddings`` (N, E) of the images to save the image tower's time. Chapter 07, C.1."""
    if embeddings is None:
        embeddings = image_embeddings(model, images)
    was_training = model.training
    model.eval()
    classes = class_embeddings(model, templates).cpu()
    model.train(was_training)
    return (zero_shot_predict(embeddings, classes) == labels.cpu()).float().mean().item()


@torch.no_grad()
def image_features(model: TinyCLIP, images: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """Frozen pre-projection image features (N, c3) on the CPU, in eval mode. Chapter 07, C.1."""
    device = model.logit_scale.device
    was_training = model.training
    model.eval()
    out = [model.image_features(images[i:i + batch_size].to(device)).cpu() for i in range(0, len(images), batch_size)]
    model.train(was_training)
    return torch.cat(out)


def linear_probe(train_features: torch.Tensor, train_labels: torch.Tensor, test_features: torch.Tensor,
                 test_labels: torch.Tensor, steps: int = 300, lr: float = 0.05, weight_decay: float = 1e-4,
                 seed: int = 0) -> float:
    """Logistic regression on frozen features (standardised with the training mean and sd), full-batch Adam;
    returns the test accuracy. What the features say about the class when a classifier may be trained.

    Taught in chapter 07, C.1.
    """
    mean, sd = train_features.mean(0), train_features.std(0).clamp_min(1e-6)
    x_train, x_test = (train_features - mean) / sd, (test_features - mean) / sd
    generator = torch.Generator().manual_seed(seed)
    weight = (0.01 * torch.randn(x_train.shape[1], 10, generator=generator)).requires_grad_()
    bias = torch.zeros(10, requires_grad=True)
    optimizer = torch.optim.Adam([weight, bias], lr=lr, weight_decay=weight_decay)
    for _ in range(steps):
        loss = F.cross_entropy(x_train @ weight + bias, train_labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        return ((x_test @ weight + bias).argmax(1) == test_labels).float().mean().item()


# ---------------------------------------------------------------------------------- the recipe


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """AdamW groups: weight decay on matrices and conv kernels only; none on biases, norms and ``logit_scale``
    (decaying log(1 / tau) would pull the temperature towards 1). Chapter 07, B.4."""
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    return [dict(params=decay, weight_decay=weight_decay), dict(params=no_decay, weight_decay=0.0)]


def evaluate_clip(model: TinyCLIP, images: torch.Tensor, labels: torch.Tensor) -> dict:
    """Zero-shot accuracy with the training templates' ensemble and with each held-out template, and 1 / tau.

    Taught in chapter 07, B.5.
    """
    embeddings = image_embeddings(model, images)
    report = {"zero_shot_acc": zero_shot_accuracy(model, images, labels, TRAIN_TEMPLATES, embeddings)}
    for i, template in enumerate(HELD_OUT_TEMPLATES):
        report[f"held_out_{i}_acc"] = zero_shot_accuracy(model, images, labels, template, embeddings)
    report["logit_scale_exp"] = model.scale().item()
    return report


def train_clip(cfg, seed: int = 0, show_progress: bool = True, desc: str = "tiny CLIP on MNIST", **fit_options):
    """Train a ``TinyCLIP`` on MNIST with templated captions under settings ``cfg`` (see
    ``course_lib.zoo.settings("clip_mnist")``); return ``(model, history)``. Chapter 07, B.4."""

    generator = seed_everything(seed)
    dev = device()
    x_train, y_train = load_mnist("train")
    x_test, y_test = load_mnist("test")
    x_train, y_train = x_train[:cfg.n_train], y_train[:cfg.n_train]
    vocabulary = mnist_tokenizer(cfg.model["context_length"]).vocabulary  # the words of the training captions
    model = TinyCLIP(vocabulary, **cfg.model).to(dev)
    table = caption_table(model.tokenizer)  # (T, 10, L)
    optimizer = torch.optim.AdamW(parameter_groups(model, cfg.weight_decay), lr=cfg.lr)
    batches = minibatches(x_train, y_train, batch_size=cfg.batch_size, generator=generator)
    history = fit(model, lambda m, batch: clip_training_loss(m, batch, table, generator, cfg.max_shift), batches,
                  steps=cfg.steps, optimizer=optimizer, device=dev,
                  scheduler=warmup_cosine(optimizer, cfg.warmup_steps, cfg.steps),
                  eval_fn=lambda m: evaluate_clip(m, x_test[:cfg.n_eval], y_test[:cfg.n_eval]),
                  eval_every=max(cfg.steps // 5, 1), desc=desc, show_progress=show_progress, **fit_options)
    return model, history


def schematic():
    """CLIP's two towers as a picture: image encoder f and text encoder g -> unit embeddings -> the N x N similarity
    matrix divided by the temperature -> cross entropy over the rows and over the columns, averaged. Drawn in
    chapter 07, A.1.

    Returns the matplotlib Figure.
    """
    from matplotlib.patches import Rectangle

    from course_lib.core.diagram import arrow, box, canvas, legend, note

    fig, ax = canvas(12.4, 5.4, title="CLIP: two towers, one N x N similarity matrix, two cross entropies")
    images = box(ax, 0.9, 3.9, "N images\n$x_i$", w=1.3, h=0.8, role="data")
    texts = box(ax, 0.9, 1.6, "N captions $t_j$\n'a handwritten 7'", w=1.5, h=0.8, role="data")
    f = box(ax, 2.9, 3.9, "image encoder $f$\n(SmallCNN)", w=1.9, h=0.8, role="network")
    g = box(ax, 2.9, 1.6, "text encoder $g$\n(causal transformer,\n<eot> token)", w=1.9, h=0.95, role="network")
    arrow(ax, images.right, f.left)
    arrow(ax, texts.right, g.left)
    fi = box(ax, 5.15, 3.9, "normalise\n$f(x_i) / \\Vert f(x_i) \\Vert$", w=1.9, h=0.8, role="latent")
    gj = box(ax, 5.15, 1.6, "normalise\n$g(t_j) / \\Vert g(t_j) \\Vert$", w=1.9, h=0.8, role="latent")
    arrow(ax, f.right, fi.left)
    arrow(ax, g.right, gj.left)
    # the N x N matrix: rows are images, columns are captions, the true pairs on the diagonal
    n, cell, x0, y0 = 5, 0.36, 6.95, 1.85
    for r in range(n):
        for c in range(n):
            ax.add_patch(Rectangle((x0 + c * cell, y0 + (n - 1 - r) * cell), cell, cell,
                                   facecolor="#b45f06" if r == c else "#fff2cc", edgecolor="#b45f06", linewidth=0.8))
    arrow(ax, fi.right, (x0, y0 + n * cell / 2))
    arrow(ax, gj.right, (x0 + n * cell * 0.3, y0))
    note(ax, x0 + n * cell / 2, 4.65, "$\\ell_{ij} = s_{ij} / \\tau$ (N x N); the diagonal: the true pairs")
    note(ax, x0 + n * cell / 2, 4.2, "row i: image i; column j: caption j")
    tau = box(ax, 5.15, 0.45, "learned $\\tau$: logit_scale = log(1/$\\tau$)", w=3.0, h=0.5, role="condition")
    arrow(ax, tau.right, (x0 + n * cell * 0.75, y0))
    rows = box(ax, 10.6, 3.6, "CE over each row\nimage -> text", w=2.0, h=0.7, role="loss")
    cols = box(ax, 10.6, 2.3, "CE over each column\ntext -> image", w=2.0, h=0.7, role="loss")
    arrow(ax, (x0 + n * cell, y0 + n * cell - 0.3), rows.left)
    arrow(ax, (x0 + n * cell, y0 + 0.3), cols.left)
    total = box(ax, 10.6, 0.9, "L = (row CE + column CE) / 2", w=2.6, h=0.6, role="loss")
    arrow(ax, cols.bottom, total.top)
    arrow(ax, rows.right, (total.x + total.w / 2 - 0.1, total.y + total.h / 2), bend=-0.4)
    legend(ax, ["data", "network", "latent", "operation", "condition", "loss"], loc="lower left")
    return fig
