"""HAQ-LSQ: the env can evaluate policies with the finetune's learned-step quantizers."""

import gymnasium as gym
import numpy as np
import pytest

from haq_gym.quant.lsq import LearnedStepQuantizer


@pytest.mark.parametrize("family", ["lsq", "pot"])
def test_env_evaluates_with_lsq_quantizers(tiny_env_kwargs, family):
    env = gym.make("HAQ-MobileNetV2-v0", quantizer=family, latency_budget=0.6, **tiny_env_kwargs)
    setup = env.unwrapped.setup
    assert all(isinstance(layer.weight_quantizer, LearnedStepQuantizer) for layer in setup.layers)
    env.reset(seed=0)
    terminated, info = False, {}
    while not terminated:
        _, reward, terminated, _, info = env.step(np.array([0.3], dtype=np.float32))
    assert 0.0 <= info["accuracy"] <= 100.0 and np.isfinite(reward)
    # every quantized tensor got its LSQ initial step for the episode's bits
    used = [q for layer in setup.layers for q in (layer.weight_quantizer, layer.input_quantizer) if q.bits is not None]
    assert used and all(q.is_initialized for q in used)
    if family == "pot":
        assert all(
            q.grid(layer.weight).power_of_two
            for layer in setup.layers
            for q in [layer.weight_quantizer]
            if q.bits is not None
        )
    env.close()


def test_unknown_quantizer_family_is_rejected(tiny_env_kwargs):
    with pytest.raises(
        ValueError, match="unknown quantizer family 'lsq2'; expected one of linear, haq, lsq, lsq\\+, pot, kmeans"
    ):
        gym.make("HAQ-MobileNetV2-v0", quantizer="lsq2", **tiny_env_kwargs)
