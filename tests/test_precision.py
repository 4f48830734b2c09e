"""Precision and hardware: --bf16/--fp16 training, --dtype and --torch-compile for sampling, the --device checks of
every script, and the device check (experiments/gpu_check.py and .sh).

The tests marked gpu are device tests: skipped without CUDA, run by experiments/gpu_check.sh (pytest -m gpu)."""

import json
import math
import os
import subprocess
from pathlib import Path

import pytest
import torch

import compare_models
import evaluate
import generate
import train
import visualize_generation
from config import SamplingArguments
from experiments import gpu_check
from textdiffusion import cli, models, sampling
from textdiffusion.errors import SettingsError
from textdiffusion.models import precision

ROOT = Path(__file__).resolve().parent.parent
CUDA = torch.cuda.is_available()
NO_GPU = pytest.mark.skipif(CUDA, reason="checks what happens on a machine without a GPU")
BF16_CPU = pytest.mark.skipif(CUDA or not precision.cpu_bf16_supported(), reason="torch cannot autocast to bfloat16 on this CPU")
TINY_RUN = [
    "--from-scratch", "--dataset-name", "builtin", "--max-train-samples", "200", "--max-eval-samples", "32",
    "--max-length", "32", "--line-by-line", "--vocab-size", "300", "--architecture", "roberta", "--max-steps", "4",
    "--batch-size", "8", "--logging-steps", "2", "--eval-strategy", "no", "--disable-tqdm", "true",
]


# Inductor as on a machine without a C++ compiler, its caches off so that nothing compiled earlier hides it.
BROKEN_COMPILER = {"cpp.cxx": ("/nonexistent/c++",), "force_disable_caches": True}


def on_gpu(test):
    """A device test: marked gpu (pytest -m gpu selects it), skipped on a machine without CUDA."""
    return pytest.mark.gpu(pytest.mark.skipif(not CUDA, reason="a device test: needs a CUDA GPU (experiments/gpu_check.sh)")(test))


def error_line(capsys, main, argv) -> str:
    """The one line `cli.run(main, argv)` prints for a usage error (exit code 2, no traceback)."""
    with pytest.raises(SystemExit) as stop:
        cli.run(main, argv)
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines[-1].startswith("error: ") and sum(line.startswith("error:") for line in lines) == 1
    return lines[-1]


class EncoderDtypes:
    """The dtypes the encoder's linear layers compute in, recorded by forward hooks while attached."""

    def __init__(self, model):
        self.seen = set()
        self.hooks = [m.register_forward_hook(self._record) for m in model.base_model.modules() if isinstance(m, torch.nn.Linear)]

    def _record(self, module, inputs, output):
        self.seen.add(output.dtype)

    def remove(self):
        for hook in self.hooks:
            hook.remove()


@pytest.fixture
def watched_trainer(monkeypatch):
    """train.py's Trainer, kept (`.trainer`) with hooks on its encoder (`.dtypes`) when train.main builds it."""
    watched = type("Watched", (), {})()
    build = train.training.build_trainer

    def build_and_watch(model, *args, **kwargs):
        watched.dtypes = EncoderDtypes(model)
        watched.trainer = build(model, *args, **kwargs)
        return watched.trainer

    monkeypatch.setattr(train.training, "build_trainer", build_and_watch)
    yield watched
    if hasattr(watched, "dtypes"):
        watched.dtypes.remove()


@pytest.fixture
def broken_compiler():
    """Inductor with BROKEN_COMPILER; dynamo's caches are cleared before and after, so nothing compiled earlier
    hides it and nothing compiled with it outlives it."""
    import torch._dynamo
    import torch._inductor.config

    torch._dynamo.reset()
    with torch._inductor.config.patch(BROKEN_COMPILER):
        yield
    torch._dynamo.reset()


def finite_losses(out: Path) -> list[float]:
    history = json.loads((out / "trainer_state.json").read_text())["log_history"]
    losses = [row["loss"] for row in history if "loss" in row]
    assert losses and all(math.isfinite(loss) for loss in losses)
    return losses


# ----------------------------------------------------------------------------- training


