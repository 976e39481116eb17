"""The deployment CLI: render, validate, apply, status, stop-pipeline, rollout-model, lock-images.

    python -m deploy render --overlay gpu                 the overlay's manifests (kubectl kustomize), offline
    python -m deploy validate --overlay all               every offline check (the same as the tests), offline
    python -m deploy apply --overlay gpu [--dry-run]      validate, then server-side apply in dependency order
    python -m deploy status                               Flink cluster and jobs, TF Serving models
    python -m deploy stop-pipeline --job-name fraud-detection    stop with a savepoint, print where it is
    python -m deploy rollout-model --model fraud --version 2 [--label canary]
    python -m deploy rollout-model --model fraud --rollback
    python -m deploy rollout-model --model_dir=models --model fraud --version 2 [--label canary] [--cluster]
    python -m deploy lock-images                          third-party images: each tag's digest now, into the lock
    python -m deploy lock-images --commit C --registry R  the project's images, built from C and pushed to R

The cluster commands use the current kubeconfig context (--context to choose another) and the kubernetes client.
"""

from __future__ import annotations

import argparse
import sys

from deploy import OVERLAYS
from deploy.site import NAMESPACE
from plumbing import cli


def _kube(context: str | None):
    """A DynamicClient and a CoreV1Api for the chosen kubeconfig context (or the in-cluster account)."""
    from kubernetes import client, config
    from kubernetes.dynamic import DynamicClient

    try:
        api_client = config.new_client_from_config(context=context)
    except config.ConfigException as no_kubeconfig:
        try:
            config.load_incluster_config()
        except config.ConfigException:
            raise cli.EnvironmentProblem(
                f"no Kubernetes cluster to talk to: {no_kubeconfig} (give a kubeconfig with KUBECONFIG or "
                "~/.kube/config, and --context to pick one of its contexts), and this is not a pod in a cluster"
            ) from None
        api_client = client.ApiClient()
    return DynamicClient(api_client), client.CoreV1Api(api_client)


def cmd_render(args) -> int:
    from deploy.manifests import render_yaml

    sys.stdout.write(render_yaml(args.overlay))
    return 0


def run_validation(overlays) -> int:
    from deploy.validation import validate

    failed = 0
    for overlay in overlays:
        for check, problems in validate(overlay).items():
            print(f"[{overlay}] {check}: {'ok' if not problems else f'{len(problems)} problem(s)'}")
            for problem in problems:
                print(f"    - {problem}")
            failed += len(problems)
    print(f"{failed} problem(s)" if failed else "all checks passed")
    return 1 if failed else 0


def cmd_validate(args) -> int:
    return run_validation(OVERLAYS if args.overlay == "all" else [args.overlay])


def cmd_apply(args) -> int:
    from deploy.cluster import apply, apply_plan
    from deploy.manifests import render

    if run_validation([args.overlay]) != 0:
        print("not applying: the manifests do not validate", file=sys.stderr)
        return 1
    # Validation lets an image wait for its digest (not built, or no registry reached); a cluster never gets one.
    from deploy.images import unpinned

    waiting = unpinned(args.overlay)
    if waiting and not args.dry_run:
        print(
            "not applying: images.lock.yaml has no digest yet for " + "; ".join(waiting) + ". Run "
            "`python -m deploy lock-images` (and `--commit` once the project's images are pushed), see the README",
            file=sys.stderr,
        )
        return 1
    dyn, _ = _kube(args.context)
    problems = apply(dyn, apply_plan(render(args.overlay)), dry_run=args.dry_run, force_conflicts=args.force_conflicts)
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    return 1 if problems else 0


def _http(core, namespace: str):
    from deploy.cluster import http_via_portforward

    return lambda pod, port, method, path, body=None: http_via_portforward(
        core, namespace, pod, port, method, path, body
    )


