"""Results' settings as metadata text, variation names, and the history's bounds (editor-side: stdlib only)."""

from __future__ import annotations

import pytest

from bridge.editor import protocol as p
from bridge.editor.history import (
    History,
    HistoryEntry,
    ResultSettings,
    SettingsTextError,
    annotation_with,
    result_settings,
    settings_in_annotation,
    used_by,
    variation_group_name,
)
from bridge.editor.regions import Rect

SETTINGS = ResultSettings("a red fox", "blurry", 0.55, 4, 7.5, 42, "tiny")


def test_settings_round_trip_through_their_text() -> None:
    assert ResultSettings.from_text(SETTINGS.to_text()) == SETTINGS
    assert ResultSettings.from_text(SETTINGS.to_text().encode()) == SETTINGS
    auto = ResultSettings("", "", None, None, None, 0, "")
    assert ResultSettings.from_text(auto.to_text()) == auto


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("not json", "readable JSON"),
        ('{"version": 99}', "version 1"),
        ('["a"]', "version 1"),
        (SETTINGS.to_text().replace('"seed":42', '"seed":"42"'), "'seed'"),
        (SETTINGS.to_text().replace('"steps":4', '"steps":true'), "'steps'"),
        (SETTINGS.to_text().replace('"prompt":"a red fox"', '"prompt":null'), "'prompt'"),
    ],
)
def test_text_that_is_not_settings_is_refused_with_a_reason(text: str, says: str) -> None:
    with pytest.raises(SettingsTextError, match=says):
        ResultSettings.from_text(text)


def test_settings_say_what_the_bridge_used_before_what_was_asked() -> None:
    asked = (None, 8, None)
    result = p.Result("j", 1, 2, p.Image(1, 1, bytes(4)), 0, 0, 6, steps=2, guidance=0.0, strength=0.5)
    ran = result_settings("fox", "blur", 6, "sd-turbo", asked=asked, used=used_by(result))
    assert ran == ResultSettings("fox", "blur", 0.5, 2, 0.0, 6, "sd-turbo")
    old_bridge = p.Result("j", 0, 1, p.Image(1, 1, bytes(4)), 0, 0, 5)
    assert result_settings("fox", "blur", 5, "m", asked=asked, used=used_by(old_bridge)) == ResultSettings(
        "fox", "blur", None, 8, None, 5, "m"
    )


def test_describe_is_one_line_for_a_tooltip() -> None:
    assert SETTINGS.describe() == "seed 42, 4 steps, strength 0.55, guidance 7.5, tiny"
    assert ResultSettings("", "", None, None, 1.0, 3, "").describe() == "seed 3, guidance off"


def test_group_names_follow_the_prompt() -> None:
    assert variation_group_name("a  red\nfox", 3) == "a red fox (3 variations)"
    assert variation_group_name("", 2) == "img2img (2 variations)"
    long = variation_group_name("word " * 30, 4)
    assert long.endswith("\u2026 (4 variations)") and len(long) < 60


def entry(document: object, job: str, index: int, size: int = 100) -> HistoryEntry:
    settings = ResultSettings("p", "", None, None, None, index, "m")
    return HistoryEntry(document, job, index, 4, settings, Rect(0, 0, 5, 5), bytes(size), bytes(16), (2, 2))


def test_history_groups_by_job_newest_first_per_document() -> None:
    history = History()
    for job in ("a", "b"):
        for index in (1, 0):
            history.add(entry("doc1", job, index))
    history.add(entry("doc2", "c", 0))
    assert [[e.key for e in job] for job in history.jobs("doc1")] == [[("b", 0), ("b", 1)], [("a", 0), ("a", 1)]]
    assert [[e.key for e in job] for job in history.jobs("doc2")] == [[("c", 0)]]
    assert history.get("a", 1) is not None and history.get("a", 7) is None


def test_history_drops_the_oldest_entries_beyond_its_bounds() -> None:
    by_count = History(max_entries=3)
    for index in range(5):
        by_count.add(entry("d", "job", index))
    assert len(by_count) == 3 and [e.index for e in by_count.jobs("d")[0]] == [2, 3, 4]
    by_bytes = History(max_bytes=350)  # 116 bytes an entry: three fit
    for job in "abcd":
        assert by_bytes.add(entry("d", job, 0))
    assert [job[0].job_id for job in by_bytes.jobs("d")] == ["d", "c", "b"]
    assert by_bytes.total_bytes == 3 * 116
    assert not by_bytes.add(entry("d", "huge", 0, size=1000)), "an entry larger than the whole bound is not kept"
    assert len(by_bytes) == 3


def test_an_entry_again_replaces_itself_and_closed_documents_are_forgotten() -> None:
    history = History()
    history.add(entry("d", "a", 0, size=10))
    history.add(entry("d", "a", 0, size=20))
    assert len(history) == 1 and history.total_bytes == 36
    history.add(entry("gone", "b", 0))
    history.forget(lambda document: document != "gone")
    assert history.jobs("gone") == [] and len(history) == 1 and history.total_bytes == 36


def test_a_document_annotation_holds_the_settings_of_each_layer() -> None:
    other = ResultSettings("b", "", 0.3, None, None, 7, "m")
    text = annotation_with(b"", "{layer-1}", SETTINGS)
    text = annotation_with(text, "{layer-2}", other)
    assert settings_in_annotation(text, "{layer-1}") == SETTINGS
    assert settings_in_annotation(text, "{layer-2}") == other
    assert settings_in_annotation(text, "{layer-3}") is None
    assert settings_in_annotation(b"garbage", "{layer-1}") is None
    assert settings_in_annotation(annotation_with(b"[1]", "x", other), "x") == other, "a foreign annotation is replaced"
