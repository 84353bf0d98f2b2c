"""Fine-tune and evaluate on GLUE: scripts/finetune.py under its old name (same flags, with
--glue_dir as the name of --data_dir).

  python scripts/finetune_glue.py --config configs/glue.py:SST-2 --glue_dir DIR \
      --init_checkpoint CKPT --workdir DIR [--tokenizer MODEL]
"""
import os
import runpy

if __name__ == "__main__":
    runpy.run_path(os.path.join(os.path.dirname(os.path.abspath(__file__)), "finetune.py"),
                   run_name="__main__")
