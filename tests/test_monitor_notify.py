"""Notifiers against real local servers: an HTTP(S) receiver on loopback recording what it gets,
an SMTP server (aiosmtpd), the SSRF guard, retries and the Alertmanager/Slack payloads."""

from __future__ import annotations

import contextlib
import datetime as dt
import email as email_parser
import ipaddress
import logging
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from email import policy as email_policy
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import orjson
import pytest

from meguri.errors import ConfigError
from meguri.monitor import _notify
from meguri.monitor._notify import (
    AlertEvent,
    EmailNotifier,
    LogNotifier,
    SlackNotifier,
    WebhookNotifier,
    build_notifier,
    fingerprint,
    resolve_target,
)
from meguri.spec import NotifierSpec

EVENT = AlertEvent(
    status="firing",
    rule="data-drift",
    severity="critical",
    project="churn",
    environment="production",
    figure="drift.share",
    value=0.42,
    summary="data-drift firing: drift.share = 0.42 (drift.share > 0.3 in 2 of the last 3 windows)",
    description="drift.share <over> & above",
    starts_at=1_714_564_800.25,
    ends_at=None,
    alert_id="al-1",
    window_id="mw-7",
    external_url="http://meguri.example:8000",
)


@dataclass
class Receiver:
    """A loopback HTTP server answering from ``statuses`` (then 200) and recording requests."""

    statuses: list[int] = field(default_factory=list)
    delay: float = 0.0
    requests: list[dict[str, Any]] = field(default_factory=list)
    port: int = 0

    def url(self, host: str = "127.0.0.1", path: str = "/hook") -> str:
        return f"http://{host}:{self.port}{path}"


