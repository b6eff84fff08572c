"""course_lib.topics.backprop: MLP, manual_forward_backward, mlp_loss, numerical_gradient, relative_error."""
import pytest
import torch
import torch.nn.functional as F

from course_lib.topics.backprop import MLP, manual_forward_backward, mlp_loss, numerical_gradient, relative_error


@pytest.fixture
def model64():
    torch.manual_seed(0)
    return MLP(n_hidden=32).double()


@pytest.fixture
def batch64():
    g = torch.Generator().manual_seed(1)
    return torch.rand(16, 784, generator=g, dtype=torch.float64), torch.randint(0, 10, (16,), generator=g)


def _params(model):
    return model.fc1.weight, model.fc1.bias, model.fc2.weight, model.fc2.bias


def test_mlp_structure():
    model = MLP()
    assert (model.fc1.in_features, model.fc1.out_features) == (784, 500)
    assert (model.fc2.in_features, model.fc2.out_features) == (500, 10)
    assert sum(p.numel() for p in model.parameters()) == 784 * 500 + 500 + 500 * 10 + 10
    small = MLP(n_in=6, n_hidden=4, n_out=3)
    assert small(torch.zeros(2, 6)).shape == (2, 3)


@pytest.mark.parametrize("shape", [(5, 1, 28, 28), (5, 784), (5, 28, 28)])
def test_mlp_forward_shapes(shape):
    model = MLP(n_hidden=16)
    x = torch.rand(shape)
    logits = model(x)
    assert logits.shape == (5, 10) and logits.dtype == torch.float32
    assert torch.allclose(logits, model(x.reshape(5, 784)))


def test_mlp_forward_is_linear_relu_linear():
    model = MLP(n_hidden=8)
    x = torch.rand(3, 784)
    expected = F.linear(torch.relu(F.linear(x, model.fc1.weight, model.fc1.bias)), model.fc2.weight, model.fc2.bias)
    assert torch.allclose(model(x), expected)


def test_manual_forward_backward_equals_autograd(model64, batch64):
    x, y = batch64
    loss, grads = manual_forward_backward(x, y, *_params(model64))
    reference = F.cross_entropy(model64(x), y)
    reference.backward()
    assert loss.shape == () and torch.allclose(loss, reference.detach(), atol=1e-12)
    assert set(grads) == {"W1", "b1", "W2", "b2"}
    for name, param in zip(("W1", "b1", "W2", "b2"), _params(model64)):
        assert grads[name].shape == param.shape
        assert relative_error(grads[name], param.grad) < 1e-10, name


def test_manual_forward_backward_shapes_follow_hidden_size():
    torch.manual_seed(0)
    model = MLP(n_in=5, n_hidden=7, n_out=3).double()
    x, y = torch.randn(4, 5, dtype=torch.float64), torch.tensor([0, 2, 1, 2])
    _, grads = manual_forward_backward(x, y, *_params(model))
    assert grads["W1"].shape == (7, 5) and grads["b1"].shape == (7,)
    assert grads["W2"].shape == (3, 7) and grads["b2"].shape == (3,)


def test_manual_forward_backward_uses_no_autograd(model64, batch64):
    x, y = batch64
    loss, grads = manual_forward_backward(x, y, *_params(model64))
    assert not loss.requires_grad and not any(g.requires_grad for g in grads.values())
    assert all(p.grad is None for p in model64.parameters())


def test_manual_forward_backward_float32(batch64):
    torch.manual_seed(0)
    model = MLP(n_hidden=16)
    x, y = batch64[0].float(), batch64[1]
    loss, grads = manual_forward_backward(x, y, *_params(model))
    reference = F.cross_entropy(model(x), y)
    reference.backward()
    assert abs(loss.item() - reference.item()) < 1e-5
    assert relative_error(grads["W1"], model.fc1.weight.grad) < 1e-4


def test_manual_forward_backward_large_logits_stay_finite(model64, batch64):
    x, y = batch64
    W1, b1, W2, b2 = (p.detach() for p in _params(model64))
    loss, grads = manual_forward_backward(x * 1e4, y, W1, b1, W2 * 100, b2)
    assert torch.isfinite(loss) and all(torch.isfinite(g).all() for g in grads.values())


@pytest.mark.parametrize("shape", [(16, 1, 28, 28), (16, 28, 28), (16, 783), (784,)])
def test_manual_forward_backward_bad_x(model64, shape):
    with pytest.raises(ValueError) as err:
        manual_forward_backward(torch.rand(shape, dtype=torch.float64), torch.zeros(16, dtype=torch.long),
                                *_params(model64))
    assert "x must have shape (N, 784)" in str(err.value) and "flatten" in str(err.value)


@pytest.mark.parametrize("y", [torch.zeros(15, dtype=torch.long), torch.zeros(16, 1, dtype=torch.long),
                               torch.zeros(16, dtype=torch.int32), torch.zeros(16), torch.zeros(16, 10)])
