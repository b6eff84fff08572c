"""Sample quality: the FID on a shipped MNIST classifier's features."""
