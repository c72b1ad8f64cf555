"""``run_training``: QLoRA supervised fine-tuning with the transformers ``Trainer``.

Reads in a straight line: config -> inputs checked -> model -> data -> trainer -> train ->
save -> publish. Everything that can be wrong with the inputs is checked before the model is
loaded, and nothing is written to the output directory until the very end: the adapter is
assembled in a hidden staging directory inside ``out_dir`` and published file by file
(``os.replace``), ``adapter_config.json`` last, because in SageMaker ``/opt/ml/model`` is a
mount point that cannot be replaced as a whole.

Checkpoints go to ``checkpoints_dir`` every ``save_steps`` and when SIGTERM arrives (managed
spot gives a two-minute warning); a restarted run resumes from the newest *valid* checkpoint
(see :mod:`codetune.train.checkpoints`) and stops at exactly ``max_steps`` optimizer steps.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import resource
import shutil
import signal
import sys
import tempfile
import threading
import time
from dataclasses import asdict
from pathlib import Path

from codetune.errors import CodetuneError
from codetune.io import share_like_open
from codetune.metrics import format_metrics
from codetune.model import EMBEDDED_ALIASES, resolve_base_model
from codetune.train import checkpoints as ckpts
from codetune.train.config import TrainConfig
from codetune.train.data import (
    load_records,
    loss_positions_only,
    make_collator,
    tokenize_records,
)
from codetune.train.progress import Progress

log = logging.getLogger(__name__)
SUMMARY = "training_summary.json"
ENV_TORCH_THREADS = "CODETUNE_TORCH_THREADS"


class TrainingInterrupted(CodetuneError):
    """SIGTERM arrived: a checkpoint was saved and no adapter was published."""

    exit_code = 143


# ---------------------------------------------------------------------------- inputs


def check_inputs(
    config: TrainConfig, data_dir: Path, checkpoints_dir: Path | None, spot: bool = False
) -> tuple[list[dict], list[dict]]:
    """Validate everything the run needs before any heavy work; returns (train, validation).

    Raises CodetuneError naming the option or file at fault.
    """
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise CodetuneError(f"--data {data_dir}: no such directory")
    train = load_records(data_dir / "train.jsonl", required=True)
    validation = load_records(data_dir / "validation.jsonl", required=False)
    if spot and checkpoints_dir is None:
        raise CodetuneError(
            "--spot needs --checkpoints: managed spot training resumes from checkpoints"
        )
    if config.rl.enabled:
        from codetune.train.grpo import check_rl_inputs

        # Fail before SFT, not after it: no bugfix prompts means GRPO has nothing to reward.
        check_rl_inputs(train, config.rl)
    return train, validation


def resolve_base(config: TrainConfig, base_model: str | None) -> tuple[str, str]:
    """(path or HF id to load, name to record in adapter_config.json)."""
    spec = base_model or config.base_model
    path = resolve_base_model(spec)
    if spec is None or spec in EMBEDDED_ALIASES:
        return path, "embedded"  # consumers resolve "embedded" on their own machine
    return path, spec


# ---------------------------------------------------------------------------- model


def _device_setup(config: TrainConfig):
    import torch

    cuda = torch.cuda.is_available()
    if config.compute_dtype == "auto":
        dtype = torch.bfloat16 if cuda and torch.cuda.is_bf16_supported() else torch.float32
        # fp16 on pre-Ampere GPUs: bf16 is emulated there and much slower.
        if cuda and dtype is torch.float32:
            dtype = torch.float16
    else:
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[
            config.compute_dtype
        ]
    return cuda, dtype


def load_model(config: TrainConfig, base_path: str, dtype, cuda: bool):
    """Base model (quantized per ``config.quantization``) wrapped with a fresh LoRA adapter."""
    import torch
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    quant = None
    if config.quantization == "4bit":
        quant = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=dtype,
            # FSDP shards flat parameters of one dtype: store the 4-bit data as that dtype.
            bnb_4bit_quant_storage=dtype if config.distributed == "fsdp" else torch.uint8,
        )
    elif config.quantization == "8bit":
        quant = BitsAndBytesConfig(load_in_8bit=True)
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device_map = {"": local_rank} if cuda else {"": "cpu"}
    if config.distributed == "fsdp":
        device_map = None  # FSDP places the shards itself
    try:
        model = AutoModelForCausalLM.from_pretrained(
            base_path,
            quantization_config=quant,
            dtype=dtype,
            device_map=device_map,
            attn_implementation=config.attn_implementation,
        )
    except OSError as e:
        raise CodetuneError(f"base model {base_path!r} could not be loaded: {e}") from e
    # No KV cache in training: besides wasting memory, a cache object makes transformers skip
    # the packed-sequence detection, and flattened examples would attend to each other.
    model.config.use_cache = False
    gc_kwargs = {"use_reentrant": False}
    if quant is not None:
        model = prepare_model_for_kbit_training(
            model,
            use_gradient_checkpointing=config.gradient_checkpointing,
            gradient_checkpointing_kwargs=gc_kwargs,
        )
    elif config.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=gc_kwargs)
        model.enable_input_require_grads()
    targets = config.lora.target_modules
    lora = LoraConfig(
        r=config.lora.rank,
        lora_alpha=config.lora.alpha,
        lora_dropout=config.lora.dropout,
        target_modules="all-linear" if targets == ["all-linear"] else targets,
        task_type="CAUSAL_LM",
    )
    try:
        return get_peft_model(model, lora)
    except ValueError as e:
        raise CodetuneError(f"lora.target_modules={targets}: {e}") from e


# ---------------------------------------------------------------------------- callbacks


class _Counters:
    """Tokens trained on, accumulated across resumes (saved inside each checkpoint)."""

    def __init__(self) -> None:
        self.tokens_seen = 0
        self.loss_tokens = 0
        self.run_loss_tokens = 0  # this process only, for the rate
        self.prior_seconds = 0.0

    def add(self, inputs) -> None:
        labels = inputs["labels"]
        n_loss = int((labels[..., 1:] != -100).sum())  # shifted: what the loss really counts
        if "attention_mask" in inputs:
            n_tok = int(inputs["attention_mask"].sum())
        else:
            n_tok = int(inputs["input_ids"].numel())
        self.tokens_seen += n_tok
        self.loss_tokens += n_loss
        self.run_loss_tokens += n_loss


def _all_reduce_sum(values: list[float]) -> list[float]:
    import torch
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return values
    t = torch.tensor(values, dtype=torch.float64)
    if dist.get_backend() == "nccl":
        t = t.cuda()
    dist.all_reduce(t)
    return t.cpu().tolist()


def _make_callbacks(counters: _Counters, stop_flag: threading.Event, t0: float):
    from transformers import TrainerCallback

    class MetricsAndCheckpoints(TrainerCallback):
        """Metrics (a bar on a terminal, metric lines otherwise); checkpoint markers;
        SIGTERM -> save and stop."""

        def __init__(self) -> None:
            self.last_time = time.monotonic()
            self.last_loss_tokens = 0
            self.progress = Progress()

        def on_train_begin(self, args, state, control, **kw):
            if state.is_world_process_zero:
                self.progress.start(state.max_steps, initial=state.global_step)

        def on_train_end(self, args, state, control, **kw):
            self.progress.close()

        def on_log(self, args, state, control, logs=None, **kw):
            if not state.is_world_process_zero or not logs or "loss" not in logs:
                return
            now = time.monotonic()
            rate = (counters.run_loss_tokens - self.last_loss_tokens) / max(
                now - self.last_time, 1e-9
            )
            self.last_time, self.last_loss_tokens = now, counters.run_loss_tokens
            values = {k: logs[k] for k in ("loss", "learning_rate", "grad_norm") if k in logs}
            values["tokens_per_second"] = rate * args.world_size
            values["epoch"] = logs.get("epoch", state.epoch or 0.0)
            self.progress.log(state.global_step, values)

        def on_step_end(self, args, state, control, **kw):
            if state.is_world_process_zero:
                self.progress.step(state.global_step)
            flag = 1.0 if stop_flag.is_set() else 0.0
            if args.world_size > 1:  # every rank must agree, or the save collective hangs
                flag = _all_reduce_sum([flag])[0]
            if flag:
                control.should_save = True
                control.should_training_stop = True

        def on_save(self, args, state, control, **kw):
            totals = _all_reduce_sum([counters.tokens_seen, counters.loss_tokens])
            if not state.is_world_process_zero:
                return
            ckpt = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            (ckpt / ckpts.COUNTERS).write_text(
                json.dumps(
                    {
                        "tokens_seen": int(totals[0]),
                        "loss_bearing_tokens": int(totals[1]),
                        "train_seconds": counters.prior_seconds + time.monotonic() - t0,
                    }
                )
            )
            ckpts.mark_complete(ckpt)  # from here on this checkpoint may be resumed from

    return MetricsAndCheckpoints()


@contextlib.contextmanager
def _sigterm_sets(flag: threading.Event):
    """While training, SIGTERM asks for a checkpoint and a clean stop instead of dying."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        log.warning("SIGTERM: saving a checkpoint and stopping")
        flag.set()

    old = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


