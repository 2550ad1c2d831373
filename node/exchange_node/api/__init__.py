"""The public HTTP + WebSocket order API (aiohttp), versioned under /v1.

It talks only to ``exchange_node.service.ExchangeService``. Mount it with
``add_routes(app, service, config)`` beside other routes, or make a
stand-alone application with ``create_app(service, config)``.
"""

from exchange_node.api.app import API_KEY, Api, add_routes, create_app
from exchange_node.api.config import ApiConfig, ApiConfigError, load_api_keys_file, parse_api_keys

__all__ = [
    "API_KEY",
    "Api",
    "ApiConfig",
    "ApiConfigError",
    "add_routes",
    "create_app",
    "load_api_keys_file",
    "parse_api_keys",
]
