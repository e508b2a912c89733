import pytest
import torch

from vitprint.errors import VitprintError
from vitprint.models.autoencoder import Autoencoder, Classifier
from vitprint.models.decoder import Decoder, decoder_channels
from vitprint.models.encoder import ViTEncoder
from vitprint.models.presets import PRESETS, model_config


def test_seed_preset_is_the_seed_architecture():
    cfg = model_config("seed")
    assert (cfg.vit, cfg.vit_img_size, cfg.image_size, cfg.latent_dim, cfg.pooling) == (
        "vit_base_patch16_224", 224, 256, 512, "cls")
    assert decoder_channels(256) == [256, 128, 64, 32, 16, 8]


@pytest.mark.parametrize("size", [32, 64, 128, 256, 512])
def test_decoder_output_sizes(size):
    dec = Decoder(latent_dim=16, image_size=size)
    y = dec(torch.randn(2, 16))
    assert y.shape == (2, 1, size, size)
    assert y.abs().max() <= 1.0  # tanh


def test_decoder_seed_layers_match_design():
    dec = Decoder(512, 256)
    convt = [m for m in dec.modules() if isinstance(m, torch.nn.ConvTranspose2d)]
    assert len(convt) == 5
    assert all(m.kernel_size == (3, 3) and m.stride == (2, 2) and m.output_padding == (1, 1) for m in convt)
    assert dec.fc[0].out_features == 256 * 8 * 8


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_encoder_shapes_and_resizing(pooling):
    cfg = model_config("micro", pooling=pooling, image_size=64)
    enc = ViTEncoder(cfg)
    x = torch.randn(3, 1, 64, 64)  # resized to the ViT's 32 inside
    tokens = enc.forward_features(x)
    assert tokens.shape == (3, 1 + (32 // 8) ** 2, 32)
    assert enc(x).shape == (3, cfg.latent_dim)


def test_pooling_takes_the_class_token_or_the_mean_patch_token():
    x = torch.randn(2, 1, 32, 32)
    cls = ViTEncoder(model_config("micro"))
    tokens = cls.forward_features(x)
    assert torch.allclose(cls.pool(tokens), tokens[:, 0])
    mean = ViTEncoder(model_config("micro", pooling="mean"))
    tokens = mean.forward_features(x)
    expected = mean.vit.fc_norm(tokens[:, 1:].mean(1))
    assert torch.allclose(mean.pool(tokens), expected, atol=1e-6)


@pytest.mark.parametrize("name", ["micro", "tiny"])
def test_autoencoder_round_shape(name):
    cfg = model_config(name)
    ae = Autoencoder(cfg)
    x = torch.randn(2, 1, cfg.image_size, cfg.image_size)
    assert ae(x).shape == x.shape


def test_every_autoencoder_parameter_gets_a_gradient():
    ae = Autoencoder(model_config("micro"))
    ae(torch.randn(2, 1, 32, 32)).pow(2).mean().backward()
    missing = [n for n, p in ae.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert missing == []


def test_every_classifier_parameter_gets_a_gradient():
    clf = Classifier(model_config("micro"), num_classes=4)
    logits = clf(torch.randn(2, 1, 32, 32))
    assert logits.shape == (2, 4)
    torch.nn.functional.cross_entropy(logits, torch.tensor([0, 3])).backward()
    assert [n for n, p in clf.named_parameters() if p.grad is None] == []


def test_any_timm_vit_name_works_and_bad_names_are_clear():
    cfg = model_config("vit_small_patch16_224", image_size=32, vit_img_size=32)
    assert cfg.vit == "vit_small_patch16_224"
    with pytest.raises(VitprintError, match="unknown preset"):
        model_config("resnet50")


def test_config_validation_names_the_bad_value():
    with pytest.raises(VitprintError, match="power of two.*100"):
        model_config("tiny", image_size=100)
    with pytest.raises(VitprintError, match="pooling"):
        model_config("tiny", pooling="max")


def test_presets_are_registered():
    assert {"seed", "tiny"} <= set(PRESETS)


@pytest.mark.parametrize("size", [32, 64, 128])
def test_dcgan_shapes(size):
    from vitprint.models.dcgan import Discriminator, Generator

    g, d = Generator(size, z_dim=8, base=8), Discriminator(size, base=8)
    x = g(torch.randn(3, 8))
    assert x.shape == (3, 1, size, size) and x.abs().max() <= 1
    assert d(x).shape == (3,)


def test_the_flop_count_includes_the_cpu_attention_kernel():
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from vitprint.models.info import flop_counter

    q, k, v = (torch.randn(2, 3, 50, 16, requires_grad=True) for _ in range(3))
    forward = 4 * 2 * 3 * 50 * 50 * 16  # Q K^T and the weighted sum of V: 2 FLOPs per multiply-add each
    with sdpa_kernel(SDPBackend.FLASH_ATTENTION):  # the CPU's fused kernel, which PyTorch's counter misses
        counter = flop_counter()
        with counter:
            F.scaled_dot_product_attention(q, k, v)
        assert counter.get_total_flops() == forward
        counter = flop_counter()
        with counter:
            F.scaled_dot_product_attention(q, k, v).sum().backward()
        assert counter.get_total_flops() == forward + 2.5 * forward  # the backward: 5 products of that size
