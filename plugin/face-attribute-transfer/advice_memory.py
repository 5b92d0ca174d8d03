# Advice the plug-in has already given: remarks about the setup rather than the result
# (a bank with fewer example faces than an edit looks for) are the same after every run,
# and a GIMP message after every run taught users to close it unread. So each is shown
# once; the texts shown are kept in the procedure's last values (an aux argument).
# A remark about the result itself (the face already smiles) is shown every time.
# No GIMP imports here, so this part is tested outside GIMP as well.

import json

KEPT = 20  # the newest texts remembered; an older one may be said again


def fresh_advice(advice, memory):
    """(the advice not given before, the memory with it) from the engine's advice texts and the memory's JSON
    text (empty, or unreadable from an older plug-in: nothing given yet)."""
    try:
        given = [t for t in json.loads(memory or "[]") if isinstance(t, str)]
    except (ValueError, TypeError):
        given = []
    fresh = [t for t in dict.fromkeys(advice) if t not in given]
    return fresh, json.dumps((given + fresh)[-KEPT:])
