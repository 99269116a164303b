"""Workflows from inside a notebook: the seed's workflow SDK (ModelArts' ``modelarts.workflow``).

    import atelier.workflow as wf

    threshold = wf.Placeholder("threshold", wf.PlaceholderType.FLOAT, default=0.5)
    data, out = wf.data.InputStorage("data"), wf.data.OutputStorage("out")
    prep = wf.WasmStep(
        name="prep", plugin="prep-data",
        inputs=[wf.Input("raw", data.join("raw/"))],
        outputs=[wf.Output("clean", obs_config=wf.data.OBSOutputConfig(out.join("clean/")))],
        parameters={"threshold": threshold})
    check = wf.ConditionStep(
        name="check", depend_steps=prep, if_then_steps="train",
        conditions=wf.Condition(wf.ConditionTypeEnum.GT, threshold, 0.3))
    train = wf.JobStep(name="train", depend_steps=check, algorithm="mnist", flavor="cpu.small",
                       inputs=[{"name": "data_url", "path": prep.outputs["clean"].as_input()}])
    workflow = wf.Workflow(name="etl", desc="clean, check, train", steps=[prep, check, train])
    workflow.release()                      # version 1, then a new version when it changed
    run = workflow.run(parameters={"threshold": 0.7},
                       storages={"data": "/bucket/in/", "out": "/bucket/out/"})
    run.wait().status                       # 'COMPLETED'

Each object emits the gateway's wire format (``docs/workflows.md``; ``to_definition()``
shows it): placeholders become ``{"$placeholder": name}`` and are collected into the
workflow's ``parameters``, storage paths ``{"$storage": name, "join": path}``, outputs used
as inputs ``{"$output": ...}``, ``DataConsumptionSelector`` ``{"$select": [...]}`` and
``MetricInfo`` ``{"$metric": ...}``. A ``JobStep``'s, ``ModelStep``'s and ``ServiceStep``'s
keyword arguments (or ``properties``) are the body of the training-job, model or service
create request, with any of these objects inside.

The notebook holds no token: calls go to the gateway over the socket in
``ATELIER_STORAGE_SOCKET`` (the one ``atelier.file`` uses), and the gateway acts as the
notebook's owner, on their workflows only. A refusal raises ``WorkflowError`` with the
gateway's message.
"""

import enum
import json
import os
import re
import time
import types
import urllib.parse

from . import file as _file

__all__ = [
    "WorkflowError", "Workflow", "Run", "Placeholder", "PlaceholderType", "OBSPlaceholder",
    "Storage", "InputStorage", "OutputStorage", "OBSPath", "OBSOutputConfig", "MetricsConfig",
    "Input", "Output", "JobInput", "JobOutput", "ModelInput", "ModelOutput", "ServiceInput",
    "ServiceOutput", "ModelConfig", "ServiceConfig", "DataConsumptionSelector", "Step",
    "WasmStep", "Grant", "JobStep", "ModelStep", "ServiceStep", "ConditionStep", "Condition",
    "ConditionTypeEnum", "MetricInfo", "StepPolicy", "Policy", "Scene", "data", "steps",
    "policy", "get_workflow", "list_workflows", "delete_workflow", "get_run", "list_runs",
    "schema",
]


class WorkflowError(Exception):
    """The gateway refused a call: ``message`` is its reason, ``status`` the HTTP status and
    ``code`` its error code (``None`` when the gateway was not reached)."""

    def __init__(self, message, status=None, code=None):
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code


# ---- the gateway, over the notebook's socket ----

_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,63}$")
_SEGMENT = re.compile(r"^[A-Za-z0-9_-]+$")


def _segment(value, what):
    """``value`` as one path segment: names, ids and numbers only (the socket refuses others)."""
    text = str(value)
    if not _SEGMENT.match(text):
        raise WorkflowError("%s %r is not valid: letters, digits, _ and -" % (what, text))
    return text


