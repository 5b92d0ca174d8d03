"""Readers of the published VGG-Face weight formats.

Each reader turns one downloaded file into `RawWeights`: arrays keyed by the
canonical names (conv1_1.weight ... fc8.bias) in the torch layout, plus the
channel order the network was trained on. `canonical.py` does the rest.
"""
