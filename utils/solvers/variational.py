"""Split-Bregman total variation (TV) and SPADE denoising in TensorFlow.

Both solvers share one n-dimensional split-Bregman core (Goldstein & Osher 2009) that works on
2D images ``(H, W)`` and 3D volumes ``(D, H, W)`` alike: the rank of the array picks the number of
gradient components and the FFT/DCT used by the linear step. The iterations run inside a
``tf.function`` in float32, so they run on a GPU when TensorFlow sees one; numpy arrays go in and
come out.

Operators
---------
``D`` is the forward-difference gradient, one component per axis, ``D u = (s_0 ∂_0 u, …, s_{n-1} ∂_{n-1} u)``.
The per-axis scales ``s_a`` carry an optional separate weight along z (axis 0) for volumes with
anisotropic voxels. Two boundary conditions are offered:

``"reflect"`` (default)
    Neumann: the difference across the last sample of every axis is zero, the convention of
    scikit-image's ``denoise_tv_chambolle``. ``DᵀD`` is the Neumann Laplacian, diagonalised by the
    type-II DCT, so the exact linear step uses an n-D DCT (``tf.signal.dct``, one axis at a time).
    This is exactly the periodic FFT solve on the mirror-extended array, at a quarter (2D) or an
    eighth (3D) of the size.
``"periodic"``
    Wrap-around differences, as in the author's MATLAB code (``TV_SB_denoising_3D.m``, ``PBR_CT.m``).
    ``DᵀD`` is diagonalised by the DFT (``tf.signal.rfft2d``/``rfft3d``); the exact step is about
    twice as fast as with ``"reflect"`` on CPU, but opposite faces of the array are coupled (the
    first and last slices of a volume smooth into each other).

Split-Bregman iteration
-----------------------
For ``min_u  β‖D u‖ + α‖Φ(u − u_p)‖₁ + (μ/2)‖u − f‖²`` (TV is ``α = 0``; ``‖D u‖`` is the
anisotropic or isotropic TV norm below) with auxiliary ``d = D u``, ``w = Φ(u − u_p)`` and
Bregman variables ``b``, ``c`` (all zero at the start, ``u₀ = f``), each inner iteration does::

    u ← (μ I + λ DᵀD + λ_p ΦᵀΦ)⁻¹ [ μ f_k + λ Dᵀ(d − b) + λ_p Φᵀ(w − c + Φ u_p) ]   (linear step)
    d ← shrink(D u + b, β/λ);              b ← b + D u − d
    w ← shrink(Φ(u − u_p) + c, α/λ_p);     c ← c + Φ(u − u_p) − w

``shrink`` is the scalar soft threshold (anisotropic) or the soft threshold of the vector length
over the gradient components (isotropic). The split penalties λ, λ_p change the speed of
convergence, not the solution.

Linear step (``linear_step``)
    ``"gauss_seidel"``: one red-black Gauss–Seidel sweep from the current ``u``, as in Goldstein &
    Osher (2009), who showed that split Bregman converges with this inexact solve. A sweep is a few
    neighbour sums per voxel, so the whole iteration is compiled by XLA into a handful of fused
    loops. ``"exact"``: the FFT/DCT solve below. Both reach the same minimiser, but a sweep removes
    smooth error slowly when the operator is ill-conditioned, so ``"auto"`` (default) sweeps while
    its condition number ``1 + 4 Σ_a s_a² (λ + λ_p[gradient]) / (μ + λ_p[identity])`` is at most
    ``GAUSS_SEIDEL_MAX_CONDITION`` (29-63 for TV and SPADE at their default weights, sigma
    0.05-0.10) and solves exactly above it (e.g. a prior weight far above the TV weight).
    ``benchmarks/variational.py`` times both.

Stopping rule. The inner loop ends after ``n_iter`` iterations or as soon as the relative change
``‖u_k − u_{k−1}‖ / ‖u_k‖ < tol``. It is repeated ``n_outer`` times; between repeats the data term
gets a Bregman update, "add back the residual": ``f_{k+1} = f_k + (f − u)`` with ``f_0 = f``.

* ``n_outer = 1``: the result is the minimiser of the objective (to the accuracy set by ``tol``).
* ``n_outer > 1``: Bregman iterative regularisation (Osher et al. 2005). It restores the contrast
  that TV removes, but converges to the noisy data if run for too long, so ``n_outer`` is then
  itself a regularisation parameter (fewer for noisier data). The default ``n_outer = 2`` is the
  author's TV setting (``TV_SB_denoising_3D.m``, "corrects the loss of contrast"); on the project
  phantom it gains 0.4-0.6 dB PSNR over ``n_outer = 1`` at the best weight of each, for sigma
  0.02-0.10. The weight that is best with 2 outer iterations is about 3x larger than with 1.

Scale
-----
All weights assume intensities on the [0, 1] scale (``utils.data.noise``). With ``mu = 1`` the TV weight
is in intensity units, and with ``isotropic=True, boundary="reflect", n_outer=1`` it is the same
number as scikit-image's ``denoise_tv_chambolle(weight=…)`` (same objective, same differences).
Only the ratios ``weight / mu`` and ``prior_weight / mu`` change the result; ``mu`` is kept for
the author's parametrisation and is best left at 1. Data on another scale need weights multiplied
by that scale.

References
----------
T. Goldstein, S. Osher, "The split Bregman method for L1-regularized problems", SIAM J. Imaging
Sci. 2(2), 2009. S. Osher et al., "An iterative regularization method for total variation-based
image restoration", Multiscale Model. Simul. 4(2), 2005. J. F. P. J. Abascal et al., "A novel prior-
and motion-based compressed sensing method for small-animal respiratory gated CT", PLoS ONE 2016
(``PBR_CT.m`` in github.com/HGGM-LIM/prior-motion-reconstruction-CT). J. F. P. J. Abascal et al.,
"SPADE: a 3D variational denoising method with prior-image sparsity", EUSIPCO 2019 (text unavailable).
"""

