import json
import numpy as np

import pytest
import torch
from safetensors.torch import load_file

from vitprint.config import OptimConfig
from vitprint.errors import VitprintError
from vitprint.models.presets import model_config
from vitprint.training.autoencoder import train_autoencoder
from vitprint.training.pretrain import pretrain

from conftest import run_cfg


def _weights(out):
    return {k: v for k, v in load_file(str(out / "checkpoints" / "last.safetensors")).items() if k.startswith("model.")}


def test_pretrain_writes_encoder_metrics_and_plots(phantom_tree, tmp_path, data_cfg):
    out = tmp_path / "pre"
    summary = pretrain(phantom_tree, model_config("micro"), run_cfg(out, epochs=2), data=data_cfg)
    assert summary["classes"] == ["effusion", "mass", "nodule", "normal"]
    assert set(summary["valid"]) >= {"accuracy", "macro_f1", "kappa"} and "test" in summary
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2]
    assert {"train_loss", "val_loss", "val_accuracy", "val_macro_f1", "val_kappa", "images_per_s"} <= set(records[0])
    assert json.loads((out / "config.json").read_text())["model"]["latent_dim"] == 16
    for name in ("encoder.safetensors", "confusion_valid.png", "confusion_test.png", "loss_curve.png",
                 "checkpoints/best.safetensors", "checkpoints/last.safetensors"):
        assert (out / name).is_file(), name


def test_resume_matches_an_uninterrupted_run(flat_folder, tmp_path, data_cfg):
    cfg = model_config("micro")
    opt = OptimConfig(lr=1e-3, step_size=1, gamma=0.5)
    straight = tmp_path / "straight"
    train_autoencoder([flat_folder], cfg, run_cfg(straight, epochs=3), opt, data_cfg)
    split_run = tmp_path / "split"
    train_autoencoder([flat_folder], cfg, run_cfg(split_run, epochs=2), opt, data_cfg)
    train_autoencoder([flat_folder], cfg, run_cfg(split_run, epochs=3, resume=True), opt, data_cfg)
    a, b = _weights(straight), _weights(split_run)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    epochs = [json.loads(line)["epoch"] for line in (split_run / "metrics.jsonl").read_text().splitlines()]
    assert epochs == [1, 2, 3]


def test_a_crash_before_any_checkpoint_write_resumes_to_the_uninterrupted_run(flat_folder, tmp_path, data_cfg,
                                                                             monkeypatch):
    """A kill between the two files of an epoch (``best`` and ``last``) must not leave a stale best."""
    import shutil

    from vitprint.training import engine

    cfg, opt = model_config("micro"), OptimConfig(lr=1e-3, step_size=1, gamma=0.5)
    straight = tmp_path / "straight"
    train_autoencoder([flat_folder], cfg, run_cfg(straight, epochs=2), opt, data_cfg)
    want = {n: load_file(str(straight / "checkpoints" / n)) for n in ("best.safetensors", "last.safetensors")}
    writes = [json.loads(line)["val_loss"] for line in (straight / "metrics.jsonl").read_text().splitlines()]
    # every epoch writes ``last``; the first and every better one ``best`` too
    calls = len(writes) + 1 + sum(b < a for a, b in zip(writes, writes[1:]))
    assert calls == 4  # the second epoch is better: a kill can fall between its two files
    real_save = engine.save_checkpoint
    for crash_at in range(calls):
        count = iter(range(10**6))

        def save(*args, **kw):
            if next(count) == crash_at:
                raise KeyboardInterrupt("killed")
            real_save(*args, **kw)

        out = tmp_path / f"crash{crash_at}"
        monkeypatch.setattr(engine, "save_checkpoint", save)
        with pytest.raises(KeyboardInterrupt):
            train_autoencoder([flat_folder], cfg, run_cfg(out, epochs=2), opt, data_cfg)
        monkeypatch.setattr(engine, "save_checkpoint", real_save)
        resume = (out / "checkpoints" / "last.safetensors").is_file()
        if not resume:
            shutil.rmtree(out)
        train_autoencoder([flat_folder], cfg, run_cfg(out, epochs=2, resume=resume), opt, data_cfg)
        for name, tensors in want.items():
            got = load_file(str(out / "checkpoints" / name))
            assert got.keys() == tensors.keys()
            assert all(torch.equal(got[k], tensors[k]) for k in tensors), (crash_at, name)


