"""Chapter 14: sam (being written)."""
