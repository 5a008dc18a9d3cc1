"""Meta-reinforcement learning: policies, sampling, returns, the MAML-TRPO update, evaluation."""