# ---------------------------------------------------------------------------- outputs


def _peak_memory_bytes(cuda: bool) -> tuple[int, str]:
    if cuda:
        import torch

        return int(torch.cuda.max_memory_allocated()), "cuda_max_allocated"
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "process_max_rss"


def plot_loss_curve(log_history: list[dict], path: Path) -> None:
    """Training (and validation) loss against step, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [(h["step"], h["loss"]) for h in log_history if "loss" in h]
    evals = [(h["step"], h["eval_loss"]) for h in log_history if "eval_loss" in h]
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    if train:
        ax.plot(*zip(*train, strict=True), label="train loss")
    if evals:
        ax.plot(*zip(*evals, strict=True), "o--", label="validation loss")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss (assistant tokens)")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def publish(staging: Path, out_dir: Path) -> None:
    """Move every entry of ``staging`` into ``out_dir`` (same file system) with os.replace;
    ``adapter_config.json`` goes last so a consumer never sees a config without weights.
    Weights get the permissions of the files beside them (see ``io.share_like_open``)."""
    share_like_open(staging)
    entries = sorted(staging.iterdir(), key=lambda p: (p.name == "adapter_config.json", p.name))
    for p in entries:
        target = out_dir / p.name
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        os.replace(p, target)
    staging.rmdir()


def merge_adapter(base_path: str, adapter_dir: Path, out: Path, dtype) -> None:
    """Write base + adapter merged into one full model (for single-model serving)."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = AutoModelForCausalLM.from_pretrained(base_path, dtype=dtype)
    merged = PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload()
    merged.save_pretrained(out, safe_serialization=True)
    AutoTokenizer.from_pretrained(str(adapter_dir)).save_pretrained(out)


