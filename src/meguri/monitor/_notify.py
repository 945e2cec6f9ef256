"""Notifiers: where a firing or resolved alert is sent (log, webhook, Slack, email).

Every notifier has one method, :meth:`Notifier.send`, whose contract is: deliver one
:class:`AlertEvent`, with a timeout, retrying up to three times (with backoff) on connection
errors, 5xx and 429 answers; return a :class:`Delivery` saying what happened; never raise.

Webhook and Slack URLs pass an SSRF guard (:func:`resolve_target`): http or https only; the host
is resolved once and every address it resolves to is checked: link-local addresses
(169.254.0.0/16 — cloud metadata services — and fe80::/10) are refused always; loopback, private,
unique-local, unspecified and other non-global addresses unless the notifier has
``allow_private``. The connection then goes to exactly that address (the ``Host`` header and, for
https, SNI and certificate checks keep the name), so a second DNS answer cannot redirect it.
Redirects are not followed.

The webhook body is the JSON that Prometheus Alertmanager's webhook receiver sends (version
``"4"``), so receivers written for Alertmanager take meguri's alerts unchanged.
"""

from __future__ import annotations

import base64
import http.client
import ipaddress
import logging
import os
import smtplib
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from typing import Any, Literal, Protocol
from urllib.parse import SplitResult, unquote, urlsplit

import orjson

from meguri.errors import ConfigError
from meguri.spec._monitor import NotifierSpec

__all__ = [
    "AlertEvent",
    "Delivery",
    "EmailNotifier",
    "LogNotifier",
    "Notifier",
    "SlackNotifier",
    "Target",
    "WebhookNotifier",
    "alertmanager_payload",
    "build_notifier",
    "fingerprint",
    "resolve_target",
    "rfc3339",
    "slack_payload",
]

_log = logging.getLogger("meguri.monitor.alerts")
TRIES = 3
_ZERO_TIME = "0001-01-01T00:00:00Z"
"""Alertmanager's ``endsAt`` for an alert still firing (Go's zero time)."""


@dataclass(frozen=True, slots=True)
class AlertEvent:
    """One alert changing state, as every notifier sees it."""

    status: Literal["firing", "resolved"]
    rule: str
    severity: str
    project: str
    environment: str
    figure: str
    value: float
    summary: str
    description: str
    starts_at: float
    ends_at: float | None
    alert_id: str
    window_id: str
    external_url: str = ""

    def labels(self) -> dict[str, str]:
        return {
            "alertname": self.rule,
            "severity": self.severity,
            "project": self.project,
            "environment": self.environment,
        }

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class Delivery:
    """The outcome of one notification: stored in the alert's detail."""

    notifier: str
    kind: str
    ok: bool
    attempts: int
    status: int | None = None
    """HTTP status (webhook, Slack) or SMTP reply code of the last attempt."""
    error: str | None = None
    at: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Notifier(Protocol):
    """Sends alert events somewhere; :meth:`send` never raises (see the module docstring)."""

    name: str
    kind: str

    def send(self, event: AlertEvent) -> Delivery: ...


def build_notifier(name: str, spec: NotifierSpec) -> Notifier:
    """The notifier that ``spec`` describes."""
    if spec.kind == "log":
        return LogNotifier(name)
    if spec.kind == "webhook":
        return WebhookNotifier(name, spec)
    if spec.kind == "slack":
        return SlackNotifier(name, spec)
    return EmailNotifier(name, spec)


# --- payloads ----------------------------------------------------------------------------------


def rfc3339(epoch: float) -> str:
    """``2024-05-01T12:00:00.000Z``: RFC 3339 in UTC, milliseconds."""
    stamp = datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds")
    return stamp.replace("+00:00", "Z")


def fingerprint(labels: dict[str, str]) -> str:
    """Prometheus' label-set fingerprint (FNV-1a 64 over sorted ``name 0xff value 0xff``), as
    16 hex digits: the same alert always has the same fingerprint, as in Alertmanager."""
    digest = 14695981039346656037
    for name in sorted(labels):
        for part in (name, labels[name]):
            for byte in (*part.encode(), 0xFF):
                digest = ((digest ^ byte) * 1099511628211) & 0xFFFFFFFFFFFFFFFF
    return f"{digest:016x}"


