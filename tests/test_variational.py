"""Split-Bregman TV and SPADE (utils/solvers/variational.py) against independent numpy references."""

import itertools

import numpy as np
import pytest
import tensorflow as tf
from skimage.metrics import peak_signal_noise_ratio
from skimage.restoration import denoise_tv_chambolle

from utils.solvers import variational
from utils.base.errors import ConfigError, DataError
from utils.solvers.variational import TracedResult, spade_denoise, tv_denoise

LINEAR_STEPS = ["gauss_seidel", "exact"]


def slice_test_options(linear_step):
    """Iterations and tolerance for comparing a volume's slices with 2D results.

    The exact step treats every slice alike at every iteration; the red-black sweep's colours
    alternate from slice to slice, so it agrees with the 2D run only once both have converged.
    """
    if linear_step == "exact":
        return {"n_iter": 60, "tol": 0, "linear_step": linear_step}, 1e-5
    return {"n_iter": 2000, "tol": 1e-7, "linear_step": linear_step}, 2e-4


def psnr(clean, estimate):
    return peak_signal_noise_ratio(clean, estimate.astype(np.float32), data_range=1.0)


def blocky_image(shape, rng):
    """Piecewise-constant test image on [0, 1]: an ellipse, a bar and a few random blocks."""
    rows, cols = np.mgrid[: shape[0], : shape[1]]
    image = 0.3 + 0.4 * (((rows - shape[0] / 2) / (0.3 * shape[0])) ** 2 + ((cols - shape[1] / 2) / (0.35 * shape[1])) ** 2 < 1)
    image += 0.2 * (cols > 0.7 * shape[1])
    for _ in range(3):
        r, c = rng.integers(0, shape[0] - 4), rng.integers(0, shape[1] - 4)
        image[r : r + 4, c : c + 4] = rng.uniform(0.1, 0.9)
    return image.astype(np.float32)


@pytest.fixture
def image_pair(rng):
    clean = blocky_image((33, 45), rng)
    return clean, (clean + 0.05 * rng.standard_normal(clean.shape)).astype(np.float32)


@pytest.fixture
def volume_pair(rng):
    clean = np.stack([blocky_image((33, 45), np.random.default_rng(0))] * 7)
    clean[:, 10:20, 10:20] += np.linspace(0, 0.2, 7)[:, None, None]  # slow change along z
    return clean, (clean + 0.05 * rng.standard_normal(clean.shape)).astype(np.float32)


# ---------------------------------------------------------------------------- numpy reference


def np_gradient(u, boundary):
    """Forward differences stacked on axis 0; last difference 0 (reflect) or wrapped (periodic)."""
    if boundary == "periodic":
        return np.stack([np.roll(u, -1, axis=a) - u for a in range(u.ndim)])
    return np.stack([np.diff(u, axis=a, append=np.take(u, [-1], axis=a)) for a in range(u.ndim)])


def np_gradient_adjoint(p, boundary):
    return sum(np_adjoint_1d(p[a], a, boundary) for a in range(p.shape[0]))


def np_adjoint_1d(q, axis, boundary):
    if boundary == "periodic":
        return np.roll(q, 1, axis=axis) - q
    q = np.moveaxis(q, axis, 0).copy()
    q[-1] = 0
    out = -q
    out[1:] += q[:-1]
    return np.moveaxis(out, 0, axis)


def tv_objective(u, f, weight, isotropic, boundary):
    grad = np_gradient(u.astype(np.float64), boundary)
    tv = np.sqrt((grad**2).sum(0)).sum() if isotropic else np.abs(grad).sum()
    return weight * tv + 0.5 * ((u.astype(np.float64) - f) ** 2).sum()


