"""course_lib.core.check: check_tensor, check_function, show_solution."""
import pytest
import torch

from course_lib.core.check import check_function, check_tensor, show_solution
from course_lib.topics.losses import log_softmax


def test_equal_tensors_pass(capsys):
    check_tensor(torch.tensor([1.0, 2.0, 3.0]), torch.tensor([1.0, 2.0, 3.0]))
    assert "correct" in capsys.readouterr().out


def test_name_appears_in_messages(capsys):
    check_tensor(torch.ones(2), torch.ones(2), name="the gradient")
    assert "correct: the gradient matches" in capsys.readouterr().out
    with pytest.raises(AssertionError, match="^the gradient has shape"):
        check_tensor(torch.ones(3), torch.ones(2), name="the gradient")


def test_within_tolerance_passes(capsys):
    check_tensor(torch.tensor([1.0 + 1e-7, 2.0]), torch.tensor([1.0, 2.0]))
    check_tensor(torch.tensor([1.1, 2.0]), torch.tensor([1.0, 2.0]), rtol=0.2)
    assert capsys.readouterr().out.count("correct") == 2


def test_expected_can_be_a_list_or_number(capsys):
    check_tensor(torch.tensor([1.0, 2.0]), [1.0, 2.0])
    check_tensor(torch.tensor(0.5), 0.5)
    assert capsys.readouterr().out.count("correct") == 2


def test_float_precisions_are_the_same_kind(capsys):
    check_tensor(torch.tensor([1.0, 2.0], dtype=torch.float64), torch.tensor([1.0, 2.0]))
    check_tensor(torch.tensor([1, 2]), torch.tensor([1, 2], dtype=torch.int32))
    assert capsys.readouterr().out.count("correct") == 2


def test_nan_in_both_passes(capsys):
    check_tensor(torch.tensor([float("nan"), 1.0]), torch.tensor([float("nan"), 1.0]))
    assert "correct" in capsys.readouterr().out


def test_tensor_requiring_grad_is_fine(capsys):
    check_tensor(torch.ones(2, requires_grad=True) * 2, torch.full((2,), 2.0))
    assert "correct" in capsys.readouterr().out


@pytest.mark.parametrize("got", [[1.0, 2.0], 3.0, None, __import__("numpy").ones(2)])
def test_not_a_tensor(got):
    with pytest.raises(AssertionError, match="should be a torch.Tensor"):
        check_tensor(got, torch.ones(2))


def test_shape_transpose_hint():
    with pytest.raises(AssertionError) as err:
        check_tensor(torch.ones(3, 2), torch.ones(2, 3))
    message = str(err.value)
    assert "shape (3, 2), expected (2, 3)" in message and "transpose" in message and ".T" in message


@pytest.mark.parametrize("got, expected", [((3, 1), (3,)), ((3,), (1, 3)), ((1, 4, 1), (4,))])
def test_shape_squeeze_hint(got, expected):
    with pytest.raises(AssertionError, match="squeeze/unsqueeze/reshape"):
        check_tensor(torch.ones(got), torch.ones(expected))


def test_shape_reduced_too_much_hint():
    with pytest.raises(AssertionError, match=r"shape \(\), expected \(5,\).*\.sum\(\) or \.mean\(\) too many"):
        check_tensor(torch.tensor(1.0), torch.ones(5))


def test_shape_not_reduced_hint():
    with pytest.raises(AssertionError, match=r"expected a single number: is a \.sum\(\) or \.mean\(\) missing"):
        check_tensor(torch.ones(5), torch.tensor(1.0))


def test_shape_plain_mismatch():
    with pytest.raises(AssertionError) as err:
        check_tensor(torch.ones(2, 5), torch.ones(3, 4))
    assert str(err.value) == "your answer has shape (2, 5), expected (3, 4)"


@pytest.mark.parametrize("got, expected", [
    (torch.tensor([1, 2, 3]), torch.tensor([1.0, 2.0, 3.0])),  # long vs float
    (torch.tensor([1.0, 0.0]), torch.tensor([1, 0])),  # float vs long
    (torch.tensor([True, False]), torch.tensor([1, 0])),  # bool vs long
    (torch.tensor([1, 0]), torch.tensor([True, False])),
])
def test_dtype_kind(got, expected):
    with pytest.raises(AssertionError) as err:
        check_tensor(got, expected)
    assert f"dtype {got.dtype}, expected {expected.dtype}" in str(err.value)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_nan_or_inf(bad):
    with pytest.raises(AssertionError) as err:
        check_tensor(torch.tensor([1.0, bad, bad]), torch.tensor([1.0, 2.0, 3.0]))
    assert "2 NaN/inf entries" in str(err.value) and "overflow" in str(err.value)


def test_wrong_sign():
    with pytest.raises(AssertionError, match="wrong sign"):
        check_tensor(-torch.tensor([[1.0, -2.0], [3.0, 0.5]]), torch.tensor([[1.0, -2.0], [3.0, 0.5]]))


@pytest.mark.parametrize("factor, shown", [(2.0, "2"), (0.5, "0.5"), (64.0, "64"), (-3.0, "-3")])
def test_constant_factor(factor, shown):
    expected = torch.tensor([1.0, -2.0, 3.5, 0.0])
    with pytest.raises(AssertionError) as err:
        check_tensor(factor * expected, expected)
    message = str(err.value)
    assert "constant factor" in message and f"yours = {shown} x expected" in message
    assert "sum instead of a mean" in message


