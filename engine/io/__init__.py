"""Image and file I/O at the pipeline's edges: photos in and out, atomic writes, debug pictures."""
