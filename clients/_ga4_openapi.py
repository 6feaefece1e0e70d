"""The OpenAPI description of the GA4 client's routes (served at ``/openapi.json`` by ``gateway.openapi``)."""

from __future__ import annotations

from typing import Any

def _param(name: str, description: str, schema: dict[str, Any] | None = None, required: bool = False) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": required, "description": description,
            "schema": schema or {"type": "string"}}


# What gtag.js sends, as far as the gateway reads it; any other parameter is kept under its sGTM name,
# and any ``ep.<name>`` / ``epn.<name>`` / ``up.<name>`` is taken (only a few are listed here).
_QUERY = [
    _param("v", "Protocol version; gtag.js sends 2. A hit with neither v=2 nor a tid is not claimed: 400.",
           {"type": "string", "enum": ["2"]}),
    _param("tid", "GA4 measurement id; checked against the client's measurement_ids when set.",
           {"type": "string", "pattern": "^G-[A-Z0-9]{4,12}$"}),
    _param("cid", "Client id (the _ga cookie's two numbers), becomes client_id.", {"type": "string", "maxLength": 100}),
    _param("en", "Event name (required in the query or in each body line).",
           {"type": "string", "minLength": 1, "maxLength": 200}, required=True),
    _param("dl", "Page URL; gclid, gbraid, wbraid and fbclid are read from its query.", {"type": "string", "format": "uri"}),
    _param("dr", "Referrer URL.", {"type": "string"}),
    _param("dt", "Page title.", {"type": "string"}),
    _param("ul", "Browser language.", {"type": "string", "maxLength": 35}),
    _param("sr", "Screen resolution.", {"type": "string", "pattern": "^[0-9]{1,5}x[0-9]{1,5}$"}),
    _param("uid", "User id set by the site.", {"type": "string"}),
    _param("sid", "Session id.", {"type": "string", "pattern": "^[0-9]{1,20}$"}),
    _param("sct", "Session number.", {"type": "integer", "minimum": 0}),
    _param("npa", "Non-personalised ads flag.", {"type": "string", "enum": ["0", "1"]}),
    _param("gcs", "Consent Mode: G1 then ad_storage and analytics_storage as 1 (granted), 0 (denied) or -.",
           {"type": "string", "pattern": "^G1[01-]{2}$"}),
    _param("gcd", "Consent Mode v2 letter code, e.g. 13r3r3r2r5l1; wins over gcs for every signal it sets.",
           {"type": "string", "pattern": "^[0-9a-z]{2,64}$"}),
    _param("cu", "Currency, three letters.", {"type": "string", "pattern": "^[A-Za-z]{3}$"}),
    _param("em", "Hashed user data: tv.1~em.<sha256>~pn.<sha256>~fn0.<sha256>..., digests in base64url or hex.",
           {"type": "string"}),
    _param("ep.transaction_id", "Order id; with a purchase it opens the order in the ledger.", {"type": "string"}),
    _param("ep.event_id", "Event id shared with the browser's own tags, for deduplication.", {"type": "string"}),
    _param("epn.value", "Value, a number.", {"type": "number"}),
    _param("epn.tax", "Tax, a number.", {"type": "number"}),
    _param("epn.shipping", "Shipping, a number.", {"type": "number"}),
    _param("ep.currency", "Currency, when cu is absent.", {"type": "string", "pattern": "^[A-Za-z]{3}$"}),
    _param("pr1", "First item: ~-separated two-letter codes and values (idSKU-1~nmMug~pr12.5~qt2); pr2 ... likewise.",
           {"type": "string"}),
    _param("pr2", "Second item, as pr1.", {"type": "string"}),
    _param("up.user_type", "A user property (any up.<name>; upn.<name> for numbers).", {"type": "string"}),
]
_HIT_RESPONSES = {
    "204": {"description": "Accepted: the hit's deliveries are stored before this answer."},
    "400": {"description": "Not a GA4 hit (neither v=2 nor a tid), or a parameter is wrong: the body names it."},
}

# The OpenAPI operations of this client (served at /openapi.json by gateway.openapi).
OPENAPI: dict[str, dict[str, Any]] = {
    "GET /g/collect": {
        "operationId": "ga4_collect_get",
        "summary": "One GA4 event, as gtag.js sends it to a server container",
        "parameters": _QUERY,
        "responses": _HIT_RESPONSES,
    },
    "POST /g/collect": {
        "operationId": "ga4_collect_post",
        "summary": "A batch of GA4 events: shared parameters in the query, one event per body line",
        "parameters": [{**p, "required": False} for p in _QUERY],
        "requestBody": {
            "required": False,
            "description": "Each line holds one event's URL-encoded parameters, which override the query's. "
                           "An empty body is one event made of the query alone.",
            "content": {"text/plain": {"schema": {"type": "string", "example": "en=page_view&dt=Home\nen=scroll"}}},
        },
        "responses": _HIT_RESPONSES,
    },
}
