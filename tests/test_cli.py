import json

import pytest

from vitprint.cli import main


def _run(capsys, *argv):
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def test_make_phantoms_pretrain_train_reconstruct(tmp_path, capsys):
    ph = tmp_path / "ph"
    rc, out, _ = _run(capsys, "make-phantoms", "--out", ph, "--per-class", 4, "--size", 64)
    assert rc == 0 and "wrote 16 images" in out
    assert len(list(ph.rglob("*.png"))) == 16

    rc, out, err = _run(capsys, "pretrain", ph, "--preset", "micro", "--epochs", 1, "--batch-size", 4,
                        "--out", tmp_path / "pre")
    assert rc == 0, err
    assert "best validation: accuracy" in out and (tmp_path / "pre" / "encoder.safetensors").is_file()

    rc, out, err = _run(capsys, "train", ph / "train", ph / "valid", "--preset", "micro", "--epochs", 1,
                        "--batch-size", 4, "--out", tmp_path / "ae", "--encoder", tmp_path / "pre" / "encoder.safetensors")
    assert rc == 0, err
    assert "best validation MSE" in out

    ck = tmp_path / "ae" / "checkpoints" / "best.safetensors"
    rc, out, err = _run(capsys, "reconstruct", ck, ph / "test", "--out", tmp_path / "rec", "--save-images")
    assert rc == 0, err
    rows = (tmp_path / "rec" / "errors.csv").read_text().splitlines()
    assert rows[0] == "id,path,mse,mae" and len(rows) == 1 + 4
    assert len(list((tmp_path / "rec" / "reconstructions").rglob("*.png"))) == 4


def test_yaml_config_with_command_line_override(tmp_path, capsys, flat_folder):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("preset: micro\nepochs: 2\nbatch-size: 4\nlr: 0.001\n")
    rc, _, err = _run(capsys, "train", flat_folder, "--config", cfg, "--epochs", 1, "--out", tmp_path / "y")
    assert rc == 0, err
    lines = (tmp_path / "y" / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["lr"] == 0.001


def test_info_prints_parameters_and_gflops(capsys):
    rc, out, _ = _run(capsys, "info", "--preset", "tiny", "--json")
    info = json.loads(out)
    assert rc == 0 and info["total_params"] > 1e6 and info["train_step_gflop"] > info["autoencoder_gflop"] > 0


@pytest.mark.parametrize(
    "argv, message",
    [
        (["train", "{tmp}/missing", "--preset", "micro"], "not a folder"),
        (["train", "{empty}", "--preset", "micro"], "no images found"),
        (["train", "{flat}", "--preset", "nope"], "unknown preset"),
        (["train", "{flat}", "--preset", "micro", "--image-size", "100"], "power of two"),
        (["train", "{flat}", "--preset", "micro", "--epochs", "0", "--out", "{tmp}/z"], "epochs must be >= 1"),
        (["train", "{flat}", "--preset", "micro", "--config", "{tmp}/none.yaml"], "config file not found"),
        (["train", "{flat}", "--preset", "micro", "--config", "{bad_yaml}"], "unknown option 'colour'"),
        (["train", "{flat}", "--preset", "micro", "--encoder", "{tmp}/none.safetensors"], "encoder weights not found"),
        (["reconstruct", "{tmp}/none.safetensors", "{flat}"], "checkpoint not found"),
        (["pretrain", "{flat}", "--preset", "micro"], "no class folders"),
        (["make-phantoms", "--per-class", "1", "--out", "{tmp}/p"], "at least 3"),
        (["train", "{flat}", "--preset", "micro", "--precision", "fp16", "--device", "cpu", "--out", "{tmp}/f"], "fp16 needs a GPU"),
    ],
)
def test_bad_input_gives_one_clear_line(argv, message, tmp_path, flat_folder, capsys):
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("colour: blue\n")
    (tmp_path / "empty").mkdir()
    argv = [a.format(tmp=tmp_path, flat=flat_folder, bad_yaml=bad_yaml, empty=tmp_path / 'empty') for a in argv]
    rc, _, err = _run(capsys, *argv)
    assert rc == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("vitprint: error:") and message in lines[0], err


def test_debug_shows_the_traceback(tmp_path, capsys):
    from vitprint.errors import VitprintError

    with pytest.raises(VitprintError):
        main(["train", str(tmp_path / "missing"), "--debug"])


def test_help_documents_every_command(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for cmd in ("demo", "make-phantoms", "pretrain", "train", "reconstruct", "info"):
        assert cmd in out
