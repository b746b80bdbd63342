"""The classical methods by name (utils/solvers/methods.py): the same results as the solvers called directly."""

import numpy as np
import pytest

from utils.base.errors import ConfigError
from utils.data.prior import neighbour_prior
from utils.solvers import variational
from utils.solvers.methods import CLASSICAL_METHODS, run_classical


@pytest.fixture
def noisy():
    rng = np.random.default_rng(0)
    clean = np.zeros((5, 24, 26), np.float32)
    clean[:, 6:18, 8:20] = 0.6
    return (clean + 0.05 * rng.standard_normal(clean.shape)).astype(np.float32)


@pytest.mark.parametrize("ndim", [2, 3])
def test_tv_by_name_is_tv_with_the_same_arguments(noisy, ndim):
    image = noisy if ndim == 3 else noisy[2]
    np.testing.assert_allclose(run_classical("tv", image, sigma=0.05), variational.tv_denoise(image, sigma=0.05), atol=1e-6)
    tuned = run_classical("tv", image, weight=0.03, n_outer=1)  # tuned parameters win over sigma
    np.testing.assert_allclose(tuned, variational.tv_denoise(image, weight=0.03, n_outer=1), atol=1e-6)


def test_spade_by_name_takes_the_prior(noisy):
    prior = neighbour_prior(noisy)
    np.testing.assert_allclose(
        run_classical("spade", noisy, prior, sigma=0.05, n_iter=5), variational.spade_denoise(noisy, prior, sigma=0.05, n_iter=5), atol=1e-6
    )


@pytest.mark.bad_input
def test_unknown_method_missing_prior_and_missing_sigma_are_refused(noisy):
    assert CLASSICAL_METHODS == ("tv", "spade", "bm3d", "bm4d")
    with pytest.raises(ConfigError, match="unknown classical method 'nlm'"):
        run_classical("nlm", noisy, sigma=0.05)
    with pytest.raises(ConfigError, match="spade needs a prior"):
        run_classical("spade", noisy, sigma=0.05)
    with pytest.raises(ConfigError, match="bm3d needs the noise sigma"):
        run_classical("bm3d", noisy[0])
