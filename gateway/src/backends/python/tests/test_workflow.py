"""``atelier.workflow`` without a gateway: the wire format its objects emit, and its calls
against a small HTTP server on a Unix socket standing in for the notebook's socket.

Run: ``PYTHONPATH=gateway/src/backends/python python3 -m unittest discover -s
gateway/src/backends/python/tests`` (``tests/tests/workflow_sdk.rs`` does).
"""

import http.server
import json
import os
import socketserver
import tempfile
import threading
import unittest

import atelier.workflow as wf


def retrain_and_deploy():
    """``docs/workflows.md``'s example, written with the SDK."""
    train_flavor = wf.Placeholder("train_flavor", wf.PlaceholderType.STR, default="cpu.small")
    threshold = wf.Placeholder("threshold", wf.PlaceholderType.FLOAT, default=0.5)
    model_name = wf.Placeholder("model_name", wf.PlaceholderType.STR, delay=True)
    data = wf.data.InputStorage("data")
    out = wf.data.OutputStorage("out")
    prep = wf.WasmStep(
        name="prep", plugin="prep-data",
        inputs=[wf.Input("raw", data.join("raw/"))],
        outputs=[wf.Output("clean", obs_config=wf.data.OBSOutputConfig(out.join("clean/")))])
    train = wf.JobStep(
        name="train", depend_steps=[prep],
        outputs=[
            wf.JobOutput("train_url", obs_config=wf.data.OBSOutputConfig(out.join("model/"))),
            wf.JobOutput("metrics", metrics_config=wf.data.MetricsConfig(
                [out.join("metrics.json", create_dir=False)])),
        ],
        algorithm="mnist", flavor=train_flavor,
        properties={"inputs": [{"name": "data_url", "path": prep.outputs["clean"].as_input()}]})
    check = wf.ConditionStep(
        name="check", depend_steps=train,
        conditions=[wf.Condition(
            wf.ConditionTypeEnum.GTE,
            wf.MetricInfo(train.outputs["metrics"].as_input(), "accuracy"), threshold)],
        if_then_steps=["register"], else_then_steps="retrain")
    register = wf.ModelStep(
        name="register", depend_steps=[check], outputs=[wf.ModelOutput("model")],
        properties={"name": model_name,
                    "source": {"path": train.outputs["train_url"].as_input()}})
    retrain = wf.JobStep(name="retrain", depend_steps=[check], algorithm="mnist",
                         flavor="cpu.large")
    deploy = wf.ServiceStep(name="deploy", depend_steps=[register],
                            outputs=[wf.ServiceOutput("service_output")],
                            properties={"name": "mnist", "model": model_name})
    return wf.Workflow(name="retrain-and-deploy", desc="retrain and redeploy when accuracy drops",
                       steps=[prep, train, check, register, retrain, deploy],
                       storages=[data, out])


EXPECTED = {
    "name": "retrain-and-deploy",
    "desc": "retrain and redeploy when accuracy drops",
    "storages": [
        {"name": "data", "create_dir": False, "with_execution_id": False},
        {"name": "out", "create_dir": True, "with_execution_id": True},
    ],
    "parameters": [
        {"name": "train_flavor", "placeholder_type": "STR", "default": "cpu.small",
         "delay": False, "required": True},
        {"name": "threshold", "placeholder_type": "FLOAT", "default": 0.5, "delay": False,
         "required": True},
        {"name": "model_name", "placeholder_type": "STR", "delay": True, "required": True},
    ],
    "steps": [
        {"name": "prep", "step_type": "wasm",
         "inputs": [{"name": "raw", "data": {"$storage": "data", "join": "raw/"}}],
         "outputs": [{"name": "clean",
                      "obs_config": {"obs_path": {"$storage": "out", "join": "clean/"}}}],
         "properties": {"plugin": "prep-data", "parameters": {}, "grants": []}},
        {"name": "train", "step_type": "job", "depend_steps": ["prep"],
         "outputs": [
             {"name": "train_url",
              "obs_config": {"obs_path": {"$storage": "out", "join": "model/"}}},
             {"name": "metrics", "metrics_config": {
                 "metric_files": [{"$storage": "out", "join": "metrics.json",
                                   "create_dir": False}],
                 "realtime_visualization": False, "visualization": True}},
         ],
         "properties": {
             "algorithm": "mnist", "flavor": {"$placeholder": "train_flavor"},
             "inputs": [{"name": "data_url",
                         "path": {"$output": {"step": "prep", "output": "clean"}}}]}},
        {"name": "check", "step_type": "condition", "depend_steps": ["train"],
         "properties": {
             "conditions": [{
                 "condition_type": "GTE",
                 "left": {"$metric": {"step": "train", "output": "metrics",
                                      "json_key": "accuracy"}},
                 "right": {"$placeholder": "threshold"}}],
             "if_then_steps": ["register"], "else_then_steps": ["retrain"]}},
        {"name": "register", "step_type": "model", "depend_steps": ["check"],
         "outputs": [{"name": "model"}],
         "properties": {"name": {"$placeholder": "model_name"},
                        "source": {"path": {"$output": {"step": "train",
                                                        "output": "train_url"}}}}},
        {"name": "retrain", "step_type": "job", "depend_steps": ["check"],
         "properties": {"algorithm": "mnist", "flavor": "cpu.large"}},
        {"name": "deploy", "step_type": "service", "depend_steps": ["register"],
         "outputs": [{"name": "service_output"}],
         "properties": {"name": "mnist", "model": {"$placeholder": "model_name"}}},
    ],
}


