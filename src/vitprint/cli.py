"""The ``vitprint`` command: parse options, build configs, call one library function.

Every subcommand reads its options from the command line and, optionally, a
YAML file given with ``--config`` (keys are the option names; the command line
wins). Problems with the input end in one line on stderr and exit status 2;
``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import sys
from pathlib import Path


from vitprint import __version__, distributed
from vitprint.config import DEFAULT_MAX_PIXELS
from vitprint.errors import VitprintError
from vitprint.membership.registry import available_detectors
from vitprint.membership.scoring import DEFAULT_DETECTORS
from vitprint.evaluation.verdict import LEAK

log = logging.getLogger("vitprint")

LOCKED = ("train", "pretrain", "train-generator", "detect", "attribute", "make-cohorts", "bench", "demo")  # commands that write a run folder


# ---------------------------------------------------------------- option groups

def _add_common(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("general")
    g.add_argument("--config", metavar="YAML", help="read options from a YAML file (keys are option names; the command line wins)")
    g.add_argument("--debug", action="store_true", help="show full tracebacks and debug logging")
    g.add_argument("--quiet", action="store_true", help="only warnings and errors, no progress bars")


def _add_model(p: argparse.ArgumentParser, default_preset: str, weights: bool = True) -> None:
    g = p.add_argument_group("model")
    g.add_argument("--preset", default=default_preset,
                   help=f"model size: 'seed' (ViT-B/16, 256 px, latent 512), 'tiny' (small ViT, 64 px, quick on a CPU), or any timm ViT name (default: {default_preset})")
    g.add_argument("--image-size", type=int, help="size images are read and reconstructed at (power of two, 32-512; default: the preset's)")
    g.add_argument("--vit-img-size", type=int, help="input size of the ViT; images are resized to it inside the encoder (default: the preset's)")
    g.add_argument("--latent-dim", type=int, help="latent size (default: the preset's)")
    g.add_argument("--pooling", choices=["cls", "mean"], help="pool the class token (the seed's) or the mean patch token (default: the preset's)")
    if not weights:  # the command describes a model, it loads none
        return
    g.add_argument("--vit-weights", "--encoder-weights", dest="encoder_weights", metavar="PATH", help="initialise only the ViT backbone from a foreign local state dict (.safetensors/.pth, timm or torchvision vit_b_16 layout; position embeddings resampled to fit); for a whole vitprint encoder use --pretrained-encoder")
    g.add_argument("--pretrained-hub", action="store_true", help="download the timm ViT's pretrained weights from the hub (needs internet; off by default)")


def _add_run(p: argparse.ArgumentParser, out: str, epochs: int, batch: int, compile_option: bool = True) -> None:
    g = p.add_argument_group("run")
    if compile_option:
        g.add_argument("--compile", action="store_true", help="compile the model with torch.compile (faster steps on a GPU after a minute of compiling; falls back to running it as it is, with one log line, where it cannot compile)")
    g.add_argument("--out", default=out, help=f"output folder for checkpoints, metrics and plots (default: {out})")
    g.add_argument("--epochs", type=int, default=epochs, help=f"epochs (default: {epochs})")
    g.add_argument("--batch-size", type=int, default=batch, help=f"batch size (default: {batch})")
    _add_device(g)
    g.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    g.add_argument("--num-workers", type=int, default=0, help="data-loading worker processes (default: 0)")
    g.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")


def _add_device(g) -> None:
    g.add_argument("--precision", choices=["auto", "fp32", "bf16", "fp16"], default="auto", help="auto (bf16 mixed precision on a GPU that supports it, fp32 on the CPU), fp32, or bf16/fp16 mixed precision (fp16 needs a GPU; default: auto)")
    g.add_argument("--device", choices=["auto", "cpu", "cuda", "mps"], default="auto", help="where to run (default: auto, the first of cuda, mps, cpu)")


def _add_optim(p: argparse.ArgumentParser, lr: float, wd: float, step: int, gamma: float) -> None:
    g = p.add_argument_group("optimiser (Adam + StepLR)")
    g.add_argument("--lr", type=float, default=lr, help=f"learning rate (default: {lr})")
    g.add_argument("--weight-decay", type=float, default=wd, help=f"weight decay (default: {wd})")
    g.add_argument("--step-size", type=int, default=step, help=f"epochs between learning-rate steps (default: {step})")
    g.add_argument("--gamma", type=float, default=gamma, help=f"learning-rate factor per step (default: {gamma})")


def _add_data(p: argparse.ArgumentParser, val_fraction: float | None = 0.1) -> None:
    g = p.add_argument_group("data")
    g.add_argument("--window", help="CT window for DICOM/NIfTI: lung, mediastinum, bone or 'centre,width' in HU (default: each image's own range)")
    g.add_argument("--cache-dir", help="where decoded images are cached (default: $VITPRINT_CACHE or ~/.cache/vitprint)")
    g.add_argument("--no-cache", action="store_true", help="decode images every time")
    g.add_argument("--strict", action="store_true", help="stop on an unreadable image instead of skipping it with a warning")
    if val_fraction is not None:  # only where something is trained on the images with a validation split
        g.add_argument("--val-fraction", type=float, default=val_fraction, help=f"fraction held out for validation when the data has no split (default: {val_fraction})")
    g.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS, help=f"largest image read, in pixels; a larger file (a decompression bomb, a giant scan) is skipped as unreadable, or an error with --strict (default: {DEFAULT_MAX_PIXELS}, about 12000 x 12000)")


# ---------------------------------------------------------------- config builders

def _model_cfg(a):
    from vitprint.models.presets import model_config

    return model_config(a.preset, image_size=a.image_size, vit_img_size=a.vit_img_size,
                        latent_dim=a.latent_dim, pooling=a.pooling)


def _resumed_model_cfg(a, default):
    """On --resume the run's own model config wins, so the options need not be repeated."""
    from vitprint.config import ModelConfig, from_dict
    from vitprint.training.checkpoint import read_meta
    from vitprint.training.engine import checkpoint_paths

    last, _ = checkpoint_paths(Path(a.out))
    if a.resume and last.is_file():
        return from_dict(ModelConfig, read_meta(last)["model"])
    return default


def _run_cfg(a):
    from vitprint.config import RunConfig

    return RunConfig(out=a.out, epochs=a.epochs, batch_size=a.batch_size, precision=a.precision,
                     seed=a.seed, num_workers=a.num_workers, resume=a.resume, device=a.device,
                     compile=a.compile)


def _optim_cfg(a):
    from vitprint.config import OptimConfig

    return OptimConfig(lr=a.lr, weight_decay=a.weight_decay, step_size=a.step_size, gamma=a.gamma)


