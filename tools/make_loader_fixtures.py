"""Writes the small checkpoint and textual-inversion fixtures of the loader tests
(tests/fixtures/loaders/) with the real writers: torch.save and safetensors.

Run with the reference environment: ref/bin/python tools/make_loader_fixtures.py

Every file is tiny (random values, fixed seed). The expected values are stored in
`expected.safetensors`, written by the `safetensors` package (a different writer from
the torch pickles it describes), with the library versions in its `__metadata__`.
The Rust tests compare what our readers return with it bit for bit.
"""

import json
import sys
import types
import zipfile
from collections import OrderedDict
from pathlib import Path

import numpy as np
import safetensors
import torch
from safetensors.torch import save_file

OUT = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "loaders"
torch.set_num_threads(1)
torch.manual_seed(0)


def fake_lightning_checkpoint_class():
    """SD 1.x .ckpt files carry the class object
    `pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint` as a dict key.
    pytorch_lightning is not installed here, so a stand-in class with the same
    module path makes pickle write the very same GLOBAL opcode."""
    names = ["pytorch_lightning", "pytorch_lightning.callbacks", "pytorch_lightning.callbacks.model_checkpoint"]
    for n in names:
        sys.modules.setdefault(n, types.ModuleType(n))
    mod = sys.modules[names[-1]]

    class ModelCheckpoint:
        pass

    ModelCheckpoint.__module__ = names[-1]
    ModelCheckpoint.__qualname__ = "ModelCheckpoint"
    mod.ModelCheckpoint = ModelCheckpoint
    return ModelCheckpoint


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    expected = {}

    # 1. sd-concepts-library learned_embeds.bin: {"<token>": tensor[768]} (older
    #    trainings) and {"<token>": tensor[n, 768]} (newer), torch.save zip format.
    cat = torch.randn(768)
    torch.save({"<cat-toy>": cat}, OUT / "learned_embeds.bin")
    expected["learned_embeds.bin"] = cat.reshape(1, 768)
    multi = torch.randn(3, 768)
    torch.save({"<midjourney-style>": multi}, OUT / "learned_embeds_multi.bin", pickle_protocol=4)
    expected["learned_embeds_multi.bin"] = multi

    # 2. A1111 .pt as modules/textual_inversion/textual_inversion.py saves it; the
    #    step is a numpy integer as in files written by several trainers.
    vec = torch.randn(2, 768, requires_grad=True)
    a1111 = {
        "string_to_token": {"*": 265},
        "string_to_param": {"*": vec},
        "name": "bad-hands",
        "step": np.int64(1500),
        "sd_checkpoint": "e1441589a6",
        "sd_checkpoint_name": "v1-5-pruned-emaonly",
    }
    torch.save(a1111, OUT / "bad-hands.pt")
    expected["bad-hands.pt"] = vec.detach()

    # 3. rinongal/textual_inversion (LDM) .pt: string_to_param is an nn.ParameterDict
    #    and the token ids are int64 tensors.
    pd = torch.nn.ParameterDict({"*": torch.nn.Parameter(torch.randn(4, 768))})
    torch.save(
        {"string_to_token": {"*": torch.tensor(265)}, "string_to_param": pd},
        OUT / "ldm-style.pt",
    )
    expected["ldm-style.pt"] = pd["*"].detach()

    # 4. safetensors embeddings: kohya/A1111 `emb_params` (f16) and diffusers'
    #    textual_inversion script `learned_embeds.safetensors` ({token: [n, 768]}).
    emb = torch.randn(2, 768).half()
    save_file({"emb_params": emb}, OUT / "kohya-style.safetensors")
    expected["kohya-style.safetensors"] = emb
    tok = torch.randn(1, 768)
    save_file({"<sks-dog>": tok}, OUT / "learned_embeds.safetensors", metadata={"format": "pt"})
    expected["learned_embeds.safetensors"] = tok

    # 5. A tiny Lightning-style .ckpt: f16 / bf16 / f32, a transposed (non-contiguous)
    #    tensor, two views sharing one storage at different offsets, a 0-d tensor and
    #    an int64 position_ids buffer that is not a weight.
    ModelCheckpoint = fake_lightning_checkpoint_class()
    base = torch.randn(10)
    sd = OrderedDict()
    sd["model.diffusion_model.out.2.weight"] = torch.randn(4, 3).half()
    sd["model.diffusion_model.out.2.bias"] = torch.randn(5).bfloat16()
    sd["first_stage_model.quant_conv.weight"] = torch.randn(3, 4)
    sd["transposed"] = torch.randn(4, 6).t()
    sd["shared_head"] = base[:4]
    sd["shared_tail"] = base[3:9]
    sd["strided"] = torch.randn(3, 8)[:, ::2]
    sd["scalar"] = torch.tensor(1.5)
    sd["cond_stage_model.transformer.text_model.embeddings.position_ids"] = torch.arange(77).unsqueeze(0)
    assert not sd["transposed"].is_contiguous() and not sd["strided"].is_contiguous()
    ckpt = {
        "epoch": 6,
        "global_step": 470000,
        "pytorch-lightning_version": "1.4.2",
        "state_dict": sd,
        "callbacks": {ModelCheckpoint: {"monitor": None, "best_model_score": torch.tensor(0.25)}},
        "optimizer_states": [],
        "lr_schedulers": [],
    }
    torch.save(ckpt, OUT / "tiny.ckpt")
    for k, v in sd.items():
        expected["tiny.ckpt/" + k] = v.contiguous().clone()

    # 6. The same archive re-packed with deflate (torch.load reads it too).
    with zipfile.ZipFile(OUT / "tiny.ckpt") as src, zipfile.ZipFile(
        OUT / "tiny_deflated.ckpt", "w", compression=zipfile.ZIP_DEFLATED
    ) as dst:
        for info in src.infolist():
            dst.writestr(info.filename, src.read(info.filename))
    again = torch.load(OUT / "tiny_deflated.ckpt", weights_only=False)["state_dict"]
    assert all(torch.equal(again[k], v) for k, v in sd.items())

    # 7. A module's state_dict() as diffusers / transformers `.bin` files hold it: an
    #    OrderedDict whose `_metadata` attribute is pickled as a BUILD state.
    module = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.LayerNorm(2)).half()
    module.register_buffer("position_ids", torch.arange(4).unsqueeze(0))
    torch.save(module.state_dict(), OUT / "state_dict.bin")
    for k, v in module.state_dict().items():
        expected["state_dict.bin/" + k] = v.clone()

    # 8. The pre-1.6 non-zip format, which we refuse with a clear message.
    torch.save({"x": torch.zeros(2)}, OUT / "legacy.pt", _use_new_zipfile_serialization=False)

    versions = {
        "torch": torch.__version__,
        "safetensors": safetensors.__version__,
        "numpy": np.__version__,
        "python": sys.version.split()[0],
        "torch_default_pickle_protocol": str(torch.serialization.DEFAULT_PROTOCOL),
    }
    triggers = {"learned_embeds.bin": "<cat-toy>", "learned_embeds_multi.bin": "<midjourney-style>",
                "bad-hands.pt": "bad-hands", "ldm-style.pt": "ldm-style",
                "kohya-style.safetensors": "kohya-style", "learned_embeds.safetensors": "<sks-dog>"}
    meta = dict(versions)
    meta["triggers"] = json.dumps(triggers, sort_keys=True)
    save_file({k: v.contiguous() for k, v in expected.items()}, OUT / "expected.safetensors", metadata=meta)
    print(json.dumps(versions))


if __name__ == "__main__":
    main()
