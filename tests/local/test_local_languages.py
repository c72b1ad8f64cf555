"""A non-Python codebase in the local workflow: the run input's languages and zip codebases."""

from __future__ import annotations

import json
import zipfile

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
