"""Behaviour on small slices of MNIST: every descent, activation and optimizer learns; runs repeat and resume."""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path

import numpy as np
import pytest

import digitnet.internals
from digitnet import train
from digitnet.config import TrainConfig, load_recipe, recipe_names
from digitnet.data import split_validation
from digitnet.errors import DigitnetError
from digitnet.files import WriteError
from digitnet.model import build_model, logits_model
from digitnet.run import RunDir
from digitnet.steps import eval_step, train_epoch, train_step
from digitnet.train import (
    Callback,
    Trainer,
    TrainingDiverged,
    TrainingStopped,
    start_trainer,
    train_and_evaluate,
)

SMALL = dict(train_size=1000, val_size=500, hidden=(32,))


def loss_before_and_after(mnist, config: TrainConfig, epochs: int = 2) -> tuple[float, float]:
    splits = split_validation(mnist, config.val_size, config.seed, config.train_size)
    trainer = Trainer(config, splits)
    before, _ = trainer.evaluate(splits.x_train, splits.y_train)
    for epoch in range(1, epochs + 1):
        trainer.run_epoch(epoch)
    after, _ = trainer.evaluate(splits.x_train, splits.y_train)
    return before, after


@pytest.mark.parametrize(
    "batch_size, learning_rate", [(1, 0.01), (32, 0.1), ("full", 0.5)], ids=["stochastic", "mini-batch", "batch"]
)
def test_each_descent_lowers_the_loss(mnist, batch_size, learning_rate):
    config = TrainConfig(**SMALL, batch_size=batch_size, optimizer="sgd", learning_rate=learning_rate)
    before, after = loss_before_and_after(mnist, config, epochs=3)
    assert after < 0.8 * before


@pytest.mark.parametrize("activation", ["linear", "relu", "tanh", "sigmoid"])
def test_each_activation_lowers_the_loss(mnist, activation):
    before, after = loss_before_and_after(mnist, TrainConfig(**SMALL, activation=activation, batch_size=32))
    assert after < 0.7 * before


@pytest.mark.parametrize(
    "optimizer, learning_rate, schedule",
    [("sgd", 0.1, "constant"), ("momentum", 0.05, "cosine"), ("adam", 1e-3, "cosine")],
)
def test_each_optimizer_lowers_the_loss(mnist, optimizer, learning_rate, schedule):
    config = TrainConfig(**SMALL, optimizer=optimizer, learning_rate=learning_rate, schedule=schedule, batch_size=32)
    before, after = loss_before_and_after(mnist, config)
    assert after < 0.7 * before


def use_internals(monkeypatch, internals: str) -> None:
    """Keras' internals as they are, as if a Keras version lacked one, or switched off (public API only)."""
    if internals == "missing":
        monkeypatch.setattr(digitnet.internals, "KERAS_VARIABLE_INTERNALS", ("_initializer", "_no_such_attribute"))
    elif internals == "switched off":
        monkeypatch.setenv("DIGITNET_PUBLIC_API_ONLY", "1")


@pytest.mark.parametrize("internals", ["as they are", "missing", "switched off"])
def test_trainer_starts_from_the_weights_keras_draws(mnist, monkeypatch, internals):
    # The Trainer builds its network with the initializers deferred, compiles meanwhile, then runs them all
    # as one program (or, where Keras' internals differ or are off, leaves them to Keras): Keras' own numbers.
    use_internals(monkeypatch, internals)
    config = TrainConfig(train_size=500, val_size=200, hidden=(32, 16), dropout=0.2, seed=3)
    trainer = Trainer(config, split_validation(mnist, config.val_size, config.seed, config.train_size))
    model = build_model(config)
    optimizer = train.make_optimizer(config, trainer.steps)
    train.compile_model(model, optimizer)
    for ours, theirs in (
        (trainer.state.trainable, model.trainable_variables),
        (trainer.state.non_trainable, model.non_trainable_variables),
        (trainer.state.optimizer, optimizer.variables),
    ):
        assert len(ours) == len(theirs)
        for a, b in zip(ours, theirs):
            assert a.dtype == b.dtype
            np.testing.assert_array_equal(np.asarray(a), b.numpy())


def test_steps_per_epoch_cover_every_sample(mnist):
    splits = split_validation(mnist, 500, seed=0, train_size=1000)
    assert Trainer(TrainConfig(hidden=(8,), batch_size=128), splits).steps == 8  # the last holds 104 real samples
    full = Trainer(TrainConfig(hidden=(8,), batch_size="full"), splits)
    assert (full.steps, full.batch_size) == (1, 1000)


