"""Convolutional networks, chapter 03: arithmetic, receptive fields, a small CNN, and ways to look inside it.

- Arithmetic: ``conv_output_size`` (``floor((n + 2p - d(k - 1) - 1) / s) + 1``), ``receptive_field`` (the
  recursion ``r_l = r_{l-1} + (k_l - 1) j_{l-1}``, ``j_l = j_{l-1} s_l``), ``layer_specs`` (the layers of a model).
- Measured by autograd: ``input_gradient``, ``measured_receptive_field`` (which input pixels can move one
  output unit), ``effective_receptive_field`` (how much they move it, on average) and ``erf_spread``.
- The model: ``SmallCNN`` (three conv-BN-ReLU stages, global average pooling, a linear head), with
  ``forward_with_activations`` for the maps of every stage; ``classification_loss`` for training.
- Looking inside: ``saliency`` (Simonyan et al. 2014), ``grad_cam`` and ``grad_cam_map`` (Selvaraju et al. 2017).
- Augmentation: ``random_crop_flip``, ``affine_transform``, ``rand_augment`` (Cubuk et al. 2020),
  ``mixup`` (Zhang et al. 2018), ``cutmix_box`` and ``cutmix`` (Yun et al. 2019), which return soft labels
  whose weights are the mixing fractions actually used.

Images are float tensors ``(N, C, H, W)``; Fashion-MNIST pixels lie in ``[0, 1]``. Soft-label cross entropy
is ``course_lib.topics.losses.cross_entropy`` with probability targets. Built step by step in chapter 03.
"""
from __future__ import annotations

import math
from typing import Callable, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from course_lib.topics.losses import cross_entropy

# ------------------------------------------------------------------------------------ arithmetic


def _check_int(name: str, value, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} ({value!r})")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")


def conv_output_size(n: int, kernel: int, stride: int = 1, padding: int = 0, dilation: int = 1) -> int:
    """Output length of a convolution (or pooling) along one axis of length ``n``. Chapter 03, A.3.

    The kernel spans ``dilation * (kernel - 1) + 1`` input pixels; it starts at 0, stride, 2 stride, ...
    as long as it fits in the padded input of length ``n + 2 padding``:
    ``floor((n + 2 padding - dilation (kernel - 1) - 1) / stride) + 1`` (PyTorch's rule, ``ceil_mode=False``).
    """
    _check_int("n", n, 1)
    _check_int("kernel", kernel, 1)
    _check_int("stride", stride, 1)
    _check_int("padding", padding, 0)
    _check_int("dilation", dilation, 1)
    span = dilation * (kernel - 1) + 1
    if n + 2 * padding < span:
        raise ValueError(f"the kernel spans {span} pixels but the padded input has only {n + 2 * padding}: "
                         "use a smaller kernel or dilation, or more padding")
    return (n + 2 * padding - span) // stride + 1


class LayerSpec(NamedTuple):
    """One convolution or pooling layer, as far as geometry goes (square kernels). Chapter 03, B.2."""
    kernel: int
    stride: int = 1
    padding: int = 0
    dilation: int = 1


class ReceptiveField(NamedTuple):
    """After a layer: receptive field size ``r``, jump ``j`` (input pixels between neighbouring units) and
    ``start``, the input coordinate of the centre of unit 0 (pixel centres at 0, 1, ..., may be negative).

    Taught in chapter 03, B.1.
    """
    r: int
    j: int
    start: float


def _as_spec(layer) -> LayerSpec:
    if isinstance(layer, LayerSpec):
        return layer
    if isinstance(layer, int):
        layer = (layer,)
    if not isinstance(layer, (tuple, list)) or not 1 <= len(layer) <= 4:
        raise ValueError(f"a layer is (kernel, stride[, padding[, dilation]]), got {layer!r}")
    spec = LayerSpec(*layer)
    _check_int("kernel", spec.kernel, 1)
    _check_int("stride", spec.stride, 1)
    _check_int("padding", spec.padding, 0)
    _check_int("dilation", spec.dilation, 1)
    return spec


