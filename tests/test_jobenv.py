"""Processing jobs get their settings from environment variables set by the state machine."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

from codetune import jobenv


def test_state_machine_sets_only_variables_the_entrypoints_read(repo_root):
    # Guards: the CDK app and the entrypoints agree on every variable name.
    src = (repo_root / "cdk" / "constructs" / "workflow.py").read_text()
    used = set(re.findall(r'"(CODETUNE_[A-Z_]+)(?:\.\$)?"', src))
    assert used, "no CODETUNE_* variables found in the state machine"
    assert used <= set(jobenv.ALL), used - set(jobenv.ALL)


def test_prepare_reads_its_config_from_the_environment(tmp_path):
    # Guards: the run input's prepare.config reaches a Processing job that has no arguments.
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    code = tmp_path / "processing" / "input" / "code"
    code.mkdir(parents=True)
    for f in ("bisect.py", "heapq.py", "textwrap.py", "shlex.py"):
        shutil.copy(stdlib / f, code / f)
    (tmp_path / "processing" / "output").mkdir(parents=True)
    env = {
        **__import__("os").environ,
        "CODETUNE_SM_ROOT": str(tmp_path),
        jobenv.PREPARE_CONFIG: json.dumps({"tasks": ["complete"], "workers": 1}),
    }
    res = subprocess.run(
        [sys.executable, "-m", "codetune.cli", "prepare", "--no-progress"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert res.returncode == 0, res.stderr
    manifest = json.loads(
        (tmp_path / "processing" / "output" / "dataset" / "manifest.json").read_text()
    )
    assert manifest["config"]["tasks"] == ["complete"]
