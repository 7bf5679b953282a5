"""`extmem synth`: parquet shards shaped like the splice-site training data.

Each row is a window of ``seq_len`` bases centred on a candidate site. Sequences come from a
first-order Markov chain with CpG depletion (as in vertebrate genomes), so k-mers holding
``CG`` are rare and a shard holds only the k-mer columns it saw: schemas differ between
shards. Donor windows carry the ``MAG|GTRAGT`` consensus, acceptor windows a
polypyrimidine tract and ``YAG|G``; noisy base-model scores carry most of the signal.
Generation streams: memory is bounded by one row group.
"""

from __future__ import annotations

import itertools
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from extmem._atomic import atomic_file, write_json
from extmem._defaults import DEFAULT_SYNTH_K, DEFAULT_SYNTH_ROW_GROUP_ROWS, DEFAULT_SYNTH_SEQ_LEN, DEFAULT_SYNTH_SHARDS
from extmem._destinations import MANIFEST_FILE, RemoteFolder, check_output_folder, publish_folder, staging_folder
from extmem._progress import ProgressBar
from extmem._signals import raise_if_stopped
from extmem._version import __version__
from extmem.errors import OptionError, check_positive_int, is_integer

BASES = np.frombuffer(b"ACGT", dtype=np.uint8)
CLASSES = ("neither", "donor", "acceptor")
CLASS_SHARES = (0.92, 0.04, 0.04)
GENE_TYPES = ("protein_coding", "lncRNA", "pseudogene", "miRNA", "snRNA")
CHROMS = tuple(f"chr{c}" for c in [*range(1, 23), "X", "Y"])
# Markov transitions (rows: previous base A, C, G, T); C->G is depleted.
TRANSITIONS = np.array(
    [
        [0.30, 0.20, 0.28, 0.22],
        [0.36, 0.30, 0.04, 0.30],
        [0.26, 0.24, 0.30, 0.20],
        [0.18, 0.24, 0.30, 0.28],
    ]
)
SCORE_COLUMNS = (
    "donor_score",
    "acceptor_score",
    "neither_score",
    *(f"{kind}_context_{offset}" for kind in ("donor", "acceptor") for offset in ("m2", "m1", "p1", "p2")),
    "donor_peak_height",
    "acceptor_peak_height",
    "score_entropy",
    "donor_acceptor_ratio",
    "local_donor_max",
    "local_acceptor_max",
    "splice_probability_sum",
    "gc_content",
    "cpg_density",
)
COORDINATE_COLUMNS = ("position", "window_start", "window_end", "gene_start", "gene_end", "relative_position")


@dataclass(frozen=True)
class SynthOptions:
    """Shape of a synthetic dataset; validated on construction."""

    rows: int
    shards: int = DEFAULT_SYNTH_SHARDS
    k: int = DEFAULT_SYNTH_K
    seed: int = 0
    seq_len: int = DEFAULT_SYNTH_SEQ_LEN
    row_group_rows: int = DEFAULT_SYNTH_ROW_GROUP_ROWS

    def __post_init__(self) -> None:
        for name in ("rows", "shards", "row_group_rows"):
            check_positive_int(getattr(self, name), name)
        if not is_integer(self.k) or not 1 <= self.k <= 8:
            msg = f"The 'k' option must be an integer from 1 to 8. Got {self.k!r} instead."
            raise OptionError(msg, options=("k",))
        if not is_integer(self.seq_len) or self.seq_len < max(32, self.k):
            msg = f"The 'seq_len' option must be an integer of at least {max(32, self.k)}. Got {self.seq_len!r} instead."
            raise OptionError(msg, options=("seq_len",))
        if self.rows < self.shards:
            msg = f"The 'rows' option ({self.rows}) must be at least the number of shards ({self.shards})."
            raise OptionError(msg, options=("rows", "shards"))


def kmer_names(k: int) -> list[str]:
    """All ``{k}mer_XXXX`` column names in code order (A=0, C=1, G=2, T=3)."""
    return [f"{k}mer_" + "".join(letters) for letters in itertools.product("ACGT", repeat=k)]


def kmer_codes(sequences: np.ndarray, k: int) -> np.ndarray:
    """Base-4 codes of every k-mer of a (rows, length) array of base indices 0..3."""
    rows, length = sequences.shape
    codes = np.zeros((rows, length - k + 1), dtype=np.int64)
    for offset in range(k):
        codes = codes * 4 + sequences[:, offset : length - k + 1 + offset]
    return codes


def _markov_sequences(rng: np.random.Generator, rows: int, length: int) -> np.ndarray:
    cumulative = np.cumsum(TRANSITIONS, axis=1)
    sequences = np.empty((rows, length), dtype=np.int64)
    sequences[:, 0] = rng.integers(0, 4, rows)
    draws = rng.random((rows, length))
    for position in range(1, length):
        thresholds = cumulative[sequences[:, position - 1]]
        sequences[:, position] = (draws[:, position, None] > thresholds[:, :3]).sum(axis=1)
    return sequences


