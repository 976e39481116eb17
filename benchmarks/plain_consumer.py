"""The baseline: the scoring service as a user would hand-write it with google-cloud-pubsub, no Beam runner.

    python -m benchmarks.plain_consumer --model=fraud --model_dir=DIR \\
        --input_subscription=projects/P/subscriptions/S --output_topic=projects/P/topics/T \\
        --dead_letter_topic=projects/P/topics/D

Streaming pull (`SubscriberClient.subscribe` with flow control) hands messages to a queue; one scoring thread takes
batches of up to --max_batch_size messages or --max_batch_wait_ms, whichever comes first, and scores them with the
project's own pieces (`parse_event`, `LoadedSavedModel.predict`, `format_prediction`, `dead_letter_message`), so the
work per event is the pipeline's. Each output is published with `PublisherClient`; the input message is acked
when its output's publish succeeded (at-least-once), nacked when it failed.

It reaches the emulator through PUBSUB_EMULATOR_HOST, like the pipeline. SIGTERM or Ctrl-C stops it.
"""

from __future__ import annotations

import argparse
import functools
import logging
import queue
import signal
import threading
import time

from apache_beam.ml.inference.base import PredictionResult

from model_handlers.interface import MODELS, ModelInterface
from plumbing import cli
from transforms.dead_letter import dead_letter_message
from transforms.events import InvalidEvent, parse_event
from transforms.messages import DeadLetter, ErrorType, EventRef, RawEvent, Reason, Stage
from transforms.predictions import format_prediction, rfc3339

_LOGGER = logging.getLogger("plain_consumer")


class PlainConsumer:
    def __init__(
        self,
        interface: ModelInterface,
        model,  # LoadedSavedModel
        model_version: str,
        subscription: str,
        output_topic: str,
        dead_letter_topic: str,
        *,
        decorate=None,
        max_batch_size: int = 256,
        max_batch_wait_secs: float = 0.05,
        max_outstanding_messages: int = 1000,
    ):
        from google.cloud import pubsub_v1

        self._interface = interface
        self._model = model
        self._model_version = model_version
        self._subscription = subscription
        self._output_topic = output_topic
        self._dead_letter_topic = dead_letter_topic
        self._decorate = decorate
        self._max_batch_size = max_batch_size
        self._max_batch_wait_secs = max_batch_wait_secs
        self._flow_control = pubsub_v1.types.FlowControl(max_messages=max_outstanding_messages)
        self._subscriber = pubsub_v1.SubscriberClient()
        self._publisher = pubsub_v1.PublisherClient()
        self._queue: queue.Queue = queue.Queue()
        self._stopping = threading.Event()
        self._pull_future = None
        self._worker = threading.Thread(target=self._score_loop, name="scorer", daemon=True)
        self.scored = 0
        self.dead_lettered = 0
        self.batches = 0

    # --- lifecycle -------------------------------------------------------------------------------------
    def start(self) -> None:
        self._worker.start()
        self._pull_future = self._subscriber.subscribe(
            self._subscription, self._queue.put, flow_control=self._flow_control
        )

    def stop(self) -> None:
        if self._pull_future is not None:
            self._pull_future.cancel()  # stops pulling; unacked messages are redelivered to the next consumer
            try:
                self._pull_future.result(timeout=10)
            except Exception:  # pylint: disable=broad-except  # cancelled, or already failed
                pass
        self._stopping.set()
        self._worker.join(timeout=10)
        self._publisher.stop()  # flushes what is pending
        self._subscriber.close()

    def wait(self) -> None:
        """Blocks until the streaming pull ends (an error, or stop())."""
        self._pull_future.result()

    # --- scoring ---------------------------------------------------------------------------------------
    def _next_batch(self) -> list:
        try:
            batch = [self._queue.get(timeout=0.2)]
        except queue.Empty:
            return []
        deadline = time.monotonic() + self._max_batch_wait_secs
        while len(batch) < self._max_batch_size:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                batch.append(self._queue.get(timeout=remaining))
            except queue.Empty:
                break
        return batch

    def _score_loop(self) -> None:
        while not self._stopping.is_set():
            batch = self._next_batch()
            if batch:
                try:
                    self._score(batch)
                except Exception:  # pylint: disable=broad-except  # keep serving; the batch is redelivered
                    _LOGGER.exception("scoring a batch of %d failed; nacking it", len(batch))
                    for message in batch:
                        message.nack()

    def _score(self, messages: list) -> None:
        interface = self._interface
        valid, outputs = [], []  # outputs: (message, topic, OutputMessage)
        for message in messages:
            raw = RawEvent(message.data or b"", dict(message.attributes))
            try:
                event_id, features = parse_event(raw, interface)
            except InvalidEvent as invalid:
                dead = invalid.dead_letter(raw)
                outputs.append(
                    (
                        message,
                        self._dead_letter_topic,
                        dead_letter_message(dead, interface.name, self._dead_letter_topic),
                    )
                )
                continue
            valid.append((message, EventRef(event_id, raw), features))
        if valid:
            scored_at = rfc3339(int(time.time() * 1000))
            for (message, ref, features), result in zip(valid, self._predict([v[2] for v in valid])):
                if isinstance(result, Exception):
                    dead = DeadLetter(
                        ref.raw,
                        Stage.INFER,
                        f"{type(result).__name__}: {result}",
                        ErrorType.PERMANENT,
                        ref.event_id,
                        Reason.MODEL_REJECTED,
                    )
                    outputs.append(
                        (
                            message,
                            self._dead_letter_topic,
                            dead_letter_message(dead, interface.name, self._dead_letter_topic),
                        )
                    )
                else:
                    prediction = format_prediction(
                        ref,
                        PredictionResult(features, result, self._model_version),
                        interface,
                        self._decorate,
                        scored_at,
                    )
                    outputs.append((message, self._output_topic, prediction))
        for message, topic, output in outputs:
            if topic == self._output_topic:
                self.scored += 1
            else:
                self.dead_lettered += 1
            future = self._publisher.publish(topic, output.data, **output.attributes)
            future.add_done_callback(functools.partial(_ack_when_published, message))
        self.batches += 1

    def _predict(self, rows: list[dict]) -> list:
        """One output dict per row; a batch that fails is retried row by row, so only bad rows fail."""
        names = [output.name for output in self._interface.outputs]

        def score(batch):
            result = self._model.predict(self._interface.to_columns(batch))
            columns = [result[name].tolist() for name in names]
            return [dict(zip(names, row)) for row in zip(*columns)]

        try:
            return score(rows)
        except Exception as error:  # pylint: disable=broad-except
            if len(rows) == 1:
                return [error]
            results = []
            for row in rows:
                try:
                    results.append(score([row])[0])
                except Exception as row_error:  # pylint: disable=broad-except
                    results.append(row_error)
            return results