def test_same_seed_same_numbers_other_seed_other_numbers(mnist, tmp_path):
    config = TrainConfig(**SMALL, epochs=2, dropout=0.2)
    a = train_and_evaluate(config, tmp_path / "a", data=mnist, log=lambda _: None)
    b = train_and_evaluate(config, tmp_path / "b", data=mnist, log=lambda _: None)
    c = train_and_evaluate(config.replace(seed=1), tmp_path / "c", data=mnist, log=lambda _: None)
    assert RunDir(tmp_path / "a").read_history()[-1]["loss"] == RunDir(tmp_path / "b").read_history()[-1]["loss"]
    assert a["test_accuracy"] == b["test_accuracy"] and a["test_loss"] == b["test_loss"]
    assert c["test_loss"] != a["test_loss"]


def test_resume_after_interrupt_matches_a_straight_run(mnist, tmp_path):
    config = TrainConfig(**SMALL, epochs=3, optimizer="momentum", learning_rate=0.05, schedule="cosine", dropout=0.1)
    straight = train_and_evaluate(config, tmp_path / "straight", data=mnist, log=lambda _: None)

    def interrupt_after_epoch_2(line: str) -> None:
        if line.startswith("epoch   2/"):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_and_evaluate(config, tmp_path / "cut", data=mnist, log=interrupt_after_epoch_2)
    assert [row["epoch"] for row in RunDir(tmp_path / "cut").read_history()] == [1, 2]
    assert (tmp_path / "cut/model.keras").is_file()  # the last finished epoch is usable at once
    resumed = train_and_evaluate(config, tmp_path / "cut", data=mnist, resume=True, log=lambda _: None)
    assert resumed["test_loss"] == straight["test_loss"]
    assert (
        RunDir(tmp_path / "cut").read_history()[-1]["loss"] == RunDir(tmp_path / "straight").read_history()[-1]["loss"]
    )


def test_run_folder_holds_config_history_metrics_and_model(mnist, tmp_path):
    config = TrainConfig(**SMALL, epochs=2, batch_size=32)
    metrics = train_and_evaluate(config, tmp_path / "run", data=mnist, log=lambda _: None)
    assert {p.name for p in (tmp_path / "run").iterdir()} >= {
        "config.json",
        "history.csv",
        "metrics.json",
        "model.keras",
    }
    assert TrainConfig.load(tmp_path / "run/config.json") == config
    assert json.loads((tmp_path / "run/metrics.json").read_text())["test_accuracy"] == metrics["test_accuracy"]
    assert metrics["n_test"] == 10000 and metrics["params"] == 784 * 32 + 32 + 330
    assert 0.6 < metrics["test_accuracy"] <= 1  # 64 steps of a 784-32-10 network: well above chance (0.1)


def test_existing_run_folder_is_never_overwritten(mnist, tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "keep.txt").write_text("mine")
    with pytest.raises(Exception, match="not empty; continue it with --resume"):
        train_and_evaluate(TrainConfig(**SMALL), tmp_path / "run", data=mnist)
    assert (tmp_path / "run" / "keep.txt").read_text() == "mine"


def test_divergence_stops_with_a_clear_message_and_keeps_good_weights(mnist, tmp_path):
    import keras

    config = TrainConfig(**SMALL, epochs=4, activation="linear", optimizer="sgd", learning_rate=50.0, batch_size=10)
    with pytest.raises(TrainingDiverged, match="loss became nan") as info:
        train_and_evaluate(config, tmp_path / "run", data=mnist, log=lambda _: None)
    assert "lower --learning-rate" in str(info.value)
    model = keras.saving.load_model(tmp_path / "run/model.keras")
    assert all(np.isfinite(w).all() for w in model.get_weights())


@pytest.mark.parametrize("dataset", ["mnist", "fashion-mnist"])
@pytest.mark.parametrize("name", recipe_names())
def test_each_recipe_runs_one_short_epoch_on_each_data_set(request, tmp_path, name, dataset):
    data = request.getfixturevalue("mnist" if dataset == "mnist" else "fashion")
    config = load_recipe(name).replace(epochs=1, train_size=2048, val_size=500, dataset=dataset)
    metrics = train_and_evaluate(config, tmp_path / name, data=data, log=lambda _: None)
    assert metrics["epochs"] == 1 and metrics["params"] == build_model(config).count_params()
    assert 0.2 < metrics["test_accuracy"] <= 1
    assert RunDir(tmp_path / name).read_config().dataset == dataset