@NO_GPU
def test_fp16_training_without_cuda_fails_in_one_line_before_anything_is_written(capsys, tmp_path):
    line = error_line(capsys, train.main, [*TINY_RUN, "--fp16", "--output-dir", str(tmp_path / "run")])
    assert "--fp16 needs a CUDA GPU" in line and "cpu" in line
    assert not (tmp_path / "run").exists()


@NO_GPU
def test_bf16_training_on_a_cpu_torch_cannot_autocast_fails_in_one_line(capsys, tmp_path, monkeypatch):
    monkeypatch.setattr(precision, "cpu_bf16_supported", lambda: False)
    line = error_line(capsys, train.main, [*TINY_RUN, "--bf16", "--output-dir", str(tmp_path / "run")])
    assert line == "error: --bf16: torch cannot autocast to bfloat16 on this cpu; train without --bf16"
    assert not (tmp_path / "run").exists()


@BF16_CPU
def test_bf16_training_on_this_cpu_runs_the_encoder_in_bfloat16_with_a_finite_loss(tmp_path, watched_trainer):
    metrics = train.main([*TINY_RUN, "--bf16", "--output-dir", str(tmp_path)])
    # Accelerate autocasts only model.forward; the loss calls the encoder itself, so this shows it is autocast too.
    assert watched_trainer.dtypes.seen == {torch.bfloat16}
    assert math.isfinite(metrics["eval_loss"]) and 0 < metrics["eval_loss"] < 20
    finite_losses(tmp_path)
    run_args = json.loads((tmp_path / "run_args.json").read_text())["TrainingArguments"]
    assert run_args["bf16"] is True and run_args["use_cpu"] is True


def test_training_without_a_precision_flag_stays_float32(tmp_path, watched_trainer):
    train.main([*TINY_RUN, "--max-steps", "2", "--output-dir", str(tmp_path)])
    assert watched_trainer.dtypes.seen == {torch.float32}


@pytest.mark.slow  # about a minute on 2 busy cores: inductor compiles the forward and backward graphs
def test_torch_compile_trains_with_the_encoder_compiled(tmp_path, watched_trainer):
    from torch._dynamo.utils import counters

    graphs = counters["stats"]["unique_graphs"]
    metrics = train.main([*TINY_RUN, "--max-steps", "2", "--torch-compile", "--output-dir", str(tmp_path)])
    assert watched_trainer.trainer.model.base_model._compiled_call_impl is not None
    assert counters["stats"]["unique_graphs"] > graphs  # dynamo really compiled graphs during the run
    assert math.isfinite(metrics["eval_loss"])
    finite_losses(tmp_path)
    # Compiled in place: the saved model has the usual weight names and loads as any other.
    assert models.load_checkpoint(str(tmp_path / "final-model"), "cpu").model.config.model_type == "roberta"


def test_torch_compile_where_it_cannot_compile_is_one_line_before_anything_is_written(capsys, tmp_path, broken_compiler):
    line = error_line(capsys, train.main, [*TINY_RUN, "--torch-compile", "--output-dir", str(tmp_path / "run")])
    assert line.startswith("error: --torch-compile: torch.compile (inductor) does not work on cpu here: ")
    assert "C++ compiler" in line and line.endswith("; run without --torch-compile")
    assert not (tmp_path / "run").exists()


# ----------------------------------------------------------------------------- sampling and the bound


def test_dtype_choices_are_the_precision_table():
    actions = cli.parser_for(SamplingArguments)._option_string_actions
    assert tuple(actions["--dtype"].choices) == tuple(precision.DTYPES) == ("float32", "bfloat16", "float16")


@NO_GPU
@pytest.mark.parametrize("script", [generate, evaluate, visualize_generation])
def test_float16_sampling_without_cuda_is_one_line(capsys, tiny_checkpoint, script):
    line = error_line(capsys, script.main, ["--checkpoint", tiny_checkpoint, "--dtype", "float16"])
    assert line.startswith("error: dtype float16 needs a CUDA GPU, and device cpu is not one; use dtype float32")


@NO_GPU
def test_bfloat16_sampling_on_a_cpu_torch_cannot_autocast_is_one_line(capsys, tiny_checkpoint, monkeypatch):
    monkeypatch.setattr(precision, "cpu_bf16_supported", lambda: False)
    line = error_line(capsys, generate.main, ["--checkpoint", tiny_checkpoint, "--dtype", "bfloat16"])
    assert "dtype bfloat16 needs a CPU or GPU that torch can autocast to bfloat16" in line and line.endswith("use dtype float32")


