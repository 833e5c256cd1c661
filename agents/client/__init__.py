"""The Python client: send inference requests and get served results, send control commands.

>>> from agents.client import CanaryClient
>>> client = CanaryClient()          # no network until the first call
>>> # result = client.infer({"x": [[5.1, 3.5, 1.4, 0.2]]}, model="iris", key="user-7")
"""

from agents.client.control import ControlClient, ControlOutcome
from agents.client.inference import AsyncCanaryClient, CanaryClient, InferenceError

__all__ = ["AsyncCanaryClient", "CanaryClient", "ControlClient", "ControlOutcome", "InferenceError"]
