"""The rollout state machine: pure code that turns a command and the current state into the
next state, or rejects the command with a reason."""

from model_canary.streams.rollout.machine import ACTIVE_PHASES, CommandRejected, apply_command

__all__ = ["ACTIVE_PHASES", "CommandRejected", "apply_command"]
