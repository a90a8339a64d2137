"""Small helpers shared by the HTTP handlers (settings of the running app, client address)."""

from __future__ import annotations

from typing import Any

from mpr.settings import Settings, get_settings


def app_settings(request: Any) -> Settings:
    """The settings the app was created with (``create_app(settings)``), else the process settings."""
    settings = getattr(request.app.state, "settings", None)
    return settings if settings is not None else get_settings()


def client_ip(request: Any) -> str:
    """The peer address of the request (the TCP peer; proxies are not trusted)."""
    client = request.client
    return client.host if client else "unknown"
