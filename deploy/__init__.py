"""Production deployment: the Flink-on-Kubernetes manifests (deploy/flink-on-k8s/) and the tools around them.

    python -m deploy render|validate|apply|status|rollout-model ...   the operator's CLI (deploy/__main__.py)
    python -m deploy.submit ...                                       the launcher image's submission step

Modules import their heavy dependencies (kubernetes, jsonschema, Beam) inside functions, so that the launcher
image, which only needs `deploy.submit`, imports nothing it does not use.
"""

from __future__ import annotations

from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
REPO_ROOT = PACKAGE_DIR.parent
MANIFESTS_DIR = PACKAGE_DIR / "flink-on-k8s"
OVERLAYS = ("cpu", "gpu")
