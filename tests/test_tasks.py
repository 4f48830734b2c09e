"""The offline lm-eval tasks and evaluate.py --tasks: both models scored by the same harness."""

import json

import pytest

import evaluate
import train
from textdiffusion import cli
from textdiffusion.data import corpus
from textdiffusion.metrics import harness, tasks

TINY = ["--from-scratch", "--dataset-name", "builtin", "--max-train-samples", "200", "--max-eval-samples", "40",
        "--max-length", "48", "--line-by-line", "--vocab-size", "300", "--batch-size", "8", "--disable-tqdm", "true",
        "--max-steps", "4", "--eval-strategy", "no", "--save-strategy", "no"]


def test_cloze_and_choice_documents_are_cut_from_each_passage():
    text = "the girl had a red ball and she gave the red ball to tom ."
    (cloze,) = tasks.cloze_docs([text])
    assert cloze == {"context": "the girl had a red ball and she gave the red ball to", "continuation": " tom"}
    texts = [f"story number {i} goes on and on until it ends with word{i} and more{i} words{i} ." for i in range(6)]
    docs = tasks.choice_docs(texts, seed=3)
    assert len(docs) == 6
    for text, doc in zip(texts, docs):
        assert len(doc["choices"]) == 4 and len(set(doc["choices"])) == 4
        assert doc["context"] + doc["choices"][doc["label"]] == text
    assert len({doc["label"] for doc in docs}) > 1  # the real ending is not always in the same place
    assert tasks.passages(["Short one. " + "A sentence with enough words to count as a passage here. " * 2], False) == [
        "A sentence with enough words to count as a passage here."] * 2


def test_carry_documents_swap_one_of_the_openings_slots_in_the_ending():
    stories = corpus.generate_corpus(40, seed=5)
    docs = tasks.carry_docs(stories, seed=1)
    assert len(docs) >= 30
    kinds = (set(corpus.NAMES), set(corpus.COLOURS), set(corpus.OBJECTS))
    for story, doc in zip(stories, docs):
        real = doc["choices"][doc["label"]]
        assert story.startswith(doc["context"]) and (doc["context"] + real).split() == story.split()
        opening = doc["context"].split(" .")[0].split()
        swapped = []
        for choice in doc["choices"]:
            changed = [(a, b) for a, b in zip(real.split(), choice.split()) if a != b]
            if choice != real:
                # every occurrence of one opening value replaced by another of its kind that the story never names
                (old, new), *_ = changed
                assert all(pair == (old, new) for pair in changed) and old in opening and new not in story.split()
                swapped.append(next(i for i, kind in enumerate(kinds) if old in kind and new in kind))
        assert sorted(swapped) == [0, 1, 2]  # the person, the colour and the object, once each
    assert len({doc["label"] for doc in docs}) == 4


def test_the_gpt2_rows_start_with_the_start_token_and_nothing_after_the_context(story_tokenizer):
    bos_only = harness.bos_only_tokenizer(story_tokenizer)
    plain = story_tokenizer("the girl", add_special_tokens=False)["input_ids"]
    assert bos_only("the girl")["input_ids"] == [story_tokenizer.bos_token_id, *plain]
    assert story_tokenizer("the girl")["input_ids"][-1] == story_tokenizer.eos_token_id  # the original is untouched


@pytest.fixture(scope="module")
def trained_pair(tmp_path_factory):
    root = tmp_path_factory.mktemp("pair")
    train.main([*TINY, "--output-dir", str(root / "diffusion")])
    train.main([*TINY, "--objective", "ar", "--output-dir", str(root / "ar")])
    return root / "diffusion" / "final-model", root / "ar" / "final-model"


