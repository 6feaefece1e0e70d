"""The debugger: traces of every request's whole path, the ``/debug`` page, explain.

sGTM's preview mode shows only your own browser's hits, needs a header token
that expires, and ends where the tag ran. This package records any request's
path through the gateway (client, consent, triggers, tags, each delivery
attempt and the vendor's answer) in a bounded ring buffer, masking personal
data before anything is kept, and serves it at ``/debug`` behind a token.

    trace.py       trace ids, the ``Trace`` record, the ring buffer
    masking.py     what personal data looks like, and its masks
    recorder.py    the hooks the request path calls, and what they note
    senders.py     delivery attempts, through a wrapper around each sender
    middleware.py  the trace id header, the request as received
    explain.py     a request through the container without storage or network
    actions.py     resend to dry-run destinations; dead-letter replay
    auth.py        bearer token and login cookie
    routes.py      the page and its JSON API; static/ holds the page

The gateway wires it in with two calls, ``attach`` (in ``Gateway.__init__``)
and ``install`` (in ``create_app``), plus ``note_parsed`` and
``bind_ledger_step`` on the request path. With ``debug.enabled`` false,
``attach`` returns None and changes nothing. The trace id header, which
every deployment gets, is set by the collection front (``gateway.collect``),
which puts ``TraceMiddleware`` around its handler when a recorder exists.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from gateway.debug.recorder import Recorder, bind_ledger_step, note_parsed
from gateway.debug.trace import TRACE_HEADER, TRACE_ID

if TYPE_CHECKING:
    from starlette.applications import Starlette

    from gateway.app import Gateway

__all__ = ["TRACE_HEADER", "TRACE_ID", "Recorder", "attach", "bind_ledger_step", "install", "note_parsed"]


def attach(gateway: Gateway) -> Recorder | None:
    """Start recording traces for ``gateway`` when its container enables the debugger.

    Sets the pipeline's ``observe`` hook, wraps each sender so delivery
    attempts reach their traces, and taps the senders' shared context for
    the requests they build (dry-run through ``record_dry_run``, live through
    ``observe``).
    """
    section = gateway.container.file.debug
    if not section.enabled:
        return None
    from gateway.debug.senders import capture_request, tee_dry_run, wrap

    recorder = Recorder(gateway.container, section.keep_last)
    gateway.pipeline.observe = recorder.pipeline_done
    senders = gateway.dispatcher.senders
    contexts: dict[int, Any] = {}
    for name, sender in list(senders.items()):
        contexts[id(sender.ctx)] = sender.ctx
        senders[name] = wrap(sender, recorder)
    for ctx in contexts.values():
        ctx.record_dry_run = tee_dry_run(ctx.record_dry_run)
        ctx.observe = capture_request
    return recorder


def install(app: Starlette, gateway: Gateway) -> None:
    """Add the debugger's routes to ``app`` when the debugger is on."""
    recorder: Recorder | None = getattr(gateway, "debug", None)
    if recorder is not None:
        from gateway.debug.routes import DebugApp

        app.router.routes.extend(DebugApp(gateway, recorder, gateway.container.file.debug.token).routes())
