"""Request batching: concurrent calls of one signature merged along dimension 0.

`BatchQueue` follows TF Serving's BatchingParameters and its shared batch scheduler: tasks join
the open batch; the batch is schedulable once it holds max_batch_size rows or
batch_timeout_micros after its first task arrived (so a lone task waits the whole timeout, as in
TF Serving), and runs as soon as one of num_batch_threads is free; tasks that arrive until then
join it. Tasks larger than a batch are refused and a full queue (max_enqueued_batches) answers
UNAVAILABLE, as TF Serving does. num_batch_threads is the semaphore shared by the queues of a
server.

There are no batch threads: the request thread of a batch's first task forms the batch and runs
it, and the threads of the other tasks wait for their results. A lone request therefore runs on
its own thread, without handing its input to another thread and waiting to be woken.
"""

import collections
import threading
import time

import grpc
import numpy as np

from serving.errors import ServingError

__all__ = ["BatchQueue"]

CLOSE_SECONDS = 30.0  # how long close() waits for the queued batches to finish


class _Task:
    __slots__ = ("array", "rows", "arrived", "done", "result", "error")

    def __init__(self, array):
        self.array = array
        self.rows = array.shape[0]
        self.arrived = time.monotonic()
        self.done = False
        self.result = None
        self.error = None


class BatchQueue:
    """Merges concurrent calls of one signature into batches along dimension 0.

    `submit(array)` blocks until the batch holding the array has run and returns its rows of the
    outputs. `run(array)` must return a dict of arrays with the batch as their first dimension.
    """

    def __init__(self, run, parameters, semaphore):
        self._run = run
        self._max_batch_size = parameters.max_batch_size.value or 32
        self._timeout = (parameters.batch_timeout_micros.value or 0) / 1e6
        self._max_rows = self._max_batch_size * (parameters.max_enqueued_batches.value or 100)
        self._semaphore = semaphore
        self._pending = collections.deque()  # tasks not yet taken into a batch, oldest first
        self._rows = 0  # rows of the pending tasks
        self._running = 0  # batches taken and not yet finished
        self._condition = threading.Condition()
        self._closed = False

    def submit(self, array):
        if array.ndim == 0:  # TF Serving's batching session refuses these too
            raise ServingError(grpc.StatusCode.INVALID_ARGUMENT,
                               "Batching Run() input tensors must have at least one dimension")
        task = _Task(array)
        if task.rows > self._max_batch_size:  # TF Serving refuses these too (clients chunk)
            raise ServingError(grpc.StatusCode.INVALID_ARGUMENT,
                               f"Task size {task.rows} is larger than maximum input batch size "
                               f"{self._max_batch_size}")
        with self._condition:
            closed = self._closed
            if not closed:
                self._enqueue(task)
        if closed:  # the version was just unloaded; a request that already holds it still runs
            with self._semaphore:
                return self._run(array)
        self._wait_for(task)
        if task.error is not None:
            raise task.error
        return task.result

    def close(self):
        """Run the queued tasks (their threads still lead their batches), then run later calls
        alone; waits up to CLOSE_SECONDS for the queued batches."""
        with self._condition:
            self._closed = True
            self._condition.notify_all()
            self._condition.wait_for(lambda: not self._pending and not self._running,
                                     CLOSE_SECONDS)

    def _enqueue(self, task):
        if self._rows + task.rows > self._max_rows:
            raise ServingError(grpc.StatusCode.UNAVAILABLE,
                               "The batch scheduling queue to which this task was submitted is "
                               "full")
        self._pending.append(task)
        self._rows += task.rows
        if self._rows >= self._max_batch_size:
            self._condition.notify_all()  # a batch is full: its leader need not wait any longer

    def _wait_for(self, task):
        """Return once `task` has run; when it is the oldest pending task, lead its batch: wait
        until the batch is schedulable and a batch thread is free, take it and run it."""
        with self._condition:
            while not task.done and not (self._pending and self._pending[0] is task):
                self._condition.wait()
            if task.done:
                return
            self._wait_until_schedulable(task)
        with self._semaphore:
            with self._condition:
                batch = self._take_batch()
                self._running += 1
                self._condition.notify_all()  # the next pending task leads the next batch
            try:
                self._run_batch(batch)
            finally:
                with self._condition:
                    for member in batch:
                        member.done = True
                    self._running -= 1
                    self._condition.notify_all()

    def _wait_until_schedulable(self, first):
        """Wait (holding the condition) until the open batch, whose first task is `first`, is
        full, has waited batch_timeout_micros since `first` arrived, or the queue is closed."""
        deadline = first.arrived + self._timeout
        while self._rows < self._max_batch_size and not self._closed:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            self._condition.wait(left)

    def _take_batch(self):
        """The oldest pending tasks that fit one batch, taken off the queue."""
        batch, rows = [], 0
        while self._pending and rows + self._pending[0].rows <= self._max_batch_size:
            task = self._pending.popleft()
            rows += task.rows
            batch.append(task)
        self._rows -= rows
        return batch

    def _run_batch(self, batch):
        """Set each task's result or error: one merged run, or each task alone when they
        cannot merge or the merged run fails (so that one bad task fails only itself)."""
        rows = sum(task.rows for task in batch)
        # Only tasks of one shape and dtype merge; the graph judges any other shape alone.
        mergeable = len({(task.array.shape[1:], task.array.dtype) for task in batch}) == 1
        if len(batch) > 1 and mergeable:
            try:
                outputs = self._run(np.concatenate([task.array for task in batch]))
            except Exception:  # noqa: BLE001 - one bad task fails the batch: run each alone
                outputs = None
            if outputs is not None and any(value.ndim == 0 or value.shape[0] != rows
                                           for value in outputs.values()):
                outputs = None  # outputs not batched along dimension 0: run each task alone
            if outputs is not None:
                start = 0
                for task in batch:
                    stop = start + task.rows
                    task.result = {name: value[start:stop] for name, value in outputs.items()}
                    start = stop
                return
        for task in batch:
            try:
                task.result = self._run(task.array)
            except ServingError as error:
                task.error = error
            except Exception as error:  # noqa: BLE001 - reported to the caller
                task.error = ServingError(grpc.StatusCode.INTERNAL, str(error))
