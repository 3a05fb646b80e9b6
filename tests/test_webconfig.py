"""``--web.config.file`` (toolkit/webconfig.py): TLS, mutual TLS and basic auth on the exporter's and the
forecaster's endpoints, in Prometheus exporter-toolkit's format, against a CA made for each test run.

Every connection goes to 127.0.0.1. The certificates use EC keys: generating them takes milliseconds.
"""

from __future__ import annotations

import base64
import datetime as dt
import http.client
import ipaddress
import os
import shutil
import socket
import ssl
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import bcrypt
import pytest
import yaml

from exporter.http import start_server, stop_server
from exporter.simulation import Fleet
from toolkit.http import serve, server_url, shutdown
from toolkit.webconfig import WebConfigError, WebConfigFile, load_web_config

ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "s3cret-scrape"
# Cost 4, the lowest bcrypt allows: the tests check the logic, not the hash's strength.
HASHED = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(4)).decode()


@dataclass
class Pki:
    """A throwaway CA, a server certificate for 127.0.0.1 and a client certificate, as PEM files."""

    dir: Path
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path  # a CA that signed nothing here: trusting it must not be enough


def _key() -> Any:
    from cryptography.hazmat.primitives.asymmetric import ec

    return ec.generate_private_key(ec.SECP256R1())


def _write_key(key: Any, path: Path) -> None:
    from cryptography.hazmat.primitives import serialization

    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))


