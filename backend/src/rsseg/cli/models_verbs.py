"""`rsseg models [list | download ID | import ID FILE | verify ID | forget RUN]`: the registry, the user's
trained models (bundles) and their weight files."""

from __future__ import annotations

import json

from ..models.catalog import model_row, model_rows
from .progress_bar import ByteBar


def add_models_parser(sub) -> None:
    models = sub.add_parser("models", help="list models; download, import or verify their weight files")
    models.add_argument("--json", action="store_true", help="print the model list as JSON")
    verbs = models.add_subparsers(dest="models_command", metavar="{list,download,import,verify,forget}")
    listing = verbs.add_parser("list", help="list registered models and their weight status (the default)")
    listing.add_argument("--json", action="store_true", dest="verb_json", help="print the model list as JSON")
    download = verbs.add_parser("download", help="download a model's weight files (resumes, checks sha256)")
    download.add_argument("id", help="model id (see `rsseg models`)")
    download.add_argument("--json", action="store_true", dest="verb_json", help="print the model's row as JSON")
    download.add_argument("--quiet", action="store_true", help="no progress bar")
    imported = verbs.add_parser("import", help="import a weight file downloaded elsewhere (checks sha256)")
    imported.add_argument("id", help="model id (see `rsseg models`)")
    imported.add_argument("file", help="the weight file; it is copied, never moved or changed")
    verify = verbs.add_parser("verify", help="re-hash a model's weight files against the registry")
    verify.add_argument("id", help="model id (see `rsseg models`)")
    verify.add_argument("--quiet", action="store_true", help="no progress bar")
    forget = verbs.add_parser("forget", help="take a trained model off the list of your models (its folder stays)")
    forget.add_argument("run", help="the model's folder (its id)")


def _row_state(row: dict) -> str:
    """The weight files' state (a component's too: other models load it), then a needed checkpoint."""
    if not row["weights_present"]:
        return "weights missing"
    if not all(w["verified"] for w in row["weights"]):
        return "not verified"
    return "needs checkpoint" if row["state"] == "needs checkpoint" else "ready"


def _models_list(args) -> int:
    rows = model_rows()
    if args.json or getattr(args, "verb_json", False):
        print(json.dumps(rows, indent=2))
        return 0
    mine = [row for row in rows if row["bundle"]]
    if mine:
        print("My models (trained on your layers; the folder is the model id):")
        for row in mine:
            print(f"  {row['name']}: {', '.join(row['classes'])}\n    {row['id']}")
        print()
    rows = [row for row in rows if not row["bundle"]]
    width = max((len(row["id"]) for row in rows), default=0)
    for row in rows:
        print(f"{row['id']:{width}s} {row['task']:9s} {_row_state(row):16s} {row['description']}{_parameters(row)}")
    return 0


def _models_forget(args) -> int:
    from ..bundles.index import forget_bundle

    forgotten = forget_bundle(args.run)
    print(f"{args.run}: {'taken off your models (its files are kept)' if forgotten else 'was not on the list'}")
    return 0


def _parameters(row: dict) -> str:
    """" [parameters: 275,753 trainable of 4,077,354]" for trainable models, "" for the others."""
    if row.get("parameters_total") is None:
        return ""
    return f" [parameters: {row['parameters_trainable']:,} trainable of {row['parameters_total']:,}]"


def _needs_none(spec) -> bool:
    if spec.weights:
        return False
    print(f"model {spec.id!r} needs no weight files")
    return True


def _models_download(args) -> int:
    from ..models import get_spec
    from ..weights import download_weight, weight_status

    spec = get_spec(args.id)
    if not spec.weights and args.verb_json:
        print(json.dumps(model_row(spec), indent=2))
        return 0
    if _needs_none(spec):
        return 0
    for weight, before in zip(spec.weights, weight_status(spec)):
        mtime = before.path.stat().st_mtime_ns if before.present else None
        bar = ByteBar(weight.name, enabled=not args.quiet)
        try:
            path = download_weight(weight, progress=bar, model_id=spec.id)
        finally:
            bar.close()
        if not args.verb_json:
            kept = mtime is not None and path.stat().st_mtime_ns == mtime
            print(f"{weight.name}: {'already present' if kept else 'downloaded'}, sha256 verified: {path}")
    if args.verb_json:
        print(json.dumps(model_row(spec), indent=2))
    return 0


def _models_import(args) -> int:
    from ..models import get_spec
    from ..weights import import_weight

    spec = get_spec(args.id)
    if _needs_none(spec):
        return 0
    bar = ByteBar(spec.id)
    try:
        path = import_weight(spec, args.file, progress=bar)
    finally:
        bar.close()
    print(f"imported {args.file} as {path.name} for model {spec.id!r} (size and sha256 verified): {path}")
    return 0


def _models_verify(args) -> int:
    from ..models import get_spec
    from ..weights import verify_model

    spec = get_spec(args.id)
    if _needs_none(spec):
        return 0
    bar = ByteBar(spec.id, enabled=not args.quiet)
    try:
        states = verify_model(spec, progress=bar)
    finally:
        bar.close()
    for state in states:
        print(f"{state.name}: ok, size and sha256 match the registry: {state.path}")
    return 0


MODEL_VERBS = {"list": _models_list, "download": _models_download, "import": _models_import,
               "verify": _models_verify, "forget": _models_forget}


def cmd_models(args) -> int:
    return MODEL_VERBS[args.models_command or "list"](args)
