"""preset="haq" and its keywords on the env: what it turns on, and bad input."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import haq_gym  # noqa: F401
from agents.registry import run_haq_ddpg
from haq_gym.presets import HAQ_ENV_PRESET, PresetConflict, agent_preset
from haq_gym.quant.families import quantizer_family

ENV_ID = "HAQ-MobileNetV2-v0"


@pytest.fixture(scope="module")
def haq_env(tiny_env_kwargs):
    kw = {**tiny_env_kwargs, "train_size": 32, "calibration_size": 16, "finetune_batch_size": 16}
    return gym.make(ENV_ID, preset="haq", **kw).unwrapped


def play(env, bits: int) -> dict:
    env.reset(seed=0)
    done, info = False, {}
    while not done:
        _, _, done, _, info = env.step(env.bits_to_action(bits))
    return info


def test_preset_turns_every_haq_behaviour_on(haq_env) -> None:
    env = haq_env
    s = env.setup
    assert len(env.decisions) == 2 * env.n_layers  # HAQ asks all 106 decisions for MobileNetV2
    assert s.cost_model.unquantized_bit == 7  # a_bit=-1 costed at column -2
    assert quantizer_family(s.layers) == "haq"
    ev = s.evaluator
    assert (ev.accuracy.source, ev.accuracy.calibration) == ("finetune_running", "per_episode")
    assert ev.finetune.steps == 32 // 16  # one epoch of the search-train images
    assert env.enforcement == "haq" and env.wall_pins is not None
    last = s.layer_infos[-1]
    assert last.kind == "linear" and env.static[-1, 6] == 1.0  # the FC's feature-map feature is in_features


def test_preset_pins_only_when_the_wall_runs(haq_env) -> None:
    env = haq_env
    cheap = play(env, env.min_bit)  # meets the budget: the agent's own first/last bits are kept
    assert cheap["budget_met"] and cheap["policy"][0] == [2, 2] and cheap["policy"][-1] == [2, 2]
    assert cheap["policy"] == cheap["agent_policy"]
    costly = play(env, env.max_bit)  # breaks it: the wall runs and writes HAQ's pins
    assert costly["budget_met"] and costly["policy"][0] == [8, -1] and costly["policy"][-1] == [8, 8]
    for info in (cheap, costly):
        assert np.isfinite(info["reward"]) and 0.0 <= info["accuracy"] <= 100.0


def test_agent_preset_sets_haq_replay_and_refuses_a_contradiction() -> None:
    assert agent_preset("haq", "haq-ddpg", {"rmsize": 128}) == {"rmsize": 128, "replay_unit": "layer"}
    assert agent_preset("haq", "sac", {"gamma": 1.0}) == {"gamma": 1.0}
    assert agent_preset(None, "haq-ddpg", {}) == {}
    with pytest.raises(PresetConflict, match=r"replay_unit='layer'.*replay_unit='episode'"):
        agent_preset("haq", "haq-ddpg", {"replay_unit": "episode"})


def test_haq_ddpg_runner_uses_haq_replay_size_under_the_preset(haq_env, tmp_path) -> None:
    import torch

    run_haq_ddpg(
        haq_env,
        episodes=1,
        seed=0,
        hyperparams={"warmup": 0, "batch_size": 8, "rmsize": 3},
        run_dir=tmp_path,
        progress=False,
    )
    memory = torch.load(tmp_path / "agent.pt", weights_only=True)["memory"]
    assert memory["capacity"] == 3 * haq_env.n_layers


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"preset": "haq2"}, "unknown preset 'haq2'; expected one of haq"),
        ({"preset": "haq", "quantizer": "lsq"}, "preset='haq' sets quantizer='haq', but quantizer='lsq' was given"),
        ({"preset": "haq", "pin_first_last": False}, "pin_first_last='wall'"),
        ({"preset": "haq", "reward_accuracy": "val"}, None),  # the default value: the preset wins, no error
        ({"float_bit": 9}, "float_bit must be an integer in 2..8"),
        ({"float_bit": 1}, "float_bit must be an integer in 2..8"),
        ({"float_bit": 7.5}, "float_bit must be an integer in 2..8"),
        ({"unquantized_cost": "zero"}, "unknown unquantized_cost 'zero'"),
        ({"pin_first_last": "sometimes"}, "pin_first_last must be True, False or 'wall'"),
        ({"fc_feature_map": "area"}, "unknown fc_feature_map"),
    ],
)
def test_bad_keywords_are_refused_before_anything_is_built(kwargs, message, monkeypatch) -> None:
    import haq_gym.problem.policy_problem as module

    def no_build(**_):
        raise AssertionError("the model was built")

    monkeypatch.setattr(module, "build_search_setup", no_build)
    if message is None:
        with pytest.raises(AssertionError, match="the model was built"):
            gym.make(ENV_ID, **kwargs)
        return
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        gym.make(ENV_ID, **kwargs)


def test_preset_on_a_v1_id_is_refused() -> None:
    with pytest.raises(PresetConflict, match="quantizer='lsq'"):
        gym.make("HAQ-MobileNetV2-v1", preset="haq")


def test_a_setup_built_otherwise_is_refused(tiny_env_kwargs, haq_env) -> None:
    with pytest.raises(ValueError, match="prebuilt setup measures unquantized_cost='haq'"):
        gym.make(ENV_ID, setup=haq_env.setup)


def test_preset_keys_are_env_keywords() -> None:
    from envs.linear_quantize_env import LinearQuantizeEnv
    from haq_gym.presets import keyword_defaults

    assert set(HAQ_ENV_PRESET) <= set(keyword_defaults(LinearQuantizeEnv.__init__))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (["preset=haq2"], "error: unknown preset 'haq2'; expected one of haq (or None)\n"),
        (["preset=haq", "quantizer=lsq"], "error: preset='haq' sets quantizer='haq', but quantizer='lsq' was given"),
    ],
)
def test_command_line_refuses_bad_presets_in_one_line(kwargs, message, tmp_path, capsys) -> None:
    from train_agent import main

    out = tmp_path / "run"
    assert main(["--env-kwargs", *kwargs, "--episodes", "1", "--output", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(message) and err.count("\n") == 1
    assert not out.exists()
