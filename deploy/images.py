"""The image lock: every image the deployment runs and the Dockerfiles build on, each pinned by digest.

deploy/flink-on-k8s/images.lock.yaml is the one place where an image's tag and digest are stated.
`python -m deploy lock-images` resolves tags to digests in their registries with crane (go-containerregistry's
registry client, built from the Go module proxy), rewrites the lock, and writes the references where they are
used: each overlay's kustomize `images:` block, and the Dockerfiles' image references (`# syntax=`, FROM,
`COPY --from=`). deploy/validation/images.py checks offline that what renders and what the Dockerfiles name is
what the lock says.

Two kinds of entry:
- third-party images (Flink, Python, Maven, Temurin, Beam's SDK, TF Serving, Envoy, the Dockerfile frontend): a
  public tag and the digest it had when it was locked. `lock-images` resolves them all again.
- the project's own images (`project: true`), built from images/ and pushed under an immutable tag,
  `<version>-<git commit>[-variant]`; their digest exists once they are pushed: `lock-images --commit C`.
An entry without a digest says why in `source`; `apply` refuses an overlay that runs one.
"""

from __future__ import annotations

import datetime
import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from deploy import MANIFESTS_DIR, REPO_ROOT
from deploy.manifests import ToolMissing

LOCK_NAME = "images.lock.yaml"
LOCK_FILE = MANIFESTS_DIR / LOCK_NAME
DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
# The project's images are tagged with the version and the git commit they were built from, e.g.
# 0.1.0-2195ef26f94b or 0.1.0-2195ef26f94b-gpu: a rebuild from other sources never needs an existing tag, and the
# registry's immutable tags refuse one pushed twice (README, "Images").
PROJECT_TAG = re.compile(r"(?P<version>\d+(?:\.\d+)*)-(?P<commit>[0-9a-f]{7,40})(?P<variant>-[a-z][a-z0-9]*)?")

# crane at a fixed version; `go install` checks the module against the Go checksum database.
CRANE_MODULE = "github.com/google/go-containerregistry/cmd/crane"
CRANE_VERSION = "v0.22.1"
CRANE_DIR = REPO_ROOT / "build" / "deploy" / "crane" / CRANE_VERSION  # gitignored, like the operator's CRD jar

# The order of an entry's fields in the lock file.
_FIELDS = ("name", "repository", "project", "tag", "digest", "source", "overlays", "dockerfiles")

LOCK_HEADER = """\
# Every image the deployment runs and the Dockerfiles build on, each with the digest it is pinned to.
# `python -m deploy lock-images` writes this file, and from it the overlays' `images:` blocks and the Dockerfiles'
# image references; `python -m deploy validate` fails where they disagree (deploy/flink-on-k8s/README.md, "Images").
# source: where the digest came from ("resolved by lock-images on <date>", or "public reference: <where>" when no
# registry could be asked), or why there is none yet. project: built from images/ and pushed by us.
"""


class LockError(RuntimeError):
    """The lock cannot be read, an image cannot be resolved or written: nothing has been written."""


@dataclass
class Image:
    """One entry of the lock."""

    name: str  # as base/ and the Dockerfiles name it: flink, tensorflow/serving, marketplace/beam-worker
    tag: str
    digest: str | None
    source: str
    repository: str | None = None  # a project image: where it is pushed (the overlays' newName)
    project: bool = False
    overlays: list[str] = field(default_factory=list)  # the overlays that run it
    dockerfiles: list[str] = field(default_factory=list)  # images/<name>/Dockerfile that build on it

    @property
    def pulled(self) -> str:
        """The repository a node or a build pulls it from."""
        return self.repository or self.name

    @property
    def reference(self) -> str:
        """What a manifest or a Dockerfile names: repository:tag@digest (repository:tag while it has none)."""
        return f"{self.pulled}:{self.tag}" + (f"@{self.digest}" if self.digest else "")


def split_reference(reference: str) -> tuple[str, str | None, str | None]:
    """(repository, tag, digest) of `repository[:tag][@digest]`; a registry's port is not a tag."""
    name, _, digest = reference.partition("@")
    repository, colon, tag = name.rpartition(":")
    if not colon or "/" in tag:
        return name, None, digest or None
    return repository, tag, digest or None


def image_tag(reference: str) -> str:
    """The tag of an image reference ("" for none), with or without a digest after it."""
    return split_reference(reference)[1] or ""


# --- the lock file ---------------------------------------------------------------------------------------------


