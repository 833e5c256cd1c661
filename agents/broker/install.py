"""Resolve Kafka's jars once with Maven into a cache folder, then reuse them."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from importlib import resources
from pathlib import Path

from model_canary.streams.errors import BrokerError

KAFKA_VERSION = "4.1.1"
_MARKER = ".complete"


def pom_path() -> Path:
    return Path(str(resources.files("model_canary.agents.broker").joinpath("pom.xml")))


def libs_dir(cache_dir: Path) -> Path:
    return cache_dir / f"kafka-{KAFKA_VERSION}" / "libs"


def ensure_libs(cache_dir: Path, *, quiet: bool = True) -> Path:
    """The folder holding Kafka's runtime classpath, resolving it with Maven the first time.

    The copy goes to a temporary sibling first and is renamed when complete, so an
    interrupted download is never mistaken for a finished one.
    """
    target = libs_dir(cache_dir)
    if (target / _MARKER).exists():
        return target
    mvn = shutil.which("mvn")
    if mvn is None:
        raise BrokerError(
            "Maven (mvn) is needed once to fetch Apache Kafka's jars from Maven Central; "
            "install it (Debian/Ubuntu: apt-get install maven) or point the project at an "
            "existing cluster with --bootstrap / CANARY_BOOTSTRAP"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="libs-", dir=target.parent))
    cmd = [
        mvn,
        "-B",
        *(["-q"] if quiet else []),
        "-f",
        str(pom_path()),
        "dependency:copy-dependencies",
        "-DincludeScope=runtime",
        f"-DoutputDirectory={tmp}",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    jars = list(tmp.glob("kafka_2.13-*.jar"))
    if proc.returncode != 0 or not jars:
        shutil.rmtree(tmp, ignore_errors=True)
        tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-20:])
        raise BrokerError(f"resolving Kafka {KAFKA_VERSION} with Maven failed:\n{tail}")
    (tmp / _MARKER).write_text(KAFKA_VERSION + "\n")
    if target.exists():
        shutil.rmtree(target)
    tmp.rename(target)
    return target
