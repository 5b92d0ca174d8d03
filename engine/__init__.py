"""face-attribute-transfer engine: features, optimisation, CLI and Python API.

    from engine import edit
    result = edit("me.jpg", guide="smile.jpg", region="mouth")
    result.save("me-smiling.png")
"""

from engine.errors import FATError

__all__ = ["FATError", "edit"]


def edit(*args, **kwargs):
    """See engine.api.edit (imported lazily: torch loads only when needed)."""
    from engine.api import edit as _edit

    return _edit(*args, **kwargs)
