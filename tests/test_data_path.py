"""The data path: text files become datasets of text rows (cached, memory mapped, or streamed) whose blocks are
exactly those of the whole text tokenized in memory."""

import itertools
import json

import datasets
import pytest

import train
from textdiffusion import cli
from textdiffusion.data import corpus, documents, tokenization

RUNNING_TEXT = (
    "  \n First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.  \n"
    "  They said 'tis so; we're 12 of 3,000 men.\n\tTabbed line\r\nWindows line\rold Mac line\n"
) * 40 + "the end.  \n\n"


@pytest.fixture
def small_rows(monkeypatch):
    """Rows of about 200 characters, so the test texts are cut into many rows."""
    monkeypatch.setattr(documents, "ROW_CHARS", 200)


@pytest.fixture
def files(tmp_path):
    (tmp_path / "running.txt").write_bytes(RUNNING_TEXT.encode())
    stories = corpus.generate_corpus(60, seed=5)
    (tmp_path / "lines.txt").write_text("\n\n".join(stories) + "\n")
    (tmp_path / "docs.jsonl").write_text("\n".join(json.dumps({"text": s}) for s in stories) + "\n\n")
    return tmp_path


@pytest.fixture(scope="module")
def tokenizer():
    return tokenization.train_tokenizer([RUNNING_TEXT, *corpus.generate_corpus(200)], "bpe", 400)


def whole_text(path) -> str:
    return open(path, encoding="utf-8").read().strip()  # text mode: universal newlines, as train.py always read


def test_a_packed_file_becomes_rows_cut_only_where_tokens_cannot_change(files, small_rows, tokenizer):
    rows = documents.text_dataset(str(files / "running.txt"), line_by_line=False)
    assert len(rows) > 10 and rows["ends"] == [False] * (len(rows) - 1) + [True]
    assert "".join(rows["text"]) == whole_text(files / "running.txt")
    pieces = [tokenizer(text, add_special_tokens=False)["input_ids"] for text in rows["text"]]
    assert sum(pieces, []) == tokenizer(whole_text(files / "running.txt"), add_special_tokens=False)["input_ids"]


@pytest.mark.parametrize("name, line_by_line", [("running.txt", False), ("lines.txt", True), ("docs.jsonl", False), ("docs.jsonl", True)])
@pytest.mark.parametrize("length", [16, 48])
def test_blocks_from_rows_equal_blocks_of_the_documents_in_memory(files, small_rows, tokenizer, name, line_by_line, length):
    path = str(files / name)
    in_memory = tokenization.tokenize_documents(tokenizer, documents.read_documents(path, line_by_line), length, line_by_line)
    cached = tokenization.tokenize_documents(tokenizer, documents.text_dataset(path, line_by_line), length, line_by_line)
    assert len(cached) > 5 and cached["input_ids"] == in_memory["input_ids"]
    assert cached.cache_files  # on disk, memory mapped: not a copy in this process's memory
    # The same file and tokenizer again: the same cached blocks.
    again = tokenization.tokenize_documents(tokenizer, documents.text_dataset(path, line_by_line), length, line_by_line)
    assert again.cache_files == cached.cache_files


def test_a_tokenizer_trained_on_rows_is_the_one_trained_on_the_whole_text(files, small_rows):
    path = str(files / "running.txt")
    from_rows = tokenization.train_tokenizer(documents.text_dataset(path, False), "bpe", 300)
    whole = tokenization.train_tokenizer(documents.read_documents(path, False), "bpe", 300)
    assert from_rows.get_vocab() == whole.get_vocab()


def test_a_changed_file_is_read_again_not_served_from_the_cache(files):
    path = files / "running.txt"
    before = documents.text_dataset(str(path), False)["text"]
    path.write_text("a different text altogether")
    assert documents.text_dataset(str(path), False)["text"] == ["a different text altogether"] != before


