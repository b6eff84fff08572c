# ---
# jupyter:
#   course:
#     time_on_cpu:
#       ci:
#         machine: 2 CPU cores, no GPU, otherwise idle
#         measured: '2026-12-05'
#         seconds: 15
#       cpu:
#         machine: 2 CPU cores, no GPU, otherwise idle
#         measured: '2026-12-05'
#         seconds: 72
#       gpu:
#         note: no GPU where the course was timed; the shipped recipe took 14.5 min on the shared 2-core CPU
#         seconds: null
#   jupytext:
#     formats: ipynb,py:percent
#     notebook_metadata_filter: course
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 03 · Convolutional networks: arithmetic, receptive fields, and looking inside
#
# A convolutional network is a stack of small, shared filters. This chapter does the arithmetic of such a stack (how
# big each map is, which input pixels each unit can see, and which it actually listens to), builds and trains a small
# CNN on Fashion-MNIST, looks inside it (filters, activation maps, saliency, Grad-CAM), and ends with the data
# augmentations that train such networks, MixUp and CutMix with their soft labels.
#
# **Goals.** After this chapter you can
# - compute the output size of a convolution or pooling layer with padding, stride and dilation, and check it;
# - derive the receptive-field recursion $r_l = r_{l-1} + (k_l - 1)\, j_{l-1}$, $j_l = j_{l-1} s_l$ and measure a receptive field
#   with autograd; tell the theoretical receptive field from the *effective* one, and say why the latter grows like
#   $\sqrt{\text{depth}}$;
# - build a CNN step by step, train it, and read its filters and activation maps;
# - derive saliency and Grad-CAM, and check that Grad-CAM's channel weights are spatially averaged gradients (and that
#   on a global-average-pooling network Grad-CAM is CAM);
# - build an augmentation pipeline, and mix images with MixUp and CutMix so that the label weights equal what was mixed.
#
# **Prerequisites.** Chapter 01 (autograd, cross entropy with probability targets, `fit`). Convolution as a sliding
# weighted sum; the chain rule; a discrete probability distribution's mean and variance.
#
# **Time.** Two study-group sessions of about 90 minutes (session 1: convolution arithmetic and receptive fields, A-B;
# session 2: the model, looking inside, augmentation and discussion, C-E and G), and about 45 minutes of exercises (F)
# at home. The session plan, with what to pre-run, is in [facilitator/03_cnns.md](facilitator/03_cnns.md).
#
# **Core path.** See it work first, A.1-A.3, B.1-B.3, C.1-C.4, D.1, D.2, D.4, D.5 and E.2: about 110 min. The optional
# deep dives are B.4 (depth and the residual connection), D.3 (the trained network's effective receptive field),
# E.1 (the augmentation gallery and RandAugment) and E.3 (CutMix; exercise 4 and discussion question 5 build on it).
#
# **What runs, and how long** (the whole chapter, top to bottom, on a fresh kernel; `ci` with 1 torch thread as the
# test suite runs it, `cpu` with torch's default threads; `make time PROFILE=ci` or `PROFILE=cpu` measures it and
# writes the time here, in the notebook's metadata and in the README):
#
# | profile | what trains | measured |
# |---|---|---|
# | `ci` | the SmallCNN for 60 steps on 10,000 images (test accuracy about 0.7) | 15 s, measured 2026-12-05 on 2 CPU cores, no GPU, otherwise idle |
# | `cpu` | the SmallCNN for 1,000 steps on all 60,000 images (2.1 epochs, about 4 min; test accuracy 0.889) | 1 min 12 s, measured 2026-12-05 on 2 CPU cores, no GPU, otherwise idle |
# | `gpu` | the shipped recipe: 3,000 steps (6.4 epochs; test accuracy 0.912) | not measured: no GPU where the course was timed; the shipped recipe took 14.5 min on the shared 2-core CPU |
#
# Whatever the profile, the pictures of sections D and E use the shipped checkpoint `cnn_fashion`. Set the profile
# before starting JupyterLab: `COURSE_PROFILE=ci`, `cpu` or `gpu`.

# %%
import inspect
import math

import ipywidgets
import matplotlib.pyplot as plt
import numpy as np
import scipy.ndimage
import scipy.special
import torch
import torch.nn.functional as F
from torch import nn

import course_lib
import course_lib.core.check
import course_lib.core.checkpointing
import course_lib.core.plotting
import course_lib.core.widgets
import course_lib.topics.cnn
import course_lib.zoo
from course_lib import device, per_profile, profile, seed_everything
from course_lib.core.train import accuracy, fit, minibatches, warmup_cosine
from course_lib.data import FASHION_CLASSES, load_fashion_mnist
from course_lib.topics.cnn import (SmallCNN, classification_loss, conv_output_size, cutmix, cutmix_box,
                                   effective_receptive_field, erf_spread, grad_cam, grad_cam_map, layer_specs,
                                   measured_receptive_field, mixup, random_crop_flip, receptive_field,
                                   receptive_field_box, saliency)
from course_lib.topics.losses import cross_entropy

DEVICE = device()
generator = seed_everything(0)
print(f"profile = {profile()}, device = {DEVICE}, torch threads = {torch.get_num_threads()}")

# %% [markdown]
# ---
# ## See it work first
#
# The network of this chapter, `SmallCNN`: three convolution stages with pooling between them, a global average, and a
# linear layer to 10 class scores. Above each box its output shape for one $28 \times 28$ image, and the receptive field $r$
# (how many input pixels one unit can see, per axis) with the jump $j$ (how far apart neighbouring units sit, in input
# pixels): the numbers B.1 derives.

# %%
course_lib.topics.cnn.schematic()
plt.show()

# %% [markdown]
# Below, the trained copy that ships with the course (`cnn_fashion`) on 1,000 Fashion-MNIST test images it never saw:
# its accuracy, and for eight of them the prediction with a **Grad-CAM** map (D.5), the region of the last feature map
# whose features raised the score of the predicted class.
# By the end of this chapter you will have derived and trained this: the sizes and receptive fields, the network and
# its training, and the explanation maps.

# %%
first_cnn = course_lib.zoo.load_shipped("cnn_fashion", DEVICE)
first_x, first_y = load_fashion_mnist("test")  # (10000, 1, 28, 28), (10000,)
with torch.no_grad():
    first_pred = first_cnn(first_x[:1_000].to(DEVICE)).argmax(1).cpu()  # (1000,)
first_accuracy = (first_pred == first_y[:1_000]).float().mean().item()
print(f"shipped cnn_fashion: accuracy {first_accuracy:.3f} on the first 1,000 test images "
      f"(manifest, all 10,000: {course_lib.core.checkpointing.read_manifest()['cnn_fashion']['metrics']['test_accuracy']})")
assert first_accuracy > 0.88
first_maps, _ = grad_cam(first_cnn, first_x[:8].to(DEVICE), first_pred[:8].to(DEVICE), "conv3")  # (8, 7, 7)
fig, axes = plt.subplots(1, 8, figsize=(12, 1.9), layout="constrained")
for k, ax in enumerate(axes):
    course_lib.core.plotting.overlay_heatmap(first_x[k], first_maps[k].cpu(), ax=ax, alpha=0.45)
    right = first_pred[k] == first_y[k]
    ax.set_title(f"{FASHION_CLASSES[first_pred[k]]}" + ("" if right else f"\n(true: {FASHION_CLASSES[first_y[k]]})"),
                 fontsize=8, color="k" if right else "C3")
fig.suptitle("predicted class, and Grad-CAM for it at conv3 (7 x 7, blown up to the image)", fontsize=9)
plt.show()

# %% [markdown]
# ---
# ## A. The convolution layer
#
# ### A.1 What it computes
#
# A 2-D convolution layer maps an input $x \in \mathbb{R}^{C_{\text{in}} \times H \times W}$ to $y \in \mathbb{R}^{C_{\text{out}} \times H' \times W'}$ with weights
# $w \in \mathbb{R}^{C_{\text{out}} \times C_{\text{in}} \times k \times k}$ and a bias $b \in \mathbb{R}^{C_{\text{out}}}$. With stride $s$, padding $p$ and dilation $d$, write $\bar x$ for
# the input with $p$ zeros added on every side ($\bar x_{c, m, n} = x_{c, m - p, n - p}$ inside, $0$ outside). Then
#
# $$
# y_{o, i, j} = b_o + \sum_{c=1}^{C_{\text{in}}} \sum_{u=0}^{k-1} \sum_{v=0}^{k-1} w_{o, c, u, v}\; \bar x_{c,\; s i + d u,\; s j + d v} .
# $$
#
# Output unit $(i, j)$ reads a $k \times k$ grid of input pixels whose corner is at $(s i, s j)$ of the padded input and whose
# taps are $d$ pixels apart. Two properties make it a convolution layer rather than a general linear map: it is
# **local** (each output reads $k \times k$ pixels) and **shared** (the same $w$ at every position $(i, j)$).
#
# We write the formula as it stands, one loop over the $k^2$ kernel taps (each a strided slice of the padded input, so
# the loop is short), and compare it with `F.conv2d` in float64:

# %%
def conv2d_by_taps(x, w, b, stride=1, padding=0, dilation=1):
    """The formula above: x (N, C_in, H, W), w (C_out, C_in, k, k), b (C_out,) -> (N, C_out, H', W')."""
    n, _, h, width = x.shape
    k = w.shape[-1]
    h_out = (h + 2 * padding - dilation * (k - 1) - 1) // stride + 1  # derived in A.3
    w_out = (width + 2 * padding - dilation * (k - 1) - 1) // stride + 1
    x_pad = F.pad(x, (padding, padding, padding, padding))  # (N, C_in, H + 2p, W + 2p)
    y = torch.zeros(n, w.shape[0], h_out, w_out, dtype=x.dtype)
    for u in range(k):
        for v in range(k):
            rows = slice(dilation * u, dilation * u + stride * (h_out - 1) + 1, stride)
            cols = slice(dilation * v, dilation * v + stride * (w_out - 1) + 1, stride)
            taps = x_pad[:, :, rows, cols]  # (N, C_in, H', W'): pixel (s i + d u, s j + d v) for every (i, j)
            y += torch.einsum("nchw,oc->nohw", taps, w[:, :, u, v])
    return y + b[None, :, None, None]


generator = seed_everything(1)
f64 = dict(dtype=torch.float64)
for stride, padding, dilation, k in [(1, 0, 1, 3), (2, 1, 1, 3), (1, 2, 2, 3), (3, 2, 1, 5), (2, 0, 3, 2)]:
    x = torch.randn(2, 3, 17, 17, generator=generator, **f64)
    w = torch.randn(4, 3, k, k, generator=generator, **f64)
    b = torch.randn(4, generator=generator, **f64)
    ours = conv2d_by_taps(x, w, b, stride, padding, dilation)
    theirs = F.conv2d(x, w, b, stride=stride, padding=padding, dilation=dilation)
    assert ours.shape == theirs.shape and torch.allclose(ours, theirs, atol=1e-12)
    print(f"k={k} s={stride} p={padding} d={dilation}: output {tuple(ours.shape)}, max |ours - F.conv2d| = "
          f"{(ours - theirs).abs().max():.1e}")

# %% [markdown]
# > **Common confusion:** a deep-learning "convolution" is a **cross-correlation**: the kernel is not flipped. In signal
# > processing $(x * w)_m = \sum_u w_u\, x_{m - u}$ runs the kernel backwards. For learning it makes no difference (the network
# > learns the flipped kernel instead), but it does when you compare with `scipy.ndimage.convolve` (or
# > `scipy.signal.convolve2d`) or load filters from a signal-processing library:

# %%
image = torch.randn(12, 12, generator=generator, **f64)
kernel = torch.tensor([[1.0, 2.0, 0.0], [0.0, -1.0, 0.0], [0.0, 0.0, 3.0]], **f64)  # not symmetric
torch_out = F.conv2d(image[None, None], kernel[None, None])[0, 0].numpy()  # (10, 10), "valid"
valid = (slice(1, -1), slice(1, -1))  # scipy.ndimage keeps the size; its centre 10 x 10 is the "valid" part
correlate = scipy.ndimage.correlate(image.numpy(), kernel.numpy(), mode="constant")[valid]
convolve = scipy.ndimage.convolve(image.numpy(), kernel.numpy(), mode="constant")[valid]
convolve_flipped = scipy.ndimage.convolve(image.numpy(), kernel.flip(0, 1).numpy(), mode="constant")[valid]
print(f"F.conv2d vs ndimage.correlate: {np.abs(torch_out - correlate).max():.1e};  vs ndimage.convolve: "
      f"{np.abs(torch_out - convolve).max():.2f};  vs ndimage.convolve with the flipped kernel: "
      f"{np.abs(torch_out - convolve_flipped).max():.1e}")
assert np.allclose(torch_out, correlate) and np.allclose(torch_out, convolve_flipped) and not np.allclose(torch_out, convolve)

