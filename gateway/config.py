"""The container file: loading, ``${VAR}`` substitution, validation, compilation.

Everything that can be decided once is decided here, at load: client and tag
configs are validated by their own modules' models, triggers are compiled to
predicates, tag configs are resolved to their trigger and destination. A bad
file is reported all at once, one "key.path: message" line per problem, so
``gateway validate`` is useful on the first run.
"""

from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from types import ModuleType
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from gateway.client import ClientConfig
from gateway.consent import DEFAULT_REDACT_QUERY_PARAMETERS
from gateway.durations import Duration
from gateway.errors import ConfigError
from gateway.event import ConsentState, Source
from gateway.first_party import CookiesSection
from gateway.storage_url import FIELD as STORAGE_FIELD, SQLiteTarget, StorageUrlError, parse_storage_url, sqlite_url
from gateway.tag import TagConfig
from gateway.webhook_secrets import SwitchedOff, has_secret, secret_problem, suggested_variable

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-(.*?))?\}")
_REFERENCE = re.compile(r"\$\{[^}]*\}?")  # anything that starts like a reference, valid or not
CONFIG_ENV = "GATEWAY_CONFIG"  # the container file, for every subcommand and the image
STORAGE_URL_ENV = "GATEWAY_STORAGE_URL"  # storage.url when the container file names none


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ConsentDefaults(_Section):
    ad_storage: ConsentState = Field("denied", description="Assumed when a request carries no ad_storage signal.")
    analytics_storage: ConsentState = Field("denied", description="Assumed when a request carries no analytics_storage signal.")
    ad_user_data: ConsentState = Field("denied", description="Assumed when a request carries no ad_user_data signal.")
    ad_personalization: ConsentState = Field(
        "denied", description="Assumed when a request carries no ad_personalization signal."
    )


class ConsentSection(_Section):
    default: ConsentDefaults = Field(default_factory=ConsentDefaults, description="Assumed for a signal a request does not carry.")
    redact_query_parameters: list[str] = Field(
        default_factory=lambda: sorted(DEFAULT_REDACT_QUERY_PARAMETERS),
        description="Query parameters of page URLs whose value is replaced when ad_user_data is denied, "
        "whatever it holds (values that are email addresses, phone numbers or digests are replaced anyway).",
    )


class ServerSection(_Section):
    trusted_proxies: list[str] = Field(default_factory=list, description="CIDRs whose X-Forwarded-For is believed.")


class StorageSection(_Section):
    url: str = Field(
        "sqlite:///data/gateway.db",
        description="sqlite:///path (a relative path is relative to the container file) or "
        "postgresql://user:pass@host:port/db; unset, GATEWAY_STORAGE_URL if that is set.",
    )
    synchronous: Literal["full", "normal"] = Field(
        "full", description="SQLite fsync policy: full survives power loss, normal only process crashes."
    )
    checkpoint_pages: int = Field(
        250, ge=1, le=100_000,
        description="SQLite: the write-ahead log is copied into the database file each time it holds this many "
        "pages, inside the commit that crossed it, which every request then waiting shares. Fewer pages: "
        "shorter, more frequent pauses (a lower p99); more: a higher maximum rate (SQLite's own default is 1000).",
    )
    max_outbox_depth: int = Field(1_000_000, ge=1, description="Above this many pending items collection answers 503.")
    pool_size: int = Field(
        10, ge=1, le=1000,
        description="PostgreSQL: connections each gateway process keeps at most (every instance and worker has its own pool).",
    )
    command_timeout: Duration = Field(
        timedelta(seconds=10), gt=timedelta(0),
        description="PostgreSQL: longest wait to connect, for a free pooled connection, or for one statement; "
        "past it the request gets 503.",
    )


