"""``noop:`` — answers every input at once with the empty OIP response ``{"outputs":[]}``; for
benchmarks of everything around the model.

>>> from model_canary.agents.worker.adapters.base import ModelInput
>>> NoopAdapter().predict([ModelInput("r1", b"{}")])[0].outputs
b'{"outputs":[]}'
"""

from __future__ import annotations

from collections.abc import Sequence

from model_canary.agents.worker.adapters.base import ModelInput, ModelOutput

_EMPTY = ModelOutput(b'{"outputs":[]}')


class NoopAdapter:
    """The same empty response for every input, no prediction."""

    def __init__(self, name: str = "noop") -> None:
        self.name = name

    def predict(self, batch: Sequence[ModelInput]) -> list[ModelOutput]:
        """``[{"outputs": []}] * len(batch)``."""
        return [_EMPTY] * len(batch)

    def close(self) -> None:
        """Nothing to release."""
