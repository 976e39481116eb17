"""The Python lock check (deploy/validation/python_lock.py): the repository's setup.py, locks, Makefile and
Dockerfiles pass it, and each defect it exists for, reintroduced in a copy, is reported.

Unit-level: it reads files and runs no outside tool.
"""

from __future__ import annotations

import re
import shutil

import pytest

from deploy.validation import python_lock

IMAGES = ("worker", "launcher")
SETUP = python_lock.setup_requirements(python_lock.SETUP_PY.read_text())
# numpy: a runtime requirement each test breaks in its own way, at the version setup.py pins.
NUMPY = dict(python_lock.exact_pin(r) for r in SETUP["install_requires"])["numpy"]
PYTEST = dict(python_lock.exact_pin(r) for r in SETUP["test"])["pytest"]


@pytest.fixture
def repo(tmp_path):
    """A copy of what the check reads: setup.py, requirements/, the Makefile and the two images' files."""
    shutil.copy(python_lock.SETUP_PY, tmp_path / "setup.py")
    shutil.copy(python_lock.MAKEFILE, tmp_path / "Makefile")
    shutil.copytree(python_lock.REQUIREMENTS_DIR, tmp_path / "requirements")
    for image in IMAGES:
        shutil.copytree(python_lock.IMAGES_DIR / image, tmp_path / "images" / image)
    return tmp_path


def problems(repo) -> list[str]:
    return python_lock.check_files(
        setup_py=repo / "setup.py",
        requirements_dir=repo / "requirements",
        makefile=repo / "Makefile",
        images_dir=repo / "images",
    )