class LimitsSection(_Section):
    max_body_bytes: int = Field(65536, ge=1, description="Larger request bodies get 413.")
    max_events_per_request: int = Field(100, ge=1, description="Batched hits or beacons with more events get 400.")
    read_timeout: Duration = Field(
        timedelta(seconds=5), gt=timedelta(0),
        description="A request's headers, and then its body, must each arrive within this; "
        "else the answer is 408 and the connection closes.",
    )
    max_inflight_per_client: int = Field(
        512, ge=1,
        description="Requests of one client being processed at once (body read, waiting for the commit); "
        "past it that client gets 503 while the other clients keep their own share.",
    )


class DebugSection(_Section):
    """The /debug page and its API (gateway.debug); off unless enabled."""

    enabled: bool = Field(False, description="Serve /debug and record traces of recent requests in memory.")
    token: str = Field("", description="Bearer token for /debug (or its login form); required when enabled.")
    keep_last: int = Field(1000, ge=1, le=100_000, description="Requests whose traces are kept in memory.")

    def model_post_init(self, context: Any, /) -> None:
        # A debugger anyone can open would show every request's path: refuse to start without a token.
        if self.enabled and not self.token.strip():
            raise ValueError("debug.token must be set when debug.enabled is true")


class DeliverySection(_Section):
    max_attempts: int = Field(10, ge=1, description="Sends tried before an item is dead-lettered.")
    backoff_initial: Duration = Field(timedelta(seconds=1), description="Wait before the first retry.")
    backoff_max: Duration = Field(timedelta(minutes=10), description="Longest wait between retries.")
    lease: Duration = Field(timedelta(seconds=60), description="How long a claimed batch is reserved for one dispatcher.")
    poll_interval: Duration = Field(timedelta(milliseconds=200), description="How often the dispatcher looks for due work.")
    retention: Duration = Field(timedelta(days=7), description="How long delivered items, request keys and settled vendor requests (Data Manager request ids) are kept, for idempotency and audit.")
    concurrency: int = Field(8, ge=1, description="Batches in flight at once.")
    request_timeout: Duration = Field(timedelta(seconds=30), description="Timeout of one outgoing request.")


class OrdersSection(_Section):
    """The order ledger, fed by the order clients (order_webhook, shopify, woocommerce) and by purchase hits."""

    hold_unknown_refunds: Duration = Field(
        timedelta(hours=72),
        description="How long a refund or cancellation of an order the ledger has not seen waits for that order; "
        "then it is dead-lettered with the code order_not_found. A partial refund of an order known only from a "
        "browser hit waits as long for the order system's total, then is applied to the uploaded value.",
    )
    hold_pending_refunds: Duration = Field(
        timedelta(days=30),
        description="How long a refund whose money is still pending (Shopify) waits for a webhook that shows it "
        "succeeded; then it is dead-lettered with the code refund_still_pending.",
    )
    sweep_interval: Duration = Field(
        timedelta(seconds=60), gt=timedelta(0),
        description="How often held refunds are checked for their order and for expiry.",
    )
    retention: Duration = Field(
        timedelta(days=180),
        description="How long an order stays in the ledger after its conversion was recorded; "
        "a refund after that is held and dead-lettered like one for an unknown order.",
    )


class ContainerFile(_Section):
    consent: ConsentSection = Field(default_factory=ConsentSection)
    server: ServerSection = Field(default_factory=ServerSection)
    storage: StorageSection = Field(default_factory=StorageSection)
    limits: LimitsSection = Field(default_factory=LimitsSection)
    debug: DebugSection = Field(default_factory=DebugSection)
    delivery: DeliverySection = Field(default_factory=DeliverySection)
    orders: OrdersSection = Field(default_factory=OrdersSection)
    cookies: CookiesSection = Field(default_factory=CookiesSection)
    clients: list[dict[str, Any]] = Field(default_factory=list)
    destinations: dict[str, dict[str, Any]] = Field(default_factory=dict)
    triggers: dict[str, Any] = Field(default_factory=dict)
    tags: list[dict[str, Any]] = Field(default_factory=list)


@dataclass(frozen=True, slots=True)
class ClientEntry:
    module: ModuleType
    config: ClientConfig
    source: Source  # the stamp every event of this client gets (built once, shared: it is frozen)


