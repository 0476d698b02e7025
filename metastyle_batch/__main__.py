"""``python -m metastyle_batch`` (what ``torchrun -m metastyle_batch train …`` runs)."""

from .cli import app

app()
