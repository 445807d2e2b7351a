"""The Typer app of the ``frankensweep`` command, its consoles and shared helpers.

Command modules (``local``, ``service``) register on :data:`app`; ``frankensweep.cli.main`` runs
it. User errors (:class:`~frankensweep.core.errors.UserError`) print one ``error:`` line and
exit with code 2, as usage errors do.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from frankensweep.core.errors import UserError

if TYPE_CHECKING:
    from frankensweep.models import LoadOptions

# tqdm reads its settings on import: GGUF de-quantization shows a bare tqdm bar otherwise
os.environ.setdefault("TQDM_DISABLE", "1")

__all__ = [
    "CliError",
    "DeviceMapOpt",
    "DeviceOpt",
    "DtypeOpt",
    "MaxMemoryOpt",
    "ModelOpt",
    "QuantizationOpt",
    "app",
    "err",
    "fail",
    "load_model",
    "out",
    "progress_bar",
    "quiet_libraries",
    "status",
]

app = typer.Typer(
    help="Search passthrough self-merges (frankenmerges) of an LLM without writing merged models.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
err = Console(stderr=True, emoji=False)
out = Console(highlight=False, soft_wrap=True, emoji=False)


class CliError(UserError):
    """A user error found by the command line itself."""


def fail(message: str) -> NoReturn:
    """Print ``error: message`` on one line to stderr and exit with code 2."""
    err.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(2)


def quiet_libraries() -> None:
    """Silence transformers' own progress bars and warnings: the CLI shows its own."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    logging.getLogger("transformers").setLevel(logging.ERROR)
    # bitsandbytes on CPU: "no CPU kernel package, using the torch fallback", once per load,
    # and int8's "inputs will be cast to float16" on every matmul
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message=r"MatMul8bitLt: inputs will be cast")


def progress_bar() -> Progress:
    return Progress(
        SpinnerColumn(),
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=err,
        transient=True,
    )


@contextmanager
def status(message: str) -> Iterator[None]:
    with err.status(message):
        yield


def load_model(spec: str, device: str, dtype: str, load: LoadOptions | None = None):
    """Load a base model with a spinner (as ``load`` says, default ``dtype`` on ``device``);
    user errors become one-line exits."""
    from frankensweep.worker.loading import load_base_model

    quiet_libraries()
    what = f" ({load.describe()})" if load is not None else ""
    with status(f"loading {spec}{what}"):
        return load_base_model(spec, device=device, dtype=dtype, load=load)


ModelOpt = Annotated[
    str, typer.Option("--model", "-m", help="Hugging Face directory, hub id or .gguf file.")
]
DeviceOpt = Annotated[str, typer.Option(help="auto (CUDA when present), cpu, cuda, cuda:N.")]
DtypeOpt = Annotated[
    str, typer.Option("--dtype", help="auto (bf16 on CUDA, fp32 on CPU), float32, bfloat16...")
]
QuantizationOpt = Annotated[
    str, typer.Option(help="none, nf4 or int8 (bitsandbytes; CPU too, slowly).")
]
DeviceMapOpt = Annotated[
    str | None,
    typer.Option(
        help="auto: spread over every visible GPU, then CPU, then disk (default: --device)."
    ),
]
MaxMemoryOpt = Annotated[
    str | None,
    typer.Option(help="With --device-map auto, caps per device: 0=70GiB,1=70GiB,cpu=100GiB."),
]
