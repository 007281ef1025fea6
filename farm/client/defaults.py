"""Where a farm's control API is unless told otherwise: `farm up` serves it there, and every
client (FarmClient, the CLI's --api-host and --api-port) looks for it there."""

from __future__ import annotations

DEFAULT_API_HOST = "127.0.0.1"
DEFAULT_API_PORT = 9502
