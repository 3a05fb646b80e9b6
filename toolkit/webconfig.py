"""``--web.config.file``: TLS and basic auth on every HTTP endpoint, in Prometheus exporter-toolkit's format.

Prometheus exporters share one file for this (prometheus/exporter-toolkit, docs/web-configuration.md),
and Prometheus's scrape options (``scheme: https``, ``tls_config``, ``basic_auth``) are written
against it, so ``tft-exporter`` and ``tft-forecaster`` read the same file rather than a format of
their own: an operator's existing files, ``htpasswd`` hashes and habits work unchanged.

Supported, with exporter-toolkit's meaning and defaults:

* ``tls_server_config``: ``cert_file``, ``key_file``, ``client_auth_type`` (``NoClientCert``,
  ``VerifyClientCertIfGiven``, ``RequireAndVerifyClientCert``), ``client_ca_file``,
  ``min_version`` / ``max_version`` (``TLS10`` .. ``TLS13``, default TLS12 .. TLS13),
  ``prefer_server_cipher_suites``. Relative paths are relative to the web config file's directory.
* ``http_server_config``: ``headers`` (the five exporter-toolkit allows, with its value checks) and
  ``http2: false``.
* ``basic_auth_users``: user name -> bcrypt hash.

Refused with one line (exit status 2) instead of ignored, because a file meant to restrict access
must never be half applied: the other keys of the format (inline ``cert``/``key``/``client_ca``,
``client_allowed_sans``, ``cipher_suites``, ``curve_preferences``, ``rate_limit``),
``http2: true`` (this server speaks HTTP/1.1), and ``RequestClientCert`` / ``RequireAnyClientCert``
(a certificate asked for but not verified, which Python's ``ssl`` cannot do and exporter-toolkit
itself calls insecure). Unknown keys are refused too, as exporter-toolkit's strict YAML does.

Every path is behind the check, ``/-/healthy`` and ``/-/ready`` included, as with exporter-toolkit:
whoever may not read ``/metrics`` has no business probing the process either, and a health check
can pass credentials (docs/OPERATIONS.md shows how).

Changes apply without a restart. exporter-toolkit reads the file at every request and the
certificate at every TLS handshake; here the file and the files it names are checked
(``stat``: size, mtime, inode) at every request and every new connection and read again only when
one changed, so a renewed certificate or a new user applies to the next connection. A changed file
that does not load fails closed, as exporter-toolkit's does: requests are answered 500 and new TLS
connections are refused until it is fixed (one error logged per change). Turning TLS on or off is
such a failure too: the scheme of a listening socket is fixed when it starts, so that needs a restart.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
import os
import re
import secrets
import ssl
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import bcrypt
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from toolkit.http import StartResponse, WSGIApp, respond
from toolkit.yamlfile import YamlFileError, read_mapping

log = logging.getLogger(__name__)

TLSVersionName = Literal["TLS10", "TLS11", "TLS12", "TLS13"]
TLS_VERSIONS: dict[str, ssl.TLSVersion] = {
    "TLS10": ssl.TLSVersion.TLSv1, "TLS11": ssl.TLSVersion.TLSv1_1,
    "TLS12": ssl.TLSVersion.TLSv1_2, "TLS13": ssl.TLSVersion.TLSv1_3,
}
CLIENT_AUTH: dict[str, ssl.VerifyMode] = {
    "NoClientCert": ssl.CERT_NONE,
    "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
    "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
}
#: Headers ``http_server_config.headers`` may set, and the values allowed where the set is closed
#: (exporter-toolkit's list: the file must not become a way to set arbitrary headers).
EXTRA_HEADERS: dict[str, tuple[str, ...]] = {
    "Strict-Transport-Security": (), "X-Content-Type-Options": ("nosniff",),
    "X-Frame-Options": ("deny", "sameorigin"), "X-XSS-Protection": (), "Content-Security-Policy": (),
}
#: Keys of exporter-toolkit's format this implementation does not have, and why (one line each).
UNSUPPORTED: dict[tuple[str, ...], str] = {
    ("tls_server_config", "cert"): "inline certificates are not supported; use cert_file",
    ("tls_server_config", "key"): "inline keys are not supported; use key_file",
    ("tls_server_config", "client_ca"): "inline client CAs are not supported; use client_ca_file",
    ("tls_server_config", "client_allowed_sans"): "not supported; issue client certificates from a CA of their own "
                                                  "(client_ca_file) instead",
    ("tls_server_config", "cipher_suites"): "not supported (Go's cipher names); OpenSSL's defaults apply",
    ("tls_server_config", "curve_preferences"): "not supported (Go's curve names); OpenSSL's defaults apply",
    ("rate_limit",): "not supported; put a reverse proxy in front to limit request rates",
}
#: client_auth_type values of exporter-toolkit that ask for a certificate without verifying it.
UNVERIFIED_CLIENT_AUTH = ("RequestClientCert", "RequireAnyClientCert", "RequireClientCert")
_BCRYPT_HASH = re.compile(r"^\$2[abxy]?\$(0[4-9]|[12]\d|3[01])\$[./A-Za-z0-9]{53}$")


class WebConfigError(Exception):
    """The web config file cannot be used; the message is one line naming the file and the key."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TLSServerConfig(_Strict):
    """``tls_server_config``: the server's certificate, and the clients' when they must present one."""

    cert_file: str
    key_file: str
    client_auth_type: str = "NoClientCert"
    client_ca_file: str | None = None
    min_version: TLSVersionName = "TLS12"
    max_version: TLSVersionName = "TLS13"
    prefer_server_cipher_suites: bool = True

    @field_validator("client_auth_type")
    @classmethod
    def _known_client_auth(cls, value: str) -> str:
        if value in UNVERIFIED_CLIENT_AUTH:
            raise ValueError(f"{value} accepts a client certificate without verifying it, which is not supported; "
                             "use RequireAndVerifyClientCert (or VerifyClientCertIfGiven) with client_ca_file")
        if value not in CLIENT_AUTH:
            raise ValueError(f"must be one of {', '.join(CLIENT_AUTH)}")
        return value

    @field_validator("cert_file", "key_file", "client_ca_file")
    @classmethod
    def _not_empty(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("must not be empty")
        return value


class HTTPServerConfig(_Strict):
    """``http_server_config``: extra response headers; HTTP/2 is refused, the server speaks HTTP/1.1."""

    http2: bool = False
    headers: dict[str, str] = {}

    @field_validator("headers", mode="before")
    @classmethod
    def _empty_headers(cls, value: Any) -> Any:
        return {} if value is None else value  # `headers:` with every entry commented out

    @field_validator("http2")
    @classmethod
    def _no_http2(cls, value: bool) -> bool:
        if value:
            raise ValueError("HTTP/2 is not supported (the server speaks HTTP/1.1); set it to false or remove it")
        return value

    @field_validator("headers")
    @classmethod
    def _allowed_headers(cls, headers: dict[str, str]) -> dict[str, str]:
        for name, value in headers.items():
            if name not in EXTRA_HEADERS:
                raise ValueError(f"header {name!r} cannot be configured; allowed: {', '.join(EXTRA_HEADERS)}")
            allowed = EXTRA_HEADERS[name]
            if value and allowed and value not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(allowed)}")
            if "\r" in value or "\n" in value:
                raise ValueError(f"{name}: a header value cannot hold a line break")
        return headers


