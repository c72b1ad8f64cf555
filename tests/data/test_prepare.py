"""`codetune prepare` end to end on a small real codebase (copies of stdlib modules)."""

from __future__ import annotations

import json
import shutil
import sysconfig
from pathlib import Path

import pytest

from codetune.cli import main as cli_main
from codetune.config import load_config
from codetune.data.config import OPERATORS, PrepareConfig
from codetune.data.pipeline import SPLITS, merge, prepare, split_quotas
from codetune.errors import CodetuneError
from codetune.io import read_jsonl
from codetune.prompts import extract_code, messages

STDLIB = Path(sysconfig.get_paths()["stdlib"])
AWS_KEY = "AKIAIOSFODNN7EXAMPLE"


def _cfg(**kw) -> PrepareConfig:
    base = dict(
        workers=1,
        max_file_bytes=60_000,
        split={"train": 0.5, "validation": 0.25, "test": 0.25},
    )
    base.update(kw)
    return load_config(PrepareConfig, None, [f"{k}={json.dumps(v)}" for k, v in base.items()])


@pytest.fixture(scope="module")
def codebase(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("codebase")
    for i, name in enumerate(["textwrap.py", "heapq.py", "bisect.py", "shlex.py", "colorsys.py"]):
        d = root / f"pkg{i % 3}"
        d.mkdir(exist_ok=True)
        shutil.copy(STDLIB / name, d / name)
    # duplicates of heapq: only comments differ (exact after normalization), and one
    # identifier renamed: `merge` and `nlargest` keep 95% and 93% of their shingles
    # (near-duplicates at the 0.85 threshold; the rest change too much to count)
    (root / "dup").mkdir()
    heapq_src = (STDLIB / "heapq.py").read_text()
    (root / "dup" / "heapq2.py").write_text(heapq_src.replace("# ", "#  note: "))
    (root / "dup" / "heapq3.py").write_text(heapq_src.replace("reverse", "rev"))
    # a credential inside an otherwise good function: the whole file must be dropped
    (root / "settings_prod.py").write_text(
        "def connect(region):\n"
        '    """Open a client."""\n'
        f'    key_id = "{AWS_KEY}"\n'
        "    if region is None:\n"
        "        region = 'us-east-1'\n"
        "    return key_id, region\n"
    )
    (root / "blob.py").write_bytes(b"def f():\n    return 1\n\0\0\0binary")
    (root / "latin.py").write_bytes("def f():\n    return 'caf\xe9'\n".encode("latin-1"))
    (root / "py2.py").write_text('def f(x):\n    print "x"\n    return x\n')
    shutil.copy(STDLIB / "argparse.py", root / "argparse.py")  # > max_file_bytes
    (root / ".git").mkdir()
    (root / ".git" / "hook.py").write_text("def hook():\n    a = 1\n    return a\n")
    (root / "notes.txt").write_text("not python")
    return root


@pytest.fixture(scope="module")
def dataset(codebase, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("out") / "ds"
    return out, prepare(_cfg(), codebase, out, progress=False)


def _records(out: Path) -> list[dict]:
    return [r for s in SPLITS for r in read_jsonl(out / f"{s}.jsonl")]


def test_outputs_and_record_contract(dataset) -> None:
    # Guards the dataset contract consumed by train/evaluate: files, fields, meta, and that
    # prompts come from codetune.prompts and the answer is the original function.
    out, manifest = dataset
    assert sorted(p.name for p in out.iterdir()) == [
        "manifest.json", "test.jsonl", "train.jsonl", "validation.jsonl"
    ]  # fmt: skip
    recs = _records(out)
    assert manifest["counts"]["task"]["bugfix"] >= 30 and manifest["counts"]["task"]["complete"] > 0
    for r in recs:
        meta = r["meta"]
        assert {"path", "symbol", "mutation", "split"} <= set(meta)
        assert r["task"] in ("bugfix", "complete")
        assert (
            (meta["mutation"] in OPERATORS) if r["task"] == "bugfix" else meta["mutation"] is None
        )
        user = r["messages"][0]["content"]
        answer = extract_code(r["messages"][-1]["content"])
        prompt_code = user.split("```python\n", 1)[1].rsplit("\n```", 1)[0]
        assert r["messages"] == messages(r["task"], prompt_code, answer, path=meta["path"])
        if r["task"] == "bugfix":
            assert prompt_code.rstrip() != answer.rstrip()
        else:
            assert answer.startswith(prompt_code.rstrip())
        assert meta["tokens"] <= 1024


def test_no_path_in_two_splits_and_near_duplicates_removed(dataset) -> None:
    # Guards split leakage: a file's functions all land in one split, and a near-duplicate
    # file contributes nothing that already exists elsewhere.
    out, manifest = dataset
    split_of_path: dict[str, set] = {}
    for s in SPLITS:
        for r in read_jsonl(out / f"{s}.jsonl"):
            assert r["meta"]["split"] == s
            split_of_path.setdefault(r["meta"]["path"], set()).add(s)
    assert all(len(v) == 1 for v in split_of_path.values())
    assert len({s for v in split_of_path.values() for s in v}) >= 2  # the split is exercised
    by_path: dict[str, set] = {}
    for r in _records(out):
        by_path.setdefault(r["meta"]["path"], set()).add(r["meta"]["symbol"])
    # dup/heapq2.py is walked first and wins; the identical functions of the original go
    heapq_like = [p for p in by_path if p.endswith(("heapq.py", "heapq2.py"))]
    assert len(heapq_like) >= 1
    assert not set.intersection(*[by_path[p] for p in heapq_like]) if len(heapq_like) > 1 else True
    skipped = manifest["functions"]["skipped"]
    assert skipped.get("exact_duplicate", 0) >= 10 and skipped.get("near_duplicate", 0) > 0


def test_planted_credential_never_reaches_output(dataset) -> None:
    # Guards that a file containing a credential is dropped entirely (a model must never
    # memorize a secret), and that the drop is counted.
    out, manifest = dataset
    for f in out.iterdir():
        text = f.read_text()
        assert AWS_KEY not in text
        if f.suffix == ".jsonl":
            assert "settings_prod.py" not in text
    assert manifest["files"]["skipped"]["credentials"] == 1


def test_skipped_files_counted_by_reason(dataset) -> None:
    # Guards that bad files are skipped (never fatal) and each is counted by reason.
    _, manifest = dataset
    sk = manifest["files"]["skipped"]
    assert sk["binary"] == 1 and sk["undecodable"] == 1 and sk["syntax_error"] == 1
    assert sk["too_large"] == 1 and sk["excluded_dir"] >= 1 and sk["not_included"] == 1
    assert manifest["files"]["skipped_examples"]["syntax_error"] == ["py2.py"]


def test_mutation_mix_is_balanced(dataset) -> None:
    # Guards the balance: no operator dominates, and most operators are represented.
    _, manifest = dataset
    mix = manifest["counts"]["mutation"]
    assert len(mix) >= 8
    assert max(mix.values()) <= 4 * (sum(mix.values()) / len(mix))


def test_deterministic_across_runs_and_worker_counts(codebase, dataset, tmp_path) -> None:
    # Guards determinism: same input + seed → byte-identical data files, whether one
    # process or two did the work.
    out, _ = dataset
    again = tmp_path / "again"
    prepare(_cfg(workers=2), codebase, again, progress=False)
    for s in SPLITS:
        assert (again / f"{s}.jsonl").read_bytes() == (out / f"{s}.jsonl").read_bytes()


def test_limits_and_merge_dedups(codebase, dataset, tmp_path) -> None:
    # Guards max_examples_per_task (the demo's small-dataset knob), shard coverage, and that
    # merge removes duplicates across shards.
    small = prepare(_cfg(max_examples_per_task=7), codebase, tmp_path / "small", progress=False)
    # 3/2/2 per split; this codebase's test split has too few docstring functions for 2
    assert small["counts"]["task"]["bugfix"] == 7 and small["counts"]["task"]["complete"] <= 7
    shards = []
    for i in range(2):
        d = tmp_path / f"shard{i}"
        prepare(_cfg(), codebase, d, shard_index=i, num_shards=2, progress=False)
        shards.append(d)
    merged = merge(shards + [shards[0]], tmp_path / "merged", _cfg())
    recs = _records(tmp_path / "merged")
    assert len({r["id"] for r in recs}) == len(recs)  # shard 0 twice: duplicates removed
    paths = {r["meta"]["path"] for r in recs}
    full_paths = {r["meta"]["path"] for r in _records(dataset[0])}
    assert paths <= full_paths | {"dup/heapq2.py", "dup/heapq3.py"}
    assert sum(merged["counts"]["task_split"].values()) == len(recs)


SMALL_MODULES = [
    "bisect.py", "colorsys.py", "fnmatch.py", "glob.py", "heapq.py", "shlex.py", "sched.py",
    "textwrap.py", "queue.py", "graphlib.py", "netrc.py", "copy.py", "keyword.py", "uu.py",
    "quopri.py", "stringprep.py", "base64.py", "gettext.py",
]  # fmt: skip


def test_cap_is_shared_by_every_split(tmp_path) -> None:
    # Guards the per-split cap: a small cap on a small codebase still fills validation and
    # test (a cap counted in walk order gave all of it to the first split's files), each
    # split stays within its share, and the totals stay within the cap.
    root = tmp_path / "codebase"
    (root / "src").mkdir(parents=True)  # src/*.py: 9 files hash to train, 4 + 5 to the others
    for name in SMALL_MODULES:
        shutil.copy(STDLIB / name, root / "src" / name)
    cfg = _cfg(max_examples_per_task=10, split={"train": 0.6, "validation": 0.2, "test": 0.2})
    m = prepare(cfg, root, tmp_path / "capped", progress=False)
    ts = m["counts"]["task_split"]
    for task in ("bugfix", "complete"):
        assert m["counts"]["task"][task] <= 10
        assert ts[f"{task}/train"] <= 6
        for s in ("validation", "test"):
            assert 1 <= ts[f"{task}/{s}"] <= 2
    assert split_quotas(60, {"train": 0.9, "validation": 0.05, "test": 0.05}) == {
        "train": 54, "validation": 3, "test": 3
    }  # fmt: skip
    assert split_quotas(10, {"train": 0.9, "validation": 0.05, "test": 0.05}) == {
        "train": 8, "validation": 1, "test": 1
    }  # fmt: skip


@pytest.mark.parametrize("case", ["missing", "empty", "no_match", "unparsable"])
def test_bad_input_fails_cleanly_and_publishes_nothing(case, tmp_path) -> None:
    # Guards the bad-input contract: clear error, exit status 2, no output directory.
    src = tmp_path / "src"
    if case != "missing":
        src.mkdir()
    if case == "no_match":
        (src / "README.md").write_text("# hi\n")
    if case == "unparsable":
        (src / "a.py").write_text('def f():\n    print "py2"\n    return 1\n')
        (src / "b.py").write_text("def g(:\n    pass\n")
    out = tmp_path / "out"
    with pytest.raises(CodetuneError):
        prepare(_cfg(), src, out, progress=False)
    assert not out.exists()
    if case in ("missing", "unparsable"):  # the CLI maps the error to exit status 2
        rc = cli_main(["prepare", "--codebase", str(src), "--out", str(out), "--set", "workers=1"])
        assert rc == 2 and not out.exists()
    assert not list(tmp_path.glob(".out.*"))  # no temporary directory left behind


def test_shipped_config_loads(repo_root) -> None:
    # Guards the shipped config: it loads, validates, and its weights name real operators.
    cfg = load_config(PrepareConfig, repo_root / "training_image/prepare.yaml")
    assert set(cfg.mutation_weights) == set(OPERATORS)
    with pytest.raises(CodetuneError):
        load_config(PrepareConfig, None, ["mutation_weights.no_such_op=1"])


def test_sagemaker_processing_defaults(tmp_path, monkeypatch) -> None:
    # Guards the Processing-job contract: with no paths, prepare reads
    # <root>/processing/input/code and publishes <root>/processing/output/dataset.
    code = tmp_path / "processing" / "input" / "code"
    code.mkdir(parents=True)
    shutil.copy(STDLIB / "bisect.py", code / "bisect.py")
    monkeypatch.setenv("CODETUNE_SM_ROOT", str(tmp_path))
    assert cli_main(["prepare", "--set", "workers=1", "--no-progress"]) == 0
    out = tmp_path / "processing" / "output" / "dataset"
    assert json.loads((out / "manifest.json").read_text())["counts"]["task"]["bugfix"] > 0


def test_record_line_is_the_plain_json_of_the_record() -> None:
    # Guards the one-encoding record writer: byte-identical to dumping the record dict.
    import json

    import orjson

    from codetune.data.pipeline import record_id, record_line
    from codetune.prompts import messages

    msgs = messages(
        "bugfix", 'def f():\n    return "é\\n\\t<"\n', "def f():\n    pass\n", path="a.py"
    )
    meta = {"path": "a.py", "symbol": "f", "lineno": 3, "mutation": None, "split": "test",
            "tokens": 12}  # fmt: skip
    rec = {"id": record_id("bugfix", msgs), "task": "bugfix", "messages": msgs, "meta": meta}
    line = record_line("bugfix", msgs, meta)
    assert line == orjson.dumps(rec, option=orjson.OPT_SORT_KEYS) + b"\n"
    assert json.loads(line) == rec  # what every reader (json, datasets) gets back


def test_multi_instance_processing_job_then_merge_job(tmp_path, monkeypatch) -> None:
    # Guards the scale-out contract the state machine relies on: in a 2-instance Processing
    # job each instance (its own ShardedByS3Key part of the files) writes its shard under
    # <output>/<host>/; the MergeDataset job reads the whole shards prefix as one input and
    # publishes one deduplicated dataset. A function present in both parts is kept once.
    shared = (STDLIB / "bisect.py").read_text()
    # ShardedByS3Key gives each object to one instance: with few files an instance can get
    # none (algo-3) or none of the prepare's languages (algo-4); those write no shard and
    # succeed, so the job and the merge do not fail for them
    hosts = ["algo-1", "algo-2", "algo-3", "algo-4"]
    parts = {"algo-1": ["heapq.py", "shlex.py"], "algo-2": ["textwrap.py", "colorsys.py"]}
    shards = tmp_path / "s3" / "dataset-shards"
    for host in hosts:
        root = tmp_path / host
        code = root / "processing" / "input" / "code"
        code.mkdir(parents=True)
        for name in parts.get(host, []):
            shutil.copy(STDLIB / name, code / name)
        if host in parts:
            (code / "common.py").write_text(shared)  # the same file in both parts
        if host == "algo-4":
            (code / "NOTES.txt").write_text("not source\n")
        (root / "config").mkdir()
        (root / "config" / "resourceconfig.json").write_text(
            json.dumps({"current_host": host, "hosts": hosts})
        )
        monkeypatch.setenv("CODETUNE_SM_ROOT", str(root))
        assert cli_main(["prepare", "--set", "workers=1", "--no-progress"]) == 0
        out = root / "processing" / "output" / "dataset"
        assert not (out / "manifest.json").exists()  # not at the prefix root: under the host
        if host not in parts:
            assert not (out / host).exists()
            continue
        shutil.copytree(out / host, shards / host)  # what the S3 upload + download does
    merge_root = tmp_path / "merge"
    monkeypatch.setenv("CODETUNE_SM_ROOT", str(merge_root))
    assert cli_main(["prepare", "--merge", str(shards), "--set", "workers=1"]) == 0
    out = merge_root / "processing" / "output" / "dataset"
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["dropped_duplicates"]  # common.py's functions came twice
    recs = [json.loads(x) for s in ("train", "validation", "test")
            for x in (out / f"{s}.jsonl").read_text().splitlines()]  # fmt: skip
    keys = [(r["task"], r["meta"]["path"], r["meta"]["symbol"]) for r in recs]
    assert len(keys) == len(set(keys))
    paths = {r["meta"]["path"] for r in recs}
    assert "common.py" in paths and {"heapq.py", "textwrap.py"} <= paths
    # a directory holding no prepared dataset at any level: a clear error, nothing published
    bad = ["prepare", "--merge", str(tmp_path / "algo-1"), "--out", str(tmp_path / "x")]
    assert cli_main(bad) == 2 and not (tmp_path / "x").exists()
    # outside a multi-instance job an empty codebase is still an error
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("CODETUNE_SM_ROOT", str(tmp_path / "single"))
    assert cli_main(["prepare", "--codebase", str(empty), "--out", str(tmp_path / "y")]) == 2


def test_capped_run_samples_the_whole_tree(tmp_path) -> None:
    # Guards file_order=auto: a cap that stops the run early takes its examples from files
    # all over the tree (seeded order, deterministic), not from the first directories of the
    # walk, which is what the walk order gives.
    import ast

    cb = tmp_path / "tree"
    n = 0
    for path in sorted(STDLIB.glob("*.py")):  # one distinct real function per directory
        try:
            tree = ast.parse(path.read_text())
        except (SyntaxError, UnicodeDecodeError):
            continue
        fn = next((f for f in tree.body if isinstance(f, ast.FunctionDef)
                   and 4 <= f.end_lineno - f.lineno <= 20), None)  # fmt: skip
        if fn is None:
            continue
        d = cb / f"d{n:02d}"
        d.mkdir(parents=True)
        (d / "m.py").write_text(ast.get_source_segment(path.read_text(), fn) + "\n")
        n += 1
        if n == 40:
            break
    sets = ["workers=1", "tasks=[bugfix]", "max_examples_per_task=8"]
    sets += ["split.train=1", "split.validation=0", "split.test=0"]

    def dirs(out: Path, extra: list[str]) -> tuple[list[str], dict]:
        m = prepare(load_config(PrepareConfig, None, sets + extra), cb, out, progress=False)
        recs = [json.loads(x) for x in (out / "train.jsonl").read_text().splitlines()]
        return sorted(r["meta"]["path"].split("/")[0] for r in recs), m

    walk, mw = dirs(tmp_path / "walk", ["file_order=walk"])
    auto, ma = dirs(tmp_path / "auto", [])
    again, _ = dirs(tmp_path / "again", [])
    assert ma["files"]["order"] == "shuffled" and mw["files"]["order"] == "walk"
    assert len(walk) == len(auto) == 8
    assert max(walk) < "d12"  # the walk stops in the first directories (a few may be dups)
    assert max(auto) > "d20" and auto != walk  # spread over the tree
    assert auto == again
    assert (tmp_path / "auto" / "train.jsonl").read_bytes() == (
        tmp_path / "again" / "train.jsonl"
    ).read_bytes()
