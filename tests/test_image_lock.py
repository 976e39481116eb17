"""The image lock (deploy/images.py, deploy/flink-on-k8s/images.lock.yaml) and its offline check
(deploy/validation/images.py).

The real overlays and Dockerfiles agree with the lock; each way of breaking the pinning is caught on a freshly
rendered overlay (or a changed copy of the lock or the Dockerfiles); and the lock step resolves digests from a real
registry: crane's own registry (`crane registry serve`) on a loopback port, with small images pushed into it by
crane, the digests compared with what crane reports. crane is built from the Go module proxy by the suite itself
(deploy.images.crane, cached in build/); no Go is a failure, never a skip.
"""

from __future__ import annotations

import datetime
import io
import re
import shutil
import subprocess
import tarfile

import pytest
import yaml

from deploy import MANIFESTS_DIR, images, manifests
from deploy import __main__ as cli
from deploy.manifests import one, pods
from deploy.validation import images as images_check
from plumbing.ports import free_port, port_accepts
from plumbing.process import ManagedProcess

# kubectl, crane and a registry: real tools, run as processes.
pytestmark = pytest.mark.integration

ENVOY = "envoyproxy/envoy:v1.38.3"
OTHER_DIGEST = "sha256:" + "0" * 64  # a well-formed digest no image has


def rendered(overlay: str) -> list[dict]:
    return manifests.render(overlay)  # kubectl runs once per overlay per session; each call is a fresh copy


def container(docs, owner: str, name: str) -> dict:
    return next(p for p in pods(docs) if p.owner == owner).container(name)


def assert_caught(mutate, expected: str, overlay: str = "cpu") -> None:
    """Breaks a freshly rendered overlay with `mutate` and expects the images check to report `expected`."""
    docs = rendered(overlay)
    mutate(docs)
    found = images_check.check_images(docs, overlay)
    assert any(expected in p for p in found), found


def cases(*pairs):
    return [pytest.param(m, e, id=re.sub(r"\W+", "-", e)[:60].strip("-")) for m, e in pairs]


def lock_copy(tmp_path, monkeypatch, edit) -> list[images.Image]:
    """The committed lock, changed by `edit(entries)`, as the one both the check and the apply gate read."""
    entries = images.load_lock(images.LOCK_FILE)
    edit(entries)
    path = tmp_path / images.LOCK_NAME
    path.write_text(images.lock_text(entries))
    monkeypatch.setattr(images_check, "LOCK_FILE", path)
    monkeypatch.setattr(images, "LOCK_FILE", path)
    return entries


def entry(entries, name: str, tag: str | None = None) -> images.Image:
    return next(e for e in entries if e.name == name and (tag is None or e.tag == tag))


# --- the committed state ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("overlay", manifests.OVERLAYS)
def test_overlay_and_dockerfiles_agree_with_the_lock(overlay):
    assert images_check.check_images(rendered(overlay), overlay) == []


def test_the_overlays_and_dockerfiles_are_exactly_what_the_lock_step_writes():
    for path, text in images.planned_writes(images.load_lock(images.LOCK_FILE)).items():
        assert path.read_text(encoding="utf-8") == text, f"{path}: run `python -m deploy lock-images --offline`"


def test_every_image_in_use_is_checked_init_containers_and_flinks_own_image_included():
    docs = rendered("gpu")
    pod = next(p for p in pods(docs) if p.owner == "Deployment/tf-serving")
    pod.spec["initContainers"] = [{"name": "init", "image": ENVOY, "imagePullPolicy": "IfNotPresent"}]
    where = [w for w, _, _ in images_check.rendered_images(docs)]
    assert "FlinkDeployment/inference spec.image" in where
    assert "FlinkDeployment/inference container 'beam-worker-pool'" in where
    assert "Deployment/tf-serving container 'init'" in where
    assert {"Job/submit-fraud-detection container 'launcher'", "Deployment/tf-serving container 'envoy'"} <= set(where)


def test_the_lock_names_where_each_digest_came_from():
    for e in images.load_lock(images.LOCK_FILE):
        if e.digest:
            assert e.source.startswith(("resolved by lock-images on ", "public reference: ")), e
        else:
            assert e.source.startswith(("unresolved: ", "not built yet: ")), e


