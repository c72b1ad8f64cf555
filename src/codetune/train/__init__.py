"""QLoRA training (and the optional GRPO stage).

Public API (heavy imports happen inside the functions, so importing ``codetune.train`` —
as the Lambdas do for ``codetune.train.hyperparameters`` — stays light):

- :func:`load_train_config` — a shipped config name or YAML path + overrides -> TrainConfig
- :func:`run_training` — fine-tune and write the adapter; returns the training summary
"""

from __future__ import annotations


def load_train_config(path_or_name=None, overrides=None):
    """See :func:`codetune.train.config.load_train_config`."""
    from codetune.train.config import load_train_config as _load

    return _load(path_or_name, overrides)


def run_training(config, data_dir, out_dir, base_model=None, checkpoints_dir=None, **kwargs):
    """See :func:`codetune.train.runner.run_training`."""
    from codetune.train.runner import run_training as _run

    return _run(config, data_dir, out_dir, base_model, checkpoints_dir, **kwargs)
