"""One Markdown table comparing GLUE workdirs (e.g. pretrained vs random initialisation).

  python scripts/compare_glue.py --workdirs runs/glue_pretrained,runs/glue_random \
      --labels pretrained,random
"""
from absl import app, flags

from bertjax import cli
from bertjax.finetune import report

flags.DEFINE_list("workdirs", None, "GLUE workdirs written by finetune_glue.py")
flags.DEFINE_list("labels", None, "column headings (default: the workdirs' names)")
flags.mark_flag_as_required("workdirs")


def main(argv):
    del argv
    labels, workdirs = flags.FLAGS.labels, flags.FLAGS.workdirs
    if labels and len(labels) != len(workdirs):
        raise app.UsageError(f"{len(labels)} labels for {len(workdirs)} workdirs")
    print(report.compare_table([cli.user_path(w) for w in workdirs], labels), end="")


if __name__ == "__main__":
    cli.run(main)
