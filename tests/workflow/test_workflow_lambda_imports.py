"""What a Lambda asset must contain: codetune.workflow imports without the training stack."""

from __future__ import annotations

import json
import subprocess
import sys


def test_workflow_and_handlers_import_without_torch(repo_root):
    # guards: the Lambdas can vendor src/codetune without torch/transformers/peft (no Docker)
    code = (
        "import sys, importlib.util, json\n"
        "import codetune.workflow, codetune.workflow.deploy, codetune.workflow.registry\n"
        "import codetune.workflow.smoke, codetune.workflow.notify, codetune.workflow.quality\n"
        "for n in ['validate_request','validate_batch','quality_gate','register_adapter',"
        "'deploy_endpoint','smoke_test','notify_failure']:\n"
        "    s = importlib.util.spec_from_file_location(n, f'lambdas/{n}/handler.py')\n"
        "    s.loader.exec_module(importlib.util.module_from_spec(s))\n"
        "heavy = [m for m in ('torch','transformers','peft','numpy','trl') if m in sys.modules]\n"
        "print(json.dumps(heavy))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=repo_root,
        capture_output=True,
        text=True,
        check=True,
        env={"AWS_DEFAULT_REGION": "us-east-1", "PATH": "/usr/bin:/bin"},
    )
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []
