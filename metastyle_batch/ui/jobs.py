"""Long renders, one at a time on a worker thread, with progress the page polls."""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ..errors import MetastyleError

log = logging.getLogger("metastyle_batch.ui")


@dataclass
class Job:
    id: str
    kind: str  # photos or video
    total: int
    done: int = 0
    state: str = "queued"  # queued, running, done, failed
    message: str = ""
    failures: list[str] = field(default_factory=list)  # one line per input that failed; the others still finish
    result: Path | None = None
    started: float = field(default_factory=time.monotonic)
    ended: float | None = None

    def progress(self, done: int, total: int | None = None) -> None:
        self.done, self.total = done, total or self.total

    def public(self) -> dict:
        return {"id": self.id, "kind": self.kind, "state": self.state, "done": self.done, "total": self.total,
                "message": self.message, "failures": self.failures,
                "download": f"/api/jobs/{self.id}/download" if self.result else None,
                "filename": self.result.name if self.result else None,
                "seconds": round((self.ended or time.monotonic()) - self.started, 1)}


class JobRunner:
    """A queue of jobs and the one thread that runs them (renders share the cores; one at a time is fastest)."""

    def __init__(self) -> None:
        self._jobs: dict[str, Job] = {}
        self._queue: queue.Queue = queue.Queue()
        threading.Thread(target=self._work, name="ui-jobs", daemon=True).start()

    def submit(self, kind: str, total: int, work: Callable[[Job], Path]) -> Job:
        """Queue ``work(job)``, which updates ``job``'s progress and returns the file to download."""
        job = Job(os.urandom(8).hex(), kind, total)
        self._jobs[job.id] = job
        self._queue.put((job, work))
        return job

    def get(self, job_id: str) -> Job | None:
        return self._jobs.get(job_id)

    def _work(self) -> None:
        while True:
            job, work = self._queue.get()
            job.state, job.started = "running", time.monotonic()
            try:
                job.result = work(job)
                job.state = "done"
            except MetastyleError as exc:
                job.state, job.message = "failed", str(exc)
            except Exception as exc:  # the server goes on; the page shows what went wrong
                log.exception("job %s failed", job.id)
                job.state, job.message = "failed", f"{type(exc).__name__}: {exc}"
            job.ended = time.monotonic()