@dataclass(frozen=True, slots=True)
class TagEntry:
    module: ModuleType
    config: TagConfig
    trigger: Any  # rules.Trigger
    destination: str


@dataclass(slots=True)
class Container:
    """A loaded, validated, compiled container: what the running gateway uses."""

    file: ContainerFile
    clients: list[ClientEntry]
    destinations: dict[str, Any]  # destination name -> its validated config (None when it has none)
    triggers: dict[str, Any]
    tags: list[TagEntry]
    trusted_proxies: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = field(default=())
    switched_off: tuple[SwitchedOff, ...] = field(default=())  # signed clients whose secret is not set

    @property
    def warnings(self) -> list[str]:
        """What an operator should know that does not stop the gateway: one line each."""
        return [client.warning() for client in self.switched_off]

    @property
    def consent_defaults(self) -> ConsentDefaults:
        return self.file.consent.default


def substitute_env(
    value: Any, path: str, errors: list[str], env: dict[str, str], sources: dict[str, list[str]] | None = None
) -> Any:
    """Replace ``${NAME}`` and ``${NAME:-default}`` in every string value.

    ``sources`` (when given) collects, per key path, the variables a value
    was built from, so an error about the value can name the variable to set.
    """
    if isinstance(value, str):
        if "${" not in value:
            return value
        used: list[str] = []

        def replace(match: re.Match[str]) -> str:
            reference = _VAR.fullmatch(match.group(0))
            if reference is None:
                errors.append(f"{path}: {_shape(match.group(0))} is not a valid reference: "
                              "write ${NAME} or ${NAME:-default}")
                return ""
            name, default = reference.group(1), reference.group(2)
            used.append(name)
            if name in env and env[name] != "":
                return env[name]
            if default is not None:
                return default
            if name in env:
                return ""
            errors.append(f"{path}: environment variable {name} is not set "
                          f"(write ${{{name}:-default}} to give it a default)")
            return ""

        result = _REFERENCE.sub(replace, value)
        if sources is not None and used:
            sources[path] = used
        return result
    if isinstance(value, dict):
        return {k: substitute_env(v, f"{path}.{k}" if path else str(k), errors, env, sources) for k, v in value.items()}
    if isinstance(value, list):
        return [substitute_env(v, f"{path}[{i}]", errors, env, sources) for i, v in enumerate(value)]
    return value


def _shape(reference: str) -> str:
    """A malformed ``${...}`` named by its variable only: a default written after it may be a secret."""
    name = re.match(r"\$\{([A-Za-z0-9_]*)", reference)
    head = name.group(1) if name else ""
    return "${" + head + ("" if reference == "${" + head + "}" else ":...") + "}"


def format_validation_error(prefix: str, exc: ValidationError) -> list[str]:
    """pydantic errors as "path: message" lines, never echoing the input value."""
    lines = []
    for err in exc.errors(include_input=False, include_url=False):
        loc = prefix
        for part in err["loc"]:
            loc += f"[{part}]" if isinstance(part, int) else (f".{part}" if loc else str(part))
        lines.append(f"{loc}: {err['msg']}")
    return lines


def yaml_problem(exc: yaml.YAMLError) -> str:
    """Where a YAML error is (line, column) and its kind, never the text around it: that line may hold a secret.

    PyYAML's own message quotes the offending line under a caret, and some
    problems quote the token itself (``found undefined alias 'x'``), so only
    the position and the problem's words outside quotes are kept.
    """
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    problem = getattr(exc, "problem", None) or "cannot be parsed"
    kind = " ".join(re.sub(r"'[^']*'|\"[^\"]*\"|[^a-z ,]", " ", str(problem).lower()).split()) or "cannot be parsed"
    return f"(file): not valid YAML{where}: {kind}"


def _mentions(errors: list[str], path: str) -> bool:
    """True when an error is already reported at ``path`` or below it."""
    return any(e.startswith((f"{path}.", f"{path}:", f"{path}[")) for e in errors)


