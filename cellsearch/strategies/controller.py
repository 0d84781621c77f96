"""The NASNet controller: an LSTM that emits a genotype's decisions one after another.

Zoph et al. 2018 (sec. 3): the controller makes the 2 x 5B decisions of a Normal and a Reduction
cell autoregressively; every decision is a softmax classifier over its legal choices (the states
available to the block, the ops, the combine methods) and the sampled choice is fed back, as an
embedding, as the next step's input. Each decision position has its own embedding rows and its own
output layer; illegal choices (a block's input table is shorter than the op table) are masked out.
The ENAS logit tricks (Pham et al. 2018), ``c * tanh(logits / T)``, are optional.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import skip_init

from cellsearch.validation import number_in


class Controller(nn.Module):
    """LSTM policy over a fixed sequence of categorical decisions."""

    def __init__(
        self,
        num_choices: list[int],
        hidden_size: int = 100,
        num_layers: int = 1,
        temperature: float | None = None,
        tanh_constant: float | None = None,
        init_range: float = 0.1,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        if not num_choices or min(num_choices) < 1:
            raise ValueError(f"every decision needs at least one choice, got {num_choices}")
        number_in(temperature, "search.temperature", 0, low_open=True, optional=True)
        number_in(tanh_constant, "search.tanh_constant", 0, low_open=True, optional=True)
        self.num_choices = list(num_choices)
        self.temperature = temperature
        self.tanh_constant = tanh_constant
        num_steps, max_choices = len(num_choices), max(num_choices)
        offsets = torch.tensor([0] + num_choices[:-1]).cumsum(0)
        self.register_buffer("offsets", offsets, persistent=False)
        mask = torch.arange(max_choices)[None, :] < torch.tensor(num_choices)[:, None]
        self.register_buffer("legal", mask, persistent=False)
        # Row 0 is the start token; rows 1 + offset[t] + a embed choice a of decision t.
        # skip_init: every weight is drawn below from ``generator``, never from the global RNG.
        self.embedding = skip_init(nn.Embedding, 1 + sum(num_choices), hidden_size)
        self.cells = nn.ModuleList(skip_init(nn.LSTMCell, hidden_size, hidden_size) for _ in range(num_layers))
        self.head_weight = nn.Parameter(torch.empty(num_steps, hidden_size, max_choices))
        self.head_bias = nn.Parameter(torch.empty(num_steps, max_choices))
        with torch.no_grad():
            for p in self.parameters():
                p.uniform_(-init_range, init_range, generator=generator)

    def _initial_state(self, batch: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        zeros = torch.zeros(batch, self.embedding.embedding_dim)
        return [(zeros, zeros) for _ in self.cells]

    def _step(self, x: torch.Tensor, state: list, t: int) -> tuple[torch.Tensor, list]:
        """One LSTM step and the logits of decision ``t`` (illegal choices at -inf)."""
        new_state = []
        for cell, (h, c) in zip(self.cells, state):
            h, c = cell(x, (h, c))
            new_state.append((h, c))
            x = h
        logits = x @ self.head_weight[t] + self.head_bias[t]
        if self.temperature is not None:
            logits = logits / self.temperature
        if self.tanh_constant is not None:
            logits = self.tanh_constant * torch.tanh(logits)
        return logits.masked_fill(~self.legal[t], float("-inf")), new_state

    def _embed(self, t: int, actions: torch.Tensor) -> torch.Tensor:
        return self.embedding(1 + self.offsets[t] + actions)

    @torch.no_grad()
    def sample(self, generator: torch.Generator | None = None) -> tuple[list[int], torch.Tensor]:
        """One action sequence and the log-probability of each of its decisions."""
        state = self._initial_state(1)
        x = self.embedding.weight[:1]
        actions, log_probs = [], []
        for t in range(len(self.num_choices)):
            logits, state = self._step(x, state, t)
            logp = torch.log_softmax(logits[0], dim=-1)
            a = int(torch.multinomial(logp.exp(), 1, generator=generator))
            actions.append(a)
            log_probs.append(logp[a])
            x = self._embed(t, torch.tensor([a]))
        return actions, torch.stack(log_probs)

    def evaluate(self, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-decision log-probabilities and entropies, both [batch, decisions], of given actions."""
        batch = actions.shape[0]
        state = self._initial_state(batch)
        x = self.embedding.weight[:1].expand(batch, -1)
        log_probs, entropies = [], []
        for t in range(len(self.num_choices)):
            logits, state = self._step(x, state, t)
            logp = torch.log_softmax(logits, dim=-1)
            log_probs.append(logp.gather(1, actions[:, t:t + 1]).squeeze(1))
            entropies.append(-(logp.exp() * logp.masked_fill(~self.legal[t], 0.0)).sum(-1))
            x = self._embed(t, actions[:, t])
        return torch.stack(log_probs, 1), torch.stack(entropies, 1)
