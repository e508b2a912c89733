import json
from pathlib import Path

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
    # A micro encoder with the tiny preset asked for explicitly is a contradiction, refused before any work.
    rc, _, err = _run(capsys, "train", ph / "train", "--preset", "tiny", "--epochs", 1, "--out", tmp_path / "ae2",
                      "--encoder", tmp_path / "pre" / "encoder.safetensors")
    assert rc == 2 and "another architecture than --preset asks for" in err and not (tmp_path / "ae2" / "checkpoints").exists()
    (tmp_path / "tiny.yaml").write_text("preset: tiny\n")  # the same contradiction from a config file
    rc, _, err = _run(capsys, "train", ph / "train", "--config", tmp_path / "tiny.yaml", "--epochs", 1,
                      "--out", tmp_path / "ae3", "--encoder", tmp_path / "pre" / "encoder.safetensors")
    assert rc == 2 and "another architecture than --preset asks for" in err

    ck = tmp_path / "ae" / "checkpoints" / "best.safetensors"
    rc, out, err = _run(capsys, "reconstruct", ck, ph / "test", "--out", tmp_path / "rec", "--save-images")
    assert rc == 0, err
    rows = (tmp_path / "rec" / "errors.csv").read_text().splitlines()
    assert rows[0] == "id,path,mse,mae" and len(rows) == 1 + 4
    assert len(list((tmp_path / "rec" / "reconstructions").rglob("*.png"))) == 4


@pytest.mark.parametrize("text, message", [
    ("epochs: 1.7", "epochs: 1.7 is not a whole number"),
    ("batch_size: [8]", "batch_size: [8] is not a whole number"),
    ("resume: 'no'", "resume: 'no' is not true or false"),
    ("strict: 'false'", "strict: 'false' is not true or false"),
    ("lr: fast", "lr: 'fast' is not a number"),
    ("precision: fp64", "precision: 'fp64' is not one of auto, fp32, bf16, fp16"),
    ("window: 40", "window: 40 is not a string (quote it)"),
    ("seed: null", "seed: None is not a value"),
])
def test_yaml_values_of_the_wrong_type_are_one_line(text, message, tmp_path, capsys, flat_folder):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(text + "\n")
    rc, _, err = _run(capsys, "train", flat_folder, "--preset", "micro", "--config", cfg, "--out", tmp_path / "y")
    assert rc == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "y" / "checkpoints").exists()


