"""Reading run artifacts by URI: ``s3://`` through an S3 client, ``file://`` from disk
(the local runner uses the same functions as the Lambdas)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from pathlib import Path

from codetune.workflow.aws import aws_call, is_not_found
from codetune.workflow.errors import InputNotFound

S3 = re.compile(r"^s3://([^/]+)/?(.*)$")


def split_s3(uri: str) -> tuple[str, str]:
    """``s3://bucket/key`` -> (bucket, key)."""
    m = S3.match(uri)
    if not m:
        raise ValueError(f"not an s3:// URI: {uri!r}")
    return m.group(1), m.group(2)


def read_bytes(uri: str, s3=None) -> bytes:
    """The bytes at ``uri``; raises InputNotFound when it does not exist."""
    if uri.startswith("file://") or uri.startswith("/"):
        path = Path(uri.removeprefix("file://"))
        if not path.is_file():
            raise InputNotFound(f"{uri} does not exist")
        return path.read_bytes()
    bucket, key = split_s3(uri)
    from botocore.exceptions import ClientError

    with aws_call(f"s3:GetObject {uri}"):
        try:
            return s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        except ClientError as e:
            if is_not_found(e):
                raise InputNotFound(f"{uri} does not exist") from e
            raise


def read_json(uri: str, s3=None):
    """The parsed JSON at ``uri`` (ValueError when it is not JSON)."""
    return json.loads(read_bytes(uri, s3).decode("utf-8"))


def prefix_exists(uri: str, s3=None) -> bool:
    """True when at least one object (or file) lies under the prefix/dir ``uri``."""
    if uri.startswith("file://") or uri.startswith("/"):
        return Path(uri.removeprefix("file://")).exists()
    bucket, key = split_s3(uri)
    with aws_call(f"s3:ListObjectsV2 {uri}"):
        resp = s3.list_objects_v2(Bucket=bucket, Prefix=key, MaxKeys=1)
    return resp.get("KeyCount", 0) > 0


def check_inputs_exist(request, s3) -> None:
    """Raise InputNotFound listing every S3 input of ``request`` that does not exist.

    Checks the base model prefix (when from S3), the codebase prefix, and the prepared
    dataset's ``manifest.json`` when preparation is skipped. ``stdlib:`` and Hugging Face ids
    are not checked here (the job resolves them).
    """
    missing = []
    if request.base_model.s3_uri and not prefix_exists(request.base_model.s3_uri, s3):
        missing.append(f"baseModel {request.base_model.s3_uri} holds no objects")
    code = request.data.codebase_s3_uri
    if code and not code.startswith("stdlib:") and not prefix_exists(code, s3):
        missing.append(f"data.codebase {code} holds no objects")
    if request.data.skip_prepare:
        manifest = request.data.dataset_s3_uri + "manifest.json"
        try:
            read_bytes(manifest, s3)
        except InputNotFound:
            missing.append(f"data.dataset {request.data.dataset_s3_uri} has no manifest.json")
    if missing:
        raise InputNotFound("run inputs not found: " + "; ".join(missing))


def codebase_fingerprint(uri: str, s3=None) -> str:
    """sha256 over the (key, ETag, size) of every object under an ``s3://`` prefix, or over
    (relative path, size, mtime) of every file under a local directory; ``stdlib:`` lists
    hash as themselves. Part of the prepare cache key: re-uploading changed code under the
    same prefix must not reuse the old dataset."""
    h = hashlib.sha256()
    if uri.startswith("stdlib:"):
        h.update(uri.encode())
    elif uri.startswith(("file://", "/")):
        root = Path(uri.removeprefix("file://"))
        for p in sorted(root.rglob("*")) if root.is_dir() else []:
            if p.is_file():
                st = p.stat()
                h.update(f"{p.relative_to(root)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    else:
        bucket, key = split_s3(uri)
        with aws_call(f"s3:ListObjectsV2 {uri}"):
            for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=key):
                for obj in page.get("Contents", []):
                    h.update(f"{obj['Key']}\0{obj.get('ETag', '')}\0{obj['Size']}\n".encode())
    return h.hexdigest()


def reuse_prepared_dataset(request, s3=None):
    """``request`` with ``data.skipPrepare`` set when its dataset prefix already holds a
    ``manifest.json`` (an earlier run prepared the same codebase with the same config: the
    prefix is ``datasets/<prepareCacheKey>/``); otherwise ``request`` unchanged."""
    if request.data.skip_prepare:
        return request
    try:
        read_bytes(request.paths.dataset + "manifest.json", s3)
    except InputNotFound:
        return request
    return dataclasses.replace(request, data=dataclasses.replace(request.data, skip_prepare=True))
