"""What a non-editable install of codetune (the images, any wheel) carries."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

FIND_SCHEMAS = """
from codetune.evaluate.report import schema_path
from codetune.workflow.schemas import REPORT, RUN_INPUT, RUN_REQUEST, load_schema, schemas_dir
for name in (REPORT, RUN_INPUT, RUN_REQUEST):
    assert load_schema(name)["$id"].startswith("https://codetune.dev/schemas/"), name
print(schemas_dir(REPORT))
print(schema_path())
"""


def test_a_wheel_installed_into_a_fresh_venv_finds_its_schemas(repo_root, tmp_path):
    # Guards: the JSON Schemas travel with the package (the evaluate job validates its report,
    # ValidateRequest its input): a wheel installed anywhere, with no checkout around it and
    # CODETUNE_SCHEMAS_DIR unset, finds all three.
    src = tmp_path / "src"  # a copy: the in-tree build must not leave build/ in the checkout
    shutil.copytree(
        repo_root,
        src,
        ignore=lambda d, names: [
            n
            for n in names
            if Path(d) == repo_root
            and n not in {"pyproject.toml", "README.md", "src", "schemas"}
            or n in {"__pycache__", "build"}
            or n.endswith(".egg-info")
        ],
    )
    wheels = tmp_path / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation"]
        + ["-w", str(wheels), str(src)],
        check=True,
    )
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    (wheel,) = wheels.glob("codetune-*.whl")
    # The fresh venv's own pip: this environment's pip with --prefix would first uninstall the
    # checkout's editable codetune.
    subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--no-deps"]
        + ["--no-index", str(wheel)],
        check=True,
    )
    env = {k: v for k, v in os.environ.items() if k != "CODETUNE_SCHEMAS_DIR"}
    # The dependencies (jsonschema, yaml, ...) from this environment's site-packages; the
    # checkout's editable codetune is not on that path (it comes from a .pth file).
    env["PYTHONPATH"] = sysconfig.get_path("purelib")
    run = subprocess.run(
        [str(venv / "bin" / "python"), "-c", FIND_SCHEMAS],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr
    found, report = run.stdout.split()
    assert Path(found) == venv / "share" / "codetune" / "schemas"
    assert Path(report) == venv / "share" / "codetune" / "schemas" / "report.schema.json"
    assert (Path(found) / "report.schema.json").read_bytes() == (
        repo_root / "schemas" / "report.schema.json"
    ).read_bytes()
