"""Builders (architectures, parameter counts, precision, distribution) and .keras storage."""

import json
import zipfile

import keras
import numpy as np
import pytest
import tensorflow as tf

from models import MODEL_NAMES, build_model, load_model, predict, read_config, save_model
from models.precision import is_mixed, resolve_precision
from utils.base.errors import ConfigError, ModelFileError


def _inputs(model, shape, rng):
    """Random batch for every input of ``model``, in input order."""
    arrays = [rng.random(shape, dtype=np.float32) for _ in model.inputs]
    return arrays if len(arrays) > 1 else arrays[0]


# Counts printed by the reference repository (and the paper's models), plus our documented designs.
@pytest.mark.parametrize(
    "name, ndim, filters, expected",
    [
        ("convnet", 2, None, 37_633),  # published Convnet_64 .h5
        ("cnn2", 2, None, 9_601),
        ("cnn2", 3, None, 28_609),
        ("cnn7", 2, None, 304_993),
        ("resnet", 2, None, 337_376),  # incl. 1,600 batch-norm moving statistics
        ("unet", 2, None, 332_641),
        ("unet", 2, 64, 1_328_833),
        ("unet", 3, None, 996_769),
        ("resprunet", 2, None, 332_929),
        ("resprunet", 3, None, 997_633),
        ("dncnn", 2, None, 558_017),
        ("drunet", 2, None, 1_040_960),
        ("drunet", 3, None, 3_040_960),
    ],
)
def test_parameter_counts(name, ndim, filters, expected):
    assert build_model(name, ndim=ndim, filters=filters).count_params() == expected


def test_unet_weighted_layers_follow_reference_order():
    model = build_model("unet", ndim=2, filters=32)
    convs = [layer for layer in model.layers if layer.weights]
    # conv2d ... conv2d_10 of the reference: kernel shapes in its topological order.
    assert [tuple(layer.kernel.shape[-2:]) for layer in convs] == [
        (1, 32), (32, 32), (32, 64), (64, 64), (64, 128), (128, 64), (128, 64), (64, 32), (64, 32), (32, 32), (32, 1)
    ]  # fmt: skip


@pytest.mark.parametrize("name", MODEL_NAMES)
@pytest.mark.parametrize("ndim", [2, 3])
def test_inputs_are_named_and_fully_convolutional(name, ndim, rng):
    model = build_model(name, ndim=ndim, filters=2, **({"layers": 4} if name == "dncnn" else {}))
    assert [t.name for t in model.inputs] == (["noisy", "prior"] if name == "resprunet" else ["noisy"])
    assert model.name == f"{name}_{ndim}d"
    for shape in [(1,) + (8,) * ndim + (1,), (2,) + (4,) * (ndim - 1) + (12, 1)]:
        output = model(_inputs(model, shape, rng))
        assert tuple(output.shape) == shape


def test_drunet_levels_blocks_and_bias_free_convolutions():
    model = build_model("drunet", ndim=2, filters=4, depth=3, blocks=1)
    downs = [layer for layer in model.layers if layer.name.startswith("down")]
    ups = [layer for layer in model.layers if layer.name.startswith("up")]
    assert [layer.filters for layer in downs] == [8, 16, 32] and [layer.filters for layer in ups] == [16, 8, 4]
    assert sum(layer.name.endswith("_add") for layer in model.layers) == 2 * 3 + 1  # one block per level, encoder and decoder, and the body
    assert all(not layer.use_bias for layer in model.layers if hasattr(layer, "use_bias"))
    assert model(np.zeros((1, 16, 24, 1), np.float32)).shape == (1, 16, 24, 1)
    # Untrained, it returns zero (its blocks and tail start at zero); trained, bias-free and ReLU make it
    # positively homogeneous: scaling the input scales the output.
    x = np.random.default_rng(0).random((1, 16, 16, 1), dtype=np.float32)
    assert not np.any(model(x).numpy())
    for layer in model.layers:
        if layer.weights:
            layer.kernel.assign(np.random.default_rng(1).normal(0, 0.3, layer.kernel.shape))
    np.testing.assert_allclose(model(2 * x).numpy(), 2 * model(x).numpy(), rtol=1e-4, atol=1e-6)


def test_depth_generalises_unet():
    deeper = build_model("unet", ndim=2, filters=4, depth=3)
    assert sum("pool" in layer.name for layer in deeper.layers) == 3
    assert deeper(np.zeros((1, 16, 24, 1), np.float32)).shape == (1, 16, 24, 1)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"name": "vnet"}, "valid names: convnet, cnn2, cnn7, resnet, dncnn, unet, resprunet, drunet"),
        ({"name": "unet", "ndim": 4}, "ndim must be 2"),
        ({"name": "unet", "filters": 0}, "filters must be an integer"),
        ({"name": "unet", "kernel_size": 4}, "kernel_size must be odd"),
        ({"name": "unet", "depth": 0}, "depth must be an integer"),
        ({"name": "unet", "dropout": 0.1}, "unknown option(s) ['dropout']"),
        ({"name": "unet", "padding": "valid"}, "padding='valid'"),
        ({"name": "drunet", "blocks": 0}, "blocks must be an integer >= 1"),
        ({"name": "drunet", "layers": 4}, "unknown option(s) ['layers']"),
        ({"name": "convnet", "padding": "causal"}, "padding must be one of"),
    ],
)
@pytest.mark.bad_input
def test_bad_settings_raise_config_error(kwargs, message):
    kwargs = {"ndim": 2, **kwargs}
    with pytest.raises(ConfigError) as caught:
        build_model(kwargs.pop("name"), **kwargs)
    assert message in str(caught.value)


