"""The `http` setting: `HOST:PORT` (port 0: any free port) or `off`."""

from __future__ import annotations

import ipaddress

from daemon.errors import SettingsError

OFF = "off"


def parse_address(text: str) -> tuple[str, int] | None:
    """`127.0.0.1:8787` -> ('127.0.0.1', 8787); `[::1]:0` -> ('::1', 0); `off` -> None."""
    value = text.strip()
    if value.lower() == OFF:
        return None
    host, sep, port = value.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise SettingsError(
            f"setting 'http' (--http, FLOWERD_HTTP or flowerd.toml): {text!r} is not "
            "HOST:PORT (e.g. 127.0.0.1:8787; port 0 picks a free one) or 'off'"
        )
    return host, int(port)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name other than localhost
        return False


def base_url(host: str, port: int) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}"


def unit_notes(http: str, has_token: bool) -> list[str]:
    """Comment lines for `flowerd service print`: how to reach the page and metrics."""
    try:
        address = parse_address(http)
    except SettingsError:
        address = None
    if address is None:
        return ['# HTTP (metrics, API, page) is off: set http = "127.0.0.1:8787" to turn it on.']
    host, port = address
    url = base_url(host, port)
    lines = [
        f"# HTTP: {url}/ (page), /metrics (Prometheus), /healthz, /api/... (setting `http`).",
    ]
    if is_loopback(host):
        lines += [
            f"#   From your machine: ssh -N -L 8787:{url.removeprefix('http://')} THIS_HOST,",
            "#   then open http://localhost:8787/ -- or put a reverse proxy with TLS and auth",
            f"#   in front (nginx: location / {{ proxy_pass {url}; }}).",
        ]
    if not has_token:
        lines.append("#   Run / pause / resume over HTTP need http_token (flowerd.toml).")
    return lines
