"""One APIRouter per concern; ``hedged.server.app.create_app`` includes them all."""
