"""The device-prefetch thread: order, tags, errors, shutdown."""
import threading
import time

import pytest

from bertjax.data import prefetch


def test_prefetch_keeps_order_tags_and_stops_its_thread():
    items = ((i, f"state{i}") for i in range(100))
    gen = prefetch.prefetch(items, lambda x: x * 10, size=2)
    got = [next(gen) for _ in range(5)]
    assert got == [(0, "state0"), (10, "state1"), (20, "state2"), (30, "state3"), (40, "state4")]
    gen.close()
    deadline = time.time() + 5
    while any(t.name == "prefetch" for t in threading.enumerate()):
        assert time.time() < deadline, "prefetch thread still running"
        time.sleep(0.05)


def test_prefetch_reraises_pipeline_errors():
    def bad():
        yield 1, "s"
        raise RuntimeError("corrupt record in file X")

    gen = prefetch.prefetch(bad(), lambda x: x, size=2)
    assert next(gen) == (1, "s")
    with pytest.raises(RuntimeError, match="corrupt record"):
        next(gen)


def test_tagged_pairs_each_batch_with_the_state_after_it():
    class It:
        def __init__(self):
            self.i = 0

        def __iter__(self):
            return self

        def __next__(self):
            if self.i == 3:
                raise StopIteration
            self.i += 1
            return f"b{self.i}"

        def get_state(self):
            return {"i": self.i}

    assert list(prefetch.tagged(It(), 1)) == [("b1", (1, {"i": 1})), ("b2", (1, {"i": 2})),
                                              ("b3", (1, {"i": 3}))]
