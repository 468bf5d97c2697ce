"""Tests for squadqa.data: reading, validation messages, repairs, writing, HF rows."""

from __future__ import annotations

import gzip
import json
import sys
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from squadqa.data import (
    Answer,
    DataStats,
    Example,
    SquadData,
    SquadFormatError,
    examples_from_hf_rows,
    gold_answers,
    load_hf_squad,
    load_squad,
    sample_path,
    write_squad,
)

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"

CTX0 = "The Normans were a people. Normandy is in France. The Normans came from Normandy."
CTX1 = "Paris is the capital of France."


def _mini() -> dict[str, Any]:
    """A small valid v1.1 document: 2 articles, 3 paragraphs, 4 questions."""
    return {
        "version": "1.1",
        "data": [
            {
                "title": "Normans",
                "paragraphs": [
                    {
                        "context": CTX0,
                        "qas": [
                            {
                                "id": "q0",
                                "question": "Who were a people?",
                                "answers": [{"text": "The Normans", "answer_start": 0}],
                            },
                            {
                                "id": "q1",
                                "question": "Where is Normandy?",
                                "answers": [
                                    {"text": "France", "answer_start": 42},
                                    {"text": "in France", "answer_start": 39},
                                ],
                            },
                        ],
                    },
                    {
                        "context": CTX1,
                        "qas": [
                            {
                                "id": "q2",
                                "question": "What is Paris?",
                                "answers": [{"text": "the capital", "answer_start": 9}],
                            }
                        ],
                    },
                ],
            },
            {
                "title": "Paris",
                "paragraphs": [
                    {
                        "context": CTX1,
                        "qas": [
                            {
                                "id": "q3",
                                "question": "Capital of what?",
                                "answers": [{"text": "France", "answer_start": 24}],
                            }
                        ],
                    }
                ],
            },
        ],
    }


def _mini_v2() -> dict[str, Any]:
    doc = _mini()
    doc["version"] = "v2.0"
    for art in doc["data"]:
        for para in art["paragraphs"]:
            for qa in para["qas"]:
                qa["is_impossible"] = False
    doc["data"][0]["paragraphs"][0]["qas"].append(
        {
            "id": "u0",
            "question": "Who ate the Normans?",
            "answers": [],
            "is_impossible": True,
            "plausible_answers": [{"text": "The Normans", "answer_start": 0}],
        }
    )
    doc["data"][1]["paragraphs"][0]["qas"].append(
        {"id": "u1", "question": "Capital of Mars?", "answers": [], "is_impossible": True}
    )
    return doc


def _write(tmp_path: Path, doc: Any, name: str = "dev.json", gz: bool = False) -> Path:
    raw = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
    p = tmp_path / name
    p.write_bytes(gzip.compress(raw) if gz else raw)
    return p


def _qa(doc: dict[str, Any], i: int = 0, j: int = 0, k: int = 0) -> dict[str, Any]:
    return doc["data"][i]["paragraphs"][j]["qas"][k]


def _load_error(tmp_path: Path, doc: Any, **kw: Any) -> str:
    p = _write(tmp_path, doc)
    with pytest.raises(SquadFormatError) as info:
        load_squad(p, **kw)
    assert isinstance(info.value, ValueError)
    msg = str(info.value)
    assert str(p) in msg, msg
    return msg


# ---------------------------------------------------------------------------- sample, basics


def test_sample_summary() -> None:
    sd = load_squad(sample_path())
    assert isinstance(sd, SquadData)
    assert sd.version == "1.1"
    assert sd.stats.summary() == (
        "squad-v1.1-sample.json.gz: SQuAD v1.1, 3 articles, 74 paragraphs, 220 questions, "
        "220 answers, 0 repaired, 0 rejected"
    )
    assert sd.summary() == sd.stats.summary()
    assert (sd.stats.articles, sd.stats.paragraphs, sd.stats.questions) == (3, 74, 220)
    assert {ex.title for ex in sd.examples} == {"Symbiosis", "Genome", "Wayback_Machine"}
    for ex in sd.examples:
        assert isinstance(ex, Example) and not ex.is_impossible
        for a in ex.answers:
            assert ex.context[a.answer_start : a.answer_start + len(a.text)] == a.text


def test_sample_special_value_str_and_path() -> None:
    by_name = load_squad("sample")
    assert by_name.path == sample_path()
    assert load_squad(str(sample_path())).examples == by_name.examples
    assert load_squad(sample_path()).examples == by_name.examples


