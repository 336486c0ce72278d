"""The deployed HTTP app (``server.py``: the service API + WhatsApp webhook + these pages) and the result pages
(history list, detail per detection) served at ``/``; see routes.py. ``react/`` is the dashboard component."""
