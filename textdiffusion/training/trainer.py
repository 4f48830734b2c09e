"""The Trainer of masked diffusion: its loss, the loss per mask level in the logs, and evaluation at fixed levels
with the ELBO bound.
"""

import math

import torch
from torch.utils.data import DataLoader
from transformers import Trainer
from transformers.modeling_outputs import MaskedLMOutput

from textdiffusion.blocks.training import masked_logits
from textdiffusion.masking.loss import masked_diffusion_loss
from textdiffusion.models.compilation import compile_encoder

NUM_LEVELS = 10  # loss is logged per mask-rate bucket (0, 0.1], (0.1, 0.2], ... (0.9, 1.0]
LEVEL_NAMES = [f"{(i + 1) / NUM_LEVELS:.1f}" for i in range(NUM_LEVELS)]


class DiffusionTrainer(Trainer):
    """Masked-diffusion loss, loss per mask level in the logs, evaluation with an unbiased estimate of the ELBO bound.

    `data_collator` masks the training batches; `eval_collator` (a DiffusionCollator with `evaluation` and a seed)
    masks the evaluation batches, the same way at every evaluation. `banned_ids` get no probability in the
    loss; `block_size` is block diffusion's (None: one masking unit per row).
    """

    def __init__(self, *args, loss_weighting: str = "uniform", banned_ids=(), eval_collator=None, block_size=None,
                 new_weights_learning_rate: float | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.new_weights_learning_rate = new_weights_learning_rate
        self.loss_weighting = loss_weighting
        self.block_size = block_size
        self.banned_ids = torch.tensor(sorted(banned_ids), dtype=torch.long)
        self.eval_collator = eval_collator
        # Our loss is a mean over this rank's tokens: let the Trainer divide it by the accumulation steps and
        # never rescale it by the number of processes.
        self.model_accepts_loss_kwargs = False
        self.loss_is_scaled_for_ga = False
        self._levels = {True: torch.zeros(3, NUM_LEVELS, dtype=torch.float64), False: torch.zeros(3, NUM_LEVELS, dtype=torch.float64)}
        if self.args.torch_compile:
            # Accelerate compiles the whole model, whose forward our loss never calls (it runs the encoder, then the
            # head at the masked positions only): the encoder is compiled in place.
            compile_encoder(self.model, self.args.torch_compile_backend, self.args.torch_compile_mode)

    def create_optimizer(self, model=None):
        """The Trainer's AdamW; the weights the loaded checkpoint lacked (`model.newly_initialised`) get
        `new_weights_learning_rate` in groups of their own, keeping their weight decay."""
        optimizer = super().create_optimizer(model)
        new = new_weight_names(self.model)
        if self.new_weights_learning_rate is None or not new or getattr(self, "_new_weights_grouped", False):
            return optimizer
        new_ids = {id(p) for n, p in self.model.named_parameters() if _checkpoint_name(n) in new}
        for group in list(optimizer.param_groups):
            moved = [p for p in group["params"] if id(p) in new_ids]
            if moved:
                group["params"] = [p for p in group["params"] if id(p) not in new_ids]
                optimizer.add_param_group({**{k: v for k, v in group.items() if k != "params"}, "params": moved,
                                           "lr": self.new_weights_learning_rate})
        optimizer.param_groups[:] = [g for g in optimizer.param_groups if g["params"]]
        self._new_weights_grouped = True
        return optimizer

    def autocast_smart_context_manager(self, cache_enabled: bool | None = True):
        """--bf16/--fp16: autocast around the whole loss. Accelerate autocasts only `model.forward`, and our loss
        calls the encoder and the head directly (masked_logits), so without this they would run in float32."""
        return self.accelerator.autocast()

    def get_eval_dataloader(self, eval_dataset=None) -> DataLoader:
        """The Trainer's evaluation batches, collated by the eval collator (the training one stays the Trainer's)."""
        if self.eval_collator is None:
            return super().get_eval_dataloader(eval_dataset)
        dataset = self.eval_dataset if eval_dataset is None else eval_dataset
        loader = DataLoader(
            dataset, batch_size=self.args.eval_batch_size, sampler=self._get_eval_sampler(dataset),
            collate_fn=self.eval_collator, drop_last=self.args.dataloader_drop_last,
            num_workers=self.args.dataloader_num_workers, pin_memory=self.args.dataloader_pin_memory,
            persistent_workers=self.args.dataloader_persistent_workers,
            multiprocessing_context=self.args.dataloader_multiprocessing_context,
            prefetch_factor=self.args.dataloader_prefetch_factor, in_order=self.args.dataloader_in_order,
        )
        return self.accelerator.prepare(loader)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        labels = inputs.pop("labels")
        weight = inputs.pop("loss_weight")
        num_maskable = inputs.pop("num_maskable")
        num_counted = inputs.pop("num_counted")
        rate = inputs.pop("mask_rate")
        inputs.pop("mask_time")
        # One unit per row, or per block (noisy half only): each unit's masked tokens weighted by its own time.
        # The LM head only at the masked positions (the loss reads no others).
        logits, targets, unit = masked_logits(model, inputs["input_ids"], inputs["attention_mask"], labels, self.block_size)
        outputs = MaskedLMOutput(logits=logits)  # (masked positions, vocab): evaluation reads only the loss
        loss, ce_sum, count = masked_diffusion_loss(logits, targets, unit, weight, num_maskable, self.loss_weighting, self.banned_ids)
        # The logged bound weights a row by m'(t) / (share masked), exactly as likelihood.elbo_bound does, and is
        # per document token (line-by-line filler pays its nats but is not counted).
        self._accumulate(model.training, rate, ce_sum, count, weight.to(ce_sum.dtype) * ce_sum, num_counted)
        return (loss, outputs) if return_outputs else loss

    def _accumulate(self, training, rate, ce_sum, count, weighted, num_counted):
        # Rows 0/1: cross-entropy sum and masked-token count per level; row 2 holds the ELBO sums in 0/1.
        with torch.no_grad():
            level = (torch.ceil(rate * NUM_LEVELS).long() - 1).clamp(0, NUM_LEVELS - 1).cpu()
            stats = self._levels[training]
            stats[0].index_add_(0, level, ce_sum.detach().double().cpu())
            stats[1].index_add_(0, level, count.double().cpu())
            stats[2, 0] += weighted.detach().double().sum().cpu()
            stats[2, 1] += num_counted.double().sum().cpu()

    def evaluate(self, *args, **kwargs):
        if self.eval_collator is not None:
            self.eval_collator.reset()
        self._levels[False].zero_()
        return super().evaluate(*args, **kwargs)

    def log(self, logs: dict, start_time=None) -> None:
        evaluation = any(key.startswith("eval_") for key in logs)
        training = "loss" in logs
        if evaluation or training:
            stats = self._levels[not evaluation]
            prefix = "eval_" if evaluation else ""
            sums = self._all_reduce(stats.clone())
            for i, name in enumerate(LEVEL_NAMES):
                if sums[1, i] > 0:
                    logs[f"{prefix}loss_mask_{name}"] = round(float(sums[0, i] / sums[1, i]), 4)
            if evaluation and sums[2, 1] > 0:
                bound = float(sums[2, 0] / sums[2, 1])
                logs["eval_elbo"] = round(bound, 4)
                logs["eval_ppl_bound"] = round(math.exp(min(bound, 50.0)), 3)
            stats.zero_()
        super().log(logs, start_time)

    def _all_reduce(self, stats: torch.Tensor) -> torch.Tensor:
        if self.args.world_size > 1 and torch.distributed.is_initialized():
            device = self.args.device
            stats = stats.to(device)
            torch.distributed.all_reduce(stats)
            stats = stats.cpu()
        return stats


def new_weight_names(model) -> frozenset:
    """Names (as in the checkpoint) of the weights initialised at random when `model` was loaded; empty for a model
    built from a config, whose weights are all new alike."""
    for module in (model, getattr(model, "base_model", None), getattr(getattr(model, "base_model", None), "model", None)):
        names = getattr(module, "newly_initialised", None)
        if names is not None:
            return names
    return frozenset()


def _checkpoint_name(name: str) -> str:
    """A parameter's name in the checkpoint, without the wrappers' parts (peft's base_model.model., modules_to_save)."""
    return name.removeprefix("base_model.model.").replace(".modules_to_save.default", "").replace(".original_module", "")
