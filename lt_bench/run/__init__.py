"""One training run: train, its parts, the loop, evaluation, checkpoints, the fork."""
