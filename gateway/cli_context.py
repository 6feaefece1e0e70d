"""What every ``gateway`` command starts from: the container file, loaded or refused, and a storage opened for one action.

Its own module so that the command modules outside ``gateway.cli`` (the
debugger's ``explain`` and ``resend``, in ``gateway.debug.commands``) share
these with it without importing the command line itself, which imports them.
"""

from __future__ import annotations

import sys
from typing import Any, Awaitable, Callable

from gateway.config import CONFIG_ENV, Container, UnreadableContainer, load_container_file, serving_problems
from gateway.errors import ConfigError
from gateway.storage import open_storage
from gateway.storage.base import Storage


def load_container(path: str | None, serving: bool = False) -> Container:
    """The container at ``path``, or exit 1 with every problem in it on stderr, one per line.

    ``serving`` adds what only matters to a gateway that serves requests (a container without clients).
    """
    if not path:
        raise SystemExit(f"gateway: no container file: pass --config FILE or set {CONFIG_ENV}")
    try:
        container = load_container_file(path)
        errors = serving_problems(container) if serving else []
    except UnreadableContainer as exc:
        raise SystemExit(f"gateway: {exc.errors[0]}") from None
    except ConfigError as exc:
        errors = exc.errors
    if errors:
        print(f"{path}: {len(errors)} error(s)", file=sys.stderr)
        for line in errors:
            print(f"  {line}", file=sys.stderr)
        raise SystemExit(1)
    return container


async def with_storage(container: Container, action: Callable[[Storage], Awaitable[Any]]) -> Any:
    """Open the container's storage, run ``action`` on it, and close it whatever happens."""
    storage = open_storage(container.file.storage)
    await storage.open()
    try:
        return await action(storage)
    finally:
        await storage.close()
