"""API keys from a file or EXCHANGE_API_KEYS; the token bucket."""

from __future__ import annotations

import pytest
from exchange_node.api import ApiConfig, ApiConfigError, load_api_keys_file, parse_api_keys
from exchange_node.api.auth import RateLimiter
from exchange_node.api.config import load_key_rate_limits


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


def test_a_batch_takes_the_bucket_into_debt_once():
    now = [0.0]
    limiter = RateLimiter(rate=100, burst=10, clock=lambda: now[0])
    assert limiter.acquire("k") == 0  # the batch's request is admitted on one token
    assert limiter.acquire("k") == 0  # and so is an overlapping one of the same key
    assert limiter.debit("k", 499) == 0  # the first batch pays for its 500 orders
    assert limiter.debit("k", 499) == pytest.approx(4.92)  # the second finds a debt: 429
    assert limiter.acquire("k") == pytest.approx(4.92)  # 491 in debt + 1 at 100/s
    now[0] += 4.92
    assert limiter.acquire("k") == 0
    assert limiter.debit("other", 5) == 0  # per key


def test_a_batch_reserves_its_largest_cost_before_its_body_is_read():
    from exchange_node.api.auth import Authenticator
    from exchange_node.api.errors import ApiError

    limiter = RateLimiter(rate=100, burst=1000, clock=lambda: 0.0)
    auth = Authenticator({"k": "alice"}, limiter)
    auth.charge("k")
    first = auth.reserve_batch("k", 500)  # 999 -> 500
    auth.charge("k")
    second = auth.reserve_batch("k", 500)  # 499 -> 0
    with pytest.raises(ApiError) as refused:  # a third overlapping batch: refused unread
        auth.charge("k")
    assert refused.value.status == 429 and refused.value.extra["limit"] == "rate_limit_per_second"
    first.settle(10)  # it had 10 orders: 490 back
    second.release()  # its body was refused: 499 back
    assert limiter.buckets["k"].tokens == 989
    first.release()  # settled already: nothing more
    assert limiter.buckets["k"].tokens == 989


def test_per_key_rate_limits_from_the_keys_file(tmp_path):
    path = tmp_path / "keys.yaml"
    path.write_text(
        "- {token: mm, client_id: maker, rate_limit: 20000, rate_burst: 40000}\n"
        "- {token: mm2, client_id: maker2, rate_limit: 500}\n"
        "- {token: retail, client_id: alice}\n"
    )
    assert load_api_keys_file(path) == {"mm": "maker", "mm2": "maker2", "retail": "alice"}
    assert load_key_rate_limits(path) == {"mm": (20000.0, 40000), "mm2": (500.0, 1000)}
    config = ApiConfig.from_env({"EXCHANGE_API_KEYS_FILE": str(path)})
    assert config.key_rate_limits == {"mm": (20000.0, 40000), "mm2": (500.0, 1000)}
    limiter = RateLimiter(1, 1, clock=lambda: 0.0, overrides=config.key_rate_limits)
    assert limiter.acquire("retail") == 0 and limiter.acquire("retail") > 0
    assert limiter.acquire("mm", 40000) == 0
    # The old forms set no per-key limit.
    for text in ("t1: alice\n", "t1=alice\n", "- {token: t1, client_id: alice}\n"):
        path.write_text(text)
        assert load_key_rate_limits(path) == {}


@pytest.mark.parametrize(
    "entry,named",
    [
        ("rate_limit: lots", "rate_limit"),
        ("rate_limit: -1", "rate_limit"),
        ("rate_limit: 10, rate_burst: 0", "rate_burst"),
        ("rate_limit: 10, rate_burst: 1.5", "rate_burst"),
        ("rate_burst: 10", "rate_burst without rate_limit"),
    ],
)
def test_bad_per_key_rate_limits_name_the_field(tmp_path, entry, named):
    path = tmp_path / "keys.yaml"
    path.write_text(f"- {{token: t1, client_id: alice, {entry}}}\n")
    with pytest.raises(ApiConfigError, match=named):
        load_key_rate_limits(path)


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


def test_every_api_flag_is_in_the_node_contract_with_its_default():
    import re
    from pathlib import Path

    from exchange_node.api.config import API_FLAGS, ENV_SETTINGS

    contract = (Path(__file__).resolve().parents[2] / "docs" / "node-contract.md").read_text()
    defaults = ApiConfig()
    for flag, (name, _parse, _help) in API_FLAGS.items():
        variable = "EXCHANGE_" + flag.upper().replace("-", "_")
        assert variable in ENV_SETTINGS
        row = re.search(rf"^\| `--{flag}` \| `{variable}` \| ([^|]+) \|", contract, re.M)
        assert row is not None, f"--{flag} has no row in docs/node-contract.md"
        default = getattr(defaults, name)
        shown = str(default).lower() if isinstance(default, bool) else str(default)
        assert row.group(1).strip() == shown, (flag, row.group(1), shown)


def test_node_flags_and_variables_reach_api_settings_and_bad_values_name_the_flag():
    import argparse

    from exchange_node.server import config as node_config

    parser = argparse.ArgumentParser()
    node_config.add_arguments(parser)
    args = parser.parse_args(["--api-max-batch=7", "--api-ws-send-queue-bytes=65536"])
    env = {"EXCHANGE_API_PUBLIC_MARKET_DATA": "false", "EXCHANGE_API_MAX_BATCH": "9"}
    cfg = node_config.from_args(args, {**env, "EXCHANGE_INSECURE_PEERS": "true"})
    # The flag wins over the variable; the variable alone is read too.
    assert cfg.api_settings == {
        "max_batch": 7,
        "public_market_data": False,
        "ws_send_queue_bytes": 65536,
    }
    for argv, env, named in [
        (["--api-max-batch=0"], {}, "--api-max-batch"),
        (["--api-rate-limit=lots"], {}, "--api-rate-limit"),
        ([], {"EXCHANGE_API_HTTP_IDLE_TIMEOUT_SECONDS": "-1"}, "EXCHANGE_API_HTTP_IDLE"),
        ([], {"EXCHANGE_API_PUBLIC_MARKET_DATA": "maybe"}, "--api-public-market-data"),
    ]:
        with pytest.raises(node_config.ConfigError, match=named):
            node_config.from_args(
                parser.parse_args(argv), {**env, "EXCHANGE_INSECURE_PEERS": "true"}
            )
