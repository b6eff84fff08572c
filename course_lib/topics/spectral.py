"""PCA and Normalized Cut (Shi and Malik, 2000): chapter 02 derives both, chapter 05 runs Ncut on ViT patch features.

Both are Rayleigh quotients. PCA maximises w^T S w / w^T w over directions w (S the covariance);
Ncut, relaxed, minimises y^T (D - W) y / y^T D y over y with y^T D 1 = 0.

A graph has symmetric affinities W (w_ij >= 0), degrees d_i = sum_j w_ij, D = diag(d) and
Laplacian L = D - W. The relaxed Ncut problem is the generalized eigenproblem (D - W) y = lambda D y;
its second-smallest eigenvector, thresholded, splits the graph in two.

W may be a dense ``torch.Tensor``/``numpy`` array (small graphs) or a ``scipy.sparse`` matrix
(images: only pixels within a radius are connected, :func:`image_affinity`).
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
import scipy.sparse
import scipy.sparse.csgraph
import scipy.sparse.linalg
import torch

# Sparse graphs with at most this many nodes are solved densely (exact). Kept small: numpy's eigh
# runs a multi-threaded LAPACK that crawls on a busy 2-core machine, Lanczos does not.
DENSE_LIMIT = 150


# ------------------------------------------------------------------------------------------ PCA

class PCA(NamedTuple):
    """A fitted PCA: ``mean`` (d,), ``components`` (d, k) orthonormal columns by decreasing variance,
    ``variances`` (k,) the eigenvalues of the covariance, ``total_variance`` the trace of the covariance.

    Taught in chapter 02, A.5.
    """
    mean: torch.Tensor
    components: torch.Tensor
    variances: torch.Tensor
    total_variance: float


def _as_rows(x) -> torch.Tensor:
    """Data as a float tensor (n, d): images (n, C, H, W) or (n, H, W) are flattened."""
    x = torch.as_tensor(x)
    if not x.is_floating_point():
        raise TypeError(f"PCA needs floating-point data, got {x.dtype}: convert with .float()")
    if x.ndim < 2:
        raise ValueError(f"PCA needs data of shape (n, d) (or images (n, ...)), got shape {tuple(x.shape)}")
    return x.reshape(len(x), -1)


def pca(x, k: int | None = None) -> PCA:
    """Principal components of the rows of ``x`` (n, d) (images are flattened). Chapter 02, A.5.

    S = X_c^T X_c / n with X_c = x - mean, then ``torch.linalg.eigh`` (float64); the ``k`` largest
    eigenpairs (all d when ``k`` is None). Each component's sign is fixed so that its entry of
    largest magnitude is positive.
    """
    rows = _as_rows(x)
    n, d = rows.shape
    if n < 2:
        raise ValueError(f"PCA needs at least 2 samples, got {n}")
    k = d if k is None else int(k)
    if not 1 <= k <= d:
        raise ValueError(f"k must be between 1 and the dimension {d}, got {k}")
    rows64 = rows.double()
    mean = rows64.mean(dim=0)                                # (d,)
    centred = rows64 - mean                                  # (n, d)
    covariance = centred.T @ centred / n                     # (d, d)
    eigenvalues, eigenvectors = torch.linalg.eigh(covariance)  # ascending
    variances = eigenvalues.flip(0)[:k].clamp_min(0.0)      # (k,) descending
    components = eigenvectors.flip(1)[:, :k]                 # (d, k)
    largest = torch.from_numpy(first_largest(components.abs().cpu().numpy()))[None].to(components.device)  # (1, k)
    signs = torch.sign(components.gather(0, largest))
    components = components * signs
    dtype = rows.dtype
    return PCA(mean.to(dtype), components.to(dtype), variances.to(dtype), float(torch.trace(covariance)))


def _check_k(p: PCA, k: int | None) -> int:
    available = p.components.shape[1]
    k = available if k is None else int(k)
    if not 0 <= k <= available:
        raise ValueError(f"k must be between 0 and the {available} fitted components, got {k}")
    return k


def explained_variance_ratio(p: PCA) -> torch.Tensor:
    """Share of the total variance along each fitted component, lambda_i / sum_j lambda_j: (k,). Chapter 02, A.6."""
    return p.variances / p.total_variance


def pca_project(x, p: PCA, k: int | None = None) -> torch.Tensor:
    """Coordinates of ``x`` (n, d) on the first ``k`` components: (x - mean) V_k, shape (n, k). Chapter 02, A.5."""
    k = _check_k(p, k)
    rows = _as_rows(x).to(p.mean.dtype)
    if rows.shape[1] != len(p.mean):
        raise ValueError(f"x has {rows.shape[1]} features but the PCA was fitted on {len(p.mean)}")
    return (rows - p.mean) @ p.components[:, :k]


def pca_reconstruct(x, p: PCA, k: int | None = None) -> torch.Tensor:
    """Best rank-``k`` affine reconstruction mean + V_k V_k^T (x - mean), in the shape of ``x``. Chapter 02, A.5."""
    k = _check_k(p, k)
    codes = pca_project(x, p, k)                             # (n, k)
    rows = p.mean + codes @ p.components[:, :k].T            # (n, d)
    return rows.reshape(torch.as_tensor(x).shape)


def rayleigh_quotient(a, v, b=None):
    """R(v) = v^T A v / v^T B v (B = I when not given); ``v`` (N,) -> float, or columns (N, m) -> (m,). Chapter 02, A.1.

    ``a`` and ``b`` may be dense numpy/torch or scipy.sparse; torch in gives torch out.
    """
    is_torch = isinstance(v, torch.Tensor)
    a_ = a.detach().cpu().double().numpy() if isinstance(a, torch.Tensor) else a
    b_ = b.detach().cpu().double().numpy() if isinstance(b, torch.Tensor) else b
    v_ = v.detach().cpu().double().numpy() if is_torch else np.asarray(v, dtype=np.float64)
    if v_.ndim not in (1, 2) or v_.shape[0] != a_.shape[0]:
        raise ValueError(f"v must have shape (N,) or (N, m) with N = {a_.shape[0]}, got {v_.shape}")
    numerator = np.sum(v_ * (a_ @ v_), axis=0)
    denominator = np.sum(v_ * v_, axis=0) if b_ is None else np.sum(v_ * (b_ @ v_), axis=0)
    if np.any(denominator == 0):
        raise ValueError("v^T B v = 0: the Rayleigh quotient is undefined for the zero vector")
    quotient = np.asarray(numerator / denominator)
    if is_torch:
        return torch.as_tensor(quotient)
    return float(quotient) if quotient.ndim == 0 else quotient


# ---------------------------------------------------------------------------------- graphs, Ncut

def _as_affinity(w):
    """W as float64 numpy (dense) or scipy CSR (sparse), checked square, symmetric and non-negative."""
    if isinstance(w, torch.Tensor):
        w = w.detach().cpu().double().numpy()
    if scipy.sparse.issparse(w):
        w = scipy.sparse.csr_matrix(w, dtype=np.float64)
    else:
        w = np.asarray(w, dtype=np.float64)
    if w.ndim != 2 or w.shape[0] != w.shape[1]:
        raise ValueError(f"an affinity matrix must be square (N, N), got shape {w.shape}")
    if scipy.sparse.issparse(w):
        asymmetry = abs(w - w.T).max() if w.nnz else 0.0
        smallest = w.data.min() if w.nnz else 0.0
    else:
        asymmetry = np.abs(w - w.T).max() if w.size else 0.0
        smallest = w.min() if w.size else 0.0
    values = w.data if scipy.sparse.issparse(w) else w
    if not np.all(np.isfinite(values)):
        raise ValueError(f"the affinity matrix holds {int(np.sum(~np.isfinite(values)))} NaN or infinite entries; "
                         "check the features or the scales (sigma) that built it")
    if asymmetry > 1e-8:
        raise ValueError(f"the affinity matrix is not symmetric (max |W - W^T| = {asymmetry:.2g}); "
                         "use (W + W.T) / 2")
    if smallest < 0:
        raise ValueError(f"affinities must be >= 0 (found {smallest:.3g}): Ncut and the PSD Laplacian need w_ij >= 0")
    return w


def degrees(w) -> np.ndarray:
    """d_i = sum_j w_ij, (N,). Chapter 02, B.1."""
    w = _as_affinity(w)
    return np.asarray(w.sum(axis=1)).ravel()


def laplacian(w):
    """L = D - W (dense or sparse, like W). Chapter 02, B.1."""
    w = _as_affinity(w)
    d = degrees(w)
    return scipy.sparse.diags(d) - w if scipy.sparse.issparse(w) else np.diag(d) - w


def _mask(mask, n: int) -> np.ndarray:
    mask = np.asarray(mask.detach().cpu() if isinstance(mask, torch.Tensor) else mask).ravel()
    if mask.dtype != bool or mask.size != n:
        raise ValueError(f"a partition is a boolean mask of {n} nodes (True = in A), got {mask.dtype} of size {mask.size}")
    return mask


def cut(w, mask) -> float:
    """cut(A, B) = sum over u in A, v in B of w_uv, with A = mask, B = ~mask. Chapter 02, B.2."""
    w = _as_affinity(w)
    a = _mask(mask, w.shape[0]).astype(np.float64)
    return float(a @ (w @ (1.0 - a)))


def assoc(w, mask_a, mask_b=None) -> float:
    """assoc(A, B) = sum over u in A, t in B of w_ut; B = all nodes V when not given. Chapter 02, B.2."""
    w = _as_affinity(w)
    a = _mask(mask_a, w.shape[0]).astype(np.float64)
    b = np.ones(w.shape[0]) if mask_b is None else _mask(mask_b, w.shape[0]).astype(np.float64)
    return float(a @ (w @ b))


def _ncut_fast(w, d: np.ndarray, mask: np.ndarray) -> float:
    """Ncut of a checked affinity with known degrees: one product with W (and no BLAS call)."""
    assoc_a = float(d[mask].sum())
    assoc_b = float(d[~mask].sum())
    if assoc_a <= 0 or assoc_b <= 0:
        return float("inf")
    within_a = float(np.asarray(w @ mask.astype(np.float64)).ravel()[mask].sum())  # assoc(A, A)
    c = assoc_a - within_a  # cut(A, B) = assoc(A, V) - assoc(A, A)
    return c / assoc_a + c / assoc_b


def ncut_value(w, mask) -> float:
    """Ncut(A, B) = cut(A, B) / assoc(A, V) + cut(A, B) / assoc(B, V); inf for an empty side. Chapter 02, B.2."""
    w = _as_affinity(w)
    mask = _mask(mask, w.shape[0])
    assoc_a, assoc_b = assoc(w, mask), assoc(w, ~mask)
    if assoc_a == 0 or assoc_b == 0:
        return float("inf")
    c = cut(w, mask)
    return c / assoc_a + c / assoc_b


def nassoc_value(w, mask) -> float:
    """Nassoc(A, B) = assoc(A, A) / assoc(A, V) + assoc(B, B) / assoc(B, V) (= 2 - Ncut). Chapter 02, B.2."""
    w = _as_affinity(w)
    mask = _mask(mask, w.shape[0])
    assoc_a, assoc_b = assoc(w, mask), assoc(w, ~mask)
    if assoc_a == 0 or assoc_b == 0:
        return float("nan")
    return assoc(w, mask, mask) / assoc_a + assoc(w, ~mask, ~mask) / assoc_b


def first_largest(magnitudes: np.ndarray, rel_tol: float = 1e-9) -> np.ndarray:
    """Per column of ``magnitudes`` (n, k), or for a vector (n,), the first index whose value is within a relative
    ``rel_tol`` of the largest: an arg max whose ties (values equal in exact arithmetic, different in the last bit)
    are broken by position, the same way on every machine. Chapter 02, A.5."""
    magnitudes = np.asarray(magnitudes)
    return np.argmax(magnitudes >= magnitudes.max(axis=0) * (1 - rel_tol), axis=0)


def _fix_signs(y: np.ndarray) -> np.ndarray:
    """Each column's entry of largest magnitude made positive (eigenvectors are defined up to sign)."""
    return y * np.sign(y[first_largest(np.abs(y)), np.arange(y.shape[1])])


