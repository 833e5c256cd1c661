"""``canary demo``: the end-to-end run a new user starts with."""