def test_refuses_to_overwrite_a_run_and_resume_needs_one(flat_folder, tmp_path, data_cfg):
    out = tmp_path / "r"
    with pytest.raises(VitprintError, match="no checkpoint to resume"):
        train_autoencoder([flat_folder], model_config("micro"), run_cfg(out, resume=True), data=data_cfg)
    train_autoencoder([flat_folder], model_config("micro"), run_cfg(out), data=data_cfg)
    with pytest.raises(VitprintError, match="already holds a run"):
        train_autoencoder([flat_folder], model_config("micro"), run_cfg(out), data=data_cfg)


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(flat_folder, tmp_path, data_cfg):
    out = tmp_path / "nan"
    cfg = model_config("micro")
    train_autoencoder([flat_folder], cfg, run_cfg(out, epochs=1), data=data_cfg)
    before = _weights(out)
    with pytest.raises(VitprintError, match="loss became nan.*last good checkpoint"):
        _poisoned(flat_folder, cfg, out, data_cfg)
    after = _weights(out)
    assert all(torch.equal(before[k], after[k]) for k in before)


def _poisoned(folder, cfg, out, data_cfg):
    """Resume with a model whose decoder output is NaN: the first step's loss is not finite."""
    from vitprint.models import autoencoder as ae_mod

    original = ae_mod.Autoencoder.forward
    ae_mod.Autoencoder.forward = lambda self, x: original(self, x) * float("nan")
    try:
        train_autoencoder([folder], cfg, run_cfg(out, epochs=2, resume=True), data=data_cfg)
    finally:
        ae_mod.Autoencoder.forward = original


def test_autoencoder_learns_and_draws_its_grid(flat_folder, tmp_path, data_cfg):
    out = tmp_path / "ae"
    model = train_autoencoder([flat_folder], model_config("micro"), run_cfg(out, epochs=3),
                              OptimConfig(lr=1e-3), data_cfg)
    summary = model.summary
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["train_loss"] < records[0]["train_loss"]
    assert summary["best_val_loss"] == pytest.approx(min(r["val_loss"] for r in records))
    assert (out / "recon_grid.png").is_file() and (out / "loss_curve.png").is_file()


def test_frozen_encoder_does_not_change(flat_folder, tmp_path, data_cfg):
    out = tmp_path / "frozen"
    torch.manual_seed(0)
    train_autoencoder([flat_folder], model_config("micro"), run_cfg(out, epochs=1), OptimConfig(lr=1e-2), data_cfg,
                      freeze_encoder=True)
    w = _weights(out)
    from vitprint.models.autoencoder import Autoencoder

    torch.manual_seed(0)
    fresh = Autoencoder(model_config("micro")).state_dict()
    assert torch.equal(w["model.encoder.proj.weight"], fresh["encoder.proj.weight"])
    assert not torch.equal(w["model.decoder.fc.0.weight"], fresh["decoder.fc.0.weight"])


def test_the_diffusion_family_trains_resumes_and_samples_deterministically(tmp_path, capsys):
    """ddpm through the CLI: a diffusers UNet, DDIM sampling from a noise image (one noise, one sample)."""
    from vitprint.cli import main
    from vitprint.demo import write_membership_split
    from vitprint.training.generator import load_generator, sample

    write_membership_split(tmp_path, 6, 3, size=32)
    args = ["train-generator", str(tmp_path / "members"), "--family", "ddpm", "--image-size", "32", "--width", "8",
            "--batch-size", "4", "--out", str(tmp_path / "ddpm")]
    assert main([*args, "--z-dim", "10", "--epochs", "1"]) == 2
    assert "--z-dim is for dcgan, pacgan and vae" in capsys.readouterr().err
    assert main([*args[:-6], "--width", "12", *args[-4:], "--epochs", "1"]) == 2
    assert "multiple of 8 for ddpm" in capsys.readouterr().err
    assert main([*args, "--epochs", "1"]) == 0
    assert main([*args, "--epochs", "2", "--resume"]) == 0
    records = (tmp_path / "ddpm" / "metrics.jsonl").read_text().splitlines()
    assert len(records) == 2 and '"epoch": 2' in records[-1]  # resumed at epoch 2, not restarted
    ckpt = tmp_path / "ddpm" / "checkpoints" / "last.safetensors"
    gen = load_generator(ckpt)
    a = np.concatenate(list(sample(gen, 3, seed=5, batch_size=2)))
    b = np.concatenate(list(sample(gen, 3, seed=5, batch_size=2)))
    assert a.shape == (3, 32, 32) and a.dtype == np.uint8 and np.array_equal(a, b)
    assert not np.array_equal(a[0], a[1])
    assert main(["generate", str(ckpt), "--n", "2", "--out", str(tmp_path / "gen")]) == 0
    assert len(list((tmp_path / "gen").glob("*.png"))) == 2


