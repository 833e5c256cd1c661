"""Pre-flight replays: a candidate judged on recorded traffic before any user sees it."""
