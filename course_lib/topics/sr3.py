"""Chapter 15: sr3 (being written)."""
