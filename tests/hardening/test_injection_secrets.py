"""Hostile parameter values and secret-carrying failures, end to end on a real server."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import httpx
import pytest

from tests.hardening.support import audits, base_env, leaks, pipeline_script, press, serving
from tests.servers.smtp import smtp_server
from tests.servers.webhook import webhook_server

pytestmark = [pytest.mark.slow, pytest.mark.sqlite]

HOSTILE = [
    "$(touch pwned)",
    "`touch pwned`; rm -rf / ; echo",
    "x' ; touch pwned ; '",
    "a\r\nBcc: victim@example.com\r\nSubject: injected\r\n\r\nbody",
    "line1\nline2\u2028\u0085end",
    '"quotes" and \\backslashes\\ and {"json": true}',
    "long-" + "A" * 1000,
]
CONFIG = """
[params.note]
pattern = '^[\\s\\S]{0,1024}$'
[params.tag]
"""
DUMP = """#!/bin/sh
printf '%s' "$TRIGGERGATE_PARAM_NOTE" > "{out}/note-$TRIGGERGATE_RUN_ID"
"""


async def test_hostile_parameters_reach_the_pipeline_only_as_exact_environment_values(
    tmp_path: Path,
) -> None:
    """Shell metacharacters, CR/LF and 1 KB values in an operator-allowed parameter arrive
    byte for byte in TRIGGERGATE_PARAM_NOTE, no shell runs them, e-mail alerts keep exactly
    their headers and recipients, webhook alerts stay valid JSON; the default pattern
    refuses them with 400."""
    (tmp_path / "gate.toml").write_text(CONFIG)
    with smtp_server() as mail, webhook_server() as hook:
        env = base_env(
            tmp_path,
            TRIGGERGATE_CONFIG=str(tmp_path / "gate.toml"),
            TRIGGERGATE_NOTIFY=(
                f"smtp://127.0.0.1:{mail.port}?to=ops@example.com&from=gate@example.com,"
                f"webhook+{hook.url}/alerts"
            ),
        )
        pipeline_script(tmp_path, DUMP.format(out=tmp_path))
        with serving(tmp_path, env) as server:
            run_ids = []
            for i, value in enumerate(HOSTILE):
                [ok] = await press(server.url, f"127.0.30.{i + 1}", json={"params": {"note": value}})
                assert ok.status_code == 202, (value, ok.text)
                run_ids.append(ok.json()["run_id"])
                [bad] = await press(server.url, f"127.0.31.{i + 1}", json={"params": {"tag": value}})
                assert bad.status_code == 400 and bad.json()["error"] == "bad_parameter"
            deadline = time.monotonic() + 20
            while (len(mail.messages) < len(HOSTILE) or len(hook.received) < len(HOSTILE)) and (
                time.monotonic() < deadline
            ):
                await asyncio.sleep(0.2)
    for run_id, value in zip(run_ids, HOSTILE, strict=True):
        note = tmp_path / f"note-{run_id}"
        for _ in range(100):
            if note.exists():
                break
            await asyncio.sleep(0.1)
        assert note.read_bytes() == value.encode(), value
    assert not list(tmp_path.rglob("pwned"))  # noqa: ASYNC240 - one local folder, in a test
    assert len(mail.messages) == len(HOSTILE)
    for delivered in mail.messages:
        message = delivered.message
        assert delivered.rcpt_tos == ["ops@example.com"]
        assert message["Bcc"] is None and "injected" not in str(message["Subject"])
        assert {k.lower() for k in message} <= {
            "subject",
            "from",
            "to",
            "date",
            "message-id",
            "content-type",
            "content-transfer-encoding",
            "mime-version",
            "x-triggergate-event",
        }
    assert all(isinstance(r.json(), dict) for r in hook.received)


ARN = "arn:aws:iam::123456789012:role/ci-deployer"
AWS_KEY = "AKIAIOSFODNN7EXAMPLE"
CI_TOKEN = "glpat-Zx8kQp2mLr7vNw4tYb1c"
GH_TOKEN = "ghp_Q1w2E3r4T5y6U7i8O9p0A1s2D3f4G5h6J7k8"
SECRETS = (ARN, "123456789012", AWS_KEY, CI_TOKEN, GH_TOKEN, "hunter2-db-pass")
LEAKY = f"""#!/bin/sh
echo "AccessDenied: User: {ARN} is not authorized; key {AWS_KEY}" >&2
echo "postgresql://deploy:hunter2-db-pass@db.internal:5432/ci token={GH_TOKEN}" >&2
exit 3
"""


async def test_failures_carrying_secrets_leak_into_no_response_log_alert_or_audit(
    tmp_path: Path,
) -> None:
    """Secrets planted where failures come from: a CI token in the pipeline hook URL (the hook
    refuses), a GitHub token in the pipeline argv, a pipeline that prints an ARN, an account
    id, an AWS key and a DSN with password then fails, an SNS notifier whose ARN holds an
    account id and cannot publish. Every response, server log line, delivered alert and
    audit record is scanned: no pattern matches and no planted value appears."""
    pipeline_script(tmp_path, LEAKY)
    responses: list[httpx.Response] = []
    with webhook_server() as hook:
        hook.always_fail_paths = {f"/hook?token={CI_TOKEN}"}
        hook.fail_status = 403
        common = {
            "TRIGGERGATE_NOTIFY": (
                f"webhook+{hook.url}/alerts,sns://arn:aws:sns:us-east-1:123456789012:ops"
                "?endpoint_url=http://127.0.0.1:9"
            ),
            "TRIGGERGATE_OUTBOX_ATTEMPTS": "1",
            "AWS_ACCESS_KEY_ID": AWS_KEY,
            "AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        }
        runs = {
            "hook": f"webhook+{hook.url}/hook?token={CI_TOKEN}",
            "argv": f"command://{tmp_path}/pipeline.sh?arg=--token={GH_TOKEN}",
        }
        logs = ""
        for name, pipeline in runs.items():
            workdir = tmp_path / name
            workdir.mkdir()
            env = {**base_env(workdir), **common, "TRIGGERGATE_PIPELINE": pipeline}
            with serving(workdir, env) as server:
                responses += await press(server.url, "127.0.40.1")
                async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
                    for r in list(responses):
                        if r.status_code == 202:
                            await asyncio.sleep(1.0)  # the run fails with its noisy output
                            responses.append(await http.get(r.json()["status_url"]))
                    responses.append(await http.get("/readyz"))
                await asyncio.sleep(2.5)  # outbox delivery and its failures
                logs += server.output()
            records = audits(workdir)
            assert records, name
            logs += "\n".join(json.dumps(r) for r in records)
    assert [r.status_code for r in responses[:1]] == [502]
    alerts = "\n".join(r.body.decode() for r in hook.received + hook.rejected if r.path == "/alerts")
    assert alerts, "alerts were delivered and scanned"
    for where, text in [
        ("responses", "\n".join(r.text + json.dumps(dict(r.headers)) for r in responses)),
        ("logs and audit", logs),
        ("alerts", alerts),
    ]:
        assert not leaks(text, SECRETS), (where, leaks(text, SECRETS))