def _data_cfg(a):
    from vitprint.config import DataConfig

    return DataConfig(window=a.window, cache_dir=a.cache_dir, no_cache=a.no_cache, strict=a.strict,
                      val_fraction=a.val_fraction if hasattr(a, "val_fraction") else DataConfig.val_fraction, max_pixels=a.max_pixels)


# ---------------------------------------------------------------- commands

def cmd_make_phantoms(a) -> int:
    from vitprint.data.phantoms import CLASSES, make_phantoms
    from vitprint.progress import bar

    with bar(total=a.per_class * len(CLASSES), desc="phantoms", unit="img") as pbar:
        counts = make_phantoms(a.out, per_class=a.per_class, size=a.size, seed=a.seed, progress=pbar)
    print(f"wrote {sum(counts.values())} images to {a.out} ({', '.join(f'{k} {v}' for k, v in counts.items())})")
    return 0


def cmd_pretrain(a) -> int:
    from vitprint.training.pretrain import pretrain

    model_cfg = _resumed_model_cfg(a, _model_cfg(a))
    summary = pretrain(a.data, model_cfg, _run_cfg(a), _optim_cfg(a), _data_cfg(a),
                       vit_weights=a.encoder_weights, pretrained_hub=a.pretrained_hub,
                       augment=not a.no_augment)
    val = summary["valid"]
    print(f"best validation: accuracy {val['accuracy']:.3f}, macro-F1 {val['macro_f1']:.3f}, kappa {val['kappa']:.3f}")
    if "test" in summary:
        t = summary["test"]
        print(f"test: accuracy {t['accuracy']:.3f}, macro-F1 {t['macro_f1']:.3f}, kappa {t['kappa']:.3f}")
    print(f"encoder weights: {summary['encoder']}")
    return 0


def cmd_train(a) -> int:
    from vitprint.training.autoencoder import train_autoencoder

    model_cfg = _model_cfg(a)
    if a.encoder:
        model_cfg = _encoder_model_cfg(a, model_cfg)
    model_cfg = _resumed_model_cfg(a, model_cfg)
    summary = train_autoencoder(a.images, model_cfg, _run_cfg(a), _optim_cfg(a), _data_cfg(a),
                                encoder_path=a.encoder, vit_weights=a.encoder_weights,
                                freeze_encoder=a.freeze_encoder, pretrained_hub=a.pretrained_hub).summary
    print(f"best validation MSE {summary['best_val_loss']:.5f}; checkpoint: {summary['checkpoint']}")
    print(f"reconstruction grid: {Path(a.out) / 'recon_grid.png'}")
    return 0


def _encoder_model_cfg(a, cfg):
    """A pretrained encoder brings its own architecture; the image size may still change. A model
    option given on the command line that the encoder contradicts is refused; the preset's default
    is replaced, in one line that says so."""
    import dataclasses

    from vitprint.config import ModelConfig, from_dict
    from vitprint.training.checkpoint import read_meta

    path = a.encoder
    if not Path(path).is_file():
        raise VitprintError(f"encoder weights not found: {path}")
    meta = read_meta(path) if path.endswith(".safetensors") else {}
    if "model" not in meta:
        return cfg
    enc = dataclasses.replace(from_dict(ModelConfig, meta["model"]), image_size=cfg.image_size)
    fields = ("vit", "vit_kwargs", "vit_img_size", "latent_dim", "pooling")
    differ = [f for f in fields if getattr(enc, f) != getattr(cfg, f)]
    if differ:
        # Options the user set: on the command line (also as --flag=value) or in the YAML file.
        given = {t.split("=", 1)[0] for t in getattr(a, "argv_used", ())}
        given |= {"--" + k.replace("_", "-") for k in getattr(a, "yaml_keys", ())}
        asked = {"--preset": ("vit", "vit_kwargs", "vit_img_size", "latent_dim", "pooling"),
                 "--vit-img-size": ("vit_img_size",), "--latent-dim": ("latent_dim",), "--pooling": ("pooling",)}
        clash = [flag for flag, touched in asked.items() if flag in given and set(touched) & set(differ)]
        what = ", ".join(f"{f} {getattr(enc, f)} (not {getattr(cfg, f)})" for f in differ)
        if clash:
            raise VitprintError(f"the encoder {path} is another architecture than {', '.join(clash)} asks for: {what}; "
                                "drop the option to use the encoder's, or choose another encoder")
        log.info("the model follows the encoder %s: %s", path, what)
    return enc


def cmd_reconstruct(a) -> int:
    from vitprint.inference import reconstruct_folders

    done = reconstruct_folders(a.checkpoint, a.images, a.out, a.batch_size, a.save_images, a.precision, a.device,
                               _data_cfg(a), progress=not a.quiet)
    print(f"{done['images']} images, mean MSE {done['mean_mse']:.5f}; errors: {done['errors']}")
    return 0


def cmd_info(a) -> int:
    from vitprint.models.info import model_info

    cfg = _model_cfg(a)
    info = model_info(cfg)
    if a.json:
        print(json.dumps({"preset": a.preset, "config": cfg.__dict__, **info}, indent=2))
        return 0
    print(f"preset {a.preset}: {cfg.vit} at {cfg.vit_img_size} px, images {cfg.image_size} px, latent {cfg.latent_dim}, pooling {cfg.pooling}")
    print(f"parameters: encoder {info['encoder_params'] / 1e6:.2f} M, decoder {info['decoder_params'] / 1e6:.2f} M, total {info['total_params'] / 1e6:.2f} M")
    print(f"GFLOP per image: encoder {info['encoder_gflop']:.2f}, autoencoder forward {info['autoencoder_gflop']:.2f}, training step {info['train_step_gflop']:.2f}")
    return 0


