"""Learning: plans, sampling, networks, losses, augmentation, inference."""