def _handler(receiver: Receiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            receiver.requests.append(
                {"path": self.path, "headers": dict(self.headers), "body": body}
            )
            time.sleep(receiver.delay)
            status = receiver.statuses.pop(0) if receiver.statuses else 200
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # client gave up
                self.send_response(status)
                if 300 <= status < 400:
                    self.send_header("Location", "/elsewhere")
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state = Receiver()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    state.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()


def webhook(url: str, **options: Any) -> WebhookNotifier:
    spec = NotifierSpec(kind="webhook", url=url, allow_private=True, timeout_seconds=2.0)
    return WebhookNotifier("ops", spec, backoff_seconds=0.01, **options)


def test_webhook_posts_alertmanagers_payload(receiver: Receiver) -> None:
    delivery = webhook(receiver.url()).send(EVENT)
    assert (delivery.ok, delivery.attempts, delivery.status) == (True, 1, 200)
    [request] = receiver.requests
    assert request["path"] == "/hook"
    assert request["headers"]["Content-Type"] == "application/json"
    body = orjson.loads(request["body"])
    labels = {
        "alertname": "data-drift",
        "severity": "critical",
        "project": "churn",
        "environment": "production",
    }
    assert body["version"] == "4" and body["status"] == "firing" and body["receiver"] == "ops"
    assert body["groupLabels"] == {k: v for k, v in labels.items() if k != "severity"}
    assert body["commonLabels"] == labels
    assert body["externalURL"] == "http://meguri.example:8000"
    assert body["groupKey"].startswith("{}:{") and 'alertname="data-drift"' in body["groupKey"]
    [alert] = body["alerts"]
    assert alert["labels"] == labels and alert["status"] == "firing"
    assert alert["annotations"] == {"summary": EVENT.summary, "description": EVENT.description}
    started = dt.datetime.fromisoformat(alert["startsAt"].replace("Z", "+00:00"))
    assert started.timestamp() == pytest.approx(EVENT.starts_at, abs=1e-3)
    assert alert["startsAt"] == "2024-05-01T12:00:00.250Z"
    assert alert["endsAt"] == "0001-01-01T00:00:00Z"  # Go's zero time: still firing
    assert alert["generatorURL"] == "http://meguri.example:8000/alerts/al-1"
    assert alert["fingerprint"] == fingerprint(labels) and len(alert["fingerprint"]) == 16


def test_resolved_alerts_carry_their_end(receiver: Receiver) -> None:
    resolved = AlertEvent(**{**EVENT.to_dict(), "status": "resolved", "ends_at": 1_714_568_400.0})
    assert webhook(receiver.url()).send(resolved).ok
    body = orjson.loads(receiver.requests[0]["body"])
    assert body["status"] == body["alerts"][0]["status"] == "resolved"
    assert body["alerts"][0]["endsAt"] == "2024-05-01T13:00:00.000Z"


def test_fingerprint_matches_prometheus() -> None:
    # prometheus/common model/signature_test.go (TestMetricToFingerprint)
    assert fingerprint({}) == f"{14695981039346656037:016x}"
    sample = {"name": "garland, briggs", "fear": "love is not enough"}
    assert fingerprint(sample) == f"{5799056148416392346:016x}"


def test_retries_5xx_then_succeeds(receiver: Receiver) -> None:
    receiver.statuses = [500, 503]
    delivery = webhook(receiver.url()).send(EVENT)
    assert (delivery.ok, delivery.attempts, delivery.status) == (True, 3, 200)
    assert len(receiver.requests) == 3
    assert len({r["body"] for r in receiver.requests}) == 1  # the same body each try


def test_gives_up_after_three_tries_without_raising(receiver: Receiver) -> None:
    receiver.statuses = [500, 500, 500, 500]
    delivery = webhook(receiver.url()).send(EVENT)
    assert (delivery.ok, delivery.attempts, delivery.status) == (False, 3, 500)
    assert delivery.error is not None and delivery.error.startswith("HTTP 500")
    assert len(receiver.requests) == 3


def test_4xx_is_not_retried_and_redirects_are_not_followed(receiver: Receiver) -> None:
    receiver.statuses = [400]
    delivery = webhook(receiver.url()).send(EVENT)
    assert (delivery.ok, delivery.attempts, delivery.status) == (False, 1, 400)
    receiver.statuses = [302]
    delivery = webhook(receiver.url()).send(EVENT)
    assert (delivery.ok, delivery.attempts, delivery.status) == (False, 1, 302)
    assert delivery.error is not None and "redirects are not followed" in delivery.error
    assert [r["path"] for r in receiver.requests] == ["/hook", "/hook"]


def test_connection_errors_and_timeouts_are_retried(receiver: Receiver) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    delivery = webhook(f"http://127.0.0.1:{closed}/hook").send(EVENT)
    assert (delivery.ok, delivery.attempts, delivery.status) == (False, 3, None)
    assert delivery.error is not None and "ConnectionRefused" in delivery.error
    receiver.delay = 0.5
    spec = NotifierSpec(kind="webhook", url=receiver.url(), allow_private=True, timeout_seconds=0.1)
    delivery = WebhookNotifier("ops", spec, backoff_seconds=0.01).send(EVENT)
    assert (delivery.ok, delivery.attempts) == (False, 3)
    assert delivery.error is not None and "timed out" in delivery.error


def test_the_host_is_resolved_once_and_named_in_the_host_header(
    receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    lookups: list[str] = []
    real = socket.getaddrinfo

    def counting(host: str, *args: Any, **kwargs: Any) -> Any:
        lookups.append(host)
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", counting)
    receiver.statuses = [500, 500]
    delivery = webhook(receiver.url(host="localhost")).send(EVENT)
    assert delivery.ok and delivery.attempts == 3
    # three connections, one DNS answer; the rest are the resolved address, taken literally
    assert [h for h in lookups if h == "localhost"] == ["localhost"]
    assert {str(ipaddress.ip_address(h)) for h in lookups[1:]} == {"127.0.0.1"}
    assert {r["headers"]["Host"] for r in receiver.requests} == {f"localhost:{receiver.port}"}


def test_private_addresses_are_refused_without_allow_private(receiver: Receiver) -> None:
    spec = NotifierSpec(kind="webhook", url=receiver.url())
    delivery = build_notifier("ops", spec).send(EVENT)
    assert (delivery.ok, delivery.attempts) == (False, 0)
    assert delivery.error is not None and "allow_private" in delivery.error
    assert receiver.requests == []
    for url in (
        "http://localhost/",
        "http://10.1.2.3/",
        "http://192.168.0.10:8080/x",
        "http://172.16.0.1/",
        "http://[::1]/",
        "http://[fd12:3456::1]/",
        "http://0.0.0.0/",
        "http://2130706433/",  # 127.0.0.1 written as a number
    ):
        with pytest.raises(ConfigError, match=r"not a public address.*allow_private"):
            resolve_target(url, allow_private=False)
    assert resolve_target("http://10.1.2.3:81/a?b=1", allow_private=True).path == "/a?b=1"


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data/",
        "http://[fe80::1]/",
        "http://[::ffff:169.254.169.254]/",
        "http://[64:ff9b::a9fe:a9fe]/",  # NAT64
        "http://[2002:a9fe:a9fe::1]/",  # 6to4
        "http://[2001:0:4136:e378:8000:63bf:5601:5601]/",  # Teredo, client 169.254.169.254
        "https://169.254.0.1:8443/",
    ],
)
def test_link_local_is_refused_always(url: str) -> None:
    with pytest.raises(ConfigError, match="link-local"):
        resolve_target(url, allow_private=True)
    spec = NotifierSpec(kind="slack", url=url, allow_private=True)
    delivery = build_notifier("chat", spec).send(EVENT)
    assert (delivery.ok, delivery.attempts) == (False, 0) and "link-local" in str(delivery.error)


