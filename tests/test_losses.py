"""course_lib.topics.losses: stable log_softmax, cross entropies, BCE with logits, entropy and KL."""
import pytest
import torch
import torch.nn.functional as F
from torch.distributions import Categorical

from course_lib.topics.losses import (bce_with_logits, categorical_cross_entropy, cross_entropy, entropy, kl_divergence,
                                      log_softmax)

G = torch.Generator().manual_seed(0)


def randn(*shape, dtype=torch.float64):
    return torch.randn(*shape, generator=G, dtype=dtype)


# ---------------------------------------------------------------------------------------- log_softmax

@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("dim", [-1, 0, 1])
def test_log_softmax_matches_torch(dtype, dim):
    z = randn(4, 6, 3, dtype=dtype) * 5
    assert torch.allclose(log_softmax(z, dim=dim), F.log_softmax(z, dim=dim), atol=1e-6)


@pytest.mark.parametrize("z", [
    [1000.0, -1000.0, 0.0],
    [1e4, 1e4, 1e4],
    [-1e4, -1e4 + 1, -1e4 + 2],
    [88.8, 89.0, 200.0],  # exp overflows float32 without the shift
    [-200.0, -150.0, -120.0],  # exp underflows to 0 without the shift
])
def test_log_softmax_extreme_logits(z):
    z = torch.tensor([z])
    out = log_softmax(z)
    assert torch.isfinite(out).all()
    assert torch.allclose(out, F.log_softmax(z, dim=-1), atol=1e-5)
    assert torch.allclose(out.exp().sum(-1), torch.ones(1))


def test_log_softmax_gradient_matches_torch():
    z = randn(5, 4).requires_grad_(True)
    w = randn(5, 4)
    (g_ours,) = torch.autograd.grad((log_softmax(z) * w).sum(), z)
    (g_ref,) = torch.autograd.grad((F.log_softmax(z, -1) * w).sum(), z)
    assert torch.allclose(g_ours, g_ref)


def test_log_softmax_shift_invariance():
    z = randn(3, 5)
    assert torch.allclose(log_softmax(z + 123.0), log_softmax(z))


@pytest.mark.parametrize("z, error, words", [
    (torch.tensor([[1, 2, 3]]), TypeError, "use .float()"),
    (torch.tensor([True, False]), TypeError, "floating point"),
    ([1.0, 2.0], TypeError, "torch.Tensor"),
])
def test_log_softmax_bad_input(z, error, words):
    with pytest.raises(error) as err:
        log_softmax(z)
    assert words in str(err.value)


# -------------------------------------------------------------------------------------- cross_entropy

def test_cross_entropy_indices_matches_torch():
    z = randn(8, 5) * 3
    y = torch.randint(0, 5, (8,), generator=G)
    out = cross_entropy(z, y)
    assert out.shape == () and torch.allclose(out, F.cross_entropy(z, y))
    assert torch.allclose(cross_entropy(z, y.int()), F.cross_entropy(z, y))  # int32 indices too


def test_cross_entropy_extreme_logits():
    z = torch.tensor([[1000.0, -1000.0, 0.0], [-500.0, 500.0, 0.0]])
    y = torch.tensor([1, 1])
    out = cross_entropy(z, y)
    assert torch.isfinite(out) and torch.allclose(out, F.cross_entropy(z, y))
    assert float(out) == pytest.approx(1000.0)


def test_cross_entropy_probability_targets_match_torch():
    z = randn(6, 4)
    p = torch.softmax(randn(6, 4), dim=1)
    assert torch.allclose(cross_entropy(z, p), F.cross_entropy(z, p))
    onehot = F.one_hot(torch.tensor([0, 3, 1, 2, 2, 0]), 4).double()
    assert torch.allclose(cross_entropy(z, onehot), cross_entropy(z, onehot.argmax(1)))


def test_cross_entropy_gradient_is_softmax_minus_onehot_over_n():
    n, c = 7, 5
    z = randn(n, c).requires_grad_(True)
    y = torch.randint(0, c, (n,), generator=G)
    cross_entropy(z, y).backward()
    expected = (torch.softmax(z.detach(), 1) - F.one_hot(y, c).double()) / n
    assert torch.allclose(z.grad, expected, atol=1e-12)


def test_cross_entropy_gradient_probability_targets():
    z = randn(3, 4).requires_grad_(True)
    p = torch.softmax(randn(3, 4), 1)
    cross_entropy(z, p).backward()
    assert torch.allclose(z.grad, (torch.softmax(z.detach(), 1) - p) / 3, atol=1e-12)


