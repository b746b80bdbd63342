"""predict(): any size, 2D stacks, 3D volumes, priors, tiling with blending, input validation."""

import keras
import numpy as np
import pytest

from models import MODEL_NAMES, build_model, model_info, predict
from models.inference import _plan_axis
from utils.base.errors import ConfigError


def _small(name, ndim, **kwargs):
    """A cheap model of the family (tiny filters; DnCNN shortened)."""
    keras.utils.set_random_seed(11)
    return build_model(name, ndim=ndim, filters=2, **({"layers": 5} if name == "dncnn" else {}), **kwargs)


@pytest.mark.parametrize("name", MODEL_NAMES)
@pytest.mark.parametrize("shape", [(37, 45), (3, 21, 19), (9, 37, 45)], ids=["2d", "stack", "3d"])
def test_output_shape_equals_input_shape_at_odd_sizes(name, shape, rng):
    model = _small(name, ndim=3 if shape == (9, 37, 45) else 2)
    noisy = rng.random(shape)  # float64 in, float32 out
    prior = noisy if name == "resprunet" else None
    out = predict(model, noisy, prior=prior, batch_size=2, progress=False)
    assert out.shape == shape and out.dtype == np.float32 and np.isfinite(out).all()


def test_stack_is_predicted_slice_by_slice(rng):
    model = _small("unet", ndim=2)
    stack = rng.random((4, 21, 19), dtype=np.float32)
    together = predict(model, stack, batch_size=3, progress=False)
    for k in range(len(stack)):
        np.testing.assert_allclose(together[k], predict(model, stack[k], progress=False), atol=1e-6)


@pytest.mark.parametrize(
    "name, ndim, depth, shape, tile_shape",
    [
        ("unet", 2, 1, (37, 45), (32, 32)),
        ("unet", 2, 2, (101, 133), (64, 64)),
        ("cnn7", 2, 2, (37, 45), (24, 24)),
        ("unet", 3, 1, (9, 37, 45), (16, 30, 30)),
        ("resprunet", 3, 1, (29, 37, 45), (28, 28, 28)),
        ("dncnn", 3, 2, (9, 37, 45), (16, 40, 40)),
    ],
)
def test_tiled_equals_untiled(name, ndim, depth, shape, tile_shape, rng):
    model = _small(name, ndim, depth=depth)
    noisy = rng.random(shape, dtype=np.float32)
    prior = 0.5 * noisy if name == "resprunet" else None
    whole = predict(model, noisy, prior=prior, progress=False)
    tiled = predict(model, noisy, prior=prior, tile_shape=tile_shape, batch_size=3, progress=False)
    np.testing.assert_allclose(tiled, whole, atol=1e-4)


@pytest.mark.parametrize(
    "name, ndim, shape, tile_shape, flips",
    [
        ("unet", 2, (37, 45), None, 4),
        ("unet", 2, (3, 37, 45), (32, 32), 4),  # a stack: the slice axis is not flipped
        ("resprunet", 2, (2, 29, 31), None, 4),
        ("unet", 3, (9, 37, 45), None, 8),
        ("resprunet", 3, (29, 37, 45), (28, 28, 28), 8),  # tiles placed asymmetrically, mirrored by the flips
    ],
)
def test_self_ensemble_is_the_mean_over_flips_flipped_back(name, ndim, shape, tile_shape, flips, rng):
    import itertools

    model = _small(name, ndim, depth=1)
    noisy = rng.random(shape, dtype=np.float32)
    prior = rng.random(shape, dtype=np.float32) if name == "resprunet" else None
    spatial = tuple(range(len(shape) - ndim, len(shape)))
    expected = []
    for n in range(ndim + 1):
        for axes in itertools.combinations(spatial, n):
            flipped_prior = None if prior is None else np.flip(prior, axes).copy()
            out = predict(model, np.flip(noisy, axes).copy(), prior=flipped_prior, tile_shape=tile_shape, progress=False)
            expected.append(np.flip(out, axes))
    assert len(expected) == flips
    ensemble = predict(model, noisy, prior=prior, tile_shape=tile_shape, batch_size=2, progress=False, self_ensemble=True)
    np.testing.assert_allclose(ensemble, np.mean(expected, axis=0), atol=1e-5)
    assert np.abs(ensemble - predict(model, noisy, prior=prior, tile_shape=tile_shape, progress=False)).max() > 1e-4


def test_tiled_2d_stack_equals_untiled(rng):
    model = _small("unet", ndim=2, depth=1)
    stack = rng.random((3, 37, 45), dtype=np.float32)
    np.testing.assert_allclose(
        predict(model, stack, tile_shape=(32, 32), batch_size=4, progress=False),
        predict(model, stack, progress=False),
        atol=1e-4,
    )


