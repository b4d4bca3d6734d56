"""MLflow tracking for studies (the only package that imports MLflow, and only when used)."""

from .tracker import (
    FINAL_METRICS,
    CellRunLogger,
    Tracker,
    default_tracking_uri,
    git_revision,
    resolve_tracking_uri,
)

__all__ = [
    "FINAL_METRICS",
    "CellRunLogger",
    "Tracker",
    "default_tracking_uri",
    "git_revision",
    "resolve_tracking_uri",
]
