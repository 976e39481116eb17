"""Installs a local Flink's two pieces under the state directory: Flink itself (from PyPI) and Beam's Flink job
server (one shaded jar, built with Maven from pom.xml beside this file).

Why Beam 2.62 Java: this machine's Maven mirror has no Beam 2.7x job server. The 2.62 runner built for Flink 1.19
submits to a 1.20 cluster once its Flink client jars are the cluster's own version (1.20.3), pinned in the pom.
Pipelines stay on the Beam 2.77 Python SDK; they reach the job server over the portable job API.

Why one shaded jar: the job server stages its whole classpath with every job (Beam's FlinkJobInvoker detects it;
no pipeline option turns that off), and the JobManager stores each staged jar in its blob server one round trip
at a time, about 80 ms per jar here. As 165 separate jars, submitting a trivial pipeline took 13 s (a prototype
with flink-dist-1.20.3.jar also on the classpath: 46 s); as one shaded jar, the way Beam publishes its own job
server, 2 to 3 s.

Each piece is built in a scratch place and moved to its final name only when complete, so an interrupted install
is never taken for a finished one.
"""

from __future__ import annotations

import shutil
import string
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from localdev.flink.layout import FlinkError, Layout, display
from plumbing.process import log_tail

FLINK_VERSION = "1.20.3"
# Newest Beam Java release whose Flink runner this machine's Maven mirror serves; see the module docstring.
BEAM_JAVA_VERSION = "2.62.0"
BEAM_FLINK_RUNNER = "beam-runners-flink-1.19"
# Every org.apache.flink artifact the 1.19 runner pulls in, pinned to the cluster's version: a 1.19 client fails
# to submit to 1.20 (ClassNotFoundException: RestoreMode) and mixed versions fail in odd places.
FLINK_CLIENT_ARTIFACTS = (
    "flink-annotations",
    "flink-clients",
    "flink-connector-datagen",
    "flink-core",
    "flink-core-api",
    "flink-datastream",
    "flink-datastream-api",
    "flink-file-sink-common",
    "flink-hadoop-fs",
    "flink-java",
    "flink-metrics-core",
    "flink-optimizer",
    "flink-queryable-state-client-java",
    "flink-rpc-akka-loader",
    "flink-rpc-core",
    "flink-runtime",
    "flink-streaming-java",
)
JOB_SERVER_MAIN = "org.apache.beam.runners.flink.FlinkJobServerDriver"
POM_TEMPLATE = Path(__file__).with_name("pom.xml")

Say = Callable[..., None]  # say(message, end="\n"): progress for a person, or nothing


def check_prerequisites() -> None:
    missing = []
    if shutil.which("java") is None:
        missing.append("java (a JDK 11 or 17; Debian: apt-get install openjdk-17-jdk-headless)")
    if shutil.which("mvn") is None:
        missing.append("mvn (Apache Maven 3; Debian: apt-get install maven)")
    if shutil.which("bash") is None:
        missing.append("bash (Flink's start scripts are bash)")
    if missing:
        raise FlinkError("the local Flink needs, on PATH: " + "; ".join(missing))


def jobserver_pom() -> str:
    """A throwaway Maven project that shades Beam's Flink job server, with Flink 1.20.3 clients, into one jar:
    pom.xml with the versions filled in."""
    managed = "\n".join(
        f"      <dependency><groupId>org.apache.flink</groupId><artifactId>{artifact}</artifactId>"
        f"<version>{FLINK_VERSION}</version></dependency>"
        for artifact in FLINK_CLIENT_ARTIFACTS
    )
    return string.Template(POM_TEMPLATE.read_text()).substitute(
        managed_flink_dependencies=managed,
        beam_flink_runner=BEAM_FLINK_RUNNER,
        beam_java_version=BEAM_JAVA_VERSION,
    )


def flink_installed(layout: Layout) -> bool:
    return (layout.flink_home / "lib" / f"flink-dist-{FLINK_VERSION}.jar").exists()


def jobserver_installed(layout: Layout) -> bool:
    pom = layout.jobserver_dir / "pom.xml"
    # The pom names every version: a changed pom (an upgrade) rebuilds the jar.
    return layout.jobserver_jar.exists() and pom.exists() and pom.read_text() == jobserver_pom()


