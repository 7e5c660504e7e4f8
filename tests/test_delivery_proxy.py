"""Which proxy the agent's delivery uses, read from the environment as curl and httpx read it."""

from __future__ import annotations

import pytest

from hisguard.agent.delivery import env_proxy

ENV = {"HTTPS_PROXY": "http://proxy.hospital:3128", "http_proxy": "http://plain.hospital:8080"}


@pytest.mark.parametrize(
    ("url", "no_proxy", "expected"),
    [
        ("https://hisguard.vendor.example", "", "http://proxy.hospital:3128"),
        ("http://10.1.2.3:8700", "", "http://plain.hospital:8080"),
        ("https://hisguard.vendor.example", "vendor.example", None),  # a suffix bypasses
        ("https://hisguard.vendor.example", ".vendor.example", None),
        ("https://hisguard.vendor.example", "other.example, *", None),
        ("https://notvendor.example", "vendor.example", "http://proxy.hospital:3128"),  # not a suffix match
        ("http://10.1.2.3:8700", "10.1.2.3", None),
        ("http://10.1.2.30:8700", "10.1.2.3", "http://plain.hospital:8080"),
    ],
)
def test_proxy_from_environment_honours_no_proxy(url: str, no_proxy: str, expected: str | None) -> None:
    assert env_proxy(url, {**ENV, "NO_PROXY": no_proxy}) == expected


def test_all_proxy_is_the_fallback_and_nothing_set_means_direct() -> None:
    assert env_proxy("https://h.example", {"ALL_PROXY": "socks5://p:1080"}) == "socks5://p:1080"
    assert env_proxy("https://h.example", {}) is None
