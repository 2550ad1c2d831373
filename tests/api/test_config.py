"""API keys from a file or EXCHANGE_API_KEYS; the token bucket."""

from __future__ import annotations

import pytest
from exchange_node.api import ApiConfig, ApiConfigError, load_api_keys_file, parse_api_keys
from exchange_node.api.auth import RateLimiter


def test_keys_from_env():
    assert parse_api_keys("t1=alice, t2=bob,") == {"t1": "alice", "t2": "bob"}
    for bad in ["t1", "=alice", "t1=", "t1=a,t1=b"]:
        with pytest.raises(ApiConfigError):
            parse_api_keys(bad)


@pytest.mark.parametrize(
    "name,text",
    [
        ("keys.yaml", "t1: alice\nt2: bob\n"),
        ("keys.yaml", "keys:\n  t1: alice\n  t2: bob\n"),
        ("keys.yml", "- {token: t1, client_id: alice}\n- {token: t2, client_id: bob}\n"),
        ("keys.json", '{"t1": "alice", "t2": "bob"}'),
        ("keys.txt", "# the node's plain format\nt1=alice\n\nt2=bob\n"),
    ],
)
def test_keys_from_a_file(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    assert load_api_keys_file(path) == {"t1": "alice", "t2": "bob"}


def test_from_env_merges_file_and_variable(tmp_path):
    path = tmp_path / "keys.yaml"
    path.write_text("t1: alice\n")
    config = ApiConfig.from_env(
        {"EXCHANGE_API_KEYS_FILE": str(path), "EXCHANGE_API_KEYS": "t2=bob"}, max_batch=10
    )
    assert config.api_keys == {"t1": "alice", "t2": "bob"} and config.max_batch == 10


@pytest.mark.parametrize(
    "kwargs",
    [
        {"api_keys": {"has space": "alice"}},
        {"api_keys": {"t": ""}},
        {"max_batch": 0},
        {"max_body_bytes": 10},
        {"follower_writes": "sometimes"},
        {"rate_limit_per_second": -1},
    ],
)
def test_bad_config_is_refused(kwargs):
    with pytest.raises(ApiConfigError):
        ApiConfig(**kwargs)


def test_token_bucket_refills_at_its_rate():
    now = [0.0]
    limiter = RateLimiter(rate=10, burst=2, clock=lambda: now[0])
    assert limiter.acquire("k") == 0 and limiter.acquire("k") == 0
    assert limiter.acquire("k") == pytest.approx(0.1)
    now[0] += 0.1
    assert limiter.acquire("k") == 0
    assert limiter.acquire("other") == 0  # per key
    assert RateLimiter(rate=0, burst=1).acquire("k") == 0  # disabled


def test_limits_from_the_environment_and_keywords_win():
    config = ApiConfig.from_env(
        {
            "EXCHANGE_API_KEYS": "t1=alice",
            "EXCHANGE_API_RATE_LIMIT": "50",
            "EXCHANGE_API_MAX_BATCH": "20",
            "EXCHANGE_API_PUBLIC_MARKET_DATA": "false",
            "EXCHANGE_API_FOLLOWER_WRITES": "redirect",
        },
        api_keys={"t2": "bob"},
        max_batch=30,
    )
    assert config.api_keys == {"t1": "alice", "t2": "bob"}
    assert config.rate_limit_per_second == 50 and config.max_batch == 30
    assert config.public_market_data is False and config.follower_writes == "redirect"
    with pytest.raises(ApiConfigError, match="EXCHANGE_API_MAX_BATCH"):
        ApiConfig.from_env({"EXCHANGE_API_MAX_BATCH": "many"})
    with pytest.raises(ApiConfigError):
        ApiConfig.from_env({"EXCHANGE_API_FOLLOWER_WRITES": "sometimes"})
