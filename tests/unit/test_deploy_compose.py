"""The compose stack and the image, checked without Docker: the Compose Specification's JSON schema,
every worker command against the real CLI, every setting against Settings, and hadolint on the Dockerfile."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import click
import jsonschema
import pytest
import typer
import yaml

from pipeline.cli import app
from pipeline.settings import ROLES, Settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
OURS = {name: s for name, s in SERVICES.items() if s.get("image") == "evalstream:local"}
SETTINGS = {f"EVALSTREAM_{name.upper()}" for name in Settings.model_fields}
# Read by the judge client and the SDK, not by the pipeline's Settings.
OTHER_KNOWN = re.compile(r"^EVALSTREAM_(JUDGE_|SDK_|SANDBOX_ENV_ALLOW$)")


def test_the_compose_file_follows_the_compose_specification() -> None:
    schema = json.loads((ROOT / "deploy" / "schemas" / "compose-spec.json").read_text())
    errors = sorted(jsonschema.Draft7Validator(schema).iter_errors(COMPOSE), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{'/'.join(map(str, e.path))}: {e.message}" for e in errors)


def _parse(args: list[str]) -> None:
    """Parse a command line the way `evalstream` would, without running it: unknown options fail."""
    command: click.Command = typer.main.get_command(app)
    ctx = command.make_context("evalstream", list(args), resilient_parsing=False)
    while isinstance(command, click.Group) and ctx.protected_args:
        name, *rest = [*ctx.protected_args, *ctx.args]
        sub = command.get_command(ctx, name)
        assert sub is not None, f"no command {name!r} in {args}"
        command, ctx = sub, sub.make_context(name, rest, parent=ctx)


@pytest.mark.parametrize("service", sorted(OURS))
def test_every_worker_command_is_one_the_cli_accepts(service: str) -> None:
    _parse(OURS[service]["command"])


def test_each_role_has_its_service_and_exactly_one_sink() -> None:
    roles: dict[str, list[str]] = {}
    sinks = []
    for name, service in OURS.items():
        command = service["command"]
        if command[0] != "worker":
            continue
        if "--sink" in command:
            sinks.append(name)
        for role in filter(None, command[command.index("--roles") + 1].split(",")):
            roles.setdefault(role, []).append(name)
    assert sorted(roles) == sorted(ROLES) and all(len(v) == 1 for v in roles.values()), roles
    assert sinks == ["sink"]
    assert OURS["scorer"]["deploy"]["replicas"] >= 2
    for name, service in OURS.items():  # the topics job runs first, and everything waits for it
        if name != "topics":
            assert service["depends_on"]["topics"]["condition"] == "service_completed_successfully"


def test_every_evalstream_variable_is_a_real_setting() -> None:
    named = set()
    for service in SERVICES.values():
        named |= {k for k in service.get("environment", {}) if k.startswith("EVALSTREAM_")}
    env_example = (ROOT / "deploy" / "env.example").read_text()
    named |= set(re.findall(r"^#?\s*(EVALSTREAM_[A-Z0-9_]+)=", env_example, re.MULTILINE))
    unknown = sorted(n for n in named if n not in SETTINGS and not OTHER_KNOWN.match(n))
    assert not unknown, f"not settings: {unknown}"


def test_secure_by_default() -> None:
    for name, service in SERVICES.items():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} beyond localhost"
        if name != "topics":
            assert "healthcheck" in service, f"{name} has no healthcheck"
    for name, service in OURS.items():
        assert service["read_only"] is True and service["cap_drop"] == ["ALL"], name
    secrets = [line for line in (ROOT / "deploy" / "env.example").read_text().splitlines()
               if re.match(r"^[A-Z_]*(PASSWORD|TOKEN|SECRET)[A-Z_]*=", line)]
    assert secrets and all(line.endswith("CHANGEME") for line in secrets), secrets


def test_the_dockerfile_passes_hadolint_and_runs_as_a_numeric_non_root_user() -> None:
    dockerfile = ROOT / "deploy" / "docker" / "Dockerfile"
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    result = subprocess.run([hadolint, "--no-color", str(dockerfile)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    users = re.findall(r"^USER\s+(\S+)", dockerfile.read_text(), re.MULTILINE)
    assert users and users[-1].split(":")[0].isdigit() and not users[-1].startswith("0")
