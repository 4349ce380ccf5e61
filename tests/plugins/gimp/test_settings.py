from __future__ import annotations

import random
from typing import Any

import pytest
from img2img_gimp.errors import PluginError
from img2img_gimp.settings import (
    ARGUMENTS,
    AUTO_GUIDANCE,
    AUTO_STEPS,
    AUTO_STRENGTH,
    EXACT,
    MAX_SEED,
    ChoiceArg,
    JobSettings,
    linked_strength,
    opening_strength,
    preset_for,
    resolve_strength,
)

from bridge.editor import presets
from bridge.editor.client import DEFAULT_URL
from bridge.editor.presets import MODEL_DEFAULT, STRENGTH_PRESETS


def defaults(**changes: Any) -> dict[str, Any]:
    values: dict[str, Any] = {arg.name: arg.default for arg in ARGUMENTS}
    values.update({name.replace("_", "-"): value for name, value in changes.items()})
    return values


def settings(**changes: Any) -> JobSettings:
    return JobSettings.from_arguments(defaults(**changes).__getitem__)


def test_argument_names_are_unique_and_gimp_style() -> None:
    names = [arg.name for arg in ARGUMENTS]
    assert len(names) == len(set(names))
    assert all(name == name.lower() and "_" not in name and " " not in name for name in names)


def test_defaults_give_a_random_seed_the_models_recipe_and_the_default_url() -> None:
    result = settings()
    assert result.seed is None
    assert (result.strength, result.steps, result.guidance) == (None, None, None)
    assert result.url == DEFAULT_URL
    assert result.model == ""


def test_scripts_say_auto_with_zero_steps_negative_guidance_and_zero_strength() -> None:
    assert AUTO_STEPS == 0 and AUTO_GUIDANCE < 0 and AUTO_STRENGTH == 0
    result = settings(steps=0, guidance=-3.0, strength=0.0, strength_preset=EXACT)
    assert (result.strength, result.steps, result.guidance) == (None, None, None)
    assert settings(strength_preset=MODEL_DEFAULT, strength=0.9).strength is None


def test_values_a_script_or_the_artist_set_are_kept() -> None:
    result = settings(steps=12, guidance=0.0, strength=0.42)
    assert (result.strength, result.steps, result.guidance) == (0.42, 12, 0.0)  # guidance 0: off, not auto


def test_steps_and_guidance_out_of_range_are_refused() -> None:
    with pytest.raises(PluginError, match="Steps is -1"):
        settings(steps=-1)
    with pytest.raises(PluginError, match="Guidance is 31"):
        settings(guidance=31.0)


def test_every_choice_default_is_one_of_its_choices() -> None:
    for arg in ARGUMENTS:
        if isinstance(arg, ChoiceArg):
            assert arg.default in [value for value, _ in arg.choices]


def test_a_preset_overrides_the_exact_strength() -> None:
    assert settings(strength_preset="low", strength=0.9).strength == STRENGTH_PRESETS["low"]
    assert settings(strength_preset="high", strength=0.1).strength == STRENGTH_PRESETS["high"]


def test_the_exact_preset_uses_the_strength_value() -> None:
    assert settings(strength_preset=EXACT, strength=0.42).strength == 0.42


def test_the_presets_are_the_shared_ones_and_offered_with_the_model_default() -> None:
    assert STRENGTH_PRESETS is presets.STRENGTH_PRESETS
    (preset,) = (arg for arg in ARGUMENTS if arg.name == "strength-preset")
    assert isinstance(preset, ChoiceArg)
    assert [value for value, _ in preset.choices] == [EXACT, MODEL_DEFAULT, "low", "medium", "high"]
    assert dict(preset.choices)["medium"] == "Medium (0.55)"


def test_unknown_preset_is_refused_with_the_choices() -> None:
    with pytest.raises(PluginError, match="exact, model, low, medium, high"):
        resolve_strength("extreme", 0.5)