# %% [markdown]
# ### A.2 Local and shared: what it saves, and what it buys
#
# Map a $28 \times 28$ map with 32 channels to one with 64 channels. A dense (fully connected) layer has a weight for
# every input-output pair; a **locally connected** layer keeps the $3 \times 3$ locality but has separate weights at each
# of the $28 \cdot 28$ output positions; a convolution shares one $3 \times 3$ filter bank over all positions:
#
# $$
# \underbrace{(28 \cdot 28 \cdot 32)(28 \cdot 28 \cdot 64)}_{\text{dense}}
# \quad\text{vs}\quad
# \underbrace{(28 \cdot 28)\cdot 64 \cdot (32 \cdot 3 \cdot 3)}_{\text{locally connected}}
# \quad\text{vs}\quad
# \underbrace{64 \cdot 32 \cdot 3 \cdot 3}_{\text{convolution}} \qquad \text{(weights, without biases).}
# $$

# %%
dense_weights = (28 * 28 * 32) * (28 * 28 * 64)
local_weights = (28 * 28) * 64 * (32 * 3 * 3)
conv_weights = nn.Conv2d(32, 64, 3, padding=1, bias=False).weight.numel()
assert conv_weights == 64 * 32 * 3 * 3
print(f"dense {dense_weights:,}   locally connected {local_weights:,}   convolution {conv_weights:,}")

# %% [markdown]
# Sharing buys **translation equivariance**: shifting the input shifts the output, $\operatorname{conv}(T x) = T \operatorname{conv}(x)$ for a
# shift $T$, because every position uses the same weights. It holds exactly for a stride-1 convolution with circular
# padding (so that nothing falls off the border). A stride-2 layer keeps only every other position, so it is equivariant
# to shifts by 2 pixels but not by 1:

# %%
conv_circular = nn.Conv2d(1, 4, 3, padding=1, padding_mode="circular").double()
conv_strided = nn.Conv2d(1, 4, 3, padding=1, stride=2, padding_mode="circular").double()
x = torch.randn(1, 1, 16, 16, generator=generator, **f64)


def shift(t, pixels):
    return torch.roll(t, shifts=(pixels, pixels), dims=(2, 3))


with torch.no_grad():
    error_stride1 = (conv_circular(shift(x, 3)) - shift(conv_circular(x), 3)).abs().max().item()
    error_stride2_by2 = (conv_strided(shift(x, 2)) - shift(conv_strided(x), 1)).abs().max().item()
    error_stride2_by1 = min((conv_strided(shift(x, 1)) - shift(conv_strided(x), m)).abs().max().item() for m in (0, 1))
print(f"stride 1, shift by 3: {error_stride1:.1e};  stride 2, shift by 2: {error_stride2_by2:.1e};  "
      f"stride 2, shift by 1 (best output shift): {error_stride2_by1:.2f}")
assert error_stride1 < 1e-12 and error_stride2_by2 < 1e-12 and error_stride2_by1 > 0.1

# %% [markdown]
# > **Common confusion:** "a CNN is a locally connected network". In the literature a *locally connected* layer is the
# > middle column above: local, but **not** shared. A convolution is local **and** shared, and the sharing is what gives
# > both the 784-fold saving over the locally connected layer and the equivariance just checked.
#
# ### A.3 The output size
#
# Along one axis the padded input has $n + 2p$ pixels, indexed $0, \dots, n + 2p - 1$. A dilated kernel spans
# $d(k - 1) + 1$ of them: from its first tap at $m$ to its last at $m + d(k - 1)$. Output unit $i$ starts at $m = s\, i$, and it exists
# if its last tap is still inside:
#
# $$
# s\, i + d(k - 1) \le n + 2p - 1
# \iff i \le \frac{n + 2p - d(k - 1) - 1}{s}
# \qquad\Longrightarrow\qquad
# n' = \Big\lfloor \frac{n + 2p - d(k - 1) - 1}{s} \Big\rfloor + 1,
# $$
#
# the number of integers $i = 0, 1, \dots$ that satisfy the inequality. Max and average pooling follow the same rule (PyTorch's
# default `ceil_mode=False`; with `ceil_mode=True` the floor becomes a ceiling, as long as the last window starts inside).
# Special cases: $k = 3, p = 1, s = 1$ keeps the size ("same" padding, $p = d(k - 1)/2$ for odd $k$); $k = 2, s = 2$ halves an even $n$.
#
# A **transposed** convolution is the adjoint (the backward pass) of a convolution with the same $k, s, p, d$: it maps a map of
# size $n'$ back to size $n$. The floor above makes that inverse ambiguous (several $n$ give the same $n'$ when $s > 1$), so it
# returns the smallest, $(n' - 1)s - 2p + d(k - 1) + 1$, plus an `output_padding` of $0, \dots, s - 1$ that picks another.
#
# `course_lib.topics.cnn.conv_output_size` implements the formula. Checked against the shape PyTorch actually produces, for
# every combination in a grid (about 4,000 layers):

# %%
checked = 0
for n in (1, 2, 3, 4, 5, 7, 8, 11, 16, 28):
    for k in (1, 2, 3, 5):
        for s in (1, 2, 3):
            for p in range(0, 3):
                for d in (1, 2, 3):
                    if n + 2 * p < d * (k - 1) + 1:  # the kernel does not fit: conv_output_size raises
                        continue
                    shape = F.conv2d(torch.zeros(1, 1, n, n), torch.zeros(1, 1, k, k), stride=s, padding=p, dilation=d).shape
                    assert shape[-1] == conv_output_size(n, k, s, p, d), (n, k, s, p, d)
                    if 2 * p <= k:  # PyTorch's pooling allows padding up to half the kernel
                        pooled = F.max_pool2d(torch.zeros(1, 1, n, n), k, stride=s, padding=p, dilation=d).shape
                        assert pooled[-1] == conv_output_size(n, k, s, p, d), ("pool", n, k, s, p, d)
                    n_out = conv_output_size(n, k, s, p, d)
                    smallest = (n_out - 1) * s - 2 * p + d * (k - 1) + 1  # the transposed convolution's size
                    if smallest >= 1:  # (a padding wider than the kernel can make it empty)
                        assert 0 <= n - smallest < s  # n is reached with output_padding = n - smallest
                        for extra in range(s):
                            back = F.conv_transpose2d(torch.zeros(1, 1, n_out, n_out), torch.zeros(1, 1, k, k), stride=s,
                                                      padding=p, dilation=d, output_padding=extra).shape[-1]
                            assert back == smallest + extra
                    checked += 1
print(f"conv_output_size agrees with F.conv2d, F.max_pool2d and F.conv_transpose2d on {checked} layers")
print(f"28 -> conv 5x5 pad 2 -> {conv_output_size(28, 5, 1, 2)} -> maxpool 2 -> {conv_output_size(28, 2, 2)}"
      f" -> conv 3x3 pad 1 -> {conv_output_size(14, 3, 1, 1)} -> maxpool 2 -> {conv_output_size(14, 2, 2)}")

# %% [markdown]
# ---
# ## B. Receptive fields
#
# ### B.1 The recursion
#
# The **receptive field** of a unit is the set of input pixels that can change its value. In a chain of convolution and
# pooling layers it is a square; call its side $r_l$ after layer $l$. Two more numbers describe layer $l$'s grid in input
# coordinates: the **jump** $j_l$ (the distance, in input pixels, between neighbouring units of layer $l$) and the **start**
# $t_l$ (the input coordinate of the centre of unit 0; pixel centres are at $0, 1, 2, \dots$). For the input itself,
# $r_0 = 1$, $j_0 = 1$, $t_0 = 0$.
#
# Now take layer $l$ with kernel $k_l$, stride $s_l$, padding $p_l$ and dilation $d_l$, and write $k'_l = d_l(k_l - 1) + 1$ for the span of
# its kernel. One unit of layer $l$ reads $k_l$ units of layer $l - 1$ per axis, spread over $k'_l$ consecutive positions of
# layer $l-1$'s grid:
#
# 1. **Size.** The first of those units sees $r_{l-1}$ input pixels. Each step of one position along layer $l-1$'s grid moves
#    the field by $j_{l-1}$ input pixels, and there are $k'_l - 1$ steps from the first to the last unit, so together they
#    cover
#
# $$
# r_l = r_{l-1} + (k'_l - 1)\, j_{l-1} .
# $$
#
# 2. **Jump.** Neighbouring units of layer $l$ start $s_l$ positions apart on layer $l-1$'s grid, that is $s_l\, j_{l-1}$ input pixels:
#
# $$
# j_l = j_{l-1}\, s_l, \qquad\text{so}\qquad j_l = \prod_{m \le l} s_m .
# $$
#
# 3. **Start.** Unit 0 of layer $l$ reads positions $-p_l, \dots, -p_l + k'_l - 1$ of layer $l-1$'s grid (negative = padding), whose
#    centre is position $(k'_l - 1)/2 - p_l$, at input coordinate
#
# $$
# t_l = t_{l-1} + \Big(\frac{k'_l - 1}{2} - p_l\Big)\, j_{l-1} .
# $$
#
# Unit $i$ of layer $l$ is centred at $t_l + i\, j_l$ and sees the input pixels from $t_l + i\, j_l - (r_l - 1)/2$ to $t_l + i\, j_l + (r_l - 1)/2$.
# (Strictly, that is the field's extent: a dilated kernel, or a stride larger than the kernel, can leave pixels inside
# it that no path reaches, holes in the square. The extent is what the recursion computes and what we measure.)
#
# A rule of thumb often quoted: a $K \times K$ convolution (stride 1) followed by a $P \times P$ pooling with stride 2 has
# receptive field $P + K - 1$. The recursion agrees: $r_1 = 1 + (K - 1) \cdot 1 = K$, $j_1 = 1$, then $r_2 = K + (P - 1) \cdot 1 = P + K - 1$.
# And VGG's argument for small kernels: three stacked $3 \times 3$ convolutions see $1 + 2 + 2 + 2 = 7$ pixels, as one $7 \times 7$ does,
# with $3 \cdot 9 C^2 = 27 C^2$ weights instead of $49 C^2$ (for $C$ channels in and out) and three nonlinearities instead of one.

# %%
for K in (3, 5):
    for P in (2, 3):
        assert receptive_field([(K, 1), (P, 2)])[-1].r == P + K - 1
assert receptive_field([(3, 1)] * 3)[-1].r == 7 == receptive_field([(7, 1)])[-1].r
C = 64
assert 3 * nn.Conv2d(C, C, 3, bias=False).weight.numel() == 27 * C**2 < nn.Conv2d(C, C, 7, bias=False).weight.numel() == 49 * C**2
print("conv K, pool P stride 2: r = P + K - 1 for K in (3, 5), P in (2, 3);  three 3x3 = one 7x7 = 7 pixels, "
      f"{27 * C**2:,} vs {49 * C**2:,} weights at C = {C}")
print(inspect.getsource(receptive_field))

# %% [markdown]
# ### B.2 Measured by autograd
#
# "Can change its value" is a statement about a gradient: input pixel $x_m$ is in unit $y$'s receptive field when
# $\partial y / \partial x_m \ne 0$ for some input. `course_lib.topics.cnn.measured_receptive_field` backpropagates one output unit to the input
# and records where the gradient is not zero; a ReLU that is off hides a path for one input, so it takes the union over
# a few random inputs. A max-pool passes the gradient to one pixel of each window only, so through a few of them the
# gradient of one input reaches a handful of pixels; to measure a geometry we use **average** pooling, which has the same
# windows and hence the same receptive field. We check the recursion against autograd on 30 random chains of
# convolutions and poolings with random kernels, strides, paddings and dilations: both the size **and** the position of
# the field must agree.