def test_small_overlap_warns_but_blends(rng):
    model = _small("unet", ndim=2)
    image = rng.random((101, 133), dtype=np.float32)
    with pytest.warns(UserWarning, match="below 2 x halo"):
        tiled = predict(model, image, tile_shape=(64, 64), overlap=24, progress=False)
    assert np.isfinite(tiled).all() and np.abs(tiled - predict(model, image, progress=False)).mean() < 0.05


@pytest.mark.parametrize("size, tile, overlap", [(37, 16, 8), (300, 128, 56), (512, 200, 56), (41, 41, 10)])
def test_blending_weights_cover_every_voxel(size, tile, overlap):
    plan = _plan_axis(size, divisor=4, tile_max=tile, overlap=overlap, halo=3)
    assert plan.tile <= max(tile, plan.frame) and plan.tile % 4 == 0 and plan.frame % 4 == 0
    assert plan.starts[0] == 0 and plan.starts[-1] + plan.tile == plan.frame
    assert (plan.norm > 0.5).all()  # facing raised-cosine ramps sum to 1; never a hole
    if len(plan.starts) > 1:
        assert all(window[:3].sum() == 0 for window in plan.windows[1:])  # no weight within the halo of a cut


def test_model_info_is_read_from_the_model():
    unet3d = build_model("unet", ndim=3, filters=2, depth=3)
    info = model_info(unet3d)
    assert (info.ndim, info.needs_prior, info.depth, info.divisor, info.fixed_shape) == (3, False, 3, 8, None)
    assert model_info(build_model("resprunet", ndim=2, filters=2)).needs_prior
    cnn = model_info(build_model("cnn2", ndim=2))
    assert (cnn.depth, cnn.divisor, cnn.receptive_field, cnn.halo) == (0, 1, 5, 2)
    assert info.default_overlap >= 2 * info.halo + 1


def test_valid_padding_model_keeps_shape(rng):
    model = _small("convnet", ndim=2, padding="valid")
    image = rng.random((37, 45), dtype=np.float32)
    out = predict(model, image, progress=False)
    assert out.shape == image.shape
    np.testing.assert_allclose(predict(model, image, tile_shape=(16, 16), progress=False), out, atol=1e-5)


def test_trailing_channel_axis_is_kept_and_ints_accepted(rng):
    model = _small("unet", ndim=2)
    image = (rng.random((37, 45, 1)) * 255).astype(np.uint8)
    out = predict(model, image, progress=False)
    assert out.shape == (37, 45, 1) and out.dtype == np.float32


@pytest.mark.parametrize(
    "name, ndim, noisy_shape, prior_shape, message",
    [
        ("unet", 2, (37, 45, 3), None, "has 3 channels"),
        ("unet", 3, (37, 45), None, "a 3D model needs a (D, H, W) volume"),
        ("unet", 2, (2, 3, 37, 45), None, "a 2D model needs an (H, W) image or an (N, H, W) stack"),
        ("resprunet", 2, (37, 45), None, "takes a prior image"),
        ("resprunet", 3, (9, 37, 45), (9, 37, 44), "prior shape (9, 37, 44) differs from noisy shape (9, 37, 45)"),
        ("unet", 2, (37, 45), (37, 45), "has no prior input"),
        ("unet", 2, (0, 45), None, "empty"),
    ],
)
@pytest.mark.bad_input
def test_bad_inputs_raise_config_error(name, ndim, noisy_shape, prior_shape, message, rng):
    model = _small(name, ndim)
    prior = None if prior_shape is None else rng.random(prior_shape)
    with pytest.raises(ConfigError) as caught:
        predict(model, rng.random(noisy_shape), prior=prior, progress=False)
    assert message in str(caught.value)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"tile_shape": (16, 16)}, "must exceed the overlap"),
        ({"tile_shape": (32,)}, "tile_shape must be"),
        ({"batch_size": 0}, "batch_size must be"),
        ({"overlap": -1, "tile_shape": (64, 64)}, "overlap must be"),
    ],
)
@pytest.mark.bad_input
def test_bad_tiling_settings_raise_config_error(kwargs, message, rng):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        predict(_small("unet", 2), rng.random((101, 133)), progress=False, **kwargs)


@pytest.mark.bad_input
def test_non_finite_input_is_refused(rng):
    image = rng.random((16, 16))
    image[3, 4] = np.nan
    with pytest.raises(ConfigError, match="NaN"):
        predict(_small("cnn2", 2), image, progress=False)


def test_progress_bar_can_be_forced(rng, capsys):
    predict(_small("cnn2", 2), rng.random((3, 16, 16)), progress=True)
    assert "predict" in capsys.readouterr().err
