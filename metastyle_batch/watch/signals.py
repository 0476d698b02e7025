"""SIGTERM/SIGINT for the watch daemon: finish the current file, then stop."""

from __future__ import annotations

import logging
import signal
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    from .daemon import WatchDaemon

__all__ = ["install_signal_handlers"]

log = logging.getLogger(__name__)


def install_signal_handlers(daemon: WatchDaemon) -> Callable[[], None]:
    """SIGTERM/SIGINT: finish the current file, then stop; a second signal stops at once (KeyboardInterrupt,
    which is safe: outputs are atomic and the journal settles the file on the next start). Returns a
    function that restores the previous handlers."""
    def handler(signum, _frame):
        if daemon.stopping:
            raise KeyboardInterrupt
        log.info(f"{signal.Signals(signum).name}: stopping after the current file (send it again to stop now)")
        daemon.stop()

    previous = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}

    def restore() -> None:
        for s, h in previous.items():
            signal.signal(s, h)
    return restore
