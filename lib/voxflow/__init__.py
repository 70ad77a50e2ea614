"""voxflow: raw 3D scans to a trained segmentation network and native-space predictions."""

__version__ = "0.1.0"
