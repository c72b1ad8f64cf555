"""Run the whole workflow on this machine: the Step Functions states, executed locally.

Same run input (``schemas/run-input.schema.json``), same resolved request, same functions as
the Lambdas and the containers; only the executor differs:

| state            | on AWS                               | here                                      |
|------------------|--------------------------------------|-------------------------------------------|
| ValidateRequest  | Lambda ``validate_run_input``        | the same function (artifact root = --out) |
| PrepareDataset   | Processing job, training image       | the image's ``prepare``, same layout      |
| TrainAdapter     | Training job, training image         | the image's ``train`` on ``training.job`` |
| EvaluateAdapter  | Processing job, training image       | the image's ``evaluate``, same layout     |
| QualityGate      | Lambda ``run_quality_gate``          | the same function on ``file://`` URIs     |
| RegisterAdapter  | Model Registry package               | ``<out>/registry/<group>/<runId>.json``   |
| DeployEndpoint   | SageMaker endpoint                   | ``codetune serve`` on localhost           |
| SmokeTest        | Lambda ``smoke_test``                | the same function over HTTP               |

The jobs run as child processes in the container layout SageMaker gives them
(:mod:`codetune.containers`, under ``<run>/jobs/<job name>/``): ``hyperparameters.json`` and
the channels of ValidateRequest's CreateTrainingJob input, a tuning trial's hyperparameters as
SageMaker renders them, the Processing mounts, container arguments and environment the state
machine gives (:mod:`codetune.jobenv`) — so a local run decodes its inputs exactly as the AWS
jobs do.

Each step writes ``<run>/steps/<Step>.json`` when it completes; a re-run with the same run
name skips completed steps (step caching), and ``--force STEP`` re-runs from that step on.
A failing step stops the run naming the step and a readable cause, like the state machine's
Catch → NotifyFailure → Fail.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from codetune.containers import (
    JobResult,
    ProcessingJob,
    command_line,
    publish,
    run_processing_job,
    run_training_job,
)
from codetune.errors import CodetuneError
from codetune.io import write_json_atomic, write_text_atomic
from codetune.train.job import JobStack

STEPS = (
    "ValidateRequest",
    "PrepareDataset",
    "TrainAdapter",
    "EvaluateAdapter",
    "QualityGate",
    "RegisterAdapter",
    "DeployEndpoint",
    "SmokeTest",
)


class StepFailed(CodetuneError):
    """A workflow step failed; the message names the step and the cause."""

    def __init__(self, step: str, cause: str):
        super().__init__(f"step {step} failed: {cause}")
        self.step = step
        self.cause = cause


@dataclass
class LocalRun:
    """State of one local run."""

    input_path: Path
    out: Path
    run_name: str
    serve: bool = True
    port: int = 8080
    force_from: str | None = None
    log: Callable[[str], None] = field(default=lambda s: print(s, file=sys.stderr, flush=True))
    heartbeat_s: float = 60.0  # how often a running step says how long it has been running
    request: object = None  # RunRequest once validated
    results: dict = field(default_factory=dict)
    server: subprocess.Popen | None = None

    @property
    def run_dir(self) -> Path:
        return self.out / "runs" / self.request.run_id

    def path(self, uri: str) -> Path:
        """A ``file://`` URI of the resolved request as a local path."""
        return Path(uri.removeprefix("file://"))

    @property
    def dataset_dir(self) -> Path:
        return self.path(self.request.paths.dataset)

    @property
    def adapter_dir(self) -> Path:
        """The adapter the later steps use: TrainAdapter's (with tuning, the best trial's)."""
        trained = self.results.get("TrainAdapter", {}).get("adapter")
        return Path(trained) if trained else self.path(self.request.paths.output) / "adapter"

    @property
    def eval_dir(self) -> Path:
        return self.path(self.request.paths.eval)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def default_run_name(input_path: Path) -> str:
    """A stable execution name for an input file: same input -> same run (step caching)."""
    import hashlib

    digest = hashlib.sha256(input_path.read_bytes()).hexdigest()[:12]
    return f"local-{input_path.stem.replace('.', '-')}-{digest}"


