"""Where the milliseconds of a hop go, and what tracing costs.

**The breakdown** (:func:`measure_hops`): the order saga through its processes with
every span exported over OTLP/HTTP to the project's receiver
(:class:`saga.dev.otlp.OtlpReceiver`, in a process of its own), one saga at a time.
A saga is 10 hops, each one record's trip (bench -> coordinator -> inventory ->
coordinator -> ... -> coordinator -> bench). A hop is cut, on one wall clock (every
process is on this machine, and spans are timed with ``time.time_ns``), into:

* ``publish``: the ``send`` span, from the producer's send to the broker's
  acknowledgement (the first hop: the bench's own publish call);
* ``fetch wait``: from that acknowledgement to the consumer taking the record up
  (the ``process`` span's start): the broker's fetch wait, the transfer, the
  consumer's hand-over to the partition's worker; negative when the record was
  fetched before its producer heard the acknowledgement;
* ``decode``, ``tx begin`` (the pool, BEGIN, the inbox claim; at the coordinator the
  saga log insert and the saga's lock and read), ``handler`` (at the coordinator the
  decision), ``writes`` (the outbox; at the coordinator the saga, its log and the
  outbox), ``commit``: from the span events of :mod:`saga.observability.tracing`;
* ``hand-over``: from the commit to the next record's ``send`` span.

A hop's total is from its record's send to the next record's send (the last: to
the bench reading ``SagaFinished``), so the hops of a saga add up to its end to end.
``after ack`` is what the process does once its record is acknowledged (marking the
outbox row sent): off the saga's path.

**Tracing's cost** (:func:`tracing_rows`): :func:`tests.benchmarks.sagas.measure` again,
with every span exported, and with 10% of sagas sampled (the SDK's
``parentbased_traceidratio`` sampler, ``OTEL_TRACES_SAMPLER``), each to a receiver
started for it and stopped by its process handle.

``python -m tests.benchmarks.hops``: both on an embedded stack of its own.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import select
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import asyncpg

from saga.dev.otlp_decode import CollectedSpan
from saga.kafka.publisher import Publisher
from saga.observability import tracing
from saga.settings import Settings
from tests.benchmarks import sagas
from tests.benchmarks.cost import Watched
from tests.benchmarks.figures import Figures, percentile
from tests.system_helpers import ROOT

#: The phases of a hop, in the order they happen.
PHASES = (
    "publish",
    "fetch wait",
    "decode",
    "tx begin",
    "handler",
    "writes",
    "commit",
    "hand-over",
)
#: The span event that ends each phase inside the consumer (either name: service, coordinator).
_ENDS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("decode", (tracing.DECODED,)),
    ("tx begin", (tracing.CLAIMED, tracing.LOADED)),
    ("handler", (tracing.HANDLED, tracing.DECIDED)),
    ("writes", (tracing.WRITTEN,)),
    ("commit", (tracing.COMMITTED,)),
)
FINISHED = "saga.SagaFinished"
BENCH = "bench"


# --- spans into hops (pure) ------------------------------------------------------------


@dataclass(frozen=True)
class BenchTimes:
    """The bench's own clock readings of one saga (wall clock ns)."""

    sent_ns: int  # before publishing OrderPlaced
    acked_ns: int  # its publish acknowledged
    received_ns: int  # SagaFinished read


@dataclass
class Hop:
    """One record's trip and where its time went (ms)."""

    sender: str
    receiver: str
    message_type: str
    phases: dict[str, float] = field(default_factory=dict)
    #: Off the saga's path: the receiver's work after its own record was acknowledged.
    after_ack_ms: float | None = None
    #: Records the receiver sent while handling this one.
    records_out: int = 0
    #: Transactions the receiver committed on the path (``saga.committed`` events).
    commits: int = 0

    @property
    def name(self) -> str:
        return f"{self.sender} -> {self.receiver}: {self.message_type}"

    @property
    def total_ms(self) -> float:
        return sum(self.phases.values())


def _ms(start_ns: int, end_ns: int) -> float:
    return (end_ns - start_ns) / 1e6


def _event(span: CollectedSpan, names: Sequence[str]) -> int | None:
    return next((at for name, at in span.events if name in names), None)


def _message_id(span: CollectedSpan) -> str:
    return str(span.attributes.get("messaging.message.id", ""))


