"""Named presets: the dataset defaults of one kind of data (label, its classes, count columns).

The command line uses ``splice-sites`` unless told otherwise; the library uses a preset only when
asked (``Dataset(path, preset="splice-sites")``), so a dataset labelled ``target`` or ``y`` needs
nothing overridden.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Preset:
    """Defaults for a dataset's ``label``, ``label_map`` and ``zero_is_missing`` options."""

    name: str
    description: str
    label: str | None = None
    label_map: Mapping[str, int] | None = None
    zero_is_missing: str | None = None

    def options(self, label: str | None = None) -> dict[str, Any]:
        """The preset as dataset options; its label map only for its own label column (``label`` None or the preset's)."""
        own_label = label is None or label == self.label
        label_map = dict(self.label_map) if self.label_map and own_label else None
        return {"label": self.label, "label_map": label_map, "zero_is_missing": self.zero_is_missing}


KMER_PATTERN = r"^\d+mer_"
"""Columns named like ``6mer_ACGTAC`` hold k-mer counts: a zero there means 'absent'."""

SPLICE_SITES = Preset(
    "splice-sites",
    "label splice_type with classes neither=0, donor=1, acceptor=2; {k}mer_* columns are counts (a zero is absent)",
    label="splice_type",
    label_map={"neither": 0, "donor": 1, "acceptor": 2},
    zero_is_missing=KMER_PATTERN,
)
NO_PRESET = Preset("none", "no defaults: pass --label; string labels become classes in sorted order; no count columns")
PRESETS: Mapping[str, Preset] = {preset.name: preset for preset in (SPLICE_SITES, NO_PRESET)}


def is_preset_label_map(label_map: Mapping[str, int]) -> bool:
    """Whether ``label_map`` is a preset's own (class names for string labels, which numeric labels leave unused)."""
    return any(preset.label_map is not None and dict(preset.label_map) == dict(label_map) for preset in PRESETS.values())


def preset_named(name: str | Preset) -> Preset:
    """The preset called ``name`` (or ``name`` itself when it is a :class:`Preset`)."""
    if isinstance(name, Preset):
        return name
    if name not in PRESETS:
        from extmem.errors import OptionError

        msg = f"The 'preset' option must be one of {', '.join(sorted(PRESETS))}. Got {name!r} instead."
        raise OptionError(msg, options=("preset",))
    return PRESETS[name]
