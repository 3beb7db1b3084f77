"""What signing pickled values costs, beside the unsigned path measured in the same run:

1. recording a pickled value (``store.codec.encode``: cloudpickle + HMAC-SHA256 tag) against
   ``cloudpickle.dumps`` alone;
2. reading one back (``store.codec.decode``: tag check + ``cloudpickle.loads``) against
   ``cloudpickle.loads`` alone;
3. the tag alone, per value, for a small value and a 64 KiB one;
4. the history chain (store/chain.py), which every event pays: the keyed checksum of one event,
   and reading a 10,000-event history from an SQLite store with its chain checked against the
   same rows read and turned into events with no check (the unprotected path), in the same run.

JSON values (most of a typical history) are not signed and cost nothing more.

Run: python benchmarks/bench_signing.py [--repeat 7] [--n 20000]
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import decimal
import os
import platform
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable

import cloudpickle  # type: ignore[import-untyped]

import replaykit as rk
from replaykit.history import Event
from replaykit.keys import Keyring
from replaykit.payloads import Codec
from replaykit.store import chain

SMALL = ("order-42", 1999, ("sku-1", "sku-2"), 2j)  # a complex number: neither JSON nor typed JSON, pickled
LARGE = (b"x" * 65536, 1j)


def per_call_us(fn: Callable[[], object], n: int, repeat: int) -> float:
    runs = []
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in range(n):
            fn()
        runs.append((time.perf_counter() - start) / n * 1e6)
    return statistics.median(runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--n", type=int, default=20000, help="calls per timing run")
    opts = parser.parse_args()
    codec = Codec(Keyring.configured("a-benchmark-secret-of-32-bytes!!"))
    print(f"machine: Python {platform.python_version()}, {platform.machine()}; medians of {opts.repeat} runs "
          f"of {opts.n} calls\n")
    print(f"{'value':<12} {'operation':<8} {'unsigned':>10} {'signed':>10} {'ratio':>6} {'tag alone':>10}")
    for label, value, n in (("small tuple", SMALL, opts.n), ("64 KiB", LARGE, max(200, opts.n // 50))):
        raw = cloudpickle.dumps(value)
        _, blob = codec.encode(value, "value")
        assert isinstance(blob, bytes)
        dumps = per_call_us(lambda v=value: cloudpickle.dumps(v), n, opts.repeat)
        encode = per_call_us(lambda v=value: codec.encode(v, "value"), n, opts.repeat)
        loads = per_call_us(lambda r=raw: cloudpickle.loads(r), n, opts.repeat)
        decode = per_call_us(lambda b=blob: codec.decode("pickle", b), n, opts.repeat)
        tag = per_call_us(lambda r=raw: codec.keys.sign(r, "value"), n, opts.repeat)
        check = per_call_us(lambda b=blob: codec.keys.verify(b, "value"), n, opts.repeat)
        print(f"{label:<12} {'record':<8} {dumps:>7.2f} µs {encode:>7.2f} µs {encode / dumps:>5.2f}x {tag:>7.2f} µs")
        print(f"{label:<12} {'read':<8} {loads:>7.2f} µs {decode:>7.2f} µs {decode / loads:>5.2f}x {check:>7.2f} µs")
    typed_costs(codec, opts.n, opts.repeat)
    chain_costs(opts.n, opts.repeat)


@dataclasses.dataclass(frozen=True)
class Line:
    sku: str
    qty: int
    price: decimal.Decimal
    placed: datetime.date


def typed_costs(codec: Codec, n: int, repeat: int) -> None:
    """A typed value (a dataclass and a tuple of them) recorded as typed JSON against the signed pickle."""
    rk.json_type(Line)
    for label, value in (("dataclass", Line("sku-1", 2, decimal.Decimal("9.99"), datetime.date(2030, 1, 1))),
                         ("tuple of 3", tuple(Line(f"s{i}", i, decimal.Decimal(i), datetime.date(2030, 1, 1))
                                              for i in range(3)))):
        typed = codec.encode(value, "value")
        assert typed[0] == "typed"
        raw = cloudpickle.dumps(value)
        pickled = ("pickle", codec.keys.sign(raw, "value"))
        rows = [("typed JSON", lambda v=value: codec.encode(v, "value"), lambda t=typed: codec.decode(*t)),
                ("signed pickle", lambda v=value: codec.keys.sign(cloudpickle.dumps(v), "value"),
                 lambda p=pickled: codec.decode(*p))]
        for how, record, read in rows:
            print(f"{label:<12} {how:<14} record {per_call_us(record, n // 4, repeat):>7.2f} µs, "
                  f"read {per_call_us(read, n // 4, repeat):>7.2f} µs")


def chain_costs(n: int, repeat: int) -> None:
    """The chain per event, and a whole history read with and without its check."""
    links = chain.Chain([b"k" * 32])
    event = Event(7, 7, "activity", "charge_card", 1_700_000_000.0, "ok", "json", '"v-00042"')
    prev = links.link(chain.seed("order-42", 1), event)
    link = per_call_us(lambda: links.link(prev, event), n, repeat)
    print(f"\nhash chain: one event's keyed checksum (link): {link:.2f} µs")
    with tempfile.TemporaryDirectory() as tmp:
        db, steps = os.path.join(tmp, "chain.db"), 10_000
        with rk.SqliteStore(db, secret="a-benchmark-secret-of-32-bytes!!") as store:
            start = Event(0, 0, "start", "bench", 0.0, "ok", "json", '{"args":[],"kwargs":{},"seed":1,"rules":2}')
            store.create("r", "bench", start, history=[
                Event(i, i, "activity", "echo", float(i), "ok", "json", f'"v-{i:05d}"') for i in range(1, steps)])
            checked = statistics.median(_timed(lambda: sum(1 for _ in store.events("r"))) for _ in range(repeat))
        conn = sqlite3.connect(db)
        bare = statistics.median(_timed(lambda: sum(1 for _ in map(Event._make, conn.execute(
            "SELECT seq, step, kind, name, at, outcome, encoding, payload FROM events WHERE run = 1 "
            "ORDER BY seq")))) for _ in range(repeat))
        conn.close()
    print(f"read {steps} events: rows + events, no check {bare * 1e3:.1f} ms; through the store, checked "
          f"{checked * 1e3:.1f} ms ({(checked - bare) / steps * 1e6:.2f} µs an event more)")


def _timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


if __name__ == "__main__":
    sys.exit(main())