@pytest.mark.parametrize("n_dev, n_test", [(5, 3), (3, 3)])  # 8 members: 2 packs a draw; 6: 1 pack, 2 images left out
def test_the_pacgan_family_judges_packs_of_distinct_untranslated_real_images(tmp_path, monkeypatch, capsys,
                                                                            n_dev, n_test):
    """pacgan through the CLI: its discriminator sees packs of PACK images stacked as channels; the batch's
    real images are drawn PACK times, each draw cut into packs by itself (an image never twice in one pack,
    partners changing between draws), as read (no translation); it samples as a DCGAN, and refuses a set
    smaller than a pack. The plain dcgan still judges one image at a time."""
    from vitprint.cli import GENERATOR_FAMILIES, main
    from vitprint.demo import write_membership_split
    from vitprint.models.dcgan import Discriminator
    from vitprint.training.checkpoint import read_meta
    from vitprint.training.generator import FAMILIES, PACK, load_generator, sample

    assert GENERATOR_FAMILIES == list(FAMILIES)  # the CLI's choices, named there without loading torch
    seen, forward = [], Discriminator.forward
    monkeypatch.setattr(Discriminator, "forward", lambda self, x: seen.append(x.detach().clone()) or forward(self, x))
    write_membership_split(tmp_path, n_dev, n_test, size=32)
    n, out = n_dev + n_test, tmp_path / "pacgan"
    args = ["train-generator", str(tmp_path / "members"), "--image-size", "32", "--width", "8", "--batch-size", "8",
            "--epochs", "1"]
    assert main([*args, "--family", "pacgan", "--out", str(out)]) == 0
    real, fake, for_generator = seen[:3]
    packs = n // PACK * PACK  # each draw makes n // PACK packs; PACK draws
    assert real.shape == fake.shape == for_generator.shape == (packs, PACK, 32, 32)
    distinct, which, counts = torch.unique(real.reshape(-1, 32 * 32), dim=0, return_inverse=True, return_counts=True)
    assert len(distinct) <= n and counts.sum() == packs * PACK  # translated copies would all differ
    if n % PACK == 0:
        assert len(distinct) == n and (counts == PACK).all()  # every image once a draw
    groups = [frozenset(ids) for ids in which.reshape(packs, PACK).tolist()]
    assert all(len(g) == PACK for g in groups)  # never an image twice in one pack
    assert len(set(groups)) > n // PACK  # partners change between draws (fixed packs repeat n // PACK groups)
    assert len(torch.unique(fake.reshape(-1, 32 * 32), dim=0)) == packs * PACK  # as many fresh generated images
    gen = load_generator(out / "checkpoints" / "last.safetensors")
    assert np.concatenate(list(sample(gen, 3, seed=1))).shape == (3, 32, 32)
    assert read_meta(out / "checkpoints" / "last.safetensors")["pack"] == PACK

    seen.clear()
    assert main([*args, "--family", "dcgan", "--out", str(tmp_path / "dcgan")]) == 0
    assert seen[0].shape == (min(n, 8), 1, 32, 32)  # one image at a time, the batch as loaded
    small = tmp_path / "small"
    write_membership_split(small, 2, 1, size=32)  # 3 members: not one pack
    capsys.readouterr()
    assert main(["train-generator", str(small / "members"), *args[2:], "--family", "pacgan", "--out",
                 str(tmp_path / "p3")]) == 2
    assert f"pacgan judges packs of {PACK} different images" in capsys.readouterr().err
    monkeypatch.setattr("vitprint.training.generator.PACK", PACK // 2)  # a later version's pack size
    load_generator(out / "checkpoints" / "last.safetensors")  # still loads: the checkpoint names its own
    seen.clear()
    assert main([*args[:-1], "2", "--resume", "--family", "pacgan", "--out", str(out)]) == 0  # and resumes with it
    assert seen[0].shape[1] == PACK and read_meta(out / "checkpoints" / "last.safetensors")["pack"] == PACK
    assert read_meta(out / "checkpoints" / "last.safetensors")["epoch"] == 1  # the second epoch, trained
    capsys.readouterr()
    assert main([*args[:-1], "3", "--resume", "--family", "dcgan", "--out", str(out)]) == 2  # not as another family
    assert "holds a pacgan generator, not a dcgan" in capsys.readouterr().err
    assert read_meta(out / "checkpoints" / "last.safetensors")["epoch"] == 1  # untouched


def test_a_metrics_line_cut_short_by_a_crash_is_skipped_and_ended(tmp_path):
    from vitprint.training.engine import append_record, read_history

    append_record(tmp_path, {"epoch": 1, "val_loss": 0.5})
    with (tmp_path / "metrics.jsonl").open("a") as f:
        f.write('{"epoch": 2, "val_lo')  # the crash
    append_record(tmp_path, {"epoch": 2, "val_loss": 0.4})  # the epoch redone on resume
    assert read_history(tmp_path) == [{"epoch": 1, "val_loss": 0.5}, {"epoch": 2, "val_loss": 0.4}]


def test_gan_training_keeps_each_processs_batchnorm_statistics():
    """The accelerator a GAN trains with leaves BatchNorm buffers unbroadcast between processes (its
    discriminator runs twice before one backward); the others keep the default."""
    from vitprint.config import RunConfig
    from vitprint.training.engine import make_accelerator

    assert make_accelerator(RunConfig(device="cpu"), broadcast_buffers=False).ddp_handler.broadcast_buffers is False
    plain = make_accelerator(RunConfig(device="cpu")).ddp_handler
    assert plain is None or plain.broadcast_buffers is True


def test_each_process_of_a_run_draws_its_own_noise_and_the_main_one_draws_a_single_process_run_s():
    from accelerate.utils import set_seed

    from vitprint.training.engine import seed_epoch

    def draws(seed, epoch, process):
        seed_epoch(seed, epoch, process)
        return torch.randn(8), np.random.rand(3)

    import random

    states = np.random.get_state(), random.getstate()
    with torch.random.fork_rng():  # leaves the other tests' generators as they were
        _seeding_checks(draws, set_seed)
    np.random.set_state(states[0])
    random.setstate(states[1])


def _seeding_checks(draws, set_seed):
    set_seed(7 + 2)
    alone = torch.randn(8), np.random.rand(3)
    main_process, other, later = draws(7, 2, 0), draws(7, 2, 1), draws(7, 3, 0)
    assert torch.equal(main_process[0], alone[0]) and np.array_equal(main_process[1], alone[1])
    assert not torch.allclose(other[0], main_process[0]) and not np.allclose(other[1], main_process[1])
    # Its own stream, not the main process's next epoch (seed + epoch + process would be).
    assert not torch.allclose(other[0], later[0])
    again = draws(7, 2, 1)
    assert torch.equal(again[0], other[0])  # and reproducible
    assert not torch.allclose(draws(7, 2, 2)[0], other[0])


@pytest.mark.parametrize("family", ["dcgan", "pacgan"])
def test_the_generators_update_computes_no_gradient_for_the_discriminators_weights(tmp_path, monkeypatch, family):
    """Each GAN step runs the discriminator three times: on the real and the generated images for its own
    update (its weights take gradients), then on the generated images for the generator's (only the images
    do: the generator learns through them, the discriminator's weights are left out and trainable again
    after)."""
    from vitprint.cli import main
    from vitprint.demo import write_membership_split
    from vitprint.models.dcgan import Discriminator

    calls, forward = [], Discriminator.forward

    def watched(self, x):
        grads = [p.requires_grad for p in self.parameters()]
        calls.append(("all" if all(grads) else "none" if not any(grads) else "some", x.requires_grad,
                      torch.is_grad_enabled()))
        return forward(self, x)

    monkeypatch.setattr(Discriminator, "forward", watched)
    write_membership_split(tmp_path, 5, 3, size=32)
    assert main(["train-generator", str(tmp_path / "members"), "--image-size", "32", "--width", "8",
                 "--batch-size", "4", "--epochs", "1", "--family", family, "--out", str(tmp_path / "gan")]) == 0
    assert len(calls) == 3 * 2  # 8 images, batches of 4: two steps
    for real, fake, for_generator in zip(calls[0::3], calls[1::3], calls[2::3]):
        assert real == ("all", False, True) and fake == ("all", False, True)
        assert for_generator == ("none", True, True)
