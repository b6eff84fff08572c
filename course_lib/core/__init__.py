"""The course's machinery: profiles, devices and seeds, checkpoints, checks, plots, widgets, the training loop."""