def test_datastats_positional_contract() -> None:
    s = DataStats(1, 2, 3, 4, 5, 6)
    assert (s.articles, s.paragraphs, s.questions, s.answers, s.repaired, s.rejected) == (
        1,
        2,
        3,
        4,
        5,
        6,
    )
    assert s.summary() == (
        "1 articles, 2 paragraphs, 3 questions, 4 answers, 5 repaired, 6 rejected"
    )


def test_examples_are_frozen() -> None:
    ex = load_squad("sample").examples[0]
    with pytest.raises(AttributeError):
        ex.id = "x"  # type: ignore[misc]
    with pytest.raises(AttributeError):
        ex.answers[0].text = "x"  # type: ignore[misc]


def test_mini_fields(tmp_path: Path) -> None:
    sd = load_squad(_write(tmp_path, _mini()))
    ex = sd.examples[1]
    assert ex == Example(
        "q1",
        "Normans",
        CTX0,
        "Where is Normandy?",
        (Answer("France", 42), Answer("in France", 39)),
        False,
    )
    assert (sd.stats.articles, sd.stats.paragraphs, sd.stats.questions, sd.stats.answers) == (
        2,
        3,
        4,
        5,
    )


@pytest.mark.parametrize(("name", "gz"), [("a.json", True), ("b.json.gz", False), ("c", True)])
def test_gzip_detected_by_magic_not_suffix(tmp_path: Path, name: str, gz: bool) -> None:
    sd = load_squad(_write(tmp_path, _mini(), name=name, gz=gz))
    assert sd.stats.questions == 4


def test_utf8_bom_tolerated(tmp_path: Path) -> None:
    p = _write(tmp_path, b"\xef\xbb\xbf" + json.dumps(_mini()).encode())
    assert load_squad(p).stats.questions == 4


def test_max_samples_keeps_first_in_file_order(tmp_path: Path) -> None:
    p = _write(tmp_path, _mini())
    sd = load_squad(p, max_samples=3)
    assert [ex.id for ex in sd.examples] == ["q0", "q1", "q2"]
    assert (sd.stats.articles, sd.stats.paragraphs, sd.stats.questions, sd.stats.answers) == (
        1,
        2,
        3,
        4,
    )
    assert load_squad(p, max_samples=0).examples == []
    full = load_squad("sample")
    assert load_squad("sample", max_samples=50).examples == full.examples[:50]
    with pytest.raises(ValueError):
        load_squad(p, max_samples=-1)


def test_gold_answers(tmp_path: Path) -> None:
    gold = gold_answers(load_squad(_write(tmp_path, _mini_v2())).examples)
    assert gold["q1"] == ["France", "in France"]
    assert gold["u0"] == []
    assert len(gold) == 6


# ---------------------------------------------------------------------------- SQuAD 2.0


def test_v2_unanswerable(tmp_path: Path) -> None:
    sd = load_squad(_write(tmp_path, _mini_v2()))
    assert sd.version == "2.0"
    by_id = {ex.id: ex for ex in sd.examples}
    assert by_id["u0"].answers == () and by_id["u0"].is_impossible  # with plausible_answers
    assert by_id["u1"].answers == () and by_id["u1"].is_impossible  # without them
    assert not by_id["q0"].is_impossible
    assert sd.stats.unanswerable == 2
    assert sd.stats.summary().startswith("dev.json: SQuAD v2.0, 2 articles, 3 paragraphs, 6 q")
    assert "(2 unanswerable)" in sd.stats.summary()


def test_v2_impossible_with_answers_is_error(tmp_path: Path) -> None:
    doc = _mini_v2()
    _qa(doc, 0, 0, 2)["answers"] = [{"text": "The Normans", "answer_start": 0}]
    msg = _load_error(tmp_path, doc)
    assert "data[0] 'Normans' paragraphs[0] qas[2] id='u0'" in msg
    assert "field 'answers'" in msg and "is_impossible" in msg


def test_v2_answerable_without_answers_is_error(tmp_path: Path) -> None:
    doc = _mini_v2()
    _qa(doc, 1, 0, 0)["answers"] = []
    msg = _load_error(tmp_path, doc)
    assert "data[1] 'Paris' paragraphs[0] qas[0] id='q3'" in msg
    assert "field 'answers' is empty for an answerable question" in msg


