"""The admission policy every store applies to a claim (``store/work.py``), as properties: whatever
the candidates, the limits and which runs someone else holds, a claim never goes past a limit, and
it takes every candidate a limit and the locks allow, in order."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from replaykit.store.work import Candidate, Queue, Usage, admit

keys = st.sampled_from([None, "a", "b", "c"])
candidates = st.lists(st.builds(Candidate, st.uuids().map(str), st.just("w"), keys, st.booleans()),
                      max_size=30, unique_by=lambda c: c.workflow_id)
limits = st.builds(Queue, st.just("q"), concurrency=st.none() | st.integers(1, 10),
                   rate=st.none() | st.tuples(st.integers(1, 10), st.just(60.0)),
                   per_key=st.none() | st.integers(1, 4))
usages = st.builds(Usage, st.integers(0, 5), st.dictionaries(keys, st.integers(0, 3), max_size=3), st.integers(0, 5))


@settings(max_examples=400)
@given(candidates, limits, usages, st.integers(1, 40), st.sets(st.integers(0, 29)))
def test_a_claim_never_passes_a_limit_and_takes_all_it_may(found: list[Candidate], queue: Queue, usage: Usage,
                                                          capacity: int, locked_elsewhere: set[int]) -> None:
    usage = Usage(sum(usage.held_by_key.values()), usage.held_by_key, usage.recent_starts)
    busy = {c.workflow_id for i, c in enumerate(found) if i in locked_elsewhere}
    asked: list[list[str]] = []

    def take(batch: list[Candidate]) -> set[str]:
        asked.append([c.workflow_id for c in batch])
        return {c.workflow_id for c in batch} - busy

    taken = admit(found, queue, usage, capacity, take)

    ids = [c.workflow_id for c in taken]
    assert len(set(ids)) == len(ids) and not set(ids) & busy
    assert len(taken) <= capacity
    assert [c for c in found if c in taken] == taken  # in the candidates' order
    held, starts = usage.held + len(taken), usage.recent_starts + sum(not c.started for c in taken)
    if queue.concurrency is not None:
        assert len(taken) == 0 or held <= max(queue.concurrency, usage.held)
        assert usage.held >= queue.concurrency or held <= queue.concurrency
    if queue.rate is not None and any(not c.started for c in taken):
        assert starts <= max(queue.rate[0], usage.recent_starts)
    if queue.per_key is not None:
        for key in {c.key for c in taken if c.key is not None}:
            assert usage.held_by_key.get(key, 0) + sum(c.key == key for c in taken) <= max(
                queue.per_key, usage.held_by_key.get(key, 0))
    # Maximal: every free candidate left out was refused by capacity or a limit, counted with what was taken.
    for c in found:
        if c in taken or c.workflow_id in busy:
            continue
        by_key = usage.held_by_key.get(c.key, 0) + sum(t.key == c.key for t in taken)
        assert (len(taken) >= capacity
                or (queue.concurrency is not None and held >= queue.concurrency)
                or (queue.rate is not None and not c.started and starts >= queue.rate[0])
                or (queue.per_key is not None and c.key is not None and by_key >= queue.per_key))
    assert all(set(batch) <= {c.workflow_id for c in found} for batch in asked)
