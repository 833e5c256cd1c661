"""Write ``upgrade-snapshot-bf7afba.json``: what an evaluator of an earlier release saved for a
rollout in progress, and what that release went on to count.

Run it from a checkout of that release (its own venv), not from this one::

    git worktree add /tmp/old bf7afba && cd /tmp/old && scripts/setup
    PYTHONPATH=. .venv/bin/python $NEW/tests/unit/data/make_upgrade_snapshot.py \
        > $NEW/tests/unit/data/upgrade-snapshot-bf7afba.json

(``$NEW``: this checkout).

The file holds the evaluator's checkpoint of one rollout after the first half of its evidence
(``snapshot``), the second half of that evidence as the old workers and router wrote it on the
wire (``records``, Avro single-object messages), and the old release's counts at both points
(``expected_*``). ``test_evidence_upgrade.py`` restores the snapshot with today's code, applies
the old records and checks that nothing is lost or counted twice.
"""

from __future__ import annotations

import base64
import importlib
import json
import subprocess
import sys
from pathlib import Path

from model_canary.streams.codec.avro import codec_for
from model_canary.streams.evidence.state import RolloutEvidence
from model_canary.streams.messages import Evidence
from tests.unit.test_evidence_state import feed, traffic

# The counting is the test's own (one definition), read from this checkout's tests/unit.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
counts = importlib.import_module("test_evidence_upgrade").counts

SEED = 11
WEIGHT_BP = 2000


def main() -> None:
    records = traffic(SEED, seconds=6, weight_bp=WEIGHT_BP, thresholds=True)
    half = len(records) // 2
    first = feed(records[:half])
    snapshot = first.to_bytes()
    expected_restored = counts(RolloutEvidence.from_bytes(snapshot))
    straight = feed(records)
    codec = codec_for(Evidence)
    rev = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()
    json.dump(
        {
            "written_by": rev,
            "seed": SEED,
            "snapshot": base64.b64encode(snapshot).decode(),
            "records": [base64.b64encode(codec.encode(ev)).decode() for ev in records[half:]],
            "expected_restored": expected_restored,
            "expected_final": counts(straight),
        },
        sys.stdout,
        indent=1,
        sort_keys=True,
    )
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
