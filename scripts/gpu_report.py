"""Everything a lent GPU should tell us, in one command (about 8 minutes on one GPU):

    python scripts/gpu_report.py [--markdown gpu_report.md] [--workdir DIR] [--budget_s 450]
    python scripts/gpu_report.py --smoke      # every part at micro sizes, on CPU in seconds

Prints one JSON document on stdout (progress goes to stderr) and writes the same figures as
markdown tables. What it measures: bertjax/gpu_report.py. docs/benchmarks.md says how to use it.
"""
import json
import logging
import os
import sys
import tempfile

from absl import flags
from absl import logging as absl_logging

from bertjax import cli, gpu_report

_SMOKE = flags.DEFINE_bool("smoke", False, "Micro sizes (tiny model, a few steps): checks that "
                           "every part runs, e.g. on CPU; the figures mean nothing.")
_MARKDOWN = flags.DEFINE_string("markdown", "gpu_report.md", "Markdown tables written here "
                                "('' = none).")
_WORKDIR = flags.DEFINE_string("workdir", "", "Directory for the pretraining run and the GLUE "
                               "files; must be absent or empty. '' = a new temporary directory.")
_BUDGET = flags.DEFINE_float("budget_s", 450.0, "Seconds the report aims to finish in; the "
                             "throughput cases get 60% of it and are skipped past that.")


def main(argv):
    del argv
    absl_logging.set_verbosity(absl_logging.WARNING)
    logging.getLogger("bertjax").setLevel(logging.INFO)
    workdir = cli.user_path(_WORKDIR.value) if _WORKDIR.value else tempfile.mkdtemp(
        prefix="gpu_report_")
    if os.path.exists(workdir) and (not os.path.isdir(workdir) or os.listdir(workdir)):
        raise ValueError(f"--workdir={workdir}: expected an absent or empty directory (the "
                         "report's pretraining must start fresh to show a resume)")
    markdown = cli.user_path(_MARKDOWN.value) if _MARKDOWN.value else ""
    if markdown and not os.path.isdir(os.path.dirname(markdown)):
        raise ValueError(f"--markdown={_MARKDOWN.value}: directory "
                         f"{os.path.dirname(markdown)} does not exist")
    with cli.stdout_to_stderr():
        report = gpu_report.run(smoke=_SMOKE.value, budget_s=_BUDGET.value, workdir=workdir)
    if markdown:
        with open(markdown, "w", encoding="utf-8") as f:
            f.write(gpu_report.markdown(report))
        report["markdown"] = markdown
    print(json.dumps(report, indent=1))
    sys.stdout.flush()


if __name__ == "__main__":
    cli.run(main)
