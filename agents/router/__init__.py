"""The router agent: splits each model's requests between its baseline and canary versions."""
