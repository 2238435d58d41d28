r"""Write a prompt ensemble (clip_prompts/<DATASET>.json) with an OpenAI-compatible chat endpoint.

    export OPENAI_API_KEY=...  OPENAI_MODEL=gpt-4o            # OPENAI_BASE_URL for other servers
    python tools/generate_prompts.py --dataset-name MyData --modality "chest X-ray" \
        --classes "normal lungs,pneumonia lungs" --n 50 --out clip_prompts/MyData.json
    python tools/generate_prompts.py --from-dataset MyData --root DATA --modality "chest X-ray"

For each class it asks POST {base}/chat/completions for modality-specific descriptions (the request
text is in clip_prompts/README.md, or print it with --dry-run), keeps the replies that pass the
rules of tools/check_prompts.py (one sentence, fits 77 CLIP tokens, no duplicate or near duplicate,
no other class's sentence with the name swapped) and asks again until the class has --n sentences
or --max-requests replies were used. The output file is rewritten atomically after each class, so
an interrupted run resumes where it stopped; classes that already have --n sentences are skipped.
At the end the file is checked as check_prompts.py would. Exit code: 0 done and valid, 1 written
but a rule is broken (e.g. a class stayed short), 2 a usage or endpoint error (the message says which).
"""

from __future__ import annotations

import argparse
import os
import sys

import _bootstrap  # noqa: F401

from engine.errors import UserError
from prompts.checks import NEAR, check_file, default_counters, format_report
from prompts.generate import DEFAULT_BASE_URL, SYSTEM_PROMPT, ChatClient, generate, request_text, resolve_task


# ----- command line --------------------------------------------------------------------------------
def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_argument_group("what to describe")
    src.add_argument("--dataset-name", help="DATASET.NAME the file is for (names the default output)")
    src.add_argument("--modality", help="imaging modality in words, e.g. 'brain MRI' (default for a benchmark: "
                     "its modality)")
    src.add_argument("--classes", help="comma-separated class strings, exactly as the dataset spells them")
    src.add_argument("--from-dataset", metavar="NAME", help="read the classes from DATA/NAME/split_NAME.json")
    src.add_argument("--root", help="data root for --from-dataset (without it, a benchmark's class table is used)")
    p.add_argument("--n", type=int, default=50, help="sentences per class (default 50)")
    p.add_argument("--out", help="output JSON (default clip_prompts/<DATASET>.json); resumed if it exists")
    api = p.add_argument_group("endpoint")
    api.add_argument("--base-url", default=os.environ.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL,
                     help="OpenAI-compatible base URL (env OPENAI_BASE_URL; default %(default)s)")
    api.add_argument("--model", default=os.environ.get("OPENAI_MODEL", ""), help="model name (env OPENAI_MODEL)")
    api.add_argument("--api-key", default=None, help="API key (default: env OPENAI_API_KEY)")
    api.add_argument("--temperature", type=float, default=1.0)
    api.add_argument("--timeout", type=float, default=120.0, help="seconds per request")
    api.add_argument("--retries", type=int, default=5, help="retries per request (429, 5xx, network, malformed)")
    api.add_argument("--backoff", type=float, default=2.0, help="first retry wait in seconds, doubled each time")
    api.add_argument("--max-wait", type=float, default=300.0, help="longest single wait, Retry-After included")
    p.add_argument("--max-requests", type=int, default=8, help="replies used per class at most (default 8)")
    p.add_argument("--near", type=float, default=NEAR, help=f"near-duplicate similarity (default {NEAR})")
    p.add_argument("--dry-run", action="store_true", help="print the request for the first class and stop")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        if args.n < 1 or args.max_requests < 1 or args.retries < 0:
            raise UserError("--n and --max-requests must be at least 1, --retries at least 0.")
        dataset, modality, classnames, out = resolve_task(args.dataset_name, args.from_dataset, args.classes,
                                                          args.root, args.modality, args.out)
        if args.dry_run:
            print(f"POST {args.base_url.rstrip('/')}/chat/completions  model={args.model or '?'}\n")
            print(f"[system]\n{SYSTEM_PROMPT}\n\n[user]\n"
                  f"{request_text(dataset, modality, classnames, classnames[0], args.n)}")
            return 0
        if not args.model:
            raise UserError("No model: pass --model or set OPENAI_MODEL.")
        api_key = args.api_key if args.api_key is not None else os.environ.get("OPENAI_API_KEY", "")
        if not api_key and "api.openai.com" in args.base_url:
            raise UserError("No API key: set OPENAI_API_KEY (or --api-key), or point --base-url at a local server.")
        client = ChatClient(args.base_url, args.model, api_key, timeout=args.timeout, retries=args.retries,
                            backoff=args.backoff, max_wait=args.max_wait, temperature=args.temperature)
        print(f"{dataset}: {len(classnames)} classes x {args.n} sentences -> {out}")
        generate(client, dataset, modality, classnames, out, args.n, args.max_requests, args.near)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # the output folder is not writable, the disk is full, ...
        print(f"error: cannot write {out}: {err}", file=sys.stderr)
        return 2
    counters, notes = default_counters()
    report = check_file(out, dataset, classnames, counters, min_count=args.n, near=args.near)
    report.notes.extend(notes)
    print()
    print(format_report(report))
    print(f"{out}: {'OK' if report.ok else 'rules broken, see above'} ({client.requests} requests)")
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