import functools
from typing import NamedTuple

import numpy as np
import tensorflow as tf

from utils.base.errors import ConfigError, DataError
from utils.data.prior import neighbour_prior

BOUNDARIES = ("reflect", "periodic")
LINEAR_STEPS = ("auto", "gauss_seidel", "exact")
PRIOR_TRANSFORMS = ("gradient", "identity")

# "auto" sweeps while the linear operator's condition number (largest / smallest eigenvalue) is at
# most this. Measured on a 7x33x45 volume at tol 1e-4 (distance to the converged solution, max
# abs): at conditions 25 and 97 the sweep ends as close as the exact step (9e-3 vs 1e-2, 2.5e-2 vs
# 3.2e-2); at 193 it is 2.7x farther, and at 4825 (a prior weight 200x the TV weight) 140x: a
# sweep removes smooth error components at a rate that falls with the condition number.
GAUSS_SEIDEL_MAX_CONDITION = 100.0

# Relative-change tolerances of the inner loops. With n_outer = 2 the stopping point is part of the
# regularisation (module docstring). For TV, stopping at 1e-3 rather than 1e-4 scored equal or
# higher PSNR at each one's best weight on a 32x192x192 phantom volume and one of its slices at
# sigma 0.02, 0.05 and 0.10 (-0.04 to +0.21 dB; 3D at 5 %: 38.92 against 38.71 dB) with 2-3x fewer
# iterations (3D at 5 %: 35 against 97). SPADE needs the longer run for its prior term to act: on
# another phantom volume at 5 %, each at its best weights, SPADE scored 38.98 dB at 1e-4 and
# 38.87 dB at 1e-3 (TV 38.62 and 38.79). Use 1e-5 or less to approach the minimiser itself.
TV_TOL = 1e-3
SPADE_TOL = 1e-4

# Noise-aware defaults, weight = factor * sigma on the [0, 1] scale, for the default anisotropic
# TV, reflect boundary and n_outer = 2. Tuned (utils/application/tuning.py) on a windowed 24x128x128 crop of the
# project phantom (utils.data.phantom.make_phantom) with the neighbour prior: the best factors at
# sigma = 0.02, 0.05, 0.10 were TV 1.12, 1.18, 1.16; SPADE (Φ = gradient) β 0.95, 1.11, 1.11 and
# α 0.23, 0.15, 0.15 (exact linear step, tol 1e-4). With the sweep and TV_TOL the best TV factors on
# a 32x192x192 phantom volume were 1.15, 1.15 and 1.0 (a grid of 0.8-2.0). PSNR is flat near the
# optimum. The tuner is the real source of parameters.
TV_WEIGHT_PER_SIGMA = 1.15
SPADE_TV_WEIGHT_PER_SIGMA = 1.1
SPADE_PRIOR_WEIGHT_PER_SIGMA = 0.2

# Default split penalties: λ = β / SHRINK_THRESHOLD and λ_p = α / SHRINK_THRESHOLD, so every soft
# threshold is SHRINK_THRESHOLD in intensity units whatever the weight (the same idea as the
# author's pre-scaling of the data by 10 / max|f| "so there is output of the shrinkage"). Measured on
# a CT-like phantom, sigma 0.02-0.10, weights 0.25-2 sigma: thresholds 0.02-0.03 reach 1e-3 relative
# accuracy in the fewest iterations (20-70); a fixed λ = 2 μ needs up to 3x more at small weights.
SHRINK_THRESHOLD = 0.025


class TracedResult(NamedTuple):
    """Denoised array and the relative error ``‖u_k − u_true‖ / ‖u_true‖`` after every inner iteration."""

    image: np.ndarray
    rel_err_history: np.ndarray