def receptive_field(layers) -> list[ReceptiveField]:
    """Receptive field, jump and start after each layer of a chain, for layers ``(kernel, stride[, padding[, dilation]])``.

    With ``r_0 = 1, j_0 = 1, start_0 = 0`` and the dilated span ``k' = d (k - 1) + 1``::

        r_l = r_{l-1} + (k'_l - 1) j_{l-1},   j_l = j_{l-1} s_l,   start_l = start_{l-1} + ((k'_l - 1) / 2 - p_l) j_{l-1}

    Unit ``i`` of layer ``l`` then sees input pixels ``start_l + i j_l - (r_l - 1) / 2 ... start_l + i j_l + (r_l - 1) / 2``.

    Taught in chapter 03, B.1.
    """
    specs = [_as_spec(layer) for layer in layers]
    if not specs:
        raise ValueError("receptive_field needs at least one layer")
    r, j, start = 1, 1, 0.0
    out = []
    for spec in specs:
        span = spec.dilation * (spec.kernel - 1) + 1
        r, start, j = r + (span - 1) * j, start + ((span - 1) / 2 - spec.padding) * j, j * spec.stride
        out.append(ReceptiveField(r, j, start))
    return out


def receptive_field_box(layers, position: int) -> tuple[float, float]:
    """First and last input coordinate (inclusive, unclipped) seen by unit ``position`` of the last layer.

    Taught in chapter 03, B.2.
    """
    last = receptive_field(layers)[-1]
    centre = last.start + position * last.j
    return centre - (last.r - 1) / 2, centre + (last.r - 1) / 2


def layer_specs(model: nn.Module) -> list[LayerSpec]:
    """The Conv2d / MaxPool2d / AvgPool2d layers of ``model`` in registration order, as ``LayerSpec``. Chapter 03, B.2.

    Right for a chain (each layer feeds the next), which is how ``SmallCNN`` registers its layers; a model
    with branches (a ResNet) needs its longest path written out by hand.
    """
    specs = []
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)):
            values = [getattr(module, name, 1) for name in ("kernel_size", "stride", "padding", "dilation")]
            values = [v if isinstance(v, int) else v[0] for v in values]
            if isinstance(module, nn.Conv2d) and (module.kernel_size[0] != module.kernel_size[1]
                                                  or module.stride[0] != module.stride[1]):
                raise ValueError(f"{module} is not square; receptive_field handles square layers only")
            specs.append(LayerSpec(*values))
    if not specs:
        raise ValueError("the model has no Conv2d, MaxPool2d or AvgPool2d layer")
    return specs


# ------------------------------------------------------------------------------------ measured by autograd


def _feature_map(feature_fn: Callable, x: torch.Tensor) -> torch.Tensor:
    out = feature_fn(x)
    if not isinstance(out, torch.Tensor) or out.ndim != 4:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(f"feature_fn must map (N, C, H, W) images to a (N, C', h, w) feature map, got {shape}")
    return out


def _in_eval_mode(feature_fn):
    """Modules go to eval mode (BatchNorm uses its running statistics); returns the previous mode to restore."""
    if isinstance(feature_fn, nn.Module):
        was_training = feature_fn.training
        feature_fn.eval()
        return was_training
    return None


def input_gradient(feature_fn: Callable, x: torch.Tensor, position: tuple[int, int],
                   channel: int | None = None) -> torch.Tensor:
    """d y / d x for one output unit ``y = features[0, channel, i, j]`` (all channels summed if ``channel`` is None).

    ``feature_fn`` maps ``x`` of shape ``(1, C, H, W)`` to a feature map ``(1, C', h, w)``; returns ``(C, H, W)``.

    Taught in chapter 03, B.2.
    """
    if x.ndim != 4 or x.shape[0] != 1:
        raise ValueError(f"x must be one image of shape (1, C, H, W), got {tuple(x.shape)}")
    was_training = _in_eval_mode(feature_fn)
    x = x.detach().clone().requires_grad_(True)
    features = _feature_map(feature_fn, x)
    i, j = position
    if not (0 <= i < features.shape[2] and 0 <= j < features.shape[3]):
        raise ValueError(f"position {position} is outside the {features.shape[2]}x{features.shape[3]} feature map")
    unit = features[0, :, i, j] if channel is None else features[0, channel, i, j]
    (gradient,) = torch.autograd.grad(unit.sum(), x)
    if was_training:
        feature_fn.train()
    return gradient[0]