def _validate_sections(data: dict[str, Any], errors: list[str]) -> ContainerFile:
    """Each top-level section on its own, so one bad section does not hide the others' errors."""
    sections: dict[str, Any] = {}
    for key, value in data.items():
        field = ContainerFile.model_fields.get(key)
        if field is None:
            errors.append(f"{key}: unknown section; expected one of {', '.join(ContainerFile.model_fields)}")
            continue
        try:
            single = ContainerFile.model_validate({key: value})
        except ValidationError as exc:
            errors.extend(format_validation_error("", exc))
            continue
        sections[key] = getattr(single, key)
    file = ContainerFile()
    for key, value in sections.items():
        setattr(file, key, value)
    return file


class UnreadableContainer(ConfigError):
    """The container file itself could not be read (missing, a directory, not UTF-8): one line in ``errors``."""


def read_container_file(path: str | os.PathLike[str]) -> str:
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise UnreadableContainer([f"{path}: no such file"]) from None
    except IsADirectoryError:
        raise UnreadableContainer([f"{path}: is a directory, not a container file"]) from None
    except PermissionError:
        raise UnreadableContainer([f"{path}: cannot read it (permission denied)"]) from None
    except OSError as exc:
        raise UnreadableContainer([f"{path}: cannot read it ({exc.strerror or type(exc).__name__})"]) from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise UnreadableContainer([f"{path}: not UTF-8 text (byte 0x{data[exc.start]:02x} on line {line})"]) from None


def load_container_file(path: str | os.PathLike[str], env: dict[str, str] | None = None) -> Container:
    """Load a container file; a relative SQLite path in it is relative to the file's directory."""
    text = read_container_file(path)
    return load_container_text(text, env, base_dir=Path(path).absolute().parent)


def load_container_text(text: str, env: dict[str, str] | None = None, base_dir: Path | None = None) -> Container:
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError([yaml_problem(exc)]) from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(["(file): the top level must be a mapping"])
    return load_container_data(raw, env, base_dir)


