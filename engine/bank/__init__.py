"""Attribute banks: example faces with and without each attribute (mode B of Li, Zuo, Zhang 2016,
"tuning the attribute features of the reference").

A bank gives an edit both pixels (aligned crops of the nearest examples with the attribute: the start
image's source) and features (their mean minus the mean of the nearest examples without it: the target's
direction). Modules: `attributes` (names, regions, CelebA names; standard library only), `measure`
(attribute scores and head pose from the 68 landmarks), `labels` (label files), `store` (the file format),
`build` (`python -m engine bank build`), `choose` (k nearest), `edit` (the attribute edit), `cli`.
"""
