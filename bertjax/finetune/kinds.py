"""Every fine-tuning task by name, and the task kind that runs it.

A kind (glue/kind.py documents the interface) supplies a task family's reader, features, head
and loss, decoding and metric; the core (trainer.py, grid.py) does the rest. `find("SQuAD")`
-> (kind, spec). Task names are matched case-insensitively.
"""
from __future__ import annotations

from bertjax.finetune.glue.kind import KIND as GLUE
from bertjax.finetune.ner.kind import KIND as NER
from bertjax.finetune.own_data.kind import KIND as OWN
from bertjax.finetune.squad.kind import KIND as SQUAD

KINDS = (GLUE, SQUAD, NER, OWN)


def task_names() -> tuple[str, ...]:
    return tuple(name for kind in KINDS for name in kind.tasks)


def find(name: str):
    """Task name -> (kind, spec); an unknown name is one line listing the known ones."""
    lower = {t.lower(): (kind, t) for kind in KINDS for t in kind.tasks}
    if name.lower() not in lower:
        raise ValueError(f"unknown task {name!r}; expected one of {list(task_names())}")
    kind, canonical = lower[name.lower()]
    return kind, kind.get_spec(canonical)


def kind_of(spec):
    """The kind that serves `spec` (a spec of one of the kinds' tasks)."""
    for kind in KINDS:
        if spec.name in kind.tasks:
            return kind
    raise ValueError(f"no task kind serves task {spec.name!r}")
