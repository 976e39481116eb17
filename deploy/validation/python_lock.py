"""The Python lock check: every package the project installs, in `make setup`'s venv and in the images, comes from a
hashed lock in requirements/ that holds setup.py's exact pins, and is installed by a pinned installer.

The installer is pinned too: each Makefile recipe and image first installs uv from requirements/installer.txt (one
wheel, no dependencies: any pip installs it in hash mode) and installs every other lock with uv. pip installs nothing
else but the project itself: in hash mode, the pip that Python bundles resolves a locked package's extras against the
index, and refused a whole lock when the index published a release after it (issue 21).

Like the versions check it reads source files, not the rendered overlay: setup.py, the locks, the Makefile and the
image Dockerfiles. Each part takes text (or paths), so that a test can hand it a broken copy.
"""

from __future__ import annotations

import builtins
import re
import types
from dataclasses import dataclass
from pathlib import Path

from deploy import REPO_ROOT
from deploy.validation.versions import IMAGES_DIR, SETUP_PY

REQUIREMENTS_DIR = REPO_ROOT / "requirements"
MAKEFILE = REPO_ROOT / "Makefile"

# Each lock, and what of setup.py it resolves (`make lock`): whether install_requires, and which extras.
LOCKS = {
    "dev.txt": (True, ("dev",)),
    "runtime.txt": (True, ()),
    "worker-gpu.txt": (True, ("gpu",)),
    "build.txt": (False, ("build",)),
    "installer.txt": (False, ("installer",)),
}
INSTALLER_LOCK = "installer.txt"
DEV_LOCK = "dev.txt"
# Which locks each installer must install with --require-hashes (paths relative to the repository root).
INSTALLERS = {
    "Makefile": ("installer.txt", "dev.txt", "worker-gpu.txt"),  # worker-gpu.txt: make bench-gpu
    "images/worker/Dockerfile": ("installer.txt", "build.txt", "runtime.txt", "worker-gpu.txt"),
    "images/launcher/Dockerfile": ("installer.txt", "build.txt", "runtime.txt"),
}


@dataclass(frozen=True)
class Pin:
    version: str
    hashes: tuple[str, ...]


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def setup_requirements(text: str) -> dict[str, list[str]]:
    """setup.py's requirements as setup() receives them: {"install_requires": [...], extra: [...], ...}.

    The text is run with a stand-in for setuptools that records setup()'s arguments: the lists are built with
    f-strings and a comprehension, which a pattern over the text would misread.
    """
    recorded: dict = {}
    stand_in = types.ModuleType("setuptools")
    stand_in.setup = lambda **kwargs: recorded.update(kwargs)
    stand_in.find_packages = lambda **kwargs: []

    def import_(name, *args, **kwargs):
        return stand_in if name == "setuptools" else builtins.__import__(name, *args, **kwargs)

    namespace = {"__builtins__": {**vars(builtins), "__import__": import_}, "__name__": "__main__"}
    exec(compile(text, "setup.py", "exec"), namespace)
    return {"install_requires": list(recorded.get("install_requires", [])), **recorded.get("extras_require", {})}


def exact_pin(requirement: str) -> tuple[str, str | None]:
    """(canonical name, version) of `name[extras]==version`; version None for anything else (a range, no version)."""
    from packaging.requirements import Requirement

    parsed = Requirement(requirement)
    specs = list(parsed.specifier)
    if len(specs) == 1 and specs[0].operator in ("==", "===") and "*" not in specs[0].version:
        return canonical(parsed.name), specs[0].version
    return canonical(parsed.name), None


def parse_lock(text: str) -> tuple[dict[str, Pin], list[str]]:
    """A pip requirements file as uv writes it: {canonical name: Pin}, and what in it is not `name==version`
    with hashes."""
    pins, problems = {}, []
    for line in text.replace("\\\n", " ").splitlines():
        tokens = line.split("#", 1)[0].split() if not line.lstrip().startswith("#") else []
        if not tokens:
            continue
        match = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?==([^\s;=*]+)", tokens[0])
        if not match:
            problems.append(f"{tokens[0]!r} is not an exact pin (name==version)")
            continue
        hashes = tuple(t.removeprefix("--hash=") for t in tokens[1:] if t.startswith("--hash="))
        pins[canonical(match.group(1))] = Pin(match.group(3), hashes)
        if not hashes:
            problems.append(f"{tokens[0]} has no --hash (make lock writes one for every entry)")
    return pins, problems


