"""Evaluation of a bugfix split with Python and Java records: scoring and report per language."""

from __future__ import annotations

import json

import pytest

from codetune.evaluate import run_evaluation
from codetune.evaluate.config import EvalConfig
from codetune.evaluate.report import summary_table, validate_report

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def mixed_data(bugfix_data, tmp_path_factory, repo_root):
    """The 3 Python bugfix records of ``bugfix_data`` and the 2 shortest Java ones prepared
    from the JDK's java.util (tests/data/corpora.py)."""
    import importlib.util

    from codetune.config import load_config
    from codetune.data.config import PrepareConfig
    from codetune.data.pipeline import prepare

    spec = importlib.util.spec_from_file_location("corpora", repo_root / "tests/data/corpora.py")
    corpora = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(corpora)

    root = tmp_path_factory.mktemp("java-src")
    corpora.write_tree(root, "java", 6)
    split = '{"train": 0, "validation": 0, "test": 1}'
    cfg = load_config(PrepareConfig, None, ["workers=1", "tasks=[bugfix]", f"split={split}"])
    java = tmp_path_factory.mktemp("java-ds") / "ds"
    prepare(cfg, root, java, progress=False)
    rows = [json.loads(x) for x in (java / "test.jsonl").read_text().splitlines()]
    rows.sort(key=lambda r: len(r["messages"][-1]["content"]))
    py = (bugfix_data / "test.jsonl").read_text()
    out = tmp_path_factory.mktemp("mixed-ds")
    (out / "test.jsonl").write_text(py + "".join(json.dumps(r) + "\n" for r in rows[:2]))
    return out


@pytest.fixture(scope="module")
def report_dir(random_adapter, mixed_data, tmp_path_factory, embedded_model_dir):
    out = tmp_path_factory.mktemp("eval-langs")
    config = EvalConfig(
        suites=["bugfix"],
        bugfix_max_new_tokens=8,  # CPU budget: the scores are not the point here
        thresholds={"min_bugfix_exact_fix": 0},
        batch_size=4,
    )
    run_evaluation(random_adapter, mixed_data, out, config)
    return out


def test_report_breaks_bugfix_down_by_language(report_dir) -> None:
    # Guards the per-language report: record counts per language, exact_fix/parses/
    # by_mutation per language and side, valid against the schema, and a table row per
    # language.
    report = json.loads((report_dir / "report.json").read_text())
    validate_report(report)
    bug = report["suites"]["bugfix"]
    assert bug["languages"] == {"java": 2, "python": 3}
    for side in ("base", "candidate"):
        by = bug[side]["by_language"]
        assert set(by) == {"java", "python"}
        for m in by.values():
            assert set(m) == {"exact_fix", "parses", "by_mutation"}
    table = summary_table(report)
    assert "bugfix[java]" in table and "bugfix[python]" in table


def test_answers_prefilled_and_scored_in_their_language(report_dir) -> None:
    # Guards generation and scoring per record: a Java answer starts with the ```java fence
    # and is parsed as Java (a truncated answer does not parse; the reference would).
    samples = [json.loads(x) for x in (report_dir / "samples.jsonl").read_text().splitlines()]
    java = [s for s in samples if s["language"] == "java"]
    assert len(java) == 4 and all(s["completion"].startswith("```java\n") for s in java)
    assert all(
        s["completion"].startswith("```python\n") for s in samples if s["language"] == "python"
    )
