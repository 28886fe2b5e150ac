"""The kinds of task, listed once: adding a kind is a package here plus one line.

Each package declares its `Job` (registered with the runner on import) and its
`blueprints()` (the endpoints it adds to the API).
"""

from importlib import import_module
from types import ModuleType

PACKAGES = (
    "imports",
    "exports",
    "teams",
)


def load() -> list[ModuleType]:
    """Import every kind's package (which registers its Job) and return them."""
    return [import_module(f"{__name__}.{name}") for name in PACKAGES]
