"""Curation stats: a counter incremented in several Beam steps is reported as its total, not one step's value."""

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

from data_pipeline.curation import stages, stats


def test_a_counter_incremented_in_two_steps_is_summed():
    def tick(doc):
        stages.count("test_source", "read/dropped/not_utf8")
        return doc

    pipeline = beam.Pipeline(options=PipelineOptions(["--runner=DirectRunner"]))
    docs = pipeline | beam.Create([{"id": str(i), "text": "x"} for i in range(3)])
    _ = docs | "first step" >> beam.Map(tick)
    _ = docs | "second step" >> beam.Map(tick)
    result = pipeline.run()
    result.wait_until_finish()
    assert stats.counters(result, "test_source") == {"read/dropped/not_utf8": 6}
