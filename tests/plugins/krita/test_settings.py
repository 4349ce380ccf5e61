from __future__ import annotations

from img2img_bridge.settings import STRENGTH_PRESETS, Settings, Source


def test_settings_survive_their_string_form() -> None:
    settings = Settings(
        url="ws://127.0.0.1:9000/ws",
        prompt="a fox, snow",
        negative_prompt="blurry",
        strength=0.42,
        steps=12,
        fixed_seed=True,
        seed=4_000_000_000,
        model="sd-turbo",
        source=Source.BACKGROUND,
        from_canvas=True,
        live_steps=4,
        live_on_canvas=True,
    )
    stored = settings.to_strings()
    assert all(isinstance(v, str) for v in stored.values())
    assert Settings.from_strings(stored) == settings


def test_missing_or_unreadable_values_keep_their_defaults() -> None:
    restored = Settings.from_strings({"steps": "many", "source": "everything", "fixed_seed": "yes", "prompt": "cat"})
    assert restored == Settings(prompt="cat")


def test_stored_values_are_clamped_to_what_the_bridge_accepts() -> None:
    restored = Settings.from_strings({"strength": "3", "steps": "0", "seed": "-5", "live_steps": "1000"})
    assert (restored.strength, restored.steps, restored.seed, restored.live_steps) == (1.0, 1, 0, 100)


def test_random_seed_is_left_to_the_bridge() -> None:
    assert Settings(seed=7).request_seed is None
    assert Settings(seed=7, fixed_seed=True).request_seed == 7


def test_presets_order_low_medium_high() -> None:
    low, medium, high = (Settings().with_preset(name).strength for name in ("low", "medium", "high"))
    assert low < medium < high
    assert Settings().strength == STRENGTH_PRESETS["medium"]
