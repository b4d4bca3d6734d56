"""Training, clip inference and the cell runner (imports torch; the study side must not)."""