def test_valid_padding_option_for_plain_cnn():
    model = build_model("convnet", ndim=2, filters=4, padding="valid")
    assert model(np.zeros((1, 12, 12, 1), np.float32)).shape == (1, 8, 8, 1)


def _zero_output_layer(model, name="out"):
    layer = model.get_layer(name)
    layer.set_weights([np.zeros_like(w) for w in layer.get_weights()])


@pytest.mark.parametrize("ndim, shape", [(2, (37, 45)), (2, (3, 21, 19)), (3, (9, 37, 45))])
def test_resprunet_with_zero_last_layer_returns_prior(ndim, shape, rng):
    model = build_model("resprunet", ndim=ndim, filters=2)
    _zero_output_layer(model)
    noisy, prior = rng.random(shape, dtype=np.float32), rng.random(shape, dtype=np.float32)
    np.testing.assert_array_equal(predict(model, noisy, prior=prior, progress=False), prior)


@pytest.mark.parametrize("ndim, shape", [(2, (37, 45)), (3, (9, 37, 45))])
@pytest.mark.parametrize("name, last", [("unet", "out"), ("dncnn", "noise"), ("drunet", "out")])
def test_residual_models_with_zero_last_layer_return_input(name, last, ndim, shape, rng):
    options = {"layers": 4} if name == "dncnn" else {"residual": True}
    model = build_model(name, ndim=ndim, filters=2, **options)
    _zero_output_layer(model, last)
    noisy = rng.random(shape, dtype=np.float32)
    np.testing.assert_array_equal(predict(model, noisy, progress=False), noisy)


@pytest.mark.parametrize("policy", ["mixed_bfloat16", "mixed_float16"])
@pytest.mark.parametrize("name", ["unet", "resprunet", "dncnn", "resnet", "drunet"])
def test_mixed_precision_outputs_float32(policy, name, rng):
    keras.mixed_precision.set_global_policy(policy)
    try:
        options = {"layers": 4} if name == "dncnn" else {"residual": name in ("unet", "drunet")}
        model = build_model(name, ndim=2, filters=4, **options)
        output = model(_inputs(model, (1, 16, 16, 1), rng))
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert model.layers[-1].compute_dtype == "float32"
    assert output.dtype == tf.float32
    assert np.isfinite(output.numpy()).all()


@pytest.mark.parametrize(
    "gpus, cpu_flags, expected",
    [
        ([], {"avx2", "fma"}, "float32"),  # AVX2 only: bfloat16 would run on slow fallback kernels
        ([], {"avx512f", "avx512_bf16"}, "mixed_bfloat16"),
        ([], {"amx_bf16", "amx_tile"}, "mixed_bfloat16"),
        ([], set(), "float32"),  # flags unreadable
        ([(8, 0), (9, 0)], set(), "mixed_bfloat16"),  # the GPUs compute, whatever the CPU
        ([(8, 6), (7, 5)], {"avx512_bf16"}, "float32"),  # one older GPU among them
    ],
)
def test_auto_precision_is_bfloat16_only_where_the_hardware_has_it(gpus, cpu_flags, expected):
    policy, reason = resolve_precision("auto", gpus=gpus, cpu_flags=cpu_flags)
    assert policy == expected
    assert reason


@pytest.mark.parametrize("precision", ["float32", "mixed_bfloat16", "mixed_float16"])
def test_an_explicit_precision_is_kept(precision):
    assert resolve_precision(precision, gpus=[], cpu_flags=set())[0] == precision


@pytest.mark.parametrize("name", ["unet", "resprunet", "drunet"])
def test_a_mixed_precision_file_loads_in_float32_with_its_weights(name, tmp_path, rng):
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        keras.utils.set_random_seed(5)
        model = build_model(name, ndim=2, filters=4, residual=name != "resprunet")
    finally:
        keras.mixed_precision.set_global_policy("float32")
    for layer in model.layers:  # DRUNet starts with zero layers: make every output depend on the weights
        if layer.weights and not np.any(layer.kernel.numpy()):
            layer.kernel.assign(rng.normal(0, 0.3, layer.kernel.shape))
    path = save_model(model, tmp_path / "mixed.keras", {"model": name})
    as_saved, _ = load_model(path, precision=None)
    in_float32, _ = load_model(path, precision="float32")
    assert is_mixed(as_saved) and not is_mixed(in_float32)
    assert {layer.dtype_policy.name for layer in in_float32.layers} == {"float32"}
    for saved, rebuilt in zip(as_saved.weights, in_float32.weights):
        np.testing.assert_array_equal(saved.numpy(), rebuilt.numpy())
    batch = _inputs(model, (2, 24, 20, 1), rng)
    exact = in_float32.predict_on_batch(batch)
    error = np.abs(as_saved.predict_on_batch(batch) - exact).max()
    assert 0 < error < 0.05 * np.ptp(exact)  # the same network, bfloat16 rounding apart
    auto, _ = load_model(path)
    assert is_mixed(auto) == (resolve_precision("auto")[0] != "float32")