def tv_denoise(
    noisy,
    weight=None,
    *,
    sigma=None,
    isotropic=False,
    z_weight=None,
    boundary="reflect",
    linear_step="auto",
    mu=1.0,
    lam=None,
    n_iter=100,
    n_outer=2,
    tol=TV_TOL,
    reference=None,
):
    r"""Total variation denoising of a 2D image or 3D volume by split Bregman (Goldstein–Osher).

    Objective (``f`` = ``noisy``):

    .. math::

        \min_u \; \mathrm{TV}(u) + \frac{\mu}{2}\|u - f\|_2^2,
        \qquad
        \mathrm{TV}(u) = \sum_x \sum_a w_a |\partial_a u(x)| \;\; (\text{anisotropic}),
        \quad
        \mathrm{TV}(u) = \sum_x \Big(\sum_a (w_a \partial_a u(x))^2\Big)^{1/2} \;\; (\text{isotropic}),

    with forward differences :math:`\partial_a` (boundary below), :math:`w_0` = ``z_weight`` on axis 0
    of a volume and :math:`w_a` = ``weight`` on the other axes. ``n_outer = 1`` returns the minimiser;
    the default ``n_outer = 2`` adds one Bregman update of the data term (contrast restoration, see
    the module docstring). Stopping rule: each of the ``n_outer`` inner loops runs at most
    ``n_iter`` iterations and ends early once ``‖u_k − u_{k−1}‖ / ‖u_k‖ < tol``.

    :param numpy.ndarray noisy: image ``(H, W)`` or volume ``(D, H, W)``, intensities on [0, 1]
        (any float dtype; computed in float32).
    :param float weight: TV weight on the [0, 1] scale; larger smooths more. With
        ``mu = 1, isotropic=True, n_outer=1`` it equals ``denoise_tv_chambolle``'s ``weight``.
        ``None``: ``TV_WEIGHT_PER_SIGMA * sigma`` (about 1.15 sigma, for ``n_outer = 2``).
    :param float sigma: noise standard deviation on the [0, 1] scale; used only when ``weight`` is None.
    :param bool isotropic: isotropic (vector) TV instead of the default anisotropic (per-axis) TV, the
        author's baseline (``TV_SB_denoising_3D.m``), which scored 0.1–0.2 dB higher on the phantom.
    :param float z_weight: TV weight along axis 0 of a volume (slice direction), e.g. smaller for
        slices thicker than the pixel; 0 denoises every slice on its own. ``None``: ``weight``.
        Volumes only.
    :param str boundary: ``"reflect"`` (Neumann) or ``"periodic"`` (wrap-around; couples opposite faces).
    :param str linear_step: ``"gauss_seidel"`` (one red-black sweep per iteration, XLA-compiled),
        ``"exact"`` (DCT solve for reflect, FFT solve for periodic), or ``"auto"``: the sweep unless
        the weights make the linear system ill-conditioned (module docstring). Same minimiser.
    :param float mu: data-term weight; only ``weight / mu`` matters. Leave at 1.
    :param float lam: split penalty λ, changes speed only; ``None``: ``max(weight, z_weight) / SHRINK_THRESHOLD``.
    :param int n_iter: maximum inner iterations per outer iteration.
    :param int n_outer: number of inner loops, separated by Bregman updates of the data term.
    :param float tol: relative-change tolerance of the inner loop; 0 always runs ``n_iter``. Default
        ``TV_TOL`` (1e-3) here and ``SPADE_TOL`` (1e-4) for :func:`spade_denoise` (measured: see their comment).
    :param numpy.ndarray reference: clean array of the same shape; when given, the relative error
        ``‖u_k − reference‖ / ‖reference‖`` after every inner iteration is returned too.
    :return: float32 array of the input's shape; or, when ``reference`` is given, a
        :class:`TracedResult` ``(image, rel_err_history)`` with one error per iteration run.
    :raises DataError: for an array that is not 2D/3D, has an axis shorter than 2, or is not finite.
    :raises ConfigError: for negative weights, an unknown boundary, or neither ``weight`` nor ``sigma``.

    >>> clean = np.zeros((32, 32), np.float32); clean[8:24, 8:24] = 1
    >>> noisy = clean + 0.05 * np.random.default_rng(0).standard_normal(clean.shape)
    >>> denoised = tv_denoise(noisy, sigma=0.05)                    # weight from sigma
    >>> image, errors = tv_denoise(noisy, 0.05, reference=clean)    # with the convergence curve
    """
    if weight is None:
        weight = TV_WEIGHT_PER_SIGMA * _require_sigma(sigma, "weight")
    return _solve(
        noisy,
        prior=None,
        tv_weight=weight,
        prior_weight=0.0,
        transform=None,
        isotropic=isotropic,
        z_weight=z_weight,
        boundary=boundary,
        linear_step=linear_step,
        mu=mu,
        lam=lam,
        n_iter=n_iter,
        n_outer=n_outer,
        tol=tol,
        reference=reference,
    )


