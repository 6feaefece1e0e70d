from __future__ import annotations

from gateway.event import Event
from rules.paths import compile_path

ORDER = Event.from_data({
    "event_name": "purchase",
    "items": [
        {"item_id": "SKU-1", "categories": ["kitchen", "gift"], "price": 12.5},
        {"item_id": None, "categories": "sale"},
        {"item_id": "SKU-3", "variants": [{"color": "blue"}, {"color": "red"}]},
    ],
    "extra": {"page": {"type": "product"}, "list": ["a", "b"], "rows": [{"a": 1}, "x", [{"a": 2}], {"a": [3]}]},
})


def read(path: str) -> object:
    return compile_path(path).get(ORDER)


def test_a_key_on_the_items_reads_it_from_every_item_that_has_it() -> None:
    assert read("items.item_id") == ["SKU-1", "SKU-3"]


def test_list_values_of_the_items_are_merged_into_one_list() -> None:
    assert [read("items.categories"), read("items.variants.color")] == [["kitchen", "gift", "sale"], ["blue", "red"]]


def test_a_key_on_any_list_skips_elements_that_are_not_objects() -> None:
    assert read("extra.rows.a") == [1, 2, 3]


def test_a_key_no_item_has_reads_as_missing() -> None:
    assert read("items.coupon") is None


def test_a_position_reads_one_element_and_past_the_end_is_missing() -> None:
    assert [read("items.0.price"), read("items.9.price"), read("extra.list.1"), read("extra.list.2")] == [12.5, None, "b", None]


def test_free_form_keys_read_nested_mappings_and_stop_at_anything_else() -> None:
    assert [read("extra.page.type"), read("extra.page.type.name"), read("extra.nope.type")] == ["product", None, None]


def test_model_fields_read_through_missing_parents_as_missing() -> None:
    assert [read("user_data.address.country"), read("consent.ad_storage"), read("event_name")] == [None, None, "purchase"]