def edit(path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{path} no longer holds {old!r}: update this test"
    path.write_text(text.replace(old, new))


def assert_reported(found: list[str], expected: str) -> None:
    assert any(expected in p for p in found), f"expected a problem containing {expected!r}, got {found}"


def test_the_repository_passes():
    assert python_lock.check_files() == []


def test_the_copy_passes(repo):
    assert problems(repo) == []


def test_setup_py_requirements_are_read_as_setup_receives_them():
    assert SETUP["install_requires"][0] == "apache-beam[gcp]==2.77.0"  # an f-string
    assert "gpu" in SETUP and not any(r.startswith("tensorflow[") for r in SETUP["dev"])


def test_a_lock_entry_without_a_hash_is_caught(repo):
    lock = repo / "requirements" / "runtime.txt"
    lock.write_text(re.sub(r"(?m)^(numpy==[\d.]+) \\\n(    --hash=\S+( \\)?\n)+", r"\1\n", lock.read_text()))
    assert_reported(problems(repo), f"requirements/runtime.txt: numpy=={NUMPY} has no --hash")


def test_a_lock_entry_that_is_not_an_exact_pin_is_caught(repo):
    edit(repo / "requirements" / "dev.txt", f"pytest=={PYTEST} \\", "pytest>=9 \\")
    found = problems(repo)
    assert_reported(found, "requirements/dev.txt: 'pytest>=9' is not an exact pin")
    assert_reported(found, "requirements/dev.txt is out of date with setup.py: it lacks pytest")


def test_a_range_in_setup_py_is_caught(repo):
    edit(repo / "setup.py", f'"numpy=={NUMPY}"', '"numpy>=1.26,<3"')
    assert_reported(problems(repo), "setup.py: 'numpy>=1.26,<3' (install_requires) is not an exact pin")


def test_a_range_in_an_extra_is_caught(repo):
    edit(repo / "setup.py", f'"pytest=={PYTEST}"', '"pytest>=8.3,<10"')
    assert_reported(problems(repo), "setup.py: 'pytest>=8.3,<10' (test) is not an exact pin")


def test_setup_py_disagreeing_with_the_lock_is_caught(repo):
    edit(repo / "setup.py", f'"numpy=={NUMPY}"', '"numpy==1.0.0"')
    found = problems(repo)
    for lock in ("dev.txt", "runtime.txt", "worker-gpu.txt"):
        assert_reported(found, f"requirements/{lock} pins numpy {NUMPY}, setup.py 1.0.0: run make lock")


def test_a_lock_out_of_date_with_a_new_dependency_is_caught(repo):
    edit(repo / "setup.py", f'    "numpy=={NUMPY}",\n', f'    "numpy=={NUMPY}",\n    "tqdm==4.67.1",\n')
    found = problems(repo)
    for lock in ("dev.txt", "runtime.txt", "worker-gpu.txt"):
        assert_reported(found, f"requirements/{lock} is out of date with setup.py: it lacks tqdm (run make lock)")


def test_a_missing_lock_is_caught(repo):
    (repo / "requirements" / "worker-gpu.txt").unlink()
    assert_reported(problems(repo), "requirements/worker-gpu.txt is missing: run make lock")


def test_an_image_lock_drifting_from_the_dev_lock_is_caught(repo):
    edit(repo / "requirements" / "runtime.txt", f"\nnumpy=={NUMPY} ", "\nnumpy==1.0.0 ")
    found = problems(repo)
    assert_reported(found, f"requirements/runtime.txt pins numpy 1.0.0, the dev lock (what the tests ran) {NUMPY}")


def test_make_setup_installing_without_the_hashed_lock_is_caught(repo):
    edit(
        repo / "Makefile",
        "$(UV) pip sync --quiet --compile-bytecode --python $(PY) --require-hashes requirements/dev.txt",
        "$(PY) -m pip install --quiet --upgrade pip setuptools wheel\n\t$(PY) -m pip install --quiet -e '.[dev]'",
    )
    found = problems(repo)
    assert_reported(found, "Makefile: `pip install --quiet --upgrade pip setuptools wheel` installs packages without")
    assert_reported(found, "Makefile: `pip install --quiet -e '.[dev]'` installs packages without")
    assert_reported(found, "Makefile: installs no requirements/dev.txt with --require-hashes")


def test_make_setup_reading_the_lock_without_require_hashes_is_caught(repo):
    edit(repo / "Makefile", "--require-hashes requirements/dev.txt", "requirements/dev.txt")
    assert_reported(
        problems(repo),
        "Makefile: `uv pip sync --quiet --compile-bytecode --python $(PY) requirements/dev.txt` installs from a lock without",
    )


def test_building_the_project_in_an_isolated_environment_is_caught(repo):
    edit(repo / "Makefile", "--no-deps --no-build-isolation -e .", "--no-deps -e .")
    assert_reported(problems(repo), "in an isolated environment, which pip fills unpinned")


def test_an_image_installing_its_dependencies_from_the_wheel_is_caught(repo):
    dockerfile = repo / "images" / "launcher" / "Dockerfile"
    edit(
        dockerfile,
        "uv pip install --system --no-cache --compile-bytecode --no-deps /wheels/*.whl",
        "uv pip install --system --compile-bytecode /wheels/*.whl",
    )
    edit(dockerfile, "pip wheel --no-cache-dir --no-deps --no-build-isolation", "pip wheel --no-cache-dir --no-deps")
    found = problems(repo)
    assert_reported(
        found,
        "images/launcher/Dockerfile: `uv pip install --system --compile-bytecode /wheels/*.whl` installs packages",
    )
    assert_reported(found, "images/launcher/Dockerfile: `pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .`")


def test_the_gpu_variant_installing_cuda_unhashed_is_caught(repo):
    edit(
        repo / "images" / "worker" / "Dockerfile",
        "uv pip install --system --no-cache --compile-bytecode --require-hashes -r /wheels/worker-gpu.txt",
        'uv pip install --system --no-cache --compile-bytecode "tensorflow[and-cuda]==${TF_VERSION}"',
    )
    found = problems(repo)
    assert_reported(
        found,
        'images/worker/Dockerfile: `uv pip install --system --no-cache --compile-bytecode "tensorflow[and-cuda]==${TF_VERSION}"`',
    )
    assert_reported(found, "images/worker/Dockerfile: installs no requirements/worker-gpu.txt with --require-hashes")


def test_an_image_installing_a_lock_that_is_not_its_own_is_caught(repo):
    edit(repo / "images" / "launcher" / "Dockerfile", "-r /wheels/runtime.txt", "-r /wheels/dev.txt")
    assert_reported(problems(repo), "installs ['/wheels/dev.txt'], not one of its locks")


def test_a_build_context_without_the_locks_is_caught(repo):
    edit(repo / "images" / "worker" / "Dockerfile.dockerignore", "!requirements/\n", "")
    assert_reported(problems(repo), "images/worker/Dockerfile.dockerignore must let requirements/runtime.txt into")


def test_the_gpu_worker_gets_tensorflows_cuda_libraries_from_its_lock_at_setup_pys_version():
    tensorflow = dict(python_lock.exact_pin(r) for r in SETUP["install_requires"])["tensorflow"]
    assert SETUP["gpu"] == [f"tensorflow[and-cuda]=={tensorflow}"]
    gpu, _ = python_lock.parse_lock((python_lock.REQUIREMENTS_DIR / "worker-gpu.txt").read_text())
    cpu, _ = python_lock.parse_lock((python_lock.REQUIREMENTS_DIR / "runtime.txt").read_text())
    assert gpu["tensorflow"].version == tensorflow and "nvidia-cudnn-cu12" in gpu and "nvidia-cudnn-cu12" not in cpu
    worker = (python_lock.IMAGES_DIR / "worker" / "Dockerfile").read_text()
    assert re.search(r'if \[ "\$VARIANT" = "cpu" \]; then uv pip install [^;]*-r /wheels/runtime\.txt;', worker)
    assert re.search(r'elif \[ "\$VARIANT" = "gpu" \]; then uv pip install [^;]*-r /wheels/worker-gpu\.txt;', worker)


# --- the installer ---------------------------------------------------------------------------------------------


def test_installing_a_lock_with_the_pip_python_bundles_is_caught(repo):
    """What stopped a fresh clone on 2026-12-07: the venv's pip 23.2.1, in hash mode, resolved google-auth[pyopenssl]
    against the index and refused the lock once google-auth 2.63.1 was out."""
    edit(
        repo / "Makefile",
        "$(UV) pip sync --quiet --compile-bytecode --python $(PY) --require-hashes requirements/dev.txt",
        "$(PY) -m pip install --quiet --require-hashes -r requirements/dev.txt",
    )
    assert_reported(problems(repo), "installs ['dev.txt'] with pip, whose hash mode resolves extras against the index")


@pytest.mark.parametrize("where", ["Makefile", "images/launcher/Dockerfile"])
def test_an_installer_that_is_not_installed_from_its_own_lock_first_is_caught(repo, where):
    path = repo / where
    text = path.read_text()
    line = next(line for line in text.splitlines() if "-r requirements/installer.txt" in line)
    path.write_text(text.replace(line, line.replace("--require-hashes --no-deps -r requirements/installer.txt", "uv")))
    assert_reported(problems(repo), f"{where}: `uv pip install --")
    assert_reported(problems(repo), "runs uv before installing it from requirements/installer.txt")


def test_an_unpinned_or_unhashed_installer_lock_is_caught(repo):
    lock = repo / "requirements" / "installer.txt"
    lock.write_text(re.sub(r"uv==[^ ]+ \\\n(    --hash=\S+ \\\n)*    --hash=\S+", "uv", lock.read_text()))
    assert_reported(problems(repo), "requirements/installer.txt: 'uv' is not an exact pin")


def remove_entry(lock_text: str, name: str) -> str:
    """The lock without `name`'s entry (its pin, hashes and `via` comments)."""
    entry = re.compile(rf"^{re.escape(name)}==.*?(?=^[a-z0-9])", re.MULTILINE | re.DOTALL | re.IGNORECASE)
    assert entry.search(lock_text), f"{name} is not in the lock: update this test"
    return entry.sub("", lock_text, count=1)


def test_a_lock_missing_what_a_locked_package_asks_for_through_an_extra_is_caught(repo):
    """google-cloud-bigquery asks for google-auth[pyopenssl], and that extra asks for cryptography: a lock without it
    cannot be installed whole, whatever the installer."""
    dev = repo / "requirements" / "dev.txt"
    dev.write_text(remove_entry(dev.read_text(), "cryptography"))
    assert_reported(problems(repo), "requirements/dev.txt: google-auth[pyopenssl] requires cryptography")


def test_a_lock_pinning_a_version_outside_a_dependents_range_is_caught():
    pins = {"a": python_lock.Pin("1.0", ("h",)), "b": python_lock.Pin("1.0", ("h",))}
    metadata = {"a": ['b[x]>=2; python_version >= "3"'], "b": ['c; extra == "x"']}
    found = python_lock.closure_problems("t.txt", ["a==1.0"], pins, lambda name, _: metadata.get(name))
    assert "requirements/t.txt: a requires b[x]>=2, the lock pins 1.0" in found
    assert "requirements/t.txt: b[x] requires c, which the lock lacks" in found


def test_an_install_that_leaves_the_bytecode_uncompiled_is_caught(repo):
    """uv compiles nothing unless asked (pip compiles at install): with PYTHONDONTWRITEBYTECODE, as on these machines
    and in the images, every process then compiled TensorFlow's source again, 8.6 s each."""
    edit(repo / "Makefile", "pip sync --quiet --compile-bytecode", "pip sync --quiet")
    assert_reported(
        problems(repo),
        "Makefile: `uv pip sync --quiet --python $(PY) --require-hashes requirements/dev.txt` installs without --compile-bytecode",
    )
