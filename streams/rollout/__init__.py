"""The rollout state machine: pure code that turns a command and the current state into the
next state, or rejects the command with a reason."""

from model_canary.streams.errors import CommandRejectedError
from model_canary.streams.rollout.machine import ACTIVE_PHASES, apply_command

__all__ = ["ACTIVE_PHASES", "CommandRejectedError", "apply_command"]
