from __future__ import annotations

import pytest

from bridge.editor import protocol as p
from bridge.editor.presets import (
    MODEL_DEFAULT,
    PRESET_LABELS,
    STRENGTH_PRESETS,
    auto_guidance,
    auto_steps,
    auto_strength,
    describe_used,
    preset_for,
    preset_strength,
    recipe_for,
)

TURBO = p.Recipe(steps=2, guidance=0.0, strength=0.5, live_steps=1, live_strength=0.4, resolution=512)
SD15 = p.Recipe(steps=30, guidance=7.5, strength=0.6, live_steps=4, live_strength=0.5, resolution=512)
MODELS = (p.ModelInfo("turbo", "hub"), p.ModelInfo("sd15", "folder", recipe=SD15))


def test_presets_rise_low_to_high_and_each_has_a_label() -> None:
    assert list(STRENGTH_PRESETS) == ["low", "medium", "high"]
    assert 0 < STRENGTH_PRESETS["low"] < STRENGTH_PRESETS["medium"] < STRENGTH_PRESETS["high"] <= 1
    assert list(PRESET_LABELS) == [MODEL_DEFAULT, *STRENGTH_PRESETS]


def test_a_preset_and_its_strength_map_both_ways() -> None:
    assert preset_strength(MODEL_DEFAULT) is None and preset_for(None) == MODEL_DEFAULT
    for name, value in STRENGTH_PRESETS.items():
        assert preset_strength(name) == value and preset_for(value) == name
    assert preset_for(0.42) is None
    with pytest.raises(KeyError):
        preset_strength("extreme")


def test_the_loaded_models_own_recipe_wins_over_the_list() -> None:
    loaded = p.ModelState("turbo", p.ModelStatus.READY, recipe=TURBO)
    assert recipe_for("", MODELS, loaded) == TURBO and recipe_for("turbo", MODELS, loaded) == TURBO
    assert recipe_for("sd15", MODELS, loaded) == SD15
    assert recipe_for("turbo", MODELS, p.ModelState("sd15", p.ModelStatus.READY, recipe=SD15)) is None  # not loaded yet
    assert recipe_for("", MODELS, p.ModelState(None, p.ModelStatus.NO_MODEL)) is None


def test_auto_values_name_the_recipes_numbers_or_just_auto() -> None:
    assert (auto_steps(TURBO), auto_steps(TURBO, live=True), auto_steps(None)) == ("auto (2)", "auto (1)", "auto")
    assert (auto_guidance(TURBO), auto_guidance(SD15), auto_guidance(None)) == ("auto (off)", "auto (7.5)", "auto")
    assert (auto_strength(TURBO), auto_strength(TURBO, live=True), auto_strength(None)) == ("auto (0.50)", "auto (0.40)", "auto")


def test_what_a_result_ran_with_in_words() -> None:
    assert describe_used(2, 0.0, 0.5) == "2 steps, guidance off, strength 0.50"
    assert describe_used(30, 7.5, None) == "30 steps, guidance 7.5"
    assert describe_used(None, None, None) == ""
