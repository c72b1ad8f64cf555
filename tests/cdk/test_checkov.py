"""checkov (its own venv, `make checkov`) on the synthesized templates: no finding without a
recorded reason."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

CHECKOV = Path(__file__).resolve().parents[2] / ".cache" / "checkov" / "bin" / "checkov"


def _scan(synth) -> dict:
    if not CHECKOV.exists():
        pytest.skip(f"{CHECKOV} missing (run make checkov)")
    template = synth.outdir / f"{synth.stack_name}.template.json"
    proc = subprocess.run(
        [str(CHECKOV), "-f", str(template), "--framework", "cloudformation",
         "--compact", "-o", "json"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode in (0, 1), proc.stderr[-2000:]
    report = json.loads(proc.stdout)
    assert report["summary"]["parsing_errors"] == 0, report["summary"]
    return report


@pytest.mark.parametrize("which", ["synth", "synth_vpc"])
def test_checkov_findings_are_fixed_or_skipped_with_a_reason(which, request):
    # guards: every checkov finding on the dev template (and the VPC variant) is fixed, or
    # skipped in the resource's Metadata.checkov with a one-line reason
    report = _scan(request.getfixturevalue(which))
    failed = [
        f"{f['check_id']} {f['resource']}: {f['check_name']}"
        for f in report["results"]["failed_checks"]
    ]
    assert failed == []
    skipped = report["results"]["skipped_checks"]
    assert skipped, "no skip recorded: the template metadata did not reach checkov"
    for f in skipped:
        reason = (f.get("check_result") or {}).get("suppress_comment", "")
        assert len(reason) > 20, (f["check_id"], f["resource"], reason)
    assert report["summary"]["passed"] > 200
