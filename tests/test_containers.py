"""codetune.containers: SageMaker's container layout on this machine."""

from __future__ import annotations

import tomllib

from codetune.containers import ENTRYPOINTS, in_container, upload


def test_entrypoints_are_the_images(repo_root):
    # guards: the jobs the local runner (and the tests of the AWS path) start are the
    # commands the training image runs: training_image/bin/<name>
    scripts = tomllib.loads((repo_root / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["codetune"] == "codetune.cli:main"
    assert set(ENTRYPOINTS) == {p.name for p in (repo_root / "training_image" / "bin").iterdir()}
    for name, argv in ENTRYPOINTS.items():
        text = (repo_root / "training_image" / "bin" / name).read_text()
        (line,) = [ln for ln in text.splitlines() if ln.startswith("exec ")]
        *cmd, rest = line.split()[1:]
        assert rest == '"$@"', line
        if cmd[0] == "codetune":  # the console script: codetune.cli:main
            cmd = ["python", "-m", "codetune.cli", *cmd[1:]]
        assert cmd == ["python", *argv], name


def test_container_paths_and_the_end_of_job_upload(tmp_path):
    # guards: an argument naming /opt/ml/... reaches the job under the layout's root, and an
    # output's upload replaces the entries it has and keeps the others (an S3 prefix's keys)
    root = tmp_path / "opt_ml"
    assert (
        in_container("/opt/ml/processing/input/shards", root) == f"{root}/processing/input/shards"
    )
    assert in_container("/opt/mlx", root) == "/opt/mlx"
    assert in_container("--no-progress", root) == "--no-progress"
    out, dest = tmp_path / "out", tmp_path / "dest"
    (out / "algo-2").mkdir(parents=True)
    (out / "algo-2" / "manifest.json").write_text("new")
    (dest / "algo-1").mkdir(parents=True)
    (dest / "algo-1" / "manifest.json").write_text("kept")
    (dest / "algo-2").mkdir()
    (dest / "algo-2" / "stale.jsonl").write_text("old")
    upload(out, dest)
    assert (dest / "algo-1" / "manifest.json").read_text() == "kept"
    assert [p.name for p in (dest / "algo-2").iterdir()] == ["manifest.json"]
    assert sorted(p.name for p in dest.iterdir()) == ["algo-1", "algo-2"]  # nothing left over
