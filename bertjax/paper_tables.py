"""The BERT paper's own numbers (Devlin et al. 2019), shown as reference rows in the study tables.

One place for them: `reference_rows(study, modes, tasks)` turns the table a study mirrors into
rows whose columns are named as the study's measured ones (`<mode>:<task> <metric>`, the mode
prefix only when the study has several modes), so the paper's figure sits in the same column as
the CPU-scale one. All values are dev-set scores x100 of BERT-base (Table 6: each size) trained
for 1M steps on BooksCorpus + Wikipedia: the rows are marked `init = PAPER_INIT` and their point
names start with "paper:". A paper column whose task or mode the study did not run gets its own
column (its measured cells read "not run"); a measured column the paper does not report reads
"n/a" in a paper row.

Transcribed from the paper's tables (arXiv:1810.04805v2); not checked against a copy of the paper
in this repository (none is stored here).
"""
from __future__ import annotations

from typing import Mapping, Sequence

PAPER_INIT = "paper (BERT-base, full scale, 1M steps)"
PAPER_INIT_SIZES = "paper (full scale, 1M steps)"  # Table 6: each row its own shape
NOT_RUN = "not run"

# study -> (source, columns as (mode, task, metric), rows as (label, values in column order)).
# Table 5: MNLI-m, QNLI, MRPC and SST-2 accuracy, SQuAD v1.1 F1.
_TABLE5 = ("Devlin et al. 2019, Table 5 (effect of pre-training tasks, BERT-base)",
           (("full", "MNLI", "accuracy_m"), ("full", "QNLI", "accuracy"),
            ("full", "MRPC", "accuracy"), ("full", "SST-2", "accuracy"),
            ("full", "SQuAD", "f1")),
           (("BERT-base (MLM + NSP)", (84.4, 88.4, 86.7, 92.7, 88.5)),
            ("No NSP (MLM only)", (83.9, 84.9, 86.5, 92.6, 87.9)),
            ("LTR & No NSP", (82.1, 84.3, 77.5, 92.1, 77.8)),
            ("+ BiLSTM (LTR & No NSP, BiLSTM at fine-tuning)", (82.1, 84.1, 75.7, 91.6, 84.9))))
# Table 8: MNLI-m accuracy (fine-tuning), CoNLL-2003 NER dev F1 (fine-tuning, feature-based).
_TABLE8 = ("Devlin et al. 2019, Table 8 (masking strategies, BERT-base)",
           (("full", "MNLI", "accuracy_m"), ("full", "CoNLL-2003", "f1"),
            ("feature", "CoNLL-2003", "f1")),
           (("MASK/SAME/RND 80/10/10", (84.2, 95.4, 94.9)),
            ("MASK/SAME/RND 100/0/0", (84.3, 94.9, 94.0)),
            ("MASK/SAME/RND 80/0/20", (84.1, 95.2, 94.6)),
            ("MASK/SAME/RND 80/20/0", (84.4, 95.2, 94.7)),
            ("MASK/SAME/RND 0/20/80", (83.7, 94.8, 94.6)),
            ("MASK/SAME/RND 0/0/100", (83.6, 94.9, 94.6))))
# Table 6: held-out masked-LM perplexity and MNLI-m / MRPC / SST-2 accuracy per shape.
_TABLE6 = ("Devlin et al. 2019, Table 6 (model size; LM perplexity: held-out masked LM)",
           (("", "", "num_layers"), ("", "", "hidden_size"), ("", "", "num_heads"),
            ("", "", "mlm_perplexity"), ("full", "MNLI", "accuracy_m"),
            ("full", "MRPC", "accuracy"), ("full", "SST-2", "accuracy")),
           (("L=3 H=768 A=12", (3, 768, 12, 5.84, 77.9, 79.8, 88.4)),
            ("L=6 H=768 A=3", (6, 768, 3, 5.24, 80.6, 82.2, 90.7)),
            ("L=6 H=768 A=12", (6, 768, 12, 4.68, 81.9, 84.8, 91.3)),
            ("L=12 H=768 A=12 (BERT-base)", (12, 768, 12, 3.99, 84.4, 86.7, 92.9)),
            ("L=12 H=1024 A=16", (12, 1024, 16, 3.54, 85.7, 86.9, 93.3)),
            ("L=24 H=1024 A=16 (BERT-large)", (24, 1024, 16, 3.23, 86.6, 87.8, 93.7))))

TABLES = {"pretraining_tasks": _TABLE5, "nsp": _TABLE5, "mask_mix": _TABLE8, "size": _TABLE6}


def column(mode: str, task: str, metric: str, modes: Sequence[str]) -> str:
    """The study's name for a (mode, task, metric) column; '' task = a pretraining column."""
    if not task:
        return metric
    pre = f"{mode}:" if len(modes) > 1 or mode not in modes else ""
    return f"{pre}{task} {metric}"


def reference_rows(study: str, modes: Sequence[str]) -> tuple[list[dict], str]:
    """-> (the paper's rows for this study, named as the study's columns; the source line).
    ([], '') for a study that mirrors no paper table."""
    if study not in TABLES:
        return [], ""
    source, cols, rows = TABLES[study]
    names = [column(m, t, k, modes) for m, t, k in cols]
    init = PAPER_INIT_SIZES if study == "size" else PAPER_INIT
    out = [{"point": f"paper: {label}", "init": init, **dict(zip(names, values))}
           for label, values in rows]
    return out, source


def table_rows(measured: Sequence[Mapping], reference: Sequence[Mapping]
               ) -> tuple[list[str], list[list]]:
    """The study table: measured rows then the paper's, over the union of their columns. A
    column only the paper fills reads NOT_RUN in measured rows (never a zero)."""
    header = list(dict.fromkeys(k for row in [*measured, *reference] for k in row))
    measured_cols = {k for row in measured for k in row}
    table = [[row.get(k, None if k in measured_cols else NOT_RUN) for k in header]
             for row in measured]
    table += [[row.get(k) for k in header] for row in reference]
    return header, table
