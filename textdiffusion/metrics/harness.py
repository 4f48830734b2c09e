"""An lm-evaluation-harness model type for this toolkit's checkpoints: `textdiffusion`.

    from textdiffusion.metrics import harness          # registers the model type with lm_eval
    lm_eval.simple_evaluate(model="textdiffusion", model_args="checkpoint=results/final-model,mc_num=64", tasks=[...])

or `python evaluate.py --tasks ...`. loglikelihood(context, continuation) is the masked-diffusion bound of the
continuation given the context (`likelihood.continuation_bound`: stratified Monte Carlo over `mc_num` masks, as
LLaDA's `mc_num` and dllm's MDLM harness), negated, so it is a lower bound on the log-likelihood; is_greedy is
whether greedy confidence decoding writes the continuation. loglikelihood_rolling scores a text of any length in
windows of the model's positions (lm-eval's rolling windows: every token once, each window given the tokens
before it). generate_until samples through `sampling.generate`, the call generate.py makes, with the checkpoint's
generate.py defaults (any of its settings as model_args: strategy=confidence,steps=16 ...), and cuts the text at
the first stop sequence. Block-diffusion checkpoints are not scored (their bound needs the block layout).
"""

import dataclasses
import os
import typing

from lm_eval.api.model import LM
from lm_eval.api.registry import register_model
from lm_eval.utils import get_rolling_token_windows, make_disjoint_window

from textdiffusion.data.tokenization import end_token_id, start_token_id
from textdiffusion.errors import SettingsError
from textdiffusion.metrics.likelihood import continuation_bound, greedy_continuation
from textdiffusion.models import load_checkpoint
from textdiffusion.models.heads import max_positions
from textdiffusion.sampling import GenerationSettings, generate

BOOTSTRAP_ITERS = 1000  # draws for the standard error of a metric without a closed form (the cloze perplexity)
SETTING_TYPES = {f.name: f.type for f in dataclasses.fields(GenerationSettings)}