# ---------------------------------------------------------------------------- main


def run_training(
    config: TrainConfig,
    data_dir: str | Path,
    out_dir: str | Path,
    base_model: str | None = None,
    checkpoints_dir: str | Path | None = None,
    *,
    merge: bool | None = None,
    spot: bool = False,
) -> dict:
    """Fine-tune ``config``'s base model (or ``base_model``) on ``data_dir``; write the adapter
    to ``out_dir``. Returns the training summary (also written as training_summary.json).

    Raises CodetuneError for bad inputs (before anything is written) and TrainingInterrupted
    when SIGTERM stopped the run after a checkpoint.
    """
    t_start = time.monotonic()
    out_dir = Path(out_dir)
    merge = config.merge if merge is None else merge
    train_records, val_records = check_inputs(
        config, Path(data_dir), Path(checkpoints_dir) if checkpoints_dir else None, spot
    )
    base_path, base_name = resolve_base(config, base_model)

    _process_setup(config)
    cuda, dtype = _device_setup(config)
    tokenizer = _load_tokenizer(base_path)
    train_ds, train_stats, val_ds, val_stats = _tokenize_splits(
        config, tokenizer, train_records, val_records, data_dir
    )
    model = load_model(config, base_path, dtype, cuda)

    is_main = int(os.environ.get("RANK", "0")) == 0
    work, resume, counters = _resume_point(checkpoints_dir, is_main)
    args = _training_arguments(config, work, cuda, dtype)
    stop_flag = threading.Event()
    t_train = time.monotonic()
    trainer = _counting_trainer(
        model, args, tokenizer, config, train_ds, val_ds, counters, stop_flag, t_train
    )

    base_val = _validation_loss(trainer, val_ds, 0, is_main)
    result = _train(trainer, stop_flag, resume, work, config.max_steps)
    train_seconds = time.monotonic() - t_train
    val_loss = _validation_loss(trainer, val_ds, trainer.state.global_step, is_main)

    staging = _staging_dir(out_dir, trainer.is_world_process_zero())
    rl_summary = None
    if config.rl.enabled:
        rl_summary = _continue_with_grpo(
            config, trainer, model, tokenizer, train_records, staging, base_name
        )

    # Collectives: every rank takes part, then only rank 0 writes.
    totals = _all_reduce_sum([counters.tokens_seen, counters.loss_tokens, counters.run_loss_tokens])
    peak, peak_kind = _peak_memory_bytes(cuda)
    peak = int(_all_reduce_sum([float(peak)])[0]) if args.world_size > 1 else peak
    if not trainer.is_world_process_zero():
        shutil.rmtree(staging, ignore_errors=True)
        return {}
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    summary = {
        "config": asdict(config),
        "base_model": base_name,
        "steps": trainer.state.global_step,
        "resumed_from_step": ckpts.checkpoint_step(resume) if resume else None,
        "world_size": args.world_size,
        "tokens_seen": int(totals[0]),
        "loss_bearing_tokens": int(totals[1]),
        "loss_bearing_tokens_per_second": totals[2] / max(train_seconds, 1e-9),
        "peak_memory_bytes": peak,
        "peak_memory_kind": peak_kind + ("_sum_over_ranks" if args.world_size > 1 else ""),
        "wall_seconds": time.monotonic() - t_start,
        "train_seconds_total": counters.prior_seconds + train_seconds,
        "train_loss": result.training_loss,
        "final_train_loss": losses[-1] if losses else None,
        "validation_loss": val_loss,
        "base_validation_loss": base_val,
        "rl": rl_summary,
        "validation_examples": len(val_ds),
        "data": {"train": train_stats.as_dict(), "validation": val_stats.as_dict()},
        "device": "cuda" if cuda else "cpu",
        "compute_dtype": str(dtype).replace("torch.", ""),
        "quantization": config.quantization,
        "python": sys.version.split()[0],
    }
    _save_and_publish(
        trainer,
        tokenizer,
        summary,
        staging,
        out_dir,
        base_path=base_path,
        base_name=base_name,
        dtype=dtype,
        merge=merge,
        rl=config.rl.enabled,
    )
    return summary


