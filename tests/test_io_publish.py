"""Publishing into SageMaker's mount points and extracting archives on any Python 3.11."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
import tarfile

import pytest

from codetune.io import atomic_dir, is_mount_point, safe_extract_tar

PUBLISH = """
import sys
from pathlib import Path
from codetune.io import atomic_dir, is_mount_point
final = Path(sys.argv[1])
assert is_mount_point(final)
with atomic_dir(final) as tmp:
    (tmp / "train.jsonl").write_text("new")
    (tmp / "sub").mkdir()
    (tmp / "sub" / "x").write_text("x")
try:
    with atomic_dir(final) as tmp:
        (tmp / "partial.jsonl").write_text("half")
        raise RuntimeError("boom")
except RuntimeError:
    pass
print(sorted(p.name for p in final.iterdir()))
"""


@pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("unshare"), reason="needs root to bind-mount"
)
def test_atomic_dir_publishes_into_a_mount_point(tmp_path):
    # Guards: `prepare` writes /opt/ml/processing/output/dataset, which SageMaker bind-mounts:
    # renaming the mount point fails (EBUSY) and renaming into it from its parent crosses file
    # systems (EXDEV). The result is assembled inside the mount and published there; what was
    # there before is replaced, a failed attempt leaves nothing behind.
    final = tmp_path / "dataset"
    final.mkdir()
    (final / "stale.jsonl").write_text("old")
    run = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c"]
        + [f'mount --bind "$1" "$1" && exec "{sys.executable}" -c "$2" "$1"', "sh"]
        + [str(final), PUBLISH],
        capture_output=True,
        text=True,
    )
    if "unshare failed" in run.stderr or "mount:" in run.stderr:
        pytest.skip(f"cannot bind-mount here: {run.stderr.strip()}")
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "['sub', 'train.jsonl']"
    assert (final / "train.jsonl").read_text() == "new"


def test_atomic_dir_refuses_a_non_empty_mount_point_without_replace(tmp_path, monkeypatch):
    import codetune.io as cio

    final = tmp_path / "model"
    final.mkdir()
    (final / "keep").write_text("k")
    monkeypatch.setattr(cio, "is_mount_point", lambda p: True)
    with pytest.raises(FileExistsError, match="not empty"), atomic_dir(final, replace=False) as t:
        (t / "new").write_text("n")
    assert sorted(p.name for p in final.iterdir()) == ["keep"]


def test_a_plain_directory_is_not_a_mount_point(tmp_path):
    assert not is_mount_point(tmp_path)
    assert is_mount_point("/proc")


def _tar(path, members):
    with tarfile.open(path, "w:gz") as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def _file(name, data=b"x", mode=0o644):
    info = tarfile.TarInfo(name)
    info.size, info.mode = len(data), mode
    return info, data


def _link(name, target, kind=tarfile.SYMTYPE):
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info, None


def _device(name):
    info = tarfile.TarInfo(name)
    info.type, info.devmajor, info.devminor = tarfile.CHRTYPE, 1, 3
    return info, None


HOSTILE = {
    "dotdot": [_file("../escaped")],
    "absolute": [_file("/tmp/escaped-abs")],
    "symlink out": [_link("adapter/evil", "../../..")],
    "hardlink out": [_link("adapter/evil", "/etc/passwd", tarfile.LNKTYPE)],
    "device": [_device("adapter/null")],
}


@pytest.mark.parametrize("fallback", [False, True], ids=["data_filter", "python-3.11.2"])
@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_safe_extract_refuses_what_leaves_the_destination(tmp_path, monkeypatch, case, fallback):
    # Guards: adapters arrive as model.tar.gz; Debian bookworm's Python 3.11.2 (the CPU image)
    # has no tarfile filter, so the same archive must be refused there too.
    if fallback:
        monkeypatch.delattr(tarfile, "data_filter", raising=False)
    elif not hasattr(tarfile, "data_filter"):
        pytest.skip("this Python has no tarfile.data_filter")
    archive = _tar(tmp_path / "model.tar.gz", HOSTILE[case])
    dest = tmp_path / "out" / "dest"
    dest.mkdir(parents=True)
    if case == "absolute" and not fallback:
        safe_extract_tar(archive, dest)  # filter="data" strips the leading "/"
        assert (dest / "tmp" / "escaped-abs").is_file()
    else:
        with pytest.raises(tarfile.TarError):
            safe_extract_tar(archive, dest)
    assert not (tmp_path / "out" / "escaped").exists()
    assert not os.path.lexists("/tmp/escaped-abs")
    assert not os.path.lexists(dest / "adapter" / "evil")


@pytest.mark.parametrize("fallback", [False, True], ids=["data_filter", "python-3.11.2"])
def test_safe_extract_extracts_an_adapter_archive(tmp_path, monkeypatch, fallback):
    if fallback:
        monkeypatch.delattr(tarfile, "data_filter", raising=False)
    archive = _tar(
        tmp_path / "model.tar.gz",
        [_file("adapter_config.json", b"{}", 0o4755), _file("sub/adapter_model.safetensors")],
    )
    safe_extract_tar(archive, tmp_path / "d")
    assert (tmp_path / "d" / "adapter_config.json").read_bytes() == b"{}"
    assert not (tmp_path / "d" / "adapter_config.json").stat().st_mode & 0o7000
    assert (tmp_path / "d" / "sub" / "adapter_model.safetensors").is_file()
