"""Flower's SecAgg+ parameter rules, checked when a config is read instead of inside a run.

Pure functions, no Flower import. They restate what Flower 1.42 does with ``num_shares`` and
``reconstruction_threshold`` (``SecAggPlusWorkflow._check_init_params`` and ``setup_stage``,
``secaggplus_mod._share_keys``) so that a value Flower would refuse, or one that passes
Flower's checks and then fails or silently halts every round, is refused with the key, the
rule and what is allowed:

* a whole number above 1 is a count, anything up to 1 a fraction (of the round's clients for
  ``num_shares``, of the shares for ``threshold``);
* a share count must be at least 3; an even count below ``clients_per_round`` is refused
  because Flower sends the clients that count and then builds neighbourhoods one larger,
  so every client fails to hand out its shares (an IndexError inside ``_share_keys``);
* a threshold count must be below a share count (Flower's rule), and every threshold must
  fit in a neighbourhood: otherwise Flower's workflow halts each round without training,
  and ours aborts.
"""

from __future__ import annotations

from dataclasses import dataclass

# Flower's SecAgg+ defaults, which the `secagg` method uses: weights quantized to
# [0, 2**22) and masked in a 2**32 field, so a round's sum overflows from 1024 clients on.
FLOWER_QUANTIZATION_RANGE = 2**22
FLOWER_MODULUS_RANGE = 2**32


def flower_value(value: float) -> int | float:
    """How Flower reads a SecAgg+ parameter: an int is a count, a float a fraction.

    A whole number above 1 from a config file (3.0) is a count and must reach Flower as 3.
    """
    return int(value) if value > 1 and float(value).is_integer() else float(value)


@dataclass(frozen=True)
class SecAggSizes:
    """What Flower's setup stage makes of the parameters for a round of ``clients`` clients."""

    shares: int  # shares each client makes (what the clients are told)
    threshold: int  # shares needed to reconstruct a secret
    neighbourhood: int  # clients in each client's neighbourhood (itself included)


def secagg_sizes(num_shares: float, threshold: float, clients: int) -> SecAggSizes:
    """Flower's ``SecAggPlusWorkflow.setup_stage`` arithmetic, for a valid ``(num_shares, threshold)``."""
    shares_in, threshold_in = flower_value(num_shares), flower_value(threshold)
    if isinstance(shares_in, float):
        shares = round(shares_in * clients)
        if shares < clients and shares % 2 == 0:
            shares += 1
        if shares <= 2:
            shares = clients
    else:
        shares = shares_in
    if isinstance(threshold_in, float):
        needed = max(round(threshold_in * shares), 2)
    else:
        needed = threshold_in
    # Flower then makes an even count odd (except a count equal to the round's size) and
    # links each client to `shares // 2` clients on either side of it in a shuffled ring.
    widened = shares + 1 if shares != clients and shares % 2 == 0 else shares
    return SecAggSizes(shares, needed, min(clients, 2 * (widened // 2) + 1))


def check_secagg(num_shares: float, threshold: float, clients: int) -> None:
    """Raise ``ValueError`` naming the key and the rule if Flower's SecAgg+ cannot run with these values."""
    for key, value in (("num_shares", num_shares), ("threshold", threshold)):
        if value > 1 and not float(value).is_integer():
            raise ValueError(f"{key}: a fraction (0 < {key} <= 1) or a whole count (> 1), got {value}")
    shares_in = flower_value(num_shares)
    if isinstance(shares_in, int) and shares_in <= 2:
        raise ValueError(f"num_shares: a count must be at least 3 (Flower's SecAgg+ rule), got {shares_in}; "
                         "or give a fraction of the round's clients (<= 1)")
    if isinstance(shares_in, int) and shares_in % 2 == 0 and shares_in < clients:
        raise ValueError(f"num_shares: an even count below clients_per_round ({clients}) makes Flower build "
                         f"neighbourhoods of {shares_in + 1} after telling the clients {shares_in}, and every client "
                         f"fails; got {shares_in}: use an odd count, clients_per_round, or a fraction")
    threshold_in = flower_value(threshold)
    if isinstance(threshold_in, int) and isinstance(shares_in, int) and threshold_in >= shares_in:
        raise ValueError(f"threshold: a count must be below the num_shares count {shares_in} (Flower's SecAgg+ "
                         f"rule), got {threshold_in}")
    sizes = secagg_sizes(num_shares, threshold, clients)
    if sizes.threshold > sizes.neighbourhood:
        raise ValueError(f"threshold: {threshold} asks for {sizes.threshold} shares, but with num_shares={num_shares} "
                         f"and clients_per_round={clients} each client has only {sizes.neighbourhood} neighbours "
                         "(itself included) to hold them, so no round could finish; use a threshold of at most "
                         f"{sizes.neighbourhood} (or a fraction)")


def check_flower_field(clients: int) -> None:
    """Flower's own SecAgg+ (``secagg``): the round's sum must fit its 2**32 field."""
    most = (FLOWER_MODULUS_RANGE - 1) // FLOWER_QUANTIZATION_RANGE
    if clients > most:
        raise ValueError(f"clients_per_round: method secagg (Flower's SecAgg+, values < 2**22 in a 2**32 field) "
                         f"overflows beyond {most} clients a round, got {clients}")
