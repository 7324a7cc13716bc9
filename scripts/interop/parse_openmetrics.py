#!/usr/bin/env python3
"""Parses OpenMetrics text from stdin with the Prometheus project's own
python client (prometheus_client.openmetrics.parser, strict: a malformed
line, a missing `# EOF` or a bad escape fails) and prints its samples as
JSON: [{"family", "type", "name", "labels", "value"}, ...].

Used by tests/tests/end_to_end/interop/metrics_text.rs.
"""
import json
import sys

from prometheus_client.openmetrics.parser import text_string_to_metric_families

samples = []
for family in text_string_to_metric_families(sys.stdin.read()):
    for s in family.samples:
        samples.append({
            "family": family.name,
            "type": family.type,
            "name": s.name,
            "labels": s.labels,
            "value": s.value,
        })
json.dump(samples, sys.stdout)