def load_container_data(raw: dict[str, Any], env: dict[str, str] | None = None, base_dir: Path | None = None) -> Container:
    """Validate and compile ``raw``; ``base_dir`` is where a relative SQLite path starts (else the current directory)."""
    # Imported here: the registries import every client and tag module, which
    # import gateway's model modules; keeping this lazy avoids a cycle.
    import rules
    from clients import CLIENTS
    from tags import DESTINATIONS, TAGS

    errors: list[str] = []
    env = dict(os.environ) if env is None else env
    sources: dict[str, list[str]] = {}
    data = substitute_env(raw, "", errors, env, sources)
    file = _validate_sections(data, errors)
    _resolve_storage(file.storage, env, base_dir, errors)

    proxies = []
    for i, cidr in enumerate(file.server.trusted_proxies):
        try:
            proxies.append(ipaddress.ip_network(cidr, strict=False))
        except ValueError:
            errors.append(f"server.trusted_proxies[{i}]: not an IP network")

    clients: list[ClientEntry] = []
    switched_off: list[SwitchedOff] = []
    seen_types: set[str] = set()
    for i, spec in enumerate(file.clients):
        path = f"clients[{i}]"
        ctype = spec.get("type") if isinstance(spec, dict) else None
        module = CLIENTS.get(ctype) if isinstance(ctype, str) else None
        if module is None:
            errors.append(f"{path}.type: unknown client type; expected one of {', '.join(sorted(CLIENTS))}")
            continue
        if ctype in seen_types:
            errors.append(f"{path}.type: client {ctype} is configured twice")
        seen_types.add(ctype)
        if has_secret(module):
            secret, variables = spec.get("secret"), sources.get(f"{path}.secret", [])
            if secret is None or secret == "":
                switched_off.append(SwitchedOff(ctype, module, path, variables[0] if variables else suggested_variable(ctype)))
                continue
            problem = secret_problem(secret, ctype, variables) if isinstance(secret, str) else None
            if problem is not None:
                errors.append(f"{path} ({ctype}).secret: {problem}")
                continue
        try:
            clients.append(ClientEntry(module, module.Config.model_validate(spec),
                                       Source(client=ctype, authenticated=module.AUTHENTICATED)))
        except ValidationError as exc:
            errors.extend(format_validation_error(f"{path} ({ctype})", exc))

    destinations: dict[str, Any] = {}
    for name, spec in file.destinations.items():
        module = DESTINATIONS.get(name)
        if module is None or module.Config is None:
            errors.append(f"destinations.{name}: unknown destination; expected one of "
                          + ", ".join(sorted(k for k, m in DESTINATIONS.items() if m.Config is not None)))
            continue
        try:
            destinations[name] = module.Config.model_validate(spec or {})
        except ValidationError as exc:
            errors.extend(format_validation_error(f"destinations.{name}", exc))

    triggers = rules.compile_valid_triggers(file.triggers, errors)

    tags: list[TagEntry] = []
    names: set[str] = set()
    for i, spec in enumerate(file.tags):
        name = spec.get("name") if isinstance(spec, dict) else None
        path = f"tags[{i}]" + (f" ({name})" if isinstance(name, str) else "")
        ttype = spec.get("type") if isinstance(spec, dict) else None
        module = TAGS.get(ttype) if isinstance(ttype, str) else None
        if module is None:
            errors.append(f"{path}.type: unknown tag type; expected one of {', '.join(sorted(TAGS))}")
            continue
        trigger_name = spec.get("trigger")
        trigger = triggers.get(trigger_name) if isinstance(trigger_name, str) else None
        if isinstance(trigger_name, str) and trigger is None and not _mentions(errors, f"triggers.{trigger_name}"):
            errors.append(f"{path}.trigger: no trigger named {trigger_name!r} in triggers")
        try:
            config = module.Config.model_validate(spec)
        except ValidationError as exc:
            errors.extend(format_validation_error(path, exc))
            continue
        if config.name in names:
            errors.append(f"{path}.name: another tag has this name")
        names.add(config.name)
        dest = module.DESTINATION
        dest_module = DESTINATIONS[dest]
        if dest_module.Config is not None and dest not in destinations and not _mentions(errors, f"destinations.{dest}"):
            errors.append(f"{path}: tag type {ttype} needs a destinations.{dest} section")
        tags.append(TagEntry(module, config, trigger, dest))

    if errors:
        raise ConfigError(errors)
    for dest, module in DESTINATIONS.items():
        if module.Config is None:
            destinations.setdefault(dest, None)
    return Container(file, clients, destinations, triggers, tags, tuple(proxies), tuple(switched_off))


def serving_problems(container: Container) -> list[str]:
    """What makes a container that loads useless to serve (``gateway validate`` and ``serve`` refuse it).

    The storage commands (``db migrate``, ``dead-letters`` ...) take such a
    container: they need only its storage.
    """
    if not container.clients and not container.switched_off:
        return ["clients: no clients configured: the gateway would answer 404 to every request"]
    return []


def _resolve_storage(storage: StorageSection, env: dict[str, str], base_dir: Path | None, errors: list[str]) -> None:
    """``storage.url`` checked, taken from GATEWAY_STORAGE_URL when the file names none, and made absolute."""
    if _mentions(errors, STORAGE_FIELD):  # a ${...} in it was already reported
        return
    where = STORAGE_FIELD
    if "url" not in storage.model_fields_set and env.get(STORAGE_URL_ENV):
        storage.url = env[STORAGE_URL_ENV]
        where = f"{STORAGE_FIELD} (from {STORAGE_URL_ENV})"
    try:
        target = parse_storage_url(storage.url, base_dir)
    except StorageUrlError as exc:
        errors.append(f"{where}: {exc}")
        return
    if isinstance(target, SQLiteTarget):
        storage.url = sqlite_url(target.path)
