"""Detectors, one file each, and ``models.registry``: the one table of which detectors exist, their slot,
loader, weights and preprocessing (``registry.spec(name).load(...)``)."""