def cmd_detect(a) -> int:
    from vitprint.detection.inputs import resolve_inputs
    from vitprint.api.job import DetectConfig, detect
    from vitprint.membership.scoring import ScoreConfig
    from vitprint.evaluation.metrics import metric_table

    if (a.no_dev_reference or a.pool_generated) and not (a.dev and a.test):
        raise VitprintError("--no-dev-reference and --pool-generated act only with both --dev and --test")
    if a.no_dev_reference and a.reference:
        raise VitprintError("--no-dev-reference has no effect with --reference (the given reference is used)")
    inputs = resolve_inputs(a.dev, a.test, a.generated or (), a.members or (), a.non_members or (),
                            a.unknown or (), a.reference or (), pool_generated=a.pool_generated,
                            dev_reference=not a.no_dev_reference)
    model_cfg = _model_cfg(a)
    if a.encoder:
        model_cfg = _encoder_model_cfg(a, model_cfg)
    scores = ScoreConfig(detectors=tuple(a.detectors), k=a.k, latent_metric=a.latent_metric,
                         pixel_size=a.pixel_size, batch_size=a.batch_size, precision=a.precision, index=a.index,
                         extra=_key_values(a.detector_option))
    cfg = DetectConfig(out=a.out, scores=scores, folds=a.folds, target_fpr=a.target_fpr, decision=a.decision,
                       run_names=a.run_names, n_boot=a.bootstrap, seed=a.seed, device=a.device,
                       autoencoder=a.autoencoder, encoder=a.encoder, ae_epochs=a.ae_epochs,
                       ae_batch_size=a.batch_size, ae_lr=a.lr, precision=a.precision, report=not a.no_report,
                       assume_prevalence=a.assume_prevalence, keep_orientation=a.keep_orientation, force=a.force,
                       encoder_weights=a.encoder_weights,
                       pretrained_hub=a.pretrained_hub, command_line=shlex.join(["vitprint", *a.argv_used]))
    summary = detect(inputs, model_cfg, cfg, _data_cfg(a))
    _print_detection(summary, metric_table)
    if a.fail_on_leak and summary.get("verdict", {}).get("verdict") == LEAK:
        return 3
    return 0


def cmd_attribute(a) -> int:
    from vitprint.api.attribute import AttributeConfig, attribute
    from vitprint.attribution.layout import resolve_attribution

    inputs = resolve_attribution(a.real, a.generated, a.dev_generated, a.dev, a.test)
    cfg = AttributeConfig(out=a.out, method=a.method, image_size=a.image_size, k=a.k, none_rate=a.none_rate,
                          folds=a.folds, n_boot=a.bootstrap, seed=a.seed, truth=a.truth, run_names=a.run_names,
                          report=not a.no_report, force=a.force, command_line=shlex.join(["vitprint", *a.argv_used]))
    s = attribute(inputs, cfg, _data_cfg(a))
    for method, parts in s["results"].items():
        for part, r in parts.items():
            m, ci = r["metrics"], r["intervals"]
            where = "labelled generated (cross-validated)" if part == "dev" and method == "classifier" else \
                "labelled generated" if part == "dev" else "pool"
            acc = f"{m['accuracy']:.3f}" + (f" [{ci['accuracy'][0]:.2f}, {ci['accuracy'][1]:.2f}]" if "accuracy" in ci else "")
            print(f"{method:<10} on {where}: accuracy {acc}, macro-F1 {m['macro_f1']:.3f}, ARI {m['adjusted_rand']:.3f} "
                  f"({m['n']} images)")
    if s["counts"]["pool"]:
        print(f"run file method: {s['method']} ({s['why']})")
    else:
        print(f"no pool: nothing attributed; the most accurate method here: {s['method']} ({s['why']})")
    none = s["none_of_these"]
    if "pool_flagged" in none:
        print(f"none of these: {none['pool_flagged']} of {s['counts']['pool']} pool images ({none['measure']} below "
              f"{none['threshold']:.3f})")
    for key in ("attribution", "run", "report"):
        if key in s:
            print(f"{key.replace('run', 'run file')}: {s[key]}")
    return 0


def cmd_make_cohorts(a) -> int:
    from vitprint.attribution_bench import write_cohorts

    truth = write_cohorts(a.out, subsets=a.subsets, per_subset=a.per_subset, n_dev=a.dev_images, n_pool=a.pool_images,
                          hard=a.hard, size=a.size, gen_steps=a.gen_steps, family=a.family, seed=a.seed)
    print(f"wrote {a.subsets} subsets to {a.out}: dev/real/<subset>/, dev/generated/<subset>/, test/generated/ "
          f"(truth: {truth})")
    return 0


def _key_values(items: list[str], option: str = "--detector-option") -> dict:
    """``KEY=VALUE`` items as a dict, each value read as YAML (``true``, ``0.2``, ``[1, 2]``)."""
    import yaml

    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise VitprintError(f"{option} takes KEY=VALUE, got {item!r}")
        out[key.strip()] = yaml.safe_load(value)
    return out


def _print_detection(summary, metric_table) -> None:
    if "verdict" in summary:
        print(summary["verdict"]["sentence"])
        est = summary.get("leak_estimate")
        if est and summary["verdict"]["verdict"] == LEAK:
            print(f"about {est['count']:.0f} of {est['used']} used images [{est['count_low']:.0f}, {est['count_high']:.0f}] "
                  f"are recognisable in the generated set ({est['detector']}, above the 99th percentile of the not-used images)")
    if "development" in summary:
        print("development metrics (cross-validated; 95% bootstrap intervals):")
        print(metric_table(summary["development"]))
    for line in summary.get("set_up", []):
        print(line)
    if "run_decision" in summary:
        print(f"run file decisions: {summary['run_decision']}")
    for key, label in (("run_file", "run file"), ("report", "report")):
        if key in summary:
            print(f"{label}: {summary[key]}")


def cmd_evaluate(a) -> int:
    from vitprint.evaluation.metrics import metric_table
    from vitprint.evaluation.truth import evaluate_file

    if bool(a.run) == bool(a.scores):
        raise VitprintError("give exactly one of --run RUN_FILE or --scores scores.csv")
    if a.run and not a.truth:
        raise VitprintError("evaluating a run file needs --truth (a development folder or an id,label CSV)")
    ev = evaluate_file(a.run, a.scores, a.truth, a.folds, a.bootstrap, a.seed, a.target_fpr)
    if ev["missing"]:
        log.warning("the run file has no decision for %d image(s) of the truth", ev["missing"])
    if "verdict" in ev:
        print(ev["verdict"]["sentence"])
    if ev.get("not_for_verdict"):
        print(f"Reported, but neither tested for the verdict nor combined (cross-fitted or learnt from the labels): "
              f"{', '.join(ev['not_for_verdict'])}")
    print(metric_table(ev["results"], ev["keys"]))
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(json.dumps({**({"verdict": ev["verdict"]} if "verdict" in ev else {}), **ev["results"]},
                                          indent=2, default=float))
        print(f"metrics: {a.out}")
    return 0


def cmd_validate_run(a) -> int:
    from vitprint.evaluation.runfile import validate_run

    problems = validate_run(a.run, a.images)
    if problems:
        for p in problems:
            print(f"{a.run}: {p}")
        print(f"{len(problems)} problem(s): the run file is not valid")
        return 1
    n = sum(1 for line in Path(a.run).read_text().splitlines() if line.strip())
    print(f"{a.run}: valid ({n} lines)")
    return 0


