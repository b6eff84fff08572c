"""course_lib.data: MNIST, IDX files, Fashion-MNIST, 2-D toys, shapes scenes, bundled photos."""
import gzip
import math
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch

from course_lib import data
from course_lib.data import (FASHION_CLASSES, OFFLINE_IMAGES, SHAPE_CLASSES, GaussianMixture2D, load_fashion_mnist,
                             load_image, load_mnist, make_shapes, read_idx, sample_rings, sample_swiss_roll)
from course_lib.data import mnist as mnist_mod

TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def test_public_names():
    assert set(data.__all__) == {"load_mnist", "load_fashion_mnist", "read_idx", "FASHION_CLASSES",
                                 "GaussianMixture2D", "sample_rings", "sample_swiss_roll", "make_shapes", "endless_shapes",
                                 "SHAPE_CLASSES", "load_image", "OFFLINE_IMAGES"}
    assert len(FASHION_CLASSES) == 10 and FASHION_CLASSES[0] == "T-shirt/top" and FASHION_CLASSES[9] == "Ankle boot"
    assert SHAPE_CLASSES == ("circle", "square", "triangle")


# ---------------------------------------------------------------------------------------------- MNIST

@pytest.fixture(scope="module")
def mnist_train():
    return load_mnist("train")


@pytest.fixture(scope="module")
def mnist_test():
    return load_mnist("test")


def test_shipped_mnist_file_matches_its_sha256():
    assert mnist_mod.MNIST_FILE.is_file()
    assert mnist_mod.sha256_of(mnist_mod.MNIST_FILE) == mnist_mod.MNIST_SHA256
    assert mnist_mod.MNIST_FILE.stat().st_size < 20 * 2**20


@pytest.mark.parametrize("split, n, counts", [("train", 60000, TRAIN_COUNTS), ("test", 10000, TEST_COUNTS)])
def test_load_mnist_shapes_dtypes_counts(split, n, counts, request):
    x, y = request.getfixturevalue(f"mnist_{split}")
    assert x.shape == (n, 1, 28, 28) and x.dtype == torch.float32
    assert y.shape == (n,) and y.dtype == torch.int64
    assert float(x.min()) == 0.0 and float(x.max()) == 1.0
    assert torch.bincount(y, minlength=10).tolist() == counts
    assert x.is_contiguous()