def test_constant_factor_scalar():
    with pytest.raises(AssertionError, match="yours = 2 x expected"):
        check_tensor(torch.tensor(4.6), torch.tensor(2.3))


def test_generic_difference_reports_where():
    expected = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    got = expected.clone()
    got[1, 0] = 3.5
    with pytest.raises(AssertionError) as err:
        check_tensor(got, expected)
    message = str(err.value)
    assert "differs from the reference" in message and "max |error| = 0.5" in message
    assert "at index (1, 0)" in message and "yours 3.5, expected 3" in message
    assert "rtol=1e-05" in message and "atol=1e-06" in message


def test_generic_difference_zero_dim():
    with pytest.raises(AssertionError, match=r"at index \(\)"):
        check_tensor(torch.tensor(1.0), torch.tensor(0.0))


def test_all_zero_reference_is_not_a_factor():
    with pytest.raises(AssertionError, match="differs from the reference"):
        check_tensor(torch.ones(3), torch.zeros(3))


# ---------------------------------------------------------------------------------------- check_function

def reference_softmax(z):
    return torch.softmax(z, dim=-1)


def good_softmax(z):
    e = (z - z.amax(-1, keepdim=True)).exp()
    return e / e.sum(-1, keepdim=True)


INPUTS = [(torch.randn(4, 5),), (torch.randn(2, 3) * 50,), torch.zeros(3, 2)]


def test_check_function_correct(capsys):
    check_function(good_softmax, reference_softmax, INPUTS)
    assert "correct: good_softmax matches the reference on 3 input(s)" in capsys.readouterr().out


def test_check_function_several_arguments(capsys):
    check_function(lambda a, b: a @ b, torch.matmul, [(torch.randn(2, 3), torch.randn(3, 4))], name="matmul")
    assert "correct: matmul matches the reference on 1 input(s)" in capsys.readouterr().out


def test_check_function_wrong_function_names_the_input_shapes():
    def bad_softmax(z):
        return z.exp() / z.exp().sum()  # sums over everything, not per row
    with pytest.raises(AssertionError) as err:
        check_function(bad_softmax, reference_softmax, [(torch.randn(4, 5),)])
    assert str(err.value).startswith("bad_softmax((4, 5)) ")


def test_check_function_factor_diagnosis():
    with pytest.raises(AssertionError, match="yours = 2 x expected"):
        check_function(lambda x: 2 * x.mean(), torch.mean, [(torch.rand(10) + 1,)], name="mean")


def test_check_function_non_tensor_argument_is_shown():
    with pytest.raises(AssertionError, match=r"^f\(\(3, 4\), -1\) has shape"):
        check_function(lambda z, d: z.sum(d, keepdim=True), lambda z, d: z.sum(d), [(torch.ones(3, 4), -1)],
                       name="f")


def test_check_function_not_implemented():
    def exercise(z):
        raise NotImplementedError
    with pytest.raises(AssertionError) as err:
        check_function(exercise, reference_softmax, INPUTS)
    assert "exercise is not implemented yet" in str(err.value) and "NotImplementedError" in str(err.value)
    assert err.value.__cause__ is None and err.value.__suppress_context__


def test_check_function_other_errors_propagate():
    def broken(z):
        raise IndexError("oops")
    with pytest.raises(IndexError, match="oops"):
        check_function(broken, reference_softmax, INPUTS)


def test_check_function_needs_inputs():
    with pytest.raises(ValueError, match="at least one input"):
        check_function(good_softmax, reference_softmax, [])


def test_check_function_reference_may_return_numbers(capsys):
    check_function(lambda x: x.sum(), lambda x: float(x.sum()), [(torch.ones(3),)], name="total")
    assert "correct" in capsys.readouterr().out


def test_check_function_on_a_course_function(capsys):
    check_function(log_softmax, lambda z: torch.log_softmax(z, -1), INPUTS, atol=1e-5)
    assert "correct: log_softmax" in capsys.readouterr().out


# ----------------------------------------------------------------------------------------- show_solution

def test_show_solution_of_a_function(capsys):
    show_solution(log_softmax)
    out = capsys.readouterr().out
    assert "Markdown" in out or "def log_softmax" in out  # outside a notebook IPython prints a repr


def test_show_solution_displays_markdown_source(monkeypatch):
    import IPython.display
    shown = []
    monkeypatch.setattr(IPython.display, "display", lambda obj: shown.append(obj))
    show_solution(log_softmax)
    show_solution("x = 1\n\n")
    assert isinstance(shown[0], IPython.display.Markdown)
    assert shown[0].data.startswith("```python\ndef log_softmax(") and shown[0].data.endswith("\n```")
    assert shown[1].data == "```python\nx = 1\n```"


def test_show_solution_of_a_class(monkeypatch):
    import IPython.display
    from course_lib.topics.backprop import MLP
    shown = []
    monkeypatch.setattr(IPython.display, "display", lambda obj: shown.append(obj))
    show_solution(MLP)
    assert "class MLP(nn.Module):" in shown[0].data


def test_show_solution_rejects_objects_without_source():
    with pytest.raises(TypeError):
        show_solution(42)
