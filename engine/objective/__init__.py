"""The objective and its optimiser: recipes (tuned numbers), loss terms, the start image, the loop."""