def test_v2_is_impossible_not_bool(tmp_path: Path) -> None:
    doc = _mini_v2()
    _qa(doc)["is_impossible"] = "no"
    msg = _load_error(tmp_path, doc)
    assert "id='q0'" in msg and "field 'is_impossible'" in msg


def test_version_inferred_from_is_impossible(tmp_path: Path) -> None:
    doc = _mini_v2()
    del doc["version"]
    assert load_squad(_write(tmp_path, doc)).version == "2.0"
    doc = _mini()
    del doc["version"]
    assert load_squad(_write(tmp_path, doc)).version == "1.1"


# ---------------------------------------------------------------------------- format errors


def test_not_json_names_line_and_column(tmp_path: Path) -> None:
    msg = _load_error(tmp_path, b'{"version": "1.1",\n  "data": [,]}')
    assert "not valid JSON" in msg and "line 2 column" in msg


def test_not_json_gzipped(tmp_path: Path) -> None:
    p = _write(tmp_path, b"{oops", gz=True)
    with pytest.raises(SquadFormatError, match=r"not valid JSON.*line 1 column 2"):
        load_squad(p)


def test_corrupt_gzip(tmp_path: Path) -> None:
    p = tmp_path / "x.json.gz"
    p.write_bytes(gzip.compress(json.dumps(_mini()).encode())[:50])
    with pytest.raises(SquadFormatError, match="gzip"):
        load_squad(p)


def test_top_level_not_object(tmp_path: Path) -> None:
    msg = _load_error(tmp_path, [1, 2])
    assert "top level is a list" in msg


def test_top_level_no_data(tmp_path: Path) -> None:
    assert "field 'data' is missing" in _load_error(tmp_path, {"version": "1.1"})


def test_top_level_data_not_list(tmp_path: Path) -> None:
    assert "field 'data' is a dict, not a list" in _load_error(tmp_path, {"data": {}})


def test_article_not_object(tmp_path: Path) -> None:
    doc = _mini()
    doc["data"].append("Paris")
    assert "data[2]: is a str, not an object" in _load_error(tmp_path, doc)


def test_article_no_paragraphs(tmp_path: Path) -> None:
    doc = _mini()
    del doc["data"][1]["paragraphs"]
    assert "data[1] 'Paris': field 'paragraphs' is missing" in _load_error(tmp_path, doc)


def test_article_paragraphs_not_list(tmp_path: Path) -> None:
    doc = _mini()
    doc["data"][1]["paragraphs"] = "x"
    assert "data[1] 'Paris': field 'paragraphs' is a str" in _load_error(tmp_path, doc)


def test_article_title_not_string(tmp_path: Path) -> None:
    doc = _mini()
    doc["data"][1]["title"] = 7
    assert "data[1]: field 'title' = 7 is not a string" in _load_error(tmp_path, doc)


def test_paragraph_not_object(tmp_path: Path) -> None:
    doc = _mini()
    doc["data"][0]["paragraphs"][1] = []
    assert "data[0] 'Normans' paragraphs[1]: is a list" in _load_error(tmp_path, doc)


def test_paragraph_qas_missing(tmp_path: Path) -> None:
    doc = _mini()
    del doc["data"][0]["paragraphs"][1]["qas"]
    assert "data[0] 'Normans' paragraphs[1]: field 'qas' is missing" in _load_error(tmp_path, doc)


_P01 = "data[0] 'Normans' paragraphs[1]"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, "field 'context' is missing"),
        ("", "field 'context' is empty"),
        (["a"], "field 'context' = ['a'] is not a string"),
    ],
    ids=["missing", "empty", "not-string"],
)
def test_context_errors(tmp_path: Path, value: Any, expected: str) -> None:
    doc = _mini()
    para = doc["data"][0]["paragraphs"][1]
    if value is None:
        del para["context"]
    else:
        para["context"] = value
    assert f"{_P01}: {expected}" in _load_error(tmp_path, doc)


