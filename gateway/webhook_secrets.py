"""A signed client's secret: never a public default, and never a guessable one.

Whoever knows a webhook client's secret can forge purchases, refunds and
cancellations. So when the container is loaded, every client whose config
has a ``secret`` (the order webhooks) is held to this:

- a secret that is absent (no key, or a ``${VAR:-}`` whose variable is
  unset) switches the client off: its routes answer 503
  ``{"error": "webhook not configured"}`` and the start-up log says which
  variable to set. The sample container runs with no variable set this way;
- a secret shorter than ``MIN_BYTES`` or a known placeholder (``change-me``
  and the like) is a config error that names the variable to set, so
  ``gateway validate`` and ``gateway serve`` both refuse it.

Messages never repeat a secret; a placeholder is named only by its shape.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from types import ModuleType

MIN_BYTES = 16

# Placeholders as documentation and sample files write them, compared with case and
# punctuation removed: "change-me", "CHANGE_ME", "<your secret>" ...
_PLACEHOLDERS = frozenset({
    "changeme", "replaceme", "secret", "password", "example", "test", "placeholder", "todo", "yoursecret",
    "mysecret", "webhooksecret", "default", "none", "null", "undefined", "xxx", "insertsecrethere", "setme",
})
_PLACEHOLDER_WORDS = ("changeme", "replaceme", "yoursecret", "insertsecret", "setme")
_NOT_ALNUM = re.compile(r"[^a-z0-9]+")


@dataclass(frozen=True, slots=True)
class SwitchedOff:
    """A signed client left out because its secret is not set: its routes answer 503."""

    type: str
    module: ModuleType
    path: str  # clients[i]
    variable: str

    def warning(self) -> str:
        routes = ", ".join(f"{method} {route}" for method, route in self.module.ROUTES)
        return (f"{self.path} ({self.type}) is switched off: {self.variable} is not set; "
                f"{routes} answers 503 until it is")


def has_secret(module: ModuleType) -> bool:
    """True for a client whose requests are signed with a shared secret."""
    return "secret" in module.Config.model_fields


def suggested_variable(client_type: str) -> str:
    """The environment variable the docs and the sample container use for this client's secret."""
    name = client_type.upper()
    return f"{name}_SECRET" if name.endswith("_WEBHOOK") else f"{name}_WEBHOOK_SECRET"


def placeholder(secret: str) -> str | None:
    """How to name ``secret`` in a message when it is a placeholder (only ever the placeholder); else None."""
    folded = _NOT_ALNUM.sub("", secret.lower())
    if folded in _PLACEHOLDERS:
        return secret
    if folded and len(set(folded)) == 1:
        return f"{folded[0] * 3}..."
    for word in _PLACEHOLDER_WORDS:
        if folded.startswith(word):
            return f"{word}-..."
    return None


def secret_problem(secret: str, client_type: str, variables: list[str]) -> str | None:
    """What is wrong with a set secret, and which variable to set instead; None when it is fine."""
    if variables:
        fix = f"set {variables[0]}"
    else:  # written into the file itself
        variable = suggested_variable(client_type)
        fix = f"write ${{{variable}}} here and set {variable}"
    fix += " to the secret the sender signs with (16 bytes or more)"
    shape = placeholder(secret)
    if shape is not None:
        return f"{shape} is a placeholder, not a secret; {fix}"
    if len(secret.encode("utf-8")) < MIN_BYTES:
        return f"shorter than {MIN_BYTES} bytes; {fix}"
    return None