def test_cross_entropy_of_uniform_logits_is_log_c():
    assert float(cross_entropy(torch.zeros(4, 10), torch.arange(4))) == pytest.approx(torch.log(torch.tensor(10.0)).item())


def test_cross_entropy_bad_logit_shapes():
    with pytest.raises(ValueError) as err:
        cross_entropy(torch.zeros(2, 3, 4), torch.zeros(2, 4, dtype=torch.long))
    assert "(N, C)" in str(err.value) and "movedim" in str(err.value)
    with pytest.raises(ValueError, match=r"\(N, C\)"):
        cross_entropy(torch.zeros(3), torch.tensor([0, 1, 2]))


@pytest.mark.parametrize("target", [torch.tensor([0, 1]), torch.tensor([[0], [1], [2]]), torch.tensor(1)])
def test_cross_entropy_bad_index_shapes(target):
    with pytest.raises(ValueError, match=r"class-index targets must have shape \(3,\)"):
        cross_entropy(torch.zeros(3, 4), target)


@pytest.mark.parametrize("target", [torch.tensor([0, 4, 1]), torch.tensor([-1, 0, 1])])
def test_cross_entropy_indices_out_of_range(target):
    with pytest.raises(ValueError, match=r"class indices must lie in \[0, 3\]"):
        cross_entropy(torch.zeros(3, 4), target)


def test_cross_entropy_bad_probability_shape():
    with pytest.raises(ValueError, match=r"probability targets must have the logits' shape \(3, 4\), got \(3, 5\)"):
        cross_entropy(torch.zeros(3, 4), torch.full((3, 5), 0.2))


@pytest.mark.parametrize("dtype", [torch.uint8, torch.int16, torch.bool])
def test_cross_entropy_bad_target_dtype(dtype):
    with pytest.raises(TypeError, match="int64 class indices or float probabilities"):
        cross_entropy(torch.zeros(3, 4), torch.zeros(3, dtype=dtype))


def test_cross_entropy_integer_logits():
    with pytest.raises(TypeError, match=r"logits must be floating point.*\.float\(\)"):
        cross_entropy(torch.zeros(3, 4, dtype=torch.long), torch.zeros(3, dtype=torch.long))


# ------------------------------------------------------------------------------------ bce_with_logits

def test_bce_matches_torch_over_a_wide_range():
    z = torch.linspace(-100, 100, 2001, dtype=torch.float64)
    y = torch.rand(2001, generator=G, dtype=torch.float64)
    out = bce_with_logits(z, y)
    assert torch.isfinite(out) and torch.allclose(out, F.binary_cross_entropy_with_logits(z, y))
    for y_hard in (torch.zeros_like(z), torch.ones_like(z)):
        assert torch.allclose(bce_with_logits(z, y_hard), F.binary_cross_entropy_with_logits(z, y_hard))


def test_bce_float32_extremes_elementwise():
    z = torch.tensor([-100.0, -30.0, -1.0, 1e-3, 1.0, 30.0, 100.0])
    for y in (torch.zeros(7), torch.ones(7)):
        each = torch.stack([bce_with_logits(z[i:i + 1], y[i:i + 1]) for i in range(7)])
        assert torch.isfinite(each).all()
        assert torch.allclose(each, F.binary_cross_entropy_with_logits(z, y, reduction="none"), rtol=1e-5)


def test_bce_gradient_matches_torch_away_from_zero():
    z = torch.tensor([-50.0, -3.0, -0.5, 0.25, 2.0, 40.0], dtype=torch.float64, requires_grad=True)
    y = torch.tensor([0.0, 1.0, 0.3, 1.0, 0.0, 0.5], dtype=torch.float64)
    (g,) = torch.autograd.grad(bce_with_logits(z, y), z)
    assert torch.allclose(g, (torch.sigmoid(z.detach()) - y) / 6)


def test_bce_gradient_at_zero_logit():
    z = torch.zeros(4, requires_grad=True)
    y = torch.tensor([0.0, 1.0, 0.3, 1.0])
    bce_with_logits(z, y).backward()
    assert torch.allclose(z.grad, (0.5 - y) / 4)


def test_bce_shapes_and_target_dtype():
    z = randn(2, 3)
    y = torch.randint(0, 2, (2, 3), generator=G)  # integer 0/1 targets are accepted
    assert torch.allclose(bce_with_logits(z, y), F.binary_cross_entropy_with_logits(z, y.double()))
    assert bce_with_logits(z.float(), y.float()).dtype == torch.float32