_Q01 = "data[0] 'Normans' paragraphs[0] qas[1] id='q1'"


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    """A mutation of question q1 (data[0] paragraphs[0] qas[1]); value None deletes the key."""

    def mutate(doc: dict[str, Any]) -> None:
        node: Any = _qa(doc, 0, 0, 1)
        keys: list[Any] = [int(k) if k.isdigit() else k for k in path.split(".")]
        for key in keys[:-1]:
            node = node[key]
        if value is None:
            del node[keys[-1]]
        else:
            node[keys[-1]] = value

    return mutate


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (_set("question", None), f"{_Q01}: field 'question' is missing"),
        (_set("question", ""), f"{_Q01}: field 'question' is empty"),
        (_set("question", 3), f"{_Q01}: field 'question' = 3 is not a string"),
        (_set("answers", None), f"{_Q01}: field 'answers' is missing"),
        (_set("answers", {"text": "France"}), f"{_Q01}: field 'answers' is a dict, not a list"),
        (_set("answers", []), f"{_Q01}: field 'answers' is empty for an answerable question"),
        (_set("answers.1", "France"), f"{_Q01}: field 'answers[1]' is a str, not an object"),
        (_set("answers.1.text", None), f"{_Q01}: field 'answers[1].text' is missing"),
        (_set("answers.1.text", ""), f"{_Q01}: field 'answers[1].text' is empty"),
        (_set("answers.1.text", 5), f"{_Q01}: field 'answers[1].text' = 5 is not a string"),
        (
            _set("answers.1.answer_start", None),
            f"{_Q01}: field 'answers[1].answer_start' is missing",
        ),
        (
            _set("answers.1.answer_start", "39"),
            f"{_Q01}: field 'answers[1].answer_start' = '39' is not an integer",
        ),
        (
            _set("answers.1.answer_start", 39.0),
            f"{_Q01}: field 'answers[1].answer_start' = 39.0 is not an integer",
        ),
        (
            _set("answers.1.answer_start", True),
            f"{_Q01}: field 'answers[1].answer_start' = True is not an integer",
        ),
        (
            _set("answers.1.answer_start", -1),
            f"{_Q01}: field 'answers[1].answer_start' = -1 is negative",
        ),
        (
            _set("answers.1.answer_start", 812),
            f"{_Q01}: field 'answers[1].answer_start' = 812 is out of range for a context of "
            f"{len(CTX0)} characters",
        ),
        (
            _set("answers.0.text", "Germany"),
            f"{_Q01}: field 'answers[0].text' = 'Germany' does not occur in the context",
        ),
    ],
    ids=[
        "question-missing",
        "question-empty",
        "question-not-string",
        "answers-missing",
        "answers-not-list",
        "answers-empty",
        "answer-not-object",
        "text-missing",
        "text-empty",
        "text-not-string",
        "start-missing",
        "start-string",
        "start-float",
        "start-bool",
        "start-negative",
        "start-out-of-range",
        "text-not-in-context",
    ],
)
def test_question_errors(
    tmp_path: Path, mutate: Callable[[dict[str, Any]], None], expected: str
) -> None:
    doc = _mini()
    mutate(doc)
    msg = _load_error(tmp_path, doc)
    assert expected in msg, msg


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, "qas[1]: field 'id' is missing"),
        ("", "qas[1]: field 'id' is empty"),
        (17, "qas[1]: field 'id' = 17 is not a string"),
    ],
    ids=["missing", "empty", "not-string"],
)
def test_id_errors(tmp_path: Path, value: Any, expected: str) -> None:
    doc = _mini()
    _set("id", value)(doc)
    msg = _load_error(tmp_path, doc)
    assert f"data[0] 'Normans' paragraphs[0] {expected}" in msg


def test_question_not_object(tmp_path: Path) -> None:
    doc = _mini()
    doc["data"][0]["paragraphs"][0]["qas"][1] = "Where?"
    msg = _load_error(tmp_path, doc)
    assert "data[0] 'Normans' paragraphs[0] qas[1]: is a str, not an object" in msg


def test_duplicate_id_names_both_places(tmp_path: Path) -> None:
    doc = _mini()
    doc["data"][1]["paragraphs"][0]["qas"][0]["id"] = "q1"
    msg = _load_error(tmp_path, doc)
    assert "data[1] 'Paris' paragraphs[0] qas[0] id='q1': field 'id'" in msg
    assert "duplicate of data[0] 'Normans' paragraphs[0] qas[1] id='q1'" in msg


def test_error_message_format_example(tmp_path: Path) -> None:
    doc = _mini()
    _qa(doc, 0, 0, 0)["answers"][0]["answer_start"] = 812
    p = _write(tmp_path, doc)
    with pytest.raises(SquadFormatError) as info:
        load_squad(p)
    assert str(info.value) == (
        f"{p}: data[0] 'Normans' paragraphs[0] qas[0] id='q0': field 'answers[0].answer_start' "
        f"= 812 is out of range for a context of {len(CTX0)} characters"
    )