def rof_primal_dual(f, weight, isotropic, boundary, n_iter=4000):
    """Reference ROF minimiser: accelerated Chambolle–Pock (their Algorithm 2) in float64.

    min_u weight·TV(u) + ½‖u − f‖², written as min_u max_{p ∈ P} <∇u, p> + ½‖u − f‖² with P the
    pointwise ball (isotropic) or box (anisotropic) of radius ``weight``. Independent of the split
    Bregman code: different algorithm, numpy operators, no FFT.
    """
    f = f.astype(np.float64)
    u = f.copy()
    u_bar = u.copy()
    p = np.zeros((f.ndim,) + f.shape)
    tau = sigma = 1.0 / np.sqrt(4.0 * f.ndim)  # ‖∇‖² <= 4 ndim
    for _ in range(n_iter):
        p = p + sigma * np_gradient(u_bar, boundary)
        if isotropic:
            p /= np.maximum(1.0, np.sqrt((p**2).sum(0)) / weight)
        else:
            p = np.clip(p, -weight, weight)
        u_new = (u - tau * np_gradient_adjoint(p, boundary) + tau * f) / (1.0 + tau)
        theta = 1.0 / np.sqrt(1.0 + 2.0 * tau)  # strong convexity (γ = 1) of the data term
        tau, sigma = theta * tau, sigma / theta
        u_bar = u_new + theta * (u_new - u)
        u = u_new
    return u


# ---------------------------------------------------------------------------- operators


@pytest.mark.parametrize("boundary", ["reflect", "periodic"])
@pytest.mark.parametrize("shape", [(33, 45), (7, 33, 45)])
def test_gradient_operators_are_adjoint_and_match_numpy(boundary, shape, rng):
    u = rng.standard_normal(shape).astype(np.float32)
    p = rng.standard_normal((len(shape),) + shape).astype(np.float32)
    scales = tf.ones([len(shape)])
    grad = variational._gradient(tf.constant(u), scales, boundary).numpy()
    adjoint = variational._gradient_adjoint(tf.constant(p), scales, boundary).numpy()
    np.testing.assert_allclose(grad, np_gradient(u, boundary), atol=1e-6)
    np.testing.assert_allclose(adjoint, np_gradient_adjoint(p, boundary), atol=1e-5)
    assert np.vdot(grad, p) == pytest.approx(np.vdot(u, adjoint), rel=1e-4)


@pytest.mark.parametrize("boundary", ["reflect", "periodic"])
@pytest.mark.parametrize("shape", [(33, 45), (7, 33, 45)])
def test_spectral_solve_inverts_mu_plus_laplacian(boundary, shape, rng):
    """The FFT/DCT step solves (μ I + λ DᵀD) u = rhs exactly, with scaled axes and odd sizes."""
    rank = len(shape)
    rhs = rng.standard_normal(shape).astype(np.float32)
    scales = tf.constant(np.linspace(0.5, 1.0, rank), tf.float32)
    mu, lam = 0.7, 2.5
    denominator = mu + lam * variational._laplacian_symbol(tf.constant(shape), scales, boundary, rank)
    if boundary == "periodic":
        denominator = tf.complex(denominator, 0.0)
    u = variational._from_spectrum(variational._to_spectrum(tf.constant(rhs), boundary) / denominator, boundary, tf.constant(shape), rank)
    applied = mu * u + lam * variational._gradient_adjoint(variational._gradient(u, scales, boundary), scales, boundary)
    np.testing.assert_allclose(applied.numpy(), rhs, atol=2e-4)


@pytest.mark.parametrize("boundary", ["reflect", "periodic"])
@pytest.mark.parametrize("shape", [(33, 45), (7, 33, 45)])
def test_gauss_seidel_sweeps_converge_to_the_exact_solve(boundary, shape, rng):
    """Repeated red-black sweeps solve the same system as the FFT/DCT step, scaled axes and odd sizes."""
    rank = len(shape)
    rhs = tf.constant(rng.standard_normal(shape).astype(np.float32))
    scales = tf.constant(np.linspace(0.5, 1.0, rank), tf.float32)
    mu, lam = 0.7, 2.5
    u = tf.zeros(shape)
    residuals = []
    for _ in range(300):
        u = variational._gauss_seidel_sweep(u, rhs, mu, lam * tf.square(scales), boundary)
        applied = mu * u + lam * variational._gradient_adjoint(variational._gradient(u, scales, boundary), scales, boundary)
        residuals.append(float(tf.reduce_max(tf.abs(applied - rhs))))
    assert residuals[0] > 0.1 and residuals[-1] < 1e-4, (residuals[0], residuals[-1])