def _cause(span: CollectedSpan, by_id: Mapping[str, CollectedSpan]) -> CollectedSpan | None:
    """The ``process`` span ``span`` descends from (its handling), if any."""
    seen: set[str] = set()
    current: CollectedSpan | None = span
    while current is not None and current.span_id not in seen:
        seen.add(current.span_id)
        if current is not span and current.kind == "consumer":
            return current
        current = by_id.get(current.parent_span_id or "")
    return None


def saga_path(
    spans: Sequence[CollectedSpan],
) -> list[tuple[CollectedSpan | None, CollectedSpan | None]] | None:
    """The records on one saga's path, as (send span, process span) pairs: from the
    record that started it (no send span: the bench sent it) to ``SagaFinished``
    (no process span: the bench read it). A record read by more than one process
    (the coordinator reads every event) is followed into the one whose handling
    sent the next record on the path. ``None`` when there is no such path."""
    by_id = {span.span_id: span for span in spans}
    sends: dict[str, CollectedSpan] = {}
    for span in spans:
        if span.kind == "producer":
            sends.setdefault(_message_id(span), span)
    readers: dict[str, list[CollectedSpan]] = {}
    for span in spans:
        if span.kind == "consumer":
            readers.setdefault(_message_id(span), []).append(span)
    # What each handling sent: process span id -> its send spans.
    sent_by: dict[str, list[CollectedSpan]] = {}
    for send in sends.values():
        cause = _cause(send, by_id)
        if cause is not None:
            sent_by.setdefault(cause.span_id, []).append(send)
    first = [m for m in readers if m not in sends]
    if len(first) != 1:
        return None
    path: list[tuple[CollectedSpan | None, CollectedSpan | None]] = []
    sent: CollectedSpan | None = None  # the bench sent the first record
    message_id = first[0]
    while len(path) <= len(spans):
        onward = []
        for reader in readers.get(message_id, []):
            for out in sent_by.get(reader.span_id, []):
                if (
                    _message_id(out) in readers
                    or out.attributes.get("saga.message.type") == FINISHED
                ):
                    onward.append((out.start_ns, reader, out))
        if not onward:
            return None
        _, reader, out = min(onward, key=lambda item: item[0])
        path.append((sent, reader))
        sent, message_id = out, _message_id(out)
        if out.attributes.get("saga.message.type") == FINISHED:
            path.append((out, None))
            return path
    return None


def saga_hops(spans: Sequence[CollectedSpan], bench: BenchTimes) -> list[Hop] | None:
    """The hops of one saga from its spans (all of one ``saga.id``), in order;
    ``None`` when they do not make one path from the bench back to the bench
    (a span missing, say)."""
    trips = saga_path(spans)
    if trips is None:
        return None
    hops: list[Hop] = []
    for index, (send, process) in enumerate(trips):
        following = trips[index + 1][0] if index + 1 < len(trips) else None
        sender = send.service if send is not None else BENCH
        receiver = process.service if process is not None else BENCH
        named = send if send is not None else process
        assert named is not None
        hop = Hop(sender, receiver, str(named.attributes.get("saga.message.type", "?")))
        start, acked = (send.start_ns, send.end_ns) if send else (bench.sent_ns, bench.acked_ns)
        hop.phases["publish"] = _ms(start, acked)
        if process is None:
            hop.phases["fetch wait"] = _ms(acked, bench.received_ns)
            hops.append(hop)
            continue
        hop.phases["fetch wait"] = _ms(acked, process.start_ns)
        last = process.start_ns
        for phase, names in _ENDS:
            at = _event(process, names)
            if at is not None:  # a missing event: its time goes to the next phase
                hop.phases[phase] = _ms(last, at)
                last = at
        assert following is not None  # a process span is followed by its record's send
        hop.phases["hand-over"] = _ms(last, following.start_ns)
        hop.after_ack_ms = _ms(following.end_ns, process.end_ns)
        hop.records_out = sum(
            1
            for s in spans
            if s.kind == "producer"
            and s.service == process.service
            and process.start_ns <= s.start_ns <= process.end_ns
        )
        hop.commits = sum(1 for name, _ in process.events if name == tracing.COMMITTED)
        hops.append(hop)
    return hops


def by_saga(spans: Sequence[CollectedSpan]) -> dict[str, list[CollectedSpan]]:
    grouped: dict[str, list[CollectedSpan]] = {}
    for span in spans:
        saga_id = span.attributes.get("saga.id")
        if isinstance(saga_id, str):
            grouped.setdefault(saga_id, []).append(span)
    return grouped


