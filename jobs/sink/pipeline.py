"""Decoding the next batch while the current one is written.

`SinkPipeline(sink).push(batch)` hands the batch to a thread of its own for
`Sink.prepare` (the compiled decoder runs without the GIL; the dead letters
are produced there too) and meanwhile writes the batch pushed before it
(`Sink.write`: duplicate filter, ledger, inserts) on the caller's thread. It
returns the batches now written, in the order they were pushed, so the caller
commits their offsets in order; `drain()` writes the one still waiting.

With `overlap=False` a batch is decoded and written at once, on the caller's thread
(bench/sink.py measures both: on two shared cores, where the embedded chDB's insert
uses both, neither was faster in every run).
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor

from whystream.kafka.messages import RawMessage


class SinkPipeline:
    def __init__(self, sink, overlap: bool = True):
        self.sink = sink
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="sink-decode") if overlap else None
        self._pending: tuple[list[RawMessage], Future] | None = None

    @property
    def waiting(self) -> bool:
        return self._pending is not None

    def push(self, batch: list[RawMessage]) -> list[list[RawMessage]]:
        """Start decoding `batch`; write the one before it. Returns the batches written."""
        if self._pool is None:  # decode and write it now
            self.sink.write(self.sink.prepare(batch))
            return [batch]
        future = self._pool.submit(self.sink.prepare, batch)
        done = self.drain()
        self._pending = (batch, future)
        return done

    def drain(self) -> list[list[RawMessage]]:
        """Write the batch still waiting, if any. Returns the batches written."""
        if self._pending is None:
            return []
        batch, future = self._pending
        self._pending = None
        self.sink.write(future.result())
        return [batch]

    def close(self) -> None:
        """Stop without writing what waits (its offsets stay uncommitted: it is read again)."""
        self._pending = None
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
