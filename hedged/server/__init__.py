"""HTTP API and web page for hedged predictions (``hedged serve``).

``create_app(settings)`` builds the FastAPI application; ``Settings`` holds its
configuration (flags, ``HEDGED_*`` environment variables). See docs/serving.md.
"""

from hedged.server.app import create_app
from hedged.server.settings import Settings

__all__ = ["create_app", "Settings"]
