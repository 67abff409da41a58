"""Limits that hold from outside the query: a wall-clock deadline and a bound
on the answer's size, for the read-only surface (guard.py).

ClickHouse checks `max_execution_time` only between blocks, so one block of
slow rows runs past it (issue 24: `sum(editDistance(repeat(...)))` over 200
rows ran 101 s under a 60 s limit); and it bounds the result in its own
bytes (`max_result_bytes`), while Python rows take ~70 times as much. So:

- The whole of a guarded query (its checks, which may evaluate scalar
  subqueries, and its run) happens on a thread of its own; the caller waits
  for it at most until the deadline and then gets QueryTimeout, whatever the
  engine is doing. The query is then cancelled: over HTTP with `KILL QUERY`
  by its query id from another session (and the server cancels a read-only
  query whose client went away, `cancel_http_readonly_queries_on_client_close`);
  on chDB, which cannot stop a block in the middle of a function, the thread
  closes the stream at the end of the block (chDB's own cancel), and the
  guard opens a fresh session for the next query. At most MAX_OVERDUE such
  threads run at once in a process; beyond that queries are refused until
  one ends.
- Rows arrive block by block (clickhouse-connect's row-block stream, never
  the whole result) and each block is measured as JSON text; once the answer
  passes `max_reply_bytes` the stream is closed and AnswerTooLarge raised. A
  caller that wants bytes (the query port) gets each block encoded as it
  arrives, so the rows of at most three blocks (ClickHouse's `max_block_size` rows each)
  are ever held as Python objects.
"""

from __future__ import annotations

import json
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator

from whystream.errors import WhystreamError

MAX_OVERDUE = 2  # queries past their deadline that may still be finishing in this process
CLOSING_GRACE_S = 2.0  # how long a stream cut short (too large, failed) may take to close before it counts


class _Overdue:
    """How many queries whose caller has given up are still running in this process."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self.running = 0

    def full(self) -> bool:
        with self._changed:
            return self.running >= MAX_OVERDUE

    def add(self) -> None:
        with self._changed:
            self.running += 1

    def done(self) -> None:
        with self._changed:
            self.running -= 1
            self._changed.notify_all()

    def wait_until_none(self, timeout: float) -> bool:
        """Wait for every overdue query to end (shutdown, tests); False if some still run."""
        with self._changed:
            return self._changed.wait_for(lambda: self.running == 0, timeout)


overdue = _Overdue()


class QueryTimeout(WhystreamError):
    """The query passed its wall-clock limit; the caller was answered at the deadline.
    The query may still be finishing its block in this process (chDB): a command
    line exits at once instead of waiting for it (whystream/cli/__init__.py)."""

    leaves_work_running = True


class AnswerTooLarge(WhystreamError):
    """The answer passed its size limit while it streamed; nothing more was read."""


@dataclass
class BoundedAnswer:
    """A query's answer: like clickhouse-connect's QueryResult for `column_names`,
    `column_types`, `result_rows` and `named_results()`; with an `encode`, the
    rows are only in `encoded` (one bytes chunk per block)."""

    column_names: tuple = ()
    column_types: tuple = ()
    result_rows: list = field(default_factory=list)
    encoded: list[bytes] = field(default_factory=list)
    size: int = 0  # bytes of the answer as JSON text (as encoded, with an `encode`)

    def named_results(self):
        return [dict(zip(self.column_names, r)) for r in self.result_rows]


def block_size(rows) -> int:
    """The size of `rows` as JSON text (values JSON cannot hold as their str)."""
    return len(json.dumps(rows, default=str, allow_nan=True))


_END = object()


def run_with_deadline(work: Callable[[Callable[[], bool]], Iterator], seconds: float, max_bytes: int,
                      encode: Callable[[list], bytes] | None, on_overdue: Callable[[], None]) -> BoundedAnswer:
    """Run `work(cancelled)` on a thread of its own: it yields the column names and
    types first, then blocks of rows, and stops when `cancelled()` turns true. The
    caller gets the answer, or QueryTimeout at `seconds` (after which `on_overdue()`
    cancels what the engine is doing) or AnswerTooLarge past `max_bytes`."""
    if overdue.full():
        raise QueryTimeout(f"{MAX_OVERDUE} queries that passed their time limit are still finishing in this "
                           "process; try again in a moment")
    items: queue.Queue = queue.Queue(maxsize=1)  # the thread runs at most one block ahead
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in work(stop.is_set):
                while not stop.is_set():
                    try:
                        items.put(item, timeout=0.2)
                        break
                    except queue.Full:
                        continue
                item = None  # noqa: F841 (the queue holds it now; not this frame too while the next is made)
                if stop.is_set():
                    return
            items.put(_END)
        except BaseException as exc:  # noqa: BLE001 (handed to the caller)
            if not stop.is_set():
                items.put(exc)

    lock, state = threading.Lock(), {"finished": False, "overdue": False}

    def produce_and_release() -> None:
        try:
            produce()
        finally:
            with lock:
                state["finished"] = True
                if state["overdue"]:
                    overdue.done()

    thread = threading.Thread(target=produce_and_release, name="whystream-read-query", daemon=True)
    deadline = time.monotonic() + seconds
    thread.start()
    answer = BoundedAnswer()
    first = True
    try:
        while True:
            item = None  # the block just handled is not held while the next one is awaited
            try:
                item = items.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise QueryTimeout(f"the query passed its time limit of {seconds:g} s "
                                   "(WHYSTREAM_SQL_MAX_EXECUTION_TIME) and was cancelled") from None
            if item is _END:
                return answer
            if isinstance(item, BaseException):
                raise item
            if first:
                answer.column_names, answer.column_types = item
                first = False
                continue
            chunk = encode(item) if encode else None
            answer.size += len(chunk) if encode else block_size(item)
            if answer.size > max_bytes:
                raise AnswerTooLarge(f"the answer passed {max_bytes:,} bytes (WHYSTREAM_SQL_MAX_REPLY_BYTES) and "
                                     "was cut off; aggregate, or ask for fewer rows or columns")
            if encode is None:
                answer.result_rows.extend(item)
            else:
                answer.encoded.append(chunk)
    except BaseException as exc:
        stop.set()
        if not isinstance(exc, QueryTimeout):
            thread.join(CLOSING_GRACE_S)  # a stream cut short between blocks closes at once
        with lock:
            running = not state["finished"]
            if running:
                state["overdue"] = True
                overdue.add()
        if running:
            on_overdue()
        raise