def _ack_when_published(message, future) -> None:
    if future.exception() is None:
        message.ack()
    else:
        message.nack()


def main(argv=None) -> None:
    parser = cli.ArgumentParser(
        prog="python -m benchmarks.plain_consumer",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--model", required=True, choices=sorted(MODELS))
    parser.add_argument("--model_dir", required=True)
    parser.add_argument("--input_subscription", required=True)
    parser.add_argument("--output_topic", required=True)
    parser.add_argument("--dead_letter_topic", required=True)
    parser.add_argument("--max_batch_size", type=int, default=256)
    parser.add_argument("--max_batch_wait_ms", type=float, default=50)
    parser.add_argument("--max_outstanding_messages", type=int, default=1000, help="streaming-pull flow control")
    parser.add_argument("--fraud_threshold", type=float, default=0.5)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    from model_handlers.saved_model import SavedModelHandler

    interface = MODELS[args.model]
    handler = SavedModelHandler(interface, args.model_dir)
    model = handler.load_version(handler.version)  # includes the warm-up requests, as in the pipeline
    decorate = None
    if interface.name == "fraud":
        from pipelines.fraud_detection import is_fraud

        decorate = functools.partial(is_fraud, threshold=args.fraud_threshold)
    consumer = PlainConsumer(
        interface,
        model,
        handler.model_version,
        args.input_subscription,
        args.output_topic,
        args.dead_letter_topic,
        decorate=decorate,
        max_batch_size=args.max_batch_size,
        max_batch_wait_secs=args.max_batch_wait_ms / 1000,
        max_outstanding_messages=args.max_outstanding_messages,
    )

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    consumer.start()
    _LOGGER.info("consuming %s with %s version %s", args.input_subscription, interface.name, handler.model_version)
    last = (time.monotonic(), 0)
    while not stop.wait(5):
        done = consumer.scored + consumer.dead_lettered
        rate = (done - last[1]) / (time.monotonic() - last[0])
        last = (time.monotonic(), done)
        _LOGGER.info(
            "%d scored, %d dead-lettered, %d batches, %.0f events/s",
            consumer.scored,
            consumer.dead_lettered,
            consumer.batches,
            rate,
        )
        if consumer._pull_future.done():  # pylint: disable=protected-access
            consumer.wait()  # raises the streaming pull's error
    _LOGGER.info("stopping")
    consumer.stop()


if __name__ == "__main__":
    cli.run(main)
