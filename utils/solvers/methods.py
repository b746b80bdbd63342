"""The classical denoisers by name: the one call that assessment, tuning and ``Denoise_CT.py`` make.

=========  ======================================================  ======================
name       call                                                    prior
=========  ======================================================  ======================
``tv``     ``variational.tv_denoise(noisy, sigma=sigma, **params)``     no
``spade``  ``variational.spade_denoise(noisy, prior, sigma=sigma, **params)``  required
``bm3d``   ``classical.bm3d_denoise(noisy, params.get("sigma", sigma))``  no (slice by slice)
``bm4d``   ``classical.bm4d_denoise(noisy, params.get("sigma", sigma))``  no (volumes only)
=========  ======================================================  ======================

``params`` are the method's own arguments (tuned values, or overrides such as ``n_iter``); ``sigma`` is
the noise standard deviation on the data's scale and fills in what ``params`` leaves out: the noise-aware
default weights of TV and SPADE, ``sigma_psd`` of BM3D and BM4D. TV and SPADE run in 2D on an image
``(H, W)`` and in 3D on a volume ``(D, H, W)``.
"""

from utils.base.errors import ConfigError

CLASSICAL_METHODS = ("tv", "spade", "bm3d", "bm4d")
NEEDS_PRIOR = frozenset({"spade"})


def run_classical(name, noisy, prior=None, sigma=None, progress=False, **params):
    """Denoise ``noisy`` (float, on the [0, 1] scale) with the classical method ``name``; float32 of its shape.

    ``prior`` is SPADE's prior image (the shape of ``noisy``); ``progress`` shows BM3D's bar over slices.
    Raises ConfigError for an unknown name, a SPADE call without prior, or BM3D/BM4D without any sigma.
    """
    from utils.solvers import classical, variational

    if name not in CLASSICAL_METHODS:
        raise ConfigError(f"unknown classical method {name!r}; choose one of {', '.join(CLASSICAL_METHODS)}")
    if name == "tv":
        return variational.tv_denoise(noisy, **{"sigma": sigma, **params})
    if name == "spade":
        if prior is None:
            raise ConfigError("spade needs a prior image (the neighbour prior of the noisy volume)")
        return variational.spade_denoise(noisy, prior, **{"sigma": sigma, **params})
    level = params.get("sigma", sigma)
    if level is None:
        raise ConfigError(f"{name} needs the noise sigma (tuned, or estimated from the image)")
    if name == "bm3d":
        return classical.bm3d_denoise(noisy, level, progress=progress)
    return classical.bm4d_denoise(noisy, level)