def _dot(a: np.ndarray, b: np.ndarray) -> float:
    """a . b without BLAS: numpy's dot on long vectors calls a multi-threaded BLAS that, on a busy 2-core
    machine, spends most of its time waiting for its own threads (measured 5-15x slower)."""
    return float(np.add.reduce(a * b))


def lanczos_largest(matvec, v0: np.ndarray, *, deflate=(), tol: float = 1e-6, max_iter: int = 5000,
                    check_every: int = 10) -> tuple[float, np.ndarray, int]:
    """Largest eigenpair of a symmetric operator, by the Lanczos recurrence. Chapter 02, C.5.

    Builds the Krylov basis v_1, v_2, ... of ``matvec`` (a function x -> A x, (N,) -> (N,)) from ``v0``,
    keeping only the last two vectors' recurrence (no reorthogonalisation: the largest Ritz pair is
    still right, Paige 1976; copies of it appear only after it has converged, and we stop there).
    ``deflate``: orthonormal vectors (N,) to stay orthogonal to (known eigenvectors). Stops when
    the residual ||A x - theta x|| < ``tol`` (checked every ``check_every`` steps).
    Returns ``(theta, x, steps)``: the Rayleigh quotient of the unit vector x, x, the number of products.
    """
    import scipy.linalg

    deflate = [np.asarray(q, dtype=np.float64) for q in deflate]

    def project(x):
        for q in deflate:
            x = x - q * _dot(q, x)
        return x

    v = project(np.asarray(v0, dtype=np.float64))
    v = v / np.sqrt(_dot(v, v))
    basis, alphas, betas = [v], [], []
    v_previous, beta_previous = np.zeros_like(v), 0.0
    ritz = np.ones(1)
    for step in range(1, max_iter + 1):
        w = project(matvec(v)) - beta_previous * v_previous   # (N,)
        alpha = _dot(v, w)
        w = w - alpha * v
        correction = _dot(v, w)                                # one local re-orthogonalisation: cheap, steadier
        w, alpha = w - correction * v, alpha + correction
        beta = np.sqrt(_dot(w, w))
        alphas.append(alpha)
        if step % check_every == 0 or step == max_iter or beta < 1e-14:
            _, vectors = scipy.linalg.eigh_tridiagonal(np.array(alphas), np.array(betas), select="i",
                                                       select_range=(step - 1, step - 1))
            ritz = vectors[:, 0]                               # the largest Ritz vector, in the basis
            if beta * abs(ritz[-1]) < tol or beta < 1e-14:
                break
        betas.append(beta)
        v_previous, v, beta_previous = v, w / beta, beta
        basis.append(v)
    x = np.zeros_like(v)
    for coefficient, vector in zip(ritz, basis):
        x += coefficient * vector
    x = project(x)
    x /= np.sqrt(_dot(x, x))
    return _dot(x, matvec(x)), x, step


