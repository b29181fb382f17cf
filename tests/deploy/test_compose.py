"""deploy/compose/compose.yaml: valid by the Compose Specification's own schema, and
wired as the README says (two replicas, one store, nginx the only trusted proxy).

No registry is reachable here, so the stack is not started; what the containers do is
proven by the image tests (tests/deploy/test_container.py, test_replicas.py).
"""

from __future__ import annotations

import copy
import hashlib
import ipaddress
import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from tests.deploy.readme import blocks
from triggergate.cli import drain_seconds
from triggergate.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
FOLDER = ROOT / "deploy" / "compose"
SCHEMA = Path(__file__).parent / "data" / "compose-spec.json"
SCHEMA_SHA256 = "1f91e091f16b2dd50ab8860e02bb391d22df553d91c145eacedb1b6eff9c3f0e"  # data/README.md
NGINX_UPSTREAM = "server 127.0.0.1:8080;"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((FOLDER / "compose.yaml").read_text(encoding="utf-8"))
    return doc


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft7Validator:
    raw = SCHEMA.read_bytes()
    assert hashlib.sha256(raw).hexdigest() == SCHEMA_SHA256, "the vendored schema was changed"
    schema = json.loads(raw)
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


def _errors(validator: jsonschema.Draft7Validator, doc: dict[str, Any]) -> list[str]:
    return sorted(f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(doc))


def test_the_compose_file_is_valid_by_the_compose_specification_schema(
    validator: jsonschema.Draft7Validator, compose: dict[str, Any]
) -> None:
    """compose.yaml passes the published JSON schema (draft-07) without one error."""
    assert _errors(validator, compose) == []


def test_the_schema_check_refuses_a_file_the_specification_forbids(
    validator: jsonschema.Draft7Validator, compose: dict[str, Any]
) -> None:
    """The same file with a list as restart policy and an unknown service key fails: the
    validation is real, not a schema that accepts anything."""
    broken = copy.deepcopy(compose)
    broken["services"]["redis"]["restart"] = ["always"]
    broken["services"]["nginx"]["replicas"] = 2
    errors = _errors(validator, broken)
    assert any("restart" in e for e in errors) and any("replicas" in e for e in errors), errors


def test_two_replicas_share_the_store_and_trust_only_nginx(compose: dict[str, Any]) -> None:
    """Two replicas of the built image on the Redis service by default; the one trusted
    proxy is nginx's fixed address (a /32 inside the replicas' network); only nginx is
    published; the stores sit on an internal network."""
    services = compose["services"]
    gate, nginx = services["triggergate"], services["nginx"]
    assert gate["deploy"]["replicas"] == 2
    assert (
        FOLDER / gate["build"]["context"] / gate["build"]["dockerfile"]
    ).resolve() == ROOT / "Containerfile"
    env = gate["environment"]
    assert env["TRIGGERGATE_STORE"] == "${TRIGGERGATE_STORE:-redis://redis:6379/0}"
    nginx_ip = nginx["networks"]["app"]["ipv4_address"]
    assert env["TRIGGERGATE_TRUSTED_PROXIES"] == f"{nginx_ip}/32"
    subnet = compose["networks"]["app"]["ipam"]["config"][0]["subnet"]
    assert ipaddress.ip_address(nginx_ip) in ipaddress.ip_network(subnet)
    assert [name for name, svc in services.items() if "ports" in svc] == ["nginx"]
    assert compose["networks"]["store"]["internal"] is True
    for store in ("redis", "postgres"):
        assert services[store]["networks"] == ["store"] and "store" in gate["networks"]


def test_nginx_runs_the_shipped_config_pointed_at_the_replicas(compose: dict[str, Any]) -> None:
    """nginx mounts deploy/nginx/triggergate.conf and only swaps its upstream line for the
    replicas' service name and port (the image's 8080)."""
    nginx = compose["services"]["nginx"]
    [mount] = nginx["volumes"]
    source, target, _ = mount.split(":")
    assert (FOLDER / source).resolve() == ROOT / "deploy" / "nginx" / "triggergate.conf"
    shipped = (FOLDER / source).read_text(encoding="utf-8")
    assert shipped.count(NGINX_UPSTREAM) == 1
    script = nginx["command"][-1]
    assert f"s/{NGINX_UPSTREAM}/server triggergate:8080;/" in script and target in script
    assert "exec nginx -g 'daemon off;'" in script


def test_every_service_is_health_checked_restarted_and_keeps_its_data(compose: dict[str, Any]) -> None:
    """Health checks and restart policies everywhere; Redis (append-only) and PostgreSQL
    on volumes; the replicas check /healthz exactly as the image's HEALTHCHECK does."""
    services = compose["services"]
    for name, svc in services.items():
        assert svc["healthcheck"]["test"][0] == "CMD", name
        assert svc["restart"] == "unless-stopped", name
    assert "redis-data:/data" in services["redis"]["volumes"]
    assert "--appendonly" in services["redis"]["command"]
    assert "postgres-data:/var/lib/postgresql/data" in services["postgres"]["volumes"]
    image_check = re.search(
        r"^HEALTHCHECK .*?CMD (\[[^\n]*\])$", (ROOT / "Containerfile").read_text(), re.M | re.S
    )
    assert image_check and services["triggergate"]["healthcheck"]["test"] == [
        "CMD",
        *json.loads(image_check[1]),
    ]


def test_the_replicas_stop_grace_outlasts_the_servers_drain(compose: dict[str, Any]) -> None:
    """stop_grace_period is longer than serve's drain with the default timeouts, so no
    request in flight is killed when compose stops or recreates a replica."""
    gate = compose["services"]["triggergate"]
    assert gate["stop_signal"] == "SIGTERM"
    grace = re.fullmatch(r"(\d+)s", gate["stop_grace_period"])
    assert grace and int(grace[1]) > drain_seconds(Settings())


def test_the_readme_compose_commands_use_this_files_profiles_and_secrets(compose: dict[str, Any]) -> None:
    """The README's compose blocks work in deploy/compose, create exactly the secret files
    the file names, use its two profiles, and point the PostgreSQL store at its service."""
    commands = [c for block in blocks("Compose: two replicas, one store, nginx") for c in block]
    assert commands[0].argv == ("cd", "deploy/compose")
    created = next(re.search(r"for name in ([^;]+);", c.text) for c in commands if c.program == "for")
    assert created and {f"./secrets/{n}" for n in created[1].split()} == {
        s["file"] for s in compose["secrets"].values()
    }
    profiles = {
        w for c in commands if c.program == "docker compose" for w in re.findall(r"--profile (\w+)", c.text)
    }
    assert profiles == {p for svc in compose["services"].values() for p in svc.get("profiles", [])}
    pg = compose["services"]["postgres"]["environment"]
    store = next(w for c in commands for w in c.argv if w.startswith("TRIGGERGATE_STORE="))
    assert store == f"TRIGGERGATE_STORE=postgresql://{pg['POSTGRES_USER']}@postgres:5432/{pg['POSTGRES_DB']}"