def cmd_status(args) -> int:
    from deploy.cluster import flink_jobs, flink_status, model_status, ready_pods
    from deploy.site import FLINK_REST_PORT, TF_SERVING_REST_PORT
    from model_handlers.interface import MODELS

    dyn, core = _kube(args.context)
    http = _http(core, args.namespace)
    cluster = flink_status(dyn, args.namespace, args.flink_deployment)
    print(
        f"FlinkDeployment {args.flink_deployment}: lifecycle {cluster['lifecycleState']}, JobManager "
        f"{cluster['jobManagerDeploymentStatus']}, Flink {cluster['flinkVersion']}"
    )
    if cluster["error"]:
        print(f"  error: {cluster['error']}")
    healthy = cluster["lifecycleState"] == "STABLE"
    jobmanagers = ready_pods(core, args.namespace, "app.kubernetes.io/component=jobmanager")
    if jobmanagers:
        for job in flink_jobs(http, jobmanagers[0], FLINK_REST_PORT):
            print(f"  job {job['name']}: {job['state']} ({job['id']})")
            healthy &= job["state"] == "RUNNING"
    else:
        print("  no ready JobManager")
        healthy = False
    servers = ready_pods(core, args.namespace, "app.kubernetes.io/name=tf-serving")
    print(f"TF Serving: {len(servers)} ready pod(s)")
    for pod in servers:
        for model in sorted(MODELS):
            versions = model_status(http, pod, TF_SERVING_REST_PORT, model)
            print(f"  {pod} {model}: " + ", ".join(f"v{v['version']} {v['state']}" for v in versions))
            healthy &= any(v["state"] == "AVAILABLE" for v in versions)
    healthy &= bool(servers)
    return 0 if healthy else 1


def cmd_stop_pipeline(args) -> int:
    from deploy import submit
    from deploy.cluster import PortForwardedFlink, ready_pods
    from deploy.site import FLINK_REST_PORT

    _, core = _kube(args.context)
    jobmanagers = ready_pods(core, args.namespace, "app.kubernetes.io/component=jobmanager")
    if not jobmanagers:
        print("error: no ready JobManager", file=sys.stderr)
        return 1
    flink = PortForwardedFlink(_http(core, args.namespace), jobmanagers[0], FLINK_REST_PORT)
    try:
        running = submit.active_jobs(flink.jobs(), args.job_name)
        if len(running) != 1:
            raise submit.SubmitError(f"expected one running job named {args.job_name!r}, found {len(running)}")
        location = submit.take_savepoint(flink, running[0], args.timeout, interval_s=5)
    except submit.SubmitError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(
        f"{args.job_name} stopped at savepoint {location}\n"
        f"To start it from there: RESTORE_FROM={location} in base/pipelines/<pipeline>/restore.env, then apply."
    )
    return 0


def cmd_rollout_model(args) -> int:
    from deploy import rollout
    from deploy.cluster import model_status, ready_pods
    from deploy.site import TF_SERVING_REST_PORT

    if args.rollback == (args.version is not None):
        print("error: give --version N to roll out, or --rollback", file=sys.stderr)
        return 2
    if args.model_dir and not args.cluster:
        try:
            rollout.repository_rollout(
                args.model_dir, args.model, args.version, label=args.label, rollback=args.rollback
            )
        except rollout.RolloutError as error:
            print(f"error: {error}", file=sys.stderr)
            return 1
        return 0
    if args.model_dir and not args.rollback:
        # The repository TF Serving serves from: the version must load, match the interface and warm up before
        # TF Serving is asked to load it (TF Serving's AVAILABLE says it loads, not that it matches).
        try:
            rollout.check_loads(args.model_dir, args.model, args.version)
        except rollout.RolloutError as error:
            print(f"error: {error}", file=sys.stderr)
            return 1
    _, core = _kube(args.context)
    http = _http(core, args.namespace)

    def states(model: str, version: int) -> dict[str, str]:
        by_pod = {}
        for pod in ready_pods(core, args.namespace, "app.kubernetes.io/name=tf-serving"):
            found = [
                v["state"] for v in model_status(http, pod, TF_SERVING_REST_PORT, model) if v["version"] == version
            ]
            by_pod[pod] = found[0] if found else "NOT LOADED"
        return by_pod

    try:
        text = rollout.rollout(
            core,
            args.namespace,
            args.model,
            args.version,
            label=args.label,
            rollback=args.rollback,
            states=None if args.no_wait else states,
            timeout_s=args.timeout,
        )
    except rollout.RolloutError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    if args.model_dir:
        rollout.repository_in_step(args.model_dir, args.model, text)
    if args.write_back:
        rollout.SOURCE_FILE.write_text(text, encoding="utf-8")
        print(f"wrote the new config to {rollout.SOURCE_FILE}: commit it, so the next apply keeps this rollout")
    return 0


