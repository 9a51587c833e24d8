"""Training: optimizer and stages, train state and step, checkpoints, metrics, the loop."""