@pytest.mark.parametrize("name, line_by_line", [("running.txt", False), ("lines.txt", True)])
def test_without_a_validation_file_the_end_is_held_out_as_before(files, small_rows, name, line_by_line):
    args = type("Data", (), {"train_file": str(files / name), "validation_file": None, "line_by_line": line_by_line,
                             "validation_split_percentage": 10, "max_train_samples": None, "max_eval_samples": None})()
    train_rows, valid_rows = documents.load_documents(args)
    docs = documents.read_documents(str(files / name), line_by_line)
    if line_by_line:
        cut = len(docs) * 90 // 100
        assert train_rows["text"] == docs[:cut] and valid_rows["text"] == docs[cut:]
    else:
        cut = len(docs[0]) * 90 // 100
        assert "".join(train_rows["text"]) == docs[0][:cut] and "".join(valid_rows["text"]) == docs[0][cut:]
        assert train_rows["ends"][-1] and valid_rows["ends"][-1]  # each part ends its document


def test_a_streamed_file_gives_the_cached_blocks_and_the_same_seed_the_same_batches(files, small_rows, tokenizer):
    path = str(files / "running.txt")
    shape = documents.scan_file(path, False)
    streamed_rows = datasets.IterableDataset.from_generator(
        documents.text_rows, gen_kwargs={"path": path, "line_by_line": False, "start": 0, "stop": shape["size"], "lead": shape["lead"]})
    streamed = tokenization.tokenize_documents(tokenizer, streamed_rows, 16, False)
    cached = tokenization.tokenize_documents(tokenizer, documents.text_dataset(path, False), 16, False)
    assert [row["input_ids"] for row in streamed] == cached["input_ids"]

    def first_batches(seed, count=3, size=4):
        shuffled = iter(streamed.shuffle(seed=seed, buffer_size=50))
        return [[next(shuffled)["input_ids"] for _ in range(size)] for _ in range(count)]

    assert first_batches(42) == first_batches(42) != first_batches(0)
    assert first_batches(42) != [cached["input_ids"][i : i + 4] for i in (0, 4, 8)]  # shuffled, not in file order


def test_the_first_rows_of_a_stream_feed_a_new_tokenizer(files):
    rows = datasets.IterableDataset.from_generator(
        documents.text_rows, gen_kwargs={"path": str(files / "lines.txt"), "line_by_line": True, "start": 0, "stop": 10**9})
    texts = documents.leading_text(rows, chars=500)
    assert 500 <= sum(map(len, texts)) < 500 + max(map(len, texts)) and texts[0] == corpus.generate_corpus(60, seed=5)[0]


def test_train_py_trains_on_a_streamed_file(files, tmp_path, small_rows):
    out = tmp_path / "out"
    flags = ["--from-scratch", "--train-file", str(files / "running.txt"), "--validation-file", str(files / "running.txt"),
             "--streaming", "--max-length", "16", "--vocab-size", "300", "--max-steps", "4", "--batch-size", "4",
             "--eval-steps", "4", "--save-steps", "4", "--disable-tqdm", "true", "--output-dir", str(out)]
    metrics = train.main(flags)
    assert metrics["eval_loss"] > 0 and (out / "final-model").is_dir()
    assert json.loads((out / "run_args.json").read_text())["DataArguments"]["streaming"] is True


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--streaming"], "--streaming reads the text as it trains, so its length is unknown: give --max-steps N"),
        (["--streaming", "--max-steps", "5"], "--streaming needs --validation-file (a streamed file is not split for validation)"),
        (["--preprocessing-num-workers", "0"], "--preprocessing-num-workers 0 must be 1 or more"),
    ],
)
def test_streaming_without_what_it_needs_is_one_line(files, tmp_path, capsys, flags, message):
    argv = ["--from-scratch", "--train-file", str(files / "running.txt"), *flags, "--output-dir", str(tmp_path / "out")]
    with pytest.raises(SystemExit) as exit_info:
        cli.run(train.main, argv)
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == f"error: {message}"
    assert not (tmp_path / "out").exists()


