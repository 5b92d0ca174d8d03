"""face-attribute-transfer engine: features, optimisation, CLI and Python API.

    from engine import edit
    result = edit("me.jpg", guide="smile.jpg", region="mouth")
    result.save("me-smiling.png")
"""

from engine.errors import FATError

__all__ = ["FATError", "edit"]

# True in a `python -m engine ...` process (engine/__main__.py sets it): only there may the engine change torch for
# the whole process (engine/objective/optimise.py skip_dynamo_import); a program that imports the engine keeps its
# torch as it is.
own_process = False


def edit(*args, **kwargs):
    """See engine.api.edit (imported lazily: torch loads only when needed)."""
    from engine.api import edit as _edit

    return _edit(*args, **kwargs)
