"""The ring buffer: bounded, and its idempotency-key index follows what it keeps."""

from __future__ import annotations

from gateway.debug.trace import Delivery, Trace, TraceBuffer


def trace_with(trace_id: str, *keys: str) -> Trace:
    trace = Trace(trace_id, "POST", "/collect")
    trace.status = 204
    for key in keys:
        trace.deliveries[key] = Delivery(key, "http_request", "forward", "forward", {})
    return trace


def test_buffer_keeps_the_last_n_traces_and_forgets_the_keys_of_dropped_ones():
    buffer = TraceBuffer(keep=2)
    traces = [trace_with(f"t{i}", f"k{i}") for i in range(3)]
    for trace in traces:
        buffer.index(trace, trace.deliveries)
        buffer.publish(trace)

    assert [t.id for t in buffer.newest()] == ["t2", "t1"]
    assert buffer.get("t0") is None
    assert sorted(buffer.by_key) == ["k1", "k2"]


def test_the_first_request_that_built_an_item_owns_its_key():
    buffer = TraceBuffer(keep=10)
    first, again = trace_with("first", "same-key"), trace_with("again", "same-key")
    for trace in (first, again):
        buffer.index(trace, trace.deliveries)
        buffer.publish(trace)

    assert buffer.by_key["same-key"] is first


def test_dropping_a_trace_keeps_a_key_another_trace_owns():
    buffer = TraceBuffer(keep=1)
    owner, other = trace_with("owner", "k"), trace_with("other", "k")
    buffer.index(owner, ["k"])
    buffer.publish(other)  # never indexed: "k" is owner's
    buffer.publish(trace_with("newer"))

    assert buffer.by_key == {"k": owner}


def test_changed_since_lists_traces_touched_after_a_sequence_number_newest_change_first():
    buffer = TraceBuffer(keep=10)
    a, b = trace_with("a", "ka"), trace_with("b", "kb")
    buffer.publish(a)
    buffer.publish(b)
    seen = buffer.last_seq
    buffer.touch(a)

    assert [t.id for t in buffer.changed_since(seen)] == ["a"]
    assert [t.id for t in buffer.changed_since(0)] == ["a", "b"]


def test_outcome_is_the_most_urgent_state_of_the_deliveries():
    trace = trace_with("t", "k1", "k2", "k3")
    states = iter(["delivered", "retry", "dead_letter"])
    for delivery in trace.deliveries.values():
        delivery.status = next(states)

    assert trace.outcome == "dead_letter"
    trace.deliveries["k3"].status = "delivered"
    assert trace.outcome == "retry"
    trace.status = 400
    assert trace.outcome == "rejected"
    assert trace_with("empty").outcome == "none"
