"""Tag and destination registries: config ``type`` -> module. Explicit and sorted.

A tag module has ``Config``, ``build`` and ``DESTINATION`` (the sender that
delivers its items). A destination module has ``Config`` (its section under
``destinations``, or ``None`` when it needs none) and ``Sender``.
"""

from types import ModuleType

from tags import _http_sender, http_request

TAGS: dict[str, ModuleType] = {
    "http_request": http_request,
}

DESTINATIONS: dict[str, ModuleType] = {
    "http_request": _http_sender,
}
