"""The Lambda test harness itself: AWS state must not leak into or out of these tests.

CI runs tests/cdk, tests/lambdas, tests/train ... in one pytest session, with other regions and
other moto accounts; these tests guard the isolation that makes that work.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from lambda_harness import BUCKET, REGION, moto_account

from codetune.workflow.aws import client


def test_client_cached_for_another_region_does_not_answer_here(monkeypatch):
    # guards: a handler client cached by an earlier test in another region (tests/cdk runs its
    # executions in eu-west-1) is dropped, so CreateBucket without a location constraint works
    # (before: 27 IllegalLocationConstraintException errors when tests/cdk ran first)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    assert client("s3").meta.region_name == "eu-west-1"
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    with moto_account(monkeypatch):
        assert client("s3").meta.region_name == REGION
        names = [b["Name"] for b in client("s3").list_buckets()["Buckets"]]
        assert names == [BUCKET]
    # and no client made inside the mock survives it
    assert client.cache_info().currsize == 0


def test_importing_the_harness_changes_no_environment():
    # guards: region and fake credentials are set per test (monkeypatch), not at import, where
    # they would stay for every test collected after this directory
    here = Path(__file__).parent
    code = (
        "import os, sys; sys.path.insert(0, sys.argv[1]); before = dict(os.environ); "
        "import lambda_harness; assert dict(os.environ) == before, "
        "sorted(set(os.environ.items()) ^ set(before.items()))"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    subprocess.run([sys.executable, "-c", code, str(here)], check=True, env=env)