# %%
def random_chain(generator, n_layers):
    """A chain of random (kernel, stride, padding, dilation) layers and a 1-channel network made of them."""
    specs, modules = [], []
    for _ in range(n_layers):
        kind = torch.randint(3, (1,), generator=generator).item()  # 0: conv, 1: pooling, 2: dilated conv
        k = [1, 2, 3, 5][torch.randint(4, (1,), generator=generator).item()] if kind == 0 else (2 if kind == 1 else 3)
        s = 2 if kind == 1 else torch.randint(1, 3, (1,), generator=generator).item()
        d = torch.randint(2, 4, (1,), generator=generator).item() if kind == 2 else 1
        p = torch.randint(0, (d * (k - 1)) // 2 + 1, (1,), generator=generator).item() if kind != 1 else 0
        specs.append((k, s, p, d))
        modules.append(nn.AvgPool2d(k, s) if kind == 1 else nn.Conv2d(1, 1, k, s, p, d))
    return specs, nn.Sequential(*modules)


generator = seed_everything(2)
for trial in range(30):
    specs, chain = random_chain(generator, n_layers=torch.randint(2, 7, (1,), generator=generator).item())
    rf = receptive_field(specs)[-1]
    size = int(3 * rf.r + 4 * rf.j)  # room for the field of the unit in the middle
    with torch.no_grad():
        out_size = chain(torch.zeros(1, 1, size, size)).shape[-1]
    unit = out_size // 2
    lo, hi = receptive_field_box(specs, unit)
    measured = measured_receptive_field(chain, (1, size, size), (unit, unit), n_inputs=6, generator=generator)
    assert 0 <= lo and hi < size, "the field must lie inside the image to be measured"
    assert measured.rows == measured.cols == (lo, hi), (specs, measured.rows, (lo, hi))
print(f"30 random chains: recursion == autograd (size and position); last one {specs}: r = {rf.r}, j = {rf.j}, "
      f"unit {unit} sees pixels {lo:.0f}..{hi:.0f}")

# %% [markdown]
# The same for some classic networks, with 1-channel copies of their layers (the weights do not matter for the
# receptive field, only the geometry). LeNet-5's C5 layer is $1 \times 1$ and sees the whole $32 \times 32$ input; a ResNet's
# receptive field is that of its longest path (the shortcuts are shorter paths; the union of all paths is the longest one).

# %%
vgg16 = [(3, 1, 1)] * 2 + [(2, 2)] + [(3, 1, 1)] * 2 + [(2, 2)] + ([(3, 1, 1)] * 3 + [(2, 2)]) * 3
classic = {
    "LeNet-5, C5": [(5, 1), (2, 2), (5, 1), (2, 2), (5, 1)],
    "AlexNet, conv5": [(11, 4, 2), (3, 2), (5, 1, 2), (3, 2), (3, 1, 1), (3, 1, 1), (3, 1, 1)],
    "VGG-16, conv5_3": vgg16[:-1],
    "VGG-16, pool5": vgg16,
    "ResNet-18, last block (longest path)": ([(7, 2, 3), (3, 2, 1)] + [(3, 1, 1)] * 4
                                             + ([(3, 2, 1)] + [(3, 1, 1)] * 3) * 3),
    "SmallCNN (this chapter), conv3": layer_specs(SmallCNN()),
}
measure = {"LeNet-5, C5": 32, "VGG-16, pool5": 256, "ResNet-18, last block (longest path)": 512}
print(f"{'network':40s} {'layers':>6s} {'r':>5s} {'j':>4s}   measured by autograd")
for name, specs in classic.items():
    rf = receptive_field(specs)[-1]
    note = ""
    if name in measure:
        size = measure[name]
        chain = nn.Sequential(*[nn.Conv2d(1, 1, *spec) for spec in specs])
        with torch.no_grad():
            unit = chain(torch.zeros(1, 1, size, size)).shape[-1] // 2
        measured = measured_receptive_field(chain, (1, size, size), (unit, unit), n_inputs=1)
        clipped = receptive_field_box(specs, unit)[0] < 0  # LeNet: the field fills the whole 32x32 input exactly
        assert measured.size[0] == rf.r or (clipped and measured.size[0] == size)
        note = f"{measured.size[0]} (input {size}x{size}, unit {unit})"
    print(f"{name:40s} {len(specs):6d} {rf.r:5d} {rf.j:4d}   {note}")

# %% [markdown]
# > **Common confusion:** "the receptive field of a unit is the whole region it looks at, equally". It is the region
# > it *can* look at. B.3 shows that the influence inside it is far from uniform. And two layers make the receptive field
# > the whole image, whatever the recursion says: a global pooling (every output sees every pixel), and **BatchNorm in
# > training mode**, which normalises with the mean and variance over the batch *and all positions*, so every pixel moves
# > every unit. Measured on our model (untrained, BatchNorm after each convolution):

# %%
model_at_init = SmallCNN().eval()  # untrained; D.3 and D.4 use it again
bn_in_train_mode = SmallCNN().train()
in_train_mode = measured_receptive_field(lambda x: bn_in_train_mode.features(x, "conv3"), (1, 64, 64), (8, 8), n_inputs=2)
in_eval_mode = measured_receptive_field(model_at_init.features, (1, 64, 64), (8, 8), n_inputs=2)
print(f"conv3 unit (8, 8) on a 64x64 input: BatchNorm in train mode sees {in_train_mode.size}, "
      f"in eval mode {in_eval_mode.size} (recursion: r = {receptive_field(layer_specs(model_at_init))[-1].r})")
assert in_train_mode.size == (64, 64) and in_eval_mode.size == (20, 20)

# %% [markdown]
# **Dilation.** A dilated $3 \times 3$ kernel spans $k' = 2d + 1$ pixels with 9 weights. Doubling $d$ at every layer ($d = 1, 2, 4, 8, \dots$,
# as in WaveNet and in DeepLab's atrous convolutions) makes the receptive field grow exponentially with depth:
# $r_L = 1 + 2 \sum_{l=0}^{L-1} 2^l = 2^{L+1} - 1$, against $2L + 1$ for undilated layers.

# %%
for depth in range(1, 7):
    dilated = [(3, 1, 2**l, 2**l) for l in range(depth)]
    assert receptive_field(dilated)[-1].r == 2 ** (depth + 1) - 1
    assert receptive_field([(3, 1, 1)] * depth)[-1].r == 2 * depth + 1
dilated = [(3, 1, 2**l, 2**l) for l in range(5)]
chain = nn.Sequential(*[nn.Conv2d(1, 1, 3, padding=d, dilation=d) for (_, _, _, d) in dilated])
measured = measured_receptive_field(chain, (1, 96, 96), (48, 48), n_inputs=1)
print(f"5 dilated 3x3 layers (d = 1, 2, 4, 8, 16): r = {receptive_field(dilated)[-1].r} (recursion), "
      f"{measured.size[0]} (autograd); 5 undilated: r = 11")
assert measured.size == (63, 63)

# %% [markdown]
# ### B.3 The effective receptive field
#
# How much does each pixel of the field matter? Luo et al. (2016) measure $\lvert \partial y / \partial x_m \rvert$ for the centre unit $y$,
# averaged over inputs: the **effective receptive field** (ERF). A case we can solve exactly: $n$ stride-1 $k \times k$ convolutions,
# one channel, no nonlinearity, every weight $1/k^2$ (each layer averages a $k \times k$ window). Along one axis, write the
# layer's kernel as a distribution over offsets $u \in \{-\tfrac{k-1}{2}, \dots, \tfrac{k-1}{2}\}$ with $w(u) = 1/k$ (the 2-D kernel is the product of
# two such, so the axes separate). One layer gives $y_m = \sum_u w(u)\, x_{m+u}$; two layers give
#
# $$
# z_m = \sum_{u_2} w(u_2)\, y_{m + u_2} = \sum_{u_1, u_2} w(u_1)\, w(u_2)\, x_{m + u_1 + u_2},
# \qquad
# \frac{\partial z_m}{\partial x_{m + \delta}} = \sum_{u_1 + u_2 = \delta} w(u_1)\, w(u_2) = P(U_1 + U_2 = \delta),
# $$
#
# with $U_1, U_2$ independent and distributed as $w$. By induction, after $n$ layers $\partial y / \partial x_{m + \delta} = P(U_1 + \dots + U_n = \delta)$:
# the gradient map **is** the distribution of a sum of $n$ independent offsets. Its mean is 0 and, variances of independent
# variables adding, its variance is $n$ times that of one offset, $\operatorname{Var}(U) = \frac{1}{k}\sum_u u^2 = \frac{k^2 - 1}{12}$ (for $k = 3$: $\frac{1}{3}(1 + 0 + 1) = \frac{2}{3}$):
#
# $$
# \operatorname{sd}(\text{ERF}) = \sqrt{\frac{n (k^2 - 1)}{12}}
# \qquad\text{while}\qquad
# \frac{r_n - 1}{2} = \frac{n (k - 1)}{2} .
# $$
#
# The receptive field's half-width grows like $n$, the ERF's width like $\sqrt{n}$ (and by the central limit theorem its
# shape tends to a Gaussian): the fraction of the field that matters shrinks like $1/\sqrt{n}$. Checked exactly, against the
# $n$-fold convolution of $[1/3, 1/3, 1/3]$ with itself (`numpy.convolve`):

# %%
def averaging_stack(depth, k=3):
    """depth stride-1 k x k convolutions that average, padding (k - 1) / 2, one channel, float64."""
    convs = [nn.Conv2d(1, 1, k, padding=k // 2, bias=False).double() for _ in range(depth)]
    for conv in convs:
        nn.init.constant_(conv.weight, 1 / k**2)
    return nn.Sequential(*convs)


size = 49
for depth in (1, 2, 4, 8, 16):
    erf = effective_receptive_field(averaging_stack(depth), torch.ones(1, 1, size, size, **f64))  # (49, 49), sums to 1
    one_axis = np.array([1.0])
    for _ in range(depth):
        one_axis = np.convolve(one_axis, np.ones(3) / 3)  # the distribution of U_1 + ... + U_depth
    exact = np.zeros(size)
    exact[size // 2 - depth: size // 2 + depth + 1] = one_axis
    assert np.allclose(erf.numpy(), np.outer(exact, exact), atol=1e-15)
    sd = erf_spread(erf)
    assert abs(sd[0] ** 2 - depth * 2 / 3) < 1e-9
    print(f"depth {depth:2d}: ERF sd {sd[0]:.4f} = sqrt(2n/3) = {math.sqrt(2 * depth / 3):.4f};  half-width of the field {depth}")

# %% [markdown]
# Real networks have random weights of both signs and ReLUs; there is no closed form, but Luo et al. found the same
# $\sqrt{n}$ law. Measured on stacks of 8-channel $3 \times 3$ convolutions with He initialisation, with and without ReLUs,
# averaged over random inputs:

# %%
def random_stack(depth, relu=True, width=8, seed=0):
    """depth 3x3 convolutions, He-initialised, with ReLUs between them if relu; 1 channel in, width channels out."""
    torch.manual_seed(seed)
    layers, channels = [], 1
    for _ in range(depth):
        conv = nn.Conv2d(channels, width, 3, padding=1, bias=False)
        nn.init.kaiming_normal_(conv.weight, nonlinearity="relu")
        layers += [conv, nn.ReLU()] if relu else [conv]
        channels = width
    return nn.Sequential(*layers)


erf_cfg = per_profile(ci=dict(n_inputs=8, size=49), cpu=dict(n_inputs=32, size=65), gpu=dict(n_inputs=64, size=65))
depths = [1, 2, 4, 8, 16]
erf_inputs = torch.randn(erf_cfg.n_inputs, 1, erf_cfg.size, erf_cfg.size, generator=seed_everything(3))
erf_maps, erf_sd = {}, {}
for kind in ("averaging", "random, linear", "random + ReLU"):
    for depth in depths:
        stack = averaging_stack(depth).float() if kind == "averaging" else random_stack(depth, relu=kind.endswith("ReLU"))
        erf_maps[kind, depth] = effective_receptive_field(stack, erf_inputs)
        erf_sd[kind, depth] = float(np.mean(erf_spread(erf_maps[kind, depth])))
    ratios = np.array([erf_sd[kind, depth] / math.sqrt(depth) for depth in depths[1:]])
    print(f"{kind:15s} ERF sd / sqrt(depth) at depths {depths[1:]}: {ratios.round(2)}")
    assert ratios.max() / ratios.min() < 1.6  # the same constant at every depth, up to noise: sd grows like sqrt(depth)

fig, ax = plt.subplots(figsize=(6, 3.6))
ax.plot(depths, [d for d in depths], "k--", label="half-width of the receptive field, (r - 1)/2 = n")
for kind in ("averaging", "random, linear", "random + ReLU"):
    ax.plot(depths, [erf_sd[kind, d] for d in depths], "o-", label=f"ERF sd, {kind}")
ax.plot(depths, [math.sqrt(2 * d / 3) for d in depths], ":", color="C0", label="sqrt(2n/3), exact for averaging")
ax.set(xlabel="depth n (3x3 convolutions)", ylabel="pixels", xscale="log", yscale="log",
       title="the field grows like n, the ERF like sqrt(n)")
ax.legend(fontsize=8)
plt.show()

# %% [markdown]
# **Widget: the ERF.** The ERF of the centre unit for a stack of the chosen depth and kind, with the theoretical
# receptive field drawn as a square. A logarithmic colour scale shows the faint tails that still lie inside the square.

# %%
def draw_erf(axes, depth, kind, log_scale):
    erf = erf_maps[kind, depth].numpy()
    half = depth  # (r - 1) / 2 for 3x3 stride-1 layers
    centre = erf.shape[0] // 2
    shown = np.log10(erf + 1e-12) if log_scale else erf
    axes[0].imshow(shown, cmap="magma", vmin=-8 if log_scale else 0)
    axes[0].add_patch(plt.Rectangle((centre - half - 0.5, centre - half - 0.5), 2 * half + 1, 2 * half + 1,
                                    fill=False, color="cyan", lw=1))
    axes[0].set_title(f"{kind}, depth {depth}: ERF{' (log10)' if log_scale else ''}; square = receptive field", fontsize=9)
    axes[0].axis("off")
    axes[1].plot(np.arange(erf.shape[0]) - centre, erf.sum(0), "o-", ms=3)
    axes[1].axvspan(-half, half, color="cyan", alpha=0.15, label="receptive field")
    axes[1].set(xlabel="column offset from the centre unit", ylabel="share of |dy/dx|", title="summed over rows")
    axes[1].legend(fontsize=8)


course_lib.core.widgets.interactive_figure(
    draw_erf, ncols=2, figsize=(10, 4),
    depth=ipywidgets.SelectionSlider(options=depths, value=8, description="depth"),
    kind=ipywidgets.Dropdown(options=["averaging", "random, linear", "random + ReLU"], value="random + ReLU",
                             description="weights"),
    log_scale=ipywidgets.Checkbox(value=False, description="log colour scale"))

# %% [markdown]
# ### B.4 Depth, and the residual connection (optional deep dive)
#
# VGG grows the receptive field with depth: many $3 \times 3$ layers. ResNet (He et al. 2016) goes deeper still with blocks
# $y = x + \mathcal{F}(x)$ (two $3 \times 3$ convolutions with BatchNorm in $\mathcal{F}$, and a $1 \times 1$ projection on the shortcut where the
# shape changes). The block's Jacobian is $\partial y / \partial x = I + \partial \mathcal{F} / \partial x$: the identity is always there, so the block can
# represent "do nothing" with $\mathcal{F} = 0$, and a gradient reaches early layers along the shortcuts.
#
# > **Common confusion:** "residual connections solved the vanishing-gradient problem". The ResNet paper's target is the
# > **degradation** problem: a deeper *plain* network, trained with BatchNorm (which already keeps gradients from vanishing),
# > has *higher training error* than a shallower one, so the problem is optimisation, not overfitting and not vanishing
# > gradients. Measured at initialisation below: in a 32-layer plain conv-BN-ReLU network the gradients do not vanish
# > towards the input; they **grow** (the first layer's is over a hundred times the last's), while the residual version
# > keeps them within a small factor.

# %%
class DeepConvNet(nn.Module):
    """A stem, then `depth` conv-BN-ReLU layers of 16 channels, plain (h = f(h)) or residual (h = h + f(h)); GAP; a head."""

    def __init__(self, depth, residual, width=16):
        super().__init__()
        self.residual = residual
        self.stem = nn.Conv2d(1, width, 3, padding=1)
        self.convs = nn.ModuleList([nn.Conv2d(width, width, 3, padding=1, bias=False) for _ in range(depth)])
        self.norms = nn.ModuleList([nn.BatchNorm2d(width) for _ in range(depth)])
        self.head = nn.Linear(width, 10)

    def forward(self, x):
        h = self.stem(x)
        for conv, norm in zip(self.convs, self.norms):
            update = F.relu(norm(conv(h)))
            h = h + update if self.residual else update
        return self.head(h.mean(dim=(2, 3)))


x_batch, y_batch = torch.rand(32, 1, 16, 16, generator=generator), torch.randint(0, 10, (32,), generator=generator)
print(f"{'depth':>5s} {'network':>9s}  |grad| first layer / last layer")
gradient_ratio = {}
for depth in (8, 32):
    for residual in (False, True):
        torch.manual_seed(1)
        net = DeepConvNet(depth, residual)
        F.cross_entropy(net(x_batch), y_batch).backward()  # train mode: BatchNorm uses the batch statistics
        norms = [conv.weight.grad.norm().item() for conv in net.convs]
        gradient_ratio[depth, residual] = norms[0] / norms[-1]
        print(f"{depth:5d} {'residual' if residual else 'plain':>9s}  {gradient_ratio[depth, residual]:8.1f}")
assert gradient_ratio[32, False] > 100 and gradient_ratio[32, True] < 10  # the text's "over a hundred", "a small factor"

# %% [markdown]
# ---
# ## C. A small CNN on Fashion-MNIST
#
# ### C.1 The data
#
# Fashion-MNIST (Xiao et al. 2017): 70,000 grey $28 \times 28$ photos of clothes in 10 classes, the same format as MNIST and
# harder (an MLP gets about 0.90 instead of 0.98). `course_lib.data.load_fashion_mnist` reads it offline.

# %%
x_train, y_train = load_fashion_mnist("train")  # (60000, 1, 28, 28) in [0, 1], (60000,)
x_test, y_test = load_fashion_mnist("test")  # (10000, 1, 28, 28), (10000,)
print(f"train {tuple(x_train.shape)}, test {tuple(x_test.shape)}, pixel range [{x_train.min():.0f}, {x_train.max():.0f}], "
      f"classes: {', '.join(FASHION_CLASSES)}")
examples = torch.stack([x_train[y_train == c][:6] for c in range(10)], dim=1)  # (6, 10, 1, 28, 28): row r, class c
fig, ax = plt.subplots(figsize=(9, 5.8))
course_lib.core.plotting.image_grid(examples.reshape(60, 1, 28, 28), nrow=6, ax=ax)
ax.set_title("columns: " + " | ".join(FASHION_CLASSES), fontsize=8)
plt.show()

# %% [markdown]
# ### C.2 The model, step by step
#
# Three stages of convolution, BatchNorm and ReLU; $2 \times 2$ max-pooling between them; then **global average pooling**
# (the mean of each channel over all positions) and one linear layer to the 10 class scores (logits). The first kernel is
# $5 \times 5$ so that its filters are big enough to look at in D.1. No bias in the convolutions: the BatchNorm after each
# has its own shift. The schematic under "See it work first" draws it. We build it from bare layers, run a batch, and
# print each shape with the receptive field and jump of each stage from B.1.

# %%
generator = seed_everything(4)
conv1, bn1 = nn.Conv2d(1, 32, 5, padding=2, bias=False), nn.BatchNorm2d(32)
conv2, bn2 = nn.Conv2d(32, 64, 3, padding=1, bias=False), nn.BatchNorm2d(64)
conv3, bn3 = nn.Conv2d(64, 128, 3, padding=1, bias=False), nn.BatchNorm2d(128)
head = nn.Linear(128, 10)
for module in (conv1, bn1, conv2, bn2, conv3, bn3, head):
    module.eval()  # BatchNorm with its running statistics (the initial mean 0 and variance 1) for this comparison

x = x_train[:8]  # (8, 1, 28, 28)
fields = receptive_field([(5, 1, 2), (2, 2), (3, 1, 1), (2, 2), (3, 1, 1)])  # after conv1, pool1, conv2, pool2, conv3
trace = [("x", x, "")]
a1 = F.relu(bn1(conv1(x))); trace.append(("a1 = relu(bn1(conv1(x)))", a1, fields[0]))
h = F.max_pool2d(a1, 2); trace.append(("max_pool(a1, 2)", h, fields[1]))
a2 = F.relu(bn2(conv2(h))); trace.append(("a2 = relu(bn2(conv2(.)))", a2, fields[2]))
h = F.max_pool2d(a2, 2); trace.append(("max_pool(a2, 2)", h, fields[3]))
a3 = F.relu(bn3(conv3(h))); trace.append(("a3 = relu(bn3(conv3(.)))", a3, fields[4]))
pooled = a3.mean(dim=(2, 3)); trace.append(("global average pool", pooled, "the whole image"))
logits = head(pooled); trace.append(("logits = head(.)", logits, ""))
for name, t, field in trace:
    field = f"r = {field.r:2d}, j = {field.j}" if isinstance(field, tuple) else field
    print(f"{name:28s} {str(tuple(t.shape)):18s} {field}")

# %% [markdown]
# The same network is `course_lib.topics.cnn.SmallCNN`. Copy our weights into it and compare the logits and every stage's
# activation map on the same batch:

# %%
library_model = SmallCNN(channels=(32, 64, 128), first_kernel=5)
ours = {"conv1": conv1, "bn1": bn1, "conv2": conv2, "bn2": bn2, "conv3": conv3, "bn3": bn3, "head": head}
library_model.load_state_dict({f"{name}.{key}": value for name, module in ours.items()
                               for key, value in module.state_dict().items()})
library_model.eval()
with torch.no_grad():
    lib_logits, lib_activations = library_model.forward_with_activations(x)
    assert torch.allclose(lib_logits, logits, atol=1e-5)
    for name, mine in [("conv1", a1), ("conv2", a2), ("conv3", a3)]:
        assert torch.allclose(lib_activations[name], mine, atol=1e-5)
print("step-by-step model == course_lib.topics.cnn.SmallCNN (logits and the three activation maps)")
print(f"parameters: {sum(p.numel() for p in library_model.parameters()):,}; "
      f"layer_specs(SmallCNN) = {[tuple(spec) for spec in layer_specs(library_model)]}")

# %% [markdown]
# ### C.3 Training
#
# `course_lib.zoo.cnn_fashion` made the shipped checkpoint. Its settings per profile, then the same training here with
# the active profile's: Adam with a warm-up and a cosine decay, cross entropy, and the cheapest augmentation, a random
# left-right flip of half the images (`random_crop_flip`, which can also crop at random from the image padded by a few
# pixels; on this short schedule the crops slowed the fit more than they helped, see the docstring; section E shows more).

# %%
print(inspect.getsource(course_lib.zoo.cnn_fashion.settings))
cfg = course_lib.zoo.settings("cnn_fashion")
print(cfg)

# %%
generator = seed_everything(0)
model = SmallCNN(**cfg.model).to(DEVICE)
optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
batches = minibatches(x_train[:cfg.n_train], y_train[:cfg.n_train], batch_size=cfg.batch_size, generator=generator)
n_eval = per_profile(ci=dict(n=1_000), cpu=dict(n=10_000), gpu=dict(n=10_000)).n


def augment(x):
    return random_crop_flip(x, padding=cfg.crop_padding, generator=generator)


history = fit(model, lambda m, batch: classification_loss(m, batch, augment), batches, steps=cfg.steps,
              optimizer=optimizer, device=DEVICE, scheduler=warmup_cosine(optimizer, cfg.warmup_steps, cfg.steps),
              desc="SmallCNN on Fashion-MNIST")
own_accuracy = accuracy(model, x_test[:n_eval], y_test[:n_eval], batch_size=250)
print(f"after {cfg.steps} steps ({cfg.steps * cfg.batch_size / cfg.n_train:.1f} epochs of {cfg.n_train} images, "
      f"{history.wall_time_s:.0f} s): test accuracy {own_accuracy:.3f} on {n_eval} test images")
assert own_accuracy >= cfg.min_test_accuracy
if cfg.steps < 200:  # the ci smoke run
    print(f"(a {cfg.steps}-step smoke run: an accuracy this far below the shipped model's 0.91 is expected, not a bug in "
          "your code; the cpu profile trains 1,000 steps and reaches about 0.89)")

fig, ax = plt.subplots(figsize=(6, 3.2))
course_lib.core.plotting.plot_losses(history, smooth=10, ax=ax, title="cross entropy (nats), 10-step mean")
plt.show()

# %% [markdown]
# ### C.4 The shipped checkpoint
#
# Whatever the profile, the rest of the chapter uses the longer-trained model (the `gpu` settings, trained on a CPU).
# Its accuracy on the whole test set is in the manifest; we measure it again here (on a part of the test set under `ci`).

# %%
cnn = course_lib.zoo.load_shipped("cnn_fashion", DEVICE)
entry = course_lib.core.checkpointing.read_manifest()["cnn_fashion"]
print("manifest metrics:", entry["metrics"], "| recipe:", {k: entry["recipe"][k] for k in ("profile", "steps", "batch_size")},
      f"| {entry['parameters']:,} parameters, {entry['size_bytes'] / 1e6:.2f} MB")
with torch.no_grad():
    test_logits = torch.cat([cnn(x_test[i:i + 250].to(DEVICE)).cpu() for i in range(0, n_eval, 250)])
test_pred = test_logits.argmax(1)
shipped_accuracy = (test_pred == y_test[:n_eval]).float().mean().item()
print(f"shipped model: test accuracy {shipped_accuracy:.4f} on the first {n_eval} test images")
assert shipped_accuracy >= 0.9

confusion = torch.zeros(10, 10, dtype=torch.long)
confusion.index_put_((y_test[:n_eval], test_pred), torch.ones(n_eval, dtype=torch.long), accumulate=True)
fig, ax = plt.subplots(figsize=(5.5, 4.5))
ax.imshow(confusion / confusion.sum(1, keepdim=True), cmap="Blues")
for (i, j), count in np.ndenumerate(confusion.numpy()):
    if count:
        ax.text(j, i, count, ha="center", va="center", fontsize=6, color="k" if i != j else "w")
ax.set(xticks=range(10), yticks=range(10), xlabel="predicted", ylabel="true", title="confusion matrix, shipped model")
ax.set_xticklabels(FASHION_CLASSES, rotation=60, fontsize=7)
ax.set_yticklabels(FASHION_CLASSES, fontsize=7)
plt.show()
tops = [FASHION_CLASSES.index(name) for name in ("T-shirt/top", "Pullover", "Coat", "Shirt")]
off_diagonal = confusion - torch.diag(confusion.diag())
among_tops = off_diagonal[tops][:, tops].sum().item() / off_diagonal.sum().item()
print(f"{off_diagonal.sum().item()} errors; {among_tops:.0%} of them confuse two of T-shirt/top, pullover, coat and shirt "
      f"(4 of the 10 classes)")
assert among_tops > 0.5

# %% [markdown]
# The errors concentrate where a person would hesitate too: shirt against T-shirt, pullover and coat (the share printed). For scale
# (Fashion-MNIST's benchmark table, results as submitted): two-layer CNNs about 0.92, ResNet-18 0.949, a WRN-40-4 0.967,
# and crowd-sourced human labellers 0.835.
#
# ---
# ## D. Looking inside
#
# ### D.1 First-layer filters
#
# The 32 filters of `conv1` ($5 \times 5$ each, one input channel), each scaled to its own largest weight (red positive,
# blue negative, white zero). After six epochs they are still noisy, but many have an orientation (a red region beside a
# blue one is an edge detector: it responds where brightness changes across that direction) and a few are blobs. Their
# responses to a test image (right, the first 8 channels of `conv1`'s activation map) are cleaner than the filters:
# edges at different orientations, the sole, the outline. Each response is the filter slid over the image, then
# BatchNorm and ReLU.

# %%
filters = cnn.conv1.weight.detach().cpu()[:, 0]  # (32, 5, 5)
canvas = np.full((4 * 6 - 1, 8 * 6 - 1), np.nan)  # 4 x 8 filters, 1 pixel of gap
for index, f in enumerate(filters):
    row, col = divmod(index, 8)
    canvas[6 * row:6 * row + 5, 6 * col:6 * col + 5] = f / f.abs().max()
colormap = plt.get_cmap("RdBu_r").copy()
colormap.set_bad("0.75")  # the gaps
with torch.no_grad():
    responses = cnn.features(x_test[:1].to(DEVICE), "conv1")[0, :8].cpu()  # (8, 28, 28)
fig, axes = plt.subplots(1, 2, figsize=(11, 3), width_ratios=[1, 1.6], layout="constrained")
axes[0].imshow(canvas, cmap=colormap, vmin=-1, vmax=1)
axes[0].set_title("conv1 filters of the shipped model", fontsize=9)
axes[0].axis("off")
course_lib.core.plotting.image_grid(responses / responses.max(), nrow=2, ax=axes[1], cmap="viridis")
axes[1].set_title("responses of filters 0-7 (the top row on the left) to test image 0", fontsize=9)
plt.show()

# %% [markdown]
# ### D.2 Activation maps
#
# What each channel responds to, on a test image. `forward_with_activations` returns the rectified map of every stage
# (no hooks needed for a model we wrote). For a model you did not write, a **forward hook** collects the same maps: it is a
# function PyTorch calls with each module's output during the forward pass. Checked against ours:

# %%
collected = {}
handle = cnn.bn3.register_forward_hook(lambda module, inputs, output: collected.update(bn3=output.detach()))
with torch.no_grad():
    logits_hooked, activations = cnn.forward_with_activations(x_test[:16].to(DEVICE))
handle.remove()  # hooks stay until removed
assert torch.allclose(F.relu(collected["bn3"]), activations["conv3"])
print("relu(output of the hooked bn3) == activations['conv3'];  shapes:",
      {name: tuple(a.shape) for name, a in activations.items()})

# %% [markdown]
# **Widget: activation maps.** Pick a test image, a stage and a channel; left the image, middle the chosen channel's map at the
# stage's resolution, right every channel of the stage (the chosen one framed), each scaled to the largest value in
# the stage.

# %%
def draw_activations(axes, image_index, layer, channel):
    x_one = x_test[image_index:image_index + 1].to(DEVICE)
    with torch.no_grad():
        logits_one, maps = cnn.forward_with_activations(x_one)
    stage = maps[layer][0].cpu()  # (C, h, w)
    channel = channel % len(stage)
    top = stage.max().item() or 1.0
    axes[0].imshow(x_one[0, 0].cpu(), cmap="gray")
    axes[0].set_title(f"test image {image_index}: {FASHION_CLASSES[y_test[image_index]]}\n"
                      f"predicted {FASHION_CLASSES[logits_one.argmax().item()]}", fontsize=9)
    axes[1].imshow(stage[channel], cmap="viridis", vmin=0, vmax=top)
    axes[1].set_title(f"{layer}, channel {channel} ({stage.shape[1]}x{stage.shape[2]})", fontsize=9)
    ncol = 16 if len(stage) >= 64 else 8
    course_lib.core.plotting.image_grid(stage[:, None] / top, nrow=len(stage) // ncol, ax=axes[2], cmap="viridis")
    h, w = stage.shape[1:]
    r, c = divmod(channel, ncol)
    axes[2].add_patch(plt.Rectangle((c * (w + 1) - 0.5, r * (h + 1) - 0.5), w, h, fill=False, color="red", lw=1.5))
    axes[2].set_title(f"all {len(stage)} channels of {layer}", fontsize=9)
    for ax in axes[:2]:
        ax.axis("off")


course_lib.core.widgets.interactive_figure(
    draw_activations, ncols=3, figsize=(13, 4.2),
    image_index=ipywidgets.IntSlider(value=0, min=0, max=199, description="test image"),
    layer=ipywidgets.Dropdown(options=list(SmallCNN.LAYERS), value="conv1", description="stage"),
    channel=ipywidgets.IntSlider(value=3, min=0, max=127, description="channel"))

# %% [markdown]
# Things to look for: `conv1` channels are edge maps at the input's resolution (compare with the filters above);
# `conv2` channels respond to parts (a collar, a sole, a strap); many `conv3` channels are silent for a given image and
# loud for another class: at $7 \times 7$ they are close to class detectors, which is what the global average pooling
# and the linear head need.
#
# ### D.3 The effective receptive field of the trained network (optional deep dive)
#
# The centre unit of `conv3` on test images: the theoretical field is $20 \times 20$ (B.1); where inside it does the trained
# network listen? Compared with the same network at initialisation (same images):

# %%
erf_images = x_test[:per_profile(ci=dict(n=32), cpu=dict(n=256), gpu=dict(n=1_000)).n].to(DEVICE)
erf_trained = effective_receptive_field(lambda x: cnn.features(x, "conv3"), erf_images, position=(3, 3))
erf_init = effective_receptive_field(lambda x: model_at_init.features(x, "conv3"), erf_images.cpu(), position=(3, 3))
lo, hi = receptive_field_box(layer_specs(cnn), 3)
inside = torch.zeros(28, 28, dtype=torch.bool)
inside[int(lo):int(hi) + 1, int(lo):int(hi) + 1] = True
assert erf_trained[~inside].sum() == 0 and erf_init[~inside].sum() == 0  # nothing outside the theoretical field
spread_trained, spread_init = np.mean(erf_spread(erf_trained)), np.mean(erf_spread(erf_init))
spread_uniform = math.sqrt((20**2 - 1) / 12)  # the sd of a uniform distribution over 20 pixels
print(f"unit (3, 3) of conv3 sees pixels {lo:.0f}..{hi:.0f} (r = {hi - lo + 1:.0f});  ERF sd: trained "
      f"{spread_trained:.2f} px, at initialisation {spread_init:.2f} px;  uniform over the field would be {spread_uniform:.2f} px")
assert spread_init < spread_trained < spread_uniform
fig, axes = plt.subplots(1, 3, figsize=(10, 3.4))
for ax, erf, title in [(axes[0], erf_init, "ERF at initialisation"), (axes[1], erf_trained, "ERF, trained")]:
    ax.imshow(erf, cmap="magma")
    ax.add_patch(plt.Rectangle((lo - 0.5, lo - 0.5), hi - lo + 1, hi - lo + 1, fill=False, color="cyan"))
    ax.set_title(title, fontsize=9)
    ax.axis("off")
axes[2].imshow(erf_images[:64].mean(0)[0].cpu(), cmap="gray")
axes[2].add_patch(plt.Rectangle((lo - 0.5, lo - 0.5), hi - lo + 1, hi - lo + 1, fill=False, color="cyan"))
axes[2].set_title("mean test image, with the field", fontsize=9)
axes[2].axis("off")
plt.show()

# %% [markdown]
# Both maps fade towards the border of the square: the spread printed above is below a uniform field's, so the unit listens
# mostly to the middle of what it can see. Training made the field somewhat *wider* than at initialisation, not narrower: the
# trained unit draws on more of its square, though still far from all of it.

# %% [markdown]
# ### D.4 Saliency
#
# Simonyan et al. (2014) ask which pixels the class score $y^c$ (the **logit**, before the softmax) is most sensitive to.
# Near an image $x_0$ the score is, to first order (Taylor),
#
# $$
# y^c(x) \approx y^c(x_0) + w^\top (x - x_0), \qquad w = \frac{\partial y^c}{\partial x}\Big|_{x_0},
# $$
#
# so $\lvert w_m \rvert$ says how much a small change of pixel $m$ moves the score. The **saliency map** is $M_{ij} = \max_{\text{channel}} \lvert w_{\text{channel}, i, j} \rvert$
# (`course_lib.topics.cnn.saliency`; one channel here). Two checks in float64: the gradient against central finite differences
# for a few pixels of the garment, and the Taylor expansion for a small random change of the image.

# %%
cnn64 = course_lib.zoo.load_shipped("cnn_fashion").double()  # a float64 copy for finite differences
x0 = x_test[:1].double()  # (1, 1, 28, 28)
target = y_test[0].item()
x_var = x0.clone().requires_grad_(True)
w_grad = torch.autograd.grad(cnn64(x_var)[0, target], x_var)[0]  # (1, 1, 28, 28) d y^c / d x
h = 1e-6
for (i, j) in [(14, 14), (10, 20), (20, 8)]:
    bump = torch.zeros_like(x0)
    bump[0, 0, i, j] = h
    with torch.no_grad():
        finite_difference = (cnn64(x0 + bump)[0, target] - cnn64(x0 - bump)[0, target]) / (2 * h)
    print(f"pixel ({i:2d}, {j:2d}): autograd {w_grad[0, 0, i, j]:+.6f}, finite difference {finite_difference:+.6f}")
    assert abs(finite_difference - w_grad[0, 0, i, j]) < 1e-5
on_object = (x0 > 0.02).double()  # the pixels of the garment
for name, mask in [("object pixels only", on_object), ("all pixels", torch.ones_like(x0))]:
    delta = 1e-6 * torch.randn(x0.shape, generator=generator, **f64) * mask
    with torch.no_grad():
        change, predicted_change = cnn64(x0 + delta)[0, target] - cnn64(x0)[0, target], (w_grad * delta).sum()
    print(f"random change of the {name}: score moved {change:+.4e}, first-order prediction {predicted_change:+.4e}")
    if mask is on_object:
        assert abs(change - predicted_change) < 1e-4 * abs(predicted_change)
assert torch.allclose(saliency(cnn64, x0, target), w_grad.abs()[:, 0])
print(f"share of pixels that are exactly 0: {(x0 == 0).double().mean():.2f}")

# %% [markdown]
# The change of the *whole* image misses the prediction by far. A network of ReLUs and max-pools is piecewise linear,
# and the Taylor expansion is exact only inside one linear piece. On the black background two-thirds of the pixels are
# exactly 0, so the four values in a max-pool window there are often equal: a tie, where the network has a kink. Autograd
# returns one one-sided slope (the gradient goes to the first maximum), and any change of the background crosses the
# kink. Saliency on a flat background is therefore a slope on one side of a kink, not a sensitivity.
#
# Why the logit and not the probability $p_c = \operatorname{softmax}(y)_c$? The chain rule through the softmax, with $\partial p_c / \partial y_k = p_c(\delta_{kc} - p_k)$
# ($\delta_{kc} = 1$ if $k = c$, else 0), gives
#
# $$
# \frac{\partial p_c}{\partial x} = \sum_k \frac{\partial p_c}{\partial y_k} \frac{\partial y_k}{\partial x} = p_c \Big( \frac{\partial y_c}{\partial x} - \sum_k p_k \frac{\partial y_k}{\partial x} \Big) .
# $$
#
# For a confident prediction $p_c \approx 1$ and the bracket nearly cancels: the probability is **saturated**, and its gradient
# says more about the other classes than about class $c$. Checked, and measured on the shipped model:

# %%
x_var = x0.clone().requires_grad_(True)
probabilities = torch.softmax(cnn64(x_var), dim=1)[0]  # (10,)
grad_p = torch.autograd.grad(probabilities[target], x_var)[0]
grads_y = torch.stack([torch.autograd.grad(cnn64(x_var)[0, k], x_var)[0] for k in range(10)])  # (10, 1, 1, 28, 28)
by_formula = probabilities[target] * (grads_y[target] - (probabilities[:, None, None, None, None] * grads_y).sum(0))
assert torch.allclose(grad_p, by_formula, atol=1e-12)
print(f"p_c = {probabilities[target]:.6f};  |d p_c / dx| = {grad_p.norm():.2e}  vs  |d y_c / dx| = {grads_y[target].norm():.2e}")

# %% [markdown]
# Saliency maps of test images for their true class (the shipped model), next to the maps of the **untrained** model.
# Adebayo et al. (2018, "Sanity checks for saliency maps") showed that some saliency methods give nearly the same picture for a
# network with random weights, in which case the picture is about the image, not about what the model learned. Look at
# the bottom row: the untrained network's gradient outlines each garment sharply, without having learned anything. The
# trained model's maps are noisier and spill onto the background (the ties above). Printed: the correlation between the two
# maps per image, and the share of each model's saliency that falls on the garment's pixels:

# %%
sample = torch.arange(8)
x_sample, y_sample = x_test[sample].to(DEVICE), y_test[sample].to(DEVICE)
saliency_trained = saliency(cnn, x_sample, y_sample).cpu()  # (8, 28, 28)
saliency_random = saliency(model_at_init, x_sample.cpu(), y_sample.cpu())  # (8, 28, 28)
correlations = [np.corrcoef(a.flatten(), b.flatten())[0, 1] for a, b in zip(saliency_trained, saliency_random)]
print("correlation, trained vs untrained saliency:", np.round(correlations, 2))
garment = x_sample.cpu()[:, 0] > 0  # (8, 28, 28): the garment's pixels; the background is exactly 0
share_trained, share_random = ((s * garment).sum((1, 2)) / s.sum((1, 2)) for s in (saliency_trained, saliency_random))
print(f"share of the saliency on the garment's pixels (mean of the 8): trained {share_trained.mean():.2f}, untrained "
      f"{share_random.mean():.2f}; the garments cover {garment.float().mean():.2f} of the pixels")
assert share_random.mean() > share_trained.mean() + 0.1
fig, axes = plt.subplots(3, 1, figsize=(9, 4.2), layout="constrained")
for ax, images, title in [(axes[0], x_sample.cpu(), "test images"),
                          (axes[1], saliency_trained / saliency_trained.amax(dim=(1, 2), keepdim=True), "saliency, trained model"),
                          (axes[2], saliency_random / saliency_random.amax(dim=(1, 2), keepdim=True), "saliency, untrained model")]:
    course_lib.core.plotting.image_grid(images, nrow=1, ax=ax, cmap="gray" if ax is axes[0] else "hot")
    ax.set_title(title, fontsize=9)
plt.show()

# %% [markdown]
# ### D.5 Grad-CAM
#
# Grad-CAM (Selvaraju et al. 2017) asks the same question at a convolutional layer instead of the pixels. Let $A^k \in \mathbb{R}^{h \times w}$
# be channel $k$ of the layer's (rectified) maps, $Z = h w$ the number of positions, and $y^c$ the class score before the softmax.
# Each channel gets a weight, the **spatial average of the gradient**, and the map is the weighted sum of channels,
# rectified:
#
# $$
# \alpha_k^c = \frac{1}{Z} \sum_{i=1}^{h} \sum_{j=1}^{w} \frac{\partial y^c}{\partial A^k_{ij}},
# \qquad
# L^c_{\text{Grad-CAM}} = \operatorname{ReLU}\Big( \sum_k \alpha_k^c A^k \Big) \in \mathbb{R}^{h \times w} .
# $$
#
# The ReLU keeps the positions whose features raise the score of class $c$. The map has the layer's resolution ($7 \times 7$ at
# `conv3`) and is blown up to the image for display.
#
# **Grad-CAM at the last layer of a global-average-pooling network is CAM.** Our head computes
# $y^c = \sum_k W_{ck}\, \frac{1}{Z}\sum_{i,j} A^k_{ij} + b_c$, so $\partial y^c / \partial A^k_{ij} = W_{ck} / Z$ at every position, and
#
# $$
# \alpha_k^c = \frac{1}{Z} \sum_{i,j} \frac{W_{ck}}{Z} = \frac{W_{ck}}{Z},
# \qquad
# \sum_k \alpha_k^c A^k = \frac{1}{Z} \sum_k W_{ck} A^k = \frac{1}{Z}\, \operatorname{CAM}^c,
# \qquad
# \sum_{i,j} \sum_k \alpha_k^c A^k_{ij} = \sum_k W_{ck}\, \frac{1}{Z}\sum_{i,j} A^k_{ij} = y^c - b_c,
# $$
#
# where $\operatorname{CAM}^c = \sum_k W_{ck} A^k$ is the class activation map of Zhou et al. (2016), which needs exactly this architecture. The last
# identity says the (unrectified) map is a decomposition of the score over positions. Three checks on the shipped model:
# 1. the weights `grad_cam` returns equal the spatial average of gradients collected independently, with a **tensor hook**
#    (`register_hook` calls a function with the gradient of a tensor during `backward`);
# 2. at `conv3`: $\alpha^c = W_{c\cdot}/Z$ and the map is $\operatorname{ReLU}(\operatorname{CAM}^c)/Z$;
# 3. the unrectified map sums to $y^c - b_c$.

# %%
x_cam = x_test[:16].to(DEVICE)  # (16, 1, 28, 28)
target_cam = y_test[:16].to(DEVICE)
for layer in ("conv2", "conv3"):
    heatmap, weights = grad_cam(cnn, x_cam, target_cam, layer)  # (16, h, w), (16, K)
    # 1. independently: hook the layer's tensor, backpropagate the class scores, average the gradient over positions
    captured = {}
    logits_cam, maps = cnn.forward_with_activations(x_cam)
    maps[layer].register_hook(lambda gradient: captured.update(gradient=gradient))
    logits_cam.gather(1, target_cam[:, None]).sum().backward()
    averaged = captured["gradient"].mean(dim=(2, 3))  # (16, K)
    assert torch.allclose(weights, averaged, atol=1e-6)
    print(f"{layer}: Grad-CAM weights {tuple(weights.shape)} == spatially averaged gradients "
          f"(max difference {(weights - averaged).abs().max():.1e}); heatmap {tuple(heatmap.shape)}")
cnn.zero_grad(set_to_none=True)

# 2. and 3. at conv3, the CAM identity
with torch.no_grad():
    logits_cam, maps = cnn.forward_with_activations(x_cam)
A = maps["conv3"]  # (16, 128, 7, 7)
Z = A.shape[2] * A.shape[3]
W_head, b_head = cnn.head.weight[target_cam], cnn.head.bias[target_cam]  # (16, 128), (16,)
cam = (W_head[:, :, None, None] * A).sum(1)  # (16, 7, 7) Zhou et al.'s CAM
assert torch.allclose(weights, W_head / Z, atol=1e-6)
assert torch.allclose(heatmap, F.relu(cam) / Z, atol=1e-5)
unrectified = (weights[:, :, None, None] * A).sum(1)  # (16, 7, 7)
assert torch.allclose(unrectified.sum(dim=(1, 2)), logits_cam.gather(1, target_cam[:, None])[:, 0] - b_head, atol=1e-4)
print(f"conv3: alpha = W_c / {Z}, map = relu(CAM) / {Z}, and the map before the ReLU sums to y_c - b_c "
      f"(first image: {unrectified[0].sum():.4f} = {logits_cam[0, target_cam[0]] - b_head[0]:.4f})")

# %% [markdown]
# > **Common confusion:** three, about Grad-CAM. (1) It differentiates the **score before the softmax**; the probability's
# > gradient mixes in the other classes and saturates (D.4). (2) Its weights are *averaged* gradients, one number per
# > channel; multiplying the gradient and the activation position by position is a different method, and at `conv3` of a GAP
# > network it is the same map only because the gradient is constant over positions. (3) The map lives at the layer's
# > resolution: at `conv3` a $7 \times 7$ grid of $4 \times 4$ blocks, and each block summarises a $20 \times 20$ receptive field (B.1).
# > Upsampling smoothly makes it prettier, not finer.
#
# Grad-CAM for the true class on test images, and for the *misclassified* ones both for the class the model chose and
# for the true class: where did the evidence for the wrong answer come from?

# %%
def draw_cams(ax_row, images, targets, layer="conv3", titles=None):
    heatmaps, _ = grad_cam(cnn, images.to(DEVICE), targets.to(DEVICE), layer)
    for k, ax in enumerate(ax_row):
        course_lib.core.plotting.overlay_heatmap(images[k].cpu(), heatmaps[k].cpu(), ax=ax, alpha=0.45)
        if titles is not None:
            ax.set_title(titles[k], fontsize=7)


wrong = (test_pred != y_test[:n_eval]).nonzero()[:, 0][:6]  # the first misclassified test images
fig, axes = plt.subplots(3, 6, figsize=(10, 5.6), layout="constrained")
draw_cams(axes[0], x_test[:6], y_test[:6], titles=[f"{FASHION_CLASSES[c]}" for c in y_test[:6]])
draw_cams(axes[1], x_test[wrong], test_pred[wrong], titles=[f"chose {FASHION_CLASSES[c]}" for c in test_pred[wrong]])
draw_cams(axes[2], x_test[wrong], y_test[wrong], titles=[f"true {FASHION_CLASSES[c]}" for c in y_test[wrong]])
fig.suptitle("Grad-CAM at conv3: true class (top); misclassified images for the chosen class (middle) and the true class "
             "(bottom)", fontsize=9)
plt.show()

# %% [markdown]
# **Widget: saliency and Grad-CAM.** Pick a test image, the class to explain (the model's prediction is marked in the bar chart)
# and the layer. The class does not have to be the right one: asking "where is the evidence for *sneaker* in this boot?" is
# often the most instructive question.

# %%
def draw_explanations(axes, image_index, class_name, layer):
    x_one = x_test[image_index:image_index + 1].to(DEVICE)
    c = FASHION_CLASSES.index(class_name)
    heatmap_one, weights_one = grad_cam(cnn, x_one, c, layer)
    with torch.no_grad():
        probabilities_one = torch.softmax(cnn(x_one), dim=1)[0].cpu()
    axes[0].imshow(x_one[0, 0].cpu(), cmap="gray")
    axes[0].set_title(f"test image {image_index}: {FASHION_CLASSES[y_test[image_index]]}", fontsize=9)
    axes[0].axis("off")
    axes[1].imshow(saliency(cnn, x_one, c)[0].cpu(), cmap="hot")
    axes[1].set_title(f"saliency |d y_c / dx|, c = {class_name}", fontsize=9)
    axes[1].axis("off")
    course_lib.core.plotting.overlay_heatmap(x_one[0].cpu(), heatmap_one[0].cpu(), ax=axes[2], alpha=0.45)
    top_channels = weights_one[0].abs().argsort(descending=True)[:3].tolist()
    axes[2].set_title(f"Grad-CAM at {layer} ({tuple(heatmap_one.shape[1:])}),\nlargest |alpha| in channels {top_channels}",
                      fontsize=9)
    colors = ["C3" if k == probabilities_one.argmax() else ("C2" if k == c else "C0") for k in range(10)]
    axes[3].barh(range(10), probabilities_one, color=colors)
    axes[3].set(yticks=range(10), xlim=(0, 1), xlabel="probability", title="red: predicted, green: explained")
    axes[3].set_yticklabels(FASHION_CLASSES, fontsize=7)
    axes[3].invert_yaxis()


course_lib.core.widgets.interactive_figure(
    draw_explanations, ncols=4, figsize=(14, 3.6),
    image_index=ipywidgets.IntSlider(value=int(wrong[0]), min=0, max=n_eval - 1, description="test image"),
    class_name=ipywidgets.Dropdown(options=list(FASHION_CLASSES), value=FASHION_CLASSES[int(test_pred[wrong[0]])],
                                   description="explain"),
    layer=ipywidgets.Dropdown(options=["conv2", "conv3"], value="conv3", description="layer"))

# %% [markdown]
# ---
# ## E. Data augmentation
#
# ### E.1 A gallery, and RandAugment (optional deep dive)
#
# Augmentation trains on transformed copies of the training images that keep the label: it widens the part of the
# image distribution the model has seen. Which transforms keep the label depends on the data: a left-right flip keeps
# a shirt a shirt, but would turn some digits into non-digits; a large rotation turns a 6 into a 9. The geometric
# transforms below are `course_lib.topics.cnn.affine_transform` (one `F.affine_grid` plus `F.grid_sample`), the others one line
# of tensor arithmetic each.

# %%
generator = seed_everything(5)
one = x_test[0:1]  # (1, 1, 28, 28) an ankle boot
affine = course_lib.topics.cnn.affine_transform
ops = course_lib.topics.cnn.RAND_AUGMENT_OPS
erased = one.clone()
erased[..., 6:16, 10:20] = 0.0  # random erasing / cutout, here at a fixed place
gallery = {
    "original": one, "flip left-right": one.flip(-1), "random crop (pad 4)": random_crop_flip(one, 4, False, generator),
    "rotate 20°": affine(one, angle=20), "scale 0.8": affine(one, scale=0.8), "shear x 0.3": affine(one, shear=(0.3, 0)),
    "translate (0.15, 0.1)": affine(one, translate=(0.15, 0.1)), "brightness 0.6": ops["brightness"](one, -0.45),
    "contrast 0.4": ops["contrast"](one, -0.67), "solarize at 0.5": ops["solarize"](one, 0.5),
    "posterize 2 bits": torch.floor(one * 4) / 4, "erasing": erased,
    "gaussian noise 0.1": (one + 0.1 * torch.randn(one.shape, generator=generator)).clamp(0, 1),
    "sharpness +": ops["sharpness"](one, 1.0), "autocontrast": ops["autocontrast"](0.5 * one + 0.2, 0),
    "RandAugment N=2, M=15": course_lib.topics.cnn.rand_augment(one, 2, 15, generator=generator),
}
fig, axes = plt.subplots(2, 8, figsize=(12, 3.6), layout="constrained")
for ax, (name, img) in zip(axes.flat, gallery.items()):
    ax.imshow(img[0, 0], cmap="gray", vmin=0, vmax=1)
    ax.set_title(name, fontsize=7)
    ax.axis("off")
plt.show()
assert torch.allclose(affine(one, angle=90), torch.rot90(one, 1, dims=(2, 3)), atol=1e-5)  # 90° = a quarter turn, exactly

# %% [markdown]
# **RandAugment** (Cubuk et al. 2020) makes a policy out of such operations with two numbers: for each image (here, each
# batch), draw $N$ operations uniformly from a fixed list of about 14, and apply each at one global magnitude $M$ (on a
# fixed scale, 0-30 in torchvision and here, with a random sign for the signed ones). Only $N$ and $M$ are tuned, by a
# plain grid search.
#
# > **Common confusion:** a common reading is that RandAugment "automatically runs augmentation experiments to find the
# > optimal sequence of methods". In fact that describes **AutoAugment** (Cubuk et al. 2019), which *searches* a policy
# > (which operations, with which probabilities and magnitudes) with a reinforcement-learning controller, at a cost of
# > thousands of GPU hours. RandAugment's point is to *remove* that search: uniform choice, one magnitude, two numbers.
# > For reference, torchvision's defaults are `RandAugment(num_ops=2, magnitude=9, num_magnitude_bins=31)`.

# %%
print(inspect.getsource(course_lib.topics.cnn.rand_augment))
fig, axes = plt.subplots(3, 5, figsize=(8, 5), layout="constrained")
for row, n_ops in enumerate((1, 2, 3)):
    for col, magnitude in enumerate((0, 5, 10, 20, 30)):
        ax = axes[row, col]
        ax.imshow(course_lib.topics.cnn.rand_augment(x_test[1:2], n_ops, magnitude, generator=generator)[0, 0], cmap="gray",
                  vmin=0, vmax=1)
        ax.set_title(f"N={n_ops}, M={magnitude}", fontsize=8)
        ax.axis("off")
plt.show()

# %% [markdown]
# ### E.2 MixUp
#
# MixUp (Zhang et al. 2018) trains on convex combinations of two examples and of their one-hot labels $e_a, e_b$:
#
# $$
# \tilde x = \lambda x_a + (1 - \lambda)\, x_b, \qquad \tilde y = \lambda e_a + (1 - \lambda)\, e_b, \qquad \lambda \sim \operatorname{Beta}(\alpha, \alpha),
# $$
#
# one $\lambda$ per batch, and $b$ a random permutation of the batch. $\alpha$ sets how strong the mixing is: $\alpha = 1$ is uniform on $[0, 1]$,
# small $\alpha$ puts most draws near 0 or 1 (mostly one image), large $\alpha$ near $\tfrac{1}{2}$.
#
# The loss is the cross entropy against the soft label. It is linear in the label, so with $q = \operatorname{softmax}(\text{logits})$,
#
# $$
# H(\tilde y, q) = -\sum_k \tilde y_k \log q_k = -\lambda \log q_a - (1 - \lambda) \log q_b = \lambda\, H(e_a, q) + (1 - \lambda)\, H(e_b, q),
# $$
#
# which is why implementations either build $\tilde y$ or mix the two losses: the same number. Checks: the Beta draws
# against the Beta distribution function (the Kolmogorov-Smirnov distance $D = \max_\lambda \lvert F_{\text{empirical}}(\lambda) - F(\lambda) \rvert$, which for
# $n$ true draws exceeds $1.63/\sqrt{n}$ with probability 1%), the linearity with `course_lib.topics.losses.cross_entropy`
# (chapter 01's, which takes probability targets), and that the label weight equals the image weight actually used.
# For the last, mix two **constant** images, $x_a = 0$ and $x_b = 1$: every pixel of $\tilde x$ is then $1 - \lambda$, the image weight
# read off the pixels.

# %%
generator = seed_everything(6)
n_draws = 20_000
for alpha in (0.2, 1.0, 2.0):
    concentration = torch.tensor(alpha, **f64)  # float64: in float32, 2% of the Beta(0.2, 0.2) draws round to exactly 1.0
    draws = np.sort(torch.distributions.Beta(concentration, concentration).sample((n_draws,)).numpy())  # seeded globally
    cdf = scipy.special.betainc(alpha, alpha, draws)  # F(lambda) of Beta(alpha, alpha)
    ks_distance = max(np.abs(np.arange(1, n_draws + 1) / n_draws - cdf).max(), np.abs(np.arange(n_draws) / n_draws - cdf).max())
    print(f"alpha = {alpha}: mean {draws.mean():.3f}, share within 0.1 of 0 or 1: {np.mean((draws < 0.1) | (draws > 0.9)):.2f}, "
          f"KS distance {ks_distance:.4f} (1% threshold {1.63 / math.sqrt(n_draws):.4f})")
    assert ks_distance < 1.63 / math.sqrt(n_draws)

x_mix, y_mix = x_test[:64], y_test[:64]
perm = torch.randperm(64, generator=generator)
lam = 0.7
mixed, soft = mixup(x_mix, y_mix, lam, perm=perm, num_classes=10)  # (64, 1, 28, 28), (64, 10)
mix_logits = cnn(mixed.to(DEVICE)).detach().cpu()
loss_soft = cross_entropy(mix_logits, soft)
loss_mixed = lam * cross_entropy(mix_logits, y_mix) + (1 - lam) * cross_entropy(mix_logits, y_mix[perm])
assert torch.allclose(loss_soft, loss_mixed, atol=1e-6)
print(f"H(soft label, q) = {loss_soft:.6f} = lam H(e_a, q) + (1 - lam) H(e_b, q) = {loss_mixed:.6f}")

constant_a, constant_b = torch.zeros(2, 1, 28, 28), torch.ones(2, 1, 28, 28)
for lam in (0.0, 0.13, 0.5, 0.91):
    mixed_const, soft_const = mixup(torch.cat([constant_a[:1], constant_b[:1]]), torch.tensor([0, 1]), lam,
                                    perm=torch.tensor([1, 0]), num_classes=10)
    pixel_weight_of_b = mixed_const[0].mean().item()  # image 0 is x_a = 0 mixed with x_b = 1
    assert abs(pixel_weight_of_b - (1 - lam)) < 1e-6 and abs(soft_const[0, 1].item() - pixel_weight_of_b) < 1e-6
print("MixUp: the label weight of the partner equals its weight in the pixels, for every lambda tried")

# %% [markdown]
# ### E.3 CutMix (optional deep dive)
#
# CutMix (Yun et al. 2019) pastes a box of image $b$ into image $a$ instead of fading. With a binary mask $M$ (1 outside the box, 0
# inside):
#
# $$
# \tilde x = M \odot x_a + (1 - M) \odot x_b, \qquad \tilde y = \lambda e_a + (1 - \lambda)\, e_b, \qquad
# \lambda = \frac{\sum_{ij} M_{ij}}{H W} = 1 - \frac{\text{box area}}{H W} .
# $$
#
# To get a box of area about $(1 - \lambda_0) H W$ for a drawn $\lambda_0 \sim \operatorname{Uniform}(0, 1)$ (that is, $\operatorname{Beta}(1, 1)$), the paper takes sides
# $r_h = H\sqrt{1 - \lambda_0}$ and $r_w = W\sqrt{1 - \lambda_0}$ (so $r_h r_w = (1 - \lambda_0) H W$) and a centre uniform over the image. A box near the border is
# **clipped**, and rounding to whole pixels changes the area too; so $\lambda$ is recomputed from the box that was actually
# pasted. `course_lib.topics.cnn.cutmix_box` draws the box, `course_lib.topics.cnn.cutmix` pastes it and returns the $\lambda$ of the pixels.

# %%
generator = seed_everything(7)
lam_drawn = torch.rand(2_000, generator=generator)
lam_actual = []
for lam0 in lam_drawn.tolist():
    box = cutmix_box(28, 28, lam0, generator=generator)
    mixed_const, soft_const, lam_used = cutmix(torch.cat([constant_a[:1], constant_b[:1]]), torch.tensor([0, 1]), box,
                                               perm=torch.tensor([1, 0]), num_classes=10)
    fraction_of_b = mixed_const[0].mean().item()  # pixels that came from x_b = 1
    assert abs(soft_const[0, 1].item() - fraction_of_b) < 1e-6 and abs(lam_used - (1 - fraction_of_b)) < 1e-6
    lam_actual.append(lam_used)
lam_actual = torch.tensor(lam_actual)
error = lam_actual - lam_drawn
print(f"2,000 boxes: label weight == pixel fraction for every one. If the drawn lambda were kept as the label: mean "
      f"error {error.mean():+.3f}, mean |error| {error.abs().mean():.3f}, worst {error.abs().max():.3f}")

fig, ax = plt.subplots(figsize=(5.5, 3.2))
ax.hist(error.numpy(), bins=80)
ax.set(xlabel="lambda of the pasted pixels - lambda drawn", ylabel="boxes",
       title="clipping at the border makes the box smaller")
plt.show()

# %% [markdown]
# > **Common confusion:** which image gets $\lambda$? In the paper's notation $\lambda$ is the share of the **base** image $x_a$ (outside the box),
# > and the pasted box has area $(1 - \lambda) H W$. Code that swaps the two, or keeps the drawn $\lambda_0$ after clipping, trains with labels
# > that disagree with the pixels: above, by about 0.2 on average (always in the same direction: clipping only shrinks the
# > box) and by up to 0.7 for a box centred in a corner.
# > (And neither label is right when the pasted box holds only background: a Fashion-MNIST box from a border is
# > often all black, yet it moves $1 - \lambda$ of the label. Discussion question 5.)
#
# **Widget: MixUp and CutMix.** Two test images, the MixUp $\lambda$, and the CutMix $\lambda_0$ with the box centre. Beside each mixed image:
# its soft label (bars) and what the shipped model, trained without mixing, predicts for it (dots).

# %%
def draw_mixing(axes, image_a, image_b, mix_lambda, cut_lambda, centre_row, centre_col):
    pair = x_test[[image_a, image_b]]  # (2, 1, 28, 28)
    labels = y_test[[image_a, image_b]]
    swap = torch.tensor([1, 0])
    mixed_up, soft_up = mixup(pair, labels, mix_lambda, perm=swap, num_classes=10)
    box = cutmix_box(28, 28, cut_lambda, center=(centre_row, centre_col))
    cut, soft_cut, lam_cut = cutmix(pair, labels, box, perm=swap, num_classes=10)
    with torch.no_grad():
        predicted = torch.softmax(cnn(torch.cat([mixed_up[:1], cut[:1]]).to(DEVICE)), dim=1).cpu()
    axes[0].imshow(mixed_up[0, 0], cmap="gray", vmin=0, vmax=1)
    axes[0].set_title(f"MixUp, lambda = {mix_lambda:.2f}", fontsize=9)
    axes[2].imshow(cut[0, 0], cmap="gray", vmin=0, vmax=1)
    axes[2].add_patch(plt.Rectangle((box.left - 0.5, box.top - 0.5), box.right - box.left, box.bottom - box.top,
                                    fill=False, color="red"))
    axes[2].set_title(f"CutMix, lambda0 = {cut_lambda:.2f} -> pixels {lam_cut:.3f}", fontsize=9)
    for ax_img in (axes[0], axes[2]):
        ax_img.axis("off")
    for ax, soft_label, prediction in [(axes[1], soft_up[0], predicted[0]), (axes[3], soft_cut[0], predicted[1])]:
        ax.barh(range(10), soft_label, color="C0", label="soft label")
        ax.plot(prediction, range(10), "o", color="C3", label="model", zorder=3)
        ax.set(yticks=range(10), xlim=(0, 1))
        ax.set_yticklabels(FASHION_CLASSES, fontsize=7)
        ax.invert_yaxis()
        ax.legend(fontsize=7, loc="lower right")


course_lib.core.widgets.interactive_figure(
    draw_mixing, ncols=4, figsize=(14, 3.4),
    image_a=ipywidgets.IntSlider(value=0, min=0, max=199, description="image a"),
    image_b=ipywidgets.IntSlider(value=2, min=0, max=199, description="image b"),
    mix_lambda=ipywidgets.FloatSlider(value=0.6, min=0, max=1, step=0.01, description="MixUp λ"),
    cut_lambda=ipywidgets.FloatSlider(value=0.6, min=0, max=1, step=0.01, description="CutMix λ0"),
    centre_row=ipywidgets.IntSlider(value=14, min=0, max=27, description="box row"),
    centre_col=ipywidgets.IntSlider(value=20, min=0, max=27, description="box col"))

# %% [markdown]
# The model was trained on clean images, so its predictions on mixtures need not follow the soft label; a model trained
# with MixUp or CutMix learns to (roughly) and tends to be better calibrated. Try it: exercise 6 below trains with them.
#
# ---
# ## F. Exercises
#
# Each exercise cell below holds a working solution; in the student version it is replaced by a stub. Write your own,
# run the check cell, and reveal the reference only when stuck.
#
# **Exercise 1: the output size.** Write `my_conv_output_size(n, kernel, stride, padding, dilation)` returning the output
# length of a convolution along one axis (an `int`).

# %% tags=["exercise"]
def my_conv_output_size(n, kernel, stride=1, padding=0, dilation=1):
    """The output length of a convolution along one axis of length n: an int."""
    ### BEGIN SOLUTION
    return (n + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1
    ### END SOLUTION


# %%
layer_grid = torch.tensor([(n, k, s, p, d) for n in (7, 28, 32, 224) for k in (1, 3, 5, 7) for s in (1, 2, 4)
                           for p in (0, 1, 3) for d in (1, 2) if n + 2 * p >= d * (k - 1) + 1])  # (M, 5) layers
course_lib.core.check.check_function(
    lambda grid: torch.tensor([my_conv_output_size(*layer) for layer in grid.tolist()]),
    lambda grid: torch.tensor([conv_output_size(*layer) for layer in grid.tolist()]), [layer_grid],
    name="my_conv_output_size")

# %%
course_lib.core.check.show_solution(course_lib.topics.cnn.conv_output_size)

# %% [markdown]
# **Exercise 2: the receptive field.** Write `my_receptive_field(layers)` for a list of `(kernel, stride)` pairs, returning the list of
# `(r, j)` after each layer.

# %% tags=["exercise"]
def my_receptive_field(layers):
    """The list of (r, j), receptive field and jump, after each (kernel, stride) layer."""
    ### BEGIN SOLUTION
    r, j, out = 1, 1, []
    for kernel, stride in layers:
        r, j = r + (kernel - 1) * j, j * stride
        out.append((r, j))
    return out
    ### END SOLUTION


# %%
chains = [[(3, 1)] * 3, [(5, 1), (2, 2), (5, 1), (2, 2), (5, 1)], [(11, 4), (3, 2), (5, 1), (3, 2), (3, 1)],
          [(7, 2), (3, 2)] + [(3, 1)] * 4 + [(3, 2), (3, 1)]]
course_lib.core.check.check_function(
    lambda chain: torch.tensor(my_receptive_field(chain)),
    lambda chain: torch.tensor([(field.r, field.j) for field in receptive_field(chain)]), [(chain,) for chain in chains],
    name="my_receptive_field")

# %%
course_lib.core.check.show_solution(course_lib.topics.cnn.receptive_field)

# %% [markdown]
# **Exercise 3: Grad-CAM from maps and gradients.** Given a layer's maps $A$ and the gradients $\partial y^c / \partial A$, both $(N, K, h, w)$, return the
# heatmap $(N, h, w)$ and the channel weights $(N, K)$.

# %% tags=["exercise"]
def my_grad_cam_map(activations, gradients):
    """Grad-CAM: maps and gradients (N, K, h, w) -> heatmap (N, h, w), channel weights (N, K)."""
    ### BEGIN SOLUTION
    weights = gradients.mean(dim=(2, 3))  # (N, K)
    return F.relu((weights[:, :, None, None] * activations).sum(dim=1)), weights
    ### END SOLUTION


# %%
generator = seed_everything(8)
cam_inputs = [(torch.rand(3, 8, 7, 7, generator=generator), torch.randn(3, 8, 7, 7, generator=generator)),
              (torch.rand(1, 4, 14, 14, generator=generator), torch.randn(1, 4, 14, 14, generator=generator))]
course_lib.core.check.check_function(lambda a, g: my_grad_cam_map(a, g)[1], lambda a, g: grad_cam_map(a, g)[1], cam_inputs,
                                name="my_grad_cam_map weights")
course_lib.core.check.check_function(lambda a, g: my_grad_cam_map(a, g)[0], lambda a, g: grad_cam_map(a, g)[0], cam_inputs,
                                name="my_grad_cam_map heatmap")

# %%
course_lib.core.check.show_solution(course_lib.topics.cnn.grad_cam_map)

# %% [markdown]
# **Exercise 4: CutMix with the right label.** Given images $x$ $(N, C, H, W)$, class indices $y$ $(N,)$, a `Box` and a permutation, paste
# the box of `x[perm]` into each image and return the mixed images, the soft labels $(N, 10)$ and $\lambda$, the share of the
# base image.

# %% tags=["exercise"]
def my_cutmix(x, y, box, perm):
    """x[perm]'s box pasted into each image: mixed images, soft labels (N, 10), lambda (the base's share)."""
    ### BEGIN SOLUTION
    mixed = x.clone()
    mixed[:, :, box.top:box.bottom, box.left:box.right] = x[perm][:, :, box.top:box.bottom, box.left:box.right]
    lam = 1 - (box.bottom - box.top) * (box.right - box.left) / (x.shape[2] * x.shape[3])
    one_hot = F.one_hot(y, 10).float()
    return mixed, lam * one_hot + (1 - lam) * one_hot[perm], lam
    ### END SOLUTION


# %%
cut_inputs = [(x_test[:6], y_test[:6], cutmix_box(28, 28, 0.6, center=(3, 25)), torch.tensor([5, 4, 3, 2, 1, 0])),
              (x_test[:4], y_test[:4], cutmix_box(28, 28, 0.3, center=(14, 14)), torch.tensor([1, 2, 3, 0]))]
course_lib.core.check.check_function(lambda *args: my_cutmix(*args)[0],
                                lambda x, y, box, perm: cutmix(x, y, box, perm, num_classes=10)[0], cut_inputs,
                                name="my_cutmix images")
course_lib.core.check.check_function(lambda *args: my_cutmix(*args)[1],
                                lambda x, y, box, perm: cutmix(x, y, box, perm, num_classes=10)[1], cut_inputs,
                                name="my_cutmix soft labels")

# %%
course_lib.core.check.show_solution(course_lib.topics.cnn.cutmix)

# %% [markdown]
# **Exercise 5: the effective receptive field of any kernel.** *Derive, then check.* B.3 solved the ERF of a stack of
# *averaging* layers. Now let every one of $n$ stride-1 layers apply the same 1-D kernel $w = (w_0, \dots, w_{k-1})$ along both
# axes (the 2-D kernel is $w w^\top$), with $w_i \ge 0$ and $\sum_i w_i = 1$ but not necessarily equal, nor symmetric; tap $i$ sits at
# offset $u_i = i - \tfrac{k - 1}{2}$. Follow B.3's argument and derive, **on paper first**, the ERF's centre (the mean offset of the
# gradient map from the unit, in pixels, along one axis: which way does it move for a kernel heavier on the right?) and its
# standard deviation after $n$ layers, in terms of one offset's mean and variance. Then code
# `my_erf_moments(kernel, depth)` returning `torch.tensor([mean offset, sd])` in float64. The check builds the stack and
# measures both with autograd (`effective_receptive_field`).

# %% tags=["exercise"]
def my_erf_moments(kernel, depth):
    """kernel (k,) float64, non-negative, summing to 1; depth n -> tensor([mean offset, sd]) of the ERF along one axis."""
    ### BEGIN SOLUTION
    offsets = torch.arange(len(kernel), dtype=torch.float64) - (len(kernel) - 1) / 2  # (k,) u_i
    mean = (kernel * offsets).sum()  # E[U]
    variance = (kernel * offsets**2).sum() - mean**2  # Var(U)
    return torch.stack([depth * mean, torch.sqrt(depth * variance)])  # sums of n independent offsets
    ### END SOLUTION


# %%
def measured_erf_moments(kernel, depth, size=41):
    """Build the stack, measure |dy/dx| of the centre unit with autograd, read off its mean offset and sd (columns)."""
    layers = []
    for _ in range(depth):
        conv = nn.Conv2d(1, 1, len(kernel), padding=len(kernel) // 2, bias=False).double()
        with torch.no_grad():
            conv.weight.copy_(torch.outer(kernel, kernel)[None, None])  # (1, 1, k, k)
        layers.append(conv)
    erf = effective_receptive_field(nn.Sequential(*layers), torch.ones(1, 1, size, size, **f64))  # (size, size)
    columns = torch.arange(size, dtype=torch.float64) - size // 2  # offset from the centre unit
    return torch.tensor([(erf.sum(0) * columns).sum().item(), erf_spread(erf)[1]], **f64)


erf_kernels = [(torch.tensor([1 / 3, 1 / 3, 1 / 3], **f64), 4), (torch.tensor([0.25, 0.5, 0.25], **f64), 6),
               (torch.tensor([0.1, 0.3, 0.6], **f64), 5), (torch.tensor([0.5, 0.1, 0.1, 0.1, 0.2], **f64), 3)]
course_lib.core.check.check_function(my_erf_moments, measured_erf_moments, erf_kernels, name="my_erf_moments",
                                     atol=1e-8)

# %%
course_lib.core.check.show_solution('''
# Along one axis the gradient map of n layers is the law of U_1 + ... + U_n, the U independent with P(U = u_i) = w_i
# (B.3; F.conv2d correlates, y_m = sum_i w_i x_(m + u_i), so the offsets enter with a plus sign). Means and variances of
# independent variables add: centre n E[U] (to the right for a kernel heavier on the right), sd sqrt(n Var U).
def my_erf_moments(kernel, depth):
    u = torch.arange(len(kernel), dtype=torch.float64) - (len(kernel) - 1) / 2
    m = (kernel * u).sum()
    return torch.stack([depth * m, (depth * ((kernel * u**2).sum() - m**2)).sqrt()])
''')

# %% [markdown]
# **Exercise 6 (longer, for the `cpu` profile): train with CutMix.** Copy the training cell of C.3 and replace the loss
# by one that draws $\lambda_0 \sim \operatorname{Uniform}(0, 1)$ and a box per batch, mixes the batch with `cutmix` (or `mixup` with
# $\lambda \sim \operatorname{Beta}(0.2, 0.2)$), and returns `cross_entropy(model(mixed), soft_labels)`. Compare the test accuracy and, with the
# widget of E.3, the predictions on mixed images. Then compare the models' confidence on test images they get wrong.
#
# ---
# ## Summary
#
# | key equation | derived in | checked by |
# |---|---|---|
# | output size $n' = \lfloor (n + 2p - d(k - 1) - 1)/s \rfloor + 1$ | A.3 | the grid of about 4,000 layers in A.3 (against `F.conv2d`, pooling and the transposed convolution); exercise 1 |
# | receptive field $r_l = r_{l-1} + (k'_l - 1)\, j_{l-1}$, jump $j_l = j_{l-1} s_l$ | B.1 | autograd on 30 random chains in B.2; exercise 2 |
# | ERF of $n$ averaging layers: $\operatorname{sd} = \sqrt{n (k^2 - 1)/12}$, against the field's half-width $n (k - 1)/2$ | B.3 | the exact $n$-fold convolution in B.3; exercise 5 |
# | Grad-CAM weights $\alpha_k^c = \frac{1}{Z} \sum_{i,j} \partial y^c / \partial A^k_{ij}$, and $\alpha_k^c = W_{ck}/Z$ at a global-average-pooling head (Grad-CAM is CAM) | D.5 | the tensor hook and the CAM identities in D.5; exercise 3 |
# | soft labels: $H(\lambda e_a + (1 - \lambda) e_b, q) = \lambda H(e_a, q) + (1 - \lambda) H(e_b, q)$ | E.2 | the soft-label and constant-image checks in E.2 |
#
# **Three things to remember.**
#
# 1. What a unit *can* see is not what it *listens to*: the receptive field grows like the depth, the effective
#    receptive field like its square root, and BatchNorm in training mode or a global pooling makes the field the
#    whole image.
# 2. Saliency and Grad-CAM are gradients of the class **logit**. A map that "looks right" proves little until it
#    differs from the map of an untrained network (D.4).
# 3. A mixed image needs a label mixed in the same proportions as its pixels: the $\lambda$ actually used, not the one drawn.
#
# ## G. Discussion questions
#
# 1. The last layer of SmallCNN sees $20 \times 20$ of the $28 \times 28$ pixels, and its effective receptive field is concentrated in the middle of that square (D.3). The
#    classifier still uses the whole image. Where does the rest come from? What would change if we replaced global
#    average pooling by flattening the $7 \times 7 \times 128$ map into a linear layer (for the receptive field, for CAM, for the
#    number of parameters)?
# 2. B.4 measured growing, not vanishing, gradients in a deep plain BatchNorm network. What did He et al. observe that
#    made them call the problem "degradation", and why does a block that can easily represent the identity help with it?
#    What does a residual connection do to the receptive field (think of the paths of every length) and to the ERF?
# 3. At `conv3` Grad-CAM equals CAM (D.5). At `conv2` it does not: why are the gradients no longer constant over positions,
#    and what does averaging them throw away?
# 4. The untrained network's saliency outlines each garment at least as sharply as the trained model's (D.4), although
#    it has learned nothing. What, then, does a saliency map that "looks right" prove? Design a test that a good
#    explanation method must pass.
# 5. CutMix gives the pasted image the weight $1 - \lambda$ whatever the box contains. On Fashion-MNIST, with a black background,
#    when is that label wrong, and how would you fix it (hint: weight by the pasted image's content, or pick the box
#    where the object is)? Does MixUp have the same problem?
