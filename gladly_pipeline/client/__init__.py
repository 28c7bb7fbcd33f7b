"""Gladly REST API client."""

from .api import (
    CONVERSATIONS_PER_CUSTOMER_CAP,
    ITEMS_PER_CONVERSATION_CAP,
    CappedList,
    GladlyClient,
    ProfileLookup,
    RequestStats,
    RetryPolicy,
)
from .errors import (
    GladlyAuthError,
    GladlyBadRequest,
    GladlyDataError,
    GladlyError,
    GladlyHTTPError,
    GladlyMoved,
    GladlyNotFound,
    GladlyPermissionError,
    GladlyUnavailable,
)
from .hosts import resolve_base_url

__all__ = [
    "CONVERSATIONS_PER_CUSTOMER_CAP",
    "ITEMS_PER_CONVERSATION_CAP",
    "CappedList",
    "GladlyAuthError",
    "GladlyBadRequest",
    "GladlyClient",
    "GladlyDataError",
    "GladlyError",
    "GladlyHTTPError",
    "GladlyMoved",
    "GladlyNotFound",
    "GladlyPermissionError",
    "GladlyUnavailable",
    "ProfileLookup",
    "RequestStats",
    "RetryPolicy",
    "resolve_base_url",
]