class WebConfig(_Strict):
    """The whole file. Empty, it changes nothing: plain HTTP, no authentication."""

    tls_server_config: TLSServerConfig | None = None
    http_server_config: HTTPServerConfig = HTTPServerConfig()
    basic_auth_users: dict[str, str] = {}

    @field_validator("http_server_config", "basic_auth_users", mode="before")
    @classmethod
    def _empty_section(cls, value: Any) -> Any:
        return {} if value is None else value  # a section with every entry commented out, as YAML reads it

    @field_validator("basic_auth_users")
    @classmethod
    def _bcrypt_hashes(cls, users: dict[str, str]) -> dict[str, str]:
        for user, hashed in users.items():
            if not isinstance(hashed, str) or not _BCRYPT_HASH.match(hashed):
                # The value is a secret: name the user, never echo the value.
                raise ValueError(f"user {user!r}: not a bcrypt hash ($2y$10$... as htpasswd -nBC 10 writes it)")
        return users

    def headers(self) -> list[tuple[str, str]]:
        """The extra response headers; a blank value leaves the header unset, as in exporter-toolkit."""
        return [(k, v) for k, v in self.http_server_config.headers.items() if v]


@dataclass(frozen=True)
class LoadedWebConfig:
    """One successful read: the model, the TLS context built from it, and the files it depends on."""

    config: WebConfig
    context: ssl.SSLContext | None
    files: tuple[Path, ...]