@pytest.mark.parametrize("strength", [-0.1, 1.5])  # 0 is auto
def test_out_of_range_strength_is_refused(strength: float) -> None:
    with pytest.raises(PluginError, match="Strength"):
        resolve_strength(EXACT, strength)


def test_preset_for_finds_the_matching_preset_or_exact() -> None:
    assert preset_for(0.3) == "low"
    assert preset_for(0.8) == "high"
    assert preset_for(0.0) == MODEL_DEFAULT
    assert preset_for(0.42) == EXACT


def test_the_dialog_opens_showing_the_strength_that_would_be_sent() -> None:
    # last values from a script: a preset with the strength argument left at 0
    assert opening_strength("medium", AUTO_STRENGTH) == ("medium", STRENGTH_PRESETS["medium"])
    assert opening_strength(MODEL_DEFAULT, 0.7) == (MODEL_DEFAULT, AUTO_STRENGTH)
    # scripts' default preset: the strength picks the preset it matches
    assert opening_strength(EXACT, 0.3) == ("low", 0.3)
    assert opening_strength(EXACT, AUTO_STRENGTH) == (MODEL_DEFAULT, AUTO_STRENGTH)
    assert opening_strength(EXACT, 0.42) == (EXACT, 0.42)
    for preset in (MODEL_DEFAULT, *STRENGTH_PRESETS):
        shown, strength = opening_strength(preset, 0.42)
        assert resolve_strength(shown, strength) == resolve_strength(preset, 0.42)  # what is shown is what is sent


def test_a_fixed_seed_is_kept() -> None:
    assert settings(random_seed=False, seed=1234).seed == 1234


def test_with_seed_picks_a_reportable_seed_only_when_random() -> None:
    rng = random.Random(7)
    picked = settings().with_seed(rng).seed
    assert picked is not None and 0 <= picked <= MAX_SEED
    assert settings(random_seed=False, seed=5).with_seed(rng).seed == 5


def test_prompts_and_model_are_stripped() -> None:
    result = settings(prompt="  a red fox \n", negative_prompt=" blur ", model=" tiny ")
    assert (result.prompt, result.negative_prompt, result.model) == ("a red fox", "blur", "tiny")


def test_url_is_normalized_and_empty_means_default() -> None:
    assert settings(bridge_url="localhost:9000").url == "ws://localhost:9000/ws"
    assert settings(bridge_url="   ").url == DEFAULT_URL


def test_a_bad_url_is_a_plugin_error_naming_the_field() -> None:
    with pytest.raises(PluginError, match="Bridge URL"):
        settings(bridge_url="ftp://example")


def test_a_non_number_is_refused() -> None:
    with pytest.raises(PluginError, match="steps"):
        settings(steps="many")


def test_picking_a_preset_moves_the_strength() -> None:
    assert linked_strength("strength-preset", "high", 0.42) == ("high", STRENGTH_PRESETS["high"])


def test_picking_the_model_default_sets_strength_to_auto() -> None:
    assert linked_strength("strength-preset", MODEL_DEFAULT, 0.42) == (MODEL_DEFAULT, AUTO_STRENGTH)
    assert linked_strength("strength", "high", AUTO_STRENGTH) == (MODEL_DEFAULT, AUTO_STRENGTH)


def test_picking_exact_keeps_the_strength() -> None:
    assert linked_strength("strength-preset", EXACT, 0.42) == (EXACT, 0.42)


def test_moving_the_strength_shows_the_matching_preset_or_exact() -> None:
    assert linked_strength("strength", "high", 0.42) == (EXACT, 0.42)
    assert linked_strength("strength", EXACT, STRENGTH_PRESETS["low"]) == ("low", STRENGTH_PRESETS["low"])


def test_seam_matching_is_on_unless_unticked() -> None:
    assert settings().match_seams is True
    assert settings(match_seams=False).match_seams is False


def test_variations_are_one_by_default_and_checked() -> None:
    assert settings().count == 1
    assert settings(count=3).count == 3
    for count in (0, 9):
        with pytest.raises(PluginError, match="Variations"):
            settings(count=count)