def test_interrupt_in_the_first_epoch_saves_no_model_and_the_same_command_starts_over(mnist, tmp_path, monkeypatch):
    config = TrainConfig(**SMALL, epochs=1)
    lines = []

    def interrupted(self, epoch):
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(Trainer, "run_epoch", interrupted)
        with pytest.raises(KeyboardInterrupt):
            train_and_evaluate(config, tmp_path / "run", data=mnist, log=lines.append)
    assert "interrupted in epoch 1, before anything was saved" in lines[-1]
    assert [p.name for p in (tmp_path / "run").iterdir() if p.name != ".lock"] == [
        "config.json"
    ]  # no untrained model.keras
    metrics = train_and_evaluate(config, tmp_path / "run", data=mnist, log=lambda _: None)  # the same folder again
    assert metrics["epochs"] == 1 and (tmp_path / "run/model.keras").is_file()


def test_a_file_as_run_folder_is_a_one_line_error(mnist, tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(DigitnetError, match=r"notes.txt: is a file, not a folder; choose another --out"):
        train_and_evaluate(TrainConfig(**SMALL), tmp_path / "notes.txt", data=mnist)
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_a_network_too_big_for_memory_is_a_one_line_error(mnist, monkeypatch):
    import jax

    def exhausted(self, config, splits, progress=None):
        raise jax.errors.JaxRuntimeError("RESOURCE_EXHAUSTED: Out of memory allocating 627200000000 bytes.")

    monkeypatch.setattr(Trainer, "__init__", exhausted)
    splits = split_validation(mnist, 500, 0, 1000)
    with pytest.raises(DigitnetError, match=r"not enough memory for a network with hidden layers \[200000000\]"):
        start_trainer(TrainConfig(**{**SMALL, "hidden": (200000000,)}), splits)


@pytest.mark.parametrize("internals", ["as they are", "missing", "switched off"])
def test_weights_that_failed_to_draw_are_not_left_for_the_next_network(monkeypatch, internals):
    import keras
    from keras.src.backend.common import global_state

    use_internals(monkeypatch, internals)

    def too_big(shape, dtype=None):
        raise MemoryError("no room")

    with pytest.raises(MemoryError):
        with digitnet.internals.initial_weights_drawn_together():
            keras.Variable(initializer=too_big, shape=(3,), dtype="float32")
    assert not global_state.get_global_attribute("uninitialized_variables")
    keras.Variable(initializer="zeros", shape=(2,), dtype="float32")  # the next variable is made as usual


def test_resuming_a_finished_run_says_so(mnist, tmp_path):
    config = TrainConfig(**SMALL, epochs=1)
    first = train_and_evaluate(config, tmp_path / "run", data=mnist, log=lambda _: None)
    lines = []
    again = train_and_evaluate(config, tmp_path / "run", data=mnist, resume=True, log=lines.append)
    assert any("all 1 epoch was done before; evaluating it again" in line for line in lines)
    assert again["test_accuracy"] == first["test_accuracy"]


# The steps alone ------------------------------------------------------------------------------------


def one_batch(n: int = 24, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.random((n, 784), dtype=np.float32), rng.integers(0, 10, n).astype(np.int32)


def small_network(config: TrainConfig):

    model = build_model(config)
    optimizer = train.make_optimizer(config, steps_per_epoch=1)
    train.compile_model(model, optimizer)
    return model, logits_model(model), optimizer


def test_train_step_is_one_step_of_keras_own_sgd():
    import jax
    import keras

    config = TrainConfig(hidden=(12,), activation="tanh", optimizer="sgd", learning_rate=0.1, schedule="constant")
    model, network, optimizer = small_network(config)
    x, y = one_batch()
    state = train.initial_state(model, optimizer).tree()
    batch = (x, y, np.ones(len(y), np.float32), jax.random.key(0))
    (trainable, _, _), (loss_sum, correct) = jax.jit(train_step, static_argnums=(0, 1, 2))(
        network, optimizer, config, state, batch
    )
    probabilities = model.predict(x, verbose=0)
    assert float(loss_sum) == pytest.approx(-np.log(probabilities[np.arange(len(y)), y]).sum(), rel=1e-5)
    assert float(correct) == np.sum(probabilities.argmax(axis=1) == y)
    model.train_on_batch(x, y)  # plain Keras: the same loss, the same SGD step
    for ours, theirs in zip(trainable, model.trainable_variables):
        np.testing.assert_allclose(np.asarray(ours), keras.ops.convert_to_numpy(theirs), rtol=1e-5, atol=1e-6)


def test_train_step_ignores_samples_of_weight_zero():
    import jax

    config = TrainConfig(hidden=(12,), optimizer="adam", learning_rate=0.01)
    model, network, optimizer = small_network(config)
    x, y = one_batch(24)
    state = train.initial_state(model, optimizer).tree()
    step = jax.jit(train_step, static_argnums=(0, 1, 2))
    weights = (np.arange(24) < 16).astype(np.float32)  # the last 8 are padding, as in an epoch's last batch
    padded, (padded_loss, _) = step(network, optimizer, config, state, (x, y, weights, jax.random.key(0)))
    alone, (alone_loss, _) = step(
        network, optimizer, config, state, (x[:16], y[:16], np.ones(16, np.float32), jax.random.key(0))
    )
    assert float(padded_loss) == pytest.approx(float(alone_loss), rel=1e-6)
    for a, b in zip(padded[0], alone[0]):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-7)


def test_eval_step_sums_the_loss_and_counts_the_right_answers():
    import jax

    config = TrainConfig(hidden=(12,))
    model, network, optimizer = small_network(config)
    x, y = one_batch(30, seed=1)
    pixels = np.round(x * 255).astype(np.uint8)
    state = train.initial_state(model, optimizer)
    weights = (np.arange(30) < 25).astype(np.float32)
    loss_sum, correct = jax.jit(eval_step, static_argnums=0)(
        network, state.trainable, state.non_trainable, pixels, y, weights
    )
    probabilities = model.predict(pixels[:25] / np.float32(255), verbose=0)
    assert float(loss_sum) == pytest.approx(-np.log(probabilities[np.arange(25), y[:25]]).sum(), rel=1e-5)
    assert float(correct) == np.sum(probabilities.argmax(axis=1) == y[:25])


def test_train_epoch_sees_every_sample_once_and_reports_its_mean_loss(mnist):
    import jax

    config = TrainConfig(hidden=(8,), optimizer="sgd", learning_rate=1e-9, schedule="constant")  # barely moves
    model, network, optimizer = small_network(config)
    images = mnist.train_images[:100].reshape(100, 784)
    labels = mnist.train_labels[:100].astype(np.int32)
    state = train.initial_state(model, optimizer)
    epoch = jax.jit(partial(train_epoch, network, optimizer, config, 32))  # 4 steps, the last with 4 samples
    _, loss, accuracy = epoch(state.tree(), images, labels, *train.epoch_numbers(0, 1))
    probabilities = model.predict(images / np.float32(255), verbose=0)
    assert float(loss) == pytest.approx(-np.log(probabilities[np.arange(100), labels]).mean(), rel=1e-4)
    assert float(accuracy) == pytest.approx(np.mean(probabilities.argmax(axis=1) == labels))


def test_the_switch_for_private_internals_gives_the_same_run(mnist, tmp_path, monkeypatch):
    config = TrainConfig(**SMALL, epochs=2, dropout=0.1)
    with_internals = train_and_evaluate(config, tmp_path / "with", data=mnist, log=lambda _: None)
    monkeypatch.setenv("DIGITNET_PUBLIC_API_ONLY", "1")
    without = train_and_evaluate(config, tmp_path / "without", data=mnist, log=lambda _: None)
    assert without["test_loss"] == with_internals["test_loss"]
    assert (
        RunDir(tmp_path / "with").read_history()[-1]["loss"] == RunDir(tmp_path / "without").read_history()[-1]["loss"]
    )


class Recording(Callback):
    """Notes what a run tells its callbacks; asks it to stop after epoch `stop_after`, if given."""

    def __init__(self, progress_every: int = 0, stop_after: int | None = None) -> None:
        self.progress_every, self.stop_after = progress_every, stop_after
        self.events: list[tuple] = []

    def on_train_begin(self, run, config, steps, first_epoch):
        self.events.append(("begin", steps, first_epoch))

    def on_progress(self, steps_done):
        self.events.append(("progress", steps_done))

    def on_epoch_end(self, row):
        self.events.append(("epoch", row["epoch"]))
        self.stop_training = row["epoch"] == self.stop_after

    def on_train_end(self, metrics):
        self.events.append(("end", metrics["epochs"]))


def test_callbacks_hear_of_each_epoch_and_of_the_steps_inside_it(mnist, tmp_path):
    config = TrainConfig(**SMALL, epochs=2, batch_size=100)  # 10 steps an epoch
    heard = Recording(progress_every=4)
    listened = train_and_evaluate(config, tmp_path / "a", data=mnist, log=lambda _: None, callbacks=[heard])
    assert heard.events == [
        ("begin", 10, 1),
        ("progress", 4),
        ("progress", 8),
        ("epoch", 1),
        ("progress", 4),
        ("progress", 8),
        ("epoch", 2),
        ("end", 2),
    ]
    plain = train_and_evaluate(config, tmp_path / "b", data=mnist, log=lambda _: None)
    assert listened["test_loss"] == plain["test_loss"]  # listening to the steps changes no number


def test_a_callback_stops_a_run_that_then_resumes_to_the_straight_result(mnist, tmp_path):
    config = TrainConfig(**SMALL, epochs=3)
    straight = train_and_evaluate(config, tmp_path / "straight", data=mnist, log=lambda _: None)
    with pytest.raises(TrainingStopped, match=r"stopped after epoch 1; epochs 1-1 are saved; continue with"):
        train_and_evaluate(
            config, tmp_path / "cut", data=mnist, log=lambda _: None, callbacks=[Recording(stop_after=1)]
        )
    assert (tmp_path / "cut/model.keras").is_file() and RunDir(tmp_path / "cut").holder() is None
    heard = Recording()
    resumed = train_and_evaluate(
        config, tmp_path / "cut", data=mnist, resume=True, log=lambda _: None, callbacks=[heard]
    )
    assert heard.events[0] == ("begin", 8, 2) and resumed["test_loss"] == straight["test_loss"]


def test_a_full_disk_mid_run_is_one_line_and_the_run_resumes_once_there_is_room(mnist, tmp_path, monkeypatch):
    config = TrainConfig(**SMALL, epochs=3)
    straight = train_and_evaluate(config, tmp_path / "straight", data=mnist, log=lambda _: None)
    real_savez, calls = np.savez, []

    def savez_on_a_full_disk(file, *args, **kwargs):
        calls.append(file)
        if len(calls) == 2:  # the checkpoint of epoch 2: half written, then the disk is full
            Path(file).write_bytes(b"PK\x03\x04 half")
            raise OSError(28, "No space left on device")
        return real_savez(file, *args, **kwargs)

    monkeypatch.setattr(np, "savez", savez_on_a_full_disk)
    with pytest.raises(WriteError) as info:
        train_and_evaluate(config, tmp_path / "full", data=mnist, log=lambda _: None)
    message = str(info.value)
    assert message.startswith(f"cannot write {tmp_path / 'full' / 'checkpoint.npz'}: No space left on device; ")
    assert "epochs 1-1 are saved; continue with: digitnet train --resume" in message and "\n" not in message
    assert not list((tmp_path / "full").glob(".*part*")), "a partial file was left behind"
    monkeypatch.undo()
    resumed = train_and_evaluate(config, tmp_path / "full", data=mnist, resume=True, log=lambda _: None)
    assert resumed["test_loss"] == straight["test_loss"]


def test_a_damaged_checkpoint_resumes_from_the_one_before(mnist, tmp_path):
    config = TrainConfig(**SMALL, epochs=3)
    straight = train_and_evaluate(config, tmp_path / "straight", data=mnist, log=lambda _: None)
    with pytest.raises(TrainingStopped):
        train_and_evaluate(
            config, tmp_path / "cut", data=mnist, log=lambda _: None, callbacks=[Recording(stop_after=2)]
        )
    checkpoint = tmp_path / "cut" / "checkpoint.npz"
    checkpoint.write_bytes(checkpoint.read_bytes()[:1000])  # truncated
    lines = []
    resumed = train_and_evaluate(config, tmp_path / "cut", data=mnist, resume=True, log=lines.append)
    assert (
        "checkpoint.npz is damaged (File is not a zip file); resuming from checkpoint.prev.npz, after epoch 1" in lines
    )
    assert resumed["test_loss"] == straight["test_loss"]
