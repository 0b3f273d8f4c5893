"""The image build file agrees with the package and with the chart that runs it."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml

from deploy.chart import CHART, REPO, render, workloads

DOCKERFILE = REPO / "deploy" / "images" / "Dockerfile"
DOCKERIGNORE = REPO / "deploy" / "images" / "Dockerfile.dockerignore"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def test_entry_point_is_the_package_script() -> None:
    entrypoints = [rest for word, rest in instructions() if word == "ENTRYPOINT"]
    assert entrypoints == ['["kubenpu"]']
    assert "kubenpu" in pyproject()["project"]["scripts"]


def test_runtime_stage_is_non_root_with_the_charts_uid() -> None:
    steps = instructions()
    users = [rest for word, rest in steps if word == "USER"]
    assert users, "the image must not run as root by default"
    uid, _, gid = users[-1].partition(":")
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert int(uid) == values["podSecurity"]["runAsUser"] != 0
    assert int(gid) == values["podSecurity"]["runAsGroup"]


def test_base_image_satisfies_requires_python() -> None:
    steps = instructions()
    (base,) = [rest for word, rest in steps if word == "ARG" and rest.startswith("PYTHON_IMAGE=")]
    version = re.search(r"python:(\d+)\.(\d+)", base)
    assert version
    minimum = re.search(r">=\s*(\d+)\.(\d+)", pyproject()["project"]["requires-python"])
    assert minimum
    assert tuple(map(int, version.groups())) >= tuple(map(int, minimum.groups()))
    stages = [rest for word, rest in steps if word == "FROM"]
    assert len(stages) == 2, "multi-stage: build the wheel, then install it alone"


def test_build_context_holds_what_the_wheel_needs() -> None:
    patterns = DOCKERIGNORE.read_text().splitlines()
    assert "*" in patterns
    for needed in ("pyproject.toml", "README.md", "src/"):
        assert f"!{needed}" in patterns
    copied = " ".join(rest for word, rest in instructions() if word == "COPY")
    for needed in ("pyproject.toml", "README.md", "src"):
        assert needed in copied


def test_chart_version_follows_the_package() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["appVersion"] == pyproject()["project"]["version"]


def test_every_command_the_chart_runs_exists_in_the_image() -> None:
    """`kubenpu <sub-command>` or `python3 -m <module>` that the package provides.

    python3, never python: the dev cluster's image is Debian's python3, which installs no
    `python`; the python:3.x images of the Dockerfile have both."""
    from kubenpu.cli.main import COMMANDS

    src = REPO / "src"
    for workload in workloads(render()):
        (container,) = workload["spec"]["template"]["spec"]["containers"]
        command = container["command"]
        if command[0] == "kubenpu":
            assert command[1] in COMMANDS, command
        elif command[0] == "python3":
            assert command[1] == "-m"
            module = src / Path(*command[2].split("."))
            source = module.with_suffix(".py").read_text()
            assert '__name__ == "__main__"' in source, command
        else:
            assert command[0] == "kube-scheduler", command


def cli_options(sub_command: str) -> set[str]:
    """Every option name (``--x``) the ``kubenpu`` sub-command accepts."""
    import typer

    from kubenpu.cli.main import build_app

    group = typer.main.get_command(build_app(sub_command))
    command = group.commands[sub_command]  # type: ignore[attr-defined]
    return {o for p in command.params for o in (*p.opts, *p.secondary_opts)}


def test_every_flag_the_chart_passes_is_one_the_command_accepts() -> None:
    variants = [
        {},
        {"extender": {"policy": "fgd", "pathPrefix": "/scheduler"}},
        {"extender": {"tls": {"enabled": True, "secretName": "extender-tls"}}},
    ]
    by_module = {"kubenpu.cli.device_plugin": "device-plugin"}
    seen = set()
    for values in variants:
        for workload in workloads(render(values)):
            (container,) = workload["spec"]["template"]["spec"]["containers"]
            command = container["command"]
            if command[0] == "kube-scheduler":
                continue
            sub = command[1] if command[0] == "kubenpu" else by_module[command[2]]
            accepted = cli_options(sub)
            for arg in container.get("args", []):
                flag = arg.split("=", 1)[0]
                assert flag in accepted, f"kubenpu {sub} has no {flag}"
                seen.add((sub, flag))
    assert ("scheduler", "--tls-cert") in seen and ("scheduler", "--url-prefix") in seen
    assert ("webhook", "--tls-cert-file") in seen
