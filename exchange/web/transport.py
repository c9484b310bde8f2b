"""Requests refused for their shape before anything else looks at them: a Host that names no host.

RFC 9112 section 3.2: a server answers 400 to a request with an invalid Host value. Checked
first, so nothing later (aiohttp's ``request.url`` among it, which raises on a port of 99999)
ever meets a Host it cannot parse.
"""

from __future__ import annotations

import ipaddress
import re

from aiohttp import web
from aiohttp.typedefs import Handler

from exchange.errors import InvalidRequest

# RFC 3986 section 3.2.2: reg-name = *( unreserved / pct-encoded / sub-delims ), non-empty here
# (RFC 9110 section 4.2.1: an "http" URI has a host); IP-literal = "[" ( IPv6address / IPvFuture ) "]";
# then an optional port of digits (RFC 9110 section 7.2: Host = uri-host [ ":" port ]).
_HOST = re.compile(
    r"(?:(?P<name>(?:[A-Za-z0-9._~!$&'()*+,;=-]|%[0-9A-Fa-f]{2})+)"
    r"|\[(?P<ipv6>[0-9A-Fa-f:.]+)\]|\[[vV][0-9A-Fa-f]+\.[A-Za-z0-9._~!$&'()*+,;=:-]+\])"
    r"(?::(?P<port>[0-9]{0,5}))?"
)


def valid_host(value: str) -> bool:
    """Whether ``value`` is ``host [ ":" port ]`` with a port of at most 65535."""
    match = _HOST.fullmatch(value)
    if match is None:
        return False
    if match.group("port") and int(match.group("port")) > 65535:
        return False
    if match.group("ipv6") is not None:
        try:
            ipaddress.IPv6Address(match.group("ipv6"))
        except ValueError:
            return False
    return True


@web.middleware
async def host_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Refuse (400) a Host that is not ``host [ ":" port ]``, before anything reads it.

    A missing Host on HTTP/1.1, or a repeated one, aiohttp's parser refuses itself (400).
    """
    host = request.headers.get("Host")
    if host is not None and not valid_host(host):
        raise InvalidRequest("The request's Host header does not name a host (and a port of at most 65535).")
    return await handler(request)
