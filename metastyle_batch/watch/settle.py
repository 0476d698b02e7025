"""The settler: files seen but not yet complete, until their ``(size, mtime, inode)`` stays put long enough."""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass

from .rules import Sig, file_sig, is_regular

__all__ = ["Observation", "Settler"]


@dataclass
class Observation:
    """What the settler knows about one pending file."""

    spec_index: int
    sig: Sig
    last_change: float  # wall-clock time the file was last seen changing (its mtime for old files)
    checks: int = 0  # confirming looks since the last change
    closed: bool = False  # a close-write event arrived after the last change


class Settler:
    """Files seen but not yet complete; thread-safe (the observer thread feeds it, the worker polls it).

    A file is complete once its signature has not changed for ``settle`` seconds, or for ``close_settle``
    seconds after a close-write event; a file whose mtime is older than that is ready at the first poll.
    """

    def __init__(self, settle: float, close_settle: float):
        self.settle, self.close_settle = settle, min(close_settle, settle)
        self._pending: dict[tuple[int, str], Observation] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        with self._lock:
            return len(self._pending)

    def touch(self, spec_index: int, path: str, closed: bool = False) -> None:
        """The file was seen (an event, a scan): start or restart settling it."""
        try:
            st = os.stat(path)
        except OSError:
            with self._lock:
                self._pending.pop((spec_index, path), None)
            return
        if not is_regular(st):
            return
        now, sig = time.time(), file_sig(st)
        with self._lock:
            obs = self._pending.get((spec_index, path))
            if obs is not None and obs.sig == sig:
                obs.closed = obs.closed or closed
            else:  # new or changed; an old mtime means nobody has written it for a while
                changed_at = now if obs is not None else min(now, st.st_mtime_ns / 1e9)
                self._pending[(spec_index, path)] = Observation(spec_index, sig, changed_at, closed=closed)

    def poll(self) -> list[tuple[int, str, Sig]]:
        """Look at every pending file again; return (and forget) those that are complete, in path order."""
        with self._lock:
            items = list(self._pending.items())
        ready = []
        now = time.time()
        for key, obs in items:
            try:
                st = os.stat(key[1])
            except OSError:
                st = None
            with self._lock:
                if self._pending.get(key) is not obs:
                    continue  # replaced by the observer meanwhile
                if st is None or not is_regular(st):
                    del self._pending[key]
                    continue
                if file_sig(st) != obs.sig:
                    obs.sig, obs.last_change, obs.checks, obs.closed = file_sig(st), now, 0, False
                    continue
                obs.checks += 1
                need = self.close_settle if obs.closed else self.settle
                if now - obs.last_change >= need:
                    del self._pending[key]
                    ready.append((key[0], key[1], obs.sig))
        return sorted(ready, key=lambda r: r[1])
