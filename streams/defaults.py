"""Defaults that several modules share, stated once.

>>> DEFAULT_STEPS_BP, steps_percent(DEFAULT_STEPS_BP)
((100, 2000, 5000, 10000), '1,20,50,100')
"""

from __future__ import annotations

from collections.abc import Sequence

from model_canary.streams.record_base import MAX_BP

__all__ = ["DEFAULT_STEPS_BP", "MAX_BP", "steps_percent"]

#: The canary's weight at each step of a rollout that names none, in basis points.
DEFAULT_STEPS_BP: tuple[int, ...] = (100, 2000, 5000, MAX_BP)


def steps_percent(steps_bp: Sequence[int]) -> str:
    """Steps as the command line writes them: percentages separated by commas."""
    return ",".join(f"{bp / 100:g}" for bp in steps_bp)
