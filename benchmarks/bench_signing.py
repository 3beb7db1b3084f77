"""What signing pickled values costs, beside the unsigned path measured in the same run:

1. recording a pickled value (``store.codec.encode``: cloudpickle + HMAC-SHA256 tag) against
   ``cloudpickle.dumps`` alone;
2. reading one back (``store.codec.decode``: tag check + ``cloudpickle.loads``) against
   ``cloudpickle.loads`` alone;
3. the tag alone, per value, for a small value and a 64 KiB one.

JSON values (most of a typical history) are not signed and cost nothing more.

Run: python benchmarks/bench_signing.py [--repeat 7] [--n 20000]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from collections.abc import Callable

import cloudpickle  # type: ignore[import-untyped]

from replaykit.keys import Keyring
from replaykit.payloads import Codec

SMALL = ("order-42", 1999, ("sku-1", "sku-2"))  # a tuple: pickled
LARGE = (b"x" * 65536,)


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


if __name__ == "__main__":
    sys.exit(main())