def test_manual_forward_backward_bad_y(model64, y):
    with pytest.raises(ValueError, match=r"y must be int64 class indices of shape \(16,\)"):
        manual_forward_backward(torch.rand(16, 784, dtype=torch.float64), y, *_params(model64))


def test_mlp_loss(model64, batch64):
    x, y = batch64
    loss = mlp_loss(model64, (x, y))
    assert loss.shape == () and torch.allclose(loss, F.cross_entropy(model64(x), y))
    loss.backward()
    assert model64.fc1.weight.grad is not None


# ------------------------------------------------------------------------------------ gradient checks

def test_numerical_gradient_of_a_quadratic():
    x = torch.tensor([[1.0, -2.0], [0.5, 3.0]], dtype=torch.float64)
    grad = numerical_gradient(lambda t: (t**2).sum() + t[0, 1], x)
    assert grad.shape == x.shape and grad.dtype == torch.float64
    assert torch.allclose(grad, 2 * x + torch.tensor([[0.0, 1.0], [0.0, 0.0]], dtype=torch.float64), atol=1e-8)


def test_numerical_gradient_matches_manual_backprop_on_a_few_indices(model64, batch64):
    x, y = batch64
    W1, b1, W2, b2 = (p.detach().clone() for p in _params(model64))
    _, grads = manual_forward_backward(x, y, W1, b1, W2, b2)
    indices = [0, 5, 784 * 3 + 100, W1.numel() - 1]
    numeric = numerical_gradient(lambda w: manual_forward_backward(x, y, w, b1, W2, b2)[0], W1, indices=indices)
    flat_numeric, flat_manual = numeric.view(-1), grads["W1"].reshape(-1)
    for i in indices:
        assert abs(float(flat_numeric[i] - flat_manual[i])) < 1e-7
    others = torch.ones(W1.numel(), dtype=torch.bool)
    others[indices] = False
    assert (flat_numeric[others] == 0).all()  # the other coordinates are left at 0
    numeric_b2 = numerical_gradient(lambda b: manual_forward_backward(x, y, W1, b1, W2, b)[0], b2)
    assert relative_error(numeric_b2, grads["b2"]) < 1e-7


def test_numerical_gradient_leaves_x_unchanged():
    x = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)
    before = x.clone()
    seen = []
    numerical_gradient(lambda t: seen.append(t.clone()) or t.prod(), x, indices=[1])
    assert torch.equal(x, before)
    assert [s.tolist() for s in seen] == [[1.0, 2.0 + 1e-6, 3.0], [1.0, 2.0 - 1e-6, 3.0]]


def test_numerical_gradient_custom_eps():
    x = torch.tensor([2.0], dtype=torch.float64)
    grad = numerical_gradient(lambda t: (t**3).sum(), x, eps=1e-3)
    assert float(grad) == pytest.approx(12.0 + 1e-6, rel=1e-9)  # central difference: f''' eps^2 / 6


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.int64])
def test_numerical_gradient_refuses_other_dtypes(dtype):
    with pytest.raises(TypeError) as err:
        numerical_gradient(lambda t: t.sum(), torch.ones(3, dtype=dtype))
    assert "float64" in str(err.value) and str(dtype) in str(err.value)


def test_numerical_gradient_non_contiguous_input():
    x = torch.arange(6, dtype=torch.float64).reshape(2, 3).T  # (3, 2), not contiguous
    grad = numerical_gradient(lambda t: (t * torch.arange(6.0, dtype=torch.float64).reshape(3, 2)).sum(), x)
    assert torch.allclose(grad, torch.arange(6.0, dtype=torch.float64).reshape(3, 2), atol=1e-8)


def test_relative_error():
    a = torch.tensor([1.0, 2.0, 4.0])
    assert relative_error(a, a) == 0.0
    assert relative_error(a, a + torch.tensor([0.0, 0.0, 0.4])) == pytest.approx(0.4 / 4.4)
    assert relative_error(torch.zeros(3), torch.zeros(3)) == 0.0
    assert relative_error(torch.tensor([1.0]), torch.tensor([-1.0])) == pytest.approx(2.0)
    assert isinstance(relative_error(a, a.double()), float)
    assert relative_error(torch.tensor([1.0, 1e-9]), torch.tensor([1.0, 2e-9])) < 1e-8  # relative to the largest


def test_schematic_draws_the_forward_and_backward_equations():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from course_lib.core.diagram import text_of
    from course_lib.topics.backprop import schematic

    fig = schematic()
    try:
        text = text_of(fig)
        for part in ("z_1 = x W_1", "\\max(z_1, 0)", "z_2 = h W_2", "\\delta_2", "\\delta_1", "\\mathbf{1}[z_1 > 0]"):
            assert part in text, part
        fig.canvas.draw()
    finally:
        plt.close(fig)