# --- each defect is caught -------------------------------------------------------------------------------------


def _envoy(docs) -> dict:
    return container(docs, "Deployment/tf-serving", "envoy")


@pytest.mark.parametrize(
    "mutate, expected",
    cases(
        (lambda d: _envoy(d).update(image=ENVOY), f"{ENVOY} is not pinned by digest: images.lock.yaml pins {ENVOY}@"),
        (lambda d: _envoy(d).update(image=f"{ENVOY}@{OTHER_DIGEST}"), "is not what images.lock.yaml pins"),
        (lambda d: _envoy(d).update(image="envoyproxy/envoy:v1.34.1"), "is not what images.lock.yaml pins"),
        (
            lambda d: container(d, "FlinkDeployment/inference[taskManager]", "beam-worker-pool").update(
                image="europe-docker.pkg.dev/my-project/marketplace/beam-worker:0.1.0"
            ),
            "the project's images run by an immutable tag <version>-<git commit>[-variant], not '0.1.0'",
        ),
        (
            lambda d: container(d, "Job/submit-fraud-detection", "launcher").update(
                image="europe-docker.pkg.dev/my-project/marketplace/launcher:latest"
            ),
            "not 'latest'",
        ),
        (
            lambda d: one(d, "FlinkDeployment")["spec"].update(
                image="europe-docker.pkg.dev/my-project/marketplace/flink:1.20.3"
            ),
            "FlinkDeployment/inference spec.image: europe-docker.pkg.dev/my-project/marketplace/flink:1.20.3: the "
            "project's images run by an immutable tag",
        ),
        (
            lambda d: next(p for p in pods(d) if p.owner == "Deployment/tf-serving").spec.update(
                initContainers=[{"name": "wait", "image": "busybox:1.36", "imagePullPolicy": "IfNotPresent"}]
            ),
            "Deployment/tf-serving container 'wait': busybox:1.36 is not in images.lock.yaml for the cpu overlay",
        ),
        (
            lambda d: container(d, "Job/submit-fraud-detection", "launcher").update(imagePullPolicy="Always"),
            "container 'launcher': imagePullPolicy must be IfNotPresent",
        ),
        (
            lambda d: one(d, "FlinkDeployment")["spec"].pop("imagePullPolicy"),
            "FlinkDeployment/inference spec.image: imagePullPolicy must be IfNotPresent",
        ),
    ),
)
def test_images_check_catches(mutate, expected):
    assert_caught(mutate, expected)


def test_a_rendered_image_without_the_digest_the_lock_now_has_is_caught(tmp_path, monkeypatch):
    # TF Serving by its tag alone, as an overlay left behind after lock-images resolved its digest would run it.
    lock_copy(
        tmp_path, monkeypatch, lambda es: setattr(entry(es, "tensorflow/serving", "2.19.1-gpu"), "digest", OTHER_DIGEST)
    )
    docs = rendered("gpu")
    container(docs, "Deployment/tf-serving", "tf-serving").update(image="tensorflow/serving:2.19.1-gpu")
    assert (
        "Deployment/tf-serving container 'tf-serving': tensorflow/serving:2.19.1-gpu is not pinned by digest: "
        f"images.lock.yaml pins tensorflow/serving:2.19.1-gpu@{OTHER_DIGEST}"
    ) in images_check.check_images(docs, "gpu")


def test_a_mutable_project_tag_in_the_lock_is_caught(tmp_path, monkeypatch):
    lock_copy(tmp_path, monkeypatch, lambda es: setattr(entry(es, "marketplace/launcher"), "tag", "0.1.0"))
    found = images_check.check_images(rendered("cpu"), "cpu")
    assert any(
        "marketplace/launcher is the project's own image, and its tag '0.1.0' can be pushed again" in p for p in found
    )


def test_an_unreadable_lock_is_a_problem_not_a_crash(tmp_path, monkeypatch):
    broken = tmp_path / images.LOCK_NAME
    broken.write_text("images:\n- name: flink\n  tag: 1.20\n  digest: null\n  source: x\n")
    monkeypatch.setattr(images_check, "LOCK_FILE", broken)
    assert images_check.check_images(rendered("cpu"), "cpu") == [f"{broken}: flink: the tag must be a string, got 1.2"]