def test_load_mnist_official_order(mnist_train, mnist_test):
    assert mnist_train[1][:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    assert mnist_test[1][:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]


def test_load_mnist_default_split_is_train(mnist_train):
    x, y = load_mnist(as_uint8=True)  # the uint8 variant: no float copy of 60000 images
    assert x.shape == (60000, 28, 28) and torch.equal(y, mnist_train[1])


def test_load_mnist_images_look_like_digits(mnist_train):
    x, _ = mnist_train
    # dark background, bright strokes: the border is almost empty, the centre has ink
    assert float(x[:1000, :, :2].mean()) < 0.01
    assert float(x[:1000, :, 10:18, 10:18].mean()) > 0.2
    assert ((x[:100] * 255) - (x[:100] * 255).round()).abs().max() < 1e-4  # pixel / 255 exactly


def test_load_mnist_as_uint8(mnist_test):
    xu, yu = load_mnist("test", as_uint8=True)
    assert xu.shape == (10000, 28, 28) and xu.dtype == torch.uint8
    assert yu.dtype == torch.int64 and torch.equal(yu, mnist_test[1])
    assert torch.equal(xu[:50].float().div(255).unsqueeze(1), mnist_test[0][:50])


def test_load_mnist_returns_fresh_float_tensors():
    x1, y1 = load_mnist("test")
    x1[0].fill_(7.0)
    y1[0] = 3
    x2, y2 = load_mnist("test")
    assert float(x2[0].max()) <= 1.0 and y2[0] == 7


def test_load_mnist_as_uint8_does_not_alias_the_cache():
    xu, _ = load_mnist("test", as_uint8=True)
    original = xu[0].clone()
    try:
        xu[0] = 0
        again, _ = load_mnist("test", as_uint8=True)
        assert torch.equal(again[0], original)
    finally:
        xu[0] = original  # repair the cache for the other tests


@pytest.mark.parametrize("split", ["val", "Train", "", None, "training"])
def test_load_mnist_bad_split(split):
    with pytest.raises(ValueError, match="split must be 'train' or 'test'"):
        load_mnist(split)


def test_load_mnist_missing_file_says_how_to_restore(tmp_path):
    missing = tmp_path / "nope" / "mnist.npz"
    with pytest.raises(FileNotFoundError) as err:
        load_mnist("train", path=missing)
    message = str(err.value)
    assert str(missing) in message
    assert "git checkout -- course_lib/data/files/mnist.npz" in message


def _write_fake_npz(path, n_train=5, n_test=3, seed=0):
    rng = np.random.default_rng(seed)
    arrays = dict(x_train=rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
                  y_train=rng.integers(0, 10, n_train).astype(np.uint8),
                  x_test=rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
                  y_test=rng.integers(0, 10, n_test).astype(np.uint8))
    np.savez_compressed(path, **arrays)
    return arrays


def test_load_mnist_from_another_path(tmp_path):
    arrays = _write_fake_npz(tmp_path / "small.npz")
    x, y = load_mnist("train", path=tmp_path / "small.npz")
    assert x.shape == (5, 1, 28, 28) and x.dtype == torch.float32
    assert torch.equal(y, torch.from_numpy(arrays["y_train"].astype(np.int64)))
    assert torch.allclose(x[:, 0] * 255, torch.from_numpy(arrays["x_train"]).float())
    xt, yt = load_mnist("test", path=str(tmp_path / "small.npz"), as_uint8=True)
    assert xt.shape == (3, 28, 28) and xt.dtype == torch.uint8 and yt.dtype == torch.int64


def test_load_mnist_damaged_shipped_file_is_refused(tmp_path, monkeypatch):
    fake = tmp_path / "mnist.npz"
    _write_fake_npz(fake)
    monkeypatch.setattr(mnist_mod, "MNIST_FILE", fake)  # pretend this is the shipped file
    with pytest.raises(ValueError) as err:
        load_mnist("train")
    assert "sha256" in str(err.value) and "git checkout -- course_lib/data/files/mnist.npz" in str(err.value)


# ------------------------------------------------------------------------------------------------ IDX

def _idx_bytes(array: np.ndarray, code: int) -> bytes:
    header = bytes([0, 0, code, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


IDX_CASES = [
    (np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4), 0x08),
    (np.array([-3, 0, 5, 127, -128], dtype=np.int8), 0x09),
    (np.array([[-300, 2], [1000, -1]], dtype=np.int16), 0x0B),
    (np.array([[2**30, -7, 65536]], dtype=np.int32), 0x0C),
    (np.linspace(-1, 1, 6, dtype=np.float32).reshape(3, 2), 0x0D),
    (np.array([1e-300, -2.5, math.pi]), 0x0E),
]


@pytest.mark.parametrize("array, code", IDX_CASES, ids=lambda v: getattr(v, "dtype", v).__str__())
@pytest.mark.parametrize("compress", [False, True])
def test_read_idx_round_trip(tmp_path, array, code, compress):
    raw = _idx_bytes(array, code)
    path = tmp_path / ("a.idx.gz" if compress else "a.idx")
    path.write_bytes(gzip.compress(raw) if compress else raw)
    back = read_idx(path)
    assert back.shape == array.shape
    assert back.dtype == array.dtype and back.dtype.isnative
    np.testing.assert_array_equal(back, array)


def test_read_idx_accepts_str_paths(tmp_path):
    array = np.arange(6, dtype=np.uint8)
    (tmp_path / "labels").write_bytes(_idx_bytes(array, 0x08))
    np.testing.assert_array_equal(read_idx(str(tmp_path / "labels")), array)


def test_read_idx_result_is_writable(tmp_path):
    (tmp_path / "x").write_bytes(_idx_bytes(np.zeros((2, 2), np.int32), 0x0C))
    back = read_idx(tmp_path / "x")
    back[0, 0] = 5  # a real array, not a read-only view of the file's bytes
    assert back[0, 0] == 5


@pytest.mark.parametrize("raw", [
    b"",
    b"\x00\x00",
    b"\x01\x00\x08\x01\x00\x00\x00\x01\x07",  # first byte not 0
    b"\x00\x01\x08\x01\x00\x00\x00\x01\x07",  # second byte not 0
    b"\x00\x00\x07\x01\x00\x00\x00\x01\x07",  # unknown type code
    b"PK\x03\x04 not an idx file at all",
])
def test_read_idx_bad_magic(tmp_path, raw):
    path = tmp_path / "bad.idx"
    path.write_bytes(raw)
    with pytest.raises(ValueError, match="not an IDX file"):
        read_idx(path)


def test_read_idx_bad_magic_gz(tmp_path):
    path = tmp_path / "bad.gz"
    path.write_bytes(gzip.compress(b"\x12\x34\x56\x78" + bytes(20)))
    with pytest.raises(ValueError, match="not an IDX file"):
        read_idx(path)


@pytest.mark.parametrize("cut", [1, 5, 24])
@pytest.mark.parametrize("compress", [False, True])
def test_read_idx_truncated(tmp_path, cut, compress):
    raw = _idx_bytes(np.arange(24, dtype=np.uint8).reshape(2, 3, 4), 0x08)[:-cut]
    path = tmp_path / ("t.gz" if compress else "t")
    path.write_bytes(gzip.compress(raw) if compress else raw)
    with pytest.raises(ValueError, match="truncated"):
        read_idx(path)


def test_read_idx_truncated_header(tmp_path):
    path = tmp_path / "h"
    path.write_bytes(b"\x00\x00\x08\x03\x00\x00")  # says 3 dims, holds half of one
    with pytest.raises(ValueError):
        read_idx(path)


def test_read_idx_too_long(tmp_path):
    path = tmp_path / "long"
    path.write_bytes(_idx_bytes(np.arange(4, dtype=np.uint8), 0x08) + b"\x00")
    with pytest.raises(ValueError, match=r"header says \[4\]"):
        read_idx(path)


def test_read_idx_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_idx(tmp_path / "missing.gz")


# -------------------------------------------------------------------------------------- Fashion-MNIST

N_FAKE = {"train": 5, "test": 3}


def _fake_fashion(split, seed=0):
    rng = np.random.default_rng(seed + (split == "test"))
    n = N_FAKE[split]
    return rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), rng.integers(0, 10, n).astype(np.uint8)


def _write_fake_fashion_file(path, name):
    split = "train" if name.startswith("train") else "test"
    images, labels = _fake_fashion(split)
    array = images if "images" in name else labels
    path.write_bytes(gzip.compress(_idx_bytes(array, 0x08)))


def _write_fake_fashion(folder):
    folder.mkdir(parents=True, exist_ok=True)
    for names in mnist_mod._IDX_NAMES.values():
        for name in names:
            _write_fake_fashion_file(folder / name, name)
    return folder


@pytest.fixture
def no_fashion_anywhere(tmp_path, monkeypatch):
    """No Fashion-MNIST in the default places, and any download attempt fails the test."""
    monkeypatch.delenv("FASHION_MNIST_DIR", raising=False)
    monkeypatch.setattr(mnist_mod, "FASHION_DEBIAN_DIR", tmp_path / "debian-none")
    monkeypatch.setattr(mnist_mod, "FASHION_CACHE_DIR", tmp_path / "cache-none")
    monkeypatch.setattr(mnist_mod, "FASHION_COUNTS", N_FAKE)  # downloads are verified against the fakes' sizes

    def no_network(*args, **kwargs):
        pytest.fail(f"load_fashion_mnist downloaded without download=True: {args}")

    monkeypatch.setattr(urllib.request, "urlretrieve", no_network)
    return tmp_path


def test_fashion_file_names():
    assert mnist_mod._IDX_NAMES == {
        "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
        "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")}