def spade_denoise(
    noisy,
    prior=None,
    tv_weight=None,
    prior_weight=None,
    *,
    sigma=None,
    transform="gradient",
    isotropic=False,
    z_weight=None,
    boundary="reflect",
    linear_step="auto",
    mu=1.0,
    lam=None,
    n_iter=100,
    n_outer=2,
    tol=SPADE_TOL,
    reference=None,
):
    r"""SPADE: TV denoising plus sparsity of the difference to a prior image (*reconstructed*).

    Objective (``f`` = ``noisy``, :math:`u_p` = ``prior``, TV as in :func:`tv_denoise`):

    .. math::

        \min_u \; \beta\,\mathrm{TV}(u) + \alpha\|\Phi(u - u_p)\|_1 + \frac{\mu}{2}\|u - f\|_2^2 .

    The SPADE paper (Abascal et al., EUSIPCO 2019) is not available, so this functional and its
    solver are a reconstruction from the author's prior-based template ``PBR_CT.m`` (PBR/PRIMOR,
    PLoS ONE 2016): split Bregman with ``d = D u`` and ``w = Φ(u − u_p)``, Bregman variables ``b``
    and ``c``, and Bregman "add back the residual" updates of the data term
    ``f_{k+1} = f_k + (f − u_k)``. ``PBR_CT.m`` makes one data update per iteration
    (``n_iter=1, n_outer=nBreg`` here, with nBreg the critical parameter); the default instead runs
    each inner loop to ``tol`` with 2 data updates, as for TV, so that the result depends on the
    weights rather than on an iteration count. Stopping rule and iteration: module docstring.

    ``Φ`` (``transform``):

    ``"gradient"`` (default)
        ``α‖D(u − u_p)‖₁`` (PICCS-like; anisotropic or isotropic following ``isotropic``): the
        difference to the prior is piecewise constant, so the prior's fine texture and edges are
        kept while its offsets are corrected. Adds ``λ_p DᵀD`` to the solve; it shares the gradient
        and adjoint of the TV split, and an iteration costs 1.76x a TV iteration (memory-bound,
        ``benchmarks/variational.py``). Default because with the neighbour prior on the project
        phantom it scored 0.09–0.18 dB above ``"identity"`` at sigma 0.02, 0.05 and 0.10 (tuned
        weights, 24x128x128 crop); it leads tuned TV by 0.10–0.21 dB there
        (``studies/spade_prior.py``, which also measures how the lead grows with a better prior).
    ``"identity"``
        ``α‖u − u_p‖₁``: the solution equals the prior wherever the data agree with it to within the
        noise. Adds ``λ_p I`` to the solve; its split has one component, so an iteration costs 1.22x
        a TV iteration. On a piecewise-constant synthetic volume it did as well as ``"gradient"``.

    :param numpy.ndarray noisy: image ``(H, W)`` or volume ``(D, H, W)`` on the [0, 1] scale.
    :param numpy.ndarray prior: prior ``u_p``, same shape. ``None`` (volumes only) builds it with
        ``utils.data.prior.neighbour_prior(noisy)`` and its defaults, the ResPrU-Net prior; 2D images
        need it explicitly.
    :param float tv_weight: β on the [0, 1] scale. ``None``: ``SPADE_TV_WEIGHT_PER_SIGMA * sigma``.
    :param float prior_weight: α on the [0, 1] scale; larger pulls harder towards the prior. 0 drops
        the prior term, which gives exactly :func:`tv_denoise`. ``None``: ``SPADE_PRIOR_WEIGHT_PER_SIGMA * sigma``.
    :param float sigma: noise standard deviation on the [0, 1] scale; used only for missing weights.
    :param str transform: ``Φ``: ``"gradient"`` or ``"identity"``.
    :param float lam: one split penalty for both splits; ``None``: λ = β / SHRINK_THRESHOLD for the
        TV split and λ_p = α / SHRINK_THRESHOLD for the prior split.
    :param isotropic, z_weight, boundary, linear_step, mu, n_iter, n_outer, tol, reference: as in :func:`tv_denoise`
        (``z_weight`` scales the z component of ``D`` in both terms; ``β`` = ``tv_weight``).
    :return: float32 array, or :class:`TracedResult` when ``reference`` is given.

    Example::

        denoised = spade_denoise(noisy_volume, sigma=0.05)   # neighbour prior, weights from sigma
        denoised = spade_denoise(noisy_slice, prior_slice, tv_weight=0.05, prior_weight=0.01)
    """
    noisy_array = _as_image(noisy, "noisy")
    if prior is None:
        if noisy_array.ndim != 3:
            raise ConfigError("spade_denoise: a 2D image needs an explicit prior image (prior=None works for volumes only)")
        prior = neighbour_prior(noisy_array)
    if transform not in PRIOR_TRANSFORMS:
        raise ConfigError(f"unknown SPADE transform {transform!r}; choose one of {PRIOR_TRANSFORMS}")
    if tv_weight is None:
        tv_weight = SPADE_TV_WEIGHT_PER_SIGMA * _require_sigma(sigma, "tv_weight")
    if prior_weight is None:
        prior_weight = SPADE_PRIOR_WEIGHT_PER_SIGMA * _require_sigma(sigma, "prior_weight")
    return _solve(
        noisy_array,
        prior=prior,
        tv_weight=tv_weight,
        prior_weight=prior_weight,
        transform=transform,
        isotropic=isotropic,
        z_weight=z_weight,
        boundary=boundary,
        linear_step=linear_step,
        mu=mu,
        lam=lam,
        n_iter=n_iter,
        n_outer=n_outer,
        tol=tol,
        reference=reference,
    )


