"""Supervised meta-learning: tasks, datasets, models, the training loop and the evaluations."""