@register_model("textdiffusion")
class DiffusionLM(LM):
    """lm-eval's LM for a masked-diffusion checkpoint (a train.py final-model, or any local masked LM)."""

    def __init__(self, checkpoint: str, mc_num: int = 128, batch_size: int = 64, seed: int = 0, device: str = "cpu",
                 **generation) -> None:
        super().__init__()
        if int(mc_num) < 1:
            raise SettingsError(f"mc_num {mc_num} must be 1 or more")
        try:
            self.checkpoint = checkpoint if not isinstance(checkpoint, str) else load_checkpoint(checkpoint, device)
        except SettingsError as err:
            if "not a masked LM" not in str(err):
                raise
            raise SettingsError(f"{err}; score a causal LM (the matched GPT-2) with lm-eval's own 'hf' model type") from None
        if self.checkpoint.block_size:
            raise SettingsError(f"{self.checkpoint.path} is a block-diffusion checkpoint; the harness scores plain masked "
                                "diffusion checkpoints only")
        self.mc_num, self.batch_size, self.seed = int(mc_num), int(batch_size), int(seed)
        unknown = sorted(set(generation) - set(SETTING_TYPES))
        if unknown:
            raise SettingsError(f"unknown model_args {', '.join(unknown)}; give mc_num, batch_size, seed, device or "
                                "generate.py settings (strategy, steps, temperature ...)")
        self.generation = {name: _typed(SETTING_TYPES[name], value) for name, value in generation.items()}
        self.tokenizer = self.checkpoint.tokenizer
        self.length = min(self.checkpoint.diffusion_config.max_length or max_positions(self.checkpoint.model),
                          max_positions(self.checkpoint.model))

    @classmethod
    def create_from_arg_string(cls, arg_string, additional_config=None):
        args = dict(part.split("=", 1) for part in arg_string.split(",") if part.strip())
        args.update({k: v for k, v in (additional_config or {}).items() if v is not None and k in ("batch_size", "device")})
        if "checkpoint" not in args and "pretrained" in args:
            args["checkpoint"] = args.pop("pretrained")
        if "checkpoint" not in args:
            raise SettingsError("model_args needs checkpoint=PATH (a train.py final-model)")
        return cls(**args)

    def _ids(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"] if text else []

    def _pairs(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        """Ids of context and continuation, the continuation's as they read after the context (lm-eval's split)."""
        whole, head = self._ids(context + continuation), self._ids(context)
        if whole[: len(head)] == head:
            return head, whole[len(head):]
        return head, self._ids(continuation)

    def loglikelihood(self, requests, disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        pairs = [self._pairs(*request.args) for request in requests]
        with self.checkpoint.forward_context():
            bounds = continuation_bound(self.checkpoint.model, self.tokenizer, pairs, self.length, self.mc_num, self.seed, self.batch_size)
            greedy = greedy_continuation(self.checkpoint.model, self.tokenizer, pairs, self.length)
        return [(-nats, is_greedy) for (nats, _), is_greedy in zip(bounds, greedy)]

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        results = []
        for request in requests:
            (text,) = request.args
            windows = [make_disjoint_window(window) for window in get_rolling_token_windows(
                token_list=self._ids(text), prefix_token=start_token_id(self.tokenizer), max_seq_len=self.length - 2, context_len=1)]
            # The rows put <s> first themselves: a window's context that is only the prefix token is empty.
            pairs = [(context[1:] if context[:1] == [start_token_id(self.tokenizer)] else context, predicted)
                     for context, predicted in windows]
            with self.checkpoint.forward_context():
                bounds = continuation_bound(self.checkpoint.model, self.tokenizer, pairs, self.length, self.mc_num, self.seed, self.batch_size)
            results.append(-sum(nats for nats, _ in bounds))
        return results

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        texts = []
        for request in requests:
            context, options = request.args
            options = dict(options or {})
            until = options.get("until") or []
            until = [until] if isinstance(until, str) else list(until)
            settings = {**self.generation}
            if options.get("do_sample") is False or options.get("temperature") == 0:
                settings["sampling"] = "greedy"
            elif options.get("temperature"):
                settings["temperature"] = float(options["temperature"])
            prompt = len(self._ids(context)) + 1
            wanted = int(options.get("max_gen_toks", self.length - prompt))
            settings = GenerationSettings(prefix=context, num_samples=1, seed=self.seed,
                                          max_length=min(self.length, prompt + max(1, wanted)), **settings)
            text = continuation_text(self.checkpoint, settings)
            cuts = [text.index(stop) for stop in until if stop and stop in text]
            texts.append(text[: min(cuts)] if cuts else text)
        return texts


def continuation_text(checkpoint, settings: GenerationSettings) -> str:
    """The text generate() writes after `settings.prefix` (the generated positions decoded, the prefix's not)."""
    out = generate(checkpoint, settings, progress=False)
    tokenizer = checkpoint.tokenizer
    prompt = len(tokenizer(settings.prefix, add_special_tokens=False)["input_ids"]) + 1 if settings.prefix else 1
    generated = out.ids[0, prompt:].tolist()
    end = end_token_id(tokenizer)
    if checkpoint.line_by_line and end in generated:
        generated = generated[: generated.index(end)]
    # A piece that starts a word carries its space (byte-level BPE): kept, as the continuation of the context.
    return tokenizer.decode(generated, skip_special_tokens=True)


def _typed(kind, value):
    """A model_args string as the GenerationSettings field's type (int, float or bool; a choice stays a string)."""
    if not isinstance(value, str):
        return value
    kinds = set(typing.get_args(kind)) | {kind}
    if bool in kinds:
        return value.lower() in ("1", "true", "yes")
    for cast in (int, float):
        if cast in kinds:
            try:
                return cast(value)
            except ValueError:
                raise SettingsError(f"model_args: {value!r} is not a number") from None
    return value


def bos_only_tokenizer(tokenizer):
    """A copy of a causal LM's tokenizer whose special tokens are only the start token before the text, so that
    lm-eval's HF model type (add_bos_token) gives GPT-2 the `<s> context continuation` rows it was trained on, as
    the diffusion rows are, and no end token after the context."""
    import copy
    import json as json_module

    from tokenizers import Tokenizer

    copied = copy.deepcopy(tokenizer)
    start = start_token_id(tokenizer)
    state = json_module.loads(copied.backend_tokenizer.to_str())
    token = tokenizer.convert_ids_to_tokens(start)
    state["post_processor"] = {"type": "TemplateProcessing", "single": [{"SpecialToken": {"id": token, "type_id": 0}},
                               {"Sequence": {"id": "A", "type_id": 0}}], "pair": [{"SpecialToken": {"id": token, "type_id": 0}},
                               {"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
                               "special_tokens": {token: {"id": token, "ids": [start], "tokens": [token]}}}
    copied._tokenizer = Tokenizer.from_str(json_module.dumps(state))
    return copied


def run_tasks(checkpoint, ar_path: str | None, files: dict, mc_num: int, seed: int, batch_size: int) -> list[dict]:
    """lm-eval on the task files (tasks.write_task_files) for the diffusion checkpoint and, with `ar_path`, the
    matched GPT-2 through lm-eval's own HF model type: one row per task and metric."""
    import lm_eval
    from lm_eval.models.huggingface import HFLM

    from textdiffusion.metrics.tasks import task_config
    from textdiffusion.models import load_causal_lm

    configs = [task_config(task, path) for task, path in files.items()]
    models_to_run = {"diffusion": DiffusionLM(checkpoint, mc_num=mc_num, batch_size=batch_size, seed=seed)}
    if ar_path:
        model, tokenizer = load_causal_lm(ar_path)
        models_to_run["GPT-2"] = HFLM(pretrained=model.eval(), tokenizer=bos_only_tokenizer(tokenizer), add_bos_token=True,
                                      batch_size=batch_size, max_length=max_positions(model))
    # lm-eval bootstraps the perplexity's standard error in a forked process pool, and a fork of a process running
    # torch's threads can deadlock (it did, in this project's tests): bootstrap in this process, 1000 draws.
    os.environ.setdefault("DISABLE_MULTIPROC", "1")
    results = {name: lm_eval.simple_evaluate(model=lm, tasks=configs, random_seed=seed, numpy_random_seed=seed,
                                             torch_random_seed=seed, fewshot_random_seed=seed, log_samples=False,
                                             bootstrap_iters=BOOTSTRAP_ITERS)["results"]
               for name, lm in models_to_run.items()}
    rows = []
    for config in configs:
        task = config["task"]
        for metric in (m["metric"] for m in config["metric_list"]):
            row = {"task": task, "documents": sum(1 for _ in open(config["dataset_kwargs"]["data_files"]["test"])), "metric": metric}
            for name, result in results.items():
                row[name] = result[task][f"{metric},none"]
                row[f"{name} stderr"] = result[task].get(f"{metric}_stderr,none")
            rows.append(row)
    return rows


def format_task_rows(rows: list[dict]) -> str:
    """A plain-text table of run_tasks' rows: task, documents, metric, each model's value with its standard error."""
    names = [key for key in rows[0] if key not in ("task", "documents", "metric") and not key.endswith(" stderr")]
    lines = [["task", "documents", "metric", *names]]
    for row in rows:
        cells = [f"{row[name]:.3f} +- {row[f'{name} stderr']:.3f}" if isinstance(row.get(f"{name} stderr"), float) else f"{row[name]:.3f}"
                 for name in names]
        lines.append([row["task"], str(row["documents"]), row["metric"], *cells])
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(line, widths)) for line in lines)
