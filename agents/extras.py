"""Optional extras: features whose packages are not installed by ``pip install model-canary``.

``model-canary[sklearn]`` brings scikit-learn and joblib, for the ``sklearn:`` worker adapter,
the demo's models and ``canary load``'s iris rows. Without it those features raise a
:class:`MissingExtraError` that says what to install; everything else works.

>>> require("sklearn", "the demo", modules=("json",))   # installed: nothing happens
>>> try:
...     require("sklearn", "the demo", modules=("no_such_module_x",))
... except MissingExtraError as exc:
...     print(exc)
the demo needs no_such_module_x: pip install 'model-canary[sklearn]'
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence

from model_canary.streams.errors import ConfigError

#: The import names each extra provides.
EXTRAS: dict[str, tuple[str, ...]] = {"sklearn": ("sklearn", "joblib")}


class MissingExtraError(ConfigError):
    """A feature needs an optional extra that is not installed."""


def require(extra: str, feature: str, *, modules: Sequence[str] | None = None) -> None:
    """Raise :class:`MissingExtraError` when a module of ``extra`` cannot be imported."""
    wanted = EXTRAS[extra] if modules is None else tuple(modules)
    missing = [name for name in wanted if importlib.util.find_spec(name) is None]
    if missing:
        raise MissingExtraError(
            f"{feature} needs {', '.join(missing)}: pip install 'model-canary[{extra}]'"
        )