# ---------------------------------------------------------------------------- TV


@pytest.mark.parametrize("linear_step", LINEAR_STEPS)
@pytest.mark.parametrize("isotropic", [False, True])
@pytest.mark.parametrize("boundary", ["reflect", "periodic"])
def test_tv_matches_independent_rof_solver(image_pair, isotropic, boundary, linear_step):
    clean, noisy = image_pair
    weight = 0.04
    ours = tv_denoise(noisy, weight, isotropic=isotropic, boundary=boundary, linear_step=linear_step, n_outer=1, n_iter=2000, tol=1e-7)
    reference = rof_primal_dual(noisy, weight, isotropic, boundary)
    assert abs(psnr(clean, ours) - psnr(clean, reference)) < 0.1
    assert np.abs(ours - reference).max() < 5e-3
    assert tv_objective(ours, noisy, weight, isotropic, boundary) == pytest.approx(
        tv_objective(reference, noisy, weight, isotropic, boundary), rel=1e-4
    )


def test_isotropic_reflect_tv_weight_is_skimage_chambolle_weight(image_pair):
    clean, noisy = image_pair
    weight = 0.03
    ours = tv_denoise(noisy, weight, isotropic=True, n_outer=1, n_iter=500, tol=1e-6)
    theirs = denoise_tv_chambolle(noisy.astype(np.float64), weight=weight, eps=1e-9, max_num_iter=5000)
    assert abs(psnr(clean, ours) - psnr(clean, theirs)) < 0.1
    assert np.abs(ours - theirs).max() < 5e-3


@pytest.mark.parametrize("linear_step", LINEAR_STEPS)
@pytest.mark.parametrize("isotropic", [False, True])
def test_tv_objective_decreases_over_iterations(image_pair, isotropic, linear_step):
    _, noisy = image_pair
    weight = 0.05
    options = {"isotropic": isotropic, "linear_step": linear_step, "n_outer": 1, "tol": 0}
    objectives = [
        tv_objective(tv_denoise(noisy, weight, n_iter=n, **options), noisy, weight, isotropic, "reflect")
        for n in (1, 3, 10, 30, 150)
    ]
    assert all(later < earlier for earlier, later in itertools.pairwise(objectives)), objectives
    minimum = tv_objective(rof_primal_dual(noisy, weight, isotropic, "reflect"), noisy, weight, isotropic, "reflect")
    assert objectives[-1] == pytest.approx(minimum, rel=1e-4)
    assert objectives[0] > minimum * 1.01  # one iteration is far from converged: the test can fail


@pytest.mark.parametrize("linear_step", LINEAR_STEPS)
@pytest.mark.parametrize("boundary", ["reflect", "periodic"])
@pytest.mark.parametrize("isotropic", [False, True])
def test_volume_of_identical_slices_equals_2d_tv(image_pair, boundary, isotropic, linear_step):
    _, noisy = image_pair
    volume = np.repeat(noisy[None], 7, axis=0)  # z differences are zero for both boundaries
    options, atol = slice_test_options(linear_step)
    options.update(isotropic=isotropic, boundary=boundary)
    slice_result = tv_denoise(noisy, 0.05, **options)
    volume_result = tv_denoise(volume, 0.05, **options)
    np.testing.assert_allclose(volume_result, np.repeat(slice_result[None], 7, axis=0), atol=atol)


@pytest.mark.parametrize("linear_step", LINEAR_STEPS)
def test_zero_z_weight_denoises_slices_independently(volume_pair, linear_step):
    _, noisy = volume_pair
    options, atol = slice_test_options(linear_step)
    options["isotropic"] = True
    volume_result = tv_denoise(noisy, 0.05, z_weight=0.0, **options)
    for z in (0, 3, 6):
        np.testing.assert_allclose(volume_result[z], tv_denoise(noisy[z], 0.05, **options), atol=atol)
    coupled = tv_denoise(noisy, 0.05, **options)
    assert np.abs(coupled - volume_result).max() > 1e-2  # the z term does something


