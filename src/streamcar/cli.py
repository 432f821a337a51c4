"""The ``streamcar`` command line: parse, call into the package, map errors to exit codes.

Exit codes: 0 ok, 1 runtime failure, 2 bad usage or config. Every error is one line on stderr;
set ``STREAMCAR_DEBUG=1`` to see the traceback of an unexpected one.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NoReturn

from streamcar import interrupts
from streamcar._version import __version__
from streamcar.errors import ConfigError, StreamcarError, UsageError

Handler = Callable[[argparse.Namespace], int]


UNCOMMITTED = "also records of transactions not committed, yet or ever (default: read_committed, as consumers see them)"


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are exceptions, so ``main`` prints them as one line."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see '{self.prog} --help')")


# Options whose value may start with "-": a record count back from the end (-20), a duration (-10m, -PT10M) or a
# shift (-5). argparse reads "-20" as a value, but "-10m" as an unknown option, so such a value is glued to its
# option ("--to=-10m") before parsing.
_SIGNED_VALUES = frozenset({"--to", "--from", "--until", "--since", "--by-duration", "--shift-by", "--to-offset"})
_SIGNED = re.compile(r"-(\d|\.\d|[Pp])")


def _glued(argv: Sequence[str]) -> list[str]:
    out: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg in _SIGNED_VALUES and i + 1 < len(argv) and _SIGNED.match(argv[i + 1]):
            out.append(f"{arg}={argv[i + 1]}")
            i += 2
            continue
        out.append(arg)
        i += 1
    return out


def _tool(module: str, function: str, package: str = "streamcar.tools") -> Handler:
    """A handler that imports ``<package>.<module>`` only when the command runs."""

    def handler(args: argparse.Namespace) -> int:
        import importlib

        command: Handler = getattr(importlib.import_module(f"{package}.{module}"), function)
        return command(args)

    return handler


def _run(args: argparse.Namespace) -> int:
    from streamcar.app import run
    from streamcar.config import load_config

    run(load_config(args.config), log_format=args.log_format, log_level=args.log_level)
    return 0


def _check(args: argparse.Namespace) -> int:
    from streamcar.config import load_config
    from streamcar.preflight import preflight

    config = load_config(args.config)
    if not args.static:
        preflight(config)
    for line in config.summary():
        print(line)
    for line in config.warnings():
        print(f"warning: {line}", file=sys.stderr)
    return 0


def _schema(args: argparse.Namespace) -> int:
    import json

    from streamcar.config import json_schema

    print(json.dumps(json_schema(), indent=2))
    return 0


def _add_config_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-c", "--config", type=Path, default=Path("streamcar.yaml"), help="config file (default: %(default)s)"
    )


def _add_cluster_args(
    parser: argparse.ArgumentParser, *, config_help: str | None = None, config_long: str = "--config"
) -> None:
    parser.add_argument(
        "-b",
        "--bootstrap-servers",
        metavar="HOST:PORT[,...]",
        help="the brokers (default: $KAFKA_BOOTSTRAP, else 127.0.0.1:9092; wins over the config's)",
    )
    parser.add_argument(
        "-c",
        config_long,
        dest="config",
        type=Path,
        help=config_help or "a streamcar.yaml whose kafka section (security included) to use",
    )


def _add_filter_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--source-topic", help="only dead letters from this topic")
    parser.add_argument("--kind", help="only this streamcar-error-kind (exhausted, http-status, timeout, ...)")
    parser.add_argument("--grep", metavar="TEXT", help="only dead letters whose error contains this text")
    parser.add_argument(
        "--since",
        metavar="T",
        help="only dead letters that failed at or after this (an ISO 8601 time, or 1h, 30m, 1d ago)",
    )
    parser.add_argument("--key", help="only dead letters whose record key is exactly this")


def _build_tools(sub: argparse._SubParsersAction[_Parser]) -> None:
    positions = (
        "earliest | latest | <offset> | -<N> (records before the end) | <duration> back from now (90s, 10m, 2h, 1d)"
        " | <ISO 8601 time>"
    )

    offsets = sub.add_parser("offsets", help="show or reset a consumer group's committed offsets")
    osub = offsets.add_subparsers(dest="offsets_command", metavar="{show,reset}", required=True)
    oshow = osub.add_parser("show", help="committed offset, end offset and lag per partition")
    oshow.add_argument("--group", required=True)
    oshow.add_argument("--topic", help="only this topic (default: every topic the group has offsets for)")
    oshow.add_argument("--json", action="store_true", help="print JSON for scripts")
    _add_cluster_args(oshow)
    oshow.set_defaults(handler=_tool("offsets", "show_command"))
    oreset = osub.add_parser(
        "reset",
        help="move a group's offsets (a dry run unless --execute)",
        description="Move a consumer group's committed offsets on one topic. A dry run unless --execute; a reset "
        "that would skip records the group has not processed (a new offset past the committed one) needs --yes.",
    )
    oreset.add_argument("--group", required=True)
    oreset.add_argument("--topic", required=True)
    where = oreset.add_mutually_exclusive_group(required=True)
    where.add_argument("--to", help=positions)
    where.add_argument("--to-earliest", action="store_true", help="the partitions' first offsets")
    where.add_argument("--to-latest", action="store_true", help="the partitions' end offsets")
    where.add_argument("--to-offset", type=int, metavar="N", help="offset N (clamped to each partition's range)")
    where.add_argument("--to-datetime", metavar="TIME", help="the first record at or after this ISO 8601 time")
    where.add_argument(
        "--by-duration", metavar="DURATION", help="the first record at or after now minus this (PT10M, P1D; or 10m)"
    )
    where.add_argument(
        "--shift-by",
        type=int,
        metavar="N",
        help="the committed offset plus N (-N: back), per partition; one without a committed offset is left as is",
    )
    oreset.add_argument("--partition", type=int, help="only this partition")
    mode = oreset.add_mutually_exclusive_group()
    mode.add_argument("--dry-run", action="store_true", help="show the change only (the default)")
    mode.add_argument("--execute", action="store_true", help="apply the change")
    oreset.add_argument(
        "--yes", action="store_true", help="with --execute: also apply a reset that skips unprocessed records"
    )
    oreset.add_argument("--json", action="store_true", help="print JSON for scripts")
    _add_cluster_args(oreset)
    oreset.set_defaults(handler=_tool("reset", "reset_command"))

    replay = sub.add_parser("replay", help="re-run a range of a topic into a topic or through a pipeline's service")
    replay.add_argument("--topic", required=True, help="the topic to read")
    replay.add_argument("--from", dest="from_", required=True, metavar="FROM", help=positions)
    replay.add_argument(
        "--until", help=f"where to stop, exclusive (default: the end when the replay starts): {positions}"
    )
    replay.add_argument("--partition", type=int, help="only this partition")
    replay.add_argument(
        "--to-topic", help="copy the range into this topic (keys, headers and per-partition order kept)"
    )
    replay.add_argument("--pipeline", help="run the range through this pipeline of the config (-c)")
    replay.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_cluster_args(replay, config_help="the streamcar.yaml (its kafka section; with --pipeline, the pipeline)")
    replay.set_defaults(handler=_tool("replay", "replay_command"))

    dlq = sub.add_parser("dlq", help="inspect or redrive a dead-letter topic")
    dsub = dlq.add_subparsers(dest="dlq_command", metavar="{show,redrive}", required=True)
    dshow = dsub.add_parser("show", help="list dead letters with their source, error, attempts and time")
    dshow.add_argument("--topic", required=True)
    _add_filter_args(dshow)
    dshow.add_argument("-n", "--limit", type=int, help="at most this many")
    dshow.add_argument("--json", action="store_true", help="one JSON object per dead letter")
    dshow.add_argument("--uncommitted", action="store_true", help=UNCOMMITTED)
    _add_cluster_args(dshow)
    dshow.set_defaults(handler=_tool("dlq", "show_command"))
    dredrive = dsub.add_parser(
        "redrive",
        help="re-publish dead letters to their source topic (dry run unless --execute)",
        description="Re-publish dead letters to their source topics, all or those the filters pick (every filter "
        "given must hold). Each filter keeps its own progress, and no run redrives what another already did.",
    )
    dredrive.add_argument("--topic", required=True)
    _add_filter_args(dredrive)
    dredrive.add_argument(
        "--limit", type=int, help="at most this many dead letters (records not redriven do not count)"
    )
    dredrive.add_argument("--execute", action="store_true", help="publish (default: show what would be published)")
    _add_cluster_args(dredrive)
    dredrive.set_defaults(handler=_tool("redrive", "redrive_command"))

    tail = sub.add_parser("tail", help="print the records of a topic")
    tail.add_argument("--topic", required=True)
    tail.add_argument("--from", dest="from_", metavar="FROM", help=f"{positions} (default: -10, per partition)")
    tail.add_argument("-n", type=int, help="stop after this many records")
    tail.add_argument("--no-follow", action="store_true", help="stop at the end instead of waiting for more")
    tail.add_argument("--json", action="store_true", help="one JSON object per record")
    tail.add_argument("--uncommitted", action="store_true", help=UNCOMMITTED)
    _add_cluster_args(tail)
    tail.set_defaults(handler=_tool("tail", "tail_command"))

    produce = sub.add_parser("produce", help="produce lines from stdin to a topic")
    produce.add_argument("--topic", required=True)
    produce.add_argument("--keyed", action="store_true", help="lines are key<TAB>value")
    produce.add_argument(
        "-H", "--header", action="append", default=[], metavar="NAME=VALUE", help="add to every record"
    )
    _add_cluster_args(produce)
    produce.set_defaults(handler=_tool("tail", "produce_command"))

    topics = sub.add_parser("topics", help="create, list or describe topics")
    tsub = topics.add_subparsers(dest="topics_command", metavar="{create,list,describe}", required=True)
    tcreate = tsub.add_parser(
        "create",
        help="create topics (partitions, replication, configs)",
        description="Create topics; without --partitions or --replication-factor, the broker's num.partitions and "
        "default.replication.factor. Returns once each topic's partitions have a leader.",
    )
    tcreate.add_argument("names", nargs="+", metavar="NAME", help="the topics to create")
    tcreate.add_argument("--partitions", type=int, metavar="N", help="partitions (default: the broker's)")
    tcreate.add_argument(
        "--replication-factor", type=int, metavar="R", help="replicas of each partition (default: the broker's)"
    )
    tcreate.add_argument(
        "--config",
        dest="config_entries",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a topic config (repeat for more), e.g. retention.ms=86400000",
    )
    tcreate.add_argument("--if-not-exists", action="store_true", help="a topic that exists already is no error")
    # --config is kafka-topics.sh's KEY=VALUE here, so the streamcar.yaml is -c/--config-file
    _add_cluster_args(tcreate, config_long="--config-file")
    tcreate.set_defaults(handler=_tool("topics_cli", "create_command"))
    tlist = tsub.add_parser("list", help="topics with their partitions and replication factor")
    tlist.add_argument("--all", action="store_true", help="also Kafka's internal topics (__consumer_offsets, ...)")
    tlist.add_argument("--json", action="store_true", help="print JSON for scripts")
    _add_cluster_args(tlist)
    tlist.set_defaults(handler=_tool("topics_cli", "list_command"))
    tdescribe = tsub.add_parser(
        "describe", help="a topic's partitions (leader, replicas, in-sync replicas, watermarks) and configs"
    )
    tdescribe.add_argument("name", metavar="NAME", help="the topic")
    tdescribe.add_argument("--json", action="store_true", help="print JSON for scripts")
    _add_cluster_args(tdescribe)
    tdescribe.set_defaults(handler=_tool("topics_cli", "describe_command"))


def _build_overview(sub: argparse._SubParsersAction[_Parser]) -> None:
    overview = sub.add_parser("overview", help="the graph of topics and pipelines across sidecars, with their state")
    overview.add_argument("--admin", nargs="+", metavar="URL", help="sidecars' admin base URLs (http://host:port)")
    overview.add_argument("-c", "--config", type=Path, help="a streamcar.yaml: its admin.listen and admin.peers")
    overview.add_argument("--timeout", type=float, default=2.0, help="seconds each sidecar has to answer (default 2)")
    overview.add_argument("--json", action="store_true", help="print the graph as JSON for scripts")
    overview.set_defaults(handler=_tool("overview", "overview_command"))


def _build_kafka(sub: argparse._SubParsersAction[_Parser]) -> None:
    kafka = sub.add_parser("kafka", help="a local Apache Kafka (KRaft, loopback) for development and tests")
    ksub = kafka.add_subparsers(dest="kafka_command", metavar="{start,stop,status,fetch}", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--data-dir",
            type=Path,
            default=None,
            help="where the cluster keeps its logs, data and pid files (default: $STREAMCAR_KAFKA_DIR, else "
            "~/.cache/streamcar/kafka/local)",
        )

    start = ksub.add_parser("start", help="fetch (once), format and start the local broker(s)")
    common(start)
    start.add_argument("--nodes", type=int, choices=(1, 3), default=1, help="1 broker, or a 3-node cluster")
    start.add_argument(
        "--port", type=int, default=None, help="client port of node 1 (default $STREAMCAR_KAFKA_PORT, else 9092)"
    )
    start.add_argument("--heap", default="512m", help="JVM heap per node (default: %(default)s)")
    start.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for the brokers")
    start.add_argument(
        "--security",
        choices=("plaintext", "sasl-ssl"),
        help="sasl-ssl adds a SASL_SSL listener (SCRAM-SHA-512, a self-made CA) next to the PLAINTEXT one "
        "(default: what the data dir was created with, plaintext for a new one)",
    )
    start.set_defaults(handler=_tool("cli", "start", "streamcar.devkafka"))

    stop = ksub.add_parser("stop", help="stop exactly the processes that 'start' launched")
    common(stop)
    stop.add_argument("--timeout", type=float, default=30.0, help="seconds before SIGKILL")
    stop.set_defaults(handler=_tool("cli", "stop", "streamcar.devkafka"))

    status = ksub.add_parser("status", help="show the local cluster's nodes and whether they answer")
    common(status)
    status.add_argument("--json", action="store_true", help="print JSON for scripts")
    status.set_defaults(handler=_tool("cli", "status", "streamcar.devkafka"))

    fetch = ksub.add_parser("fetch", help="download the Kafka jars through Maven into the cache, then exit")
    fetch.set_defaults(handler=_tool("cli", "fetch", "streamcar.devkafka"))


def build_parser() -> _Parser:
    parser = _Parser(prog="streamcar", description="A Kafka sidecar for microservices.")
    parser.add_argument("--version", action="version", version=f"streamcar {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True, parser_class=_Parser)

    run = sub.add_parser("run", help="run the sidecar")
    _add_config_arg(run)
    run.add_argument(
        "--log-format", choices=["console", "json"], help="log lines as text or JSON (default: the config's log.format)"
    )
    run.add_argument(
        "--log-level", choices=["debug", "info", "warning", "error"], help="least severe level logged (default: info)"
    )
    run.set_defaults(handler=_run)

    check = sub.add_parser("check", help="validate a config file; every invalid field is reported")
    _add_config_arg(check)
    check.add_argument(
        "--static",
        action="store_true",
        help="the config alone, for another machine: skip checking its files, handlers and librdkafka settings here",
    )
    check.set_defaults(handler=_check)

    schema = sub.add_parser("schema", help="print the config's JSON Schema")
    schema.set_defaults(handler=_schema)

    _build_tools(sub)
    _build_overview(sub)
    _build_kafka(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    try:
        parser = build_parser()  # in the try: argparse imports as it builds, and a Ctrl-C may come meanwhile
        args = parser.parse_args(_glued(sys.argv[1:] if argv is None else argv))
        handler: Handler = args.handler
        return handler(args)
    except ConfigError as exc:
        for line in exc.problems:
            print(f"streamcar: {line}", file=sys.stderr)
        return exc.exit_code
    except StreamcarError as exc:
        if interrupts.seen():  # the Ctrl-C, as a library reported it
            return interrupts.said()
        print(f"streamcar: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return interrupts.said()
    except BrokenPipeError:
        # stdout's reader went away (`| head`): stop quietly, as Unix tools do
        with contextlib.suppress(OSError, ValueError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as exc:  # a bug: still one line unless asked for more
        if interrupts.seen():  # not a bug: the Ctrl-C, as a library reported it
            return interrupts.said()
        if os.environ.get("STREAMCAR_DEBUG"):
            traceback.print_exc()
        print(
            f"streamcar: internal error: {type(exc).__name__}: {exc} (STREAMCAR_DEBUG=1 shows the traceback)",
            file=sys.stderr,
        )
        return 1
