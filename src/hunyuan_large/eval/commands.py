"""`hunyuan eval` (lm-eval tasks), `hunyuan eval perplexity` (text files) and `hunyuan eval ruler`
(long-context tasks by length): argument parsing."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    """Add `eval` and its `perplexity` and `ruler` subcommands to the `hunyuan` parser."""
    p = sub.add_parser("eval", help="score a model folder on lm-eval tasks (shipped offline suite: hunyuan_suite)")
    _model_args(p, required=False)
    p.add_argument("--max-length", type=int, help="context in tokens (default: the model's, within memory)")
    p.add_argument("--tasks", help="comma-separated lm-eval task or group names, e.g. hunyuan_suite")
    p.add_argument("--include-path", action="append", default=[], metavar="DIR",
                   help="a folder of extra task YAMLs (repeatable)")
    p.add_argument("--limit", type=float, help="documents per task (a fraction of them when < 1)")
    p.add_argument("--num-fewshot", type=int, help="few-shot examples per prompt")
    p.add_argument("--apply-chat-template", action="store_true", help="prompts in the model's chat template")
    p.add_argument("--max-gen-toks", type=int, default=256, help="default generation budget of a request")
    p.add_argument("--seed", type=int, default=1234, help="few-shot sampling and generation seed")
    p.add_argument("--metadata", help="JSON for the tasks' dataset hooks, e.g. '{\"max_seq_lengths\": [1024]}'")
    p.add_argument("--output", help="folder for results.json and results.md (default: runs/eval/<model>)")
    p.set_defaults(func=_eval)
    pp = p.add_subparsers(dest="eval_command", metavar="SUBCOMMAND")
    q = pp.add_parser("perplexity", help="mean NLL per token, perplexity and bits per byte of text files")
    _model_args(q, required=True)
    q.add_argument("files", nargs="+", help="UTF-8 text files")
    q.add_argument("--window", type=int, help="tokens per forward (default: the context, at most 4096)")
    q.add_argument("--stride", type=int, help="tokens a window moves by (default: half the window)")
    q.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    q.set_defaults(func=_perplexity)
    r = pp.add_parser("ruler", help="RULER long-context tasks at given lengths: a task x length table and plot")
    _model_args(r, required=True)
    r.add_argument("--lengths", default="1k,2k,4k", help="tokens per prompt + answer, e.g. 512,1k,2k,4k")
    r.add_argument("--tasks", help="comma-separated RULER tasks (default: all; see docs/evaluation.md)")
    r.add_argument("--samples", type=int, default=4, help="samples per task and length")
    r.add_argument("--seed", type=int, default=0, help="the generators' seed")
    r.add_argument("--apply-chat-template", action="store_true", help="each prompt as a user turn of the chat template")
    r.add_argument("--output", help="folder for results.json, results.md, ruler.png (default: runs/ruler/<model>)")
    r.set_defaults(func=_ruler)


def _model_args(p: argparse.ArgumentParser, required: bool) -> None:
    p.add_argument("--model", required=required, help="a model folder (weights, config, tokenizer)")
    p.add_argument("--batch-size", type=int, default=16, help="sequences per forward")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto")
    p.add_argument("--dtype", help="float32 or bfloat16 (default: float32 on CPU, the config's on GPU)")


def _eval(args: argparse.Namespace) -> None:
    from ..errors import UserError
    from .lm import HunyuanLM
    from .run import EvalRun, evaluate, results_table, write_results

    if not args.model or not args.tasks:
        raise UserError("hunyuan eval needs --model DIR and --tasks T1,T2 (e.g. --tasks hunyuan_suite)")
    limit = None if args.limit is None else (int(args.limit) if args.limit >= 1 else args.limit)
    try:
        metadata = json.loads(args.metadata or "{}")
    except json.JSONDecodeError as e:
        raise UserError(f"--metadata is not JSON: {e}") from None
    if not isinstance(metadata, dict):
        raise UserError(f"--metadata must be a JSON object, got {args.metadata}")
    run = EvalRun([t for t in args.tasks.split(",") if t], args.include_path, limit, args.num_fewshot,
                  args.apply_chat_template, args.seed, {"pretrained": args.model, **metadata})
    lm = HunyuanLM(args.model, batch_size=args.batch_size, max_length=args.max_length, max_gen_toks=args.max_gen_toks,
                   device=args.device, dtype=args.dtype, seed=args.seed)
    results = evaluate(lm, run)
    print(results_table(results))
    out = Path(args.output) if args.output else Path("runs") / "eval" / Path(args.model).resolve().name
    json_path, md_path = write_results(results, out)
    print(f"wrote {json_path} and {md_path} ({float(results['total_evaluation_time_seconds']):.1f} s)")


def _ruler(args: argparse.Namespace) -> None:
    from ..infer import Engine, EngineConfig
    from .ruler.report import markdown_table, write_report
    from .ruler.run import RulerRun, evaluate, parse_lengths
    from .ruler.tasks import select_tasks

    run = RulerRun(args.tasks, parse_lengths(args.lengths), args.samples, args.seed, args.apply_chat_template)
    select_tasks(run.tasks)  # a bad name fails before the model loads
    engine = Engine.from_pretrained(args.model, EngineConfig(max_batch=args.batch_size, max_len=max(run.lengths)),
                                    device=args.device, dtype=args.dtype)
    context = engine.model.config.max_position_embeddings
    if max(run.lengths) > context:
        print(f"note: lengths beyond the model's context of {context} tokens measure extrapolation")
    results = evaluate(engine, run)
    name = Path(args.model).resolve().name
    results["model"] = str(Path(args.model).resolve())
    print(markdown_table(results))
    paths = write_report(results, Path(args.output) if args.output else Path("runs") / "ruler" / name, f"{name}")
    seconds = sum(results["seconds"].values())
    print(f"wrote {', '.join(map(str, paths))} ({seconds:.1f} s)")


def _perplexity(args: argparse.Namespace) -> None:
    from .. import load_pretrained
    from rich.console import Console
    from rich.table import Table

    from ..tokenizer import load_tokenizer
    from .perplexity import read_texts, text_perplexity, total

    texts = read_texts(args.files)
    model = load_pretrained(args.model, device=args.device, dtype=args.dtype)
    window = args.window or min(model.config.max_position_embeddings, 4096)
    results = text_perplexity(model, load_tokenizer(args.model), texts, window, args.stride or max(1, window // 2),
                              args.batch_size, progress=not args.json)
    rows = [r.row() for r in results] + ([total(results).row()] if len(results) > 1 else [])
    if args.json:
        print(json.dumps(rows[-1] if len(rows) == 1 else rows))
        return
    table = Table("text", "tokens", "bytes", "NLL/token", "perplexity", "bits/byte")
    for r in rows:
        table.add_row(r["name"], str(r["tokens"]), str(r["bytes"]), f"{r['mean_nll']:.4f}",
                      f"{r['perplexity']:.3f}", f"{r['bits_per_byte']:.4f}")
    Console().print(table)
