"""The shared toolkit: one-line usage errors, listen addresses, the YAML reader, logging and the HTTP server."""

from __future__ import annotations

import http.client
import json
import logging
import os
import re
import socket
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest

from toolkit.cli import EXIT_USAGE, Parser, UsageError, add_config_flag, add_global_flags_to, add_log_flags
from toolkit.http import StartResponse, parse_listen_address, respond, serve, server_url, shutdown
from toolkit.logs import level_number, setup_logging
from toolkit.version import package_version
from toolkit.yamlfile import YamlFileError, read_mapping

REPO = Path(__file__).resolve().parents[1]


def ipv6_loopback() -> bool:
    """Whether this machine can bind ``::1`` (containers without IPv6 cannot)."""
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


needs_ipv6 = pytest.mark.skipif(not ipv6_loopback(), reason="no IPv6 loopback on this machine")


# --- the parser ------------------------------------------------------------------------------------------------------


def _parser() -> Parser:
    parser = Parser(prog="tft-test")
    add_config_flag(parser)
    add_log_flags(parser)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("go").add_argument("--count", type=int, required=True)
    return parser


@pytest.mark.parametrize(("argv", "words"), [
    (["go", "--count", "x"], ["--count", "invalid int value"]),
    (["go"], ["required", "--count"]),
    (["--log.level", "loud", "go", "--count", "1"], ["--log.level", "invalid choice"]),
    (["--log.format", "xml", "go", "--count", "1"], ["--log.format"]),
    (["go", "--count", "1", "--bogus"], ["unrecognized arguments: --bogus"]),
    ([], ["required", "command"]),
])
def test_usage_errors_raise_one_line(argv: list[str], words: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(UsageError) as caught:
        _parser().parse_args(argv)
    message = str(caught.value)
    assert "\n" not in message and all(w in message for w in words), message
    assert capsys.readouterr().err == ""  # nothing printed: the command's main() says it, in its own words


def test_the_common_flags_parse() -> None:
    args = _parser().parse_args(["--config.file", "c.yml", "--log.level", "warn", "go", "--count", "3"])
    assert (args.config_file, args.log_level, args.log_format, args.count) == (Path("c.yml"), "warn", "logfmt", 3)


@pytest.mark.parametrize("argv", [["exporter"], ["forecaster"], ["trainer", "train"], ["demo"]])
def test_every_command_says_a_bad_flag_in_one_line_with_status_2(argv: list[str]) -> None:
    proc = subprocess.run([sys.executable, "-m", *argv, "--no-such-flag"], capture_output=True, text=True,
                          timeout=120, cwd=REPO)
    assert proc.returncode == EXIT_USAGE == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tft-") and "--no-such-flag" in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr and "usage:" not in proc.stderr


def test_global_flags_are_accepted_after_the_subcommand_and_the_later_one_wins() -> None:
    parser = _parser()
    add_global_flags_to(parser._subparsers._group_actions[0].choices["go"], add_config_flag, add_log_flags)
    after = parser.parse_args(["go", "--count", "1", "--config.file", "c.yml", "--log.level", "debug"])
    assert (after.config_file, after.log_level, after.log_format) == (Path("c.yml"), "debug", "logfmt")
    both = parser.parse_args(["--log.level", "warn", "--config.file", "a.yml", "go", "--count", "1",
                              "--log.level", "error"])
    assert (both.config_file, both.log_level) == (Path("a.yml"), "error")
    before = parser.parse_args(["--log.level", "warn", "go", "--count", "1"])
    assert before.log_level == "warn"  # the subcommand's copy does not reset it to its default
    with pytest.raises(UsageError, match="invalid choice"):
        parser.parse_args(["go", "--count", "1", "--log.level", "loud"])


def test_abbreviated_flags_are_refused() -> None:
    with pytest.raises(UsageError, match=r"unrecognized arguments: --log\.lev=warn"):
        _parser().parse_args(["--log.lev=warn", "go", "--count", "1"])


@pytest.mark.parametrize("argv", [["exporter"], ["forecaster"], ["trainer"], ["demo"], ["monitoring"]])
def test_every_command_prints_its_version(argv: list[str]) -> None:
    proc = subprocess.run([sys.executable, "-m", *argv, "--version"], capture_output=True, text=True, timeout=120,
                          cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"tft-{argv[0]}, version {package_version()}", proc.stdout


def test_trainer_takes_the_config_file_after_the_subcommand(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yml"
    proc = subprocess.run([sys.executable, "-m", "trainer", "train", "--config.file", str(missing)],
                          capture_output=True, text=True, timeout=120, cwd=REPO)
    assert proc.returncode == EXIT_USAGE, proc.stderr
    assert str(missing) in proc.stderr and "unrecognized" not in proc.stderr, proc.stderr


# --- listen addresses ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("address", "expected"), [
    ("127.0.0.1:8920", ("127.0.0.1", 8920)),
    ("0.0.0.0:0", ("0.0.0.0", 0)),
    ("localhost:65535", ("localhost", 65535)),
    (":8921", ("0.0.0.0", 8921)),
    ("[::1]:8920", ("::1", 8920)),
    ("[::]:80", ("::", 80)),
])
def test_listen_addresses(address: str, expected: tuple[str, int]) -> None:
    assert parse_listen_address(address) == expected


@pytest.mark.parametrize("address", [
    "8920", "nowhere", "host:", "host:port", "host:65536", "host:-1", "::1:8920", "[::1]", "[127.0.0.1]:80",
    "[::1:80", "a b:80", "host:８０",
])
def test_bad_listen_addresses_say_the_form(address: str) -> None:
    with pytest.raises(ValueError, match="invalid listen address") as caught:
        parse_listen_address(address)
    assert "\n" not in str(caught.value)


# --- the YAML file ---------------------------------------------------------------------------------------------------


def test_yaml_mapping_is_read(tmp_path: Path) -> None:
    path = tmp_path / "c.yml"
    path.write_text("exporter:\n  hosts: 3\nforecaster: {interval_seconds: 60}\n")
    assert read_mapping(path) == {"exporter": {"hosts": 3}, "forecaster": {"interval_seconds": 60}}
    assert read_mapping(str(path)) == read_mapping(path)
    path.write_text("# only a comment\n")
    assert read_mapping(path) == {}
    assert read_mapping(None) == {}


@pytest.mark.parametrize(("content", "words"), [
    ("- a\n- list\n", ["the top level must be a mapping"]),
    ("exporter: [1,\n", ["line 2:", "not valid YAML"]),
    ("a: b\n\tc: d\n", ["not valid YAML"]),
    ("a: !!python/object:os.system x\n", ["not valid YAML"]),
    (b"exporter: \xff\xfe\n", ["not UTF-8"]),
])
def test_yaml_errors_are_one_line_naming_the_file(tmp_path: Path, content: str | bytes, words: list[str]) -> None:
    path = tmp_path / "bad.yml"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    with pytest.raises(YamlFileError) as caught:
        read_mapping(path)
    message = str(caught.value)
    assert "\n" not in message and str(path) in message and all(w in message for w in words), message


def test_a_missing_yaml_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(YamlFileError, match=r"cannot read config file .*missing\.yml: No such file"):
        read_mapping(tmp_path / "missing.yml")
    with pytest.raises(YamlFileError, match="cannot read config file"):
        read_mapping(tmp_path)  # a directory


# --- logging and version ---------------------------------------------------------------------------------------------


def _log(code: str) -> str:
    """stderr of ``code`` run in a process of its own (setting up logging here would unhook pytest's capture)."""
    proc = subprocess.run([sys.executable, "-c", "import logging\nfrom toolkit.logs import setup_logging\n" + code],
                          capture_output=True, text=True, timeout=60, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    return proc.stderr


def test_json_log_lines_stay_json() -> None:
    err = _log("""setup_logging("info", "json")
log = logging.getLogger("tft.test")
log.info('a "quoted" message\\nover two lines')
try:
    raise RuntimeError("boom")
except RuntimeError:
    log.exception("failed")
log.debug("not shown at info")
assert logging.getLogger("torch").level == logging.WARNING  # chatty libraries capped
""")
    lines = err.splitlines()
    assert len(lines) == 2, err
    first, second = (json.loads(line) for line in lines)
    assert first["msg"] == 'a "quoted" message\nover two lines' and first["level"] == "INFO"
    assert first["logger"] == "tft.test" and "ts" in first
    assert second["msg"] == "failed" and "RuntimeError: boom" in second["exc"]


_LOGFMT_PAIR = re.compile(r'([A-Za-z_][A-Za-z0-9_.]*)=("(?:[^"\\]|\\.)*"|[^\s"=]+)(?:\s+|$)')


def parse_logfmt(line: str) -> dict[str, str]:
    """A strict logfmt reader: the whole line must be ``key=value`` pairs; quoted values are unescaped."""
    fields: dict[str, str] = {}
    pos = 0
    while pos < len(line):
        match = _LOGFMT_PAIR.match(line, pos)
        assert match, f"not logfmt at {pos}: {line!r}"
        key, value = match.groups()
        fields[key] = json.loads(value) if value.startswith('"') else value
        pos = match.end()
    return fields


def test_logfmt_quotes_and_escapes_what_would_break_the_line() -> None:
    err = _log("""setup_logging("info")
log = logging.getLogger("tft.test")
log.info('rate(x{job="a b"}[5m]) = 3 \\\\ done\\nnext line')
try:
    raise RuntimeError("boom")
except RuntimeError:
    log.exception("failed")
""")
    lines = err.splitlines()
    assert len(lines) == 2, err
    first, second = (parse_logfmt(line) for line in lines)
    assert first["msg"] == 'rate(x{job="a b"}[5m]) = 3 \\ done\nnext line'
    assert first["level"] == "INFO" and re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", first["ts"])
    assert second["msg"] == "failed" and second["exc"].startswith("Traceback") and "RuntimeError: boom" in second["exc"]


@pytest.mark.parametrize("fmt", ["logfmt", "json"])
def test_every_line_of_a_real_run_parses(fmt: str) -> None:
    """A forecaster cycle against a Prometheus that is not there: retries, warnings, PromQL with quotes."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: connections are refused
    proc = subprocess.run([sys.executable, "-m", "forecaster", "--once", "--prometheus.url", f"http://127.0.0.1:{port}",
                           "--log.level", "debug", "--log.format", fmt], capture_output=True, text=True, timeout=180,
                          cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1"})
    lines = proc.stderr.splitlines()
    records = [json.loads(line) if fmt == "json" else parse_logfmt(line) for line in lines]
    assert len(records) >= 5 and all({"ts", "level", "logger", "msg"} <= r.keys() for r in records), proc.stderr
    assert any(r["level"] == "WARNING" and 'mode="idle"' in r["msg"] for r in records), proc.stderr


def test_logfmt_is_the_default_and_levels_are_checked() -> None:
    err = _log("""setup_logging("warn")
logging.getLogger("tft.test").warning("disk %s", "full")
logging.getLogger("tft.test").info("hidden")
""")
    assert err.count("\n") == 1 and 'level=WARNING logger=tft.test msg="disk full"' in err, err
    assert level_number("warning") == level_number("warn") == logging.WARNING
    assert level_number("debug") == logging.DEBUG
    with pytest.raises(ValueError, match="log level"):
        setup_logging("loud")
    with pytest.raises(ValueError, match="log format"):
        setup_logging("info", "xml")


def test_package_version_is_a_version() -> None:
    version = package_version()
    assert version and version[0].isdigit() and " " not in version


# --- the HTTP server -------------------------------------------------------------------------------------------------


def _app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
    path = environ["PATH_INFO"]
    if path == "/stream":  # no length: only closing the connection can end the body
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"a", b"b"]
    if path == "/boom":
        raise RuntimeError("boom")
    body = f"{environ['REQUEST_METHOD']} {path} {environ['QUERY_STRING']}\n".encode()
    return respond(start_response, 200, "text/plain; charset=utf-8", body, head=environ["REQUEST_METHOD"] == "HEAD")


def _connect(url: str) -> http.client.HTTPConnection:
    host, _, port = url.removeprefix("http://").rpartition(":")
    return http.client.HTTPConnection(host.strip("[]"), int(port), timeout=10)


@pytest.mark.parametrize("address", ["127.0.0.1:0", pytest.param("[::1]:0", marks=needs_ipv6)])
def test_serve_keeps_the_connection_and_answers_in_http_1_1(address: str) -> None:
    server, thread = serve(_app, address, name="test-http")
    try:
        url = server_url(server)
        assert url.startswith("http://[::1]:" if address.startswith("[") else "http://127.0.0.1:")
        conn = _connect(url)
        for query in ("a=1", "b=2"):
            conn.request("GET", f"/x?{query}")
            reply = conn.getresponse()
            assert (reply.version, reply.status, reply.read()) == (11, 200, f"GET /x {query}\n".encode())
            assert reply.getheader("Content-Length") == str(len(f"GET /x {query}\n")) and not reply.will_close
        sock = conn.sock
        conn.request("HEAD", "/x")
        reply = conn.getresponse()
        assert reply.status == 200 and reply.read() == b"" and reply.getheader("Content-Length") == "9"
        assert conn.sock is sock is not None  # three requests, one connection
        conn.request("GET", "/stream")
        reply = conn.getresponse()
        assert reply.will_close and reply.getheader("Connection") == "close" and reply.read() == b"ab"
        conn.close()
        conn = _connect(url)
        conn.request("GET", "/boom")
        reply = conn.getresponse()
        assert reply.status == 500 and reply.getheader("Connection") == "close"
        conn.close()
    finally:
        shutdown(server, thread)
    assert not thread.is_alive()


def test_a_taken_port_fails_at_serve() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        with pytest.raises(OSError):
            serve(_app, f"127.0.0.1:{sock.getsockname()[1]}")


@needs_ipv6
def test_wildcard_binds_are_shown_as_loopback() -> None:
    for address, prefix in (("0.0.0.0:0", "http://127.0.0.1:"), ("[::]:0", "http://[::1]:")):
        server, thread = serve(_app, address)
        try:
            assert server_url(server).startswith(prefix)
        finally:
            shutdown(server, thread)


def test_staged_files_appear_together_or_not_at_all(tmp_path: Path) -> None:
    from toolkit.files import staged

    a, b = tmp_path / "out" / "a.parquet", tmp_path / "out" / "a.json"
    with pytest.raises(RuntimeError), staged([a, b]) as tmp:
        tmp[a].write_text("rows")
        raise RuntimeError("the second file could not be written")
    assert list((tmp_path / "out").iterdir()) == []  # neither the finished one nor a temporary
    with staged([a, b]) as tmp:
        tmp[a].write_text("rows")
        tmp[b].write_text("{}")
        assert not a.exists()  # published only at the end
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.json", "a.parquet"]
    assert a.read_text() == "rows"
