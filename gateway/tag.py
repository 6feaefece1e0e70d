"""The tag interface: an event in, deliveries out, with no I/O.

A tag module in ``tags/`` holds ``Config`` (a ``TagConfig``) and a pure
``build(event, config) -> list[Delivery]``. Sending, batching, OAuth and
reading the vendor's answer belong to the destination's ``Sender``
(``gateway.sender``), never to ``build``.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class TagConfig(BaseModel):
    """Keys every tag has; each tag module subclasses it with its own options."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str = Field(min_length=1, description="Unique name of the tag; appears in metrics and logs.")
    type: str = Field(description="The tag module, e.g. http_request.")
    trigger: str = Field(description="Name of the trigger (in `triggers`) that fires this tag.")


class Skip(Exception):
    """Raised by ``build`` when a fired tag cannot turn this event into a delivery.

    The reason (a short snake_case code such as ``no_click_id``) is counted in
    ``gateway_tag_skipped`` and logged; the request still succeeds. ``build``
    stays pure: it reports, the pipeline counts.
    """

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)
