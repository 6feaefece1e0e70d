"""The gateway's benchmark: one command, one machine, every figure next to its ceiling.

``python -m bench`` (see BENCHMARKS.md) starts each server pinned to one core,
drives it from the other, and prints and stores one table. The modules each
do one job:

- ``procs``: start, pin, watch (RSS, CPU) and stop processes by their PID;
- ``ceiling``: the bare Starlette app every figure is compared with;
- ``gateway``: one ``gateway serve`` under test, its container file and its sink;
- ``sink``: the fake destination the http_request tag delivers to;
- ``hits``: the requests sent (realistic GA4, beacon, webhook payloads);
- ``loadgen`` / ``wrk`` (+ ``wrk.lua``): the open-loop and closed-loop load generators;
- ``outbox``: reads the SQLite outbox afterwards (committed counts, delivery lag);
- ``scenarios``: what each throughput scenario runs and checks (and Google Ads);
- ``memory``: RSS over a steady run and a destination outage;
- ``report``: the printed tables and the JSON file (``python -m bench.report FILE`` prints one again);
- ``profile``: py-spy under GET /g/collect load, summarised by component and top frames;
- ``instructions`` (+ ``callgrind``, ``serve``, ``instructions_report``): CPU instructions per request,
  counted by callgrind; ``stages``: where a GA4 hit's instructions go.
"""