def test_evaluate_tasks_scores_both_models_with_the_harness(trained_pair, tmp_path, capsys):
    diffusion, ar = trained_pair
    rows = evaluate.main(["--checkpoint", str(diffusion), "--ar-checkpoint", str(ar), "--tasks", "cloze", "choice", "carry",
                          "--max-eval-samples", "24", "--mc-num", "2", "--output-dir", str(tmp_path / "out")])
    assert [(r["task"], r["metric"]) for r in rows] == [("textdiffusion_cloze", "acc"), ("textdiffusion_cloze", "perplexity"),
                                                        ("textdiffusion_choice", "acc"), ("textdiffusion_choice", "acc_norm"),
                                                        ("textdiffusion_carry", "acc"), ("textdiffusion_carry", "acc_norm")]
    for row in rows:
        assert row["documents"] == 24
        if row["metric"].startswith("acc"):
            assert 0 <= row["diffusion"] <= 1 and 0 <= row["GPT-2"] <= 1
        else:
            assert row["diffusion"] > 1 and row["GPT-2"] > 1
    saved = json.loads((tmp_path / "out" / "tasks.json").read_text())
    assert saved["rows"] == rows and saved["arguments"]["tasks"] == ["cloze", "choice", "carry"]
    documents = (tmp_path / "out" / "task_files" / "cloze.jsonl").read_text().splitlines()
    held_out = corpus.generate_corpus(24, seed=1)  # the validation stories, never the training ones
    assert all(json.loads(line)["context"] in " ".join(held_out) for line in documents)
    assert "textdiffusion_choice" in capsys.readouterr().out


@pytest.mark.parametrize("flags, message", [
    (["--tasks", "lambada"], "--tasks lambada is unknown; choose any of cloze, choice, carry (or TASK=FILE.jsonl)"),
    (["--tasks", "cloze=missing.jsonl"], "--tasks cloze=missing.jsonl: no such file missing.jsonl"),
    (["--tasks", "carry", "--validation-file", "README.md"],
     "--tasks carry is built from the built-in stories; leave out --validation-file, or give carry=FILE.jsonl"),
    (["--tasks", "cloze", "--mc-num", "0"], "--mc-num 0 must be 1 or more"),
])
def test_evaluate_tasks_bad_input_is_one_line(trained_pair, flags, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.run(evaluate.main, ["--checkpoint", str(trained_pair[0]), *flags])
    assert exit_info.value.code == 2 and capsys.readouterr().err.strip().splitlines()[-1] == f"error: {message}"


def test_a_diffusion_checkpoint_given_as_the_gpt2_is_one_line(trained_pair, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.run(evaluate.main, ["--checkpoint", str(trained_pair[0]), "--ar-checkpoint", str(trained_pair[0]), "--tasks", "cloze"])
    assert exit_info.value.code == 2 and capsys.readouterr().err.strip().splitlines()[-1].startswith("error: ")


@pytest.mark.parametrize("task, lines, message", [
    ("cloze", ['{"context": "tom had a"}'], "line 1: the field 'continuation' is missing (a cloze line needs context, continuation)"),
    ("choice", ['{"context": "a", "choices": [" b", " c"], "label": 0}', '{"context": "a", "choices": [" b"]}'],
     "line 2: the field 'label' is missing (a choice line needs context, choices, label)"),
    ("choice", ['{"context": "a", "choices": [" b", " c"], "label": 2}'], "line 1: label 2 is not an index of its 2 choices"),
    ("choice", ['{"context": "a", "choices": [" b", " c"], "label": "0"}'], "line 1: 'label' must be a int, not str"),
    ("cloze", ["not json"], "line 1 is not JSON"),
])
def test_a_bad_task_file_is_one_line_naming_its_line_and_field(trained_pair, tmp_path, capsys, task, lines, message):
    path = tmp_path / "mine.jsonl"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(SystemExit) as exit_info:
        cli.run(evaluate.main, ["--checkpoint", str(trained_pair[0]), "--tasks", f"{task}={path}", "--output-dir", str(tmp_path / "out")])
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert exit_info.value.code == 2 and error.startswith(f"error: task file {path} ") and message in error
    assert not (tmp_path / "out").exists()


def test_a_users_own_task_file_is_scored(trained_pair, tmp_path):
    path = tmp_path / "mine.jsonl"
    docs = [{"context": "tom found a red ball . tom gave the red", "continuation": " ball"},
            {"context": "lily saw a blue kite . lily liked the blue", "continuation": " kite"}]
    path.write_text("".join(json.dumps(doc) + "\n" for doc in docs))
    rows = evaluate.main(["--checkpoint", str(trained_pair[0]), "--tasks", f"cloze={path}", "--mc-num", "2"])
    assert [(r["task"], r["metric"], r["documents"]) for r in rows] == [("textdiffusion_cloze", "acc", 2), ("textdiffusion_cloze", "perplexity", 2)]
    assert 0 <= rows[0]["diffusion"] <= 1