def test_bad_jsonl_and_empty_files_are_refused_before_any_dataset_is_written(tmp_path):
    (tmp_path / "bad.jsonl").write_text('{"text": "fine"}\n{"txt": "no"}\n')
    with pytest.raises(documents.SettingsError, match="bad.jsonl line 2: expected a JSON object with a 'text' field"):
        documents.text_dataset(str(tmp_path / "bad.jsonl"), False)
    (tmp_path / "blank.txt").write_text(" \n\t\n")
    with pytest.raises(documents.SettingsError, match="contains no text"):
        documents.text_dataset(str(tmp_path / "blank.txt"), True)


def test_safe_cut_is_after_a_newline_or_before_a_single_space_between_words():
    assert documents.safe_cut("one two  three") == 3  # "one| two": the double space is not a safe place
    assert documents.safe_cut("alpha\nbeta") == 6
    assert documents.safe_cut("   \n\n  ") == 0
    assert list(itertools.islice(documents.SAFE_CUT.finditer("a  b"), 1)) == []


# ----------------------------------------------------------------------------- experiments/data_scaling.py


@pytest.fixture
def shared_stand_in(tmp_path):
    """The four corpora data_scaling concatenates, made of built-in stories (and accented text)."""
    root = tmp_path / "data"
    for folder, name, seed in (("tinyshakespeare", "input.txt", 1), ("warandpeace", "input.txt", 2),
                               ("tinystories", "tinystories_sample_2MiB.txt", 3), ("wikitext-2-raw", "wiki.valid.raw", 4),
                               ("wikitext-2-raw", "wiki.test.raw", 5)):
        (root / folder).mkdir(parents=True, exist_ok=True)
        (root / folder / name).write_text("\n".join(corpus.generate_corpus(100, seed=seed)).replace("the ", "thé ") + "\n")
    return root


def test_data_scaling_builds_corpora_of_each_size_cut_at_a_line_end(shared_stand_in, tmp_path):
    from experiments import data_scaling

    small = data_scaling.build_corpus(tmp_path / "1x.txt", 0.02, str(shared_stand_in))
    large = data_scaling.build_corpus(tmp_path / "4x.txt", 0.08, str(shared_stand_in))
    assert 19_000 < small.stat().st_size <= 20_000 and 79_000 < large.stat().st_size <= 80_000
    text = large.read_text(encoding="utf-8")
    assert text.endswith("\n") and text.startswith(small.read_text(encoding="utf-8")[:10_000])
    assert text.count("thé") > 100


def test_data_scaling_measures_a_streamed_run(shared_stand_in, tmp_path):
    from experiments import data_scaling

    rows = data_scaling.main(["--base-mb", "0.02", "--sizes", "1", "--modes", "streamed", "--max-steps", "2",
                              "--data-dir", str(shared_stand_in), "--output-dir", str(tmp_path / "out")])
    (row,) = rows
    assert (row["mode"], row["size"], row["megabytes"]) == ("streamed", 1, 0.0)  # 0.02 MB, to one decimal
    assert 0 < row["data_ready_s"] < row["total_s"] and row["training_s"] > 0
    assert row["peak_rss_mb"] >= row["peak_anon_mb"] > 50  # torch alone is more than 50 MB
    assert (tmp_path / "out" / "data_scaling.md").read_text().startswith("| size | megabytes | mode |")


@pytest.mark.parametrize("flags, message", [
    (["--base-mb", "0"], "--base-mb 0.0 must be > 0"),
    (["--sizes", "0", "4"], "--sizes 0 4: each must be 1 or more"),
    (["--modes", "lazy"], "--modes lazy is unknown; choose any of cached-cold, cached-warm, streamed"),
    (["--max-steps", "0"], "--max-steps 0 must be 1 or more"),
])
def test_data_scaling_bad_flags_are_one_line(flags, message, tmp_path, capsys):
    from experiments import data_scaling

    with pytest.raises(SystemExit) as exit_info:
        cli.run(data_scaling.main, [*flags, "--output-dir", str(tmp_path / "out")])
    assert exit_info.value.code == 2 and capsys.readouterr().err.strip() == f"error: {message}"
    assert not (tmp_path / "out").exists()