def _process_setup(config: TrainConfig) -> None:
    """Quiet Hugging Face progress bars, size torch's thread pool, seed."""
    import torch
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # progress bars flood SageMaker/CloudWatch logs
    threads = os.environ.get(ENV_TORCH_THREADS)
    if threads:
        # On a CPU shared with other processes, OpenMP threads spin-waiting for each other
        # cost far more than they add (see benchmarks/RESULTS.md, serve section).
        torch.set_num_threads(int(threads))
    torch.manual_seed(config.seed)


def _load_tokenizer(base_path: str):
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(base_path)
    except OSError as e:
        raise CodetuneError(f"--base-model {base_path!r}: cannot load its tokenizer ({e})") from e
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _tokenize_splits(config: TrainConfig, tokenizer, train_records, val_records, data_dir):
    """The tokenized training and validation examples and their statistics; raises
    CodetuneError when no training example fits ``max_seq_length``."""
    train_ds, train_stats = tokenize_records(
        tokenizer, train_records, config.max_seq_length, config.overlong
    )
    if not train_ds:
        raise CodetuneError(
            f"--data {data_dir}: all {train_stats.examples} training examples are longer than "
            f"max_seq_length={config.max_seq_length}; raise max_seq_length or use overlong=truncate"
        )
    val_ds, val_stats = tokenize_records(
        tokenizer, val_records, config.max_seq_length, config.overlong
    )
    if config.eval_max_examples:
        val_ds = val_ds[: config.eval_max_examples]
    log.info("train: %s", train_stats.as_dict())
    return train_ds, train_stats, val_ds, val_stats