def alertmanager_payload(event: AlertEvent, receiver: str) -> dict[str, Any]:
    """The body Alertmanager's webhook receiver posts (version 4) for one alert."""
    labels = event.labels()
    annotations = {"summary": event.summary, "description": event.description}
    group = ", ".join(f'{k}="{v}"' for k, v in sorted(labels.items()) if k != "severity")
    ends = rfc3339(event.ends_at) if event.ends_at is not None else _ZERO_TIME
    return {
        "version": "4",
        "groupKey": f"{{}}:{{{group}}}",
        "truncatedAlerts": 0,
        "status": event.status,
        "receiver": receiver,
        "groupLabels": {k: v for k, v in labels.items() if k != "severity"},
        "commonLabels": labels,
        "commonAnnotations": annotations,
        "externalURL": event.external_url,
        "alerts": [
            {
                "status": event.status,
                "labels": labels,
                "annotations": annotations,
                "startsAt": rfc3339(event.starts_at),
                "endsAt": ends,
                "generatorURL": _generator_url(event),
                "fingerprint": fingerprint(labels),
            }
        ],
    }


def _generator_url(event: AlertEvent) -> str:
    if not event.external_url:
        return ""
    return f"{event.external_url.rstrip('/')}/alerts/{event.alert_id}"


def _slack_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack_payload(event: AlertEvent) -> dict[str, Any]:
    """A Slack incoming-webhook message: ``text`` (the notification line) and ``blocks``."""
    mark = ":rotating_light:" if event.status == "firing" else ":white_check_mark:"
    title = f"[{event.status.upper()}] {event.rule} ({event.project}/{event.environment})"
    fields = [
        ("Severity", event.severity),
        ("Figure", event.figure),
        ("Value", f"{event.value:.6g}"),
        ("Window", event.window_id),
    ]
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": title[:150]}},
        {"type": "section", "text": {"type": "mrkdwn", "text": _slack_escape(event.summary)}},
        {
            "type": "section",
            "fields": [
                {"type": "mrkdwn", "text": f"*{name}*\n{_slack_escape(value)}"}
                for name, value in fields
            ],
        },
        {"type": "context", "elements": [{"type": "mrkdwn", "text": f"alert {event.alert_id}"}]},
    ]
    return {
        "text": f"{mark} {_slack_escape(title)}: {_slack_escape(event.summary)}",
        "blocks": blocks,
    }


# --- the SSRF guard and pinned connections ---------------------------------------------------


@dataclass(frozen=True, slots=True)
class Target:
    """A URL checked and resolved once: connections go to ``address`` and nowhere else."""

    scheme: str
    host: str
    port: int
    addresses: tuple[str, ...]
    """Every address the host resolved to, all checked; tried in order on connection errors."""
    path: str
    authorization: str | None


_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one carries (mapped, 6to4, NAT64, Teredo client), if any:
    ``::ffff:169.254.169.254`` reaches the metadata service as surely as the plain form."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return ip.teredo[1] if ip.teredo is not None else None


def _refusal(ip: ipaddress.IPv4Address | ipaddress.IPv6Address, allow_private: bool) -> str | None:
    if isinstance(ip, ipaddress.IPv6Address):
        ip = _embedded_ipv4(ip) or ip
    if ip.is_link_local:
        return "is link-local (cloud metadata services live there); it is never allowed"
    if not allow_private and not ip.is_global:
        return (
            "is not a public address (loopback, private, unique-local or unspecified); set "
            "allow_private: true on the notifier to reach it"
        )
    return None


