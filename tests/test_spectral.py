"""course_lib.topics.spectral: PCA, the graph Laplacian, Normalized Cut, the pixel graph, Lanczos (chapter 02; chapter 05 uses Ncut)."""
import itertools
import time

import numpy as np
import pytest
import scipy.linalg
import scipy.sparse
import scipy.sparse.csgraph
import scipy.sparse.linalg
import torch
import torch.nn.functional as F

from course_lib.topics import spectral as S
from course_lib.data import load_image


def random_affinity(n, seed=0):
    rng = np.random.default_rng(seed)
    w = rng.random((n, n))
    w = (w + w.T) / 2
    np.fill_diagonal(w, 0)
    return w


def all_masks(n):
    rows = np.array(list(itertools.product([True, False], repeat=n - 1)), dtype=bool)
    masks = np.concatenate([np.ones((len(rows), 1), dtype=bool), rows], axis=1)
    return masks[~masks.all(axis=1)]


def disc_image(size=48, seed=0):
    yy, xx = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
    disc = (yy - size / 2) ** 2 + (xx - size / 2 - 3) ** 2 < (size / 4) ** 2
    image = np.where(disc, 0.65, 0.35) + 0.05 * np.random.default_rng(seed).standard_normal((size, size))
    return image, disc


# ------------------------------------------------------------------------------------------ PCA

def test_pca_matches_svd_sorted_and_orthonormal():
    x = torch.randn(300, 12, generator=torch.Generator().manual_seed(0), dtype=torch.float64) @ torch.diag(
        torch.linspace(3, 0.1, 12, dtype=torch.float64))
    p = S.pca(x)
    centred = x - x.mean(0)
    _, singular, vh = torch.linalg.svd(centred, full_matrices=False)
    assert torch.allclose(p.variances, singular**2 / len(x), rtol=1e-10)
    assert torch.all(p.variances[:-1] >= p.variances[1:])
    assert torch.allclose(p.components.T @ p.components, torch.eye(12, dtype=torch.float64), atol=1e-12)
    assert torch.allclose((p.components * vh.T).sum(0).abs(), torch.ones(12, dtype=torch.float64), atol=1e-10)
    assert abs(p.total_variance - p.variances.sum().item()) < 1e-10
    assert torch.allclose(S.explained_variance_ratio(p).sum(), torch.tensor(1.0, dtype=torch.float64))


