"""One YAML per experiment: the paper's hyperparameters (package data)."""
