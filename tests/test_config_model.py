"""Unit level: the config's rules and the model factory's shapes and parameter counts."""

import json
import warnings

import keras
import numpy as np
import pytest

from digitnet.config import ConfigError, TrainConfig, load_recipe, recipe_names
from digitnet.model import TransposedGlorotUniform, build_model, layer_sizes, make_numpy_predict_fn, make_predict_fn


def test_write_up_network_has_101770_parameters():
    model = build_model(TrainConfig(hidden=(128,)))
    assert model.count_params() == 784 * 128 + 128 + 128 * 10 + 10 == 101_770
    assert [layer.name for layer in model.layers] == ["hidden_1", "output", "softmax"]
    assert model.input_shape == (None, 784) and model.output_shape == (None, 10)


def test_layers_take_their_own_width_and_activation():
    model = build_model(TrainConfig(hidden=(64, 32, 16), activation=("tanh", "sigmoid", "linear")))
    assert layer_sizes(model) == [
        ("input", 784, ""),
        ("hidden_1", 64, "tanh"),
        ("hidden_2", 32, "sigmoid"),
        ("hidden_3", 16, "linear"),
        ("output", 10, "softmax"),
    ]
    assert model.count_params() == 784 * 64 + 64 + 64 * 32 + 32 + 32 * 16 + 16 + 16 * 10 + 10


def test_one_activation_applies_to_every_layer():
    assert TrainConfig(hidden=(8, 8, 8), activation="tanh").activations == ("tanh",) * 3


def test_predictions_are_probabilities():
    probs = make_predict_fn(build_model(TrainConfig(hidden=(16,))))(np.random.default_rng(0).random((5, 784)))
    assert probs.shape == (5, 10)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)


@pytest.mark.parametrize(
    "hidden, activation, dropout",
    [
        ((16,), "relu", 0.0),
        ((32, 16, 8), ("tanh", "sigmoid", "linear"), 0.25),
    ],
)
def test_numpy_forward_pass_gives_keras_probabilities(hidden, activation, dropout):
    model = build_model(TrainConfig(hidden=hidden, activation=activation, dropout=dropout))
    x = np.random.default_rng(2).random((6, 784)).astype(np.float32)
    numpy_predict = make_numpy_predict_fn(model)
    assert numpy_predict is not None
    np.testing.assert_allclose(numpy_predict(x), model.predict(x, verbose=0), atol=1e-6)
    np.testing.assert_allclose(numpy_predict(x[:1]), model.predict(x[:1], verbose=0), atol=1e-6)


def test_numpy_sigmoid_stays_finite_and_quiet_on_large_inputs():
    model = build_model(TrainConfig(hidden=(8,), activation="sigmoid"))
    hidden = model.get_layer("hidden_1")
    hidden.kernel.assign(np.full(hidden.kernel.shape, -1000.0, np.float32))  # pre-activations near -400,000
    x = np.random.default_rng(3).random((4, 784)).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an overflow in exp would warn
        probs = make_numpy_predict_fn(model)(x)
    np.testing.assert_allclose(probs, model.predict(x, verbose=0), atol=1e-6)


@pytest.mark.parametrize("extra", [keras.layers.BatchNormalization(), keras.layers.Dense(10, activation="gelu")])
def test_numpy_forward_pass_declines_layers_it_does_not_know(extra):
    model = keras.Sequential([keras.Input((784,)), keras.layers.Dense(10), extra, keras.layers.Softmax()])
    assert make_numpy_predict_fn(model) is None


def test_saved_model_loads_with_plain_keras(tmp_path):
    model = build_model(TrainConfig(hidden=(32, 16), activation=("relu", "tanh")))
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    x = np.random.default_rng(1).random((3, 784)).astype(np.float32)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-6)


@pytest.mark.parametrize("shape", [(256, 10), (784, 800), (3, 5), (10, 10)])
def test_transposed_glorot_draws_keras_own_numbers(shape):
    keras.utils.set_random_seed(7)
    ours = TransposedGlorotUniform()(shape)
    keras.utils.set_random_seed(7)
    theirs = keras.initializers.GlorotUniform()(shape)
    assert ours.shape == shape
    np.testing.assert_array_equal(ours, theirs)
    np.testing.assert_array_equal(
        TransposedGlorotUniform(seed=3)(shape), keras.initializers.GlorotUniform(seed=3)(shape)
    )


