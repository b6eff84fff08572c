"""Course tooling, never imported by a chapter: chapter timing, student notebooks."""
