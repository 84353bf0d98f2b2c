"""Does a pretrained model read its context? MLM loss at [MASK] positions of held-out rows with
the context intact, shuffled, or replaced by random tokens (bertjax/context_probe.py), as JSON.

  python scripts/context_probe.py --workdir runs/study_transfer/base --batches 20

`context_nats` (shuffled - intact; `replaced_nats` = replaced - intact) near 0 means the model is on
the unigram plateau: it copies
unmasked tokens and predicts unigram frequencies at [MASK], and has nothing to transfer.
"""
import json

from absl import app, flags

from bertjax import cli

flags.DEFINE_string("workdir", None, "a pretraining workdir (config.json + checkpoints/)")
flags.DEFINE_integer("step", None, "checkpoint step (default: the latest)")
flags.DEFINE_integer("batches", 20, "held-out batches to score")
flags.DEFINE_integer("batch_size", 64, "rows per batch")
flags.DEFINE_integer("seed", 0, "seed of the shuffles and random replacements")
flags.DEFINE_float("mask_rate", None, "mask the held-out rows at this rate instead of the run's "
                   "(to compare runs trained at different rates on one task)")
flags.mark_flag_as_required("workdir")


def main(argv):
    del argv
    F = flags.FLAGS
    with cli.stdout_to_stderr():
        from bertjax import context_probe
        out = context_probe.probe(cli.user_path(F.workdir), batches=F.batches,
                                  batch_size=F.batch_size, step=F.step, seed=F.seed,
                                  mask_rate=F.mask_rate)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    cli.run(main)
