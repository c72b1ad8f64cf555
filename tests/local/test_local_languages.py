"""A non-Python codebase in the local workflow: the run input's languages and zip codebases."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest

from codetune.errors import CodetuneError
from codetune.languages import SUPPORTED
from codetune.local import _zip_codebase
from codetune.workflow import InvalidRunInput, validate_run_input
from codetune.workflow.schemas import RUN_INPUT, load_schema


def _request(doc: dict, tmp_path):
    return validate_run_input(doc, execution_name="java-run", artifact_bucket=str(tmp_path))


def test_schema_languages_are_the_supported_ones() -> None:
    # Guards the run input contract against drift from codetune.languages.
    prop = load_schema(RUN_INPUT)["properties"]["prepare"]["properties"]["languages"]
    assert tuple(prop["items"]["enum"]) == SUPPORTED


def test_java_example_reaches_prepare_as_config(repo_root, tmp_path) -> None:
    # Guards prepare.languages: it becomes the prepare config's `languages` (what the job and
    # the local step read), and a contradicting config.languages is refused by path.
    doc = json.loads((repo_root / "examples" / "run-input.local.java.json").read_text())
    req = _request(doc, tmp_path)
    assert req.prepare.config["languages"] == ["java"]
    assert req.data.codebase_s3_uri.endswith("src.zip#java.base/java/util/")
    doc["prepare"]["config"]["languages"] = ["go"]
    with pytest.raises(InvalidRunInput, match=r"\$\.prepare\.languages"):
        _request(doc, tmp_path)


def test_zip_codebase_extracts_the_prefix_only(tmp_path) -> None:
    # Guards ARCHIVE.zip#PREFIX: members under PREFIX are extracted at their paths, an
    # escaping member name stays inside the destination, and a prefix without files fails.
    archive = tmp_path / "src.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("java.base/java/util/A.java", "class A {}")
        zf.writestr("java.base/java/io/B.java", "class B {}")
        zf.writestr("java.base/java/util/../../../../evil.java", "class E {}")
    dest = _zip_codebase(f"{archive}#java.base/java/util/", tmp_path / "codebase")
    got = sorted(str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file())
    assert got == ["java.base/java/util/A.java", "java.base/java/util/evil.java"]
    with pytest.raises(CodetuneError, match="has no file under 'nope/'"):
        _zip_codebase(f"{archive}#nope/", tmp_path / "c2")
    with pytest.raises(CodetuneError, match="does not exist"):
        _zip_codebase(f"{tmp_path}/missing.zip", tmp_path / "c3")


@pytest.mark.slow
def test_java_codebase_runs_through_evaluate_and_the_gate(repo_root, tmp_path) -> None:
    # Guards the local workflow on a non-Python codebase: the shipped Java input (the JDK's
    # java.util from its src.zip) with a tiny schedule runs prepare, training, evaluation and
    # the gate; the report's bugfix suite is Java, scored and broken down as Java.
    from codetune.local import LocalRun, execute, stop_server

    doc = json.loads((repo_root / "examples" / "run-input.local.java.json").read_text())
    archive = doc["data"]["codebase"].partition("#")[0]
    if not Path(archive).is_file():
        pytest.skip(f"{archive} missing: `make setup` installs openjdk-17-source")
    doc["prepare"]["config"] |= {"max_examples_per_task": 40, "workers": 1}
    doc["training"]["overrides"] |= {"max_steps": 2, "per_device_batch_size": 2}
    doc["training"]["overrides"] |= {"eval_max_examples": 2, "save_steps": 1}
    doc["evaluation"] = {
        "suites": ["bugfix"],
        "limit": 2,
        # the mechanics are under test, not the model: thresholds that cannot trigger
        "thresholds": {
            "min_bugfix_gain": -1,
            "max_p_value": 1,
            "min_bugfix_exact_fix": 0,
            "min_bugfix_parses": 0,
        },
    }
    doc["deployment"]["enabled"] = False
    path = tmp_path / "input.json"
    path.write_text(json.dumps(doc))
    run = LocalRun(input_path=path, out=tmp_path / "out", run_name="java", log=print)
    try:
        summary = execute(run)
    finally:
        stop_server(run)
    assert summary["gate"]["passed"]
    report = json.loads((run.eval_dir / "report.json").read_text())
    bug = report["suites"]["bugfix"]
    assert bug["languages"] == {"java": bug["n"]} and bug["n"] == 2
    assert set(bug["candidate"]["by_language"]) == {"java"}
    samples = (run.eval_dir / "samples.jsonl").read_text().splitlines()
    assert all(json.loads(s)["completion"].startswith("```java\n") for s in samples)