def test_pca_top_component_maximises_the_rayleigh_quotient():
    x = torch.randn(500, 6, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    x[:, 0] *= 4
    p = S.pca(x, k=2)
    cov = (x - x.mean(0)).T @ (x - x.mean(0)) / len(x)
    directions = torch.randn(6, 1000, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    assert S.rayleigh_quotient(cov, directions).max() <= p.variances[0] + 1e-12
    assert abs(S.rayleigh_quotient(cov, p.components[:, 0]) - p.variances[0]) < 1e-12


def test_pca_reconstruction_error_is_the_sum_of_discarded_eigenvalues():
    x = torch.rand(200, 4, 5, generator=torch.Generator().manual_seed(3), dtype=torch.float64)  # "images" (n, 4, 5)
    p = S.pca(x)
    for k in (0, 3, 10, 20):
        reconstruction = S.pca_reconstruct(x, p, k)
        assert reconstruction.shape == x.shape
        error = ((x - reconstruction) ** 2).sum(dim=(1, 2)).mean()
        assert abs(error - p.variances[k:].sum()) < 1e-10
    assert S.pca_project(x, p, 3).shape == (200, 3)


@pytest.mark.parametrize("bad, match", [(torch.arange(10).reshape(5, 2), "floating"), (torch.zeros(5), "shape"),
                                        (torch.zeros(1, 3), "at least 2")])
def test_pca_rejects_bad_input(bad, match):
    with pytest.raises((TypeError, ValueError), match=match):
        S.pca(bad)


def test_pca_checks_k_and_feature_count():
    p = S.pca(torch.randn(20, 4, dtype=torch.float64), k=2)
    with pytest.raises(ValueError, match="between"):
        S.pca_reconstruct(torch.randn(3, 4, dtype=torch.float64), p, 3)
    with pytest.raises(ValueError, match="features"):
        S.pca_project(torch.randn(3, 5, dtype=torch.float64), p, 1)


def test_rayleigh_quotient_dense_sparse_generalized():
    a = random_affinity(8)
    b = np.diag(np.arange(1.0, 9.0))
    v = np.random.default_rng(0).standard_normal((8, 3))
    expected = np.array([v[:, j] @ a @ v[:, j] / (v[:, j] @ b @ v[:, j]) for j in range(3)])
    assert np.allclose(S.rayleigh_quotient(a, v, b), expected)
    assert np.allclose(S.rayleigh_quotient(scipy.sparse.csr_matrix(a), v, scipy.sparse.csr_matrix(b)), expected)
    assert isinstance(S.rayleigh_quotient(a, v[:, 0]), float)
    with pytest.raises(ValueError, match="zero vector"):
        S.rayleigh_quotient(a, np.zeros(8))


# --------------------------------------------------------------------------------- graphs, Ncut

def test_laplacian_quadratic_form_and_psd():
    w = random_affinity(10, seed=4)
    lap = S.laplacian(w)
    v = np.random.default_rng(5).standard_normal(10)
    assert abs(v @ lap @ v - 0.5 * (w * (v[:, None] - v[None, :]) ** 2).sum()) < 1e-12
    assert np.allclose(lap @ np.ones(10), 0)
    assert np.linalg.eigvalsh(lap).min() > -1e-12
    assert np.allclose(S.laplacian(scipy.sparse.csr_matrix(w)).toarray(), lap)


def test_cut_assoc_ncut_nassoc_identities():
    w = random_affinity(9, seed=6)
    mask = np.arange(9) % 3 == 0
    indicator = mask.astype(float)
    assert abs(S.cut(w, mask) - indicator @ S.laplacian(w) @ indicator) < 1e-12
    assert abs(S.assoc(w, mask) - (S.assoc(w, mask, mask) + S.cut(w, mask))) < 1e-12
    assert abs(S.ncut_value(w, mask) - (2 - S.nassoc_value(w, mask))) < 1e-12
    assert S.ncut_value(w, np.ones(9, dtype=bool)) == float("inf")
    assert abs(S.ncut_value(torch.tensor(w), torch.tensor(mask)) - S.ncut_value(w, mask)) < 1e-15


def test_ncut_is_the_rayleigh_quotient_of_the_partition_vector():
    w = random_affinity(12, seed=7)
    d = S.degrees(w)
    for mask in all_masks(12)[::173]:
        b = d[mask].sum() / d[~mask].sum()
        y = 2 * (mask - b * ~mask)
        assert abs(S.rayleigh_quotient(S.laplacian(w), y, np.diag(d)) - S.ncut_value(w, mask)) < 1e-12
        assert abs(y @ d) < 1e-10


def test_complete_graph_has_the_same_ncut_for_every_partition():
    n = 10
    w = np.ones((n, n)) - np.eye(n)
    for mask in all_masks(n)[::31]:
        assert abs(S.ncut_value(w, mask) - n / (n - 1)) < 1e-12
        x = mask.sum()
        assert abs(S.cut(w, mask) - x * (n - x)) < 1e-12


@pytest.mark.parametrize("seed", range(3))
def test_lambda_1_is_a_lower_bound_on_the_brute_force_min_ncut(seed):
    w = random_affinity(12, seed=seed)
    lambdas, y = S.ncut_eigenvectors(w, k=2)
    best = min(S.ncut_value(w, m) for m in all_masks(12))
    assert lambdas[1] <= best + 1e-12
    assert abs(S.rayleigh_quotient(S.laplacian(w), y[:, 1], np.diag(S.degrees(w))) - lambdas[1]) < 1e-10
    lam_generalized = scipy.linalg.eigh(S.laplacian(w), np.diag(S.degrees(w)), eigvals_only=True)
    assert np.allclose(lambdas, lam_generalized[:2], atol=1e-12)


def test_dense_eigenvectors_solve_the_generalized_problem_exactly():
    """Chapter 05 checks a residual below 1e-8 on the dense (TokenCut) path."""
    features = torch.randn(64, 16, generator=torch.Generator().manual_seed(8))
    w = S.feature_affinity(features, tau=0.2)
    lambdas, y = S.ncut_eigenvectors(w, k=2)
    d = w.sum(1)
    assert np.abs((np.diag(d) - w) @ y[:, 1] - lambdas[1] * d * y[:, 1]).max() < 1e-10
    assert abs(y[:, 1] @ d) < 1e-10
    assert np.allclose(y.T @ (d[:, None] * y), np.eye(2), atol=1e-10)


def test_sparse_solvers_agree_with_dense():
    image, _ = disc_image(30)
    w = S.image_affinity(image, 0.15, 4.0, 4)                 # 900 nodes > DENSE_LIMIT: Lanczos
    lam_dense, y_dense = S.ncut_eigenvectors(w.toarray(), k=4)
    d = S.degrees(w)
    for method in ("lanczos", "arpack"):
        lam, y = S.ncut_eigenvectors(w, k=4, method=method, tol=1e-10)
        assert np.allclose(lam, lam_dense, atol=1e-8)
        cosines = np.abs((y * d[:, None] * y_dense).sum(0))    # both D-normalised
        assert cosines[1:].min() > 1 - 1e-6
    with pytest.raises(ValueError, match="method"):
        S.ncut_eigenvectors(w, k=2, method="dense")


def test_lanczos_largest_matches_eigsh_and_respects_deflation():
    a = scipy.sparse.random(400, 400, density=0.02, random_state=0)
    a = (a + a.T).tocsr()
    top = scipy.sparse.linalg.eigsh(a, k=2, which="LA", tol=1e-12)
    theta, x, steps = S.lanczos_largest(a.dot, np.ones(400), tol=1e-10)
    assert abs(theta - top[0].max()) < 1e-8 and steps <= 400
    q = top[1][:, np.argmax(top[0])]
    theta2, x2, _ = S.lanczos_largest(a.dot, np.ones(400), deflate=[q], tol=1e-10)
    assert abs(theta2 - top[0].min()) < 1e-8 and abs(x2 @ q) < 1e-10


def test_disconnected_graph_has_one_zero_eigenvalue_per_component():
    image = np.full((24, 24), 0.2)
    image[3:10, 3:10] = 0.9
    image[14:21, 12:22] = 0.6
    w = S.image_affinity(image, 0.01, 3.0, 3)
    n_components = scipy.sparse.csgraph.connected_components(w, directed=False)[0]
    assert n_components == 3
    lambdas, _ = S.ncut_eigenvectors(w, k=5)
    assert (lambdas < 1e-9).sum() == 3


def test_threshold_options_and_errors():
    image, disc = disc_image()
    w = S.image_affinity(image, 0.1, 4.0, 5)
    mask, y1, value = S.ncut_bipartition(w, "search")
    found = mask.reshape(disc.shape)
    found = found if (found & disc).sum() > (~found & disc).sum() else ~found
    assert (found & disc).sum() / (found | disc).sum() > 0.9
    assert abs(value - S.ncut_value(w, mask)) < 1e-12
    for option in ("zero", "median", float(np.median(y1))):
        m, _, v = S.ncut_bipartition(w, option, y1=y1)
        assert v >= value - 1e-12 and abs(v - S.ncut_value(w, m)) < 1e-12
    curve = S.ncut_threshold_curve(w, y1, [y1.min() - 1, np.median(y1)])
    assert curve[0] == float("inf") and np.isfinite(curve[1])
    with pytest.raises(ValueError, match="threshold"):
        S.ncut_bipartition(w, "mean", y1=y1)


def test_min_size_keeps_small_clumps_out_of_the_search():
    image, _ = disc_image()
    image[5:7, 5:7] = 1.0                                      # a 4-pixel clump, nearly disconnected
    w = S.image_affinity(image, 0.1, 4.0, 5)
    mask, _, _ = S.ncut_bipartition(w, "search", min_size=50)
    assert min(mask.sum(), (~mask).sum()) >= 50


def test_recursive_ncut_finds_three_regions():
    image = np.full((40, 40), 0.2)
    image[:, 20:] = 0.5
    image[8:20, 4:14] = 0.85
    image += 0.03 * np.random.default_rng(9).standard_normal(image.shape)
    w = S.image_affinity(image, 0.1, 3.0, 3)
    labels, splits = S.recursive_ncut(w, max_ncut=0.05, min_size=40)
    assert labels.min() == 0 and len(np.unique(labels)) == labels.max() + 1 >= 3
    regions = [np.s_[:, 20:], np.s_[8:20, 4:14], np.s_[25:, :18]]
    for region in regions:                                     # each region is (nearly) one label
        values = labels.reshape(40, 40)[region].ravel()
        assert np.bincount(values).max() / values.size > 0.95
    assert all(isinstance(s["kept"], bool) for s in splits)


def test_eigenvector_stability_tells_ramps_from_steps():
    assert S.eigenvector_stability(np.linspace(0, 1, 1000)) > 0.5
    step = np.r_[np.zeros(600), np.ones(400)] + 0.01 * np.random.default_rng(0).standard_normal(1000)
    assert S.eigenvector_stability(step) < 0.05


@pytest.mark.parametrize("bad, match", [(np.array([[0.0, 1.0], [0.5, 0.0]]), "symmetric"),
                                        (np.array([[0.0, -1.0], [-1.0, 0.0]]), ">= 0"),
                                        (np.zeros((2, 3)), "square")])
def test_affinity_errors(bad, match):
    with pytest.raises(ValueError, match=match):
        S.ncut_value(bad, np.array([True, False]))


def test_isolated_node_is_reported():
    w = np.zeros((3, 3))
    w[0, 1] = w[1, 0] = 1.0
    with pytest.raises(ValueError, match="degree 0"):
        S.ncut_eigenvectors(w)


# -------------------------------------------------------------------------------------- images

def test_image_affinity_matches_the_chapter_definition():
    """The chapter's all-pairs definition (D.1) on a small colour image, against the sparse library version."""
    image = torch.rand(3, 9, 11, generator=torch.Generator().manual_seed(10), dtype=torch.float64)
    sigma_i, sigma_x, radius = 0.3, 3.0, 4.0
    features = image.reshape(3, -1).T                          # (HW, C)
    ys, xs = torch.meshgrid(torch.arange(9), torch.arange(11), indexing="ij")
    positions = torch.stack([ys.flatten(), xs.flatten()], dim=1).double()
    feature_d2 = torch.cdist(features, features) ** 2
    position_d2 = torch.cdist(positions, positions) ** 2
    expected = torch.exp(-feature_d2 / sigma_i**2) * torch.exp(-position_d2 / sigma_x**2) * (position_d2 < radius**2)
    expected.fill_diagonal_(0)
    w = S.image_affinity(image, sigma_i, sigma_x, radius)
    assert scipy.sparse.issparse(w) and w.shape == (99, 99)
    assert np.allclose(w.toarray(), expected.numpy(), atol=1e-14)
    assert len(S.neighbour_offsets(5)) == 34                   # 68 neighbours within r = 5


@pytest.mark.parametrize("kwargs, match", [(dict(image=np.zeros((8, 8, 3))), "channels-last"),
                                           (dict(sigma_i=0.0), "> 0"), (dict(radius=1.0), "radius"),
                                           (dict(image=np.zeros(8)), "shape")])
def test_image_affinity_errors(kwargs, match):
    arguments = dict(image=np.zeros((8, 8)), sigma_i=0.1, sigma_x=2.0, radius=3.0) | kwargs
    with pytest.raises(ValueError, match=match):
        S.image_affinity(**arguments)


def test_ncut_of_a_128_photo_takes_seconds():
    """The chapter's bar: affinity + eigensolver + threshold search on 128 x 128 in <= 5 s on 2 cores (10 s allowed here)."""
    image = F.interpolate(load_image("camera")[None], size=(128, 128), mode="area")[0]
    start = time.perf_counter()
    w = S.image_affinity(image, 0.1, 4.0, 5)
    mask, y1, value = S.ncut_bipartition(w, "search")
    elapsed = time.perf_counter() - start
    print(f"Ncut of a 128 x 128 photo: {elapsed:.2f} s")
    assert elapsed < 10, f"{elapsed:.1f} s"
    assert value < 0.01 and 1000 < mask.sum() < 15000


@pytest.mark.parametrize("threads", [1, 2])
def test_feature_affinity_is_exactly_symmetric_at_a_quantile_threshold(threads):
    """f @ f.T differs from its transpose in the last bit (on most CPUs, for most inputs), and a quantile tau *is*
    one of the similarities: thresholding the raw product gave w_ij = 1, w_ji = eps and a "not symmetric" error on
    another machine. The kernel BLAS picks changes with the thread count, so both are tried."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        generator = torch.Generator().manual_seed(15)
        for _ in range(100):
            features = torch.randn(64, 32, generator=generator, dtype=torch.float64)
            similarity = S.cosine_similarities(features)
            assert torch.equal(similarity, similarity.T)
            upper = similarity[torch.triu_indices(64, 64, offset=1).unbind()]
            unit = F.normalize(features, dim=1)
            raw = unit @ unit.T  # what a learner computes: tau read off it is one of W's similarities, in one order
            taus = [torch.quantile(upper, q).item() for q in (0.1, 0.5, 0.9)] + [raw[3, 7].item(), raw[7, 3].item()]
            for tau in taus:
                w = S.feature_affinity(features, tau=tau)
                assert np.array_equal(w, w.T)
        S.ncut_eigenvectors(w, k=2)  # accepted as an affinity matrix
    finally:
        torch.set_num_threads(previous)


def test_affinity_with_nan_is_refused_up_front():
    w = np.ones((5, 5))
    w[1, 2] = w[2, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        S.ncut_eigenvectors(w, k=2)


def test_first_largest_breaks_near_ties_by_position():
    values = np.array([[0.5, 3.0], [1.0, 3.0 * (1 + 1e-15)], [1.0 - 1e-16, 1.0]])  # equal in exact arithmetic, not in floats
    assert S.first_largest(values).tolist() == [1, 0]
    assert S.first_largest(np.array([2.0, 1.0, 2.0 + 1e-15])) == 0


def test_pca_signs_do_not_depend_on_the_last_bit():
    """A component with two entries of equal magnitude: the sign rule must pick the same one on every machine."""
    x = torch.tensor([[1.0, 1.0], [-1.0, -1.0], [1.0, -1.0], [-1.0, 1.0]], dtype=torch.float64) * torch.tensor([2.0, 1.0])
    x = torch.cat([x, x @ torch.tensor([[0.0, 1.0], [1.0, 0.0]], dtype=torch.float64)])  # swap columns: symmetric
    p = S.pca(x)
    for j in range(2):
        column = p.components[:, j]
        first = int(np.argmax(column.abs().numpy() >= column.abs().max().item() * (1 - 1e-9)))
        assert column[first] > 0


@pytest.mark.parametrize("q", [0.15, 0.2, 0.35, 0.4, 0.6, 0.65, 0.8, 0.85])
def test_tokencut_runs_at_every_quantile(q):
    """At these quantiles, tau landed on the smaller of the twins (s_ij, s_ji) and W came out asymmetric (3 of 40
    random seeds at q = 0.2 on one machine)."""
    from course_lib.topics import dino as D
    for seed in range(10):
        features = torch.randn(64, 32, generator=torch.Generator().manual_seed(seed))
        tau = D.similarity_quantile_tau(features, q)
        w = S.feature_affinity(features, tau)
        assert np.array_equal(w, w.T)
        assert D.tokencut_mask(features, tau).shape == (64,)


def test_pca_top_k_subspace_beats_random_subspaces():
    """Ky Fan (chapter 02, A.5): tr(Q^T S Q) <= lambda_1 + ... + lambda_k for every orthonormal Q (d, k)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(500, 12, generator=g, dtype=torch.float64) * torch.linspace(3, 0.1, 12, dtype=torch.float64)
    k = 3
    fitted = S.pca(x)
    centred = x - fitted.mean
    covariance = centred.T @ centred / len(x)
    best = fitted.variances[:k].sum()
    near = fitted.components[:, :k] + 0.05 * torch.randn(300, 12, k, generator=g, dtype=torch.float64)
    q, _ = torch.linalg.qr(torch.cat([torch.randn(300, 12, k, generator=g, dtype=torch.float64), near]))
    captured = (q * (covariance @ q)).sum(dim=(1, 2))
    assert captured.max() <= best + 1e-12
    top_error = ((x - S.pca_reconstruct(x, fitted, k)) ** 2).sum(1).mean()
    random_errors = ((centred[None] - centred[None] @ q @ q.transpose(1, 2)) ** 2).sum(2).mean(1)
    assert random_errors.min() >= top_error - 1e-12


def test_schematics_name_their_parts():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from course_lib.core.diagram import text_of

    for draw, parts in ((S.pca_schematic, ("centre", "covariance", "eigenvectors", "\\sum_{i > k}")),
                        (S.ncut_schematic, ("affinity graph", "(D - W)", "threshold", "two segments"))):
        fig = draw()
        try:
            text = text_of(fig)
            assert all(part in text for part in parts), (draw.__name__, text)
            fig.canvas.draw()
        finally:
            plt.close(fig)
