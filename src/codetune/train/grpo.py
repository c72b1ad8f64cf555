"""Optional GRPO stage after SFT: reinforcement with verifiable rewards.

The SFT trainer calls :func:`run_grpo` on its PEFT model when ``rl.enabled``; the adapter it
then saves is the SFT+GRPO adapter, so the rest of the pipeline does not change. It should
also call :func:`check_rl_inputs` at start-up, so that a run that cannot do its RL stage
fails before hours of SFT rather than after.

How it trains (TRL ``GRPOTrainer``, TRL 1.16):

- **Prompts**: the user turns of the ``bugfix`` records of the TRAINING split only (records
  whose ``meta.split`` says otherwise are refused; HumanEval and the test split never reach
  this module). The correct function, ``extract_code(messages[-1]["content"])``, goes along
  as the ``reference`` column that the rewards of :mod:`codetune.train.rewards` read.
- **Model**: the SFT ``PeftModel`` itself, with its 4-bit base (the same QLoRA setup). TRL
  accepts an existing ``PeftModel`` and, with ``beta > 0``, copies the ``default`` adapter
  into a frozen ``ref`` adapter: the KL term is measured against the SFT policy, not against
  the base model. The ``ref`` adapter is deleted afterwards, so the caller saves exactly the
  adapter it passed in, now trained further.
- **One optimizer step** = ``rl.prompts_per_step`` prompts x ``rl.generations`` sampled
  completions, rewarded, turned into group-relative advantages; ``rl.steps`` such steps.
- **Dtypes**: for quantized models TRL casts trainable LoRA weights to bf16; we put them back
  to the dtype SFT trained them in (fp32 on CPU, where bf16 matmuls are slow and lossy).
- **Metrics**: every step goes through ``log_fn(step, values)`` with ``reward``,
  ``reward_<name>`` (mean of each reward function), ``kl``, ``completion_length``, ``loss``,
  ``learning_rate`` and ``grad_norm``: the caller prints them with
  :func:`codetune.metrics.format_metrics`, so SageMaker's metric definitions pick them up.
  Steps count from 1 within the GRPO stage; a caller that wants one axis adds its SFT steps.

Run it through the trainer: ``codetune train --data DIR --out DIR --set rl.enabled=true``.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from codetune.errors import CodetuneError, ConfigError
from codetune.io import write_json_atomic
from codetune.prompts import extract_code
from codetune.train import rewards
from codetune.train.rl_config import RLConfig

log = logging.getLogger(__name__)

# TRL log key -> codetune metric name.
_METRIC_KEYS = {
    "reward": "reward",
    "kl": "kl",
    "completions/mean_length": "completion_length",
    "loss": "loss",
    "learning_rate": "learning_rate",
    "grad_norm": "grad_norm",
}


def rl_prompts(train_records: list[dict]) -> list[dict]:
    """GRPO dataset rows ``{"prompt": [user turn(s)], "reference": correct function,
    "language": its language}``.

    Only ``bugfix`` records are used. Raises :class:`CodetuneError` for a record from another
    split (validation, test) or a bugfix record without an assistant turn.
    """
    rows = []
    for rec in train_records:
        if rec.get("task") != "bugfix":
            continue
        split = (rec.get("meta") or {}).get("split", "train")
        if split != "train":
            raise CodetuneError(
                f"record {rec.get('id')} is from the {split!r} split; the GRPO stage uses the "
                "training split only (pass the records of train.jsonl)"
            )
        msgs = rec.get("messages") or []
        if len(msgs) < 2 or msgs[-1].get("role") != "assistant":
            raise CodetuneError(
                f"bugfix record {rec.get('id')} has no assistant turn; GRPO needs the correct "
                "function as its reward reference (re-run `codetune prepare`)"
            )
        rows.append(
            {
                "prompt": list(msgs[:-1]),
                "reference": extract_code(msgs[-1]["content"]),
                # the rewards parse the answer in its language (TRL passes this column)
                "language": (rec.get("meta") or {}).get("language") or "python",
            }
        )
    return rows


def check_rl_inputs(train_records: list[dict], rl_config: RLConfig) -> list[dict]:
    """Start-up validation of the RL stage; returns the GRPO rows (see :func:`rl_prompts`).

    Raises :class:`ConfigError` for out-of-range settings, unknown reward weights, or
    ``rl.enabled`` with no bugfix example in the training split.
    """
    rl_config.validate()
    rows = rl_prompts(train_records)
    if not rows:
        raise ConfigError(
            "rl.enabled is true but the training split has no bugfix examples; GRPO rewards "
            "need bugfix prompts (prepare the dataset with the bugfix task, or set rl.enabled=false)"
        )
    return rows


def _trl_metrics(logs: dict, reward_names: list[str]) -> dict[str, float]:
    out = {ours: logs[theirs] for theirs, ours in _METRIC_KEYS.items() if theirs in logs}
    for name in reward_names:
        key = f"rewards/{name}/mean"
        if key in logs:
            out[f"reward_{name}"] = logs[key]
    return {k: float(v) for k, v in out.items() if v is not None and not math.isnan(float(v))}


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def run_grpo(
    model,
    tokenizer,
    train_records: list[dict],
    rl_config: RLConfig,
    out_dir,
    log_fn: Callable[[int, dict], None],
) -> dict:
    """Train the SFT adapter of ``model`` (a ``PeftModel``) further with GRPO, in place.

    The returned summary is also written to ``out_dir/rl_summary.json`` (the SFT trainer
    passes its adapter staging directory, so it is published with the adapter); TRL's own
    scratch output goes to a temporary directory that is removed. Returns a JSON-ready
    summary: ``steps``, ``prompts``,
    ``wall_seconds``, ``reward_weights``, ``first`` / ``last`` (the metrics of the first and
    last step), ``mean`` (each metric's mean over all steps) and ``history`` (one dict per step).
    Raises :class:`ConfigError` / :class:`CodetuneError` for bad settings or data (see
    :func:`check_rl_inputs`) and when ``model`` carries no LoRA adapter.
    """
    rows = check_rl_inputs(train_records, rl_config)

    from peft import PeftModel

    if not isinstance(model, PeftModel):
        raise CodetuneError(
            "run_grpo needs the PEFT model after SFT (a peft.PeftModel with the LoRA adapter)"
        )
    names, funcs, weights = _weighted_rewards(rl_config)
    prompts_per_step = _prompts_per_step(len(rows), rl_config)
    history: list[dict] = []

    scratch = tempfile.mkdtemp(prefix="codetune-grpo-")
    try:
        args = _grpo_args(rl_config, scratch, prompts_per_step, weights)
        start = time.perf_counter()
        _train(model, tokenizer, rows, funcs, args, _step_logger(history, names, log_fn))
        wall = time.perf_counter() - start
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    summary = _summary(rl_config, rows, prompts_per_step, names, weights, wall, history)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "rl_summary.json", summary)
    return summary


def _weighted_rewards(rl_config: RLConfig) -> tuple[list[str], list[Callable], list[float]]:
    """The rewards to compute, their functions and weights (weight 0 or left out of
    rl.reward_weights: not computed at all)."""
    names = [n for n in rewards.REWARDS if rl_config.reward_weights.get(n, 0.0) != 0.0]
    funcs = [rewards.REWARDS[n] for n in names]
    weights = [float(rl_config.reward_weights[n]) for n in names]
    return names, funcs, weights


def _prompts_per_step(n_prompts: int, rl_config: RLConfig) -> int:
    """rl.prompts_per_step, lowered when the split has too few prompts for every process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    prompts_per_step = rl_config.prompts_per_step
    if n_prompts < prompts_per_step * world:
        # TRL's sampler drops incomplete prompt groups: too few prompts would train nothing.
        prompts_per_step = max(1, n_prompts // world)
        log.warning(
            "only %d bugfix prompts in the training split: using %d prompts per step instead "
            "of rl.prompts_per_step=%d",
            n_prompts,
            prompts_per_step,
            rl_config.prompts_per_step,
        )
    if n_prompts < world:
        raise ConfigError(
            f"rl.enabled with {n_prompts} bugfix prompts but {world} training processes; "
            "GRPO needs at least one prompt per process"
        )
    return prompts_per_step


def _grpo_args(rl_config: RLConfig, scratch: str, prompts_per_step: int, weights: list[float]):
    """TRL's GRPOConfig: one log line per step, no checkpoints, TRL's output in ``scratch``."""
    import torch
    from trl import GRPOConfig

    cuda = torch.cuda.is_available()
    return GRPOConfig(
        output_dir=scratch,
        use_cpu=not cuda,
        bf16=bool(cuda and torch.cuda.is_bf16_supported()),
        # Checkpointing pays for itself with long completions on a GPU; on the CPU (tiny
        # model, short completions) it only costs a second forward pass.
        gradient_checkpointing=cuda,
        max_steps=rl_config.steps,
        per_device_train_batch_size=prompts_per_step * rl_config.generations,
        gradient_accumulation_steps=1,
        num_generations=rl_config.generations,
        max_completion_length=rl_config.max_completion_length,
        temperature=rl_config.temperature,
        beta=rl_config.kl_coef,
        learning_rate=rl_config.learning_rate,
        reward_weights=weights,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        log_completions=False,
        dataloader_num_workers=0,
        seed=0,
    )


def _step_logger(history: list[dict], names: list[str], log_fn: Callable[[int, dict], None]):
    """A TrainerCallback that appends each step's metrics to ``history`` and hands them to
    ``log_fn`` (main process only)."""
    from transformers import TrainerCallback

    class _Log(TrainerCallback):
        def on_log(self, _args, state, _control, logs=None, **_):
            values = _trl_metrics(logs or {}, names)
            # The final "train_runtime" summary log carries no reward: not a step line.
            if "reward" not in values or not state.is_world_process_zero:
                return
            history.append({"step": state.global_step, **values})
            log_fn(state.global_step, values)

    return _Log()


def _train(model, tokenizer, rows: list[dict], funcs: list[Callable], args, callback) -> None:
    """GRPO on ``model``'s LoRA adapter in place; afterwards the model holds exactly that
    adapter again, in the training mode it had."""
    from datasets import Dataset
    from transformers import PrinterCallback
    from trl import GRPOTrainer

    trainable_dtypes = {n: p.dtype for n, p in model.named_parameters() if p.requires_grad}
    if not trainable_dtypes:
        raise CodetuneError("the model has no trainable (LoRA) parameters to train with GRPO")
    was_training = model.training
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=funcs,
        args=args,
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
        callbacks=[callback],
    )
    # With tqdm off, Trainer prints every log dict to stdout; our metric lines replace it.
    trainer.remove_callback(PrinterCallback)
    # Undo TRL's bf16 cast of quantized models' LoRA weights (before the optimizer exists).
    for n, p in trainer.model.named_parameters():
        if n in trainable_dtypes and p.dtype != trainable_dtypes[n]:
            p.data = p.data.to(trainable_dtypes[n])
    trainer.train()
    del trainer
    # Drop TRL's frozen reference copy so the caller saves exactly the trained adapter.
    if "ref" in model.peft_config:
        model.delete_adapter("ref")
    model.set_adapter("default")
    model.train(was_training)


def _summary(
    rl_config: RLConfig,
    rows: list[dict],
    prompts_per_step: int,
    names: list[str],
    weights: list[float],
    wall: float,
    history: list[dict],
) -> dict:
    keys = sorted({k for h in history for k in h if k != "step"})
    return {
        "steps": rl_config.steps,
        "prompts": len(rows),
        "prompts_per_step": prompts_per_step,
        "generations": rl_config.generations,
        "wall_seconds": round(wall, 3),
        "reward_weights": dict(zip(names, weights, strict=True)),
        "first": {k: v for k, v in history[0].items() if k != "step"} if history else {},
        "last": {k: v for k, v in history[-1].items() if k != "step"} if history else {},
        "mean": {k: _mean([h[k] for h in history if k in h]) for k in keys},
        "history": history,
    }
