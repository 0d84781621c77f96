"""Reinforcement learning with the LSTM controller: PPO (NASNet) and REINFORCE (NAS).

Both sample a genotype per ask from :class:`~cellsearch.strategies.controller.Controller` and keep
the sampled actions and their log-probabilities per trial, so rewards may arrive in any order. A
reward is shaped (accuracy or accuracy cubed), compared with an exponential moving average baseline
when it arrives, and the controller is updated once ``update_every`` rewards have arrived, on
those trials. Failed children get ``failure_reward``.

- PPO (Zoph et al. 2018, sec. 4): clipped ratio (0.2) per decision, a few epochs over each
  minibatch, so trials sampled by an older policy are corrected by their stored log-probabilities.
  The paper's settings (lr 0.00035, minibatches of 20, no logit squashing) are made for ~20,000
  children and learn nothing within a few hundred (``experiment=nasnet_paper`` keeps them). The
  defaults here learn within 100 children with 10 in flight: a 29x larger learning rate, updates
  every 5 rewards, ENAS's ``tanh_constant`` 2.5, advantages divided by their running scale, and an
  imitation term on the best cells so far (priority-queue training). Two PPO epochs per update
  (with the larger step) instead of four keep the controller under 10 ms per child. Measured
  against random search on every reward-landscape family and the testbed table in
  benchmarks/bench_search_quality.py.
- REINFORCE (Zoph & Le 2017): Adam lr 0.0006, moving-average baseline, 2-layer LSTM with 35
  units, reward = accuracy cubed.

Both search NASNet's cells and NAS-RL's layers (``space=nasrl``), whose skip connections the controller
draws as anchor decisions (see :mod:`cellsearch.strategies.controller`).
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from cellsearch.space.genotype import SearchSpace
from cellsearch.strategies.base import Strategy, adam, check_shaping, shape_reward
from cellsearch.strategies.controller import Controller
from cellsearch.validation import number_in, positive_int


class PolicyGradientStrategy(Strategy):
    """Shared machinery of PPO and REINFORCE: sampling, baseline, batching of rewards, resume."""

    spaces = ("nasnet", "nasrl")  # NAS-RL's anchors are the controller's sigmoid decisions

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
        normalize_advantages: bool,
        imitation_weight: float,
        imitation_topk: int,
        failure_reward: float,
        dedupe: bool,
        dedupe_tries: int,
    ) -> None:
        super().__init__(space, seed, dedupe=dedupe, dedupe_tries=dedupe_tries, failure_reward=failure_reward)
        if imitation_weight < 0 or imitation_topk < 1:
            raise ValueError(f"imitation_weight must be >= 0 and imitation_topk >= 1, got {imitation_weight} "
                             f"and {imitation_topk}")
        number_in(lr, "search.lr", 0, low_open=True)
        number_in(baseline_decay, "search.baseline_decay", 0, 1, high_open=True)
        for name, value in (("update_every", update_every), ("hidden_size", hidden_size), ("num_layers", num_layers)):
            positive_int(value, f"search.{name}")
        self.lr = float(lr)
        self.entropy_weight = float(entropy_weight)
        self.baseline_decay = float(baseline_decay)
        self.update_every = int(update_every)
        self.reward_shaping = check_shaping(reward_shaping)
        self.normalize_advantages = bool(normalize_advantages)
        self.imitation_weight = float(imitation_weight)
        self.imitation_topk = int(imitation_topk)
        self.controller = Controller(
            self.space.layout.num_choices_list,
            hidden_size=int(hidden_size),
            num_layers=int(num_layers),
            temperature=temperature,
            tanh_constant=tanh_constant,
            init_range=float(init_range),
            generator=self.generator,
            # NAS-RL's anchor decisions read the hidden state at their source layer's anchor point
            anchors=[d.anchor_point if d.kind == "anchor" else -1 for d in self.space.layout.decisions],
        )
        self.optimizer = adam(self.controller.parameters(), self.lr)
        self.baseline: float | None = None
        self.mean_square: float | None = None  # running mean of squared advantages (their scale)
        self.num_updates = 0
        self.last_update: dict[str, float] = {}  # loss and policy entropy of the latest update (for signals)
        self._log_probs: dict[int, torch.Tensor] = {}  # per-decision log-probs at sampling time
        self._batch: list[int] = []  # told trials not yet learned from
        self._advantages: list[float] = []
        self._top: list[int] = []  # the imitation_topk best told trials, best first
        # Proposals are drawn ``update_every`` at a time (one LSTM pass for all: the policy does not
        # change between updates) and handed out one per ask; an update discards what is left.
        self._samples: list[tuple[list[int], torch.Tensor]] = []

    def min_budget(self) -> tuple[int, str]:
        return 2 * self.update_every, f"the controller learns once every update_every={self.update_every} rewards"

    def signals(self) -> dict[str, float]:
        """The moving-average baseline, the number of controller updates, and the latest update's loss and
        policy entropy (nats per sampled cell pair, the mean over its minibatch)."""
        signals = {"updates": float(self.num_updates), **self.last_update}
        if self.baseline is not None:
            signals["baseline"] = self.baseline
        return signals

    def _propose(self) -> tuple[list[int], Any]:
        if not self._samples:
            actions, log_probs = self.controller.sample_batch(self.update_every, self.generator)
            self._samples = list(zip(actions, log_probs))
        return self._samples.pop(0)

    def _asked(self, trial_id: int, info: Any) -> None:
        if info is None:  # drawn by _explore, not by the policy: learn from it as from an added trial
            self._added(trial_id)
        else:
            self._log_probs[trial_id] = info

    def _withdrawn(self, trial_id: int) -> None:
        # Never evaluated: it must not enter an update (its advantage would be made up).
        self._log_probs.pop(trial_id)

    def _added(self, trial_id: int) -> None:
        # Evaluated elsewhere: learn from it as from a sample of the current policy (PPO ratio 1).
        with torch.no_grad():
            actions = torch.tensor([self._trials[trial_id].actions], dtype=torch.int64)
            self._log_probs[trial_id] = self.controller.evaluate(actions)[0][0]

    def _told(self, trial_id: int) -> None:
        learning_reward = self.learning_reward(trial_id)
        reward = shape_reward(learning_reward, self.reward_shaping)
        if self.baseline is None:
            self.baseline = reward
        advantage = reward - self.baseline
        self.baseline = self.baseline_decay * self.baseline + (1.0 - self.baseline_decay) * reward
        if self.normalize_advantages:
            # Scale-free steps: divide by the running root mean square of advantages (ENAS-style
            # baselines centre the reward; this also fixes its scale, which differs between tasks).
            square = advantage * advantage
            self.mean_square = square if not self.mean_square else (
                self.baseline_decay * self.mean_square + (1.0 - self.baseline_decay) * square)
            advantage = advantage / (self.mean_square ** 0.5 + 1e-8) if self.mean_square else 0.0
        self._batch.append(trial_id)
        self._advantages.append(advantage)
        self._remember_top(trial_id)
        if len(self._batch) >= self.update_every:
            self._learn()

    def _remember_top(self, trial_id: int) -> None:
        """Keep ``_top`` the ``imitation_topk`` best told trials (ties: the earlier first)."""
        if not self.imitation_weight:
            return
        key = self.learning_reward
        position = len(self._top)
        while position > 0 and key(self._top[position - 1]) < key(trial_id):
            position -= 1
        self._top.insert(position, trial_id)
        del self._top[self.imitation_topk:]

    def _learn(self) -> None:
        """One controller update on the told trials not yet learned from."""
        actions = torch.tensor([self._trials[i].actions for i in self._batch], dtype=torch.int64)
        old_log_probs = torch.stack([self._log_probs.pop(i) for i in self._batch])
        loss, entropy = self._update(actions, old_log_probs, torch.tensor(self._advantages))
        self.last_update = {"loss": float(loss), "entropy": float(entropy.sum(1).mean())}
        self.num_updates += 1
        self._batch, self._advantages = [], []
        self._samples = []

    def _evaluate(self, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Log-probs and entropies of ``actions``, plus the imitation loss of the best trials so far
        (priority-queue training, Abolafia et al. 2018: the negative log-likelihood of the
        ``imitation_topk`` best cells pulls the policy towards them while the advantages steer it),
        all in one pass of the controller."""
        if not self.imitation_weight or not self._top:
            log_probs, entropy = self.controller.evaluate(actions)
            return log_probs, entropy, torch.zeros(())
        best = torch.tensor([self._trials[i].actions for i in self._top], dtype=torch.int64)
        log_probs, entropy = self.controller.evaluate(torch.cat([actions, best]))
        n = actions.shape[0]
        return log_probs[:n], entropy[:n], -self.imitation_weight * log_probs[n:].sum(1).mean()

    def _update(self, actions: torch.Tensor, old_log_probs: torch.Tensor,
                advantages: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Improve the controller on one minibatch of told trials; return the (last) loss and the
        per-decision entropies [batch, decisions] it was computed with, both detached."""
        raise NotImplementedError

    def _extra_state(self) -> dict[str, Any]:
        return {
            "controller": self.controller.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "baseline": self.baseline,
            "mean_square": self.mean_square,
            "num_updates": self.num_updates,
            "top": list(self._top),
            "samples": [(list(a), lp) for a, lp in self._samples],
            "log_probs": {int(i): lp for i, lp in self._log_probs.items()},
            "batch": list(self._batch),
            "advantages": list(self._advantages),
        }

    def _load_extra_state(self, state: Mapping[str, Any]) -> None:
        self.controller.load_state_dict(state["controller"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.baseline = None if state["baseline"] is None else float(state["baseline"])
        self.mean_square = None if state["mean_square"] is None else float(state["mean_square"])
        self.num_updates = int(state["num_updates"])
        self._top = [int(i) for i in state["top"]]
        self._samples = [([int(a) for a in actions], lp.clone()) for actions, lp in state["samples"]]
        self._log_probs = {int(i): lp.clone() for i, lp in state["log_probs"].items()}
        self._batch = [int(i) for i in state["batch"]]
        self._advantages = [float(a) for a in state["advantages"]]


class PPO(PolicyGradientStrategy):
    """NASNet's controller training, proximal policy optimization, tuned to learn within 100 children."""

    name = "ppo"

    def __init__(
        self,
        space: SearchSpace | Mapping[str, Any],
        seed: int = 0,
        lr: float = 0.01,
        entropy_weight: float = 1e-5,
        baseline_decay: float = 0.95,
        update_every: int = 5,
        clip: float = 0.2,
        ppo_epochs: int = 2,
        hidden_size: int = 100,
        num_layers: int = 1,
        temperature: float | None = None,
        tanh_constant: float | None = 2.5,
        init_range: float = 0.1,
        reward_shaping: str = "accuracy",
        normalize_advantages: bool = True,
        imitation_weight: float = 0.5,
        imitation_topk: int = 5,
        failure_reward: float = 0.0,
        dedupe: bool = False,
        dedupe_tries: int = 100,
    ) -> None:
        super().__init__(space, seed, lr, entropy_weight, baseline_decay, update_every, hidden_size, num_layers,
                         temperature, tanh_constant, init_range, reward_shaping, normalize_advantages, imitation_weight,
                         imitation_topk, failure_reward, dedupe, dedupe_tries)
        number_in(clip, "search.clip", 0, low_open=True)
        positive_int(ppo_epochs, "search.ppo_epochs")
        self.clip = float(clip)
        self.ppo_epochs = int(ppo_epochs)

    def _update(self, actions: torch.Tensor, old_log_probs: torch.Tensor,
                advantages: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        adv = advantages[:, None]
        for _ in range(self.ppo_epochs):
            log_probs, entropy, imitation = self._evaluate(actions)
            ratio = torch.exp(log_probs - old_log_probs)
            surrogate = torch.minimum(ratio * adv, ratio.clamp(1.0 - self.clip, 1.0 + self.clip) * adv)
            loss = -(surrogate.sum(1) + self.entropy_weight * entropy.sum(1)).mean() + imitation
            self.optimizer.zero_grad()
            loss.backward()
            self.optimizer.step()
        return loss.detach(), entropy.detach()


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
        normalize_advantages: bool = False,
        imitation_weight: float = 0.0,
        imitation_topk: int = 5,
        failure_reward: float = 0.0,
        dedupe: bool = False,
        dedupe_tries: int = 100,
    ) -> None:
        super().__init__(space, seed, lr, entropy_weight, baseline_decay, update_every, hidden_size, num_layers,
                         temperature, tanh_constant, init_range, reward_shaping, normalize_advantages, imitation_weight,
                         imitation_topk, failure_reward, dedupe, dedupe_tries)

    def _update(self, actions: torch.Tensor, old_log_probs: torch.Tensor,
                advantages: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        log_probs, entropy, imitation = self._evaluate(actions)
        loss = -(log_probs.sum(1) * advantages + self.entropy_weight * entropy.sum(1)).mean() + imitation
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        return loss.detach(), entropy.detach()
