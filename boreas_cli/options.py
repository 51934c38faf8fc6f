"""Options several command groups take alike."""

from __future__ import annotations

from typing import Annotated

import typer

Wait = Annotated[bool, typer.Option("--wait", "-w", help="Watch until it gets there.")]
Timeout = Annotated[
    float | None,
    typer.Option(help="With --wait or watch: give up (exit 1) after this many seconds."),
]
Limit = Annotated[int | None, typer.Option(help="At most this many (newest first).")]
