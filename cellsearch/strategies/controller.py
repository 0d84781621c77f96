"""The NASNet controller: an LSTM that emits a genotype's decisions one after another.

Zoph et al. 2018 (sec. 3): the controller makes the 2 x 5B decisions of a Normal and a Reduction
cell autoregressively; every decision is a softmax classifier over its legal choices (the states
available to the block, the ops, the combine methods) and the sampled choice is fed back, as an
embedding, as the next step's input. Each decision position has its own embedding rows and its own
output layer; illegal choices (a block's input table is shorter than the op table) are masked out.
The ENAS logit tricks (Pham et al. 2018), ``c * tanh(logits / T)``, are optional.

NAS-RL's anchor decisions (Zoph & Le 2017, sec. 3.3): whether layer j feeds layer i is a binary
decision whose probability comes from two hidden states instead of an output layer,
P(j -> i) = sigmoid(v^T tanh(W_prev h_j + W_curr h_i)), with h_j the controller's state at layer j's
anchor point and h_i its state at the decision's own step (so each anchor also sees those drawn before
it). ``anchors`` names, per decision, the step of h_j (-1: an ordinary softmax decision); the choice
"yes" is 1, and its logit against "no" is v^T tanh(...), so the softmax over the two is that sigmoid.
"""
from __future__ import annotations