def test_yaml_lists_and_nulls_that_fit_are_taken(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("families: [vae]\nsizes: [8]\nseeds: 1\nno_speed: true\n")
    from vitprint.cli import _apply_yaml, build_parser

    args = _apply_yaml(build_parser(), ["bench", "--config", str(cfg), "--scale", "toy"])
    assert args.families == ["vae"] and args.sizes == [8] and args.seeds == 1 and args.no_speed is True
    cfg.write_text("lr: 1e-4\nimage_size: null\n")  # YAML reads 1e-4 as a string; the command line takes it
    args = _apply_yaml(build_parser(), ["train", "x", "--config", str(cfg)])
    assert args.lr == 1e-4 and args.image_size is None


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
    commands = ("demo", "make-phantoms", "pretrain", "train", "reconstruct", "info", "detect", "evaluate",
                "validate-run", "train-generator", "generate", "bench")
    for cmd in commands:
        assert cmd in out
        with pytest.raises(SystemExit) as exit_info:
            main([cmd, "--help"])
        assert exit_info.value.code == 0
        assert "--quiet" in capsys.readouterr().out


def test_demo_end_to_end_at_a_tiny_size(tmp_path, capsys):
    demo_argv = ["demo", "--out", tmp_path / "d", "--preset", "micro", "--per-class", 3, "--members", 8,
                 "--test-members", 4, "--n-generated", 24, "--gen-epochs", 2, "--pretrain-epochs", 1,
                 "--ae-epochs", 1, "--bootstrap", 20]
    rc, out, err = _run(capsys, *demo_argv)
    assert rc == 0, err
    assert "development metrics" in out and "the run file against the hidden test truth" in out
    assert "verdict, vae trained on the members:" in out and "verdict, the same vae trained on other patients" in out
    null = json.loads((tmp_path / "d" / "detect-null-generator" / "evaluation.json").read_text())
    assert set(null["detectors"]) == {"pixel_nn", "mc", "align_nn", "copy_nn", "subspace"}
    # At 64 px and below both detections give align_nn the coarser pose grid (as good there, a fraction of the search).
    from vitprint.membership.detectors.align_nn import COARSE_GRID

    d = tmp_path / "d"
    for run_dir in ("detect", "detect-null-generator"):
        used = json.loads((d / run_dir / "evaluation.json").read_text())["reproduction"]["detector_options"]
        assert used == {"align_size": 32, "copy_size": 32, **COARSE_GRID}
    report = (d / "detect" / "report.html").read_text()
    assert "Blind baseline" in report and "data:image/png;base64," in report
    assert any(v in report for v in ("Leak detected", "No evidence of a leak", "Inconclusive"))
    assert "of 8 unknown images called used" in report
    rows = (d / "detect" / "scores.csv").read_text().splitlines()
    assert rows[0].startswith("id,group,label,path,recon,latent_nn,pixel_nn") and len(rows) == 1 + 8 * 2 + 4 * 2
    run = d / "detect" / "run.txt"
    rc, out, _ = _run(capsys, "validate-run", run, "--images", d / "data" / "test" / "real_unknown")
    assert rc == 0 and "valid (8 lines)" in out
    rc, out, _ = _run(capsys, "evaluate", "--run", run, "--truth", d / "data" / "test_truth.csv", "--bootstrap", 20,
                      "--out", tmp_path / "m.json")
    assert rc == 0 and "kappa" in out and json.loads((tmp_path / "m.json").read_text())["run"]["metrics"]
    rc, out, _ = _run(capsys, "evaluate", "--scores", d / "detect" / "scores.csv", "--bootstrap", 20, "--folds", 3)
    assert rc == 0 and "combined" in out and "roc_auc" in out
    # A second run reuses every finished step: no checkpoint is rewritten.
    ckpts = sorted(d.rglob("*.safetensors"))
    mtimes = [p.stat().st_mtime_ns for p in ckpts]
    rc, _, err = _run(capsys, *demo_argv)
    assert rc == 0, err
    assert ckpts and [p.stat().st_mtime_ns for p in ckpts] == mtimes
    # Other settings never resume a folder made with these.
    rc, _, err = _run(capsys, *demo_argv, "--family", "dcgan")
    assert rc == 2 and "holds a demo made with other settings: family vae (not dcgan)" in err


def test_detect_with_explicit_folders_and_no_labels(tmp_path, capsys):
    from vitprint.demo import write_membership_split

    write_membership_split(tmp_path, 6, 3, size=32)
    rc, out, err = _run(capsys, "train-generator", tmp_path / "members", "--image-size", 32, "--epochs", 1,
                        "--out", tmp_path / "gan")
    assert rc == 0, err
    rc, out, err = _run(capsys, "generate", tmp_path / "gan" / "checkpoints" / "last.safetensors", "--n", 12,
                        "--out", tmp_path / "gen")
    assert rc == 0 and "wrote 12 images" in out
    argv = ["detect", "--generated", tmp_path / "gen", "--unknown", tmp_path / "test" / "real_unknown",
            "--detectors", "pixel_nn", "--decision", "pixel_nn", "--out", tmp_path / "det", "--run-names"]
    rc, out, err = _run(capsys, *argv)
    assert rc == 2 and "--assume-prevalence" in err  # no labels: no silent median split
    rc, out, err = _run(capsys, *argv, "--assume-prevalence", 0.5)
    assert rc == 0, err
    lines = (tmp_path / "det" / "run.txt").read_text().splitlines()
    assert len(lines) == 6 and sum(int(x.split(",")[1]) for x in lines) == 3  # the stated prevalence
    assert "assumed prevalence" in out
    assert lines[0].endswith((".png,0", ".png,1"))


def test_validate_run_reports_broken_lines(tmp_path, capsys, flat_folder):
    (tmp_path / "run.txt").write_text("img_00,1\nimg_00,1\n")
    rc, out, _ = _run(capsys, "validate-run", tmp_path / "run.txt", "--images", flat_folder)
    assert rc == 1 and "line 2: 'img_00' repeats line 1" in out and "missing 9 image(s)" in out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["detect", "--dev", "{tmp}"], "is not a challenge folder"),
        (["detect", "--generated", "{tmp}/nope", "--unknown", "{tmp}"], "not a folder"),
        (["evaluate", "--run", "{tmp}/r.txt"], "needs --truth"),
        (["evaluate"], "exactly one of --run"),
        (["generate", "{tmp}/none.safetensors"], "checkpoint not found"),
        (["detect", "--generated", "{tmp}", "--unknown", "{tmp}", "--detectors", "pixel_nn", "--decision", "recon"],
         "decision must be one of auto, combined, pixel_nn, got 'recon' (--decision)"),
        (["train-generator", "{tmp}", "--image-size", "48"], "power of two"),
    ],
)
def test_detection_bad_inputs(argv, message, tmp_path, capsys):
    (tmp_path / "r.txt").write_text("a,1\n")
    rc, _, err = _run(capsys, *[a.format(tmp=tmp_path) for a in argv])
    assert rc == 2 and message in err and len(err.strip().splitlines()) == 1, err


