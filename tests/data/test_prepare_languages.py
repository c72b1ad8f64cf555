"""`prepare` on a mixed tree: Python, JavaScript, TypeScript, Java, Go and C++ from real packages."""

from __future__ import annotations

import json
import shutil
import sysconfig
from pathlib import Path

import pytest

from codetune.config import load_config
from codetune.data.config import PrepareConfig
from codetune.data.pipeline import SPLITS, merge, prepare
from codetune.data.ts_mutations import SYNTAX_OPERATORS as TS_SYNTAX
from codetune.io import read_jsonl
from codetune.languages import LANGUAGES
from codetune.prompts import extract_code
from codetune.train.rewards import normalized_tree

from .corpora import write_tree

STDLIB = Path(sysconfig.get_paths()["stdlib"])
MIXED = ("python", "javascript", "typescript", "java", "go", "cpp")
AWS_KEY = "AKIAIOSFODNN7EXAMPLE"


def _cfg(**kw) -> PrepareConfig:
    base = dict(workers=1, split={"train": 0.6, "validation": 0.2, "test": 0.2})
    base.update(kw)
    return load_config(PrepareConfig, None, [f"{k}={json.dumps(v)}" for k, v in base.items()])


@pytest.fixture(scope="module")
def mixed(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("mixed")
    (root / "python").mkdir()
    for name in ("textwrap.py", "heapq.py", "shlex.py"):
        shutil.copy(STDLIB / name, root / "python" / name)
    write_tree(root, "javascript", 12)
    write_tree(root, "typescript", 40)
    write_tree(root, "cpp", 40)
    write_tree(root, "java", 12)
    write_tree(root, "go", 25)
    # the same Java file twice (the copy comes later in the walk): its functions are duplicates
    java = sorted((root / "java").rglob("*.java"))[0]
    (root / "zcopy").mkdir()
    shutil.copy(java, root / "zcopy" / java.name)
    (root / "broken").mkdir()
    (root / "broken" / "Broken.java").write_text(
        "class B {\n  int f() {\n    return 1 +;\n  }\n}\n"
    )
    (root / "broken" / "keys.ts").write_text(
        "// deploy helper\nexport function client(region: string): string[] {\n"
        f'  const id = "{AWS_KEY}";\n  if (!region) {{\n    region = "us-east-1";\n  }}\n'
        "  return [id, region];\n}\n"
    )
    (root / "README.md").write_text("not code")
    return root


@pytest.fixture(scope="module")
def dataset(mixed, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("ds") / "mixed"
    return out, prepare(_cfg(), mixed, out, progress=False)


def _records(out: Path) -> list[dict]:
    return [r for s in SPLITS for r in read_jsonl(out / f"{s}.jsonl")]


def test_both_tasks_for_every_language(dataset) -> None:
    # Guards the done-when: verified bugfix and complete examples for each language of a
    # mixed tree, counted per language in the manifest, prompts naming the language and
    # fencing the code with its tag.
    out, manifest = dataset
    recs = _records(out)
    got = {(r["meta"]["language"], r["task"]) for r in recs}
    assert got == {(lang, task) for lang in MIXED for task in ("bugfix", "complete")}
    counts = manifest["counts"]["language_task"]
    for lang in MIXED:
        for task in ("bugfix", "complete"):
            n = sum(1 for r in recs if r["meta"]["language"] == lang and r["task"] == task)
            assert counts[f"{lang}/{task}"] == n > 0
        assert manifest["files"]["by_language"][lang]["used"] > 0
    for r in recs:
        lang = LANGUAGES[r["meta"]["language"]]
        user, answer = r["messages"][0]["content"], r["messages"][1]["content"]
        assert f"following {lang.display} {lang.noun}" in user
        assert f"```{lang.fence}\n" in user and answer.startswith(f"```{lang.fence}\n")


def test_every_bugfix_answer_parses_and_its_mutant_is_verified(dataset) -> None:
    # Guards the verification contract per language: the answer (the original function)
    # parses in its language; a syntax mutant does not; a semantic one does, with another tree.
    out, _ = dataset
    ops = set()
    for r in _records(out):
        if r["task"] != "bugfix":
            continue
        lang, op = r["meta"]["language"], r["meta"]["mutation"]
        answer = extract_code(r["messages"][1]["content"])
        mutant = extract_code(r["messages"][0]["content"])
        want = normalized_tree(answer, lang)
        assert want is not None, (lang, r["meta"]["symbol"])
        got = normalized_tree(mutant, lang)
        if op in TS_SYNTAX or op == "missing_colon":
            assert got is None, (lang, op, r["meta"]["symbol"])
        else:
            assert got is not None and got != want, (lang, op, r["meta"]["symbol"])
        ops.add((lang, op))
    for lang in MIXED:
        assert len({op for la, op in ops if la == lang}) >= 6, (lang, ops)


def test_filters_apply_to_every_language(dataset) -> None:
    # Guards "everything else unchanged" across languages: a file with a credential is
    # dropped whatever its language, a file that does not parse is counted, an exact copy in
    # another directory is deduplicated, and no path lands in two splits.
    out, manifest = dataset
    skipped = manifest["files"]["skipped"]
    examples = manifest["files"]["skipped_examples"]
    assert "broken/keys.ts" in examples["credentials"]
    assert "broken/Broken.java" in examples["syntax_error"]
    assert skipped["not_included"] >= 1  # README.md
    recs = _records(out)
    assert not any(AWS_KEY in json.dumps(r) for r in recs)
    assert not any(r["meta"]["path"].startswith("zcopy/") for r in recs)
    assert manifest["functions"]["skipped"]["exact_duplicate"] > 0
    split_of = {}
    for r in recs:
        assert split_of.setdefault(r["meta"]["path"], r["meta"]["split"]) == r["meta"]["split"]


def test_languages_selects_and_merge_keeps_languages(mixed, dataset, tmp_path) -> None:
    # Guards prepare.languages: only the chosen languages are read (the rest counted as not
    # included), and a sharded run merges back with the per-language counts.
    out = tmp_path / "java"
    m = prepare(_cfg(languages=["java"]), mixed, out, progress=False)
    assert {r["meta"]["language"] for r in _records(out)} == {"java"}
    assert set(m["files"]["by_language"]) == {"java"}
    shards = []
    for i in range(2):
        shards.append(tmp_path / f"s{i}")
        prepare(_cfg(), mixed, shards[-1], shard_index=i, num_shards=2, progress=False)
    merged = merge(shards, tmp_path / "merged", _cfg())
    langs = {k.split("/")[0] for k in merged["counts"]["language_task"]}
    assert langs == set(MIXED)


def test_unknown_language_is_a_config_error() -> None:
    # Guards bad input: an unknown language names the key and the supported ones.
    from codetune.errors import ConfigError

    with pytest.raises(ConfigError, match="languages: unknown 'kotlin'; supported: python"):
        _cfg(languages=["kotlin"])


def test_python_prompt_text_is_unchanged_and_others_name_their_language() -> None:
    # Guards the trained-on prompt: Python's wording is what adapters were trained with; the
    # other languages differ only in the language, its noun and the fence tag.
    from codetune.prompts import answer_prefix, messages

    py = messages("bugfix", "x = 1", "y = 2", path="a.py")
    assert py[0]["content"] == (
        "The following Python function from `a.py` contains exactly one bug. Reply with the "
        "corrected function only, in a single ```python code block.\n\n```python\nx = 1\n```"
    )
    java = messages("complete", "int f() {", "int f() { return 1; }", language="java")
    assert java[0]["content"].startswith(
        "Complete the following Java method: write its full body. Reply with the whole "
        "method only, in a single ```java code block.\n\n```java\nint f() {\n```"
    )
    assert java[1]["content"] == "```java\nint f() { return 1; }\n```"
    assert answer_prefix("cpp") == "```cpp\n" and answer_prefix() == "```python\n"