def cmd_train_generator(a) -> int:
    from vitprint.config import RunConfig, check_image_size
    from vitprint.data.sources import read_folders
    from vitprint.training.generator import train_generator

    check_image_size(a.image_size, 32, what="the generated image size")  # before reading any image
    if a.family == "ddpm" and a.z_dim is not None:
        raise VitprintError("--z-dim is for dcgan, pacgan and vae: a diffusion model starts from a noise image of the image's size")
    if a.z_dim is not None and a.z_dim < 1:
        raise VitprintError(f"--z-dim must be >= 1, got {a.z_dim}")
    if a.width is not None and (a.width < 1 or (a.family == "ddpm" and a.width % 8)):
        raise VitprintError(f"--width must be >= 1{' and a multiple of 8 for ddpm (its group norm)' if a.family == 'ddpm' else ''}, "
                            f"got {a.width}")
    images = read_folders(a.images, a.image_size, _data_cfg(a), what="training images")
    run = RunConfig(out=a.out, epochs=a.epochs, batch_size=a.batch_size, precision=a.precision, seed=a.seed,
                    num_workers=a.num_workers, resume=a.resume, device=a.device)
    summary = train_generator(images, run, family=a.family, z_dim=100 if a.z_dim is None else a.z_dim, base=a.width, lr=a.lr)
    print(f"generator checkpoint: {summary['checkpoint']}; samples: {Path(a.out) / 'samples.png'}")
    return 0


def cmd_generate(a) -> int:
    from vitprint.training.generator import generate

    files = generate(a.checkpoint, a.n, a.out, seed=a.seed, size=a.size)
    print(f"wrote {len(files)} images to {a.out}")
    return 0


def cmd_bench(a) -> int:
    from vitprint.benchmark import run_benchmark
    from vitprint.evaluation.bench_report import write_tables

    membership_only = {"--families": a.families, "--sizes": a.sizes, "--no-speed": a.no_speed, "--no-null": a.no_null,
                       "--perturb": a.perturb, "--gen-steps": a.gen_steps, "--ct": a.ct}
    if a.task == "attribution":
        given = [flag for flag, v in membership_only.items() if v]
        if given:
            raise VitprintError(f"{', '.join(given)} belong to the membership benchmark, not --task attribution")
        return _bench_attribution(a)
    if a.subsets:
        raise VitprintError("--subsets belongs to the attribution benchmark (--task attribution)")
    results = run_benchmark(a.scale, a.out, a.families, a.sizes, a.seeds, speed=not a.no_speed, perturbed=a.perturb,
                            null_cells=not a.no_null, gen_steps=a.gen_steps, ct=a.ct)
    command = a.command_line or shlex.join(["vitprint", *a.argv_used])
    print(f"tables: {write_tables(results, command, Path(a.docs) if a.docs else None, Path(a.out))}")
    print(f"results: {Path(a.out) / 'results.json'}")
    return 0


def _bench_attribution(a) -> int:
    from vitprint.attribution_bench import markdown, run_attribution_benchmark
    from vitprint.evaluation.bench_report import update_section

    results = run_attribution_benchmark(a.scale, a.out, a.subsets, a.seeds)
    text = markdown(results, a.command_line or shlex.join(["vitprint", *a.argv_used]))
    print(text)
    if a.docs:
        update_section(Path(a.docs), f"attribution-{a.scale}", text, f"Attribution benchmark, {a.scale} scale")
        print(f"tables: {a.docs}")
    print(f"results: {Path(a.out) / 'results.json'}")
    return 0


def cmd_demo(a) -> int:
    from vitprint.demo import run_demo
    from vitprint.evaluation.metrics import metric_table
    from vitprint.evaluation.truth import evaluate_run, read_truth

    result = run_demo(a.out, preset=a.preset, per_class=a.per_class, members=a.members,
                      test_members=a.test_members, n_generated=a.n_generated, family=a.family,
                      gen_epochs=a.gen_epochs, null=not a.no_null, pretrain_epochs=a.pretrain_epochs,
                      ae_epochs=a.ae_epochs, lr=a.lr, seed=a.seed, n_boot=a.bootstrap)
    summary, null = result.pop("summary"), result.pop("null summary")
    print("development metrics (cross-validated; 95% bootstrap intervals):")
    print(metric_table(summary["development"]))
    test, _ = evaluate_run(result["run file"], read_truth(result["test truth"]), a.bootstrap, a.seed)
    print("the run file against the hidden test truth:")
    print(metric_table(test, ("accuracy", "kappa", "precision", "recall", "f1")))
    print(f"verdict, {a.family} trained on the members: {summary['verdict']['sentence']}")
    if null is not None:
        print(f"verdict, the same {a.family} trained on other patients (nothing to find): {null['verdict']['sentence']}")
    for name, path in result.items():
        print(f"{name}: {path}")
    return 0


# ---------------------------------------------------------------- parser

# vitprint.training.generator.FAMILIES, named here so that --help does not load torch (a test keeps them equal)
GENERATOR_FAMILIES = ["dcgan", "pacgan", "vae", "ddpm"]

def _parser_demo(sub) -> None:
    p = sub.add_parser("demo", help="run the whole story on built-in phantom data (no dataset needed)",
                       description="The whole membership story on built-in data: phantom CT patients split into members and non-members (the challenge's development and test layout), a generator trained long on the members only (a VAE by default: it memorises them), generated images, encoder pretraining on separate public phantoms, detection with every score, cross-validated metrics with intervals, a run file checked against the hidden truth, and an HTML report with the near-copies as evidence; beside it, the verdict on the same generator trained on other patients (nothing to find). Running it again reuses every finished step.")
    p.add_argument("--out", default="vitprint-demo", help="output folder (default: vitprint-demo)")
    p.add_argument("--preset", default="tiny", help="model preset (default: tiny)")
    p.add_argument("--per-class", type=int, default=60, help="public phantom images per class for pretraining (default: 60)")
    p.add_argument("--members", type=int, default=40, help="development images per side, used and not used (default: 40; with the test members, 64 images the generator learns by heart)")
    p.add_argument("--test-members", type=int, default=24, help="test images per side, hidden among real_unknown (default: 24)")
    p.add_argument("--n-generated", type=int, default=500, help="generated images (default: 500)")
    p.add_argument("--family", choices=GENERATOR_FAMILIES, default="vae", help="generator family (default: vae, which memorises its members at the default length)")
    p.add_argument("--gen-epochs", type=int, default=500, help="generator epochs over the members (default: 500, 1,000 steps at batch 32 on 64 members)")
    p.add_argument("--no-null", action="store_true", help="skip the comparison: the same generator trained on other patients, whose verdict the demo prints beside the real one")
    p.add_argument("--pretrain-epochs", type=int, default=30, help="encoder pretraining epochs (default: 30)")
    p.add_argument("--ae-epochs", type=int, default=20, help="autoencoder epochs (default: 20)")
    p.add_argument("--lr", type=float, default=3e-4, help="learning rate of pretraining and the autoencoder; higher than the seed's 1e-4 because the small ViT starts from scratch (default: 3e-4)")
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for the intervals (default: 1000)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    _add_common(p)
    p.set_defaults(func=cmd_demo)