@pytest.mark.parametrize(
    "dockerfile, old, new, expected",
    [
        pytest.param(
            "launcher",
            "FROM python:3.11-slim@sha256:",
            "FROM python:3.11-slim@sha256:0",
            "is not what images.lock.yaml pins: python:3.11-slim@sha256:",
            id="base-digest-changed",
        ),
        pytest.param(
            "worker",
            re.compile(r"(FROM python:3\.11-slim)@sha256:[0-9a-f]{64}"),
            r"\1",
            "images/worker/Dockerfile:10: python:3.11-slim is not pinned by digest",
            id="base-not-pinned",
        ),
        pytest.param(
            "launcher",
            re.compile(r"(COPY --from=eclipse-temurin:17-jre)@sha256:[0-9a-f]{64}"),
            r"\1",
            "eclipse-temurin:17-jre is not pinned by digest",
            id="copy-from-image-not-pinned",
        ),
        pytest.param(
            "flink",
            re.compile(r"(# syntax=docker/dockerfile:1)@sha256:[0-9a-f]{64}"),
            r"\1",
            "images/flink/Dockerfile:1: docker/dockerfile:1 is not pinned by digest",
            id="frontend-not-pinned",
        ),
        pytest.param(
            "worker",
            re.compile(r"^FROM apache/beam_python.*$", re.M),
            "FROM debian:bookworm-slim",
            "debian:bookworm-slim is not in images.lock.yaml for images/worker",
            id="base-not-in-the-lock",
        ),
        pytest.param(
            "flink",
            "ARG FLINK_VERSION=1.20.3",
            "ARG FLINK_VERSION=1.20.2",
            "flink:1.20.2-scala_2.12-java17@sha256:",
            id="version-bumped-without-relocking",
        ),
    ],
)
def test_dockerfile_image_references_are_checked(tmp_path, monkeypatch, dockerfile, old, new, expected):
    copy = tmp_path / "images"
    shutil.copytree(images_check.IMAGES_DIR, copy)
    path = copy / dockerfile / "Dockerfile"
    text = path.read_text()
    changed = old.sub(new, text) if isinstance(old, re.Pattern) else text.replace(old, new, 1)
    assert changed != text
    path.write_text(changed)
    monkeypatch.setattr(images_check, "IMAGES_DIR", copy)
    found = images_check.check_images(rendered("cpu"), "cpu")
    assert any(expected in p for p in found), found


def test_apply_refuses_an_overlay_with_an_image_the_lock_has_no_digest_for(tmp_path, monkeypatch):
    def pin_all_but_tf_serving(entries):
        for e in entries:
            e.digest = None if (e.name, e.tag) == ("tensorflow/serving", "2.19.1") else e.digest or OTHER_DIGEST

    lock_copy(tmp_path, monkeypatch, pin_all_but_tf_serving)
    assert [reason.split(" (")[0] for reason in images.unpinned("cpu")] == ["tensorflow/serving:2.19.1"]
    assert images.unpinned("gpu") == []

    class Reached(Exception):
        pass

    def cluster(context):
        raise Reached

    monkeypatch.setattr(cli, "run_validation", lambda overlays: 0)
    monkeypatch.setattr(cli, "_kube", cluster)
    assert cli.main(["apply", "--overlay", "cpu"]) == 1
    with pytest.raises(Reached):  # a dry run asks the API server, and pulls nothing
        cli.main(["apply", "--overlay", "cpu", "--dry-run"])
    with pytest.raises(Reached):
        cli.main(["apply", "--overlay", "gpu"])


# --- the lock step against a real registry ---------------------------------------------------------------------


def test_missing_go_is_a_failure_that_says_what_to_install(monkeypatch, tmp_path):
    monkeypatch.setattr(images.shutil, "which", lambda name: None)
    with pytest.raises(manifests.ToolMissing, match="go is not on PATH: it builds crane.*Install Go"):
        images.crane(tmp_path)