class WireFormat(unittest.TestCase):
    def test_the_docs_example_written_with_the_sdk_emits_the_docs_definition(self):
        self.assertEqual(retrain_and_deploy().to_definition(), EXPECTED)
        self.assertEqual(json.loads(retrain_and_deploy().to_json()), EXPECTED)

    def test_placeholders_and_storages_used_anywhere_are_collected_once(self):
        lr = wf.Placeholder("lr", wf.PlaceholderType.FLOAT, default=0.1)
        out = wf.data.OutputStorage("out")
        a = wf.WasmStep("a", plugin="p", parameters={"lr": lr, "deep": [{"x": lr}]},
                        outputs=[wf.Output("o", obs_config=out.join("a/"))])
        b = wf.JobStep("b", depend_steps="a", hyperparameters={"lr": lr})
        d = wf.Workflow("w", "", [a, b]).to_definition()
        self.assertEqual([p["name"] for p in d["parameters"]], ["lr"])
        self.assertEqual(d["storages"], [{"name": "out", "create_dir": True,
                                          "with_execution_id": True}])
        self.assertEqual(d["steps"][0]["outputs"][0]["obs_config"],
                         {"obs_path": {"$storage": "out", "join": "a/"}})
        self.assertEqual(d["steps"][1]["properties"], {"hyperparameters":
                                                       {"lr": {"$placeholder": "lr"}}})

    def test_two_different_placeholders_of_one_name_are_refused_naming_it(self):
        a = wf.WasmStep("a", plugin="p", parameters={
            "x": wf.Placeholder("n", wf.PlaceholderType.INT),
            "y": wf.Placeholder("n", wf.PlaceholderType.STR)})
        with self.assertRaisesRegex(ValueError, "placeholders are named 'n'"):
            wf.Workflow("w", "", [a]).to_definition()

    def test_placeholder_fields_and_obs_placeholders(self):
        p = wf.Placeholder("mode", wf.PlaceholderType.ENUM, default="a", enum_list=["a", "b"],
                           description="d", required=True)
        self.assertEqual(p.to_wire(), {"name": "mode", "placeholder_type": "ENUM",
                                       "default": "a", "enum_list": ["a", "b"],
                                       "description": "d", "delay": False, "required": True})
        o = wf.data.OBSPlaceholder("src", "directory", default=wf.data.OBSPath("/b/in/"))
        self.assertEqual(o.to_wire(), {"name": "src", "placeholder_type": "STR",
                                       "default": "/b/in/", "placeholder_format": "obs",
                                       "object_type": "directory", "delay": False,
                                       "required": True})
        lst = wf.Placeholder("l", "LIST", default=[1, 2], placeholder_format="int")
        self.assertEqual(lst.to_wire()["placeholder_type"], "LIST")

    def test_storage_joins_chain_and_override_flags(self):
        s = wf.data.Storage("s", title="t", create_dir=True, with_execution_id=True,
                            default="/b/root/")
        e = wf._Emit()
        self.assertEqual(e.value(s.join("a").join("b/")), {"$storage": "s", "join": "a/b/"})
        self.assertEqual(e.value(s.join("a/").join("/b")), {"$storage": "s", "join": "a/b"})
        self.assertEqual(e.value(s.join("d", with_execution_id=False, create_dir=True)),
                         {"$storage": "s", "join": "d", "create_dir": True,
                          "with_execution_id": False})
        self.assertEqual(e.value(wf.data.OBSPath(s)), {"$storage": "s"})
        self.assertEqual(e.storages["s"], {"name": "s", "title": "t", "default": "/b/root/",
                                           "create_dir": True, "with_execution_id": True})

    def test_selectors_variables_conditions_policies_and_scenes(self):
        a = wf.JobStep("a", outputs=[wf.JobOutput("m")])
        b = wf.JobStep("b", outputs=[wf.JobOutput("m")])
        svc = wf.ServiceStep("svc", outputs=[wf.ServiceOutput("service_output")])
        e = wf._Emit()
        self.assertEqual(e.value(wf.data.DataConsumptionSelector(
            [a.outputs["m"].as_input(), b.outputs["m"]])),
            {"$select": [{"$output": {"step": "a", "output": "m"}},
                         {"$output": {"step": "b", "output": "m"}}]})
        self.assertEqual(
            e.value(svc.outputs["service_output"].get_output_variable("access_address")),
            {"$output": {"step": "svc", "output": "service_output",
                         "variable": "access_address"}})
        flag = wf.Placeholder("flag", wf.PlaceholderType.BOOL, default=True)
        either = wf.Condition(wf.ConditionTypeEnum.OR,
                              wf.Condition("EQ", flag, True),
                              wf.Condition(wf.ConditionTypeEnum.IN, "x", ["x", "y"]))
        self.assertEqual(e.value(either), {
            "condition_type": "OR",
            "left": {"condition_type": "EQ", "left": {"$placeholder": "flag"}, "right": True},
            "right": {"condition_type": "IN", "left": "x", "right": ["x", "y"]}})
        step = wf.WasmStep("w", plugin="p", version="1.0.0",
                           grants=[wf.Grant("/b/shared/", write=True)],
                           policy=wf.StepPolicy(max_execution_minutes=5,
                                                skip_conditions=wf.Condition("EQ", flag, False)))
        wire = e.value(step)
        self.assertEqual(wire["policy"], {
            "poll_interval_seconds": 1, "max_execution_minutes": 5,
            "skip_conditions": [{"condition_type": "EQ", "left": {"$placeholder": "flag"},
                                 "right": False}]})
        self.assertEqual(wire["properties"], {"plugin": "p", "version": "1.0.0",
                                              "parameters": {},
                                              "grants": [{"path": "/b/shared/",
                                                          "write": True}]})
        pol = wf.policy.Policy(scenes=[wf.policy.Scene("train only", [a, "b"])])
        d = wf.Workflow("w", "", [a, b], policy=pol).to_definition()
        self.assertEqual(d["policy"], {"scenes": [{"scene_name": "train only",
                                                   "scene_steps": ["a", "b"]}]})

    def test_mistakes_are_named_before_anything_is_sent(self):
        a = wf.JobStep("a", outputs=[wf.JobOutput("m")])
        with self.assertRaisesRegex(KeyError, "has no output 'nope'.*its outputs: m"):
            a.outputs["nope"]
        with self.assertRaisesRegex(TypeError, "MetricInfo reads a step's output"):
            wf.MetricInfo("a", "accuracy")
        with self.assertRaisesRegex(ValueError, "the workflow name '1abc' is not valid"):
            wf.Workflow("1abc", "", [a]).to_definition()
        with self.assertRaises(ValueError):
            wf.Condition("LIKE", 1, 2)


