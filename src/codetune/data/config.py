"""The ``prepare`` configuration: a typed dataclass loadable from YAML with ``--set`` overrides."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from codetune.errors import ConfigError
from codetune.languages import LANGUAGES, SUPPORTED
from codetune.prompts import TASKS

# Directory names never descended into: VCS data, virtualenvs, installed or vendored
# third-party code, caches and build outputs. Matched against each directory's own name.
DEFAULT_EXCLUDE_DIRS = [
    ".git", ".hg", ".svn", ".venv", "venv", "env", ".env", ".tox", ".nox", "site-packages",
    "dist-packages", "node_modules", "__pycache__", ".mypy_cache", ".pytest_cache",
    ".ruff_cache", "build", "dist", "vendor", "_vendor", "vendored", "third_party",
    "third-party", ".eggs", "*.egg-info",
]  # fmt: skip

# Generated code (protobuf, gRPC, Qt designer, migrations-style stubs), minified bundles and
# TypeScript declaration files (signatures only) teach nothing.
DEFAULT_EXCLUDE = [
    "*_pb2.py", "*_pb2_grpc.py", "*_pb2.pyi", "*.min.py", "*.min.js", "*.d.ts", "*.d.mts",
    "*.d.cts", "*.pb.go", "*.pb.cc", "*.pb.h",
]  # fmt: skip

# Detectors for credentials that must never reach a dataset. The noisy entropy and keyword
# detectors are left out by default: in source code they fire on hashes, test vectors and
# every ``password=`` parameter, which would drop large parts of any real codebase. Discord
# and Telegram token patterns have no literal part, so they cost a full regex pass over every
# file (halving throughput); add them back with --set when your codebase may hold them.
DEFAULT_SECRET_PLUGINS = [
    "AWSKeyDetector", "ArtifactoryDetector", "AzureStorageKeyDetector", "BasicAuthDetector",
    "GitHubTokenDetector", "GitLabTokenDetector", "JwtTokenDetector",
    "MailchimpDetector", "NpmDetector", "OpenAIDetector", "PrivateKeyDetector",
    "PypiTokenDetector", "SendGridDetector", "SlackDetector", "SquareOAuthDetector",
    "StripeDetector", "TwilioKeyDetector",
]  # fmt: skip

# Every mutation operator of every language (Python's in codetune.data.mutations, the others'
# in codetune.data.ts_mutations); an operator applies where its bug exists in the language.
OPERATORS = (
    "compare_flip",
    "off_by_one",
    "bool_op_swap",
    "negate_condition",
    "arith_op",
    "swap_args",
    "wrong_variable",
    "wrong_return",
    "missing_colon",
    "unbalanced_bracket",
    "missing_semicolon",
    "missing_brace",
)


@dataclass
class PrepareConfig:
    """Everything ``codetune prepare`` can be told; see ``training_image/prepare.yaml``."""

    languages: list[str] = field(
        default_factory=list,
        metadata={
            "help": "languages to read: python, javascript, typescript, java, go, cpp (empty: "
            "every one found in the tree); a file's language is its extension's"
        },
    )
    include: list[str] = field(
        default_factory=list,
        metadata={
            "help": "glob(s) a file's path relative to the codebase must match (empty: any "
            "file with an extension of the chosen languages)"
        },
    )
    exclude: list[str] = field(
        default_factory=lambda: list(DEFAULT_EXCLUDE),
        metadata={"help": "glob(s) of relative paths to skip (counted as excluded)"},
    )
    exclude_dirs: list[str] = field(
        default_factory=lambda: list(DEFAULT_EXCLUDE_DIRS),
        metadata={"help": "directory names (globs) never descended into"},
    )
    max_file_bytes: int = field(
        default=1_000_000, metadata={"help": "files larger than this are skipped as too_large"}
    )
    max_line_chars: int = field(
        default=1000, metadata={"help": "a file with a longer line is skipped as minified"}
    )
    max_files: int = field(
        default=0, metadata={"help": "stop after this many files were processed (0: no limit)"}
    )
    tasks: list[str] = field(
        default_factory=lambda: list(TASKS), metadata={"help": "tasks to emit: bugfix, complete"}
    )
    max_examples_per_task: int = field(
        default=0,
        metadata={
            "help": "cap on a task's examples (0: no limit), shared among the splits by their "
            "fractions: 1000 with 0.9/0.05/0.05 gives at most 900/50/50, and each split stops "
            "on its own, so a small cap never starves validation or test (a split with a "
            "nonzero fraction gets at least 1). A capped run takes the files in a seeded "
            "random order (see file_order), so the examples sample the whole codebase"
        },
    )
    file_order: str = field(
        default="auto",
        metadata={
            "help": "order files are processed in: walk (sorted directory walk, streaming), "
            "shuffled (by a seeded hash of the path: the file list is held in memory, ~200 "
            "bytes a file), auto (shuffled when max_examples_per_task stops the run early "
            "and max_files is 0, else walk)"
        },
    )
    min_function_lines: int = field(
        default=3, metadata={"help": "shorter functions are too trivial to teach anything"}
    )
    max_function_bytes: int = field(
        default=12_000,
        metadata={"help": "longer functions are skipped before tokenizing (they exceed any cap)"},
    )
    max_tokens: int = field(
        default=1024,
        metadata={"help": "cap on a rendered example's length in base-model tokens"},
    )
    tokenizer: str | None = field(
        default=None,
        metadata={"help": "base model whose tokenizer measures length (None: the embedded one)"},
    )
    mutation_weights: dict[str, float] = field(
        default_factory=lambda: {op: 1.0 for op in OPERATORS},
        metadata={"help": "relative share of each mutation operator (0 disables one)"},
    )
    candidates_per_function: int = field(
        default=2,
        metadata={"help": "verified mutants generated per function; the balancer picks one"},
    )
    near_dup_threshold: float = field(
        default=0.85, metadata={"help": "MinHash Jaccard threshold for near-duplicates"}
    )
    num_perm: int = field(default=64, metadata={"help": "MinHash permutations"})
    secret_plugins: list[str] = field(
        default_factory=lambda: list(DEFAULT_SECRET_PLUGINS),
        metadata={"help": "detect-secrets plugin class names; a hit drops the whole file"},
    )
    split: dict[str, float] = field(
        default_factory=lambda: {"train": 0.9, "validation": 0.05, "test": 0.05},
        metadata={"help": "split fractions, assigned by hash of the file path"},
    )
    seed: int = field(default=0, metadata={"help": "seed of every random choice"})
    workers: int = field(
        default=0,
        metadata={
            "help": "processes parsing and mutating files (0: one per available CPU; 1: in-process)"
        },
    )

    def worker_count(self) -> int:
        """``workers``, with 0 resolved to the CPUs this process may run on."""
        if self.workers:
            return self.workers
        import os

        try:
            return max(1, len(os.sched_getaffinity(0)))
        except AttributeError:  # not on Linux
            return max(1, os.cpu_count() or 1)

    def validate(self) -> None:
        """Raise ``ConfigError`` naming the offending key."""
        unknown = sorted(set(self.tasks) - set(TASKS))
        if unknown or not self.tasks:
            raise ConfigError(f"tasks: {unknown or '[]'} invalid; choose from {', '.join(TASKS)}")
        # `--set mutation_weights.arith_op=0` gives a one-key dict: the others keep weight 1.
        for op in OPERATORS:
            self.mutation_weights.setdefault(op, 1.0)
        bad_ops = sorted(set(self.mutation_weights) - set(OPERATORS))
        if bad_ops:
            raise ConfigError(
                f"mutation_weights: unknown operator(s) {', '.join(bad_ops)}; "
                f"known: {', '.join(OPERATORS)}"
            )
        if any(w < 0 for w in self.mutation_weights.values()):
            raise ConfigError("mutation_weights: weights must be >= 0")
        if "bugfix" in self.tasks and not any(self.mutation_weights.values()):
            raise ConfigError("mutation_weights: every operator is disabled but tasks has bugfix")
        if set(self.split) != {"train", "validation", "test"}:
            raise ConfigError("split: give exactly train, validation and test fractions")
        if any(v < 0 for v in self.split.values()) or abs(sum(self.split.values()) - 1) > 1e-6:
            raise ConfigError(f"split: fractions must be >= 0 and sum to 1, got {self.split}")
        if not 0 < self.near_dup_threshold <= 1:
            raise ConfigError("near_dup_threshold: must be in (0, 1]")
        for name in ("max_file_bytes", "max_tokens", "num_perm"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}: must be >= 1")
        if self.file_order not in ("auto", "walk", "shuffled"):
            raise ConfigError(f"file_order: {self.file_order!r}; choose auto, walk or shuffled")
        if self.workers < 0:
            raise ConfigError("workers: must be >= 0 (0: one per available CPU)")
        if self.candidates_per_function < 1:
            raise ConfigError("candidates_per_function: must be >= 1")
        bad_langs = sorted(set(self.languages) - set(SUPPORTED))
        if bad_langs:
            raise ConfigError(
                f"languages: unknown {', '.join(map(repr, bad_langs))}; "
                f"supported: {', '.join(SUPPORTED)}"
            )

    def language_names(self) -> tuple[str, ...]:
        """The languages read: ``languages``, or all supported when it is empty."""
        return tuple(self.languages) or SUPPORTED

    def extensions(self) -> frozenset[str]:
        """File extensions of the languages read."""
        return frozenset(e for n in self.language_names() for e in LANGUAGES[n].extensions)

    def to_dict(self) -> dict:
        """Plain dict (for the manifest)."""
        return asdict(self)