def cmd_lock_images(args) -> int:
    from deploy import images
    from deploy.manifests import ToolMissing

    if args.registry and not args.commit:
        print("error: --registry names where the project's images were pushed: give --commit too", file=sys.stderr)
        return 2
    try:
        if args.offline:
            if args.commit:
                print("error: --commit resolves the pushed images' digests: drop --offline", file=sys.stderr)
                return 2
            changes = images.write_uses()
        else:
            changes = images.lock_images(commit=args.commit, registry=args.registry)
    except (images.LockError, ToolMissing) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    for change in changes:
        print(change)
    print(f"{images.LOCK_NAME}, the overlays and the Dockerfiles are up to date: review and commit them")
    return 0


def parser() -> argparse.ArgumentParser:
    root = cli.ArgumentParser(
        prog="python -m deploy", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = root.add_subparsers(dest="command", required=True)

    def command(name, handler, help_text, cluster=False):
        sub = commands.add_parser(name, help=help_text, description=help_text)
        sub.set_defaults(handler=handler)
        if cluster:
            sub.add_argument("--context", help="kubeconfig context (default: the current one)")
            sub.add_argument("--namespace", default=NAMESPACE)
        return sub

    render = command("render", cmd_render, "print an overlay's manifests (kubectl kustomize, offline)")
    render.add_argument("--overlay", choices=OVERLAYS, required=True)
    validate = command("validate", cmd_validate, "run every offline check of an overlay (or all)")
    validate.add_argument("--overlay", choices=(*OVERLAYS, "all"), required=True)
    apply = command("apply", cmd_apply, "validate, then server-side apply an overlay", cluster=True)
    apply.add_argument("--overlay", choices=OVERLAYS, required=True)
    apply.add_argument("--dry-run", action="store_true", help="let the API server check everything, change nothing")
    apply.add_argument(
        "--force-conflicts",
        action="store_true",
        help="take over fields another manager owns (e.g. reset a live rollout to the manifests)",
    )
    status = command("status", cmd_status, "Flink cluster and job states, TF Serving model versions", cluster=True)
    status.add_argument("--flink-deployment", default="inference")
    stop = command(
        "stop-pipeline",
        cmd_stop_pipeline,
        "stop a pipeline's Flink job with a savepoint (before replacing the session cluster)",
        cluster=True,
    )
    stop.add_argument("--job-name", required=True, help="the pipeline's --job_name, e.g. fraud-detection")
    stop.add_argument("--timeout", type=float, default=900, help="seconds to wait for the savepoint")
    rollout = command(
        "rollout-model",
        cmd_rollout_model,
        "move a version label in TF Serving's models.config (blue-green), or roll it back",
        cluster=True,
    )
    rollout.add_argument("--model", required=True, help="fraud or price")
    rollout.add_argument(
        "--model_dir",
        help="a model repository (local or gs://): move the labels in <model_dir>/<model>/labels.json, which "
        "pipelines scoring in process follow (--model_version_label); with --cluster, TF Serving's too, in step",
    )
    rollout.add_argument(
        "--cluster",
        action="store_true",
        help="with --model_dir: move TF Serving's labels in the cluster as well, after the version is checked in the "
        "repository (without --model_dir it is implied, and TF Serving's AVAILABLE is the only check)",
    )
    rollout.add_argument("--version", type=int, help="the version to label")
    rollout.add_argument("--label", default="stable", choices=("stable", "canary"))
    rollout.add_argument("--rollback", action="store_true", help="stable back to previous (or withdraw the canary)")
    rollout.add_argument(
        "--no-wait",
        action="store_true",
        help="do not wait for the version to load: only for a version already loaded (TF Serving refuses a "
        "label on a version it is still loading)",
    )
    rollout.add_argument("--timeout", type=float, default=600, help="seconds to wait for the version to load")
    rollout.add_argument(
        "--no-write-back", dest="write_back", action="store_false", help="leave base/tf-serving/models.config as it is"
    )
    lock = command(
        "lock-images",
        cmd_lock_images,
        "resolve image tags to digests (crane) into images.lock.yaml, and write them into the overlays and Dockerfiles",
    )
    lock.add_argument(
        "--commit",
        help="the git commit the project's images were built from and pushed: lock those (and only those) by "
        "their <version>-<commit> tags",
    )
    lock.add_argument(
        "--registry", help="with --commit: the registry they were pushed to, e.g. REGION-docker.pkg.dev/P/R"
    )
    lock.add_argument(
        "--offline", action="store_true", help="resolve nothing: write the lock's digests where they are used"
    )
    return root


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":
    cli.run(main)