def _request(method, path, body=None, query=None):
    socket_path = os.environ.get("ATELIER_STORAGE_SOCKET")
    if not socket_path:
        raise WorkflowError(
            "workflows are not served in this notebook (no ATELIER_STORAGE_SOCKET); "
            "restart the notebook")
    try:
        conn = _file._connect(socket_path, "the gateway")
    except _file.StorageError as e:
        raise WorkflowError(str(e)) from None
    try:
        headers = {"Accept": "application/json"}
        payload = None
        if body is not None:
            payload = json.dumps(body).encode("utf-8")
            headers["Content-Type"] = "application/json"
            headers["Content-Length"] = str(len(payload))
        if query:
            path += "?" + urllib.parse.urlencode(query)
        conn.request(method, path, body=payload, headers=headers)
        resp = conn.getresponse()
        data = resp.read()
    finally:
        conn.close()
    if resp.status >= 400:
        raise _refusal(resp.status, data)
    return json.loads(data) if data else None


def _refusal(status, data):
    """The gateway's ``{"error": {"code", "message"}}`` (or ``{"error": message}``)."""
    try:
        err = json.loads(data).get("error")
    except (ValueError, AttributeError):
        err = None
    if isinstance(err, dict):
        return WorkflowError(err.get("message") or str(err), status, err.get("code"))
    if isinstance(err, str):
        return WorkflowError(err, status)
    return WorkflowError(data.decode("utf-8", errors="replace") or "HTTP %d" % status, status)


def _workflow_path(name):
    return "/v1/workflows/" + _segment(name, "the workflow")


def schema():
    """The wire format's JSON Schema (``GET /v1/workflow-schema``)."""
    return _request("GET", "/v1/workflow-schema")


def get_workflow(name):
    """The workflow (by name or id): its newest version and definition, as a dict."""
    return _request("GET", _workflow_path(name))


def list_workflows():
    """The notebook owner's workflows, as dicts."""
    return _request("GET", "/v1/workflows")["items"]


def delete_workflow(name):
    """Deletes the workflow and its versions (refused while a run is under way)."""
    _request("DELETE", _workflow_path(name))


def get_run(workflow, number):
    """Run ``number`` of the workflow."""
    return Run(workflow, _request("GET", "%s/runs/%s" % (
        _workflow_path(workflow), _segment(number, "the run number"))))


def list_runs(workflow):
    """The workflow's runs, newest first as the gateway lists them."""
    return [Run(workflow, r) for r in
            _request("GET", _workflow_path(workflow) + "/runs")["items"]]


# ---- the wire format ----

def _name_of(x):
    return x.name if isinstance(x, (Step, Placeholder, Storage)) else str(x)


def _names(value):
    """A step (or name) or a list of them, as a list of names."""
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return [_name_of(v) for v in value]
    return [_name_of(value)]


def _listed(value):
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _some(**fields):
    """The fields that are set (not ``None``)."""
    return {k: v for k, v in fields.items() if v is not None}


