"""Callbacks for algorithms that simulate a whole window before they update on it."""

from __future__ import annotations

from typing import Any

from stable_baselines3.common.callbacks import CheckpointCallback


class CheckpointAfterUpdateCallback(CheckpointCallback):
    """
    SB3's ``CheckpointCallback`` for algorithms that update once per window after simulating it (RPO, SHAC, SAPO).

    SB3 calls ``on_step`` while the window is simulated, before its update (``train()``): a checkpoint saved there
    holds one update less than its name says (``rl_model_10240_steps.zip`` after 20 windows held 19 updates, and
    resuming from it lost the 20th window). This callback decides to save in ``on_step`` as SB3's does, and saves
    when that window's update is done (at the start of the next window, or at the end of training), so that
    ``rl_model_<n>_steps.zip`` holds the update of the window that reached ``n`` steps. The arguments are
    ``CheckpointCallback``'s; pass it to ``learn(callback=...)`` or let the zoo install it.
    """

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._save_pending = False

    def _on_step(self) -> bool:
        self._save_pending |= self.n_calls % self.save_freq == 0
        return True

    def _on_rollout_start(self) -> None:
        self._save_now()

    def _on_training_end(self) -> None:
        self._save_now()

    def _save_now(self) -> None:
        if not self._save_pending:
            return
        self._save_pending = False
        n_calls, self.n_calls = self.n_calls, 0  # SB3's save (model, replay buffer, VecNormalize) when n_calls % freq == 0
        try:
            super()._on_step()
        finally:
            self.n_calls = n_calls