def resolve_target(url: str, *, allow_private: bool) -> Target:
    """Check ``url`` and resolve its host once (see the module docstring); raise
    :class:`ConfigError` naming the reason when it is refused."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"notifier URL {url!r} must be an http:// or https:// URL with a host")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        infos = socket.getaddrinfo(parts.hostname, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise ConfigError(f"notifier host {parts.hostname!r} does not resolve: {exc}") from exc
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    for address in addresses:
        reason = _refusal(ipaddress.ip_address(address.split("%")[0]), allow_private)
        if reason is not None:
            raise ConfigError(
                f"notifier host {parts.hostname!r} resolves to {address}, which {reason}"
            )
    return Target(parts.scheme, parts.hostname, port, tuple(addresses), _path(parts), _auth(parts))


def _path(parts: SplitResult) -> str:
    path = parts.path or "/"
    return f"{path}?{parts.query}" if parts.query else path


def _auth(parts: SplitResult) -> str | None:
    if parts.username is None:
        return None
    pair = f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()
    return "Basic " + base64.b64encode(pair).decode()


def _connect(addresses: tuple[str, ...], port: int, timeout: float | None) -> socket.socket:
    """A TCP connection to the first of ``addresses`` that answers (never a new DNS lookup)."""
    error: OSError = OSError("no address to connect to")
    for address in addresses:
        try:
            return socket.create_connection((address, port), timeout)
        except OSError as exc:
            error = exc
    raise error


class _PinnedHTTP(http.client.HTTPConnection):
    """Talks HTTP to the resolved addresses while naming ``host`` in the Host header."""

    def __init__(self, target: Target, timeout: float) -> None:
        super().__init__(target.host, target.port, timeout=timeout)
        self._addresses = target.addresses

    def connect(self) -> None:
        self.sock = _connect(self._addresses, self.port, self.timeout)


class _PinnedHTTPS(http.client.HTTPSConnection):
    """TLS to the resolved addresses, with SNI and certificate checks against ``host``."""

    def __init__(self, target: Target, timeout: float, context: ssl.SSLContext) -> None:
        super().__init__(target.host, target.port, timeout=timeout, context=context)
        self._addresses = target.addresses
        self._tls = context

    def connect(self) -> None:
        sock = _connect(self._addresses, self.port, self.timeout)
        self.sock = self._tls.wrap_socket(sock, server_hostname=self.host)


def _retryable_status(status: int) -> bool:
    return status >= 500 or status == 429


@dataclass
class _Attempt:
    ok: bool
    retry: bool
    status: int | None
    error: str | None


class _Poster:
    """POSTs JSON to one URL with the SSRF guard, timeout and retries."""

    def __init__(
        self,
        name: str,
        kind: str,
        spec: NotifierSpec,
        *,
        backoff_seconds: float = 0.5,
        tls_context: ssl.SSLContext | None = None,
    ) -> None:
        self.name, self.kind, self.spec = name, kind, spec
        self.backoff_seconds = backoff_seconds
        self.tls_context = tls_context

    def post(self, body: dict[str, Any]) -> Delivery:
        try:
            target = resolve_target(self.spec.url or "", allow_private=self.spec.allow_private)
        except ConfigError as exc:
            return Delivery(self.name, self.kind, False, 0, None, str(exc), time.time())
        data = orjson.dumps(body)
        return _with_retries(
            self.name, self.kind, lambda: self._once(target, data), self.backoff_seconds
        )

    def _once(self, target: Target, data: bytes) -> _Attempt:
        connection = self._connection(target)
        headers = {"Content-Type": "application/json", "User-Agent": "meguri-alerts"}
        if target.authorization:
            headers["Authorization"] = target.authorization
        try:
            connection.request("POST", target.path, body=data, headers=headers)
            response = connection.getresponse()
            text = response.read(1024).decode("utf-8", "replace")
        except ssl.SSLCertVerificationError as exc:  # not transient: do not retry
            return _Attempt(False, False, None, f"TLS certificate refused: {exc}")
        except (OSError, http.client.HTTPException) as exc:
            return _Attempt(False, True, None, f"{type(exc).__name__}: {exc}")
        finally:
            connection.close()
        status = response.status
        if 200 <= status < 300:
            return _Attempt(True, False, status, None)
        note = " (redirects are not followed)" if 300 <= status < 400 else ""
        return _Attempt(False, _retryable_status(status), status, f"HTTP {status}{note}: {text}")

    def _connection(self, target: Target) -> http.client.HTTPConnection:
        timeout = self.spec.timeout_seconds
        if target.scheme == "https":
            context = self.tls_context or ssl.create_default_context()
            return _PinnedHTTPS(target, timeout, context)
        return _PinnedHTTP(target, timeout)


def _with_retries(
    name: str, kind: str, attempt: Callable[[], _Attempt], backoff_seconds: float
) -> Delivery:
    result = _Attempt(False, True, None, "not attempted")
    tries = 0
    for tries in range(1, TRIES + 1):
        result = attempt()
        if result.ok or not result.retry:
            break
        if tries < TRIES:
            time.sleep(backoff_seconds * 2 ** (tries - 1))
    outcome = Delivery(name, kind, result.ok, tries, result.status, result.error, time.time())
    if not result.ok:
        _log.warning(
            "alert notification via %s failed after %d tries: %s", name, tries, result.error
        )
    return outcome


# --- the notifiers -----------------------------------------------------------------------------


class LogNotifier:
    """Writes the event to the ``meguri.monitor.alerts`` logger; the whole event rides in
    ``extra={"alert": {...}}`` for structured handlers."""

    kind = "log"

    def __init__(self, name: str) -> None:
        self.name = name

    def send(self, event: AlertEvent) -> Delivery:
        level = logging.INFO
        if event.status == "firing":
            level = logging.ERROR if event.severity == "critical" else logging.WARNING
        _log.log(
            level, "alert %s: %s", event.status, event.summary, extra={"alert": event.to_dict()}
        )
        return Delivery(self.name, self.kind, True, 1, None, None, time.time())


class WebhookNotifier:
    """POSTs Alertmanager's webhook JSON (version 4) to ``spec.url``."""

    kind = "webhook"

    def __init__(self, name: str, spec: NotifierSpec, **options: Any) -> None:
        self.name = name
        self._poster = _Poster(name, self.kind, spec, **options)

    def send(self, event: AlertEvent) -> Delivery:
        return self._poster.post(alertmanager_payload(event, self.name))