def _stats(values: Sequence[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {"p50": percentile(ordered, 50), "p90": percentile(ordered, 90)}


def breakdown(
    sagas_hops: Sequence[Sequence[Hop]], end_to_end_ms: Sequence[float]
) -> dict[str, Any]:
    """Medians and p90 of every phase of every hop over ``sagas_hops`` (sagas of one
    shape), of each hop's total, of each phase over the whole saga, and of the sum
    of the hops beside the end to end the bench measured."""
    if not sagas_hops:
        return {"sagas": 0, "hops": []}
    shape = [hop.name for hop in sagas_hops[0]]
    alike = [hops for hops in sagas_hops if [hop.name for hop in hops] == shape]
    rows = []
    for index, name in enumerate(shape):
        hops = [saga[index] for saga in alike]
        phases = {
            phase: _stats([hop.phases[phase] for hop in hops if phase in hop.phases])
            for phase in PHASES
            if any(phase in hop.phases for hop in hops)
        }
        after = [hop.after_ack_ms for hop in hops if hop.after_ack_ms is not None]
        rows.append(
            {
                "hop": name,
                "phases": phases,
                "total": _stats([hop.total_ms for hop in hops]),
                "after_ack": _stats(after) if after else None,
                "records_out": statistics.median(hop.records_out for hop in hops),
                "commits": statistics.median(hop.commits for hop in hops),
            }
        )
    whole = {
        phase: _stats([sum(hop.phases.get(phase, 0.0) for hop in saga) for saga in alike])
        for phase in PHASES
    }
    return {
        "sagas": len(alike),
        "other_shapes": len(sagas_hops) - len(alike),
        "hops": rows,
        "saga_by_phase": whole,
        "sum_of_hops": _stats([sum(hop.total_ms for hop in saga) for saga in alike]),
        "end_to_end": _stats(list(end_to_end_ms)),
    }


def render(result: Mapping[str, Any]) -> str:
    """The breakdown as a text table: p50 per phase (p90 of the totals)."""
    if not result.get("hops"):
        return f"hops: no breakdown ({result.get('note', 'no complete saga')})"
    short = {"fetch wait": "fetch", "tx begin": "begin", "hand-over": "handover"}
    head = "".join(f"{short.get(p, p):>9}" for p in PHASES)
    lines = [
        f"where a hop's milliseconds go, one saga at a time ({result['sagas']} sagas;"
        f" p50 ms; fetch_max_wait_ms={result.get('fetch_max_wait_ms', '?')})",
        f"{'hop':<44}{head}{'total':>9}{'p90':>7}{'ackd':>7}",
    ]

    def cell(stats: Mapping[str, float] | None, key: str = "p50", width: int = 9) -> str:
        return f"{stats[key]:>{width}.2f}" if stats else f"{'':>{width}}"

    for row in result["hops"]:
        cells = "".join(cell(row["phases"].get(p)) for p in PHASES)
        lines.append(
            f"{row['hop'][:43]:<44}{cells}{cell(row['total'])}{cell(row['total'], 'p90', 7)}"
            f"{cell(row['after_ack'], width=7)}"
        )
    whole = "".join(cell(result["saga_by_phase"][p]) for p in PHASES)
    lines.append(f"{'the saga, each phase summed over its hops':<44}{whole}")
    lines.append(
        f"sum of the hops p50 {result['sum_of_hops']['p50']:.1f} ms (p90"
        f" {result['sum_of_hops']['p90']:.1f}); end to end as the bench timed it p50"
        f" {result['end_to_end']['p50']:.1f} ms (p90 {result['end_to_end']['p90']:.1f})"
    )
    alone = result.get("statements_alone") or {}
    if alone:
        lines.append(
            "a service's statements alone, same pace, from the bench (p50 ms): "
            + ", ".join(f"{phase} {stats['p50']:.2f}" for phase, stats in alone.items())
        )
    counts = result["hops"][1] if len(result["hops"]) > 1 else result["hops"][0]
    lines.append(
        f"per hop: 1 record in, {counts['records_out']:g} out; {counts['commits']:g} transaction"
        " on the path; the outbox row marked sent by the relay's next pass, off the path"
    )
    return "\n".join(lines)


# --- the receiver, in a process of its own --------------------------------------------


class Receiver:
    """``python -m tests.benchmarks.hops receive`` as a child process: the project's
    OTLP/HTTP receiver. :meth:`stop` (by its handle) makes it write what it got."""

    def __init__(self, spans_file: Path | None = None) -> None:
        self.spans_file = spans_file
        self.endpoint = ""
        self.received: dict[str, int] = {}
        self._process: subprocess.Popen[str] | None = None

    def start(self) -> Receiver:
        command = [sys.executable, "-m", "tests.benchmarks.hops", "receive"]
        if self.spans_file is not None:
            command += ["--spans", str(self.spans_file)]
        self._process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, text=True)
        assert self._process.stdout is not None
        ready, _, _ = select.select([self._process.stdout], [], [], 30)
        line = self._process.stdout.readline().strip() if ready else ""
        if not line.startswith("http://"):
            self.stop()
            raise RuntimeError(f"the OTLP receiver did not start: {line!r}")
        self.endpoint = line
        return self

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        try:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
            out, _ = process.communicate(timeout=60)
            lines = [line for line in out.splitlines() if line.startswith("{")]
            if lines:
                self.received = json.loads(lines[-1])
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()

    def __enter__(self) -> Receiver:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()


def _receive(spans_file: Path | None) -> None:
    from saga.dev.otlp import OtlpReceiver

    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    with OtlpReceiver() as receiver:
        print(receiver.endpoint, flush=True)
        while not stopping.wait(0.2):
            pass
        spans = receiver.spans()
        if spans_file is not None:
            spans_file.write_text(json.dumps([asdict(span) for span in spans]))
        print(json.dumps({"spans": len(spans), "requests": receiver.requests}), flush=True)


def load_spans(path: Path) -> list[CollectedSpan]:
    out = []
    for item in json.loads(path.read_text()):
        item["links"] = tuple(tuple(link) for link in item["links"])
        item["events"] = tuple((name, at) for name, at in item["events"])
        out.append(CollectedSpan(**item))
    return out


def tracing_env(endpoint: str, ratio: float | None) -> dict[str, str]:
    """Every process exports its spans to ``endpoint``; ``ratio``: the share of
    traces sampled (parent-based), ``None`` for all."""
    env = {"SAGA_OTLP_ENDPOINT": endpoint, "OTEL_TRACES_SAMPLER": "parentbased_always_on"}
    if ratio is not None:
        env |= {"OTEL_TRACES_SAMPLER": "parentbased_traceidratio"}
        env |= {"OTEL_TRACES_SAMPLER_ARG": str(ratio)}
    return env


# --- measuring ------------------------------------------------------------------------


@dataclass
class Measured:
    """One run of the breakdown: each saga's hops, and its end to end as the bench timed it."""

    hops: list[list[Hop]] = field(default_factory=list)
    end_to_end_ms: list[float] = field(default_factory=list)
    incomplete: int = 0
    fetch_max_wait_ms: int = 0
    #: The service's statements alone (see :func:`statements_alone`), ms per sample.
    statements_ms: dict[str, list[float]] = field(default_factory=dict)


async def measure_hops(
    settings: Settings,
    logdir: Path,
    count: int = 100,
    warm: int = 20,
    *,
    keep_spans: Path | None = None,
) -> Measured:
    """``count`` order sagas one at a time, every span exported (after ``warm`` not counted);
    ``keep_spans``: where to copy the spans received (JSON)."""
    measured = Measured(fetch_max_wait_ms=settings.fetch_max_wait_ms)
    with tempfile.TemporaryDirectory(prefix="saga-hops-") as tmp:
        spans_file = Path(tmp) / "spans.json"
        times: dict[str, BenchTimes] = {}
        with Receiver(spans_file) as receiver:
            env = tracing_env(receiver.endpoint, None)
            async with sagas.running_system(settings, logdir, env=env) as running:
                finished, topic = running.finished, running.topic
                async with Publisher(running.config) as publisher:
                    for i in range(warm + count):
                        saga_id = f"hop-{i}"
                        sent_ns, sent = time.time_ns(), time.perf_counter()
                        await publisher.publish(topic, sagas.order(saga_id, i))
                        acked_ns = time.time_ns()
                        await finished.wait_for({saga_id})
                        if i >= warm:
                            received_ns = finished.received_ns[saga_id]
                            times[saga_id] = BenchTimes(sent_ns, acked_ns, received_ns)
                            measured.end_to_end_ms.append((finished.seen[saga_id][1] - sent) * 1000)
                measured.statements_ms = await statements_alone(
                    running.config.database_url.get_secret_value(), count
                )
            # The processes have stopped: their last spans were flushed on the way out.
        if keep_spans is not None:
            await asyncio.to_thread(shutil.copyfile, spans_file, keep_spans)
        spans = by_saga(await asyncio.to_thread(load_spans, spans_file))
    for saga_id, bench in times.items():
        hops = saga_hops(spans.get(saga_id, []), bench)
        if hops is None:
            measured.incomplete += 1
        else:
            measured.hops.append(hops)
    return measured


async def statements_alone(
    database: str, count: int, pace_s: float = 0.07
) -> dict[str, list[float]]:
    """A step service's transaction without the service: pool acquire + BEGIN, the
    inbox INSERT, the outbox INSERT, COMMIT, from the bench process, one every
    ``pace_s`` (a saga's pace here) while the system idles: what the statements
    themselves take on this machine now."""
    pool = await asyncpg.create_pool(database, min_size=1, max_size=1)
    out: dict[str, list[float]] = {"tx begin": [], "writes": [], "commit": []}
    try:
        for i in range(count):
            await asyncio.sleep(pace_s)
            t0 = time.perf_counter()
            async with pool.acquire() as connection:
                transaction = connection.transaction()
                await transaction.start()
                await connection.fetchval(
                    "INSERT INTO saga_inbox (service, message_id, message_type, saga_id,"
                    " outcome, attempts) VALUES ('bench', $1, 't', $1, 'completed', 1)"
                    " ON CONFLICT (service, message_id) DO NOTHING RETURNING true",
                    f"alone-{i}-{time.time_ns()}",
                )
                t1 = time.perf_counter()
                await connection.execute(
                    "INSERT INTO saga_outbox (service, topic, key, value, headers)"
                    " VALUES ('bench', 't', $1, $2, '[]'::jsonb)",
                    b"k",
                    b"v" * 300,
                )
                t2 = time.perf_counter()
                await transaction.commit()
                t3 = time.perf_counter()
            out["tx begin"].append((t1 - t0) * 1000)
            out["writes"].append((t2 - t1) * 1000)
            out["commit"].append((t3 - t2) * 1000)
        await pool.execute("DELETE FROM saga_outbox WHERE service = 'bench'")
    finally:
        await pool.close()
    return out


def result_of(runs: Sequence[Measured]) -> dict[str, Any]:
    """The breakdown over every run's sagas, for ``results["hops"]``."""
    result = breakdown(
        [hops for run in runs for hops in run.hops],
        [ms for run in runs for ms in run.end_to_end_ms],
    )
    result["incomplete"] = sum(run.incomplete for run in runs)
    result["statements_alone"] = {
        phase: _stats(samples)
        for phase in ("tx begin", "writes", "commit")
        if (samples := [ms for run in runs for ms in run.statements_ms.get(phase, [])])
    }
    result["fetch_max_wait_ms"] = max((run.fetch_max_wait_ms for run in runs), default=None)
    return result


async def tracing_rows(
    settings: Settings,
    logdir: Path,
    count: int,
    rounds: int,
    failures: int,
    *,
    servers: Sequence[Watched] = (),
) -> list[Figures]:
    """Ours again with tracing on: every span exported, and 10% of sagas sampled
    (``servers``: the broker and PostgreSQL, metered with the system's processes)."""
    rows = []
    for label, ratio in (("every span", None), ("10% of sagas", 0.1)):
        with Receiver() as receiver:
            figures = await sagas.measure(
                settings,
                logdir,
                count,
                rounds,
                failures,
                env=tracing_env(receiver.endpoint, ratio),
                servers=servers,
            )
        figures.name = f"ours, traced: {label} over OTLP/HTTP"
        figures.extra["spans_received"] = float(receiver.received.get("spans", 0))
        rows.append(figures)
    return rows


def tracing_ratios(rows: Sequence[Figures]) -> dict[str, float | None]:
    """Traced over untraced (the ``ours`` row) throughput and p50, per traced row."""
    ours = next((r for r in rows if r.name.startswith("ours:")), None)
    out: dict[str, float | None] = {}
    for row in rows:
        if ours is None or not row.name.startswith("ours, traced"):
            continue
        label = row.name.removeprefix("ours, traced: ").split(" over")[0]
        out[f"traced ({label})/untraced throughput"] = (
            row.throughput / ours.throughput if row.throughput and ours.throughput else None
        )
        out[f"traced ({label})/untraced p50"] = (
            row.p50_ms / ours.p50_ms if row.p50_ms and ours.p50_ms else None
        )
    return out


# --- hooks for compare.py (make bench) ---------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--hop-sagas", type=int, default=100, help="sagas of the per-hop breakdown (0: none)"
    )
    parser.add_argument(
        "--no-tracing-rows", action="store_true", help="leave out ours with tracing on"
    )


