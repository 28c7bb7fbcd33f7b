"""Errors raised by the Gladly client, sorted into retriable and fatal."""

from typing import Optional


class GladlyError(Exception):
    """Base class: something went wrong talking to Gladly."""


class GladlyHTTPError(GladlyError):
    """Gladly answered with an error status that retrying will not fix."""

    def __init__(self, message: str, *, status: int, path: str, code: Optional[str] = None):
        super().__init__(message)
        self.status = status
        self.path = path
        self.code = code


class GladlyAuthError(GladlyHTTPError):
    """401: the username or API token was refused."""


class GladlyPermissionError(GladlyHTTPError):
    """403: the credentials are valid but lack the API User permission."""


class GladlyNotFound(GladlyHTTPError):
    """404: the host has no such organisation, or the object does not exist."""


class GladlyMoved(GladlyHTTPError):
    """301: the customer id was merged into `new_id` (reference §4, §15.3)."""

    def __init__(self, message: str, *, path: str, new_id: str):
        super().__init__(message, status=301, path=path, code="moved")
        self.new_id = new_id


class GladlyBadRequest(GladlyHTTPError):
    """400: Gladly rejected the request's parameters."""


class GladlyUnavailable(GladlyError):
    """Transient failures (429, 5xx, network) outlasted the retry budget."""


class GladlyDataError(GladlyError):
    """A response or export file could not be trusted (mostly garbage, cut short)."""
