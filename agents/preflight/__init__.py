"""``canary preflight``: replay recorded traffic through a candidate before any user sees it."""
