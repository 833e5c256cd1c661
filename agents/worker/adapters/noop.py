"""``noop:`` — answers every input at once with the empty OIP response ``{"outputs":[]}``; for
benchmarks of everything around the model. ``noop:predict=LABEL`` also predicts ``LABEL`` for
every input (for benchmarks of the label join).

>>> from model_canary.agents.worker.adapters.base import ModelInput
>>> NoopAdapter().predict([ModelInput("r1", b"{}")])[0].outputs
b'{"outputs":[]}'
>>> NoopAdapter(prediction="a").predict([ModelInput("r1", b"{}")])[0].prediction
'a'
"""

from __future__ import annotations

from collections.abc import Sequence

from model_canary.agents.worker.adapters.base import ModelInput, ModelOutput

_EMPTY = ModelOutput(b'{"outputs":[]}')


class NoopAdapter:
    """The same empty response for every input, with no prediction or a fixed one."""

    def __init__(self, name: str = "noop", *, prediction: str | None = None) -> None:
        self.name = name
        self._answer = (
            _EMPTY if prediction is None else ModelOutput(_EMPTY.outputs, prediction=prediction)
        )

    def predict(self, batch: Sequence[ModelInput]) -> list[ModelOutput]:
        """``[{"outputs": []}] * len(batch)``."""
        return [self._answer] * len(batch)

    def close(self) -> None:
        """Nothing to release."""
