"""The versions check: one Beam version everywhere (setup.py, the installed SDK, both images, the job server jar
the Jobs name), one Flink minor (the FlinkDeployment, the Flink image, the launcher), and TF Serving's image at
the version of the serving API the project pins.

Unlike the other checks it also reads source files the overlay does not render: setup.py and the image
Dockerfiles (IMAGES_DIR, which a test points at a drifted copy).
"""

from __future__ import annotations

import re

from deploy import MANIFESTS_DIR, REPO_ROOT
from deploy.images import image_tag
from deploy.manifests import args_dict, flink_deployment, ref, tf_serving_pod
from deploy.site import TF_SERVING_CONTAINER
from deploy.validation.submissions import submissions

IMAGES_DIR = MANIFESTS_DIR / "images"
SETUP_PY = REPO_ROOT / "setup.py"


def setup_py_facts(text: str) -> dict[str, str]:
    facts = {}
    beam = re.search(r'^BEAM_VERSION\s*=\s*"([^"]+)"', text, re.M)
    if beam:
        facts["beam"] = beam.group(1)
    pinned = re.search(r'"apache-beam\[gcp\]==(\{BEAM_VERSION\}|[\d.]+)"', text)
    if pinned:
        facts["beam_requirement"] = facts.get("beam", "") if pinned.group(1) == "{BEAM_VERSION}" else pinned.group(1)
    serving = re.search(r'"tensorflow-serving-api==([\d.]+)"', text)
    if serving:
        facts["tf_serving_api"] = serving.group(1)
    python = re.search(r'python_requires\s*=\s*">=(\d+\.\d+)', text)
    if python:
        facts["python"] = python.group(1)
    packages = re.search(r"^PACKAGES = \[([^\]]*)\]", text, re.M)
    if packages:
        facts["packages"] = " ".join(re.findall(r'"([\w.]+)"', packages.group(1)))
    return facts


def dockerfile_args(text: str) -> dict[str, str]:
    return dict(re.findall(r"^ARG (\w+)=(\S+)", text, re.M))


def check_versions(docs: list[dict]) -> list[str]:
    """One Beam version everywhere (setup.py, installed SDK, both images, the job server jar); one Flink minor; TF
    Serving's image at the version of the serving API the project pins."""
    import apache_beam

    problems = []
    setup = setup_py_facts(SETUP_PY.read_text(encoding="utf-8"))
    beam = setup.get("beam")
    if not beam or setup.get("beam_requirement") != beam:
        return [f"setup.py must define BEAM_VERSION and require apache-beam[gcp]=={{BEAM_VERSION}}, found {setup}"]
    if apache_beam.__version__ != beam:
        problems.append(f"installed apache-beam is {apache_beam.__version__}, setup.py pins {beam}")
    worker = (IMAGES_DIR / "worker" / "Dockerfile").read_text(encoding="utf-8")
    launcher = (IMAGES_DIR / "launcher" / "Dockerfile").read_text(encoding="utf-8")
    flink_image = (IMAGES_DIR / "flink" / "Dockerfile").read_text(encoding="utf-8")
    for name, text in (("worker", worker), ("launcher", launcher)):
        if dockerfile_args(text).get("BEAM_VERSION") != beam:
            problems.append(
                f"images/{name}/Dockerfile: ARG BEAM_VERSION must be {beam}, got {dockerfile_args(text).get('BEAM_VERSION')}"
            )
    python = setup.get("python")
    # The tag from the ARG; the digest after it, where images.lock.yaml has one.
    sdk = rf"^FROM apache/beam_python{re.escape(python or '?')}_sdk:\$\{{BEAM_VERSION\}}(@sha256:[0-9a-f]{{64}})?$"
    if not re.search(sdk, worker, re.M):
        problems.append(f"images/worker/Dockerfile must be FROM apache/beam_python{python}_sdk:${{BEAM_VERSION}}")
    if len(re.findall(rf"^FROM python:{re.escape(python or '?')}-slim\b", launcher, re.M)) < 1:
        problems.append(f"images/launcher/Dockerfile must run on python:{python}-slim")

    fd = flink_deployment(docs)
    flink_minor = fd["spec"]["flinkVersion"].removeprefix("v").replace("_", ".")
    if dockerfile_args(launcher).get("FLINK_MINOR") != flink_minor:
        problems.append(
            f"images/launcher/Dockerfile: ARG FLINK_MINOR must be {flink_minor} (flinkVersion), got {dockerfile_args(launcher).get('FLINK_MINOR')}"
        )
    flink_version = dockerfile_args(flink_image).get("FLINK_VERSION", "")
    if not flink_version.startswith(flink_minor + "."):
        problems.append(f"images/flink/Dockerfile: FLINK_VERSION {flink_version} is not a {flink_minor}.x release")
    # The project's tag is <Flink version>-<git commit> (images.lock.yaml).
    flink_tag = image_tag(fd["spec"]["image"])
    if flink_tag.split("-")[0] != flink_version:
        problems.append(f"FlinkDeployment image tag {flink_tag} must be the Flink image's version {flink_version}")
    jar = f"/opt/beam/jars/beam-runners-flink-{flink_minor}-job-server-{beam}.jar"
    for submission in submissions(docs):
        argv = args_dict(submission.argv)
        if argv.get("flink_job_server_jar") != jar:
            problems.append(
                f"{ref(submission.job)}: --flink_job_server_jar must be {jar} (launcher image), got {argv.get('flink_job_server_jar')!r}"
            )
        if argv.get("flink_version") != flink_minor:
            problems.append(
                f"{ref(submission.job)}: --flink_version must be {flink_minor}, got {argv.get('flink_version')!r}"
            )
    serving_image = tf_serving_pod(docs).container(TF_SERVING_CONTAINER)["image"]
    serving_version = image_tag(serving_image).removesuffix("-gpu")
    if serving_version != setup.get("tf_serving_api"):
        problems.append(
            f"TF Serving image {serving_image} must be the version of tensorflow-serving-api in setup.py ({setup.get('tf_serving_api')})"
        )
    # The images install the project from setup.py's packages: the build context must send every one of them.
    for name in ("worker", "launcher"):
        ignore = (IMAGES_DIR / name / "Dockerfile.dockerignore").read_text(encoding="utf-8")
        for package in setup.get("packages", "").split():
            if f"!{package}/" not in ignore.splitlines():
                problems.append(
                    f"images/{name}/Dockerfile.dockerignore must let package {package}/ (setup.py) into the build"
                )
    return problems
