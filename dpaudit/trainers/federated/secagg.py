"""Secure aggregation (SecAgg+) of one round, in process, on Flower's own primitives.

The protocol is Bonawitz et al. 2017 ("Practical Secure Aggregation for
Privacy-Preserving Machine Learning", CCS, §4 and Figure 4: rounds 0 advertise
keys, 1 share keys, 2 masked input, 4 unmasking; semi-honest, no consistency
check) with the sparse neighbour graph of SecAgg+ (Bell, Bonawitz, Gascón,
Lepoint, Raykova 2020, "Secure Single-Server Aggregation with (Poly)Logarithmic
Overhead", CCS, §3): each client pairs with the ⌊k/2⌋ clients on either side of
it on a seeded random ring. Flower 1.42 ships the same protocol only as a legacy
workflow (``SecAggPlusWorkflow`` with a ``LegacyContext`` and ``secaggplus_mod``)
that cannot wrap dpaudit's Message-API strategy (docs/decisions.md); this module
drives the same Flower primitives — ECDH key agreement and HKDF
(``generate_shared_key``), Fernet (``encrypt``/``decrypt``), Shamir sharing
(``create_shares``/``combine_shares``), the mask generator (``pseudo_rand_gen``),
stochastic quantisation (``quantize``/``dequantize``) and arithmetic mod M — in
one process, stage by stage, so each stage can be timed and the server's view
inspected.

Client i quantises its update x_i to integers q_i ∈ [0, Q] (coordinates clipped to
[−c, c], step Δ = 2c/Q, unbiased stochastic rounding) and sends

    y_i = q_i + PRG(b_i) + Σ_{j ∈ N(i), j < i} PRG(s_ij) − Σ_{j ∈ N(i), j > i} PRG(s_ij)  (mod M),

with b_i its self-mask seed and s_ij the ECDH secret it shares with neighbour j.
The server sums the y_i of the clients that replied, removes each one's PRG(b_i)
(b_i rebuilt from t of its Shamir shares) and each dropped client's pairwise masks
(its key rebuilt from t shares), and obtains Σ q_i exactly; the float sum is
dequantise(Σ q_i) − (n − 1)c. Security caveat: Flower's PRG folds its seed to 32
bits and uses NumPy's Mersenne Twister — right for measuring cost and for showing
that the server's view is the sum only, not a security claim.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from dpaudit.errors import DpauditError

__all__ = ["SecAggParams", "SecAggResult", "secure_aggregate"]


@dataclass(frozen=True)
class SecAggParams:
    """Protocol parameters (names as Flower's ``SecAggPlusWorkflow``).

    Attributes:
        num_shares: k, neighbours + 1 of each client (≥ n: every client pairs with every
            other, plain SecAgg; an even k below n is rounded up to odd, as Flower does).
        reconstruction_threshold: t, shares needed to rebuild a secret (2 ≤ t ≤ k; lowered
            to the cohort size n when n < t).
        clipping_range: c; coordinates are clipped to [−c, c] before quantising.
        quantization_range: Q, integer levels of a coordinate.
        modulus_range: M, a power of two with n·Q < M (the sum must not wrap).
    """

    num_shares: int = 5
    reconstruction_threshold: int = 3
    clipping_range: float = 1.0
    quantization_range: int = 2**26
    modulus_range: int = 2**32

    @property
    def step(self) -> float:
        """Δ = 2c/Q, the quantisation step (per-coordinate error below Δ)."""
        return 2 * self.clipping_range / self.quantization_range


@dataclass(frozen=True)
class SecAggResult:
    """One secure-aggregation round.

    Attributes:
        total: the unmasked float sum Σ_i x̂_i of the surviving clients, by array name.
        integer_sum: the unmasked Σ_i q_i (mod M), by array name.
        masked: what the server received from each client (``y_i`` mod M, int64), by
            client index; the only per-client view it has.
        quantized: each client's q_i (kept to check ``Σ q_i``; a server never sees it).
        survivors: indices of the clients whose masked input was summed.
        seconds: wall time by stage (``keys``, ``shares``, ``masking``, ``unmasking``).
        bytes_up: bytes each client sent (public keys, encrypted shares, masked input).
    """

    total: dict[str, np.ndarray]
    integer_sum: dict[str, np.ndarray] = field(repr=False)
    masked: dict[int, dict[str, np.ndarray]] = field(repr=False)
    quantized: dict[int, dict[str, np.ndarray]] = field(repr=False)
    survivors: tuple[int, ...]
    seconds: dict[str, float]
    bytes_up: int


def _neighbours(n: int, degree: int, seed: int) -> dict[int, list[int]]:
    """SecAgg+'s graph: a seeded random ring, each client linked to ⌊degree/2⌋ on either side
    (every other client when ``degree ≥ n − 1``)."""
    if degree >= n - 1:
        return {i: [j for j in range(n) if j != i] for i in range(n)}
    order = np.random.default_rng([seed, 53]).permutation(n).tolist()
    half = degree // 2
    out: dict[int, set[int]] = {i: set() for i in range(n)}
    for pos, i in enumerate(order):
        for step in range(1, half + 1):
            j = order[(pos + step) % n]
            out[i].add(j)
            out[j].add(i)
    return {i: sorted(v) for i, v in out.items()}


def secure_aggregate(
    updates: Sequence[Mapping[str, np.ndarray]],
    params: SecAggParams = SecAggParams(),
    *,
    seed: int,
    dropouts: Sequence[int] = (),
) -> SecAggResult:
    """Run one SecAgg+ round over ``updates`` (module docstring).

    Args:
        updates: each client's update, by array name (same names and shapes).
        params: protocol parameters.
        seed: seeds the ring, the self-mask seeds and the stochastic rounding.
        dropouts: clients that share their keys but never send a masked input (their
            pairwise masks are removed from their neighbours' inputs at unmasking).

    Raises:
        DpauditError: fewer than 2 clients, parameters that cannot work (t > k,
            M not a power of two, n·Q ≥ M), or too few survivors to unmask.
    """
    from flwr.common.secure_aggregation.crypto.shamir import combine_shares, create_shares
    from flwr.common.secure_aggregation.crypto.symmetric_encryption import (
        decrypt,
        encrypt,
        generate_shared_key,
    )
    from flwr.common.secure_aggregation.quantization import dequantize, quantize
    from flwr.common.secure_aggregation.secaggplus_utils import pseudo_rand_gen
    from flwr.supercore.primitives.asymmetric import (
        bytes_to_private_key,
        generate_key_pairs,
        private_key_to_bytes,
        public_key_to_bytes,
    )

    n, p = len(updates), params
    if n < 2:
        raise DpauditError("secure aggregation needs at least 2 clients")
    if not 2 <= p.reconstruction_threshold <= p.num_shares:
        raise DpauditError(
            f"reconstruction threshold t = {p.reconstruction_threshold} must be in "
            f"[2, num_shares = {p.num_shares}]"
        )
    k = min(p.num_shares, n)  # a cohort smaller than k: every client holds a share of every other
    if k < n and k % 2 == 0:
        k += 1  # a ring gives each client an even number of neighbours (as Flower rounds up)
    t = min(p.reconstruction_threshold, k)
    if p.modulus_range & (p.modulus_range - 1) or n * p.quantization_range >= p.modulus_range:
        raise DpauditError(
            f"modulus M = {p.modulus_range} must be a power of two above n·Q = "
            f"{n * p.quantization_range}"
        )
    names = sorted(updates[0])
    shapes = [tuple(np.asarray(updates[0][a]).shape) for a in names]
    graph = _neighbours(n, k - 1, seed)
    seconds: dict[str, float] = {}
    sent = [0] * n

    start = time.perf_counter()  # round 0: advertise keys (c: masking, s: share encryption)
    c_keys = [generate_key_pairs() for _ in range(n)]
    s_keys = [generate_key_pairs() for _ in range(n)]
    for i in range(n):
        sent[i] += len(public_key_to_bytes(c_keys[i][1])) + len(public_key_to_bytes(s_keys[i][1]))
    seconds["keys"] = time.perf_counter() - start

    start = time.perf_counter()  # round 1: Shamir-share b_i and the masking key, encrypted
    rng = np.random.default_rng([seed, 59])
    self_seeds = [rng.bytes(32) for _ in range(n)]
    inbox: dict[int, dict[int, bytes]] = {j: {} for j in range(n)}  # holder j: owner i → ciphertext
    own_b: dict[int, bytes] = {}  # each client keeps share 0 of its own self-mask seed
    for i in range(n):
        holders = graph[i]
        b_sh = create_shares(self_seeds[i], t, len(holders) + 1)
        sk_sh = create_shares(private_key_to_bytes(c_keys[i][0]), t, len(holders) + 1)
        own_b[i] = b_sh[0]
        for slot, j in enumerate(holders, start=1):
            key = generate_shared_key(s_keys[i][0], s_keys[j][1])
            message = b"|".join([len(b_sh[slot]).to_bytes(4, "big"), b_sh[slot], sk_sh[slot]])
            inbox[j][i] = encrypt(key, message)
            sent[i] += len(inbox[j][i])
    seconds["shares"] = time.perf_counter() - start

    start = time.perf_counter()  # round 2: masked inputs
    survivors = tuple(i for i in range(n) if i not in set(dropouts))
    if len(survivors) < t:
        raise DpauditError(f"{len(survivors)} survivors cannot unmask (threshold t = {t})")
    m = p.modulus_range
    masked: dict[int, dict[str, np.ndarray]] = {}
    quantized: dict[int, dict[str, np.ndarray]] = {}
    state = np.random.get_state()
    try:
        for i in survivors:
            np.random.seed(int(np.random.default_rng([seed, 61, i]).integers(2**31)))
            q = quantize(
                [np.asarray(updates[i][a], dtype=np.float64) for a in names],
                p.clipping_range,
                p.quantization_range,
            )
            quantized[i] = {a: v.astype(np.int64) for a, v in zip(names, q, strict=True)}
            y = [
                v.astype(np.int64) + r
                for v, r in zip(q, pseudo_rand_gen(self_seeds[i], m, shapes), strict=True)
            ]
            for j in graph[i]:
                mask = pseudo_rand_gen(generate_shared_key(c_keys[i][0], c_keys[j][1]), m, shapes)
                y = [a + b if i > j else a - b for a, b in zip(y, mask, strict=True)]
            masked[i] = {a: np.mod(v, m) for a, v in zip(names, y, strict=True)}
            sent[i] += sum(v.size for v in y) * math.ceil(math.log2(m) / 8)  # bytes a coordinate
    finally:
        np.random.set_state(state)
    seconds["masking"] = time.perf_counter() - start

    start = time.perf_counter()  # round 4: unmasking
    total = [np.zeros(s, dtype=np.int64) for s in shapes]
    for i in survivors:
        total = [a + masked[i][name] for a, name in zip(total, names, strict=True)]
    for i in range(n):
        opened = []
        for j in [h for h in graph[i] if h in survivors][:t]:
            key = generate_shared_key(s_keys[j][0], s_keys[i][1])
            plain = decrypt(key, inbox[j][i])
            size = int.from_bytes(plain[:4], "big")
            opened.append((plain[5 : 5 + size], plain[6 + size :]))
        if i in survivors:  # remove its self mask (a survivor adds its own share)
            opened = [(own_b[i], b""), *opened][:t]
        if len(opened) < t:
            raise DpauditError(f"client {i}: only {len(opened)} of t = {t} shares reachable")
        if i in survivors:
            b = combine_shares([o[0] for o in opened])
            total = [a - r for a, r in zip(total, pseudo_rand_gen(b, m, shapes), strict=True)]
        else:  # a dropout: remove the pairwise masks its neighbours added
            sk = bytes_to_private_key(combine_shares([o[1] for o in opened]))
            for j in graph[i]:
                if j not in survivors:
                    continue
                mask = pseudo_rand_gen(generate_shared_key(sk, c_keys[j][1]), m, shapes)
                total = [a + r if i > j else a - r for a, r in zip(total, mask, strict=True)]
    summed = [np.mod(a, m) for a in total]
    floats = dequantize(summed, p.clipping_range, p.quantization_range)
    offset = (len(survivors) - 1) * p.clipping_range
    seconds["unmasking"] = time.perf_counter() - start
    return SecAggResult(
        total={a: np.asarray(v) - offset for a, v in zip(names, floats, strict=True)},
        integer_sum=dict(zip(names, summed, strict=True)),
        masked=masked,
        quantized=quantized,
        survivors=survivors,
        seconds=seconds,
        bytes_up=int(sum(sent)),
    )
