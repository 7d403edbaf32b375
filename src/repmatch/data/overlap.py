"""NLI word overlap: the share of hypothesis words found in the premise, and the paper's subsets.

The paper (Section 5.3.1, Tables 3 and 5) takes the non-entailment instances of an NLI dataset
and splits them by premise/hypothesis overlap: **Full** (100 % of the hypothesis words are in the
premise), **Mid** (60 % to 80 %) and **No** (0 %). The paper does not define "word" or say whether
the Mid bounds are included; here:

- a *word* is a maximal run of Unicode letters and digits, lowercased: punctuation, spaces and
  underscores separate words and are dropped (``"Don't!"`` -> ``don``, ``t``), so tokenised text
  (``"do n't"``) and raw text are each consistent within a dataset;
- the hypothesis counts as a *set* of words: overlap = |H ∩ P| / |H| for the distinct words H of
  the hypothesis and P of the premise. The heuristic the subsets probe (McCoy et al.'s lexical
  overlap: "every word of the hypothesis appears in the premise") asks *whether* a word appears,
  so a repeated hypothesis word adds nothing. Full and No are the same with multiplicity; only the
  edges of Mid would move;
- Mid includes both ends: 3/5 <= overlap <= 4/5 ("ranges from 60 % to 80 %"), compared as exact
  fractions;
- a hypothesis without any word (only punctuation) has no overlap (NaN) and joins no subset.

:func:`word_overlap` and :func:`overlap_subsets` are pure; :func:`save_overlap_subsets` writes
each subset as a gzip JSON Lines file (``id``, ``premise``, ``hypothesis``, ``label``) that every
command reads back, and the record ``overlap.json``.
"""

from __future__ import annotations

import gzip
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from repmatch import distributed
from repmatch.artifacts import (
    atomic_path,
    data_record,
    exclusive_output,
    output_set,
    run_record,
    write_json,
)
from repmatch.data.examples import Examples
from repmatch.data.loading import as_examples
from repmatch.errors import RepmatchError

RECORD_FILE = "overlap.json"
"""The run record of an overlap folder."""

BANDS: dict[str, tuple[Fraction, Fraction]] = {
    "full": (Fraction(1), Fraction(1)),
    "mid": (Fraction(3, 5), Fraction(4, 5)),
    "no": (Fraction(0), Fraction(0)),
}
"""Subset name -> (lowest, highest) overlap, both included (paper Table 3)."""

ENTAILMENT_NAME = "entailment"
"""The class name taken as entailment when the labels are named."""

DEFINITION = (
    "word: maximal run of Unicode letters and digits, lowercased (punctuation dropped); overlap: "
    "share of the hypothesis's distinct words found among the premise's words; full = 1, "
    "mid = 0.6 to 0.8 inclusive, no = 0; hypotheses without words join no subset"
)
"""One-line definition, saved in the record and shown in the help."""

_WORD = re.compile(r"[^\W_]+")


def words(text: str) -> set[str]:
    """The distinct words of ``text``: maximal runs of letters and digits, lowercased."""
    return set(_WORD.findall(text.lower()))


def overlap_fraction(premise: str, hypothesis: str) -> Fraction | None:
    """Exact share of the hypothesis's distinct words found in the premise (``None``: no words)."""
    hypothesis_words = words(hypothesis)
    if not hypothesis_words:
        return None
    return Fraction(len(hypothesis_words & words(premise)), len(hypothesis_words))


def word_overlap(premise: str, hypothesis: str) -> float:
    """Share of the hypothesis's distinct words found in the premise, in [0, 1].

    NaN when the hypothesis has no word at all. See the module docstring for "word".

    >>> word_overlap("A man plays a guitar.", "A man plays.")
    1.0
    >>> round(word_overlap("A man sleeps", "a woman sleeps"), 4)
    0.6667
    """
    share = overlap_fraction(premise, hypothesis)
    return float("nan") if share is None else float(share)


