"""The images check: every image the overlay runs and every image the Dockerfiles build on is the one
images.lock.yaml pins (deploy/images.py), by digest where the lock has one; the project's own images carry
immutable tags; pods pull IfNotPresent.

Like the versions check it also reads files the overlay does not render: the lock (LOCK_FILE) and the Dockerfiles
(IMAGES_DIR), which a test points at changed copies.
"""

from __future__ import annotations

from deploy import MANIFESTS_DIR
from deploy.images import (
    LOCK_NAME,
    PROJECT_TAG,
    Image,
    LockError,
    dockerfile_references,
    load_lock,
    split_reference,
)
from deploy.manifests import ref

LOCK_FILE = MANIFESTS_DIR / LOCK_NAME
IMAGES_DIR = MANIFESTS_DIR / "images"
# Every reference is a digest or an immutable tag, so a node's cached copy is the image itself. Always would add
# nothing but a registry round trip to each start, and make every restart depend on the registry.
PULL_POLICY = "IfNotPresent"
LOCK_STEP = "`python -m deploy lock-images`"
WRITE_STEP = "`python -m deploy lock-images --offline`"  # writes the lock's references where they are used


def rendered_images(docs: list[dict]) -> list[tuple[str, str, str | None]]:
    """(where, image, imagePullPolicy) of every container of every pod spec or template in the documents, init
    containers included, and of each FlinkDeployment's own image (Flink's container in both roles)."""
    found = []

    def visit(node, owner: str) -> None:
        if isinstance(node, dict):
            for key in ("initContainers", "containers"):
                for container in node.get(key) or []:
                    if isinstance(container, dict) and "image" in container:
                        where = f"{owner} container {container.get('name')!r}"
                        found.append((where, container["image"], container.get("imagePullPolicy")))
            for value in node.values():
                visit(value, owner)
        elif isinstance(node, list):
            for value in node:
                visit(value, owner)

    for doc in docs:
        spec = doc.get("spec") or {}
        if doc.get("kind") == "FlinkDeployment" and "image" in spec:
            found.append((f"{ref(doc)} spec.image", spec["image"], spec.get("imagePullPolicy")))
        visit(spec, ref(doc))
    return found


def lock_problems(lock: list[Image]) -> list[str]:
    problems = []
    for entry in lock:
        if entry.project and not PROJECT_TAG.fullmatch(entry.tag):
            problems.append(
                f"{LOCK_NAME}: {entry.name} is the project's own image, and its tag {entry.tag!r} can be pushed "
                "again with other content: tag it <version>-<git commit>[-variant]"
            )
        if entry.project and not entry.repository:
            problems.append(f"{LOCK_NAME}: {entry.name} needs the repository it is pushed to")
    return problems


def image_problem(where: str, image: str, lock: list[Image], overlay: str) -> str | None:
    repository, tag, digest = split_reference(image)
    entry = next((e for e in lock if overlay in e.overlays and e.pulled == repository), None)
    if entry is None:
        return f"{where}: {image} is not in {LOCK_NAME} for the {overlay} overlay: add it, then run {LOCK_STEP}"
    if entry.project and not PROJECT_TAG.fullmatch(tag or ""):
        return (
            f"{where}: {image}: the project's images run by an immutable tag <version>-<git commit>[-variant], "
            f"not {tag or 'none'!r}, which can be pushed again with other content"
        )
    if image == entry.reference:
        return None
    if entry.digest and digest is None and tag == entry.tag:
        return f"{where}: {image} is not pinned by digest: {LOCK_NAME} pins {entry.reference}"
    return f"{where}: {image} is not what {LOCK_NAME} pins: {entry.reference} (run {WRITE_STEP})"


def dockerfile_problems(lock: list[Image]) -> list[str]:
    problems = []
    for path in sorted(IMAGES_DIR.glob("*/Dockerfile")):
        name = path.parent.name
        for found in dockerfile_references(path.read_text(encoding="utf-8")):
            where = f"images/{name}/Dockerfile:{found.line + 1}"
            repository, tag, digest = split_reference(found.expanded)
            entry = next((e for e in lock if e.pulled == repository and e.tag == tag), None)
            if entry is None or name not in entry.dockerfiles:
                problems.append(f"{where}: {found.expanded} is not in {LOCK_NAME} for images/{name}: add it there")
            elif digest is None and entry.digest:
                problems.append(
                    f"{where}: {found.expanded} is not pinned by digest: {LOCK_NAME} pins {entry.reference}"
                )
            elif digest != entry.digest:
                problems.append(
                    f"{where}: {found.expanded} is not what {LOCK_NAME} pins: {entry.reference} (run {WRITE_STEP})"
                )
    return problems


def check_images(docs: list[dict], overlay: str) -> list[str]:
    """Each rendered image and each Dockerfile's base image is the lock's reference (with its digest, where the lock
    has one) and is listed in the lock; project images have immutable tags; every pod pulls IfNotPresent."""
    try:
        lock = load_lock(LOCK_FILE)
    except LockError as error:
        return [str(error)]
    problems = lock_problems(lock)
    for where, image, policy in rendered_images(docs):
        problem = image_problem(where, image, lock, overlay)
        if problem:
            problems.append(problem)
        if policy != PULL_POLICY:
            problems.append(
                f"{where}: imagePullPolicy must be {PULL_POLICY} (the image is pinned by digest or an immutable "
                f"tag, so a node's copy is that image), got {policy!r}"
            )
    return problems + dockerfile_problems(lock)