async def after_ours(
    args: argparse.Namespace,
    settings: Settings,
    logdir: Path,
    runs: list[Measured],
    *,
    servers: Sequence[Watched] = (),
) -> list[Figures]:
    """Once per run of ``make bench``, after ours: the breakdown (into ``runs``) and the
    rows of ours with tracing on."""
    if args.hop_sagas:
        _say("ours: per-hop breakdown, one saga at a time, every span ...")
        runs.append(await measure_hops(settings, logdir, args.hop_sagas))
    if args.no_tracing_rows:
        return []
    _say("ours: with tracing on ...")
    return await tracing_rows(
        settings, logdir, args.count, args.rounds, args.failures, servers=servers
    )


def label(name: str) -> str:
    """A row's short name for a chart."""
    if name.startswith("ours, traced: "):
        return "ours traced, " + name.removeprefix("ours, traced: ").split(" over")[0]
    return name.split(",")[0].split(":")[0]


def _say(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)


# --- python -m tests.benchmarks.hops ------------------------------------------------------


@contextmanager
def _stack(workdir: Path) -> Iterator[Settings]:
    from tests.benchmarks.stack import embedded

    with embedded(workdir) as settings:
        yield settings


async def _main(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    with _stack(workdir) as settings:
        logdir = workdir / "logs"
        logdir.mkdir()
        print("breakdown ...", flush=True)
        measured = await measure_hops(settings, logdir, args.sagas, keep_spans=args.spans)
        results: dict[str, Any] = {"hops": result_of([measured])}
        runs: list[list[Figures]] = []
        for number in range(1, 0 if args.no_rows else args.runs + 1):
            _say(f"rows, run {number} of {args.runs}: ours untraced, then traced ...")
            rows = [await sagas.measure(settings, logdir, args.count, args.rounds, 10)]
            rows += await tracing_rows(settings, logdir, args.count, args.rounds, 10)
            runs.append(rows)
        if runs:
            from tests.benchmarks.compare import median

            rows = [median(row) for row in zip(*runs, strict=True)]
            results["rows"] = [asdict(row) for row in rows]
            results["ratios"] = tracing_ratios(rows)
            results["runs"] = [[asdict(r) for r in rows] for rows in runs]
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command")
    receive = sub.add_parser("receive", help="run the OTLP receiver (used by the bench)")
    receive.add_argument("--spans", type=Path, default=None)
    parser.add_argument("--sagas", type=int, default=100, help="sagas of the breakdown")
    parser.add_argument("--count", type=int, default=1000, help="sagas in flight, traced rows")
    parser.add_argument("--rounds", type=int, default=100, help="one-at-a-time samples")
    parser.add_argument("--no-rows", action="store_true", help="the breakdown only")
    parser.add_argument("--runs", type=int, default=3, help="interleaved runs of the rows")
    parser.add_argument("--spans", type=Path, default=None, help="keep the breakdown's spans")
    parser.add_argument("--out", type=Path, default=ROOT / "bench-results" / "hops.json")
    args = parser.parse_args()
    if args.command == "receive":
        _receive(args.spans)
        return
    with tempfile.TemporaryDirectory(prefix="saga-hops-") as tmp:
        results = asyncio.run(_main(args, Path(tmp)))
    args.out.parent.mkdir(exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print(render(results["hops"]))
    for row in results.get("rows", []):
        print(
            f"{row['name']:<50} {row['throughput'] or 0:>7,.0f}/s"
            f"  p50 {row['p50_ms'] or 0:.1f}  p99 {row['p99_ms'] or 0:.1f} ms"
            f"  spans {row['extra'].get('spans_received', 0):,.0f}"
        )
    for name, value in results.get("ratios", {}).items():
        print(f"{name:<50} {value if value is None else round(value, 2)}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
