"""Extra evaluated sides (base vs SFT-only vs SFT+GRPO) — inputs and report, no model."""

from __future__ import annotations

import copy
import json

import pytest

from codetune.cli import main
from codetune.errors import CodetuneError
from codetune.evaluate.report import render_html, summary_table, validate_report
from codetune.evaluate.runner import compare_adapter_dirs

REPORT = {
    "schemaVersion": "1",
    "runId": "r1",
    "baseModel": "embedded",
    "adapter": "/runs/r1/adapter",
    "suites": {
        "bugfix": {
            "n": 20,
            "base": {"exact_fix": 0.1, "parses": 0.9},
            "candidate": {"exact_fix": 0.25, "parses": 1.0},
        },
        "humaneval": {"n": 20, "base": {"pass@1": 0.0}, "candidate": {"pass@1": 0.05}},
    },
    "gate": {"passed": True, "reasons": ["ok"]},
}


def with_sft(report: dict) -> dict:
    r = copy.deepcopy(report)
    r["compare"] = {"sft": "/runs/r1/adapter (sft/)"}
    r["suites"]["bugfix"]["compare"] = {"sft": {"exact_fix": 0.2, "parses": 0.95}}
    r["suites"]["humaneval"]["compare"] = {"sft": {"pass@1": 0.1}}
    return r


def adapter_dir(path):
    path.mkdir(parents=True)
    (path / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA"}))
    return path


def test_report_without_extra_sides_stays_valid_and_with_them_too():
    # Guards backward compatibility: the extra side is optional in report.json. Valid
    # reports pass silently (validate_report raises on any schema error) ...
    assert validate_report(REPORT) is None
    assert validate_report(with_sft(REPORT)) is None
    # ... and the check is real: an extra side with a malformed metric is refused.
    bad = with_sft(REPORT)
    bad["suites"]["bugfix"]["compare"]["sft"]["exact_fix"] = "high"
    with pytest.raises(CodetuneError, match="schema"):
        validate_report(bad)


@pytest.mark.parametrize("name", ["candidate", "base", "Bad Name"])
def test_schema_refuses_reserved_or_malformed_side_names(name):
    # Guards: an extra side can never shadow (or be mistaken for) the sides the gate reads.
    r = with_sft(REPORT)
    r["suites"]["bugfix"]["compare"] = {name: {"exact_fix": 0.2, "parses": 0.95}}
    with pytest.raises(CodetuneError, match="schema"):
        validate_report(r)


def test_table_and_html_show_the_extra_side_between_base_and_candidate():
    # Guards: the summary (stdout) and report.html show base, sft and candidate per metric;
    # "change" stays candidate - base (what the gate judges).
    lines = summary_table(with_sft(REPORT)).splitlines()
    assert lines[0].split() == ["suite", "metric", "n", "base", "sft", "candidate", "change"]
    row = next(x.split() for x in lines if x.startswith("bugfix") and "exact_fix" in x)
    assert row == ["bugfix", "exact_fix", "20", "0.100", "0.200", "0.250", "+0.150"]
    html = render_html(with_sft(REPORT), {})
    assert "<th>sft</th>" in html and "<td>0.200</td>" in html and "not used by the gate" in html
    # Without an extra side the table keeps its old columns.
    assert summary_table(REPORT).splitlines()[0].split() == [
        "suite",
        "metric",
        "n",
        "base",
        "candidate",
        "change",
    ]


def test_compare_sft_finds_the_kept_sft_adapter(tmp_path):
    # Guards: --compare-sft evaluates <adapter>/sft/, where training keeps the SFT-only adapter.
    final = adapter_dir(tmp_path / "adapter")
    adapter_dir(final / "sft")
    other = adapter_dir(tmp_path / "older")
    got = compare_adapter_dirs({"older": other}, True, final, tmp_path / "work")
    assert got == {"older": other, "sft": final / "sft"}


@pytest.mark.parametrize(
    ("compare", "sft", "message"),
    [
        ({}, True, "rl.enabled"),  # no sft/ kept: training ran without GRPO
        ({"candidate": "x"}, False, "not base or candidate"),
        ({"Has Space": "x"}, False, "lower-case"),
        ({"older": "/nonexistent"}, False, "not found"),
    ],
)
def test_bad_extra_sides_are_errors(tmp_path, compare, sft, message):
    # Guards: a missing or misnamed extra adapter fails before any model is loaded.
    final = adapter_dir(tmp_path / "adapter")
    with pytest.raises(CodetuneError, match=message):
        compare_adapter_dirs(compare, sft, final, tmp_path / "work")


def test_cli_refuses_a_malformed_compare_adapter(tmp_path, capsys):
    # Guards the CLI form NAME=DIR.
    final = adapter_dir(tmp_path / "adapter")
    rc = main(["evaluate", "--adapter", str(final), "--out", str(tmp_path / "o")]
              + ["--suites", "bugfix", "--compare-adapter", "sft"])  # fmt: skip
    assert rc == 2
    assert "NAME=DIR" in capsys.readouterr().err