def check_locks(setup_text: str, locks: dict[str, str | None], requires=None) -> list[str]:
    """setup.py's requirements are exact pins, and each lock ({file name: text, None if missing}) holds the ones it
    resolves at those versions, every entry hashed; the image locks agree with the dev lock, which the tests ran."""
    problems = []
    requirements = setup_requirements(setup_text)
    wanted: dict[str, dict[str, str]] = {}  # lock -> {name: version}
    for lock, (install_requires, extras) in LOCKS.items():
        groups = (["install_requires"] if install_requires else []) + list(extras)
        for group in groups:
            for requirement in requirements.get(group, []):
                name, version = exact_pin(requirement)
                if version is not None:
                    wanted.setdefault(lock, {})[name] = version
    ranges = {}  # requirement -> the first group naming it (the dev extra repeats the others)
    for group, reqs in requirements.items():
        for requirement in reqs:
            if exact_pin(requirement)[1] is None:
                ranges.setdefault(requirement, group)
    problems += [f"setup.py: {r!r} ({group}) is not an exact pin: pin one version (==)" for r, group in ranges.items()]
    parsed = {}
    for lock, text in locks.items():
        if text is None:
            problems.append(f"requirements/{lock} is missing: run make lock")
            continue
        pins, malformed = parse_lock(text)
        parsed[lock] = pins
        problems += [f"requirements/{lock}: {p}" for p in malformed]
        for name, version in sorted(wanted.get(lock, {}).items()):
            if name not in pins:
                problems.append(f"requirements/{lock} is out of date with setup.py: it lacks {name} (run make lock)")
            elif pins[name].version != version:
                problems.append(
                    f"requirements/{lock} pins {name} {pins[name].version}, setup.py {version}: run make lock"
                )
    for lock, pins in parsed.items():
        install_requires, extras = LOCKS[lock]
        groups = (["install_requires"] if install_requires else []) + list(extras)
        roots = [r for group in groups for r in requirements.get(group, [])]
        problems += closure_problems(lock, roots, pins, requires or installed_requirements)
    dev = parsed.get(DEV_LOCK, {})
    for lock, pins in parsed.items():
        for name, pin in sorted(pins.items()):
            if lock != DEV_LOCK and name in dev and dev[name].version != pin.version:
                problems.append(
                    f"requirements/{lock} pins {name} {pin.version}, the dev lock (what the tests ran) "
                    f"{dev[name].version}: run make lock"
                )
    return problems


def installed_requirements(name: str, version: str) -> list[str] | None:
    """The Requires-Dist of `name` as installed here, when it is installed at `version` (the venv is the dev lock);
    None otherwise (the GPU lock's CUDA packages are not installed here)."""
    import importlib.metadata

    try:
        distribution = importlib.metadata.distribution(name)
    except importlib.metadata.PackageNotFoundError:
        return None
    return list(distribution.requires or []) if distribution.version == version else None


def closure_problems(lock: str, roots: list[str], pins: dict[str, Pin], requires=installed_requirements) -> list[str]:
    """What a locked package requires, through the extras its dependents ask of it, that the lock does not satisfy:
    a missing package or a version outside the range. An installer that resolves in hash mode would stop there; one
    that does not would install a broken set. Walks from setup.py's requirements (`roots`) through each package's
    metadata (`requires(name, version)`, None where it is not known: that package's own requirements go unchecked)."""
    from packaging.markers import default_environment
    from packaging.requirements import Requirement

    environment = default_environment()
    problems, seen = [], set()
    queue = [(Requirement(root), "setup.py") for root in roots]
    while queue:
        requirement, wanted_by = queue.pop()
        name = canonical(requirement.name)
        pin = pins.get(name)
        extras = f"[{','.join(sorted(requirement.extras))}]" if requirement.extras else ""
        wanted = f"{requirement.name}{extras}{requirement.specifier}"  # without its marker, which held
        if pin is None:
            problems.append(f"requirements/{lock}: {wanted_by} requires {wanted}, which the lock lacks")
            continue
        if not requirement.specifier.contains(pin.version, prereleases=True):
            problems.append(f"requirements/{lock}: {wanted_by} requires {wanted}, the lock pins {pin.version}")
        node = (name, frozenset(requirement.extras))
        if node in seen:
            continue
        seen.add(node)
        extras = sorted(requirement.extras) or [""]
        for text in requires(name, pin.version) or []:
            dependency = Requirement(text)
            if dependency.marker and not any(dependency.marker.evaluate({**environment, "extra": e}) for e in extras):
                continue
            asked = f"{name}[{','.join(sorted(requirement.extras))}]" if requirement.extras else name
            queue.append((dependency, asked))
    return problems


# Options of pip install/wheel that take a value (the value is not a package).
VALUE_OPTIONS = {
    "-r",
    "--requirement",
    "-c",
    "--constraint",
    "-w",
    "--wheel-dir",
    "-t",
    "--target",
    "-i",
    "--index-url",
    "--extra-index-url",
    "-f",
    "--find-links",
    "--prefix",
    "--root",
    "--python",  # uv's
}


def pip_commands(text: str) -> list[str]:
    """Every `pip install|wheel` and `uv pip install|sync` in a Makefile or Dockerfile, in order, up to its shell
    separator (comments left out); uv's start with `uv`."""
    uncommented = "\n".join(re.sub(r"(^|\s)#.*", "", line) for line in text.splitlines())
    joined = uncommented.replace("\\\n", " ")
    commands = []
    for match in re.finditer(r"(\S+\s+)?\bpip3?\s+(?:install|wheel|sync)\b[^;&|\n]*", joined):
        runner = (match.group(1) or "").strip()
        command = match.group(0)[len(match.group(1) or "") :].strip()
        commands.append(f"uv {command}" if re.search(r"(^|/)uv$|\$\(UV\)$|/bin/uv$", runner) else command)
    return commands