def load_lock(path: Path) -> list[Image]:
    import yaml

    try:
        entries = [Image(**entry) for entry in yaml.safe_load(path.read_text(encoding="utf-8"))["images"]]
    except (OSError, yaml.YAMLError, KeyError, TypeError) as error:
        raise LockError(f"{path}: not a readable image lock: {error}") from None
    seen = set()
    for entry in entries:
        if not isinstance(entry.tag, str):  # 3.10 unquoted would be the float 3.1
            raise LockError(f"{path}: {entry.name}: the tag must be a string, got {entry.tag!r}")
        if entry.digest is not None and not DIGEST.fullmatch(entry.digest):
            raise LockError(f"{path}: {entry.name}:{entry.tag}: digest must be sha256:<64 hex>, got {entry.digest!r}")
        keys = {(entry.pulled, entry.tag)} | {(overlay, entry.name) for overlay in entry.overlays}
        if keys & seen:
            raise LockError(f"{path}: {entry.name}:{entry.tag} is listed twice (or twice in one overlay)")
        seen |= keys
    return entries


def lock_text(entries: list[Image]) -> str:
    import yaml

    data = [
        {key: getattr(entry, key) for key in _FIELDS if key == "digest" or getattr(entry, key) not in (None, False, [])}
        for entry in entries
    ]
    return LOCK_HEADER + yaml.safe_dump({"images": data}, sort_keys=False, width=100, default_flow_style=None)


def unpinned(overlay: str) -> list[str]:
    """The images an overlay runs that the lock has no digest for yet, each with the lock's reason."""
    return [f"{e.pulled}:{e.tag} ({e.source})" for e in load_lock(LOCK_FILE) if overlay in e.overlays and not e.digest]


# --- where the references are written --------------------------------------------------------------------------


@dataclass
class DockerfileReference:
    """An image a Dockerfile names: in a `# syntax=` directive, a FROM, or a `COPY --from=`."""

    line: int  # 0-based
    start: int  # the span of `raw` in that line
    end: int
    raw: str  # as written: apache/beam_python3.11_sdk:${BEAM_VERSION}@sha256:...
    expanded: str  # with the global ARGs' defaults in place of ${...}


_DIRECTIVE = re.compile(r"#\s*(\w+)\s*=\s*(\S+)")
_FROM = re.compile(r"\s*FROM\s+(?:--platform=\S+\s+)?(\S+)(?:\s+AS\s+(\S+))?", re.I)
_COPY_FROM = re.compile(r"\s*(?:COPY|ADD)\s.*?--from=(\S+)", re.I)
_ARG = re.compile(r"\s*ARG\s+(\w+)=(\S*)", re.I)


def dockerfile_references(text: str) -> list[DockerfileReference]:
    """Every image the Dockerfile pulls; the build stages it names are not images."""
    found, stages, args = [], {"scratch"}, {}
    header, after_from = True, False
    for index, line in enumerate(text.splitlines()):
        # Parser directives (`# syntax=` names the frontend image) count only before anything else.
        directive = _DIRECTIVE.match(line) if header else None
        header = directive is not None
        if directive:
            match = directive if directive[1].lower() == "syntax" else None
            span = 2
        elif match := _FROM.match(line):
            after_from, span = True, 1
        else:
            if not after_from and (arg := _ARG.match(line)):
                args[arg[1]] = arg[2]  # FROM lines see only the ARGs declared before the first FROM
            match, span = _COPY_FROM.match(line), 1
        if match is None:
            continue
        raw = match[span]
        if raw.lower() not in stages and not raw.isdigit():
            expanded = re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: args.get(m[1] or m[2], m[0]), raw)
            found.append(DockerfileReference(index, match.start(span), match.end(span), raw, expanded))
        if match.re is _FROM and match[2]:
            stages.add(match[2].lower())
    return found


def _images_block(entries: list[Image], overlay: str) -> str:
    lines = [
        "images:",
        f"  # Written by `python -m deploy lock-images` from ../../{LOCK_NAME}: change the lock, not this list.",
    ]
    for entry in entries:
        if overlay in entry.overlays:
            lines.append(f"  - name: {entry.name}")
            if entry.repository:
                lines.append(f"    newName: {entry.repository}")
            lines.append(f'    newTag: "{entry.tag}"')
            if entry.digest:
                lines.append(f"    digest: {entry.digest}")
    return "\n".join(lines) + "\n"


# The top-level `images:` key of a kustomization and its indented lines.
_IMAGES_BLOCK = re.compile(r"^images:[ \t]*\n(?:[ \t]+\S.*(?:\n|\Z))*", re.M)


def planned_writes(entries: list[Image], root: Path = MANIFESTS_DIR) -> dict[Path, str]:
    """The overlays' kustomizations and the Dockerfiles as the lock says they must read: {path: text}."""
    writes = {}
    for overlay in sorted({o for entry in entries for o in entry.overlays}):
        path = root / "overlays" / overlay / "kustomization.yaml"
        text = path.read_text(encoding="utf-8")
        block = _images_block(entries, overlay)
        found = _IMAGES_BLOCK.search(text)
        writes[path] = text[: found.start()] + block + text[found.end() :] if found else text + block
    by_reference = {(entry.pulled, entry.tag): entry for entry in entries}
    for path in sorted((root / "images").glob("*/Dockerfile")):
        lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
        for ref in reversed(dockerfile_references("".join(lines))):
            repository, tag, _ = split_reference(ref.expanded)
            entry = by_reference.get((repository, tag))
            if entry is None:
                raise LockError(f"{path}:{ref.line + 1}: {ref.expanded} is not in {LOCK_NAME}: add it there first")
            pinned = ref.raw.partition("@")[0] + (f"@{entry.digest}" if entry.digest else "")
            line = lines[ref.line]
            lines[ref.line] = line[: ref.start] + pinned + line[ref.end :]
        writes[path] = "".join(lines)
    return writes


