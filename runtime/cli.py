"""The ``edgeroute`` command: parse arguments, call the library, print.

Exit codes: 0 success, 2 usage or input error, 1 anything else.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from edgeroute.runtime.errors import (
    BundleNotFoundError,
    ConfigurationError,
    EdgerouteError,
    ExtraNotInstalledError,
    InvalidInputError,
    PrecisionUnavailableError,
    read_stdin_text,
    require_extra,
)

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2
# The names of export.training.finetune.CHAT_LABEL_RULES, which this module may not import (a test ties the two).
CHAT_LABEL_RULE_NAMES = ("template", "gap-aware", "gap-strict", "gap-graded")
EXIT_BROKEN_PIPE = 128 + 13  # what a shell reports for a tool killed by SIGPIPE
# A precision the bundle lacks is a wrong --precision, so a usage error too.
# Entry-point group of the build side's commands (export extra), declared in pyproject.toml.
BUILD_COMMANDS = "edgeroute.build"
_USAGE_ERRORS = (InvalidInputError, ConfigurationError, BundleNotFoundError, ExtraNotInstalledError, PrecisionUnavailableError)


def port_number(text: str) -> int:
    """``--port``: an integer in 0..65535 (0: the system picks a free port)."""
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number (0..65535)")
    return port


def strong_share(text: str) -> float:
    """A share of strong calls, strictly between 0 and 1 (every command's one rule: 0 and 1 need no router)."""
    try:
        share = float(text)
    except ValueError:
        share = math.nan
    if not 0.0 < share < 1.0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a share of strong calls strictly between 0 and 1")
    return share


def _add_load_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument(
        "--precision",
        choices=["fp32", "int8", "fp16"],
        default=None,
        help="graph precision (default: int8 on CPU, fp16 on CUDA, when present)",
    )
    parser.add_argument("--threads", type=int, default=None, help="onnxruntime intra-op threads")
    parser.add_argument("--strong-model", default=None, help="MF routers: strong model name")
    parser.add_argument("--weak-model", default=None, help="MF routers: weak model name")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``edgeroute`` command."""
    parser = argparse.ArgumentParser(prog="edgeroute", description="Quantized ONNX LLM routers.")
    commands = parser.add_subparsers(dest="command", required=True)
    _add_route_command(commands)
    _add_info_command(commands)
    _add_export_command(commands)
    _add_eval_command(commands)
    _add_calibrate_command(commands)
    _add_score_command(commands)
    _add_serve_command(commands)
    _add_train_command(commands)
    return parser


def _add_route_command(commands: Any) -> None:
    """``edgeroute route``: score prompts, print decisions."""
    route = commands.add_parser("route", help="score prompts and print one JSON decision per prompt")
    route.add_argument("prompts", nargs="+", metavar="PROMPT", help="prompts to score; '-' reads one prompt per line from stdin")
    route.add_argument("--router", default=None, help="shipped router name or bundle folder (default: models/DEFAULT)")
    route.add_argument("--jsonl", action="store_true", help='with -: one JSON string or {"prompt": ...} per line (prompts that span lines)')
    choice = route.add_mutually_exclusive_group()
    choice.add_argument(
        "--threshold", type=float, default=None, help="strong when win rate >= threshold (default: calibrated 50%% strong, else 0.5)"
    )
    choice.add_argument(
        "--strong-share",
        "--strong-pct",
        type=strong_share,
        default=None,
        dest="strong_share",
        help="share of prompts to send to the strong model, from the calibration table (--strong-pct: its old name)",
    )
    _add_load_options(route)


def _add_info_command(commands: Any) -> None:
    """``edgeroute info`` and ``edgeroute list``."""
    info = commands.add_parser("info", help="summarize a bundle's manifest")
    info.add_argument("bundle", metavar="BUNDLE", help="shipped router name or bundle folder")
    info.add_argument("--json", action="store_true", help="print the whole manifest")
    info.add_argument("--verify", action="store_true", help="re-score the manifest's golden prompts on this CPU; exit 1 when they drifted")

    commands.add_parser("list", help="list the shipped routers")


def _add_export_command(commands: Any) -> None:
    """``edgeroute export bert|mf|distilled|probe``."""
    export = commands.add_parser("export", help="convert a RouteLLM-format checkpoint to an ONNX bundle [export extra]")
    kinds = export.add_subparsers(dest="kind", required=True)
    for kind, what in (
        ("bert", "RouteLLM BertForSequenceClassification folder"),
        ("mf", "RouteLLM MF checkpoint folder"),
        ("distilled", "distilled fast-tier checkpoint (edgeroute train distilled)"),
        ("probe", "transformer-tier probe checkpoint (edgeroute train probe)"),
    ):
        sub = kinds.add_parser(kind, help=f"export a {what}")
        sub.add_argument("--checkpoint", required=True, help=f"local {what}")
        sub.add_argument("--out", required=True, help="bundle folder to write (must not exist, or use --overwrite)")
        sub.add_argument("--name", default=None, help="router name in the manifest (default: the folder name)")
        sub.add_argument("--precisions", default="fp32,int8", help="comma list of fp32,int8,fp16 (default fp32,int8)")
        sub.add_argument("--opset", type=int, default=17)
        sub.add_argument("--max-length", type=int, default=None, help="tokenizer truncation length")
        sub.add_argument("--int8-tolerance", type=float, default=0.05, help="fail when int8 and PyTorch win rates differ by more than this")
        sub.add_argument(
            "--int8-min-agreement",
            type=float,
            default=0.97,
            help="fail when int8 and PyTorch decisions agree on fewer prompts than this at the thresholds of 10%%..90%% strong calls "
            "(a BERT classifier keeps its most sensitive nodes in fp32 until they do)",
        )
        sub.add_argument("--per-channel", action=argparse.BooleanOptionalAction, default=True)
        sub.add_argument(
            "--reduce-range",
            action=argparse.BooleanOptionalAction,
            default=True,
            help="7-bit int8 weights, safe on AVX2 CPUs without VNNI (default on)",
        )
        sub.add_argument("--overwrite", action="store_true")
        sub.add_argument("--strong-name", default=None, help="name of the strong model (stored in the manifest)")
        sub.add_argument("--weak-name", default=None, help="name of the weak model (stored in the manifest)")
        if kind == "mf":
            sub.add_argument(
                "--embedder",
                default="minilm",
                help="'minilm' (packaged all-MiniLM-L6-v2), a local sentence-encoder folder, "
                "'openai:MODEL' for a remote embeddings endpoint, or 'static' for the static "
                "table that `train mf --encoder static` left in the checkpoint",
            )
            sub.add_argument(
                "--model-names",
                default=None,
                help="JSON file mapping model name to row index (default: the checkpoint's "
                "model_ids.json, else RouteLLM's 64 Arena models)",
            )


def _add_eval_command(commands: Any) -> None:
    """``edgeroute eval``: APGR / CPT / AUC on a benchmark folder."""
    evaluate = commands.add_parser("eval", help="RouteLLM's APGR / CPT / AUC on a benchmark folder")
    evaluate.add_argument(
        "--router",
        action="append",
        required=True,
        dest="routers",
        help="bundle folder, shipped router name, or 'random'; repeat for several",
    )
    evaluate.add_argument("--benchmark", choices=["mmlu", "gsm8k", "mt-bench"], default=None, help="required unless --correctness")
    evaluate.add_argument("--data-dir", default=None, help="folder laid out like RouteLLM's routellm/evals/ (with --benchmark)")
    evaluate.add_argument(
        "--correctness",
        default=None,
        metavar="CSV",
        help="N targets: a 'prompt' column and one True/False column per target of --config; prints the quality-cost curve",
    )
    evaluate.add_argument("--config", default=None, metavar="TOML", help="the targets file (README 'More than two models')")
    evaluate.add_argument("--strong-model", default="gpt-4-1106-preview", dest="eval_strong")
    evaluate.add_argument("--weak-model", default="mistralai/Mixtral-8x7B-Instruct-v0.1", dest="eval_weak")
    evaluate.add_argument(
        "--split",
        choices=["all", "train", "val", "test"],
        default="all",
        help="edgeroute's fixed split (README 'Training'); default all prompts",
    )
    evaluate.add_argument("--num-thresholds", type=int, default=10, help="quantile bins (RouteLLM uses 10)")
    evaluate.add_argument("--json", default=None, metavar="OUT", help="write the results as JSON")
    evaluate.add_argument("--plot", default=None, metavar="OUT.png", help="draw the curves [plot extra]")
    evaluate.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    evaluate.add_argument("--precision", choices=["fp32", "int8", "fp16"], default=None)
    evaluate.add_argument("--threads", type=int, default=None)


def _add_calibrate_command(commands: Any) -> None:
    """``edgeroute calibrate``: thresholds for shares of strong calls."""
    calibrate = commands.add_parser("calibrate", help="threshold for a share of strong-model calls")
    calibrate.add_argument("--router", required=True)
    sources = calibrate.add_mutually_exclusive_group(required=True)
    sources.add_argument("--prompts", action="append", help=".txt / .jsonl / .csv file or RouteLLM-layout folder; repeat for several")
    sources.add_argument(
        "--scores", action="append", help="`edgeroute score` output (.jsonl / .parquet): calibrate on its win rates; repeat for several"
    )
    wanted = calibrate.add_mutually_exclusive_group(required=True)
    wanted.add_argument(
        "--strong-share",
        "--strong-pct",
        type=strong_share,
        dest="strong_share",
        help="wanted share of strong calls, strictly between 0 and 1 (--strong-pct: its old name)",
    )
    wanted.add_argument(
        "--target-cost",
        type=float,
        metavar="USD",
        help="N targets (--config): the policy's threshold or cost weight for this average cost per request",
    )
    calibrate.add_argument("--config", default=None, metavar="TOML", help="the targets file, with --target-cost")
    calibrate.add_argument("--write", action="store_true", help="store a 10%%..90%% table in the bundle's manifest")
    calibrate.add_argument(
        "--out", default=None, metavar="DIR", help="write a calibrated copy of the bundle to DIR instead (a new folder; implies --write)"
    )
    calibrate.add_argument("--description", default=None, help="name of the prompt set, stored with --write")
    calibrate.add_argument("--column", default="prompt", help="key or column of .jsonl/.csv/.parquet prompt files (default 'prompt')")
    _add_load_options(calibrate)


def _add_serve_command(commands: Any) -> None:
    """``edgeroute serve``: the OpenAI-compatible routing server."""
    serve = commands.add_parser("serve", help="OpenAI-compatible routing server [serve extra]")
    serve.add_argument(
        "--router",
        action="append",
        dest="routers",
        default=None,
        help="router to load (shipped name or bundle folder); repeat; default models/DEFAULT",
    )
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=port_number, default=6060, help="0..65535; 0 picks a free port (default 6060)")
    for role, model in (("strong", "gpt-4-1106-preview"), ("weak", "mixtral-8x7b-instruct-v0.1")):
        serve.add_argument(f"--{role}-model", default=model, dest=f"{role}_upstream_model", help=f"{role} model name at its endpoint")
        serve.add_argument(f"--{role}-base-url", default="https://api.openai.com/v1", help="the upstream's base URL")
        serve.add_argument(
            f"--{role}-format",
            choices=["openai", "anthropic"],
            default="openai",
            help="the upstream's API: OpenAI chat completions, or Anthropic Messages (requests, answers and streams translated)",
        )
        serve.add_argument(
            f"--{role}-api-key-env",
            default=None,
            help="environment variable holding its API key (default: OPENAI_API_KEY for api.openai.com, no key elsewhere)",
        )
    serve.add_argument(
        "--config",
        default=None,
        metavar="TOML",
        help="N targets, most capable first, with costs and a policy (README 'More than two models'); replaces --strong-*/--weak-*",
    )
    serve.add_argument(
        "--check-upstreams", action="store_true", help="at start, refuse an upstream whose host and port take no TCP connection"
    )
    _add_config_flags(serve)
    _add_serve_limits(serve)
    _add_serve_engine(serve)


def _add_config_flags(parser: argparse.ArgumentParser) -> None:
    """The flags of ``ServerConfig``'s fields that carry one (``server.flag``): type, choices and default from the field."""
    from dataclasses import MISSING, fields
    from typing import Literal, get_args, get_origin, get_type_hints

    from edgeroute.runtime.serving.config import ServerConfig

    # Targets (numpy) is named for type checkers only; no flag has that type.
    hints = get_type_hints(ServerConfig, localns={"Targets": object})
    parsers: dict[str, Callable[[str], Any]] = {"share": strong_share}
    for config_field in fields(ServerConfig):
        meta = config_field.metadata
        if "flag" not in meta:
            continue
        default = config_field.default if config_field.default is not MISSING else None
        options: dict[str, Any] = {"dest": config_field.name, "help": meta["help"]}
        if meta.get("metavar"):
            options["metavar"] = meta["metavar"]
        kind = hints[config_field.name]
        if kind is bool:
            options.update(action="store_false" if meta.get("inverse") else "store_true", default=default)
        elif meta.get("repeat"):
            options.update(action="append", default=None)
        else:
            # X, Literal[...], or either of them | None
            values = [kind] if get_origin(kind) is Literal else [arg for arg in get_args(kind) if arg is not type(None)] or [kind]
            if get_origin(values[0]) is Literal:
                options["choices"] = list(get_args(values[0]))
            else:
                options["type"] = parsers[meta["parse"]] if "parse" in meta else values[0]
            options["default"] = default
        parser.add_argument(meta["flag"], **options)


def config_from_flags(args: argparse.Namespace) -> dict[str, Any]:
    """``ServerConfig`` keyword arguments of the flagged fields, from parsed ``serve`` arguments."""
    from dataclasses import fields

    from edgeroute.runtime.serving.config import ServerConfig

    values = {f.name: getattr(args, f.name) for f in fields(ServerConfig) if "flag" in f.metadata}
    # None: the flag was not given and its field keeps its default (a repeatable flag's default is None in argparse).
    return {name: tuple(value) if isinstance(value, list) else value for name, value in values.items() if value is not None}


def _add_serve_limits(serve: argparse.ArgumentParser) -> None:
    """``edgeroute serve``: scoring budget, auth and the bounds on what one request may cost."""
    serve.add_argument("--auth-token-env", default=None, help="require 'Authorization: Bearer $VAR' on every request but GET /health")
    serve.add_argument(
        "--keys-file",
        default=None,
        help="TOML file of teams' API keys (name, sha256 of the token, optional strong_share: a budget per team); "
        "each authenticates like the --auth-token-env token",
    )


def _add_serve_engine(serve: argparse.ArgumentParser) -> None:
    """``edgeroute serve --engine ray``: Ray Serve replicas."""
    engine = serve.add_argument_group("replicas on Ray Serve [ray extra]")
    engine.add_argument(
        "--engine",
        choices=["uvicorn", "ray"],
        default="uvicorn",
        help="uvicorn: one server process (default); ray: Ray Serve replicas of the same app",
    )
    engine.add_argument("--replicas", type=int, default=None, help="fixed number of replicas (default 1)")
    engine.add_argument("--min-replicas", type=int, default=None, help="autoscale between this ...")
    engine.add_argument("--max-replicas", type=int, default=None, help="... and this many replicas")
    engine.add_argument("--replica-cpus", type=float, default=None, help="Ray CPUs each replica reserves (default 1)")
    engine.add_argument(
        "--ray-address",
        default=None,
        help="join this Ray cluster (auto, HOST:6379, ray://HOST:10001); default: a private local one for this process",
    )
    engine.add_argument("--app-name", default=None, help="the Ray Serve application's name (default edgeroute)")
    engine.add_argument("--route-prefix", default=None, help="the application's route prefix on Serve's proxy (default /)")
    engine.add_argument(
        "--replace", action="store_true", default=None, help="replace a Ray Serve application of the same name (refused otherwise)"
    )


def _add_train_command(commands: Any) -> None:
    """``edgeroute train``: the shipped recipes and RouteLLM-format BERT / MF checkpoints."""
    train = commands.add_parser("train", help="train a router on preference data [export extra]")
    train_kinds = train.add_subparsers(dest="kind", required=True)
    _add_recipe_commands(train_kinds)
    for kind in ("bert", "mf"):
        sub = train_kinds.add_parser(kind, help=f"train a RouteLLM-format {kind.upper()} router checkpoint")
        sub.add_argument("--data", required=True, help="Arena battles (.jsonl), a correctness table (.csv) or a RouteLLM-layout folder")
        sub.add_argument("--out", required=True, help="checkpoint folder to write")
        sub.add_argument("--strong-model", default="gpt-4-1106-preview")
        sub.add_argument("--weak-model", default="mistralai/Mixtral-8x7B-Instruct-v0.1")
        sub.add_argument(
            "--encoder",
            default="minilm",
            help="'minilm' (packaged), a local BERT-family folder, or (mf) 'static': MiniLM distilled "
            "to static token embeddings, the microsecond tier",
        )
        sub.add_argument("--max-length", type=int, default=256)
        sub.add_argument("--seed", type=int, default=0)
        sub.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
        if kind == "bert":
            sub.add_argument("--epochs", type=float, default=2.0)
            sub.add_argument("--batch-size", type=int, default=32)
            sub.add_argument("--learning-rate", type=float, default=5e-5)
        else:
            sub.add_argument("--epochs", type=int, default=100)
            sub.add_argument("--batch-size", type=int, default=64)
            sub.add_argument("--learning-rate", type=float, default=3e-4)
            sub.add_argument("--dim", type=int, default=128)
            sub.add_argument("--noise", type=float, default=0.1)
            sub.add_argument(
                "--static-dims", type=int, default=256, help="with --encoder static: dimensions of the distilled static embeddings"
            )


def _load_router(args: argparse.Namespace, name: str | None):
    from edgeroute.runtime.scoring.router import Router, default_router_name

    return Router.load(
        default_router_name() if name is None else name,
        device=args.device,
        precision=args.precision,
        threads=args.threads,
        strong_model=args.strong_model,
        weak_model=args.weak_model,
    )


def _stdin_prompts(jsonl: bool) -> list[str]:
    """Standard input's prompts: one per line, or with ``jsonl`` one JSON string or ``{"prompt": ...}`` per line
    (the form for prompts that span lines). Blank lines are skipped."""
    lines = [line.rstrip("\r") for line in read_stdin_text().split("\n") if line.strip()]
    if not jsonl:
        return lines
    prompts = []
    for number, line in enumerate(lines, start=1):
        try:
            value = json.loads(line)
        except (ValueError, RecursionError):
            raise InvalidInputError(f"standard input: JSON line {number} is not JSON; nothing was scored") from None
        value = value.get("prompt") if isinstance(value, dict) else value
        if not isinstance(value, str):
            raise InvalidInputError(f'standard input: JSON line {number} is neither a string nor {{"prompt": "..."}}; nothing was scored')
        prompts.append(value)
    return prompts


def _read_prompts(arguments: Sequence[str], jsonl: bool = False) -> list[str]:
    """The prompts to score: ``-`` stands for stdin's prompts (``_stdin_prompts``); all are checked
    before any is scored, so a bad one never leaves half the output printed."""
    from edgeroute.runtime.scoring.router import clean_prompt

    prompts: list[str] = []
    for argument in arguments:
        prompts += _stdin_prompts(jsonl) if argument == "-" else [argument]
    if not prompts:
        raise InvalidInputError("no prompts to score: standard input ('-') held no non-blank line")
    problems = []
    for position, prompt in enumerate(prompts, start=1):
        try:
            clean_prompt(prompt)
        except InvalidInputError as exc:
            problems.append(f"prompt {position} of {len(prompts)}: {exc}")
    if problems:
        raise InvalidInputError("; ".join(problems) + "; nothing was scored")
    return prompts


def _run_route(args: argparse.Namespace) -> int:
    from edgeroute.runtime.scoring.decision import resolve_threshold

    prompts = _read_prompts(args.prompts, args.jsonl)
    router = _load_router(args, args.router)
    threshold = resolve_threshold(router, args.threshold, args.strong_share)
    for prompt in prompts:
        print(json.dumps(router.route(prompt, threshold).to_dict(rounded=True)))
    return EXIT_OK


def _run_info(args: argparse.Namespace) -> int:
    from edgeroute.runtime.scoring.kinds import router_kind
    from edgeroute.runtime.scoring.manifest import read_manifest
    from edgeroute.runtime.scoring.router import resolve_bundle

    manifest = read_manifest(resolve_bundle(args.bundle))
    if args.json:
        print(json.dumps(manifest.data, indent=2))
        return EXIT_OK
    data = manifest.data
    lines = [
        f"name:        {data['name']}",
        f"kind:        {data['kind']}",
        f"folder:      {manifest.folder}",
        f"precisions:  {', '.join(manifest.precisions) or str(manifest.encoder.get('kind')) + ' embedder, no graph'}",
        f"max length:  {manifest.max_length or 'set by the remote embedder'} tokens",
        f"opset:       {data.get('opset')}",
    ]
    models = data.get("models") or {}
    if models:
        lines.append(f"models:      strong={models.get('strong')} weak={models.get('weak')}")
    kind = router_kind(manifest.kind)
    lines.extend(kind.info_lines(manifest) if kind else [])
    for precision, figures in (data.get("parity") or {}).get("precisions", {}).items():
        if "max_abs_diff" not in figures:  # e.g. an fp16 graph the exporting CPU could not run
            lines.append(f"parity {precision}: not verified ({figures.get('reason', 'no figures')})")
            continue
        p99 = f", p99 {figures['p99_abs_diff']:.2e}" if "p99_abs_diff" in figures else ""
        lines.append(
            f"parity {precision}: max |Δ win rate| {figures['max_abs_diff']:.2e}{p99}, "
            f"min decision agreement {figures['min_agreement']:.3f} over {data['parity']['n_prompts']} prompts"
        )
    calibration = data.get("calibration")
    if calibration:
        lines.append(f"calibration: {len(calibration['thresholds'])} points on {calibration.get('prompt_set')}")
    for file_name, entry in data["files"].items():
        lines.append(f"file:        {file_name} {entry.get('bytes', 0) / 1e6:.1f} MB sha256 {entry['sha256'][:12]}")
    print("\n".join(lines))
    if args.verify:
        _verify_golden(manifest)
    return EXIT_OK


def _verify_golden(manifest) -> None:
    """Print one line per precision re-scored against the golden scores; raise the first drift."""
    from edgeroute.runtime.errors import ParityDriftError
    from edgeroute.runtime.scoring.golden import check_golden
    from edgeroute.runtime.scoring.router import Router

    failures: list[ParityDriftError] = []
    for precision in manifest.precisions or [None]:
        try:
            report = check_golden(Router.load(manifest.folder, precision=precision))
        except ParityDriftError as exc:
            failures.append(exc)
            print(f"verify {precision}: DRIFTED ({exc})")
            continue
        except EdgerouteError as exc:
            if precision != "fp16":  # fp16 graphs may run only on CUDA
                raise
            print(f"verify fp16: not runnable on this CPU ({str(exc)[:120]})")
            continue
        if not report["checked"]:
            print(f"verify {report['precision']}: not checked: {report['reason']}")
            continue
        versus = report.get("max_abs_diff_vs_fp32_reference")
        print(
            f"verify {report['precision']}: ok, max drift {report['max_drift']:.2e} (tolerance "
            f"{report['tolerance']:g}) on {report['n_prompts']} golden prompts"
            + ("" if versus is None else f", max |Δ| vs fp32 reference {versus:.2e}")
        )
    if failures:
        raise failures[0]


def _run_list(_: argparse.Namespace) -> int:
    from edgeroute.runtime.scoring.router import default_router_name, shipped_routers

    names = shipped_routers()
    default = default_router_name() if names else None
    for name in names:
        print(f"{name}{'  (default)' if name == default else ''}")
    return EXIT_OK


def _build_command(name: str) -> Callable[[argparse.Namespace], Any]:
    """A build-side command (export extra), found through the ``edgeroute.build`` entry points.

    pyproject.toml registers them, so the runtime never imports (or names) the build package
    and a runtime-only install only fails when one of these commands is asked for.
    """
    from importlib.metadata import entry_points

    found = [point for point in entry_points(group=BUILD_COMMANDS) if point.name == name]
    try:
        if not found:
            raise ImportError(f"no '{name}' entry point in the {BUILD_COMMANDS!r} group", name="edgeroute build side")
        return found[0].load()
    except ImportError as exc:
        missing = getattr(exc.__cause__, "name", None) or exc.name or "a build dependency"
        raise ExtraNotInstalledError(
            f"edgeroute {name} needs the 'export' extra ({missing} is not installed): in your edgeroute clone, pip install '.[export]'"
        ) from exc


def _run_export(args: argparse.Namespace) -> int:
    manifest_path = _build_command("export")(args)
    print(f"wrote {manifest_path}")
    return EXIT_OK


def _run_eval(args: argparse.Namespace) -> int:
    from edgeroute.runtime.evaluation.report import evaluate, format_table, in_sample_warnings, plot_curves

    if args.plot:  # fail before a long evaluation, not after it
        require_extra("matplotlib", "plot", "edgeroute eval --plot")
    if args.correctness or args.config:
        return _run_eval_targets(args)
    if args.benchmark is None or args.data_dir is None:
        raise InvalidInputError("give --benchmark and --data-dir (or --config and --correctness for N targets)")
    result = evaluate(
        args.routers,
        args.benchmark,
        Path(args.data_dir),
        args.eval_strong,
        args.eval_weak,
        args.split,
        args.num_thresholds,
        load_options={"device": args.device, "precision": args.precision, "threads": args.threads},
    )
    print(format_table(result))
    for warning in in_sample_warnings(result):
        print(warning, file=sys.stderr)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    if args.plot:
        print(f"plot: {plot_curves(result, Path(args.plot))}")
    return EXIT_OK


def _run_eval_targets(args: argparse.Namespace) -> int:
    """``edgeroute eval --config T --correctness CSV``: the policy's quality-cost curve beside random and length."""
    from edgeroute.runtime.evaluation.targets import format_curve, plot_cost_curve, quality_cost_curve, read_correctness
    from edgeroute.runtime.scoring.router import Router
    from edgeroute.runtime.scoring.targets import load_targets

    if not (args.correctness and args.config) or len(args.routers) != 1:
        raise InvalidInputError("the quality-cost curve takes one --router, --config (targets) and --correctness (a CSV)")
    targets = load_targets(args.config)
    prompts, correct = read_correctness(Path(args.correctness), targets)
    router = Router.load(args.routers[0], device=args.device, precision=args.precision, threads=args.threads)
    result = quality_cost_curve(router, targets, prompts, correct)
    print(format_curve(result))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    if args.plot:
        print(f"plot: {plot_cost_curve(result, Path(args.plot))}")
    return EXIT_OK


def _run_calibrate(args: argparse.Namespace) -> int:
    from edgeroute.runtime.evaluation.report import calibrate

    router = _load_router(args, args.router)
    if args.target_cost is not None:
        return _calibrate_cost(args, router)
    out = Path(args.out) if args.out else None
    write = args.write or out is not None
    if args.scores:
        from edgeroute.runtime.serving.batch import read_win_rates
        from edgeroute.runtime.evaluation.report import calibrate_win_rates

        rates = read_win_rates(args.scores, router=router.name)
        description = args.description or ", ".join(Path(s).name for s in args.scores)
        result = calibrate_win_rates(router, rates, args.strong_share, write, description, out=out)
    else:
        result = calibrate(router, [Path(p) for p in args.prompts], args.strong_share, write, args.description, args.column, out)
    print(json.dumps(result, indent=2))
    return EXIT_OK


def _calibrate_cost(args: argparse.Namespace, router: Any) -> int:
    """``calibrate --target-cost USD --config T --prompts P``: prints the setting to put in the targets file."""
    from edgeroute.runtime.evaluation.report import read_prompts
    from edgeroute.runtime.evaluation.targets import calibrate_cost
    from edgeroute.runtime.scoring.targets import load_targets

    if not args.config or not args.prompts:
        raise InvalidInputError("--target-cost needs --config (the targets file) and --prompts (the prompts to calibrate on)")
    if args.write or args.out:
        raise InvalidInputError("--target-cost prints the setting for the targets file; --write and --out store a strong-share table")
    result = calibrate_cost(router, load_targets(args.config), read_prompts([Path(p) for p in args.prompts], args.column), args.target_cost)
    print(json.dumps(result, indent=2))
    return EXIT_OK


def _add_score_command(commands: Any) -> None:
    """``edgeroute score``: batch scoring of a prompt log (runtime/serving/batch.py, runtime/serving/ray_batch.py)."""
    score = commands.add_parser("score", help="score a prompt log (JSONL/CSV/Parquet/text) into a JSONL or Parquet file")
    score.add_argument("--router", default=None, help="shipped router name or bundle folder (default: models/DEFAULT)")
    score.add_argument("--input", required=True, help=".jsonl / .csv / .parquet file, or text with one prompt per line")
    score.add_argument("--output", required=True, help="file to write: .jsonl or .parquet")
    score.add_argument("--column", default="prompt", help="the prompt's key or column (default 'prompt')")
    score.add_argument("--id-column", default="id", help="key or column copied to the output when present (default 'id')")
    choice = score.add_mutually_exclusive_group()
    choice.add_argument("--threshold", type=float, default=None, help="as in `edgeroute route`")
    choice.add_argument(
        "--strong-share",
        "--strong-pct",
        type=strong_share,
        default=None,
        dest="strong_share",
        help="share of strong calls, from the calibration table",
    )
    score.add_argument("--chunk-size", type=int, default=1024, help="local engine: prompts read and scored at a time")
    score.add_argument("--engine", choices=["local", "ray"], default="local", help="ray needs the 'ray' extra")
    score.add_argument("--ray-address", default=None, help="existing Ray cluster (default: a local one for this run)")
    score.add_argument("--batch-size", type=int, default=1024, help="ray engine: prompts per map_batches call")
    score.add_argument("--actors", type=int, default=1, help="ray engine: actors, each holding one Router")
    score.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    _add_load_options(score)


def _run_score(args: argparse.Namespace) -> int:
    import signal

    def terminated(*_: Any) -> None:
        # As SIGINT does: the writer removes its partial file on the way out.
        raise SystemExit(128 + signal.SIGTERM)

    signal.signal(signal.SIGTERM, terminated)
    common = {
        "column": args.column,
        "id_column": args.id_column,
        "threshold": args.threshold,
        "strong_share": args.strong_share,
        "progress": not args.no_progress,
    }
    if args.engine == "ray":
        from edgeroute.runtime.serving.ray_batch import score_file_ray
        from edgeroute.runtime.scoring.router import default_router_name

        options = {
            "device": args.device,
            "precision": args.precision,
            "threads": args.threads,
            "strong_model": args.strong_model,
            "weak_model": args.weak_model,
        }
        summary = score_file_ray(
            default_router_name() if args.router is None else args.router,
            args.input,
            args.output,
            load_options=options,
            batch_size=args.batch_size,
            actors=args.actors,
            address=args.ray_address,
            **common,
        )
    else:
        from edgeroute.runtime.serving.batch import free_cores, score_file

        if args.threads is None and args.device == "cpu":
            args.threads = free_cores()
        summary = score_file(_load_router(args, args.router), args.input, args.output, chunk_size=args.chunk_size, **common)
    print(json.dumps(summary.to_dict()))
    return EXIT_OK


def _run_serve(args: argparse.Namespace) -> int:
    import os

    from edgeroute.runtime.scoring.targets import load_targets
    from edgeroute.runtime.serving.keys import read_keys_file
    from edgeroute.runtime.serving.server import ServerConfig, UpstreamConfig, serve

    _check_serve_engine(args)
    token = None
    if args.auth_token_env:
        token = os.environ.get(args.auth_token_env)
        if not token:
            raise ConfigurationError(f"--auth-token-env {args.auth_token_env}: that variable is not set")
    config = ServerConfig(
        strong=UpstreamConfig(args.strong_upstream_model, args.strong_base_url, args.strong_api_key_env, format=args.strong_format),
        weak=UpstreamConfig(args.weak_upstream_model, args.weak_base_url, args.weak_api_key_env, format=args.weak_format),
        routers=args.routers or (),
        auth_token=token,
        keys=None if args.keys_file is None else read_keys_file(args.keys_file),
        targets=None if args.config is None else load_targets(args.config),
        **config_from_flags(args),
    )
    if args.check_upstreams:
        for role, upstream in config.upstream_roles():
            upstream.check(role)
            upstream.probe(role)
    if args.engine == "ray":
        from edgeroute.runtime.serving.ray_serve import APP_NAME, Placement, ReplicaOptions, run

        options = ReplicaOptions.from_flags(args.replicas, args.min_replicas, args.max_replicas, args.replica_cpus)
        placement = Placement(args.app_name or APP_NAME, args.route_prefix or "/", bool(args.replace))
        run(config, options, host=args.host, port=args.port, address=args.ray_address, placement=placement)
    else:
        serve(config, host=args.host, port=args.port)
    return EXIT_OK


def _check_serve_engine(args: argparse.Namespace) -> None:
    """Ray Serve's options need ``--engine ray``: refused, not ignored, with the uvicorn engine."""
    if args.engine == "ray":
        return
    given = [
        flag
        for flag, value in (
            ("--replicas", args.replicas),
            ("--min-replicas", args.min_replicas),
            ("--max-replicas", args.max_replicas),
            ("--replica-cpus", args.replica_cpus),
            ("--ray-address", args.ray_address),
            ("--app-name", args.app_name),
            ("--route-prefix", args.route_prefix),
            ("--replace", args.replace),
        )
        if value is not None
    ]
    if given:
        raise ConfigurationError(
            f"{', '.join(given)} need{'s' if len(given) == 1 else ''} --engine ray "
            "(Ray Serve replicas); the default engine is one uvicorn process"
        )


def _add_recipe_commands(train_kinds: Any) -> None:
    """``train finetuned|probe|distilled`` (and the older ``train teacher``): recipes compared by benchmarks/quality.py."""
    teacher = train_kinds.add_parser(
        "teacher",
        help="the previous transformer-tier recipe: MiniLM's top layers "
        "fine-tuned as RouteLLM's 3-label BERT router on every row of --data",
    )
    finetuned = train_kinds.add_parser(
        "finetuned",
        help="the transformer tier: RouteLLM's BERT router, every layer of MiniLM fine-tuned on the 3 labels of every row of --data",
    )
    _add_finetuned_options(finetuned)
    distilled = train_kinds.add_parser(
        "distilled",
        help="the fast tier: a static-embedding MLP fitted to a teacher bundle's win rates on the prompts of --data "
        "and on generated chat-style prompts",
    )
    probe = train_kinds.add_parser(
        "probe", help="the transformer tier: a linear probe on MiniLM's frozen bottom 4 layers, fitted on every row of --data"
    )
    probe.add_argument("--encoder", default=None, help="local sentence-encoder folder (default: packaged all-MiniLM-L6-v2)")
    probe.add_argument("--layers", type=int, default=4, help="bottom encoder layers kept (default 4)")
    for sub in (teacher, finetuned, distilled, probe):
        sub.add_argument("--data", required=True, help="a RouteLLM-layout folder (mmlu/, gsm8k/)")
        sub.add_argument("--out", required=True, help="checkpoint folder to write")
        if sub is not probe:  # the probe's fit is deterministic: no seed to set
            sub.add_argument("--seed", type=int, default=0)
        sub.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    _add_distilled_options(distilled)


def _add_finetuned_options(finetuned: argparse.ArgumentParser) -> None:
    """``train finetuned``'s recipe options."""
    finetuned.add_argument("--epochs", type=float, default=1.5)
    finetuned.add_argument("--learning-rate", type=float, default=5e-5)
    finetuned.add_argument("--max-length", type=int, default=256, help="tokens kept per prompt (RouteLLM's rule: the first ones)")
    finetuned.add_argument(
        "--chat-prompts",
        type=int,
        default=0,
        help="generated chat-style prompts trained beside --data's, labelled by template (--chat-labels; default 0)",
    )
    finetuned.add_argument(
        "--chat-labels",
        choices=CHAT_LABEL_RULE_NAMES,
        default="gap-aware",
        help="how a generated prompt's template becomes a label: 'template' (hard: strong wins, easy: tie), 'gap-aware' "
        "(hard math, reasoning and coding: strong wins; every second hard prompt elsewhere: strong wins, the rest tie; "
        "easy: tie; default), 'gap-strict' (the same with every fourth hard prompt elsewhere) or 'gap-graded' (every "
        "second in extraction, everyday and STEM, every fourth in writing, role-play and humanities)",
    )
    finetuned.add_argument(
        "--written-labels",
        action="store_true",
        help="also train on the half of export/training/written_prompts.jsonl's prompts that carry an intended difficulty "
        "(labelled by --chat-labels; the other half is kept for validation)",
    )
    finetuned.add_argument(
        "--written-file",
        default=None,
        metavar="JSONL",
        help="with --written-labels, read the written prompts from this file instead (laid out like "
        "export/training/written_prompts.jsonl; e.g. an earlier version of it, to rebuild a bundle trained on that)",
    )
    finetuned.add_argument(
        "--length-balance",
        action="store_true",
        help="weight rows so that within each source (MMLU, GSM8K, generated, written) every length quintile has the "
        "source's label mix: length then predicts no label",
    )
    finetuned.add_argument(
        "--voice-balance",
        action="store_true",
        help="with --length-balance, balance the written prompts within each voice (first person or not) too, so that "
        "voice and length together predict no label",
    )


def _add_distilled_options(distilled: argparse.ArgumentParser) -> None:
    """``train distilled``'s teacher, student and prompt options."""
    distilled.add_argument("--teacher", required=True, help="teacher bundle (e.g. bert-minilm-gpt4-mixtral)")
    distilled.add_argument("--static-from", required=True, help="bundle whose static table and tokenizer to use")
    distilled.add_argument("--hidden", type=int, default=64, help="the student MLP's hidden units (default 64)")
    distilled.add_argument(
        "--chat-prompts", type=int, default=6000, help="generated chat-style prompts scored by the teacher beside --data's (default 6000)"
    )
    distilled.add_argument(
        "--extra-prompts",
        default=None,
        help="a file of more unlabeled prompts for the teacher to score beside them (.txt one per line, .jsonl/.csv/.parquet "
        "with a 'prompt' field), e.g. export/training/written_prompts.jsonl",
    )
    distilled.add_argument(
        "--chat-prior",
        type=float,
        default=0.0,
        help="weight in [0, 1] of the chat prompts' template labels (hard or easy) in their targets (benchmarks/quality.py chooses it)",
    )
    distilled.add_argument(
        "--length-weight", type=float, default=0.0, help="weight of prompt length in the target (benchmarks/quality.py chooses it)"
    )
    distilled.add_argument(
        "--tune-table",
        type=float,
        default=0.0,
        metavar="LR",
        help="fit the static table's rows with the head at this learning rate (default 0: frozen); the shipped fast tier is "
        "--tune-table 3e-4 --epochs 10 --hidden 128 from a frozen table (docs/training.md)",
    )
    distilled.add_argument(
        "--epochs",
        type=int,
        default=None,
        help="passes over the prompts (default 30, as the frozen-table recipe; the shipped tuned one: 10)",
    )


def _run_train(args: argparse.Namespace) -> int:
    written_file = getattr(args, "written_file", None)  # train bert and mf have no written prompts
    if written_file and not args.written_labels:
        raise InvalidInputError("--written-file names the written prompts to train on: add --written-labels")
    if written_file and not Path(written_file).is_file():
        raise InvalidInputError(
            f"--written-file {written_file}: no such file (a JSONL laid out like export/training/written_prompts.jsonl)"
        )
    if getattr(args, "voice_balance", False) and not (args.length_balance and args.written_labels):
        raise InvalidInputError(
            "--voice-balance balances the written prompts within length quintiles: add --length-balance and --written-labels"
        )
    print(json.dumps(_build_command("train")(args)))
    return EXIT_OK


_COMMANDS = {
    "route": _run_route,
    "info": _run_info,
    "list": _run_list,
    "export": _run_export,
    "train": _run_train,
    "eval": _run_eval,
    "calibrate": _run_calibrate,
    "score": _run_score,
    "serve": _run_serve,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``edgeroute`` command; returns the exit code."""
    args = build_parser().parse_args(argv)
    try:
        return _COMMANDS[args.command](args)
    except BrokenPipeError:
        return _reader_went_away()
    except _USAGE_ERRORS as exc:
        print(f"edgeroute: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except EdgerouteError as exc:
        print(f"edgeroute: error: {exc}", file=sys.stderr)
        return EXIT_FAILURE


def _reader_went_away() -> int:
    """The reader of stdout closed it (``| head``): stop quietly, as Unix tools do (exit 141, SIGPIPE's)."""
    import os

    # Python flushes stdout again at exit; pointing it at /dev/null keeps that flush from raising too.
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return EXIT_BROKEN_PIPE


if __name__ == "__main__":
    sys.exit(main())