def command_problem(command: str, allowed_locks: tuple[str, ...]) -> tuple[str | None, list[str]]:
    """(what is wrong with one install command, or None; the locks it installs with hashes)."""
    uv = command.startswith("uv ")
    verb = command.split()[2 if uv else 1]  # install, sync or wheel
    tokens = [t.strip("\"'") for t in command.split()[3 if uv else 2 :]]
    locks, targets, flags = [], [], set()
    i = 0
    while i < len(tokens):
        token = tokens[i]
        if token in ("-r", "--requirement") and i + 1 < len(tokens):
            locks.append(tokens[i + 1])
            i += 2
            continue
        if token in VALUE_OPTIONS:
            i += 2
            continue
        if token == "-e" and i + 1 < len(tokens):
            targets.append(tokens[i + 1])
            i += 2
            continue
        if token.startswith("-"):
            flags.add(token)
        else:
            targets.append(token)
        i += 1
    if uv and verb in ("install", "sync") and "--compile-bytecode" not in flags:
        return (
            "installs without --compile-bytecode: uv does not compile by default (pip does), and where "
            "PYTHONDONTWRITEBYTECODE is set every process would compile its packages' source again",
            [],
        )
    if uv and verb == "sync":
        locks, targets = locks + targets, []  # `uv pip sync LOCK`: the venv becomes exactly the lock
    if locks:
        if "--require-hashes" not in flags or targets:
            return "installs from a lock without --require-hashes (or names packages beside it)", []
        strays = [lock for lock in locks if Path(lock).name not in allowed_locks]
        if strays:
            return f"installs {strays}, not one of its locks in requirements/ {list(allowed_locks)}", []
        names = [Path(lock).name for lock in locks]
        if not uv and names != [INSTALLER_LOCK]:
            return (
                f"installs {names} with pip, whose hash mode resolves extras against the index: install "
                f"requirements/{INSTALLER_LOCK} first, then every other lock with uv",
                [],
            )
        if not uv and "--no-deps" not in flags:
            return f"installs the installer without --no-deps: requirements/{INSTALLER_LOCK} is one wheel alone", []
        return None, names
    # Not from a lock: only the project itself (a local path or its wheel), with no dependencies, built (if it is
    # built) by the lock's setuptools, since build isolation would fetch one unpinned.
    local = targets and all(t.startswith((".", "/")) for t in targets)
    if not local or "--no-deps" not in flags:
        return "installs packages without --require-hashes from a lock in requirements/", []
    if any(not t.endswith(".whl") for t in targets) and "--no-build-isolation" not in flags:
        return "builds the project in an isolated environment, which pip fills unpinned: add --no-build-isolation", []
    return None, []


def check_installs(where: str, text: str, required_locks: tuple[str, ...]) -> list[str]:
    """Every pip install in one Makefile or Dockerfile is from its locks with --require-hashes, or the project
    alone with --no-deps; and each of its locks is installed so."""
    problems, installed = [], set()
    for command in pip_commands(text):
        if command.startswith("uv ") and INSTALLER_LOCK not in installed:
            problems.append(
                f"{where}: `{command}` runs uv before installing it from requirements/{INSTALLER_LOCK}: the "
                "installer must be pinned too"
            )
        problem, locks = command_problem(command, required_locks)
        if problem:
            problems.append(f"{where}: `{command}` {problem}")
        installed.update(locks)
    for lock in required_locks:
        if lock not in installed:
            problems.append(f"{where}: installs no requirements/{lock} with --require-hashes")
    return problems


def check_dockerignore(where: str, text: str, locks: tuple[str, ...]) -> list[str]:
    lines = text.splitlines()
    return [
        f"{where} must let requirements/{lock} into the build"
        for lock in locks
        if "!requirements/" not in lines and f"!requirements/{lock}" not in lines
    ]


def check_files(
    setup_py: Path = SETUP_PY,
    requirements_dir: Path = REQUIREMENTS_DIR,
    makefile: Path = MAKEFILE,
    images_dir: Path = IMAGES_DIR,
) -> list[str]:
    """The whole check over files (tests pass modified copies)."""
    locks = {
        lock: (requirements_dir / lock).read_text(encoding="utf-8") if (requirements_dir / lock).exists() else None
        for lock in LOCKS
    }
    problems = check_locks(setup_py.read_text(encoding="utf-8"), locks)
    for where, required in INSTALLERS.items():
        path = makefile if where == "Makefile" else images_dir / where.removeprefix("images/")
        problems += check_installs(where, path.read_text(encoding="utf-8"), required)
        if where != "Makefile":
            ignore = path.with_name("Dockerfile.dockerignore")
            problems += check_dockerignore(f"{where}.dockerignore", ignore.read_text(encoding="utf-8"), required)
    return problems


def check_python_lock(docs: list[dict]) -> list[str]:
    """Every Python package installed by `make setup` and the images from a hashed lock holding setup.py's exact
    pins (the rendered documents are not needed)."""
    return check_files()
