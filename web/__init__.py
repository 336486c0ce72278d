"""The result pages (history list, detail per detection) served at / by the service app; see routes.py."""
