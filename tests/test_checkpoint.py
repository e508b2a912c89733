import pytest
import timm
import torch
from safetensors.torch import save_file
from torchvision.models.vision_transformer import VisionTransformer

from vitprint.errors import VitprintError
from vitprint.models.autoencoder import Autoencoder
from vitprint.models.encoder import ViTEncoder
from vitprint.models.presets import model_config
from vitprint.training.checkpoint import (
    load_checkpoint,
    load_encoder,
    load_vit_weights,
    read_meta,
    save_checkpoint,
    save_weights,
    torchvision_to_timm,
)


def _train_one_step(model, opt):
    model(torch.randn(2, 1, 32, 32)).pow(2).mean().backward()
    opt.step()
    opt.zero_grad()


def test_checkpoint_round_trip_with_optimizer(tmp_path):
    torch.manual_seed(0)
    model = Autoencoder(model_config("micro"))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    _train_one_step(model, opt)
    path = tmp_path / "ck.safetensors"
    save_checkpoint(path, model, opt, {"epoch": 3, "note": "x"})

    other = Autoencoder(model_config("micro"))
    other_opt = torch.optim.Adam(other.parameters(), lr=1e-3)
    meta = load_checkpoint(path, other, other_opt)
    assert meta["epoch"] == 3 and meta["note"] == "x"
    for (k, a), b in zip(model.state_dict().items(), other.state_dict().values()):
        assert torch.equal(a, b), k
    assert other_opt.state_dict()["param_groups"] == opt.state_dict()["param_groups"]
    assert not list(tmp_path.glob("*.tmp"))  # no temporary files left behind


def test_optimizer_state_restores_exactly(tmp_path):
    torch.manual_seed(0)
    model = Autoencoder(model_config("micro"))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    _train_one_step(model, opt)
    save_checkpoint(tmp_path / "c.safetensors", model, opt)
    other = Autoencoder(model_config("micro"))
    other_opt = torch.optim.Adam(other.parameters(), lr=1e-3)
    load_checkpoint(tmp_path / "c.safetensors", other, other_opt)
    a, b = opt.state_dict()["state"], other_opt.state_dict()["state"]
    assert a.keys() == b.keys()
    for idx in a:
        for name in a[idx]:
            assert torch.equal(torch.as_tensor(a[idx][name]), torch.as_tensor(b[idx][name]))


def test_loading_into_another_preset_is_a_clear_error(tmp_path):
    save_checkpoint(tmp_path / "c.safetensors", Autoencoder(model_config("micro")))
    with pytest.raises(VitprintError, match="do not fit this model"):
        load_checkpoint(tmp_path / "c.safetensors", Autoencoder(model_config("micro", latent_dim=8)))


def test_encoder_loads_from_encoder_file_and_from_autoencoder_checkpoint(tmp_path):
    ae = Autoencoder(model_config("micro"))
    save_weights(tmp_path / "enc.safetensors", ae.encoder, {"kind": "encoder"})
    save_checkpoint(tmp_path / "ae.safetensors", ae)
    x = torch.randn(1, 1, 32, 32)
    for f in ("enc.safetensors", "ae.safetensors"):
        enc = ViTEncoder(model_config("micro"))
        load_encoder(enc, tmp_path / f)
        assert torch.allclose(enc(x), ae.encoder(x))
    assert read_meta(tmp_path / "enc.safetensors")["kind"] == "encoder"


def _tv_and_timm():
    tv = VisionTransformer(image_size=32, patch_size=16, num_layers=2, num_heads=2, hidden_dim=32, mlp_dim=64)
    tm = timm.create_model("vit_tiny_patch16_224", num_classes=0, img_size=32, embed_dim=32, depth=2,
                           num_heads=2, mlp_ratio=2.0)
    return tv.eval(), tm.eval()


def test_torchvision_weights_give_the_same_features_in_timm(tmp_path):
    tv, tm = _tv_and_timm()
    path = tmp_path / "tv.pth"
    torch.save(tv.state_dict(), path)
    load_vit_weights(tm, path)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        feats = tv.encoder(torch.cat([tv.class_token.expand(2, -1, -1), tv._process_input(x)], 1))[:, 0]
        ours = tm.forward_head(tm.forward_features(x), pre_logits=True)
    assert torch.allclose(feats, ours, atol=1e-5)


def test_torchvision_mapping_covers_every_key():
    tv, tm = _tv_and_timm()
    mapped = torchvision_to_timm(tv.state_dict())
    assert set(mapped) == set(tm.state_dict())


def test_vit_weights_resample_position_embeddings(tmp_path):
    small = timm.create_model("vit_tiny_patch16_224", num_classes=0, img_size=32, embed_dim=32, depth=1, num_heads=2)
    save_file({k: v.contiguous() for k, v in small.state_dict().items()}, str(tmp_path / "w.safetensors"))
    big = timm.create_model("vit_tiny_patch16_224", num_classes=0, img_size=64, embed_dim=32, depth=1, num_heads=2)
    load_vit_weights(big, tmp_path / "w.safetensors")
    assert big.pos_embed.shape == (1, 1 + 16, 32)
    assert torch.equal(big.blocks[0].attn.qkv.weight, small.blocks[0].attn.qkv.weight)
    assert torch.equal(big.cls_token, small.cls_token)


def test_missing_or_foreign_weights_are_clear_errors(tmp_path):
    enc = ViTEncoder(model_config("micro"))
    with pytest.raises(VitprintError, match="not found"):
        load_vit_weights(enc.vit, tmp_path / "nope.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(VitprintError, match="cannot read"):
        load_vit_weights(enc.vit, tmp_path / "junk.pth")


class _Payload:
    """Unpickling this calls open(marker, "w"): proof that code in a pickle ran."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_pickled_code_payload_never_runs(tmp_path):
    marker = tmp_path / "payload_ran"
    evil = tmp_path / "evil.pth"
    torch.save({"pos_embed": _Payload(marker)}, evil)
    enc = ViTEncoder(model_config("micro"))
    with pytest.raises(VitprintError, match="cannot read"):
        load_vit_weights(enc.vit, evil)
    assert not marker.exists()
