"""The front door of every command: no traceback reaches a person, a misspelled flag exits 2 naming the nearest one,
`--version` answers, and the environment errors people meet end in one `error:` line, exit 1.

The property test feeds each entry point argv that Hypothesis generates from the flags and subcommands its own
`--help` lists, with hostile values, misspellings and stray words, in process. It stops each command where its work
would begin (argparse has accepted the flags; a pipeline's spec is parsed and validated), so that a generated argv
that happens to be valid never starts a cluster or trains a model. What it may see: that stop, exit 0 (help,
version), exit 2 (usage) or 1 (environment: a default path that is not there) with an `error:` line; anything else
is a traceback, and fails.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import io
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from plumbing import cli

# Every command a person runs (README, Makefile), by module; `python -m MODULE` runs `main` through plumbing.cli.
ENTRY_POINTS = [
    "pipelines.fraud_detection",
    "pipelines.price_suggestion",
    "pipelines.replay",
    "pipelines.worker_pool",
    "deploy",
    "deploy.submit",
    "localdev.demo",
    "localdev.flink",
    "localdev.model_server",
    "localdev.pubsub_emulator",
    "training.train",
    "training.schemas",
    "benchmarks.run",
    "benchmarks.flink",
    "benchmarks.gpu",
    "benchmarks.lifecycle",
    "benchmarks.backfill_worker",
    "benchmarks.ceiling",
    "benchmarks.plain_consumer",
    "benchmarks.tf_serving",
    "pipelines.options_table",
]


def test_the_list_holds_every_command_in_the_project():
    """A new `python -m` command joins the list, and so these tests."""
    root = Path(__file__).resolve().parent.parent
    found = set()
    for path in root.glob("*/**/*.py"):
        relative = path.relative_to(root)
        if relative.parts[0] in ("tests", "build", "models") or relative.parts[0].startswith("."):
            continue
        module = ".".join(relative.with_suffix("").parts)
        if path.name == "__main__.py":
            found.add(module.removesuffix(".__main__"))
        elif re.search(r'^if __name__ == "__main__":', path.read_text(encoding="utf-8"), re.MULTILINE):
            found.add(module)
    assert found == set(ENTRY_POINTS)


class Stopped(Exception):
    """Raised where a command's work would begin: its flags were accepted."""


def main_of(module: str):
    """The command's `main(argv)`, as `python -m module` runs it."""
    if module.startswith("pipelines.") and module.split(".")[1] in ("fraud_detection", "price_suggestion"):
        from pipelines import build

        entry = importlib.import_module(module)
        if module.endswith("fraud_detection"):
            return lambda argv: build.main(
                entry.FRAUD, module, entry.__doc__, [entry.FraudOptions], entry._decorate, argv=argv
            )
        return lambda argv: build.main(entry.PRICE, module, entry.__doc__, argv=argv)
    if module == "deploy":
        module = "deploy.__main__"
    elif module in ("localdev.flink", "benchmarks.flink"):
        module = f"{module}.cli" if module == "localdev.flink" else f"{module}.__main__"
    return functools.partial(cli.run, importlib.import_module(module).main)


def invoke(module: str, argv: list[str]) -> tuple[object, str, str]:
    """(what ended the command: Stopped, or the exit code; stdout; stderr), in process."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main_of(module)(argv)
        except Stopped:
            return Stopped, out.getvalue(), err.getvalue()
        except SystemExit as done:
            return done.code, out.getvalue(), err.getvalue()
    return 0, out.getvalue(), err.getvalue()


@pytest.fixture
def stop_where_work_begins(monkeypatch):
    """argparse accepting a command's flags, or a pipeline about to launch, ends the command here."""
    parse_args = cli.ArgumentParser.parse_args

    def parse_then_stop(self, args=None, namespace=None):
        parse_args(self, args, namespace)
        raise Stopped

    monkeypatch.setattr(cli.ArgumentParser, "parse_args", parse_then_stop)
    from pipelines import build

    monkeypatch.setattr(build, "launch", lambda *args, **kwargs: (_ for _ in ()).throw(Stopped()))


@functools.cache
def vocabulary(module: str) -> tuple[list[str], list[str]]:
    """(the flags, the subcommands) the command's --help lists."""
    code, out, _ = invoke(module, ["--help"])
    assert code == 0, f"{module} --help exited {code}"
    flags = sorted(set(re.findall(r"(?<![\w-])--[a-z][a-z0-9_-]*", out)) - {"--help", "--version"})
    subcommands = sorted({w for group in re.findall(r"\{([a-z0-9_,-]+)\}", out) for w in group.split(",")})
    return flags, subcommands


VALUES = st.one_of(
    st.text(max_size=12),
    st.integers(min_value=-(10**12), max_value=10**12).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(str),
    st.sampled_from(
        [
            "",
            "-1",
            "0",
            "1e309",
            "projects/p/topics/x",
            "projects/demo-project/subscriptions/s",
            "localhost:0",
            "h:99999",
            "/nonexistent/x.jsonl",
            "gs://",
            "=",
            "--",
            "in_process",
            "tf_serving",
            "tfx_bsl",
            "FlinkRunner",
        ]
    ),
)


def misspelled(flag: str, data) -> str:
    i = data.draw(st.integers(min_value=2, max_value=len(flag) - 1))
    return flag[:i] + data.draw(st.sampled_from("aeiosx_")) + flag[i + 1 :]


