"""Reinforcement learning with the LSTM controller: PPO (NASNet) and REINFORCE (NAS).

Both sample a genotype per ask from :class:`~cellsearch.strategies.controller.Controller` and keep
the sampled actions and their log-probabilities per trial, so rewards may arrive in any order. A
reward is shaped (accuracy or accuracy cubed), compared with an exponential moving average baseline
when it arrives, and the controller is updated once ``update_every`` rewards have arrived, on
those trials. Failed children get ``failure_reward``.

- PPO (Zoph et al. 2018, sec. 4): lr 0.00035, entropy weight 1e-5, baseline decay 0.95, init
  U(-0.1, 0.1), minibatches of 20 architectures; clipped ratio (0.2) per decision, a few epochs
  over each minibatch, so trials sampled by an older policy are corrected by their stored
  log-probabilities.
- REINFORCE (Zoph & Le 2017): Adam lr 0.0006, moving-average baseline, 2-layer LSTM with 35
  units, reward = accuracy cubed.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from cellsearch.space.genotype import SearchSpace
from cellsearch.strategies.base import Strategy, check_shaping, shape_reward
from cellsearch.strategies.controller import Controller
from cellsearch.validation import number_in, positive_int


class PolicyGradientStrategy(Strategy):
    """Shared machinery of PPO and REINFORCE: sampling, baseline, batching of rewards, resume."""

    def __init__(
        self,
        space: SearchSpace | Mapping[str, Any],
        seed: int,
        lr: float,
        entropy_weight: float,
        baseline_decay: float,
        update_every: int,
        hidden_size: int,
        num_layers: int,
        temperature: float | None,
        tanh_constant: float | None,
        init_range: float,
        reward_shaping: str,
        failure_reward: float,
        dedupe: bool,
        dedupe_tries: int,
    ) -> None:
        super().__init__(space, seed, dedupe=dedupe, dedupe_tries=dedupe_tries, failure_reward=failure_reward)
        number_in(lr, "search.lr", 0, low_open=True)
        number_in(baseline_decay, "search.baseline_decay", 0, 1, high_open=True)
        for name, value in (("update_every", update_every), ("hidden_size", hidden_size), ("num_layers", num_layers)):
            positive_int(value, f"search.{name}")
        self.lr = float(lr)
        self.entropy_weight = float(entropy_weight)
        self.baseline_decay = float(baseline_decay)
        self.update_every = int(update_every)
        self.reward_shaping = check_shaping(reward_shaping)
        self.controller = Controller(
            [d.num_choices for d in self.space.decisions()],
            hidden_size=int(hidden_size),
            num_layers=int(num_layers),
            temperature=temperature,
            tanh_constant=tanh_constant,
            init_range=float(init_range),
            generator=self.generator,
        )
        self.optimizer = torch.optim.Adam(self.controller.parameters(), lr=self.lr)
        self.baseline: float | None = None
        self.num_updates = 0
        self._log_probs: dict[int, torch.Tensor] = {}  # per-decision log-probs at sampling time
        self._batch: list[int] = []  # told trials not yet learned from
        self._advantages: list[float] = []

    def _propose(self) -> tuple[list[int], Any]:
        return self.controller.sample(self.generator)

    def _asked(self, trial_id: int, info: Any) -> None:
        self._log_probs[trial_id] = info

    def _told(self, trial_id: int) -> None:
        reward = shape_reward(self.learning_reward(trial_id), self.reward_shaping)
        if self.baseline is None:
            self.baseline = reward
        self._batch.append(trial_id)
        self._advantages.append(reward - self.baseline)
        self.baseline = self.baseline_decay * self.baseline + (1.0 - self.baseline_decay) * reward
        if len(self._batch) >= self.update_every:
            actions = torch.tensor([self._trials[i].actions for i in self._batch], dtype=torch.int64)
            old_log_probs = torch.stack([self._log_probs.pop(i) for i in self._batch])
            self._update(actions, old_log_probs, torch.tensor(self._advantages))
            self.num_updates += 1
            self._batch, self._advantages = [], []

    def _update(self, actions: torch.Tensor, old_log_probs: torch.Tensor, advantages: torch.Tensor) -> None:
        """Improve the controller on one minibatch of told trials."""
        raise NotImplementedError

    def _extra_state(self) -> dict[str, Any]:
        return {
            "controller": self.controller.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "baseline": self.baseline,
            "num_updates": self.num_updates,
            "log_probs": {int(i): lp for i, lp in self._log_probs.items()},
            "batch": list(self._batch),
            "advantages": list(self._advantages),
        }

    def _load_extra_state(self, state: Mapping[str, Any]) -> None:
        self.controller.load_state_dict(state["controller"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.baseline = None if state["baseline"] is None else float(state["baseline"])
        self.num_updates = int(state["num_updates"])
        self._log_probs = {int(i): lp.clone() for i, lp in state["log_probs"].items()}
        self._batch = [int(i) for i in state["batch"]]
        self._advantages = [float(a) for a in state["advantages"]]


class PPO(PolicyGradientStrategy):
    """NASNet's controller training: proximal policy optimization with the paper's defaults."""

    name = "ppo"

    def __init__(
        self,
        space: SearchSpace | Mapping[str, Any],
        seed: int = 0,
        lr: float = 0.00035,
        entropy_weight: float = 1e-5,
        baseline_decay: float = 0.95,
        update_every: int = 20,
        clip: float = 0.2,
        ppo_epochs: int = 4,
        hidden_size: int = 100,
        num_layers: int = 1,
        temperature: float | None = None,
        tanh_constant: float | None = None,
        init_range: float = 0.1,
        reward_shaping: str = "accuracy",
        failure_reward: float = 0.0,
        dedupe: bool = False,
        dedupe_tries: int = 100,
    ) -> None:
        super().__init__(space, seed, lr, entropy_weight, baseline_decay, update_every, hidden_size, num_layers,
                         temperature, tanh_constant, init_range, reward_shaping, failure_reward, dedupe, dedupe_tries)
        number_in(clip, "search.clip", 0, low_open=True)
        positive_int(ppo_epochs, "search.ppo_epochs")
        self.clip = float(clip)
        self.ppo_epochs = int(ppo_epochs)

    def _update(self, actions: torch.Tensor, old_log_probs: torch.Tensor, advantages: torch.Tensor) -> None:
        adv = advantages[:, None]
        for _ in range(self.ppo_epochs):
            log_probs, entropy = self.controller.evaluate(actions)
            ratio = torch.exp(log_probs - old_log_probs)
            surrogate = torch.minimum(ratio * adv, ratio.clamp(1.0 - self.clip, 1.0 + self.clip) * adv)
            loss = -(surrogate.sum(1) + self.entropy_weight * entropy.sum(1)).mean()
            self.optimizer.zero_grad()
            loss.backward()
            self.optimizer.step()


class Reinforce(PolicyGradientStrategy):
    """NAS (Zoph & Le 2017): REINFORCE with a moving-average baseline and the paper's defaults."""

    name = "reinforce"

    def __init__(
        self,
        space: SearchSpace | Mapping[str, Any],
        seed: int = 0,
        lr: float = 0.0006,
        entropy_weight: float = 0.0,
        baseline_decay: float = 0.95,
        update_every: int = 20,
        hidden_size: int = 35,
        num_layers: int = 2,
        temperature: float | None = None,
        tanh_constant: float | None = None,
        init_range: float = 0.1,
        reward_shaping: str = "cubed",
        failure_reward: float = 0.0,
        dedupe: bool = False,
        dedupe_tries: int = 100,
    ) -> None:
        super().__init__(space, seed, lr, entropy_weight, baseline_decay, update_every, hidden_size, num_layers,
                         temperature, tanh_constant, init_range, reward_shaping, failure_reward, dedupe, dedupe_tries)

    def _update(self, actions: torch.Tensor, old_log_probs: torch.Tensor, advantages: torch.Tensor) -> None:
        log_probs, entropy = self.controller.evaluate(actions)
        loss = -(log_probs.sum(1) * advantages + self.entropy_weight * entropy.sum(1)).mean()
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