@pytest.mark.parametrize("target_shape", [(6,), (2, 3, 1), (3, 2)])
def test_bce_shape_mismatch(target_shape):
    with pytest.raises(ValueError) as err:
        bce_with_logits(torch.zeros(2, 3), torch.zeros(target_shape))
    assert f"target shape {target_shape}" in str(err.value) and "(2, 3)" in str(err.value)


def test_bce_integer_logits():
    with pytest.raises(TypeError, match="floating point"):
        bce_with_logits(torch.zeros(3, dtype=torch.int64), torch.zeros(3))


# ------------------------------------------------------------------------------ entropy, H(p, q), KL

@pytest.fixture
def pq():
    p = torch.softmax(randn(5, 6), -1)
    q = torch.softmax(randn(5, 6), -1)
    return p, q


def test_entropy_matches_torch_distributions(pq):
    p, _ = pq
    assert torch.allclose(entropy(p), Categorical(probs=p).entropy())
    assert entropy(p).shape == (5,)


def test_entropy_known_values():
    assert float(entropy(torch.full((4,), 0.25))) == pytest.approx(torch.log(torch.tensor(4.0)).item())
    assert float(entropy(torch.tensor([1.0, 0.0, 0.0]))) == 0.0  # 0 log 0 = 0, no NaN


def test_cross_entropy_equals_entropy_plus_kl(pq):
    p, q = pq
    assert torch.allclose(categorical_cross_entropy(p, q), entropy(p) + kl_divergence(p, q))


def test_kl_matches_torch_distributions(pq):
    p, q = pq
    expected = torch.distributions.kl_divergence(Categorical(probs=p), Categorical(probs=q))
    assert torch.allclose(kl_divergence(p, q), expected, atol=1e-12)


def test_kl_properties(pq):
    p, q = pq
    assert (kl_divergence(p, q) > 0).all()
    assert torch.allclose(kl_divergence(p, p), torch.zeros(5, dtype=torch.float64))
    assert not torch.allclose(kl_divergence(p, q), kl_divergence(q, p))  # not symmetric


def test_kl_with_zeros():
    p = torch.tensor([0.5, 0.5, 0.0])
    q = torch.tensor([0.25, 0.25, 0.5])
    assert float(kl_divergence(p, q)) == pytest.approx(torch.log(torch.tensor(2.0)).item())
    assert float(kl_divergence(q, p)) == float("inf")  # q puts mass where p has none


def test_categorical_cross_entropy_broadcast_and_last_dim():
    p = torch.softmax(randn(2, 3, 4), -1)
    q = torch.softmax(randn(2, 3, 4), -1)
    assert categorical_cross_entropy(p, q).shape == (2, 3)
    assert torch.allclose(categorical_cross_entropy(p, q), -(p * q.log()).sum(-1))


def test_categorical_cross_entropy_agrees_with_logit_cross_entropy():
    z = randn(4, 3)
    p = torch.softmax(randn(4, 3), -1)
    assert torch.allclose(categorical_cross_entropy(p, torch.softmax(z, -1)).mean(), cross_entropy(z, p))


@pytest.mark.parametrize("bad", [
    torch.tensor([0.5, 0.6]),  # sums to 1.1
    torch.tensor([0.2, 0.2]),  # sums to 0.4
    torch.tensor([1.5, -0.5]),  # sums to 1, one negative
    torch.tensor([[0.5, 0.5], [0.9, 0.2]]),  # one bad row
])
@pytest.mark.parametrize("fn", ["entropy", "cross_entropy_p", "cross_entropy_q", "kl_p", "kl_q"])
def test_invalid_probabilities(bad, fn):
    good = torch.full(bad.shape, 0.5)
    calls = {"entropy": lambda: entropy(bad),
             "cross_entropy_p": lambda: categorical_cross_entropy(bad, good),
             "cross_entropy_q": lambda: categorical_cross_entropy(good, bad),
             "kl_p": lambda: kl_divergence(bad, good),
             "kl_q": lambda: kl_divergence(good, bad)}
    with pytest.raises(ValueError, match="must be probabilities: non-negative, summing to 1"):
        calls[fn]()


def test_invalid_probabilities_names_the_argument():
    with pytest.raises(ValueError, match="^q must be"):
        kl_divergence(torch.tensor([0.5, 0.5]), torch.tensor([0.5, 0.7]))


@pytest.mark.parametrize("bad", [torch.tensor([0, 1]), [0.5, 0.5], torch.tensor([True, False])])
def test_probabilities_must_be_float_tensors(bad):
    with pytest.raises(TypeError, match="floating-point tensor of probabilities"):
        entropy(bad)
    with pytest.raises(TypeError, match="^q must be a floating-point"):
        categorical_cross_entropy(torch.tensor([0.5, 0.5]), bad)
