"""Loading labelled text data and the subset of it to use.

Everything between "the user named some data" and "here are the texts, labels and stable ids",
one concern per module:

- :mod:`~repmatch.data.spec`: :class:`DataSpec`, what to load and which subset;
- :mod:`~repmatch.data.readers`: files, folders of split files, Hugging Face Hub datasets,
  in-memory DataFrames and Datasets;
- :mod:`~repmatch.data.columns`: detecting the text, label and id columns;
- :mod:`~repmatch.data.labels`: label values, class indices, ids and the task kind;
- :mod:`~repmatch.data.subsets`: label filter, indices file, limit or random sample;
- :mod:`~repmatch.data.examples`: :class:`Examples`, what was loaded, and its labels aligned to
  a reference's classes;
- :mod:`~repmatch.data.loading`: :func:`load_examples` and :func:`as_examples` (any form of
  data), the steps in order;
- :mod:`~repmatch.data.overlap`: premise/hypothesis word overlap of NLI data and the paper's
  Full / Mid / No subsets of its non-entailment instances.

Library messages name the :class:`DataSpec` field at fault and set it as
:attr:`RepmatchError.field <repmatch.errors.RepmatchError.field>`; :data:`FLAGS` maps fields to
command-line flags.
"""

from repmatch.data.examples import Examples
from repmatch.data.loading import as_examples, load_examples
from repmatch.data.overlap import (
    OverlapSubsets,
    overlap_subsets,
    save_overlap_subsets,
    word_overlap,
)
from repmatch.data.readers import FORMATS, list_splits
from repmatch.data.spec import FLAGS, TASK_KINDS, DataSpec, TaskKind

__all__ = [
    "FLAGS",
    "FORMATS",
    "TASK_KINDS",
    "DataSpec",
    "Examples",
    "OverlapSubsets",
    "TaskKind",
    "as_examples",
    "list_splits",
    "load_examples",
    "overlap_subsets",
    "save_overlap_subsets",
    "word_overlap",
]
