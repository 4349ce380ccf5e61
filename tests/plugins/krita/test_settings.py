from __future__ import annotations

from img2img_bridge.settings import Settings, Source

from bridge.editor.presets import MODEL_DEFAULT, STRENGTH_PRESETS


def test_settings_survive_their_string_form() -> None:
    settings = Settings(
        url="ws://127.0.0.1:9000/ws",
        prompt="a fox, snow",
        negative_prompt="blurry",
        strength=0.42,
        steps=12,
        guidance=0.0,
        fixed_seed=True,
        seed=4_000_000_000,
        model="sd-turbo",
        source=Source.BACKGROUND,
        from_canvas=True,
        live_steps=4,
        live_on_canvas=True,
        match_seams=False,
    )
    stored = settings.to_strings()
    assert all(isinstance(v, str) for v in stored.values())
    assert Settings.from_strings(stored) == settings


def test_missing_or_unreadable_values_keep_their_defaults() -> None:
    restored = Settings.from_strings({"steps": "many", "source": "everything", "fixed_seed": "yes", "prompt": "cat"})
    assert restored == Settings(prompt="cat")


def test_stored_values_are_clamped_to_what_the_bridge_accepts() -> None:
    stored = {"format": "2", "strength": "3", "steps": "0", "seed": "-5", "live_steps": "1000", "guidance": "99"}
    restored = Settings.from_strings(stored)
    assert (restored.strength, restored.steps, restored.seed, restored.live_steps, restored.guidance) == (1.0, 1, 0, 100, 30.0)


def test_the_model_specific_settings_default_to_auto() -> None:
    settings = Settings()
    assert (settings.strength, settings.steps, settings.guidance, settings.live_steps) == (None, None, None, None)


def test_auto_is_remembered_as_auto_not_as_a_number() -> None:
    stored = Settings(steps=None, live_steps=6).to_strings()
    assert (stored["steps"], stored["guidance"], stored["strength"], stored["live_steps"]) == ("auto", "auto", "auto", "6")
    restored = Settings.from_strings(stored)
    assert (restored.steps, restored.guidance, restored.strength, restored.live_steps) == (None, None, None, 6)


def test_numbers_stored_before_recipes_go_back_to_auto() -> None:
    # earlier versions wrote every number whether or not the artist chose it
    restored = Settings.from_strings({"strength": "0.55", "steps": "20", "live_steps": "8", "prompt": "cat"})
    assert restored == Settings(prompt="cat")


def test_random_seed_is_left_to_the_bridge() -> None:
    assert Settings(seed=7).request_seed is None
    assert Settings(seed=7, fixed_seed=True).request_seed == 7


def test_presets_are_the_shared_ones_low_to_high_and_the_model_default_is_auto() -> None:
    low, medium, high = (Settings().with_preset(name).strength for name in ("low", "medium", "high"))
    assert (low, medium, high) == (STRENGTH_PRESETS["low"], STRENGTH_PRESETS["medium"], STRENGTH_PRESETS["high"])
    assert low is not None and medium is not None and high is not None and low < medium < high
    assert Settings(strength=0.3).with_preset(MODEL_DEFAULT).strength is None
