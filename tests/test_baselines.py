"""The lexical baselines find obvious answers and always answer with a context substring."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from squadqa.baselines import (
    first_sentence_overlap_baseline,
    sentence_spans,
    sliding_window_baseline,
    tokenize,
)

BASELINES = [sliding_window_baseline, first_sentence_overlap_baseline]


def ex(qid: str, context: str, question: str) -> SimpleNamespace:
    """Any object with id / context / question will do (squadqa.data.Example has them)."""
    return SimpleNamespace(id=qid, context=context, question=question)


OBVIOUS = [
    ex(
        "broncos",
        "The league was founded in 1920. The Denver Broncos won Super Bowl 50 in 2016. "
        "Tickets were expensive.",
        "Which team won Super Bowl 50 in 2016?",
    ),
    ex(
        "capital",
        "France is a country in Europe. Its capital city is Paris. It has many museums.",
        "What is the capital city of France?",
    ),
    ex(
        "inventor",
        "Many people used telephones by 1900. The telephone was invented by Bell. "
        "Phones are common now.",
        "Who invented the telephone?",
    ),
]
ANSWERS = {
    "broncos": {"Denver Broncos"},
    "capital": {"Paris"},
    "inventor": {"Bell"},
}


@pytest.mark.parametrize("baseline", BASELINES, ids=lambda b: b.__name__)
@pytest.mark.parametrize("example", OBVIOUS, ids=lambda e: e.id)
def test_obvious_answer(baseline, example) -> None:
    assert baseline([example])[example.id] in ANSWERS[example.id]


@pytest.mark.parametrize("baseline", BASELINES, ids=lambda b: b.__name__)
def test_predictions_are_context_substrings_and_deterministic(baseline) -> None:
    examples = [
        *OBVIOUS,
        ex("empty", "", "Anything?"),
        ex("punct", "?!", "Who?"),
        ex("only-question-words", "Denver won.", "Denver won?"),
        ex("unicode", "Café “Zürich” opened in 1999—twice.", "When did Café Zürich open?"),
        ex("no-sentence-end", "a list of words without punctuation", "What list?"),
    ]
    predictions = baseline(examples)
    assert set(predictions) == {e.id for e in examples}
    for e in examples:
        assert predictions[e.id] in e.context
        assert predictions[e.id] == predictions[e.id].strip()
    assert baseline(examples) == predictions


def test_sliding_window_prefers_window_near_question_words() -> None:
    # Both sentences share "born"; the rare question words "Mozart" and "Salzburg" pull the
    # window to the second sentence, and "1756" is the only span next to them.
    example = ex(
        "mozart",
        "Haydn was born in Rohrau. Mozart was born in Salzburg in 1756.",
        "In what year was Mozart born in Salzburg?",
    )
    assert sliding_window_baseline([example])["mozart"] == "1756"


def test_sliding_window_excludes_question_words_and_respects_max_len() -> None:
    example = ex(
        "q",
        "The river Danube flows through Vienna Budapest Belgrade Bratislava toward the sea.",
        "Which cities does the river Danube flow through?",
    )
    answer = sliding_window_baseline([example], max_len=2)["q"]
    assert "Danube" not in answer
    assert len(tokenize(answer)) <= 2


def test_first_sentence_overlap_picks_longest_run() -> None:
    example = ex(
        "q",
        "Cats sleep a lot. The museum in Madrid holds Las Meninas by Velazquez.",
        "Which painting does the museum in Madrid hold?",
    )
    # In the second sentence, "holds Las Meninas" is the longest run of non-question,
    # non-stopword words ("hold" differs from "holds": no stemming).
    assert first_sentence_overlap_baseline([example])["q"] == "holds Las Meninas"


def test_sentence_spans() -> None:
    text = 'He left. "Why?" she asked. In 1990 it ended! e.g. lower case stays.'
    assert [text[s:e] for s, e in sentence_spans(text)] == [
        "He left.",
        '"Why?" she asked.',
        "In 1990 it ended! e.g. lower case stays.",
    ]


def test_tokenize_offsets_map_back() -> None:
    text = "It cost $250,000 (about 3.5% of U.S. GDP) in 1999-2000."
    tokens = tokenize(text)
    assert all(text[t.start : t.end] == t.text for t in tokens)
    assert [t.text for t in tokens][:4] == ["It", "cost", "$250,000", "("]
    assert "3.5%" in [t.text for t in tokens]
    assert "1999-2000" in [t.text for t in tokens]
