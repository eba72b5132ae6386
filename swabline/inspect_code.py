"""``swabline inspect-code``: how a station classifies one code, as one JSON object.

Technicians use it to check new QR variants and tube labels against a station's configuration.
Exit status: 0 when the code is accepted, 1 when it is rejected (the reason in the JSON), 2 when
the configuration cannot be used.
"""

from __future__ import annotations

import argparse
import json
import re
import sys

from agent.codes import PERSON_FORMATS, CodeRules, classify, describe
from agent.config import load_config
from agent.errors import AgentError


def run(args: argparse.Namespace) -> int:
    patterns: list[str] = []
    formats = list(PERSON_FORMATS)
    strict = True
    if args.config is not None:
        try:
            config = load_config(args.config)
        except AgentError as exc:
            print(f"swabline inspect-code: {exc}", file=sys.stderr)
            return 2
        if config.workflow is not None:
            patterns += config.workflow.tube_patterns
            formats = list(config.workflow.person_formats)
            strict = config.workflow.cccd_strict_province
    patterns += args.tube_pattern
    try:
        rules = CodeRules.build(patterns, formats, cccd_strict_province=strict)
    except re.error as exc:
        print(f"swabline inspect-code: bad --tube-pattern: {exc}", file=sys.stderr)
        return 2
    text = args.text
    if text == "-":
        text = sys.stdin.buffer.read().decode("utf-8", errors="replace").rstrip("\r\n")
    shown = describe(classify(text, rules, lossy=args.lossy))
    print(json.dumps(shown, ensure_ascii=False))
    return 0 if shown["accepted"] else 1