@pytest.mark.parametrize("split", ["train", "test"])
def test_load_fashion_mnist_from_root(tmp_path, no_fashion_anywhere, split):
    root = _write_fake_fashion(tmp_path / "fashion")
    x, y = load_fashion_mnist(split, root=root)
    images, labels = _fake_fashion(split)
    n = N_FAKE[split]
    assert x.shape == (n, 1, 28, 28) and x.dtype == torch.float32
    assert y.shape == (n,) and y.dtype == torch.int64
    assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0
    assert torch.allclose(x[:, 0] * 255, torch.from_numpy(images).float(), atol=1e-4)
    assert y.tolist() == labels.tolist()
    xu, yu = load_fashion_mnist(split, root=str(root), as_uint8=True)
    assert xu.shape == (n, 28, 28) and xu.dtype == torch.uint8 and torch.equal(xu, torch.from_numpy(images))
    assert torch.equal(yu, y)


def test_load_fashion_mnist_from_environment_variable(tmp_path, no_fashion_anywhere, monkeypatch):
    folder = _write_fake_fashion(tmp_path / "env-fashion")
    monkeypatch.setenv("FASHION_MNIST_DIR", str(folder))
    x, y = load_fashion_mnist("test")
    assert x.shape == (3, 1, 28, 28) and y.shape == (3,)


def test_load_fashion_mnist_from_debian_folder(tmp_path, no_fashion_anywhere, monkeypatch):
    folder = _write_fake_fashion(tmp_path / "usr-share")
    monkeypatch.setattr(mnist_mod, "FASHION_DEBIAN_DIR", folder)
    x, _ = load_fashion_mnist("train")
    assert x.shape == (5, 1, 28, 28)


def test_load_fashion_mnist_missing_root_gives_install_hint(tmp_path, no_fashion_anywhere):
    root = tmp_path / "empty"
    with pytest.raises(FileNotFoundError) as err:
        load_fashion_mnist("train", root=root)
    message = str(err.value)
    assert str(root) in message
    assert "apt-get install dataset-fashion-mnist" in message
    assert "download=True" in message
    assert "FASHION_MNIST_DIR" in message
    assert not root.exists()  # nothing was created, nothing downloaded


def test_load_fashion_mnist_missing_default_places(no_fashion_anywhere):
    with pytest.raises(FileNotFoundError) as err:
        load_fashion_mnist("test")
    message = str(err.value)
    assert "apt-get install dataset-fashion-mnist" in message and "download=True" in message
    assert "debian-none" in message and "cache-none" in message