class FakeGateway:
    """An HTTP server on a Unix socket: records requests, answers from ``replies``
    (a list of ``(status, body)`` taken in order)."""

    def __init__(self):
        self.dir = tempfile.mkdtemp()
        self.path = os.path.join(self.dir, "storage.sock")
        self.requests = []
        self.replies = []
        fake = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _any(self):
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n) if n else b""
                fake.requests.append((self.command, self.path,
                                      json.loads(body) if body else None))
                status, reply = fake.replies.pop(0)
                data = json.dumps(reply).encode() if reply is not None else b""
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if data:
                    self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_DELETE = _any

            def log_message(self, *args):
                pass

            def address_string(self):
                return "notebook"

        class Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
            daemon_threads = True

        self.server = Server(self.path, Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()
        os.unlink(self.path)
        os.rmdir(self.dir)


class Calls(unittest.TestCase):
    def setUp(self):
        self.gw = FakeGateway()
        self.old = os.environ.get("ATELIER_STORAGE_SOCKET")
        os.environ["ATELIER_STORAGE_SOCKET"] = self.gw.path

    def tearDown(self):
        self.gw.close()
        if self.old is None:
            os.environ.pop("ATELIER_STORAGE_SOCKET", None)
        else:
            os.environ["ATELIER_STORAGE_SOCKET"] = self.old

    def workflow(self):
        return wf.Workflow("etl", "d", [wf.WasmStep("prep", plugin="p")])

    def test_release_creates_the_first_time_and_publishes_after(self):
        w = self.workflow()
        self.gw.replies = [
            (404, {"error": {"code": "not_found", "message": "no workflow etl"}}),
            (201, {"id": "wf-1", "name": "etl", "version": 1}),
            (200, {"id": "wf-1", "name": "etl", "version": 1, "changed": False}),
        ]
        self.assertEqual(w.release()["changed"], True)
        self.assertEqual((w.id, w.version), ("wf-1", 1))
        self.assertEqual(w.release()["changed"], False)
        definition = w.to_definition()
        self.assertEqual(self.gw.requests, [
            ("PUT", "/v1/workflows/etl", definition),
            ("POST", "/v1/workflows", definition),
            ("PUT", "/v1/workflows/etl", definition),
        ])

    def test_a_refusal_raises_with_the_gateways_message_and_status(self):
        self.gw.replies = [(400, {"error": {"code": "invalid",
                                            "message": "steps[0] (prep): bad"}})]
        with self.assertRaises(wf.WorkflowError) as e:
            self.workflow().release()
        self.assertEqual((e.exception.status, e.exception.code, str(e.exception)),
                         (400, "invalid", "steps[0] (prep): bad"))
        self.gw.replies = [(404, {"error": "no such endpoint"})]
        with self.assertRaisesRegex(wf.WorkflowError, "no such endpoint"):
            wf.get_workflow("etl")

    def test_run_sends_parameters_and_storages_by_name_and_wait_follows_it(self):
        w = self.workflow()
        threshold = wf.Placeholder("threshold", wf.PlaceholderType.FLOAT)
        out = wf.data.OutputStorage("out")
        running = {"id": "r1", "number": 3, "status": "RUNNING", "steps": []}
        done = dict(running, status="COMPLETED",
                    steps=[{"name": "prep", "status": "COMPLETED"}])
        self.gw.replies = [(201, running), (200, running), (200, done)]
        run = w.run(parameters={threshold: 0.7, "mode": "fast"},
                    storages={out: "/b/out/"}, scenes=[wf.policy.Scene("s", ["prep"])],
                    connection="c")
        self.assertEqual((run.number, run.status), (3, "RUNNING"))
        self.assertIs(run.wait(interval=0), run)
        self.assertEqual(run.status, "COMPLETED")
        self.assertEqual(run.step("prep")["status"], "COMPLETED")
        self.assertEqual(self.gw.requests[0], ("POST", "/v1/workflows/etl/runs", {
            "parameters": {"threshold": 0.7, "mode": "fast"}, "storages": {"out": "/b/out/"},
            "scenes": ["s"], "connection": "c"}))
        self.assertEqual([r[:2] for r in self.gw.requests[1:]],
                         [("GET", "/v1/workflows/etl/runs/3")] * 2)

    def test_run_actions_go_to_their_paths(self):
        run = wf.Run("etl", {"number": 2, "status": "AWAITING_INPUT"})
        view = {"number": 2, "status": "RUNNING"}
        self.gw.replies = [(200, view), (200, view), (200, view), (204, None)]
        run.proceed("register", {"model_name": "m"})
        run.retry(wf.WasmStep("prep", plugin="p"))
        run.stop()
        run.delete()
        self.assertEqual(self.gw.requests, [
            ("POST", "/v1/workflows/etl/runs/2/steps/register/proceed",
             {"values": {"model_name": "m"}}),
            ("POST", "/v1/workflows/etl/runs/2/steps/prep/retry", None),
            ("POST", "/v1/workflows/etl/runs/2/stop", None),
            ("DELETE", "/v1/workflows/etl/runs/2", None),
        ])

    def test_names_that_are_not_one_path_segment_are_refused_here(self):
        for name in ["../users", "a/b", "a%2Fb", ""]:
            with self.assertRaisesRegex(wf.WorkflowError, "not valid"):
                wf.get_workflow(name)
        self.assertEqual(self.gw.requests, [])

    def test_without_the_socket_the_error_says_so(self):
        os.environ.pop("ATELIER_STORAGE_SOCKET")
        with self.assertRaisesRegex(wf.WorkflowError, "no ATELIER_STORAGE_SOCKET"):
            wf.list_workflows()


if __name__ == "__main__":
    unittest.main()
