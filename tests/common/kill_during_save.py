"""A test-only ms-swift plugin (``--external_plugins``): rank 0 kills itself with SIGKILL
while checkpoint ``$SVP_TEST_KILL_AT_SAVE`` is being written, after the weights and the
optimizer state are on disk and before the RNG and trainer states are (the HF trainer's
order), which is what a job killed mid-save leaves behind. The recipes' own resume must
then pass over that folder."""

import os
import signal

from transformers import Trainer

_STEP = int(os.environ.get("SVP_TEST_KILL_AT_SAVE", "-1"))
_save_rng_state = Trainer._save_rng_state


def _killing_save_rng_state(self, output_dir):
    if self.state.global_step == _STEP and self.args.process_index == 0:
        print(f"kill_during_save: SIGKILL while writing {output_dir}", flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
    return _save_rng_state(self, output_dir)


if getattr(Trainer._save_rng_state, "__name__", "") != "_killing_save_rng_state":
    Trainer._save_rng_state = _killing_save_rng_state