# ----------------------------------------------------------------------------------------------
# Validation and dispatch (numpy side)


def _require_sigma(sigma, name):
    if sigma is None:
        raise ConfigError(f"give {name} or the noise level sigma (on the [0, 1] scale) to pick a default")
    if not np.isfinite(sigma) or sigma <= 0:
        raise ConfigError(f"noise level sigma must be a finite number > 0, got {sigma}")
    return float(sigma)


def _as_image(array, name):
    array = np.asarray(array, dtype=np.float32)
    if array.ndim not in (2, 3):
        raise DataError(name, f"expected a 2D image (H, W) or a 3D volume (D, H, W), got shape {array.shape}")
    if min(array.shape) < 2:
        raise DataError(name, f"every axis needs at least 2 samples for finite differences, got shape {array.shape}")
    if not np.all(np.isfinite(array)):
        raise DataError(name, "contains NaN or infinite values")
    return array


def _check_weight(value, name):
    if not np.isfinite(value) or value < 0:
        raise ConfigError(f"{name} must be a finite number >= 0, got {value}")
    return float(value)


def _solve(noisy, prior, tv_weight, prior_weight, transform, isotropic, z_weight, boundary, linear_step, mu, lam, n_iter, n_outer, tol, reference):
    noisy = _as_image(noisy, "noisy")
    if boundary not in BOUNDARIES:
        raise ConfigError(f"unknown boundary {boundary!r}; choose one of {BOUNDARIES}")
    if linear_step not in LINEAR_STEPS:
        raise ConfigError(f"unknown linear step {linear_step!r}; choose one of {LINEAR_STEPS}")
    tv_weight = _check_weight(tv_weight, "TV weight")
    prior_weight = _check_weight(prior_weight, "prior weight")
    if z_weight is not None and noisy.ndim != 3:
        raise ConfigError("z_weight applies to 3D volumes (D, H, W) only")
    z_weight = tv_weight if z_weight is None else _check_weight(z_weight, "z_weight")
    mu = float(mu)
    if not np.isfinite(mu) or mu <= 0:
        raise ConfigError(f"mu must be a finite number > 0, got {mu}")
    if int(n_iter) < 1 or int(n_outer) < 1:
        raise ConfigError(f"n_iter and n_outer must be >= 1, got {n_iter} and {n_outer}")
    if not np.isfinite(tol) or tol < 0:
        raise ConfigError(f"tol must be a finite number >= 0, got {tol}")
    for name, other in (("prior", prior), ("reference", reference)):
        if other is not None and np.shape(other) != noisy.shape:
            raise DataError(name, f"shape {np.shape(other)} differs from the noisy array's {noisy.shape}")

    # Per-axis TV weights become operator scales s_a = w_a / max(w) and one threshold max(w) / λ,
    # so isotropic TV with a separate z weight is still a plain vector shrink.
    axis_weights = np.full(noisy.ndim, tv_weight)
    if noisy.ndim == 3:
        axis_weights[0] = z_weight
    tv_scale = axis_weights.max()
    use_tv = tv_scale > 0
    use_prior = transform is not None and prior_weight > 0
    track = reference is not None
    if not use_tv and not use_prior:
        image = noisy.copy()
        return TracedResult(image, np.zeros(0, np.float32)) if track else image
    if lam is None:
        # One penalty per split, each making its own soft threshold SHRINK_THRESHOLD: a small
        # prior weight then adds only a small λ_p I to the solve instead of slowing the TV part.
        lam_tv, lam_prior = tv_scale / SHRINK_THRESHOLD, prior_weight / SHRINK_THRESHOLD
    else:
        lam_tv = lam_prior = float(lam)
        if not np.isfinite(lam_tv) or lam_tv <= 0:
            raise ConfigError(f"lam must be a finite number > 0, got {lam}")

    scales = axis_weights / tv_scale if use_tv else np.ones(noisy.ndim)
    if linear_step == "auto":
        identity_part, laplacian_part = _operator_parts(
            mu, lam_tv if use_tv else 0.0, lam_prior if use_prior else 0.0, transform if use_prior else None
        )
        condition = 1.0 + 4.0 * float(np.sum(scales**2)) * laplacian_part / identity_part
        linear_step = "gauss_seidel" if condition <= GAUSS_SEIDEL_MAX_CONDITION else "exact"
    solver = _compiled_solver(
        noisy.ndim,
        isotropic=bool(isotropic),
        boundary=boundary,
        transform=transform if use_prior else None,
        use_tv=bool(use_tv),
        track=track,
        linear_step=linear_step,
    )
    f = tf.constant(noisy)
    image, history = solver(
        f,
        tf.constant(_as_image(prior, "prior")) if use_prior else f,
        tf.constant(_as_image(reference, "reference")) if track else f,
        tf.constant(scales, tf.float32),
        tf.constant(tv_scale / lam_tv if use_tv else 0.0, tf.float32),
        tf.constant(prior_weight / lam_prior if use_prior else 0.0, tf.float32),
        tf.constant(mu, tf.float32),
        tf.constant(lam_tv if use_tv else 0.0, tf.float32),
        tf.constant(lam_prior if use_prior else 0.0, tf.float32),
        tf.constant(int(n_iter), tf.int32),
        tf.constant(int(n_outer), tf.int32),
        tf.constant(tol, tf.float32),
    )
    image = image.numpy()
    return TracedResult(image, history.numpy()) if track else image