# ---------------------------------------------------------------------------- repair / reject


def test_repair_moves_to_nearest_occurrence(tmp_path: Path) -> None:
    doc = _mini()
    # "The Normans" occurs at 0 and at 50; 45 is nearest to 50.
    assert CTX0.find("The Normans", 1) == 50
    _qa(doc, 0, 0, 0)["answers"][0]["answer_start"] = 45
    sd = load_squad(_write(tmp_path, doc))
    assert sd.examples[0].answers == (Answer("The Normans", 50),)
    assert sd.stats.repaired == 1 and sd.stats.rejected == 0
    assert "1 repaired" in sd.stats.summary()
    assert len(sd.repairs) == 1
    rep = sd.repairs[0]
    assert "data[0] 'Normans' paragraphs[0] qas[0] id='q0'" in rep
    assert "'answers[0].answer_start' = 45 moved to 50" in rep


def test_repair_tie_and_left_side(tmp_path: Path) -> None:
    doc = _mini()
    _qa(doc, 0, 0, 0)["answers"][0]["answer_start"] = 20  # nearer 0 than 50
    assert load_squad(_write(tmp_path, doc)).examples[0].answers[0].answer_start == 0


def test_strict_raises_instead_of_repair(tmp_path: Path) -> None:
    doc = _mini()
    _qa(doc, 0, 0, 0)["answers"][0]["answer_start"] = 45
    msg = _load_error(tmp_path, doc, strict=True)
    assert "qas[0] id='q0': field 'answers[0].answer_start' = 45 does not point at" in msg
    assert "occurs at 50" in msg


def test_skip_invalid_drops_and_reports(tmp_path: Path) -> None:
    doc = _mini()
    _qa(doc, 0, 0, 1)["answers"][1]["text"] = "in Germany"
    p = _write(tmp_path, doc)
    with pytest.raises(SquadFormatError, match="does not occur in the context"):
        load_squad(p)
    sd = load_squad(p, skip_invalid=True)
    assert [ex.id for ex in sd.examples] == ["q0", "q2", "q3"]
    assert sd.stats.rejected == 1 and sd.stats.questions == 3 and sd.stats.answers == 3
    assert "1 rejected" in sd.stats.summary()
    assert len(sd.problems) == 1
    assert f"{_Q01}: field 'answers[1].text' = 'in Germany' does not occur" in sd.problems[0]


def test_skip_invalid_does_not_count_toward_max_samples(tmp_path: Path) -> None:
    doc = _mini()
    _qa(doc, 0, 0, 0)["answers"][0]["text"] = "Vikings"
    sd = load_squad(_write(tmp_path, doc), skip_invalid=True, max_samples=2)
    assert [ex.id for ex in sd.examples] == ["q1", "q2"] and sd.stats.rejected == 1


def test_skip_invalid_duplicate_keeps_first(tmp_path: Path) -> None:
    doc = _mini()
    _qa(doc, 1, 0, 0)["id"] = "q0"
    sd = load_squad(_write(tmp_path, doc), skip_invalid=True)
    assert [ex.id for ex in sd.examples] == ["q0", "q1", "q2"]
    assert "duplicate of data[0] 'Normans' paragraphs[0] qas[0]" in sd.problems[0]


def test_skip_invalid_never_hides_structural_errors(tmp_path: Path) -> None:
    doc = _mini()
    del doc["data"][0]["paragraphs"][1]["context"]
    _load_error(tmp_path, doc, skip_invalid=True)


# ---------------------------------------------------------------------------- write_squad


@pytest.mark.parametrize("name", ["out.json", "out.json.gz"])
def test_round_trip_sample(tmp_path: Path, name: str) -> None:
    sd = load_squad("sample")
    out = write_squad(sd.examples, tmp_path / name)
    assert out == tmp_path / name
    assert (out.read_bytes()[:2] == b"\x1f\x8b") == name.endswith(".gz")
    back = load_squad(out)
    assert back.examples == sd.examples
    assert back.stats.summary().split(": ", 1)[1] == sd.stats.summary().split(": ", 1)[1]
    assert [p.name for p in tmp_path.iterdir()] == [name]  # no temporary file left


