"""The web page in a real headless Chromium against the real uvicorn server.

Needs Debian's `chromium` and `chromium-driver` packages and the `selenium` package; skipped with
the reason when any is missing. The driver path is given explicitly, so Selenium Manager never
runs (nothing is downloaded). Leaves a screenshot in `tests/artifacts/browser.png`.
"""

from __future__ import annotations

import json
import shutil
import urllib.request
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("fastapi")

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
CHROMIUM = next((p for p in (shutil.which(n) for n in ("chromium", "chromium-browser")) if p), None)
CHROMEDRIVER = shutil.which("chromedriver") or (
    "/usr/bin/chromedriver" if Path("/usr/bin/chromedriver").is_file() else None
)
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1280,1200",
)


@pytest.fixture(scope="module")
def driver(tmp_path_factory: pytest.TempPathFactory):
    pytest.importorskip("selenium", reason="pip install selenium")
    if CHROMIUM is None or CHROMEDRIVER is None:
        pytest.skip(
            "headless Chromium not installed (apt-get install -y chromium chromium-driver): "
            f"chromium={CHROMIUM}, chromedriver={CHROMEDRIVER}"
        )
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    browser = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    browser.set_page_load_timeout(30)
    yield browser
    browser.quit()


@pytest.fixture(scope="module")
def server_url(predictor):
    from squadqa.serve.app import create_app, serve_in_thread

    with serve_in_thread(create_app(predictor)) as url:
        yield url


