"""One reading of `OLLAMA_HOST`-style addresses, for the server, the CLI and the kernel alike.

Ollama's rules (envconfig.Host): `[scheme://]host[:port][/path]`; without a scheme the scheme is
http and the port 11434; an explicit `http://` or `https://` without a port means 80 or 443; bare
`ollama.com` means https on 443; a port that is not a number in range falls back to
127.0.0.1 and the default port. A server binds the host as given (empty or 0.0.0.0: every
interface); a client connects to 127.0.0.1 in place of a wildcard address.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from hana_protocol.env import env_value

DEFAULT_PORT = 11434
DEFAULT_HOST = "127.0.0.1"
WILDCARD_HOSTS = frozenset({"", "0.0.0.0", "::"})
HOST_VARIABLES = ("HANA_HOST", "OLLAMA_HOST")


@dataclass(frozen=True)
class HostAddress:
    """Where a server listens and where its clients connect."""

    scheme: str = "http"
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    path: str = ""

    @property
    def bind_host(self) -> str:
        """The address to bind: empty means every interface, as Go's net.Listen reads it."""
        return self.host or "0.0.0.0"

    @property
    def connect_host(self) -> str:
        """The address a client on this machine dials: a wildcard means this machine."""
        return DEFAULT_HOST if self.host in WILDCARD_HOSTS else self.host

    @property
    def url(self) -> str:
        """The client URL, `scheme://host:port/[path/]`, IPv6 hosts in brackets."""
        host = self.connect_host
        if ":" in host:
            host = f"[{host}]"
        prefix = f"/{self.path.strip('/')}/" if self.path.strip("/") else "/"
        return f"{self.scheme}://{host}:{self.port}{prefix}"


def _split_host_port(hostport: str) -> tuple[str, str] | None:
    """Go's net.SplitHostPort: None where it fails (no port, or an unbracketed IPv6 address)."""
    if hostport.startswith("["):
        end = hostport.find("]")
        if end < 0 or hostport[end + 1 : end + 2] != ":":
            return None
        return hostport[1:end], hostport[end + 2 :]
    host, sep, port = hostport.rpartition(":")
    if not sep or ":" in host:
        return None
    return host, port


def parse_host(value: str | None) -> HostAddress:
    """Read `[scheme://]host[:port][/path]` exactly as Ollama reads OLLAMA_HOST."""
    text = (value or "").strip()
    default_port = DEFAULT_PORT
    scheme, sep, hostport = text.partition("://")
    if not sep:
        scheme, hostport = "http", text
        if text == "ollama.com":
            scheme, hostport = "https", "ollama.com:443"
    elif scheme == "http":
        default_port = 80
    elif scheme == "https":
        default_port = 443
    hostport, _, path = hostport.partition("/")
    split = _split_host_port(hostport)
    if split is None:
        host, port_text = DEFAULT_HOST, str(default_port)
        bare = hostport.strip("[]")
        try:
            host = str(ipaddress.ip_address(bare))
        except ValueError:
            if hostport:
                host = hostport
    else:
        host, port_text = split
    try:
        port = int(port_text)
    except ValueError:
        port = -1
    if not port_text.isdigit() or not 0 <= port <= 65535:
        return HostAddress(scheme, DEFAULT_HOST, default_port, path)
    return HostAddress(scheme, host, port, path)


def host_from_env() -> HostAddress:
    """The shared port's address: $HANA_HOST, then $OLLAMA_HOST, else 127.0.0.1:11434."""
    return parse_host(env_value(*HOST_VARIABLES))


def normalize_url(url: str) -> str:
    """Any accepted form (`host`, `host:port`, `[::1]:port`, a URL) as the client URL."""
    return parse_host(url).url