def test_lock_images_flags_that_need_each_other():
    assert cli.main(["lock-images", "--registry", "europe-docker.pkg.dev/p/r"]) == 2
    assert cli.main(["lock-images", "--offline", "--commit", "abcdef1"]) == 2


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    """crane's in-memory registry on a loopback port: `.host` is host:port; `.push(reference, content)` pushes a
    one-layer image and returns the digest crane reports for it."""
    crane = images.crane()
    port = free_port()
    log = tmp_path_factory.mktemp("registry") / "registry.log"
    with ManagedProcess(
        [crane, "registry", "serve", "--address", f"127.0.0.1:{port}"], log, name="crane registry"
    ) as server:
        server.wait_ready(lambda: port_accepts(port), timeout=30, what=f"listening on 127.0.0.1:{port}")

        class Registry:
            host = f"127.0.0.1:{port}"

            @staticmethod
            def push(reference: str, content: str) -> str:
                layer = tmp_path_factory.mktemp("layer") / "layer.tar"
                data = content.encode()
                with tarfile.open(layer, "w") as tar:
                    info = tarfile.TarInfo("content.txt")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
                subprocess.run(
                    [crane, "append", "-f", str(layer), "-t", reference], check=True, capture_output=True, timeout=60
                )
                return subprocess.run(
                    [crane, "digest", reference], check=True, capture_output=True, text=True, timeout=60
                ).stdout.strip()

        yield Registry


def manifests_tree(root, host: str) -> None:
    """A small deploy tree: an overlay running a third-party and a project image, a Dockerfile on a base image,
    and the lock of all three (the third-party digest stale, the others unresolved)."""
    overlay = root / "overlays" / "cpu"
    overlay.mkdir(parents=True)
    shutil.copytree(MANIFESTS_DIR / "components", root / "components")
    (overlay / "kustomization.yaml").write_text(
        "resources:\n  - deployment.yaml\n  - flink.yaml\ncomponents:\n  - ../../components/flink-image\n"
        "images:\n  - name: stale\n    newTag: x\nnamePrefix: test-\n"
    )
    (overlay / "flink.yaml").write_text(
        "apiVersion: flink.apache.org/v1beta1\nkind: FlinkDeployment\nmetadata: {name: flink}\n"
        "spec: {image: marketplace/app, imagePullPolicy: IfNotPresent}\n"
    )
    (overlay / "deployment.yaml").write_text(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: app}\nspec:\n  selector: {matchLabels: {app: a}}\n"
        "  template:\n    metadata: {labels: {app: a}}\n    spec:\n      containers:\n"
        f"        - {{name: server, image: {host}/vendor/server:1.0, imagePullPolicy: IfNotPresent}}\n"
        "        - {name: app, image: marketplace/app, imagePullPolicy: IfNotPresent}\n"
    )
    (root / "images" / "app").mkdir(parents=True)
    (root / "images" / "app" / "Dockerfile").write_text(
        f"ARG PYTHON=3.11\nFROM {host}/library/python:${{PYTHON}}-slim AS build\nRUN true\n"
        f"FROM {host}/library/python:${{PYTHON}}-slim\nCOPY --from=build /etc/hostname /tmp/\n"
    )
    lock = [
        images.Image(f"{host}/library/python", "3.11-slim", None, "unresolved: test", dockerfiles=["app"]),
        images.Image(f"{host}/vendor/server", "1.0", OTHER_DIGEST, "public reference: test", overlays=["cpu"]),
        images.Image("marketplace/app", "0.1.0-0000000", None, "not built yet: test", f"{host}/old/app", True, ["cpu"]),
    ]
    (root / images.LOCK_NAME).write_text(images.lock_text(lock))