class MeasuredField(NamedTuple):
    """Input pixels whose gradient was non-zero for at least one random input; ``rows`` and ``cols`` are the
    first and last such index (inclusive). Chapter 03, B.2."""
    support: torch.Tensor
    rows: tuple[int, int]
    cols: tuple[int, int]

    @property
    def size(self) -> tuple[int, int]:
        return self.rows[1] - self.rows[0] + 1, self.cols[1] - self.cols[0] + 1


def measured_receptive_field(feature_fn: Callable, input_shape: tuple[int, int, int], position: tuple[int, int],
                             n_inputs: int = 8, generator: torch.Generator | None = None) -> MeasuredField:
    """The receptive field of one output unit, measured: union over ``n_inputs`` random normal inputs of the pixels
    where ``d y / d x`` is non-zero. Chapter 03, B.2.

    One input is not enough when the network has ReLUs (a unit that is off passes no gradient); the union over
    several inputs recovers the field. Max pooling sends the gradient to the arg-max of each window only, so
    through several of them few pixels are reached: measure a max-pooling geometry with average pooling (same
    windows, same field). Choose a unit whose field lies inside the image, or the measurement is clipped.
    """
    if len(input_shape) != 3:
        raise ValueError(f"input_shape is (C, H, W), got {input_shape}")
    parameter = next(feature_fn.parameters(), None) if isinstance(feature_fn, nn.Module) else None
    dtype, device = (parameter.dtype, parameter.device) if parameter is not None else (torch.float32, "cpu")
    support = torch.zeros(input_shape[1:], dtype=torch.bool)
    for _ in range(n_inputs):
        x = torch.randn((1, *input_shape), generator=generator).to(device=device, dtype=dtype)
        support |= (input_gradient(feature_fn, x, position) != 0).any(dim=0).cpu()
    if not support.any():
        raise ValueError("the gradient is zero everywhere: is the unit dead for every input, or detached?")
    rows, cols = support.any(dim=1).nonzero()[:, 0], support.any(dim=0).nonzero()[:, 0]
    return MeasuredField(support, (rows[0].item(), rows[-1].item()), (cols[0].item(), cols[-1].item()))