# ----------------------------------------------------------------------------------------------
# TensorFlow operators (any rank; the rank is static inside a trace)


def _axis_slice(rank, axis, start, stop):
    index = [slice(None)] * rank
    index[axis] = slice(start, stop)
    return tuple(index)


def _pad_axis(x, axis, before, after, mode="CONSTANT"):
    paddings = [[0, 0]] * x.shape.rank
    paddings[axis] = [before, after]
    return tf.pad(x, paddings, mode=mode)


def _forward_difference(u, axis, boundary):
    """``u[i+1] − u[i]`` along ``axis``; the last entry wraps (periodic) or is 0 (reflect)."""
    if boundary == "periodic":
        return tf.roll(u, shift=-1, axis=axis) - u
    rank = u.shape.rank
    inner = u[_axis_slice(rank, axis, 1, None)] - u[_axis_slice(rank, axis, None, -1)]
    return _pad_axis(inner, axis, 0, 1)


def _forward_difference_adjoint(p, axis, boundary):
    """Adjoint of :func:`_forward_difference`: ``p[i−1] − p[i]`` with the boundary's end rows."""
    if boundary == "periodic":
        return tf.roll(p, shift=1, axis=axis) - p
    # The last entry of p pairs with a zero difference, so it never contributes.
    interior = p[_axis_slice(p.shape.rank, axis, None, -1)]
    return _pad_axis(interior, axis, 1, 0) - _pad_axis(interior, axis, 0, 1)


def _gradient(u, scales, boundary):
    """Scaled gradient ``D u``, stacked on a new leading axis: shape ``(rank,) + u.shape``."""
    return tf.stack([scales[a] * _forward_difference(u, a, boundary) for a in range(u.shape.rank)])


def _gradient_adjoint(p, scales, boundary):
    """``Dᵀ p`` for a stacked field ``p`` of shape ``(rank,) + shape``."""
    rank = p.shape.rank - 1
    return tf.add_n([scales[a] * _forward_difference_adjoint(p[a], a, boundary) for a in range(rank)])


def _laplacian_symbol(shape, scales, boundary, rank):
    """Eigenvalues of ``DᵀD`` on the grid of :func:`_to_spectrum` (broadcast over all axes)."""
    symbol = 0.0
    for a in range(rank):
        n = tf.cast(shape[a], tf.float32)
        if boundary == "periodic":
            # The real FFT keeps only the non-negative frequencies of the last axis.
            count = shape[a] // 2 + 1 if a == rank - 1 else shape[a]
            angle = 2.0 * np.pi * tf.range(count, dtype=tf.float32) / n
        else:
            angle = np.pi * tf.range(shape[a], dtype=tf.float32) / n
        eigen = scales[a] ** 2 * (2.0 - 2.0 * tf.cos(angle))
        broadcast_shape = [1] * rank
        broadcast_shape[a] = -1
        symbol = symbol + tf.reshape(eigen, broadcast_shape)
    return symbol


_REAL_FFTS = {2: (tf.signal.rfft2d, tf.signal.irfft2d), 3: (tf.signal.rfft3d, tf.signal.irfft3d)}


def _dct_all_axes(x, inverse):
    """Orthonormal type-II DCT (or its inverse) along every axis.

    ``tf.signal.dct`` works on the last axis only: transform it, then rotate the axes by one so the
    next axis comes last; after ``rank`` rotations the layout is the original one.
    """
    rank = x.shape.rank
    rotate = [rank - 1] + list(range(rank - 1))
    transform = tf.signal.idct if inverse else tf.signal.dct
    for _ in range(rank):
        x = tf.transpose(transform(x, type=2, norm="ortho"), rotate)
    return x


def _to_spectrum(x, boundary):
    if boundary == "periodic":
        return _REAL_FFTS[x.shape.rank][0](x)
    return _dct_all_axes(x, inverse=False)


def _from_spectrum(spectrum, boundary, shape, rank):
    if boundary == "periodic":
        return _REAL_FFTS[rank][1](spectrum, fft_length=shape)
    return _dct_all_axes(spectrum, inverse=True)


def _shrink(z, threshold, vector):
    """Soft threshold: per entry, or of the vector length over the leading (component) axis."""
    if not vector:
        return tf.sign(z) * tf.nn.relu(tf.abs(z) - threshold)
    length = tf.sqrt(tf.reduce_sum(tf.square(z), axis=0, keepdims=True))
    # max(length, threshold) keeps the division finite: where length <= threshold the factor is 0.
    return z * (tf.nn.relu(length - threshold) / tf.maximum(length, threshold + 1e-12))