def api_answer(url: str, context: str, question: str) -> dict:
    request = urllib.request.Request(
        f"{url}/v1/answer",
        data=json.dumps({"context": context, "question": question, "top_k": 5}).encode(),
        headers={"content-type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())["answers"][0]


def _click_and_wait(driver: Any, button: str, done: str = "result", timeout: int = 60) -> None:
    """Click `button` and wait until element `done` is marked data-done (failing on an error the
    page shows instead)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver.find_element(By.ID, button).click()
    WebDriverWait(driver, timeout).until(
        lambda d: (
            d.find_element(By.ID, done).get_attribute("data-done")
            or d.find_element(By.ID, "error").is_displayed()
        )
    )
    error = driver.find_element(By.ID, "error")
    assert not error.is_displayed(), error.text


def test_ask_in_the_browser(driver, server_url):
    from selenium.webdriver.common.by import By

    from squadqa.data import load_squad, sample_path

    example = load_squad(sample_path()).examples[0]
    context, question = example.context, example.question
    driver.get(server_url + "/")
    assert "squadqa" in driver.title
    assert not driver.find_element(By.ID, "mode").is_displayed()  # no index, no collection mode
    box = driver.find_element(By.ID, "context")
    # A paste: the whole text lands at once and fires one input event.
    driver.execute_script(
        "arguments[0].value = arguments[1];"
        "arguments[0].dispatchEvent(new Event('input', {bubbles: true}));",
        box,
        context,
    )
    driver.find_element(By.ID, "question").send_keys(question)
    _click_and_wait(driver, "ask")

    expected = api_answer(server_url, context, question)
    marks = driver.find_elements(By.CSS_SELECTOR, "#highlighted mark")
    assert len(marks) == 1
    assert marks[0].get_attribute("textContent") == expected["text"]
    assert expected["text"] == context[expected["start"] : expected["end"]]
    assert driver.find_element(By.ID, "highlighted").get_attribute("textContent") == context
    shown = driver.find_element(By.ID, "answer-text").get_attribute("textContent")
    assert shown == expected["text"]
    meta = driver.find_element(By.ID, "answer-meta").text
    assert f"{expected['score']:.2f}" in meta and f"{expected['start']}–{expected['end']}" in meta
    items = driver.find_elements(By.CSS_SELECTOR, "#alternatives li")
    assert [li.find_element(By.CLASS_NAME, "alt-text").text for li in items] == [
        alt["text"].strip() for alt in expected["alternatives"]
    ]
    # Every resource the page loaded came from the server itself (works offline).
    urls = driver.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    assert all(u.startswith(server_url) for u in urls), urls

    ARTIFACTS.mkdir(exist_ok=True)
    driver.save_screenshot(str(ARTIFACTS / "browser.png"))
    assert (ARTIFACTS / "browser.png").stat().st_size > 10_000

    # Clicking a runner-up moves the highlight to exactly its span.
    if len(items) > 1:
        items[1].click()
        second = expected["alternatives"][1]
        mark = driver.find_element(By.CSS_SELECTOR, "#highlighted mark")
        assert mark.get_attribute("textContent") == second["text"]


def test_errors_are_shown(driver, server_url):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(server_url + "/")
    driver.find_element(By.ID, "context").send_keys("Some context.")
    driver.find_element(By.ID, "question").send_keys("   ")
    driver.find_element(By.ID, "ask").click()
    error = driver.find_element(By.ID, "error")
    WebDriverWait(driver, 10).until(lambda d: error.is_displayed())
    assert "question" in error.text
    # A server-side refusal (context over the limit) is shown with the server's message.
    driver.execute_script(
        "document.getElementById('context').value = 'word '.repeat(5000);"
        "document.getElementById('question').value = 'What?';"
    )
    driver.find_element(By.ID, "ask").click()
    WebDriverWait(driver, 30).until(lambda d: "422" in error.text)
    assert "context" in error.text and "limit" in error.text


def test_no_answer_is_shown_with_the_best_spans(driver, predictor):
    """A SQuAD 2.0 run whose threshold the question's null score exceeds: the page says so."""
    import dataclasses

    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from squadqa.serve.app import create_app, serve_in_thread

    spans = dataclasses.replace(predictor.span_config, version_2=True, null_threshold=-1e9)
    abstaining = dataclasses.replace(predictor, span_config=spans)
    context = "The Eiffel Tower is in Paris. It opened for the 1889 World's Fair."
    question = "Who wrote Hamlet?"
    with serve_in_thread(create_app(abstaining)) as url:
        expected = api_answer(url, context, question)
        assert expected["no_answer"] and expected["text"] == "" and expected["alternatives"]
        driver.get(url + "/")
        driver.find_element(By.ID, "context").send_keys(context)
        driver.find_element(By.ID, "question").send_keys(question)
        driver.find_element(By.ID, "ask").click()
        WebDriverWait(driver, 60).until(
            lambda d: d.find_element(By.ID, "result").get_attribute("data-done")
        )
        assert driver.find_element(By.ID, "answer-text").text == "No answer in this context"
        assert not driver.find_elements(By.CSS_SELECTOR, "#highlighted mark")
        assert "null score" in driver.find_element(By.ID, "answer-meta").text
        items = driver.find_elements(By.CSS_SELECTOR, "#alternatives li")
        assert [li.find_element(By.CLASS_NAME, "alt-text").text for li in items] == [
            alt["text"].strip() for alt in expected["alternatives"]
        ]
        items[0].click()  # the best span can still be looked at
        mark = driver.find_element(By.CSS_SELECTOR, "#highlighted mark")
        assert mark.get_attribute("textContent") == expected["alternatives"][0]["text"]
        driver.save_screenshot(str(ARTIFACTS / "browser-no-answer.png"))


def api_explain(url: str, context: str, question: str) -> dict:
    request = urllib.request.Request(
        f"{url}/v1/explain",
        data=json.dumps({"context": context, "question": question}).encode(),
        headers={"content-type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


def shaded_values(driver, box_id: str) -> list[tuple[str, float]]:
    """(text, value) of each shaded token span of a panel box, in order."""
    from selenium.webdriver.common.by import By

    spans = driver.find_elements(By.CSS_SELECTOR, f"#{box_id} span.tok")
    return [(s.get_attribute("textContent"), float(s.get_attribute("data-value"))) for s in spans]


def expected_shading(explanation: dict, value_of) -> list[tuple[str, float]]:
    """What the panel should shade, from the API's answer: each context token's text (tokens
    sharing characters merged, values summed), in order."""
    context, shading, position = explanation["context"], [], 0
    for i, token in enumerate(explanation["tokens"]):
        if token["segment"] != "context":
            continue
        if shading and token["start"] < position:
            shading[-1] = (shading[-1][0], shading[-1][1] + value_of(i))
            continue
        shading.append((context[token["start"] : token["end"]], value_of(i)))
        position = token["end"]
    return shading


def test_why_this_answer_panel(driver, server_url):
    """Ask, open the panel: the context shaded by the start and end attributions the API gives,
    and a layer/head picker that reshades it by that head's attention."""
    import numpy as np
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    from squadqa.data import load_squad, sample_path

    example = load_squad(sample_path()).examples[3]
    context, question = example.context, example.question
    driver.get(server_url + "/")
    assert not driver.find_element(By.ID, "explain-panel").is_displayed()
    driver.execute_script("document.getElementById('context').value = arguments[0];", context)
    driver.find_element(By.ID, "question").send_keys(question)
    _click_and_wait(driver, "ask")
    _click_and_wait(driver, "explain-button", done="explain-panel", timeout=120)
    assert driver.find_element(By.ID, "explain-panel").is_displayed()

    expected = api_explain(server_url, context, question)
    for target in ("start", "end"):
        box = f"attr-{target}"
        assert driver.find_element(By.ID, box).get_attribute("textContent") == context
        got = shaded_values(driver, box)
        want = expected_shading(expected, lambda i, t=target: expected["attributions"][t][i])
        assert [text for text, _ in got] == [text for text, _ in want]
        np.testing.assert_allclose([v for _, v in got], [v for _, v in want], rtol=1e-6)
        # The strongest token is shaded fully, and it is shaded (not white).
        spans = driver.find_elements(By.CSS_SELECTOR, f"#{box} span.tok")
        strongest = max(range(len(want)), key=lambda k: abs(want[k][1]))
        assert spans[strongest].get_attribute("data-weight") == "1.000"
        assert spans[strongest].value_of_css_property("background-color") not in (
            "rgba(0, 0, 0, 0)",
            "rgb(255, 255, 255)",
        )
    outlined = driver.find_elements(By.CSS_SELECTOR, "#attr-start .in-answer")
    assert "".join(s.get_attribute("textContent") for s in outlined).replace(" ", "") == (
        expected["span"]["text"].replace(" ", "")
    )
    assert "start logit within" in driver.find_element(By.ID, "explain-meta").text

    # The attention picker: layer 1, head 2, from the question's tokens.
    attention = expected["attention"]
    Select(driver.find_element(By.ID, "attn-layer")).select_by_visible_text("1")
    Select(driver.find_element(By.ID, "attn-head")).select_by_visible_text("2")
    Select(driver.find_element(By.ID, "attn-from")).select_by_value("question")
    rows = np.asarray(attention["question_to_context"][0][1]).mean(axis=0)
    by_position = dict(zip(attention["context_columns"], rows, strict=True))
    want = expected_shading(expected, lambda i: by_position.get(i, 0.0))
    got = shaded_values(driver, "attn-context")
    assert driver.find_element(By.ID, "attn-context").get_attribute("textContent") == context
    np.testing.assert_allclose([v for _, v in got], [v for _, v in want], rtol=1e-6, atol=1e-9)
    summary = driver.find_element(By.ID, "head-summary").text
    assert f"{100 * attention['heads_summary']['sep'][0][1]:.1f}%" in summary
    panel = driver.find_element(By.ID, "explain-panel")
    driver.execute_script("arguments[0].scrollIntoView();", panel)
    driver.save_screenshot(str(ARTIFACTS / "browser-explain.png"))


@pytest.fixture(scope="module")
def collection_url(predictor, tiny_index):
    from squadqa.serve.app import create_app, serve_in_thread

    with serve_in_thread(create_app(predictor, index=tiny_index)) as url:
        yield url


def api_ask(url: str, question: str) -> dict:
    request = urllib.request.Request(
        f"{url}/v1/ask",
        data=json.dumps({"question": question, "passages": 5, "top_k": 5}).encode(),
        headers={"content-type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


def test_ask_the_collection_in_the_browser(driver, collection_url, tiny_index):
    """Collection mode: no context pasted; the answer is highlighted in the passage it cites,
    under its document's title, and a runner-up moves the highlight to its own passage."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from squadqa.data import load_squad, sample_path

    question = load_squad(sample_path()).examples[0].question
    driver.get(collection_url + "/")
    WebDriverWait(driver, 30).until(lambda d: d.find_element(By.ID, "mode").is_displayed())
    assert "3 documents" in driver.find_element(By.ID, "collection-info").text
    driver.find_element(By.ID, "mode-collection").click()
    assert not driver.find_element(By.ID, "context").is_displayed()
    driver.find_element(By.ID, "question").send_keys(question)
    _click_and_wait(driver, "ask")

    expected = api_ask(collection_url, question)
    answer = expected["answer"]
    assert not answer["no_answer"]
    documents = tiny_index.collection.documents

    def check_cited(cited: dict) -> None:
        """The page shows the cited passage, exactly, with the span marked in it."""
        document = documents[cited["document"]]
        passage = document.text[cited["passage_start"] : cited["passage_end"]]
        highlighted = driver.find_element(By.ID, "highlighted")
        assert highlighted.get_attribute("textContent") == passage
        marks = driver.find_elements(By.CSS_SELECTOR, "#highlighted mark")
        assert len(marks) == 1
        assert marks[0].get_attribute("textContent") == cited["text"]
        assert document.text[cited["start"] : cited["end"]] == cited["text"]
        # The mark sits at the cited offset, not at an earlier copy of the same words.
        before = highlighted.get_attribute("textContent").split(cited["text"])[0]
        if passage.count(cited["text"]) == 1:
            assert cited["passage_start"] + len(before) == cited["start"]
        source = driver.find_element(By.ID, "answer-source").text
        assert document.title in source and document.source in source
        assert f"{cited['start']}–{cited['end']}" in source

    assert driver.find_element(By.ID, "answer-text").get_attribute("textContent") == answer["text"]
    check_cited(answer)
    assert not driver.find_element(By.ID, "explain-button").is_displayed()
    items = driver.find_elements(By.CSS_SELECTOR, "#alternatives li")
    assert [li.find_element(By.CLASS_NAME, "alt-text").text for li in items] == [
        alt["text"].strip() for alt in answer["alternatives"]
    ]
    ARTIFACTS.mkdir(exist_ok=True)
    driver.save_screenshot(str(ARTIFACTS / "browser-collection.png"))
    # A runner-up, preferably from another passage: highlighted in its own passage.
    others = [i for i, a in enumerate(answer["alternatives"]) if a["passage"] != answer["passage"]]
    pick = others[0] if others else len(items) - 1
    items[pick].click()
    check_cited(answer["alternatives"][pick])
