"""A test double of SageMaker inference components for moto 5.x, which has none.

``installed()`` patches every botocore client created inside (like ``record.recording``) with
``before-call`` handlers that answer, instead of moto:

- sagemaker Create/Describe/Update/Delete/ListInferenceComponents, and CreateEndpointConfig
  when a variant names no model (moto requires one; the config is then stored in moto's
  backend as it is, so moto's CreateEndpoint/DescribeEndpoint keep working);
- application-autoscaling calls on ``inference-component/<name>`` resources (moto knows only
  endpoint variants);
- sagemaker-runtime InvokeEndpoint with ``InferenceComponentName``: the component must exist
  on that endpoint and be InService; moto then answers the body.

Every intercepted request is first validated against botocore's input shape including what
the client skips (``limits.problems``: lengths, patterns, enums) and refused with
``ValidationException`` as SageMaker would. The rules on top, each from the API reference
unless marked as assumed: a name is unique (CreateInferenceComponent); the endpoint exists
and hosts no model in its variant ("inference components" endpoints); a base component names
an existing model, its variant, ComputeResourceRequirements and RuntimeConfig.CopyCount; an
adapter component names an existing base on the same endpoint and an ArtifactUrl and omits
ComputeResourceRequirements ("Omit this parameter if your request is meant to create an
adapter inference component"); assumed: it omits RuntimeConfig too (it has no copies), a
component being created, updated or deleted refuses updates, a base with adapters refuses
deletion, an adapter cannot be a scalable target, and an update keeps the base.

Status moves one step per Describe (Creating/Updating -> InService, Deleting -> gone), so the
deploy code sees SageMaker's asynchrony; ``fail(name, reason)`` makes one Failed.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import SimpleNamespace

import botocore.session
from botocore.exceptions import ClientError

from awscheck import limits

ACCOUNT = "123456789012"  # moto's default account
COMPONENT_METRICS = (
    "SageMakerInferenceComponentInvocationsPerCopy",
    "SageMakerInferenceComponentConcurrentRequestsPerCopyHighResolution",
)
COMPONENT_DIMENSION = "sagemaker:inference-component:DesiredCopyCount"


class Refused(Exception):
    """A request SageMaker would answer with ValidationException."""


@dataclass
class Component:
    name: str
    endpoint: str
    variant: str | None
    specification: dict
    copies: int | None
    status: str = "Creating"
    failure: str | None = None
    created: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC))
    modified: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC))

    @property
    def base(self) -> str | None:
        return self.specification.get("BaseInferenceComponentName")


@dataclass
class InferenceComponents:
    """State of the double, for tests to inspect: components, scalable targets, policies, and
    every request it answered as ``(operation, params)``."""

    region: str = "us-east-1"
    components: dict[str, Component] = field(default_factory=dict)
    targets: dict[str, dict] = field(default_factory=dict)  # resource id -> target
    policies: dict[tuple[str, str], dict] = field(default_factory=dict)  # (rid, name) -> policy
    requests: list[tuple[str, dict]] = field(default_factory=list)
    invoked: list[str] = field(default_factory=list)  # InferenceComponentName per invocation

    # -- installation -------------------------------------------------------------------------

    @contextmanager
    def installed(self) -> Iterator[InferenceComponents]:
        original = botocore.session.Session.create_client
        double = self

        def create_client(session, service_name, *args, **kwargs):
            c = original(session, service_name, *args, **kwargs)
            if service_name in ("sagemaker", "application-autoscaling", "sagemaker-runtime"):
                c.meta.events.register("before-parameter-build", _keep_params)
                c.meta.events.register("before-call", double._answer)
            return c

        botocore.session.Session.create_client = create_client
        try:
            yield self
        finally:
            botocore.session.Session.create_client = original

    def fail(self, name: str, reason: str = "the container did not pass its health check") -> None:
        c = self.components[name]
        c.status, c.failure = "Failed", reason

    # -- dispatch -----------------------------------------------------------------------------

    def _answer(self, model, params, context=None, **_):
        service = model.service_model.service_name
        op = model.name
        body = (context or {}).get(PARAMS_KEY, {})
        handler = getattr(self, f"_{service.replace('-', '_')}_{op}", None)
        if handler is None:
            return None
        applies = getattr(self, f"_applies_{service.replace('-', '_')}_{op}", None)
        if applies is not None and not applies(body):
            return None
        self.requests.append((op, body))
        problems = limits.problems(service, op, body)
        try:
            if problems:
                raise Refused("; ".join(problems))
            out = handler(body)
        except Refused as e:
            raise ClientError(
                {"Error": {"Code": "ValidationException", "Message": str(e)}}, op
            ) from None
        if out is None:  # validated; moto answers
            return None
        return SimpleNamespace(status_code=200, headers={}), out

    # -- sagemaker ----------------------------------------------------------------------------

    def _moto(self):
        from moto.sagemaker.models import sagemaker_backends

        return sagemaker_backends[ACCOUNT][self.region]

    def _applies_sagemaker_CreateEndpointConfig(self, p: dict) -> bool:
        return any("ModelName" not in v for v in p.get("ProductionVariants", []))

    def _sagemaker_CreateEndpointConfig(self, p: dict) -> dict:
        from moto.sagemaker.models import FakeEndpointConfig

        backend = self._moto()
        name = p["EndpointConfigName"]
        if name in backend.endpoint_configs:
            raise Refused(f"Cannot create already existing endpoint configuration {name!r}.")
        if any("ModelName" in v for v in p["ProductionVariants"]):
            raise Refused("a variant with a model and one without cannot share a config")
        config = FakeEndpointConfig(
            account_id=ACCOUNT,
            region_name=self.region,
            endpoint_config_name=name,
            production_variants=p["ProductionVariants"],
            async_inference_config=p.get("AsyncInferenceConfig"),
            data_capture_config=p.get("DataCaptureConfig"),
            tags=p.get("Tags"),
            kms_key_id=p.get("KmsKeyId"),
        )
        backend.endpoint_configs[name] = config
        return {"EndpointConfigArn": config.endpoint_config_arn}

    def _endpoint(self, name: str):
        ep = self._moto().endpoints.get(name)
        if ep is None:
            raise Refused(f"Could not find endpoint {name!r}.")
        return ep

    def _arn(self, kind: str, name: str) -> str:
        return f"arn:aws:sagemaker:{self.region}:{ACCOUNT}:{kind}/{name}"

    def _sagemaker_CreateInferenceComponent(self, p: dict) -> dict:
        name, spec = p["InferenceComponentName"], p.get("Specification") or {}
        if name in self.components:
            raise Refused(f"Cannot create already existing inference component {name!r}.")
        ep = self._endpoint(p["EndpointName"])
        config = self._moto().endpoint_configs[ep.endpoint_config_name]
        if any(v.get("ModelName") for v in config.production_variants):
            raise Refused(
                f"endpoint {ep.endpoint_name} hosts a model in its variant; inference "
                "components need an endpoint config without ModelName"
            )
        base = spec.get("BaseInferenceComponentName")
        if base:
            b = self.components.get(base)
            if b is None or b.endpoint != p["EndpointName"] or b.base:
                raise Refused(f"base inference component {base!r} not found on {p['EndpointName']}")
            if "ArtifactUrl" not in (spec.get("Container") or {}):
                raise Refused("an adapter inference component needs Container.ArtifactUrl")
            if "ComputeResourceRequirements" in spec or "RuntimeConfig" in p:
                raise Refused(
                    "an adapter inference component uses its base's compute: omit "
                    "ComputeResourceRequirements and RuntimeConfig"
                )
            copies = None
        else:
            variants = {v["VariantName"] for v in config.production_variants}
            if p.get("VariantName") not in variants:
                raise Refused(f"VariantName must be one of {sorted(variants)}")
            if "ModelName" in spec and spec["ModelName"] not in self._moto()._models:
                raise Refused(f"Could not find model {spec['ModelName']!r}.")
            if "ModelName" not in spec and "Image" not in (spec.get("Container") or {}):
                raise Refused("Specification needs ModelName or Container.Image")
            if "ComputeResourceRequirements" not in spec:
                raise Refused("Specification.ComputeResourceRequirements is required")
            if "RuntimeConfig" not in p:
                raise Refused("RuntimeConfig.CopyCount is required")
            copies = p["RuntimeConfig"]["CopyCount"]
        self.components[name] = Component(
            name, p["EndpointName"], p.get("VariantName"), spec, copies
        )
        return {"InferenceComponentArn": self._arn("inference-component", name)}

    def _component(self, name: str) -> Component:
        c = self.components.get(name)
        if c is None:
            arn = self._arn("inference-component", name)
            raise Refused(f"Could not find inference component {arn!r}.")
        return c

    def _sagemaker_DescribeInferenceComponent(self, p: dict) -> dict:
        c = self._component(p["InferenceComponentName"])
        out = self._summary(c)
        if c.status in ("Creating", "Updating"):
            c.status = "InService"  # one step per look, like a minutes-long operation
        elif c.status == "Deleting":
            del self.components[c.name]
        out["Specification"] = c.specification
        if c.copies is not None:
            out["RuntimeConfig"] = {"DesiredCopyCount": c.copies, "CurrentCopyCount": c.copies}
        if c.failure:
            out["FailureReason"] = c.failure
        return out

    def _summary(self, c: Component) -> dict:
        return {
            "InferenceComponentName": c.name,
            "InferenceComponentArn": self._arn("inference-component", c.name),
            "EndpointName": c.endpoint,
            "EndpointArn": self._arn("endpoint", c.endpoint),
            "VariantName": c.variant or self.components.get(c.base or "", c).variant or "",
            "InferenceComponentStatus": c.status,
            "CreationTime": c.created,
            "LastModifiedTime": c.modified,
        }

    def _sagemaker_UpdateInferenceComponent(self, p: dict) -> dict:
        c = self._component(p["InferenceComponentName"])
        if c.status in ("Creating", "Updating", "Deleting"):
            raise Refused(f"inference component {c.name} is {c.status}; update it afterwards")
        spec = p.get("Specification")
        if spec is not None:
            if spec.get("BaseInferenceComponentName") != c.base:
                raise Refused("an update cannot change BaseInferenceComponentName")
            if c.base and "ComputeResourceRequirements" in spec:
                raise Refused("an adapter inference component takes no ComputeResourceRequirements")
            c.specification = spec
        if "RuntimeConfig" in p:
            if c.base:
                raise Refused("an adapter inference component has no RuntimeConfig")
            c.copies = p["RuntimeConfig"]["CopyCount"]
        c.status, c.failure, c.modified = "Updating", None, dt.datetime.now(dt.UTC)
        return {"InferenceComponentArn": self._arn("inference-component", c.name)}

    def _sagemaker_DeleteInferenceComponent(self, p: dict) -> dict:
        c = self._component(p["InferenceComponentName"])
        adapters = [a.name for a in self.components.values() if a.base == c.name]
        if adapters:
            raise Refused(f"inference component {c.name} is the base of {adapters}")
        c.status = "Deleting"
        return {}

    def _sagemaker_ListInferenceComponents(self, p: dict) -> dict:
        out = [
            self._summary(c)
            for c in self.components.values()
            if p.get("EndpointNameEquals") in (None, c.endpoint)
            and p.get("NameContains", "") in c.name
            and p.get("StatusEquals") in (None, c.status)
        ]
        return {"InferenceComponents": out}

    # -- sagemaker-runtime --------------------------------------------------------------------

    def _applies_sagemaker_runtime_InvokeEndpoint(self, p: dict) -> bool:
        return "InferenceComponentName" in p

    def _sagemaker_runtime_InvokeEndpoint(self, p: dict) -> None:
        c = self._component(p["InferenceComponentName"])
        if c.endpoint != p["EndpointName"]:
            raise Refused(f"inference component {c.name} is not on endpoint {p['EndpointName']}")
        if c.status != "InService":
            raise Refused(f"inference component {c.name} is {c.status}")
        self.invoked.append(c.name)
        return None

    # -- application-autoscaling --------------------------------------------------------------

    @staticmethod
    def _ours(p: dict) -> bool:
        ids = p.get("ResourceIds") or [p.get("ResourceId", "")]
        return any(str(i).startswith("inference-component/") for i in ids)

    _applies_application_autoscaling_RegisterScalableTarget = _ours
    _applies_application_autoscaling_DescribeScalableTargets = _ours
    _applies_application_autoscaling_PutScalingPolicy = _ours
    _applies_application_autoscaling_DescribeScalingPolicies = _ours
    _applies_application_autoscaling_DeleteScalingPolicy = _ours
    _applies_application_autoscaling_DeregisterScalableTarget = _ours

    def _dimension(self, p: dict) -> None:
        if p.get("ScalableDimension", COMPONENT_DIMENSION) != COMPONENT_DIMENSION:
            raise Refused(f"inference components scale on {COMPONENT_DIMENSION}")

    def _application_autoscaling_RegisterScalableTarget(self, p: dict) -> dict:
        self._dimension(p)
        c = self._component(p["ResourceId"].split("/", 1)[1])
        if c.base:
            raise Refused(f"{c.name} is an adapter component: it has no copies to scale")
        rid = p["ResourceId"]
        self.targets[rid] = {
            "ServiceNamespace": "sagemaker",
            "ResourceId": rid,
            "ScalableDimension": COMPONENT_DIMENSION,
            "MinCapacity": p.get("MinCapacity", self.targets.get(rid, {}).get("MinCapacity")),
            "MaxCapacity": p.get("MaxCapacity", self.targets.get(rid, {}).get("MaxCapacity")),
            "RoleARN": f"arn:aws:iam::{ACCOUNT}:role/aws-service-role/sagemaker.application-autoscaling.amazonaws.com/AWSServiceRoleForApplicationAutoScaling_SageMakerEndpoint",
            "CreationTime": dt.datetime.now(dt.UTC),
        }
        return {
            "ScalableTargetARN": f"arn:aws:application-autoscaling:{self.region}:{ACCOUNT}:scalable-target/{rid}"
        }

    def _application_autoscaling_DescribeScalableTargets(self, p: dict) -> dict:
        ids = p.get("ResourceIds")
        return {"ScalableTargets": [t for r, t in self.targets.items() if ids is None or r in ids]}

    def _application_autoscaling_PutScalingPolicy(self, p: dict) -> dict:
        self._dimension(p)
        rid = p["ResourceId"]
        if rid not in self.targets:
            raise Refused(f"No scalable target registered for {rid}")
        kind = p.get("PolicyType", "StepScaling")
        if kind == "TargetTrackingScaling":
            cfg = p.get("TargetTrackingScalingPolicyConfiguration") or {}
            metric = (cfg.get("PredefinedMetricSpecification") or {}).get("PredefinedMetricType")
            if metric is not None and metric not in COMPONENT_METRICS:
                raise Refused(
                    f"{metric} is not a metric of inference components: {COMPONENT_METRICS}"
                )
        elif "StepScalingPolicyConfiguration" not in p:
            raise Refused("StepScaling needs StepScalingPolicyConfiguration")
        arn = f"arn:aws:autoscaling:{self.region}:{ACCOUNT}:scalingPolicy:0:resource/sagemaker/{rid}:policyName/{p['PolicyName']}"
        self.policies[(rid, p["PolicyName"])] = {
            **p,
            "PolicyARN": arn,
            "CreationTime": dt.datetime.now(dt.UTC),
        }
        return {"PolicyARN": arn}

    def _application_autoscaling_DescribeScalingPolicies(self, p: dict) -> dict:
        names = p.get("PolicyNames")
        return {
            "ScalingPolicies": [
                pol
                for (rid, name), pol in self.policies.items()
                if rid == p.get("ResourceId", rid) and (names is None or name in names)
            ]
        }

    def _application_autoscaling_DeleteScalingPolicy(self, p: dict) -> dict:
        if self.policies.pop((p["ResourceId"], p["PolicyName"]), None) is None:
            raise Refused("ObjectNotFoundException: no such policy")
        return {}

    def _application_autoscaling_DeregisterScalableTarget(self, p: dict) -> dict:
        if self.targets.pop(p["ResourceId"], None) is None:
            raise Refused("ObjectNotFoundException: no such scalable target")
        for key in [k for k in self.policies if k[0] == p["ResourceId"]]:
            del self.policies[key]
        return {}


PARAMS_KEY = "awscheck_params"


def _keep_params(params, context, **_):
    # the parameters as the caller passed them, for the before-call handler of the same request
    from awscheck.record import _plain

    context[PARAMS_KEY] = _plain(params)
