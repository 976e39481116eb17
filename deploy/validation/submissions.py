"""The pipelines check, and the submission Jobs as the other checks read them.

`submissions` rebuilds each Job's pipeline arguments the way deploy.submit assembles them in the launcher (the
Job's runner flags plus its mounted options file), so the checks see the options the pipeline will really run
with. `check_pipelines` parses them with the pipelines' own options and Beam's, and holds them to the cluster
they are submitted to: its REST service, the worker-pool sidecar, the models' mount, the site's project.
"""

from __future__ import annotations

import importlib
import re
from dataclasses import dataclass

from deploy.manifests import (
    Pod,
    args_dict,
    config_map_file,
    find,
    flink_deployment,
    flink_role_pod,
    mount_path,
    pods,
    ref,
)
from deploy.site import (
    BEAM_WORKER_POOL_HOST,
    BEAM_WORKER_POOL_PORT,
    LAUNCHER_CONTAINER,
    TF_SERVING_TLS_PORT,
    WORKER_POOL_CONTAINER,
    site_settings,
)


@dataclass
class Submission:
    job: dict
    module: str
    argv: list[str]  # the pipeline's arguments, as deploy.submit assembles them
    pod: Pod

    def options(self):
        """The PipelineOptions the pipeline runs with. Its module is imported first: it declares its own flags."""
        from apache_beam.options.pipeline_options import PipelineOptions

        importlib.import_module(self.module)
        return PipelineOptions(self.argv)

    def options_classes(self) -> list[type]:
        """The options classes the pipeline's module declares beside the project's (fraud's threshold)."""
        from apache_beam.options.pipeline_options import PipelineOptions

        module = importlib.import_module(self.module)
        return [
            c
            for c in vars(module).values()
            if isinstance(c, type) and issubclass(c, PipelineOptions) and c.__module__ == module.__name__
        ]


def submissions(docs: list[dict]) -> list[Submission]:
    from deploy.submit import read_args_file

    found = []
    for job in find(docs, "Job"):
        pod = next(p for p in pods([job]))
        container = pod.container(LAUNCHER_CONTAINER)
        env = {e["name"]: e.get("value") for e in container.get("env", [])}
        args = [
            re.sub(r"\$\((\w+)\)", lambda m, env=env: env.get(m.group(1), m.group(0)), a) for a in container["args"]
        ]
        wrapper = args_dict(args[: args.index("--")])
        runner_args = args[args.index("--") + 1 :]
        file_text = config_map_file(docs, pod, container, wrapper.get("args-file", ""))
        if file_text is None:
            raise LookupError(f"{ref(job)}: --args-file={wrapper.get('args-file')} is not in a mounted ConfigMap")
        found.append(Submission(job, wrapper["module"], [*runner_args, *read_args_file(file_text)], pod))
    return found