@BF16_CPU
def test_bfloat16_sampling_on_this_cpu_autocasts_and_leaves_no_mask_tokens(tiny_checkpoint):
    settings = sampling.GenerationSettings(num_samples=3, max_length=16, seed=1)
    for dtype, expected in ((None, torch.float32), ("bfloat16", torch.bfloat16)):  # the CPU's default stays float32
        checkpoint = models.load_checkpoint(tiny_checkpoint, "cpu", dtype=dtype)
        dtypes = EncoderDtypes(checkpoint.model)
        out = sampling.generate(checkpoint, settings, progress=False)
        dtypes.remove()
        assert dtypes.seen == {expected}
        assert not (out.ids == checkpoint.tokenizer.mask_token_id).any()
        assert checkpoint.model.dtype == torch.float32  # autocast, not a cast: the weights stay float32


@BF16_CPU
def test_evaluate_bound_under_bfloat16_is_close_to_float32(tiny_checkpoint):
    argv = ["--checkpoint", tiny_checkpoint, "--num-samples", "0", "--judge", "none", "--max-eval-samples", "8",
            "--num-t-samples", "2", "--eval-batch-size", "8"]
    full = evaluate.main(argv)[0]["nats_per_token"]
    half = evaluate.main([*argv, "--dtype", "bfloat16"])[0]["nats_per_token"]
    assert half != full  # the bound really ran under autocast
    assert abs(half - full) < 0.02 * full


def test_loaded_checkpoints_use_sdpa_attention_where_their_class_has_it(tiny_checkpoint, minilm_dir, story_tokenizer, tmp_path):
    """transformers 5 loads SDPA attention by default where the architecture implements it; DeBERTa has none."""
    assert models.load_checkpoint(tiny_checkpoint, "cpu").model.config._attn_implementation == "sdpa"  # RoBERTa
    assert models.load_checkpoint(minilm_dir, "cpu").model.config._attn_implementation == "sdpa"  # BERT
    models.build_model("diffusion", "tiny", story_tokenizer, 32, architecture="deberta").save_pretrained(tmp_path)
    story_tokenizer.save_pretrained(tmp_path)
    deberta = models.load_checkpoint(str(tmp_path), "cpu").model
    assert not deberta._supports_sdpa and deberta.config._attn_implementation == "eager"


def test_torch_compile_sampling_gives_the_same_tokens_as_without(tiny_checkpoint, capsys):
    argv = ["--checkpoint", tiny_checkpoint, "--device", "cpu", "--hide-steps", "--num-samples", "2", "--max-length", "16",
            "--sampling", "greedy", "--strategy", "confidence"]
    plain = generate.main(argv)
    assert generate.main([*argv, "--torch-compile"]) == plain
    compiled = models.load_checkpoint(tiny_checkpoint, "cpu", compile=True)
    assert compiled.compiled and compiled.model.base_model._compiled_call_impl is not None


def test_torch_compile_sampling_where_it_cannot_compile_is_one_line(capsys, tiny_checkpoint, broken_compiler):
    line = error_line(capsys, generate.main, ["--checkpoint", tiny_checkpoint, "--torch-compile"])
    assert line.startswith("error: torch_compile: torch.compile (inductor) does not work on cpu here: ")
    assert line.endswith("; run without torch_compile")


def test_a_compiler_failure_at_the_first_pass_is_one_line(tiny_checkpoint):
    """The probe passed, then the model's own compilation fails (here: the compiler goes missing in between)."""
    import torch._dynamo
    import torch._inductor.config

    checkpoint = models.load_checkpoint(tiny_checkpoint, "cpu", compile=True)
    torch._dynamo.reset()
    try:
        with torch._inductor.config.patch(BROKEN_COMPILER), pytest.raises(
                SettingsError, match=r"^torch_compile: torch.compile failed \(InvalidCxxCompiler: .*\); run without torch_compile$"):
            sampling.generate(checkpoint, sampling.GenerationSettings(num_samples=1, max_length=8), progress=False)
    finally:
        torch._dynamo.reset()


# ----------------------------------------------------------------------------- devices


