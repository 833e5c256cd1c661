"""The Python client: send inference requests and get served results, send control commands.

>>> from model_canary.agents.client import CanaryClient
>>> client = CanaryClient()          # no network until the first call
>>> # result = client.infer({"x": [[5.1, 3.5, 1.4, 0.2]]}, model="iris", key="user-7")
"""

from model_canary.agents.client.control import ControlClient, ControlOutcome
from model_canary.agents.client.inference import AsyncCanaryClient, CanaryClient, InferenceError
from model_canary.streams.errors import CommandRejectedError, RequestTimeoutError

__all__ = [
    "AsyncCanaryClient",
    "CanaryClient",
    "CommandRejectedError",
    "ControlClient",
    "ControlOutcome",
    "InferenceError",
    "RequestTimeoutError",
]
