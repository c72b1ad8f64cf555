"""`codetune evaluate score` and the command's bad-input errors (no model)."""

from __future__ import annotations

import json

import pytest

from codetune.cli import build_parser, main

CORRECT = (
    "    for i, a in enumerate(numbers):\n"
    "        for j, b in enumerate(numbers):\n"
    "            if i != j and abs(a - b) < threshold:\n"
    "                return True\n"
    "    return False\n"
)


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_both_forms_parse():
    # Guards the CLI contract: the evaluate form and the score action both parse.
    p = build_parser()
    a = p.parse_args(["evaluate", "--adapter", "a", "--data", "d", "--out", "o", "--limit", "3"])
    assert a.adapter == "a" and a.limit == 3 and a.action is None
    s = p.parse_args(
        ["evaluate", "score", "--suite", "humaneval", "--completions", "c", "--out", "o"]
    )
    assert s.action == "score" and s.score_out == "o" and s.completions == "c"


def test_score_hand_made_completions(tmp_path, capsys):
    # Guards scoring of external completions: one correct, one wrong, one hanging.
    comps = write_jsonl(
        tmp_path / "c.jsonl",
        [
            {"task_id": "HumanEval/0", "completion": CORRECT},
            {"task_id": "HumanEval/0", "completion": "    return False\n"},
            {"task_id": "HumanEval/2", "completion": "    while True:\n        pass\n"},
        ],
    )
    out = tmp_path / "out"
    rc = main(
        [
            "evaluate",
            "score",
            "--suite",
            "humaneval",
            "--completions",
            str(comps),
            "--out",
            str(out),
            "--timeout",
            "2",
        ]
    )
    assert rc == 0
    results = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
    assert [r["status"] for r in results] == ["pass", "fail", "timeout"]
    assert [r["passed"] for r in results] == [True, False, False]
    assert all(r["duration_s"] > 0 for r in results)
    summary = json.loads((out / "summary.json").read_text())
    # HumanEval/0: 1 of 2 pass -> 0.5; HumanEval/2: 0 -> mean 0.25
    assert summary["pass@1"] == pytest.approx(0.25)
    assert summary["status"] == {"fail": 1, "pass": 1, "timeout": 1}


def test_score_unknown_task_id_is_an_error(tmp_path, capsys):
    comps = write_jsonl(tmp_path / "c.jsonl", [{"task_id": "HumanEval/999", "completion": "x"}])
    rc = main(["evaluate", "score", "--completions", str(comps), "--out", str(tmp_path / "o")])
    assert rc == 2
    assert "unknown task id" in capsys.readouterr().err
    assert not (tmp_path / "o" / "summary.json").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--adapter", "/nonexistent/adapter"], "adapter"),
        (["--suites", "bugfix", "--data", "/nonexistent/data"], "test.jsonl"),
        (["--suites", "nope"], "unknown suite"),
        (["--samples", "3"], "temperature"),
        (["--threshold", "min_bugfix_gian=0.1"], "unknown quality-gate threshold"),
    ],
)
def test_bad_input_exits_nonzero(tmp_path, capsys, random_adapter_stub, args, message):
    base = ["evaluate", "--adapter", str(random_adapter_stub), "--out", str(tmp_path / "o")]
    rc = main([*base, "--suites", "humaneval", *args])
    assert rc == 2
    assert message in capsys.readouterr().err


def test_missing_base_model_is_an_error(tmp_path, capsys, random_adapter_stub):
    # Guards: an adapter naming a base that is not here fails instead of swapping models.
    cfg = json.loads((random_adapter_stub / "adapter_config.json").read_text())
    cfg["base_model_name_or_path"] = "/nonexistent/base"
    moved = tmp_path / "adapter"
    moved.mkdir()
    (moved / "adapter_config.json").write_text(json.dumps(cfg))
    rc = main(
        [
            "evaluate",
            "--adapter",
            str(moved),
            "--suites",
            "humaneval",
            "--limit",
            "1",
            "--out",
            str(tmp_path / "o"),
        ]
    )
    assert rc == 2
    assert "base model" in capsys.readouterr().err


def test_report_with_wrong_schema_is_an_error(tmp_path):
    from codetune.errors import CodetuneError
    from codetune.evaluate.report import load_report

    bad = tmp_path / "report.json"
    bad.write_text(json.dumps({"runId": "x", "suites": {}}))
    with pytest.raises(CodetuneError, match="schema"):
        load_report(bad)
