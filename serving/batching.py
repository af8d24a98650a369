"""Request batching: concurrent calls of one signature merged along dimension 0.

`BatchQueue` follows TF Serving's BatchingParameters: a batch runs when it holds max_batch_size
rows or batch_timeout_micros after its first task; tasks larger than a batch are refused and a
full queue (max_enqueued_batches) answers UNAVAILABLE, as TF Serving does; num_batch_threads is
the semaphore shared by the queues of a server.
"""

import threading
import time

import grpc
import numpy as np

from serving.errors import ServingError

__all__ = ["BatchQueue"]


class _Task:
    __slots__ = ("array", "done", "result", "error")

    def __init__(self, array):
        self.array = array
        self.done = threading.Event()
        self.result = None
        self.error = None


class BatchQueue:
    """Merges concurrent calls of one signature into batches along dimension 0.

    A batch runs when it holds max_batch_size rows or batch_timeout_micros after its first task
    arrived. `run(array)` must return a dict of arrays with the batch as their first dimension.
    """

    def __init__(self, run, parameters, semaphore):
        self._run = run
        self._max_batch_size = parameters.max_batch_size.value or 32
        self._timeout = (parameters.batch_timeout_micros.value or 0) / 1e6
        self._max_rows = self._max_batch_size * (parameters.max_enqueued_batches.value or 100)
        self._semaphore = semaphore
        self._pending = []
        self._rows = 0
        self._condition = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._loop, daemon=True, name="batch-queue")
        self._thread.start()

    def submit(self, array):
        if array.ndim == 0:  # TF Serving's batching session refuses these too
            raise ServingError(grpc.StatusCode.INVALID_ARGUMENT,
                               "Batching Run() input tensors must have at least one dimension")
        rows = array.shape[0]
        if rows > self._max_batch_size:  # TF Serving refuses these too (clients chunk)
            raise ServingError(grpc.StatusCode.INVALID_ARGUMENT,
                               f"Task size {rows} is larger than maximum input batch size "
                               f"{self._max_batch_size}")
        task = _Task(array)
        with self._condition:
            closed = self._closed
            if not closed:
                if self._rows + rows > self._max_rows:
                    raise ServingError(grpc.StatusCode.UNAVAILABLE,
                                       "The batch scheduling queue to which this task was "
                                       "submitted is full")
                self._pending.append(task)
                self._rows += rows
                self._condition.notify()
        if closed:  # the version was just unloaded; a request that already holds it still runs
            with self._semaphore:
                return self._run(array)
        task.done.wait()
        if task.error is not None:
            raise task.error
        return task.result

    def close(self):
        """Run what is queued, then stop the thread."""
        with self._condition:
            self._closed = True
            self._condition.notify()
        self._thread.join(timeout=30)

    def _take_batch(self):
        with self._condition:
            while not self._pending and not self._closed:
                self._condition.wait()
            if not self._pending:
                return None
            deadline = time.monotonic() + self._timeout
            while self._rows < self._max_batch_size and not self._closed:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._condition.wait(left)
            batch, rows = [], 0
            while self._pending and rows + self._pending[0].array.shape[0] <= self._max_batch_size:
                task = self._pending.pop(0)
                rows += task.array.shape[0]
                batch.append(task)
            self._rows -= rows
            return batch

    def _loop(self):
        while True:
            batch = self._take_batch()
            if batch is None:
                return
            with self._semaphore:
                self._run_batch(batch)

    def _run_batch(self, batch):
        rows = sum(task.array.shape[0] for task in batch)
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
                    stop = start + task.array.shape[0]
                    task.result = {name: value[start:stop] for name, value in outputs.items()}
                    start = stop
                    task.done.set()
                return
        for task in batch:
            try:
                task.result = self._run(task.array)
            except ServingError as error:
                task.error = error
            except Exception as error:  # noqa: BLE001 - reported to the caller
                task.error = ServingError(grpc.StatusCode.INTERNAL, str(error))
            task.done.set()