@NO_GPU
@pytest.mark.parametrize("script", ["generate", "visualize_generation", "compare_models", "evaluate", "gpu_check"])
def test_device_cuda_without_cuda_is_one_line_and_writes_nothing(capsys, tmp_path, tiny_checkpoint, tiny_gpt2_checkpoint, script):
    out = tmp_path / "out"
    argv = {
        "generate": (generate, ["--checkpoint", tiny_checkpoint, "--output", str(out / "samples.jsonl")]),
        "visualize_generation": (visualize_generation, ["--checkpoint", tiny_checkpoint, "--output-dir", str(out)]),
        "compare_models": (compare_models, ["--checkpoint", tiny_checkpoint, "--gpt2-checkpoint", tiny_gpt2_checkpoint,
                                            "--output", str(out / "comparison.gif")]),
        "evaluate": (evaluate, ["--checkpoint", tiny_checkpoint, "--judge", "none", "--output-dir", str(out)]),
        "gpu_check": (gpu_check, ["--tiny", "--output-dir", str(out)]),
    }
    module, args = argv[script]
    line = error_line(capsys, module.main, [*args, "--device", "cuda"])
    assert line == "error: device cuda requested but CUDA is not available; use device cpu"
    assert not out.exists()


def test_a_device_that_is_not_one_is_one_line(capsys, tiny_checkpoint):
    line = error_line(capsys, generate.main, ["--checkpoint", tiny_checkpoint, "--device", "gpu0"])
    assert line == "error: device 'gpu0' is not a device; use cpu, cuda or cuda:N"


# ----------------------------------------------------------------------------- the device check


def test_gpu_check_cpu_path_prints_positive_tokens_per_s_and_no_mfu(capsys, tmp_path):
    dtype = "bfloat16" if precision.cpu_bf16_supported() else "float32"
    rows = gpu_check.main(["--device", "cpu", "--tiny", "--dtype", dtype, "--sample-batch-sizes", "1", "8",
                           "--output-dir", str(tmp_path)])
    printed = capsys.readouterr().out.splitlines()
    for model in ("quick-test", "minilm"):
        training = [line for line in printed if line.startswith(f"training {model}: ")]
        assert len(training) == 1 and float(training[0].split()[2]) > 0 and "tokens/s" in training[0]
        assert training[0].endswith("MFU not available on cpu")
        for batch in (1, 8):
            [line] = [line for line in printed if line.startswith(f"sampling {model} batch {batch}: ")]
            assert float(line.split()[4]) > 0 and line.split()[5] == "tokens/s" and "0 masks left" in line
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert report["dtype"] == dtype and len(report["rows"]) == len(rows) == 6
    assert all(row["tokens_per_s"] > 0 for row in rows) and all(row.get("mfu") is None for row in rows)
    assert all(math.isfinite(row["loss"]) for row in rows if row["what"] == "training")


@pytest.mark.parametrize("name, tflops", [("NVIDIA H100 80GB HBM3", 989), ("NVIDIA H100 PCIe", 756), ("NVIDIA H200", 989),
                                          ("NVIDIA A100-SXM4-80GB", 312), ("NVIDIA L40S", 362), ("NVIDIA L4", 121),
                                          ("NVIDIA GeForce GTX 1080", None)])
def test_mfu_divides_by_the_known_gpus_peak_and_is_not_reported_for_an_unknown_one(monkeypatch, name, tflops):
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: name)
    device = torch.device("cuda")
    assert gpu_check.peak_bf16_flops(device) == (name, tflops and tflops * 1e12)
    mfu, text = gpu_check.mfu_text(0.5 * (tflops or 1) * 1e12, device, "bfloat16")
    if tflops:
        assert mfu == pytest.approx(0.5) and text.startswith("MFU 50.00% of")
    else:
        assert mfu is None and text == f"MFU not reported: peak bf16 FLOPs of {name} unknown"
    assert gpu_check.mfu_text(1e12, torch.device("cpu"), "bfloat16") == (None, "MFU not available on cpu")


