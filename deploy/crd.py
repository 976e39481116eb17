"""The Flink Kubernetes Operator's own FlinkDeployment schema, from the operator's published artifact.

The CRD is generated into META-INF/fabric8/ of `org.apache.flink:flink-kubernetes-operator-api` on Maven Central.
It is fetched with Maven into build/deploy/ (gitignored) the first time it is needed, on a fresh clone as in CI,
and read from there afterwards. No copy of it lives in the repository.
"""

from __future__ import annotations

import copy
import functools
import shutil
import subprocess
import zipfile
from pathlib import Path

from deploy import REPO_ROOT
from deploy.manifests import ToolMissing

# 1.10.0 is the newest release whose CRD knows flinkVersion v1_20 that Maven Central serves here.
OPERATOR_VERSION = "1.10.0"
OPERATOR_API_ARTIFACT = f"org.apache.flink:flink-kubernetes-operator-api:{OPERATOR_VERSION}"
CRD_ENTRY = "META-INF/fabric8/flinkdeployments.flink.apache.org-v1.yml"
# Pinned: without a version Maven falls back to an ancient dependency plugin.
DEPENDENCY_PLUGIN = "org.apache.maven.plugins:maven-dependency-plugin:3.8.1"
CACHE_DIR = REPO_ROOT / "build" / "deploy"


def operator_api_jar(cache_dir: Path = CACHE_DIR) -> Path:
    jar = cache_dir / f"flink-kubernetes-operator-api-{OPERATOR_VERSION}.jar"
    if jar.is_file():
        return jar
    mvn = shutil.which("mvn")
    if mvn is None:
        raise ToolMissing(
            f"mvn is not on PATH: it fetches {OPERATOR_API_ARTIFACT} from Maven Central for the FlinkDeployment "
            "schema. Install Maven (Debian/Ubuntu: `apt-get install maven`) and Java 17."
        )
    cache_dir.mkdir(parents=True, exist_ok=True)
    command = [
        mvn,
        "-q",
        "-B",
        f"{DEPENDENCY_PLUGIN}:copy",
        f"-Dartifact={OPERATOR_API_ARTIFACT}",
        f"-DoutputDirectory={cache_dir}",
    ]
    completed = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    if completed.returncode != 0 or not jar.is_file():
        output = (completed.stdout + completed.stderr).strip()[-3000:]
        raise RuntimeError(f"fetching {OPERATOR_API_ARTIFACT} with Maven failed ({' '.join(command)}):\n{output}")
    return jar


@functools.cache
def flink_deployment_crd() -> dict:
    import yaml

    with zipfile.ZipFile(operator_api_jar()) as jar:
        # The C loader: the CRD is half a megabyte of YAML.
        return yaml.load(jar.read(CRD_ENTRY), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


def flink_deployment_schema(api_version: str = "v1beta1") -> dict:
    for version in flink_deployment_crd()["spec"]["versions"]:
        if version["name"] == api_version:
            return version["schema"]["openAPIV3Schema"]
    raise LookupError(f"the operator's CRD {OPERATOR_VERSION} has no version {api_version}")


def strict(schema: dict) -> dict:
    """The schema with unknown fields made errors, as the API server's strict field validation treats them.

    An object schema that lists its properties and neither allows additional ones nor preserves unknown fields
    gets additionalProperties: false. Without this a misspelt field would validate here and then be silently
    pruned by the API server.
    """
    schema = copy.deepcopy(schema)

    def visit(node):
        if isinstance(node, dict):
            if (
                node.get("type") == "object"
                and "properties" in node
                and "additionalProperties" not in node
                and not node.get("x-kubernetes-preserve-unknown-fields")
            ):
                node["additionalProperties"] = False
            for value in node.values():
                visit(value)
        elif isinstance(node, list):
            for value in node:
                visit(value)

    visit(schema)
    return schema


def validate_flink_deployment(doc: dict) -> list[str]:
    """Problems of one FlinkDeployment against the operator's schema, each with the path to the field."""
    import jsonschema

    api_version = doc.get("apiVersion", "")
    if not api_version.startswith("flink.apache.org/"):
        return [f"apiVersion must be flink.apache.org/<version>, got {api_version!r}"]
    schema = strict(flink_deployment_schema(api_version.split("/", 1)[1]))
    # The API server checks these three itself; the generated schema leaves them out.
    schema["properties"].update(
        apiVersion={"type": "string"}, kind={"type": "string", "enum": ["FlinkDeployment"]}, metadata={"type": "object"}
    )
    validator = jsonschema.Draft7Validator(schema)
    return [
        f"{'.'.join(str(p) for p in error.absolute_path) or '<root>'}: {error.message}"
        for error in sorted(validator.iter_errors(doc), key=lambda e: list(map(str, e.absolute_path)))
    ]
