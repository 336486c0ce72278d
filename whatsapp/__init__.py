"""WhatsApp Cloud API integration.

* ``webhook``: the FastAPI router mounted in the service app (verification, signed events, the
  per-job result callback that sends the verdict);
* ``graph``: the Graph API client (media id -> URL -> bytes, sending text replies);
* ``messages``: every text the bot sends;
* ``client``: the seed's flow for the customer's existing bot (``request_video_detection`` plus a
  callback handler that updates its row and notifies the user).
"""
