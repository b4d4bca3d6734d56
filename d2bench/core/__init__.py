"""The torch-free foundation every other floor stands on.

Names and labels of the variants, the typed configuration, the cell-result contract (which files
a cell writes and which metric keys it reports), atomic file writes and provenance (versions, git
revision, machine). Nothing here imports torch, ray, mlflow or submitit, so the orchestration
floors (study, launch, tracking, report) and a GPU machine without them can both use it.
"""
