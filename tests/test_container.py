"""The container recipe of ``vistrain serve`` (``Dockerfile``, ``docs/deploy/compose.yaml``),
checked without a container runtime: the Dockerfile's instructions are parsed, the ``vistrain
serve`` command it runs is parsed by the real CLI parser, and compose must run the same command
on the same port.
"""
from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest
import yaml

from vistrain.cli.main import build_parser

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile"
COMPOSE = ROOT / "docs" / "deploy" / "compose.yaml"


def instructions(path: Path) -> list[tuple[str, str]]:
    """``(INSTRUCTION, arguments)`` of a Dockerfile: comments dropped, continuations joined."""
    out, pending = [], ""
    for line in path.read_text().splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        pending += line.rstrip()
        if pending.endswith("\\"):
            pending = pending[:-1] + " "
            continue
        word, _, rest = pending.strip().partition(" ")
        out.append((word.upper(), rest.strip()))
        pending = ""
    assert not pending, "a continuation line ends the file"
    return out


def exec_form(args: str) -> list[str]:
    """The JSON (exec) form of CMD / HEALTHCHECK CMD: a shell form would run under /bin/sh."""
    value = json.loads(args)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), args
    return value


@pytest.fixture(scope="module")
def dockerfile() -> list[tuple[str, str]]:
    return instructions(DOCKERFILE)


def only(ins, name: str) -> str:
    found = [args for word, args in ins if word == name]
    assert len(found) == 1, f"{name}: {found}"
    return found[0]


def serve_args(cmd: list[str]):
    """``vistrain serve ...`` parsed by the CLI's own parser (SystemExit for an unknown flag)."""
    assert cmd[:2] == ["vistrain", "serve"], cmd
    return build_parser("serve").parse_args(cmd[1:])


def test_base_install_and_user(dockerfile):
    base = only(dockerfile, "FROM")
    assert base.startswith("python:3.") and base.endswith("-slim")
    installs = [args for word, args in dockerfile if word == "RUN" and "pip install" in args]
    assert len(installs) == 1 and '".[serve]"' in installs[0]  # the ONNX-only serving extra
    users = [i for i, (word, _) in enumerate(dockerfile) if word == "USER"]
    assert users and dockerfile[users[-1]][1] not in ("root", "0", "0:0")
    runs = [i for i, (word, _) in enumerate(dockerfile) if word == "RUN"]
    assert max(runs) < users[-1]  # nothing runs as root after the switch
    copied = [args.split()[0] for word, args in dockerfile if word == "COPY"]
    assert copied == ["pyproject.toml", "vistrain"]
    assert all((ROOT / name).exists() for name in ("pyproject.toml", "README.md", "vistrain"))


def test_cmd_is_a_real_serve_command_and_healthcheck_hits_healthz(dockerfile):
    cmd = exec_form(only(dockerfile, "CMD"))
    args = serve_args(cmd)
    assert (args.run_dir, args.host, args.engine) == ("/model", "0.0.0.0", "onnxruntime")
    assert only(dockerfile, "EXPOSE") == str(args.port) == "8000"
    options, _, check = only(dockerfile, "HEALTHCHECK").partition(" CMD ")
    assert "--interval=" in options and "--timeout=" in options
    probe = exec_form(check)
    assert probe[:2] == ["python", "-c"] and "curl" not in check
    assert f"http://127.0.0.1:{args.port}/healthz" in probe[2]
    compile(probe[2], "healthcheck", "exec")  # the one-liner is valid Python


def test_compose_runs_the_same_command_on_the_same_port(dockerfile):
    doc = yaml.safe_load(COMPOSE.read_text())
    service = doc["services"]["vistrain"]
    assert (COMPOSE.parent / service["build"]["context"] / service["build"]["dockerfile"]).resolve() == DOCKERFILE
    cmd = exec_form(only(dockerfile, "CMD"))
    assert service["command"] == cmd
    port = str(serve_args(service["command"]).port)
    assert [p.rsplit(":", 1)[1] for p in service["ports"]] == [port]
    assert [v.split(":")[1] for v in service["volumes"]] == ["/model"]
    assert "VISTRAIN_TOKEN" in service["environment"]
    assert service["healthcheck"]["test"] == ["CMD", *exec_form(only(dockerfile, "HEALTHCHECK").partition(" CMD ")[2])]


def test_docs_show_the_build_and_run_commands():
    text = (ROOT / "docs" / "serving.md").read_text()
    assert "docker build -t vistrain-serve ." in text and "docs/deploy/compose.yaml" in text
    assert "pip install '.[serve]'" in text or 'pip install ".[serve]"' in text
    for line in text.splitlines():  # every `vistrain serve` line shown parses
        if line.strip().startswith("vistrain serve "):
            serve_args(shlex.split(line.strip().split(" #")[0]))
