"""face-attribute-transfer engine: features, optimisation, CLI and Python API.

    from engine import edit
    result = edit("me.jpg", guide="smile.jpg", region="mouth")
    result.save("me-smiling.png")
"""

from contextlib import contextmanager

from engine.errors import FATError

__all__ = ["FATError", "edit", "edit_strengths"]

# True in a `python -m engine ...` process (engine/__main__.py sets it): only there may the engine change torch for
# the whole process (engine/objective/optimise.py skip_dynamo_import); a program that imports the engine keeps its
# torch as it is.
own_process = False


@contextmanager
def _in_api_words():
    """A FATError leaving the Python API names its keywords (`strength=9.0`), not the command line's flags."""
    try:
        yield
    except FATError as e:
        e.audience = "api"
        raise


def edit(*args, **kwargs):
    """See engine.api.edit (imported lazily: torch loads only when needed)."""
    from engine.api import edit as _edit

    with _in_api_words():
        return _edit(*args, **kwargs)


def edit_strengths(*args, **kwargs):
    """See engine.api.edit_strengths: an attribute edit at several strengths, one Result each."""
    from engine.api import edit_strengths as _edit_strengths

    with _in_api_words():
        return _edit_strengths(*args, **kwargs)
