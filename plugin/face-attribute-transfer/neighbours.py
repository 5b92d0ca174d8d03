# Which layer beside the photo the dialog preselects as the guide, and how the plug-in's own result layers are
# named (one pattern for both). No GIMP imports here, so this part is tested outside GIMP as well.

import re

# a result layer's name ends so (face-attribute-transfer.py result_name): "photo (mouth transfer)", "photo (+1
# smiling transfer) #1", "photo (mouth preview)"
RESULT_NAME = re.compile(r" \([^()]* (transfer|preview)\)( #\d+)?$")


def neighbour_index(names, index):
    """Index of the layer to preselect as the guide among the photo's siblings (`names`, top first; None for what
    is not a layer), the photo at `index`: the nearest above, else below, going outwards, that is not one of the
    plug-in's own results. A GIMP trial found the previous result, put just above the photo, preselected: a user
    who clicked OK would have taken the person's own edited face as the guide. None where there is no such layer."""
    for step in range(1, len(names)):
        for i in (index - step, index + step):
            if 0 <= i < len(names) and names[i] is not None and not RESULT_NAME.search(names[i]):
                return i
    return None
