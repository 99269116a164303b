"""The retrain example (workflow.yaml) written with the SDK, in a notebook:

    exec(open("workflow.py").read())          # or paste it into a cell
    run = workflow.release_and_run(connection="local", storages={
        "data": "/demo/data/", "code": "/demo/code/", "out": "/demo/out/"})
    run.wait()

It means exactly what workflow.yaml means: releasing one after the other makes no new
version."""

import atelier.workflow as wf

data = wf.InputStorage("data", description="the CSV files (features, then the label)")
code = wf.InputStorage("code", description="the folder with train.py")
out = wf.OutputStorage("out")
min_accuracy = wf.Placeholder("min_accuracy", wf.PlaceholderType.FLOAT, default=0.8)
model_name = wf.Placeholder("model_name", wf.PlaceholderType.STR, default="iris-centroids")
service_name = wf.Placeholder("service_name", wf.PlaceholderType.STR, default="iris-live")

prep = wf.WasmStep(
    name="prep",
    plugin="csv-summary",
    inputs=[wf.Input("table", data)],
    outputs=[wf.Output("summary", obs_config=wf.OBSOutputConfig(out.join("summary/")))],
)
train = wf.JobStep(
    name="train",
    depend_steps=[prep],
    outputs=[wf.JobOutput("train_url", metrics_config=wf.MetricsConfig(
        [out.join("model/metrics.json", create_dir=False)]))],
    custom={"code_dir": code, "boot_file": "train.py"},
    properties={
        "inputs": [{"name": "data_url", "path": data},
                   {"name": "summary_url", "path": prep.outputs["summary"].as_input()}],
        "outputs": [{"name": "train_url", "path": out.join("model/")}],
    },
)
check = wf.ConditionStep(
    name="check",
    depend_steps=[train],
    conditions=[wf.Condition(wf.ConditionTypeEnum.GTE,
                             wf.MetricInfo(train.outputs["train_url"].as_input(), "accuracy"),
                             min_accuracy)],
    if_then_steps=["register"],
)
register = wf.ModelStep(
    name="register",
    depend_steps=[check],
    outputs=[wf.ModelOutput("model")],
    properties={"name": model_name},
    source={"type": "obs", "path": out.join("model/")},
    start_command="python3 /home/mind/model/server.py",
)
deploy = wf.ServiceStep(
    name="deploy",
    depend_steps=[register],
    outputs=[wf.ServiceOutput("service_output")],
    properties={"name": service_name},
    models=[{"model": register.outputs["model"].get_output_variable("model_name"),
             "version": register.outputs["model"].get_output_variable("model_version")}],
)

workflow = wf.Workflow(
    name="retrain",
    desc="summarise the data, train, and deploy the model when it is accurate enough",
    steps=[prep, train, check, register, deploy],
    storages=[data, code, out],
)
