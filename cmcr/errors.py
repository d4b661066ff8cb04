"""How the command line and the pipeline stages report a bad input: one line, not a traceback."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator


@contextlib.contextmanager
def one_line_errors(prog: str, errors: tuple[type[BaseException], ...]) -> Iterator[None]:
    """Inside the block, an exception of ``errors`` (a bad input or config: its message names the file or key)
    prints as ``<prog>: error: <message>`` on stderr and exits with status 1; anything else keeps its
    traceback (a bug). ``CMCR_TRACEBACK=1`` shows tracebacks for all."""
    try:
        yield
    except errors as exc:
        if os.environ.get("CMCR_TRACEBACK"):
            raise
        print(f"{prog}: error: {exc}", file=sys.stderr)
        sys.exit(1)