def ncut_eigenvectors(w, k: int = 2, *, tol: float = 1e-6, method: str = "lanczos") -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` smallest generalized eigenpairs of (D - W) y = lambda D y: (lambdas (k,), Y (N, k)).

    Solved through the symmetric L_sym = I - D^{-1/2} W D^{-1/2}: z = D^{1/2} y. Dense graphs (and
    sparse ones of at most ``DENSE_LIMIT`` nodes) use ``numpy.linalg.eigh``, exact. Larger sparse
    ones need only products with W, through the largest eigenvalues mu = 1 - lambda of
    D^{-1/2} W D^{-1/2}; its top eigenvector z_0 = D^{1/2} 1 is known, so:

    - ``method="lanczos"`` (default): :func:`lanczos_largest` for z_1 with z_0 deflated, then z_2 with
      z_0, z_1 deflated, and so on; residual ``tol``.
    - ``method="arpack"``: ``scipy.sparse.linalg.eigsh(which="LA")`` with a 40-vector Krylov space
      (the default 2k + 1 restarts so often that a 128 x 128 image takes 10-20x longer).

    Columns of Y are scaled to y^T D y = 1, with a fixed sign (largest entry positive).

    Taught in chapter 02, C.4; chapter 05, D.
    """
    w = _as_affinity(w)
    n = w.shape[0]
    if not 1 <= k <= n:
        raise ValueError(f"k must be between 1 and the number of nodes {n}, got {k}")
    if method not in ("lanczos", "arpack"):
        raise ValueError(f"method must be 'lanczos' or 'arpack', got {method!r}")
    d = degrees(w)
    if np.any(d <= 0):
        raise ValueError(f"{int(np.sum(d <= 0))} node(s) have no edges (degree 0): Ncut is undefined for them; "
                         "raise the radius / sigma or add a small epsilon to every affinity")
    inv_sqrt_d = 1.0 / np.sqrt(d)
    if scipy.sparse.issparse(w) and n > max(DENSE_LIMIT, 2 * k + 1):
        normalized = (scipy.sparse.diags(inv_sqrt_d) @ w @ scipy.sparse.diags(inv_sqrt_d)).tocsr()
        z0 = np.sqrt(d) / np.sqrt(d.sum())                     # the known eigenvector, mu = 1
        rng = np.random.default_rng(0)                         # fixed starts: no dependence on the global seed
        start = rng.standard_normal(n)
        if method == "arpack":
            ncv = min(n - 1, max(2 * k + 1, 40))
            mu, z = scipy.sparse.linalg.eigsh(normalized, k=k, which="LA", v0=z0 + 0.1 * start / np.sqrt(n),
                                              tol=tol, ncv=ncv)
        else:
            found, mus = [z0], [1.0]
            for _ in range(k - 1):
                # a new start each time: the previous start's part in a repeated eigenspace is already found
                mu_j, z_j, _ = lanczos_largest(normalized.dot, start, deflate=found, tol=tol)
                start = rng.standard_normal(n)
                found.append(z_j)
                mus.append(mu_j)
            mu, z = np.array(mus), np.stack(found, axis=1)
        lambdas = 1.0 - mu
    else:
        dense = w.toarray() if scipy.sparse.issparse(w) else w
        normalized = inv_sqrt_d[:, None] * dense * inv_sqrt_d[None, :]
        lambdas, z = np.linalg.eigh(np.eye(n) - normalized)
        lambdas, z = lambdas[:k], z[:, :k]
    order = np.argsort(lambdas, kind="stable")
    y = inv_sqrt_d[:, None] * z[:, order]
    return lambdas[order], _fix_signs(y)


def ncut_threshold_curve(w, y1, thresholds) -> np.ndarray:
    """Ncut({i : y1_i > t}, rest) for each threshold t: (T,), inf where one side is empty. Chapter 02, C.6."""
    w = _as_affinity(w)
    y1 = np.asarray(y1, dtype=np.float64).ravel()
    if y1.size != w.shape[0]:
        raise ValueError(f"y1 has {y1.size} entries but the graph has {w.shape[0]} nodes")
    d = degrees(w)
    return np.array([_ncut_fast(w, d, y1 > t) for t in np.asarray(thresholds, dtype=np.float64).ravel()])


def ncut_bipartition(w, threshold: str | float = "search", n_thresholds: int = 32, *, y1=None, min_size: int = 1):
    """Split a graph in two with the second-smallest generalized eigenvector y_1. Chapter 02, C.6.

    ``threshold``: "search" (the paper's default: try ``n_thresholds`` evenly spaced values of y_1
    and keep the one with the smallest actual Ncut; with ``min_size`` > 1, also ``n_thresholds`` evenly
    spaced quantiles of y_1, and only thresholds that leave at least ``min_size`` nodes on each side),
    "zero", "median", or a number. Pass ``y1`` to reuse an
    eigenvector already computed.
    Returns ``(mask, y1, ncut)``: A = {i : y_1[i] > t} as a bool array (N,), y_1 (N,), Ncut(A, B).
    """
    w = _as_affinity(w)
    if y1 is None:
        _, y = ncut_eigenvectors(w, k=2)
        y1 = y[:, 1]
    y1 = np.asarray(y1, dtype=np.float64).ravel()
    if threshold == "search":
        candidates = np.linspace(y1.min(), y1.max(), n_thresholds + 2)[1:-1]
        if min_size > 1:  # also evenly spaced quantiles, so that some candidates leave min_size on each side
            share = min(min_size / len(y1), 0.5)
            candidates = np.concatenate([candidates, np.quantile(y1, np.linspace(share, 1 - share, n_thresholds))])
        values = ncut_threshold_curve(w, y1, candidates)
        sizes = (y1[:, None] > candidates[None, :]).sum(axis=0)             # |A| per threshold
        values[np.minimum(sizes, len(y1) - sizes) < min_size] = np.inf
        t = candidates[int(np.argmin(values))]
    elif threshold == "zero":
        t = 0.0
    elif threshold == "median":
        t = float(np.median(y1))
    elif isinstance(threshold, (int, float, np.floating)) and not isinstance(threshold, bool):
        t = float(threshold)
    else:
        raise ValueError(f"threshold must be 'search', 'zero', 'median' or a number, got {threshold!r}")
    mask = y1 > t
    return mask, y1, _ncut_fast(w, degrees(w), mask)


def cosine_similarities(features: torch.Tensor) -> torch.Tensor:
    """Cosine similarity of every pair of N feature vectors (N, C) -> (N, N) float64, exactly symmetric. Chapter 05, D.

    A float product ``f @ f.T`` is symmetric only in exact arithmetic: its (i, j) and (j, i) entries are
    sums in different orders and can differ in the last bit, depending on the BLAS kernel the CPU picks.
    Thresholding such a matrix can give w_ij = 1 and w_ji = eps. Averaging with the transpose makes the two
    entries bitwise equal (float addition commutes), so anything computed from them stays symmetric.
    """
    if features.ndim != 2:
        raise ValueError(f"expected features of shape (N, C), got {tuple(features.shape)}")
    f = torch.nn.functional.normalize(features.detach().double().cpu(), dim=1)
    similarity = f @ f.T                                                                  # (N, N)
    return (similarity + similarity.T) / 2


def feature_affinity(features: torch.Tensor, tau: float, eps: float = 1e-5) -> np.ndarray:
    """TokenCut-style graph on N feature vectors (N, C): w_ij = 1 if cos(f_i, f_j) > tau else eps. Chapter 05, D.

    Calibrate ``tau`` on the histogram of the similarities (e.g. a quantile): thresholds from
    papers on large ViTs do not transfer to a tiny model, whose similarities can all sit near 1.
    The similarities are symmetrised first (:func:`cosine_similarities`), so W is exactly symmetric
    on every machine even when ``tau`` equals one of them.
    """
    similarity = cosine_similarities(features).numpy()
    w = np.where(similarity > tau, 1.0, eps)
    np.fill_diagonal(w, 0.0)
    return w


# -------------------------------------------------------------------------------------- images

def _image_features(image) -> np.ndarray:
    """An image (H, W) or (C, H, W), torch or numpy, as float64 (C, H, W)."""
    array = image.detach().cpu().double().numpy() if isinstance(image, torch.Tensor) else np.asarray(image, np.float64)
    if array.ndim == 2:
        array = array[None]
    if array.ndim != 3 or min(array.shape) < 1:
        raise ValueError(f"expected an image of shape (H, W) or (C, H, W), got {array.shape}")
    if array.shape[0] > 4 and array.shape[-1] in (1, 3, 4):
        raise ValueError(f"image of shape {array.shape} looks channels-last; pass (C, H, W), e.g. "
                         "array.transpose(2, 0, 1)")
    return array


def neighbour_offsets(radius: float) -> np.ndarray:
    """Pixel offsets (dy, dx) with 0 < dy^2 + dx^2 < radius^2 and (dy, dx) > (0, 0) lexicographically. Chapter 02, D.1.

    One of each pair +-(dy, dx): the other half of the graph's edges is the transpose. Shape (M, 2).
    """
    reach = int(np.ceil(radius))
    offsets = [(dy, dx) for dy in range(0, reach + 1) for dx in range(-reach, reach + 1)
               if (dy > 0 or dx > 0) and dy * dy + dx * dx < radius * radius]
    return np.array(offsets, dtype=np.int64).reshape(-1, 2)


def image_affinity(image, sigma_i: float, sigma_x: float, radius: float) -> scipy.sparse.csr_matrix:
    """Shi and Malik's pixel graph as a sparse (HW, HW) matrix, pixels numbered row by row:

        w_ij = exp(-||F_i - F_j||^2 / sigma_i^2) * exp(-||X_i - X_j||^2 / sigma_x^2)  if ||X_i - X_j|| < radius,
        w_ij = 0 otherwise (and w_ii = 0),

    F the pixel's channel values (``image`` (H, W) or (C, H, W)), X its (row, column) position. Note
    the paper's sigma^2, not 2 sigma^2. Vectorised over pixels: one array operation per offset
    within the radius (about pi r^2 / 2 of them).

    Taught in chapter 02, D.1.
    """
    features = _image_features(image)                        # (C, H, W)
    if sigma_i <= 0 or sigma_x <= 0:
        raise ValueError(f"sigma_i and sigma_x must be > 0, got {sigma_i}, {sigma_x}")
    offsets = neighbour_offsets(radius)
    if len(offsets) == 0:
        raise ValueError(f"radius {radius} connects no pixels: use radius > 1")
    _, h, w = features.shape
    index = np.arange(h * w).reshape(h, w)
    rows, cols, values = [], [], []
    for dy, dx in offsets:
        # pixel p = (y, x) and its neighbour q = (y + dy, x + dx), over every p whose q is inside the image
        x_lo, x_hi = max(0, -dx), min(w, w - dx)
        p_feat = features[:, : h - dy, x_lo:x_hi]            # (C, h - dy, x_hi - x_lo)
        q_feat = features[:, dy:, x_lo + dx: x_hi + dx]
        feature_term = ((p_feat - q_feat) ** 2).sum(axis=0) / sigma_i**2
        values.append(np.exp(-feature_term - (dy * dy + dx * dx) / sigma_x**2).ravel())
        rows.append(index[: h - dy, x_lo:x_hi].ravel())
        cols.append(index[dy:, x_lo + dx: x_hi + dx].ravel())
    rows, cols, values = np.concatenate(rows), np.concatenate(cols), np.concatenate(values)
    upper = scipy.sparse.coo_matrix((values, (rows, cols)), shape=(h * w, h * w)).tocsr()
    upper.eliminate_zeros()  # weights that underflowed to 0 (a tiny sigma_i) are no edges
    return (upper + upper.T).tocsr()


def eigenvector_stability(y, bins: int = 20, clip: float = 0.01) -> float:
    """Shi and Malik's smoothness test: the ratio min / max of the histogram counts of ``y``'s values. Chapter 02, D.4.

    A piecewise-constant eigenvector (a clean split) has empty bins between its levels: a ratio
    near 0. A smoothly varying one (a ramp, no split worth making) fills every bin: a high ratio.
    The histogram spans the ``clip`` to 1 - ``clip`` quantiles of ``y``, so that a few extreme values
    (a clump of odd pixels) do not empty every bin on their own.
    """
    y = np.asarray(y, dtype=np.float64).ravel()
    low, high = np.quantile(y, [clip, 1 - clip])
    if high <= low:
        return 0.0
    counts, _ = np.histogram(y, bins=bins, range=(low, high))
    return float(counts.min() / max(counts.max(), 1))


def recursive_ncut(w, *, max_ncut: float = 0.2, min_size: int = 20, max_depth: int = 8,
                   max_stability: float | None = None, n_thresholds: int = 32):
    """Recursive two-way Normalized Cut: split, then split each part, while the split is worth it. Chapter 02, D.6.

    A segment is split by :func:`ncut_bipartition` ("search" threshold among those that leave ``min_size``
    nodes on each side) on its own subgraph. A split is
    kept when its Ncut is below ``max_ncut``, both parts have at least ``min_size`` nodes, the depth is
    below ``max_depth`` and (if ``max_stability`` is given) the eigenvector passes
    :func:`eigenvector_stability` <= ``max_stability``. A disconnected segment is first split into its
    connected components (a split of Ncut 0).

    Returns ``(labels, splits)``: labels (N,) int64 numbered 0, 1, ...; splits, one dict per tried
    split with keys depth, size, ncut, stability, kept.
    """
    w = _as_affinity(w)
    w = w.tocsr() if scipy.sparse.issparse(w) else scipy.sparse.csr_matrix(w)
    n = w.shape[0]
    labels = np.full(n, -1, dtype=np.int64)
    splits: list[dict] = []
    stack = [(np.arange(n), 0)]
    next_label = 0
    while stack:
        nodes, depth = stack.pop()
        if len(nodes) < 2 * min_size or depth >= max_depth:
            labels[nodes], next_label = next_label, next_label + 1
            continue
        sub = w[nodes][:, nodes]
        n_components, component = scipy.sparse.csgraph.connected_components(sub, directed=False)
        if n_components > 1:
            splits.append(dict(depth=depth, size=len(nodes), ncut=0.0, stability=float("nan"), kept=True))
            stack.extend((nodes[component == c], depth + 1) for c in range(n_components))
            continue
        mask, y1, value = ncut_bipartition(sub, "search", n_thresholds, min_size=min_size)
        stability = eigenvector_stability(y1)
        kept = bool(value < max_ncut and min(mask.sum(), (~mask).sum()) >= min_size
                    and (max_stability is None or stability <= max_stability))
        splits.append(dict(depth=depth, size=len(nodes), ncut=value, stability=stability, kept=kept))
        if kept:
            stack.extend([(nodes[mask], depth + 1), (nodes[~mask], depth + 1)])
        else:
            labels[nodes], next_label = next_label, next_label + 1
    return labels, splits


# ---------------------------------------------------------------------------------- schematics

def pca_schematic():
    """PCA as a pipeline: data, centre, covariance, top-k eigenvectors, projection and reconstruction.

    Taught in chapter 02, A.1 (variance along a direction) to A.5 (the reconstruction error).
    """
    from course_lib.core.diagram import arrow, box, canvas, legend, note

    fig, ax = canvas(13.3, 3.3, title="PCA: the top-k eigenvectors of the covariance")
    y = 1.8
    data = box(ax, 0.95, y, "data $X$\n$(n, d)$", w=1.5, role="data")
    centre = box(ax, 3.0, y, "centre\n$X_c = X - \\bar x$", w=1.8, role="operation")
    cov = box(ax, 5.3, y, "covariance\n$S = X_c^\\top X_c / n$", w=2.2, role="operation")
    eig = box(ax, 7.85, y, "top-$k$ eigenvectors\n$V_k = [w_1 \\dots w_k]$", w=2.3, role="latent")
    code = box(ax, 10.25, y, "code\n$c = V_k^\\top (x - \\bar x)$", w=1.9, role="latent")
    recon = box(ax, 12.35, y, "reconstruction\n$\\hat x = \\bar x + V_k c$", w=1.7, role="data")
    for left, right in zip([data, centre, cov, eig, code], [centre, cov, eig, code, recon]):
        arrow(ax, left.right, right.left)
    note(ax, 5.3, y - 0.75, "$(d, d)$: $S w_i = \\lambda_i w_i$")
    note(ax, 7.85, y - 0.75, "$\\lambda_1 \\geq \\dots \\geq \\lambda_k$: largest variance")
    note(ax, 10.25, y - 0.75, "$(n, k)$, $k \\ll d$")
    note(ax, 12.35, y + 0.75, "error $= \\sum_{i > k} \\lambda_i$")
    legend(ax, ["data", "operation", "latent"], loc="lower left")
    return fig


def ncut_schematic():
    """Normalized Cut as a pipeline: image, affinity graph W and degrees D, the generalized eigenproblem, the
    threshold on the second eigenvector, two segments.

    Taught in chapter 02, C.2 (the relaxation), with the pixel graph of D.1 and the threshold of C.6.
    """
    from course_lib.core.diagram import arrow, box, canvas, legend, note

    fig, ax = canvas(13, 4.0, title="Normalized Cut: from an image to two segments")
    y = 2.0
    image = box(ax, 1.0, y, "image\n$H \\times W$ pixels", w=1.6, role="data")
    graph = box(ax, 3.55, y, "affinity graph $W$\ndegrees $D$", w=2.1, role="latent")
    eig = box(ax, 6.4, y, "$(D - W)\\, y = \\lambda D y$", w=2.3, role="operation")
    thresh = box(ax, 9.15, y, "threshold $y_1$\n$A = \\{i : y_{1,i} > t\\}$", w=2.2, role="operation")
    segments = box(ax, 11.9, y, "two segments\n$A$, $B$", w=1.7, role="data")
    arrow(ax, image.right, graph.left)
    arrow(ax, graph.right, eig.left)
    arrow(ax, eig.right, thresh.left, text="$y_1$")
    arrow(ax, thresh.right, segments.left)
    objective = box(ax, 6.4, 3.3, "relaxes  min $\\mathrm{Ncut}(A, B)$", w=2.8, h=0.5, role="loss")
    arrow(ax, objective.bottom, eig.top)
    note(ax, 3.55, y - 0.95, "$w_{ij} = e^{-\\Vert F_i - F_j \\Vert^2 / \\sigma_I^2}\\, e^{-\\Vert X_i - X_j \\Vert^2 / \\sigma_X^2}$\n"
         "for pixels closer than $r$; $d_i = \\sum_j w_{ij}$")
    note(ax, 6.4, y - 0.95, "keep $y_1$, the 2nd smallest; sparse: Lanczos\n$\\lambda_0 = 0$, $y_0 = \\mathbf{1}$ is discarded")
    note(ax, 9.15, y - 0.95, "$t$: the smallest Ncut\namong candidate thresholds")
    note(ax, 11.9, y - 0.95, "recurse on each\nsegment for more")
    legend(ax, ["data", "latent", "operation", "loss"], loc="lower left")
    return fig
