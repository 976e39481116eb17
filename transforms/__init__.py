"""The named steps of an event's journey: parse, score, format, and the sources and sinks at either end."""
