"""Exception handlers: a database that is down answers 503 (retry later), not 500."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from frankensweep.db.session import DATABASE_DOWN

log = logging.getLogger(__name__)

RETRY_AFTER_SECONDS = 5


async def database_unavailable(request: Request, exc: Exception) -> JSONResponse:
    """503 with Retry-After: the request may be sent again once the database is back."""
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    log.warning("database unavailable on %s %s: %s", request.method, request.url.path, first)
    return JSONResponse(
        status_code=503,
        content={"detail": "database unavailable, retry in a few seconds"},
        headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
    )


def register_error_handlers(app: FastAPI) -> None:
    for exc_type in DATABASE_DOWN:
        app.add_exception_handler(exc_type, database_unavailable)