class _Emit:
    """Turns SDK objects into the wire format, collecting the placeholders and storages
    they use (the same name is one parameter; two different ones are an error)."""

    def __init__(self):
        self.parameters = {}
        self.storages = {}

    def _collect(self, table, key, wire, what):
        if key in table and table[key] != wire:
            raise ValueError("two different %s are named %r: %s and %s"
                             % (what, key, json.dumps(table[key]), json.dumps(wire)))
        table[key] = wire

    def parameter(self, p):
        self._collect(self.parameters, p.name, p.to_wire(), "placeholders")

    def storage(self, s):
        self._collect(self.storages, s.name, s.to_wire(), "storages")

    def value(self, v):
        if isinstance(v, Placeholder):
            self.parameter(v)
            return {"$placeholder": v.name}
        if isinstance(v, Storage):
            self.storage(v)
            return {"$storage": v.name}
        if isinstance(v, _Wire):
            return v._wire(self)
        if isinstance(v, enum.Enum):
            return v.value
        if isinstance(v, dict):
            return {str(k): self.value(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [self.value(x) for x in v]
        return v


class _Wire:
    """An object with a wire form (``_wire(emit)``)."""

    def _wire(self, emit):
        raise NotImplementedError

    def __repr__(self):
        return "%s(%s)" % (type(self).__name__, json.dumps(self._wire(_Emit())))


class PlaceholderType(enum.Enum):
    """The type of a ``Placeholder``'s value."""
    INT = "INT"
    STR = "STR"
    BOOL = "BOOL"
    FLOAT = "FLOAT"
    ENUM = "ENUM"
    JSON = "JSON"
    LIST = "LIST"


class Placeholder:
    """A workflow parameter, given per run (or while it runs, with ``delay=True``). Use it
    wherever a value goes; one name is one parameter."""

    def __init__(self, name, placeholder_type, default=None, placeholder_format=None,
                 delay=False, description=None, enum_list=None, constraint=None,
                 required=True, object_type=None):
        self.name = name
        self.placeholder_type = PlaceholderType(placeholder_type)
        self.default = default
        self.placeholder_format = placeholder_format
        self.delay = delay
        self.description = description
        self.enum_list = enum_list
        self.constraint = constraint
        self.required = required
        self.object_type = object_type

    def to_wire(self):
        default = self.default
        if isinstance(default, OBSPath):
            default = default.obs_path
        return dict(_some(
            name=self.name, placeholder_type=self.placeholder_type.value, default=default,
            placeholder_format=self.placeholder_format, description=self.description,
            enum_list=self.enum_list, object_type=self.object_type,
            constraint=self.constraint), delay=bool(self.delay), required=bool(self.required))

    def __repr__(self):
        return "Placeholder(%s)" % json.dumps(self.to_wire())


class OBSPlaceholder(Placeholder):
    """A storage path given per run: ``object_type`` ``"file"`` or ``"directory"``."""

    def __init__(self, name, object_type, delay=False, default=None, description=None):
        super().__init__(name, PlaceholderType.STR, default=default, placeholder_format="obs",
                         delay=delay, description=description, object_type=object_type)


class Storage:
    """A storage whose root (``/bucket/folder/``) is given per run (or ``default``); paths
    under it are ``storage.join("dir/")``. ``create_dir`` makes the directory before the step
    and ``with_execution_id`` puts it under the run's own ``<root>/<execution id>/``."""

    def __init__(self, name, title=None, description=None, create_dir=False,
                 with_execution_id=False, default=None):
        self.name = name
        self.title = title
        self.description = description
        self.create_dir = create_dir
        self.with_execution_id = with_execution_id
        self.default = default

    def join(self, directory="", with_execution_id=None, create_dir=None):
        """A path under the root; the flags override the storage's for this path."""
        return StoragePath(self, "", None, None).join(directory, with_execution_id, create_dir)

    def to_wire(self):
        return dict(_some(name=self.name, title=self.title, description=self.description,
                          default=self.default),
                    create_dir=bool(self.create_dir),
                    with_execution_id=bool(self.with_execution_id))

    def __repr__(self):
        return "%s(%s)" % (type(self).__name__, json.dumps(self.to_wire()))


class InputStorage(Storage):
    """A storage read from: paths are joined, nothing is created."""

    def __init__(self, name, title=None, description=None, default=None):
        super().__init__(name, title, description, False, False, default)


class OutputStorage(Storage):
    """A storage written to: each run's paths are under its own ``<root>/<execution id>/``,
    and directories are created before the step."""

    def __init__(self, name, title=None, description=None, default=None):
        super().__init__(name, title, description, True, True, default)


class StoragePath(_Wire):
    """``storage.join(...)``: a path under a storage's root; ``join`` again to go deeper."""

    def __init__(self, storage, path, with_execution_id, create_dir):
        self.storage = storage
        self.path = path
        self.with_execution_id = with_execution_id
        self.create_dir = create_dir

    def join(self, directory, with_execution_id=None, create_dir=None):
        directory = str(directory)
        if not self.path:
            path = directory
        else:
            path = self.path.rstrip("/") + "/" + directory.lstrip("/")
        return StoragePath(
            self.storage, path,
            self.with_execution_id if with_execution_id is None else with_execution_id,
            self.create_dir if create_dir is None else create_dir)

    def _wire(self, emit):
        emit.storage(self.storage)
        return dict({"$storage": self.storage.name, "join": self.path},
                    **_some(create_dir=self.create_dir, with_execution_id=self.with_execution_id))


class OBSPath(_Wire):
    """A storage path: a literal ``/bucket/folder/`` or a ``Storage`` (or its ``join``)."""

    def __init__(self, obs_path):
        self.obs_path = obs_path

    def _wire(self, emit):
        return emit.value(self.obs_path)


class OBSOutputConfig(_Wire):
    """Where an output is written (``obs_path``), and its metrics file if any."""

    def __init__(self, obs_path, metric_file=None):
        self.obs_path = obs_path
        self.metric_file = metric_file

    def _wire(self, emit):
        out = {"obs_path": emit.value(self.obs_path)}
        if self.metric_file is not None:
            out["metric_file"] = emit.value(self.metric_file)
        return out


class MetricsConfig(_Wire):
    """The metrics files an output writes (JSON arrays of ``{"key", "title", "type",
    "data"}``); conditions read their ``"float"`` entries with ``MetricInfo``."""

    def __init__(self, metric_files, realtime_visualization=False, visualization=True):
        self.metric_files = _listed(metric_files)
        self.realtime_visualization = realtime_visualization
        self.visualization = visualization

    def _wire(self, emit):
        return {"metric_files": emit.value(self.metric_files),
                "realtime_visualization": bool(self.realtime_visualization),
                "visualization": bool(self.visualization)}


class _Config(_Wire):
    """Keyword arguments kept as they are (the step interprets them)."""

    def __init__(self, **fields):
        self.fields = fields

    def _wire(self, emit):
        return emit.value(self.fields)


class ModelConfig(_Config):
    """A model output's configuration (``ModelOutput(model_config=...)``), kept for the step."""


class ServiceConfig(_Config):
    """A service output's configuration (``ServiceOutput(service_config=...)``), kept for the
    step."""


class Input(_Wire):
    """A step's input: a name and its data (a literal, a ``Placeholder``, a storage path,
    another step's ``outputs[name].as_input()``, a ``DataConsumptionSelector``)."""

    def __init__(self, name, data):
        self.name = name
        self.data = data

    def _wire(self, emit):
        return {"name": self.name, "data": emit.value(self.data)}


JobInput = ModelInput = ServiceInput = Input


class Output(_Wire):
    """A step's output: where it is written (``obs_config``), its metrics files
    (``metrics_config``), or a model's or service's configuration."""

    def __init__(self, name, obs_config=None, metrics_config=None, model_config=None,
                 service_config=None):
        self.name = name
        self.obs_config = obs_config
        self.metrics_config = metrics_config
        self.model_config = model_config
        self.service_config = service_config

    def _wire(self, emit):
        out = {"name": self.name}
        for key in ("obs_config", "metrics_config", "model_config", "service_config"):
            v = getattr(self, key)
            if isinstance(v, (str, Storage, StoragePath, Placeholder)) and key == "obs_config":
                v = OBSOutputConfig(v)
            if v is not None:
                out[key] = emit.value(v)
        return out


class JobOutput(Output):
    """A job's output: ``obs_config`` (``OBSOutputConfig``) and/or ``metrics_config``."""

    def __init__(self, name, obs_config=None, metrics_config=None):
        super().__init__(name, obs_config=obs_config, metrics_config=metrics_config)


class ModelOutput(Output):
    """A model step's output (``model_config``)."""

    def __init__(self, name, model_config=None):
        super().__init__(name, model_config=model_config)


class ServiceOutput(Output):
    """A service step's output (``service_config``); ``get_output_variable("access_address")``
    of it is the deployed service's address, for later steps."""

    def __init__(self, name, service_config=None):
        super().__init__(name, service_config=service_config)


class OutputRef(_Wire):
    """What a step produced for an output (or one of its output variables), resolved when
    the step that uses it starts. That step must depend on the producing one."""

    def __init__(self, step, output, variable=None):
        self.step = step
        self.output = output
        self.variable = variable

    def _wire(self, emit):
        return {"$output": dict({"step": self.step, "output": self.output},
                                **_some(variable=self.variable))}


class _StepOutput:
    """``step.outputs[name]``: the output, and the references to it."""

    def __init__(self, step, output):
        self.step = step
        self.output = output
        self.name = output.name

    def as_input(self):
        """This output as another step's input data (``{"$output": ...}``)."""
        return OutputRef(self.step.name, self.name)

    def get_output_variable(self, variable):
        """One of this output's variables (a service's ``access_address``)."""
        return OutputRef(self.step.name, self.name, variable)


class _Outputs:
    """A step's outputs, by name (``step.outputs["train_url"]``) or in order."""

    def __init__(self, step, outputs):
        self._step = step
        self._list = outputs

    def __getitem__(self, key):
        if isinstance(key, int):
            return _StepOutput(self._step, self._list[key])
        for o in self._list:
            if o.name == key:
                return _StepOutput(self._step, o)
        raise KeyError("step %r has no output %r (its outputs: %s)" % (
            self._step.name, key, ", ".join(o.name for o in self._list) or "none"))

    def __iter__(self):
        return iter(self._list)

    def __len__(self):
        return len(self._list)


class DataConsumptionSelector(_Wire):
    """The one of several outputs that exists (the others' steps were skipped by a branch)."""

    def __init__(self, data_list):
        self.data_list = list(data_list)

    def _wire(self, emit):
        return {"$select": [emit.value(_as_ref(d)) for d in self.data_list]}


def _as_ref(v):
    return v.as_input() if isinstance(v, _StepOutput) else v


class MetricInfo(_Wire):
    """The ``"float"`` metric ``json_key`` of the metrics file a job (or wasm) step wrote for
    an output: ``MetricInfo(job.outputs["metrics"].as_input(), "accuracy")``."""

    def __init__(self, input_data, json_key):
        input_data = _as_ref(input_data)
        if not isinstance(input_data, OutputRef):
            raise TypeError("MetricInfo reads a step's output: pass "
                            "step.outputs[name].as_input(), not %r" % (input_data,))
        self.input_data = input_data
        self.json_key = json_key

    def _wire(self, emit):
        return {"$metric": {"step": self.input_data.step, "output": self.input_data.output,
                            "json_key": self.json_key}}


class ConditionTypeEnum(enum.Enum):
    """``EQ GT GTE IN LT LTE``, ``NOT`` (``!=``) and ``OR`` (of two conditions)."""
    EQ = "EQ"
    GT = "GT"
    GTE = "GTE"
    IN = "IN"
    LT = "LT"
    LTE = "LTE"
    NOT = "NOT"
    OR = "OR"


class Condition(_Wire):
    """``left <condition_type> right``; each side a literal, a ``Placeholder``, a
    ``MetricInfo`` or a nested ``Condition``."""

    def __init__(self, condition_type, left, right):
        self.condition_type = ConditionTypeEnum(condition_type)
        self.left = left
        self.right = right

    def _wire(self, emit):
        return {"condition_type": self.condition_type.value,
                "left": emit.value(self.left), "right": emit.value(self.right)}


class StepPolicy(_Wire):
    """How a step is polled and timed out, and ``skip_conditions`` (AND-ed; true skips it)."""

    def __init__(self, poll_interval_seconds=1, max_execution_minutes=10080,
                 skip_conditions=None):
        self.poll_interval_seconds = poll_interval_seconds
        self.max_execution_minutes = max_execution_minutes
        self.skip_conditions = _listed(skip_conditions)

    def _wire(self, emit):
        return {"poll_interval_seconds": self.poll_interval_seconds,
                "max_execution_minutes": self.max_execution_minutes,
                "skip_conditions": emit.value(self.skip_conditions)}


class Grant(_Wire):
    """A storage prefix a ``WasmStep`` may read (or, with ``write``, also write), besides its
    inputs' and outputs'."""

    def __init__(self, path, write=False):
        self.path = path
        self.write = write

    def _wire(self, emit):
        return {"path": emit.value(self.path), "write": bool(self.write)}


class Step(_Wire):
    """A step of any ``step_type`` with its ``properties`` as given; the classes below make
    the properties for each kind."""

    step_type = None

    def __init__(self, name, step_type=None, title=None, description=None, inputs=None,
                 outputs=None, properties=None, policy=None, depend_steps=None):
        self.name = name
        if step_type is not None:
            self.step_type = step_type
        self.title = title
        self.description = description
        self.inputs = _listed(inputs)
        self.outputs = _Outputs(self, _listed(outputs))
        self.properties = properties
        self.policy = policy
        self.depend_steps = depend_steps

    def _properties(self, emit):
        return emit.value(self.properties) if self.properties is not None else None

    def _wire(self, emit):
        out = {"name": self.name, "step_type": self.step_type}
        out.update(_some(title=self.title, description=self.description))
        if self.inputs:
            out["inputs"] = [emit.value(i) for i in self.inputs]
        if len(self.outputs):
            out["outputs"] = [emit.value(o) for o in self.outputs]
        properties = self._properties(emit)
        if properties is not None:
            out["properties"] = properties
        if self.policy is not None:
            out["policy"] = emit.value(self.policy)
        depends = _names(self.depend_steps)
        if depends:
            out["depend_steps"] = depends
        return out


class WasmStep(Step):
    """A registered Wasm component of world ``workflow-step`` (``plugin``, its ``version`` or
    the newest), given ``parameters``; its inputs' paths are granted read-only, its outputs'
    read-write, and ``grants`` adds prefixes."""

    step_type = "wasm"

    def __init__(self, name, plugin, version=None, parameters=None, grants=None, inputs=None,
                 outputs=None, title=None, description=None, policy=None, depend_steps=None):
        super().__init__(name, title=title, description=description, inputs=inputs,
                         outputs=outputs, policy=policy, depend_steps=depend_steps)
        self.plugin = plugin
        self.version = version
        self.parameters = parameters or {}
        self.grants = _listed(grants)

    def _properties(self, emit):
        out = {"plugin": self.plugin, "parameters": emit.value(self.parameters),
               "grants": emit.value(self.grants)}
        if self.version is not None:
            out["version"] = emit.value(self.version)
        return out


class _RequestStep(Step):
    """A step whose properties are the body of a create request: ``properties`` and any
    other keyword arguments, merged. A body field that is also a step argument (``name``,
    ``inputs``, ``outputs``, ``description``, ``policy``) goes in ``properties``."""

    def __init__(self, name, inputs=None, outputs=None, title=None, description=None,
                 policy=None, depend_steps=None, properties=None, **body):
        merged = dict(properties or {})
        merged.update(body)
        super().__init__(name, title=title, description=description, inputs=inputs,
                         outputs=outputs, properties=merged, policy=policy,
                         depend_steps=depend_steps)


class JobStep(_RequestStep):
    """A training job: the keyword arguments (``algorithm``, ``flavor``, ``inputs`` of the
    job as ``properties={"inputs": ...}``, ``hyperparameters``, …) are the body of
    ``POST /v1/training-jobs``."""

    step_type = "job"


class ModelStep(_RequestStep):
    """A model registration: the keyword arguments are the body of ``POST /v1/models``."""

    step_type = "model"


class ServiceStep(_RequestStep):
    """A real-time service deployment: the keyword arguments are the body of
    ``POST /v1/services``; output variable ``access_address`` is for later steps."""

    step_type = "service"


class ConditionStep(Step):
    """A branch: the ``conditions`` (AND-ed) true runs ``if_then_steps`` and skips
    ``else_then_steps``, false the reverse. Branch steps must depend on this step."""

    step_type = "condition"

    def __init__(self, name, conditions, if_then_steps=None, else_then_steps=None, title=None,
                 description=None, depend_steps=None, policy=None):
        super().__init__(name, title=title, description=description, policy=policy,
                         depend_steps=depend_steps)
        self.conditions = _listed(conditions)
        self.if_then_steps = if_then_steps
        self.else_then_steps = else_then_steps

    def _properties(self, emit):
        return {"conditions": emit.value(self.conditions),
                "if_then_steps": _names(self.if_then_steps),
                "else_then_steps": _names(self.else_then_steps)}


class Scene(_Wire):
    """A named subset of the steps, runnable on its own (partial execution)."""

    def __init__(self, scene_name, scene_steps):
        self.scene_name = scene_name
        self.scene_steps = scene_steps

    def _wire(self, emit):
        return {"scene_name": self.scene_name, "scene_steps": _names(self.scene_steps)}


class Policy(_Wire):
    """The workflow's ``scenes`` for partial execution."""

    def __init__(self, scenes=None):
        self.scenes = _listed(scenes)

    def _wire(self, emit):
        return {"scenes": emit.value(self.scenes)}


_TERMINAL = ("COMPLETED", "FAILED", "STOPPED")


class Workflow:
    """``Workflow(name, desc, steps, storages=None, policy=None)``: ``release()`` publishes
    it (created the first time, a new version when it changed), ``run(...)`` starts a run."""

    def __init__(self, name, desc, steps, storages=None, policy=None):
        self.name = name
        self.desc = desc
        self.steps = _listed(steps)
        self.storages = _listed(storages)
        self.policy = policy
        self.id = None
        self.version = None

    def to_definition(self):
        """The definition in the wire format (a dict), placeholders and storages collected."""
        if not isinstance(self.name, str) or not _NAME.match(self.name):
            raise ValueError("the workflow name %r is not valid: 1-64 characters, letters, "
                             "digits, _ and -, starting with a letter" % (self.name,))
        emit = _Emit()
        for s in self.storages:
            emit.storage(s)
        steps = [emit.value(s) for s in self.steps]
        out = {"name": self.name, "desc": self.desc or "",
               "storages": list(emit.storages.values()),
               "parameters": list(emit.parameters.values()), "steps": steps}
        if self.policy is not None:
            out["policy"] = emit.value(self.policy)
        return out

    def to_json(self, indent=2):
        """``to_definition()`` as JSON text (for ``atelier workflow create -f``)."""
        return json.dumps(self.to_definition(), indent=indent)

    def release(self):
        """Publishes the definition: creates the workflow, or makes a new version when the
        definition changed. Returns the gateway's view with ``version`` and ``changed``."""
        definition = self.to_definition()
        path = _workflow_path(self.name)
        try:
            view = _request("PUT", path, definition)
        except WorkflowError as e:
            if e.status != 404:
                raise
            try:
                view = dict(_request("POST", "/v1/workflows", definition), changed=True)
            except WorkflowError as again:
                if again.status != 409:
                    raise
                view = _request("PUT", path, definition)
        self.id = view.get("id")
        self.version = view.get("version")
        return view

    def run(self, parameters=None, storages=None, scenes=None, connection=None, tags=None):
        """Starts a run of the released workflow: ``parameters`` by name (or Placeholder),
        ``storages`` roots by name (``{"out": "/bucket/folder/"}``), ``scenes`` to run only
        those, ``connection`` the storage connection. Returns the ``Run``."""
        body = {"parameters": {_name_of(k): v for k, v in (parameters or {}).items()},
                "storages": {_name_of(k): v for k, v in (storages or {}).items()}}
        if scenes is not None:
            body["scenes"] = [s.scene_name if isinstance(s, Scene) else s
                              for s in _listed(scenes)]
        if connection is not None:
            body["connection"] = connection
        if tags is not None:
            body["tags"] = tags
        return Run(self.name, _request("POST", _workflow_path(self.name) + "/runs", body))

    def release_and_run(self, parameters=None, storages=None, scenes=None, connection=None,
                        tags=None):
        """``release()``, then ``run(...)`` of what was released."""
        self.release()
        return self.run(parameters, storages, scenes, connection, tags)

    def runs(self):
        """This workflow's runs."""
        return list_runs(self.name)

    def __repr__(self):
        return "Workflow(name=%r, version=%r)" % (self.name, self.version)


class Run:
    """A run of a workflow: ``number``, ``status`` (RUNNING, AWAITING_INPUT, COMPLETED,
    FAILED, STOPPING, STOPPED), ``steps``; ``refresh()`` reads it again."""

    def __init__(self, workflow, view):
        self.workflow = workflow
        self._view = view

    def __getattr__(self, key):
        view = self.__dict__.get("_view") or {}
        if key in view:
            return view[key]
        raise AttributeError(key)

    @property
    def view(self):
        """The run as the gateway showed it last (a dict)."""
        return self._view

    def _path(self):
        return "%s/runs/%s" % (_workflow_path(self.workflow),
                               _segment(self._view["number"], "the run number"))

    def refresh(self):
        """Reads the run again; returns it."""
        self._view = _request("GET", self._path())
        return self

    def step(self, name):
        """One step of the run, as a dict (status, reason, inputs, outputs, metrics…)."""
        for s in self._view.get("steps") or []:
            if s.get("name") == name:
                return s
        raise KeyError("the run has no step %r" % (name,))

    def wait(self, timeout=None, interval=2.0):
        """Waits until the run ended (COMPLETED, FAILED, STOPPED) or awaits input (a step
        needs ``proceed``); returns the run. ``timeout`` seconds: WorkflowError after it."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.refresh().status not in _TERMINAL + ("AWAITING_INPUT",):
            if deadline is not None and time.monotonic() >= deadline:
                raise WorkflowError("run %s of %s is still %s after %s s" % (
                    self.number, self.workflow, self.status, timeout))
            time.sleep(interval)
        return self

    def stop(self):
        """Stops the run (its running steps are stopped)."""
        self._view = _request("POST", self._path() + "/stop") or self._view
        return self

    def retry(self, step):
        """Runs a failed or stopped step again, and the run goes on from there."""
        self._view = _request("POST", "%s/steps/%s/retry" % (
            self._path(), _segment(_name_of(step), "the step"))) or self._view
        return self

    def proceed(self, step, values=None):
        """Gives a step that awaits input its delayed parameters (``values`` by name)."""
        body = {"values": {_name_of(k): v for k, v in (values or {}).items()}}
        self._view = _request("POST", "%s/steps/%s/proceed" % (
            self._path(), _segment(_name_of(step), "the step")), body) or self._view
        return self

    def delete(self):
        """Deletes the run's record (refused while it runs)."""
        _request("DELETE", self._path())

    def __repr__(self):
        return "Run(workflow=%r, number=%r, status=%r)" % (
            self.workflow, self._view.get("number"), self._view.get("status"))


# The seed's module layout: ``wf.data.OBSPath``, ``wf.steps.JobStep``, ``wf.policy.Policy``.
data = types.SimpleNamespace(
    Storage=Storage, InputStorage=InputStorage, OutputStorage=OutputStorage, OBSPath=OBSPath,
    OBSOutputConfig=OBSOutputConfig, OBSPlaceholder=OBSPlaceholder, MetricsConfig=MetricsConfig,
    DataConsumptionSelector=DataConsumptionSelector)
steps = types.SimpleNamespace(
    Step=Step, WasmStep=WasmStep, JobStep=JobStep, ModelStep=ModelStep, ServiceStep=ServiceStep,
    ConditionStep=ConditionStep, Condition=Condition, ConditionTypeEnum=ConditionTypeEnum,
    MetricInfo=MetricInfo, StepPolicy=StepPolicy, JobInput=JobInput, JobOutput=JobOutput,
    ModelInput=ModelInput, ModelOutput=ModelOutput, ModelConfig=ModelConfig,
    ServiceInput=ServiceInput, ServiceOutput=ServiceOutput, ServiceConfig=ServiceConfig,
    Grant=Grant)
policy = types.SimpleNamespace(Policy=Policy, Scene=Scene)
