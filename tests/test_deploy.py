"""deploy/ and docs/ stay true to the code: compose structure, architecture diagrams."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "deploy" / "compose" / "compose.yaml"
ARCH = ROOT / "docs" / "architecture"


def _compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def test_compose_has_the_seed_stack_with_its_ports():
    services = _compose()["services"]
    expected = {
        "nginx": ["80:80"],
        "api": ["8702:8702"],
        "redis": ["6379:6379"],
        "grpc": ["50051:50051"],
        "envoy": ["8090:8090"],
        "minio": ["9000:9000", "9001:9001"],
        "postgres": ["5432:5432"],
    }
    for name, ports in expected.items():
        assert name in services, name
        assert services[name]["ports"] == ports
    assert "worker" in services
    for name in ("api", "redis", "postgres", "minio"):
        assert "healthcheck" in services[name], f"{name} has no health check"
    volumes = _compose()["volumes"]
    assert {"mpr-var", "pg-data", "minio-data"} <= set(volumes)


def _mpr_invocations(command: list[str]) -> list[list[str]]:
    """Every `mpr ...` command line inside a compose command (plain list or `sh -c` string)."""
    parts = [shlex.split(p) for p in command[2].split("&&")] if command[:2] == ["sh", "-c"] else [command]
    return [p for p in parts if p and p[0] == "mpr"]


def test_compose_commands_are_real_mpr_subcommands_with_real_options():
    from click.testing import CliRunner

    from mpr.cli import cli, load_plugin_commands

    load_plugin_commands()
    services = _compose()["services"]
    seen = set()
    for name, service in services.items():
        command = service.get("command")
        if not command or name in {"redis", "postgres", "minio", "minio-init", "envoy"}:
            continue
        for argv in _mpr_invocations(command):
            sub = argv[1]
            seen.add(sub)
            assert sub in cli.commands, f"service {name}: `mpr {sub}` is not a command"
            # parse the options for real (no execution): unknown flags raise UsageError
            ctx = cli.commands[sub].make_context(sub, argv[2:], resilient_parsing=False)
            assert ctx is not None
    assert {"serve", "worker", "grpc", "migrate"} <= seen
    assert CliRunner().invoke(cli, ["--help"]).exit_code == 0


def test_compose_ports_match_nginx_and_envoy_configs():
    nginx = (ROOT / "deploy" / "nginx" / "mpr.conf").read_text()
    assert "listen 80;" in nginx
    assert "server 127.0.0.1:8702;" in nginx
    assert "server 127.0.0.1:8090;" in nginx
    envoy = yaml.safe_load((ROOT / "deploy" / "envoy" / "envoy.yaml").read_text())
    listeners = envoy["static_resources"]["listeners"]
    assert any(lst["address"]["socket_address"]["port_value"] == 8090 for lst in listeners)
    clusters = envoy["static_resources"]["clusters"]
    ports = {
        ep["endpoint"]["address"]["socket_address"]["port_value"]
        for c in clusters
        for la in c["load_assignment"]["endpoints"]
        for ep in la["lb_endpoints"]
    }
    assert 50051 in ports


def test_env_example_covers_every_compose_variable():
    text = COMPOSE.read_text()
    needed = set(re.findall(r"\$\{(\w+)\}", text))
    example = (ROOT / "deploy" / "compose" / ".env.example").read_text()
    defined = set(re.findall(r"^(\w+)=", example, re.MULTILINE))
    assert needed <= defined, needed - defined


def test_lifecycle_diagram_shows_every_job_state_and_transition():
    from mpr.jobs import TRANSITIONS
    from mpr.models import JobStatus

    dot = (ARCH / "job_lifecycle.dot").read_text()
    for status in JobStatus:
        assert re.search(rf"^\s*{status.value}\s*\[", dot, re.MULTILINE), (
            f"{status.value} missing from job_lifecycle.dot"
        )
    for to, sources in TRANSITIONS.items():
        for src in sources:
            assert re.search(rf"^\s*{src.value}\s*->\s*{to.value}\b", dot, re.MULTILINE), (
                f"{src.value} -> {to.value} missing"
            )


def test_data_model_diagram_shows_every_model_and_field():
    from mpr.models import MODELS

    dot = (ARCH / "data_model.dot").read_text()
    for model in MODELS:
        assert re.search(rf"^\s*{model.__name__}\s*\[", dot, re.MULTILINE), (
            f"{model.__name__} missing from data_model.dot"
        )
        record = (
            re.search(rf"^\s*{model.__name__}\s*\[label=\"(.*?)\"\];", dot, re.MULTILINE | re.DOTALL)
            .group(1)
            .replace("\\l", "\n")
        )
        for field in model._meta.fields_map:
            if field.endswith("_id") and field[:-3] in model._meta.fields_map:
                continue
            if field in {"jobs", "chunks"}:  # reverse relations
                continue
            assert re.search(rf"\b{field}\b", record), f"{model.__name__}.{field} missing from data_model.dot"


@pytest.mark.parametrize("name", ["local", "aws", "gcp", "data_model", "job_lifecycle", "chunker_events"])
def test_architecture_svg_is_rendered_from_its_dot(name: str, tmp_path: Path):
    dot = shutil.which("dot")
    import testkit

    testkit.require("Graphviz dot", dot is not None, "apt-get install graphviz")
    svg = ARCH / f"{name}.svg"
    assert svg.exists(), f"run `make docs` to render {name}.svg"
    fresh = tmp_path / f"{name}.svg"
    subprocess.run([dot, "-Tsvg", str(ARCH / f"{name}.dot"), "-o", str(fresh)], check=True)
    assert _titles(svg.read_text()) == _titles(fresh.read_text()), f"{name}.svg is stale: run `make docs`"


def _titles(svg_text: str) -> list[str]:
    return sorted(re.findall(r"<title>(.*?)</title>", svg_text))


def test_compose_rewrites_of_the_one_machine_configs_still_match_them():
    """compose points nginx/envoy at service names with sed; each pattern must exist in its config."""
    services = _compose()["services"]
    configs = {
        "nginx": (ROOT / "deploy" / "nginx" / "mpr.conf").read_text(),
        "envoy": (ROOT / "deploy" / "envoy" / "envoy.yaml").read_text(),
    }
    for name, text in configs.items():
        script = services[name]["command"][2]
        patterns = re.findall(r"s/([^/]+)/([^/]+)/", script)
        assert patterns, f"{name}: no rewrite found"
        for old, _new in patterns:
            assert old in text, f"{name}: compose rewrites {old!r}, which is no longer in the config"
