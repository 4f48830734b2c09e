"""torch.compile of a masked LM: whether it can work on this machine, compiling the part that does the work, and
compiler failures as SettingsErrors that say how to run without it.

What is compiled is the encoder (`model.base_model`), in place: the sampler and the training loss call it directly
and run the LM head only at the positions they need (models.heads.masked_logits), a number that changes at every
step, so a compiled `model.forward` would never run and a compiled head would recompile at every new count.
"""

import logging
import warnings
from contextlib import contextmanager

import torch

from textdiffusion.errors import SettingsError

def first_line(err: BaseException) -> str:
    """The first line of an error that says what went wrong (a compiler's error is pages long; dynamo's opens with
    "backend='inductor' raised:" and puts the cause on the next line)."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    if lines and lines[0].startswith("backend=") and lines[0].endswith("raised:"):
        lines = lines[1:]
    return lines[0] if lines else type(err).__name__


def compile_problem(device: torch.device, backend: str = "inductor") -> str | None:
    """Why torch.compile with `backend` cannot work on `device` here (a missing C++ compiler for inductor on a CPU,
    no triton on a GPU...), or None when it works: a two-operation function is compiled and run. The first call pays
    inductor's start-up (a few seconds warm, up to a minute the very first time on a machine)."""
    quiet = {name: logging.getLogger(name) for name in ("torch._dynamo", "torch._inductor")}
    levels = {name: logger.level for name, logger in quiet.items()}
    try:
        for logger in quiet.values():
            logger.setLevel(logging.CRITICAL)  # inductor logs the failure at length before raising it
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            probe = torch.compile(lambda x: x * 2 + 1, backend=backend, fullgraph=True)
            result = probe(torch.ones(8, device=device))
        if not bool((result == 3).all()):
            return f"torch.compile ({backend}) computed a wrong result on {device}"
    except Exception as err:  # whatever the backend raises is the reason; nothing here can fix it
        return first_line(err)
    finally:
        for name, logger in quiet.items():
            logger.setLevel(levels[name])
    return None


def check_compile(device: torch.device, backend: str = "inductor") -> None:
    """SettingsError when torch.compile cannot work on `device`, naming the reason and the way without it."""
    problem = compile_problem(device, backend)
    if problem:
        raise SettingsError(f"torch_compile: torch.compile ({backend}) does not work on {device.type} here: {problem}; "
                            "run without torch_compile")


def compile_encoder(model, backend: str = "inductor", mode: str | None = None):
    """Compile `model`'s encoder in place (nn.Module.compile: names and weights unchanged, so saving and loading
    are as before); returns `model`. Compilation itself happens at the first forward pass."""
    model.base_model.compile(backend=backend, mode=mode)
    return model


@contextmanager
def compile_errors(what: str = "torch_compile"):
    """Turn a compiler failure inside the block (at a first forward pass) into a one-line SettingsError that says
    to run without `what`."""
    # Imported here: torch._dynamo takes a while to import, and most runs never compile.
    from torch._dynamo.exc import TorchDynamoException  # BackendCompilerFailed, InductorError ... derive from it

    try:
        yield
    except TorchDynamoException as err:
        raise SettingsError(f"{what}: torch.compile failed ({first_line(err)}); run without {what}") from None
