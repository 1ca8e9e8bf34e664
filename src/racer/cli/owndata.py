"""``racer collect``, ``racer grade``, ``racer split`` and ``racer dataset``: calibration
data from your own models and traffic.

``racer collect`` (every model's response to every query), ``racer grade`` (0/1 labels
from references or an LLM judge), ``racer split`` (train, calibration and test files)
and ``racer dataset`` (the audited sample of a gateway's decision log). Parsing and
printing only; the work is in :mod:`racer.owndata`.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Annotated, Any

import typer

from racer.cli.common import UserError, console, results_console, user_errors


def _config_backends(config_path: Path, models: list[str] | None) -> dict[str, Any]:
    from racer.owndata.collect import load_backend_configs
    from racer.serve.backends import Backend
    from racer.serve.config import ConfigError

    try:
        configs = load_backend_configs(config_path)
    except ConfigError as error:
        raise UserError(f"--config {config_path}: {error}") from None
    names = [b.name for b in configs]
    if models:
        unknown = [m for m in models if m not in names]
        if unknown:
            raise UserError(f"--models {unknown} are not backends of {config_path} ({names}).")
        configs = [b for b in configs if b.name in models]
    try:
        return {b.name: Backend(b) for b in configs}
    except ConfigError as error:
        raise UserError(str(error)) from None


def _progress(total: int, done: int, show: bool) -> Any:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("${task.fields[cost]:.4f}"),
        TextColumn("{task.fields[errors]} errors"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=console,
        disable=not show,
    )


def collect(
    config: Annotated[
        Path, typer.Option("--config", "-c", help="Gateway YAML file; its backends are asked.")
    ],
    queries: Annotated[
        Path, typer.Option(help="JSONL or CSV with `query`, optional `id` and `reference`.")
    ],
    out: Annotated[
        Path, typer.Option(help="Result file (.jsonl or .parquet); resumed if it exists.")
    ],
    models: Annotated[
        list[str] | None, typer.Option("--models", help="Ask only these backends (repeatable).")
    ] = None,
    budget_usd: Annotated[
        float | None, typer.Option(help="Stop before spending more than this many dollars.")
    ] = None,
    max_tokens: Annotated[
        int | None, typer.Option(help="max_tokens of every request (also the cost estimate).")
    ] = None,
    temperature: Annotated[float | None, typer.Option(help="temperature of every request.")] = None,
    deadline_s: Annotated[
        float | None, typer.Option(help="Start no call after this many seconds.")
    ] = None,
    retry_errors: Annotated[
        bool, typer.Option(help="Ask again the pairs whose earlier call failed.")
    ] = False,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
) -> None:
    """Send every query to every backend; write one row per (query, model), resumably."""
    from racer.owndata.collect import (
        Budget,
        Journal,
        collect,
        journal_path,
        pending_pairs,
        read_queries,
        read_rows,
        write_parquet,
    )

    with user_errors(missing_extra="serve"):
        if budget_usd is not None and budget_usd <= 0:
            raise UserError(f"--budget-usd must be > 0, got {budget_usd}.")
        asked = read_queries(queries)
        journal_file = journal_path(out)
        seeded = out.suffix.lower() == ".parquet" and out.exists() and not journal_file.exists()
        journal = Journal(journal_file)
        if seeded:
            for row in read_rows(out):
                journal.append(row)
        backends = _config_backends(config, models)
        total = len(asked) * len(backends)
        pending = pending_pairs(asked, backends, journal)
        request: dict[str, Any] = {}
        if max_tokens is not None:
            request["max_tokens"] = max_tokens
        if temperature is not None:
            request["temperature"] = temperature
        budget = Budget(budget_usd, max_tokens or 1024)
        errors = 0
        with _progress(total, total - pending, progress) as bar:
            task = bar.add_task(
                "collect", total=total, completed=total - pending, cost=0.0, errors=0
            )

            def advance(row: dict[str, Any]) -> None:
                nonlocal errors
                errors += row["error"] is not None
                bar.update(task, advance=1, cost=budget.spent_usd, errors=errors)

            async def run() -> Any:
                try:
                    return await collect(
                        asked,
                        backends,
                        journal,
                        budget=budget,
                        request=request,
                        retry_errors=retry_errors,
                        deadline_s=deadline_s,
                        on_row=advance,
                    )
                finally:
                    await asyncio.gather(*(b.aclose() for b in backends.values()))

            try:
                summary = asyncio.run(run())
            finally:
                journal.close()
        if out.suffix.lower() == ".parquet" and summary.complete:
            write_parquet(journal.rows.values(), out)
            journal_file.unlink()
    where = out if summary.complete or out.suffix.lower() == ".jsonl" else journal_file
    results_console().print(
        f"{summary.written} rows written now, {summary.resumed} from earlier runs, "
        f"{summary.failed} failed calls, ${summary.spent_usd:.4f} spent -> {where}"
    )
    if not summary.complete:
        results_console().print(
            f"Stopped by the {summary.stopped or 'interruption'} with {summary.skipped} "
            "pairs left; run the same command again to resume."
        )


def grade(
    data: Annotated[Path, typer.Option(help="Responses written by racer collect.")],
    out: Annotated[Path, typer.Option(help="Graded long-form table (.jsonl or .parquet).")],
    references: Annotated[
        Path | None,
        typer.Option(
            help="JSONL/CSV with `reference` and `query_id` (or `id` / `query`); by default "
            "the references racer collect stored in each row."
        ),
    ] = None,
    judge: Annotated[
        str | None, typer.Option(help="A backend of --config that judges each response.")
    ] = None,
    config: Annotated[
        Path | None, typer.Option("--config", "-c", help="Gateway YAML file (for --judge).")
    ] = None,
    rule: Annotated[str, typer.Option(help="Exact rule: auto, choice, number or exact.")] = "auto",
    tolerance: Annotated[float, typer.Option(help="Relative tolerance of the number rule.")] = 1e-6,
    judge_retries: Annotated[
        int, typer.Option(help="Extra judge calls after an unparsable verdict.")
    ] = 2,
    label_from: Annotated[
        str, typer.Option(help="With both: which gives `label`, references or judge.")
    ] = "references",
    report: Annotated[
        Path | None, typer.Option(help="JSON file for the agreement report (both given).")
    ] = None,
) -> None:
    """Label each response 0/1 by exact rules against references, or by an LLM judge.

    Without --references and --judge, the references that racer collect stored in each
    row are used; a row without one stays unlabelled (counted).
    """
    from racer.owndata.collect import read_rows
    from racer.owndata.grade import (
        agreement,
        check_references_match,
        grade_references,
        judge_rows,
        read_references,
        stored_references,
        write_rows,
    )

    skipped = 0
    with user_errors(missing_extra="serve"):
        if label_from not in ("references", "judge"):
            raise UserError(f"--label-from must be references or judge, got {label_from!r}.")
        if judge is not None and config is None:
            raise UserError("--judge needs --config, the gateway YAML file naming that backend.")
        if not data.is_file():
            raise UserError(f"--data {data}: no such file.")
        rows = read_rows(data)
        refs = None
        if references is not None:
            refs, skipped = read_references(references)
            check_references_match(rows, refs, f"--references {references}")
        elif judge is None:
            refs = stored_references(rows)
            if not refs:
                raise UserError(
                    f"Give --references FILE, --judge MODEL, or both: no row of {data} holds "
                    "a `reference` (racer collect stores one when the queries file has it)."
                )
        if refs is not None:
            rows = grade_references(rows, refs, rule=rule, tolerance=tolerance)
        if judge is not None:
            backends = _config_backends(config, [judge])
            previous = read_rows(out) if out.is_file() else []

            async def run() -> list[dict[str, Any]]:
                try:
                    return await judge_rows(
                        rows, backends[judge], retries=judge_retries, previous=previous
                    )
                finally:
                    await backends[judge].aclose()

            rows = asyncio.run(run())
        both = refs is not None and judge is not None
        source = label_from if both else ("references" if refs is not None else "judge")
        for row in rows:
            row["label"] = row.get("label_references" if source == "references" else "label_judge")
        write_rows(rows, out)
    printer = results_console()
    labelled = sum(row["label"] is not None for row in rows)
    origin = "references stored by racer collect" if references is None and refs else source
    printer.print(f"Graded {labelled} of {len(rows)} responses ({origin}) -> {out}")
    if refs is not None:
        unmatched = sum(row.get("label_references") is None for row in rows)
        if skipped or unmatched:
            printer.print(
                f"{unmatched} responses have no reference and stay unlabelled"
                + (f"; {skipped} records of {references} had a null reference" if skipped else "")
                + "."
            )
    if judge is not None:
        failed = sum(row.get("label_judge") is None for row in rows)
        if failed:
            printer.print(
                f"{failed} responses have no verdict yet (judge failed or unparsable); "
                "run the same command again to judge only those."
            )
    if both:
        result = agreement(
            [row.get("label_references") for row in rows],
            [row.get("label_judge") for row in rows],
        )
        printer.print(
            f"Agreement of references and judge on {result['n']} responses: "
            f"{result['agreement']:.3f}, Cohen's kappa {result['kappa']:.3f}; confusion "
            f"[[ref 0 & judge 0, ref 0 & judge 1], [ref 1 & judge 0, ref 1 & judge 1]] = "
            f"{result['confusion']}"
        )
        if report is not None:
            report.write_text(json.dumps(result, indent=2), encoding="utf-8")


def dataset(
    from_log: Annotated[
        str, typer.Option(help="The decision log URL (sqlite:///PATH or postgresql://...).")
    ],
    out: Annotated[Path, typer.Option(help="Long-form table to write (.jsonl or .parquet).")],
    since: Annotated[
        str | None, typer.Option(help="Only decisions from this time on (ISO 8601 or Unix s).")
    ] = None,
    route: Annotated[str | None, typer.Option(help="Only this route's decisions.")] = None,
    grades: Annotated[
        Path | None, typer.Option(help="Labels from racer grade, joined on (query_id, model).")
    ] = None,
) -> None:
    """Export the audited decisions of a gateway's log as a dataset (one row per model)."""
    from racer.owndata.dataset_export import export_audited, parse_since
    from racer.owndata.grade import write_rows

    with user_errors(missing_extra="serve"):
        rows = export_audited(from_log, since=parse_since(since), route=route, grades=grades)
        if not rows:
            raise UserError(
                f"--from-log {from_log}: no audited decisions"
                + (f" since {since}" if since else "")
                + ". Set audit_rate on a route and serve some traffic first."
            )
        write_rows(rows, out)
    decisions = len({row["query_id"] for row in rows})
    labelled = sum(row.get("label") is not None for row in rows)
    results_console().print(
        f"Exported {decisions} audited decisions ({len(rows)} responses, {labelled} labelled) "
        f"-> {out}"
    )


