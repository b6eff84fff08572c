"""Chapter 15: distillation (being written)."""
