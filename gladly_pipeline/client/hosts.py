"""Builds and checks the Gladly base URL before any request is made."""

import ipaddress
import re
from typing import Optional
from urllib.parse import urlsplit

# One DNS label: letters, digits and inner hyphens, at most 63 characters.
_LABEL = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")
_LOOPBACK_NAMES = {"localhost"}


def resolve_base_url(*, subdomain: Optional[str] = None, base_url: Optional[str] = None) -> str:
    """Returns `scheme://host[:port]` for the organisation.

    A subdomain gives `https://{subdomain}.gladly.com`. A full base URL covers region
    hosts (`acme.us-1.gladly.com`), sandboxes (`acme.gladly.qa`) and the local emulator;
    it must be https unless it points at this machine.
    """
    if base_url:
        return _check_base_url(base_url)
    if subdomain:
        if not _LABEL.match(subdomain):
            raise ValueError(
                f"Gladly subdomain {subdomain!r} is not valid: use only letters, digits and "
                "'-' (the part before .gladly.com), or set a full base URL instead"
            )
        return f"https://{subdomain}.gladly.com"
    raise ValueError("Gladly host is not configured: set GLADLY_SUBDOMAIN or GLADLY_BASE_URL")


def _check_base_url(raw: str) -> str:
    parts = urlsplit(raw.strip())
    example = "expected e.g. https://acme.us-1.gladly.com"
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ValueError(f"Gladly base URL {raw!r} is not a URL: {example}")
    try:
        parts.port  # noqa: B018 - urlsplit checks the port only when it is read
    except ValueError:
        raise ValueError(f"Gladly base URL {raw!r} has an invalid port: {example}") from None
    if not is_loopback(parts.hostname) and not all(
        _LABEL.match(label) for label in parts.hostname.split(".")
    ):
        raise ValueError(f"Gladly base URL {raw!r} has an invalid host name: {example}")
    if parts.username or parts.password or parts.query or parts.fragment:
        raise ValueError(
            "Gladly base URL must not carry credentials, a query or a fragment; "
            "set the username and token separately"
        )
    if parts.scheme == "http" and not is_loopback(parts.hostname):
        raise ValueError(
            f"Gladly base URL {raw!r} uses plain http: only https is allowed, except for "
            "an emulator on this machine (127.0.0.1, ::1, localhost)"
        )
    path = parts.path.rstrip("/")
    # Every API path already starts with /api/v1; accept a URL that includes it.
    if path not in ("", "/api/v1"):
        raise ValueError(
            f"Gladly base URL {raw!r} has a path: give only the scheme and host ({example})"
        )
    return f"{parts.scheme}://{parts.netloc}"


def is_loopback(hostname: str) -> bool:
    if hostname.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(hostname).is_loopback
    except ValueError:
        return False
