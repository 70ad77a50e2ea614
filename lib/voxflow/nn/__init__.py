"""The deep-learning toolkit that segmentation training, synthesis and inference share: networks, patch sampling
from stores, DDP, checkpoints and the sliding window."""