def check_pipelines(docs: list[dict]) -> list[str]:
    """Each Job's arguments parse with the pipelines' own options and Beam's, and agree with the cluster."""
    from apache_beam.options.pipeline_options import FlinkRunnerOptions, PortableOptions, StandardOptions

    from pipelines.options import InferenceOptions
    from pipelines.spec import unknown_flag_problems

    problems = []
    fd = flink_deployment(docs)
    found = submissions(docs)
    expected_modules = {"pipelines.fraud_detection", "pipelines.price_suggestion"}
    if {s.module for s in found} != expected_modules:
        problems.append(
            f"expected one submission Job per pipeline {sorted(expected_modules)}, got {sorted(s.module for s in found)}"
        )
    job_names = [args_dict(s.argv).get("job_name") for s in found]
    if len(set(job_names)) != len(job_names) or None in job_names:
        problems.append(f"each pipeline needs its own --job_name (how an upgrade finds it), got {job_names}")
    taskmanager = flink_role_pod([fd], "taskManager")
    worker_models = mount_path(taskmanager.container(WORKER_POOL_CONTAINER), "models")
    for submission in found:
        where = f"{ref(submission.job)} ({submission.module})"
        try:
            options = submission.options()
        except ImportError as error:
            problems.append(f"{where}: the module does not import: {error}")
            continue
        duplicates = sorted(
            {
                a.split("=")[0]
                for a in submission.argv
                if sum(b.split("=")[0] == a.split("=")[0] for b in submission.argv) > 1
            }
        )
        if duplicates:
            problems.append(f"{where}: flags given twice (Job and options file): {duplicates}")
        for problem in unknown_flag_problems(submission.argv, submission.options_classes()):
            problems.append(f"{where}: {problem} (the pipeline would refuse to start)")
        try:
            options.view_as(InferenceOptions).validate()
        except ValueError as error:
            problems.append(f"{where}: {error}")
        inference = options.view_as(InferenceOptions)
        if inference.mode() != "streaming":
            problems.append(f"{where}: the Flink deployment runs the streaming pipelines, got {inference.mode()}")
        if inference.inference == "tf_serving":
            problems += _check_tf_serving_target(where, docs, getattr(inference, "tf_serving_target", None))
        else:
            if worker_models is None or inference.model_dir != worker_models:
                problems.append(
                    f"{where}: --model_dir must be where the workers mount the models ({worker_models}), got {inference.model_dir!r}"
                )
            launcher_models = mount_path(submission.pod.container(LAUNCHER_CONTAINER), "models")
            if launcher_models != inference.model_dir:
                problems.append(
                    f"{where}: the launcher resolves the model version, so it must mount the models at {inference.model_dir}"
                )
        standard = options.view_as(StandardOptions)
        if standard.runner != "FlinkRunner" or not standard.streaming:
            problems.append(
                f"{where}: expected --runner=FlinkRunner --streaming, got {standard.runner!r} streaming={standard.streaming}"
            )
        flink = options.view_as(FlinkRunnerOptions)
        rest_host, _, rest_port = (flink.flink_master or "").rpartition(":")
        if rest_host != f"{fd['metadata']['name']}-rest" or rest_port != fd["spec"]["flinkConfiguration"].get(
            "rest.port"
        ):
            problems.append(
                f"{where}: --flink_master must be the session cluster's REST service "
                f"{fd['metadata']['name']}-rest:{fd['spec']['flinkConfiguration'].get('rest.port')}, got {flink.flink_master!r}"
            )
        portable = options.view_as(PortableOptions)
        if (
            portable.environment_type != "EXTERNAL"
            or portable.environment_config != f"{BEAM_WORKER_POOL_HOST}:{BEAM_WORKER_POOL_PORT}"
        ):
            problems.append(
                f"{where}: the SDK harness is the worker-pool sidecar: expected --environment_type=EXTERNAL "
                f"--environment_config={BEAM_WORKER_POOL_HOST}:{BEAM_WORKER_POOL_PORT}, got {portable.environment_type} {portable.environment_config}"
            )
        if portable.output_executable_path:
            problems.append(f"{where}: --output_executable_path is deploy.submit's to set")
        checkpointing = args_dict(submission.argv).get("checkpointing_interval", "")
        if not checkpointing.isdigit() or int(checkpointing) < 1000:
            problems.append(
                f"{where}: --checkpointing_interval (ms) must be set for a streaming job, got {checkpointing!r}"
            )
        problems += _check_pipeline_project(where, inference)
    return problems


def _check_tf_serving_target(where: str, docs: list[dict], target: str | None) -> list[str]:
    """--inference=tf_serving must name one of TF Serving's Services, at Envoy's mTLS port (TF Serving's own
    ports are not reachable from the pipelines' pods)."""
    services = {
        s["metadata"]["name"]
        for s in find(docs, "Service")
        if s["spec"].get("selector", {}).get("app.kubernetes.io/name") == "tf-serving"
    }
    host, _, port = (target or "").rpartition(":")
    if host not in services or port != str(TF_SERVING_TLS_PORT):
        return [
            f"{where}: --tf_serving_target must be a TF Serving Service ({', '.join(sorted(services))}) at its mTLS "
            f"port {TF_SERVING_TLS_PORT}, got {target!r}"
        ]
    return []


def _check_pipeline_project(where: str, inference) -> list[str]:
    site = site_settings()
    problems = []
    for name in ("input_subscription", "output_topic", "dead_letter_topic"):
        project = (getattr(inference, name) or "").split("/")[1:2]
        if project != [site["GCP_PROJECT"]]:
            problems.append(
                f"{where}: --{name} must be in project {site['GCP_PROJECT']} (site.env), got {getattr(inference, name)!r}"
            )
    return problems
