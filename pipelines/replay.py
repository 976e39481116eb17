"""Replay retryable dead letters: send the original messages back to the pipeline's input, once each.

    python -m pipelines.replay --from_subscription=projects/P/subscriptions/fraud-dead-letters-replay \\
        --to_topic=projects/P/topics/fraud-events
    python -m pipelines.replay --from_file='out/dead-letters-*.jsonl' --to_topic=projects/P/topics/fraud-events
    python -m pipelines.replay --from_file='out/dead-letters-*.jsonl' --to_file=out/replay.jsonl

A dead letter is `retryable` when the event may succeed later (the model server was unreachable, a publish
failed); those are replayed, with the original body and attributes exactly as first published. Permanent ones
would fail again and are skipped (--include_permanent replays them too, say after a fix of the schema).

From a subscription, each dead letter is acknowledged only after its original has been published, so a replay
that dies half-way replays the rest when run again (and at worst repeats one batch: the pipeline's
--deduplicate drops a repeat that was already predicted, and never a retryable failure). Skipped dead letters are
handed back to Pub/Sub unacknowledged; give the replay a subscription of its own on the dead-letter topic, ideally
filtered to the retryable ones: `--message-filter='attributes.dead_letter_error_type = "retryable"'`. The replay
stops when the subscription has nothing new for it.

From files (a backfill's dead letters, local or gs://), the originals go to a topic or, for a backfill run again,
to a JSON Lines file of events.
"""

from __future__ import annotations

import argparse
import base64
import json
import logging
import os
from collections.abc import Iterator
from typing import NamedTuple

from plumbing import cli
from transforms.dead_letter import ERROR_TYPE_ATTRIBUTE, original_message
from transforms.messages import ErrorType
from transforms.pubsub_clients import publisher_client, subscriber_client

PULL_BATCH = 500
PULL_TIMEOUT_SECS = 5.0
PUBLISH_TIMEOUT_SECS = 60.0


class Original(NamedTuple):
    data: bytes
    attributes: dict[str, str]
    error_type: str


class Tally:
    def __init__(self):
        self.replayed = self.skipped = self.failed = 0

    def summary(self) -> str:
        return f"replayed {self.replayed}, skipped {self.skipped} permanent, failed {self.failed}"


def _from_file(pattern: str) -> Iterator[Original]:
    from apache_beam.io.filesystems import FileSystems

    matches = FileSystems.match([pattern])[0].metadata_list
    if not matches:
        raise FileNotFoundError(f"no dead-letter files match {pattern}")
    for metadata in sorted(matches, key=lambda m: m.path):
        with FileSystems.open(metadata.path) as lines:
            for line in lines:
                if line.strip():
                    record = json.loads(line)
                    yield Original(base64.b64decode(record["payload"]), record["attributes"], record["error_type"])


def replay_file(pattern: str, to_topic: str | None, to_file: str | None, include_permanent: bool, say) -> Tally:
    tally, wanted = Tally(), []
    for original in _from_file(pattern):
        if original.error_type == ErrorType.RETRYABLE or include_permanent:
            wanted.append(original)
        else:
            tally.skipped += 1
    if to_file:
        with open(to_file, "wb") as out:
            for original in wanted:
                out.write(original.data + b"\n")
        tally.replayed = len(wanted)
    else:
        publisher = publisher_client(os.environ.get("PUBSUB_EMULATOR_HOST"))
        futures = [publisher.publish(to_topic, o.data, **o.attributes) for o in wanted]
        for future in futures:
            try:
                future.result(timeout=PUBLISH_TIMEOUT_SECS)
                tally.replayed += 1
            except Exception as error:  # pylint: disable=broad-except
                tally.failed += 1
                say(f"  publish failed: {type(error).__name__}: {error}")
    say(f"{pattern}: {tally.summary()}")
    return tally


def replay_subscription(subscription: str, to_topic: str, include_permanent: bool, say) -> Tally:
    from google.api_core.exceptions import DeadlineExceeded

    emulator = os.environ.get("PUBSUB_EMULATOR_HOST")
    subscriber, publisher = subscriber_client(emulator), publisher_client(emulator)
    tally, seen = Tally(), set()
    try:
        while True:
            try:
                received_messages = subscriber.pull(
                    request={"subscription": subscription, "max_messages": PULL_BATCH}, timeout=PULL_TIMEOUT_SECS
                ).received_messages
            except DeadlineExceeded:
                received_messages = []
            fresh = [r for r in received_messages if r.message.message_id not in seen]
            # Those seen before were skipped here before: hand them back at once.
            _nack(subscriber, subscription, [r.ack_id for r in received_messages if r not in fresh])
            if not fresh:
                break  # nothing new for this replay
            seen.update(r.message.message_id for r in fresh)
            publishes, skip = [], []
            for received in fresh:
                attributes = dict(received.message.attributes)
                if attributes.get(ERROR_TYPE_ATTRIBUTE) != ErrorType.RETRYABLE and not include_permanent:
                    skip.append(received.ack_id)
                    continue
                data, original_attributes = original_message(bytes(received.message.data), attributes)
                publishes.append((received.ack_id, publisher.publish(to_topic, data, **original_attributes)))
            done = []
            for ack_id, future in publishes:
                try:
                    future.result(timeout=PUBLISH_TIMEOUT_SECS)
                    done.append(ack_id)
                except Exception as error:  # pylint: disable=broad-except
                    tally.failed += 1
                    say(f"  publish failed, the dead letter stays for the next replay: {type(error).__name__}: {error}")
            if done:
                subscriber.acknowledge(request={"subscription": subscription, "ack_ids": done})
            _nack(subscriber, subscription, skip)
            tally.replayed += len(done)
            tally.skipped += len(skip)
            say(f"  {tally.summary()}")
    finally:
        subscriber.close()
        publisher.stop()
    say(f"{subscription}: {tally.summary()}")
    return tally


def _nack(subscriber, subscription: str, ack_ids: list[str]) -> None:
    if ack_ids:
        subscriber.modify_ack_deadline(
            request={"subscription": subscription, "ack_ids": ack_ids, "ack_deadline_seconds": 0}
        )


def main(argv: list[str] | None = None) -> int:
    parser = cli.ArgumentParser(
        prog="python -m pipelines.replay", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--from_subscription", help="projects/<p>/subscriptions/<id> on a dead-letter topic")
    source.add_argument("--from_file", help="dead-letter JSON Lines files of a backfill: a path or gs:// glob")
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--to_topic", help="projects/<p>/topics/<id>: the pipeline's input topic")
    target.add_argument("--to_file", help="a JSON Lines file of the original events, to run a backfill on")
    parser.add_argument("--include_permanent", action="store_true", help="replay permanent dead letters too")
    args = parser.parse_args(argv)
    if args.from_subscription and args.to_file:
        parser.error("--from_subscription replays to --to_topic")
    logging.basicConfig(level=logging.WARNING)
    say = lambda line: print(line, flush=True)  # noqa: E731
    if args.from_subscription:
        tally = replay_subscription(args.from_subscription, args.to_topic, args.include_permanent, say)
    else:
        tally = replay_file(args.from_file, args.to_topic, args.to_file, args.include_permanent, say)
    return 1 if tally.failed else 0


if __name__ == "__main__":
    cli.run(main)
