"""Go's math/rand (the pre-1.20 seeded global source), re-implemented in Python.

The FGD artifact shuffles pods, tunes the workload and names nodes with Go's
generator, and its tie-breaking depends on those names. Emulating the exact
stream lets a seed here replay the artifact's run event for event
(fgd-protocol.md Sec. 2.4). Verified against a Go program in the tests.
"""

from __future__ import annotations

from importlib import resources

_LEN = 607
_TAP = 273
_INT32_MAX = (1 << 31) - 1
_MASK63 = (1 << 63) - 1
_MASK64 = (1 << 64) - 1


def _cooked() -> list[int]:
    text = resources.files("tessellate.simulator.data").joinpath("go_rng_cooked.txt").read_text()
    values = [int(line) for line in text.splitlines() if line and not line.startswith("#")]
    if len(values) != _LEN:
        raise RuntimeError(f"go_rng_cooked.txt holds {len(values)} values, expected {_LEN}")
    return values


_COOKED = _cooked()


def _seedrand(x: int) -> int:
    """One Park-Miller step, x <- 48271 x mod (2^31 - 1), computed as Go does (Schrage)."""
    hi, lo = divmod(x, 44488)
    x = 48271 * lo - 3399 * hi
    return x + _INT32_MAX if x < 0 else x


class GoRand:
    """A `rand.New(rand.NewSource(seed))` stream: Int63, Intn, Shuffle, Perm, Float64."""

    def __init__(self, seed: int):
        self.seed(seed)

    def seed(self, seed: int) -> None:
        self._tap = 0
        self._feed = _LEN - _TAP
        seed %= _INT32_MAX  # Python's % is non-negative, like Go's fix-up of a negative remainder
        if seed == 0:
            seed = 89482311
        x = seed
        vec = [0] * _LEN
        for i in range(-20, _LEN):
            x = _seedrand(x)
            if i >= 0:
                u = x << 40
                x = _seedrand(x)
                u ^= x << 20
                x = _seedrand(x)
                u ^= x
                vec[i] = (u ^ _COOKED[i]) & _MASK64
        self._vec = vec

    def uint64(self) -> int:
        self._tap = self._tap - 1 if self._tap else _LEN - 1
        self._feed = self._feed - 1 if self._feed else _LEN - 1
        x = (self._vec[self._feed] + self._vec[self._tap]) & _MASK64
        self._vec[self._feed] = x
        return x

    def int63(self) -> int:
        return self.uint64() & _MASK63

    def int31(self) -> int:
        return self.int63() >> 32

    def uint32(self) -> int:
        return (self.int63() >> 31) & 0xFFFFFFFF

    def int31n(self, n: int) -> int:
        """Go's exported Int31n: mask for powers of two, else rejection sampling."""
        if n <= 0:
            raise ValueError("invalid argument to Int31n")
        if n & (n - 1) == 0:
            return self.int31() & (n - 1)
        limit = _INT32_MAX - (1 << 31) % n
        v = self.int31()
        while v > limit:
            v = self.int31()
        return v % n

    def intn(self, n: int) -> int:
        if n <= 0:
            raise ValueError("invalid argument to Intn")
        if n > _INT32_MAX:
            raise NotImplementedError("Intn beyond 2^31 is not needed by the simulator")
        return self.int31n(n)

    def _int31n_lemire(self, n: int) -> int:
        """Go's unexported int31n (Lemire's method), used by Shuffle."""
        prod = self.uint32() * n
        low = prod & 0xFFFFFFFF
        if low < n:
            threshold = ((1 << 32) - n) % n
            while low < threshold:
                prod = self.uint32() * n
                low = prod & 0xFFFFFFFF
        return prod >> 32

    def shuffle(self, items: list) -> None:
        """In-place Fisher-Yates from the last index down, as rand.Shuffle."""
        for i in range(len(items) - 1, 0, -1):
            j = self._int31n_lemire(i + 1)
            items[i], items[j] = items[j], items[i]

    def perm(self, n: int) -> list[int]:
        m = [0] * n
        for i in range(n):
            j = self.intn(i + 1)
            m[i] = m[j]
            m[j] = i
        return m

    def float64(self) -> float:
        while True:
            f = self.int63() / (1 << 63)
            if f != 1.0:
                return f
