"""Exception handlers: what the user must change answers 422, a database that is down 503."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from frankensweep.core.errors import UserError, first_line
from frankensweep.db.session import DATABASE_DOWN
from frankensweep.sweeps.submission import TooManyActive

log = logging.getLogger(__name__)

RETRY_AFTER_SECONDS = 5


async def database_unavailable(request: Request, exc: Exception) -> JSONResponse:
    """503 with Retry-After: the request may be sent again once the database is back."""
    log.warning(
        "database unavailable on %s %s: %s", request.method, request.url.path, first_line(exc)
    )
    return JSONResponse(
        status_code=503,
        content={"detail": "database unavailable, retry in a few seconds"},
        headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
    )


async def too_many_active(request: Request, exc: Exception) -> JSONResponse:
    """429: a temporary refusal, retryable once a sweep ends (not a fault of the request)."""
    return JSONResponse(status_code=429, content={"detail": str(exc)})


async def user_error(request: Request, exc: Exception) -> JSONResponse:
    """422 shaped like FastAPI's own validation errors; ``loc`` names the field when known."""
    loc = list(getattr(exc, "loc", None) or ["body"])
    return JSONResponse(
        status_code=422,
        content={"detail": [{"loc": loc, "msg": str(exc), "type": "value_error"}]},
    )


def register_error_handlers(app: FastAPI) -> None:
    for exc_type in DATABASE_DOWN:
        app.add_exception_handler(exc_type, database_unavailable)
    app.add_exception_handler(UserError, user_error)
    app.add_exception_handler(TooManyActive, too_many_active)