def installed(layout: Layout) -> bool:
    return flink_installed(layout) and jobserver_installed(layout)


def install(layout: Layout, say: Say) -> None:
    """Install Flink and the job server under the state directory; skips what is already there."""
    check_prerequisites()
    layout.logs_dir.mkdir(parents=True, exist_ok=True)
    if not flink_installed(layout):
        _install_flink(layout, say)
    if not jobserver_installed(layout):
        _install_jobserver(layout, say)


def _install_flink(layout: Layout, say: Say) -> None:
    # Into a scratch directory first, so an interrupted install is never mistaken for a complete one.
    partial = layout.state_dir / "dist.partial"
    shutil.rmtree(partial, ignore_errors=True)
    say(f"installing Flink {FLINK_VERSION} from PyPI into {display(layout.dist_dir)} ... ", end="")
    started = time.monotonic()
    # --no-deps: apache-flink pins an old apache-beam; the cluster needs only the jars and scripts inside.
    command = [
        sys.executable,
        "-m",
        "pip",
        "install",
        "--no-deps",
        "--disable-pip-version-check",
        "--target",
        str(partial),
        f"apache-flink=={FLINK_VERSION}",
        f"apache-flink-libraries=={FLINK_VERSION}",
    ]
    _run_logged(layout, command, layout.logs_dir / "install-flink.log", "pip install of Flink", say)
    for script in (partial / "pyflink" / "bin").iterdir():
        script.chmod(0o755)  # the wheel ships the shell scripts without their executable bit
    shutil.rmtree(layout.dist_dir, ignore_errors=True)
    partial.rename(layout.dist_dir)
    say(f"{time.monotonic() - started:.0f} s")


def _install_jobserver(layout: Layout, say: Say) -> None:
    jobserver_dir = layout.jobserver_dir
    jobserver_dir.mkdir(parents=True, exist_ok=True)
    pom = jobserver_dir / "pom.xml"
    pom.write_text(jobserver_pom())
    shutil.rmtree(jobserver_dir / "target", ignore_errors=True)
    say(
        f"building the Beam {BEAM_JAVA_VERSION} Flink job server with Maven into {display(layout.jobserver_jar)} ... ",
        end="",
    )
    started = time.monotonic()
    flink_deps = jobserver_dir / "flink-dependencies.txt"
    # `package` shades the classpath into one jar; `dependency:list` records which Flink versions went in.
    command = [
        "mvn",
        "-B",
        "-q",
        "-f",
        str(pom),
        "package",
        "dependency:list",
        "-DincludeScope=runtime",
        "-DincludeGroupIds=org.apache.flink",
        f"-DoutputFile={flink_deps}",
    ]
    _run_logged(layout, command, layout.logs_dir / "install-jobserver.log", "Maven", say)
    stray = [
        line.strip()
        for line in flink_deps.read_text().splitlines()
        if line.strip().startswith("org.apache.flink:flink-")
        and f":{FLINK_VERSION}:" not in line
        and ":flink-shaded-" not in line
    ]
    if stray:
        raise FlinkError(
            f"the job server would mix Flink versions (the cluster runs {FLINK_VERSION}): "
            f"{', '.join(stray)}; pin them in FLINK_CLIENT_ARTIFACTS"
        )
    # The jar appears under its final name only once complete: an interrupted build is never taken for one.
    (jobserver_dir / "target" / "beam-flink-jobserver.jar").replace(layout.jobserver_jar)
    shutil.rmtree(jobserver_dir / "target", ignore_errors=True)
    say(f"{time.monotonic() - started:.0f} s")


def _run_logged(layout: Layout, command: list[str], log: Path, what: str, say: Say) -> None:
    with open(log, "wb") as out:
        result = subprocess.run(
            command, stdout=out, stderr=subprocess.STDOUT, cwd=layout.state_dir, stdin=subprocess.DEVNULL
        )
    if result.returncode != 0:
        say("failed")
        raise FlinkError(
            f"{what} failed with exit code {result.returncode}: {' '.join(command)}\nlog: {log}\n{log_tail(log, 30)}"
        )
