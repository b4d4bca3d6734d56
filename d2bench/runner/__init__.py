"""The cell runner: one cell's whole life (train, validate, infer, evaluate, measure).

The top torch floor: it composes the engine (training loop, inference), the metrics (J&F, FPS,
out-of-bounds statistics) and the models into what a launcher runs inside its worker process.
Launchers import it only there, never at module level.
"""