def _cert(subject: str, key: Any, issuer: tuple[Any, Any] | None, *, ca: bool = False,
          server: bool = False) -> Any:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    issuer_name, issuer_key = (issuer[0].subject, issuer[1]) if issuer else (name, key)
    now = dt.datetime.now(dt.UTC)
    builder = (x509.CertificateBuilder().subject_name(name).issuer_name(issuer_name).public_key(key.public_key())
               .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
               .not_valid_after(now + dt.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if ca:
        builder = builder.add_extension(x509.KeyUsage(
            digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
            key_encipherment=False, data_encipherment=False, key_agreement=False, encipher_only=False,
            decipher_only=False), critical=True)
    else:
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    if server:
        builder = builder.add_extension(x509.SubjectAlternativeName(
            [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def _pem(cert: Any) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return cert.public_bytes(serialization.Encoding.PEM)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    pytest.importorskip("cryptography")
    d = tmp_path_factory.mktemp("pki")
    ca_key = _key()
    ca = _cert("tft test CA", ca_key, None, ca=True)
    server_key, client_key, other_key = _key(), _key(), _key()
    paths = Pki(d, d / "ca.crt", d / "server.crt", d / "server.key", d / "client.crt", d / "client.key",
                d / "other-ca.crt")
    paths.ca.write_bytes(_pem(ca))
    paths.server_cert.write_bytes(_pem(_cert("127.0.0.1", server_key, (ca, ca_key), server=True)))
    _write_key(server_key, paths.server_key)
    paths.client_cert.write_bytes(_pem(_cert("prometheus", client_key, (ca, ca_key))))
    _write_key(client_key, paths.client_key)
    paths.other_ca.write_bytes(_pem(_cert("another CA", other_key, None, ca=True)))
    return paths


def _web_file(tmp_path: Path, doc: dict[str, Any], name: str = "web.yml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(doc))
    return path


def _tls(pki: Pki, **extra: Any) -> dict[str, Any]:
    return {"cert_file": str(pki.server_cert), "key_file": str(pki.server_key), **extra}


def _client_context(ca: Path | None, cert: tuple[Path, Path] | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(ca) if ca else None)
    if cert is not None:
        context.load_cert_chain(*cert)
    return context


def _get(url: str, path: str = "/metrics", *, context: ssl.SSLContext | None = None,
         auth: tuple[str, str] | None = None, method: str = "GET") -> http.client.HTTPResponse:
    scheme, _, hostport = url.partition("://")
    host, _, port = hostport.rpartition(":")
    conn: http.client.HTTPConnection
    if scheme == "https":
        conn = http.client.HTTPSConnection(host, int(port), timeout=10, context=context)
    else:
        conn = http.client.HTTPConnection(host, int(port), timeout=10)
    headers = {}
    if auth is not None:
        headers["Authorization"] = "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
    conn.request(method, path, headers=headers)
    reply = conn.getresponse()
    reply.read()
    conn.close()
    return reply


@pytest.fixture
def fleet() -> Fleet:
    return Fleet(3, seed=7, scenario="degrading", anchor=time.time() // 60 * 60)


def _serve_exporter(fleet: Fleet, web_file: Path) -> tuple[Any, Any, str]:
    return start_server(fleet, web=WebConfigFile(web_file))


# --- TLS ----------------------------------------------------------------------------------------------------------


def test_a_tls_scrape_succeeds_with_the_ca_and_fails_without(pki: Pki, fleet: Fleet, tmp_path: Path) -> None:
    server, thread, url = _serve_exporter(fleet, _web_file(tmp_path, {"tls_server_config": _tls(pki)}))
    # A client that connects and never starts its handshake stalls only its own thread.
    stalled = socket.create_connection(("127.0.0.1", server.server_address[1]), timeout=10)
    try:
        assert url.startswith("https://127.0.0.1:")
        reply = _get(url, "/probe?target=" + fleet.names[0], context=_client_context(pki.ca))
        assert reply.status == 200
        with pytest.raises(ssl.SSLCertVerificationError):
            _get(url, context=_client_context(None))  # the system's CAs do not know the throwaway one
        with pytest.raises(ssl.SSLCertVerificationError):
            _get(url, context=_client_context(pki.other_ca))
        # Plain HTTP to the TLS port gets no answer, and the server keeps serving.
        with pytest.raises((http.client.HTTPException, ConnectionError)):
            _get(url.replace("https://", "http://"))
        assert _get(url, "/-/healthy", context=_client_context(pki.ca)).status == 200
    finally:
        stalled.close()
        stop_server(server, thread)


def test_mutual_tls_refuses_a_client_without_a_certificate(pki: Pki, fleet: Fleet, tmp_path: Path) -> None:
    doc = {"tls_server_config": _tls(pki, client_auth_type="RequireAndVerifyClientCert",
                                     client_ca_file=str(pki.ca))}
    server, thread, url = _serve_exporter(fleet, _web_file(tmp_path, doc))
    try:
        with pytest.raises((ssl.SSLError, ConnectionError)):
            _get(url, context=_client_context(pki.ca))
        # A certificate from a CA the server does not trust is refused just the same.
        stranger_key = _key()
        stranger = _cert("stranger", stranger_key, None)
        (tmp_path / "stranger.crt").write_bytes(_pem(stranger))
        _write_key(stranger_key, tmp_path / "stranger.key")
        with pytest.raises((ssl.SSLError, ConnectionError)):
            _get(url, context=_client_context(pki.ca, (tmp_path / "stranger.crt", tmp_path / "stranger.key")))
        reply = _get(url, context=_client_context(pki.ca, (pki.client_cert, pki.client_key)))
        assert reply.status == 200
    finally:
        stop_server(server, thread)


# --- basic auth ---------------------------------------------------------------------------------------------------


def test_basic_auth_answers_401_without_or_with_a_wrong_password(pki: Pki, fleet: Fleet, tmp_path: Path) -> None:
    doc = {"tls_server_config": _tls(pki), "basic_auth_users": {"prometheus": HASHED},
           "http_server_config": {"headers": {"X-Frame-Options": "deny", "X-Content-Type-Options": "nosniff"}}}
    server, thread, url = _serve_exporter(fleet, _web_file(tmp_path, doc))
    context = _client_context(pki.ca)
    try:
        for auth in (None, ("prometheus", "wrong"), ("nobody", PASSWORD), ("prometheus", "x" * 100)):
            reply = _get(url, context=context, auth=auth)
            assert reply.status == 401, auth
            assert reply.getheader("WWW-Authenticate") == "Basic"
            assert reply.getheader("X-Frame-Options") == "deny"
        # Health endpoints are behind the check too, as in exporter-toolkit.
        assert _get(url, "/-/healthy", context=context).status == 401
        assert _get(url, "/metrics", context=context, method="HEAD").status == 401
        for _ in range(2):  # the second answer comes from the verdict cache
            ok = _get(url, "/metrics", context=context, auth=("prometheus", PASSWORD))
            assert ok.status == 200
            assert ok.getheader("X-Content-Type-Options") == "nosniff" and ok.getheader("X-Frame-Options") == "deny"
        assert _get(url, "/-/ready", context=context, auth=("prometheus", PASSWORD)).status == 200
    finally:
        stop_server(server, thread)


def test_basic_auth_over_plain_http_and_malformed_headers(tmp_path: Path) -> None:
    web = WebConfigFile(_web_file(tmp_path, {"basic_auth_users": {"a": HASHED}}))
    server, thread = serve(_hello, "127.0.0.1:0", web=web)
    url = server_url(server)
    try:
        assert url.startswith("http://")
        assert _get(url, "/", auth=("a", PASSWORD)).status == 200
        for header in ("Bearer abc", "Basic !!!", "Basic " + base64.b64encode(b"no-colon").decode(), "Basic"):
            conn = http.client.HTTPConnection("127.0.0.1", server.server_address[1], timeout=10)
            conn.request("GET", "/", headers={"Authorization": header})
            assert conn.getresponse().status == 401, header
            conn.close()
    finally:
        shutdown(server, thread)


def _hello(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "6"),
                              ("X-Frame-Options", "sameorigin")])
    return [b"hello\n"]


def test_the_forecaster_is_served_behind_the_same_checks(pki: Pki, tmp_path: Path) -> None:
    """forecaster.serving.service.start(web=...), as ``tft-forecaster --web.config.file`` runs it."""
    from devkit.fakeprom import FakePrometheus
    from tests.forecaster_harness import start_forecaster

    web = WebConfigFile(_web_file(tmp_path, {"tls_server_config": _tls(pki), "basic_auth_users": {"p": HASHED}}))
    with FakePrometheus() as fake, start_forecaster(None, fake.url, scheduler=False, web=web) as running:
        assert running.url.startswith("https://127.0.0.1:")
        context = _client_context(pki.ca)
        assert _get(running.url, "/metrics", context=context).status == 401
        assert _get(running.url, "/-/healthy", context=context).status == 401
        assert _get(running.url, "/metrics", context=context, auth=("p", PASSWORD)).status == 200
        with pytest.raises(ssl.SSLCertVerificationError):
            _get(running.url, "/metrics", context=_client_context(None), auth=("p", PASSWORD))


# --- reload -------------------------------------------------------------------------------------------------------


def test_a_changed_file_applies_to_the_next_request_and_a_broken_one_fails_closed(tmp_path: Path) -> None:
    path = _web_file(tmp_path, {"basic_auth_users": {"a": HASHED}})
    web = WebConfigFile(path)
    server, thread = serve(_hello, "127.0.0.1:0", web=web)
    url = server_url(server)
    try:
        assert _get(url, "/", auth=("a", PASSWORD)).status == 200
        other = bcrypt.hashpw(b"new-password", bcrypt.gensalt(4)).decode()
        _rewrite(path, yaml.safe_dump({"basic_auth_users": {"b": other}}))
        assert _get(url, "/", auth=("a", PASSWORD)).status == 401
        assert _get(url, "/", auth=("b", "new-password")).status == 200
        _rewrite(path, "basic_auth_users: [not, a, mapping]\n")
        assert _get(url, "/", auth=("b", "new-password")).status == 500
        _rewrite(path, yaml.safe_dump({"basic_auth_users": {"b": other}}))
        assert _get(url, "/", auth=("b", "new-password")).status == 200
    finally:
        shutdown(server, thread)


def _rewrite(path: Path, text: str) -> None:
    """Replace the file as an editor or a config manager does, so the change is seen even within one mtime tick."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def test_a_renewed_certificate_is_used_by_the_next_connection(pki: Pki, fleet: Fleet, tmp_path: Path) -> None:
    cert, key = tmp_path / "server.crt", tmp_path / "server.key"
    shutil.copy(pki.server_cert, cert)
    shutil.copy(pki.server_key, key)
    server, thread, url = _serve_exporter(fleet, _web_file(tmp_path, {"tls_server_config": {
        "cert_file": "server.crt", "key_file": "server.key"}}))  # relative to the web config file
    try:
        assert _get(url, context=_client_context(pki.ca)).status == 200
        other_ca_key = _key()
        other_ca = _cert("renewal CA", other_ca_key, None, ca=True)
        new_key = _key()
        (tmp_path / "renewal-ca.crt").write_bytes(_pem(other_ca))
        _write_key(new_key, tmp_path / "new.key")
        (tmp_path / "new.crt").write_bytes(_pem(_cert("127.0.0.1", new_key, (other_ca, other_ca_key), server=True)))
        os.replace(tmp_path / "new.key", key)
        os.replace(tmp_path / "new.crt", cert)
        assert _get(url, context=_client_context(tmp_path / "renewal-ca.crt")).status == 200
        with pytest.raises(ssl.SSLCertVerificationError):
            _get(url, context=_client_context(pki.ca))
        # A certificate that no longer loads: new connections are refused (fail closed) until it is fixed.
        good = cert.read_bytes()
        _rewrite(cert, "not a certificate\n")
        with pytest.raises((ssl.SSLError, ConnectionError)):
            _get(url, context=_client_context(tmp_path / "renewal-ca.crt"))
        _rewrite(cert, good.decode())
        assert _get(url, context=_client_context(tmp_path / "renewal-ca.crt")).status == 200
    finally:
        stop_server(server, thread)


# --- bad files ----------------------------------------------------------------------------------------------------


def _bad_cases(pki: Pki, tmp_path: Path) -> list[tuple[str, str, list[str]]]:
    """(name, file content, words the one-line error must hold)."""
    tls = _tls(pki)
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    from cryptography.hazmat.primitives import serialization

    encrypted = tmp_path / "encrypted.key"
    encrypted.write_bytes(_key().private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.BestAvailableEncryption(b"passphrase")))
    cases: list[tuple[str, Any, list[str]]] = [
        ("unknown-top", {"tls_config": tls}, ["tls_config", "unknown key"]),
        ("unknown-tls", {"tls_server_config": {**tls, "certfile": "x"}}, ["tls_server_config.certfile", "unknown"]),
        ("inline-cert", {"tls_server_config": {**tls, "cert": "-----BEGIN"}}, ["tls_server_config.cert", "inline"]),
        ("ciphers", {"tls_server_config": {**tls, "cipher_suites": ["TLS_AES_128_GCM_SHA256"]}},
         ["cipher_suites", "not supported"]),
        ("sans", {"tls_server_config": {**tls, "client_allowed_sans": ["a"]}}, ["client_allowed_sans"]),
        ("rate", {"rate_limit": {"interval": "1s", "burst": 5}}, ["rate_limit", "not supported"]),
        ("http2", {"http_server_config": {"http2": True}}, ["http2", "HTTP/1.1"]),
        ("header", {"http_server_config": {"headers": {"X-Evil": "1"}}}, ["X-Evil", "cannot be configured"]),
        ("frame", {"http_server_config": {"headers": {"X-Frame-Options": "allow"}}}, ["X-Frame-Options", "deny"]),
        ("no-key", {"tls_server_config": {"cert_file": tls["cert_file"]}}, ["key_file", "Field required"]),
        ("missing-cert", {"tls_server_config": {**tls, "cert_file": str(tmp_path / "nope.crt")}},
         ["cert_file", "nope.crt", "No such file"]),
        ("junk-cert", {"tls_server_config": {**tls, "cert_file": str(junk)}}, ["cannot use cert_file", "junk.pem"]),
        ("mismatch", {"tls_server_config": {**tls, "key_file": str(pki.client_key)}}, ["cannot use cert_file"]),
        ("encrypted-key", {"tls_server_config": {**tls, "key_file": str(encrypted)}}, ["key_file", "encrypted"]),
        ("auth-type", {"tls_server_config": {**tls, "client_auth_type": "Sometimes"}},
         ["client_auth_type", "RequireAndVerifyClientCert"]),
        ("unverified", {"tls_server_config": {**tls, "client_auth_type": "RequireAnyClientCert",
                                              "client_ca_file": str(pki.ca)}}, ["RequireAnyClientCert", "verifying"]),
        ("ca-without-auth", {"tls_server_config": {**tls, "client_ca_file": str(pki.ca)}},
         ["client_ca_file", "NoClientCert"]),
        ("auth-without-ca", {"tls_server_config": {**tls, "client_auth_type": "RequireAndVerifyClientCert"}},
         ["needs client_ca_file"]),
        ("junk-ca", {"tls_server_config": {**tls, "client_auth_type": "RequireAndVerifyClientCert",
                                           "client_ca_file": str(junk)}}, ["client_ca_file", "junk.pem"]),
        ("versions", {"tls_server_config": {**tls, "min_version": "TLS13", "max_version": "TLS12"}},
         ["min_version TLS13", "max_version TLS12"]),
        ("version-name", {"tls_server_config": {**tls, "min_version": "TLS1.2"}}, ["min_version"]),
        ("not-bcrypt", {"basic_auth_users": {"alice": "plaintext-password"}}, ["alice", "bcrypt"]),
        ("not-a-mapping", ["tls_server_config"], ["mapping"]),
        ("not-yaml", "tls_server_config: [unclosed\n", ["not valid YAML"]),
    ]
    out = []
    for name, doc, words in cases:
        out.append((name, doc if isinstance(doc, str) else yaml.safe_dump(doc), words))
    return out


def test_bad_files_are_one_line_naming_the_key(pki: Pki, tmp_path: Path) -> None:
    for name, text, words in _bad_cases(pki, tmp_path):
        path = tmp_path / f"{name}.yml"
        path.write_text(text)
        with pytest.raises(WebConfigError) as info:
            load_web_config(path)
        message = str(info.value)
        assert "\n" not in message and str(path) in message, (name, message)
        assert all(word in message for word in words), (name, message)
        assert "plaintext-password" not in message  # a secret is never echoed
    with pytest.raises(WebConfigError, match="cannot read web config file"):
        load_web_config(tmp_path / "absent.yml")


def test_empty_sections_configure_nothing(tmp_path: Path) -> None:
    """Every entry of a section commented out (YAML reads null), or an empty file: plain HTTP, no auth."""
    path = tmp_path / "web.yml"
    for text in ("basic_auth_users:\n  # alice: $2y$...\nhttp_server_config:\n  headers:\ntls_server_config:\n", ""):
        path.write_text(text)
        loaded = load_web_config(path)
        assert loaded.context is None and not loaded.config.basic_auth_users and not loaded.config.headers()


def _run(module: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=120, check=False)


@pytest.mark.parametrize("module", ["exporter", "forecaster"])
def test_bad_web_config_files_exit_2_with_one_line(module: str, pki: Pki, tmp_path: Path) -> None:
    bad = _web_file(tmp_path, {"tls_server_config": {**_tls(pki), "cipher_suites": ["X"]}})
    missing = _web_file(tmp_path, {"tls_server_config": _tls(pki, key_file=str(tmp_path / "gone.key"))}, "m.yml")
    for path, needle in ((bad, "cipher_suites"), (missing, "gone.key")):
        proc = _run(module, "--web.config.file", str(path), "--web.listen-address", "127.0.0.1:0")
        assert proc.returncode == 2, proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and needle in lines[0] and "Traceback" not in proc.stderr, proc.stderr


def test_the_example_file_loads(pki: Pki, tmp_path: Path) -> None:
    """config/web-config.yml.example, with certificates where it expects them, is a valid file."""
    example = ROOT / "config" / "web-config.yml.example"
    doc = yaml.safe_load(example.read_text())
    tls = doc["tls_server_config"]
    for name, source in (("cert_file", pki.server_cert), ("key_file", pki.server_key), ("client_ca_file", pki.ca)):
        if name in tls:
            target = tmp_path / tls[name]
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(source, target)
    shutil.copy(example, tmp_path / "web-config.yml")
    loaded = load_web_config(tmp_path / "web-config.yml")
    assert loaded.context is not None and loaded.config.basic_auth_users


@pytest.mark.integration
def test_prometheus_scrapes_over_tls_with_basic_auth(pki: Pki, fleet: Fleet, tmp_path: Path,
                                                     prometheus_factory: Any) -> None:
    """The scrape options of prometheus/prometheus.yml's commented example work against this server."""
    doc = {"tls_server_config": _tls(pki), "basic_auth_users": {"prometheus": HASHED}}
    server, thread, url = _serve_exporter(fleet, _web_file(tmp_path, doc))
    password_file = tmp_path / "scrape-password"
    password_file.write_text(PASSWORD + "\n")
    target = url.removeprefix("https://")
    try:
        prom = prometheus_factory(scrape_configs=[
            {"job_name": "tls", "scheme": "https", "scrape_interval": "1s",
             "tls_config": {"ca_file": str(pki.ca)},
             "basic_auth": {"username": "prometheus", "password_file": str(password_file)},
             "static_configs": [{"targets": [target]}]},
            {"job_name": "no-auth", "scheme": "https", "scrape_interval": "1s",
             "tls_config": {"ca_file": str(pki.ca)}, "static_configs": [{"targets": [target]}]},
        ])
        prom.start()
        prom.wait_for('up{job="tls"} == 1', timeout=30)
        prom.wait_for('up{job="no-auth"} == 0', timeout=30)
        assert prom.query('tft_exporter_hosts_simulated{job="tls"}')[0]["value"][1] == "3"
    finally:
        stop_server(server, thread)
