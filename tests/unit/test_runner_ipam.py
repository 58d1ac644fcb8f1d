"""The pod runner's IP allocator: unique addresses, lowest free first, .0 and .255 skipped,
freed ones reused, a previous runner's addresses kept."""

from __future__ import annotations

import ipaddress

import pytest

from edgemodel_sandbox.runner.ipam import Allocator, PoolExhausted


def test_allocates_lowest_free_and_is_stable_per_owner() -> None:
    pool = Allocator(ipaddress.IPv4Network("10.200.0.0/16"))
    assert pool.allocate("a") == "10.200.0.1"
    assert pool.allocate("b") == "10.200.0.2"
    assert pool.allocate("a") == "10.200.0.1"
    pool.release("a")
    assert pool.allocate("c") == "10.200.0.1"  # reused
    assert pool.allocate("d") == "10.200.0.3"
    pool.release("unknown")  # harmless
    assert pool.owned() == {"b": "10.200.0.2", "c": "10.200.0.1", "d": "10.200.0.3"}


def test_skips_network_and_broadcast_like_addresses() -> None:
    pool = Allocator(ipaddress.IPv4Network("10.200.0.0/16"))
    addresses = [pool.allocate(str(i)) for i in range(300)]
    assert len(set(addresses)) == 300
    assert not any(a.endswith((".0", ".255")) for a in addresses)
    assert addresses[253] == "10.200.0.254" and addresses[254] == "10.200.1.1"


def test_wanted_address_is_kept_when_free() -> None:
    pool = Allocator(ipaddress.IPv4Network("127.1.0.0/16"))
    assert pool.allocate("old", "127.1.3.7") == "127.1.3.7"
    assert pool.allocate("dup", "127.1.3.7") == "127.1.0.1"  # taken: a fresh one
    assert pool.allocate("outside", "10.0.0.1") == "127.1.0.2"
    assert pool.allocate("bad", "127.1.3.255") == "127.1.0.3"
    pool.release("old")
    assert pool.allocate("next") == "127.1.0.4"  # lower free addresses come first
    assert pool.contains("127.1.9.9") and not pool.contains("127.2.0.1")
    assert not pool.contains("not an ip")


def test_released_low_address_comes_before_new_ones() -> None:
    pool = Allocator(ipaddress.IPv4Network("10.200.0.0/16"))
    for owner in "abc":
        pool.allocate(owner)
    pool.release("b")
    assert pool.allocate("d") == "10.200.0.2"


def test_exhaustion() -> None:
    pool = Allocator(ipaddress.IPv4Network("10.0.0.0/30"))  # .1 .2 .3 usable
    for owner in "abc":
        pool.allocate(owner)
    with pytest.raises(PoolExhausted):
        pool.allocate("d")