@dataclass(frozen=True)
class OverlapSubsets:
    """The Full, Mid and No subsets of the non-entailment instances of an NLI dataset.

    ``subsets`` maps ``full``, ``mid``, ``no`` to :class:`Examples` in data order;
    ``entailment`` is the class index taken as entailment and ``entailment_name`` its name when
    the labels are named; ``non_entailment`` counts the instances the subsets were drawn from and
    ``without_words`` those of them whose hypothesis has no word.
    """

    subsets: dict[str, Examples]
    entailment: int
    entailment_name: str | None
    non_entailment: int
    without_words: int

    @property
    def sizes(self) -> dict[str, int]:
        return {name: len(subset) for name, subset in self.subsets.items()}


def overlap_subsets(data: object, *, entailment_label: str | int | None = None) -> OverlapSubsets:
    """Split the non-entailment instances of ``data`` by word overlap (:data:`BANDS`).

    ``data``: :class:`Examples`, a :class:`~repmatch.data.DataSpec`, a path, a DataFrame or a
    ``datasets.Dataset`` of text pairs with class labels (premise first, hypothesis second).
    ``entailment_label`` names the entailment class: a class name or a label value. By default
    it is the class named ``entailment`` when the labels are named, else label 0 (SNLI, MNLI and
    HANS as distributed in GLUE and ``shared/data``: 0 = entailment).
    """
    examples = as_examples(data)
    if examples.task != "pair-classification" or examples.text_pairs is None:
        kind = {"classification": "single-text classification"}.get(examples.task, examples.task)
        raise RepmatchError(
            f"overlap needs NLI data (premise/hypothesis pairs with class labels), but "
            f"{examples.name} is {kind}; pass an NLI dataset such as snli, mnli or hans"
        )
    index, name = _entailment_class(examples, entailment_label)
    keep = np.flatnonzero(examples.labels != index)
    shares = [overlap_fraction(examples.texts[i], examples.text_pairs[i]) for i in keep.tolist()]
    subsets = {
        band: examples.select(
            [i for i, share in zip(keep.tolist(), shares, strict=True) if _in(share, low, high)]
        )
        for band, (low, high) in BANDS.items()
    }
    return OverlapSubsets(
        subsets=subsets,
        entailment=index,
        entailment_name=name,
        non_entailment=len(keep),
        without_words=sum(share is None for share in shares),
    )


def _in(share: Fraction | None, low: Fraction, high: Fraction) -> bool:
    return share is not None and low <= share <= high


def _entailment_class(examples: Examples, entailment: str | int | None) -> tuple[int, str | None]:
    """(class index, class name or None) of the entailment class of ``examples``."""
    names = examples.label_names
    if names is not None:
        wanted = ENTAILMENT_NAME if entailment is None else str(entailment)
        lowered = [str(n).lower() for n in names]
        if wanted.lower() in lowered:
            position = lowered.index(wanted.lower())
            return position, names[position]
        if entailment is None:
            raise RepmatchError(
                f"{examples.name} names its classes {', '.join(names)} but none is "
                f"'{ENTAILMENT_NAME}'; name the entailment class with entailment_label",
                field="entailment_label",
            )
        if str(entailment).lstrip("-").isdigit() and 0 <= int(entailment) < len(names):
            return int(entailment), names[int(entailment)]
        raise RepmatchError(
            f"entailment label {entailment!r} is not a class of {examples.name} "
            f"({', '.join(names)}); give one of those names",
            field="entailment_label",
        )
    value = 0 if entailment is None else entailment
    if isinstance(value, str):
        if not value.strip().lstrip("-").isdigit():
            raise RepmatchError(
                f"{examples.name} has unnamed integer labels, so the entailment label must be "
                f"one of them, got {value!r}",
                field="entailment_label",
            )
        value = int(value)
    if not 0 <= value < examples.num_labels:
        raise RepmatchError(
            f"entailment label {value} is not a class of {examples.name} (labels 0 to "
            f"{examples.num_labels - 1}); name the entailment class with entailment_label",
            field="entailment_label",
        )
    return value, None


