"""Finding what to serve: adapters in the SageMaker model directory, model.tar.gz archives,
and base models or adapters in S3. Loading itself is ``codetune.generation.load_model``.

Model directory layouts understood (``/opt/ml/model``, SageMaker extracts ModelDataUrl there):

- ``adapters/<name>/adapter_config.json`` — several named adapters;
- ``adapter_config.json`` at the top — the directory is one adapter (named ``adapter_name``);
- ``model.tar.gz`` — an uncompressed-by-SageMaker archive holding either layout above;
- ``config.json`` + weights at the top (no adapter_config.json) — a full base model.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

from codetune.errors import CodetuneError
from codetune.io import safe_extract_tar

log = logging.getLogger(__name__)


def discover_adapters(model_dir: Path, single_name: str = "adapter") -> dict[str, str]:
    """Adapters found in ``model_dir`` as ``{name: directory}`` (may be empty).

    Raises CodetuneError when ``adapters/`` holds something that is not an adapter.
    """
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        return {}
    found: dict[str, str] = {}
    sub = model_dir / "adapters"
    if sub.is_dir():
        for d in sorted(p for p in sub.iterdir() if p.is_dir()):
            if not (d / "adapter_config.json").is_file():
                raise CodetuneError(
                    f"{d} is under adapters/ but has no adapter_config.json; remove it or "
                    "put a PEFT adapter there"
                )
            found[d.name] = str(d)
    if (model_dir / "adapter_config.json").is_file():
        found.setdefault(single_name, str(model_dir))
    if not found:
        archive = model_dir / "model.tar.gz"
        if archive.is_file():
            dest = Path(tempfile.mkdtemp(prefix="codetune-model-"))
            log.info("extracting %s to %s", archive, dest)
            safe_extract_tar(archive, dest)
            found = discover_adapters(dest, single_name)
    return found


def is_full_model(model_dir: Path) -> bool:
    """True when ``model_dir`` holds a full Hugging Face checkpoint (a base model)."""
    d = Path(model_dir)
    return (d / "config.json").is_file() and not (d / "adapter_config.json").is_file()


def fetch_s3(uri: str, cache_root: Path | None = None) -> str:
    """Download an ``s3://bucket/prefix`` (a directory or a ``.tar.gz``) to a local directory.

    Raises CodetuneError when nothing is found under the URI.
    """
    import boto3

    from codetune.paths import codetune_home

    bucket, _, prefix = uri[len("s3://") :].partition("/")
    dest = Path(cache_root or codetune_home() / "s3") / bucket / prefix.strip("/")
    s3 = boto3.client("s3")
    if prefix.endswith(".tar.gz"):
        dest.mkdir(parents=True, exist_ok=True)
        archive = dest / "model.tar.gz"
        s3.download_file(bucket, prefix, str(archive))
        out = dest / "extracted"
        out.mkdir(exist_ok=True)
        safe_extract_tar(archive, out)
        return str(out)
    n = 0
    for page in s3.get_paginator("list_objects_v2").paginate(
        Bucket=bucket, Prefix=prefix.rstrip("/") + "/"
    ):
        for obj in page.get("Contents", []):
            rel = obj["Key"][len(prefix.rstrip("/")) + 1 :]
            if not rel or rel.endswith("/"):
                continue
            target = dest / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            s3.download_file(bucket, obj["Key"], str(target))
            n += 1
    if n == 0:
        raise CodetuneError(f"nothing found under {uri}; check the bucket and prefix")
    return str(dest)


def resolve_sources(config) -> tuple[str | None, dict[str, str]]:
    """What ``config`` (a ServeConfig) asks to serve, as local paths: ``(base, adapters)``.

    ``adapters`` is ``config.adapters`` fetched locally, else what the model dir holds
    (:func:`discover_adapters`). ``base`` is ``config.base_model`` (an ``s3://`` prefix is
    downloaded), else the model dir when it is a full checkpoint, else ``None``: the base the
    adapters name, or the embedded model (``codetune.generation`` decides).
    """
    from codetune.paths import SageMakerPaths

    adapters = {n: local_source(d) for n, d in config.adapters.items()}
    base = config.base_model
    if not adapters:
        model_dir = config.model_dir or str(SageMakerPaths.from_env().model_dir)
        adapters = discover_adapters(model_dir, config.adapter_name)
        if base is None and is_full_model(model_dir):
            base = model_dir
        log.info("model dir %s: adapters %s", model_dir, sorted(adapters))
    if base and base.startswith("s3://"):
        base = local_source(base)
    return base, adapters


def local_source(src: str) -> str:
    """A local directory for ``src``: a directory, a ``.tar.gz`` file, or an s3:// URI."""
    if src.startswith("s3://"):
        return fetch_s3(src)
    p = Path(src)
    if p.is_file() and p.name.endswith((".tar.gz", ".tgz")):
        dest = Path(tempfile.mkdtemp(prefix="codetune-adapter-"))
        safe_extract_tar(p, dest)
        return str(dest)
    if not p.is_dir():
        raise CodetuneError(f"{src} is not a directory, a .tar.gz archive or an s3:// URI")
    return str(p)


def adapter_source(src: str) -> str:
    """The one adapter directory in ``src`` (POST /adapters, e.g. an adapter inference
    component's artifact as SageMaker hands it over): ``src`` itself when it holds
    ``adapter_config.json``, else the single adapter :func:`discover_adapters` finds in it
    (``adapters/<name>/`` or a ``model.tar.gz`` left packed). ``src`` may also be a
    ``.tar.gz`` file or an ``s3://`` URI (:func:`local_source`).

    Raises CodetuneError when ``src`` holds no adapter or several.
    """
    local = local_source(src)
    if (Path(local) / "adapter_config.json").is_file():
        return local
    found = discover_adapters(Path(local))
    if len(found) == 1:
        return next(iter(found.values()))
    if not found:
        raise CodetuneError(
            f"{src} holds no adapter: expected adapter_config.json at its top, adapters/<name>/ "
            "or a model.tar.gz with either"
        )
    raise CodetuneError(
        f"{src} holds {len(found)} adapters ({', '.join(sorted(found))}); register one at a "
        "time: name its directory as src"
    )