def test_lock_images_resolves_digests_from_a_real_registry_and_writes_where_they_are_used(
    registry, tmp_path, monkeypatch
):
    host, today = registry.host, datetime.date(2026, 12, 1)
    manifests_tree(tmp_path, host)
    python = registry.push(f"{host}/library/python:3.11-slim", "python")
    server = registry.push(f"{host}/vendor/server:1.0", "server 1")
    app = registry.push(f"{host}/team/app:0.1.0-abcdef123456", "app")
    assert len({python, server, app}) == 3

    # The third-party images: each tag's digest now; the project's image is left alone.
    changes = images.lock_images(tmp_path, today=today)
    lock = {e.name: e for e in images.load_lock(tmp_path / images.LOCK_NAME)}
    assert lock[f"{host}/library/python"].digest == python
    assert lock[f"{host}/vendor/server"].digest == server
    assert lock[f"{host}/vendor/server"].source == "resolved by lock-images on 2026-12-01"
    assert lock["marketplace/app"].digest is None and lock["marketplace/app"].tag == "0.1.0-0000000"
    assert f"{host}/vendor/server:1.0: {OTHER_DIGEST} -> {server}" in changes
    dockerfile = (tmp_path / "images" / "app" / "Dockerfile").read_text()
    assert dockerfile.count(f"FROM {host}/library/python:${{PYTHON}}-slim@{python}") == 2
    assert "COPY --from=build " in dockerfile  # a build stage is not an image

    # The project's image, built from a commit and pushed to another registry path.
    images.lock_images(tmp_path, commit="abcdef123456", registry=f"{host}/team", today=today)
    lock = {e.name: e for e in images.load_lock(tmp_path / images.LOCK_NAME)}
    assert lock["marketplace/app"].tag == "0.1.0-abcdef123456"
    assert lock["marketplace/app"].repository == f"{host}/team/app"
    assert lock["marketplace/app"].digest == app
    assert lock[f"{host}/vendor/server"].digest == server  # the bases it was built on stay as they were

    # What kustomize renders from the written overlay is what the check wants.
    kustomization = (tmp_path / "overlays" / "cpu" / "kustomization.yaml").read_text()
    assert "name: stale" not in kustomization and kustomization.endswith("namePrefix: test-\n")
    text = subprocess.run(
        [manifests.kubectl(), "kustomize", str(tmp_path / "overlays" / "cpu")],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    docs = [d for d in yaml.safe_load_all(text) if d]
    assert [c["image"] for c in one(docs, "Deployment")["spec"]["template"]["spec"]["containers"]] == [
        f"{host}/vendor/server:1.0@{server}",
        f"{host}/team/app:0.1.0-abcdef123456@{app}",
    ]
    assert one(docs, "FlinkDeployment")["spec"]["image"] == f"{host}/team/app:0.1.0-abcdef123456@{app}"
    monkeypatch.setattr(images_check, "LOCK_FILE", tmp_path / images.LOCK_NAME)
    monkeypatch.setattr(images_check, "IMAGES_DIR", tmp_path / "images")
    assert images_check.check_images(docs, "cpu") == []

    # A tag that moves in the registry moves in the lock only when someone locks again, and it says so.
    moved = registry.push(f"{host}/vendor/server:1.0", "server 2")
    assert moved != server
    assert images.lock_images(tmp_path, today=today) == [f"{host}/vendor/server:1.0: {server} -> {moved}"]
    assert images_check.check_images(docs, "cpu") == [
        f"Deployment/test-app container 'server': {host}/vendor/server:1.0@{server} is not what images.lock.yaml "
        f"pins: {host}/vendor/server:1.0@{moved} (run `python -m deploy lock-images --offline`)"
    ]


def test_lock_images_writes_nothing_when_a_tag_is_not_in_the_registry(registry, tmp_path):
    host = registry.host
    manifests_tree(tmp_path, host)
    registry.push(f"{host}/library/python:3.11-slim", "python")
    registry.push(f"{host}/vendor/server:1.0", "server")
    path = tmp_path / images.LOCK_NAME
    lock = images.load_lock(path)
    lock.append(images.Image(f"{host}/never/pushed", "9.9", None, "unresolved: test", overlays=["gpu"]))
    path.write_text(images.lock_text(lock))
    before = {p: p.read_text() for p in tmp_path.rglob("*") if p.is_file()}
    with pytest.raises(
        images.LockError, match=f"could not resolve \\(nothing written\\):\n  {host}/never/pushed:9.9: "
    ):
        images.lock_images(tmp_path)
    assert {p: p.read_text() for p in tmp_path.rglob("*") if p.is_file()} == before
