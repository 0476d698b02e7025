"""``metastyle-batch watch --status``: what the journal says about a folder, plus a look at IN (no torch)."""

from __future__ import annotations

import sqlite3
from typing import Any

from .config import FolderSpec
from .journal import STATUSES, Journal, daemon_running, settled
from .rules import candidates, relative_in

__all__ = ["folder_status"]


def folder_status(spec: FolderSpec) -> dict[str, Any]:
    """Counts from the journal plus a look at IN: done, failed, pending (not yet done), unsupported."""
    spec = spec if spec.journal is not None else spec.resolved()
    rows: dict[str, sqlite3.Row] = {}
    journal_exists = spec.journal.is_file()
    if journal_exists:
        journal = Journal(spec.journal, create=False)
        try:
            rows = {r["path"]: r for r in journal.rows(spec.key)}
        finally:
            journal.close()
    pending = [relative_in(spec, path) for path, st in candidates(spec, spec.in_dir) if not settled(rows.get(path), st)]
    by_status = {s: [r for r in rows.values() if r["status"] == s] for s in STATUSES}
    return {
        "name": spec.name, "in": str(spec.in_dir), "out": str(spec.out_dir), "journal": str(spec.journal),
        "journal_exists": journal_exists, "daemon_pid": daemon_running(spec.journal),
        "done": len(by_status["done"]), "failed": len(by_status["failed"]), "pending": len(pending),
        "unsupported": len(by_status["unsupported"]), "retrying": len(by_status["retry"]),
        "pending_files": pending,
        "failures": [{"input": r["path"], "error": r["error"], "moved_to": r["moved_to"]} for r in by_status["failed"]],
        "unsupported_files": [{"input": r["path"], "error": r["error"]} for r in by_status["unsupported"]],
    }