def _plant(sequences: np.ndarray, rows: np.ndarray, start: int, motif: str, rng: np.random.Generator, keep: float) -> None:
    """Write ``motif`` (IUPAC Y/R/M allowed) at ``start`` in ``rows``, each base kept with prob ``keep``."""
    choices = {"A": "A", "C": "C", "G": "G", "T": "T", "Y": "CT", "R": "AG", "M": "AC"}
    for offset, symbol in enumerate(motif):
        options = np.array(["ACGT".index(b) for b in choices[symbol]])
        chosen = options[rng.integers(0, len(options), rows.size)]
        mask = rng.random(rows.size) < keep
        sequences[rows[mask], start + offset] = chosen[mask]


def _row_group(rng: np.random.Generator, rows: int, options: SynthOptions) -> tuple[np.ndarray, np.ndarray]:
    """Labels (class ids) and sequences of one row group, motifs planted."""
    labels = rng.choice(3, size=rows, p=CLASS_SHARES)
    sequences = _markov_sequences(rng, rows, options.seq_len)
    centre = options.seq_len // 2
    donors, acceptors = np.flatnonzero(labels == 1), np.flatnonzero(labels == 2)
    _plant(sequences, donors, centre - 3, "MAG", rng, 0.7)
    _plant(sequences, donors, centre, "GT", rng, 1.0)
    _plant(sequences, donors, centre + 2, "RAGT", rng, 0.75)
    _plant(sequences, acceptors, centre - 15, "YYYYYYYYYYYY", rng, 0.8)
    _plant(sequences, acceptors, centre - 3, "Y", rng, 0.7)
    _plant(sequences, acceptors, centre - 2, "AG", rng, 1.0)
    _plant(sequences, acceptors, centre, "G", rng, 0.6)
    decoys = np.flatnonzero((labels == 0) & (rng.random(rows) < 0.15))
    half = decoys.size // 2
    _plant(sequences, decoys[:half], centre, "GT", rng, 1.0)
    _plant(sequences, decoys[half:], centre - 2, "AG", rng, 1.0)
    return labels, sequences


def _scores(rng: np.random.Generator, labels: np.ndarray, sequences: np.ndarray) -> dict[str, np.ndarray]:
    rows = labels.size
    sigmoid = lambda x: 1.0 / (1.0 + np.exp(-x))
    donor_logit = rng.normal(-3.0, 1.2, rows) + 3.2 * (labels == 1)
    acceptor_logit = rng.normal(-3.0, 1.2, rows) + 3.2 * (labels == 2)
    donor, acceptor = sigmoid(donor_logit), sigmoid(acceptor_logit)
    neither = np.clip(1.0 - donor - acceptor + rng.normal(0, 0.05, rows), 0, 1)
    columns: dict[str, np.ndarray] = {"donor_score": donor, "acceptor_score": acceptor, "neither_score": neither}
    for kind, base in (("donor", donor_logit), ("acceptor", acceptor_logit)):
        for offset, decay in (("m2", 0.3), ("m1", 0.6), ("p1", 0.6), ("p2", 0.3)):
            columns[f"{kind}_context_{offset}"] = sigmoid(decay * base + rng.normal(-1.5, 1.0, rows))
    columns["donor_peak_height"] = donor * rng.uniform(0.8, 1.2, rows)
    columns["acceptor_peak_height"] = acceptor * rng.uniform(0.8, 1.2, rows)
    probabilities = np.stack([neither, donor, acceptor], axis=1) + 1e-6
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    columns["score_entropy"] = -(probabilities * np.log(probabilities)).sum(axis=1)
    columns["donor_acceptor_ratio"] = donor / (acceptor + 1e-3)
    columns["local_donor_max"] = np.maximum(donor, columns["donor_context_m1"])
    columns["local_acceptor_max"] = np.maximum(acceptor, columns["acceptor_context_p1"])
    columns["splice_probability_sum"] = donor + acceptor
    columns["gc_content"] = np.isin(sequences, (1, 2)).mean(axis=1)
    columns["cpg_density"] = ((sequences[:, :-1] == 1) & (sequences[:, 1:] == 2)).mean(axis=1)
    return columns