def test_tv_denoises_2d_and_3d_odd_sizes(image_pair, volume_pair):
    for clean, noisy in (image_pair, volume_pair):
        result = tv_denoise(noisy, sigma=0.05)
        assert result.shape == noisy.shape and result.dtype == np.float32
        assert psnr(clean, result) > psnr(clean, noisy) + 3


def test_reference_gives_relative_error_history(image_pair):
    clean, noisy = image_pair
    traced = tv_denoise(noisy, 0.05, reference=clean, n_outer=2, n_iter=25, tol=0)
    assert isinstance(traced, TracedResult)
    history = traced.rel_err_history
    assert history.shape == (50,)
    expected_last = np.linalg.norm(traced.image - clean) / np.linalg.norm(clean)
    assert history[-1] == pytest.approx(expected_last, rel=1e-4)
    assert history[10] < history[0]
    np.testing.assert_array_equal(traced.image, tv_denoise(noisy, 0.05, n_outer=2, n_iter=25, tol=0))


def test_tolerance_stops_the_inner_loop_early(image_pair):
    clean, noisy = image_pair
    loose = tv_denoise(noisy, 0.05, n_outer=1, n_iter=400, tol=1e-2, reference=clean).rel_err_history
    tight = tv_denoise(noisy, 0.05, n_outer=1, n_iter=400, tol=1e-5, reference=clean).rel_err_history
    assert 1 < len(loose) < len(tight) < 400


def test_bregman_outer_iterations_restore_contrast(image_pair):
    clean, noisy = image_pair
    one = tv_denoise(noisy, 0.05, n_outer=1)
    two = tv_denoise(noisy, 0.05, n_outer=2)
    # TV shrinks the contrast of the ellipse; adding back the residual brings it closer to the truth.
    inside = clean > 0.65
    contrast = lambda u: u[inside].mean() - u[~inside].mean()
    assert abs(contrast(two) - contrast(clean)) < abs(contrast(one) - contrast(clean))


# ---------------------------------------------------------------------------- SPADE


@pytest.mark.parametrize("transform", ["gradient", "identity"])
def test_spade_without_prior_term_is_tv(image_pair, transform):
    clean, noisy = image_pair
    prior = clean + 0.1
    spade = spade_denoise(noisy, prior, tv_weight=0.05, prior_weight=0.0, transform=transform)
    np.testing.assert_array_equal(spade, tv_denoise(noisy, 0.05, tol=variational.SPADE_TOL))


def test_spade_with_small_prior_weight_approaches_tv(image_pair):
    clean, noisy = image_pair
    spade = spade_denoise(noisy, clean, 0.05, 1e-4, n_outer=1, n_iter=400, tol=1e-6)
    tv = tv_denoise(noisy, 0.05, n_outer=1, n_iter=400, tol=1e-6)
    assert np.abs(spade - tv).max() < 2e-3


def test_spade_with_clean_prior_and_large_weight_returns_prior(image_pair, volume_pair):
    for clean, noisy in (image_pair, volume_pair):
        identity = spade_denoise(noisy, clean, 0.05, 10.0, transform="identity")
        np.testing.assert_allclose(identity, clean, atol=1e-3)
        # Φ = gradient fixes u − u_p up to a constant, which the data term sets to the noise mean.
        gradient = spade_denoise(noisy, clean, 0.05, 10.0, transform="gradient")
        offset = float(np.mean(noisy - clean))
        np.testing.assert_allclose(gradient, clean + offset, atol=2e-3)