def effective_receptive_field(feature_fn: Callable, inputs: torch.Tensor, position: tuple[int, int] | None = None,
                              channel: int | None = None, batch_size: int = 64) -> torch.Tensor:
    """The effective receptive field (Luo et al. 2016): ``|d y / d x|`` of one output unit, summed over input channels,
    averaged over the images ``inputs`` (N, C, H, W), normalised to sum 1. Returns ``(H, W)``. Chapter 03, B.3.

    ``position`` defaults to the centre unit of the feature map. The images go through in batches, so
    ``feature_fn`` must treat every image on its own (a module is put in eval mode, so BatchNorm is).
    """
    if inputs.ndim != 4:
        raise ValueError(f"inputs must be images (N, C, H, W), got shape {tuple(inputs.shape)}")
    was_training = _in_eval_mode(feature_fn)
    total = torch.zeros(inputs.shape[2:], dtype=torch.float64)
    for start in range(0, len(inputs), batch_size):
        x = inputs[start:start + batch_size].detach().clone().requires_grad_(True)
        features = _feature_map(feature_fn, x)  # (B, C', h, w)
        if position is None:
            position = (features.shape[2] // 2, features.shape[3] // 2)
        i, j = position
        if not (0 <= i < features.shape[2] and 0 <= j < features.shape[3]):
            raise ValueError(f"position {position} is outside the {features.shape[2]}x{features.shape[3]} feature map")
        unit = features[:, :, i, j] if channel is None else features[:, channel, i, j]
        (gradient,) = torch.autograd.grad(unit.sum(), x)  # image b's unit depends on image b only
        total += gradient.abs().sum(dim=(0, 1)).double().cpu()
    if was_training:
        feature_fn.train()
    if total.sum() == 0:
        raise ValueError("the gradient is zero for every input: the unit is dead; pick another unit or channel")
    return total / total.sum()


def erf_spread(erf: torch.Tensor) -> tuple[float, float]:
    """Standard deviation (rows, columns), in pixels, of a non-negative map ``(H, W)`` read as a distribution.

    Taught in chapter 03, B.3.
    """
    if erf.ndim != 2 or (erf < 0).any():
        raise ValueError("erf must be a non-negative (H, W) map")
    p = erf.double() / erf.sum()
    rows = torch.arange(p.shape[0], dtype=torch.float64)
    cols = torch.arange(p.shape[1], dtype=torch.float64)
    p_rows, p_cols = p.sum(1), p.sum(0)
    var_rows = (p_rows * rows**2).sum() - (p_rows * rows).sum() ** 2
    var_cols = (p_cols * cols**2).sum() - (p_cols * cols).sum() ** 2
    return math.sqrt(var_rows.item()), math.sqrt(var_cols.item())


# ------------------------------------------------------------------------------------ the model


class SmallCNN(nn.Module):
    """Three stages of conv -> BatchNorm -> ReLU (max-pooling 2x2 between them), global average pooling, a linear head.

    Shapes for a (N, 1, 28, 28) input with the default ``channels=(32, 64, 128)``::

        conv1 (5x5, pad 2)  (N, 32, 28, 28) -> pool1 (N, 32, 14, 14)
        conv2 (3x3, pad 1)  (N, 64, 14, 14) -> pool2 (N, 64, 7, 7)
        conv3 (3x3, pad 1)  (N, 128, 7, 7)  -> mean over (h, w): (N, 128) -> head: logits (N, num_classes)

    The stages are convolutional, so any image size works; ``forward_with_activations`` also returns the
    rectified map of each stage, under the names in ``LAYERS``.

    Taught in chapter 03, C.2.
    """

    LAYERS = ("conv1", "conv2", "conv3")

    def __init__(self, channels: tuple[int, int, int] = (32, 64, 128), first_kernel: int = 5, in_channels: int = 1,
                 num_classes: int = 10, batch_norm: bool = True):
        super().__init__()
        if len(channels) != 3 or min(channels) < 1:
            raise ValueError(f"channels must be three positive widths, got {channels}")
        if first_kernel % 2 != 1:
            raise ValueError(f"first_kernel must be odd (so that padding keeps the size), got {first_kernel}")
        c1, c2, c3 = channels
        self.config = dict(channels=tuple(channels), first_kernel=first_kernel, in_channels=in_channels,
                           num_classes=num_classes, batch_norm=batch_norm)

        def norm(width):
            return nn.BatchNorm2d(width) if batch_norm else nn.Identity()

        # registered in the order the forward pass uses them (layer_specs relies on it)
        self.conv1 = nn.Conv2d(in_channels, c1, first_kernel, padding=first_kernel // 2, bias=not batch_norm)
        self.bn1 = norm(c1)
        self.pool1 = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(c1, c2, 3, padding=1, bias=not batch_norm)
        self.bn2 = norm(c2)
        self.pool2 = nn.MaxPool2d(2)
        self.conv3 = nn.Conv2d(c2, c3, 3, padding=1, bias=not batch_norm)
        self.bn3 = norm(c3)
        self.head = nn.Linear(c3, num_classes)

    def forward_with_activations(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Logits (N, num_classes) and the rectified map of each stage, ``{"conv1": (N, c1, H, W), ...}``."""
        if x.ndim != 4 or x.shape[1] != self.config["in_channels"]:
            raise ValueError(f"expected images of shape (N, {self.config['in_channels']}, H, W), got {tuple(x.shape)}")
        activations = {}
        h = F.relu(self.bn1(self.conv1(x)))  # (N, c1, H, W)
        activations["conv1"] = h
        h = F.relu(self.bn2(self.conv2(self.pool1(h))))  # (N, c2, H/2, W/2)
        activations["conv2"] = h
        h = F.relu(self.bn3(self.conv3(self.pool2(h))))  # (N, c3, H/4, W/4)
        activations["conv3"] = h
        logits = self.head(h.mean(dim=(2, 3)))  # global average pooling, then (N, num_classes)
        return logits, activations

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_with_activations(x)[0]

    def features(self, x: torch.Tensor, layer: str = "conv3") -> torch.Tensor:
        """The rectified map of one stage, (N, C, h, w)."""
        if layer not in self.LAYERS:
            raise ValueError(f"layer must be one of {self.LAYERS}, got {layer!r}")
        return self.forward_with_activations(x)[1][layer]


def classification_loss(model: nn.Module, batch, augment: Callable | None = None) -> torch.Tensor:
    """Mean cross entropy of ``model`` on ``batch = (x, y)``; ``augment(x)`` is applied to the images first.

    ``y`` may be class indices (N,) or soft labels (N, num_classes) (MixUp, CutMix).

    Taught in chapter 03, C.3.
    """
    x, y = batch
    if augment is not None:
        x = augment(x)
    return cross_entropy(model(x), y)


# ------------------------------------------------------------------------------------ looking inside


def _targets(target, n: int, device) -> torch.Tensor:
    target = torch.as_tensor(target, device=device).long()
    if target.ndim == 0:
        target = target.expand(n)
    if target.shape != (n,):
        raise ValueError(f"target must be one class index or one per image, shape ({n},), got {tuple(target.shape)}")
    return target


def saliency(model: nn.Module, x: torch.Tensor, target) -> torch.Tensor:
    """Simonyan et al.'s saliency: ``max over channels |d y^c / d x|`` of the class *score* (logit) ``y^c``.

    ``x`` (N, C, H, W); ``target`` one class index or (N,). Returns (N, H, W). The model runs in eval mode, so
    each image's gradient is its own.

    Taught in chapter 03, D.4.
    """
    if x.ndim != 4:
        raise ValueError(f"x must be images (N, C, H, W), got shape {tuple(x.shape)}")
    was_training = model.training
    model.eval()
    x = x.detach().clone().requires_grad_(True)
    logits = model(x)
    target = _targets(target, len(x), logits.device)
    (gradient,) = torch.autograd.grad(logits.gather(1, target[:, None]).sum(), x)
    model.train(was_training)
    return gradient.abs().amax(dim=1)


def grad_cam_map(activations: torch.Tensor, gradients: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Grad-CAM from a layer's maps ``A`` and the gradients ``d y^c / d A``, both (N, K, h, w). Chapter 03, D.5.

    ``alpha_k = mean over (i, j) of d y^c / d A^k_ij`` (N, K), and the map ``ReLU(sum_k alpha_k A^k)`` (N, h, w).
    """
    if activations.shape != gradients.shape or activations.ndim != 4:
        raise ValueError(f"activations and gradients must both be (N, K, h, w), got {tuple(activations.shape)} "
                         f"and {tuple(gradients.shape)}")
    weights = gradients.mean(dim=(2, 3))  # (N, K)
    heatmap = F.relu((weights[:, :, None, None] * activations).sum(dim=1))  # (N, h, w)
    return heatmap, weights


def grad_cam(model: nn.Module, x: torch.Tensor, target, layer: str = "conv3") -> tuple[torch.Tensor, torch.Tensor]:
    """Grad-CAM of the class score (logit) ``y^c`` at one layer: the heatmap (N, h, w) and the channel weights (N, K).

    ``model`` must have ``forward_with_activations(x) -> (logits, {layer: maps})``, as ``SmallCNN`` does; for another
    model, collect the maps with a forward hook and call ``grad_cam_map``.

    Taught in chapter 03, D.5.
    """
    if not hasattr(model, "forward_with_activations"):
        raise TypeError(f"{type(model).__name__} has no forward_with_activations; collect the layer's maps with "
                        "register_forward_hook and call grad_cam_map(maps, gradients) instead")
    was_training = model.training
    model.eval()
    logits, activations = model.forward_with_activations(x)
    if layer not in activations:
        raise ValueError(f"layer must be one of {list(activations)}, got {layer!r}")
    maps = activations[layer]  # (N, K, h, w)
    target = _targets(target, len(x), logits.device)
    (gradients,) = torch.autograd.grad(logits.gather(1, target[:, None]).sum(), maps)
    model.train(was_training)
    return grad_cam_map(maps.detach(), gradients)


# ------------------------------------------------------------------------------------ augmentation


def random_crop_flip(x: torch.Tensor, padding: int = 2, flip: bool = True,
                     generator: torch.Generator | None = None) -> torch.Tensor:
    """Pad every image by ``padding`` zeros, cut a random crop of the original size, and flip half of them left-right.

    Taught in chapter 03, C.3.
    """
    if x.ndim != 4:
        raise ValueError(f"x must be images (N, C, H, W), got shape {tuple(x.shape)}")
    _check_int("padding", padding, 0)
    n, c, h, w = x.shape
    padded = F.pad(x, (padding, padding, padding, padding))  # (N, C, H + 2p, W + 2p)
    top = torch.randint(0, 2 * padding + 1, (n,), generator=generator).to(x.device)
    left = torch.randint(0, 2 * padding + 1, (n,), generator=generator).to(x.device)
    rows = top[:, None] + torch.arange(h, device=x.device)  # (N, H)
    cols = left[:, None] + torch.arange(w, device=x.device)  # (N, W)
    if flip:
        flipped = torch.rand(n, generator=generator).to(x.device) < 0.5
        cols = torch.where(flipped[:, None], cols.flip(1), cols)
    index = torch.arange(n, device=x.device)[:, None, None]
    return padded.permute(0, 2, 3, 1)[index, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)


def affine_transform(x: torch.Tensor, angle: float = 0.0, scale: float = 1.0, translate: tuple[float, float] = (0.0, 0.0),
                     shear: tuple[float, float] = (0.0, 0.0)) -> torch.Tensor:
    """Rotate (degrees, counter-clockwise), scale, shear (x, y factors) and translate (fractions of the width and
    height; positive = right and down) square images about their centre; bilinear, zeros outside. Chapter 03, E.1."""
    if x.ndim != 4:
        raise ValueError(f"x must be images (N, C, H, W), got shape {tuple(x.shape)}")
    if scale <= 0:
        raise ValueError(f"scale must be positive, got {scale}")
    a = math.radians(angle)
    rotation = torch.tensor([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]], dtype=torch.float64)
    shearing = torch.tensor([[1.0, shear[0]], [shear[1], 1.0]], dtype=torch.float64)
    forward = scale * rotation @ shearing  # input -> output, in coordinates with y pointing up
    flip_y = torch.diag(torch.tensor([1.0, -1.0], dtype=torch.float64))  # y up <-> the grid's y down
    inverse = flip_y @ torch.linalg.inv(forward) @ flip_y  # output -> input, in grid coordinates (what grid_sample needs)
    shift = torch.tensor([2.0 * translate[0], 2.0 * translate[1]], dtype=torch.float64)  # the image spans [-1, 1]
    theta = torch.cat([inverse, (-inverse @ shift)[:, None]], dim=1).to(x.dtype)  # (2, 3)
    grid = F.affine_grid(theta.expand(len(x), 2, 3).to(x.device), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _autocontrast(x, m):
    low, high = x.amin(dim=(1, 2, 3), keepdim=True), x.amax(dim=(1, 2, 3), keepdim=True)
    return (x - low) / (high - low).clamp_min(1e-6)


def _sharpness(x, m):
    kernel = torch.tensor([[1.0, 1, 1], [1, 5, 1], [1, 1, 1]], dtype=x.dtype, device=x.device) / 13
    blurred = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), kernel.expand(x.shape[1], 1, 3, 3), groups=x.shape[1])
    return (x + m * 0.9 * (x - blurred)).clamp(0, 1)  # m > 0 sharpens, m < 0 blurs


# RandAugment's grey-scale operations; each takes the images and a signed strength m in [-1, 1]
RAND_AUGMENT_OPS: dict[str, Callable] = {
    "identity": lambda x, m: x,
    "autocontrast": _autocontrast,
    "rotate": lambda x, m: affine_transform(x, angle=30 * m),
    "shear_x": lambda x, m: affine_transform(x, shear=(0.3 * m, 0.0)),
    "shear_y": lambda x, m: affine_transform(x, shear=(0.0, 0.3 * m)),
    "translate_x": lambda x, m: affine_transform(x, translate=(0.3 * m, 0.0)),
    "translate_y": lambda x, m: affine_transform(x, translate=(0.0, 0.3 * m)),
    "brightness": lambda x, m: (x * (1 + 0.9 * m)).clamp(0, 1),
    "contrast": lambda x, m: ((x - x.mean(dim=(1, 2, 3), keepdim=True)) * (1 + 0.9 * m)
                              + x.mean(dim=(1, 2, 3), keepdim=True)).clamp(0, 1),
    "sharpness": _sharpness,
    "solarize": lambda x, m: torch.where(x >= 1 - abs(m), 1 - x, x),
    "posterize": lambda x, m: torch.floor(x * 2 ** (8 - round(4 * abs(m)))) / 2 ** (8 - round(4 * abs(m))),
}


def rand_augment(x: torch.Tensor, num_ops: int = 2, magnitude: float = 9, max_magnitude: float = 30,
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """RandAugment (Cubuk et al. 2020): apply ``num_ops`` operations drawn uniformly from ``RAND_AUGMENT_OPS``, all at one
    global strength ``magnitude / max_magnitude`` (signed ops get a random sign). No policy search: N and M are the
    only two numbers. The same operations are applied to the whole batch. Chapter 03, E.1."""
    _check_int("num_ops", num_ops, 0)
    if not 0 <= magnitude <= max_magnitude:
        raise ValueError(f"magnitude must be in [0, {max_magnitude}], got {magnitude}")
    names = list(RAND_AUGMENT_OPS)
    for _ in range(num_ops):
        name = names[torch.randint(len(names), (1,), generator=generator).item()]
        sign = 1.0 if torch.rand(1, generator=generator).item() < 0.5 else -1.0
        x = RAND_AUGMENT_OPS[name](x, sign * magnitude / max_magnitude)
    return x


def _soft_labels(y: torch.Tensor, num_classes: int | None) -> torch.Tensor:
    if y.is_floating_point():
        if y.ndim != 2:
            raise ValueError(f"soft labels must be (N, num_classes), got shape {tuple(y.shape)}")
        return y
    if num_classes is None:
        raise ValueError("class-index labels need num_classes to become one-hot vectors")
    if y.ndim != 1:
        raise ValueError(f"class-index labels must be (N,), got shape {tuple(y.shape)}")
    return F.one_hot(y.long(), num_classes).float()


def _permutation(n: int, perm, generator) -> torch.Tensor:
    if perm is None:
        return torch.randperm(n, generator=generator)
    perm = torch.as_tensor(perm).long()
    if perm.shape != (n,):
        raise ValueError(f"perm must index the batch, shape ({n},), got {tuple(perm.shape)}")
    return perm


def mixup(x: torch.Tensor, y: torch.Tensor, lam: float, perm: torch.Tensor | None = None, num_classes: int | None = None,
          generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """MixUp: ``x~ = lam x + (1 - lam) x[perm]`` and ``y~ = lam y + (1 - lam) y[perm]`` (one-hot or soft labels).

    ``perm`` pairs each image with another of the batch (a random permutation if None). Returns
    ``(x~ (N, C, H, W), y~ (N, num_classes))``. Zhang et al. draw ``lam ~ Beta(alpha, alpha)`` once per batch.

    Taught in chapter 03, E.2.
    """
    if not 0.0 <= float(lam) <= 1.0:
        raise ValueError(f"lam must lie in [0, 1], got {lam}")
    if len(x) != len(y):
        raise ValueError(f"x and y differ in length: {len(x)} vs {len(y)}")
    perm = _permutation(len(x), perm, generator).to(x.device)
    soft = _soft_labels(y, num_classes)
    return lam * x + (1 - lam) * x[perm], lam * soft + (1 - lam) * soft[perm]


class Box(NamedTuple):
    """A rectangle of pixels, rows ``top:bottom`` and columns ``left:right`` (half-open). Chapter 03, E.3."""
    top: int
    left: int
    bottom: int
    right: int

    @property
    def area(self) -> int:
        return (self.bottom - self.top) * (self.right - self.left)


def cutmix_box(height: int, width: int, lam: float, center: tuple[int, int] | None = None,
               generator: torch.Generator | None = None) -> Box:
    """CutMix's box: sides ``H sqrt(1 - lam)`` and ``W sqrt(1 - lam)`` (rounded down), centred at ``center`` (uniform over
    the image if None), clipped to the image. Clipping (and rounding) make its area differ from ``(1 - lam) H W``:
    use ``cutmix``'s returned fraction as the label weight, not ``lam``. Chapter 03, E.3."""
    if not 0.0 <= float(lam) <= 1.0:
        raise ValueError(f"lam must lie in [0, 1], got {lam}")
    cut_h, cut_w = int(height * math.sqrt(1 - lam)), int(width * math.sqrt(1 - lam))
    if center is None:
        center = (torch.randint(height, (1,), generator=generator).item(),
                  torch.randint(width, (1,), generator=generator).item())
    cy, cx = center
    top, bottom = min(max(cy - cut_h // 2, 0), height), min(max(cy + cut_h - cut_h // 2, 0), height)
    left, right = min(max(cx - cut_w // 2, 0), width), min(max(cx + cut_w - cut_w // 2, 0), width)
    return Box(top, left, bottom, right)


def cutmix(x: torch.Tensor, y: torch.Tensor, box: Box, perm: torch.Tensor | None = None, num_classes: int | None = None,
           generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor, float]:
    """CutMix: paste the ``box`` of the partner image ``x[perm]`` into each image. The label weights are the pixel fractions:
    ``lam = 1 - area(box) / (H W)`` for the image itself and ``1 - lam`` for the partner. Chapter 03, E.3.

    Returns ``(x~ (N, C, H, W), y~ (N, num_classes), lam)``.
    """
    if x.ndim != 4 or len(x) != len(y):
        raise ValueError(f"x must be images (N, C, H, W) with one label each, got {tuple(x.shape)} and {len(y)} labels")
    h, w = x.shape[2:]
    if not (0 <= box.top <= box.bottom <= h and 0 <= box.left <= box.right <= w):
        raise ValueError(f"{box} does not lie inside a {h}x{w} image")
    perm = _permutation(len(x), perm, generator).to(x.device)
    soft = _soft_labels(y, num_classes)
    mixed = x.clone()
    mixed[:, :, box.top:box.bottom, box.left:box.right] = x[perm][:, :, box.top:box.bottom, box.left:box.right]
    lam = 1 - box.area / (h * w)
    return mixed, lam * soft + (1 - lam) * soft[perm], lam


# ------------------------------------------------------------------------------------ the picture


def schematic():
    """SmallCNN, drawn: three conv -> BatchNorm -> ReLU stages with 2x2 max-pooling between them, global average
    pooling, a linear head and the cross entropy; each stage with its output shape (channels x height x width, for a
    28 x 28 input) and its receptive field r and jump j in input pixels (the recursion of B.1). Returns the Figure.

    Drawn in chapter 03, C.2 (first shown under "See it work first"; the receptive fields are derived in B.1).
    """
    from course_lib.core.diagram import arrow, box, canvas, legend, note

    fig, ax = canvas(11, 4.8, title="SmallCNN: what each stage outputs, and how much of the image one unit can see")
    top, bottom, w, h = 3.35, 1.35, 1.65, 0.8
    xs = [1.0, 3.25, 5.5, 7.75, 10.0]
    stages_top = [("image $x$", "data", "1 × 28 × 28", "r = 1, j = 1"),
                  ("conv1 5×5, pad 2\n+ BN + ReLU", "network", "32 × 28 × 28", "r = 5, j = 1"),
                  ("max-pool 2×2\nstride 2", "operation", "32 × 14 × 14", "r = 6, j = 2"),
                  ("conv2 3×3, pad 1\n+ BN + ReLU", "network", "64 × 14 × 14", "r = 10, j = 2"),
                  ("max-pool 2×2\nstride 2", "operation", "64 × 7 × 7", "r = 12, j = 4")]
    # the second row runs right to left, under the first
    stages_bottom = [("conv3 3×3, pad 1\n+ BN + ReLU", "network", "128 × 7 × 7", "r = 20, j = 4"),
                     ("global average\npool (mean over h, w)", "operation", "128", "every pixel"),
                     ("linear head\n128 → 10", "network", "10 logits", ""),
                     ("cross entropy\nwith the label $y$", "loss", "a number", "")]
    boxes = []
    for x, (text, role, shape, field) in zip(xs, stages_top):
        boxes.append(box(ax, x, top, text, w=w, h=h, role=role, fontsize=8))
        note(ax, x, top + 0.62, shape + ("\n" + field if field else ""), fontsize=7.5)
    for x, (text, role, shape, field) in zip(xs[::-1], stages_bottom):
        boxes.append(box(ax, x, bottom, text, w=w, h=h, role=role, fontsize=8))
        note(ax, x, bottom - 0.65, shape + ("\n" + field if field else ""), fontsize=7.5)
    for a, b in zip(boxes[:4], boxes[1:5]):
        arrow(ax, a.right, b.left)
    arrow(ax, boxes[4].bottom, boxes[5].top)
    for a, b in zip(boxes[5:8], boxes[6:9]):
        arrow(ax, a.left, b.right)
    note(ax, 1.0, 2.35, "above / below each box:\noutput shape (C × H × W),\nreceptive field r and jump j",
         fontsize=7.5)
    legend(ax, ["data", "network", "operation", "loss"], loc="lower left")
    return fig
