"""Fit, calibrate, evaluate, split and re-encode: everything that learns from labelled data.

Not part of the runtime image (``app.py``); it depends on ``pipeline`` and ``models``, never the reverse.
"""
