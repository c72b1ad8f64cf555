"""Finding the JSON Schemas at run time — one copy, in the repository's ``schemas/``.

The files are looked up in ``$CODETUNE_SCHEMAS_DIR`` first, then in a ``schemas/`` directory
next to any ancestor of this file, then where an installed codetune keeps them. That finds
``<repo>/schemas`` in a checkout (``src/codetune/workflow/`` → ``<repo>``),
``<asset>/schemas`` in a Lambda asset where CDK vendors ``src/codetune`` as
``<asset>/codetune`` and ``schemas/`` as ``<asset>/schemas``, and
``<prefix>/share/codetune/schemas`` in any installed wheel (the images: pyproject.toml's
``data-files``).
"""

from __future__ import annotations

import functools
import json
import os
import sysconfig
from pathlib import Path

from codetune.errors import CodetuneError

RUN_INPUT = "run-input.schema.json"
RUN_REQUEST = "run-request.schema.json"
REPORT = "report.schema.json"


def installed_dir() -> Path:
    """Where a (non-editable) install puts the schemas: ``<prefix>/share/codetune/schemas``."""
    return Path(sysconfig.get_path("data")) / "share" / "codetune" / "schemas"


def schemas_dir(name: str = RUN_INPUT) -> Path:
    """The directory holding schema ``name``; raises CodetuneError when none is found."""
    candidates = []
    if os.environ.get("CODETUNE_SCHEMAS_DIR"):
        candidates.append(Path(os.environ["CODETUNE_SCHEMAS_DIR"]))
    candidates += [p / "schemas" for p in Path(__file__).resolve().parents]
    candidates.append(installed_dir())
    for c in candidates:
        if (c / name).is_file():
            return c
    raise CodetuneError(
        f"schema {name} not found in $CODETUNE_SCHEMAS_DIR, a schemas/ directory above "
        f"{Path(__file__).parent} or {installed_dir()}; reinstall codetune or set "
        "CODETUNE_SCHEMAS_DIR to the repository's schemas/"
    )


@functools.cache
def load_schema(name: str) -> dict:
    """The parsed JSON Schema ``name`` (e.g. ``run-input.schema.json``)."""
    return json.loads((schemas_dir(name) / name).read_text(encoding="utf-8"))


def has_schema(name: str) -> bool:
    """True when schema ``name`` is findable (optional schemas owned by other areas)."""
    try:
        schemas_dir(name)
    except CodetuneError:
        return False
    return True