def _resume_point(checkpoints_dir, is_main: bool) -> tuple[Path, Path | None, _Counters]:
    """The checkpoint folder (a temporary one without --checkpoints), the newest valid
    checkpoint in it to resume from, and the token counters that checkpoint carried."""
    work = Path(checkpoints_dir) if checkpoints_dir else Path(tempfile.mkdtemp(prefix="ct-ckpt-"))
    work.mkdir(parents=True, exist_ok=True)
    if is_main:
        ckpts.remove_torn(work)
    resume = ckpts.newest_valid(work)
    counters = _Counters()
    if resume is not None and (resume / ckpts.COUNTERS).is_file():
        saved = json.loads((resume / ckpts.COUNTERS).read_text())
        if is_main:  # totals are global; one rank carries them
            counters.tokens_seen = saved["tokens_seen"]
            counters.loss_tokens = saved["loss_bearing_tokens"]
            counters.prior_seconds = saved.get("train_seconds", 0.0)
    return work, resume, counters


def _training_arguments(config: TrainConfig, work: Path, cuda: bool, dtype):
    import torch
    from transformers import TrainingArguments

    optim = config.optimizer
    if optim == "auto":
        optim = "paged_adamw_8bit" if cuda else "adamw_torch"
    return TrainingArguments(
        output_dir=str(work),
        max_steps=config.max_steps,
        per_device_train_batch_size=config.per_device_batch_size,
        per_device_eval_batch_size=config.eval_batch_size,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        learning_rate=config.learning_rate,
        lr_scheduler_type=config.lr_scheduler,
        warmup_steps=config.warmup_steps,
        weight_decay=config.weight_decay,
        max_grad_norm=config.max_grad_norm,
        optim=optim,
        bf16=cuda and dtype == torch.bfloat16,
        fp16=cuda and dtype == torch.float16,
        use_cpu=not cuda,
        logging_steps=config.logging_steps,
        save_strategy="steps",
        save_steps=config.save_steps,
        # >= 2: rotation deletes the previous checkpoint *before* the new one is marked valid.
        save_total_limit=max(2, config.save_total_limit),
        seed=config.seed,
        data_seed=config.seed,
        report_to="none",
        disable_tqdm=True,
        remove_unused_columns=False,
        train_sampling_strategy="group_by_length" if config.batching == "padded" else "random",
        gradient_checkpointing=False,  # already enabled on the model (kbit prep / above)
        ddp_find_unused_parameters=False,
        ddp_backend="gloo" if not cuda and int(os.environ.get("WORLD_SIZE", "1")) > 1 else None,
        dataloader_num_workers=0,
        **_fsdp_args(config),
    )


def _counting_trainer(
    model,
    args,
    tokenizer,
    config: TrainConfig,
    train_ds,
    val_ds,
    counters: _Counters,
    stop_flag: threading.Event,
    t_train: float,
):
    """A transformers Trainer that counts the tokens it trains on and computes the loss at
    the answer positions only; our callbacks print the metric lines instead of its own."""
    from transformers import Trainer
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    class CountingTrainer(Trainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            if model.training:
                counters.add(inputs)
            inputs = loss_positions_only(inputs)
            return super().compute_loss(
                model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch
            )

    trainer = CountingTrainer(
        model=model,
        args=args,
        train_dataset=train_ds,
        eval_dataset=val_ds or None,
        data_collator=make_collator(tokenizer, config.batching),
        processing_class=tokenizer,
        callbacks=[_make_callbacks(counters, stop_flag, t_train)],
    )
    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
    return trainer


def _validation_loss(trainer, val_ds, step: int, is_main: bool) -> float | None:
    """The validation loss now (None without a validation split), printed as a metric line."""
    loss = trainer.evaluate()["eval_loss"] if val_ds else None
    if loss is not None and is_main:
        print(format_metrics(step, {"eval_loss": loss}), flush=True)
    return loss


def _train(trainer, stop_flag: threading.Event, resume: Path | None, work: Path, max_steps: int):
    """Train (from ``resume`` when set); raises TrainingInterrupted when SIGTERM stopped the
    run before ``max_steps`` (the checkpoint in ``work`` resumes it)."""
    with _sigterm_sets(stop_flag):
        result = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    if stop_flag.is_set() and trainer.state.global_step < max_steps:
        raise TrainingInterrupted(
            f"stopped by SIGTERM at step {trainer.state.global_step}/{max_steps}; a "
            f"checkpoint is in {work}; run again with the same --checkpoints to resume"
        )
    return result


def _staging_dir(out_dir: Path, is_main: bool) -> Path:
    """Where the outputs are assembled before publishing: inside ``out_dir`` on rank 0 (so the
    final os.replace calls stay on one file system), a scratch folder on the other ranks."""
    out_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=out_dir))
    if not is_main:
        shutil.rmtree(staging, ignore_errors=True)
        staging = Path(tempfile.mkdtemp(prefix="ct-rl-"))
    return staging


