"""What fits: the inverse questions (largest batch or context, fewest GPUs, best format, parallel layouts)."""
