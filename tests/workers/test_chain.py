"""A chain's identity: what keys its compiled program and what names its checkpoints."""

from __future__ import annotations

from typing import Any

import pytest

from service.language.validate import validate
from service.sampler import Role, SamplerSettings

pytestmark = pytest.mark.usefixtures("jax_ready")

BASE = SamplerSettings(warmup=100, draws=50)
OTHER_VALUE: dict[str, Any] = {
    "chains": 2, "seed": 4, "warmup": 101, "draws": 51, "thin": 2, "target_accept": 0.9, "max_tree_depth": 8,
    "dense_mass": True, "adaptation": "stan", "init": "median", "keep": ["tau"], "until": {"max_draws": 100},
    "warm_start": {"job": "j" + "0" * 24},
}
"""A value other than BASE's for every setting."""


def test_every_setting_has_another_value_here() -> None:
    assert set(OTHER_VALUE) == set(SamplerSettings.model_fields)


@pytest.mark.parametrize("name", list(OTHER_VALUE))
def test_compiled_settings_key_the_program_and_draw_settings_the_fingerprint(
        eight_schools: dict[str, Any], name: str) -> None:
    from workers.chain import job_fingerprint
    from workers.program import program_for

    model = validate(eight_schools)
    other = BASE.model_copy(update={name: OTHER_VALUE[name]})
    compiled = name in SamplerSettings.fields(Role.COMPILED)
    assert (program_for(model, other, max_block=50) is program_for(model, BASE, max_block=50)) is not compiled
    changes_draws = name in SamplerSettings.fields(Role.COMPILED, Role.DRAWS)
    assert (job_fingerprint(model, other, 1) != job_fingerprint(model, BASE, 1)) is changes_draws
    # how many chains, the seed (named on its own) and how long chains run leave a chain's sequence alone
    assert changes_draws is (name not in {"chains", "seed", "draws", "until"})


def test_max_block_keys_the_program(eight_schools: dict[str, Any]) -> None:
    from workers.program import program_for

    model = validate(eight_schools)
    assert program_for(model, BASE, max_block=50) is not program_for(model, BASE, max_block=51)
