"""The reference repository's published tf.keras 2.4 .h5 files load into our builders with identical outputs."""

import h5py
import keras
import numpy as np
import pytest

from models import build_model, describe_reference_h5, load_model, load_reference_h5, model_info, predict, save_model
from utils.base.errors import ModelFileError

# Final 1x1 bias of each published file (reference_repository.md section 6): proves the weights landed in order.
SEED_FILES = {
    "kits19_200subj_data2k_Convnet_64_noisepc2_model_best.h5": ("convnet", 64, 0.0053716),
    "kits19_200subj_data2k_Convnet_64_noisepc5_model_best.h5": ("convnet", 64, 0.00564429),
    "kits19_200subj_data2k_UNet_32_noisepc2_model_best.h5": ("unet", 32, 0.00299182),
    "kits19_200subj_data2k_UNet_32_noisepc5_model_best.h5": ("unet", 32, 0.00389717),
}


def _any_size_copy(path, tmp_path):
    """Copy of a reference file whose stored input shape is (None, None) instead of 256x256, so that
    Keras' own loader can run it on other sizes. The weights are untouched."""
    copy = tmp_path / path.name
    copy.write_bytes(path.read_bytes())
    with h5py.File(copy, "r+") as h5:
        config = h5.attrs["model_config"]
        config = config.decode() if isinstance(config, bytes) else config
        h5.attrs["model_config"] = config.replace("[null, 256, 256, 1]", "[null, null, null, 1]")
    return copy


@pytest.mark.filterwarnings("ignore:Do not pass an `input_shape`:UserWarning")  # Keras on the legacy Sequential
@pytest.mark.parametrize("filename", sorted(SEED_FILES))
def test_outputs_match_keras_loader(seed_models, filename, tmp_path, rng):
    name, filters, last_bias = SEED_FILES[filename]
    path = seed_models / filename
    ours = load_reference_h5(path)
    settings = describe_reference_h5(path)
    assert (settings["model"], settings["filters"], settings["ndim"]) == (name, filters, 2)
    assert settings["noise"] == (0.02 if "noisepc2" in filename else 0.05)
    assert ours.get_layer("out").bias.numpy()[0] == pytest.approx(last_bias, rel=1e-5)

    x256 = rng.random((1, 256, 256, 1), dtype=np.float32)
    reference = keras.models.load_model(path, compile=False)
    np.testing.assert_allclose(ours.predict_on_batch(x256), reference.predict_on_batch(x256), atol=1e-5)

    x64 = rng.random((2, 64, 64, 1), dtype=np.float32)
    reference_any_size = keras.models.load_model(_any_size_copy(path, tmp_path), compile=False)
    np.testing.assert_allclose(ours.predict_on_batch(x64), reference_any_size.predict_on_batch(x64), atol=1e-5)


def test_loaded_reference_saves_as_keras_and_reloads(seed_models, tmp_path, rng):
    path = seed_models / "kits19_200subj_data2k_UNet_32_noisepc2_model_best.h5"
    model, config = load_model(path)  # storage accepts the reference files too
    assert config["model"] == "unet" and config["hu_window"] == [-1000.0, 400.0]
    saved = save_model(model, tmp_path / "unet_reference.keras", config)
    reloaded, reloaded_config = load_model(saved)
    assert reloaded_config == config
    x = rng.random((1, 64, 64, 1), dtype=np.float32)
    np.testing.assert_array_equal(reloaded.predict_on_batch(x), model.predict_on_batch(x))


def test_predict_handles_keras_loaded_fixed_size_reference(seed_models, rng):
    """Keras' own load keeps the 256x256 input: predict then tiles with exactly that shape."""
    path = seed_models / "kits19_200subj_data2k_UNet_32_noisepc5_model_best.h5"
    reference = keras.models.load_model(path, compile=False)
    assert model_info(reference).fixed_shape == (256, 256)
    image = rng.random((256, 300), dtype=np.float32)  # two 256-wide tiles along the second axis
    np.testing.assert_allclose(
        predict(reference, image, progress=False), predict(load_reference_h5(path), image, progress=False), atol=1e-5
    )
    # Smaller than the fixed input: reflect-padded up to 256, then cropped back.
    assert predict(reference, image[:100, :37], progress=False).shape == (100, 37)


@pytest.mark.parametrize("ndim", [2, 3])
@pytest.mark.parametrize("name", ["resprunet", "unet", "cnn7"])
def test_recognises_keras_h5_of_other_reference_architectures(name, ndim, tmp_path, rng):
    """The missing 3D U-Net, CNN7 and ResPr-U-Net files have the same layout: round-trip our own through .h5."""
    keras.utils.set_random_seed(5)
    model = build_model(name, ndim=ndim, filters=2)
    path = tmp_path / f"{name}.h5"
    model.save(path)
    loaded = load_reference_h5(path)
    assert describe_reference_h5(path)["model"] == name
    shape = (1,) + (8,) * ndim + (1,)
    batch = [rng.random(shape, dtype=np.float32) for _ in model.inputs]
    batch = batch if len(batch) > 1 else batch[0]
    np.testing.assert_allclose(loaded.predict_on_batch(batch), model.predict_on_batch(batch), atol=1e-6)


def _text_file(tmp):
    path = tmp / "notes.h5"
    path.write_text("not hdf5")
    return path


def _hdf5_without_model(tmp):
    path = tmp / "data.h5"
    with h5py.File(path, "w") as h5:
        h5["volume"] = np.zeros((2, 2))
    return path


def _dense_model(tmp):
    path = tmp / "dense.h5"
    keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)]).save(path)
    return path


def _truncated(tmp, seed_models):
    source = seed_models / "kits19_200subj_data2k_Convnet_64_noisepc2_model_best.h5"
    path = tmp / "truncated.h5"
    path.write_bytes(source.read_bytes()[:100_000])
    return path


@pytest.mark.parametrize(
    "make, problem",
    [
        (lambda tmp: tmp / "missing.h5", "no such file"),
        (_text_file, "not a readable HDF5"),
        (_hdf5_without_model, "without a 'model_config'"),
        (_dense_model, "no Conv2D/Conv3D layers"),
    ],
)
@pytest.mark.bad_input
def test_unusable_files_raise_model_file_error(make, problem, tmp_path):
    path = make(tmp_path)
    with pytest.raises(ModelFileError) as caught:
        load_reference_h5(path)
    assert str(caught.value).startswith(str(path)) and problem in str(caught.value)


@pytest.mark.bad_input
def test_truncated_reference_file_raises_model_file_error(seed_models, tmp_path):
    path = _truncated(tmp_path, seed_models)
    with pytest.raises(ModelFileError, match="truncated.h5"):
        load_reference_h5(path)
