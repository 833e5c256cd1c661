"""``canary topics create | list``: the topic catalogue on the cluster."""

from __future__ import annotations

import argparse

from model_canary.agents.cli.common import settings_from_args
from model_canary.agents.kafka.admin import Admin
from model_canary.streams.errors import ConfigError
from model_canary.streams.topics import TopicCatalogue


def register(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    parser = sub.add_parser("topics", help="create or list the project's topics")
    actions = parser.add_subparsers(dest="topics_action", required=True, metavar="ACTION")
    create = actions.add_parser(
        "create",
        parents=[common],
        help="create the core topics (idempotent), and each model version's request and "
        "pre-flight topics",
    )
    create.add_argument(
        "--model-version",
        action="append",
        default=[],
        metavar="MODEL:VERSION",
        help="also create this version's request and pre-flight topics (repeatable), e.g. iris:v2",
    )
    create.add_argument("--partitions", type=int, help="partitions of new data topics (default 3)")
    actions.add_parser(
        "list", parents=[common], help="list the project's topics with their partition counts"
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    if getattr(args, "partitions", None):
        settings = settings.with_overrides(partitions=args.partitions)
    catalogue = TopicCatalogue(settings.topic_prefix, settings.partitions)
    admin = Admin(settings)
    if args.topics_action == "create":
        specs = catalogue.core_specs()
        for item in args.model_version:
            model, sep, version = item.partition(":")
            if not sep:
                raise ConfigError(f"--model-version wants MODEL:VERSION, got {item!r}")
            specs += catalogue.version_specs(model, version)
        created = admin.ensure_topics(specs)
        for spec in specs:
            print(f"{'created' if spec.name in created else 'exists '} {spec.name}")
        return 0
    prefix = catalogue.prefix + "."
    for name, partitions in sorted(admin.list_topics().items()):
        if name.startswith(prefix):
            print(f"{name}\t{partitions}")
    return 0
