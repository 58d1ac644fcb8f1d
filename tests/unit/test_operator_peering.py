"""`edgemodel operator --peering`: each replica gets a peering priority of its own, so kopf
elects the highest one active (kopf pauses every replica when the highest priority is shared,
and its default is 0 for all). The election itself runs in tests/e2e/test_real_cluster.py."""

from __future__ import annotations

import argparse

from edgemodel_operator import cli


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    return parser.parse_args(list(argv))


def test_a_given_priority_is_kept() -> None:
    args = parse("--peering", "edgemodel", "--peering-priority", "7")
    assert cli.peering_priority(args.peering_priority) == 7


def test_without_one_each_replica_draws_a_positive_priority_below_2_to_the_31() -> None:
    assert parse("--peering", "edgemodel").peering_priority is None
    assert cli.peering_priority(None, lambda bound: 0) == 1
    assert cli.peering_priority(None, lambda bound: bound - 1) == 2**31 - 1
    drawn = {cli.peering_priority(None) for _ in range(50)}
    assert len(drawn) > 1 and all(1 <= p < 2**31 for p in drawn)  # not one shared value