from typing import Sequence

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
        anchors: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        if not num_choices or min(num_choices) < 1:
            raise ValueError(f"every decision needs at least one choice, got {num_choices}")
        self.anchors = [-1] * len(num_choices) if anchors is None else [int(a) for a in anchors]
        bad = [t for t, a in enumerate(self.anchors) if a >= 0 and (a > t or num_choices[t] != 2)]
        if len(self.anchors) != len(num_choices) or bad:
            raise ValueError(f"an anchor decision has 2 choices and reads the state of a step not after its own; "
                             f"got anchors {self.anchors} for choices {num_choices}")
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
        self.lstm = nn.LSTM(hidden_size, hidden_size, num_layers, device="meta").to_empty(device="cpu")
        self.head_weight = nn.Parameter(torch.empty(num_steps, hidden_size, max_choices))
        self.head_bias = nn.Parameter(torch.empty(num_steps, max_choices))
        # Anchor steps use W_prev, W_curr and v instead of their output-layer rows (which stay unused); a
        # controller without anchors has none of them, so its parameters and their draws are as before.
        self._anchor_steps = [t for t, a in enumerate(self.anchors) if a >= 0]
        if self._anchor_steps:
            self.anchor_prev = nn.Parameter(torch.empty(hidden_size, hidden_size))
            self.anchor_curr = nn.Parameter(torch.empty(hidden_size, hidden_size))
            self.anchor_v = nn.Parameter(torch.empty(hidden_size))
            self.register_buffer("anchor_index", torch.tensor(self._anchor_steps), persistent=False)
            self.register_buffer("anchor_source", torch.tensor([self.anchors[t] for t in self._anchor_steps]),
                                 persistent=False)
            self.register_buffer("anchor_yes", (torch.arange(max_choices) == 1).float(), persistent=False)
        with torch.no_grad():
            for p in self.parameters():
                p.uniform_(-init_range, init_range, generator=generator)

    def _initial_state(self, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        zeros = torch.zeros(self.lstm.num_layers, batch, self.lstm.hidden_size)
        return zeros, zeros

    def _scale(self, logits: torch.Tensor) -> torch.Tensor:
        """The ENAS logit tricks (temperature, then ``c * tanh``), where configured."""
        if self.temperature is not None:
            logits = logits / self.temperature
        if self.tanh_constant is not None:
            logits = self.tanh_constant * torch.tanh(logits)
        return logits

    def _squash(self, logits: torch.Tensor, legal: torch.Tensor) -> torch.Tensor:
        """The ENAS logit tricks, then illegal choices at -inf."""
        return self._scale(logits).masked_fill(~legal, float("-inf"))

    def _anchor_logits(self, prev: torch.Tensor, curr: torch.Tensor) -> torch.Tensor:
        """Logits [..., max_choices] of an anchor decision: 0 for "no", v^T tanh(W_prev h_j + W_curr h_i)
        for "yes" (choice 1; the others are illegal anyway); ``prev`` is h_j already multiplied by W_prev,
        ``curr`` is h_i."""
        yes = torch.tanh(prev + curr @ self.anchor_curr) @ self.anchor_v
        return yes[..., None] * self.anchor_yes

    def _layer_weights(self) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """Per LSTM layer: input and recurrent weights transposed (for ``x @ w``), and the summed biases."""
        return [(getattr(self.lstm, f"weight_ih_l{k}").t(), getattr(self.lstm, f"weight_hh_l{k}").t(),
                 getattr(self.lstm, f"bias_ih_l{k}") + getattr(self.lstm, f"bias_hh_l{k}"))
                for k in range(self.lstm.num_layers)]

    @torch.no_grad()
    def sample(self, generator: torch.Generator | None = None) -> tuple[list[int], torch.Tensor]:
        """One action sequence and the log-probability of each of its decisions."""
        actions, log_probs = self.sample_batch(1, generator)
        return actions[0], log_probs[0]

    @torch.no_grad()
    def sample_batch(self, num: int, generator: torch.Generator | None = None) -> tuple[list[list[int]], torch.Tensor]:
        """``num`` action sequences drawn in one pass, and their per-decision log-probabilities [num, decisions].

        Decisions are drawn one after another (each is the next step's input), so a step costs
        mostly the overhead of its small tensor calls: the LSTM cell is written out with few of
        them, and the first layer's input projection is looked up in a table of every embedding row
        projected once (an input is always an embedding row)."""
        layers = self._layer_weights()
        w_ih, w_hh, bias = layers[0]
        table = torch.addmm(bias, self.embedding.weight, w_ih)  # [embedding rows, 4 * hidden]
        hidden = self.lstm.hidden_size
        h = [torch.zeros(num, hidden) for _ in layers]
        c = [torch.zeros(num, hidden) for _ in layers]
        illegal = torch.zeros(self.legal.shape).masked_fill_(~self.legal, float("-inf")).unbind(0)
        heads = list(zip(self.head_weight.unbind(0), self.head_bias.unbind(0), illegal))
        rows = torch.zeros(num, dtype=torch.int64)  # row 0: the start token
        actions, logps = [], []
        anchor_points = set(self.anchors) - {-1}
        prev: dict[int, torch.Tensor] = {}  # anchor point step -> its state times W_prev
        for t, ((weight, head_bias, mask), offset) in enumerate(zip(heads, (1 + self.offsets).tolist())):
            gates = table.index_select(0, rows).addmm_(h[0], w_hh)
            for k, layer in enumerate(layers):
                if k:
                    gates = torch.addmm(layer[2], h[k - 1], layer[0]).addmm_(h[k], layer[1])
                gate = gates.sigmoid()  # i, f, (g), o; g is a tanh gate, taken from gates below
                c[k] = torch.addcmul(gate[:, hidden:2 * hidden] * c[k], gate[:, :hidden],
                                     gates[:, 2 * hidden:3 * hidden].tanh())
                h[k] = gate[:, 3 * hidden:] * c[k].tanh()
            if t in anchor_points:
                prev[t] = h[-1] @ self.anchor_prev
            if self.anchors[t] >= 0:
                logits = self._anchor_logits(prev[self.anchors[t]], h[-1])
            else:
                logits = torch.addmm(head_bias, h[-1], weight)
            logp = torch.log_softmax(self._scale(logits) + mask, dim=-1)
            # torch.multinomial's own draw for one sample (argmax of p / q, q ~ Exp(1)), without its input checks
            noise = torch.empty_like(logp).exponential_(1.0, generator=generator)
            a = torch.div(logp.exp(), noise).argmax(-1)
            actions.append(a)
            logps.append(logp)
            rows = a + offset
        chosen = torch.stack(actions, 1)  # [num, decisions]
        return chosen.tolist(), torch.stack(logps, 1).gather(2, chosen[:, :, None])[:, :, 0]

    def evaluate(self, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-decision log-probabilities and entropies, both [batch, decisions], of given actions.

        The actions are known, so every step's input is too: one LSTM call runs the whole sequence
        (teacher forcing), which costs a fraction of stepping through it decision by decision."""
        batch = actions.shape[0]
        start = self.embedding.weight[:1].expand(batch, 1, -1)
        inputs = torch.cat([start, self.embedding(1 + self.offsets[:-1] + actions[:, :-1])], 1)
        out, _ = self.lstm(inputs.transpose(0, 1), self._initial_state(batch))  # [decisions, batch, hidden]
        logits = torch.einsum("tbh,thc->tbc", out, self.head_weight) + self.head_bias[:, None, :]
        if self._anchor_steps:
            anchor_logits = self._anchor_logits(out[self.anchor_source] @ self.anchor_prev, out[self.anchor_index])
            logits = logits.index_copy(0, self.anchor_index, anchor_logits)
        logp = torch.log_softmax(self._squash(logits, self.legal[:, None, :]), dim=-1)
        log_probs = logp.gather(2, actions.t()[:, :, None])[:, :, 0]
        entropy = -(logp.exp() * logp.masked_fill(~self.legal[:, None, :], 0.0)).sum(-1)
        return log_probs.t(), entropy.t()