def _operator_parts(mu, lam_tv, lam_prior, transform):
    """The linear step's operator μ I + λ_tv DᵀD + λ_p ΦᵀΦ as ``(identity part, Laplacian part)``.

    The operator is ``identity_part I + laplacian_part DᵀD``; an unused term has λ = 0. Works on
    Python numbers and on tensors alike.
    """
    identity_part = mu + lam_prior if transform == "identity" else mu
    laplacian_part = lam_tv + lam_prior if transform == "gradient" else lam_tv
    return identity_part, laplacian_part


@functools.cache
def _compiled_solver(rank, isotropic, boundary, transform, use_tv, track, linear_step):
    """One ``tf.function`` per static configuration, traced once for every array size of that rank.

    The fixed input signature keeps the tuner's many calls with new weights or crop sizes from
    retracing. Unused ``prior`` / ``reference`` inputs receive ``f``, and are ignored. With the
    Gauss–Seidel step each inner loop is one XLA computation (compiled once per array shape): the
    neighbour sums, shrinks, updates and the stopping test of an iteration fuse into a few passes
    over the array, and the loop runs without returning to TensorFlow between iterations. The
    exact step stays outside XLA.
    """
    array = tf.TensorSpec([None] * rank, tf.float32)
    scalar = tf.TensorSpec([], tf.float32)
    count = tf.TensorSpec([], tf.int32)
    signature = [array, array, array, tf.TensorSpec([rank], tf.float32)] + [scalar] * 5 + [count, count, scalar]
    static = {"isotropic": isotropic, "boundary": boundary, "transform": transform, "use_tv": use_tv, "linear_step": linear_step}
    inner_loop = tf.function(functools.partial(_inner_loop, track=track, **static), jit_compile=linear_step == "gauss_seidel")
    outer_loop = functools.partial(_split_bregman, inner_loop=inner_loop, transform=transform, use_tv=use_tv, boundary=boundary, linear_step=linear_step)
    return tf.function(outer_loop, input_signature=signature)


def _split_bregman(
    f, prior, reference, scales, tv_threshold, prior_threshold, mu, lam_tv, lam_prior, n_iter, n_outer, tol, *, inner_loop, transform, use_tv, boundary, linear_step
):
    """Shared split-Bregman loop (see the module docstring); returns ``(u, rel_err_history)``."""
    rank = f.shape.rank
    shape = tf.shape(f)
    prior_gradient = transform == "gradient"
    prior_identity = transform == "identity"
    identity_part, laplacian_part = _operator_parts(mu, lam_tv, lam_prior, transform)
    if linear_step == "exact":
        denominator = identity_part + laplacian_part * _laplacian_symbol(shape, scales, boundary, rank)
        if boundary == "periodic":
            denominator = tf.complex(denominator, 0.0)
    else:
        denominator = tf.zeros([0])

    field = tf.zeros(tf.concat([[rank], shape], 0))
    # The iteration keeps z = D u + b (before the shrink) instead of d and b: d = shrink(z) and
    # b = z − d follow from it, and half the state means half the memory traffic per iteration.
    # d = b = 0 at the start is z = 0; likewise z_prior for w and c.
    z = field if use_tv else tf.zeros([0])
    z_prior = (field if prior_gradient else tf.zeros_like(f)) if transform else tf.zeros([0])
    # Constant part of the prior's right-hand side, λ_p Φᵀ Φ u_p.
    if prior_identity:
        prior_rhs = lam_prior * prior
    elif prior_gradient:
        prior_rhs = lam_prior * _gradient_adjoint(_gradient(prior, scales, boundary), scales, boundary)
    else:
        prior_rhs = tf.zeros_like(f)

    u = f
    data = f
    histories = tf.TensorArray(tf.float32, size=n_outer, element_shape=[None], infer_shape=False)
    for outer in tf.range(n_outer):
        u, z, z_prior, history, iterations = inner_loop(
            u, z, z_prior, mu * data + prior_rhs, prior, reference, denominator, scales,
            tv_threshold, prior_threshold, lam_tv, lam_prior, identity_part, laplacian_part, n_iter, tol,
        )
        histories = histories.write(outer, history[:iterations])
        # Bregman update of the data term: add back what the last solution removed.
        data += f - u
    return u, histories.concat()


def _inner_loop(
    u, z, z_prior, fixed_rhs, prior, reference, denominator, scales, tv_threshold, prior_threshold, lam_tv,
    lam_prior, identity_part, laplacian_part, n_iter, tol, *, track, **static,
):
    """Up to ``n_iter`` iterations, until ``‖u_k − u_{k−1}‖ <= tol ‖u_k‖``.

    Returns the state, the relative errors to ``reference`` (``n_iter`` long when ``track``, else
    empty) and the number of iterations run. Fixed-size outputs keep the loop compilable by XLA.
    """
    history = tf.zeros([n_iter]) if track else tf.zeros([0])
    reference_norm = tf.norm(reference)
    iterations = tf.constant(0)
    # A while loop, not ``for … in tf.range(n_iter)``: that one gives XLA n_iter as its maximum
    # iteration count, a compile-time constant, so every new n_iter would recompile.
    while iterations < n_iter:
        u_previous = u
        u, z, z_prior = _iteration(
            u, z, z_prior, fixed_rhs, prior, denominator, scales, tv_threshold, prior_threshold,
            lam_tv, lam_prior, identity_part, laplacian_part, **static,
        )
        if track:
            history = tf.tensor_scatter_nd_update(history, [[iterations]], [tf.norm(u - reference) / reference_norm])
        iterations += 1
        if tf.norm(u - u_previous) <= tol * tf.norm(u):
            break
    return u, z, z_prior, history, iterations


