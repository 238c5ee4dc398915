"""The original HAQ code's arithmetic on small fixed inputs, computed by hand from the formulas of
/work/shared/reference/haq.md (sections 1.4, 1.5, 1.7, 3, 4), never from the original code.

Table used throughout: ``T[i, w-1, a-1] = 100 (i+1) + 10 w + a`` for 4 layers, so every entry can
be read off by eye.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from agents.haq_ddpg import HAQDDPG, HAQDDPGConfig
from agents.haq_ddpg.ddpg import ReplayBuffer, replay_capacity
from haq_gym.cost import Budget, CostModel, LayerInfo, enforce_budget
from haq_gym.quant.haq_linear import HAQActivationQuantizer, HAQWeightQuantizer, haq_activation_clip, kl_j_threshold
from haq_gym.rewards import get_reward

L = 4


def hand_table() -> np.ndarray:
    table = np.zeros((L, 8, 8))
    for i in range(L):
        for w in range(1, 9):
            for a in range(1, 9):
                table[i, w - 1, a - 1] = 100 * (i + 1) + 10 * w + a
    return table


def hand_layers() -> list[LayerInfo]:
    return [LayerInfo(i, f"l{i}", "conv", 4, 4, 3, 1, 1, 144, 8, 8, 8, 8, 9216) for i in range(L)]


def cost_model(unquantized_cost: str = "haq") -> CostModel:
    return CostModel(hand_layers(), hand_table(), float_bit=8, unquantized_cost=unquantized_cost)


ORG_COST = (100 + 88) + (200 + 88) + (300 + 88) + (400 + 88)  # sum_i T[i, 7, 7] = 1352
HAQ_PINS = [[8, -1], [None, None], [None, None], [8, 8]]
FREE_ALL = [(True, True)] * L


def test_cost_ratio_as_haq_computes_it() -> None:
    policy = [[8, -1], [3, 5], [6, 2], [8, 8]]
    # HAQ: a_bit = -1 indexes column -2 -> layer 0 costs T[0, 7, 6] = 100 + 80 + 7
    cur = (100 + 80 + 7) + (200 + 30 + 5) + (300 + 60 + 2) + (400 + 80 + 8)  # 1272
    haq = cost_model("haq").costs(policy)
    assert haq.latency == cur
    assert haq.latency_ratio == pytest.approx(cur / ORG_COST, abs=1e-12)
    # haq-gym's default costs the unquantized input at float_bit (column 7): one unit more here
    assert cost_model("float_bit").costs(policy).latency == cur + 1


def test_wall_with_pins_inside_as_haq_runs_it() -> None:
    agent = [[5, 6], [6, 6], [7, 7], [4, 5]]  # raw cost 156 + 266 + 377 + 445 = 1244
    cm = cost_model()
    # Within budget: the wall does not run, so the agent's own first/last bits survive (no pinning).
    assert enforce_budget("haq", agent, FREE_ALL, cm, Budget(latency=1300 / ORG_COST), 2, pins=HAQ_PINS) == agent
    # Target 1240 (raw 1244): by hand, round 1's first decrement writes the pins (cost 1318, above
    # the raw policy), then lowers l2 a,w and l1 a,w (1296); the pinned layers' decrements are undone
    # by the pins each time; round 2 -> 1274, round 3 -> 1252; round 4: l2 a (1251), l2 w (1241),
    # l1 a (1240 <= 1240) ends it.
    out = enforce_budget("haq", agent, FREE_ALL, cm, Budget(latency=1240 / ORG_COST), 2, pins=HAQ_PINS)
    assert out == [[8, -1], [3, 2], [3, 3], [8, 8]]
    assert cm.costs(out).latency == 187 + 232 + 333 + 488 == 1240


def test_wall_without_pins_lowers_only_free_decisions() -> None:
    pinned_in = [[8, -1], [6, 6], [7, 7], [8, 8]]
    free = [(False, False), (True, True), (True, True), (False, False)]
    out = enforce_budget("haq", pinned_in, free, cost_model(), Budget(latency=1240 / ORG_COST), 2)
    # Same walk as above minus the wasted decrements on layers 0 and 3.
    assert out == [[8, -1], [3, 2], [3, 3], [8, 8]]


def test_reward_and_its_inverse_cost_variant() -> None:
    cm = cost_model()
    costs = cm.costs([[8, -1], [3, 5], [6, 2], [8, 8]])
    assert get_reward("haq")(71.23, 72.05, costs, cm) == pytest.approx(0.1 * (71.23 - 72.05), abs=1e-12)
    assert get_reward("haq_inverse_cost")(71.23, 72.05, costs, cm) == pytest.approx(
        0.1 * (71.23 - 72.05) + ORG_COST / 1272, abs=1e-12
    )


def test_replay_capacity_counts_layers_as_haq_does() -> None:
    assert replay_capacity(HAQDDPGConfig(replay_unit="layer"), episode_length=106, n_layers=53) == 128 * 53 == 6784
    assert replay_capacity(HAQDDPGConfig(), episode_length=102, n_layers=53) == 128 * 102
    with pytest.raises(ValueError, match="n_layers"):
        replay_capacity(HAQDDPGConfig(replay_unit="layer"), episode_length=102, n_layers=None)


# ----- one DDPG update, by hand in float64 NumPy


def _np(layer: torch.nn.Linear) -> tuple[np.ndarray, np.ndarray]:
    return layer.weight.detach().double().numpy().copy(), layer.bias.detach().double().numpy().copy()


def _relu(x: np.ndarray) -> np.ndarray:
    return np.maximum(x, 0.0)


def _actor(p: dict, s: np.ndarray) -> np.ndarray:
    h1 = _relu(s @ p["fc1"][0].T + p["fc1"][1])
    h2 = _relu(h1 @ p["fc2"][0].T + p["fc2"][1])
    return 1.0 / (1.0 + np.exp(-(h2 @ p["fc3"][0].T + p["fc3"][1])))


def _critic(p: dict, s: np.ndarray, a: np.ndarray) -> tuple[np.ndarray, tuple]:
    z1 = s @ p["fc11"][0].T + p["fc11"][1] + a @ p["fc12"][0].T + p["fc12"][1]
    h1 = _relu(z1)
    z2 = h1 @ p["fc2"][0].T + p["fc2"][1]
    h2 = _relu(z2)
    return h2 @ p["fc3"][0].T + p["fc3"][1], (z1, h1, z2, h2)


def _critic_grads(p: dict, s: np.ndarray, a: np.ndarray, y: np.ndarray) -> tuple[float, dict]:
    q, (z1, h1, z2, h2) = _critic(p, s, a)
    n = len(s)
    loss = float(np.mean((q - y) ** 2))
    dq = 2.0 * (q - y) / n
    g = {"fc3": (dq.T @ h2, dq.sum(0))}
    dz2 = (dq @ p["fc3"][0]) * (z2 > 0)
    g["fc2"] = (dz2.T @ h1, dz2.sum(0))
    dz1 = (dz2 @ p["fc2"][0]) * (z1 > 0)
    g["fc11"] = (dz1.T @ s, dz1.sum(0))
    g["fc12"] = (dz1.T @ a, dz1.sum(0))
    return loss, g


def test_one_ddpg_update_matches_hand_computation() -> None:
    obs_dim, batch = 3, 6
    cfg = HAQDDPGConfig(hidden1=5, hidden2=4, batch_size=batch, lr_actor=1e-4, lr_critic=1e-3, tau=0.01, discount=1.0)
    box = __import__("gymnasium").spaces.Box
    agent = HAQDDPG(box(0.0, 1.0, (obs_dim,), np.float32), box(0.0, 1.0, (1,), np.float32), cfg, seed=0)
    rng = np.random.default_rng(7)
    s = rng.uniform(0, 1, (batch, obs_dim)).astype(np.float32)
    a = rng.uniform(0, 1, (batch, 1)).astype(np.float32)
    s2 = rng.uniform(0, 1, (batch, obs_dim)).astype(np.float32)
    r = np.float32(-0.4)  # every transition of an episode carries its final reward
    done = np.array([0, 0, 0, 0, 0, 1], dtype=np.float32)
    agent.memory = ReplayBuffer(batch, obs_dim, 1)
    for k in range(batch):
        agent.memory.append(s[k], a[k], float(r), s2[k], bool(done[k]))

    actor = {n: _np(getattr(agent.actor, n)) for n in ("fc1", "fc2", "fc3")}
    critic = {n: _np(getattr(agent.critic, n)) for n in ("fc11", "fc12", "fc2", "fc3")}
    S, A, S2 = s.astype(np.float64), a.astype(np.float64), s2.astype(np.float64)
    R = np.full((batch, 1), float(r))
    baseline = R.mean()  # HAQ's first baseline is the batch mean
    # targets = the online nets' copies at this point; y = (r - B) + gamma (1 - done) Q'(s', mu'(s'))
    next_q, _ = _critic(critic, S2, _actor(actor, S2))
    y = (R - baseline) + 1.0 * (1.0 - done[:, None]) * next_q
    critic_loss, grads = _critic_grads(critic, S, A, y)
    # Adam's first step: m_hat = g, v_hat = g^2 -> p -= lr * g / (|g| + eps)
    new_critic = {
        n: tuple(w - 1e-3 * g / (np.abs(g) + 1e-8) for w, g in zip(critic[n], grads[n], strict=True)) for n in critic
    }
    q_actor, _ = _critic(new_critic, S, _actor(actor, S))
    actor_loss = float(-np.mean(q_actor))  # the actor loss uses the critic after its step

    got_critic, got_actor = (float(v) for v in agent._update())  # the batch is the whole buffer (in some order)
    assert round(got_critic, 6) == round(critic_loss, 6)
    assert round(got_actor, 6) == round(actor_loss, 6)
    assert agent.baseline == pytest.approx(baseline, abs=1e-7)
    for n in critic:  # soft target update: 0.99 old + 0.01 new
        want = 0.99 * critic[n][0] + 0.01 * new_critic[n][0]
        np.testing.assert_allclose(getattr(agent.critic_target, n).weight.detach().double().numpy(), want, atol=1e-6)


# ----- HAQ's linear quantizer


def test_kl_j_threshold_cuts_a_long_tail_and_lies_on_a_bin_centre() -> None:
    gen = np.random.default_rng(0)
    data = np.concatenate([gen.normal(0, 1, 40_000), [40.0]])  # one outlier far out
    t = kl_j_threshold(data, 3)
    width = 40.0 / math.ceil(math.sqrt(len(data)))
    i = t / width - 0.5
    assert abs(i - round(i)) < 1e-9 and 2**2 + 1 <= round(i) < math.ceil(math.sqrt(len(data)))
    assert t < 10.0  # the outlier is clipped away at 3 bits


def _kl_j_by_hand(data: np.ndarray, bits: int) -> float:
    """The reference's loop, one candidate at a time."""
    x = np.abs(data)
    hist, edges = np.histogram(x, bins="sqrt", range=(0.0, x.max()))
    cdf = np.cumsum(hist / hist.sum())
    levels = 2 ** (bits - 1)
    best_i, best = None, np.inf
    for i in range(levels + 1, len(hist)):
        p = cdf[:i]
        grid = np.arange(i, dtype=float)
        pts = np.linspace(0.0, i - 1, levels)
        q = np.interp(grid, pts, np.interp(pts, grid, p))
        ok = (p > 0) & (q > 0)
        div = np.sum((p[ok] - q[ok]) * np.log2(p[ok] / q[ok]))
        if div < best:
            best_i, best = i, div
    return (best_i + 0.5) * (edges[1] - edges[0])