@pytest.mark.parametrize("url", ["ftp://example.com/x", "file:///etc/passwd", "http:///nohost"])
def test_only_http_and_https_urls(url: str) -> None:
    with pytest.raises(ConfigError, match="http:// or https://"):
        resolve_target(url, allow_private=True)


def test_basic_auth_in_the_url_becomes_a_header(receiver: Receiver) -> None:
    url = f"http://am%40user:s%3Acret@127.0.0.1:{receiver.port}/hook"
    assert webhook(url).send(EVENT).ok
    # base64("am@user:s:cret")
    assert receiver.requests[0]["headers"]["Authorization"] == "Basic YW1AdXNlcjpzOmNyZXQ="


def test_slack_message_has_text_and_blocks(receiver: Receiver) -> None:
    spec = NotifierSpec(kind="slack", url=receiver.url(), allow_private=True)
    assert build_notifier("chat", spec).send(EVENT).ok
    body = orjson.loads(receiver.requests[0]["body"])
    assert body["text"].startswith(":rotating_light: [FIRING] data-drift (churn/production)")
    assert [b["type"] for b in body["blocks"]] == ["header", "section", "section", "context"]
    assert body["blocks"][0]["text"] == {
        "type": "plain_text",
        "text": "[FIRING] data-drift (churn/production)",
    }
    fields = [f["text"] for f in body["blocks"][2]["fields"]]
    assert fields == [
        "*Severity*\ncritical",
        "*Figure*\ndrift.share",
        "*Value*\n0.42",
        "*Window*\nmw-7",
    ]
    escaped = SlackNotifier("chat", spec).send(
        AlertEvent(**{**EVENT.to_dict(), "summary": "a <b> & c"})
    )
    assert escaped.ok
    assert orjson.loads(receiver.requests[1]["body"])["blocks"][1]["text"]["text"] == (
        "a &lt;b&gt; &amp; c"
    )


def test_log_notifier_writes_a_structured_record(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="meguri.monitor.alerts"):
        delivery = LogNotifier("log").send(EVENT)
    assert delivery.ok and delivery.kind == "log"
    [record] = caplog.records
    assert record.levelno == logging.ERROR  # critical severity
    assert "data-drift firing" in record.getMessage()
    assert record.alert["rule"] == "data-drift" and record.alert["value"] == 0.42  # type: ignore[attr-defined]


# --- TLS: the certificate is checked against the name, the connection goes to the address -----


def _self_signed(folder: Path) -> tuple[Path, Path]:
    x509 = pytest.importorskip("cryptography.x509", reason="cryptography makes the test cert")
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@pytest.fixture
def tls(tmp_path: Path) -> tuple[Path, Path]:
    return _self_signed(tmp_path)


def test_https_checks_the_certificate_against_the_host_name(
    receiver: Receiver, tls: tuple[Path, Path]
) -> None:
    cert, key = tls
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(receiver))
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(cert, key)
    server.socket = server_context.wrap_socket(server.socket, server_side=True)
    port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        trust = ssl.create_default_context(cafile=str(cert))
        delivery = webhook(f"https://localhost:{port}/hook", tls_context=trust).send(EVENT)
        assert (delivery.ok, delivery.attempts) == (True, 1)
        assert receiver.requests[-1]["headers"]["Host"] == f"localhost:{port}"
        # the same server by address: the certificate names localhost, not 127.0.0.1
        delivery = webhook(f"https://127.0.0.1:{port}/hook", tls_context=trust).send(EVENT)
        assert (delivery.ok, delivery.attempts) == (False, 1)
        assert "certificate" in str(delivery.error)
        assert len(receiver.requests) == 1
    finally:
        server.shutdown()
        server.server_close()


# --- email over a real SMTP server ----------------------------------------------------------


@dataclass
class Mailbox:
    messages: list[Any] = field(default_factory=list)
    logins: list[tuple[bytes, bytes]] = field(default_factory=list)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(envelope)
        return "250 Message accepted for delivery"


def _smtp(mailbox: Mailbox, **options: Any) -> Any:
    controller_module = pytest.importorskip(
        "aiosmtpd.controller", reason="aiosmtpd (a dev dependency) runs the test SMTP server"
    )
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    controller = controller_module.Controller(mailbox, hostname="127.0.0.1", port=port, **options)
    controller.start()
    return controller