def _iteration(
    u, z, z_prior, fixed_rhs, prior, denominator, scales, tv_threshold, prior_threshold, lam_tv, lam_prior,
    identity_part, laplacian_part, *, isotropic, boundary, transform, use_tv, linear_step,
):
    """One split-Bregman iteration: linear step for ``u``, then the shrinks and Bregman updates.

    The splits are carried as ``z = D u + b`` and ``z_prior = Φ(u − u_p) + c``, the arguments of
    the shrinks: ``d = shrink(z)``, ``b = z − d`` (and ``w``, ``c`` from ``z_prior``), so that the
    right-hand side's ``d − b`` is ``2 d − z`` and the next ``z`` is ``D u + b``.
    """
    rank = u.shape.rank
    prior_gradient = transform == "gradient"
    prior_identity = transform == "identity"
    if use_tv:
        d = _shrink(z, tv_threshold, vector=isotropic)
        b = z - d
    if transform is not None:
        w = _shrink(z_prior, prior_threshold, vector=prior_gradient and isotropic)
        c = z_prior - w
    # Dᵀ is linear: the TV split and a gradient prior split share one adjoint.
    field_rhs = lam_tv * (d - b) if use_tv else None
    if prior_gradient:
        field_rhs = lam_prior * (w - c) if field_rhs is None else field_rhs + lam_prior * (w - c)
    rhs = fixed_rhs
    if field_rhs is not None:
        rhs += _gradient_adjoint(field_rhs, scales, boundary)
    if prior_identity:
        rhs += lam_prior * (w - c)
    if linear_step == "exact":
        u = _from_spectrum(_to_spectrum(rhs, boundary) / denominator, boundary, tf.shape(u), rank)
    else:
        u = _gauss_seidel_sweep(u, rhs, identity_part, laplacian_part * tf.square(scales), boundary)

    if use_tv:
        z = _gradient(u, scales, boundary) + b
    if transform is not None:
        # D(u − u_p) from the prior itself: one array to read instead of the three of D u_p.
        difference = u - prior
        z_prior = (_gradient(difference, scales, boundary) if prior_gradient else difference) + c
    return u, z, z_prior


def _gauss_seidel_sweep(u, rhs, identity_part, axis_weights, boundary):
    """One red-black Gauss–Seidel sweep for ``(identity_part I + Σ_a axis_weights[a] L_a) u = rhs``.

    ``L_a`` is the second-difference operator along axis ``a`` (``∂_aᵀ∂_a``). Voxels whose index sum
    is even are updated first from their neighbours, then the odd ones from the updated even ones;
    every voxel's neighbours have the other colour, so each half-sweep is one vectorised update.
    With the reflect boundary the missing neighbour of an edge voxel is replaced by the voxel
    itself, and the diagonal counts two neighbours everywhere: at a fixed point the two extra
    terms cancel, which leaves the Neumann equation, and before it they damp the edge update.
    With the periodic boundary and an odd axis length the two end samples share a colour and are
    updated together (a Jacobi step for that pair); the sweeps still converge (tested).
    """
    rank = u.shape.rank
    diagonal = identity_part + 2.0 * tf.reduce_sum(axis_weights)
    even = _checkerboard(tf.shape(u), rank)
    for colour in (even, tf.logical_not(even)):
        neighbours = tf.add_n([axis_weights[a] * _neighbour_sum(u, a, boundary) for a in range(rank)])
        u = tf.where(colour, (rhs + neighbours) / diagonal, u)
    return u


def _neighbour_sum(u, axis, boundary):
    """``u[i−1] + u[i+1]`` along ``axis``: wrapped (periodic) or with each edge sample repeated (reflect)."""
    if boundary == "periodic":
        return tf.roll(u, shift=1, axis=axis) + tf.roll(u, shift=-1, axis=axis)
    rank = u.shape.rank
    padded = _pad_axis(u, axis, 1, 1, mode="SYMMETRIC")  # edge samples repeated; XLA fuses a pad, not a concat
    return padded[_axis_slice(rank, axis, None, -2)] + padded[_axis_slice(rank, axis, 2, None)]


def _checkerboard(shape, rank):
    """Boolean array of ``shape``: True where the sum of the indices is even."""
    index_sum = 0
    for a in range(rank):
        broadcast_shape = [1] * rank
        broadcast_shape[a] = -1
        index_sum = index_sum + tf.reshape(tf.range(shape[a]), broadcast_shape)
    return tf.equal(tf.math.floormod(index_sum, 2), 0)
