"""``samreg`` with the tests' learned task ``tiny-net`` registered (for this process only).

Usage: ``python Testing/train_cli.py train tiny-net --data ... -o ...``, also as the script of
``python -m torch.distributed.run``.
"""
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE)]

from SAMRegistrationLib.cli import main  # noqa: E402
from SAMRegistrationLib.plugins import register_method  # noqa: E402
from training_task import PLUGIN  # noqa: E402

register_method(PLUGIN)

if __name__ == "__main__":
    sys.exit(main())