def load_input(path: Path) -> dict:
    """Read the run input JSON; raises CodetuneError naming the file."""
    if not path.is_file():
        raise CodetuneError(f"run input {path} does not exist")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise CodetuneError(f"{path}: not valid JSON (line {e.lineno}: {e.msg})") from e


# A local run's training job: this Python environment runs the image's entrypoint, and no
# role is assumed.
LOCAL_STACK = JobStack(image_uri="codetune-train:local", role_arn="local")


def validate(input_path: Path, out: Path, run_name: str | None = None):
    """ValidateRequest with the local artifact root; returns the RunRequest (with the
    training job's CreateTrainingJob input, ``file://`` URIs, at ``training.job``)."""
    from codetune.workflow.validate import validate_run_input

    doc = load_input(input_path)
    return validate_run_input(
        doc,
        execution_name=run_name or default_run_name(input_path),
        artifact_bucket=f"file://{out.resolve()}",
        job_stack=LOCAL_STACK,
    )


# --------------------------------------------------------------------------- steps


def _stdlib_codebase(spec: str, dest: Path) -> Path:
    """Copy the named standard-library modules/packages (``stdlib:json,collections``) into
    ``dest`` — a real codebase present on every machine."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    names = [n.strip() for n in spec.removeprefix("stdlib:").split(",") if n.strip()]
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    missing = []
    for name in names:
        pkg, mod = stdlib / name, stdlib / f"{name}.py"
        if pkg.is_dir():
            shutil.copytree(
                pkg, dest / name, ignore=shutil.ignore_patterns("tests", "test", "__pycache__")
            )
        elif mod.is_file():
            shutil.copy2(mod, dest / mod.name)
        else:
            missing.append(name)
    if missing:
        raise CodetuneError(
            f"data.codebase: no standard-library module named {', '.join(missing)} in {stdlib}"
        )
    return dest


def _zip_codebase(spec: str, dest: Path) -> Path:
    """Extract ``ARCHIVE.zip`` (or only its members under ``PREFIX`` for
    ``ARCHIVE.zip#PREFIX``) into ``dest``: a source archive such as a JDK's ``lib/src.zip``."""
    import zipfile

    archive, _, prefix = spec.partition("#")
    if not Path(archive).is_file():
        raise CodetuneError(f"data.codebase: {archive} does not exist")
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    try:
        with zipfile.ZipFile(archive) as zf:
            members = [m for m in zf.namelist() if m.startswith(prefix) and not m.endswith("/")]
            for m in members:
                zf.extract(m, dest)  # zipfile drops absolute paths and `..` components
    except zipfile.BadZipFile as e:
        raise CodetuneError(f"data.codebase: {archive} is not a zip archive ({e})") from e
    if not members:
        raise CodetuneError(f"data.codebase: {archive} has no file under {prefix!r}")
    return dest


def _codebase_dir(run: LocalRun) -> Path:
    spec = run.request.data.codebase_s3_uri
    if not spec:
        raise CodetuneError("data.codebase is required when no prepared dataset is given")
    if spec.startswith("stdlib:"):
        return _stdlib_codebase(spec, run.run_dir / "codebase")
    if spec.removeprefix("file://").partition("#")[0].endswith(".zip"):
        return _zip_codebase(spec.removeprefix("file://"), run.run_dir / "codebase")
    path = Path(spec.removeprefix("file://"))
    if not path.is_dir():
        raise CodetuneError(f"data.codebase: {path} is not a directory")
    return path


def _job_root(run: LocalRun, name: str) -> Path:
    """The directory standing for a job's ``/opt/ml`` (kept after the job, for a look)."""
    return run.run_dir / "jobs" / name


def _processing(run: LocalRun, step: str, name: str, job: ProcessingJob, **host) -> JobResult:
    """Run a Processing job as SageMaker would (codetune.containers); StepFailed if it
    fails."""
    root = _job_root(run, name)
    run.log(f"  $ {command_line(job.entrypoint, job.arguments, job.environment, root)}")
    result = run_processing_job(job, root, **host)
    if not result.ok:
        raise StepFailed(step, result.cause(job.entrypoint))
    return result


def _shard_part(codebase: Path, index: int, count: int, dest: Path) -> int:
    """The files of ``codebase`` that ShardedByS3Key gives instance ``index`` of ``count``
    (each object to one instance; here by the hash prepare shards by), linked into
    ``dest``. Returns how many."""
    from codetune.data.discover import shard_of

    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    n = 0
    for top, dirs, files in os.walk(codebase):
        dirs.sort()
        for f in sorted(files):
            src = Path(top) / f
            rel = src.relative_to(codebase).as_posix()
            if src.is_symlink() or shard_of(rel, count) != index:
                continue
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(src, dest / rel)
            except OSError:
                shutil.copy2(src, dest / rel)
            n += 1
    return n


def prepare_job(request, code: Path, dataset: Path, merge: bool = False) -> ProcessingJob:
    """PrepareDataset's (or with ``merge``, MergeDataset's) job as the state machine creates
    it: the image's ``prepare`` with the request's container arguments and environment, the
    codebase at ``input/code`` (the shards at ``input/shards``), the dataset from
    ``output/dataset``."""
    from codetune.jobenv import prepare_environment

    args = request.prepare.merge_arguments if merge else request.prepare.arguments
    return ProcessingJob("prepare", tuple(args), prepare_environment(request),
                         {"shards" if merge else "code": code}, {"dataset": dataset})  # fmt: skip


def step_prepare(run: LocalRun) -> dict:
    """PrepareDataset as the state machine runs it: the image's ``prepare`` with the
    request's container arguments and environment, the codebase at ``input/code``, the
    dataset uploaded from ``output/dataset``; with n instances PrepareDatasetSharded (each
    its ShardedByS3Key part of the files, its shard under ``<host>/``), then MergeDataset."""
    req = run.request
    if req.data.skip_prepare:
        if not (run.dataset_dir / "manifest.json").is_file():
            raise CodetuneError(f"data.dataset: {run.dataset_dir} has no manifest.json")
        return {"dataset": str(run.dataset_dir), "skipped": "prepared dataset given"}
    codebase = _codebase_dir(run)
    n = req.prepare.instance_count
    if n <= 1:
        job = prepare_job(req, codebase, run.dataset_dir)
        _processing(run, "PrepareDataset", req.jobs.prepare, job)
        manifest = json.loads((run.dataset_dir / "manifest.json").read_text())
        return {"dataset": str(run.dataset_dir), "counts": manifest.get("counts")}
    # n instances, one after another here; a fresh shards prefix, so no stale shard is merged
    shards_dir = run.path(req.paths.dataset_shards)
    if shards_dir.exists():
        shutil.rmtree(shards_dir)
    hosts = tuple(f"algo-{i + 1}" for i in range(n))
    parts = [run.run_dir / "codebase-parts" / host for host in hosts]
    for i, (host, part) in enumerate(zip(hosts, parts, strict=True)):
        # an instance whose part holds nothing to prepare writes no shard and succeeds
        files = _shard_part(codebase, i, n, part)
        run.log(f"  shard {i + 1}/{n} ({host}): {files} files")
        job = prepare_job(req, part, shards_dir)
        _processing(run, "PrepareDataset", f"{req.jobs.prepare}-{host}", job, host=host,
                    hosts=hosts)  # fmt: skip
    merge = prepare_job(req, shards_dir, run.dataset_dir, merge=True)
    _processing(run, "PrepareDataset", req.jobs.merge, merge)
    manifest = json.loads((run.dataset_dir / "manifest.json").read_text())
    return {
        "dataset": str(run.dataset_dir),
        "shards": len(manifest["merged_from"]),
        "counts": manifest["counts"],
    }


def _training(run: LocalRun, name: str, job: dict, hyperparameters=None) -> JobResult:
    """The training image's ``train`` on ``job`` (a CreateTrainingJob input) in its
    SageMaker layout; StepFailed with the job's failure reason if it fails."""
    root = _job_root(run, name)
    run.log(f"  $ {command_line('train', (), job.get('Environment') or {}, root)}")
    hp = job["HyperParameters"] if hyperparameters is None else hyperparameters
    run.log(f"    hyperparameters.json: {json.dumps(hp, sort_keys=True)}")
    result = run_training_job(job, root, run.path, hyperparameters)
    if not result.ok:
        raise StepFailed("TrainAdapter", result.cause("training"))
    return result


SUMMARY_KEYS = ("steps", "train_loss", "validation_loss", "base_validation_loss", "wall_seconds")


def _summary(adapter: Path) -> dict:
    summary = json.loads((adapter / "training_summary.json").read_text())
    return {k: summary.get(k) for k in SUMMARY_KEYS}


def step_train(run: LocalRun) -> dict:
    """TrainAdapter: ValidateRequest's CreateTrainingJob input (``training.job``) laid out as
    SageMaker lays out its container, the image's ``train`` run on it; its ``model/`` is the
    adapter."""
    if run.request.tuning is not None:
        return step_tune(run)
    job = run.request.training.job
    if job["ResourceConfig"]["InstanceCount"] > 1:
        run.log(f"  the job asks for {job['ResourceConfig']['InstanceCount']} instances; "
                "here it runs on one host, this machine")  # fmt: skip
    name = job["TrainingJobName"]
    _training(run, name, job)
    out = run.path(run.request.paths.output) / "adapter"
    publish(_job_root(run, name) / "model", out)
    return {"adapter": str(out), "summary": _summary(out)}


def step_tune(run: LocalRun) -> dict:
    """The tuning job, locally: its trials one after another, each the training job of the
    tuning job's TrainingJobDefinition with the trial's hyperparameters as SageMaker renders
    them, scored as SageMaker scores it (the objective regex over the trial's log), the best
    kept."""
    from codetune.workflow import tuning

    spec = run.request.tuning
    section = {"strategy": spec.strategy, "maxJobs": spec.max_jobs, "ranges": spec.ranges}
    planned = tuning.local_trials(section, seed_of=run.request.run_id)
    definition = tuning.training_job_definition(
        run.request.training.job, spec.static_hyperparameters
    )
    if spec.strategy == "Bayesian":
        run.log("  Bayesian search is SageMaker's; locally the trials are random draws")
    trials = []
    for i, values in enumerate(planned):
        name = tuning.trial_name(i)
        trial_dir = run.path(run.request.paths.output) / "trials" / name
        out, log = trial_dir / "adapter", trial_dir / "train.log"
        run.log(f"  trial {i + 1}/{len(planned)} {name}: {json.dumps(values, sort_keys=True)}")
        if not (log.is_file() and (out / "training_summary.json").is_file()):
            hp = tuning.trial_hyperparameters(section, spec.static_hyperparameters, values)
            result = _training(run, f"{spec.job_name}-{name}", definition, hp)
            publish(_job_root(run, f"{spec.job_name}-{name}") / "model", out)
            write_text_atomic(log, result.log)
        objective = tuning.objective_value(log.read_text())
        run.log(f"  {name}: {tuning.objective_metric_name()} = {objective}")
        trials.append(
            {"name": name, "hyperparameters": values, "objective": objective,
             "adapter": str(out), "summary": _summary(out)}
        )  # fmt: skip
    best = tuning.best_trial(trials)
    run.log(f"  best trial {best['name']}: {json.dumps(best['hyperparameters'], sort_keys=True)}")
    return {
        "adapter": best["adapter"],
        "summary": best["summary"],
        "tuning": {
            "tuningJob": spec.job_name,
            "strategy": spec.strategy,
            "objective": tuning.objective_metric_name(),
            "bestTrial": best["name"],
            "hyperparameters": best["hyperparameters"],
            "trials": trials,
        },
    }


def evaluate_job(request, adapter: Path, dataset: Path, eval_dir: Path) -> ProcessingJob:
    """EvaluateAdapter's job as the state machine creates it: the image's ``evaluate`` with
    the request's ContainerArguments (its EvalConfig as ``--set``), the run id and base model
    in its environment (codetune.jobenv), the adapter at ``input/adapter``, the dataset at
    ``input/dataset``, the report from ``output/eval``."""
    from codetune.jobenv import evaluate_environment

    env = evaluate_environment(request, adapter_uri=f"file://{adapter}")
    return ProcessingJob("evaluate", tuple(request.evaluation.arguments), env,
                         {"adapter": adapter, "dataset": dataset}, {"eval": eval_dir})  # fmt: skip


def step_evaluate(run: LocalRun) -> dict:
    req = run.request
    job = evaluate_job(req, run.adapter_dir, run.dataset_dir, run.eval_dir)
    _processing(run, "EvaluateAdapter", req.jobs.evaluate, job)
    return {"report": str(run.eval_dir / "report.json"), "html": str(run.eval_dir / "report.html")}


def step_gate(run: LocalRun) -> dict:
    from codetune.workflow.quality import run_quality_gate

    decision = run_quality_gate(run.request, run.request.paths.report)
    if not decision["passed"]:
        raise StepFailed(
            "QualityGate", "the adapter did not pass the gate: " + "; ".join(decision["reasons"])
        )
    return decision


def step_register(run: LocalRun) -> dict:
    """A local registry entry holding the metadata the Model Registry package gets."""
    import hashlib

    req = run.request
    manifest = run.dataset_dir / "manifest.json"
    gate = run.results.get("QualityGate", {})
    entry = {
        "modelPackageGroupName": req.registration.model_package_group,
        "approvalStatus": "Approved" if req.registration.auto_approve else "PendingManualApproval",
        "modelDataUrl": f"file://{run.adapter_dir}",
        "modelMetrics": {"ModelQuality": {"Statistics": {"S3Uri": req.paths.report}}},
        "customerMetadata": {
            "runId": req.run_id,
            "executionName": req.execution_name,
            "baseModel": req.base_model.id,
            "datasetManifestSha256": hashlib.sha256(manifest.read_bytes()).hexdigest(),
            "adapterName": req.deployment.adapter_name,
            "trainingConfig": req.training.config,
            **_tuning_metadata(run.results.get("TrainAdapter", {}).get("tuning")),
        },
        "gate": {"passed": gate.get("passed"), "reasons": gate.get("reasons")},
    }
    path = run.out / "registry" / req.registration.model_package_group / f"{req.run_id}.json"
    write_json_atomic(path, entry)
    return {"modelPackage": str(path), "approvalStatus": entry["approvalStatus"]}


def _tuning_metadata(result: dict | None) -> dict:
    """What the registry records of a tuned run (the keys the Model Registry package gets,
    codetune.workflow.registry.tuning_metadata): the best trial and its tuned values."""
    if not result:
        return {}
    from codetune.workflow.registry import tuned_values_text

    return {
        "tuningJob": result["tuningJob"],
        "bestTrainingJob": result["bestTrial"],
        "tunedHyperparameters": tuned_values_text(result["hyperparameters"]),
    }


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def _wait_ready(run: LocalRun, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if run.server.poll() is not None:
            raise StepFailed(
                "DeployEndpoint", f"the server exited with status {run.server.returncode}"
            )
        try:
            with urllib.request.urlopen(run.base_url + "/ping", timeout=5) as r:
                if r.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(1)
    raise StepFailed("DeployEndpoint", f"the server did not become healthy within {timeout:.0f}s")


def step_deploy(run: LocalRun) -> dict:
    req = run.request
    if not req.deployment.enabled or not run.serve:
        return {"skipped": "deployment disabled" if not req.deployment.enabled else "--no-serve"}
    if not _port_free(run.port):
        raise StepFailed(
            "DeployEndpoint", f"port {run.port} is in use; stop what listens there or pass --port"
        )
    argv = [
        "serve",
        "--adapter",
        f"{req.deployment.adapter_name}={run.adapter_dir}",
        "--port",
        str(run.port),
        "--host",
        "127.0.0.1",
    ]
    if req.base_model.id not in ("embedded", "", None):
        argv += ["--base-model", req.base_model.id]
    log = open(run.run_dir / "server.log", "ab")
    run.log(f"  $ codetune {' '.join(argv)}  (log: {run.run_dir / 'server.log'})")
    env = dict(os.environ)
    env.setdefault("MALLOC_ARENA_MAX", "2")
    run.server = subprocess.Popen(
        [sys.executable, "-m", "codetune.cli", *argv],
        stdout=log,
        stderr=log,
        env=env,
        start_new_session=True,
    )
    _wait_ready(run)
    return {"endpoint": run.base_url, "adapter": req.deployment.adapter_name, "pid": run.server.pid}


ADAPTER_HEADER = "X-Amzn-SageMaker-Adapter-Identifier"  # SageMaker's, for adapter components


class LocalRuntime:
    """The slice of boto3's ``sagemaker-runtime`` client that the smoke test uses, over HTTP
    to the local server — so the very same ``smoke_test`` function checks it.

    ``adapters`` maps adapter component names to adapter names: a request addressed to one
    (``InferenceComponentName``) carries ``X-Amzn-SageMaker-Adapter-Identifier``, as SageMaker
    sends it to the base component's container."""

    def __init__(self, base_url: str, adapters: dict[str, str] | None = None):
        self.base_url = base_url
        self.adapters = adapters or {}

    def invoke_endpoint(
        self, *, EndpointName, ContentType, Accept, Body, InferenceComponentName=None, **_
    ):  # noqa: N803 (boto3 names)
        headers = {"Content-Type": ContentType, "Accept": Accept}
        if InferenceComponentName in self.adapters:
            headers[ADAPTER_HEADER] = self.adapters[InferenceComponentName]
        req = urllib.request.Request(
            self.base_url + "/invocations", data=Body, method="POST", headers=headers
        )
        try:
            with urllib.request.urlopen(req, timeout=300) as r:
                return {"Body": io.BytesIO(r.read()), "ContentType": r.headers.get("Content-Type")}
        except urllib.error.HTTPError as e:
            return {"Body": io.BytesIO(e.read()), "ContentType": e.headers.get("Content-Type")}


def step_smoke(run: LocalRun) -> dict:
    from codetune.workflow.smoke import smoke_test

    if run.server is None:
        return {"skipped": "no server running"}
    dep = run.request.deployment
    return smoke_test(
        run.request, LocalRuntime(run.base_url, {dep.adapter_component: dep.adapter_name})
    )


STEP_FUNCS: dict[str, Callable[[LocalRun], dict]] = {
    "PrepareDataset": step_prepare,
    "TrainAdapter": step_train,
    "EvaluateAdapter": step_evaluate,
    "QualityGate": step_gate,
    "RegisterAdapter": step_register,
    "DeployEndpoint": step_deploy,
    "SmokeTest": step_smoke,
}
# Steps whose result is a live process: never cached.
NOT_CACHED = {"DeployEndpoint", "SmokeTest"}


def _marker(run: LocalRun, step: str) -> Path:
    return run.run_dir / "steps" / f"{step}.json"


def _took(seconds: float) -> str:
    m, s = divmod(int(round(seconds)), 60)
    return f"{m}m{s:02d}s" if m else f"{s}s"


@contextlib.contextmanager
def _heartbeat(run: LocalRun, tag: str, t0: float):
    """While a step runs, say every ``run.heartbeat_s`` how long it has been running."""
    stop = threading.Event()

    def beat():
        while not stop.wait(run.heartbeat_s):
            run.log(f"{tag} still running after {_took(time.monotonic() - t0)}")

    thread = threading.Thread(target=beat, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def execute(run: LocalRun) -> dict:
    """Run every step in order; returns the summary. Raises StepFailed on the first failure."""
    t_start = time.monotonic()
    run.log(f"[ValidateRequest] {run.input_path}")
    try:
        run.request = validate(run.input_path, run.out, run.run_name)
    except CodetuneError as e:
        raise StepFailed("ValidateRequest", str(e)) from e
    run.run_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(run.run_dir / "request.json", run.request.to_dict())
    run.log(f"  runId {run.request.run_id} -> {run.run_dir}")
    if run.force_from and run.force_from not in STEP_FUNCS:
        raise CodetuneError(f"--force {run.force_from}: not a step; steps: {', '.join(STEP_FUNCS)}")
    forcing = False
    timings = {}
    steps = list(STEP_FUNCS)
    for i, (step, func) in enumerate(STEP_FUNCS.items()):
        tag = f"[{i + 1}/{len(steps)} {step}]"
        then = f"next: {steps[i + 1]}" if i + 1 < len(steps) else "last step"
        forcing = forcing or step == run.force_from
        marker = _marker(run, step)
        if not forcing and step not in NOT_CACHED and marker.is_file():
            cached = json.loads(marker.read_text())
            run.results[step] = cached["result"]
            timings[step] = {"seconds": cached["seconds"], "cached": True}
            run.log(f"{tag} cached ({_took(cached['seconds'])} when it ran); {then}")
            continue
        if marker.exists():
            marker.unlink()
        run.log(f"{tag} running since {time.strftime('%H:%M:%S')}; {then}")
        t0 = time.monotonic()
        try:
            with _heartbeat(run, tag, t0):
                result = func(run)
        except StepFailed:
            run.log(f"{tag} failed after {_took(time.monotonic() - t0)}")
            raise
        except CodetuneError as e:
            run.log(f"{tag} failed after {_took(time.monotonic() - t0)}")
            raise StepFailed(step, str(e)) from e
        except Exception as e:
            run.log(f"{tag} failed after {_took(time.monotonic() - t0)}")
            raise StepFailed(step, f"{type(e).__name__}: {e}") from e
        seconds = time.monotonic() - t0
        run.results[step] = result
        timings[step] = {"seconds": round(seconds, 1), "cached": False}
        if step not in NOT_CACHED:
            write_json_atomic(marker, {"result": result, "seconds": round(seconds, 1)})
        run.log(f"{tag} done in {_took(seconds)}; {then}")
    summary = {
        "runId": run.request.run_id,
        "runDir": str(run.run_dir),
        "steps": timings,
        "wallSeconds": round(time.monotonic() - t_start, 1),
        "report": str(run.eval_dir / "report.json"),
        "reportHtml": str(run.eval_dir / "report.html"),
        "gate": run.results.get("QualityGate"),
        "endpoint": run.results.get("DeployEndpoint", {}).get("endpoint"),
    }
    write_json_atomic(run.run_dir / "summary.json", summary)
    return summary


def print_summary(run: LocalRun, summary: dict) -> None:
    """The final table (base vs candidate), where the report is, and a ready-to-paste curl."""
    report = json.loads(Path(summary["report"]).read_text())
    print(f"\ncodetune local run {summary['runId']} finished in {summary['wallSeconds']:.0f}s")
    print(f"{'step':<18}{'seconds':>9}")
    for step, t in summary["steps"].items():
        print(f"{step:<18}{t['seconds']:>9.0f}{'  (cached)' if t['cached'] else ''}")
    extra = list(report.get("compare", {}))  # e.g. sft: the SFT-only adapter of a GRPO run
    print(
        f"\n{'suite':<12}{'metric':<14}{'base':>8}"
        + "".join(f"{n:>11}" for n in extra)
        + f"{'candidate':>11}"
    )
    for name, s in report["suites"].items():
        for metric, value in s.get("candidate", {}).items():
            if isinstance(value, int | float):
                more = "".join(
                    f"{s.get('compare', {}).get(n, {}).get(metric, float('nan')):>11.3f}"
                    for n in extra
                )
                print(f"{name:<12}{metric:<14}{s['base'].get(metric, 0):>8.3f}{more}{value:>11.3f}")
    gate = summary.get("gate") or {}
    print(f"\ngate: {'PASSED' if gate.get('passed') else 'FAILED'}")
    for r in gate.get("reasons", []):
        print(f"  - {r}")
    print(f"report: {summary['reportHtml']}")
    if summary.get("endpoint"):
        body = json.dumps(
            {
                "messages": [
                    {"role": "user", "content": "Write a Python function that reverses a string."}
                ],
                "model": run.request.deployment.adapter_name,
                "max_tokens": 128,
            }
        )
        print("\nThe adapter is being served. Try it:")
        print(
            f"  curl -s {summary['endpoint']}/invocations -H 'Content-Type: application/json' -d '{body}'"
        )


def stop_server(run: LocalRun) -> None:
    if run.server and run.server.poll() is None:
        os.killpg(run.server.pid, signal.SIGTERM)
        try:
            run.server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(run.server.pid, signal.SIGKILL)