def _parser_make_phantoms(sub) -> None:
    p = sub.add_parser("make-phantoms", help="write procedural CT-like chest slices in 4 classes",
                       description="Write phantom axial chest CT slices (lung window, 8-bit palette PNG) in the train/valid/test class-folder layout: classes normal, nodule, mass, effusion; every image a different random patient.")
    p.add_argument("--out", default="phantoms", help="output folder (default: phantoms)")
    p.add_argument("--per-class", type=int, default=60, help="images per class, split 70/15/15 (default: 60)")
    p.add_argument("--size", type=int, default=256, help="image size in pixels (default: 256)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    _add_common(p)
    p.set_defaults(func=cmd_make_phantoms)


def _parser_pretrain(sub) -> None:
    p = sub.add_parser("pretrain", help="pretrain the encoder as a classifier on a class-folder tree",
                       description="Supervised pretraining of the ViT encoder (plus a linear head) on labelled CT images: a tree with train/ and valid/ (and test/) class folders, or class folders split by --val-fraction. Writes encoder.safetensors (best epoch by validation macro-F1), checkpoints, metrics.jsonl, loss and confusion-matrix plots.")
    p.add_argument("data", help="class-folder tree (for example the Kaggle chest-CT layout)")
    p.add_argument("--no-augment", action="store_true", help="turn off the seed's augmentations")
    _add_model(p, "seed")
    _add_run(p, "runs/pretrain", epochs=100, batch=64)
    _add_optim(p, lr=1e-4, wd=1e-5, step=10, gamma=0.9)
    _add_data(p, val_fraction=0.15)
    _add_common(p)
    p.set_defaults(func=cmd_pretrain)


def _parser_train(sub) -> None:
    p = sub.add_parser("train", help="train the ViT autoencoder on image folders",
                       description="Train the ViT-based autoencoder (MSE loss) on every image below the given folders, holding out --val-fraction for validation. Writes checkpoints (best by validation MSE), metrics.jsonl, loss_curve.png and recon_grid.png.")
    p.add_argument("images", nargs="+", help="image folder(s)")
    p.add_argument("--pretrained-encoder", "--encoder", dest="encoder", metavar="PATH", help="start from a whole vitprint encoder (ViT, input conv and latent projection: encoder.safetensors from 'vitprint pretrain')")
    p.add_argument("--freeze-encoder", action="store_true", help="train only the decoder")
    _add_model(p, "seed")
    _add_run(p, "runs/train", epochs=10, batch=32)
    _add_optim(p, lr=1e-4, wd=0.0, step=10, gamma=1.0)
    _add_data(p)
    _add_common(p)
    p.set_defaults(func=cmd_train)


def _parser_reconstruct(sub) -> None:
    p = sub.add_parser("reconstruct", help="reconstruct a folder and write per-image errors",
                       description="Reconstruct every image below the folders with a trained autoencoder; writes errors.csv (id, path, mse, mae), recon_grid.png and, with --save-images, the reconstructions as PNG.")
    p.add_argument("checkpoint", help="autoencoder checkpoint (.safetensors from 'vitprint train')")
    p.add_argument("images", nargs="+", help="image folder(s)")
    p.add_argument("--out", default="runs/reconstruct", help="output folder (default: runs/reconstruct)")
    p.add_argument("--save-images", action="store_true", help="also write each reconstruction as PNG")
    p.add_argument("--batch-size", type=int, default=32, help="batch size (default: 32)")
    _add_device(p)
    _add_data(p)
    _add_common(p)
    p.set_defaults(func=cmd_reconstruct)


def _parser_info(sub) -> None:
    p = sub.add_parser("info", help="parameters and GFLOPs per image of a preset",
                       description="Print the parameter count and GFLOP per image (encoder, autoencoder forward, training step) of a preset or timm ViT.")
    _add_model(p, "seed", weights=False)
    p.add_argument("--json", action="store_true", help="print JSON")
    _add_common(p)
    p.set_defaults(func=cmd_info)


def _parser_detect(sub) -> None:
    p = sub.add_parser("detect", help="score real images, decide which were used for training, write the run file and report",
                       description="Detect training-data usage. Give the challenge's folders (--dev with generated/, real_used/, real_not_used/; --test with generated/, real_unknown/) or explicit folders. Checks that no image sits in two roles, runs the detectors (training the ViT autoencoder on the generated images for recon/latent_nn, or loading --autoencoder), gives one verdict with controls that can fail (permutation null, blind baseline), cross-validates decisions on the labelled images, and writes scores.csv, decisions.csv, evaluation.json, run.txt (for unknown images) and report.html.")
    g = p.add_argument_group("inputs")
    g.add_argument("--dev", metavar="DIR", help="development folder: generated/, real_used/, real_not_used/")
    g.add_argument("--test", metavar="DIR", help="test folder: generated/, real_unknown/")
    g.add_argument("--generated", nargs="+", metavar="DIR", help="generated (synthetic) image folder(s)")
    g.add_argument("--members", nargs="+", metavar="DIR", help="real images known to be used for training")
    g.add_argument("--non-members", nargs="+", metavar="DIR", help="real images known not to be used")
    g.add_argument("--unknown", nargs="+", metavar="DIR", help="real images to decide (the run file covers these)")
    g.add_argument("--reference", nargs="+", metavar="DIR", help="real images the generator never saw, for the calibrated scores (with --dev and --test: the development real_not_used/ images, unless --no-dev-reference)")
    g.add_argument("--no-dev-reference", action="store_true", help="with --dev and --test: do not use the development real_not_used/ images as the reference set")
    g.add_argument("--pool-generated", action="store_true", help="with --dev and --test: score every real image against both generated/ folders as one set (default: each against its own folder's, as they may come from different generators)")
    g.add_argument("--keep-orientation", action="store_true", help="score the generated images as stored even when most of them vote for another turn of the real images (upside down, a quarter turn, transposed: a set stored under another orientation convention); by default each image that votes for that turn is turned back before every detector, and the log and report say so")
    g = p.add_argument_group("scores")
    g.add_argument("--detectors", nargs="+", default=list(DEFAULT_DETECTORS), choices=available_detectors(), metavar="NAME",
                   help=f"detectors to run, among {', '.join(available_detectors())} (default: {' '.join(DEFAULT_DETECTORS)}); with --reference each calibratable one also gets a <name>_cal score")
    g.add_argument("--k", type=int, default=5, help="neighbours averaged by latent_nn (default: 5)")
    g.add_argument("--latent-metric", choices=["cosine", "l2"], default="cosine", help="latent distance (default: cosine)")
    g.add_argument("--pixel-size", type=int, default=64, help="image size for pixel_nn and mc (default: 64)")
    g.add_argument("--index", choices=["auto", "exact", "flat", "ivf", "hnsw"], default="auto", help="nearest-neighbour search of pixel_nn, mc, latent_nn and copy_nn: exact, or a FAISS index (flat: exact; ivf, hnsw: approximate, for very large generated sets); auto streams an exact search below 200,000 generated images and uses the flat index above, while it fits in 2 GB (default: auto)")
    g.add_argument("--detector-option", action="append", default=[], metavar="KEY=VALUE",
                   help="a detector's own option, repeatable: align_size=128, max_rotation=0, copy_steps=600, copy_size=128, mc_k=50, domias_dims=8, ... (see README)")
    g.add_argument("--autoencoder", metavar="CKPT", help="use this trained autoencoder instead of training one on the generated images")
    g.add_argument("--pretrained-encoder", "--encoder", dest="encoder", metavar="PATH", help="start the autoencoder from a whole vitprint encoder (encoder.safetensors from 'vitprint pretrain')")
    g.add_argument("--ae-epochs", type=int, default=10, help="autoencoder epochs (default: 10)")
    g.add_argument("--lr", type=float, default=1e-4, help="autoencoder learning rate (default: 1e-4)")
    g.add_argument("--batch-size", type=int, default=32, help="batch size (default: 32)")
    g = p.add_argument_group("decisions")
    g.add_argument("--decision", default="auto", help="what decides the run file: 'auto' (the detector that separates the development images best, chosen inside cross-validation), 'combined' (the best single score or a regularised logistic combination, whichever wins an inner cross-validation, over the scores the verdict may test: not the cross-fitted _cal ones nor pair's) or one score's name (default: auto)")
    g.add_argument("--target-fpr", type=float, help="fit thresholds to this false-positive rate instead of maximising Cohen's kappa")
    g.add_argument("--folds", type=int, default=5, help="cross-validation folds for development metrics (default: 5)")
    g.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for 95%% intervals (default: 1000; 0 turns them off)")
    g.add_argument("--run-names", action="store_true", help="write file names (real_unknown_0001.png) instead of stems in the run file")
    g.add_argument("--assume-prevalence", type=float, metavar="P", help="with no labelled images only: call the top P share of the unknown images used (an assumption, stated as such in the outputs)")
    g.add_argument("--fail-on-leak", action="store_true", help="exit with status 3 when the verdict is 'Leak detected' (for pipelines that gate a release)")
    g.add_argument("--force", action="store_true", help="replace a run file in --out made with other inputs or settings")
    g.add_argument("--no-report", action="store_true", help="skip the HTML report")
    p.add_argument("--out", default="runs/detect", help="output folder (default: runs/detect)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    _add_device(p)
    _add_model(p, "seed")
    _add_data(p)
    _add_common(p)
    p.set_defaults(func=cmd_detect)


def _parser_attribute(sub) -> None:
    p = sub.add_parser("attribute", help="say which real subset's generator made each generated image (Subtask 2)",
                       description="Attribute each generated image to the subset of real images its generator was trained on. REAL holds one sub-folder per subset; labelled generated images (development) come the same way; the pool is a flat folder (attributed) or one sub-folder per subset (also evaluated). The challenge's layout is found with --dev (real/ and generated/ side by side) and --test (a flat generated/). Methods: nearest (k-NN vote among the real images), classifier (logistic regression trained on the labelled generated images, cross-validated), cluster (a Gaussian mixture of the pool matched to the subsets); an image far from every subset reads 'none' in attribution.csv. Writes attribution.csv, run.txt (<id>,<subset>), evaluation.json and report.html.")
    g = p.add_argument_group("inputs")
    g.add_argument("--dev", metavar="DIR", help="a development folder with real/<subset>/ and generated/<subset>/")
    g.add_argument("--test", metavar="DIR", help="a test folder with a flat generated/ (the pool)")
    g.add_argument("--real", metavar="DIR", help="real images, one sub-folder per subset")
    g.add_argument("--dev-generated", metavar="DIR", help="labelled generated images, one sub-folder per subset")
    g.add_argument("--generated", metavar="DIR", help="the pool to attribute: a flat folder, or one sub-folder per subset")
    g.add_argument("--truth", metavar="CSV", help="the subset of each image of a flat pool (<id>,<subset> lines, the run file's form), to evaluate it")
    g = p.add_argument_group("method")
    g.add_argument("--method", choices=["auto", "nearest", "classifier", "cluster"], default="auto",
                   help="what writes the run file: auto (the best accuracy on the labelled generated images; nearest without them) or one method (default: auto)")
    g.add_argument("--k", type=int, default=5, help="neighbours in the nearest-subset vote (default: 5)")
    g.add_argument("--none-rate", type=float, default=0.01, help="share of images known to come from a subset that would be called 'none of these' (default: 0.01)")
    g.add_argument("--image-size", type=int, default=128, help="size images are read at (default: 128)")
    g.add_argument("--folds", type=int, default=5, help="cross-validation folds of the classifier (default: 5)")
    g.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for 95%% intervals (default: 1000; 0 turns them off)")
    g.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    g = p.add_argument_group("outputs")
    g.add_argument("--out", default="runs/attribute", help="output folder (default: runs/attribute)")
    g.add_argument("--run-names", action="store_true", help="write file names instead of stems in the run file")
    g.add_argument("--force", action="store_true", help="replace a run file in --out made with other inputs or settings")
    g.add_argument("--no-report", action="store_true", help="skip the HTML report")
    _add_data(p, val_fraction=None)
    _add_common(p)
    p.set_defaults(func=cmd_attribute)


def _parser_make_cohorts(sub) -> None:
    p = sub.add_parser("make-cohorts", help="write built-in attribution data: phantom cohorts, a generator per cohort",
                       description="Write the attribution setting where the truth is known: SUBSETS cohorts of distinct phantom patients (by default each with its own scanner noise and grain, body build and mix of findings; with --hard they differ only by patient), a generator trained on each cohort, and its images split into labelled development images and a flat test pool. Layout: OUT/dev/real/<subset>/, OUT/dev/generated/<subset>/, OUT/test/generated/ and OUT/test_truth.csv.")
    p.add_argument("--out", default="cohorts", help="output folder (default: cohorts)")
    p.add_argument("--subsets", type=int, default=5, help="cohorts (default: 5, as in 2025)")
    p.add_argument("--hard", action="store_true", help="cohorts that differ only by patient")
    p.add_argument("--per-subset", type=int, default=16, help="real images per cohort (default: 16)")
    p.add_argument("--dev-images", type=int, default=40, help="labelled generated images per cohort (default: 40)")
    p.add_argument("--pool-images", type=int, default=40, help="pool images per cohort (default: 40)")
    p.add_argument("--size", type=int, default=64, help="image size (default: 64)")
    p.add_argument("--gen-steps", type=int, default=500, help="training steps of each generator (default: 500)")
    p.add_argument("--family", choices=["dcgan", "vae"], default="vae", help="generator family (default: vae)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    _add_common(p)
    p.set_defaults(func=cmd_make_cohorts)


def _parser_evaluate(sub) -> None:
    p = sub.add_parser("evaluate", help="metrics with confidence intervals for a run file or a scores file",
                       description="Accuracy, precision, recall, F1, Cohen's kappa (and for scores: ROC-AUC, average precision, TPR at 1%% and 0.1%% FPR, cross-validated decisions, permutation p-values and the verdict), each with a bootstrap 95%% interval.")
    p.add_argument("--run", metavar="RUN_FILE", help="a run file (<id>,<0|1> lines)")
    p.add_argument("--scores", metavar="CSV", help="a scores.csv written by 'vitprint detect'")
    p.add_argument("--truth", metavar="DIR_OR_CSV", help="a development folder (real_used/, real_not_used/) or a CSV of id,label")
    p.add_argument("--folds", type=int, default=5, help="cross-validation folds for scores (default: 5)")
    p.add_argument("--target-fpr", type=float, help="fit thresholds to this false-positive rate instead of maximising kappa")
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples (default: 1000)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.add_argument("--out", metavar="JSON", help="also write the metrics as JSON")
    _add_common(p)
    p.set_defaults(func=cmd_evaluate)


def _parser_validate_run(sub) -> None:
    p = sub.add_parser("validate-run", help="check a run file against the task's rules",
                       description="Check a run file as the task's validator does: every line '<id>,<0|1>', ids of images in --images (stems or file names), none repeated, none missing. Prints each problem with its line number; exit status 1 when invalid.")
    p.add_argument("run", help="the run file")
    p.add_argument("--images", required=True, metavar="DIR", help="the test images (real_unknown/)")
    _add_common(p)
    p.set_defaults(func=cmd_validate_run)


def _parser_train_generator(sub) -> None:
    p = sub.add_parser("train-generator", help="train a DCGAN, VAE or diffusion model on real images (to build a membership setting)",
                       description="Train a standard DCGAN (or a convolutional VAE, or a small DDPM) on every image below the folders, to reproduce the situation vitprint audits: a generator trained on known members. Writes checkpoints/last.safetensors, metrics.jsonl and samples.png.")
    p.add_argument("images", nargs="+", help="training image folder(s): the members")
    p.add_argument("--family", choices=GENERATOR_FAMILIES, default="dcgan", help="generator family: dcgan, pacgan (the DCGAN with a discriminator that judges packs of 4 images and no augmentation: trained long on a small set, it can copy its images, not on every seed), vae or ddpm (a small diffusion model sampled with 25 DDIM steps; default: dcgan)")
    p.add_argument("--image-size", type=int, default=64, help="generated image size, a power of two >= 32 (default: 64)")
    p.add_argument("--z-dim", type=int, help="noise size of dcgan, pacgan and vae (default: 100)")
    p.add_argument("--width", type=int, help="base channel width (default: 32; ddpm 16)")
    _add_run(p, "runs/generator", epochs=200, batch=32, compile_option=False)
    p.add_argument("--lr", type=float, help="Adam learning rate (default: 2e-4 with betas 0.5/0.999 for dcgan and pacgan, 1e-3 for vae, 5e-4 for ddpm)")
    _add_data(p)
    _add_common(p)
    p.set_defaults(func=cmd_train_generator)


def _parser_bench(sub) -> None:
    p = sub.add_parser("bench", help="membership benchmark: every detector across generators and training-set sizes",
                       description="Build the membership setting from scratch where the truth is known: for each generator family and member-set size, train the generator on fresh phantom members only, generate, run every detector and the combiner, and evaluate on a held-out half with thresholds fitted on the other half; repeat over seeds (mean and 95%% t-interval; with one seed, a bootstrap interval of the held-out ROC-AUC), with the verdict of 'vitprint detect' per cell. Per family, null-generator cells (a generator trained on other patients) check that every detector sits at chance there. Also measures scoring speed and memory against 1k/10k/100k generated images. Results accumulate in OUT/results.json, so an interrupted run continues where it stopped.")
    p.add_argument("--task", choices=["membership", "attribution"], default="membership", help="membership (Subtask 1: which real images trained the generator) or attribution (Subtask 2: which cohort's generator made each image: K cohorts of phantom patients, a generator per cohort, every method's accuracy for each K in the easy and the hard case) (default: membership)")
    p.add_argument("--scale", choices=["toy", "cpu", "gpu"], default="cpu", help="toy (seconds), cpu or gpu. Membership: cpu is 72-96 minutes measured on 2 cores (tiny preset, 64 px, 64 and 256 members; --sizes 64 256 1024 about 2.3 h), gpu the seed preset at 256 px with 64 to 4096 members. Attribution: cpu is about an hour on 2 cores (64 px, 500 generator steps), gpu 128 px and 3000 steps (default: cpu)")
    p.add_argument("--subsets", nargs="+", type=int, help="attribution only: the numbers of cohorts K (default: the scale's: 2 5)")
    p.add_argument("--out", default="runs/bench", help="working and results folder (default: runs/bench)")
    p.add_argument("--docs", metavar="MARKDOWN", help="write the tables into this markdown file (for example docs/benchmarks.md), replacing its own section: one per scale, data, perturbation, training length and part of the grid (families or sizes other than the scale's)")
    p.add_argument("--families", nargs="+", choices=GENERATOR_FAMILIES, help="generator families (default: the scale's: dcgan vae; the gpu scale adds ddpm; pacgan, a GAN that can copy a small set, runs when named)")
    p.add_argument("--sizes", nargs="+", type=int, help="member-set sizes (default: the scale's)")
    p.add_argument("--seeds", type=int, help="seeds per cell (default: the scale's)")
    p.add_argument("--no-speed", action="store_true", help="skip the scoring-speed measurements")
    p.add_argument("--no-null", action="store_true", help="skip the null-generator cells (per family, a generator trained on other patients than the members: every detector must sit at chance there)")
    p.add_argument("--perturb", action="store_true", help="shift (4-8%%), re-window and add noise to the generated images before scoring, as a generator does to a slice it copies")
    p.add_argument("--gen-steps", type=int, help="membership only: generator training steps (default: the scale's, 1000 at cpu scale); more steps, more memorisation")
    p.add_argument("--ct", nargs="+", metavar="VOLUME", help="membership only: real CT volumes (NIfTI files or multi-frame DICOM files) instead of phantom patients: axial slices in the lung window dealt in turn (member, non-member, reference, non-member, member, reference), so each member's neighbouring slices are a non-member and a reference slice, either way up; three slices along, members and non-members swap, so the layout gives a null cell's generator, which learns the reference slices, no side from which to favour either group. Sizes must fit: a third of the slices at most")
    p.add_argument("--command-line", help=argparse.SUPPRESS)
    _add_common(p)
    p.set_defaults(func=cmd_bench)


def _parser_generate(sub) -> None:
    p = sub.add_parser("generate", help="sample images from a trained generator",
                       description="Write N samples of a generator checkpoint as 8-bit palette PNGs, generated_00000.png ...")
    p.add_argument("checkpoint", help="generator checkpoint (from 'vitprint train-generator')")
    p.add_argument("--n", type=int, default=1000, help="how many images (default: 1000)")
    p.add_argument("--out", default="generated", help="output folder (default: generated)")
    p.add_argument("--size", type=int, help="resize the samples to this size (default: the generator's)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    _add_common(p)
    p.set_defaults(func=cmd_generate)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vitprint",
        description="Find which real medical images were used to train a generative model, "
                    "from the synthetic images it produced, with a ViT-based autoencoder.",
    )
    parser.add_argument("--version", action="version", version=f"vitprint {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add in (_parser_demo, _parser_make_phantoms, _parser_pretrain, _parser_train, _parser_reconstruct, _parser_info, _parser_detect, _parser_attribute, _parser_make_cohorts, _parser_evaluate, _parser_validate_run, _parser_train_generator, _parser_bench, _parser_generate):
        add(sub)
    return parser


def _apply_yaml(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    args = parser.parse_args(argv)
    if not getattr(args, "config", None):
        return args
    from vitprint.config import load_yaml

    data = load_yaml(args.config)
    sub = parser._subparsers._group_actions[0].choices[args.command]  # noqa: SLF001 (argparse has no public accessor)
    known = {a.dest: a for a in sub._actions}  # noqa: SLF001
    defaults = {}
    for key, value in data.items():
        dest = key.replace("-", "_")
        if dest not in known or dest in ("config", "help"):
            raise VitprintError(f"config file {args.config}: unknown option {key!r} for '{args.command}'")
        problem = _yaml_type_problem(known[dest], value)
        if problem:
            raise VitprintError(f"config file {args.config}: {key}: {value!r} is not {problem}")
        defaults[dest] = value
    sub.set_defaults(**defaults)
    args = parser.parse_args(argv)
    args.yaml_keys = sorted(defaults)
    return args


def _yaml_type_problem(action: argparse.Action, value) -> str | None:
    """What a YAML value lacks to stand for ``action``'s option (None when it fits): the types the
    command line would parse, so ``epochs: 1.7`` or ``resume: "no"`` is refused, never half-read."""
    if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):  # noqa: SLF001
        return None if isinstance(value, bool) else "true or false"
    if value is None:  # null: the option's default, where that is "not given"
        return None if action.default is None else "a value (null stands for no value here)"
    many = action.nargs in ("+", "*") or isinstance(action, argparse._AppendAction)  # noqa: SLF001
    if many:
        if not isinstance(value, list) or (action.nargs == "+" and not value):
            return "a list"
        items = value
    else:
        items = [value]
    kind = action.type or str
    for item in items:
        if kind is int and (isinstance(item, bool) or not isinstance(item, int)):
            return "a whole number"
        if kind is float and (isinstance(item, bool) or not isinstance(item, (int, float))):
            try:  # YAML reads 1e-4 (no dot) as a string; the command line would take it
                float(item) if isinstance(item, str) else None
            except ValueError:
                return "a number"
            if not isinstance(item, str):
                return "a number"
        if kind is str and not isinstance(item, str):
            return "a string (quote it)" if isinstance(item, (int, float, bool)) else "a string"
        if action.choices is not None and item not in action.choices:
            return f"one of {', '.join(map(str, action.choices))}"
    return None


def _flags_for(parser: argparse.ArgumentParser, args, settings) -> list[str]:
    """The command's flags for the settings an error names (the library speaks of settings, not flags)."""
    if args is None or not settings:
        return []
    sub = parser._subparsers._group_actions[0].choices[args.command]  # noqa: SLF001
    known = {o for a in sub._actions for o in a.option_strings}  # noqa: SLF001
    return [f for f in (f"--{name.replace('_', '-')}" for name in settings) if f in known]


def _setup_logging(args) -> None:
    level = logging.DEBUG if args.debug else logging.WARNING if args.quiet else logging.INFO
    if not distributed.is_main() and not args.debug:  # several processes: the main one tells the story
        level, args.quiet = logging.WARNING, True
    logging.basicConfig(level=level, format="%(message)s" if not args.debug else "%(levelname)s %(name)s: %(message)s")
    for noisy in ("matplotlib", "PIL", "timm", "accelerate"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))
    if args.quiet:
        import os

        os.environ["VITPRINT_QUIET"] = "1"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not distributed.is_main():  # several processes (torchrun, accelerate launch): the main one prints
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 (for the life of the process)
    parser = build_parser()
    debug = "--debug" in argv
    args = None
    try:
        args = _apply_yaml(parser, argv)
        args.argv_used = [str(x) for x in argv]
        _setup_logging(args)
        if args.command not in LOCKED or not distributed.is_main():  # the main process holds the folder's lock
            return args.func(args)
        from vitprint.data.runlock import run_lock

        with run_lock(args.out):  # one run per output folder; a second one gets one line naming the holder
            return args.func(args)
    except ValueError as exc:  # VitprintError and the bad values models reject: the input's fault
        if debug:
            raise
        flags = _flags_for(parser, args, getattr(exc, "settings", ()))
        print(f"vitprint: error: {exc}" + (f" ({', '.join(flags)})" if flags else ""), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("vitprint: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # an unexpected failure: one line, the traceback with --debug
        if debug:
            raise
        print(f"vitprint: error: internal error, please report it as a bug: {type(exc).__name__}: {exc} "
              "(run with --debug for the traceback)", file=sys.stderr)
        return 1
