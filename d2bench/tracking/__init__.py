"""MLflow tracking for studies (the only package that imports MLflow, and only when used)."""

from ..core.provenance import git_revision
from .store import StoreError, open_store
from .tracker import (
    FINAL_METRICS,
    CellRunLogger,
    Tracker,
    default_tracking_uri,
    resolve_tracking_uri,
)

__all__ = [
    "FINAL_METRICS",
    "CellRunLogger",
    "StoreError",
    "Tracker",
    "default_tracking_uri",
    "git_revision",
    "open_store",
    "resolve_tracking_uri",
]
