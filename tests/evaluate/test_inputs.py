"""Adapter inputs as SageMaker Processing delivers them (model.tar.gz), without a model."""

from __future__ import annotations

import io
import json
import tarfile

import pytest

from codetune.errors import CodetuneError
from codetune.evaluate.runner import prepare_adapter


def make_tar(path, members):
    with tarfile.open(path, "w:gz") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return path


def test_model_tar_gz_is_extracted(tmp_path):
    # Guards the Processing-job input: the training job's model.tar.gz inside input/adapter.
    src = tmp_path / "input"
    src.mkdir()
    make_tar(
        src / "model.tar.gz", {"adapter_config.json": b"{}", "adapter_model.safetensors": b"x"}
    )
    got = prepare_adapter(src, tmp_path / "work")
    assert (got / "adapter_config.json").is_file() and (got / "adapter_model.safetensors").is_file()


def test_tar_with_path_traversal_is_refused(tmp_path):
    # Guards: a hostile archive cannot write outside the work directory.
    tar = make_tar(tmp_path / "evil.tar.gz", {"../escaped.txt": b"x", "adapter_config.json": b"{}"})
    with pytest.raises(CodetuneError, match="refused"):
        prepare_adapter(tar, tmp_path / "work")
    assert not (tmp_path / "escaped.txt").exists()


def test_directory_adapter_used_as_is_and_missing_is_error(tmp_path):
    d = tmp_path / "a"
    d.mkdir()
    (d / "adapter_config.json").write_text(json.dumps({}))
    assert prepare_adapter(d, tmp_path / "w") == d
    with pytest.raises(CodetuneError, match="adapter"):
        prepare_adapter(tmp_path / "nope", tmp_path / "w")
    tar = make_tar(tmp_path / "empty.tar.gz", {"README": b"x"})
    with pytest.raises(CodetuneError, match="adapter_config.json"):
        prepare_adapter(tar, tmp_path / "w2")
