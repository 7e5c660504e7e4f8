"""The engineers' web console: server-rendered pages on the domain functions, live by server-sent events."""

from __future__ import annotations

from fastapi import FastAPI


def mount(app: FastAPI) -> None:
    """Add the console's pages, its static files and its event stream to the app."""
    from hisguard.server.web.routes import install

    install(app)