def test_training_flops_count_the_lm_head_only_at_the_masked_share(tiny_mlm):
    """6 x weights per token, the tied decoder's product included, its share scaled by the positions masked."""
    config = tiny_mlm.config
    head = sum(p.numel() for n, p in tiny_mlm.named_parameters() if not n.startswith(tiny_mlm.base_model_prefix))
    head += config.vocab_size * config.hidden_size  # the tied decoder: no parameter of its own, but a product
    full, none = (gpu_check.training_flops_per_token(tiny_mlm, 48, share) for share in (1.0, 0.0))
    assert full - none == 6 * head
    attention = 12 * config.num_hidden_layers * config.hidden_size * 48
    assert none - attention == 6 * (sum(p.numel() for n, p in tiny_mlm.base_model.named_parameters() if "embeddings" not in n))


@pytest.mark.slow
def test_gpu_check_sh_cpu_path_runs_every_step(tmp_path):
    env = dict(os.environ, OUT_DIR=str(tmp_path), PYTHON=str(ROOT / ".venv/bin/python") if (ROOT / ".venv/bin/python").exists() else "python3")
    run = subprocess.run(["bash", str(ROOT / "experiments/gpu_check.sh"), "--cpu"], capture_output=True, text=True, env=env,
                         cwd=tmp_path, timeout=900)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "skipped" in run.stdout  # the GPU tests, skipped on a CPU with that reason
    assert "eval_loss" in run.stdout and (tmp_path / "quick-test/final-model").is_dir()
    assert len((tmp_path / "samples.jsonl").read_text().splitlines()) == 8
    assert "training quick-test: " in run.stdout and "MFU not available on cpu" in run.stdout
    assert json.loads((tmp_path / "gpu_check.json").read_text())["rows"]


# ----------------------------------------------------------------------------- on a GPU


@on_gpu
def test_sampling_on_cuda_leaves_no_mask_tokens(tiny_checkpoint):
    checkpoint = models.load_checkpoint(tiny_checkpoint, "cuda")
    assert checkpoint.dtype == ("bfloat16" if torch.cuda.is_bf16_supported() else "float32")
    out = sampling.generate(checkpoint, sampling.GenerationSettings(num_samples=8, max_length=32, seed=2), progress=False)
    assert next(checkpoint.model.parameters()).device.type == "cuda"
    assert out.ids.device.type == "cpu" and not (out.ids == checkpoint.tokenizer.mask_token_id).any()
    assert len(out.texts) == 8


@on_gpu
def test_cached_block_sampling_equals_uncached_on_cuda(story_tokenizer, tmp_path):
    """float32: the cache is exact arithmetic, but bfloat16 rounds differently for the different product shapes."""
    models.build_model("diffusion", "tiny", story_tokenizer, 32).save_pretrained(tmp_path)
    story_tokenizer.save_pretrained(tmp_path)
    models.DiffusionConfig(line_by_line=True, max_length=32, block_size=8).save(tmp_path)
    checkpoint = models.load_checkpoint(str(tmp_path), "cuda", dtype="float32")
    texts = [sampling.generate(checkpoint, sampling.GenerationSettings(num_samples=4, seed=4, kv_cache=cache, prefix="the",
                                                                       max_length=32), progress=False) for cache in (True, False)]
    assert torch.equal(texts[0].ids, texts[1].ids)
    assert not (texts[0].ids == story_tokenizer.mask_token_id).any()


@on_gpu
@pytest.mark.parametrize("flag, dtype", [("--bf16", torch.bfloat16), ("--fp16", torch.float16)])
def test_mixed_precision_training_step_on_cuda_is_finite(tmp_path, watched_trainer, flag, dtype):
    if flag == "--bf16" and not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bfloat16")
    metrics = train.main([*TINY_RUN, flag, "--output-dir", str(tmp_path)])
    assert watched_trainer.trainer.args.device.type == "cuda"
    assert watched_trainer.dtypes.seen == {dtype}
    assert math.isfinite(metrics["eval_loss"])
    finite_losses(tmp_path)


@on_gpu
def test_a_gpu_index_past_the_last_is_one_line(capsys, tiny_checkpoint):
    count = torch.cuda.device_count()
    line = error_line(capsys, generate.main, ["--checkpoint", tiny_checkpoint, "--device", f"cuda:{count}"])
    assert line == f"error: device cuda:{count}: there are only {count} CUDA devices; use device cuda:0 to cuda:{count - 1}"
