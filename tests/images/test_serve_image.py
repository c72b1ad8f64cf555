"""The endpoint: the inference image's `serve` as SageMaker hosting runs it, with the training
job's adapter as the model data."""

from __future__ import annotations

import io
import time

import harness
import pytest

from codetune.io import safe_extract_tar
from codetune.workflow.registry import serving_environment
from codetune.workflow.smoke import smoke_test


class ContainerRuntime:
    """sagemaker-runtime's InvokeEndpoint, answered by the container's /invocations (SageMaker's
    front end forwards the body and its content type there)."""

    def __init__(self, job: harness.Job):
        self.job = job
        self.calls = 0

    def invoke_endpoint(self, *, EndpointName, ContentType, Body, Accept=None, **_):  # noqa: N803
        self.calls += 1
        status, body = self.job.http("POST", "/invocations", Body, ContentType)
        assert status == 200, (status, body[:500], self.job.logs()[-3000:])
        return {"Body": io.BytesIO(body), "ContentType": "application/json"}


@pytest.fixture(scope="module")
def endpoint(serve_image, request_obj, model_archive, tmp_path_factory):
    """The container of a one-adapter endpoint: the ModelDataUrl extracted into a root-owned
    /opt/ml/model (read-only), the model's environment as the deployment sets it, started as
    `docker run IMAGE serve`."""
    model = harness.sagemaker_dir(tmp_path_factory.mktemp("endpoint") / "model")
    safe_extract_tar(model_archive, model)
    job = harness.Job(
        image=serve_image,
        args=["serve"],
        mounts={"/opt/ml/model": model},
        read_only={"/opt/ml/model"},
        env=serving_environment(request_obj),
        detach=True,
    )
    job.start()
    t0 = time.monotonic()
    yield job, t0
    harness.remove(job.name)


def test_endpoint_pings_within_the_startup_timeout_and_the_adapter_answers(endpoint, request_obj):
    # Guards: the endpoint comes up under SageMaker's conditions (root, read-only root-owned
    # /opt/ml/model, Docker's seccomp profile and capabilities, no network): GET /ping answers
    # 200 within the deployment's startup health check timeout, and the SmokeTest step's own
    # requests through /invocations are answered by the adapter under the name the deployment
    # gives it (a base-model fallback fails), the base model under "base".
    job, t0 = endpoint
    deadline = t0 + request_obj.deployment.startup_health_check_timeout_seconds
    status = 0
    while time.monotonic() < deadline:
        if not job.running():
            pytest.fail(f"serve exited before /ping answered 200:\n{job.logs()[-4000:]}")
        status, body = job.http("GET", "/ping", timeout=30)
        if status == 200:
            break
        time.sleep(2)
    assert status == 200, job.logs()[-4000:]
    print(f"/ping 200 after {time.monotonic() - t0:.1f} s")
    runtime = ContainerRuntime(job)
    result = smoke_test(request_obj, runtime)
    adapter = request_obj.deployment.adapter_name
    assert result["adapterModel"] == adapter and result["baseModel"] != adapter, result
    assert result["adapterSample"].strip()
    assert runtime.calls == 3
