"""Client registry: config ``type`` -> module. Explicit, sorted, complete (a test checks)."""

from types import ModuleType

from clients import ga4, json_beacon

CLIENTS: dict[str, ModuleType] = {
    "ga4": ga4,
    "json_beacon": json_beacon,
}