def test_detect_output_that_is_a_file_is_one_line(tmp_path, capsys):
    from vitprint.demo import write_membership_split

    write_membership_split(tmp_path, 4, 2, size=32)
    (tmp_path / "taken").write_text("a file")
    rc, _, err = _run(capsys, "detect", "--generated", tmp_path / "members", "--members", tmp_path / "dev" / "real_used",
                      "--non-members", tmp_path / "dev" / "real_not_used", "--out", tmp_path / "taken",
                      "--detectors", "pixel_nn")
    assert rc == 2 and "output folder" in err and len(err.strip().splitlines()) == 1, err


def test_fail_on_leak_exits_3_and_members_in_the_reference_are_refused(tmp_path, capsys):
    import shutil

    from vitprint.demo import write_membership_split

    write_membership_split(tmp_path, 6, 2, size=32)
    gen = tmp_path / "gen"
    shutil.copytree(tmp_path / "dev" / "real_used", gen)  # a generator that copied its training images
    for f in gen.iterdir():
        f.rename(f.with_name("g_" + f.name))
    argv = ["detect", "--generated", gen, "--members", tmp_path / "dev" / "real_used",
            "--non-members", tmp_path / "dev" / "real_not_used", "--detectors", "pixel_nn", "--bootstrap", 20,
            "--out", tmp_path / "det", "--no-report"]
    rc, out, err = _run(capsys, *argv, "--fail-on-leak")
    assert rc == 3, err
    assert out.startswith("Leak detected")
    rc, _, err = _run(capsys, *argv, "--force", "--reference", tmp_path / "dev" / "real_used")
    assert rc == 2 and "also in the reference set" in err


def test_report_says_how_to_reproduce_and_what_cannot_be_estimated(tmp_path, capsys):
    import shutil

    from vitprint.demo import write_membership_split

    write_membership_split(tmp_path, 6, 2, size=32)
    gen = tmp_path / "gen"
    shutil.copytree(tmp_path / "dev" / "real_used", gen)
    for f in gen.iterdir():
        f.rename(f.with_name("g_" + f.name))
    rc, _, err = _run(capsys, "detect", "--generated", gen, "--members", tmp_path / "dev" / "real_used",
                      "--non-members", tmp_path / "dev" / "real_not_used", "--detectors", "pixel_nn", "mc",
                      "--bootstrap", 20, "--out", tmp_path / "det")
    assert rc == 0, err
    report = (tmp_path / "det" / "report.html").read_text()
    assert "Reproduction" in report and "vitprint detect --generated" in report
    assert "needs ≥ 1,000 not-used images" in report  # TPR at 0.1% FPR cannot be estimated from 6 images
    assert "In words" in report and "false alarms" in report
    ev = json.loads((tmp_path / "det" / "evaluation.json").read_text())
    assert ev["reproduction"]["inputs"]["member"]["images"] == 6 and len(ev["reproduction"]["inputs"]["member"]["pixels_sha1"]) == 16
    rows = (tmp_path / "det" / "decisions.csv").read_text().splitlines()
    assert rows[0].startswith("id,role,label,score,p_used,decision,nearest_generated") and len(rows) == 13
    # every used image's nearest generated file is its own copy
    used = [r.split(",") for r in rows[1:] if ",member," in r]
    assert all(Path(r[6]).name == "g_" + r[0] + ".png" for r in used)


def test_every_option_of_every_command_is_read_by_it():
    """No option in --help is silently ignored: each one's value is read by its command (or a config
    builder the command calls), or it is one of the options main() itself acts on."""
    import inspect
    import re

    import vitprint.cli as cli

    handled_by_main = {"help", "config", "debug", "quiet", "version", "command_line"}

    def reads(fn, seen=None) -> set[str]:
        seen = seen if seen is not None else set()
        if fn in seen:
            return set()
        seen.add(fn)
        src = inspect.getsource(fn)
        out = set(re.findall(r"\ba\.(\w+)", src))
        for name in re.findall(r"\b(_\w+)\(", src):
            helper = getattr(cli, name, None)
            if inspect.isfunction(helper):
                out |= reads(helper, seen)
        return out

    parser = cli.build_parser()
    subs = parser._subparsers._group_actions[0].choices
    unread = []
    for name, sub in subs.items():
        used = reads(sub.get_default("func")) | ({"out"} if name in cli.LOCKED else set())
        for action in sub._actions:
            if action.dest not in handled_by_main and action.dest not in used:
                unread.append(f"{name} {'/'.join(action.option_strings) or action.dest}")
    assert not unread, unread
