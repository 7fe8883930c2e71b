"""Intra-node GPU topology: which of a node's GPUs talk to each other fastest.

A multi-GPU pod runs at the speed of its slowest GPU pair, so inside the chosen
node Tessellate picks the free GPUs whose *bottleneck* (minimum pairwise)
bandwidth is highest, and node scoring can ask how close a node's best set comes
to the best that node shape could ever offer (`topology_score`), or to the best
any node of the cluster offers (`TopologyIndex(..., relative_to="cluster")`, from
the GB/s of `best_bandwidth`).

Values
------
`NodeTopology` is a frozen, hashable description of one server shape: per GPU
its NUMA node, CPU socket and PCIe switch, plus the NVLink connections between
GPU pairs. From it come a networkx graph (GPUs as nodes, one edge per pair
carrying the best path) and the dense `bandwidth` matrix. Constructors intern
their result, so 1,000 identical nodes share one object and its lookup tables
are built once per distinct shape.

Bandwidth model (GB/s, both directions added, the way NVIDIA quotes NVLink;
sections refer to shared/reference/gpu-topology.md)
-------------------------------------------------------------------------------
* Direct NVLink: links in the pair x per-link bandwidth of the generation
  (section 2: 40 GB/s per link for NVLink 1, 50 for 2-4, 100 for 5).
* NVSwitch: every pair gets the GPU's whole NVLink bandwidth (links per GPU x
  per link), which is what `nvidia-smi topo -m` shows as NV12 / NV18 for every
  pair (sections 4.3, 4.4).
* No NVLink: a PCIe path whose class follows the `topo -m` ranking
  PIX > PHB/NODE > SYS (section 1) on a PCIe x16 link of the node's PCIe
  generation (section 3: 31.5 / 63 / 126 / 242 GB/s for Gen3..6). The reference
  gives no figure for the slower classes, so each class scales the x16 figure
  by a modelling factor (`PCIE_PATH_FACTOR`): same PCIe switch 1, same NUMA
  node 3/4, other NUMA node on the same socket 1/2, other socket 1/4. Only the
  order matters to `best_gpu_set`; the factors shape `topology_score`.
* A pair's bandwidth is its best path: the larger of NVLink and PCIe.

The node agent publishes a node's topology as an annotation (`tessellate.wire.topology`).

GPU sets
--------
`best_gpu_set` chooses, among free GPUs, the k with the highest bottleneck
bandwidth; ties go to the set spanning fewest NUMA nodes, then to the set whose
remaining free GPUs are best connected (compared size by size from all of them
down to pairs, each size by its best bottleneck and then fewest NUMA nodes), then
to the lowest indices. Every subset of a node's GPUs is a bitmask, so the
answers are tables indexed by the free-GPU mask: for nodes of up to 8 GPUs all
masks x k are precomputed, larger nodes (up to 16) are memoised per call.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import networkx as nx

MAX_GPUS = 16
"""Largest node the subset tables handle (DGX-2 / HGX-2 has 16 GPUs)."""

EAGER_GPUS = 8
"""Nodes up to this size get every (free mask, k) answer precomputed."""

NVLINK_LINK_GBPS: dict[int, float] = {1: 40.0, 2: 50.0, 3: 50.0, 4: 50.0, 5: 100.0}
"""Bidirectional GB/s per NVLink by generation (reference section 2)."""

NVLINKS_PER_GPU: dict[int, int] = {1: 4, 2: 6, 3: 12, 4: 18, 5: 18}
"""NVLinks per GPU by generation (reference section 2: P100, V100, A100, H100, B200)."""

PCIE_X16_GBPS: dict[int, float] = {3: 31.5, 4: 63.0, 5: 126.0, 6: 242.0}
"""Bidirectional GB/s of a PCIe x16 link by generation (reference section 3)."""

PCIE_PATH_FACTOR: dict[str, float] = {
    "pcie-switch": 1.0,
    "host-bridge": 0.75,
    "cross-numa": 0.5,
    "cross-socket": 0.25,
}
"""Share of the x16 figure a PCIe path class gets. Modelling weights, not measured:
the reference (section 1) only ranks PIX > PXB > PHB > NODE > SYS."""

LINK_TYPES = ("nvlink", "nvswitch")
"""Link types an inventory may list; PCIe classes are derived, never listed."""


class TopologyError(ValueError):
    """A topology description that cannot describe a real node."""


@dataclass(frozen=True, slots=True)
class GpuPlace:
    """Where one GPU sits on the host: NUMA node, CPU socket, PCIe switch (None: none shared)."""

    numa: int
    socket: int
    pcie_switch: int | None = None


@dataclass(frozen=True, slots=True, order=True)
class Link:
    """NVLink connectivity of a GPU pair, stored with ``a < b``."""

    a: int
    b: int
    type: str
    count: int


@dataclass(frozen=True)
class NodeTopology:
    """One server shape. Build it with a constructor (`nvswitch`, `dgx1_v100`, `pcie`,
    `from_inventory`) so equal shapes are one shared object with shared tables."""

    kind: str
    gpus: tuple[GpuPlace, ...]
    links: tuple[Link, ...] = ()
    nvlink_generation: int | None = None
    pcie_generation: int = 4
    _lookup: dict = field(default_factory=dict, init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "gpus", tuple(self.gpus))
        object.__setattr__(self, "links", tuple(sorted(self.links)))
        _validate(self)

    def __reduce__(self) -> tuple:
        # Unpickle through the interning table and leave the (large) lookup tables behind.
        fields = (self.kind, self.gpus, self.links, self.nvlink_generation, self.pcie_generation)
        return (_rebuild, fields)

    @property
    def gpu_count(self) -> int:
        return len(self.gpus)

    @property
    def numa(self) -> np.ndarray:
        """NUMA node per GPU (read-only int array)."""
        return self._cached("numa", lambda: _readonly(np.array([g.numa for g in self.gpus], np.int64)))

    @property
    def bandwidth(self) -> np.ndarray:
        """Best-path GB/s between GPU pairs, [G, G], symmetric, 0 on the diagonal (read-only)."""
        return self._cached("bandwidth", self._bandwidth_from_graph)

    def graph(self) -> nx.Graph:
        """Complete graph over GPU indices (node attributes numa, socket, pcie_switch); each
        edge carries its best path: ``bandwidth`` (GB/s), ``link`` (``nvlink``, ``nvswitch``
        or a `PCIE_PATH_FACTOR` class) and ``count`` (NVLinks, 0 for PCIe). Frozen, shared."""
        return self._cached("graph", self._build_graph)

    def _cached(self, name: str, build: Any) -> Any:
        value = self._lookup.get(name)
        if value is None:
            value = self._lookup[name] = build()
        return value

    @property
    def _tables(self) -> _Tables:
        return self._cached("tables", lambda: _Tables(self.bandwidth, self.numa))

    def _build_graph(self) -> nx.Graph:
        import networkx as nx  # ~0.3 s to import: paid only once a topology is used

        g = nx.Graph(kind=self.kind)
        for i, place in enumerate(self.gpus):
            g.add_node(i, numa=place.numa, socket=place.socket, pcie_switch=place.pcie_switch)
        nvlinks = {(link.a, link.b): link for link in self.links}
        for i in range(self.gpu_count):
            for j in range(i + 1, self.gpu_count):
                kind, gbps = self._pcie_path(i, j)
                count = 0
                link = nvlinks.get((i, j))
                if link is not None:
                    assert self.nvlink_generation is not None  # checked by _validate
                    nv_gbps = link.count * NVLINK_LINK_GBPS[self.nvlink_generation]
                    if nv_gbps >= gbps:
                        kind, gbps, count = link.type, nv_gbps, link.count
                g.add_edge(i, j, bandwidth=gbps, link=kind, count=count)
        return nx.freeze(g)

    def _pcie_path(self, i: int, j: int) -> tuple[str, float]:
        a, b = self.gpus[i], self.gpus[j]
        if a.pcie_switch is not None and a.pcie_switch == b.pcie_switch:
            kind = "pcie-switch"
        elif a.numa == b.numa:
            kind = "host-bridge"
        elif a.socket == b.socket:
            kind = "cross-numa"
        else:
            kind = "cross-socket"
        return kind, PCIE_X16_GBPS[self.pcie_generation] * PCIE_PATH_FACTOR[kind]

    def _bandwidth_from_graph(self) -> np.ndarray:
        import networkx as nx

        matrix = nx.to_numpy_array(self.graph(), nodelist=range(self.gpu_count), weight="bandwidth")
        return _readonly(matrix)


def _readonly(array: np.ndarray) -> np.ndarray:
    array.setflags(write=False)
    return array


def _validate(t: NodeTopology) -> None:
    g = len(t.gpus)
    if not isinstance(t.kind, str) or not t.kind:
        raise TopologyError("a topology needs a non-empty kind name")
    if not 1 <= g <= MAX_GPUS:
        raise TopologyError(f"a topology needs 1..{MAX_GPUS} GPUs, got {g}")
    if t.pcie_generation not in PCIE_X16_GBPS:
        raise TopologyError(f"unknown PCIe generation {t.pcie_generation!r} (known: 3, 4, 5, 6)")
    if t.nvlink_generation is not None and t.nvlink_generation not in NVLINK_LINK_GBPS:
        raise TopologyError(f"unknown NVLink generation {t.nvlink_generation!r} (known: 1..5)")
    switch_numa: dict[int, int] = {}
    numa_socket: dict[int, int] = {}
    for i, place in enumerate(t.gpus):
        if min(place.numa, place.socket) < 0 or (place.pcie_switch is not None and place.pcie_switch < 0):
            raise TopologyError(f"GPU {i}: negative NUMA, socket or PCIe switch id")
        if place.pcie_switch is not None:
            seen = switch_numa.setdefault(place.pcie_switch, place.numa)
            if seen != place.numa:
                raise TopologyError(
                    f"PCIe switch {place.pcie_switch} spans NUMA nodes {seen} and {place.numa} (GPU {i})"
                )
        seen = numa_socket.setdefault(place.numa, place.socket)
        if seen != place.socket:
            raise TopologyError(f"NUMA node {place.numa} spans sockets {seen} and {place.socket} (GPU {i})")
    if t.links and t.nvlink_generation is None:
        raise TopologyError("NVLink links listed but no nvlink_generation given")
    direct = [0] * g
    fabric = [0] * g
    pairs: set[tuple[int, int]] = set()
    for link in t.links:
        if not 0 <= link.a < link.b < g:
            raise TopologyError(f"link {link.a}-{link.b}: needs GPU indices a < b in 0..{g - 1}")
        if link.type not in LINK_TYPES:
            raise TopologyError(f"unknown link type {link.type!r} (known: {', '.join(LINK_TYPES)})")
        if link.count < 1:
            raise TopologyError(f"link {link.a}-{link.b}: count must be at least 1, got {link.count}")
        if (link.a, link.b) in pairs:
            raise TopologyError(f"duplicate link between GPU {link.a} and GPU {link.b}")
        pairs.add((link.a, link.b))
        for end in (link.a, link.b):
            if link.type == "nvlink":
                direct[end] += link.count
            else:
                fabric[end] = max(fabric[end], link.count)
    if t.nvlink_generation is not None:
        limit = NVLINKS_PER_GPU[t.nvlink_generation]
        for i in range(g):
            if direct[i] + fabric[i] > limit:
                raise TopologyError(
                    f"GPU {i} has {direct[i] + fabric[i]} NVLinks but NVLink {t.nvlink_generation} "
                    f"GPUs have at most {limit}"
                )


_INTERNED: dict[NodeTopology, NodeTopology] = {}


def intern(topology: NodeTopology) -> NodeTopology:
    """The shared instance equal to `topology` (so its lookup tables are built once)."""
    return _INTERNED.setdefault(topology, topology)


def _rebuild(*fields: Any) -> NodeTopology:
    return intern(NodeTopology(*fields))


# --------------------------------------------------------------------------- constructors


def nvswitch(
    gpus: int = 8,
    *,
    nvlink_generation: int = 3,
    numa: Sequence[int] | None = None,
    pcie_generation: int | None = None,
    kind: str | None = None,
    links_per_gpu: int | None = None,
) -> NodeTopology:
    """An NVSwitch baseboard: every pair at the GPU's full NVLink bandwidth.

    `links_per_gpu` overrides the generation's link count for export variants whose
    NVLink is capped (A800 and H800: 400 GB/s, i.e. 8 links of 50 GB/s).

    NVLink 2 = DGX-2 (V100), 3 = DGX/HGX A100, 4 = DGX/HGX H100/H200, 5 = HGX B200
    (reference section 2, NVSwitch generations). NUMA defaults to the first half of
    the GPUs on node 0 and the second half on node 1, as in the 8-GPU captures of
    sections 4.3 and 4.4.
    """
    if nvlink_generation not in NVLINKS_PER_GPU or nvlink_generation < 2:
        raise TopologyError(f"NVSwitch systems use NVLink 2..5, got {nvlink_generation!r}")
    numa_ids = list(numa) if numa is not None else [0 if i < gpus // 2 else 1 for i in range(gpus)]
    if len(numa_ids) != gpus:
        raise TopologyError(f"numa lists {len(numa_ids)} GPUs, expected {gpus}")
    links = links_per_gpu or NVLINKS_PER_GPU[nvlink_generation]
    if not 0 < links <= NVLINKS_PER_GPU[nvlink_generation]:
        raise TopologyError(
            f"NVLink {nvlink_generation} GPUs have 1..{NVLINKS_PER_GPU[nvlink_generation]} links"
        )
    return intern(
        NodeTopology(
            kind=kind or f"nvswitch-nvlink{nvlink_generation}-{gpus}gpu",
            gpus=tuple(GpuPlace(numa=n, socket=n) for n in numa_ids),
            links=tuple(Link(i, j, "nvswitch", links) for i in range(gpus) for j in range(i + 1, gpus)),
            nvlink_generation=nvlink_generation,
            pcie_generation=pcie_generation or {2: 3, 3: 4, 4: 5, 5: 5}[nvlink_generation],
        )
    )


_DGX1_V100_NVLINKS = {
    # Reference section 4.1, the capture's link matrix: pair -> number of NVLinks.
    (0, 1): 1, (0, 2): 1, (0, 3): 2, (0, 4): 2, (1, 2): 2, (1, 3): 1, (1, 5): 2, (2, 3): 2,
    (2, 6): 1, (3, 7): 1, (4, 5): 1, (4, 6): 1, (4, 7): 2, (5, 6): 2, (5, 7): 1, (6, 7): 2,
}  # fmt: skip


def dgx1_v100() -> NodeTopology:
    """DGX-1 / HGX-1 with 8 V100-SXM2: the hybrid cube-mesh (reference section 4.1).

    GPUs 0-3 on NUMA node / socket 0, 4-7 on 1; the 12 pairs without NVLink cross
    sockets (SYS). The PCIe switch layout is not in the reference and is left out:
    every same-socket pair is NVLinked, so it would not change any bandwidth.
    """
    return intern(
        NodeTopology(
            kind="dgx1-v100",
            gpus=tuple(GpuPlace(numa=i // 4, socket=i // 4) for i in range(8)),
            links=tuple(Link(a, b, "nvlink", n) for (a, b), n in _DGX1_V100_NVLINKS.items()),
            nvlink_generation=2,
            pcie_generation=3,
        )
    )


def pcie(
    gpus: int,
    gpus_per_switch: int,
    switches_per_socket: int,
    nvlink_pairs: bool,
    *,
    pcie_generation: int = 4,
    nvlink_generation: int = 3,
    bridge_links: int = 12,
    kind: str | None = None,
) -> NodeTopology:
    """A PCIe server: GPUs fill PCIe switches in index order, switches fill sockets (one
    NUMA node per socket). With `nvlink_pairs`, GPUs (0,1), (2,3), ... are joined by
    NVLink bridges; the default 12 links of NVLink 3 give the 600 GB/s the reference
    quotes for A100 PCIe and H100 PCIe/NVL bridges (section 4.6)."""
    if gpus_per_switch < 1 or switches_per_socket < 1:
        raise TopologyError("gpus_per_switch and switches_per_socket must be at least 1")
    if nvlink_pairs and gpus % 2:
        raise TopologyError(f"NVLink-bridged pairs need an even GPU count, got {gpus}")
    places = []
    for i in range(gpus):
        switch = i // gpus_per_switch
        socket = switch // switches_per_socket
        places.append(GpuPlace(numa=socket, socket=socket, pcie_switch=switch))
    links = tuple(Link(i, i + 1, "nvlink", bridge_links) for i in range(0, gpus, 2)) if nvlink_pairs else ()
    default_kind = f"pcie{pcie_generation}-{gpus}gpu-{gpus_per_switch}x{switches_per_socket}" + (
        "-nvlink-pairs" if nvlink_pairs else ""
    )
    return intern(
        NodeTopology(
            kind=kind or default_kind,
            gpus=tuple(places),
            links=links,
            nvlink_generation=nvlink_generation if nvlink_pairs else None,
            pcie_generation=pcie_generation,
        )
    )


# --------------------------------------------------------------------------- subset tables


class _Tables:
    """Answers for every subset of one topology's GPUs, subsets written as bitmasks.

    `quality` orders sets of equal size: bottleneck bandwidth first, fewer NUMA
    nodes second, encoded in one integer. `best[mask, m]` is the best quality of
    any m-subset of `mask` (-1: none), from a subset-maximum pass over the bits.
    """

    def __init__(self, bandwidth: np.ndarray, numa: np.ndarray):
        g = len(numa)
        n = 1 << g
        self.gpu_count = g
        masks = np.arange(n, dtype=np.int64)
        bits = ((masks[:, None] >> np.arange(g)) & 1).astype(bool)
        self.pop = bits.sum(axis=1)
        bottleneck = np.full(n, np.inf)
        for i in range(g):
            for j in range(i + 1, g):
                pair = bits[:, i] & bits[:, j]
                bottleneck[pair] = np.minimum(bottleneck[pair], bandwidth[i, j])
        numa_count = np.zeros(n, dtype=np.int64)
        for node in np.unique(numa):
            numa_count += bits[:, numa == node].any(axis=1)
        self.levels = np.unique(bottleneck)  # ascending; inf (sets of < 2 GPUs) last
        self.bottleneck_rank = np.searchsorted(self.levels, bottleneck)
        self.numa_count = numa_count
        quality = self.bottleneck_rank * (g + 1) + (g - numa_count)
        best = np.full((n, g + 1), -1, dtype=np.int32)  # int32: a 16-GPU shape's tables stay small
        best[masks, self.pop] = quality
        for i in range(g):
            has = bits[:, i]
            best[has] = np.maximum(best[has], best[masks[has] ^ (1 << i)])
        self.best = best
        self.reversed = (bits * (1 << np.arange(g - 1, -1, -1))).sum(axis=1)
        self.score = self._scores()
        self.gbps = self._gbps()
        self.choice = np.full((n, g + 1), -1, dtype=np.int32)
        self._known = np.zeros((n, g + 1), dtype=bool)
        if g <= EAGER_GPUS:
            sets, subsets = np.nonzero((masks[None, :] & ~masks[:, None]) == 0)
            self._fill(sets, subsets)

    def _scores(self) -> np.ndarray:
        g = self.gpu_count
        best = self.best
        bandwidth = self.levels[np.maximum(best, 0) // (g + 1)]
        full = bandwidth[-1]  # the mask with every GPU free
        with np.errstate(invalid="ignore"):
            score = np.where(np.isinf(full), 1.0, bandwidth / full)
        score[:, :2] = 1.0  # zero or one GPU: nothing to connect
        score[best < 0] = 0.0
        return score

    def _gbps(self) -> np.ndarray:
        """Bottleneck GB/s of the best k-subset of each mask: inf for k <= 1 (no pair to
        connect), 0 when fewer than k GPUs are free."""
        g = self.gpu_count
        gbps = self.levels[np.maximum(self.best, 0) // (g + 1)]
        gbps[:, :2] = np.inf
        gbps[self.best < 0] = 0.0
        return _readonly(gbps)

    def _fill(self, sets: np.ndarray, subsets: np.ndarray) -> None:
        """Rank every candidate (free set F, chosen subset S) and keep the best S per (F, k)."""
        g = self.gpu_count
        k = self.pop[subsets]
        rest = sets & ~subsets
        keys = [self.reversed[subsets]]
        keys += [self.best[rest, m] for m in range(2, g + 1)]  # remaining GPUs: pairs ... all
        keys += [-self.numa_count[subsets], self.bottleneck_rank[subsets], sets * (g + 1) + k]
        order = np.lexsort(keys)
        group = keys[-1][order]
        winners = order[np.r_[group[1:] != group[:-1], True]]
        self.choice[sets[winners], k[winners]] = subsets[winners]
        self._known[sets[winners], k[winners]] = True

    def choose(self, mask: int, k: int) -> int:
        """The chosen subset of free `mask` for k GPUs as a bitmask, -1 if fewer are free."""
        if not self._known[mask, k]:
            if self.pop[mask] < k:
                return -1
            candidates = np.flatnonzero(((np.arange(len(self.pop)) & ~mask) == 0) & (self.pop == k))
            self._fill(np.full(len(candidates), mask, dtype=np.int64), candidates)
        return int(self.choice[mask, k])


@functools.cache
def _members(mask: int) -> tuple[int, ...]:
    return tuple(i for i in range(mask.bit_length()) if mask >> i & 1)


def _as_mask(topology: NodeTopology, free: int | np.ndarray | Sequence[bool]) -> int:
    g = topology.gpu_count
    if isinstance(free, int | np.integer) and not isinstance(free, bool):
        mask = int(free)
    else:
        flags = np.asarray(free, dtype=bool)
        if flags.ndim != 1:
            raise ValueError(f"free mask must be one-dimensional, got shape {flags.shape}")
        mask = sum(1 << int(i) for i in np.flatnonzero(flags))
    if not 0 <= mask < 1 << g:
        raise ValueError(f"free mask {mask:#x} names GPUs a {g}-GPU {topology.kind} node does not have")
    return mask


def _check_k(k: int) -> None:
    if k < 0:
        raise ValueError(f"GPU count must be non-negative, got {k}")


# --------------------------------------------------------------------------- public queries


def best_gpu_set(
    topology: NodeTopology, free_mask: int | np.ndarray | Sequence[bool], k: int
) -> tuple[int, ...] | None:
    """The k free GPUs to use (ascending), or None when fewer than k are free.

    `free_mask` is a bitmask (bit i = GPU i free) or a bool array per GPU (extra
    trailing False entries are fine, e.g. a padded `ClusterState` row). Order of
    preference: highest bottleneck bandwidth, fewest NUMA nodes, best-connected
    remaining free GPUs, lowest indices (see the module docstring).
    """
    _check_k(k)
    mask = _as_mask(topology, free_mask)
    if k > topology.gpu_count:
        return None
    chosen = topology._tables.choose(mask, k)
    return None if chosen < 0 else _members(chosen)


def topology_score(topology: NodeTopology, free_mask: int | np.ndarray | Sequence[bool], k: int) -> float:
    """Bottleneck bandwidth of the best k free GPUs over the best on an empty node of this
    shape: 1.0 = as good as this shape gets, 0.0 = fewer than k GPUs free; k <= 1 is 1.0."""
    _check_k(k)
    mask = _as_mask(topology, free_mask)
    if k > topology.gpu_count:
        return 0.0
    return float(topology._tables.score[mask, k])


def best_bandwidth(topology: NodeTopology, free_mask: int | np.ndarray | Sequence[bool], k: int) -> float:
    """Bottleneck GB/s (slowest pair) of the k free GPUs `best_gpu_set` would choose: 0.0
    when fewer than k are free, inf for k <= 1 (no pair to connect). Unlike
    `topology_score` it is comparable across node shapes."""
    _check_k(k)
    mask = _as_mask(topology, free_mask)
    if k > topology.gpu_count:
        return 0.0
    return float(topology._tables.gbps[mask, k])


def numa_nodes(topology: NodeTopology, gpus: Sequence[int]) -> tuple[int, ...]:
    """The distinct NUMA nodes (ascending) that `gpus` sit on, for the assignment record."""
    for gpu in gpus:
        if not 0 <= gpu < topology.gpu_count:
            raise ValueError(f"GPU {gpu} is not on a {topology.gpu_count}-GPU {topology.kind} node")
    return tuple(sorted({topology.gpus[gpu].numa for gpu in gpus}))


def free_masks(free: np.ndarray) -> np.ndarray:
    """Bitmasks from a [N, G] bool array of free GPUs, e.g. ``state.gpu_left[nodes] == 1000``."""
    free = np.asarray(free, dtype=bool)
    if free.ndim != 2 or free.shape[1] > MAX_GPUS:
        raise ValueError(f"expected a [nodes, <= {MAX_GPUS} GPUs] array, got shape {free.shape}")
    return free.astype(np.int64) @ (np.int64(1) << np.arange(free.shape[1], dtype=np.int64))


RELATIVE_TO = ("shape", "cluster")
"""What a `TopologyIndex` score is relative to (see there)."""


class TopologyIndex:
    """Node -> topology, with every distinct shape's score table stacked for one gather.

    `relative_to` says what a score of 1.0 means for a k-GPU request:

    * ``"shape"`` (default): `topology_score`, the bottleneck bandwidth of the node's
      best free k-set over the best an empty node of *its own shape* offers. A PCIe
      server with its best pair free scores as high as an NVSwitch node.
    * ``"cluster"``: the same bandwidth over the best any node shape of this index
      offers for k GPUs when empty (`reference`), so the score compares nodes of
      different shapes: an NVSwitch node scores 1.0, a PCIe-only one a small fraction.
      Shapes with fewer than k GPUs score 0; k <= 1 scores 1.0 (nothing to connect).

    Nodes without a topology (None) score `unknown_score` when at least k GPUs are
    free and 0 otherwise. Its default is 1.0 for ``"shape"`` (as good as the node could
    be); for ``"cluster"`` it is a typical node of the index: the mean over the nodes
    with a known topology of at least k GPUs of their score when empty (`unknown`, per
    k; 1.0 where no known node has k GPUs): an unknown node attracts a k-GPU pod as much
    as an empty node drawn at random from the known ones would on average. In a cluster
    of one known shape that is 1.0, as under ``"shape"``.

    `max_gpus` is the widest mask asked about (default: the largest known topology, or
    8 when none is known); pass `ClusterState.max_gpus` when some nodes have no
    topology. Immutable: rebuild it when a node's topology changes (cheap; the
    per-shape tables live on the shared `NodeTopology` objects).
    """

    def __init__(
        self,
        topologies: Sequence[NodeTopology | None],
        unknown_score: float | None = None,
        max_gpus: int | None = None,
        relative_to: str = "shape",
    ):
        if relative_to not in RELATIVE_TO:
            raise ValueError(f"relative_to must be one of {', '.join(RELATIVE_TO)}, got {relative_to!r}")
        self.relative_to = relative_to
        distinct: dict[NodeTopology, int] = {}
        by_identity: dict[int, int] = {}  # interned shapes repeat: skip hashing the whole description
        ids = np.zeros(len(topologies), dtype=np.int64)
        for node, topology in enumerate(topologies):
            if topology is None:
                continue
            row = by_identity.get(id(topology))
            if row is None:
                row = by_identity[id(topology)] = distinct.setdefault(topology, len(distinct) + 1)
            ids[node] = row
        self.ids = _readonly(ids)
        self.topologies: tuple[NodeTopology | None, ...] = tuple(topologies)
        known = max((t.gpu_count for t in distinct), default=0)
        if max_gpus is None:
            max_gpus = known or EAGER_GPUS
        if not known <= max_gpus <= MAX_GPUS:
            raise ValueError(f"max_gpus must be in {known}..{MAX_GPUS}, got {max_gpus}")
        self.max_gpus = g = max_gpus
        masks = np.arange(1 << g)
        pop = ((masks[:, None] >> np.arange(g)) & 1).sum(axis=1)
        tables = np.zeros((len(distinct) + 1, 1 << g, g + 1))
        # reference[k]: the best bottleneck (GB/s) any known shape offers k GPUs when empty
        reference = np.zeros(g + 1)
        for topology in distinct:
            empty = topology._tables.gbps[-1]
            reference[: len(empty)] = np.maximum(reference[: len(empty)], empty)
        reference[:2] = np.inf
        self.reference = _readonly(reference)
        for topology, row in distinct.items():
            if relative_to == "shape":
                score = topology._tables.score
            else:
                gbps = topology._tables.gbps
                score = np.zeros(gbps.shape)
                width = gbps.shape[1]
                pair = np.arange(width) >= 2
                score[:, pair] = gbps[:, pair] / reference[:width][pair]
                score[:, ~pair] = gbps[:, ~pair] > 0  # k <= 1: 1.0 when free (gbps inf), else 0
            tables[row, : score.shape[0], : score.shape[1]] = score
        if unknown_score is not None:
            unknown = np.full(g + 1, float(unknown_score))
        elif relative_to == "shape":
            unknown = np.ones(g + 1)
        else:
            unknown = np.ones(g + 1)
            shapes = list(distinct)  # row r holds shapes[r - 1]
            rows, counts = np.unique(ids[ids > 0], return_counts=True)
            width = np.array([shapes[r - 1].gpu_count for r in rows], dtype=np.int64)
            for k in range(2, g + 1):
                fits = width >= k
                if fits.any():
                    empty = tables[rows[fits], (1 << width[fits]) - 1, k]
                    unknown[k] = np.average(empty, weights=counts[fits])
        self.unknown = _readonly(unknown)
        tables[0] = np.where(pop[:, None] >= np.arange(g + 1), unknown, 0.0)
        self.tables = _readonly(tables)

    def __len__(self) -> int:
        return len(self.ids)


def scores_for_nodes(
    index: TopologyIndex, free_masks: np.ndarray, k: int, nodes: np.ndarray | None = None
) -> np.ndarray:
    """`topology_score` for many nodes in one gather: `free_masks[i]` belongs to node
    `nodes[i]` (all nodes of the index in order when `nodes` is None)."""
    _check_k(k)
    ids = index.ids if nodes is None else index.ids[nodes]
    masks = np.asarray(free_masks, dtype=np.int64)
    if masks.shape != ids.shape:
        raise ValueError(f"{masks.shape[0]} masks for {ids.shape[0]} nodes")
    if k > index.max_gpus:
        return np.zeros(ids.shape)
    return index.tables[ids, masks, k]


__all__ = [
    "LINK_TYPES",
    "MAX_GPUS",
    "RELATIVE_TO",
    "GpuPlace",
    "Link",
    "NodeTopology",
    "TopologyError",
    "TopologyIndex",
    "best_bandwidth",
    "best_gpu_set",
    "dgx1_v100",
    "free_masks",
    "intern",
    "numa_nodes",
    "nvswitch",
    "pcie",
    "scores_for_nodes",
    "topology_score",
]