def test_round_trip_v2_and_official_shape(tmp_path: Path) -> None:
    sd = load_squad(_write(tmp_path, _mini_v2()))
    out = write_squad(sd.examples, tmp_path / "v2.json", version="2.0")
    doc = json.loads(out.read_text())
    assert doc["version"] == "v2.0"
    assert [a["title"] for a in doc["data"]] == ["Normans", "Paris"]
    assert len(doc["data"][0]["paragraphs"]) == 2
    qa = doc["data"][0]["paragraphs"][0]["qas"][2]
    assert qa == {
        "answers": [],
        "question": "Who ate the Normans?",
        "id": "u0",
        "is_impossible": True,
    }
    assert load_squad(out).examples == sd.examples


def test_write_subset(tmp_path: Path) -> None:
    sd = load_squad("sample")
    subset = sd.examples[::7]
    back = load_squad(write_squad(subset, tmp_path / "sub.json"))
    assert back.examples == subset
    assert back.stats.questions == len(subset)


def test_write_v1_rejects_unanswerable(tmp_path: Path) -> None:
    sd = load_squad(_write(tmp_path, _mini_v2()))
    with pytest.raises(ValueError, match="u0"):
        write_squad(sd.examples, tmp_path / "v1.json")
    assert not (tmp_path / "v1.json").exists()


# ---------------------------------------------------------------------------- Hugging Face rows


def _hf_rows() -> list[dict[str, Any]]:
    return [
        {
            "id": "h0",
            "title": "Normans",
            "context": CTX0,
            "question": "Who?",
            "answers": {"text": ["The Normans", "Normans"], "answer_start": [0, 4]},
        },
        {
            "id": "h1",
            "title": "Normans",
            "context": CTX0,
            "question": "Where?",
            "answers": {"text": ["France"], "answer_start": [42]},
        },
        {
            "id": "h2",
            "title": "Paris",
            "context": CTX1,
            "question": "What?",
            "answers": {"text": ["the capital"], "answer_start": [9]},
        },
    ]


def test_hf_rows_v1() -> None:
    sd = examples_from_hf_rows(_hf_rows(), "squad/validation")
    assert sd.version == "1.1" and sd.path == "squad/validation"
    assert sd.examples[0] == Example(
        "h0", "Normans", CTX0, "Who?", (Answer("The Normans", 0), Answer("Normans", 4))
    )
    assert (sd.stats.articles, sd.stats.paragraphs, sd.stats.questions, sd.stats.answers) == (
        2,
        2,
        3,
        4,
    )
    assert sd.stats.summary().startswith("squad/validation: SQuAD v1.1, 2 articles")


def _rows_of(examples: list[Example]) -> list[dict[str, Any]]:
    """Examples as Hugging Face SQuAD rows."""
    return [
        {
            "id": ex.id,
            "title": ex.title,
            "context": ex.context,
            "question": ex.question,
            "answers": {
                "text": [a.text for a in ex.answers],
                "answer_start": [a.answer_start for a in ex.answers],
            },
        }
        for ex in examples
    ]


def test_hf_rows_match_file_loader() -> None:
    sd = load_squad("sample")
    rows = _rows_of(sd.examples)
    hf = examples_from_hf_rows(rows, "squad/train")
    assert hf.examples == sd.examples
    assert (hf.stats.articles, hf.stats.paragraphs) == (3, 74)


def test_hf_rows_max_articles_matches_file_loader() -> None:
    """Rows of one title form an article: the first N match load_squad's first N articles."""
    rows = _hf_rows()
    assert [ex.id for ex in examples_from_hf_rows(rows, "s", max_articles=1).examples] == [
        "h0",
        "h1",
    ]
    assert len(examples_from_hf_rows(rows, "s", max_articles=2).examples) == 3
    assert examples_from_hf_rows(rows, "s", max_articles=0).examples == []
    sd = load_squad("sample")
    rows = _rows_of(sd.examples)
    for n in (1, 2):
        first = load_squad("sample", max_articles=n)
        assert examples_from_hf_rows(rows, "squad/train", max_articles=n).examples == (
            first.examples
        )