def save_overlap_subsets(
    data: object,
    out_dir: str | Path,
    *,
    entailment_label: str | int | None = None,
    overwrite: bool = False,
) -> tuple[OverlapSubsets, dict]:
    """Compute :func:`overlap_subsets` of ``data`` and write them to ``out_dir``; (subsets, record).

    Writes ``full.jsonl.gz``, ``mid.jsonl.gz`` and ``no.jsonl.gz`` (columns ``id``, ``premise``,
    ``hypothesis``, ``label``: the source's ids and label values, names when the labels are
    named), then the record ``overlap.json`` (definition, entailment class, sizes, source data).
    An empty subset has no file (no command accepts data without rows); its record entry says so.
    Under a launcher (``torchrun``) the main process writes; the others wait.
    """
    return distributed.on_main(
        lambda: _save_overlap_subsets(
            data, Path(out_dir), entailment_label=entailment_label, overwrite=overwrite
        )
    )


def _save_overlap_subsets(
    data: object, out: Path, *, entailment_label: str | int | None, overwrite: bool
) -> tuple[OverlapSubsets, dict]:
    with exclusive_output(out):
        if out.exists() and not out.is_dir():
            raise RepmatchError(f"output {out} is a file; name a folder for the subsets")
        if out.is_dir() and any(out.iterdir()) and not (out / RECORD_FILE).is_file():
            raise RepmatchError(
                f"output folder {out} is not empty and holds no overlap subsets (no "
                f"{RECORD_FILE}); refusing to write among its files even with overwrite: choose "
                "another folder"
            )
        if (out / RECORD_FILE).is_file() and not overwrite:
            raise RepmatchError(
                f"{out} already holds overlap subsets; set overwrite to replace them, or choose "
                "another output",
                field="overwrite",
            )
        examples = as_examples(data)
        result = overlap_subsets(examples, entailment_label=entailment_label)
        files: dict[str, str | None] = {
            band: _subset_file(out, band).name if len(subset) else None
            for band, subset in result.subsets.items()
        }
        record = run_record(
            "overlap",
            definition=DEFINITION,
            bands={band: [float(low), float(high)] for band, (low, high) in BANDS.items()},
            entailment_label=result.entailment,
            entailment_name=result.entailment_name,
            non_entailment=result.non_entailment,
            without_words=result.without_words,
            sizes=result.sizes,
            files=files,
            source=data_record(examples),
        )
        with output_set(out) as outputs:  # the subsets and their record, committed together
            for band, subset in result.subsets.items():
                path = _subset_file(out, band)
                if len(subset):
                    _write_jsonl_gz(outputs.path(path), _records(subset))
                else:
                    outputs.remove(path)
            write_json(outputs.path(out / RECORD_FILE), record)
    return result, record


def _subset_file(out: Path, band: str) -> Path:
    return out / f"{band}.jsonl.gz"


def _records(subset: Examples) -> list[dict]:
    """One JSON record per instance: id, premise, hypothesis and the label as in the source."""
    assert subset.text_pairs is not None
    names: Sequence[str] | None = subset.label_names
    labels = subset.labels.tolist()
    return [
        {
            "id": id_,
            "premise": premise,
            "hypothesis": hypothesis,
            "label": names[label] if names is not None else label,
        }
        for id_, premise, hypothesis, label in zip(
            subset.ids, subset.texts, subset.text_pairs, labels, strict=True
        )
    ]


def _write_jsonl_gz(path: Path, records: list[dict]) -> None:
    """Gzip JSON Lines (UTF-8, header time 0 so equal contents give equal bytes), atomically."""
    payload = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode()
    with atomic_path(path) as temporary, open(temporary, "wb") as raw:
        with gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as handle:
            handle.write(payload)
