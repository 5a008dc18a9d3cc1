"""Few-shot datasets: files, caches and splits (Omniglot, MNIST/Fashion-MNIST, image folders),
and the episode sampler."""