def test_builds_and_predicts_under_mirrored_strategy(rng):
    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    with strategy.scope():
        model = build_model("resprunet", ndim=3, filters=2)
    noisy = rng.random((5, 13, 11), dtype=np.float32)
    assert predict(model, noisy, prior=noisy, progress=False).shape == noisy.shape


# ----------------------------------------------------------------------------- storage


@pytest.mark.parametrize("name", ["resprunet", "drunet"])
def test_save_load_round_trip_keeps_outputs_and_config(name, tmp_path, rng):
    keras.utils.set_random_seed(3)
    model = build_model(name, ndim=3, filters=2)
    for layer in model.layers:  # DRUNet starts with zero layers: make every output depend on the weights
        if layer.weights and not np.any(layer.kernel.numpy()):
            layer.kernel.assign(rng.normal(0, 0.3, layer.kernel.shape))
    config = {"model": name, "ndim": 3, "filters": 2, "noise": np.float32(0.05), "hu_window": (-1000, 400)}
    path = save_model(model, tmp_path / "run" / "model.keras", config)
    assert sorted(p.name for p in path.parent.iterdir()) == ["model.keras"]  # no temporary left behind

    loaded, loaded_config = load_model(path)
    expected = {"model": name, "ndim": 3, "filters": 2, "noise": pytest.approx(0.05), "hu_window": [-1000, 400]}
    assert loaded_config == expected
    assert read_config(path) == loaded_config
    batch = _inputs(model, (1, 8, 12, 12, 1), rng)
    np.testing.assert_array_equal(loaded.predict_on_batch(batch), model.predict_on_batch(batch))


@pytest.mark.bad_input
def test_lambda_layer_is_refused(tmp_path):
    inputs = keras.Input((None, None, 1))
    model = keras.Model(inputs, keras.layers.Lambda(lambda t: 2.0 * t)(inputs))
    path = tmp_path / "lambda.keras"
    model.save(path)
    with pytest.raises(ModelFileError, match=r"lambda\.keras: contains a Lambda layer"):
        load_model(path)


@pytest.mark.bad_input
def test_save_rejects_bad_path_and_config(tmp_path):
    model = build_model("cnn2", ndim=2, filters=2)
    with pytest.raises(ConfigError, match=r"\.keras"):
        save_model(model, tmp_path / "model.h5", {})
    with pytest.raises(ConfigError, match="JSON"):
        save_model(model, tmp_path / "model.keras", {"bad": object()})
    assert not list(tmp_path.iterdir())


def _truncated_keras(tmp_path):
    path = save_model(build_model("cnn2", ndim=2, filters=2), tmp_path / "full.keras", {})
    truncated = tmp_path / "truncated.keras"
    truncated.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return truncated


def _zip_without_model(tmp_path):
    path = tmp_path / "notes.keras"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("readme.txt", "not a model")
    return path


def _bad_weights(tmp_path):
    path = save_model(build_model("cnn2", ndim=2, filters=2), tmp_path / "weights.keras", {})
    rewritten = tmp_path / "bad_weights.keras"
    with zipfile.ZipFile(path) as source, zipfile.ZipFile(rewritten, "w") as target:
        for item in source.namelist():
            data = b"garbage" if item == "model.weights.h5" else source.read(item)
            target.writestr(item, data)
    return rewritten


@pytest.mark.parametrize(
    "make, problem",
    [
        (lambda tmp: tmp / "missing.keras", "no such model file"),
        (_truncated_keras, "truncated"),
        (lambda tmp: (tmp / "text.keras").write_text("hello") and tmp / "text.keras", "not a .keras archive"),
        (_zip_without_model, "not a Keras model file"),
        (_bad_weights, "Keras could not load it"),
        (lambda tmp: (tmp / "a.npy").write_bytes(b"\x93NUMPY") and tmp / "a.npy", "unsupported model file type"),
    ],
)
@pytest.mark.bad_input
def test_unusable_model_files_raise_model_file_error(tmp_path, make, problem):
    path = make(tmp_path)
    with pytest.raises(ModelFileError) as caught:
        load_model(path)
    assert str(caught.value).startswith(str(path)) and problem in str(caught.value)


def test_embedded_config_is_a_plain_zip_entry(tmp_path):
    path = save_model(build_model("cnn2", ndim=2, filters=2), tmp_path / "m.keras", {"seed": 1})
    with zipfile.ZipFile(path) as archive:
        assert json.loads(archive.read("ctden_config.json")) == {"seed": 1}
