"""raft-exchange's Python client: ``AsyncClient`` and ``Client`` for orders and
market data, ``MarketStream`` for the WebSocket feed with local order books,
``AdminClient`` for the admin API. Only aiohttp is needed.

    from exchange_client import Client
    with Client("http://127.0.0.1:8080", token="...") as ex:
        result = ex.place_order("BTC-USD", "BUY", 1, price=49_900)
"""

from .admin import AdminClient
from .aio import AsyncClient, RequestStats
from .errors import (
    AuthError,
    BadRequestError,
    ExchangeError,
    NotFoundError,
    NotLeaderError,
    OutcomeUnknownError,
    RateLimitedError,
    RejectedError,
    UnavailableError,
)
from .models import (
    DEFAULT_PRICE_SCALE,
    Book,
    ClusterStatus,
    Fill,
    Level,
    Member,
    Order,
    OrderResult,
    OrderType,
    Position,
    Side,
    Symbol,
    TimeInForce,
    Trade,
)
from .stream import (
    BookEvent,
    GapEvent,
    LocalOrderBook,
    MarketStream,
    OrderEvents,
    TradesEvent,
    TradingStatusEvent,
)
from .sync import Client

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_PRICE_SCALE",
    "AdminClient",
    "AsyncClient",
    "AuthError",
    "BadRequestError",
    "Book",
    "BookEvent",
    "Client",
    "ClusterStatus",
    "ExchangeError",
    "Fill",
    "GapEvent",
    "Level",
    "LocalOrderBook",
    "MarketStream",
    "Member",
    "NotFoundError",
    "NotLeaderError",
    "Order",
    "OrderEvents",
    "OrderResult",
    "OrderType",
    "OutcomeUnknownError",
    "Position",
    "RateLimitedError",
    "RejectedError",
    "RequestStats",
    "Side",
    "Symbol",
    "TimeInForce",
    "Trade",
    "TradesEvent",
    "TradingStatusEvent",
    "UnavailableError",
]
