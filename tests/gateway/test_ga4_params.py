"""``split_extra``: one pass over ``extra`` gives what the per-kind reads gave, in the same order."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings, strategies as st

from gateway import ga4_params

KEYS = [*ga4_params.PARAM_OF, ga4_params.SYSTEM_PROPERTIES, ga4_params.SST_PROPERTIES, ga4_params.CLIENT_HINTS,
        ga4_params.ENGAGEMENT_TIME, "x-ga-mp2-richsstsse", "x-ga-mp2-", "measurement_id", "page_type", "value"]
values = (st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.floats(allow_nan=False) | st.text(max_size=6)
          | st.dictionaries(st.text(max_size=4), st.text(max_size=4) | st.integers(), max_size=2))
extras = st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=8), values, max_size=12)
skips = st.frozensets(st.sampled_from(["gcs", "gcd", "seg", "ecid", "_p", "gtm"]))


def page_params_reference(extra: dict[str, Any], skip: frozenset[str]) -> list[tuple[str, str]]:
    """The loop ``page_params`` ran before ``split_extra``: every key read through the general helpers."""
    out = []
    for key, value in extra.items():
        param = ga4_params.PARAM_OF.get(key)
        if param is None:
            if not key.startswith(ga4_params.MP2_PREFIX):
                continue
            param = key[len(ga4_params.MP2_PREFIX):]
        if param in skip or param == "_s" or not ga4_params._scalar(value):
            continue
        out.append((param, ga4_params._text(value)))
    sst = extra.get(ga4_params.SST_PROPERTIES)
    if isinstance(sst, dict):
        out.extend((f"sst.{n}", ga4_params._text(v)) for n, v in sst.items() if ga4_params._scalar(v))
    hints = extra.get(ga4_params.CLIENT_HINTS)
    if isinstance(hints, dict):
        out.extend(ga4_params._hint_params(hints))
    return out


@settings(max_examples=500)
@given(extras, skips)
def test_split_extra_is_page_params_and_the_custom_keys(extra, skip):
    page, custom = ga4_params.split_extra(extra, skip)
    assert page == page_params_reference(extra, skip)
    assert custom == [(k, v) for k, v in extra.items() if not ga4_params.is_protocol_key(k)]


@given(values)
def test_scalar_text_is_text_of_a_scalar(value):
    expected = ga4_params._text(value) if ga4_params._scalar(value) else None
    assert ga4_params.scalar_text(value) == expected


def test_extra_keys_remembered_are_bounded_and_read_the_same_each_time() -> None:
    # split_extra remembers how it reads each key of extra; a beacon's custom keys are anyone's to make up.
    ga4_params._PARAM_FOR.clear()
    for batch in range(5):
        extra: dict[str, Any] = {f"k{batch}_{n}": "v" for n in range(1000)}
        extra |= {f"x-ga-mp2-{'m' * 80}{batch}": "1", "x-ga-page_id": 7, "x-ga-mp2-seg": "1", "x-ga-mp2-": "e"}
        for _ in range(2):
            page, custom = ga4_params.split_extra(extra)
            assert len(custom) == 1000
            assert page == [(f"{'m' * 80}{batch}", "1"), ("_p", "7"), ("seg", "1"), ("", "e")]
    assert len(ga4_params._PARAM_FOR) <= 4096
    assert max(len(key) for key in ga4_params._PARAM_FOR) <= 64