def test_network_starts_from_the_weights_plain_keras_draws_and_saves_keras_initializer():
    model = build_model(TrainConfig(hidden=(32, 16), seed=5))
    keras.utils.set_random_seed(5)
    plain = keras.Sequential(
        [
            keras.Input(shape=(784,)),
            keras.layers.Dense(32, activation="relu"),
            keras.layers.Dense(16, activation="relu"),
            keras.layers.Dense(10),
            keras.layers.Softmax(),
        ]
    )
    for ours, theirs in zip(model.weights, plain.weights, strict=True):
        np.testing.assert_array_equal(ours.numpy(), theirs.numpy())
    initializer = model.get_layer("output").get_config()["kernel_initializer"]
    assert (initializer["module"], initializer["class_name"]) == ("keras.initializers", "GlorotUniform")


@pytest.mark.parametrize(
    "field, value, words",
    [
        ("hidden", (-5,), "hidden: got [-5]"),
        ("hidden", (0,), "hidden: got [0]"),
        ("activation", ("swishy",), "allowed: linear, relu, tanh, sigmoid"),
        ("activation", ("relu", "tanh"), "one for all layers or one per layer"),
        ("batch_size", 0, "batch_size: got 0; allowed: a whole number >= 1, or 'full'"),
        ("batch_size", "all", "batch_size: got 'all'"),
        ("optimizer", "rmsprop", "allowed: sgd, momentum, adam"),
        ("learning_rate", -1.0, "learning_rate: got -1.0"),
        ("epochs", 0, "epochs: got 0"),
        ("dropout", 1.0, "dropout: got 1.0"),
        ("learning_rate", float("nan"), "learning_rate: got nan; allowed: a finite number > 0"),
        ("learning_rate", float("inf"), "learning_rate: got inf"),
        ("momentum", float("nan"), "momentum: got nan"),
        ("weight_decay", float("nan"), "weight_decay: got nan"),
        ("elastic_alpha", float("nan"), "elastic_alpha: got nan"),
        ("train_size", 100000, "the training split holds 55000 images"),
        ("activation", ("relu", "tanh", "relu"), "got 3 values for 1 hidden layer;"),
        ("seed", -1, "seed: got -1; allowed: a whole number from 0 to 4294967295"),
        ("seed", 2**32, "seed: got 4294967296; allowed: a whole number from 0 to 4294967295"),
        ("seed", True, "seed: got True"),
        ("dataset", "cifar10", "dataset: got 'cifar10'; allowed: mnist, fashion-mnist"),
        ("val_size", True, "val_size: got True"),
        ("train_size", True, "train_size: got True"),
        ("learning_rate", 10**400, "allowed: a finite number > 0"),
        ("max_rotation", 10**400, "allowed: a number >= 0"),
    ],
)
def test_bad_values_name_the_field_and_what_is_allowed(field, value, words):
    with pytest.raises(ConfigError, match=None) as info:
        TrainConfig(**{field: value})
    assert words in str(info.value) and "\n" not in str(info.value)


def test_the_largest_seed_builds_a_network_with_dropout():
    # Each dropout layer's seed is the config's plus the layer's number, kept within Keras' 32 bits.
    model = build_model(TrainConfig(hidden=(8, 8), dropout=0.5, seed=2**32 - 1))
    out = model(np.ones((2, 784), np.float32), training=True)
    assert out.shape == (2, 10) and np.all(np.isfinite(np.asarray(out)))


def test_batch_size_resolves_the_three_descents():
    assert TrainConfig(batch_size="full").resolve_batch_size(55_000) == 55_000  # batch descent
    assert TrainConfig(batch_size=1).resolve_batch_size(55_000) == 1  # stochastic
    assert TrainConfig(batch_size=128).resolve_batch_size(55_000) == 128  # mini-batch
    assert TrainConfig(batch_size=128).resolve_batch_size(100) == 100


def test_config_round_trips_through_json(tmp_path):
    config = TrainConfig(hidden=(256, 64), activation=("relu", "tanh"), batch_size="full", seed=3)
    config.save(tmp_path / "config.json")
    assert TrainConfig.load(tmp_path / "config.json") == config


def test_a_config_saved_before_there_were_two_data_sets_is_mnist(tmp_path):
    saved = TrainConfig(hidden=(64,)).to_dict()
    del saved["dataset"]
    (tmp_path / "config.json").write_text(json.dumps(saved))
    assert TrainConfig.load(tmp_path / "config.json").dataset == "mnist"
    assert TrainConfig(dataset="fashion-mnist").to_dict()["dataset"] == "fashion-mnist"


def test_unknown_config_field_is_an_error():
    with pytest.raises(ConfigError, match="unknown config field"):
        TrainConfig.from_dict({"hiden": [3]})


def test_every_recipe_loads():
    assert "default" in recipe_names()
    for name in recipe_names():
        assert isinstance(load_recipe(name), TrainConfig)
    with pytest.raises(ConfigError, match="recipe: got 'nope'"):
        load_recipe("nope")
