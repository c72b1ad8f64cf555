"""The ``evaluate`` configuration: a typed dataclass loadable from YAML with ``--set`` overrides.

One object holds everything ``codetune evaluate`` can be told besides its paths (adapter,
dataset, output). It is loaded with :func:`codetune.config.load_config`, by the command and by
ValidateRequest alike, so a value the job would refuse is refused before a run starts, with
the same message::

    codetune evaluate --adapter out/adapter --data out/dataset --out out/eval \\
        --set 'limit={"bugfix": 93}' --set suites=bugfix,general

Light on import: the ValidateRequest Lambda loads it without torch.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Literal

from codetune.errors import CodetuneError, ConfigError
from codetune.evaluate.suites import SUITES

# The forgetting guard's sample: 32 files is enough for a bootstrap interval of the mean
# (the gate needs >= 10), 384 tokens each keeps both sides' forward passes to seconds on CPU.
GENERAL_FILES = 32
# Prompt-lookup drafts per bugfix row and step (greedy only; 0 = off). Off by default: on
# 2 CPU cores they give 1.33x wall time at 12 slots but 0.99-1.00x at the default 32, where
# the run lasts as long as its slowest rows and those are the ones whose answers leave the
# prompt (benchmarks/RESULTS.md). Not measured on a GPU, where a forward of many positions
# costs about what one does: measure there before turning them on (16 is the measured cap).
DRAFT_TOKENS = 0


@dataclass
class EvalConfig:
    """Everything ``codetune evaluate`` can be told besides its paths; see
    ``training_image/evaluate.yaml``."""

    suites: list[str] = field(
        default_factory=lambda: ["humaneval", "bugfix", "general"],
        metadata={
            "help": "suites to run: humaneval, bugfix, custom, general (general = the "
            "forgetting guard, per-token loss on held-out standard-library code)"
        },
    )
    limit: int | dict[str, int | None] | None = field(
        default=None,
        metadata={
            "help": "an integer: at most that many problems in each problem suite (humaneval, "
            "bugfix, custom); a mapping suite -> integer or null: per suite (null or left "
            f"out: all; general counts held-out files, default {GENERAL_FILES}); null: all. "
            "A bugfix limit draws the problems stratified by mutation operator"
        },
    )
    humaneval_tasks: list[str] = field(
        default_factory=list, metadata={"help": "HumanEval task ids to run (empty: in order)"}
    )
    custom_suite: str | None = field(
        default=None, metadata={"help": "JSONL of {task_id, prompt, test, entry_point?}"}
    )
    base_model: str | None = field(
        default=None, metadata={"help": "the base model (None: the one the adapter names)"}
    )
    samples: int = field(default=1, metadata={"help": "samples per problem (pass@k)"})
    temperature: float = field(default=0.0, metadata={"help": "0 = greedy"})
    max_new_tokens: int = field(default=320, metadata={"help": "HumanEval / custom answer cap"})
    bugfix_max_new_tokens: int = field(
        default=512,
        metadata={"help": "ceiling of the bugfix cap (ceil(1.25 * reference tokens) + 24)"},
    )
    general_max_tokens: int = field(
        default=384, metadata={"help": "tokens scored per held-out file of the general suite"}
    )
    batch_size: int = field(
        default=32,
        metadata={"help": "rows decoded together (continuous batching: a freed slot refills)"},
    )
    draft_tokens: int = field(
        default=DRAFT_TOKENS,
        metadata={
            "help": "prompt-lookup drafts verified per step for greedy bugfix answers (the "
            "same answers in fewer forwards; 0 = off: on 2 CPU cores no faster at the default "
            "batch, see benchmarks/RESULTS.md)"
        },
    )
    quantization: Literal["none", "4bit"] = field(
        default="none", metadata={"help": "none, or 4bit (the adapter stays attached)"}
    )
    seed: int = field(default=0, metadata={"help": "sampling and stratified-draw seed"})
    thresholds: dict[str, float] = field(
        default_factory=dict,
        metadata={"help": "quality-gate thresholds by name (codetune.evaluate.gate)"},
    )
    compare_sft: bool = field(
        default=False,
        metadata={
            "help": "also evaluate the SFT-only adapter in the adapter's sft/ (kept by "
            "training with rl.enabled); reported as side 'sft', not used by the gate"
        },
    )
    compare_adapters: dict[str, str] = field(
        default_factory=dict,
        metadata={"help": "extra sides: name -> adapter dir or model.tar.gz"},
    )
    run_id: str | None = field(default=None, metadata={"help": "report runId (None: random)"})
    timeout_s: float = field(default=6.0, metadata={"help": "seconds per program (wall clock)"})
    workers: int = field(default=2, metadata={"help": "programs executed in parallel"})
    allow_unsandboxed: bool = field(
        default=False,
        metadata={"help": "execute generated code even when a required sandbox layer fails"},
    )
    sandbox_require: str | None = field(
        default=None,
        metadata={
            "help": "comma list of sandbox layers that must work: bwrap, seccomp, landlock "
            "(None: $CODETUNE_SANDBOX_REQUIRE, else seccomp)"
        },
    )

    def validate(self) -> None:
        """Raise ``ConfigError`` naming the offending key."""
        self.suites = list(dict.fromkeys(self.suites))
        unknown = [s for s in self.suites if s not in SUITES]
        if unknown or not self.suites:
            raise ConfigError(
                f"suites: unknown suite(s) {unknown or '[]'}; choose from {', '.join(SUITES)}"
            )
        self._validate_limit()
        if "custom" in self.suites and not self.custom_suite:
            raise ConfigError("custom_suite: the custom suite needs a JSONL file (--custom-suite)")
        for name in ("samples", "max_new_tokens", "bugfix_max_new_tokens", "general_max_tokens",
                     "batch_size", "workers"):  # fmt: skip
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}: must be >= 1")
        if self.draft_tokens < 0:
            raise ConfigError("draft_tokens: must be >= 0 (0 turns prompt-lookup drafts off)")
        if self.samples > 1 and self.temperature <= 0:
            raise ConfigError("samples: > 1 needs temperature > 0 (greedy samples are identical)")
        if self.timeout_s <= 0:
            raise ConfigError("timeout_s: must be > 0")
        if self.allow_unsandboxed and self.sandbox_require:
            raise ConfigError(
                "allow_unsandboxed drops the sandbox minimum; it contradicts sandbox_require "
                f"{self.sandbox_require}: give one of them"
            )
        from codetune.evaluate.gate import resolve_thresholds
        from codetune.evaluate.sandbox import parse_layers

        try:
            resolve_thresholds(self.thresholds)  # a typo fails before hours of generation
        except CodetuneError as e:
            raise ConfigError(f"thresholds: {e}") from e
        if self.sandbox_require is not None:
            parse_layers(self.sandbox_require, "sandbox_require")  # names the key

    def _validate_limit(self) -> None:
        if self.limit is None:
            return
        if isinstance(self.limit, int):
            if self.limit < 1:
                raise ConfigError(f"limit: {self.limit} is below 1; give >= 1, or null for all")
            return
        for suite, n in self.limit.items():
            if suite not in SUITES:
                raise ConfigError(f"limit.{suite}: unknown suite; choose from {', '.join(SUITES)}")
            if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
                raise ConfigError(f"limit.{suite}: expected an integer >= 1 or null, got {n!r}")

    def limits(self) -> dict[str, int | None]:
        """Suite -> its cap (None: all problems), for every suite; ``general`` counts held-out
        files (``GENERAL_FILES`` unless the limit mapping gives it)."""
        per = self.limit if isinstance(self.limit, dict) else {}
        every = self.limit if isinstance(self.limit, int) else None
        out: dict[str, int | None] = {s: per.get(s, every) for s in SUITES if s != "general"}
        out["general"] = per.get("general") or GENERAL_FILES
        return out

    def to_dict(self) -> dict:
        """Plain dict (for the report's settings)."""
        return asdict(self)


def run_input_overrides(evaluation: dict) -> dict:
    """The ``EvalConfig`` keys a run input's ``evaluation`` section sets (schema defaults
    filled in): suites, limit, thresholds, compare_sft."""
    return {
        "suites": evaluation["suites"],
        "limit": evaluation["limit"],
        "thresholds": evaluation["thresholds"],
        "compare_sft": evaluation["compareSft"],
    }


def set_arguments(overrides: dict) -> list[str]:
    """``["--set", "key=<json>", ...]``: the overrides as ``codetune evaluate`` takes them (a
    Processing job's ContainerArguments). A mapping goes one key per argument
    (``thresholds.max_p_value=0.05``), so no argument nears SageMaker's 256 characters; an
    empty one is left out (the default is empty too)."""
    args: list[str] = []
    for key, value in overrides.items():
        items = value.items() if isinstance(value, dict) else [(None, value)]
        for sub, v in items:
            args += ["--set", f"{key}{'' if sub is None else '.' + sub}={json.dumps(v)}"]
    return args


def load_from_arguments(args: list[str]) -> EvalConfig:
    """The ``EvalConfig`` that ``codetune evaluate`` builds from ``set_arguments`` output:
    the same loader, so its ConfigError is the job's own message."""
    from codetune.config import load_config

    return load_config(EvalConfig, None, [a for a in args if a != "--set"])