def test_hf_rows_v2_unanswerable() -> None:
    rows = _hf_rows()
    rows[2]["answers"] = {"text": [], "answer_start": []}
    sd = examples_from_hf_rows(rows, "squad_v2/validation")
    assert sd.version == "2.0"
    assert sd.examples[2].is_impossible and sd.examples[2].answers == ()
    with pytest.raises(SquadFormatError, match="row 2 title='Paris' id='h2': field 'answers'"):
        examples_from_hf_rows(rows, "squad/validation")


def test_hf_rows_errors_name_row_and_id() -> None:
    rows = _hf_rows()
    rows[1]["answers"]["answer_start"] = [40]
    sd = examples_from_hf_rows(rows, "squad/validation")  # "France" is at 42: repaired
    assert sd.examples[1].answers == (Answer("France", 42),)
    assert "squad/validation: row 1 title='Normans' id='h1'" in sd.repairs[0]

    rows[1]["answers"]["text"] = ["Germany"]
    with pytest.raises(SquadFormatError) as info:
        examples_from_hf_rows(rows, "squad/validation")
    assert "squad/validation: row 1 title='Normans' id='h1': field 'answers[0].text'" in str(
        info.value
    )

    rows[1]["answers"] = {"text": ["France", "France"], "answer_start": [42]}
    with pytest.raises(SquadFormatError, match="row 1 title='Normans' id='h1': field 'answers'"):
        examples_from_hf_rows(rows, "squad/validation")

    rows[1] = dict(_hf_rows()[1], context="")
    with pytest.raises(SquadFormatError, match="row 1 title='Normans' id='h1': field 'context'"):
        examples_from_hf_rows(rows, "squad/validation")

    rows[1] = dict(_hf_rows()[1], id="h0")
    sd = examples_from_hf_rows(rows, "squad/validation", skip_invalid=True)
    assert [ex.id for ex in sd.examples] == ["h0", "h2"]
    assert "duplicate of row 0" in sd.problems[0]


def test_load_hf_squad_with_fake_datasets(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str, str]] = []

    def load_dataset(name: str, split: str) -> list[dict[str, Any]]:
        calls.append((name, split))
        return _hf_rows()

    fake = types.ModuleType("datasets")
    fake.load_dataset = load_dataset  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "datasets", fake)
    sd = load_hf_squad(max_samples=2)
    assert calls == [("squad", "validation")]
    assert [ex.id for ex in sd.examples] == ["h0", "h1"]
    # max_articles reaches the row converter (it was validated, then dropped): 1 title, 2 rows.
    assert [ex.id for ex in load_hf_squad(max_articles=1).examples] == ["h0", "h1"]


def test_load_hf_squad_without_datasets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "datasets", None)
    with pytest.raises(ImportError, match=r"squadqa\[hf\]"):
        load_hf_squad()


# ---------------------------------------------------------------------------- real shared files


def _need(path: Path) -> Path:
    if not path.is_file():
        pytest.skip(f"shared data not present: {path}")
    return path


def test_shared_v1_train_counts() -> None:
    # (No timing assert: it failed on a busy machine; load speed is not a test's business.)
    path = _need(SHARED / "squad-v1.1" / "train.json.gz")
    sd = load_squad(path, strict=True)
    assert sd.stats == DataStats(44, 2430, 11877, 11877, 0, 0, "train.json.gz", "1.1", 0)
    assert all(len(ex.answers) == 1 for ex in sd.examples)


def test_shared_v1_dev_counts_and_all_annotator_offsets() -> None:
    path = _need(SHARED / "squad-v1.1" / "dev.json.gz")
    sd = load_squad(path, strict=True)  # strict: every annotator's answer_start is exact
    s = sd.stats
    assert (s.articles, s.paragraphs, s.questions, s.repaired, s.rejected) == (40, 1755, 9045, 0, 0)
    assert s.answers == 29151  # measured; README gives no total
    assert all(ex.answers for ex in sd.examples)


def test_shared_v2_counts() -> None:
    expected = {"train.json.gz": (24, 817, 7855, 3949), "val.json.gz": (5, 180, 1974, 1021)}
    for name, (articles, paragraphs, questions, unanswerable) in expected.items():
        sd = load_squad(_need(SHARED / "squad-v2.0" / name), strict=True)
        s = sd.stats
        assert (s.articles, s.paragraphs, s.questions, s.unanswerable) == (
            articles,
            paragraphs,
            questions,
            unanswerable,
        )
        assert sd.version == "2.0" and s.repaired == 0
        assert sum(ex.is_impossible for ex in sd.examples) == unanswerable
