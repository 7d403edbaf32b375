"""Loading labelled text data and the subset of it to use.

Everything between "the user named some data" and "here are the texts, labels and stable ids",
one concern per module:

- :mod:`~repmatch.data.spec`: :class:`DataSpec`, what to load and which subset;
- :mod:`~repmatch.data.readers`: files, folders of split files, Hugging Face Hub datasets;
- :mod:`~repmatch.data.columns`: detecting the text, label and id columns;
- :mod:`~repmatch.data.labels`: label values, class indices, ids and the task kind;
- :mod:`~repmatch.data.subsets`: label filter, indices file, limit or random sample;
- :mod:`~repmatch.data.examples`: :class:`Examples`, what was loaded;
- :mod:`~repmatch.data.loading`: :func:`load_examples`, the steps in order.
"""

from repmatch.data.examples import Examples
from repmatch.data.loading import load_examples
from repmatch.data.readers import FORMATS, list_splits
from repmatch.data.spec import TASK_KINDS, DataSpec, TaskKind

__all__ = [
    "FORMATS",
    "TASK_KINDS",
    "DataSpec",
    "Examples",
    "TaskKind",
    "list_splits",
    "load_examples",
]
