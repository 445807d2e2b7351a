"""The FastAPI application: REST API, OpenAPI docs, and the dispatcher's lifetime."""

from __future__ import annotations

from contextlib import asynccontextmanager

from fastapi import FastAPI
from sqlalchemy import text

from frankensweep import __version__
from frankensweep.api import dashboard
from frankensweep.api.errors import register_error_handlers
from frankensweep.api.guard import RequestGuard
from frankensweep.api.limits import BodyLimits
from frankensweep.api.routes import candidates, sweeps
from frankensweep.core.config import Settings, get_settings
from frankensweep.db import make_engine, make_sessionmaker, upgrade


def create_app(settings: Settings | None = None, dispatch: bool = True) -> FastAPI:
    """The app; ``dispatch=False`` stores sweeps without evaluating them (tests, read replicas)."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        upgrade(settings.database_url)
        engine = make_engine(settings.database_url)
        app.state.settings = settings
        app.state.engine = engine
        app.state.sessions = make_sessionmaker(engine)
        if dispatch:
            from frankensweep.worker.dispatch import make_dispatcher

            app.state.dispatcher = make_dispatcher(app.state.sessions, settings)
            app.state.dispatcher.resume()
        else:
            app.state.dispatcher = _NoDispatch()
        try:
            yield
        finally:
            app.state.dispatcher.close()
            engine.dispose()

    app = FastAPI(
        title="frankensweep",
        version=__version__,
        summary="Search passthrough self-merges of an LLM without writing merged models.",
        lifespan=lifespan,
    )
    app.add_middleware(
        BodyLimits, max_bytes=settings.max_request_bytes, read_timeout=settings.read_timeout
    )
    app.add_middleware(  # added last: runs first
        RequestGuard, hosts=settings.host_allowlist(), origins=settings.origin_allowlist()
    )
    register_error_handlers(app)  # database down: 503, retry
    app.include_router(sweeps.router)
    app.include_router(candidates.router)
    app.include_router(dashboard.router)

    @app.get("/healthz", tags=["health"])
    def healthz() -> dict:
        """Liveness and database reachability."""
        with app.state.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        mode = "embedded" if settings.embedded else "celery"
        return {"status": "ok", "version": __version__, "mode": mode}

    return app


class _NoDispatch:
    def submit(self, sweep_id: int) -> None: ...
    def resume(self) -> None: ...
    def close(self) -> None: ...