def test_load_fashion_mnist_incomplete_folder_is_missing(tmp_path, no_fashion_anywhere):
    root = _write_fake_fashion(tmp_path / "partial")
    (root / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
        load_fashion_mnist("train", root=root)


def test_load_fashion_mnist_bad_split(tmp_path, no_fashion_anywhere):
    root = _write_fake_fashion(tmp_path / "f")
    with pytest.raises(ValueError, match="split must be 'train' or 'test'"):
        load_fashion_mnist("validation", root=root)


def test_load_fashion_mnist_wrong_image_size(tmp_path, no_fashion_anywhere):
    root = _write_fake_fashion(tmp_path / "f")
    (root / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(_idx_bytes(np.zeros((5, 32, 32), np.uint8), 8)))
    with pytest.raises(ValueError, match="unexpected Fashion-MNIST shapes"):
        load_fashion_mnist("train", root=root)


def test_load_fashion_mnist_label_count_mismatch(tmp_path, no_fashion_anywhere):
    root = _write_fake_fashion(tmp_path / "f")
    (root / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(_idx_bytes(np.zeros(4, np.uint8), 8)))
    with pytest.raises(ValueError, match="unexpected Fashion-MNIST shapes"):
        load_fashion_mnist("test", root=root)


def _fake_urlretrieve(calls):
    def urlretrieve(url, filename, *args, **kwargs):
        calls.append((url, str(filename)))
        name = url.rsplit("/", 1)[-1]
        _write_fake_fashion_file(__import__("pathlib").Path(filename), name)
        return str(filename), None
    return urlretrieve


def test_load_fashion_mnist_download_into_root(tmp_path, no_fashion_anywhere, monkeypatch, capsys):
    calls = []
    monkeypatch.setattr(mnist_mod.urllib.request, "urlretrieve", _fake_urlretrieve(calls))
    root = tmp_path / "new" / "fashion"
    x, y = load_fashion_mnist("train", root=root, download=True)
    assert x.shape == (5, 1, 28, 28) and y.shape == (5,) and y.dtype == torch.int64
    assert sorted(url for url, _ in calls) == sorted(mnist_mod.FASHION_URL + n for ns in mnist_mod._IDX_NAMES.values()
                                                     for n in ns)
    assert all(filename.startswith(str(root)) for _, filename in calls)
    assert "downloading" in capsys.readouterr().out
    # second call: the files are there, nothing is fetched again
    calls.clear()
    xt, _ = load_fashion_mnist("test", root=root, download=True)
    assert xt.shape == (3, 1, 28, 28) and calls == []


def test_load_fashion_mnist_download_default_goes_to_cache(tmp_path, no_fashion_anywhere, monkeypatch):
    calls = []
    monkeypatch.setattr(mnist_mod.urllib.request, "urlretrieve", _fake_urlretrieve(calls))
    x, _ = load_fashion_mnist("test", download=True)
    assert x.shape == (3, 1, 28, 28) and len(calls) == 4
    assert (tmp_path / "cache-none" / "t10k-images-idx3-ubyte.gz").is_file()


def test_load_fashion_mnist_download_fetches_only_missing_files(tmp_path, no_fashion_anywhere, monkeypatch):
    root = _write_fake_fashion(tmp_path / "f")
    (root / "train-labels-idx1-ubyte.gz").unlink()
    calls = []
    monkeypatch.setattr(mnist_mod.urllib.request, "urlretrieve", _fake_urlretrieve(calls))
    load_fashion_mnist("train", root=root, download=True)
    assert [url.rsplit("/", 1)[-1] for url, _ in calls] == ["train-labels-idx1-ubyte.gz"]


def test_load_fashion_mnist_download_failure_propagates(tmp_path, no_fashion_anywhere, monkeypatch):
    def offline(url, filename, *a, **k):
        raise OSError("no network")
    monkeypatch.setattr(mnist_mod.urllib.request, "urlretrieve", offline)
    with pytest.raises(OSError, match="no network"):
        load_fashion_mnist("train", root=tmp_path / "f", download=True)


# ------------------------------------------------------------------------------------ 2-D Gaussian toys

@pytest.fixture
def gmm():
    return GaussianMixture2D([[-2.0, 0.0], [1.5, 1.0], [0.5, -2.0]], [0.5, 0.8, 0.3], [0.2, 0.5, 0.3])


def _moments(g):
    w, mu, s2 = g.weights, g.means, g.stds**2
    mean = (w[:, None] * mu).sum(0)
    second = (w[:, None, None] * (s2[:, None, None] * torch.eye(2, dtype=torch.float64)
                                  + mu[:, :, None] * mu[:, None, :])).sum(0)
    return mean, second - torch.outer(mean, mean)


def test_gmm_attributes(gmm):
    assert gmm.means.shape == (3, 2) and gmm.means.dtype == torch.float64
    assert gmm.stds.tolist() == [0.5, 0.8, 0.3] and gmm.weights.tolist() == [0.2, 0.5, 0.3]


def test_gmm_default_weights_and_scalar_std():
    g = GaussianMixture2D([[0, 0], [1, 1], [2, 2], [3, 3]], 0.7)
    assert torch.allclose(g.weights, torch.full((4,), 0.25, dtype=torch.float64))
    assert torch.allclose(g.stds, torch.full((4,), 0.7, dtype=torch.float64))
    g1 = GaussianMixture2D([1.0, 2.0], 1.0)  # one component given flat
    assert g1.means.tolist() == [[1.0, 2.0]] and g1.weights.tolist() == [1.0]


def test_gmm_sample_shape_dtype_and_reproducibility(gmm):
    a = gmm.sample(100, generator=torch.Generator().manual_seed(3))
    b = gmm.sample(100, generator=torch.Generator().manual_seed(3))
    c = gmm.sample(100, generator=torch.Generator().manual_seed(4))
    assert a.shape == (100, 2) and a.dtype == torch.float32
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_gmm_sample_moments_match(gmm):
    x = gmm.sample(200_000, generator=torch.Generator().manual_seed(0)).double()
    mean, cov = _moments(gmm)
    assert torch.allclose(x.mean(0), mean, atol=0.02)
    assert torch.allclose(torch.cov(x.T), cov, atol=0.04)


def test_gmm_sample_component_frequencies(gmm):
    x = gmm.sample(60_000, generator=torch.Generator().manual_seed(1))
    share = gmm.responsibilities(x.double()).mean(0)
    assert torch.allclose(share, gmm.weights, atol=0.01)


def test_gmm_log_prob_integrates_to_one(gmm):
    h = 0.05
    axis = torch.arange(-7, 7 + h / 2, h, dtype=torch.float64)
    grid = torch.cartesian_prod(axis, axis)
    total = gmm.log_prob(grid).exp().sum() * h * h
    assert abs(float(total) - 1.0) < 1e-3


def test_gmm_log_prob_single_gaussian_closed_form():
    g = GaussianMixture2D([[1.0, -1.0]], [2.0])
    x = torch.tensor([[1.0, -1.0], [3.0, 0.0]], dtype=torch.float64)
    expected = -math.log(2 * math.pi * 4.0) - ((x - torch.tensor([1.0, -1.0], dtype=torch.float64)) ** 2).sum(1) / 8
    assert torch.allclose(g.log_prob(x), expected)


def test_gmm_log_prob_dtype_follows_input(gmm):
    x32 = torch.zeros(3, 2)
    assert gmm.log_prob(x32).dtype == torch.float32 and gmm.log_prob(x32).shape == (3,)
    assert gmm.log_prob(x32.double()).dtype == torch.float64
    assert gmm.score(x32).dtype == torch.float32 and gmm.score(x32).shape == (3, 2)
    assert gmm.responsibilities(x32).shape == (3, 3)


def test_gmm_log_prob_is_finite_far_away(gmm):
    x = torch.tensor([[1e3, -1e3], [50.0, 50.0]], dtype=torch.float64)
    assert torch.isfinite(gmm.log_prob(x)).all() and torch.isfinite(gmm.score(x)).all()
    assert torch.allclose(gmm.responsibilities(x).sum(1), torch.ones(2, dtype=torch.float64))


def test_gmm_score_equals_autograd(gmm):
    x = torch.randn(50, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * 2
    x.requires_grad_(True)
    (grad,) = torch.autograd.grad(gmm.log_prob(x).sum(), x)
    assert torch.allclose(gmm.score(x.detach()), grad, atol=1e-10)


def test_gmm_noised_is_the_convolution(gmm):
    sigma = 0.6
    noisy = gmm.noised(sigma)
    assert torch.allclose(noisy.stds**2, gmm.stds**2 + sigma**2)
    assert torch.equal(noisy.means, gmm.means) and torch.equal(noisy.weights, gmm.weights)
    # p_sigma(x) = sum_y p(y) N(x; y, sigma^2 I) h^2, numerically on a grid
    h = 0.04
    axis = torch.arange(-6, 6 + h / 2, h, dtype=torch.float64)
    grid = torch.cartesian_prod(axis, axis)
    p = gmm.log_prob(grid).exp()
    x = torch.tensor([[0.0, 0.0], [-2.0, 0.5], [1.0, 1.0], [3.0, -3.0]], dtype=torch.float64)
    kernel = torch.exp(-torch.cdist(x, grid) ** 2 / (2 * sigma**2)) / (2 * math.pi * sigma**2)
    convolved = (kernel * p).sum(1) * h * h
    assert torch.allclose(noisy.log_prob(x).exp(), convolved, rtol=2e-3)


def test_gmm_noised_matches_monte_carlo_moments(gmm):
    sigma = 1.3
    g = torch.Generator().manual_seed(2)
    x = gmm.sample(100_000, generator=g).double()
    noisy_samples = x + sigma * torch.randn(x.shape, generator=g, dtype=torch.float64)
    mean, cov = _moments(gmm.noised(sigma))
    assert torch.allclose(noisy_samples.mean(0), mean, atol=0.03)
    assert torch.allclose(torch.cov(noisy_samples.T), cov, atol=0.06)
    _, clean_cov = _moments(gmm)
    assert torch.allclose(cov, clean_cov + sigma**2 * torch.eye(2, dtype=torch.float64))


def test_gmm_noised_zero_is_identity(gmm):
    x = torch.randn(10, 2, dtype=torch.float64)
    assert torch.allclose(gmm.noised(0.0).log_prob(x), gmm.log_prob(x))


@pytest.mark.parametrize("x, error, words", [
    (torch.zeros(5, 3), ValueError, "(N, 2)"),
    (torch.zeros(2), ValueError, "(N, 2)"),
    (torch.zeros(4, 2, 1), ValueError, "(N, 2)"),
    (torch.zeros(4, 2, dtype=torch.int64), TypeError, "floating-point"),
    (torch.zeros(4, 2, dtype=torch.bool), TypeError, "floating-point"),
    ([[0.0, 0.0]], TypeError, "torch.Tensor"),
    (np.zeros((3, 2)), TypeError, "torch.Tensor"),
])
@pytest.mark.parametrize("method", ["log_prob", "score", "responsibilities"])
def test_gmm_bad_points(gmm, method, x, error, words):
    with pytest.raises(error) as err:
        getattr(gmm, method)(x)
    assert words in str(err.value)


@pytest.mark.parametrize("weights", [[0.5, 0.5, 0.5], [0.2, 0.2, 0.2], [1.0, 0.0, 0.01]])
def test_gmm_weights_must_sum_to_one(weights):
    with pytest.raises(ValueError, match="sum to 1"):
        GaussianMixture2D([[0, 0], [1, 1], [2, 2]], 1.0, weights)


def test_gmm_bad_parameters():
    with pytest.raises(ValueError, match="3 means but 2 weights"):
        GaussianMixture2D([[0, 0], [1, 1], [2, 2]], 1.0, [0.5, 0.5])
    with pytest.raises(ValueError, match="stds must be > 0"):
        GaussianMixture2D([[0, 0], [1, 1]], [1.0, 0.0])
    with pytest.raises(ValueError, match="stds must be > 0"):
        GaussianMixture2D([[0, 0], [1, 1]], -1.0)
    with pytest.raises(ValueError, match="weights >= 0"):
        GaussianMixture2D([[0, 0], [1, 1]], 1.0, [1.5, -0.5])


def test_gmm_stds_count_mismatch_is_clear():
    with pytest.raises(ValueError, match="std"):
        GaussianMixture2D([[0, 0], [1, 1], [2, 2]], [1.0, 2.0])


def test_gmm_ring():
    g = GaussianMixture2D.ring()
    assert g.means.shape == (8, 2)
    assert torch.allclose(g.means.norm(dim=1), torch.full((8,), 4.0, dtype=torch.float64))
    assert torch.allclose(g.stds, torch.full((8,), 0.3, dtype=torch.float64))
    assert torch.allclose(g.weights, torch.full((8,), 1 / 8, dtype=torch.float64))
    angles = torch.atan2(g.means[:, 1], g.means[:, 0]) % (2 * math.pi)
    assert torch.allclose(angles.sort().values, torch.arange(8, dtype=torch.float64) * math.pi / 4, atol=1e-12)
    g5 = GaussianMixture2D.ring(k=5, radius=2.0, std=0.1)
    assert g5.means.shape == (5, 2) and torch.allclose(g5.means.norm(dim=1), torch.full((5,), 2.0, dtype=torch.float64))
    x = g5.sample(2000, generator=torch.Generator().manual_seed(0))
    assert ((x.norm(dim=1) - 2.0).abs() < 0.6).all()


@pytest.mark.parametrize("sampler", [sample_rings, sample_swiss_roll])
def test_2d_samplers_shape_and_reproducibility(sampler):
    a = sampler(257, generator=torch.Generator().manual_seed(0))
    b = sampler(257, generator=torch.Generator().manual_seed(0))
    c = sampler(257, generator=torch.Generator().manual_seed(1))
    assert a.shape == (257, 2) and a.dtype == torch.float32
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.isfinite(a).all()


def test_sample_rings_lie_on_the_rings():
    x = sample_rings(3000, generator=torch.Generator().manual_seed(0), radii=(1.0, 2.5), noise=0.0)
    r = x.norm(dim=1)
    on_ring = ((r - 1.0).abs() < 1e-5) | ((r - 2.5).abs() < 1e-5)
    assert on_ring.all()
    assert 0.4 < float(((r - 1.0).abs() < 1e-5).float().mean()) < 0.6
    noisy = sample_rings(3000, generator=torch.Generator().manual_seed(0), noise=0.05)
    d = torch.stack([(noisy.norm(dim=1) - rad).abs() for rad in (1.0, 2.0, 3.0)]).min(0).values
    assert float(d.max()) < 0.3


def test_sample_rings_equal_numbers_per_ring():
    x = sample_rings(300, generator=torch.Generator().manual_seed(0), noise=0.0)
    counts = torch.bincount(x.norm(dim=1).round().long() - 1, minlength=3)
    assert int(counts.max() - counts.min()) <= 1


def test_sample_swiss_roll_range():
    x = sample_swiss_roll(5000, generator=torch.Generator().manual_seed(0), noise=0.0)
    r = x.norm(dim=1)
    assert float(r.min()) >= 1.5 * math.pi / 3 - 1e-5 and float(r.max()) <= 4.5 * math.pi / 3 + 1e-5
    t = 3 * r  # on the noiseless roll the angle is t itself
    assert torch.allclose(torch.stack([t.cos(), t.sin()], 1) * r[:, None], x, atol=1e-4)


# -------------------------------------------------------------------------------------------- shapes

@pytest.fixture(scope="module")
def scenes():
    return make_shapes(24, size=48, max_objects=3, min_radius=4, max_radius=9, seed=3)


def test_make_shapes_shapes_and_dtypes(scenes):
    assert set(scenes) == {"images", "labels", "boxes", "masks", "counts"}
    assert scenes["images"].shape == (24, 3, 48, 48) and scenes["images"].dtype == torch.float32
    assert scenes["labels"].shape == (24, 3) and scenes["labels"].dtype == torch.int64
    assert scenes["boxes"].shape == (24, 3, 4) and scenes["boxes"].dtype == torch.float32
    assert scenes["masks"].shape == (24, 3, 48, 48) and scenes["masks"].dtype == torch.bool
    assert scenes["counts"].shape == (24,) and scenes["counts"].dtype == torch.int64


def test_make_shapes_images_in_unit_range(scenes):
    images = scenes["images"]
    assert float(images.min()) >= 0.0 and float(images.max()) <= 1.0


def test_make_shapes_counts_and_padding(scenes):
    labels, counts, masks, boxes = scenes["labels"], scenes["counts"], scenes["masks"], scenes["boxes"]
    assert torch.equal(counts, (labels >= 0).sum(1))
    assert ((counts >= 1) & (counts <= 3)).all()
    assert counts.unique().numel() > 1  # a varied number of objects
    for i in range(len(counts)):
        k = int(counts[i])
        assert (labels[i, :k] >= 0).all() and (labels[i, :k] < len(SHAPE_CLASSES)).all()
        assert (labels[i, k:] == -1).all()  # slots are filled from the front
        assert not masks[i, k:].any() and (boxes[i, k:] == 0).all()
        assert masks[i, :k].flatten(1).any(1).all()


def test_make_shapes_uses_every_class(scenes):
    labels = scenes["labels"]
    assert set(labels[labels >= 0].tolist()) == {0, 1, 2}


def test_make_shapes_boxes_tightly_enclose_masks(scenes):
    for i in range(len(scenes["counts"])):
        for k in range(int(scenes["counts"][i])):
            ys, xs = torch.nonzero(scenes["masks"][i, k], as_tuple=True)
            expected = torch.tensor([xs.min(), ys.min(), xs.max(), ys.max()], dtype=torch.float32)
            assert torch.equal(scenes["boxes"][i, k], expected)
            x0, y0, x1, y1 = scenes["boxes"][i, k].tolist()
            assert 0 <= x0 <= x1 < 48 and 0 <= y0 <= y1 < 48


def test_make_shapes_masks_do_not_overlap(scenes):
    assert (scenes["masks"].sum(1) <= 1).all()


def test_make_shapes_masks_are_painted(scenes):
    images, masks = scenes["images"], scenes["masks"]
    for i in range(len(images)):
        for k in range(int(scenes["counts"][i])):
            pixels = images[i][:, masks[i, k]]  # (3, P): one flat colour >= 0.5 per object
            assert torch.allclose(pixels, pixels[:, :1].expand_as(pixels))
            assert (pixels >= 0.5).all()


def test_make_shapes_sizes_follow_radius(scenes):
    for i in range(len(scenes["counts"])):
        for k in range(int(scenes["counts"][i])):
            x0, y0, x1, y1 = scenes["boxes"][i, k].tolist()
            assert 2 * 4 - 2 <= x1 - x0 <= 2 * 9 and 2 * 4 - 2 <= y1 - y0 <= 2 * 9


def test_make_shapes_deterministic_for_a_seed():
    a = make_shapes(4, size=32, max_radius=8, seed=11)
    b = make_shapes(4, size=32, max_radius=8, seed=11)
    c = make_shapes(4, size=32, max_radius=8, seed=12)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["images"], c["images"])


def test_make_shapes_defaults():
    s = make_shapes(2)
    assert s["images"].shape == (2, 3, 64, 64) and s["labels"].shape == (2, 3)


def test_make_shapes_single_object_and_no_noise():
    s = make_shapes(5, size=32, max_objects=1, min_radius=5, max_radius=5, noise=0.0, seed=0)
    assert (s["counts"] == 1).all()
    for i in range(5):
        background = s["images"][i][:, ~s["masks"][i, 0]]
        assert torch.allclose(background, background[:, :1].expand_as(background))


@pytest.mark.parametrize("kwargs, words", [
    (dict(n=0), "n >= 1"),
    (dict(n=-3), "n >= 1"),
    (dict(n=2, max_objects=0), "max_objects >= 1"),
    (dict(n=2, min_radius=0), "do not fit"),
    (dict(n=2, min_radius=10, max_radius=5), "do not fit"),
    (dict(n=2, size=20, max_radius=10), "do not fit in a 20x20"),
])
def test_make_shapes_bad_arguments(kwargs, words):
    n = kwargs.pop("n")
    with pytest.raises(ValueError, match=words):
        make_shapes(n, **kwargs)


def test_make_shapes_smallest_working_size():
    s = make_shapes(3, size=23, max_objects=2, min_radius=10, max_radius=10, seed=0)
    assert ((s["counts"] >= 1) & (s["counts"] <= 2)).all()
    assert torch.equal(s["counts"], (s["labels"] >= 0).sum(1))


def test_make_shapes_size_check_matches_what_fits():
    # either it draws the scenes, or it says clearly that the radii do not fit
    try:
        s = make_shapes(3, size=22, max_objects=2, min_radius=10, max_radius=10, seed=0)
    except ValueError as err:
        assert "do not fit" in str(err)
    else:
        assert torch.equal(s["counts"], (s["labels"] >= 0).sum(1))


# -------------------------------------------------------------------------------------------- photos

@pytest.mark.parametrize("name, channels", [("astronaut", 3), ("camera", 1), ("coins", 1), ("chelsea", 3),
                                            ("horse", 1), ("text", 1)])
def test_load_image(name, channels):
    image = load_image(name)
    assert image.ndim == 3 and image.shape[0] == channels
    assert image.dtype == torch.float32 and image.is_contiguous()
    assert float(image.min()) >= 0.0 and float(image.max()) <= 1.0
    assert float(image.std()) > 0.01


def test_load_image_bool_image_becomes_float():
    image = load_image("horse")  # a boolean silhouette in scikit-image
    assert set(image.unique().tolist()) <= {0.0, 1.0}


@pytest.mark.parametrize("name", ["lena", "Astronaut", "", "cells3d"])
def test_load_image_unknown_name_lists_the_names(name):
    with pytest.raises(ValueError) as err:
        load_image(name)
    message = str(err.value)
    assert repr(name) in message
    assert all(n in message for n in OFFLINE_IMAGES)


def test_endless_shapes_draws_fresh_seeded_scenes():
    from course_lib.data import endless_shapes, make_shapes

    stream = endless_shapes(3, seed=2, fields=("images", "boxes"), size=32, max_objects=2, max_radius=8)
    first, second = next(stream), next(stream)
    expected = make_shapes(3, seed=2 * 1_000_003 + 1, size=32, max_objects=2, max_radius=8)
    assert len(second) == 2 and torch.equal(second[0], expected["images"]) and torch.equal(second[1], expected["boxes"])
    assert not torch.equal(first[0], second[0])


def _fake_server(monkeypatch, truncate=()):
    """urlretrieve that 'downloads' the fake files, cutting the named ones short (a dropped connection)."""
    def fake_urlretrieve(url, filename):
        name = url.rsplit("/", 1)[1]
        _write_fake_fashion_file(Path(filename), name)
        if name in truncate:
            data = Path(filename).read_bytes()
            Path(filename).write_bytes(data[:len(data) // 2])
        return filename, None
    monkeypatch.setattr(urllib.request, "urlretrieve", fake_urlretrieve)


def test_a_truncated_download_is_not_kept_as_complete(tmp_path, no_fashion_anywhere, monkeypatch):
    """A truncated download used to be taken as complete forever: it is now verified before its final name."""
    root = tmp_path / "dl"
    _fake_server(monkeypatch, truncate=("t10k-images-idx3-ubyte.gz",))
    with pytest.raises(ValueError, match="t10k-images-idx3-ubyte.gz is incomplete or damaged"):
        load_fashion_mnist("test", root=root, download=True)
    assert not (root / "t10k-images-idx3-ubyte.gz").exists()
    assert sorted(p.name for p in root.iterdir() if p.name.startswith(".")) == []  # no partial file left
    _fake_server(monkeypatch)  # the connection is back: the next call fetches only what is missing
    x, y = load_fashion_mnist("test", root=root, download=True)
    assert x.shape == (3, 1, 28, 28) and y.shape == (3,)


def test_a_damaged_fashion_file_says_how_to_fix_it(tmp_path, no_fashion_anywhere):
    root = _write_fake_fashion(tmp_path / "f")
    path = root / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(ValueError, match="is damaged.*download=True"):
        load_fashion_mnist("train", root=root)