def email(port: int) -> EmailNotifier:
    spec = NotifierSpec(
        kind="email",
        smtp=f"127.0.0.1:{port}",
        sender="meguri@example.com",
        to=["ops@example.com", "ml@example.com"],
        timeout_seconds=2.0,
    )
    return EmailNotifier("mail", spec, backoff_seconds=0.01)


def test_email_is_delivered_over_smtp() -> None:
    mailbox = Mailbox()
    controller = _smtp(mailbox)
    try:
        delivery = email(controller.port).send(EVENT)
    finally:
        controller.stop()
    assert (delivery.ok, delivery.attempts, delivery.status) == (True, 1, 250)
    [envelope] = mailbox.messages
    assert envelope.mail_from == "meguri@example.com"
    assert envelope.rcpt_tos == ["ops@example.com", "ml@example.com"]
    message = email_parser.message_from_bytes(envelope.content, policy=email_policy.default)
    assert message["Subject"] == "[FIRING] data-drift (churn/production)"
    text = message.get_content()
    assert EVENT.summary in text and "starts_at: 2024-05-01T12:00:00.250Z" in text


def test_email_with_starttls_and_credentials_from_the_environment(
    tls: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    smtp_module = pytest.importorskip("aiosmtpd.smtp", reason="aiosmtpd runs the SMTP server")
    cert, key = tls
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(cert, key)
    mailbox = Mailbox()

    def authenticate(server: Any, session: Any, envelope: Any, mechanism: str, auth: Any) -> Any:
        mailbox.logins.append((auth.login, auth.password))
        ok = auth.password == b"s3cret"
        return smtp_module.AuthResult(success=ok, handled=False, auth_data=auth)

    controller = _smtp(
        mailbox,
        server_hostname="localhost",
        tls_context=server_context,
        require_starttls=True,
        authenticator=authenticate,
        auth_require_tls=True,
    )
    monkeypatch.setenv("MEGURI_TEST_SMTP_USER", "ops")
    monkeypatch.setenv("MEGURI_TEST_SMTP_PASSWORD", "s3cret")
    trust = ssl.create_default_context(cafile=str(cert))
    trust.check_hostname = False  # the server is reached as 127.0.0.1; the cert names localhost
    spec = NotifierSpec(
        kind="email",
        smtp=f"127.0.0.1:{controller.port}",
        sender="meguri@example.com",
        to=["ops@example.com"],
        starttls=True,
        username_env="MEGURI_TEST_SMTP_USER",
        password_env="MEGURI_TEST_SMTP_PASSWORD",
    )
    try:
        delivery = EmailNotifier("mail", spec, tls_context=trust).send(EVENT)
        monkeypatch.setenv("MEGURI_TEST_SMTP_PASSWORD", "wrong")
        refused = EmailNotifier("mail", spec, tls_context=trust, backoff_seconds=0.01).send(EVENT)
    finally:
        controller.stop()
    assert delivery.ok and len(mailbox.messages) == 1
    assert mailbox.logins[0] == (b"ops", b"s3cret")
    assert (refused.ok, refused.attempts, refused.status) == (False, 1, 535)


def test_email_without_its_credentials_says_which_variables() -> None:
    spec = NotifierSpec(
        kind="email",
        smtp="127.0.0.1:1",
        sender="a@example.com",
        to=["b@example.com"],
        username_env="MEGURI_TEST_UNSET_USER",
        password_env="MEGURI_TEST_UNSET_PASSWORD",
    )
    delivery = EmailNotifier("mail", spec).send(EVENT)
    assert (delivery.ok, delivery.attempts) == (False, 0)
    assert "MEGURI_TEST_UNSET_USER" in str(delivery.error)


def test_email_to_a_dead_server_is_retried_then_reported() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    delivery = email(closed).send(EVENT)
    assert (delivery.ok, delivery.attempts) == (False, 3)
    assert "ConnectionRefused" in str(delivery.error)


def test_every_notifier_kind_is_built_from_its_spec() -> None:
    specs = {
        "log": NotifierSpec(kind="log"),
        "webhook": NotifierSpec(kind="webhook", url="https://hooks.example/x"),
        "slack": NotifierSpec(kind="slack", url="https://hooks.slack.com/services/x"),
        "email": NotifierSpec(kind="email", smtp="h:25", sender="a@b.c", to=["d@e.f"]),
    }
    for kind, spec in specs.items():
        notifier = build_notifier(f"n-{kind}", spec)
        assert (notifier.kind, notifier.name) == (kind, f"n-{kind}")
    assert _notify.TRIES == 3