def _metadata(rng: np.random.Generator, rows: int, seq_len: int) -> dict[str, pa.Array]:
    gene_number = rng.integers(1, 20000, rows)
    gene_start = gene_number * 100_000 + rng.integers(0, 50_000, rows)
    gene_end = gene_start + rng.integers(2_000, 200_000, rows)
    position = gene_start + (rng.random(rows) * (gene_end - gene_start)).astype(np.int64)
    return {
        "gene_id": pa.array(np.char.add("ENSG", np.char.zfill(gene_number.astype(str), 11))),
        "transcript_id": pa.array(np.char.add("ENST", np.char.zfill((gene_number * 10 + rng.integers(0, 5, rows)).astype(str), 11))),
        "chrom": pa.array(np.array(CHROMS)[gene_number % len(CHROMS)]),
        "strand": pa.array(np.where(gene_number % 2 == 0, "+", "-")),
        "gene_type": pa.array(np.array(GENE_TYPES)[rng.choice(len(GENE_TYPES), rows, p=(0.7, 0.15, 0.1, 0.03, 0.02))]),
        "position": pa.array(position),
        "window_start": pa.array(position - seq_len // 2),
        "window_end": pa.array(position + seq_len // 2),
        "gene_start": pa.array(gene_start),
        "gene_end": pa.array(gene_end),
        "relative_position": pa.array((position - gene_start) / (gene_end - gene_start)),
    }


def _row_group_seeds(options: SynthOptions, shard: int, groups: int) -> list[np.random.SeedSequence]:
    return np.random.SeedSequence([options.seed, shard]).spawn(groups)


def _shard_sizes(options: SynthOptions) -> list[int]:
    base, extra = divmod(options.rows, options.shards)
    return [base + (1 if i < extra else 0) for i in range(options.shards)]


def _group_sizes(rows: int, group_rows: int) -> list[int]:
    return [min(group_rows, rows - start) for start in range(0, rows, group_rows)]


def _seen_kmers(options: SynthOptions, seeds: list[np.random.SeedSequence], sizes: list[int]) -> np.ndarray:
    seen = np.zeros(4**options.k, dtype=bool)
    for seed, rows in zip(seeds, sizes):
        raise_if_stopped()  # a pass over a whole shard before its first row is written: no progress step stops it
        _, sequences = _row_group(np.random.default_rng(seed), rows, options)
        seen[np.unique(kmer_codes(sequences, options.k))] = True
    return np.flatnonzero(seen)


def _table(options: SynthOptions, seed: np.random.SeedSequence, rows: int, columns_kept: np.ndarray, names: list[str]) -> pa.Table:
    rng = np.random.default_rng(seed)
    labels, sequences = _row_group(rng, rows, options)
    detail = np.random.default_rng(seed.spawn(1)[0])
    data: dict[str, pa.Array] = _metadata(detail, rows, options.seq_len)
    for name, values in _scores(detail, labels, sequences).items():
        data[name] = pa.array(values)
    codes = kmer_codes(sequences, options.k)
    counts = np.zeros((4**options.k, rows), dtype=np.float64)
    np.add.at(counts, (codes, np.arange(rows)[:, None]), 1.0)
    for code in columns_kept:
        data[names[code]] = pa.array(counts[code])
    data["sequence"] = pa.array(BASES[sequences].view(f"S{options.seq_len}").ravel().astype(str))
    data["splice_type"] = pa.array(np.array(CLASSES)[labels])
    return pa.table(data)


def synth(
    out_dir: str | os.PathLike[str], options: SynthOptions, *, overwrite: bool = False, progress: bool | None = None
) -> list[Path] | list[str]:
    """Write ``options.shards`` shards ``batch_00001.parquet``... and ``_manifest.json`` to the folder ``out_dir``; return the shards.

    ``out_dir`` may be a URI (a prefix in object storage): the shards are then returned as URIs.

    The folder must not exist or be empty, unless ``overwrite`` and extmem wrote it; it is built
    beside its final place and appears, complete, only at the end. Memory is one row group.
    """
    target = check_output_folder(out_dir, overwrite=overwrite, option="out_dir")
    names = kmer_names(options.k)
    shard_names = [f"batch_{shard:05d}.parquet" for shard in range(1, options.shards + 1)]
    with staging_folder(target) as staging, ProgressBar(options.rows, "generating", "rows", progress) as bar:
        for shard, (name, shard_rows) in enumerate(zip(shard_names, _shard_sizes(options)), start=1):
            sizes = _group_sizes(shard_rows, options.row_group_rows)
            seeds = _row_group_seeds(options, shard, len(sizes))
            columns_kept = _seen_kmers(options, seeds, sizes)
            with atomic_file(staging.path / name) as file:
                writer: pq.ParquetWriter | None = None
                try:
                    for seed, rows in zip(seeds, sizes):
                        table = _table(options, seed, rows, columns_kept, names)
                        if writer is None:
                            writer = pq.ParquetWriter(file, table.schema, compression="zstd")
                        writer.write_table(table, row_group_size=rows)
                        bar.update(rows)
                finally:  # closed before its file is, even when stopped: a writer collected later writes to a closed file
                    if writer is not None:
                        writer.close()
        manifest = {"extmem_version": __version__, "command": "synth", "options": asdict(options), "files": shard_names}
        write_json(staging.path / MANIFEST_FILE, manifest)
        publish_folder(staging, target, replace=overwrite)
    if isinstance(target, RemoteFolder):
        return [f"{target.uri}/{name}" for name in shard_names]
    return [target / name for name in shard_names]
