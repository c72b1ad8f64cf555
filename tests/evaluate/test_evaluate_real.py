"""A small real evaluation: embedded model, random LoRA adapter, 2 HumanEval + 3 bugfix, and
an extra ``sft`` side whose adapter has zeroed LoRA B matrices (= the base model)."""

from __future__ import annotations

import json
import shutil

import jsonschema
import pytest

from codetune.evaluate import run_evaluation
from codetune.evaluate.config import EvalConfig

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def adapter_with_sft(random_adapter, tmp_path_factory):
    """The random adapter as the final adapter, with an ``sft/`` subdirectory (what training
    keeps with rl.enabled) holding the same adapter with every LoRA B matrix zeroed: its
    answers must be the base model's, so they show which weights the sft side really used."""
    from safetensors.torch import load_file, save_file

    final = tmp_path_factory.mktemp("with-sft") / "adapter"
    shutil.copytree(random_adapter, final)
    shutil.copytree(random_adapter, final / "sft")
    weights = final / "sft" / "adapter_model.safetensors"
    state = load_file(weights)
    save_file({k: v * 0 if "lora_B" in k else v for k, v in state.items()}, weights)
    return final


@pytest.fixture(scope="module")
def report_dir(adapter_with_sft, bugfix_data, tmp_path_factory, embedded_model_dir):
    out = tmp_path_factory.mktemp("eval")
    config = EvalConfig(
        suites=["humaneval", "bugfix", "general"],
        limit={"general": 10},  # the gate's minimum; 48 tokens each: seconds on CPU
        general_max_tokens=48,
        humaneval_tasks=["HumanEval/53", "HumanEval/55"],  # the two shortest prompts
        max_new_tokens=10,  # CPU budget; scores are near zero either way
        bugfix_max_new_tokens=10,
        run_id="test-run",
        thresholds={"min_humaneval_pass1": 0, "min_bugfix_exact_fix": 0},
        timeout_s=3,
        batch_size=2,  # fewer slots than rows: continuous batching refills them
        compare_sft=True,
        draft_tokens=4,  # prompt-lookup drafts for the bugfix rows (off by default)
    )
    run_evaluation(adapter_with_sft, bugfix_data, out, config)
    return out


def test_report_follows_schema_and_contract(report_dir, repo_root):
    # Guards the report contract the QualityGate reads.
    report = json.loads((report_dir / "report.json").read_text())
    schema = json.loads((repo_root / "schemas" / "report.schema.json").read_text())
    jsonschema.validate(report, schema)
    assert report["runId"] == "test-run"
    he, bf = report["suites"]["humaneval"], report["suites"]["bugfix"]
    assert he["n"] == 2 and bf["n"] == 3
    for side in ("base", "candidate"):
        assert 0 <= he[side]["pass@1"] <= 1
        assert set(bf[side]["by_mutation"]) == set(bf["mutations"])
        assert sum(he["status"][side].values()) == 2
    assert isinstance(report["gate"]["passed"], bool) and report["gate"]["reasons"]
    # the extra side is reported per suite, beside (not instead of) base/candidate
    assert list(report["compare"]) == ["sft"]
    assert 0 <= he["compare"]["sft"]["pass@1"] <= 1 and sum(he["status"]["sft"].values()) == 2
    assert set(bf["compare"]["sft"]["by_mutation"]) == set(bf["mutations"])
    assert report["generation"]["sides"]["sft"]["rows"] == 5
    assert report["generation"]["completion_tokens"] > 0
    # The gate's evidence: paired counts over the same problems, and per-suite throughput.
    for suite, n in (("humaneval", 2), ("bugfix", 3)):
        assert sum(report["suites"][suite]["paired"].values()) == n
        assert report["generation"]["suites"][suite]["candidate"]["rows"] == n
    # Asked for, greedy bugfix rows decode with prompt-lookup drafts (wall time, tokens/s and
    # drafts recorded per suite and side); HumanEval rows never do.
    bf_gen = report["generation"]["suites"]["bugfix"]["base"]
    assert bf_gen["draft_tokens"] > 0 and bf_gen["forwards"] > 0 and bf_gen["tokens_per_s"] > 0
    assert "prompt-lookup" in bf_gen["engine"] and bf_gen["accepted"] <= bf_gen["drafted"]
    assert report["generation"]["suites"]["humaneval"]["base"]["draft_tokens"] == 0
    # The forgetting guard: per-file losses for each side; the zero-delta sft side's loss is
    # the base's, the random adapter's is not.
    gen = report["suites"]["general"]
    assert gen["n"] == len(gen["files"]) == 10
    assert gen["compare"]["sft"]["loss"] == pytest.approx(gen["base"]["loss"], abs=1e-5)
    assert all(f["base"] != f["candidate"] for f in gen["files"])
    assert any(r.startswith(("PASS general", "FAIL general")) for r in report["gate"]["reasons"])


def test_samples_saved_per_problem_and_side(report_dir):
    # Guards: every (problem, side) answer is saved for inspection, with its outcome.
    rows = [json.loads(x) for x in (report_dir / "samples.jsonl").read_text().splitlines()]
    assert len(rows) == (2 + 3) * 3
    assert {(r["suite"], r["side"]) for r in rows} == {
        (s, side) for s in ("humaneval", "bugfix") for side in ("base", "candidate", "sft")
    }
    for r in rows:
        assert r["completion"].startswith("```python\n")
        assert r["completion_tokens"] <= 10
        if r["suite"] == "humaneval":
            assert r["status"] in ("pass", "fail", "timeout", "error")
        else:
            assert isinstance(r["exact_fix"], bool) and isinstance(r["parses"], bool)
    # The random adapter changes at least one answer: base and candidate really differ.
    by = {(r["suite"], r["task_id"], r["side"]): r["completion"] for r in rows}
    assert any(
        by[(s, t, "base")] != by[(s, t, "candidate")] for (s, t, side) in by if side == "base"
    )
    # The sft side answered with its own (zero-delta) weights, not the candidate's.
    assert all(by[(s, t, "sft")] == by[(s, t, "base")] for (s, t, side) in by if side == "base")


def test_html_is_self_contained_with_charts(report_dir):
    html = (report_dir / "report.html").read_text()
    assert "data:image/png;base64," in html and "<img" in html
    assert 'src="http' not in html  # nothing fetched from elsewhere
    assert (report_dir / "suites.png").read_bytes()[:4] == b"\x89PNG"
    assert (report_dir / "mutations.png").is_file()