def split(
    data: Annotated[
        Path,
        typer.Option(help="The file to split: RouterBench CSV, RouterDC JSON or JSONL."),
    ],
    out: Annotated[
        Path, typer.Option(help="Folder for train, calibration and test files (same format).")
    ],
    fractions: Annotated[
        str, typer.Option(help="Shares of the queries for train, calibration and test.")
    ] = "0.6,0.2,0.2",
    seed: Annotated[int, typer.Option(help="Seed of the draw.")] = 0,
    group_by: Annotated[
        str | None,
        typer.Option(help="A column to stratify by (for example RouterBench's eval_name)."),
    ] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace split files already in --out.")] = False,
) -> None:
    """Split a data file into train, calibration and test files; no query in two of them.

    Records that share a query id or text move together; the draw is seeded, and
    stratified by --group-by when given. The files feed racer calibrate --train ...
    --calibration ... and racer evaluate --test ....
    """
    from racer.owndata.split import split_file

    with user_errors():
        try:
            shares = [float(part) for part in fractions.split(",") if part.strip()]
        except ValueError:
            raise UserError(
                f"--fractions takes three numbers such as 0.6,0.2,0.2; got {fractions!r}."
            ) from None
        written = split_file(
            data, out, fractions=shares, seed=seed, group_by=group_by, overwrite=overwrite
        )
    printer = results_console()
    for part in written:
        printer.print(
            f"{part.name}: {part.n_queries} queries ({part.n_records} records) -> {part.path}",
            highlight=False,
        )