def write_uses(root: Path = MANIFESTS_DIR) -> list[str]:
    """Writes the lock's references into the overlays and the Dockerfiles, resolving nothing; the files changed."""
    writes = planned_writes(load_lock(root / LOCK_NAME), root)
    return _write(writes)


def _write(writes: dict[Path, str]) -> list[str]:
    changed = []
    for path, text in writes.items():
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
            changed.append(str(path))
    return changed


# --- resolving -------------------------------------------------------------------------------------------------


def crane(directory: Path = CRANE_DIR) -> str:
    """crane at CRANE_VERSION, built with `go install` into build/ the first time it is needed.

    No Go is a failure that says what to install, never a skip: lock-images cannot resolve a digest without it.
    """
    built = directory / "crane"
    if built.is_file():
        return str(built)
    go = shutil.which("go")
    if go is None:
        raise ToolMissing(
            f"go is not on PATH: it builds crane ({CRANE_MODULE}@{CRANE_VERSION}), which resolves image digests "
            "for `python -m deploy lock-images` and its test. Install Go 1.25 or later (https://go.dev/dl/)."
        )
    directory.mkdir(parents=True, exist_ok=True)
    command = [go, "install", f"{CRANE_MODULE}@{CRANE_VERSION}"]
    completed = subprocess.run(
        command, env={**os.environ, "GOBIN": str(directory)}, capture_output=True, text=True, timeout=600, check=False
    )
    if completed.returncode != 0 or not built.is_file():
        output = (completed.stdout + completed.stderr).strip()[-3000:]
        raise RuntimeError(f"building crane failed ({' '.join(command)}):\n{output}")
    return str(built)


def registry_digest(crane_path: str, reference: str) -> str:
    """The digest `reference` (repository:tag) has in its registry now. For a multi-platform image that is its
    index, from which each node pulls its own platform's image."""
    completed = subprocess.run(
        [crane_path, "digest", reference], capture_output=True, text=True, timeout=120, check=False
    )
    digest = completed.stdout.strip()
    if completed.returncode != 0 or not DIGEST.fullmatch(digest):
        raise LockError(f"{reference}: {completed.stderr.strip() or digest or 'no digest'}")
    return digest


def lock_images(
    root: Path = MANIFESTS_DIR,
    *,
    commit: str | None = None,
    registry: str | None = None,
    today: datetime.date | None = None,
) -> list[str]:
    """Resolves tags to digests in their registries, then writes the lock and every place it is used.

    Without `commit`: the third-party images, at the digest each tag has now. With `commit`: the project's
    images, built from that commit and pushed; their tags become <version>-<commit>[-variant] and, with
    `registry`, their repositories <registry>/<image name>. Only one kind at a time, so that a base image's digest
    never moves after the project's images were built on it. Nothing is written unless every image resolves.
    Returns what changed, one line each.
    """
    path = root / LOCK_NAME
    entries = load_lock(path)
    chosen = [entry for entry in entries if entry.project == bool(commit)]
    if commit:
        if not re.fullmatch(r"[0-9a-f]{7,40}", commit):
            raise LockError(f"--commit must be a git commit (7 to 40 hex digits), got {commit!r}")
        for entry in chosen:
            match = PROJECT_TAG.fullmatch(entry.tag)
            if match is None:
                raise LockError(f"{entry.name}: tag {entry.tag!r} is not <version>-<git commit>[-variant]")
            entry.tag = f"{match['version']}-{commit}{match['variant'] or ''}"
            if registry:
                entry.repository = f"{registry.rstrip('/')}/{entry.name.rsplit('/', 1)[-1]}"
    crane_path = crane()
    stamp = f"resolved by lock-images on {(today or datetime.date.today()).isoformat()}"
    changes, failures = [], []
    for entry in chosen:
        try:
            digest = registry_digest(crane_path, f"{entry.pulled}:{entry.tag}")
        except LockError as error:
            failures.append(str(error))
            continue
        if digest != entry.digest:
            changes.append(f"{entry.pulled}:{entry.tag}: {entry.digest or 'no digest'} -> {digest}")
        entry.digest, entry.source = digest, stamp
    if failures:
        raise LockError("could not resolve (nothing written):\n  " + "\n  ".join(failures))
    writes = {path: lock_text(entries), **planned_writes(entries, root)}
    _write(writes)
    return changes