class SlackNotifier:
    """POSTs a Slack incoming-webhook message (``text`` and ``blocks``) to ``spec.url``."""

    kind = "slack"

    def __init__(self, name: str, spec: NotifierSpec, **options: Any) -> None:
        self.name = name
        self._poster = _Poster(name, self.kind, spec, **options)

    def send(self, event: AlertEvent) -> Delivery:
        return self._poster.post(slack_payload(event))


class EmailNotifier:
    """Sends a plain-text email over SMTP (optionally STARTTLS and login with credentials read
    from the environment variables the spec names)."""

    kind = "email"

    def __init__(
        self,
        name: str,
        spec: NotifierSpec,
        *,
        backoff_seconds: float = 0.5,
        tls_context: ssl.SSLContext | None = None,
    ) -> None:
        self.name, self.spec = name, spec
        self.backoff_seconds = backoff_seconds
        self.tls_context = tls_context

    def send(self, event: AlertEvent) -> Delivery:
        try:
            host, port = _smtp_address(self.spec.smtp or "")
            credentials = self._credentials()
        except ConfigError as exc:
            return Delivery(self.name, self.kind, False, 0, None, str(exc), time.time())
        message = self._message(event)
        return _with_retries(
            self.name,
            self.kind,
            lambda: self._once(host, port, credentials, message),
            self.backoff_seconds,
        )

    def _credentials(self) -> tuple[str, str] | None:
        spec = self.spec
        if spec.username_env is None:
            return None
        missing = [n for n in (spec.username_env, spec.password_env) if n and n not in os.environ]
        if missing or spec.password_env is None:
            names = missing or ["password_env"]
            raise ConfigError(
                f"email notifier {self.name!r}: set the environment variables {names}"
            )
        return os.environ[spec.username_env], os.environ[spec.password_env]

    def _message(self, event: AlertEvent) -> EmailMessage:
        message = EmailMessage()
        message["Subject"] = (
            f"[{event.status.upper()}] {event.rule} ({event.project}/{event.environment})"
        )
        message["From"] = self.spec.sender or ""
        message["To"] = ", ".join(self.spec.to)
        lines = [event.summary, "", event.description, ""]
        lines += [f"{k}: {v}" for k, v in event.labels().items()]
        lines += [f"starts_at: {rfc3339(event.starts_at)}", f"alert: {event.alert_id}"]
        message.set_content("\n".join(lines) + "\n")
        return message

    def _once(
        self, host: str, port: int, credentials: tuple[str, str] | None, message: EmailMessage
    ) -> _Attempt:
        try:
            with smtplib.SMTP(host, port, timeout=self.spec.timeout_seconds) as smtp:
                if self.spec.starttls:
                    smtp.starttls(context=self.tls_context or ssl.create_default_context())
                if credentials is not None:
                    smtp.login(*credentials)
                smtp.send_message(message)
        except smtplib.SMTPResponseException as exc:
            text = (
                exc.smtp_error.decode("utf-8", "replace")
                if isinstance(exc.smtp_error, bytes)
                else str(exc.smtp_error)
            )
            return _Attempt(
                False, 400 <= exc.smtp_code < 500, exc.smtp_code, f"SMTP {exc.smtp_code}: {text}"
            )
        except smtplib.SMTPNotSupportedError as exc:  # e.g. no STARTTLS: retrying cannot help
            return _Attempt(False, False, None, f"SMTP server does not support it: {exc}")
        except smtplib.SMTPRecipientsRefused as exc:
            return _Attempt(False, False, None, f"recipients refused: {sorted(exc.recipients)}")
        except (OSError, smtplib.SMTPException) as exc:
            return _Attempt(False, True, None, f"{type(exc).__name__}: {exc}")
        return _Attempt(True, False, 250, None)


def _smtp_address(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"email smtp {address!r} must be host:port (e.g. smtp.example.com:587)")
    return host.strip("[]"), int(port)
