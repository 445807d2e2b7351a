"""Models for tests and benchmarks: tiny random models of every supported family, saved tiny
models with a byte-level tokenizer, and materialized plans (real copies, as mergekit writes them).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from frankensweep.worker.views import decoder_stack, view_config

if TYPE_CHECKING:
    from frankensweep.search import Plan

__all__ = [
    "FAMILIES",
    "SLIDING_WINDOW",
    "TINY_LAYERS",
    "greedy",
    "materialize",
    "random_ids",
    "storage_bytes",
    "tensors_of",
    "tiny_config",
    "tiny_model",
    "tiny_model_dir",
]

FAMILIES = ("llama", "mistral", "qwen2", "qwen3", "gemma2", "gemma3")
TINY_LAYERS = 8
SLIDING_WINDOW = 6  # shorter than the test sequences, so sliding layers really differ


def tiny_config(family: str):
    """A small config of ``family`` with 8 layers; sliding layers where the family has them."""
    import transformers as tf

    common: dict[str, Any] = dict(
        vocab_size=256,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=TINY_LAYERS,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    )
    if family == "llama":
        return tf.LlamaConfig(**common)
    if family == "mistral":
        return tf.MistralConfig(**common, sliding_window=SLIDING_WINDOW)
    if family == "qwen2":
        return tf.Qwen2Config(
            **common, use_sliding_window=True, sliding_window=SLIDING_WINDOW, max_window_layers=4
        )
    if family == "qwen3":
        return tf.Qwen3Config(
            **common,
            head_dim=8,
            use_sliding_window=True,
            sliding_window=SLIDING_WINDOW,
            max_window_layers=4,
        )
    if family == "gemma2":
        return tf.Gemma2Config(**common, head_dim=8, sliding_window=SLIDING_WINDOW)
    if family == "gemma3":
        gemma3: dict[str, Any] = {"sliding_window_pattern": 3}
        return tf.Gemma3TextConfig(**common, head_dim=8, sliding_window=SLIDING_WINDOW, **gemma3)
    raise ValueError(family)


def tiny_model(family: str, seed: int = 0) -> nn.Module:
    """A randomly initialised ``*ForCausalLM`` of ``family`` in float32 eval mode."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(tiny_config(family), dtype=torch.float32)
    # random init leaves norms at 1 and some weights at 0: perturb so every layer matters
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    model.generation_config.pad_token_id = 0
    return model.eval()


def random_ids(seq_len: int = 20, seed: int = 1, batch: int = 2) -> torch.Tensor:
    """Token ids of tiny models (3..255), reproducible."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(3, 256, (batch, seq_len), generator=g)


def greedy(model: nn.Module, ids: torch.Tensor, tokens: int = 40, cache: bool = True):
    """Exactly ``tokens`` greedy tokens after ``ids``, with the KV cache or recomputing all."""
    with torch.inference_mode():
        return model.generate(  # type: ignore[operator]
            ids, max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False, use_cache=cache
        )


def materialize(
    base: nn.Module,
    layers: Sequence[int] | Plan,
    sources: Mapping[str, nn.Module] | None = None,
) -> nn.Module:
    """A real model running ``layers`` (source layer indices, or a plan) with every position's
    weights copied, as mergekit writes it: built from a state dict, independently of views (the
    reference they are checked on).

    With a plan, a position of a slice of model ``m`` copies ``sources[m]``'s layer, and a scaled
    slice's ``o_proj`` / ``down_proj`` tensors are multiplied by its scale (mergekit's
    passthrough ``scale``). Embeddings, final norm and LM head are the base model's. The model
    is made on the meta device and given the copies (no random initialisation); the buffers a
    state dict leaves out (rotary frequencies) are copied from their source module.
    """
    from frankensweep.search import SCALED, Plan

    if isinstance(layers, Plan):
        positions = layers.positions()
    else:
        positions = [(None, layer, None) for layer in layers]
    stacks = {None: decoder_stack(base)[1]} | {
        name: decoder_stack(model)[1] for name, model in (sources or {}).items()
    }
    with torch.device("meta"):
        model: Any = type(base)(view_config(base.config, [layer for _, layer, _ in positions]))
    state = {}
    for name, tensor in base.state_dict().items():
        if ".layers." not in name:
            state[name] = tensor.clone()
    prefix = "model.layers."
    for position, (source, layer, scale) in enumerate(positions):
        for name, tensor in stacks[source][layer].state_dict().items():
            copied = tensor.clone()
            if scale is not None and any(part in name for part in SCALED):
                copied = copied * scale
            state[f"{prefix}{position}.{name}"] = copied
    missing, unexpected = model.load_state_dict(state, strict=False, assign=True)
    assert not unexpected, unexpected
    assert all("lm_head" in m for m in missing), missing  # tied head only
    model.tie_weights()
    base_buffers = dict(base.named_buffers())
    for name, buffer in list(model.named_buffers()):
        if not buffer.is_meta:
            continue
        origin = name
        if name.startswith(prefix):
            index, _, rest = name[len(prefix) :].partition(".")
            origin = f"{prefix}{positions[int(index)][1]}.{rest}"
        owner, _, attr = name.rpartition(".")
        model.get_submodule(owner).register_buffer(
            attr, base_buffers[origin].clone(), persistent=False
        )
    return model.eval()


def byte_tokenizer() -> Any:
    """A byte-level BPE tokenizer without merges: one token a byte (ids 0..255), EOS 256."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    tokenizer = Tokenizer(models.BPE(vocab={c: i for i, c in enumerate(alphabet)}, merges=[]))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token="<|endoftext|>")


