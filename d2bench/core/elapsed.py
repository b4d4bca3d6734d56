"""Elapsed time and an estimate of what is left, as progress lines show them (torch-free)."""

from __future__ import annotations


def format_duration(seconds: float) -> str:
    """``42s``, ``3m05s``, ``2h07m``: short enough for a progress line, exact enough to plan by."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    minutes, secs = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def time_left(elapsed: float, done: int, total: int) -> float | None:
    """Seconds left if the rest goes at the pace so far; None before the first unit is done."""
    if done <= 0 or total <= 0:
        return None
    return elapsed / done * max(total - done, 0)


def elapsed_text(elapsed: float, done: int, total: int) -> str:
    """``1m20s elapsed, ~2m40s left`` (``1m20s elapsed`` alone when nothing is left or known)."""
    text = f"{format_duration(elapsed)} elapsed"
    left = time_left(elapsed, done, total)
    if left is not None and done < total:
        text += f", ~{format_duration(left)} left"
    return text
