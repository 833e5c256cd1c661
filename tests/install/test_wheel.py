"""The built wheel, installed as a user would: into a fresh virtual environment, next to
OpenAI's Agents SDK (import name ``agents``), without the optional extras.

The wheel and the environment are made once per test session. The environment needs the
package index: without it the tests that install are skipped, saying so.
"""

from __future__ import annotations

import subprocess
import sys
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _run(*args: str | Path, timeout: float = 600.0) -> subprocess.CompletedProcess[str]:
    # Run away from this checkout: its top-level agents/ folder would shadow any other
    # 'agents' for a script whose working directory is on sys.path.
    return subprocess.run(
        [str(a) for a in args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        cwd=Path(args[0]).parent if Path(args[0]).is_absolute() else None,
    )


def _checked(*args: str | Path, timeout: float = 600.0) -> str:
    done = _run(*args, timeout=timeout)
    assert done.returncode == 0, f"{' '.join(map(str, args))}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture(scope="session")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The project's wheel, built with the pinned setuptools of this environment."""
    out = tmp_path_factory.mktemp("wheel")
    _checked(
        sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
        "-w", out, ROOT,
    )  # fmt: skip
    (built,) = out.glob("model_canary-*.whl")
    return built


@pytest.fixture(scope="session")
def venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtual environment with the wheel (no extras) and ``openai-agents`` from the
    package index, installed by uv's pip-compatible installer (the same resolution as
    ``pip install``, in seconds instead of a minute)."""
    home = tmp_path_factory.mktemp("venv")
    (home / "probe.in").write_text("openai-agents\n")
    _checked(sys.executable, "-m", "venv", "--without-pip", home / "env")
    python = home / "env" / "bin" / "python"
    uv = Path(sys.executable).parent / "uv"
    probe = _run(uv, "pip", "compile", "--quiet", "--no-header", home / "probe.in", timeout=120)
    if probe.returncode != 0:
        pytest.skip(f"the package index is unreachable: {probe.stderr.strip()[-300:]}")
    _checked(uv, "pip", "install", "--quiet", "--python", python, wheel, "openai-agents")
    return home / "env"


def _requirements(wheel: Path) -> list[str]:
    with zipfile.ZipFile(wheel) as archive:
        (name,) = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        metadata = Parser().parsestr(archive.read(name).decode())
    return metadata.get_all("Requires-Dist") or []


def test_the_wheel_needs_scikit_learn_only_for_its_extra(wheel: Path) -> None:
    requirements = _requirements(wheel)
    assert any(r.startswith("confluent-kafka") for r in requirements)
    assert any(r.startswith("scipy") for r in requirements)
    for package in ("scikit-learn", "joblib"):
        needed = [r for r in requirements if r.startswith(package)]
        assert needed, f"{package} is not even in the sklearn extra"
        assert all('extra == "sklearn"' in r for r in needed), needed


def test_the_wheel_holds_only_the_model_canary_namespace(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        tops = {n.split("/", 1)[0] for n in archive.namelist()}
        names = set(archive.namelist())
    assert {t for t in tops if not t.endswith(".dist-info")} == {"model_canary"}
    for expected in (
        "model_canary/agents/router/agent.py",
        "model_canary/streams/plan.py",
        "model_canary/schemas/inference_request.avsc",
        "model_canary/agents/broker/pom.xml",
    ):
        assert expected in names


def test_installs_and_imports_next_to_openai_agents_without_scikit_learn(venv: Path) -> None:
    python = venv / "bin" / "python"
    script = (
        "import agents, model_canary.agents, model_canary.streams.plan\n"
        "from agents import Agent, Runner\n"
        "from model_canary.agents.client import CanaryClient\n"
        "from model_canary.agents.router.agent import Router\n"
        "assert 'model_canary' not in agents.__file__, agents.__file__\n"
        "print(model_canary.agents.__file__)\n"
    )
    where = _checked(python, "-c", script)
    assert str(venv) in where  # the installed copy, not this checkout
    installed = _checked(
        python, "-c",
        "import importlib.metadata as m\n"
        "print(sorted(d.metadata['Name'].lower() for d in m.distributions()))",
    )  # fmt: skip
    assert "'openai-agents'" in installed and "'model-canary'" in installed
    assert "'scikit-learn'" not in installed and "'joblib'" not in installed
    assert _run(venv / "bin" / "canary", "--help").returncode == 0


def test_features_of_the_sklearn_extra_say_what_to_install(venv: Path, tmp_path: Path) -> None:
    canary = venv / "bin" / "canary"
    train = _run(canary, "demo", "train", "--out", tmp_path / "models")
    assert train.returncode == 2
    assert "pip install 'model-canary[sklearn]'" in train.stderr
    model = tmp_path / "m.joblib"
    model.write_bytes(b"")
    python = venv / "bin" / "python"
    adapter = _run(
        python, "-c",
        "from model_canary.agents.worker.adapters import load_adapter\n"
        f"load_adapter('sklearn:{model}')",
    )  # fmt: skip
    assert "pip install 'model-canary[sklearn]'" in adapter.stderr
