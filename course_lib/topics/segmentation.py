"""Chapter 14: segmentation (being written)."""