@pytest.mark.parametrize("bits", [2, 3, 4])
def test_kl_j_threshold_equals_the_one_candidate_at_a_time_loop(bits: int) -> None:
    data = np.random.default_rng(bits).laplace(0, 1, 5000)
    assert kl_j_threshold(data, bits) == pytest.approx(_kl_j_by_hand(data, bits), rel=1e-12)


def test_haq_clip_rules() -> None:
    w = torch.tensor([-0.5, 0.1, 0.2, 3.0])
    q = HAQWeightQuantizer()
    q.set_bits(6)  # >= 5 bits: t = max|W|, s = t / (2^5 - 1)
    s = 3.0 / 31
    expected = torch.clamp(w, -3.0, 3.0).div(s).round().mul(s)
    torch.testing.assert_close(q(w), expected)
    sample = torch.tensor([0.0, 1.0, 2.0, 10.0])
    assert haq_activation_clip(sample, 10.0, 8) == 6.0  # capped at 6.0
    assert haq_activation_clip(sample, 2.0, 8) == 2.0  # min(6, max|x|)


def test_haq_weight_ste_is_unmasked_and_activation_range_learns() -> None:
    q = HAQWeightQuantizer().train()
    q.set_bits(2)
    w = torch.tensor([0.05, -2.0, 0.3], requires_grad=True)
    q(w).sum().backward()
    torch.testing.assert_close(w.grad, torch.ones(3))  # clipped entries get gradient too
    act = HAQActivationQuantizer().train()
    act.observing = True
    act(torch.tensor([0.0, 0.5, 1.0, 2.0]))
    act.observing = False
    act.set_bits(8)  # calibrated: alpha = min(6, max|x|) = 2.0
    assert float(act.activation_range.detach()) == 2.0
    x = torch.tensor([1.0, 3.0, 5.0])
    act(x).sum().backward()  # d/d alpha of 0.5 (|x| - |x - alpha| + alpha) is 1 above alpha, 0 below
    assert float(act.activation_range.grad) == 2.0