def _unsupported(data: dict[str, Any]) -> tuple[str, str] | None:
    """The first key of exporter-toolkit's format that is not implemented here, with why."""
    for path, why in UNSUPPORTED.items():
        node: Any = data
        for part in path:
            node = node.get(part) if isinstance(node, dict) else None
        if node is not None:
            return ".".join(path), why
    return None


def _format(source: Path, exc: ValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(str(part) for part in first["loc"]) or "(top level)"
    if first["type"] == "extra_forbidden":
        msg = "unknown key (docs/OPERATIONS.md lists the supported ones)"
    else:
        msg = first["msg"].removeprefix("Value error, ")
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return f"{source}: {where}: {msg}{more}"


def _readable(source: Path, key: str, path: Path) -> None:
    try:
        with open(path, "rb") as fh:
            fh.read(1)
    except OSError as exc:
        raise WebConfigError(f"{source}: tls_server_config.{key}: cannot read {path}: "
                             f"{exc.strerror or exc}") from None


def _no_passphrase() -> bytes:
    raise WebConfigError("the key is encrypted; exporter-toolkit's format has no passphrase, store it unencrypted "
                         "with permissions that protect it")


def _ssl_context(source: Path, tls: TLSServerConfig, base: Path) -> tuple[ssl.SSLContext, tuple[Path, ...]]:
    """The server-side context, every file read and checked now, so a bad one fails at start, not per client."""
    cert, key = base / tls.cert_file, base / tls.key_file
    ca = base / tls.client_ca_file if tls.client_ca_file else None
    verify = CLIENT_AUTH[tls.client_auth_type]
    if ca is not None and verify == ssl.CERT_NONE:
        raise WebConfigError(f"{source}: tls_server_config.client_ca_file is set but client_auth_type is "
                             "NoClientCert; set RequireAndVerifyClientCert to check client certificates")
    if ca is None and verify != ssl.CERT_NONE:
        raise WebConfigError(f"{source}: tls_server_config.client_auth_type {tls.client_auth_type} needs "
                             "client_ca_file (the CA that signs the clients' certificates)")
    if TLS_VERSIONS[tls.min_version] > TLS_VERSIONS[tls.max_version]:
        raise WebConfigError(f"{source}: tls_server_config.min_version {tls.min_version} is above max_version "
                             f"{tls.max_version}")
    _readable(source, "cert_file", cert)
    _readable(source, "key_file", key)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = TLS_VERSIONS[tls.min_version]
    context.maximum_version = TLS_VERSIONS[tls.max_version]
    if tls.prefer_server_cipher_suites:
        context.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
    else:
        context.options &= ~ssl.OP_CIPHER_SERVER_PREFERENCE
    # Say HTTP/1.1 in ALPN: a client offering h2 then knows at once what this server speaks.
    context.set_alpn_protocols(["http/1.1"])
    try:
        context.load_cert_chain(cert, key, password=_no_passphrase)
    except WebConfigError as exc:
        raise WebConfigError(f"{source}: tls_server_config.key_file {key}: {exc}") from None
    except (ssl.SSLError, OSError) as exc:
        raise WebConfigError(f"{source}: tls_server_config: cannot use cert_file {cert} with key_file {key}: "
                             f"{_ssl_reason(exc)}") from None
    files = [cert, key]
    if ca is not None:
        _readable(source, "client_ca_file", ca)
        try:
            context.load_verify_locations(cafile=str(ca))
        except (ssl.SSLError, OSError) as exc:
            raise WebConfigError(f"{source}: tls_server_config.client_ca_file {ca}: {_ssl_reason(exc)}") from None
        if not context.get_ca_certs():
            raise WebConfigError(f"{source}: tls_server_config.client_ca_file {ca}: holds no certificate")
        context.verify_mode = verify
        files.append(ca)
    return context, tuple(files)


def _ssl_reason(exc: BaseException) -> str:
    reason = getattr(exc, "reason", None) or getattr(exc, "strerror", None) or str(exc)
    return " ".join(str(reason).split())


def load_web_config(path: Path | str) -> LoadedWebConfig:
    """Read and check ``path`` and every file it names; :class:`WebConfigError` with one line if anything is off."""
    source = Path(path)
    try:
        data = read_mapping(source)
    except YamlFileError as exc:
        raise WebConfigError(str(exc).replace("config file", "web config file")) from None
    unsupported = _unsupported(data)
    if unsupported is not None:
        raise WebConfigError(f"{source}: {unsupported[0]}: {unsupported[1]}")
    try:
        config = WebConfig.model_validate(data)
    except ValidationError as exc:
        raise WebConfigError(_format(source, exc)) from None
    if config.tls_server_config is None:
        return LoadedWebConfig(config, None, ())
    context, files = _ssl_context(source, config.tls_server_config, source.parent)
    return LoadedWebConfig(config, context, files)


def _signature(paths: Iterable[Path]) -> tuple[tuple[int, ...] | None, ...]:
    """What changes when a file is rewritten, renamed over or deleted (Kubernetes swaps secret links)."""
    out: list[tuple[int, ...] | None] = []
    for path in paths:
        try:
            st = os.stat(path)
        except OSError:
            out.append(None)
        else:
            out.append((st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns))
    return tuple(out)


class WebConfigFile:
    """A loaded ``--web.config.file``, read again when it or a file it names changes (see the module doc).

    It is what :func:`toolkit.http.serve` takes as ``web``: :meth:`wrap` puts the headers and the
    basic-auth check in front of an app, :meth:`ssl_context` gives each new connection the current
    certificate. Constructing it loads the file: a bad one raises :class:`WebConfigError` at start.
    """

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._loaded = load_web_config(self.path)
        self._seen = _signature((self.path, *self._loaded.files))
        self._error: str | None = None
        #: Fixed at start: whether the listening socket speaks TLS.
        self.tls = self._loaded.context is not None
        self._auth = _BasicAuthCache()
        if self._loaded.config.basic_auth_users and not self.tls:
            log.warning("%s: basic auth without tls_server_config: passwords cross the network in clear text",
                        self.path)

    def describe(self) -> str:
        """A few words for the start-up log line: what the file switches on."""
        config = self._loaded.config
        parts = ["TLS" if self.tls else "no TLS"]
        if config.tls_server_config is not None and config.tls_server_config.client_auth_type != "NoClientCert":
            parts.append(f"client certificates ({config.tls_server_config.client_auth_type})")
        users = len(config.basic_auth_users)
        parts.append(f"basic auth ({users} user{'s' if users != 1 else ''})" if users else "no basic auth")
        return ", ".join(parts)

    def current(self) -> LoadedWebConfig:
        """The configuration in force now; WebConfigError while a changed file does not load (fail closed)."""
        with self._lock:
            seen = _signature((self.path, *self._loaded.files))
            if seen != self._seen:
                self._seen = seen
                try:
                    loaded = load_web_config(self.path)
                    if (loaded.context is not None) != self.tls:
                        raise WebConfigError(f"{self.path}: tls_server_config was {'removed' if self.tls else 'added'}"
                                             "; turning TLS on or off needs a restart")
                except WebConfigError as exc:
                    self._error = str(exc)
                    log.error("web config not reloaded, refusing requests until it loads: %s", exc)
                else:
                    self._loaded, self._error = loaded, None
                    self._seen = _signature((self.path, *loaded.files))
                    log.info("web config %s reloaded: %s", self.path, self.describe())
            if self._error is not None:
                raise WebConfigError(self._error)
            return self._loaded

    def ssl_context(self) -> ssl.SSLContext:
        """The TLS context for the next connection (the current certificate); WebConfigError refuses it."""
        context = self.current().context
        if context is None:  # only when tls is False, and then the server never asks
            raise WebConfigError(f"{self.path}: no tls_server_config")
        return context

    def wrap(self, app: WSGIApp) -> WSGIApp:
        """``app`` behind the configured headers and basic auth."""

        def guarded(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
            head = environ.get("REQUEST_METHOD") == "HEAD"
            try:
                config = self.current().config
            except WebConfigError:
                return respond(start_response, 500, "text/plain; charset=utf-8", b"Internal Server Error\n",
                               head=head)
            extra = config.headers()
            if config.basic_auth_users and not self._auth.allowed(config.basic_auth_users,
                                                                  environ.get("HTTP_AUTHORIZATION")):
                return respond(start_response, 401, "text/plain; charset=utf-8", b"Unauthorized\n", head=head,
                               headers=[("WWW-Authenticate", "Basic"), *extra])
            if not extra:
                return app(environ, start_response)
            names = {name.lower() for name, _ in extra}

            def with_headers(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
                kept = [(k, v) for k, v in headers if k.lower() not in names]
                return start_response(status, [*kept, *extra], exc_info)

            return app(environ, with_headers)

        return guarded


class _BasicAuthCache:
    """Checks ``Authorization: Basic`` against bcrypt hashes, remembering recent verdicts.

    bcrypt at cost 10 takes ~0.1 s of CPU on purpose; Prometheus sends the same credentials with
    every scrape (``/probe`` once per simulated host), so each (user, hash, password) verdict is
    kept, as exporter-toolkit keeps it. The key is an HMAC under a key of this process, so the
    passwords themselves are not kept in memory. bcrypt runs one at a time, so a burst of bad
    passwords costs one core, not all. An unknown user is checked against a configured hash all the
    same, so the answer takes as long as for a known one and does not tell which users exist.
    """

    SIZE = 256

    def __init__(self) -> None:
        self._key = secrets.token_bytes(32)
        self._verdicts: dict[bytes, bool] = {}
        self._lock = threading.Lock()
        self._bcrypt = threading.Lock()

    def allowed(self, users: dict[str, str], header: str | None) -> bool:
        credentials = _parse_basic(header)
        if credentials is None:
            return False
        user, password = credentials
        known = user in users
        hashed = users[user] if known else users[min(users)]
        key = hmac.new(self._key, b"\0".join((user.encode(), hashed.encode(), password)), hashlib.sha256).digest()
        with self._lock:
            verdict = self._verdicts.get(key)
        if verdict is None:
            with self._bcrypt:
                try:
                    verdict = bcrypt.checkpw(password, hashed.encode())
                except ValueError:  # e.g. longer than bcrypt's 72 bytes: no hash can match it
                    verdict = False
            with self._lock:
                if len(self._verdicts) >= self.SIZE:
                    self._verdicts.pop(next(iter(self._verdicts)))
                self._verdicts[key] = verdict
        return known and verdict


def _parse_basic(header: str | None) -> tuple[str, bytes] | None:
    """``(user, password)`` of an ``Authorization: Basic`` header, None if absent or malformed."""
    if not header:
        return None
    scheme, _, encoded = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    user, sep, password = decoded.partition(b":")
    if not sep:
        return None
    try:
        return user.decode("utf-8"), password
    except UnicodeDecodeError:
        return None


__all__ = ["LoadedWebConfig", "WebConfig", "WebConfigError", "WebConfigFile", "load_web_config"]