@pytest.mark.parametrize("transform", ["gradient", "identity"])
def test_spade_linear_steps_reach_the_same_minimiser(volume_pair, transform):
    _, noisy = volume_pair
    prior = noisy[[0, 0, 1, 2, 3, 4, 5]]  # the previous slice: a crude prior that differs
    results = [
        spade_denoise(noisy, prior, 0.05, 0.02, transform=transform, linear_step=step, n_outer=1, n_iter=2000, tol=1e-7)
        for step in LINEAR_STEPS
    ]
    np.testing.assert_allclose(*results, atol=5e-4)
    assert np.abs(results[0] - tv_denoise(noisy, 0.05, n_outer=1)).max() > 1e-2  # the prior term acts


def test_auto_linear_step_sweeps_unless_ill_conditioned(volume_pair):
    _, noisy = volume_pair
    prior = noisy[[0, 0, 1, 2, 3, 4, 5]]
    for weights, expected in (((0.05, 0.01), "gauss_seidel"), ((0.05, 10.0), "exact")):  # conditions 37 and 4825
        auto = spade_denoise(noisy, prior, *weights)
        np.testing.assert_array_equal(auto, spade_denoise(noisy, prior, *weights, linear_step=expected))
    assert np.abs(spade_denoise(noisy, prior, 0.05, 10.0, linear_step="gauss_seidel") - auto).max() > 1e-4


@pytest.mark.parametrize("transform", ["gradient", "identity"])
def test_spade_with_good_prior_beats_tv(volume_pair, transform):
    clean, noisy = volume_pair
    prior = clean + 0.01 * np.random.default_rng(5).standard_normal(clean.shape).astype(np.float32)
    spade = spade_denoise(noisy, prior, 0.05, 0.02, transform=transform)
    assert psnr(clean, spade) > psnr(clean, tv_denoise(noisy, 0.05, tol=variational.SPADE_TOL)) + 1.0


def test_spade_builds_the_neighbour_prior_for_volumes(volume_pair):
    from utils.data.prior import neighbour_prior

    clean, noisy = volume_pair
    implicit = spade_denoise(noisy, sigma=0.05)
    explicit = spade_denoise(noisy, neighbour_prior(noisy), sigma=0.05)
    np.testing.assert_array_equal(implicit, explicit)
    assert implicit.shape == (7, 33, 45)
    assert psnr(clean, implicit) > psnr(clean, noisy) + 3


def test_spade_reference_history(volume_pair):
    clean, noisy = volume_pair
    traced = spade_denoise(noisy, sigma=0.05, reference=clean)
    assert traced.rel_err_history.ndim == 1 and len(traced.rel_err_history) >= 2
    assert traced.rel_err_history[-1] < np.linalg.norm(noisy - clean) / np.linalg.norm(clean)


# ---------------------------------------------------------------------------- errors


@pytest.mark.bad_input
def test_bad_inputs_name_the_problem(image_pair, volume_pair):
    _, noisy = image_pair
    bad = noisy.copy()
    bad[3, 4] = np.nan
    with pytest.raises(DataError, match="NaN"):
        tv_denoise(bad, 0.05)
    with pytest.raises(DataError, match="2D image"):
        tv_denoise(noisy[0], 0.05)
    with pytest.raises(ConfigError, match="sigma"):
        tv_denoise(noisy)
    with pytest.raises(ConfigError, match="boundary"):
        tv_denoise(noisy, 0.05, boundary="wrap")
    with pytest.raises(ConfigError, match="linear step"):
        tv_denoise(noisy, 0.05, linear_step="conjugate_gradient")
    with pytest.raises(ConfigError, match=">= 0"):
        tv_denoise(noisy, -0.1)
    with pytest.raises(ConfigError, match="3D volumes"):
        tv_denoise(noisy, 0.05, z_weight=0.01)
    with pytest.raises(ConfigError, match="explicit prior"):
        spade_denoise(noisy, sigma=0.05)
    with pytest.raises(ConfigError, match="transform"):
        spade_denoise(noisy, noisy, 0.05, 0.01, transform="wavelet")
    with pytest.raises(DataError, match="differs"):
        spade_denoise(volume_pair[1], noisy, 0.05, 0.01)


def test_zero_weights_return_the_input(image_pair):
    _, noisy = image_pair
    np.testing.assert_array_equal(tv_denoise(noisy, 0.0), noisy)