def tiny_model_dir(
    path: Path,
    layers: int = 6,
    vocab_size: int = 8192,
    hidden_size: int = 64,
    nan_layer: int | None = None,
    seed: int = 0,
) -> Path:
    """A random Llama saved to ``path`` with a byte-level tokenizer (ids 0..256).

    ``vocab_size`` sets the LM head's width and so the cost and memory of scoring a token (the
    tokenizer only uses the first 257 ids). ``nan_layer``: that decoder layer's MLP output
    weights are NaN, so every plan running it has a NaN loss and the others do not.
    """
    from transformers import LlamaConfig, LlamaForCausalLM

    fast = byte_tokenizer()
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=8192,
        bos_token_id=None,
        eos_token_id=fast.eos_token_id,
        pad_token_id=fast.eos_token_id,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
        if nan_layer is not None:
            model.model.layers[nan_layer].mlp.down_proj.weight.fill_(float("nan"))
    model.save_pretrained(path)
    fast.save_pretrained(path)
    return path


def cached_and_recomputed(view: Any, ids: torch.Tensor, tokens: int = 40):
    """Greedy generation of exactly ``tokens`` tokens with the KV cache and without it (each
    step recomputed from the whole sequence): equal when every position owns its cache slot."""
    kwargs = dict(max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False)
    with torch.inference_mode():
        cached = view.generate(ids, use_cache=True, **kwargs)
        recomputed = view.generate(ids, use_cache=False, **kwargs)
    assert cached.shape[1] == ids.shape[1] + tokens
    return cached, recomputed


def tensors_of(obj: Any, seen: set[int] | None = None) -> Iterator[torch.Tensor]:
    """Every tensor reachable from a parameter or a bitsandbytes state: the parameter, its
    quantization state (absmax, code, nested state, SCB, ...) and the module's matmul state."""
    seen = set() if seen is None else seen
    if id(obj) in seen:
        return
    seen.add(id(obj))
    extra: dict[Any, Any]
    if isinstance(obj, torch.Tensor):
        yield obj
        extra = vars(obj) if hasattr(obj, "__dict__") else {}
    elif isinstance(obj, list | tuple):
        extra = dict(enumerate(obj))
    elif isinstance(obj, dict):
        extra = obj
    elif hasattr(obj, "__dict__") and type(obj).__module__.startswith("bitsandbytes"):
        extra = vars(obj)
    else:
        return
    for value in extra.values():
        yield from tensors_of(value, seen)


def storage_bytes(model: nn.Module) -> dict[int, int]:
    """Storage address -> bytes of every tensor of ``model``: parameters, buffers and the
    bitsandbytes states hanging off parameters and modules (empty tensors left out)."""
    found = {}
    for module in model.modules():
        for value in [
            *module._parameters.values(),
            *module._buffers.values(),
            getattr(module, "state", None),
        ]:
            for tensor in tensors_of(value):
                if tensor.numel():
                    storage = tensor.untyped_storage()
                    found[storage.data_ptr()] = storage.nbytes()
    return found
