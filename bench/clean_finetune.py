"""Does a run gain from more epochs on undistorted images? Fine-tune its final weights and watch validation.

Loads a finished run (its model.keras and config.json), keeps its validation split (same seed), and trains
the same network on the undistorted training split with a fresh optimizer of the run's kind, a cosine
schedule from --learning-rate over --epochs. Prints validation accuracy before and after each epoch; the
test set is not touched, so the answer can decide a recipe.

    python bench/clean_finetune.py runs/deep-s0 [--learning-rate 0.005] [--epochs 2] [--data-dir DIR]
"""

from __future__ import annotations

import argparse

import digitnet  # noqa: F401  (sets KERAS_BACKEND before keras is imported)

# isort: split

import jax.numpy as jnp

from digitnet.config import TrainConfig
from digitnet.data import load_mnist, split_validation
from digitnet.model import load_model
from digitnet.train import State, Trainer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", help="a finished run folder")
    parser.add_argument("--learning-rate", type=float, default=0.005)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument(
        "--data-dir", default=None, help="folder with the MNIST IDX files (default: DIGITNET_DATA or the cache)"
    )
    args = parser.parse_args()
    run = TrainConfig.load(f"{args.run}/config.json")
    config = run.replace(augment="none", learning_rate=args.learning_rate, epochs=args.epochs, schedule="cosine")
    splits = split_validation(load_mnist(args.data_dir), config.val_size, config.seed, config.train_size)
    trainer = Trainer(config, splits)
    trained = load_model(args.run, compile=False)
    trainer.state = State(
        [jnp.asarray(v.numpy()) for v in trained.trainable_variables],
        trainer.state.non_trainable,
        trainer.state.optimizer,
    )
    print(f"{args.run}: validation accuracy {100 * trainer.evaluate(splits.x_val, splits.y_val)[1]:.2f}% as trained")
    for epoch in range(1, args.epochs + 1):
        row = trainer.run_epoch(epoch)
        print(
            f"after {epoch} undistorted epoch(s) from learning rate {args.learning_rate}: "
            f"validation accuracy {100 * row['val_accuracy']:.2f}%, {row['seconds']:.1f} s"
        )


if __name__ == "__main__":
    main()