def _continue_with_grpo(
    config: TrainConfig, trainer, model, tokenizer, train_records, staging: Path, base_name: str
) -> dict:
    """The GRPO stage continues training the same PEFT model in place; what it writes into
    ``staging`` is published with the adapter. The SFT-only adapter is kept first in
    <out>/sft/, so the evaluation can compare base, SFT and SFT+GRPO."""
    from codetune.train.grpo import run_grpo
    from codetune.train.rl_config import SFT_ADAPTER_SUBDIR

    if trainer.is_world_process_zero():
        save_sft_adapter(trainer.model, tokenizer, staging / SFT_ADAPTER_SUBDIR, base_name)
    return run_grpo(model, tokenizer, train_records, config.rl, staging, _print_metrics)


def _save_and_publish(
    trainer,
    tokenizer,
    summary: dict,
    staging: Path,
    out_dir: Path,
    *,
    base_path: str,
    base_name: str,
    dtype,
    merge: bool,
    rl: bool,
) -> None:
    """Write the adapter, tokenizer, loss curve, merged model (``merge``) and summary into
    ``staging``, then publish them into ``out_dir``; on any failure nothing is published."""
    try:
        trainer.model.save_pretrained(staging, safe_serialization=True)
        _record_base(staging / "adapter_config.json", base_name)
        tokenizer.save_pretrained(staging)
        plot_loss_curve(trainer.state.log_history, staging / "loss_curve.png")
        if merge:
            merge_adapter(base_path, staging, staging / "merged", dtype)
        (staging / SUMMARY).write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
        publish(staging, out_dir)
        if not rl:
            from codetune.train.rl_config import SFT_ADAPTER_SUBDIR

            # An SFT-only adapter left by an earlier RL run would be compared as this run's.
            shutil.rmtree(out_dir / SFT_ADAPTER_SUBDIR, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def save_sft_adapter(model, tokenizer, dest: Path, base_name: str) -> Path:
    """Save the adapter as it is now (after SFT, before GRPO) as a complete adapter directory
    ``dest`` (weights, config naming ``base_name``, tokenizer) that evaluation and serving
    accept like the final one. Returns ``dest``."""
    model.save_pretrained(dest, safe_serialization=True)
    _record_base(dest / "adapter_config.json", base_name)
    tokenizer.save_pretrained(dest)
    return dest


def _print_metrics(step: int, values: dict) -> None:
    print(format_metrics(step, values), flush=True)


def _record_base(adapter_config: Path, base_name: str) -> None:
    cfg = json.loads(adapter_config.read_text())
    cfg["base_model_name_or_path"] = base_name
    adapter_config.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")


def _fsdp_args(config: TrainConfig) -> dict:
    """QLoRA-compatible FSDP settings (used only with distributed=fsdp on GPUs)."""
    if config.distributed != "fsdp":
        return {}
    return {
        "fsdp": "full_shard auto_wrap",
        "fsdp_config": {
            "use_orig_params": False,
            "cpu_ram_efficient_loading": True,
            "sync_module_states": True,
            "activation_checkpointing": False,
        },
    }
