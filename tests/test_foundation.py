"""Foundation: CLI surface, config loading, atomic outputs, metric line format, prompts."""

from __future__ import annotations

import ast
import json
import os
import re
import stat
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from codetune import cli, metrics, prompts
from codetune.config import load_config, parse_overrides
from codetune.errors import ConfigError
from codetune.io import atomic_dir


def _run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "codetune.cli", *args], capture_output=True, text=True
    )


@pytest.mark.parametrize("name", [s[0] for s in cli.SUBCOMMANDS])
def test_every_subcommand_has_help(name):
    # Guards: `--help` works on every subcommand.
    res = _run_cli(name, "--help")
    assert res.returncode == 0, res.stderr
    assert "usage: codetune " + name in res.stdout


def test_top_level_help_lists_every_subcommand():
    res = _run_cli("--help")
    assert res.returncode == 0
    for name, *_ in cli.SUBCOMMANDS:
        assert name in res.stdout


@dataclass
class Inner:
    rank: int = 8


@dataclass
class Cfg:
    lr: float = 1e-4
    inner: Inner = field(default_factory=Inner)


def test_config_rejects_unknown_keys_and_names_them(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("lr: 0.1\ninner:\n  rank: 4\n  rnak: 3\n")
    with pytest.raises(ConfigError, match="rnak"):
        load_config(Cfg, f)
    f.write_text("lr: 0.1\n")
    cfg = load_config(Cfg, f, ["inner.rank=16"])
    assert cfg.lr == 0.1 and cfg.inner.rank == 16
    with pytest.raises(ConfigError, match="expected an integer"):
        load_config(Cfg, None, ["inner.rank=abc"])


def test_parse_overrides_requires_key_value():
    assert parse_overrides(["a.b=1", "c=x"]) == {"a": {"b": 1}, "c": "x"}
    with pytest.raises(ConfigError, match="key=value"):
        parse_overrides(["novalue"])


def test_atomic_dir_publishes_nothing_on_failure(tmp_path):
    # Guards: partial results are never published.
    final = tmp_path / "out"
    with pytest.raises(RuntimeError), atomic_dir(final) as tmp:
        (tmp / "half.jsonl").write_text("x")
        raise RuntimeError("boom")
    assert not final.exists()
    assert list(tmp_path.iterdir()) == []
    with atomic_dir(final) as tmp:
        (tmp / "done").write_text("1")
    assert (final / "done").read_text() == "1"


@pytest.mark.parametrize("mask", [0o022, 0o077])
def test_published_outputs_get_umask_permissions(tmp_path, mask):
    # mkdtemp/mkstemp create 0700/0600: a published dataset or manifest must be as readable
    # as what mkdir/open would have made under the same umask.
    from codetune.io import umask, write_json_atomic

    old = os.umask(mask)
    try:
        assert umask() == mask
        with atomic_dir(tmp_path / "out") as tmp:
            write_json_atomic(tmp / "manifest.json", {"a": 1})
        (tmp_path / "plain").mkdir()
        (tmp_path / "plain.json").write_text("{}")
    finally:
        os.umask(old)
    mode = lambda p: stat.S_IMODE(p.stat().st_mode)  # noqa: E731
    assert mode(tmp_path / "out") == mode(tmp_path / "plain") == 0o777 & ~mask
    assert mode(tmp_path / "out" / "manifest.json") == mode(tmp_path / "plain.json")
    assert mode(tmp_path / "plain.json") == 0o666 & ~mask


def test_metric_lines_match_their_sagemaker_regexes():
    # Guards: the trainer's log format and the CDK MetricDefinitions cannot drift.
    line = metrics.format_metrics(
        10, {"loss": 1.2345, "eval_loss": 2.5, "learning_rate": 2e-4, "epoch": 0.5}
    )
    assert metrics.parse_metrics(line)["loss"] == pytest.approx(1.2345)
    defs = {d["Name"]: d["Regex"] for d in metrics.metric_definitions()}
    assert float(re.search(defs["train:loss"], line).group(1)) == pytest.approx(1.2345)
    assert float(re.search(defs["train:eval_loss"], line).group(1)) == pytest.approx(2.5)
    assert float(re.search(defs["train:learning_rate"], line).group(1)) == pytest.approx(2e-4)
    assert re.search(defs["train:reward"], line) is None


def test_prompts_round_trip_code():
    code = "def f(x):\n    return x + 1"
    msgs = prompts.messages("bugfix", code, answer=code, path="pkg/m.py")
    assert [m["role"] for m in msgs] == ["user", "assistant"]
    assert "pkg/m.py" in msgs[0]["content"]
    assert prompts.extract_code(msgs[1]["content"]) == code
    assert prompts.extract_code("Sure!\n```python\n" + code + "\n```\nDone.") == code
    assert prompts.extract_code("```python\n" + code) == code  # truncated answer
    with pytest.raises(ValueError):
        prompts.user_prompt("poem", code)
    json.dumps(msgs)  # records must be JSON-serializable


def test_float_fields_accept_exponent_strings():
    # Guards: "--set lr=1e-4" works although YAML 1.1 reads 1e-4 (no dot) as a string.
    cfg = load_config(Cfg, None, ["lr=1e-4"])
    assert cfg.lr == pytest.approx(1e-4)
    with pytest.raises(ConfigError, match="expected a number"):
        load_config(Cfg, None, ["lr=fast"])


def test_every_grpo_reward_has_a_metric_definition():
    # Guards: SageMaker charts each reward's mean (the GRPO stage logs reward_<name>).
    from codetune.train.rl_config import DEFAULT_REWARD_WEIGHTS

    names = {d["Name"] for d in metrics.metric_definitions()}
    assert {f"train:reward_{n}" for n in DEFAULT_REWARD_WEIGHTS} <= names


# Functions longer than this are split along their steps (setup -> steps -> result) so a reader
# sees the outline before the detail.
MAX_FUNCTION_LINES = 100


def _function_lengths(root):
    """Yield ("path::Qual.name", lines) for every function under src/ and cdk/."""

    def walk(node, prefix, rel):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                yield f"{rel}::{prefix}{child.name}", child.end_lineno - child.lineno + 1
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                yield from walk(child, f"{prefix}{child.name}.", rel)

    for top in ("src", "cdk"):
        for path in sorted((root / top).rglob("*.py")):
            rel = path.relative_to(root).as_posix()
            yield from walk(ast.parse(path.read_text(), filename=rel), "", rel)


def test_no_function_is_longer_than_the_limit():
    # Guards: long functions stay split (none in src/ or cdk/ is over the limit).
    lengths = dict(_function_lengths(Path(__file__).resolve().parents[1]))
    offenders = sorted(
        f"{name} ({n} lines)" for name, n in lengths.items() if n > MAX_FUNCTION_LINES
    )
    assert not offenders, (
        f"functions over {MAX_FUNCTION_LINES} lines; split them along their steps:\n  "
        + "\n  ".join(offenders)
    )


def test_test_modules_have_unique_names():
    # Guards collection of the whole suite: the test directories are not packages, so pytest
    # imports each test module under its basename, and two modules of one name in different
    # directories stop `make test` at collection ("import file mismatch").
    root = Path(__file__).resolve().parent
    names: dict[str, list[str]] = {}
    for path in sorted(root.rglob("test_*.py")):
        names.setdefault(path.name, []).append(path.relative_to(root).as_posix())
    clashes = {name: paths for name, paths in names.items() if len(paths) > 1}
    assert not clashes, f"rename one of each: {clashes}"
