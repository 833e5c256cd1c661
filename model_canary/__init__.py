"""model-canary: Kafka-native progressive delivery (canary, shadow, automatic rollback) for
machine-learning models.

The repository keeps its three layers at the top level (``agents/``, ``streams/``,
``schemas/``); they are installed, and imported, under this one namespace so they never clash
with other distributions' top-level packages (``agents`` is also OpenAI's Agents SDK)::

    from model_canary.streams.plan import parse_plan
    from model_canary.agents.client import CanaryClient
"""

from model_canary.streams import __version__

__all__ = ["__version__"]
