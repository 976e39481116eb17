"""The GPU check: in the gpu overlay a GPU for exactly the two containers that run TensorFlow (the worker-pool
sidecar and TF Serving), on GPU nodes, from GPU images; in the cpu overlay none anywhere.
"""

from __future__ import annotations

from deploy.images import image_tag
from deploy.manifests import flink_deployment, flink_role_pod, pods, tf_serving_pod
from deploy.site import GPU, TF_SERVING_CONTAINER, WORKER_POOL_CONTAINER


def gpu_limit(container: dict) -> str | None:
    return container.get("resources", {}).get("limits", {}).get(GPU)


def check_gpu(docs: list[dict], overlay: str) -> list[str]:
    """gpu: a GPU for the worker-pool sidecar (where TensorFlow runs) and TF Serving, on GPU nodes, GPU images;
    never for Flink's own container. cpu: no GPU anywhere."""
    problems = []
    fd = flink_deployment(docs)
    if any(k.startswith("external-resource") for k in fd["spec"]["flinkConfiguration"]):
        problems.append(
            "FlinkDeployment: no Flink external resources: the GPU belongs to the worker-pool sidecar, not Flink"
        )
    all_pods = pods(docs)
    with_gpu = {(p.owner, c["name"]) for p in all_pods for c in p.containers() if gpu_limit(c)}
    taskmanager = flink_role_pod(docs, "taskManager")
    serving = tf_serving_pod(docs)
    gpu_images = {
        c["image"] for p in all_pods for c in p.containers() if image_tag(c.get("image", "")).endswith("-gpu")
    }
    if overlay == "cpu":
        if with_gpu:
            problems.append(f"cpu overlay: no GPU anywhere, found {sorted(with_gpu)}")
        if gpu_images:
            problems.append(f"cpu overlay: no GPU images, found {sorted(gpu_images)}")
        return problems
    expected = {(taskmanager.owner, WORKER_POOL_CONTAINER), (serving.owner, TF_SERVING_CONTAINER)}
    if with_gpu != expected:
        problems.append(f"gpu overlay: GPUs exactly on {sorted(expected)}, found {sorted(with_gpu)}")
    for pod, container in ((taskmanager, WORKER_POOL_CONTAINER), (serving, TF_SERVING_CONTAINER)):
        if not pod.spec.get("nodeSelector"):
            problems.append(f"gpu overlay: {pod.owner} needs a nodeSelector for GPU nodes")
        if not any(t.get("key") == GPU for t in pod.spec.get("tolerations", [])):
            problems.append(f"gpu overlay: {pod.owner} must tolerate the {GPU} taint")
        if not image_tag(pod.container(container)["image"]).endswith("-gpu"):
            problems.append(
                f"gpu overlay: {pod.owner} {container} must run a GPU image, got {pod.container(container)['image']}"
            )
    return problems
