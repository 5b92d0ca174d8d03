"""Plain torch definitions of the backbones the engine knows (one file each)."""
