"""Chapter 15: restoration (being written)."""