def tokens(module: str, data) -> list[str]:
    flags, subcommands = vocabulary(module)
    argv = []
    if subcommands and data.draw(st.booleans()):
        argv.append(data.draw(st.sampled_from(subcommands)))
    for _ in range(data.draw(st.integers(min_value=0, max_value=6))):
        kind = data.draw(st.sampled_from(["flag=value", "flag value", "flag", "misspelled", "word"]))
        flag = data.draw(st.sampled_from(flags)) if flags else "--x"
        if kind == "flag=value":
            argv.append(f"{flag}={data.draw(VALUES)}")
        elif kind == "flag value":
            argv += [flag, data.draw(VALUES)]
        elif kind == "flag":
            argv.append(flag)
        elif kind == "misspelled":
            argv.append(f"{misspelled(flag, data)}={data.draw(VALUES)}")
        else:
            argv.append(data.draw(VALUES))
    return argv


@pytest.mark.parametrize("module", ENTRY_POINTS)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_no_argv_makes_an_entry_point_print_a_traceback(stop_where_work_begins, module, data):
    argv = tokens(module, data)
    ended, _, err = invoke(module, argv)
    assert ended in (Stopped, 0, 1, 2), f"{module} {argv}: exit {ended}\n{err}"
    if ended in (1, 2):
        assert err.startswith("error: "), f"{module} {argv}: {err!r}"
    assert "Traceback" not in err


@pytest.mark.parametrize("module", ENTRY_POINTS)
def test_every_entry_point_answers_version(module):
    ended, out, _ = invoke(module, ["--version"])
    assert (ended, out.strip()) == (0, cli.version_line())
    assert re.fullmatch(r"marketplace-inference \d+\.\d+\.\d+", out.strip())


@pytest.mark.parametrize("module", ["pipelines.fraud_detection", "training.train", "deploy", "localdev.demo"])
def test_a_misspelled_flag_exits_2_naming_the_nearest(module):
    flags, _ = vocabulary(module)
    flag = "--max_batch_size" if "--max_batch_size" in flags else flags[len(flags) // 2]
    typo = flag[:-2] + flag[-1] + flag[-2]  # two letters swapped
    ended, _, err = invoke(module, [f"{typo}=10"])
    assert ended == 2
    assert err.splitlines()[0].startswith(f"error: unknown flag {typo} (did you mean {flag}?)")


def test_the_issues_typos_are_refused_not_run_with_defaults():
    ended, _, err = invoke("pipelines.fraud_detection", ["--max_batch_sise=10", "--input_subscriptoin=projects/x"])
    assert ended == 2
    assert err == (
        "error: unknown flag --max_batch_sise (did you mean --max_batch_size?) (see pipelines.fraud_detection --help)\n"
    )


def test_beams_own_flags_and_flinks_java_options_stay_accepted(stop_where_work_begins, tmp_path):
    backfill = [f"--input={tmp_path}/in.jsonl", f"--output={tmp_path}/p", f"--dead_letter_output={tmp_path}/d"]
    beam = ["--runner=DirectRunner", "--direct_num_workers=2", "--experiments=x", "--sdk_worker_parallelism=1"]
    assert invoke("pipelines.fraud_detection", [*backfill, *beam])[0] is Stopped
    flink = [
        "--runner=FlinkRunner",
        "--flink_master=localhost:8081",
        "--parallelism=2",
        "--checkpointing_interval=5000",
    ]
    assert invoke("pipelines.fraud_detection", [*backfill, *flink, "--max_bundle_size", "100"])[0] is Stopped
    # On another runner the Flink runner's options would be ignored: refused.
    ended, _, err = invoke("pipelines.price_suggestion", [*backfill, "--checkpointing_interval=5000"])
    assert ended == 2 and "--checkpointing_interval applies to --runner=FlinkRunner only" in err


# --- environment errors, for real, as a person meets them: one line, exit 1 ---------------------------------------
def run_module(*argv: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", *argv],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
        check=False,
    )


def test_deploy_without_a_cluster_says_so_in_one_line(tmp_path):
    done = run_module("deploy", "status", env={"KUBECONFIG": str(tmp_path / "none"), "HOME": str(tmp_path)})
    assert done.returncode == 1, done.stderr
    assert done.stderr.startswith("error: no Kubernetes cluster to talk to") and "Traceback" not in done.stderr


def test_replaying_a_file_that_is_not_there_says_so_in_one_line(tmp_path):
    done = run_module("pipelines.replay", f"--from_file={tmp_path}/nonexistent/x.jsonl", f"--to_file={tmp_path}/o")
    assert done.returncode == 1, done.stderr
    assert done.stderr.startswith("error: no dead-letter files match") and "Traceback" not in done.stderr


def test_a_project_id_pubsub_refuses_is_a_usage_error_before_anything_starts():
    done = run_module(
        "pipelines.fraud_detection",
        "--input_subscription=projects/p/subscriptions/events",
        "--output_topic=projects/p/topics/predictions",
        "--dead_letter_topic=projects/p/topics/dead-letters",
    )
    assert done.returncode == 2, done.stderr
    assert "a project id is 6 to 63 characters" in done.stderr and "Traceback" not in done.stderr
