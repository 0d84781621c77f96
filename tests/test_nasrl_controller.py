"""The controller over NAS-RL's space: anchor decisions follow P(j -> i) = sigmoid(v^T tanh(W_prev h_j +
W_curr h_i)) (Zoph & Le 2017, sec. 3.3), PPO and REINFORCE learn over NAS-RL actions, NASNet is unchanged."""
import random
import statistics

import pytest
import torch

from cellsearch.space.genotype import SearchSpace
from cellsearch.space.nasrl import NasRLSpace
from cellsearch.strategies import build_strategy
from cellsearch.strategies.controller import Controller

SPACE = NasRLSpace(num_layers=3)  # per layer height, width, filters; anchors at steps 6, 10 and 11


def _hidden_states(controller: Controller, actions: torch.Tensor) -> torch.Tensor:
    """The top LSTM layer's state at every step [decisions, batch, hidden], stepping the LSTM by hand."""
    lstm = controller.lstm
    h = [torch.zeros(actions.shape[0], lstm.hidden_size) for _ in range(lstm.num_layers)]
    c = [torch.zeros_like(h[0]) for _ in h]
    x = controller.embedding.weight[0].expand(actions.shape[0], -1)  # the start token
    states = []
    for t in range(actions.shape[1]):
        inp = x
        for k in range(lstm.num_layers):
            cell = torch.nn.LSTMCell(lstm.hidden_size, lstm.hidden_size)
            cell.weight_ih, cell.weight_hh = getattr(lstm, f"weight_ih_l{k}"), getattr(lstm, f"weight_hh_l{k}")
            cell.bias_ih, cell.bias_hh = getattr(lstm, f"bias_ih_l{k}"), getattr(lstm, f"bias_hh_l{k}")
            h[k], c[k] = cell(inp, (h[k], c[k]))
            inp = h[k]
        states.append(h[-1])
        x = controller.embedding(1 + controller.offsets[t] + actions[:, t])  # the chosen action, fed back
    return torch.stack(states)


@pytest.mark.parametrize("name", ["ppo", "reinforce"])
def test_anchor_probabilities_match_the_papers_formula(name):
    strategy = build_strategy(name, SPACE, seed=0, tanh_constant=None)
    controller = strategy.controller
    assert [d.anchor_point for d in SPACE.layout.decisions if d.kind == "anchor"] == [3, 3, 6]
    # anchor (step, source layer's anchor point): layer 1's anchor to layer 0, layer 2's to layers 0 and 1
    anchors = [(6, 3), (10, 3), (11, 6)]
    actions, sampled = controller.sample_batch(64, strategy.generator)
    actions = torch.tensor(actions)
    with torch.no_grad():
        log_probs, _ = controller.evaluate(actions)
        states = _hidden_states(controller, actions)
    torch.testing.assert_close(log_probs, sampled, atol=1e-5, rtol=0)  # sampling and re-evaluation agree
    for step, point in anchors:
        with torch.no_grad():
            p = torch.sigmoid(torch.tanh(states[point] @ controller.anchor_prev + states[step] @ controller.anchor_curr)
                              @ controller.anchor_v)
        expected = torch.where(actions[:, step] == 1, p, 1 - p).log()
        torch.testing.assert_close(log_probs[:, step], expected, atol=1e-5, rtol=0)
    assert set(actions[:, [6, 10, 11]].flatten().tolist()) == {0, 1}


def test_anchor_gradients_reach_both_hidden_states_and_the_anchor_weights():
    controller = Controller(SPACE.layout.num_choices_list, hidden_size=8,
                            anchors=[d.anchor_point if d.kind == "anchor" else -1 for d in SPACE.layout.decisions],
                            generator=torch.Generator().manual_seed(0))
    actions = torch.tensor([[0] * SPACE.layout.size])
    log_probs, _ = controller.evaluate(actions)
    log_probs[:, 11].sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0
               for p in (controller.anchor_prev, controller.anchor_curr, controller.anchor_v))
    assert controller.head_weight.grad[11].abs().sum() == 0  # an anchor step does not use its output-layer row


def test_bad_anchor_lists_are_refused():
    with pytest.raises(ValueError, match="an anchor decision has 2 choices"):
        Controller([3, 3], anchors=[-1, 0])
    with pytest.raises(ValueError, match="not after its own"):
        Controller([3, 2], anchors=[-1, 2])


def test_nasnet_controller_has_no_anchor_weights():
    strategy = build_strategy("ppo", SearchSpace(num_blocks=2), seed=0)
    assert not any("anchor" in key for key in strategy.controller.state_dict())


# Toy targets for the anchors: "chain" (each layer reads the one before it) tells pairs apart, which the
# shared anchor weights must learn from the hidden states; "dense" (every earlier layer) is the easier one.
ANCHOR_TARGETS = {"chain": lambda d: int(d.source == d.layer - 1), "dense": lambda d: 1}


@pytest.mark.parametrize("name, lr, anchors", [("ppo", 0.01, "chain"), ("reinforce", 0.03, "dense")])
def test_policy_gradient_learns_a_toy_reward_over_nasrl_actions(name, lr, anchors):
    space = NasRLSpace(num_layers=4, filters=(24, 64))
    sizes = space.encode(space.sample(random.Random(7)))  # a target for every size decision
    target = [ANCHOR_TARGETS[anchors](d) if d.kind == "anchor" else a for d, a in zip(space.layout.decisions, sizes)]
    anchor_positions = space.layout.positions("anchor")
    strategy = build_strategy(name, space, seed=0, lr=lr, update_every=10, hidden_size=32, reward_shaping="accuracy")
    rewards, anchor_matches = [], []
    for _ in range(300):
        proposal = strategy.ask()
        actions = space.encode(proposal.genotype)
        rewards.append(statistics.fmean(a == b for a, b in zip(actions, target)))
        anchor_matches.append(statistics.fmean(actions[i] == target[i] for i in anchor_positions))
        strategy.tell(proposal.trial_id, rewards[-1])
    assert statistics.fmean(rewards[:20]) < 0.55 and statistics.fmean(anchor_matches[:20]) < 0.65  # near uniform
    assert statistics.fmean(rewards[-30:]) > 0.8
    assert statistics.fmean(anchor_matches[-30:]) > 0.8


def test_search_over_nasrl_takes_outside_trials_and_resumes_exactly():
    space = NasRLSpace(num_layers=3, strides=(1, 2))
    strategy = build_strategy("reinforce", space, seed=1, update_every=4, hidden_size=16)
    rng = random.Random(0)
    for k in range(6):
        proposal = strategy.ask()
        strategy.tell(proposal.trial_id, rng.random())
    strategy.add_trial(space.sample(rng), 0.5)
    state = strategy.state_dict()
    copy = build_strategy("reinforce", space, seed=1, update_every=4, hidden_size=16)
    copy.load_state_dict(state)
    for _ in range(5):
        a, b = strategy.ask(), copy.ask()
        assert a.genotype == b.genotype
        strategy.tell(a.trial_id, 0.3)
        copy.tell(b.trial_id, 0.3)
    with pytest.raises(ValueError, match="does not search space=nasrl"):
        build_strategy("evolution", space)
